//! Issue 5 acceptance, happy paths: real SMTP client → gateway (real listener) → Cryptshare
//! emulator + test next hop. Byte-exact checks of what the next hop got and of what the
//! emulator stored.

mod pipeline_support;
mod support;

use cryptshare_gateway::cryptshare::PasswordMode;
use pipeline_support::*;

const OK: &str = "250 2.0.0 OK, relayed (Queued as SINK)\r\n";

/// Bytes of `rewritten` that are not in `expected`, if `rewritten` is `expected` with exactly
/// one contiguous insertion: `(offset, inserted bytes)`.
fn single_insertion<'a>(expected: &[u8], rewritten: &'a [u8]) -> (usize, &'a [u8]) {
    assert!(rewritten.len() >= expected.len());
    let p = expected
        .iter()
        .zip(rewritten)
        .take_while(|(a, b)| a == b)
        .count();
    let max_s = expected.len() - p;
    let s = expected
        .iter()
        .rev()
        .zip(rewritten.iter().rev())
        .take(max_s)
        .take_while(|(a, b)| a == b)
        .count();
    assert_eq!(
        p + s,
        expected.len(),
        "not a single insertion: differs at {p}: expected {:?}, got {:?}",
        String::from_utf8_lossy(&expected[p..(p + 200).min(expected.len())]),
        String::from_utf8_lossy(&rewritten[p..(p + 200).min(rewritten.len())]),
    );
    (p, &rewritten[p..rewritten.len() - s])
}

fn attachment_segment(head: &str, data: &[u8]) -> String {
    format!(
        "--=_pipeline_test_boundary\r\n{head}\r\nContent-Transfer-Encoding: base64\r\n\r\n{}",
        base64_lines(data)
    )
}

fn remove(haystack: &[u8], needle: &[u8]) -> Vec<u8> {
    let at = haystack
        .windows(needle.len())
        .position(|w| w == needle)
        .expect("segment present");
    [&haystack[..at], &haystack[at + needle.len()..]].concat()
}

