//! The relay against Postfix `smtp-sink` as a real next hop (`apt-get install postfix`).
//!
//! smtp-sink's dump file (`-d`) holds its own trace headers (`X-Mail-Args:`, `X-Rcpt-Args:`, a
//! three-line `Received:`), then the message as received after dot-unstuffing with each CRLF
//! written as LF, then one empty line. The comparison below is byte-exact under exactly that
//! transformation. smtp-sink 3.7 does not offer CHUNKING, so this path is DATA; BDAT is covered
//! against the test sink.

use std::path::PathBuf;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use cryptshare_gateway::config::Config;
use cryptshare_gateway::smtp::relay::Relay;
use cryptshare_gateway::smtp::{Body, MailFrom, Notify, RcptTo};

struct SmtpSink {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl SmtpSink {
    async fn start(extra: &[&str]) -> SmtpSink {
        let dir = tempfile::tempdir().unwrap();
        // smtp-sink drops to `nobody` before writing dumps.
        std::fs::set_permissions(
            dir.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o777),
        )
        .unwrap();
        // The port is picked as free and released for smtp-sink, so another process may take it
        // in between: then smtp-sink cannot listen, and the test tries another port. Its own name
        // in the greeting tells this smtp-sink from any other listener.
        for _attempt in 0..5 {
            let port = {
                let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
                l.local_addr().unwrap().port()
            };
            let name = format!("sink-{}-{port}", std::process::id());
            let mut child = Command::new("smtp-sink")
                .args(["-u", "nobody", "-h", &name, "-d"])
                .arg(format!("{}/msg.", dir.path().display()))
                .args(extra)
                .arg(format!("127.0.0.1:{port}"))
                .arg("64")
                .spawn()
                .expect("smtp-sink (apt-get install postfix)");
            let deadline = Instant::now() + Duration::from_secs(20);
            let ours = loop {
                if let Some(greeting) = greeting(port).await {
                    break greeting.starts_with(&format!("220 {name} "));
                }
                if let Ok(Some(_)) = child.try_wait() {
                    break false;
                }
                assert!(Instant::now() < deadline, "smtp-sink did not start");
                tokio::task::yield_now().await;
            };
            if ours {
                return SmtpSink { child, port, dir };
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!("smtp-sink found no free port in 5 attempts");
    }

    fn relay(&self) -> (Relay, tempfile::TempDir) {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("gw.toml");
        std::fs::write(
            &p,
            format!(
                "[server]\nhostname = \"gw.test\"\n[relay]\nnext_hop = \"127.0.0.1:{}\"\ntls = \"off\"\ncommand_timeout = 30\n",
                self.port
            ),
        )
        .unwrap();
        let cfg = Config::load_with_env(&p, []).unwrap();
        (Relay::new(&cfg).unwrap(), d)
    }

    fn dumps(&self) -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = std::fs::read_dir(self.dir.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        v.sort();
        v
    }
}

/// Split a dump into (smtp-sink trace headers, message part).
/// The first line a listener on `port` sends, or `None` when nothing (else) listens there yet.
async fn greeting(port: u16) -> Option<String> {
    use tokio::io::AsyncBufReadExt;
    let s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .ok()?;
    // The port is from the ephemeral range: with nobody listening yet, a connect can succeed as
    // a TCP self-connect (source port = destination port), which greets nobody.
    if s.local_addr().ok() == s.peer_addr().ok() {
        return None;
    }
    let mut line = String::new();
    tokio::time::timeout(
        Duration::from_secs(10),
        tokio::io::BufReader::new(s).read_line(&mut line),
    )
    .await
    .ok()?
    .ok()?;
    Some(line)
}

fn split_dump(dump: &[u8]) -> (String, Vec<u8>) {
    let text = String::from_utf8_lossy(dump);
    // The trace ends with the 3-line Received header: "Received: …\n\tby …\n\t<date>\n".
    let start = text.find("Received: from ").expect("trace Received header");
    let mut end = start;
    for _ in 0..3 {
        end += text[end..].find('\n').unwrap() + 1;
    }
    (text[..end].to_string(), dump[end..].to_vec())
}

fn as_dumped(message: &[u8]) -> Vec<u8> {
    let mut v = String::from_utf8(message.to_vec())
        .unwrap()
        .replace("\r\n", "\n")
        .into_bytes();
    v.push(b'\n');
    v
}

fn find_dump(sink: &SmtpSink, marker: &str) -> Vec<u8> {
    for p in sink.dumps() {
        let b = std::fs::read(&p).unwrap();
        if String::from_utf8_lossy(&b).contains(marker) {
            return b;
        }
    }
    panic!("no dump contains {marker:?} in {:?}", sink.dumps());
}

fn rcpt(a: &str) -> RcptTo {
    RcptTo {
        address: a.into(),
        ..RcptTo::default()
    }
}

#[tokio::test]
async fn smtp_sink_stores_exactly_what_was_relayed_via_data() {
    let sink = SmtpSink::start(&[]).await;
    let (relay, _d) = sink.relay();
    let received = b"Received: from client.test ([127.0.0.1]) by gw.test with ESMTP id Q1;\r\n\tFri, 27 Nov 2026 10:00:00 +0000\r\n";
    let mut big = String::new();
    for i in 0..20_000 {
        big.push_str(&format!(".{i} dotted line\r\n..two\r\nplain {i}\r\n.\r\n"));
    }
    let messages: Vec<(String, Vec<u8>)> = vec![
        ("m1".into(), b"Subject: m1\r\n\r\nHello\r\n".to_vec()),
        (
            "m2".into(),
            b"Subject: m2\r\n\r\n.leading\r\n..double\r\n.\r\nafter a lone dot\r\n".to_vec(),
        ),
        (
            "m3".into(),
            format!("Subject: m3\r\n\r\n{big}").into_bytes(),
        ),
    ];
    for (subject, msg) in &messages {
        let mut tx = relay.begin();
        let from = MailFrom {
            address: "sender@example.org".into(),
            body: Some(Body::EightBitMime),
            envid: Some(format!("env {subject}")),
            ..MailFrom::default()
        };
        assert_eq!(tx.mail_from(&from).await.code, 250);
        let to = RcptTo {
            address: "rcpt@example.net".into(),
            notify: Notify {
                success: true,
                failure: true,
                ..Notify::default()
            },
            orcpt: Some("rcpt@example.net".into()),
        };
        assert_eq!(tx.rcpt_to(&to).await.code, 250);
        assert_eq!(tx.rcpt_to(&rcpt("second@example.net")).await.code, 250);
        let r = tx.data(&[received, msg]).await;
        assert_eq!(r.to_bytes(), b"250 2.0.0 OK, relayed (Ok)\r\n");
        let dump = find_dump(&sink, &format!("Subject: {subject}\n"));
        let (trace, body) = split_dump(&dump);
        assert!(
            trace.contains(&format!(
                "X-Mail-Args: <sender@example.org> BODY=8BITMIME ENVID=env+20{subject}\n"
            )),
            "{trace}"
        );
        assert!(trace.contains(
            "X-Rcpt-Args: <rcpt@example.net> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;rcpt@example.net\nX-Rcpt-Args: <second@example.net>\n"
        ), "{trace}");
        assert!(trace.contains("X-Helo-Args: gw.test\n"), "{trace}");
        let want = as_dumped(&[received.as_slice(), msg].concat());
        assert_eq!(body.len(), want.len(), "{subject}");
        assert!(body == want, "{subject}: content differs");
    }
    // All three over one pooled connection.
    assert_eq!(relay.idle_connections(), 1);
}

#[tokio::test]
async fn smtp_sink_soft_reject_of_the_data_is_passed_through() {
    let sink = SmtpSink::start(&["-r", "."]).await;
    let (relay, _d) = sink.relay();
    let mut tx = relay.begin();
    assert_eq!(
        tx.mail_from(&MailFrom {
            address: "a@example.org".into(),
            ..MailFrom::default()
        })
        .await
        .code,
        250
    );
    assert_eq!(tx.rcpt_to(&rcpt("b@example.net")).await.code, 250);
    assert_eq!(
        tx.data(&[b"Subject: x\r\n\r\nx\r\n"]).await.to_bytes(),
        b"450 4.3.0 Error: command failed\r\n"
    );
}

#[tokio::test]
async fn smtp_sink_hard_reject_of_recipients_is_passed_through() {
    let sink = SmtpSink::start(&["-f", "RCPT"]).await;
    let (relay, _d) = sink.relay();
    let mut tx = relay.begin();
    assert_eq!(
        tx.mail_from(&MailFrom::default()).await.to_bytes(),
        b"250 2.1.0 Sender OK\r\n"
    );
    assert_eq!(
        tx.rcpt_to(&rcpt("b@example.net")).await.to_bytes(),
        b"500 5.3.0 Error: command failed\r\n"
    );
}
