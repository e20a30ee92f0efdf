//! Failure mapping: each error class produced by the emulator (its fault injection or its
//! policy) arrives as the right `cryptshare::Error`, retries happen only for idempotent calls,
//! and an expired token is renewed once mid-workflow.

#[path = "cryptshare_support/mod.rs"]
mod support;

use std::time::Duration;

use cryptshare_gateway::cryptshare::*;
use cryptshare_gateway::sim::{Endpoint, FaultSpec};
use support::*;

fn session() -> NewTransferSession {
    NewTransferSession {
        sender: Sender::default(),
        recipients: Recipients {
            to: vec![Recipient::new("bob@example.com")],
            ..Recipients::default()
        },
    }
}

/// Create, register and upload one small file; returns (tracking id, file id).
async fn prepared(cs: &Client) -> (String, String) {
    let tid = cs.create_session(SENDER, None, &session()).await.unwrap();
    let sha = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(b"data"));
    let fid = cs
        .register_file(SENDER, &tid, "d.txt", 4, &sha)
        .await
        .unwrap();
    upload(cs, &tid, &fid).await.unwrap();
    (tid, fid)
}

async fn upload(cs: &Client, tid: &str, fid: &str) -> Result<(), Error> {
    cs.upload_file(SENDER, tid, fid, 4, || async {
        Ok(futures_util::stream::iter(vec![Ok(
            bytes::Bytes::from_static(b"data"),
        )]))
    })
    .await
}

#[tokio::test]
async fn server_errors_are_temporary_and_non_idempotent_calls_are_not_retried() {
    let dir = tempfile::tempdir().unwrap();
    let sim = start(dir.path()).await;
    let cs = client(&sim);
    cs.transfer_policy(SENDER, &["bob@example.com".into()])
        .await
        .unwrap();
    sim.inject_fault(FaultSpec::status(Endpoint::CreateSession, 500, None));
    let e = cs
        .create_session(SENDER, None, &session())
        .await
        .unwrap_err();
    assert!(e.is_temporary(), "{e}");
    assert_eq!((e.status(), e.error_code()), (Some(500), Some(5000)));
    assert_eq!(e.detail().operation, "create-session");
    // One attempt only: a POST that may have worked must not create a second session.
    assert_eq!(sim.stats().faults_fired, 1);
    sim.clear_faults();

    let (tid, _) = prepared(&cs).await;
    sim.inject_fault(FaultSpec::status(Endpoint::Finalize, 503, Some(5000)));
    assert!(cs.finalize(SENDER, &tid).await.unwrap_err().is_temporary());
    assert_eq!(sim.stats().faults_fired, 2);
    sim.shutdown().await;
}

#[tokio::test]
async fn idempotent_calls_are_retried_through_transient_faults() {
    let dir = tempfile::tempdir().unwrap();
    let sim = start(dir.path()).await;
    let cs = client(&sim);
    // 429 on the token, a dropped connection and a 503 during the upload, a dropped status
    // poll: all absorbed by retries.
    sim.inject_fault(FaultSpec::status(Endpoint::Token, 429, None).times(1));
    let tid = cs.create_session(SENDER, None, &session()).await.unwrap();
    let sha = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(b"data"));
    let fid = cs
        .register_file(SENDER, &tid, "d.txt", 4, &sha)
        .await
        .unwrap();
    sim.inject_fault(FaultSpec::drop_connection(Endpoint::Upload).times(1));
    sim.inject_fault(
        FaultSpec::status(Endpoint::Upload, 503, None)
            .every_nth(2)
            .times(1),
    );
    upload(&cs, &tid, &fid).await.unwrap();
    sim.inject_fault(FaultSpec::drop_connection(Endpoint::TransferStatus).times(1));
    cs.finalize(SENDER, &tid).await.unwrap();
    let st = cs
        .wait_active(SENDER, &tid, Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(st.status.state, TransferState::Active);
    let stats = sim.stats();
    assert_eq!(stats.faults_fired, 4);
    assert_eq!(stats.uploads, 1);
    assert_eq!(sim.transfers()[0].files[0].uploaded_sha256, sha);
    sim.shutdown().await;
}

