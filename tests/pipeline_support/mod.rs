//! Shared harness for the end-to-end pipeline tests: an in-test Cryptshare emulator, the
//! scriptable next hop, the gateway behind a real SMTP listener on 127.0.0.1:0, and the raw
//! async SMTP client of the shared `support` module, which reports replies byte-exactly.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use cryptshare_gateway::config::Config;
use cryptshare_gateway::inbound::Server;
use cryptshare_gateway::ops::Metrics;
use cryptshare_gateway::pipeline::{Gateway, GatewayFactory};
use cryptshare_gateway::sim::{Emulator, EmulatorHandle, SimOptions};
use cryptshare_gateway_testkit::sink::{Script, Sink};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

pub use crate::support::openapi;

/// Well-formed for the emulator, which trusts every such id by default.
pub const CLIENT_ID: &str = "PipelineTestClient0123456789abcdefghijklmnopqrstuvwxyzAB";

/// A `[[policy]]` for every sender at `example.org` with a 1 KiB threshold.
pub fn policy(on_error: &str) -> String {
    format!(
        "[[policy]]\nname = \"org\"\nsenders = [\"*@example.org\"]\nthreshold = 1024\non_error = \"{on_error}\"\n\
         password_mode = \"generated\"\nexpiration_days = 7\nlanguage = \"en\"\nnotify_recipients = true\n"
    )
}

/// The configuration file text for a gateway relaying to `next_hop` and using `cryptshare_url`.
pub fn config_text(dir: &Path, next_hop: &str, cryptshare_url: &str, extra: &str) -> String {
    format!(
        "[server]\nlisten = [\"127.0.0.1:0\"]\nhostname = \"gw.test\"\nmax_message_size = 52428800\n\
         [relay]\nnext_hop = \"{next_hop}\"\ntls = \"off\"\n\
         [cryptshare]\nurl = \"{cryptshare_url}\"\nclient_id = \"{CLIENT_ID}\"\ntimeout = 10\n\
         [state]\ndir = \"{state}\"\n\
         [audit]\nfile = \"{audit}\"\n\
         {extra}\n",
        state = dir.join("state").display(),
        audit = dir.join("audit.jsonl").display(),
    )
}

pub fn write_config(dir: &Path, text: &str) -> (PathBuf, Config) {
    let path = dir.join("gw.toml");
    std::fs::write(&path, text).unwrap();
    let cfg = Config::load_with_env(&path, []).unwrap();
    (path, cfg)
}

/// An in-test emulator whose every `/api` exchange (the gateway's requests, the emulator's
/// answers) is checked against `openapi-1.8.json` when the test ends: at [`Emu::shutdown`],
/// or when it is dropped. Every pipeline test starts its emulator here (or in [`Harness`]).
pub struct Emu(Option<EmulatorHandle>);

impl Emu {
    /// A permissive emulator on 127.0.0.1:0 with its data in `dir`.
    pub async fn start(dir: impl Into<PathBuf>) -> Emu {
        Self::start_with(SimOptions::new(([127, 0, 0, 1], 0).into(), dir)).await
    }

    pub async fn start_with(opts: SimOptions) -> Emu {
        Emu(Some(Emulator::start(opts).await.unwrap()))
    }

    pub async fn shutdown(mut self) {
        let h = self.0.take().expect("emulator running");
        openapi::assert_exchanges_valid(&h.exchanges());
        h.shutdown().await;
    }
}

impl std::ops::Deref for Emu {
    type Target = EmulatorHandle;
    fn deref(&self) -> &EmulatorHandle {
        self.0.as_ref().expect("emulator running")
    }
}

impl Drop for Emu {
    fn drop(&mut self) {
        if let Some(h) = &self.0 {
            openapi::assert_exchanges_valid(&h.exchanges());
        }
    }
}

