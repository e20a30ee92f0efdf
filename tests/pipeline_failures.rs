//! Issue 5 acceptance, failures: Cryptshare faults at every step of the workflow for each
//! `on_error`, Cryptshare policy refusals, and a next hop failing after a finished transfer.

mod pipeline_support;
mod support;

use cryptshare_gateway::sim::{Endpoint, FaultSpec, SimPolicy};
use pipeline_support::*;

const OK: &str = "250 2.0.0 OK, relayed (Queued as SINK)\r\n";

fn message() -> Vec<u8> {
    mixed(
        HEADERS,
        "see attachment",
        &[(
            "Content-Type: application/pdf; name=\"report.pdf\"\r\nContent-Disposition: attachment; filename=\"report.pdf\"",
            &payload(200 * 1024, 11),
        )],
    )
}

/// Every step of the workflow before `finalize` (after it, see the tests below).
const STEPS: [Endpoint; 7] = [
    Endpoint::Token,
    Endpoint::TransferPolicy,
    Endpoint::CreateSession,
    Endpoint::PatchSession,
    Endpoint::RegisterFile,
    Endpoint::Upload,
    Endpoint::Finalize,
];

async fn fault_at(step: Endpoint, on_error: &str) -> (Harness, String, Vec<u8>) {
    let h = Harness::start(&policy(on_error)).await;
    // Unlimited: the client's own retries of idempotent calls fail as well.
    h.emu.inject_fault(FaultSpec::status(step, 503, None));
    let msg = message();
    let reply = h
        .send("alice@example.org", &["bob@example.net"], &msg)
        .await;
    assert!(
        h.emu.stats().faults_fired >= 1,
        "{step:?}: the fault never fired"
    );
    (h, reply, msg)
}

async fn assert_nothing_left(h: &Harness, step: Endpoint) {
    assert_eq!(
        h.emu.open_sessions(),
        0,
        "{step:?}: a session was left open"
    );
    assert!(
        h.emu.transfers().is_empty(),
        "{step:?}: a transfer was finished"
    );
    let pending = h.gw.state().pending().await.unwrap();
    assert!(pending.is_empty(), "{step:?}: state left {pending:?}");
}

#[tokio::test]
async fn tempfail_at_every_step_is_451_and_nothing_relayed() {
    for step in STEPS {
        let (h, reply, _) = fault_at(step, "tempfail").await;
        assert!(
            reply.starts_with("451 4.3.0 Cryptshare unavailable, try again later: "),
            "{step:?}: {reply}"
        );
        assert!(reply.ends_with("\r\n") && reply.lines().count() == 1);
        assert!(h.sink.messages().is_empty(), "{step:?}: relayed");
        assert_nothing_left(&h, step).await;
        let audit = h.audit();
        assert_eq!(audit[0]["decision"], "tempfail", "{step:?}");
        h.stop().await;
    }
}

#[tokio::test]
async fn deliver_original_at_every_step_relays_the_original() {
    for step in STEPS {
        let (h, reply, msg) = fault_at(step, "deliver-original").await;
        assert_eq!(reply, OK, "{step:?}");
        let got = h.sink.messages();
        assert_eq!(got.len(), 1, "{step:?}");
        let (_, rest) = split_received(&got[0].data);
        assert_eq!(rest, msg.as_slice(), "{step:?}: not the original");
        assert_nothing_left(&h, step).await;
        let audit = h.audit();
        assert_eq!(audit[0]["decision"], "deliver-original", "{step:?}");
        assert!(
            audit[0]["reason"]
                .as_str()
                .unwrap()
                .starts_with("conversion failed: "),
            "{step:?}: {}",
            audit[0]["reason"]
        );
        h.stop().await;
    }
}

#[tokio::test]
async fn reject_at_every_step_is_554() {
    for step in STEPS {
        let (h, reply, _) = fault_at(step, "reject").await;
        assert!(
            reply.starts_with("554 5.3.0 Attachments could not be moved to Cryptshare: "),
            "{step:?}: {reply}"
        );
        assert!(h.sink.messages().is_empty(), "{step:?}: relayed");
        assert_nothing_left(&h, step).await;
        assert_eq!(h.audit()[0]["decision"], "reject", "{step:?}");
        h.stop().await;
    }
}

