//! Issue 14: what recipients and senders get — `content = "message"` (whole message),
//! `notice_attachment`, `sender_receipt`. Through the real gateway (SMTP listener on loopback),
//! to a real next hop (the testkit sink), with the emulator; every emulator exchange is checked
//! against `openapi-1.8.json` when the harness goes ([`Emu`]).
//!
//! Whole message: the text goes to Cryptshare as the transfer's confidential message
//! (`message.eml`, `confidentialMessageFileId`), the attachment as a file; a recipient fetches
//! the confidential message through the emulator's recipient API (`GET /api/transfers/{id}/eml`)
//! and it is the original without the attachment, byte for byte; the relayed mail carries none
//! of the text, only the neutral notice. Every message is checked by Python's `email`
//! (policy.default) for defects.

mod pipeline_support;
mod support;

use cryptshare_gateway::sim::{FinishedTransfer, SimPolicy};
use pipeline_support::*;

const OK: &str = "250 2.0.0 OK, relayed (Queued as SINK)\r\n";
const SECRET: &str = "The merger closes on Friday; keep this to yourself.";

fn rule(extra: &str) -> String {
    format!("{}content = \"message\"\n{extra}", policy("tempfail"))
}

/// The message as the client sends it: the parts the confidential message keeps, and the PDF.
fn parts(pdf: &[u8], name: &str) -> (String, String) {
    let head = format!(
        "{HEADERS}MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"outer\"\r\n\r\n\
         --outer\r\nContent-Type: multipart/alternative; boundary=\"alt\"\r\n\r\n\
         --alt\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n{SECRET}\r\n\
         --alt\r\nContent-Type: text/html; charset=utf-8\r\n\r\n\
         <html><body><p>{SECRET}</p></body></html>\r\n\
         --alt--\r\n"
    );
    let pdf = format!(
        "--outer\r\nContent-Type: application/pdf; name=\"{name}\"\r\n\
         Content-Disposition: attachment; filename=\"{name}\"\r\n\
         Content-Transfer-Encoding: base64\r\n\r\n{}",
        base64_lines(pdf)
    );
    (head, pdf)
}

fn message(pdf: &[u8], name: &str) -> Vec<u8> {
    let (head, pdf) = parts(pdf, name);
    format!("{head}{pdf}--outer--\r\n").into_bytes()
}

/// What Python's `email` package (policy.default) makes of each message.
fn python_parse(dir: &std::path::Path, messages: &[&[u8]]) -> Vec<serde_json::Value> {
    let mut paths = Vec::new();
    for (i, m) in messages.iter().enumerate() {
        let p = dir.join(format!("parsed{i}.eml"));
        std::fs::write(&p, m).unwrap();
        paths.push(p);
    }
    let out = std::process::Command::new("python3")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/data/mime_check.py"
        ))
        .args(&paths)
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    v.as_array().unwrap().clone()
}

/// `GET /api/transfers/{id}/eml` as a recipient: the recipient's transfer id, the password.
async fn fetch_eml(emu: &Emu, t: &FinishedTransfer, password: &str) -> reqwest::Response {
    let rid = &t.recipient_ids[0].transfer_id;
    reqwest::Client::new()
        .get(format!("{}/api/transfers/{rid}/eml", emu.url()))
        .header("X-CS-MajorApiVersion", "1")
        .header("X-CS-MinimumMinorApiVersion", "8")
        .header("X-CS-ProductKey", "api.rest")
        .header("X-CS-ClientId", CLIENT_ID)
        .header("X-CS-Password", password)
        .send()
        .await
        .unwrap()
}

/// The content of the first part of the emulator's EML (`multipart/mixed`, boundary in the
/// header): the confidential message file as stored.
fn first_part(eml: &[u8]) -> (String, Vec<u8>) {
    let text = String::from_utf8_lossy(eml).into_owned();
    let b = text
        .split("boundary=\"")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .expect("boundary")
        .to_string();
    let delim = format!("\r\n--{b}");
    let start = text.find(&format!("--{b}\r\n")).unwrap() + b.len() + 4;
    let header_end = text[start..].find("\r\n\r\n").unwrap() + start;
    let end = text[header_end + 4..].find(&delim).unwrap() + header_end + 4;
    (
        text[start..header_end].to_string(),
        eml[header_end + 4..end].to_vec(),
    )
}