/// Emulator + sink + gateway + SMTP listener, all on loopback. The emulator's exchanges are
/// checked against `openapi-1.8.json` when the harness is dropped ([`Emu`]).
pub struct Harness {
    pub emu: Emu,
    pub sink: Sink,
    pub gw: Arc<Gateway>,
    pub smtp: SocketAddr,
    pub dir: tempfile::TempDir,
    pub cfg: Config,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Harness {
    /// `extra` is appended to the configuration (policies).
    pub async fn start(extra: &str) -> Harness {
        Self::start_inner(extra, None).await
    }

    /// As [`Harness::start`], relaying to `next_hop` instead of the sink.
    pub async fn start_with_hop(extra: &str, next_hop: SocketAddr) -> Harness {
        Self::start_inner(extra, Some(next_hop)).await
    }

    async fn start_inner(extra: &str, next_hop: Option<SocketAddr>) -> Harness {
        cryptshare_gateway::install_crypto_provider();
        let dir = tempfile::tempdir().unwrap();
        let emu = Emu::start(dir.path().join("sim")).await;
        let sink = Sink::start(Script::default()).await.unwrap();
        let hop = next_hop.unwrap_or(sink.addr());
        let text = config_text(dir.path(), &hop.to_string(), &emu.url(), extra);
        let (_, cfg) = write_config(dir.path(), &text);
        let (gw, smtp, stop, task) = serve(&cfg).await;
        Harness {
            emu,
            sink,
            gw,
            smtp,
            dir,
            cfg,
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// Stop the gateway and start a new one on the same configuration and state (the SMTP port
    /// changes).
    pub async fn restart(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.task.take() {
            t.await.unwrap();
        }
        let (gw, smtp, stop, task) = serve(&self.cfg).await;
        self.gw = gw;
        self.smtp = smtp;
        self.stop = Some(stop);
        self.task = Some(task);
    }

    /// One complete SMTP transaction; returns the reply to the end of DATA.
    pub async fn send(&self, from: &str, rcpts: &[&str], msg: &[u8]) -> String {
        send(self.smtp, from, rcpts, msg).await
    }

    /// The audit lines written so far.
    pub fn audit(&self) -> Vec<serde_json::Value> {
        read_audit(&self.dir.path().join("audit.jsonl"))
    }

    pub async fn stop(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.task.take() {
            t.await.unwrap();
        }
    }
}

async fn serve(
    cfg: &Config,
) -> (
    Arc<Gateway>,
    SocketAddr,
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<()>,
) {
    let metrics = Arc::new(Metrics::new());
    let gw = Gateway::new(cfg, metrics.clone()).await.unwrap();
    let server = Server::bind(cfg, metrics).await.unwrap();
    let smtp = server.local_addrs()[0];
    let (stop, rx) = tokio::sync::oneshot::channel::<()>();
    let factory = Arc::new(GatewayFactory(gw.clone()));
    let task = tokio::spawn(async move {
        server
            .run(factory, async move {
                let _ = rx.await;
            })
            .await
    });
    (gw, smtp, stop, task)
}

pub fn read_audit(path: &Path) -> Vec<serde_json::Value> {
    match std::fs::read_to_string(path) {
        Ok(s) => s
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect(),
        Err(_) => Vec::new(),
    }
}

pub use crate::support::smtp::AsyncSmtp as Client;

/// EHLO, MAIL, RCPT…, DATA, QUIT.
pub async fn send(addr: SocketAddr, from: &str, rcpts: &[&str], msg: &[u8]) -> String {
    let (mut c, greeting) = Client::connect(addr).await;
    assert!(greeting.starts_with("220 "), "{greeting}");
    let ehlo = c.cmd("EHLO client.test").await;
    assert!(ehlo.starts_with("250"), "{ehlo}");
    let r = c.cmd(&format!("MAIL FROM:<{from}>")).await;
    assert!(r.starts_with("250"), "MAIL: {r}");
    for rcpt in rcpts {
        let r = c.cmd(&format!("RCPT TO:<{rcpt}>")).await;
        assert!(r.starts_with("250"), "RCPT: {r}");
    }
    let reply = c.data(msg).await;
    let _ = c.cmd("QUIT").await;
    reply
}

/// Split what the next hop received into our `Received:` field and the rest; panics unless it
/// starts with exactly one prepended `Received:` field (with its folded continuation lines).
pub fn split_received(data: &[u8]) -> (&[u8], &[u8]) {
    assert!(
        data.starts_with(b"Received: "),
        "no Received first: {:?}",
        String::from_utf8_lossy(&data[..data.len().min(200)])
    );
    let mut i = 0;
    loop {
        let nl = memchr(b'\n', &data[i..]).expect("unterminated header") + i + 1;
        i = nl;
        if !matches!(data.get(i), Some(b' ' | b'\t')) {
            return (&data[..i], &data[i..]);
        }
    }
}

fn memchr(b: u8, s: &[u8]) -> Option<usize> {
    s.iter().position(|&c| c == b)
}

pub fn sha256_hex(b: &[u8]) -> String {
    hex::encode(Sha256::digest(b))
}

pub fn file_sha256(p: &Path) -> String {
    sha256_hex(&std::fs::read(p).unwrap())
}

/// Deterministic pseudo-random bytes (incompressible, all byte values).
pub fn payload(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407)
        | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// Base64 with 76-character CRLF lines, as mail clients write it.
pub fn base64_lines(data: &[u8]) -> String {
    use base64::Engine;
    let s = base64::engine::general_purpose::STANDARD.encode(data);
    let mut out = String::with_capacity(s.len() + s.len() / 38);
    for chunk in s.as_bytes().chunks(76) {
        out.push_str(std::str::from_utf8(chunk).unwrap());
        out.push_str("\r\n");
    }
    out
}

/// A `multipart/mixed` message: a plain text body and one base64 attachment per
/// `(content-type + name parameters, bytes)` entry. `headers` are the top header lines.
pub fn mixed(headers: &str, body: &str, attachments: &[(&str, &[u8])]) -> Vec<u8> {
    let b = "=_pipeline_test_boundary";
    let mut m = String::new();
    m.push_str(headers);
    m.push_str(&format!(
        "MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"{b}\"\r\n\r\n\
         This is a multi-part message in MIME format.\r\n\
         --{b}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n{body}\r\n"
    ));
    for (head, data) in attachments {
        m.push_str(&format!(
            "--{b}\r\n{head}\r\nContent-Transfer-Encoding: base64\r\n\r\n{}",
            base64_lines(data)
        ));
    }
    m.push_str(&format!("--{b}--\r\n"));
    m.into_bytes()
}

pub const HEADERS: &str = "From: Alice Example <alice@example.org>\r\n\
To: Bob <bob@example.net>\r\n\
Cc: carol@example.net\r\n\
Subject: Quarterly figures\r\n\
Date: Fri, 27 Nov 2026 10:00:00 +0000\r\n\
Message-ID: <pipeline-test-1@example.org>\r\n";

/// A minimal next hop that records the content of EVERY DATA transaction (the scriptable sink
/// records accepted ones only) and answers the n-th with `replies[n]` (the last one repeats),
/// after `answer_delay` (a slow next hop; zero unless [`RecordingHop::start_slow`]).
pub struct RecordingHop {
    pub addr: SocketAddr,
    pub seen: Arc<std::sync::Mutex<Vec<Vec<u8>>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for RecordingHop {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl RecordingHop {
    pub async fn start(replies: Vec<&'static str>) -> RecordingHop {
        Self::start_slow(replies, std::time::Duration::ZERO).await
    }

    pub async fn start_slow(
        replies: Vec<&'static str>,
        answer_delay: std::time::Duration,
    ) -> RecordingHop {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let seen: Arc<std::sync::Mutex<Vec<Vec<u8>>>> = Arc::default();
        let s2 = seen.clone();
        let task = tokio::spawn(async move {
            while let Ok((tcp, _)) = l.accept().await {
                let seen = s2.clone();
                let replies = replies.clone();
                tokio::spawn(async move {
                    let (r, mut w) = tcp.into_split();
                    let _: Option<()> = async {
                        let mut r = BufReader::new(r);
                        w.write_all(b"220 hop.test ESMTP\r\n").await.ok()?;
                        loop {
                            let mut line = Vec::new();
                            if r.read_until(b'\n', &mut line).await.ok()? == 0 {
                                return None;
                            }
                            let cmd = String::from_utf8_lossy(&line).to_ascii_uppercase();
                            let out: String = if cmd.starts_with("EHLO") {
                                "250-hop.test\r\n250 ENHANCEDSTATUSCODES\r\n".into()
                            } else if cmd.starts_with("DATA") {
                                w.write_all(b"354 go ahead\r\n").await.ok()?;
                                let mut data = Vec::new();
                                loop {
                                    let mut l = Vec::new();
                                    if r.read_until(b'\n', &mut l).await.ok()? == 0 {
                                        return None;
                                    }
                                    if l == b".\r\n" {
                                        break;
                                    }
                                    let l = if l.starts_with(b"..") {
                                        &l[1..]
                                    } else {
                                        &l[..]
                                    };
                                    data.extend_from_slice(l);
                                }
                                let n = {
                                    let mut s = seen.lock().unwrap();
                                    s.push(data);
                                    s.len() - 1
                                };
                                tokio::time::sleep(answer_delay).await;
                                format!("{}\r\n", replies[n.min(replies.len() - 1)])
                            } else if cmd.starts_with("QUIT") {
                                w.write_all(b"221 bye\r\n").await.ok()?;
                                return None;
                            } else {
                                "250 2.0.0 ok\r\n".into()
                            };
                            w.write_all(out.as_bytes()).await.ok()?;
                        }
                    }
                    .await;
                });
            }
        });
        RecordingHop { addr, seen, task }
    }

    pub fn seen(&self) -> Vec<Vec<u8>> {
        self.seen.lock().unwrap().clone()
    }
}

/// The chaos tests' schedule: xorshift64*, small, seeded, reproducible.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545F4914F6CDD1D)
    }
    pub fn millis(&mut self, lo: u64, hi: u64) -> std::time::Duration {
        std::time::Duration::from_millis(lo + self.next() % (hi - lo))
    }
}

/// `CHAOS_SEED` when set (to repeat a run's schedule), else one from the clock.
pub fn chaos_seed() -> u64 {
    std::env::var("CHAOS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
                | 1
        })
}
