//! The audit line, field by field, against a real next hop on loopback (issue 12 item 6):
//! `relay` is what the next hop answered (not our own reply), `time` is the time of the final
//! reply (not the end of DATA), `cryptshare_ms` counts the time spent on Cryptshare also when the
//! conversion failed.

mod pipeline_support;
mod support;

use std::time::Duration;

use chrono::{DateTime, Utc};
use cryptshare_gateway::sim::{Endpoint, FaultSpec};
use pipeline_support::*;
use serde_json::{Value, json};

/// How long the slow next hop and the slow Cryptshare take: long enough that a timestamp taken
/// at the end of DATA, or a duration that leaves a step out, is visibly wrong.
const SLOW: Duration = Duration::from_millis(300);

fn attachment_message(size: usize, seed: u64) -> (Vec<u8>, Vec<u8>) {
    let content = payload(size, seed);
    let msg = mixed(
        HEADERS,
        "figures attached",
        &[(
            "Content-Type: application/pdf; name=\"figures.pdf\"\r\nContent-Disposition: attachment; filename=\"figures.pdf\"",
            &content,
        )],
    );
    (msg, content)
}

fn time_of(record: &Value) -> DateTime<Utc> {
    let t = record["time"].as_str().expect("time is a string");
    DateTime::parse_from_rfc3339(t)
        .unwrap_or_else(|e| panic!("time {t:?}: {e}"))
        .with_timezone(&Utc)
}

/// `t` cut to the millisecond, as the audit line writes times.
fn to_millis(t: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(t.timestamp_millis()).unwrap()
}

fn ms(record: &Value, key: &str) -> u64 {
    record["durations"][key]
        .as_u64()
        .unwrap_or_else(|| panic!("durations.{key}: {record}"))
}

/// The queue id from our `Received:` line as the next hop got it (`... id <queue id>`).
fn queue_id_in(received_message: &[u8]) -> String {
    let (received, _) = split_received(received_message);
    let line = String::from_utf8_lossy(received);
    let id = line.split(" id ").nth(1).expect("an id in Received:");
    id.split(|c: char| c == ';' || c.is_whitespace())
        .next()
        .unwrap()
        .to_string()
}

#[tokio::test]
async fn converted_message_records_the_next_hops_reply_and_the_time_of_the_final_reply() {
    let hop = RecordingHop::start_slow(vec!["250 2.0.0 Ok: queued as HOP42"], SLOW).await;
    let h = Harness::start_with_hop(&policy("tempfail"), hop.addr).await;
    let (msg, content) = attachment_message(64 * 1024, 21);

    let before = Utc::now();
    let reply = h
        .send("alice@example.org", &["bob@example.net"], &msg)
        .await;
    let after = Utc::now();
    assert_eq!(reply, "250 2.0.0 OK, relayed (Ok: queued as HOP42)\r\n");

    let audit = h.audit();
    assert_eq!(audit.len(), 1, "{audit:?}");
    let a = &audit[0];
    let seen = hop.seen();
    assert_eq!(seen.len(), 1);
    let tracking_id = h.emu.transfers()[0].tracking_id.clone();

    assert_eq!(a["queue_id"], json!(queue_id_in(&seen[0])));
    assert_eq!(a["message_id"], "pipeline-test-1@example.org");
    assert_eq!(a["sender"], "alice@example.org");
    assert_eq!(a["recipients"], json!(["bob@example.net"]));
    assert_eq!(a["size"], json!(msg.len()));
    assert_eq!(a["policy"], "org");
    assert_eq!(a["decision"], "convert");
    assert_eq!(
        a["reason"],
        "attachments total 65536 bytes, above the threshold of 1024 bytes"
    );
    assert_eq!(
        a["files"],
        json!([{"name": "figures.pdf", "size": content.len(), "sha256": sha256_hex(&content)}])
    );
    assert_eq!(a["tracking_id"], json!(tracking_id));
    // Our reply quotes the next hop; `relay` is the next hop's own line.
    assert_eq!(a["reply"], "250 2.0.0 OK, relayed (Ok: queued as HOP42)");
    assert_eq!(a["relay"], "250 2.0.0 Ok: queued as HOP42");

    // The final reply came after the slow next hop answered, not at the end of DATA.
    let time = time_of(a);
    assert!(
        time >= to_millis(before + SLOW) && time <= after,
        "time {time} not between {} and {after}",
        before + SLOW
    );
    let (total, cryptshare, relay) = (ms(a, "total_ms"), ms(a, "cryptshare_ms"), ms(a, "relay_ms"));
    assert!(relay >= SLOW.as_millis() as u64, "relay_ms {relay}");
    assert!(cryptshare > 0, "cryptshare_ms {cryptshare}");
    assert!(
        total >= cryptshare + relay,
        "{total} < {cryptshare} + {relay}"
    );
    assert!(total <= (after - before).num_milliseconds() as u64);
    h.stop().await;
}

