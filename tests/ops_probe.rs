//! The next-hop readiness probe: a real SMTP conversation (greeting, EHLO, QUIT) with a
//! recording peer and with Postfix `smtp-sink`; `/readyz` of the real binary following the next
//! hop up and down; `metrics.probe_interval` (default, 0 = no probe).

mod e2e_support;
mod ops_e2e_support;
mod support;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, channel};
use std::time::{Duration, Instant};

use cryptshare_gateway::config::NextHop;
use cryptshare_gateway::ops::http::{self, Component, Readiness};
use cryptshare_gateway::ops::probe::smtp_probe;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader as TokioBufReader};

const HELO: &str = "gw.probe.test";
const T: Duration = Duration::from_secs(10);

/// One connection of a scripted peer: sends `greeting`, then answers each line read with the
/// next of `answers` (none left: reads on). Returns every byte the probe sent, up to its EOF.
async fn scripted_peer(
    greeting: &'static str,
    answers: &'static [&'static str],
) -> (u16, tokio::task::JoinHandle<String>) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    let task = tokio::spawn(async move {
        let (s, _) = l.accept().await.unwrap();
        let (r, mut w) = s.into_split();
        let mut r = TokioBufReader::new(r);
        w.write_all(greeting.as_bytes()).await.unwrap();
        let mut seen = String::new();
        let mut answers = answers.iter();
        loop {
            let mut line = String::new();
            if r.read_line(&mut line).await.unwrap() == 0 {
                return seen;
            }
            seen.push_str(&line);
            if let Some(a) = answers.next() {
                w.write_all(a.as_bytes()).await.unwrap();
            }
        }
    });
    (port, task)
}

/// A bound socket that does not listen: connecting to its port is refused.
fn refusing_port() -> (tokio::net::TcpSocket, u16) {
    let s = tokio::net::TcpSocket::new_v4().unwrap();
    s.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let port = s.local_addr().unwrap().port();
    (s, port)
}

#[tokio::test]
async fn the_probe_says_ehlo_and_quit() {
    let (port, peer) = scripted_peer(
        "220 peer ESMTP\r\n",
        &["250-peer\r\n250 PIPELINING\r\n", "221 2.0.0 Bye\r\n"],
    )
    .await;
    assert_eq!(smtp_probe("127.0.0.1", port, HELO, T).await, Ok(()));
    assert_eq!(peer.await.unwrap(), "EHLO gw.probe.test\r\nQUIT\r\n");
}

#[tokio::test]
async fn a_refused_greeting_or_ehlo_is_not_ready() {
    let (port, peer) = scripted_peer("554 5.3.2 not now\r\n", &[]).await;
    assert_eq!(
        smtp_probe("127.0.0.1", port, HELO, T).await,
        Err(format!("127.0.0.1:{port}: greeting: 554 5.3.2 not now"))
    );
    // Nothing is sent after a refused greeting.
    assert_eq!(peer.await.unwrap(), "");

    let (port, peer) = scripted_peer(
        "220-peer ESMTP\r\n220 second line\r\n",
        &["421-4.3.2 shutting\r\n421 4.3.2 down\r\n"],
    )
    .await;
    assert_eq!(
        smtp_probe("127.0.0.1", port, HELO, T).await,
        Err(format!(
            "127.0.0.1:{port}: EHLO: 421-4.3.2 shutting 421 4.3.2 down"
        ))
    );
    assert_eq!(peer.await.unwrap(), "EHLO gw.probe.test\r\n");
}

#[tokio::test]
async fn a_peer_that_is_not_smtp_is_not_ready() {
    let (port, _peer) = scripted_peer("HTTP/1.1 400 Bad Request\r\n\x1b[31m", &[]).await;
    assert_eq!(
        smtp_probe("127.0.0.1", port, HELO, T).await,
        Err(format!(
            "127.0.0.1:{port}: greeting: not an SMTP reply: \"HTTP/1.1 400 Bad Request\""
        ))
    );

    // Accepts and closes at once.
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    let closer = tokio::spawn(async move { drop(l.accept().await.unwrap()) });
    assert_eq!(
        smtp_probe("127.0.0.1", port, HELO, T).await,
        Err(format!("127.0.0.1:{port}: greeting: connection closed"))
    );
    closer.await.unwrap();
}