#[tokio::test]
async fn large_attachment_is_converted_with_the_spec_mapping() {
    // Non-default flags, so that each one is seen to arrive.
    let h = Harness::start(&format!(
        "{}show_file_names = false\ndownload_notifications = true\nupload_summary = false\nsender_phone = \"+49 30 1234\"\n",
        policy("tempfail")
    ))
    .await;
    let big = payload(3 * 1024 * 1024 + 17, 1);
    let small = b"small file stays in the mail".to_vec();
    let big_head = "Content-Type: application/octet-stream; name=\"figures.bin\"\r\n\
                    Content-Disposition: attachment; filename=\"figures.bin\"";
    let small_head = "Content-Type: text/plain; name=\"note.txt\"\r\n\
                      Content-Disposition: attachment; filename=\"note.txt\"";
    let msg = mixed(
        HEADERS,
        "Hello Bob,\r\nthe figures are attached.\r\nAlice",
        &[(big_head, &big), (small_head, &small)],
    );
    // A policy threshold of 1 KiB: the total is above it, so both files go.
    let reply = h
        .send(
            "alice@example.org",
            &["bob@example.net", "carol@example.net", "dave@example.net"],
            &msg,
        )
        .await;
    assert_eq!(reply, OK);

    // Cryptshare: one finished transfer with byte-identical files.
    let ts = h.emu.transfers();
    assert_eq!(ts.len(), 1, "{ts:?}");
    let t = &ts[0];
    assert_eq!(h.emu.open_sessions(), 0);
    assert_eq!(t.sender, "alice@example.org");
    let mails = |v: &[cryptshare_gateway::cryptshare::Recipient]| -> Vec<String> {
        v.iter().map(|r| r.mail.clone()).collect()
    };
    assert_eq!(mails(&t.recipients.to), ["bob@example.net"]);
    assert_eq!(mails(&t.recipients.cc), ["carol@example.net"]);
    assert_eq!(mails(&t.recipients.bcc), ["dave@example.net"]);
    assert_eq!(t.files.len(), 2);
    for (f, (name, data)) in t
        .files
        .iter()
        .zip([("figures.bin", &big), ("note.txt", &small)])
    {
        assert_eq!(f.name, name);
        assert_eq!(f.size, data.len() as u64);
        assert_eq!(f.checksum.as_deref(), Some(sha256_hex(data).as_str()));
        assert_eq!(f.uploaded_sha256, sha256_hex(data));
        assert_eq!(file_sha256(&f.path), sha256_hex(data));
    }

    // The session settings (SPEC §2).
    let s = &t.settings;
    let sender = s.sender.as_ref().unwrap();
    assert_eq!(sender.name.as_deref(), Some("Alice Example"));
    assert_eq!(sender.phone.as_deref(), Some("+49 30 1234"));
    let n = s.notification_message.as_ref().unwrap();
    assert_eq!(n.subject.as_deref(), Some("Quarterly figures"));
    assert_eq!(
        n.body.as_deref(),
        Some("Hello Bob,<br>\nthe figures are attached.<br>\nAlice")
    );
    assert_eq!(t.accept_language.as_deref(), Some("en"));
    assert_eq!(s.sender_language.as_deref(), Some("en"));
    assert_eq!(s.recipient_language.as_deref(), Some("en"));
    assert_eq!(t.password_mode, PasswordMode::Generated);
    assert_eq!(s.send_recipient_notification, Some(true));
    // Generated password: the sender learns it only from the upload summary.
    assert_eq!(s.send_upload_summary, Some(true));
    assert_eq!(s.send_download_notifications, Some(true));
    // A separate key since issue 11 (download_summary, default false).
    assert_eq!(s.send_download_summary, Some(false));
    assert_eq!(s.show_file_names, Some(false));
    assert_eq!(s.file_checksum_algorithm.as_deref(), Some("SHA256"));
    let exp = s.expiration_date.as_deref().unwrap();
    let exp = chrono::DateTime::parse_from_rfc3339(exp)
        .or_else(|_| chrono::DateTime::parse_from_str(exp, "%Y-%m-%dT%H:%M:%S%.f%z"))
        .unwrap_or_else(|e| panic!("expiration {exp:?}: {e}"));
    let days = (exp.with_timezone(&chrono::Utc) - chrono::Utc::now()).num_hours();
    assert!(
        (6 * 24..=7 * 24).contains(&days),
        "expiration in {days} h, policy says 7 days"
    );

    // The next hop: our Received, then the original minus both attachment parts, plus one
    // notice at the top of the text body. Nothing else changed.
    let got = h.sink.messages();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].mail_from, "MAIL FROM:<alice@example.org>");
    assert_eq!(
        got[0].rcpt_to,
        [
            "RCPT TO:<bob@example.net>",
            "RCPT TO:<carol@example.net>",
            "RCPT TO:<dave@example.net>"
        ]
    );
    let (received, rewritten) = split_received(&got[0].data);
    assert!(String::from_utf8_lossy(received).contains("by gw.test"));
    let expected = remove(&msg, attachment_segment(big_head, &big).as_bytes());
    let expected = remove(&expected, attachment_segment(small_head, &small).as_bytes());
    let (at, notice) = single_insertion(&expected, rewritten);
    assert!(
        expected[..at].ends_with(b"Content-Transfer-Encoding: 8bit\r\n\r\n"),
        "the notice goes at the top of the text body"
    );
    let notice = String::from_utf8_lossy(notice);
    assert!(notice.contains("figures.bin"), "{notice}");
    assert!(notice.contains("note.txt"), "{notice}");
    assert!(notice.contains(&t.tracking_id), "{notice}");
    assert!(
        notice.contains(&exp.format("%Y-%m-%d").to_string()),
        "{notice}"
    );
    assert!(!notice.contains(&t.password), "no password in the mail");

    // Audit line.
    let audit = h.audit();
    assert_eq!(audit.len(), 1);
    assert_eq!(audit[0]["decision"], "convert");
    assert_eq!(audit[0]["tracking_id"], t.tracking_id.as_str());
    assert_eq!(audit[0]["files"][0]["sha256"], sha256_hex(&big).as_str());
    h.stop().await;
}

