//! Issue 14: `links = "per-recipient"`. The Cryptshare server sends no recipient notification;
//! the gateway relays one copy of the rewritten message per envelope recipient (To, Cc and Bcc
//! alike), each with that recipient's own download link, through the real gateway to a real
//! next hop, with the emulator. Each link works (the file downloaded through the emulator's
//! recipient page is the attachment, by SHA-256), one transfer serves every copy, headers stay
//! as the sender wrote them, every copy is valid MIME (Python's `email`, policy.default, finds no
//! defect) and its HTML notice escapes the file name. Exactly once per recipient: a copy the next
//! hop refused with a 4xx makes the message's reply that 4xx, and the upstream's retry sends only
//! that copy, reusing the transfer.

mod pipeline_support;
mod support;

use std::collections::HashMap;

use cryptshare_gateway::replies::Reply;
use cryptshare_gateway::sim::FinishedTransfer;
use pipeline_support::*;

const OK: &str = "250 2.0.0 OK, relayed (Queued as SINK)\r\n";
const FILE: &str = "figures <Q4> & more.pdf";
/// As Cryptshare gets it (and the notice lists it): `<`, `>` are not allowed in file names.
const UPLOADED: &str = "figures _Q4_ & more.pdf";

/// To: bob, Cc: carol; dave is a Bcc recipient (in the envelope only, as clients send Bcc).
const RCPTS: [&str; 3] = ["bob@example.net", "carol@example.net", "dave@example.com"];

fn rule() -> String {
    format!("{}links = \"per-recipient\"\n", policy("tempfail"))
}

/// multipart/mixed { multipart/alternative { text/plain, text/html }, the PDF }.
fn message(attachment: &[u8]) -> Vec<u8> {
    let mut m = String::from(HEADERS);
    m.push_str(
        "MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"outer\"\r\n\r\n\
         --outer\r\nContent-Type: multipart/alternative; boundary=\"alt\"\r\n\r\n\
         --alt\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nThe figures are attached.\r\n\
         --alt\r\nContent-Type: text/html; charset=utf-8\r\n\r\n\
         <html><body><p>The figures are attached.</p></body></html>\r\n\
         --alt--\r\n",
    );
    m.push_str(&format!(
        "--outer\r\nContent-Type: application/pdf; name=\"{FILE}\"\r\n\
         Content-Disposition: attachment; filename=\"{FILE}\"\r\n\
         Content-Transfer-Encoding: base64\r\n\r\n{}--outer--\r\n",
        base64_lines(attachment)
    ));
    m.into_bytes()
}

