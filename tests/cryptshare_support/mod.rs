//! Shared helpers of the cryptshare_* and sim_* tests.
#![allow(dead_code)]

use std::io::Write;
use std::path::Path;
use std::time::Duration;

use cryptshare_gateway::cryptshare::{Client, ClientOptions};
use cryptshare_gateway::sim::{Emulator, EmulatorHandle, SimOptions};
use sha2::{Digest, Sha256};

pub const CLIENT_ID: &str = "TestClient0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJ0123456789";
pub const SENDER: &str = "alice@example.org";

#[path = "../support/openapi.rs"]
pub mod openapi;

pub fn sim_options(dir: &Path) -> SimOptions {
    SimOptions::new("127.0.0.1:0".parse().unwrap(), dir)
}

pub async fn start(dir: &Path) -> Sim {
    start_with(sim_options(dir)).await
}

pub async fn start_with(opts: SimOptions) -> Sim {
    Sim(Some(Emulator::start(opts).await.unwrap()), true.into())
}

/// An in-test emulator whose every `/api` exchange is checked against `openapi-1.8.json`
/// when the test ends (at [`Sim::shutdown`], or when it is dropped): each test that starts
/// its emulator here validates both the client's requests and the emulator's answers.
pub struct Sim(Option<EmulatorHandle>, std::cell::Cell<bool>);

impl std::ops::Deref for Sim {
    type Target = EmulatorHandle;
    fn deref(&self) -> &EmulatorHandle {
        self.0.as_ref().expect("emulator running")
    }
}

impl Sim {
    /// The test sends hand-made, deliberately off-schema request bodies (to test the
    /// emulator's leniency): check only the emulator's answers.
    pub fn handmade_requests(&self) {
        self.1.set(false);
    }

    pub async fn shutdown(mut self) {
        let h = self.0.take().expect("emulator running");
        openapi::assert_exchanges_valid_with(&h.exchanges(), self.1.get());
        h.shutdown().await;
    }
}

impl Drop for Sim {
    fn drop(&mut self) {
        if let Some(h) = &self.0 {
            openapi::assert_exchanges_valid_with(&h.exchanges(), self.1.get());
        }
    }
}

pub fn options() -> ClientOptions {
    ClientOptions {
        timeout: Duration::from_secs(30),
        retry_backoff: Duration::from_millis(10),
        max_poll_interval: Duration::from_millis(50),
        ..ClientOptions::default()
    }
}

pub fn client(sim: &EmulatorHandle) -> Client {
    Client::new(&sim.url(), CLIENT_ID.into(), options()).unwrap()
}

/// Deterministic pseudo-random content of `size` bytes, written in 1 MiB pieces; returns the
/// SHA-256 (lowercase hex).
pub fn write_random_file(path: &Path, size: u64, seed: u64) -> String {
    let mut f = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    let mut h = Sha256::new();
    let mut x = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407)
        | 1;
    let mut left = size;
    let mut buf = vec![0u8; 1 << 20];
    while left > 0 {
        let n = left.min(buf.len() as u64) as usize;
        for chunk in buf[..n].chunks_mut(8) {
            // xorshift64*
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            let v = x.wrapping_mul(0x2545F4914F6CDD1D).to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
        f.write_all(&buf[..n]).unwrap();
        h.update(&buf[..n]);
        left -= n as u64;
    }
    f.flush().unwrap();
    hex::encode(h.finalize())
}

pub fn api_headers(req: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
    req.header("X-CS-MajorApiVersion", "1")
        .header("X-CS-MinimumMinorApiVersion", "8")
        .header("X-CS-ProductKey", "api.rest")
        .header("X-CS-ClientId", CLIENT_ID)
}

/// Download a file through the recipient API, hashing while streaming.
pub async fn download_sha256(
    base: &str,
    transfer_id: &str,
    file_id: &str,
    password: &str,
) -> (u64, String) {
    let http = reqwest::Client::new();
    let mut resp = api_headers(http.get(format!(
        "{base}/api/transfers/{transfer_id}/files/{file_id}"
    )))
    .header("X-CS-Password", password)
    .send()
    .await
    .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.headers()["content-type"].to_str().unwrap(),
        "application/octet-stream"
    );
    let mut h = Sha256::new();
    let mut n = 0u64;
    while let Some(c) = resp.chunk().await.unwrap() {
        n += c.len() as u64;
        h.update(&c);
    }
    (n, hex::encode(h.finalize()))
}

/// The notification mails the emulator wrote, as (file name, text).
pub fn mails(sim: &EmulatorHandle) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = std::fs::read_dir(sim.mail_dir())
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".eml"))
        .map(|e| {
            (
                e.file_name().to_string_lossy().into_owned(),
                std::fs::read_to_string(e.path()).unwrap(),
            )
        })
        .collect();
    out.sort();
    out
}

/// A test CA and a server certificate for `names` signed by it: (CA PEM, server config).
pub fn tls_server(names: &[&str]) -> (String, std::sync::Arc<rustls::ServerConfig>) {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
    cryptshare_gateway::install_crypto_provider();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "cryptshare-gateway test CA");
    let ca = CertifiedIssuer::self_signed(ca, KeyPair::generate().unwrap()).unwrap();
    let key = KeyPair::generate().unwrap();
    let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
    let leaf = CertificateParams::new(names)
        .unwrap()
        .signed_by(&key, &ca)
        .unwrap();
    let cfg = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(
            vec![leaf.der().clone()],
            rustls_pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
        )
        .unwrap();
    (ca.pem(), std::sync::Arc::new(cfg))
}

/// Terminate TLS on a loopback port and forward the plain bytes to `backend`.
pub async fn tls_front(
    cfg: std::sync::Arc<rustls::ServerConfig>,
    backend: std::net::SocketAddr,
) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(cfg);
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                // A client that rejects the certificate ends the handshake: nothing to forward.
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let mut plain = tokio::net::TcpStream::connect(backend).await.unwrap();
                let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
            });
        }
    });
    addr
}