#[tokio::test]
async fn a_silent_peer_times_out() {
    // Accepts, never greets; the probe's own timeout is what is tested here.
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    let silent = tokio::spawn(async move {
        let (mut s, _) = l.accept().await.unwrap();
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await.unwrap();
        buf
    });
    assert_eq!(
        smtp_probe("127.0.0.1", port, HELO, Duration::from_millis(500)).await,
        Err(format!("127.0.0.1:{port}: greeting: no reply within 0.5 s"))
    );
    assert_eq!(silent.await.unwrap(), b"");
}

#[tokio::test]
async fn next_hop_down_and_maildir() {
    let (_reserved, port) = refusing_port();
    let down = NextHop::Smtp {
        host: "127.0.0.1".into(),
        port,
    };
    assert_eq!(
        http::probe_next_hop(&down, HELO, T).await,
        Err(format!(
            "127.0.0.1:{port}: Connection refused (os error 111)"
        ))
    );

    let dir = tempfile::tempdir().unwrap();
    let maildir = NextHop::Maildir(dir.path().to_path_buf());
    assert_eq!(http::probe_next_hop(&maildir, HELO, T).await, Ok(()));
    let missing = dir.path().join("missing");
    assert_eq!(
        http::probe_next_hop(&NextHop::Maildir(missing.clone()), HELO, T).await,
        Err(format!("{}: no such directory", missing.display()))
    );
}

#[tokio::test]
async fn the_probe_task_records_the_result() {
    let (port, _peer) = scripted_peer("220 peer\r\n", &["250 peer\r\n", "221 bye\r\n"]).await;
    let hop = NextHop::Smtp {
        host: "127.0.0.1".into(),
        port,
    };
    let readiness = Arc::new(Readiness::new());
    let mut changes = readiness.subscribe();
    let task = http::spawn_probe(
        readiness.clone(),
        Component::NextHop,
        Duration::from_secs(3600),
        move || {
            let hop = hop.clone();
            async move { http::probe_next_hop(&hop, HELO, T).await }
        },
    );
    tokio::time::timeout(
        Duration::from_secs(30),
        changes.wait_for(|s| s.next_hop.is_ok()),
    )
    .await
    .unwrap()
    .unwrap();
    task.abort();
    assert_eq!(
        readiness.check(),
        Err("listeners: not checked yet; cryptshare: not checked yet".into())
    );
}

/// Postfix's own test server: a probe is a conversation it accepts; one that refuses EHLO or
/// hangs up after it is "not ready".
#[tokio::test]
async fn postfix_smtp_sink() {
    let sink = e2e_support::SmtpSink::start(&[]);
    assert_eq!(smtp_probe("127.0.0.1", sink.port, HELO, T).await, Ok(()));

    let sink = e2e_support::SmtpSink::start(&["-r", "ehlo"]);
    assert_eq!(
        smtp_probe("127.0.0.1", sink.port, HELO, T).await,
        Err(format!(
            "127.0.0.1:{}: EHLO: 450 4.3.0 Error: command failed",
            sink.port
        ))
    );

    let sink = e2e_support::SmtpSink::start(&["-q", "ehlo"]);
    assert_eq!(
        smtp_probe("127.0.0.1", sink.port, HELO, T).await,
        Err(format!("127.0.0.1:{}: EHLO: connection closed", sink.port))
    );
}