/// What Python's `email` package (policy.default) makes of each message.
fn python_parse(dir: &std::path::Path, messages: &[&[u8]]) -> Vec<serde_json::Value> {
    let mut paths = Vec::new();
    for (i, m) in messages.iter().enumerate() {
        let p = dir.join(format!("copy{i}.eml"));
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

/// The download link in a text notice.
fn link_in(text: &str) -> String {
    let line = text
        .lines()
        .find_map(|l| l.strip_prefix("Download: "))
        .unwrap_or_else(|| panic!("no link in {text}"));
    line.trim().to_string()
}

/// Download the transfer's file through the emulator's recipient page, with the transfer's
/// password (which the recipient gets from the sender).
async fn download(link: &str, t: &FinishedTransfer) -> Vec<u8> {
    let url = format!("{link}&password={}&get={}", t.password, t.files[0].id);
    let r = reqwest::get(&url).await.unwrap();
    assert_eq!(r.status(), 200, "{url}");
    r.bytes().await.unwrap().to_vec()
}

/// Per recipient: the links the emulator issued.
fn links(t: &FinishedTransfer) -> HashMap<String, String> {
    t.recipient_ids
        .iter()
        .map(|r| (r.mail.clone(), r.download_url.clone()))
        .collect()
}

#[tokio::test]
async fn one_copy_per_recipient_each_with_its_own_working_link() {
    let h = Harness::start(&rule()).await;
    let attachment = payload(300 * 1024, 14);
    let msg = message(&attachment);
    assert_eq!(h.send("alice@example.org", &RCPTS, &msg).await, OK);

    // One transfer, with the recipients as the headers say, and no notification from the server.
    let ts = h.emu.transfers();
    assert_eq!(ts.len(), 1);
    let t = &ts[0];
    let mails = |v: &[cryptshare_gateway::cryptshare::Recipient]| -> Vec<String> {
        v.iter().map(|r| r.mail.clone()).collect()
    };
    assert_eq!(mails(&t.recipients.to), ["bob@example.net"]);
    assert_eq!(mails(&t.recipients.cc), ["carol@example.net"]);
    assert_eq!(mails(&t.recipients.bcc), ["dave@example.com"]);
    assert_eq!(t.settings.send_recipient_notification, Some(false));
    let own = links(t);

    // Three next-hop transactions, one recipient each, in the envelope's order.
    let got = h.sink.messages();
    assert_eq!(got.len(), 3, "{got:?}");
    let copies: Vec<&[u8]> = got.iter().map(|m| split_received(&m.data).1).collect();
    let parsed = python_parse(h.dir.path(), &copies);
    let original_headers = &msg[..msg.windows(4).position(|w| w == b"\r\n\r\n").unwrap()];
    for (i, rcpt) in RCPTS.iter().enumerate() {
        assert_eq!(got[i].mail_from, "MAIL FROM:<alice@example.org>");
        assert_eq!(got[i].rcpt_to, [format!("RCPT TO:<{rcpt}>")]);
        // Headers as the sender wrote them (no Bcc header, nothing added but our Received:).
        assert!(copies[i].starts_with(original_headers), "{rcpt}");
        assert!(
            !String::from_utf8_lossy(copies[i]).contains("dave@") || *rcpt == "dave@example.com"
        );
        let p = &parsed[i];
        assert_eq!(p["defects"], serde_json::json!([]), "{rcpt}");
        let text = p["text"].as_str().unwrap();
        let html = p["html"].as_str().unwrap();
        // Its own link, nobody else's; in the text and as a link in the HTML.
        let link = link_in(text);
        assert_eq!(link, own[*rcpt], "{rcpt}: {text}");
        for (other, l) in &own {
            if other != rcpt {
                assert!(!text.contains(l.as_str()) && !html.contains(l.as_str()));
            }
        }
        let href = format!("<a href=\"{}\">", link.replace('&', "&amp;"));
        assert!(html.contains(&href), "{rcpt}: {html}");
        // The file list (escaped in HTML), the expiry, how to get the password.
        assert!(
            text.contains(&format!("  - {UPLOADED} (300.0 KB)")),
            "{text}"
        );
        assert!(
            html.contains("<li>figures _Q4_ &amp; more.pdf (300.0 KB)</li>"),
            "{html}"
        );
        assert!(!html.contains(UPLOADED));
        let expiry = t.settings.expiration_date.as_deref().unwrap()[..10].to_string();
        assert!(
            text.contains(&format!("Available until: {expiry}")),
            "{text}"
        );
        assert!(
            text.contains(
                "The download link above is yours alone: please do not forward this message. \
                 The password comes from the sender."
            ),
            "{text}"
        );
        // No password in any copy (password mode generated).
        assert!(!String::from_utf8_lossy(copies[i]).contains(&t.password));
        // The link works: the recipient downloads the attachment itself.
        let bytes = download(&link, t).await;
        assert_eq!(sha256_hex(&bytes), sha256_hex(&attachment), "{rcpt}");
    }
    let audit = h.audit();
    assert_eq!(audit.len(), 1);
    assert_eq!(audit[0]["decision"], "convert");
    let reason = audit[0]["reason"].as_str().unwrap();
    assert!(
        reason.ends_with("; per-recipient copies: 3 of 3 sent now, 0 delivered earlier"),
        "{reason}"
    );

    // The same message again (an upstream that missed our 250): every copy is delivered, none
    // goes again, the transfer is reused.
    assert_eq!(
        h.send("alice@example.org", &RCPTS, &msg).await,
        "250 2.0.0 OK, relayed (copy delivered by an earlier attempt)\r\n"
    );
    assert_eq!(h.sink.messages().len(), 3);
    assert_eq!(h.emu.stats().sessions_created, 1);
    h.stop().await;
}

#[tokio::test]
async fn a_copy_refused_with_4xx_is_the_only_one_sent_again_on_retry() {
    let h = Harness::start(&rule()).await;
    let attachment = payload(100 * 1024, 3);
    let msg = message(&attachment);
    h.sink.script(|s| {
        s.data_replies_once.insert(
            "carol@example.net".into(),
            Reply::new(451, [4, 3, 0], "Mailbox busy, try later"),
        );
    });
    // One reply for the whole message: the next hop's 4xx (the upstream keeps it and retries).
    assert_eq!(
        h.send("alice@example.org", &RCPTS, &msg).await,
        "451 4.3.0 Mailbox busy, try later\r\n"
    );
    let got = h.sink.messages();
    let to: Vec<&str> = got.iter().map(|m| m.rcpt_to[0].as_str()).collect();
    assert_eq!(
        to,
        ["RCPT TO:<bob@example.net>", "RCPT TO:<dave@example.com>"]
    );
    // The retry, by a gateway started anew on the same state (the record is on disk): only
    // carol's copy, the same transfer.
    let mut h = h;
    h.restart().await;
    assert_eq!(h.send("alice@example.org", &RCPTS, &msg).await, OK);
    let got = h.sink.messages();
    assert_eq!(got.len(), 3, "{got:?}");
    assert_eq!(got[2].rcpt_to, ["RCPT TO:<carol@example.net>"]);
    let ts = h.emu.transfers();
    assert_eq!(ts.len(), 1);
    assert_eq!(h.emu.stats().sessions_created, 1);
    let text = String::from_utf8_lossy(split_received(&got[2].data).1).into_owned();
    assert!(text.contains(&links(&ts[0])["carol@example.net"]), "{text}");
    let audit = h.audit();
    assert_eq!(audit.len(), 2);
    let reason = audit[1]["reason"].as_str().unwrap();
    assert!(
        reason.ends_with(
            "; reused the transfer of an earlier attempt; per-recipient copies: 1 of 3 sent now, 2 delivered earlier"
        ),
        "{reason}"
    );
    h.stop().await;
}

/// A copy refused for good (5xx) after others were delivered: one reply per message, so the
/// refusal, naming who did get their copy (the sender must hear of it; a retry would send only
/// the refused copy). Refused for every recipient: the next hop's 5xx as it is.
#[tokio::test]
async fn a_copy_refused_with_5xx_names_the_delivered_ones() {
    let h = Harness::start(&rule()).await;
    let msg = message(&payload(50 * 1024, 9));
    h.sink.script(|s| {
        s.data_replies_once.insert(
            "dave@example.com".into(),
            Reply::new(554, [5, 7, 1], "Content refused"),
        );
    });
    assert_eq!(
        h.send("alice@example.org", &RCPTS, &msg).await,
        "554 5.7.1 Copy for dave@example.com refused by the next hop: 554 Content refused; \
         the copies for bob@example.net, carol@example.net were delivered\r\n"
    );
    assert_eq!(h.sink.messages().len(), 2);

    let other = message(&payload(50 * 1024, 10));
    h.sink
        .script(|s| s.data_reply = Reply::new(554, [5, 7, 1], "Content refused"));
    assert_eq!(
        h.send("alice@example.org", &RCPTS, &other).await,
        "554 5.7.1 Content refused\r\n"
    );
    assert_eq!(h.sink.messages().len(), 2);
    h.stop().await;
}

/// The choice is the policy's: with the default `links = "notification"` one message goes to
/// every recipient and the server notifies them.
#[tokio::test]
async fn notification_links_relay_one_message() {
    let h = Harness::start(&policy("tempfail")).await;
    let msg = message(&payload(50 * 1024, 2));
    assert_eq!(h.send("alice@example.org", &RCPTS, &msg).await, OK);
    let got = h.sink.messages();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].rcpt_to.len(), 3);
    let ts = h.emu.transfers();
    assert_eq!(ts[0].settings.send_recipient_notification, Some(true));
    let text = String::from_utf8_lossy(&got[0].data).into_owned();
    assert!(!text.contains("Download: "), "{text}");
    h.stop().await;
}