#[tokio::test]
async fn the_text_goes_as_the_confidential_message_and_the_mail_is_a_neutral_notice() {
    let h = Harness::start(&rule("")).await;
    let pdf = payload(40 * 1024, 7);
    let msg = message(&pdf, "figures.pdf");
    assert_eq!(
        h.send("alice@example.org", &["bob@example.net"], &msg)
            .await,
        OK
    );

    // One transfer: the PDF and message.eml, which is the confidential message.
    let ts = h.emu.transfers();
    assert_eq!(ts.len(), 1);
    let t = &ts[0];
    let names: Vec<&str> = t.files.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(names, ["figures.pdf", "message.eml"]);
    let eml_file = &t.files[1];
    assert_eq!(
        t.settings.confidential_message_file_id.as_deref(),
        Some(eml_file.id.as_str())
    );
    // The text travels in neither the notification text nor the relayed mail: no request
    // carries it; the subject goes (the server's notification needs one).
    let requests = h.emu.requests();
    let patch = requests
        .iter()
        .find(|r| r.body.get("notificationMessage").is_some())
        .expect("a PATCH with the notification message");
    assert_eq!(
        patch.body["notificationMessage"],
        serde_json::json!({"subject": "Quarterly figures"})
    );
    assert!(
        requests
            .iter()
            .all(|r| !r.body.to_string().contains("merger"))
    );

    // The recipient fetches the confidential message: the original without the attachment.
    let (head, _) = parts(&pdf, "figures.pdf");
    let expected = format!("{head}--outer--\r\n").into_bytes();
    let r = fetch_eml(&h.emu, t, &t.password).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "application/octet-stream");
    let eml = r.bytes().await.unwrap().to_vec();
    let (part_head, content) = first_part(&eml);
    assert_eq!(
        part_head,
        "Content-Type: message/rfc822\r\n\
         Content-Disposition: inline; filename*=UTF-8''message.eml\r\n\
         Content-Transfer-Encoding: 7bit"
    );
    assert_eq!(
        String::from_utf8_lossy(&content),
        String::from_utf8_lossy(&expected)
    );
    assert_eq!(eml_file.uploaded_sha256, sha256_hex(&expected));
    // The EML is valid MIME and embeds the PDF.
    let parsed = python_parse(h.dir.path(), &[&eml]);
    assert_eq!(parsed[0]["defects"], serde_json::json!([]));
    assert!(
        String::from_utf8_lossy(&eml).contains(&base64_lines(&pdf)),
        "the PDF is not embedded"
    );
    // A wrong password gets nothing.
    let r = fetch_eml(&h.emu, t, "wrong").await;
    assert_eq!(r.status(), 401);

    // The relayed mail: the sender's header, then only the neutral notice.
    let got = h.sink.messages();
    assert_eq!(got.len(), 1);
    let relayed = split_received(&got[0].data).1;
    let relayed_text = String::from_utf8_lossy(relayed);
    assert!(relayed.starts_with(HEADERS.as_bytes()), "{relayed_text}");
    assert!(!relayed_text.contains("merger"), "{relayed_text}");
    assert!(!relayed_text.contains(&base64_lines(&pdf)[..76]));
    let p = &python_parse(h.dir.path(), &[relayed])[0];
    assert_eq!(p["defects"], serde_json::json!([]), "{relayed_text}");
    let expiry = &t.settings.expiration_date.as_deref().unwrap()[..10];
    let link = &t.recipient_ids[0].download_url;
    assert_eq!(
        p["text"].as_str().unwrap().replace("\r\n", "\n"),
        format!(
            "Alice Example has sent you a confidential message through Cryptshare.\n\n\
             Enclosed files:\n  - figures.pdf (40.0 KB)\n\
             Available until: {expiry}\nDownload: {link}\n\n\
             For your protection, the text of the message is not contained in this e-mail: \
             open the Cryptshare transfer to read it.\n\
             You receive the download link in a separate e-mail from the Cryptshare server. \
             The password comes from the sender.\n\n\
             Tracking ID: {}\n",
            t.tracking_id
        )
    );
    let html = p["html"].as_str().unwrap();
    assert!(html.contains("<li>figures.pdf (40.0 KB)</li>"), "{html}");
    assert!(!html.contains("merger"));
    let audit = h.audit();
    assert_eq!(audit[0]["decision"], "convert");
    h.stop().await;
}

