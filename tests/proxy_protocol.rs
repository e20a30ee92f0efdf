//! PROXY protocol v1/v2 (`server.proxy_protocol`, `server.proxy_networks`) against the real
//! binary on loopback: first our own client sending the header by hand, then a real HAProxy
//! (`send-proxy-v2` and `send-proxy`, with SMTP health checks) in front of the gateway, reached
//! by clients from other loopback source addresses (127.0.0.4 relays, 127.0.0.5 does not).
//!
//! The gateway trusts only 127.0.0.4 (`client_networks`); the proxy is 127.0.0.1
//! (`proxy_networks`), deliberately *not* a client network: anything relayed here was relayed
//! because the header named 127.0.0.4.

mod e2e_support;
mod support;

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use cryptshare_gateway_testkit::sink::{Script, Sink};
use e2e_support::*;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpSocket;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

const SERVER: &str = "client_networks = [\"127.0.0.4/32\"]\nproxy_protocol = true\n\
                      proxy_networks = [\"127.0.0.1/32\"]\nmax_connections_per_ip = 2\n";
const DENIED: &str = "554 5.7.1 Relay access denied\r\n";
const STEP: Duration = Duration::from_secs(30);
const XFORWARD: &str = "NAME ADDR PORT PROTO HELO IDENT SOURCE";

fn lo(n: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, n))
}

fn greeting() -> String {
    format!("220 {HOSTNAME} ESMTP cryptshare-gateway\r\n")
}

fn too_many() -> String {
    format!("421 4.7.0 {HOSTNAME} Too many connections from your address, try again later\r\n")
}

fn v1(src: &str, sport: u16) -> Vec<u8> {
    format!("PROXY TCP4 {src} 127.0.0.1 {sport} 25\r\n").into_bytes()
}

fn v2(cmd: u8, src: [u8; 4], sport: u16) -> Vec<u8> {
    let mut b = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    b.extend([0x20 | cmd, 0x11, 0, 12]);
    b.extend(src);
    b.extend([127, 0, 0, 1]);
    b.extend(sport.to_be_bytes());
    b.extend(25u16.to_be_bytes());
    b
}

/// A raw SMTP client from a chosen source address; replies byte-exact.
struct Client {
    r: BufReader<OwnedReadHalf>,
    w: OwnedWriteHalf,
}

impl Client {
    /// Connect from `src` to `port`, send `first` (a PROXY header, or anything), and read the
    /// first reply; `None` when the server closed without a word.
    async fn open(src: IpAddr, port: u16, first: &[u8]) -> (Client, Option<String>) {
        let sock = TcpSocket::new_v4().unwrap();
        sock.bind(SocketAddr::new(src, 0)).unwrap();
        let tcp = tokio::time::timeout(STEP, sock.connect(([127, 0, 0, 1], port).into()))
            .await
            .expect("connect in time")
            .expect("connect");
        let (r, w) = tcp.into_split();
        let mut c = Client {
            r: BufReader::new(r),
            w,
        };
        c.send(first).await;
        let first = c.reply().await;
        (c, first)
    }

    async fn reply(&mut self) -> Option<String> {
        let mut all = String::new();
        loop {
            let mut line = String::new();
            let n = tokio::time::timeout(STEP, self.r.read_line(&mut line))
                .await
                .expect("reply in time")
                .unwrap_or(0);
            if n == 0 {
                return (!all.is_empty()).then_some(all);
            }
            all.push_str(&line);
            if line.as_bytes().get(3) == Some(&b' ') {
                return Some(all);
            }
        }
    }

    async fn send(&mut self, bytes: &[u8]) {
        self.w.write_all(bytes).await.unwrap();
    }

    async fn cmd(&mut self, line: &str) -> String {
        self.send(format!("{line}\r\n").as_bytes()).await;
        self.reply().await.expect("a reply")
    }

    /// Nothing more arrives: the server closed. A close with unread input (ours) may reach us
    /// as a reset, which is a close too.
    async fn closed(&mut self) -> bool {
        let mut rest = Vec::new();
        let r = tokio::time::timeout(STEP, self.r.read_to_end(&mut rest))
            .await
            .expect("close in time");
        let ended = match r {
            Ok(_) => true,
            Err(e) => e.kind() == std::io::ErrorKind::ConnectionReset,
        };
        ended && rest.is_empty()
    }