/// After finalize the transfer exists and cannot be taken back (revocation needs API 1.10):
/// a failing status poll is `451` whatever `on_error` says (the original would send the files
/// twice, a 554 would bounce a message whose files went out), and the retry adopts the transfer.
#[tokio::test]
async fn status_failure_after_finalize_is_451_for_every_on_error_and_the_retry_adopts() {
    for on_error in ["tempfail", "deliver-original", "reject"] {
        let h = Harness::start(&policy(on_error)).await;
        h.emu
            .inject_fault(FaultSpec::status(Endpoint::TransferStatus, 503, None));
        let msg = message();
        let reply = h
            .send("alice@example.org", &["bob@example.net"], &msg)
            .await;
        assert!(
            reply.starts_with("451 4.3.0 Cryptshare transfer not confirmed, try again later: "),
            "{on_error}: {reply}"
        );
        assert!(h.sink.messages().is_empty(), "{on_error}");
        assert_eq!(h.emu.open_sessions(), 0, "{on_error}");
        assert_eq!(h.emu.transfers().len(), 1, "{on_error}");
        assert_eq!(h.gw.state().pending().await.unwrap().len(), 1, "{on_error}");
        // While the server still cannot say what became of it, a retry is 451 again (never
        // the original: the files may already be out).
        let again = h
            .send("alice@example.org", &["bob@example.net"], &msg)
            .await;
        assert!(again.starts_with("451 4.3.0 "), "{on_error}: {again}");
        assert!(h.sink.messages().is_empty(), "{on_error}");
        h.emu.clear_faults();
        let reply = h
            .send("alice@example.org", &["bob@example.net"], &msg)
            .await;
        assert_eq!(reply, OK, "{on_error}");
        let ts = h.emu.transfers();
        assert_eq!(ts.len(), 1, "{on_error}: a second transfer: {ts:?}");
        assert_eq!(h.emu.stats().sessions_created, 1, "{on_error}");
        assert!(
            h.gw.state().pending().await.unwrap().is_empty(),
            "{on_error}"
        );
        let got = h.sink.messages();
        assert_eq!(got.len(), 1, "{on_error}");
        let (_, rewritten) = split_received(&got[0].data);
        let text = String::from_utf8_lossy(rewritten);
        assert!(text.contains(&ts[0].tracking_id), "{on_error}");
        assert!(text.contains("report.pdf"), "{on_error}");
        let audit = h.audit();
        assert_eq!(audit[0]["decision"], "tempfail", "{on_error}");
        assert_eq!(audit[1]["decision"], "tempfail", "{on_error}");
        assert_eq!(audit[2]["decision"], "convert", "{on_error}");
        h.stop().await;
    }
}

/// As above, with a gateway restart between the attempts: the start-up clean-up must keep the
/// record of a finalized transfer for the retry (deleting only unfinished sessions).
#[tokio::test]
async fn status_failure_then_restart_then_retry_adopts_the_transfer() {
    let mut h = Harness::start(&policy("tempfail")).await;
    h.emu
        .inject_fault(FaultSpec::status(Endpoint::TransferStatus, 503, None));
    let msg = message();
    let first = h
        .send("alice@example.org", &["bob@example.net"], &msg)
        .await;
    assert!(first.starts_with("451 "), "{first}");
    h.emu.clear_faults();
    h.restart().await;
    let second = h
        .send("alice@example.org", &["bob@example.net"], &msg)
        .await;
    assert_eq!(second, OK);
    assert_eq!(h.emu.transfers().len(), 1);
    assert_eq!(h.emu.stats().sessions_created, 1);
    assert_eq!(h.sink.messages().len(), 1);
    let audit = h.audit();
    assert_eq!(audit[0]["decision"], "tempfail");
    assert_eq!(audit[1]["decision"], "convert");
    assert_eq!(
        audit[1]["tracking_id"],
        h.emu.transfers()[0].tracking_id.as_str()
    );
    h.stop().await;
}

#[tokio::test]
async fn cryptshare_policy_refusals_are_554_5_7_1() {
    // Recipient domain not allowed.
    let h = Harness::start(&policy("tempfail")).await;
    h.emu.set_policy(SimPolicy {
        allowed_recipient_domains: vec!["partner.example".into()],
        ..SimPolicy::default()
    });
    let reply = h
        .send("alice@example.org", &["bob@example.net"], &message())
        .await;
    assert!(
        reply.starts_with("554 5.7.1 Attachments refused by the Cryptshare policy: "),
        "{reply}"
    );
    assert!(reply.contains("bob@example.net"), "{reply}");
    assert!(h.sink.messages().is_empty());
    assert_eq!(h.emu.stats().sessions_created, 0);
    assert_eq!(h.audit()[0]["decision"], "reject");
    h.stop().await;

    // Too large for the server.
    let h = Harness::start(&policy("tempfail")).await;
    h.emu.set_policy(SimPolicy {
        max_total_size: 100 * 1024,
        ..SimPolicy::default()
    });
    let reply = h
        .send("alice@example.org", &["bob@example.net"], &message())
        .await;
    assert!(
        reply.starts_with("554 5.7.1 Attachments refused by the Cryptshare policy: "),
        "{reply}"
    );
    assert!(h.sink.messages().is_empty());
    assert_eq!(h.emu.open_sessions(), 0);
    assert!(h.emu.transfers().is_empty());
    h.stop().await;
}

