//! HTTPS_PROXY is honoured: the client tunnels through an HTTP CONNECT proxy (on loopback) to
//! a server name that only the proxy resolves. One test per binary: it sets the environment.

#[path = "cryptshare_support/mod.rs"]
mod support;

use std::sync::{Arc, Mutex};

use cryptshare_gateway::cryptshare::*;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A minimal CONNECT proxy that sends every tunnel to `target` and records the request lines.
async fn connect_proxy(
    target: std::net::SocketAddr,
) -> (std::net::SocketAddr, Arc<Mutex<Vec<String>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            let log = log.clone();
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut b = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") {
                    if tcp.read(&mut b).await.unwrap_or(0) == 0 {
                        return;
                    }
                    head.push(b[0]);
                }
                let text = String::from_utf8_lossy(&head).into_owned();
                log.lock()
                    .unwrap()
                    .push(text.lines().next().unwrap_or("").to_owned());
                tcp.write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
                    .await
                    .unwrap();
                let mut up = tokio::net::TcpStream::connect(target).await.unwrap();
                let _ = tokio::io::copy_bidirectional(&mut tcp, &mut up).await;
            });
        }
    });
    (addr, seen)
}

#[tokio::test]
async fn https_proxy_from_the_environment_is_used() {
    let dir = tempfile::tempdir().unwrap();
    let sim = start(&dir.path().join("sim")).await;
    let (ca_pem, cfg) = tls_server(&["cryptshare.test"]);
    let front = tls_front(cfg, sim.addr()).await;
    let (proxy, seen) = connect_proxy(front).await;
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, ca_pem).unwrap();
    // SAFETY: the only test in this binary; no other thread reads the environment meanwhile.
    unsafe {
        for k in [
            "NO_PROXY",
            "no_proxy",
            "ALL_PROXY",
            "all_proxy",
            "HTTP_PROXY",
            "http_proxy",
        ] {
            std::env::remove_var(k);
        }
        std::env::set_var("HTTPS_PROXY", format!("http://{proxy}"));
    }
    let mut opts = options();
    opts.ca_file = Some(ca);
    let cs = Client::new("https://cryptshare.test", CLIENT_ID.into(), opts).unwrap();
    let pol = cs
        .transfer_policy(SENDER, &["bob@example.com".into()])
        .await
        .unwrap();
    assert!(pol.allowed);
    let lines = seen.lock().unwrap().clone();
    assert!(!lines.is_empty());
    assert!(
        lines
            .iter()
            .all(|l| l == "CONNECT cryptshare.test:443 HTTP/1.1"),
        "{lines:?}"
    );
}
