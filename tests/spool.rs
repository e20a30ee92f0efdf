//! Issue 13, spool mode, in process (emulator, sink and gateway on loopback): `250 2.0.0 queued
//! as ID` at once, delivery in the background; a Cryptshare refusal becomes one failure DSN to
//! the sender that Python's `email` reads as a delivery-status report; a next hop that keeps
//! deferring a recipient beyond the lifetime gives a failure DSN, `NOTIFY=NEVER` none; the disk
//! reserve answers `452 4.3.1` at MAIL FROM, before any data.

mod pipeline_support;
mod support;

use std::time::Duration;

use cryptshare_gateway::replies::Reply;
use cryptshare_gateway::sim::{SimPolicy, SimSwitches};
use cryptshare_gateway_testkit::sink::SunkMessage;
use pipeline_support::*;

fn message() -> Vec<u8> {
    mixed(
        HEADERS,
        "see attachment",
        &[(
            "Content-Type: application/pdf; name=\"report.pdf\"\r\nContent-Disposition: attachment; filename=\"report.pdf\"",
            &payload(100 * 1024, 3),
        )],
    )
}

const SPOOL: &str =
    "[queue]\nmode = \"spool\"\nmin_backoff = \"1s\"\nmax_backoff = \"1s\"\nmin_free_space = 0\n";

fn queued_id(reply: &str) -> String {
    let id = reply
        .strip_prefix("250 2.0.0 queued as ")
        .and_then(|r| r.strip_suffix("\r\n"))
        .unwrap_or_else(|| panic!("not queued: {reply}"));
    assert!(
        !id.is_empty() && id.bytes().all(|b| b.is_ascii_hexdigit()),
        "{id}"
    );
    id.to_string()
}

/// The audit lines of queue id `id`, a line each: attempt, queue outcome, decision, recipients
/// and the reply code.
fn audit_summary(h: &Harness, id: &str) -> Vec<String> {
    h.audit()
        .iter()
        .filter(|l| l["queue_id"] == id)
        .map(|l| {
            let rcpts: Vec<&str> = l["recipients"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| r.as_str().unwrap())
                .collect();
            format!(
                "attempt={} outcome={} decision={} rcpts={} reply={}",
                l["attempt"],
                l["queue_outcome"].as_str().unwrap_or("-"),
                l["decision"].as_str().unwrap(),
                rcpts.join(","),
                &l["reply"].as_str().unwrap()[..3],
            )
        })
        .collect()
}

/// Python's `email` on a DSN: its structure, one line per fact.
fn python_reads(dsn: &[u8]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("dsn.eml");
    std::fs::write(&path, dsn).unwrap();
    let script = r#"
import email, sys
from email import policy
m = email.message_from_binary_file(open(sys.argv[1], 'rb'), policy=policy.compat32)
print(m.get_content_type(), m.get_param('report-type'))
print('to', m['To'])
print('from', m['From'])
parts = m.get_payload()
print('parts', [p.get_content_type() for p in parts])
ds = parts[1].get_payload()
print('per-message', ds[0]['Reporting-MTA'])
for r in ds[1:]:
    print('recipient', r['Final-Recipient'], r['Action'], r['Status'])
"#;
    let out = std::process::Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(&path)
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn is_dsn_to(m: &SunkMessage, sender: &str) -> bool {
    m.mail_from == "MAIL FROM:<>" && m.rcpt_to == [format!("RCPT TO:<{sender}>")]
}

#[tokio::test]
async fn queued_at_once_while_cryptshare_is_slow_then_converted_in_the_background() {
    let h = Harness::start(&format!("{SPOOL}{}", policy("tempfail"))).await;
    // Every transfer stays PROCESSING for 3 s: inline mode would hold the client that long.
    h.emu.set_switches(SimSwitches {
        processing_time: Some(Duration::from_secs(3)),
        ..SimSwitches::default()
    });
    let msg = message();
    let reply = h
        .send("alice@example.org", &["bob@example.net"], &msg)
        .await;
    let id = queued_id(&reply);
    // Nothing has reached the next hop when the client has its 250.
    assert!(h.sink.messages().is_empty());
    let got = h.sink.wait_messages(1).await;
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].rcpt_to, ["RCPT TO:<bob@example.net>"]);
    let (received, rewritten) = split_received(&got[0].data);
    assert!(
        String::from_utf8_lossy(received).contains(&format!(" id {id}")),
        "{}",
        String::from_utf8_lossy(received)
    );
    let ts = h.emu.transfers();
    assert_eq!(ts.len(), 1);
    assert!(String::from_utf8_lossy(rewritten).contains(&ts[0].tracking_id));
    // The queue is empty again.
    let q = h.gw.spool().unwrap().queue().file().unwrap();
    wait_for(|| q.count() == 0).await;
    h.stop().await;
}