#[tokio::test]
async fn dropped_connections_and_timeouts_are_temporary_once_retries_are_exhausted() {
    let dir = tempfile::tempdir().unwrap();
    let sim = start(dir.path()).await;
    let mut opts = options();
    opts.timeout = Duration::from_millis(300);
    let cs = Client::new(&sim.url(), CLIENT_ID.into(), opts).unwrap();
    let (tid, _) = prepared(&cs).await;
    sim.inject_fault(FaultSpec::drop_connection(Endpoint::GetSession));
    let e = cs.get_session(SENDER, &tid).await.unwrap_err();
    assert!(e.is_temporary() && e.status().is_none(), "{e}");
    assert_eq!(sim.stats().faults_fired, 3, "one attempt plus two retries");
    sim.clear_faults();
    sim.inject_fault(
        FaultSpec {
            endpoint: Endpoint::TransferPolicy,
            ..FaultSpec::default()
        }
        .with_latency(Duration::from_secs(5)),
    );
    let e = cs
        .transfer_policy(SENDER, &["bob@example.com".into()])
        .await
        .unwrap_err();
    assert!(e.is_temporary(), "{e}");
    assert!(e.to_string().contains("timeout"), "{e}");
    // The policy check is side-effect free, so it was retried like a GET.
    assert_eq!(sim.stats().faults_fired, 6);
    // Not `shutdown()`: that would wait for the delayed handlers.
}

#[tokio::test]
async fn unreachable_server_and_unsupported_version_are_temporary() {
    let dir = tempfile::tempdir().unwrap();
    let sim = start(dir.path()).await;
    let url = sim.url();
    let mut opts = options();
    opts.minimum_minor_api_version = 99;
    let cs = Client::new(&url, CLIENT_ID.into(), opts).unwrap();
    let e = cs
        .create_session(SENDER, None, &session())
        .await
        .unwrap_err();
    assert!(e.is_temporary(), "{e}");
    assert_eq!((e.status(), e.error_code()), (Some(404), Some(2004)));
    sim.shutdown().await;
    let cs = Client::new(&url, CLIENT_ID.into(), options()).unwrap();
    let e = cs
        .create_session(SENDER, None, &session())
        .await
        .unwrap_err();
    assert!(e.is_temporary() && e.status().is_none(), "{e}");
    assert!(e.to_string().contains("connect"), "{e}");
}

#[tokio::test]
async fn policy_refusals_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let sim = start(dir.path()).await;
    let cs = client(&sim);
    let mut p = sim.policy();
    p.allowed_senders = vec!["*@example.org".into()];
    p.allowed_recipient_domains = vec!["example.com".into()];
    p.max_total_size = 1000;
    p.max_retention_period = 7;
    p.allowed_password_modes = vec![PasswordMode::Generated];
    sim.set_policy(p);

    let e = cs
        .create_session("mallory@evil.example", None, &session())
        .await
        .unwrap_err();
    assert!(e.is_refused(), "{e}");
    assert_eq!((e.status(), e.error_code()), (Some(403), Some(3010)));
    let mut bad = session();
    bad.recipients.cc = vec![Recipient::new("eve@elsewhere.net")];
    let e = cs.create_session(SENDER, None, &bad).await.unwrap_err();
    assert_eq!((e.is_refused(), e.error_code()), (true, Some(3011)));
    let pol = cs
        .transfer_policy(SENDER, &["eve@elsewhere.net".into()])
        .await
        .unwrap();
    assert!(!pol.allowed);
    assert_eq!(
        pol.failed_recipients.unwrap()[0].email_address,
        "eve@elsewhere.net"
    );

    let tid = cs.create_session(SENDER, None, &session()).await.unwrap();
    let e = cs
        .register_file(SENDER, &tid, "big.bin", 1001, &"0".repeat(64))
        .await
        .unwrap_err();
    assert_eq!((e.is_refused(), e.error_code()), (true, Some(3011)));
    let late = TransferSessionPatch {
        expiration_date: Some(format_date_time(
            &(chrono::Utc::now() + chrono::Duration::days(8)).fixed_offset(),
        )),
        ..TransferSessionPatch::default()
    };
    let e = cs.patch_settings(SENDER, &tid, &late).await.unwrap_err();
    assert_eq!((e.is_refused(), e.error_code()), (true, Some(2001)));
    let none = TransferSessionPatch {
        security_mode: Some(SecurityMode::one_time_password(PasswordMode::None, None)),
        ..TransferSessionPatch::default()
    };
    let e = cs.patch_settings(SENDER, &tid, &none).await.unwrap_err();
    assert_eq!((e.is_refused(), e.error_code()), (true, Some(2001)));
    // Finalize without files.
    let e = cs.finalize(SENDER, &tid).await.unwrap_err();
    assert_eq!((e.is_refused(), e.error_code()), (true, Some(2001)));
}

