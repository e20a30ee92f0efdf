//! The real listener (`Server` on 127.0.0.1:0) against real clients: Python `smtplib`, `swaks`
//! and a raw TCP client, with a test handler that reports every message on a channel. Asserts
//! the exact bytes the handler got.

mod inbound_support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use cryptshare_gateway::config::Config;
use cryptshare_gateway::inbound::{Reloader, Server};
use cryptshare_gateway::ops::Metrics;
use inbound_support::*;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};

/// Bound on waiting for a delivery report; a failing test fails instead of hanging.
const WAIT: Duration = Duration::from_secs(60);

struct Running {
    factory: Arc<TestFactory>,
    addr: SocketAddr,
    tls_addr: SocketAddr,
    deliveries: mpsc::UnboundedReceiver<Delivered>,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
    reloader: Reloader,
    dir: tempfile::TempDir,
}

impl Running {
    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    async fn next_delivery(&mut self) -> Delivered {
        tokio::time::timeout(WAIT, self.deliveries.recv())
            .await
            .expect("no delivery")
            .expect("channel closed")
    }

    async fn stop(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        self.task.await.unwrap();
    }
}

fn write_config(dir: &Path, client_networks: &str, hostname: &str, extra: &str) -> Config {
    let cert = test_cert();
    std::fs::write(dir.join("cert.pem"), &cert.cert_pem).unwrap();
    std::fs::write(dir.join("key.pem"), &cert.key_pem).unwrap();
    let bob = bcrypt::hash("builder", 4).unwrap();
    std::fs::write(dir.join("users"), format!("# test users\nbob:{bob}\n")).unwrap();
    let d = dir.display();
    let toml = format!(
        "[server]\n\
         listen = [\"127.0.0.1:0\"]\n\
         listen_tls = [\"127.0.0.1:0\"]\n\
         hostname = \"{hostname}\"\n\
         client_networks = [{client_networks}]\n\
         {extra}\n\
         [server.tls]\ncert = \"{d}/cert.pem\"\nkey = \"{d}/key.pem\"\n\
         [server.auth]\nusers_file = \"{d}/users\"\n\
         [relay]\nnext_hop = \"maildir:{d}/unused\"\n\
         [state]\ndir = \"{d}/state\"\n"
    );
    let path = dir.join("gateway.toml");
    std::fs::write(&path, toml).unwrap();
    Config::load_with_env(&path, []).unwrap()
}

async fn start(client_networks: &str) -> Running {
    start_with(client_networks, "").await
}

async fn start_with(client_networks: &str, extra: &str) -> Running {
    start_handler(client_networks, extra, TestHandler::new()).await
}

async fn start_handler(client_networks: &str, extra: &str, mut template: TestHandler) -> Running {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path(), client_networks, "mx.test", extra);
    let server = Server::bind(&cfg, Arc::new(Metrics::new())).await.unwrap();
    let addr = server.local_addrs()[0];
    let tls_addr = server.local_tls_addrs()[0];
    let reloader = server.reloader();
    let (tx, deliveries) = mpsc::unbounded_channel();
    template.delivered = Some(tx);
    let factory = Arc::new(TestFactory::new(template));
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(server.run(factory.clone(), async move {
        let _ = stopped.await;
    }));
    Running {
        factory,
        addr,
        tls_addr,
        deliveries,
        stop: Some(stop),
        task,
        reloader,
        dir,
    }
}

const PYTHON_CLIENT: &str = r#"
import json, smtplib, ssl, sys
port, mode, cafile, msgfile = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
msg = open(msgfile, 'rb').read()
res = {}
s = smtplib.SMTP('127.0.0.1', port, local_hostname='py.test')
code, text = s.ehlo()
res['ehlo'] = [code, text.decode()]
if mode in ('tls', 'auth'):
    ctx = ssl.create_default_context(cafile=cafile)
    code, text = s.starttls(context=ctx)
    res['starttls'] = [code, text.decode()]
    s.ehlo()
if mode == 'auth':
    code, text = s.login('bob', 'builder')
    res['login'] = [code, text.decode()]