#[tokio::test]
async fn below_threshold_and_unmatched_sender_pass_byte_identical() {
    let h = Harness::start(&policy("tempfail")).await;
    let small = payload(900, 2);
    let msg = mixed(
        HEADERS,
        "small",
        &[(
            "Content-Type: application/pdf; name=\"a.pdf\"\r\nContent-Disposition: attachment; filename=\"a.pdf\"",
            &small,
        )],
    );
    assert_eq!(
        h.send("alice@example.org", &["bob@example.net"], &msg)
            .await,
        OK
    );
    // A sender without a rule: even a large attachment passes.
    let big = payload(64 * 1024, 3);
    let msg2 = mixed(
        HEADERS,
        "big, other domain",
        &[(
            "Content-Type: application/pdf; name=\"b.pdf\"\r\nContent-Disposition: attachment; filename=\"b.pdf\"",
            &big,
        )],
    );
    assert_eq!(
        h.send("someone@other.example", &["bob@example.net"], &msg2)
            .await,
        OK
    );
    // Dot-stuffing round trip: a line starting with a dot, and bare text.
    let msg3 = b"Subject: dots\r\n\r\n.leading dot\r\n..two\r\n".to_vec();
    assert_eq!(
        h.send("alice@example.org", &["bob@example.net"], &msg3)
            .await,
        OK
    );
    let got = h.sink.messages();
    assert_eq!(got.len(), 3);
    for (m, orig) in got.iter().zip([&msg, &msg2, &msg3]) {
        let (_, rest) = split_received(&m.data);
        assert_eq!(rest, orig.as_slice());
    }
    assert!(h.emu.transfers().is_empty());
    assert_eq!(h.emu.stats().sessions_created, 0);
    let audit = h.audit();
    assert_eq!(audit[0]["decision"], "pass");
    assert_eq!(audit[1]["decision"], "pass");
    assert_eq!(audit[1]["policy"], serde_json::Value::Null);
    h.stop().await;
}

#[tokio::test]
async fn signed_message_passes_unchanged() {
    let h = Harness::start(&policy("tempfail")).await;
    let big = payload(8 * 1024, 4);
    let inner = mixed(
        "",
        "signed text",
        &[(
            "Content-Type: application/octet-stream; name=\"s.bin\"\r\nContent-Disposition: attachment; filename=\"s.bin\"",
            &big,
        )],
    );
    let msg = [
        HEADERS.as_bytes(),
        b"MIME-Version: 1.0\r\nContent-Type: multipart/signed; protocol=\"application/pkcs7-signature\"; micalg=sha-256; boundary=\"sig\"\r\n\r\n--sig\r\n",
        &inner[b"MIME-Version: 1.0\r\n".len()..],
        b"\r\n--sig\r\nContent-Type: application/pkcs7-signature; name=\"smime.p7s\"\r\nContent-Transfer-Encoding: base64\r\nContent-Disposition: attachment; filename=\"smime.p7s\"\r\n\r\nMIAGCSqGSIb3DQEHAqCAMIACAQExDzANBglghkgBZQMEAgEFADCABgkqhkiG9w0BBwEAAKCAMIIE\r\n--sig--\r\n",
    ]
    .concat();
    assert_eq!(
        h.send("alice@example.org", &["bob@example.net"], &msg)
            .await,
        OK
    );
    let got = h.sink.messages();
    let (_, rest) = split_received(&got[0].data);
    assert_eq!(rest, msg.as_slice());
    assert_eq!(h.emu.stats().sessions_created, 0);
    h.stop().await;
}