#[tokio::test]
async fn next_hop_4xx_after_the_transfer_then_retry_reuses_it() {
    let hop = RecordingHop::start(vec!["451 4.3.0 Try later", "250 2.0.0 Queued as HOP"]).await;
    let h = Harness::start_with_hop(&policy("tempfail"), hop.addr).await;
    let msg = message();
    let first = h
        .send("alice@example.org", &["bob@example.net"], &msg)
        .await;
    assert_eq!(first, "451 4.3.0 Try later\r\n");
    assert_eq!(h.emu.transfers().len(), 1);
    let second = h
        .send("alice@example.org", &["bob@example.net"], &msg)
        .await;
    assert_eq!(second, "250 2.0.0 OK, relayed (Queued as HOP)\r\n");
    let ts = h.emu.transfers();
    assert_eq!(ts.len(), 1, "exactly one transfer");
    assert_eq!(h.emu.stats().sessions_created, 1);
    assert_eq!(h.emu.open_sessions(), 0);
    let seen = hop.seen();
    assert_eq!(seen.len(), 2, "one refused, one delivered");
    // The retry carries exactly what the first attempt sent (only our Received differs).
    let (_, first_body) = split_received(&seen[0]);
    let (_, second_body) = split_received(&seen[1]);
    assert_eq!(first_body, second_body);
    let text = String::from_utf8_lossy(second_body);
    assert!(text.contains(&ts[0].tracking_id));
    assert!(!text.contains(&base64_lines(&payload(200 * 1024, 11))[..76]));
    let audit = h.audit();
    assert_eq!(audit.len(), 2);
    assert_eq!(audit[0]["tracking_id"], audit[1]["tracking_id"]);
    assert_eq!(audit[1]["decision"], "convert");
    assert!(
        audit[1]["reason"]
            .as_str()
            .unwrap()
            .ends_with("reused the transfer of an earlier attempt")
    );
    h.stop().await;
}

/// An upstream that times out and retries while the first attempt is still converting: the two
/// attempts of the same message must not make two transfers.
#[tokio::test]
async fn the_same_message_twice_at_once_makes_one_transfer() {
    let h = Harness::start(&policy("tempfail")).await;
    let msg = message();
    let (a, b) = tokio::join!(
        h.send("alice@example.org", &["bob@example.net"], &msg),
        h.send("alice@example.org", &["bob@example.net"], &msg)
    );
    assert_eq!(a, OK);
    assert_eq!(b, OK);
    let ts = h.emu.transfers();
    assert_eq!(ts.len(), 1, "{ts:?}");
    assert_eq!(h.emu.stats().sessions_created, 1);
    assert_eq!(h.emu.open_sessions(), 0);
    // Both attempts were live and got 250, so both went on (the upstream's own duplicate), as
    // the same rewritten message.
    let got = h.sink.messages();
    assert_eq!(got.len(), 2);
    assert_eq!(
        split_received(&got[0].data).1,
        split_received(&got[1].data).1
    );
    h.stop().await;
}

/// The state store's directory, replaced by a plain file (a real failing filesystem
/// condition, also for root, whom chmod does not stop): every read and write fails.
fn break_state_dir(h: &Harness) -> std::path::PathBuf {
    let transfers = h.dir.path().join("state/transfers");
    let away = h.dir.path().join("state/transfers.away");
    std::fs::rename(&transfers, &away).unwrap();
    std::fs::write(&transfers, b"not a directory").unwrap();
    away
}

fn mend_state_dir(h: &Harness, away: &std::path::Path) {
    let transfers = h.dir.path().join("state/transfers");
    std::fs::remove_file(&transfers).unwrap();
    std::fs::rename(away, &transfers).unwrap();
}

/// SPEC §3: a local fault (state store, disk) is `451 4.3.0` with a local text whatever
/// `on_error` says — not "Cryptshare unavailable", never a bounce, never the original.
#[tokio::test]
async fn state_store_failure_is_a_local_451_for_every_on_error() {
    for on_error in ["tempfail", "deliver-original", "reject"] {
        let h = Harness::start(&policy(on_error)).await;
        let away = break_state_dir(&h);
        let msg = message();
        let reply = h
            .send("alice@example.org", &["bob@example.net"], &msg)
            .await;
        assert!(
            reply.starts_with("451 4.3.0 Local error, try again later (state store "),
            "{on_error}: {reply}"
        );
        assert!(
            reply.ends_with(")\r\n") && reply.lines().count() == 1,
            "{reply}"
        );
        assert!(h.sink.messages().is_empty(), "{on_error}: relayed");
        assert_eq!(h.emu.stats().sessions_created, 0, "{on_error}");
        assert_eq!(h.audit()[0]["decision"], "tempfail", "{on_error}");
        // Mended, the retry converts once.
        mend_state_dir(&h, &away);
        let reply = h
            .send("alice@example.org", &["bob@example.net"], &msg)
            .await;
        assert_eq!(reply, OK, "{on_error}");
        assert_eq!(h.emu.transfers().len(), 1, "{on_error}");
        h.stop().await;
    }
}