try:
    refused = s.sendmail('s@x.test', ['a@y.test', 'unknown@y.test', 'b@y.test'], msg,
                         mail_options=['BODY=8BITMIME'])
    res['refused'] = {k: [v[0], v[1].decode()] for k, v in refused.items()}
except smtplib.SMTPRecipientsRefused as e:
    res['all_refused'] = {k: [v[0], v[1].decode()] for k, v in e.recipients.items()}
code, text = s.quit()
res['quit'] = [code, text.decode()]
print(json.dumps(res, sort_keys=True))
"#;

async fn python(r: &Running, mode: &str, msg: &[u8]) -> serde_json::Value {
    let msgfile = r.path(&format!("py-{mode}.eml"));
    std::fs::write(&msgfile, msg).unwrap();
    let out = tokio::process::Command::new("python3")
        .arg("-c")
        .arg(PYTHON_CLIENT)
        .arg(r.addr.port().to_string())
        .arg(mode)
        .arg(r.path("cert.pem"))
        .arg(&msgfile)
        .output()
        .await
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "python3 failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("python prints JSON")
}

const PY_MSG: &[u8] = b"From: S <s@x.test>\r\nTo: a@y.test\r\nSubject: smtplib\r\n\r\n\
.leading dot\r\n..two dots\r\nGr\xc3\xbc\xc3\x9fe\r\n";

const EHLO_PLAIN: &str = "mx.test\nPIPELINING\nSIZE 104857600\nSTARTTLS\n\
ENHANCEDSTATUSCODES\n8BITMIME\nDSN\nSMTPUTF8\nCHUNKING";

#[tokio::test]
async fn python_smtplib_plain_delivers_exact_bytes() {
    let mut r = start("\"127.0.0.0/8\"").await;
    let out = python(&r, "plain", PY_MSG).await;
    let expected = serde_json::json!({
        "ehlo": [250, EHLO_PLAIN],
        "refused": {"unknown@y.test": [550, "5.1.1 User unknown (next hop)"]},
        "quit": [221, "2.0.0 mx.test closing connection"],
    });
    assert_eq!(out, expected);
    let d = r.next_delivery().await;
    assert_eq!(d.message, PY_MSG);
    assert_eq!(d.from, "s@x.test");
    assert_eq!(d.rcpts, vec!["a@y.test", "b@y.test"]);
    assert!(!d.tls);
    assert!(
        d.received
            .starts_with("Received: from py.test ([127.0.0.1])\r\n\tby mx.test with ESMTP id "),
        "{}",
        d.received
    );
    r.stop().await;
}

#[tokio::test]
async fn python_smtplib_starttls_and_auth() {
    // Loopback is outside client_networks: only the authenticated session may relay.
    let mut r = start("\"10.0.0.0/8\"").await;
    let out = python(&r, "tls", PY_MSG).await;
    let denied = serde_json::json!([554, "5.7.1 Relay access denied"]);
    let expected = serde_json::json!({
        "ehlo": [250, EHLO_PLAIN],
        "starttls": [220, "2.0.0 Ready to start TLS"],
        "all_refused": {"a@y.test": denied, "unknown@y.test": denied, "b@y.test": denied},
        "quit": [221, "2.0.0 mx.test closing connection"],
    });
    assert_eq!(out, expected);

    let out = python(&r, "auth", PY_MSG).await;
    let expected = serde_json::json!({
        "ehlo": [250, EHLO_PLAIN],
        "starttls": [220, "2.0.0 Ready to start TLS"],
        "login": [235, "2.7.0 Authentication successful"],
        "refused": {"unknown@y.test": [550, "5.1.1 User unknown (next hop)"]},
        "quit": [221, "2.0.0 mx.test closing connection"],
    });
    assert_eq!(out, expected);
    let d = r.next_delivery().await;
    assert_eq!(d.message, PY_MSG);
    assert!(d.tls);
    assert_eq!(d.auth_user.as_deref(), Some("bob"));
    assert!(d.received.contains(" with ESMTPSA id "), "{}", d.received);
    r.stop().await;
}