#[tokio::test]
async fn inline_image_and_calendar_stay_duplicate_names_become_unique() {
    let h = Harness::start(&policy("tempfail")).await;
    let img = payload(6 * 1024, 5);
    let a1 = payload(4 * 1024, 6);
    let a2 = payload(5 * 1024, 7);
    let ics = "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nMETHOD:REQUEST\r\nBEGIN:VEVENT\r\nUID:1@example.org\r\nDTSTART:20261201T100000Z\r\nSUMMARY:Review\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n";
    let related = format!(
        "Content-Type: multipart/related; boundary=\"rel\"\r\n\r\n\
         --rel\r\nContent-Type: text/html; charset=utf-8\r\n\r\n<p>Logo: <img src=\"cid:logo@x\"></p>\r\n\
         --rel\r\nContent-Type: image/png; name=\"logo.png\"\r\nContent-ID: <logo@x>\r\nContent-Disposition: inline; filename=\"logo.png\"\r\nContent-Transfer-Encoding: base64\r\n\r\n{}\
         --rel--\r\n",
        base64_lines(&img)
    );
    let msg = format!(
        "{HEADERS}MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"mix\"\r\n\r\n\
         --mix\r\n{related}\
         --mix\r\nContent-Type: text/calendar; method=REQUEST; charset=utf-8\r\n\r\n{ics}\
         --mix\r\nContent-Type: application/octet-stream; name=\"data.bin\"\r\nContent-Disposition: attachment; filename=\"data.bin\"\r\nContent-Transfer-Encoding: base64\r\n\r\n{}\
         --mix\r\nContent-Type: application/octet-stream; name=\"data.bin\"\r\nContent-Disposition: attachment; filename=\"data.bin\"\r\nContent-Transfer-Encoding: base64\r\n\r\n{}\
         --mix--\r\n",
        base64_lines(&a1),
        base64_lines(&a2)
    )
    .into_bytes();
    assert_eq!(
        h.send("alice@example.org", &["bob@example.net"], &msg)
            .await,
        OK
    );
    let ts = h.emu.transfers();
    assert_eq!(ts.len(), 1);
    let names: Vec<&str> = ts[0].files.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(names.len(), 2);
    assert_eq!(names[0], "data.bin");
    assert_ne!(
        names[1], "data.bin",
        "duplicate names made unique: {names:?}"
    );
    assert!(names[1].ends_with(".bin"), "{names:?}");
    assert_eq!(ts[0].files[0].uploaded_sha256, sha256_hex(&a1));
    assert_eq!(ts[0].files[1].uploaded_sha256, sha256_hex(&a2));

    let got = h.sink.messages();
    let (_, rewritten) = split_received(&got[0].data);
    let rewritten = String::from_utf8(rewritten.to_vec()).unwrap();
    // The inline image and the invite are kept byte for byte; the files are gone.
    assert!(rewritten.contains(&base64_lines(&img)));
    assert!(rewritten.contains(&format!(
        "Content-Type: text/calendar; method=REQUEST; charset=utf-8\r\n\r\n{ics}"
    )));
    assert!(!rewritten.contains(&base64_lines(&a1)[..76]));
    assert!(!rewritten.contains(&base64_lines(&a2)[..76]));
    assert!(
        rewritten.contains(names[1]),
        "the notice names the renamed file"
    );
    h.stop().await;
}

#[tokio::test]
async fn non_ascii_file_names_and_subject_are_decoded() {
    let h = Harness::start(&policy("tempfail")).await;
    let a1 = payload(3000, 8);
    let a2 = payload(3000, 9);
    let headers = "From: =?utf-8?q?J=C3=B6rg_M=C3=BCller?= <joerg@example.org>\r\n\
To: bob@example.net\r\n\
Subject: =?utf-8?b?w5xiZXJzaWNodCBmw7xyIE3DpHJ6?=\r\n";
    let msg = mixed(
        headers,
        "Gr\u{fc}\u{df}e",
        &[
            (
                "Content-Type: application/pdf\r\nContent-Disposition: attachment; filename*=utf-8''%C3%9Cbersicht%20M%C3%A4rz.pdf",
                &a1,
            ),
            (
                "Content-Type: application/pdf; name=\"=?iso-8859-1?q?Pr=E4sentation.pdf?=\"\r\nContent-Disposition: attachment",
                &a2,
            ),
        ],
    );
    assert_eq!(
        h.send("joerg@example.org", &["bob@example.net"], &msg)
            .await,
        OK
    );
    let ts = h.emu.transfers();
    assert_eq!(ts.len(), 1);
    let names: Vec<&str> = ts[0].files.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(names, ["Übersicht März.pdf", "Präsentation.pdf"]);
    let s = &ts[0].settings;
    assert_eq!(
        s.notification_message.as_ref().unwrap().subject.as_deref(),
        Some("Übersicht für März")
    );
    assert_eq!(
        s.sender.as_ref().unwrap().name.as_deref(),
        Some("Jörg Müller")
    );
    h.stop().await;
}