/// A transfer is ACTIVE but its status could not be confirmed (pending record kept); the retry
/// adopts it but cannot write the state store: an after-finalize error, `451` whatever
/// `on_error` says — never the original (its files are out already), never a bounce.
#[tokio::test]
async fn adopt_failure_is_451_for_every_on_error() {
    for on_error in ["tempfail", "deliver-original", "reject"] {
        let h = Harness::start(&policy(on_error)).await;
        h.emu
            .inject_fault(FaultSpec::status(Endpoint::TransferStatus, 503, None));
        let msg = message();
        let reply = h
            .send("alice@example.org", &["bob@example.net"], &msg)
            .await;
        assert!(reply.starts_with("451 4.3.0 "), "{on_error}: {reply}");
        h.emu.clear_faults();
        // Reads work, writes fail: the record's temporary file name is taken by a directory.
        let pending = h.gw.state().pending().await.unwrap();
        assert_eq!(pending.len(), 1, "{on_error}");
        let blocker = h.dir.path().join(format!(
            "state/transfers/{}.tmp.{}",
            pending[0].0,
            std::process::id()
        ));
        std::fs::create_dir(&blocker).unwrap();
        let reply = h
            .send("alice@example.org", &["bob@example.net"], &msg)
            .await;
        assert!(
            reply.starts_with("451 4.3.0 Cryptshare transfer not confirmed, try again later: "),
            "{on_error}: {reply}"
        );
        assert!(h.sink.messages().is_empty(), "{on_error}: relayed");
        std::fs::remove_dir(&blocker).unwrap();
        let reply = h
            .send("alice@example.org", &["bob@example.net"], &msg)
            .await;
        assert_eq!(reply, OK, "{on_error}");
        assert_eq!(h.emu.transfers().len(), 1, "{on_error}");
        assert_eq!(h.emu.stats().sessions_created, 1, "{on_error}");
        h.stop().await;
    }
}

/// A finished record whose transfer the server no longer has (deleted, expired) is not reused:
/// the notice would name a tracking id that does not exist. The retry makes a new transfer.
#[tokio::test]
async fn a_finished_record_of_a_transfer_the_server_lost_is_not_reused() {
    use cryptshare_gateway::store::state::{Record, StoredFile};
    let h = Harness::start(&policy("tempfail")).await;
    let msg = message();
    let key = cryptshare_gateway::pipeline::message_key(
        "alice@example.org",
        &["bob@example.net".to_string()],
        &msg,
    );
    let lost = "20260101-000000-LOSTLOST";
    h.gw.state()
        .put(
            &key,
            &Record::Finished {
                sender: "alice@example.org".into(),
                tracking_id: lost.into(),
                expiration: "2026-01-08".into(),
                files: vec![StoredFile {
                    name: "report.pdf".into(),
                    size: 200 * 1024,
                    sha256: sha256_hex(&payload(200 * 1024, 11)),
                }],
                download_urls: vec![],
                created: 0,
                recipient_links: vec![],
                delivered: vec![],
                receipt_sent: false,
            },
        )
        .await
        .unwrap();
    let reply = h
        .send("alice@example.org", &["bob@example.net"], &msg)
        .await;
    assert_eq!(reply, OK);
    let ts = h.emu.transfers();
    assert_eq!(ts.len(), 1, "no new transfer: {ts:?}");
    let got = h.sink.messages();
    let text = String::from_utf8_lossy(split_received(&got[0].data).1).into_owned();
    assert!(!text.contains(lost), "the notice names the lost transfer");
    assert!(text.contains(&ts[0].tracking_id));
    match h.gw.state().get(&key).await.unwrap() {
        Some(Record::Finished { tracking_id, .. }) => assert_eq!(tracking_id, ts[0].tracking_id),
        other => panic!("{other:?}"),
    }
    // While the server cannot say whether it still has the transfer: 451, nothing relayed.
    h.emu
        .inject_fault(FaultSpec::status(Endpoint::TransferStatus, 503, None));
    let reply = h
        .send("alice@example.org", &["bob@example.net"], &msg)
        .await;
    assert!(
        reply.starts_with("451 4.3.0 Cryptshare transfer not confirmed, try again later: "),
        "{reply}"
    );
    assert_eq!(h.sink.messages().len(), 1);
    h.emu.clear_faults();
    assert_eq!(
        h.send("alice@example.org", &["bob@example.net"], &msg)
            .await,
        OK
    );
    assert_eq!(h.emu.transfers().len(), 1, "reused, not made again");
    h.stop().await;
}