/// Run swaks; returns (exit success, transcript).
async fn swaks(args: &[&str]) -> (bool, String) {
    let out = tokio::process::Command::new("swaks")
        .args(args)
        .output()
        .await
        .expect("swaks runs (apt-get install swaks)");
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

/// Message for swaks with `--no-data-fixup`: sent exactly as written, so the file carries the
/// dot-stuffing and the final dot itself.
const SWAKS_WIRE: &[u8] = b"Subject: swaks\r\n\r\nbody\r\n..stuffed\r\n.\r\n";
const SWAKS_MSG: &[u8] = b"Subject: swaks\r\n\r\nbody\r\n.stuffed\r\n";

#[tokio::test]
async fn swaks_plain_pipelining_starttls_auth_and_implicit_tls() {
    let mut r = start("\"10.0.0.0/8\"").await;
    let data = r.path("swaks.eml");
    std::fs::write(&data, SWAKS_WIRE).unwrap();
    let data = format!("@{}", data.display());
    let server = r.addr.to_string();
    let base = [
        "--server",
        server.as_str(),
        "--from",
        "s@x.test",
        "--to",
        "r@y.test",
        "--ehlo",
        "swaks.test",
        "--no-data-fixup",
        "--data",
        data.as_str(),
    ];

    // Not in client_networks, not authenticated.
    let (ok, text) = swaks(&[&base[..], &["--pipeline"]].concat()).await;
    assert!(!ok, "{text}");
    assert!(text.contains("<** 554 5.7.1 Relay access denied"), "{text}");

    // STARTTLS + AUTH PLAIN, pipelined.
    let auth = [
        "--auth",
        "PLAIN",
        "--auth-user",
        "bob",
        "--auth-password",
        "builder",
    ];
    let (ok, text) = swaks(&[&base[..], &["--tls", "--pipeline"], &auth[..]].concat()).await;
    assert!(ok, "{text}");
    assert!(text.contains("<-  220 2.0.0 Ready to start TLS"), "{text}");
    assert!(
        text.contains("<~  235 2.7.0 Authentication successful"),
        "{text}"
    );
    assert!(text.contains("<~  250 2.0.0 Queued"), "{text}");
    let d = r.next_delivery().await;
    assert_eq!(d.message, SWAKS_MSG);
    assert_eq!(d.rcpts, vec!["r@y.test"]);
    assert_eq!(d.auth_user.as_deref(), Some("bob"));
    assert!(
        d.received.starts_with(
            "Received: from swaks.test ([127.0.0.1])\r\n\tby mx.test with ESMTPSA id "
        )
    );

    // AUTH LOGIN with a wrong password.
    let bad = [
        "--auth",
        "LOGIN",
        "--auth-user",
        "bob",
        "--auth-password",
        "wrong",
    ];
    let (ok, text) = swaks(&[&base[..], &["--tls"], &bad[..]].concat()).await;
    assert!(!ok, "{text}");
    assert!(
        text.contains("<~* 535 5.7.8 Authentication credentials invalid"),
        "{text}"
    );

    // Implicit TLS listener.
    let tls_server = r.tls_addr.to_string();
    let mut implicit = base.to_vec();
    implicit[1] = tls_server.as_str();
    let (ok, text) = swaks(&[&implicit[..], &["--tls-on-connect"], &auth[..]].concat()).await;
    assert!(ok, "{text}");
    let d = r.next_delivery().await;
    assert_eq!(d.message, SWAKS_MSG);
    assert!(d.tls);
    r.stop().await;
}

/// A raw client on the real listener: pipelined BDAT with commands in between, one write.
#[tokio::test]
async fn raw_client_pipelines_bdat() {
    let mut r = start("\"127.0.0.0/8\"").await;
    let s = TcpStream::connect(r.addr).await.unwrap();
    let mut c = BufReader::new(s);
    let mut line = String::new();
    c.read_line(&mut line).await.unwrap();
    assert_eq!(line, "220 mx.test ESMTP cryptshare-gateway\r\n");
    c.get_mut()
        .write_all(
            b"EHLO raw.test\r\nMAIL FROM:<s@x.test>\r\nRCPT TO:<r@y.test>\r\n\
              BDAT 8\r\nhead\r\n\r\nNOOP\r\nBDAT 15 LAST\r\nDATA\r\n.\r\nQUIT\r\nQUIT\r\n",
        )
        .await
        .unwrap();
    let mut rest = String::new();
    tokio::io::AsyncReadExt::read_to_string(&mut c, &mut rest)
        .await
        .unwrap();
    assert_eq!(
        rest,
        "250-mx.test\r\n250-PIPELINING\r\n250-SIZE 104857600\r\n250-STARTTLS\r\n\
         250-ENHANCEDSTATUSCODES\r\n250-8BITMIME\r\n250-DSN\r\n250-SMTPUTF8\r\n250 CHUNKING\r\n\
         250 2.1.0 Sender OK\r\n250 2.1.5 Recipient OK\r\n250 2.0.0 8 octets received\r\n\
         250 2.0.0 OK\r\n250 2.0.0 Queued\r\n221 2.0.0 mx.test closing connection\r\n"
    );
    let d = r.next_delivery().await;
    assert_eq!(d.message, b"head\r\n\r\nDATA\r\n.\r\nQUIT\r\n");
    r.stop().await;
}

async fn greeting_of(addr: SocketAddr) -> (BufReader<TcpStream>, String) {
    let s = TcpStream::connect(addr).await.unwrap();
    let mut c = BufReader::new(s);
    let mut line = String::new();
    c.read_line(&mut line).await.unwrap();
    (c, line)
}

#[tokio::test]
async fn reload_applies_to_new_sessions_only() {
    let r = start("\"127.0.0.0/8\"").await;
    let (mut old, greeting) = greeting_of(r.addr).await;
    assert_eq!(greeting, "220 mx.test ESMTP cryptshare-gateway\r\n");
    let sub = tempfile::tempdir_in(r.dir.path()).unwrap();
    let cfg = write_config(
        sub.path(),
        "\"127.0.0.0/8\"",
        "mx2.test",
        "greeting = \"reloaded\"",
    );
    r.reloader.reload(&cfg).unwrap();
    let (_new, greeting) = greeting_of(r.addr).await;
    assert_eq!(greeting, "220 mx2.test reloaded\r\n");
    old.get_mut().write_all(b"QUIT\r\n").await.unwrap();
    let mut line = String::new();
    old.read_line(&mut line).await.unwrap();
    assert_eq!(line, "221 2.0.0 mx.test closing connection\r\n");
    drop(_new);
    r.stop().await;
}

#[tokio::test]
async fn shutdown_finishes_the_open_transaction_and_stops_accepting() {
    let mut r = start("\"127.0.0.0/8\"").await;
    let (mut c, greeting) = greeting_of(r.addr).await;
    assert_eq!(greeting, "220 mx.test ESMTP cryptshare-gateway\r\n");
    let (mut idle, _) = greeting_of(r.addr).await;
    let cmd = async |c: &mut BufReader<TcpStream>, s: &str| {
        c.get_mut().write_all(s.as_bytes()).await.unwrap();
        let mut all = String::new();
        loop {
            let mut line = String::new();
            c.read_line(&mut line).await.unwrap();
            all.push_str(&line);
            if line.as_bytes().get(3) != Some(&b'-') {
                return all;
            }
        }
    };
    cmd(&mut c, "HELO c.test\r\n").await;
    assert_eq!(
        cmd(&mut c, "MAIL FROM:<s@x.test>\r\n").await,
        "250 2.1.0 Sender OK\r\n"
    );
    let addr = r.addr;
    let _ = r.stop.take().unwrap().send(());
    // The idle session is told at once.
    let mut line = String::new();
    idle.read_line(&mut line).await.unwrap();
    assert_eq!(
        line,
        "421 4.3.2 mx.test Service shutting down, closing transmission channel\r\n"
    );
    assert_eq!(
        cmd(&mut c, "RCPT TO:<r@y.test>\r\n").await,
        "250 2.1.5 Recipient OK\r\n"
    );
    assert_eq!(
        cmd(&mut c, "DATA\r\n").await,
        "354 End data with <CR><LF>.<CR><LF>\r\n"
    );
    assert_eq!(cmd(&mut c, "late\r\n.\r\n").await, "250 2.0.0 Queued\r\n");
    let mut rest = String::new();
    tokio::io::AsyncReadExt::read_to_string(&mut c, &mut rest)
        .await
        .unwrap();
    assert_eq!(
        rest,
        "421 4.3.2 mx.test Service shutting down, closing transmission channel\r\n"
    );
    assert_eq!(r.next_delivery().await.message, b"late\r\n");
    r.task.await.unwrap();
    assert!(TcpStream::connect(addr).await.is_err());
}

#[tokio::test]
async fn connection_limit_holds_clients_in_the_backlog() {
    let r = start_with("\"127.0.0.0/8\"", "max_connections = 1").await;
    let (mut a, greeting) = greeting_of(r.addr).await;
    assert_eq!(greeting, "220 mx.test ESMTP cryptshare-gateway\r\n");
    // B's TCP handshake completes in the kernel backlog, but it is not accepted while A holds
    // the only slot: after a full round trip of A, still one handler has been created.
    let mut b = BufReader::new(TcpStream::connect(r.addr).await.unwrap());
    b.get_mut().write_all(b"NOOP\r\n").await.unwrap();
    a.get_mut().write_all(b"NOOP\r\n").await.unwrap();
    let mut line = String::new();
    a.read_line(&mut line).await.unwrap();
    assert_eq!(line, "250 2.0.0 OK\r\n");
    assert_eq!(
        r.factory.created.load(std::sync::atomic::Ordering::SeqCst),
        1
    );
    a.get_mut().write_all(b"QUIT\r\n").await.unwrap();
    let mut rest = String::new();
    tokio::io::AsyncReadExt::read_to_string(&mut a, &mut rest)
        .await
        .unwrap();
    assert_eq!(rest, "221 2.0.0 mx.test closing connection\r\n");
    // A's slot is free: B gets its greeting and the answer to what it sent meanwhile.
    let mut line = String::new();
    b.read_line(&mut line).await.unwrap();
    assert_eq!(line, "220 mx.test ESMTP cryptshare-gateway\r\n");
    line.clear();
    b.read_line(&mut line).await.unwrap();
    assert_eq!(line, "250 2.0.0 OK\r\n");
    assert_eq!(
        r.factory.created.load(std::sync::atomic::Ordering::SeqCst),
        2
    );
    drop(b);
    r.stop().await;
}

#[tokio::test]
async fn after_the_grace_period_in_flight_transactions_get_421() {
    let mut hanging = TestHandler::new();
    hanging.hang_in_data = true;
    let mut r = start_handler("\"127.0.0.0/8\"", "shutdown_grace = 0", hanging).await;
    let (mut c, _) = greeting_of(r.addr).await;
    c.get_mut()
        .write_all(b"HELO c.test\r\nMAIL FROM:<s@x.test>\r\nRCPT TO:<r@y.test>\r\nDATA\r\n")
        .await
        .unwrap();
    for expected in [
        "250 mx.test\r\n",
        "250 2.1.0 Sender OK\r\n",
        "250 2.1.5 Recipient OK\r\n",
        "354 End data with <CR><LF>.<CR><LF>\r\n",
    ] {
        let mut line = String::new();
        c.read_line(&mut line).await.unwrap();
        assert_eq!(line, expected);
    }
    c.get_mut().write_all(b"stuck\r\n.\r\n").await.unwrap();
    // The handler has the message and hangs (as a dead next hop would).
    assert_eq!(r.next_delivery().await.message, b"stuck\r\n");
    let _ = r.stop.take().unwrap().send(());
    let mut rest = String::new();
    tokio::io::AsyncReadExt::read_to_string(&mut c, &mut rest)
        .await
        .unwrap();
    assert_eq!(
        rest,
        "421 4.3.2 mx.test Service shutting down, closing transmission channel\r\n"
    );
    r.task.await.unwrap();
}