/// A message that is only text goes as a whole too (the confidential message is the transfer's
/// only file); a hostile sender name and file name are escaped in the HTML notice and in
/// `attachments.html`, and lose their bidi controls.
#[tokio::test]
async fn hostile_names_are_escaped_and_the_attachment_list_is_a_part() {
    let h = Harness::start(&rule("notice_attachment = true\n")).await;
    let hostile = "Q&A <img src=x onerror=alert(1)>\u{202e}fdp.exe";
    let pdf = payload(4 * 1024, 3);
    let msg = message(&pdf, &format!("=?utf-8?B?{}?=", b64(hostile.as_bytes())));
    let msg = String::from_utf8(msg)
        .unwrap()
        .replace(
            "From: Alice Example <alice@example.org>",
            "From: =?utf-8?B?PGI+RXZlPC9iPuKArg==?= <alice@example.org>",
        )
        .into_bytes();
    assert_eq!(
        h.send("alice@example.org", &["bob@example.net"], &msg)
            .await,
        OK
    );
    let t = &h.emu.transfers()[0];
    let stored = t.files[0].name.clone();
    assert!(
        !stored.contains('<') && !stored.contains('\u{202e}'),
        "{stored:?}"
    );

    let got = h.sink.messages();
    let relayed = split_received(&got[0].data).1;
    let p = &python_parse(h.dir.path(), &[relayed])[0];
    assert_eq!(p["defects"], serde_json::json!([]));
    let parts: Vec<Vec<String>> = serde_json::from_value(p["parts"].clone()).unwrap();
    assert_eq!(
        parts,
        [
            vec!["multipart/mixed".to_string(), String::new()],
            vec!["multipart/alternative".into(), String::new()],
            vec!["text/plain".into(), String::new()],
            vec!["text/html".into(), String::new()],
            vec!["text/html".into(), "attachments.html".into()],
        ]
    );
    let html = p["html"].as_str().unwrap();
    assert!(!html.contains("<img") && !html.contains("<b>Eve"), "{html}");
    // The name as Cryptshare has it, escaped: in the notice's list and in attachments.html.
    let escaped = stored.replace('&', "&amp;").replace('"', "&quot;");
    assert!(escaped.starts_with("Q&amp;A "), "{escaped}");
    assert!(
        html.contains(&format!("<li>{escaped} (4.0 KB)</li>")),
        "{html}"
    );
    assert!(html.contains(&format!("<tr><td>{escaped}</td>")), "{html}");
    assert!(!html.contains('\u{202e}'), "{html}");
    assert!(
        html.contains("&lt;b&gt;Eve&lt;/b&gt; has sent you"),
        "{html}"
    );
    let text = p["text"].as_str().unwrap();
    assert!(!text.contains('\u{202e}'), "{text}");
    h.stop().await;
}

/// The server's policy decides: no confidential message allowed — no transfer (the text would
/// otherwise travel in clear), a configuration error answered 451 whatever `on_error` says;
/// one required — a whole-message transfer satisfies it.
#[tokio::test]
async fn the_servers_confidential_message_rules_are_honoured() {
    let h = Harness::start(&rule("")).await;
    h.emu.set_policy(SimPolicy {
        confidential_message_allowed: false,
        ..SimPolicy::default()
    });
    let msg = message(&payload(4 * 1024, 1), "a.pdf");
    let reply = h
        .send("alice@example.org", &["bob@example.net"], &msg)
        .await;
    assert!(reply.starts_with("451 4."), "{reply}");
    assert!(reply.contains("content"), "{reply}");
    assert!(h.sink.messages().is_empty());
    assert_eq!(h.emu.stats().sessions_created, 0);

    h.emu.set_policy(SimPolicy {
        confidential_message_required: true,
        ..SimPolicy::default()
    });
    assert_eq!(
        h.send("alice@example.org", &["bob@example.net"], &msg)
            .await,
        OK
    );
    assert_eq!(h.emu.transfers().len(), 1);
    h.stop().await;
}

fn b64(b: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(b)
}

