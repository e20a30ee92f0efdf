//! Issue 5 acceptance: the real `cryptshare-gateway serve` process is SIGKILLed in the middle of
//! an upload to Cryptshare and restarted; the client's retry yields exactly one transfer and one
//! delivered message, and the half-made session is deleted.
//!
//! "In the middle" is made exact by a TCP proxy between the gateway and the in-test emulator: it
//! forwards the upload request's head and the first bytes of its body, then holds the rest and
//! reports it. No sleeps, no timing.

mod pipeline_support;
mod support;

use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use cryptshare_gateway::sim::{Emulator, SimOptions};
use cryptshare_gateway_testkit::sink::{Script, Sink};
use pipeline_support::*;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};

/// Bytes of the upload body forwarded before the proxy holds the stream.
const FORWARD_BEFORE_HOLD: usize = 256 * 1024;
/// Upper bound for any wait, so that a broken gateway fails the test instead of hanging it.
const LIMIT: std::time::Duration = std::time::Duration::from_secs(120);
/// The upload's request line ends so (`PUT …/files/{id}/content`); plain `http://` to the
/// emulator is HTTP/1.1, so the proxy sees it in clear.
const MARKER: &[u8] = b"/content HTTP/1.1\r\n";

/// Forwards to `target`; the first upload request (`PUT …/content`) is held after
/// `FORWARD_BEFORE_HOLD` body bytes, and `held` fires.
async fn start_proxy(target: SocketAddr, held: oneshot::Sender<()>) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let armed = Arc::new(AtomicBool::new(true));
    let held = Arc::new(std::sync::Mutex::new(Some(held)));
    tokio::spawn(async move {
        while let Ok((client, _)) = l.accept().await {
            let server = TcpStream::connect(target).await.unwrap();
            let (mut cr, mut cw) = client.into_split();
            let (mut sr, mut sw) = server.into_split();
            tokio::spawn(async move {
                let _ = tokio::io::copy(&mut sr, &mut cw).await;
            });
            let armed = armed.clone();
            let held = held.clone();
            tokio::spawn(async move {
                let mut window: Vec<u8> = Vec::new();
                let mut after_marker: Option<usize> = None;
                let mut holding = false;
                let mut buf = vec![0u8; 64 * 1024];
                loop {
                    let n = match cr.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => n,
                    };
                    if holding {
                        // Swallow: the server sees a stalled upload until the client dies.
                        continue;
                    }
                    let chunk = &buf[..n];
                    let mut forward = n;
                    if let Some(sent) = after_marker {
                        let room = FORWARD_BEFORE_HOLD - sent;
                        if n >= room {
                            forward = room;
                            holding = true;
                        } else {
                            after_marker = Some(sent + n);
                        }
                    } else if armed.load(Ordering::SeqCst) {
                        window.extend_from_slice(chunk);
                        if let Some(pos) = window.windows(MARKER.len()).position(|w| w == MARKER) {
                            armed.store(false, Ordering::SeqCst);
                            let past = window.len() - (pos + MARKER.len());
                            if past >= FORWARD_BEFORE_HOLD {
                                forward = n - (past - FORWARD_BEFORE_HOLD);
                                holding = true;
                            } else {
                                after_marker = Some(past);
                            }
                        } else if window.len() > MARKER.len() {
                            window.drain(..window.len() - MARKER.len());
                        }
                    }
                    if sw.write_all(&chunk[..forward]).await.is_err() {
                        break;
                    }
                    if holding && let Some(tx) = held.lock().unwrap().take() {
                        let _ = tx.send(());
                    }
                }
                // The client is gone: so is the connection to the server.
                drop(sw);
            });
        }
    });
    addr
}

struct Gw {
    child: tokio::process::Child,
    smtp: SocketAddr,
}

/// Start `cryptshare-gateway serve` and wait for its "SMTP listener ready" log line.
async fn spawn_gateway(config: &std::path::Path) -> Gw {
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_cryptshare-gateway"))
        .arg("serve")
        .arg("--config")
        .arg(config)
        .arg("--log-format")
        .arg("json")
        .env_remove("NOTIFY_SOCKET")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, mut rx) = mpsc::unbounded_channel::<String>();
    tokio::spawn(async move {
        let mut lines = BufReader::new(stderr).lines();
        while let Ok(Some(l)) = lines.next_line().await {
            let _ = tx.send(l);
        }
    });
    let smtp = loop {
        // A safety net against hanging forever, not a synchronisation.
        let line = tokio::time::timeout(LIMIT, rx.recv())
            .await
            .expect("no listener within the limit")
            .expect("the gateway exited before listening");
        let v: serde_json::Value = match serde_json::from_str(&line) {
            Ok(v) => v,
            Err(_) => continue,
        };
        if v["message"] == "SMTP listener ready" {
            break v["listen"].as_str().unwrap().parse().unwrap();
        }
    };
    // Keep draining the log so that the process never blocks on a full pipe.
    tokio::spawn(async move { while rx.recv().await.is_some() {} });
    Gw { child, smtp }
}

