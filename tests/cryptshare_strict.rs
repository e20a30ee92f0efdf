//! The client against the emulator's strictness switches (issue 11): responses with explicit
//! nulls and unknown fields, a reverse proxy's bare error pages, slow PROCESSING, short-lived
//! tokens bound to their sessions, rate-limited token creation.

#[path = "cryptshare_support/mod.rs"]
mod support;

use std::time::{Duration, Instant};

use cryptshare_gateway::cryptshare::*;
use cryptshare_gateway::sim::{Endpoint, FaultSpec, SimSwitches};
use support::*;

fn new_session() -> NewTransferSession {
    NewTransferSession {
        sender: Sender {
            name: Some("Alice Example".into()),
            phone: None,
        },
        recipients: Recipients {
            to: vec![Recipient::new("bob@example.com")],
            ..Recipients::default()
        },
    }
}

fn patch() -> TransferSessionPatch {
    TransferSessionPatch {
        expiration_date: Some(format_date_time(
            &(chrono::Utc::now() + chrono::Duration::days(7)).fixed_offset(),
        )),
        security_mode: Some(SecurityMode::one_time_password(
            PasswordMode::Generated,
            None,
        )),
        file_checksum_algorithm: Some("SHA256".into()),
        ..TransferSessionPatch::default()
    }
}

/// policy → create → patch → register → upload → finalize → wait: the tracking id.
async fn workflow(cs: &Client, src: &std::path::Path, size: u64, sha: &str) -> String {
    let policy = cs
        .transfer_policy(SENDER, &["bob@example.com".to_owned()])
        .await
        .unwrap();
    assert!(policy.allowed);
    let tid = cs
        .create_session(SENDER, None, &new_session())
        .await
        .unwrap();
    cs.patch_settings(SENDER, &tid, &patch()).await.unwrap();
    let fid = cs
        .register_file(SENDER, &tid, "data.bin", size, sha)
        .await
        .unwrap();
    cs.upload_path(SENDER, &tid, &fid, src, 0, size)
        .await
        .unwrap();
    cs.finalize(SENDER, &tid).await.unwrap();
    let st = cs.wait_processed(SENDER, &tid).await.unwrap();
    assert_eq!(st.status.state, TransferState::Active);
    assert_eq!(st.download_urls().len(), 1);
    tid
}

async fn start_switched(dir: &std::path::Path, switches: SimSwitches) -> Sim {
    let mut opts = sim_options(dir);
    opts.switches = switches;
    start_with(opts).await
}

#[tokio::test]
async fn explicit_nulls_and_unknown_fields_in_every_answer_are_accepted() {
    let dir = tempfile::tempdir().unwrap();
    let sim = start_switched(
        &dir.path().join("sim"),
        SimSwitches {
            nulls_and_extra_fields: true,
            ..SimSwitches::default()
        },
    )
    .await;
    // The raw answer really carries both.
    let raw: serde_json::Value = api_headers(
        reqwest::Client::new().get(format!("{}/api/users/{SENDER}/verification", sim.url())),
    )
    .send()
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    assert_eq!(raw["data"]["validUntil"], serde_json::Value::Null);
    assert!(raw["data"].as_object().unwrap().contains_key("validUntil"));
    assert!(raw["data"]["simExtension"].is_object(), "{raw}");
    assert!(raw["simExtension"].is_object(), "{raw}");

    let cs = client(&sim);
    let src = dir.path().join("a.bin");
    let sha = write_random_file(&src, 100_000, 3);
    let tid = workflow(&cs, &src, 100_000, &sha).await;
    let t = &sim.transfers()[0];
    assert_eq!(t.tracking_id, tid);
    assert_eq!(t.files[0].uploaded_sha256, sha);

    // Explicit null where the client's types hold a list, a flag or a state.
    let st: Envelope<TransferStatus> = serde_json::from_value(serde_json::json!({
        "data": {"transfer": null, "status": {"state": null, "warnings": null,
                 "recipients": null, "files": null, "sender": null, "new": 1}},
        "meta": null
    }))
    .unwrap();
    assert_eq!(st.data.status.state, TransferState::Unknown);
    assert!(st.data.status.recipients.is_empty());
}