    /// EHLO, MAIL, RCPT: the RCPT reply.
    async fn rcpt(&mut self) -> String {
        let r = self.cmd("EHLO client.test").await;
        assert!(r.starts_with(&format!("250-{HOSTNAME}\r\n")), "{r}");
        assert_eq!(
            self.cmd("MAIL FROM:<in@example.org>").await,
            "250 2.1.0 Sender OK\r\n"
        );
        self.cmd("RCPT TO:<rcpt@example.net>").await
    }

    /// A whole transaction (RCPT must be accepted): the final reply.
    async fn relay(&mut self, subject: &str) -> String {
        assert_eq!(self.rcpt().await, "250 2.1.5 Recipient OK\r\n");
        assert_eq!(
            self.cmd("DATA").await,
            "354 End data with <CR><LF>.<CR><LF>\r\n"
        );
        let msg = format!("Subject: {subject}\r\n\r\nhello\r\n.\r\n");
        self.send(msg.as_bytes()).await;
        self.reply().await.expect("final reply")
    }
}

fn start_gateway(server: &str, next_hop: &str, tail: &str) -> Gateway {
    tokio::task::block_in_place(|| Gateway::start(server, next_hop, tail))
}

async fn sink() -> Sink {
    let script = Script {
        xforward: Some(XFORWARD.into()),
        ..Script::default()
    };
    Sink::start(script).await.unwrap()
}

/// The message with `subject` as the next hop got it, and the XFORWARD line before its MAIL.
async fn delivered(sink: &Sink, n: usize, subject: &str) -> (String, String) {
    let msgs = sink.wait_messages(n).await;
    let m = msgs
        .iter()
        .find(|m| String::from_utf8_lossy(&m.data).contains(&format!("Subject: {subject}\r\n")))
        .unwrap_or_else(|| panic!("no message {subject}"));
    let xforward = sink
        .commands()
        .into_iter()
        .filter(|(c, l)| *c == m.connection && l.starts_with("XFORWARD"))
        .map(|(_, l)| l)
        .collect::<Vec<_>>()
        .join(" ");
    (String::from_utf8_lossy(&m.data).into_owned(), xforward)
}

