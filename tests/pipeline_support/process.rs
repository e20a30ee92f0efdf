//! The real `cryptshare-gateway serve` process for the crash and chaos tests: started on a
//! configuration, ready when it logs its SMTP listener; and one SMTP transaction that may die
//! half-way.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::process::Stdio;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

/// Upper bound for any wait, so that a broken gateway fails the test instead of hanging it.
pub const LIMIT: std::time::Duration = std::time::Duration::from_secs(120);

pub struct Gw {
    pub child: tokio::process::Child,
    pub smtp: SocketAddr,
}

/// Start `cryptshare-gateway serve` and wait for its "SMTP listener ready" log line.
pub async fn spawn_gateway(config: &std::path::Path) -> Gw {
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
    // Keep draining the log so that the process never blocks on a full pipe; it goes to
    // `gateway.log` beside the configuration (every run appends), for a failing test to show.
    let log_path = config.with_file_name("gateway.log");
    tokio::spawn(async move {
        use std::io::Write;
        let mut log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .ok();
        while let Some(line) = rx.recv().await {
            if let Some(f) = log.as_mut() {
                let _ = writeln!(f, "{line}");
            }
        }
    });
    Gw { child, smtp }
}

/// One transaction that may die half-way: `Err` when the connection closes first.
pub async fn try_send(
    addr: SocketAddr,
    from: &str,
    rcpt: &str,
    msg: &[u8],
) -> Result<String, String> {
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