#[tokio::test]
async fn next_hop_refusal_is_recorded_as_the_next_hop_said_it() {
    let hop = RecordingHop::start(vec!["554 5.7.1 HOP42 says no"]).await;
    let h = Harness::start_with_hop(&policy("tempfail"), hop.addr).await;
    let msg = b"From: alice@example.org\r\nSubject: small\r\n\r\nno attachment\r\n";
    let reply = h.send("alice@example.org", &["bob@example.net"], msg).await;
    assert_eq!(reply, "554 5.7.1 HOP42 says no\r\n");
    let a = &h.audit()[0];
    assert_eq!(a["decision"], "pass");
    assert_eq!(a["reply"], "554 5.7.1 HOP42 says no");
    assert_eq!(a["relay"], "554 5.7.1 HOP42 says no");
    assert_eq!(a["files"], json!([]));
    assert_eq!(a["tracking_id"], Value::Null);
    assert_eq!(ms(a, "cryptshare_ms"), 0);
    h.stop().await;
}

#[tokio::test]
async fn tempfail_records_the_time_spent_on_cryptshare_and_no_relay() {
    let hop = RecordingHop::start(vec!["250 2.0.0 Ok: queued as HOP42"]).await;
    let h = Harness::start_with_hop(&policy("tempfail"), hop.addr).await;
    // Every transfer-policy call (the client's retries too) is slow, then fails.
    h.emu
        .inject_fault(FaultSpec::status(Endpoint::TransferPolicy, 503, None).with_latency(SLOW));
    let (msg, _) = attachment_message(8 * 1024, 22);

    let before = Utc::now();
    let reply = h
        .send("alice@example.org", &["bob@example.net"], &msg)
        .await;
    let after = Utc::now();
    assert!(
        reply.starts_with("451 4.3.0 Cryptshare unavailable, try again later: "),
        "{reply}"
    );
    assert!(hop.seen().is_empty(), "nothing may be relayed");

    let a = &h.audit()[0];
    assert_eq!(a["decision"], "tempfail");
    assert_eq!(a["reply"], json!(reply.trim_end()));
    assert_eq!(a["relay"], Value::Null, "the next hop was not asked");
    assert_eq!(a["policy"], "org");
    assert_eq!(a["tracking_id"], Value::Null);
    assert!(
        a["reason"]
            .as_str()
            .unwrap()
            .starts_with("conversion failed: "),
        "{}",
        a["reason"]
    );
    let cryptshare = ms(a, "cryptshare_ms");
    assert!(
        cryptshare >= SLOW.as_millis() as u64,
        "cryptshare_ms {cryptshare}"
    );
    assert_eq!(ms(a, "relay_ms"), 0);
    assert!(ms(a, "total_ms") >= cryptshare);
    let time = time_of(a);
    assert!(
        time >= to_millis(before + SLOW) && time <= after,
        "time {time} not between {} and {after}",
        before + SLOW
    );
    h.stop().await;
}

/// `explain` prints the plan `serve` acts on: same rule, same action, same reason as the audit
/// line, for a conversion, a pass below the threshold and a sender without a rule.
#[tokio::test]
async fn explain_gives_the_reasons_the_audit_line_records() {
    let h = Harness::start(&policy("tempfail")).await;
    let (big, _) = attachment_message(4 * 1024, 23);
    let (small, _) = attachment_message(512, 24);
    let cases = [
        ("alice@example.org", &big, "convert"),
        ("alice@example.org", &small, "pass"),
        ("someone@other.example", &big, "pass"),
    ];
    for (i, (from, msg, decision)) in cases.iter().enumerate() {
        let path = h.dir.path().join(format!("m{i}.eml"));
        std::fs::write(&path, msg).unwrap();
        let to = ["bob@example.net".to_string()];
        let explained: Value = serde_json::from_str(
            &cryptshare_gateway::pipeline::explain(&h.cfg, from, &to, &path, true).unwrap(),
        )
        .unwrap();
        let reply = h.send(from, &["bob@example.net"], msg).await;
        assert!(reply.starts_with("250 "), "{reply}");
        let a = &h.audit()[i];
        assert_eq!(a["decision"], *decision, "{from}");
        assert_eq!(explained["action"], *decision, "{from}");
        assert_eq!(explained["policy"], a["policy"], "{from}");
        assert_eq!(explained["reason"], a["reason"], "{from}");
    }
    h.stop().await;
}