#[tokio::test]
async fn server_retention_caps_expiry_password_none_and_german() {
    let h = Harness::start(
        "[[policy]]\nname = \"de\"\nsenders = [\"*@example.org\"]\nthreshold = 1024\n\
         password_mode = \"none\"\nexpiration_days = 30\nlanguage = \"de\"\nnotify_recipients = false\n",
    )
    .await;
    h.emu.set_policy(cryptshare_gateway::sim::SimPolicy {
        max_retention_period: 3,
        ..Default::default()
    });
    let data = payload(4096, 12);
    let msg = mixed(
        HEADERS,
        "Hallo",
        &[(
            "Content-Type: application/pdf; name=\"a.pdf\"\r\nContent-Disposition: attachment; filename=\"a.pdf\"",
            &data,
        )],
    );
    assert_eq!(
        h.send("alice@example.org", &["bob@example.net"], &msg)
            .await,
        OK
    );
    let ts = h.emu.transfers();
    assert_eq!(ts.len(), 1);
    let t = &ts[0];
    assert_eq!(t.password_mode, PasswordMode::None);
    assert_eq!(t.accept_language.as_deref(), Some("de"));
    assert_eq!(t.settings.send_recipient_notification, Some(false));
    let exp = t.settings.expiration_date.as_deref().unwrap();
    let exp = chrono::DateTime::parse_from_rfc3339(exp).unwrap();
    let hours = (exp.with_timezone(&chrono::Utc) - chrono::Utc::now()).num_hours();
    assert!(
        (24..=2 * 24).contains(&hours),
        "capped by the server's 3 days, less a day of margin: {hours} h"
    );
    let got = h.sink.messages();
    let (_, rewritten) = split_received(&got[0].data);
    let text = String::from_utf8_lossy(rewritten);
    assert!(
        text.contains(&format!("Verfügbar bis: {}", exp.format("%d.%m.%Y"))),
        "{text}"
    );
    assert!(
        text.contains("Ein Passwort ist nicht erforderlich."),
        "{text}"
    );
    // Password mode none keys the link with the password: it must not travel in the mail.
    assert!(!text.to_lowercase().contains("password="), "{text}");
    assert!(
        text.contains("Den Download-Link erhalten Sie vom Absender."),
        "{text}"
    );
    h.stop().await;
}

#[tokio::test]
async fn attachment_only_message_gets_a_notice_part_and_html_body_feeds_the_notification() {
    let h = Harness::start(&policy("tempfail")).await;
    let data = payload(5000, 13);
    // No text body at all: the notice becomes a part of its own.
    let msg = format!(
        "{HEADERS}MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"x\"\r\n\r\n\
         --x\r\nContent-Type: application/zip; name=\"only.zip\"\r\nContent-Disposition: attachment; filename=\"only.zip\"\r\nContent-Transfer-Encoding: base64\r\n\r\n{}\
         --x--\r\n",
        base64_lines(&data)
    )
    .into_bytes();
    assert_eq!(
        h.send("alice@example.org", &["bob@example.net"], &msg)
            .await,
        OK
    );
    // HTML only: the notification body is its text.
    let msg2 = format!(
        "{HEADERS}MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"x\"\r\n\r\n\
         --x\r\nContent-Type: text/html; charset=utf-8\r\n\r\n<p>Dear Bob &amp; team,</p><p>files &lt;attached&gt;</p>\r\n\
         --x\r\nContent-Type: application/zip; name=\"h.zip\"\r\nContent-Disposition: attachment; filename=\"h.zip\"\r\nContent-Transfer-Encoding: base64\r\n\r\n{}\
         --x--\r\n",
        base64_lines(&payload(5000, 14))
    )
    .into_bytes();
    assert_eq!(
        h.send("alice@example.org", &["bob@example.net"], &msg2)
            .await,
        OK
    );
    let ts = h.emu.transfers();
    assert_eq!(ts.len(), 2);
    assert_eq!(
        ts[1]
            .settings
            .notification_message
            .as_ref()
            .unwrap()
            .body
            .as_deref(),
        Some("Dear Bob &amp; team,files &lt;attached&gt;")
    );
    let got = h.sink.messages();
    let (_, first) = split_received(&got[0].data);
    let first = String::from_utf8_lossy(first);
    assert!(first.contains("only.zip"), "{first}");
    assert!(first.contains(&ts[0].tracking_id), "{first}");
    assert!(!first.contains(&base64_lines(&data)[..76]));
    // Valid MIME: still the original boundary structure, closed.
    assert!(first.trim_end().ends_with("--x--"), "{first}");
    let (_, second) = split_received(&got[1].data);
    let second = String::from_utf8_lossy(second);
    assert!(second.contains("h.zip") && second.contains(&ts[1].tracking_id));
    assert!(second.contains("<p>Dear Bob &amp; team,</p>"));
    h.stop().await;
}

