//! Issue 11 item 3: the Cryptshare policy refuses some recipients, not all (`failedRecipients`).
//! With `deliver-original` the allowed recipients get the converted message (a transfer for them
//! only) and the refused ones the original, as two next-hop transactions; with `tempfail` and
//! `reject` the whole message is refused with `554 5.7.1` naming the refused recipients (SMTP
//! has one reply per message at the end of DATA) and nothing is created or relayed.

mod pipeline_support;
mod support;

use cryptshare_gateway::sim::SimPolicy;
use pipeline_support::*;

const OK: &str = "250 2.0.0 OK, relayed (Queued as SINK)\r\n";

fn message() -> Vec<u8> {
    mixed(
        HEADERS,
        "see attachment",
        &[(
            "Content-Type: application/pdf; name=\"report.pdf\"\r\nContent-Disposition: attachment; filename=\"report.pdf\"",
            &payload(200 * 1024, 5),
        )],
    )
}

async fn harness(on_error: &str) -> Harness {
    let h = Harness::start(&policy(on_error)).await;
    h.emu.set_policy(SimPolicy {
        refused_recipients: vec!["*@blocked.test".into()],
        ..SimPolicy::default()
    });
    h
}

const RCPTS: [&str; 3] = ["bob@example.net", "eve@blocked.test", "carol@example.net"];

#[tokio::test]
async fn deliver_original_converts_for_the_allowed_and_relays_the_original_to_the_refused() {
    let h = harness("deliver-original").await;
    let msg = message();
    let reply = h.send("alice@example.org", &RCPTS, &msg).await;
    assert_eq!(reply, OK);
    // One transfer, for the allowed recipients only.
    let ts = h.emu.transfers();
    assert_eq!(ts.len(), 1, "{ts:?}");
    let mut to: Vec<String> = ts[0].recipient_ids.iter().map(|r| r.mail.clone()).collect();
    to.sort();
    assert_eq!(to, ["bob@example.net", "carol@example.net"]);
    assert_eq!(h.emu.open_sessions(), 0);
    // Two next-hop transactions: the converted message to the allowed, the original to the
    // refused, each with its own envelope.
    let got = h.sink.messages();
    assert_eq!(got.len(), 2, "{got:?}");
    assert_eq!(got[0].mail_from, "MAIL FROM:<alice@example.org>");
    assert_eq!(
        got[0].rcpt_to,
        ["RCPT TO:<bob@example.net>", "RCPT TO:<carol@example.net>"]
    );
    let (_, converted) = split_received(&got[0].data);
    let text = String::from_utf8_lossy(converted);
    assert!(text.contains(&ts[0].tracking_id), "{text}");
    assert!(!text.contains(&base64_lines(&payload(200 * 1024, 5))[..200]));
    assert_eq!(got[1].mail_from, "MAIL FROM:<alice@example.org>");
    assert_eq!(got[1].rcpt_to, ["RCPT TO:<eve@blocked.test>"]);
    let (_, original) = split_received(&got[1].data);
    assert_eq!(original, msg.as_slice());
    // The audit line says both.
    let audit = h.audit();
    assert_eq!(audit.len(), 1);
    assert_eq!(audit[0]["decision"], "convert");
    let reason = audit[0]["reason"].as_str().unwrap();
    assert!(
        reason.ends_with(
            "; recipients not allowed: eve@blocked.test (POLICY_MISMATCH); the original to eve@blocked.test (deliver-original)"
        ),
        "{reason}"
    );
    // An upstream retry of the same message reuses the transfer.
    assert_eq!(h.send("alice@example.org", &RCPTS, &msg).await, OK);
    assert_eq!(h.emu.transfers().len(), 1);
    assert_eq!(h.emu.stats().sessions_created, 1);
    h.stop().await;
}

#[tokio::test]
async fn tempfail_and_reject_refuse_the_whole_message_naming_the_refused() {
    for on_error in ["tempfail", "reject"] {
        let h = harness(on_error).await;
        let reply = h.send("alice@example.org", &RCPTS, &message()).await;
        assert_eq!(
            reply,
            "554 5.7.1 Attachments refused by the Cryptshare policy: refused by the Cryptshare transfer policy: recipients not allowed: eve@blocked.test (POLICY_MISMATCH)\r\n",
            "{on_error}"
        );
        assert!(h.sink.messages().is_empty(), "{on_error}");
        assert_eq!(h.emu.stats().sessions_created, 0, "{on_error}");
        assert_eq!(h.audit()[0]["decision"], "reject", "{on_error}");
        h.stop().await;
    }
}

/// Every recipient refused: as before, the original to all with `deliver-original`.
#[tokio::test]
async fn all_refused_with_deliver_original_relays_the_original_once() {
    let h = harness("deliver-original").await;
    let msg = message();
    let reply = h
        .send(
            "alice@example.org",
            &["eve@blocked.test", "mallory@blocked.test"],
            &msg,
        )
        .await;
    assert_eq!(reply, OK);
    let got = h.sink.messages();
    assert_eq!(got.len(), 1);
    assert_eq!(
        got[0].rcpt_to,
        [
            "RCPT TO:<eve@blocked.test>",
            "RCPT TO:<mallory@blocked.test>"
        ]
    );
    assert_eq!(split_received(&got[0].data).1, msg.as_slice());
    assert_eq!(h.emu.stats().sessions_created, 0);
    h.stop().await;
}