#[tokio::test]
async fn bad_requests_are_invalid() {
    let dir = tempfile::tempdir().unwrap();
    let sim = start(dir.path()).await;
    let cs = client(&sim);
    let tid = cs.create_session(SENDER, None, &session()).await.unwrap();
    let e = cs
        .register_file(SENDER, &tid, "a/b.txt", 1, &"0".repeat(64))
        .await
        .unwrap_err();
    assert!(e.is_invalid(), "{e}");
    assert_eq!((e.status(), e.error_code()), (Some(400), Some(1004)));
    sim.inject_fault(FaultSpec::status(Endpoint::PatchSession, 400, Some(1002)));
    let e = cs
        .patch_settings(SENDER, &tid, &TransferSessionPatch::default())
        .await
        .unwrap_err();
    assert!(e.is_invalid(), "{e}");
}

#[tokio::test]
async fn token_refusal_re_verifies_once_then_fails_as_auth() {
    let dir = tempfile::tempdir().unwrap();
    let sim = start(dir.path()).await;
    let cs = client(&sim);
    let (tid, _) = prepared(&cs).await;
    assert_eq!(sim.stats().tokens_issued, 1);
    sim.inject_fault(FaultSpec::status(Endpoint::Finalize, 401, Some(3002)));
    let e = cs.finalize(SENDER, &tid).await.unwrap_err();
    assert!(e.is_auth(), "{e}");
    assert_eq!(sim.stats().tokens_issued, 2, "exactly one re-verification");
    assert_eq!(sim.stats().faults_fired, 2);
    sim.clear_faults();
    sim.inject_fault(FaultSpec::status(Endpoint::Token, 403, Some(3001)));
    sim.expire_tokens();
    let e = cs.finalize(SENDER, &tid).await.unwrap_err();
    assert!(e.is_auth(), "{e}");
    assert_eq!(e.error_code(), Some(3001));
}

#[tokio::test]
async fn unregistered_client_id_is_auth() {
    let dir = tempfile::tempdir().unwrap();
    let mut opts = sim_options(dir.path());
    opts.client_id = Some("R".repeat(60));
    let sim = start_with(opts).await;
    let e = client(&sim)
        .create_session(SENDER, None, &session())
        .await
        .unwrap_err();
    assert!(e.is_auth(), "{e}");
    let ok = Client::new(&sim.url(), "R".repeat(60), options()).unwrap();
    ok.create_session(SENDER, None, &session()).await.unwrap();
}

#[tokio::test]
async fn token_expiry_in_the_middle_of_a_workflow_re_verifies_once_and_succeeds() {
    let dir = tempfile::tempdir().unwrap();
    let sim = start(dir.path()).await;
    let cs = client(&sim);
    let tid = cs.create_session(SENDER, None, &session()).await.unwrap();
    let sha = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(b"data"));
    let fid = cs
        .register_file(SENDER, &tid, "d.txt", 4, &sha)
        .await
        .unwrap();
    // The client still holds a token it believes valid for an hour.
    sim.expire_tokens();
    upload(&cs, &tid, &fid).await.unwrap();
    cs.finalize(SENDER, &tid).await.unwrap();
    let st = cs
        .wait_active(SENDER, &tid, Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(st.status.state, TransferState::Active);
    assert_eq!(sim.stats().tokens_issued, 2);
    assert_eq!(sim.transfers()[0].files[0].uploaded_sha256, sha);
}