/// Poll a condition the test cannot be told about (the scheduler's files), bounded.
async fn wait_for(mut f: impl FnMut() -> bool) {
    for _ in 0..600 {
        if f() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("condition not reached within 30 s");
}

#[tokio::test]
async fn a_cryptshare_refusal_is_one_failure_dsn_and_nothing_relayed() {
    let h = Harness::start(&format!("{SPOOL}{}", policy("reject"))).await;
    h.emu.set_policy(SimPolicy {
        refused_recipients: vec!["*@example.net".into()],
        ..SimPolicy::default()
    });
    let msg = message();
    let reply = h
        .send("alice@example.org", &["bob@example.net"], &msg)
        .await;
    let id = queued_id(&reply);
    let got = h.sink.wait_messages(1).await;
    assert_eq!(got.len(), 1, "{got:?}");
    assert!(is_dsn_to(&got[0], "alice@example.org"), "{got:?}");
    let (_, dsn) = split_received(&got[0].data);
    assert_eq!(
        python_reads(dsn),
        "multipart/report delivery-status\n\
         to <alice@example.org>\n\
         from Mail Delivery System <MAILER-DAEMON@gw.test>\n\
         parts ['text/plain', 'message/delivery-status', 'text/rfc822-headers']\n\
         per-message dns; gw.test\n\
         recipient rfc822; bob@example.net failed 5.7.1\n"
    );
    let text = String::from_utf8_lossy(dsn);
    assert!(text.contains(&id), "{text}");
    assert!(
        text.contains("Attachments refused by the Cryptshare policy"),
        "{text}"
    );
    assert_eq!(h.emu.stats().sessions_created, 0);
    let q = h.gw.spool().unwrap().queue().file().unwrap();
    wait_for(|| q.count() == 0).await;
    // Exactly one message ever reached the next hop: the DSN.
    assert_eq!(h.sink.messages().len(), 1);
    // The audit: the attempt's own line, then the queue's final word on the recipient.
    assert_eq!(
        audit_summary(&h, &id),
        [
            "attempt=1 outcome=- decision=reject rcpts=bob@example.net reply=554".to_string(),
            "attempt=1 outcome=failed decision=reject rcpts=bob@example.net reply=554".to_string(),
        ]
    );
    h.stop().await;
}

/// The next hop defers one recipient for longer than `max_lifetime`: the other is delivered
/// at once, the deferred one fails with a DSN after the lifetime; a recipient with
/// `NOTIFY=NEVER` fails the same way without a DSN.
#[tokio::test]
async fn deferred_beyond_the_lifetime_is_a_failure_dsn_unless_notify_never() {
    let h = Harness::start(&format!(
        "{SPOOL}max_lifetime = \"3s\"\ndelay_warning = \"0\"\n"
    ))
    .await;
    h.sink.script(|s| {
        for r in ["later@example.net", "quiet@example.net"] {
            s.rcpt_replies.insert(
                r.into(),
                Reply::new(451, [4, 2, 0], "Mailbox busy, try later"),
            );
        }
    });
    let (mut c, _) = Client::connect(h.smtp).await;
    assert!(c.cmd("EHLO client.test").await.starts_with("250"));
    assert!(
        c.cmd("MAIL FROM:<alice@example.org>")
            .await
            .starts_with("250")
    );
    for r in [
        "RCPT TO:<now@example.net>",
        "RCPT TO:<later@example.net>",
        "RCPT TO:<quiet@example.net> NOTIFY=NEVER",
    ] {
        assert_eq!(c.cmd(r).await, "250 2.1.5 Recipient OK\r\n", "{r}");
    }
    let msg = b"Subject: plain\r\n\r\nno attachment\r\n";
    let id = queued_id(&c.data(msg).await);
    let _ = c.cmd("QUIT").await;
    // Delivered to the one the next hop takes, then (after 3 s) one DSN, for `later` only.
    let got = h.sink.wait_messages(2).await;
    assert_eq!(got[0].rcpt_to, ["RCPT TO:<now@example.net>"]);
    assert_eq!(split_received(&got[0].data).1, msg);
    assert!(is_dsn_to(&got[1], "alice@example.org"), "{got:?}");
    let (_, dsn) = split_received(&got[1].data);
    assert_eq!(
        python_reads(dsn),
        "multipart/report delivery-status\n\
         to <alice@example.org>\n\
         from Mail Delivery System <MAILER-DAEMON@gw.test>\n\
         parts ['text/plain', 'message/delivery-status', 'text/rfc822-headers']\n\
         per-message dns; gw.test\n\
         recipient rfc822; later@example.net failed 4.4.7\n"
    );
    let text = String::from_utf8_lossy(dsn);
    assert!(text.contains("Mailbox busy, try later"), "{text}");
    assert!(text.contains(&id), "{text}");
    let q = h.gw.spool().unwrap().queue().file().unwrap();
    wait_for(|| q.count() == 0).await;
    assert_eq!(h.sink.messages().len(), 2, "a DSN for NOTIFY=NEVER?");
    // The audit: the first attempt's line (delivered to `now`; the attempts refused at RCPT
    // relay nothing and write no line of their own), then the queue's final word, with the
    // number of attempts it took (the 3 s lifetime over backoffs of 1 s and more: 2 to 5).
    let lines = audit_summary(&h, &id);
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert_eq!(
        lines[0],
        "attempt=1 outcome=- decision=pass rcpts=now@example.net reply=250"
    );
    let n: u32 = lines[1]
        .strip_prefix("attempt=")
        .and_then(|l| l.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{lines:?}"));
    assert!((2..=5).contains(&n), "{lines:?}");
    assert_eq!(
        lines[1],
        format!(
            "attempt={n} outcome=expired decision=reject \
             rcpts=later@example.net,quiet@example.net reply=451"
        )
    );
    h.stop().await;
}

#[tokio::test]
async fn the_disk_reserve_is_452_at_mail_from_before_any_data() {
    let h =
        Harness::start("[queue]\nmode = \"spool\"\nmin_free_space = 1000000000000000000\n").await;
    let (mut c, _) = Client::connect(h.smtp).await;
    assert!(c.cmd("EHLO client.test").await.starts_with("250"));
    assert_eq!(
        c.cmd("MAIL FROM:<alice@example.org>").await,
        "452 4.3.1 Insufficient system storage, try again later\r\n"
    );
    let _ = c.cmd("QUIT").await;
    assert_eq!(h.gw.spool().unwrap().queue().file().unwrap().count(), 0);
    assert!(h.sink.messages().is_empty());
    h.stop().await;
}