fn assert_received_from(data: &str, ip: &str, proto: &str) {
    let want = format!("Received: from client.test ([{ip}])\r\n\tby {HOSTNAME} with {proto} id ");
    assert!(data.starts_with(&want), "want {want:?}, got {data:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_names_the_client_for_relay_received_xforward_and_logs() {
    let sink = sink().await;
    // Every client of this test stays connected to its end: room for them.
    let server = SERVER.replace("max_connections_per_ip = 2", "max_connections_per_ip = 10");
    let gw = start_gateway(&server, &sink.addr().to_string(), "");

    // v2 PROXY for 127.0.0.4, sent by the proxy 127.0.0.1: the client may relay.
    let (mut c, g) = Client::open(lo(1), gw.port, &v2(1, [127, 0, 0, 4], 40004)).await;
    assert_eq!(g.as_deref(), Some(greeting().as_str()));
    assert_eq!(c.relay("via v2").await[..4].to_string(), "250 ");
    let (data, xf) = delivered(&sink, 1, "via v2").await;
    assert_received_from(&data, "127.0.0.4", "ESMTP");
    assert!(xf.contains("ADDR=127.0.0.4"), "{xf}");
    assert!(xf.contains("PORT=40004"), "{xf}");

    // v1 for 127.0.0.4 as well.
    let (mut c, g) = Client::open(lo(1), gw.port, &v1("127.0.0.4", 40014)).await;
    assert_eq!(g.as_deref(), Some(greeting().as_str()));
    assert_eq!(c.relay("via v1").await[..4].to_string(), "250 ");
    let (data, xf) = delivered(&sink, 2, "via v1").await;
    assert_received_from(&data, "127.0.0.4", "ESMTP");
    assert!(
        xf.contains("ADDR=127.0.0.4") && xf.contains("PORT=40014"),
        "{xf}"
    );

    // The header names 127.0.0.5: not a client network.
    let (mut c, _) = Client::open(lo(1), gw.port, &v1("127.0.0.5", 40005)).await;
    assert_eq!(c.rcpt().await, DENIED);
    let (mut c, _) = Client::open(lo(1), gw.port, &v2(1, [127, 0, 0, 5], 40006)).await;
    assert_eq!(c.rcpt().await, DENIED);

    // v2 LOCAL (a health check) and v1 UNKNOWN: the proxy's own address, 127.0.0.1, which may
    // not relay — even though the LOCAL header's address block says 127.0.0.4.
    let (mut c, g) = Client::open(lo(1), gw.port, &v2(0, [127, 0, 0, 4], 1)).await;
    assert_eq!(g.as_deref(), Some(greeting().as_str()));
    assert_eq!(c.rcpt().await, DENIED);
    let (mut c, _) = Client::open(lo(1), gw.port, b"PROXY UNKNOWN\r\n").await;
    assert_eq!(c.rcpt().await, DENIED);

    // A peer outside proxy_networks is a direct client: greeted at once, its PROXY line is
    // an unknown command, and it is what it is (127.0.0.4 relays, 127.0.0.5 does not).
    let (mut c, g) = Client::open(lo(5), gw.port, b"").await;
    assert_eq!(g.as_deref(), Some(greeting().as_str()));
    assert_eq!(
        c.cmd("PROXY TCP4 127.0.0.4 127.0.0.1 1 25").await,
        "500 5.5.1 Command unrecognized\r\n"
    );
    assert_eq!(c.rcpt().await, DENIED);
    let (mut c, g) = Client::open(lo(4), gw.port, b"").await;
    assert_eq!(g.as_deref(), Some(greeting().as_str()));
    assert_eq!(c.relay("direct").await[..4].to_string(), "250 ");
    let (data, _) = delivered(&sink, 3, "direct").await;
    assert_received_from(&data, "127.0.0.4", "ESMTP");

    // The transaction log line names the client, not the proxy.
    let log = gw.log();
    let lines: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("transaction") && l.contains("outcome"))
        .collect();
    assert!(
        lines.iter().any(|l| l.contains("peer=127.0.0.4:40004")),
        "{log}"
    );
    assert!(
        !lines.iter().any(|l| l.contains("peer=127.0.0.1:")),
        "{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxy_connection_without_a_valid_header_is_closed_without_greeting() {
    let sink = sink().await;
    let gw = start_gateway(SERVER, &sink.addr().to_string(), "");
    let long_v1 = [&b"PROXY UNKNOWN "[..], &[b'x'; 120]].concat();
    for (what, first) in [
        ("SMTP instead of a header", &b"EHLO client.test\r\n"[..]),
        ("garbled v1", b"PROXY TCP4 127.0.0.4 127.0.0.1 x 25\r\n"),
        ("v1 without CRLF, too long", &long_v1[..]),
        // The proxy stops half-way: closed when the header timeout (5 s) is over.
        ("truncated v2", &v2(1, [127, 0, 0, 4], 1)[..20]),
    ] {
        let (mut c, first) = Client::open(lo(1), gw.port, first).await;
        assert_eq!(first, None, "{what}: no greeting, no reply");
        assert!(c.closed().await, "{what}");
    }
    let log = gw.log();
    assert_eq!(
        log.matches("connection from a proxy closed: no valid PROXY header")
            .count(),
        4,
        "{log}"
    );
    assert!(
        log.contains("error=no PROXY header (connection starts with \"EHLO cli\")"),
        "{log}"
    );
    assert!(log.contains("error=garbled PROXY v1 header: "), "{log}");
    assert!(
        log.contains("error=PROXY v1 header longer than 107 octets"),
        "{log}"
    );
    assert!(
        log.contains("error=PROXY header not complete within 5s"),
        "{log}"
    );
    // The gateway still serves the proxy's next, valid connection.
    let (mut c, g) = Client::open(lo(1), gw.port, &v2(1, [127, 0, 0, 4], 2)).await;
    assert_eq!(g.as_deref(), Some(greeting().as_str()));
    assert_eq!(c.rcpt().await, "250 2.1.5 Recipient OK\r\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_ip_limit_counts_the_client_named_in_the_header() {
    let sink = sink().await;
    let gw = start_gateway(SERVER, &sink.addr().to_string(), "");
    // Two held connections of 127.0.0.5 through the proxy: its limit.
    let mut held = Vec::new();
    for i in 0..2 {
        let (c, g) = Client::open(lo(1), gw.port, &v1("127.0.0.5", 41000 + i)).await;
        assert_eq!(g.as_deref(), Some(greeting().as_str()));
        held.push(c);
    }
    let (mut c, g) = Client::open(lo(1), gw.port, &v1("127.0.0.5", 41009)).await;
    assert_eq!(g.as_deref(), Some(too_many().as_str()));
    assert!(c.closed().await);
    // The proxy itself (already 3 connections from 127.0.0.1) is not what is counted:
    // 127.0.0.6 through the same proxy is greeted, twice.
    for i in 0..2 {
        let (c, g) = Client::open(lo(1), gw.port, &v1("127.0.0.6", 42000 + i)).await;
        assert_eq!(g.as_deref(), Some(greeting().as_str()));
        held.push(c);
    }
    // One of 127.0.0.5's ends: its place is free again.
    let mut first = held.remove(0);
    assert_eq!(first.cmd("QUIT").await[..4].to_string(), "221 ");
    assert!(first.closed().await);
    // (The gateway frees the place when the session task ends, just after the close: poll.)
    let deadline = tokio::time::Instant::now() + STEP;
    loop {
        let (_c, g) = Client::open(lo(1), gw.port, &v1("127.0.0.5", 41010)).await;
        if g.as_deref() == Some(greeting().as_str()) {
            break;
        }
        assert_eq!(g.as_deref(), Some(too_many().as_str()));
        assert!(tokio::time::Instant::now() < deadline, "place never freed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// HAProxy with two frontends in front of the gateway, `send-proxy-v2` and `send-proxy`, and
/// SMTP health checks (`option smtpchk`, which with `send-proxy-v2` arrive as LOCAL).
struct Haproxy {
    child: Child,
    v2: u16,
    v1: u16,
    stats: std::path::PathBuf,
}

impl Haproxy {
    fn start(dir: &Path, gateway: u16) -> Haproxy {
        let (v2, v1) = (free_port(), free_port());
        let stats = dir.join("haproxy.sock");
        let cfg = dir.join("haproxy.cfg");
        std::fs::write(
            &cfg,
            format!(
                "global\n  stats socket {stats} mode 600 level admin\n\
                 defaults\n  mode tcp\n  timeout connect 5s\n  timeout client 60s\n  timeout server 60s\n\
                 frontend smtp_v2\n  bind 127.0.0.1:{v2}\n  default_backend gw_v2\n\
                 frontend smtp_v1\n  bind 127.0.0.1:{v1}\n  default_backend gw_v1\n\
                 backend gw_v2\n  option smtpchk EHLO haproxy.test\n\
                 \x20 server gw 127.0.0.1:{gateway} send-proxy-v2 check inter 300\n\
                 backend gw_v1\n  server gw 127.0.0.1:{gateway} send-proxy\n",
                stats = stats.display()
            ),
        )
        .unwrap();
        let log = dir.join("haproxy.log");
        let out = std::fs::File::create(&log).unwrap();
        let mut child = Command::new(tool("haproxy"))
            .arg("-db")
            .arg("-f")
            .arg(&cfg)
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .expect("start haproxy (apt-get install haproxy)");
        wait_for_port(v2, &mut child, "haproxy", Some(&log));
        wait_for_port(v1, &mut child, "haproxy", Some(&log));
        Haproxy {
            child,
            v2,
            v1,
            stats,
        }
    }

    /// `show stat` from the stats socket: `(status, check_status)` of `backend`'s server.
    fn server_state(&self, backend: &str) -> Option<(String, String)> {
        let mut s = std::os::unix::net::UnixStream::connect(&self.stats).ok()?;
        s.write_all(b"show stat\n").ok()?;
        let mut out = String::new();
        s.read_to_string(&mut out).ok()?;
        let mut lines = out.lines();
        let head: Vec<&str> = lines.next()?.trim_start_matches("# ").split(',').collect();
        let col = |name: &str| head.iter().position(|h| *h == name);
        let (status, check) = (col("status")?, col("check_status")?);
        lines
            .map(|l| l.split(',').collect::<Vec<_>>())
            .find_map(|f| {
                (f.first() == Some(&backend) && f.get(1) == Some(&"gw"))
                    .then(|| (f[status].to_string(), f[check].to_string()))
            })
    }
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn haproxy_send_proxy_v2_and_v1_carry_the_real_client() {
    let sink = sink().await;
    let gw = start_gateway(SERVER, &sink.addr().to_string(), "");
    let hp = tokio::task::block_in_place(|| Haproxy::start(gw.dir.path(), gw.port));

    // 127.0.0.4 through HAProxy (v2, then v1) relays; the next hop sees 127.0.0.4.
    for (port, subject, n) in [(hp.v2, "haproxy v2", 1), (hp.v1, "haproxy v1", 2)] {
        let (mut c, g) = Client::open(lo(4), port, b"").await;
        assert_eq!(g.as_deref(), Some(greeting().as_str()), "{subject}");
        assert_eq!(c.relay(subject).await[..4].to_string(), "250 ", "{subject}");
        let (data, xf) = delivered(&sink, n, subject).await;
        assert_received_from(&data, "127.0.0.4", "ESMTP");
        assert!(xf.contains("ADDR=127.0.0.4"), "{subject}: {xf}");
    }
    // 127.0.0.5 through HAProxy: relay denied at RCPT.
    for port in [hp.v2, hp.v1] {
        let (mut c, _) = Client::open(lo(5), port, b"").await;
        assert_eq!(c.rcpt().await, DENIED);
    }
    // Directly from the proxy's address, without a header: closed, no greeting.
    let (mut c, g) = Client::open(lo(1), gw.port, b"").await;
    assert_eq!(g, None);
    assert!(c.closed().await);

    // Per-IP limit through HAProxy: 127.0.0.6's third connection is refused (an address not
    // used above, whose closed connections the gateway might still be counting), 127.0.0.4 is
    // inside client_networks and not limited.
    let mut held = Vec::new();
    for _ in 0..2 {
        let (c, g) = Client::open(lo(6), hp.v2, b"").await;
        assert_eq!(g.as_deref(), Some(greeting().as_str()));
        held.push(c);
    }
    let (mut c, g) = Client::open(lo(6), hp.v2, b"").await;
    assert_eq!(g.as_deref(), Some(too_many().as_str()));
    assert!(c.closed().await);
    for _ in 0..3 {
        let (c, g) = Client::open(lo(4), hp.v2, b"").await;
        assert_eq!(g.as_deref(), Some(greeting().as_str()));
        held.push(c);
    }

    // HAProxy's SMTP health checks (LOCAL headers) pass: the server is UP with L7OK.
    let state = tokio::task::block_in_place(|| {
        wait_until("haproxy's health check of the gateway", || {
            hp.server_state("gw_v2")
                .filter(|(_, check)| check != "INI" && !check.is_empty())
        })
    });
    assert_eq!(state, ("UP".to_string(), "L7OK".to_string()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn haproxy_then_starttls() {
    let sink = sink().await;
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = write_cert(dir.path());
    let gw = tokio::task::block_in_place(|| {
        Gateway::start_in(
            dir,
            SERVER,
            &sink.addr().to_string(),
            &tls_section(&cert, &key),
        )
    });
    let hp = tokio::task::block_in_place(|| Haproxy::start(gw.dir.path(), gw.port));
    // swaks from 127.0.0.4 through HAProxy (v2), upgrading with STARTTLS after the header.
    let out = tokio::task::block_in_place(|| {
        run(
            Command::new(tool("swaks"))
                .args(["--server", &format!("127.0.0.1:{}", hp.v2)])
                .args(["--local-interface", "127.0.0.4"])
                .args(["--tls", "--ehlo", "client.test"])
                .args(["--from", "in@example.org", "--to", "rcpt@example.net"])
                .args(["--header", "Subject: haproxy starttls"])
                .args(["--timeout", "30"]),
            "swaks",
        )
    });
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("<~  250 2.0.0 OK"), "{text}");
    let (data, xf) = delivered(&sink, 1, "haproxy starttls").await;
    assert_received_from(&data, "127.0.0.4", "ESMTPS");
    assert!(xf.contains("ADDR=127.0.0.4"), "{xf}");
}