#[tokio::test]
async fn a_proxy_error_page_is_temporary_with_its_status() {
    let dir = tempfile::tempdir().unwrap();
    let sim = start(dir.path()).await;
    let cs = client(&sim);
    // The raw page: HTML, no Cryptshare error body.
    sim.inject_fault(FaultSpec::proxy_page(Endpoint::Status, 502).times(1));
    let r = reqwest::get(format!("{}/api/status", sim.url()))
        .await
        .unwrap();
    assert_eq!(r.status(), 502);
    assert_eq!(r.headers()["content-type"], "text/html");
    assert!(r.text().await.unwrap().contains("<h1>502 Bad Gateway</h1>"));

    for (ep, status) in [
        (Endpoint::CreateSession, 403),
        (Endpoint::RegisterFile, 413),
        (Endpoint::Any, 502),
        (Endpoint::Token, 401),
        (Endpoint::PatchSession, 400),
    ] {
        sim.clear_faults();
        let tid = if ep == Endpoint::CreateSession {
            None
        } else {
            Some(
                cs.create_session(SENDER, None, &new_session())
                    .await
                    .unwrap(),
            )
        };
        cs.clear_tokens();
        sim.inject_fault(FaultSpec::proxy_page(ep, status));
        let e = match &tid {
            None => cs
                .create_session(SENDER, None, &new_session())
                .await
                .unwrap_err(),
            Some(_) if ep == Endpoint::Token => cs
                .transfer_policy(SENDER, &["bob@example.com".to_owned()])
                .await
                .unwrap_err(),
            Some(t) if ep == Endpoint::RegisterFile => cs
                .register_file(SENDER, t, "x.bin", 1, &"0".repeat(64))
                .await
                .unwrap_err(),
            Some(t) => cs.patch_settings(SENDER, t, &patch()).await.unwrap_err(),
        };
        assert!(e.is_temporary(), "{ep:?} {status}: {e}");
        assert_eq!((e.status(), e.error_code()), (Some(status), None), "{e}");
        assert!(
            e.to_string().contains(&format!("HTTP {status}"))
                && e.to_string().contains("without a Cryptshare errorCode"),
            "{e}"
        );
    }
}

#[tokio::test]
async fn twenty_seconds_of_processing_end_in_active_and_a_shorter_limit_is_temporary() {
    let dir = tempfile::tempdir().unwrap();
    let sim = start_switched(
        &dir.path().join("sim"),
        SimSwitches {
            processing_time: Some(Duration::from_secs(20)),
            ..SimSwitches::default()
        },
    )
    .await;
    let mut opts = options();
    opts.max_poll_interval = Duration::from_millis(500);
    opts.processing_limit = Duration::from_secs(90);
    let cs = Client::new(&sim.url(), CLIENT_ID.into(), opts.clone()).unwrap();
    let src = dir.path().join("a.bin");
    let sha = write_random_file(&src, 4096, 5);
    let started = Instant::now();
    workflow(&cs, &src, 4096, &sha).await;
    assert!(started.elapsed() >= Duration::from_secs(20));

    // The same again, with a client that gives up after one second.
    opts.processing_limit = Duration::from_secs(1);
    let cs = Client::new(&sim.url(), CLIENT_ID.into(), opts).unwrap();
    let tid = cs
        .create_session(SENDER, None, &new_session())
        .await
        .unwrap();
    let fid = cs
        .register_file(SENDER, &tid, "data.bin", 4096, &sha)
        .await
        .unwrap();
    cs.upload_path(SENDER, &tid, &fid, &src, 0, 4096)
        .await
        .unwrap();
    cs.finalize(SENDER, &tid).await.unwrap();
    let e = cs.wait_processed(SENDER, &tid).await.unwrap_err();
    assert!(e.is_temporary(), "{e}");
    assert!(e.to_string().contains("still processing"), "{e}");
}

#[tokio::test]
async fn twenty_megabytes_with_a_30_second_token_and_slow_calls_use_one_token() {
    let dir = tempfile::tempdir().unwrap();
    let mut opts = sim_options(&dir.path().join("sim"));
    opts.token_validity = Duration::from_secs(30);
    opts.switches = SimSwitches {
        bind_session_tokens: true,
        token_rate_limit: Some(1),
        ..SimSwitches::default()
    };
    opts.faults
        .push(FaultSpec::default().with_latency(Duration::from_millis(300)));
    let sim = start_with(opts).await;
    let cs = client(&sim);
    let src = dir.path().join("big.bin");
    let size = 20 * 1024 * 1024;
    let sha = write_random_file(&src, size, 11);
    workflow(&cs, &src, size, &sha).await;
    let st = sim.stats();
    assert_eq!(st.tokens_issued, 1);
    assert_eq!((st.foreign_token_refusals, st.tokens_rate_limited), (0, 0));
    assert_eq!(sim.transfers().len(), 1);
    assert_eq!(sim.transfers()[0].files[0].uploaded_sha256, sha);
}

#[tokio::test]
async fn rate_limited_token_creation_is_temporary() {
    let dir = tempfile::tempdir().unwrap();
    let sim = start_switched(
        dir.path(),
        SimSwitches {
            token_rate_limit: Some(1),
            ..SimSwitches::default()
        },
    )
    .await;
    client(&sim)
        .create_session(SENDER, None, &new_session())
        .await
        .unwrap();
    // A second client instance needs its own token: refused, 429/2007.
    let e = client(&sim)
        .create_session(SENDER, None, &new_session())
        .await
        .unwrap_err();
    assert!(e.is_temporary(), "{e}");
    assert_eq!((e.status(), e.error_code()), (Some(429), Some(2007)));
    // The token request is retried (idempotent): 1 + options().retries refusals.
    assert_eq!(sim.stats().tokens_rate_limited, 3);
    assert_eq!(sim.stats().tokens_issued, 1);
}