/// A next hop for the real binary: answers every connection's greeting, EHLO and QUIT, and
/// reports each command line it reads. [`Recorder::stop`] closes the listening socket.
struct Recorder {
    port: u16,
    lines: Receiver<String>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Recorder {
    fn start() -> Recorder {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let (tx, lines) = channel();
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        let thread = std::thread::spawn(move || {
            for conn in l.incoming() {
                if stopping.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(mut w) = conn else { continue };
                w.set_read_timeout(Some(ops_e2e_support::WAIT)).unwrap();
                let mut r = BufReader::new(w.try_clone().unwrap());
                let _ = w.write_all(b"220 recorder ESMTP\r\n");
                loop {
                    let mut line = String::new();
                    match r.read_line(&mut line) {
                        Ok(0) | Err(_) => break,
                        Ok(_) => {}
                    }
                    let answer: &[u8] = if line.starts_with("QUIT") {
                        b"221 2.0.0 Bye\r\n"
                    } else {
                        b"250 recorder\r\n"
                    };
                    let _ = w.write_all(answer);
                    let _ = tx.send(line);
                }
            }
        });
        Recorder {
            port,
            lines,
            stop,
            thread: Some(thread),
        }
    }

    fn next_line(&self) -> String {
        self.lines
            .recv_timeout(ops_e2e_support::WAIT)
            .expect("a command from the probe")
    }

    /// Close the listening socket: from now on connections are refused.
    fn stop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so that it sees the flag and drops the listener.
        let _ = std::net::TcpStream::connect(("127.0.0.1", self.port));
        self.thread.take().unwrap().join().unwrap();
    }
}

/// Poll `/readyz` until it answers `status` (there is no event to wait on from outside).
fn wait_readyz(gw: &ops_e2e_support::Gateway, status: u16) -> String {
    let deadline = Instant::now() + ops_e2e_support::WAIT;
    loop {
        let (s, body) = gw.http_get("/readyz");
        if s == status {
            return body;
        }
        assert!(
            Instant::now() < deadline,
            "/readyz still {s} {body:?}; log:\n{}",
            gw.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn readyz_follows_the_next_hop_through_ehlo_probes() {
    use ops_e2e_support::{Gateway, HUGE, LogFormat};
    let mut hop = Recorder::start();
    let next_hop = format!("127.0.0.1:{}", hop.port);
    let gw = Gateway::start_with_env(
        HUGE,
        LogFormat::Json,
        &[
            ("CSGW__RELAY__NEXT_HOP", &next_hop),
            ("CSGW__METRICS__PROBE_INTERVAL", "1"),
        ],
    );
    // Two probes, each a complete conversation with the configured hostname.
    for _ in 0..2 {
        assert_eq!(hop.next_line(), "EHLO gw.ops.test\r\n");
        assert_eq!(hop.next_line(), "QUIT\r\n");
    }
    assert_eq!(wait_readyz(&gw, 200), "ready\n");

    hop.stop();
    assert_eq!(
        wait_readyz(&gw, 503),
        format!("not ready: next hop: {next_hop}: Connection refused (os error 111)\n")
    );
}

#[test]
fn probe_interval_0_leaves_the_next_hop_out_of_readyz() {
    use ops_e2e_support::{Gateway, HUGE, LogFormat};
    let (_reserved, port) = refusing_port();
    let gw = Gateway::start_with_env(
        HUGE,
        LogFormat::Json,
        &[
            ("CSGW__RELAY__NEXT_HOP", &format!("127.0.0.1:{port}")),
            ("CSGW__METRICS__PROBE_INTERVAL", "0"),
        ],
    );
    // With probes the refused next hop would keep this at 503.
    assert_eq!(wait_readyz(&gw, 200), "ready\n");
}

#[test]
fn probe_interval_default_and_type() {
    let dir = tempfile::tempdir().unwrap();
    let path = ops_e2e_support::write_config(dir.path(), 1000, "");
    let show = std::process::Command::new(env!("CARGO_BIN_EXE_cryptshare-gateway"))
        .args(["show-config", "--config"])
        .arg(&path)
        .env_remove("CSGW__METRICS__PROBE_INTERVAL")
        .output()
        .unwrap();
    assert_eq!(show.status.code(), Some(0));
    let text = String::from_utf8(show.stdout).unwrap();
    assert!(
        text.contains("\nmetrics.probe_interval = 30  # default\n"),
        "{text}"
    );

    let check = std::process::Command::new(env!("CARGO_BIN_EXE_cryptshare-gateway"))
        .args(["check-config", "--config"])
        .arg(&path)
        .env("CSGW__METRICS__PROBE_INTERVAL", "soon")
        .output()
        .unwrap();
    assert_eq!(check.status.code(), Some(2));
    assert_eq!(
        String::from_utf8_lossy(&check.stderr),
        "CSGW__METRICS__PROBE_INTERVAL: metrics.probe_interval: expected a whole number, found \"soon\"\n"
    );
}
