//! The client over real TLS (rustls): an extra CA from `ca_file` is trusted in addition to the
//! system roots, and an unknown CA is a temporary failure (the operator fixes the trust).

#[path = "cryptshare_support/mod.rs"]
mod support;

use cryptshare_gateway::cryptshare::*;
use support::*;

#[tokio::test]
async fn https_with_a_private_ca_from_ca_file() {
    let dir = tempfile::tempdir().unwrap();
    let sim = start(&dir.path().join("sim")).await;
    let (ca_pem, cfg) = tls_server(&["127.0.0.1", "localhost"]);
    let front = tls_front(cfg, sim.addr()).await;
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, &ca_pem).unwrap();
    let url = format!("https://{front}");
    let session = NewTransferSession {
        recipients: Recipients {
            to: vec![Recipient::new("bob@example.com")],
            ..Recipients::default()
        },
        ..NewTransferSession::default()
    };

    let untrusted = Client::new(&url, CLIENT_ID.into(), options()).unwrap();
    let e = untrusted
        .create_session(SENDER, None, &session)
        .await
        .unwrap_err();
    assert!(e.is_temporary() && e.status().is_none(), "{e}");
    assert_eq!(sim.stats().requests, 0);

    let mut opts = options();
    opts.ca_file = Some(ca.clone());
    let cs = Client::new(&url, CLIENT_ID.into(), opts).unwrap();
    let tid = cs.create_session(SENDER, None, &session).await.unwrap();
    assert!(is_tracking_id(&tid));
    assert_eq!(sim.stats().sessions_created, 1);

    let mut bad = options();
    bad.ca_file = Some(dir.path().join("nope.pem"));
    assert!(
        Client::new(&url, CLIENT_ID.into(), bad)
            .unwrap_err()
            .is_invalid()
    );
    std::fs::write(&ca, "not a certificate").unwrap();
    let mut bad = options();
    bad.ca_file = Some(ca);
    assert!(Client::new(&url, CLIENT_ID.into(), bad).is_err());
}