const SPOOL: &str =
    "[queue]\nmode = \"spool\"\nmin_backoff = \"1s\"\nmax_backoff = \"1s\"\nmin_free_space = 0\n";

/// Poll a condition the test cannot be told about (the scheduler's files), bounded.
async fn wait_for(mut f: impl FnMut() -> bool) {
    for _ in 0..600 {
        if f() {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("condition not reached within 30 s");
}

/// The recipients of the sink's messages, one per copy.
fn copies_to(h: &Harness) -> Vec<String> {
    h.sink
        .messages()
        .iter()
        .map(|m| m.rcpt_to.join(" "))
        .collect()
}

/// Spool mode: each copy has its own verdict; the deferred one alone is tried again (after
/// the backoff), from the same transfer; no duplicates, no DSN.
#[tokio::test]
async fn spool_mode_defers_only_the_refused_copy() {
    let h = Harness::start(&format!("{SPOOL}{}", rule())).await;
    h.sink.script(|s| {
        s.data_replies_once.insert(
            "carol@example.net".into(),
            Reply::new(451, [4, 3, 0], "Mailbox busy, try later"),
        );
    });
    let msg = message(&payload(80 * 1024, 4));
    let reply = h.send("alice@example.org", &RCPTS, &msg).await;
    assert!(reply.starts_with("250 2.0.0 queued as "), "{reply}");
    let q = h.gw.spool().unwrap().queue().file().unwrap();
    wait_for(|| q.count() == 0).await;
    assert_eq!(
        copies_to(&h),
        [
            "RCPT TO:<bob@example.net>",
            "RCPT TO:<dave@example.com>",
            "RCPT TO:<carol@example.net>"
        ]
    );
    let ts = h.emu.transfers();
    assert_eq!(ts.len(), 1);
    assert_eq!(h.emu.stats().sessions_created, 1);
    let got = h.sink.messages();
    let text = String::from_utf8_lossy(split_received(&got[2].data).1).into_owned();
    assert!(text.contains(&links(&ts[0])["carol@example.net"]), "{text}");
    h.stop().await;
}

/// Spool mode, a recipient the next hop defers at RCPT: the next attempt has only that
/// recipient, and still finds the transfer made for the whole envelope (its key is over every
/// recipient of the queued message), so it gets its own link from it.
#[tokio::test]
async fn spool_mode_a_recipient_deferred_at_rcpt_gets_its_copy_from_the_same_transfer() {
    let h = Harness::start(&format!("{SPOOL}{}", rule())).await;
    h.sink.script(|s| {
        s.rcpt_replies.insert(
            "carol@example.net".into(),
            Reply::new(451, [4, 2, 0], "Mailbox busy, try later"),
        );
    });
    let msg = message(&payload(80 * 1024, 5));
    let reply = h.send("alice@example.org", &RCPTS, &msg).await;
    assert!(reply.starts_with("250 2.0.0 queued as "), "{reply}");
    h.sink.wait_messages(2).await;
    h.sink.script(|s| {
        s.rcpt_replies.clear();
    });
    let q = h.gw.spool().unwrap().queue().file().unwrap();
    wait_for(|| q.count() == 0).await;
    assert_eq!(
        copies_to(&h),
        [
            "RCPT TO:<bob@example.net>",
            "RCPT TO:<dave@example.com>",
            "RCPT TO:<carol@example.net>"
        ]
    );
    let ts = h.emu.transfers();
    assert_eq!(ts.len(), 1, "one transfer for every copy");
    let got = h.sink.messages();
    let text = String::from_utf8_lossy(split_received(&got[2].data).1).into_owned();
    assert!(text.contains(&links(&ts[0])["carol@example.net"]), "{text}");
    h.stop().await;
}

/// Password mode `none`: the link holds the password (SPEC §2: the one exception to "never a
/// password in the relayed message"), and each copy shows only its own recipient's link.
#[tokio::test]
async fn password_mode_none_puts_each_link_only_into_its_own_copy() {
    let rule = rule().replace("password_mode = \"generated\"", "password_mode = \"none\"");
    let h = Harness::start(&rule).await;
    let attachment = payload(40 * 1024, 8);
    assert_eq!(
        h.send("alice@example.org", &RCPTS, &message(&attachment))
            .await,
        OK
    );
    let ts = h.emu.transfers();
    let t = &ts[0];
    let own = links(t);
    let got = h.sink.messages();
    assert_eq!(got.len(), 3);
    for (i, rcpt) in RCPTS.iter().enumerate() {
        let text = String::from_utf8_lossy(split_received(&got[i].data).1).into_owned();
        assert!(own[*rcpt].contains("password="), "{}", own[*rcpt]);
        assert!(text.contains(&own[*rcpt]), "{rcpt}: {text}");
        assert!(text.contains("No password is needed."), "{text}");
        for (other, l) in &own {
            if other != rcpt {
                assert!(!text.contains(l.as_str()), "{rcpt} sees {other}'s link");
            }
        }
        let r = reqwest::get(format!("{}&get={}", own[*rcpt], t.files[0].id))
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(
            sha256_hex(&r.bytes().await.unwrap()),
            sha256_hex(&attachment)
        );
    }
    h.stop().await;
}
