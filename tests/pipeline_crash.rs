//! Issue 5 acceptance: the real `cryptshare-gateway serve` process is SIGKILLed in the middle of
//! an upload to Cryptshare and restarted; the client's retry yields exactly one transfer and one
//! delivered message. Issue 11: the retry continues the half-made session (with the token
//! persisted in the pending record) and uploads only the files the server does not have.
//!
//! "In the middle" is made exact by a TCP proxy between the gateway and the in-test emulator: it
//! forwards the upload request's head and the first bytes of its body, then holds the rest and
//! reports it. No sleeps, no timing. The emulator's exchanges, the killed upload's included,
//! are checked against `openapi-1.8.json` at the end (`pipeline_support::Emu`).

mod pipeline_support;
#[path = "pipeline_support/process.rs"]
mod process;
mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use cryptshare_gateway_testkit::sink::{Script, Sink};
use pipeline_support::*;
use process::{LIMIT, spawn_gateway, try_send};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;

/// Bytes of the upload body forwarded before the proxy holds the stream.
const FORWARD_BEFORE_HOLD: usize = 256 * 1024;
/// The upload's request line ends so (`PUT …/files/{id}/content`); plain `http://` to the
/// emulator is HTTP/1.1, so the proxy sees it in clear.
const MARKER: &[u8] = b"/content HTTP/1.1\r\n";

/// Forwards to `target`; upload request number `hold_at` (0 = the first `PUT …/content`) is
/// held after `FORWARD_BEFORE_HOLD` body bytes, and `held` fires.
async fn start_proxy(target: SocketAddr, hold_at: usize, held: oneshot::Sender<()>) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let armed = Arc::new(AtomicBool::new(true));
    let seen = Arc::new(AtomicUsize::new(0));
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
            let seen = seen.clone();
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
                        if let Some(pos) = window.windows(MARKER.len()).position(|w| w == MARKER)
                            && seen.fetch_add(1, Ordering::SeqCst) < hold_at
                        {
                            // An earlier upload: passes whole.
                            window.drain(..pos + MARKER.len());
                        } else if let Some(pos) =
                            window.windows(MARKER.len()).position(|w| w == MARKER)
                        {
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_upload_then_restart_and_retry_gives_one_transfer() {
    let dir = tempfile::tempdir().unwrap();
    let emu = Emu::start(dir.path().join("sim")).await;
    let (held_tx, held_rx) = oneshot::channel();
    let proxy = start_proxy(emu.addr(), 0, held_tx).await;
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
    assert_eq!(stats.sessions_created, 1, "the retry continued the session");
    assert_eq!(stats.sessions_deleted, 0);
    assert_eq!(emu.open_sessions(), 0);
    let got = sink.messages();
    assert_eq!(got.len(), 1);
    let (_, rewritten) = split_received(&got[0].data);
    assert!(String::from_utf8_lossy(rewritten).contains(&ts[0].tracking_id));
    gw.child.kill().await.unwrap();
}

/// Issue 11, resume: two attachments, the gateway killed in the middle of the second upload,
/// on a server that binds sessions to their creating token. After the restart, the retry
/// continues the same session with the persisted token (file mode 0600) and uploads only the
/// second file again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_second_upload_then_retry_continues_the_session() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let emu = Emu::start(dir.path().join("sim")).await;
    emu.set_switches(cryptshare_gateway::sim::SimSwitches {
        bind_session_tokens: true,
        ..Default::default()
    });
    let (held_tx, held_rx) = oneshot::channel();
    let proxy = start_proxy(emu.addr(), 1, held_tx).await;
    let sink = Sink::start(Script::default()).await.unwrap();
    let text = config_text(
        dir.path(),
        &sink.addr().to_string(),
        &format!("http://{proxy}"),
        &policy("tempfail"),
    );
    let (path, _) = write_config(dir.path(), &text);
    let small = payload(100 * 1024, 5);
    let big = payload(2 * 1024 * 1024, 22);
    let msg = mixed(
        HEADERS,
        "two files",
        &[
            (
                "Content-Type: application/pdf; name=\"small.pdf\"\r\nContent-Disposition: attachment; filename=\"small.pdf\"",
                &small,
            ),
            (
                "Content-Type: application/zip; name=\"big.zip\"\r\nContent-Disposition: attachment; filename=\"big.zip\"",
                &big,
            ),
        ],
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
        .expect("the second upload never started")
        .unwrap();
    assert_eq!(emu.stats().uploads, 1, "the first file is on the server");
    gw.child.kill().await.unwrap();
    assert!(first.await.unwrap().is_err());

    // The pending record holds the session's token, readable by the owner only.
    let records: Vec<_> = std::fs::read_dir(dir.path().join("state/transfers"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(records.len(), 1, "{records:?}");
    let mode = std::fs::metadata(&records[0]).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    let rec: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&records[0]).unwrap()).unwrap();
    assert_eq!(rec["state"], "pending");
    assert!(
        rec["session"]["token"]
            .as_str()
            .is_some_and(|t| !t.is_empty()),
        "{rec}"
    );

    let mut gw = spawn_gateway(&path).await;
    let reply = try_send(gw.smtp, "alice@example.org", "bob@example.net", &msg)
        .await
        .unwrap();
    assert_eq!(reply, "250 2.0.0 OK, relayed (Queued as SINK)\r\n");
    let ts = emu.transfers();
    assert_eq!(ts.len(), 1, "{ts:?}");
    let stats = emu.stats();
    assert_eq!(stats.sessions_created, 1, "continued, not made again");
    assert_eq!(stats.sessions_deleted, 0);
    assert_eq!(
        stats.foreign_token_refusals, 0,
        "the persisted token was used"
    );
    assert_eq!(stats.uploads, 2, "only the missing file was uploaded again");
    let mut sums: Vec<String> = ts[0]
        .files
        .iter()
        .map(|f| f.uploaded_sha256.clone())
        .collect();
    sums.sort();
    let mut want = vec![sha256_hex(&small), sha256_hex(&big)];
    want.sort();
    assert_eq!(sums, want);
    assert_eq!(emu.open_sessions(), 0);
    assert_eq!(sink.messages().len(), 1);
    gw.child.kill().await.unwrap();
}