#[tokio::test]
async fn subject_tag_forces_conversion_below_the_threshold_and_leaves_the_subject() {
    let h = Harness::start(&format!(
        "{}subject_tag = \"[secure]\"\n",
        policy("tempfail").replace("threshold = 1024", "threshold = 100000000")
    ))
    .await;
    let small = payload(2000, 21);
    let attach = "Content-Type: application/pdf; name=\"s.pdf\"\r\nContent-Disposition: attachment; filename=\"s.pdf\"";
    let untagged = mixed(
        "From: alice@example.org\r\nTo: bob@example.net\r\nSubject: Contract\r\n",
        "Hi",
        &[(attach, &small)],
    );
    assert_eq!(
        h.send("alice@example.org", &["bob@example.net"], &untagged)
            .await,
        OK
    );
    assert!(
        h.emu.transfers().is_empty(),
        "below the threshold without the tag: passed"
    );

    let tagged = mixed(
        "From: alice@example.org\r\nTo: bob@example.net\r\nSubject: [SECURE] Contract\r\n",
        "Hi",
        &[(attach, &small)],
    );
    assert_eq!(
        h.send("alice@example.org", &["bob@example.net"], &tagged)
            .await,
        OK
    );
    let ts = h.emu.transfers();
    assert_eq!(ts.len(), 1, "the tag forces the conversion");
    assert_eq!(
        ts[0]
            .settings
            .notification_message
            .as_ref()
            .unwrap()
            .subject
            .as_deref(),
        Some("Contract")
    );
    let got = h.sink.messages();
    let (_, rewritten) = split_received(&got[1].data);
    let text = String::from_utf8_lossy(rewritten);
    assert!(text.contains("\r\nSubject: Contract\r\n"), "{text}");
    assert!(!text.to_lowercase().contains("[secure]"), "{text}");

    // As Outlook sends a non-ASCII subject: the tag inside an encoded word.
    let encoded = mixed(
        "From: alice@example.org\r\nTo: bob@example.net\r\nSubject: =?utf-8?Q?Bericht_f=C3=BCr_Q3_[secure]?=\r\n",
        "Hi",
        &[(attach, &small)],
    );
    assert_eq!(
        h.send("alice@example.org", &["bob@example.net"], &encoded)
            .await,
        OK
    );
    let ts = h.emu.transfers();
    assert_eq!(ts.len(), 2, "the encoded tag forces the conversion too");
    let subject = |t: &cryptshare_gateway::sim::FinishedTransfer| {
        t.settings
            .notification_message
            .as_ref()
            .and_then(|m| m.subject.clone())
    };
    assert!(
        ts.iter()
            .any(|t| subject(t).as_deref() == Some("Bericht für Q3")),
        "notification subjects: {:?}",
        ts.iter().map(subject).collect::<Vec<_>>()
    );
    let got = h.sink.messages();
    let (_, rewritten) = split_received(&got[2].data);
    let text = String::from_utf8_lossy(rewritten);
    // "Bericht für Q3" as one UTF-8 B-word.
    assert!(
        text.contains("\r\nSubject: =?UTF-8?B?QmVyaWNodCBmw7xyIFEz?=\r\n"),
        "{text}"
    );
    h.stop().await;
}

/// `language = "auto"`: the message's `Content-Language:` (first tag with built-in texts)
/// decides the Cryptshare session's `Accept-Language` and the notice; without one,
/// `default_language`.
#[tokio::test]
async fn language_auto_follows_content_language_into_the_session_and_the_notice() {
    let h = Harness::start(
        "[[policy]]\nname = \"auto\"\nsenders = [\"*@example.org\"]\nthreshold = 1024\n\
         language = \"auto\"\ndefault_language = \"nl\"\n",
    )
    .await;
    let data = payload(4096, 21);
    let part = (
        "Content-Type: application/pdf; name=\"a.pdf\"\r\nContent-Disposition: attachment; filename=\"a.pdf\"",
        &data[..],
    );
    let french = format!("{HEADERS}Content-Language: pt-BR, fr-CH\r\n");
    for headers in [french.as_str(), HEADERS] {
        let msg = mixed(headers, "Bonjour", &[part]);
        assert_eq!(
            h.send("alice@example.org", &["bob@example.net"], &msg)
                .await,
            OK
        );
    }
    let langs: Vec<Option<String>> = h
        .emu
        .transfers()
        .iter()
        .map(|t| t.accept_language.clone())
        .collect();
    assert_eq!(langs, [Some("fr".to_string()), Some("nl".to_string())]);
    let got = h.sink.messages();
    assert_eq!(got.len(), 2);
    let text = |i: usize| String::from_utf8_lossy(&got[i].data).into_owned();
    assert!(
        text(0).contains("[Cryptshare] Les pi=C3=A8ces jointes de ce message")
            || text(0).contains("[Cryptshare] Les pièces jointes de ce message"),
        "{}",
        text(0)
    );
    assert!(text(1).contains("[Cryptshare] De bijlage"), "{}", text(1));
    assert!(!text(1).contains("Les pi"), "{}", text(1));
    h.stop().await;
}