/// `notice_attachment` without whole-message mode: the text stays (with the notice on top),
/// the PDF goes, and `attachments.html` is the last part of the root `multipart/mixed`.
#[tokio::test]
async fn the_attachment_list_goes_last_into_a_rewritten_message() {
    let h = Harness::start(&format!("{}notice_attachment = true\n", policy("tempfail"))).await;
    let msg = message(&payload(8 * 1024, 5), "report.pdf");
    assert_eq!(
        h.send("alice@example.org", &["bob@example.net"], &msg)
            .await,
        OK
    );
    let got = h.sink.messages();
    let relayed = split_received(&got[0].data).1;
    let p = &python_parse(h.dir.path(), &[relayed])[0];
    assert_eq!(p["defects"], serde_json::json!([]));
    let parts: Vec<Vec<String>> = serde_json::from_value(p["parts"].clone()).unwrap();
    assert_eq!(
        parts,
        [
            vec!["multipart/mixed".to_string(), String::new()],
            vec!["multipart/alternative".into(), String::new()],
            vec!["text/plain".into(), String::new()],
            vec!["text/html".into(), String::new()],
            vec!["text/html".into(), "attachments.html".into()],
        ]
    );
    assert!(p["text"].as_str().unwrap().contains(SECRET));
    let html = p["html"].as_str().unwrap();
    assert!(
        html.contains("<tr><td>report.pdf</td><td style=\"text-align:right\">8.0 KB</td></tr>"),
        "{html}"
    );
    assert_eq!(h.emu.transfers()[0].files.len(), 1);
    h.stop().await;
}

/// The sender's receipt, in every language: a message of its own from the null reverse path
/// to the envelope sender, auto-generated (RFC 3834), valid MIME, naming the recipients, the
/// files with size and SHA-256, the tracking id and the expiry. A retry of the same message
/// (the upstream missed our 250) reuses the transfer and sends no second receipt.
#[tokio::test]
async fn the_sender_gets_one_receipt_in_the_policys_language() {
    let subject = "Q4 <script>alert(1)</script> \u{202e}gnp.exe";
    for (lang, prefix, tracking) in [
        ("en", "Cryptshare receipt", "Tracking ID: "),
        ("de", "Cryptshare-Versandbestätigung", "Tracking-ID: "),
        ("fr", "Accusé d'envoi Cryptshare", "Identifiant de suivi : "),
        (
            "es",
            "Confirmación de envío Cryptshare",
            "ID de seguimiento: ",
        ),
        ("it", "Conferma di invio Cryptshare", "ID di tracciamento: "),
        ("nl", "Cryptshare-verzendbevestiging", "Tracking-ID: "),
    ] {
        let from = if lang == "de" {
            "receipt_from = \"Versand <versand@example.org>\"\n"
        } else {
            ""
        };
        let rule =
            policy("tempfail").replace("language = \"en\"", &format!("language = \"{lang}\""));
        let h = Harness::start(&format!("{rule}sender_receipt = true\n{from}")).await;
        let pdf = payload(3 * 1024, 2);
        let msg = String::from_utf8(message(&pdf, "figures.pdf"))
            .unwrap()
            .replace(
                "Subject: Quarterly figures",
                &format!("Subject: =?utf-8?B?{}?=", b64(subject.as_bytes())),
            )
            .into_bytes();
        let rcpts = ["bob@example.net", "carol@example.net"];
        assert_eq!(
            h.send("alice@example.org", &rcpts, &msg).await,
            OK,
            "{lang}"
        );
        let got = h.sink.messages();
        assert_eq!(got.len(), 2, "{lang}");
        assert_eq!(got[1].mail_from, "MAIL FROM:<>", "{lang}");
        assert_eq!(got[1].rcpt_to, ["RCPT TO:<alice@example.org>"]);
        let receipt = &got[1].data;
        assert!(receipt.is_ascii() && receipt.split(|&b| b == b'\n').all(|l| l.len() <= 78));
        let p = &python_parse(h.dir.path(), &[receipt])[0];
        assert_eq!(p["defects"], serde_json::json!([]), "{lang}");
        let headers: Vec<(String, String)> = serde_json::from_value(p["headers"].clone()).unwrap();
        let names: Vec<&str> = headers.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            names,
            [
                "From",
                "To",
                "Subject",
                "Date",
                "Message-ID",
                "In-Reply-To",
                "References",
                "Auto-Submitted",
                "X-Auto-Response-Suppress",
                "Content-Language",
                "MIME-Version",
                "Content-Type",
                "Content-Transfer-Encoding"
            ]
        );
        let header = |n: &str| headers.iter().find(|(k, _)| k == n).unwrap().1.clone();
        let expected_from = if lang == "de" {
            "Versand <versand@example.org>"
        } else {
            "Cryptshare Gateway <postmaster@gw.test>"
        };
        assert_eq!(header("From"), expected_from);
        assert_eq!(header("To"), "alice@example.org");
        // The bidi override is gone; the rest of the subject stays, as text.
        assert_eq!(
            header("Subject"),
            format!("{prefix}: Q4 <script>alert(1)</script> gnp.exe"),
            "{lang}"
        );
        assert!(header("Message-ID").ends_with("@gw.test>"));
        assert_eq!(header("In-Reply-To"), "<pipeline-test-1@example.org>");
        assert_eq!(header("Auto-Submitted"), "auto-generated");
        assert_eq!(header("Content-Language"), lang);
        assert_eq!(header("Content-Type"), "text/plain; charset=\"utf-8\"");
        let t = &h.emu.transfers()[0];
        let text = p["text"].as_str().unwrap().replace("\r\n", "\n");
        assert!(
            text.contains(&format!("{tracking}{}\n", t.tracking_id)),
            "{lang}: {text}"
        );
        assert!(
            text.contains("  - bob@example.net\n  - carol@example.net\n"),
            "{text}"
        );
        assert!(
            text.contains("  - figures.pdf (3")
                && text.contains(&format!("    SHA-256: {}\n", sha256_hex(&pdf))),
            "{text}"
        );
        assert!(!text.contains('\u{202e}'));
        // The same message again: the transfer is reused, no second receipt.
        assert_eq!(h.send("alice@example.org", &rcpts, &msg).await, OK);
        assert_eq!(h.sink.messages().len(), 3, "{lang}");
        assert_eq!(h.emu.stats().sessions_created, 1);
        h.stop().await;
    }
}