/// One transaction that may die half-way: `Err` when the connection closes first.
async fn try_send(addr: SocketAddr, from: &str, rcpt: &str, msg: &[u8]) -> Result<String, String> {
    let tcp = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    let (r, mut w) = tcp.into_split();
    let mut r = BufReader::new(r);
    let mut read_reply = async || -> Result<String, String> {
        let mut all = String::new();
        loop {
            let mut line = String::new();
            if r.read_line(&mut line).await.map_err(|e| e.to_string())? == 0 {
                return Err(format!("closed after {all:?}"));
            }
            all.push_str(&line);
            if line.len() < 4 || line.as_bytes()[3] != b'-' {
                return Ok(all);
            }
        }
    };
    read_reply().await?;
    let mut stuffed = Vec::with_capacity(msg.len() + 64);
    for line in msg.split_inclusive(|&b| b == b'\n') {
        if line.starts_with(b".") {
            stuffed.push(b'.');
        }
        stuffed.extend_from_slice(line);
    }
    stuffed.extend_from_slice(b".\r\n");
    for cmd in [
        "EHLO client.test\r\n".to_string(),
        format!("MAIL FROM:<{from}>\r\n"),
        format!("RCPT TO:<{rcpt}>\r\n"),
        "DATA\r\n".to_string(),
    ] {
        w.write_all(cmd.as_bytes())
            .await
            .map_err(|e| e.to_string())?;
        let rep = read_reply().await?;
        if !(rep.starts_with("250") || rep.starts_with("354")) {
            return Err(rep);
        }
    }
    w.write_all(&stuffed).await.map_err(|e| e.to_string())?;
    read_reply().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_upload_then_restart_and_retry_gives_one_transfer() {
    let dir = tempfile::tempdir().unwrap();
    let emu = Emulator::start(SimOptions::new(
        ([127, 0, 0, 1], 0).into(),
        dir.path().join("sim"),
    ))
    .await
    .unwrap();
    let (held_tx, held_rx) = oneshot::channel();
    let proxy = start_proxy(emu.addr(), held_tx).await;
    let sink = Sink::start(Script::default()).await.unwrap();
    let text = config_text(
        dir.path(),
        &sink.addr().to_string(),
        &format!("http://{proxy}"),
        &policy("tempfail"),
    );
    let (path, _) = write_config(dir.path(), &text);

    let big = payload(2 * 1024 * 1024, 21);
    let msg = mixed(
        HEADERS,
        "the big one",
        &[(
            "Content-Type: application/zip; name=\"big.zip\"\r\nContent-Disposition: attachment; filename=\"big.zip\"",
            &big,
        )],
    );

    let mut gw = spawn_gateway(&path).await;
    let first = {
        let msg = msg.clone();
        let addr = gw.smtp;
        tokio::spawn(
            async move { try_send(addr, "alice@example.org", "bob@example.net", &msg).await },
        )
    };
    tokio::time::timeout(LIMIT, held_rx)
        .await
        .expect("the upload never started")
        .unwrap();
    // In the middle of the upload, as the emulator sees it: one open session, nothing stored.
    assert_eq!(emu.open_sessions(), 1);
    assert_eq!(emu.stats().uploads, 0);
    assert!(emu.transfers().is_empty());
    gw.child.kill().await.unwrap();
    let first = first.await.unwrap();
    assert!(first.is_err(), "the killed gateway answered: {first:?}");
    assert!(sink.messages().is_empty());

    let mut gw = spawn_gateway(&path).await;
    let reply = try_send(gw.smtp, "alice@example.org", "bob@example.net", &msg)
        .await
        .unwrap();
    assert_eq!(reply, "250 2.0.0 OK, relayed (Queued as SINK)\r\n");
    let ts = emu.transfers();
    assert_eq!(ts.len(), 1, "{ts:?}");
    assert_eq!(ts[0].files[0].uploaded_sha256, sha256_hex(&big));
    assert_eq!(file_sha256(&ts[0].files[0].path), sha256_hex(&big));
    let stats = emu.stats();
    assert_eq!(stats.sessions_created, 2);
    assert_eq!(
        stats.sessions_deleted, 1,
        "the half-made session was deleted"
    );
    assert_eq!(emu.open_sessions(), 0);
    let got = sink.messages();
    assert_eq!(got.len(), 1);
    let (_, rewritten) = split_received(&got[0].data);
    assert!(String::from_utf8_lossy(rewritten).contains(&ts[0].tracking_id));
    gw.child.kill().await.unwrap();
}