#[tokio::test]
async fn a_session_keeps_its_token_and_a_renewal_for_a_new_session_does_not_break_it() {
    let dir = tempfile::tempdir().unwrap();
    let mut opts = sim_options(dir.path());
    opts.token_validity = Duration::from_secs(10);
    opts.switches.bind_session_tokens = true;
    let sim = start_with(opts).await;
    let cs = client(&sim);
    let a = cs.create_session(SENDER, None, &session()).await.unwrap();
    // A 10 s token is fresh enough (half its validity left) for a second session.
    let b = cs.create_session(SENDER, None, &session()).await.unwrap();
    assert_eq!(sim.stats().tokens_issued, 1);
    // A renewal of the sender's token (as for a new session when the old one would not last).
    cs.clear_tokens();
    let c = cs.create_session(SENDER, None, &session()).await.unwrap();
    assert_eq!(sim.stats().tokens_issued, 2);
    // The older sessions go on with the token they were created with.
    cs.get_session(SENDER, &a).await.unwrap();
    cs.patch_settings(SENDER, &b, &TransferSessionPatch::default())
        .await
        .unwrap();
    for tid in [&a, &b, &c] {
        cs.delete_session(SENDER, tid).await.unwrap();
    }
    assert_eq!(sim.open_sessions(), 0);
    assert_eq!(sim.stats().foreign_token_refusals, 0);
    assert_eq!(sim.stats().tokens_issued, 2);
}

#[tokio::test]
async fn the_emulator_refuses_a_session_call_with_another_token_than_the_creating_one() {
    let dir = tempfile::tempdir().unwrap();
    let mut opts = sim_options(dir.path());
    opts.switches.bind_session_tokens = true;
    let sim = start_with(opts).await;
    let cs = client(&sim);
    let tid = cs.create_session(SENDER, None, &session()).await.unwrap();
    // Another client instance (same client id, same sender) has its own token.
    let other = client(&sim);
    let e = other.get_session(SENDER, &tid).await.unwrap_err();
    assert!(e.is_auth(), "{e}");
    assert_eq!((e.status(), e.error_code()), (Some(403), Some(3002)));
    assert_eq!(
        sim.stats().foreign_token_refusals,
        2,
        "first try and one re-verification"
    );
    cs.delete_session(SENDER, &tid).await.unwrap();
}

#[tokio::test]
async fn concurrent_calls_of_one_sender_share_one_verification() {
    let dir = tempfile::tempdir().unwrap();
    let sim = start(dir.path()).await;
    let cs = std::sync::Arc::new(client(&sim));
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let cs = cs.clone();
        tasks.push(tokio::spawn(async move {
            cs.create_session(SENDER, None, &session()).await.unwrap()
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(sim.stats().tokens_issued, 1);
    assert_eq!(sim.stats().sessions_created, 8);
    // After an expiry, concurrent refusals still lead to a single renewal.
    sim.expire_tokens();
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let cs = cs.clone();
        tasks.push(tokio::spawn(async move {
            cs.transfer_policy(SENDER, &["bob@example.com".into()])
                .await
                .unwrap()
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(sim.stats().tokens_issued, 2);
}

#[tokio::test]
async fn a_transfer_that_stays_processing_is_temporary_after_the_wait() {
    let dir = tempfile::tempdir().unwrap();
    let mut opts = sim_options(dir.path());
    opts.processing_polls = u32::MAX;
    let sim = start_with(opts).await;
    let cs = client(&sim);
    let (tid, _) = prepared(&cs).await;
    cs.finalize(SENDER, &tid).await.unwrap();
    let e = cs
        .wait_active(SENDER, &tid, Duration::from_millis(300))
        .await
        .unwrap_err();
    assert!(e.is_temporary(), "{e}");
    assert_eq!(e.detail().operation, "wait-active");
}