/// `subject_tag_message`: a tagged message goes as a whole even under `content =
/// "attachments"`, and the tag leaves the relayed subject and the confidential message; an
/// untagged one moves only its attachments.
#[tokio::test]
async fn the_subject_tag_can_ask_for_the_whole_message() {
    let rule = format!(
        "{}subject_tag = \"[secure]\"\nsubject_tag_message = true\n",
        policy("tempfail")
    );
    let h = Harness::start(&rule).await;
    let tagged = String::from_utf8(message(&payload(2 * 1024, 4), "a.pdf"))
        .unwrap()
        .replace(
            "Subject: Quarterly figures",
            "Subject: [secure] Quarterly figures",
        )
        .into_bytes();
    assert_eq!(
        h.send("alice@example.org", &["bob@example.net"], &tagged)
            .await,
        OK
    );
    let t = &h.emu.transfers()[0];
    assert!(t.settings.confidential_message_file_id.is_some());
    let r = fetch_eml(&h.emu, t, &t.password).await;
    let (_, content) = first_part(&r.bytes().await.unwrap());
    let content = String::from_utf8(content).unwrap();
    assert!(
        content.contains("\r\nSubject: Quarterly figures\r\n"),
        "{content}"
    );
    assert!(content.contains(SECRET));
    let got = h.sink.messages();
    let relayed = String::from_utf8_lossy(split_received(&got[0].data).1).into_owned();
    assert!(
        relayed.contains("\r\nSubject: Quarterly figures\r\n"),
        "{relayed}"
    );
    assert!(!relayed.contains("merger"));

    let untagged = message(&payload(2 * 1024, 5), "b.pdf");
    assert_eq!(
        h.send("alice@example.org", &["bob@example.net"], &untagged)
            .await,
        OK
    );
    let ts = h.emu.transfers();
    assert_eq!(ts[1].settings.confidential_message_file_id, None);
    let relayed =
        String::from_utf8_lossy(split_received(&h.sink.messages()[1].data).1).into_owned();
    assert!(relayed.contains(SECRET));
    h.stop().await;
}
