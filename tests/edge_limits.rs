//! Issue 10 items 4–6 against the real binary on loopback: what clients outside
//! `client_networks` can cost. The gateway trusts only 127.0.0.1; outsiders connect from other
//! loopback addresses (127.0.0.4 and up, bound as source addresses). Every test is bounded in
//! connections and time and stops by itself.
//!
//! - Outsiders at MAIL FROM open no next-hop connection (the transaction opens at the first
//!   allowed RCPT).
//! - A flood of 500 connections from one outside address, then from many, leaves the insider its
//!   greeting within a second, and it relays.
//! - A client trickling a byte at a time is cut at `command_timeout`, an outsider's session at
//!   `outside_session_timeout`.
//! - AUTH: failures across sessions lock an address out (the right password included); 40
//!   concurrent AUTH attempts against an argon2 user with `m=64 MiB` keep the process's peak RSS
//!   under 300 MB; an ignored test measures the time of unknown and real users (medians).

mod e2e_support;
mod support;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use cryptshare_gateway_testkit::sink::{Script, Sink};
use e2e_support::*;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpSocket;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

const INSIDE: &str = "client_networks = [\"127.0.0.1/32\"]\n";
const DENIED: &str = "554 5.7.1 Relay access denied\r\n";
/// Bound of every single wait of these tests.
const STEP: Duration = Duration::from_secs(30);

fn outsider(n: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, n))
}

fn insider() -> IpAddr {
    IpAddr::V4(Ipv4Addr::LOCALHOST)
}

/// A raw SMTP client from a chosen source address; replies byte-exact.
struct Client {
    r: BufReader<OwnedReadHalf>,
    w: OwnedWriteHalf,
}

impl Client {
    /// Connect from `src` and read the first reply (greeting or refusal).
    async fn connect(src: IpAddr, port: u16) -> (Client, String) {
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
        let first = c.reply().await.expect("a first reply");
        (c, first)
    }

    /// The next reply, all lines; `None` at EOF.
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

    async fn eof(&mut self) -> bool {
        self.reply().await.is_none()
    }

    /// EHLO and check it is the gateway's.
    async fn ehlo(&mut self) {
        let r = self.cmd("EHLO client.test").await;
        assert!(r.starts_with(&format!("250-{HOSTNAME}\r\n")), "{r}");
    }

    /// A whole transaction from an insider; the final reply.
    async fn relay(&mut self, subject: &str) -> String {
        self.ehlo().await;
        assert_eq!(
            self.cmd("MAIL FROM:<in@example.org>").await,
            "250 2.1.0 Sender OK\r\n"
        );
        assert_eq!(
            self.cmd("RCPT TO:<rcpt@example.net>").await,
            "250 2.1.5 Recipient OK\r\n"
        );
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

fn greeting() -> String {
    format!("220 {HOSTNAME} ESMTP cryptshare-gateway\r\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outsiders_at_mail_from_open_no_next_hop_connection() {
    let sink = Sink::start(Script::default()).await.unwrap();
    let gw = start_gateway(
        &format!("{INSIDE}max_connections_per_ip = 200\n"),
        &sink.addr().to_string(),
        "",
    );
    // 100 outsiders, all at once: EHLO, MAIL (answered locally), a refused RCPT; all held open.
    let mut tasks = Vec::new();
    for i in 0..100u32 {
        let port = gw.port;
        tasks.push(tokio::spawn(async move {
            let (mut c, g) = Client::connect(outsider(4 + (i % 2) as u8), port).await;
            assert_eq!(g, greeting());
            c.ehlo().await;
            assert_eq!(
                c.cmd(&format!("MAIL FROM:<x{i}@example.com>")).await,
                "250 2.1.0 Sender OK\r\n"
            );
            assert_eq!(c.cmd("RCPT TO:<victim@example.net>").await, DENIED);
            c
        }));
    }
    let mut held = Vec::new();
    for t in tasks {
        held.push(t.await.unwrap());
    }
    // The one SMTP session that learned the next hop's extensions (pooled), nothing per
    // outsider. (The health probe's bare TCP connects every 10 s send no command.)
    let sessions = |sink: &Sink| {
        let mut ids: Vec<usize> = sink.commands().iter().map(|(id, _)| *id).collect();
        ids.dedup();
        ids.len()
    };
    assert_eq!(sessions(&sink), 1, "{:?}", sink.commands());
    assert!(
        sink.commands().iter().all(|(_, c)| !c.starts_with("MAIL")),
        "{:?}",
        sink.commands()
    );

    // An insider relays over the pooled connection.
    let (mut c, g) = Client::connect(insider(), gw.port).await;
    assert_eq!(g, greeting());
    let r = c.relay("inside").await;
    assert!(r.starts_with("250 2.0.0 OK, relayed"), "{r}");
    assert_eq!(sink.messages().len(), 1);
    assert_eq!(sessions(&sink), 1, "{:?}", sink.commands());
    drop(held);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_from_outside_leaves_the_insider_its_greeting() {
    let sink = Sink::start(Script::default()).await.unwrap();
    // 200 slots: outsiders may hold 75 % = 150 of them, at most 10 per address.
    let gw = start_gateway(
        &format!("{INSIDE}max_connections = 200\n"),
        &sink.addr().to_string(),
        "",
    );
    let per_ip =
        format!("421 4.7.0 {HOSTNAME} Too many connections from your address, try again later\r\n");
    let outside_full = format!("421 4.7.0 {HOSTNAME} Too many connections, try again later\r\n");

    // 500 connections from one outside address, all at once; the accepted ones stay open.
    let flood = |srcs: Vec<IpAddr>| {
        let port = gw.port;
        let tasks: Vec<_> = srcs
            .into_iter()
            .map(|src| tokio::spawn(async move { Client::connect(src, port).await }))
            .collect();
        async move {
            let mut held = Vec::new();
            let mut firsts = Vec::new();
            for t in tasks {
                let (mut c, first) = t.await.unwrap();
                if first.starts_with("421") {
                    assert!(c.eof().await, "refused connection closed");
                } else {
                    held.push(c);
                }
                firsts.push(first);
            }
            (held, firsts)
        }
    };
    let (held_one, firsts) = flood(vec![outsider(4); 500]).await;
    assert_eq!(firsts.iter().filter(|f| **f == greeting()).count(), 10);
    assert_eq!(firsts.iter().filter(|f| **f == per_ip).count(), 490);

    let inside = async {
        let t = Instant::now();
        let (mut c, g) = Client::connect(insider(), gw.port).await;
        let waited = t.elapsed();
        assert_eq!(g, greeting());
        assert!(waited < Duration::from_secs(1), "greeting after {waited:?}");
        let r = c.relay("after a flood").await;
        assert!(r.starts_with("250 2.0.0 OK, relayed"), "{r}");
    };
    inside.await;

    // 500 more from 100 outside addresses (5 each): together they reach the outside share.
    let many: Vec<IpAddr> = (0..500).map(|i| outsider(10 + (i % 100) as u8)).collect();
    let (held_many, firsts) = flood(many).await;
    let greeted = firsts.iter().filter(|f| **f == greeting()).count();
    assert_eq!(greeted + held_one.len(), 150, "outside share");
    assert_eq!(
        firsts.iter().filter(|f| **f == outside_full).count(),
        500 - greeted
    );
    // The reserve is there for the insider, during the flood.
    let t = Instant::now();
    let (mut c, g) = Client::connect(insider(), gw.port).await;
    assert_eq!(g, greeting());
    assert!(t.elapsed() < Duration::from_secs(1), "{:?}", t.elapsed());
    let r = c.relay("during a flood").await;
    assert!(r.starts_with("250 2.0.0 OK, relayed"), "{r}");
    assert_eq!(sink.messages().len(), 2);

    // Places are given back: once the flood ends an outsider is greeted again.
    drop(held_one);
    drop(held_many);
    let back = support::process::wait_until("an outsider greeted again", || {
        tokio::task::block_in_place(|| {
            tokio::runtime::Handle::current().block_on(async {
                let (_c, g) = Client::connect(outsider(4), gw.port).await;
                (g == greeting()).then_some(g)
            })
        })
    });
    assert_eq!(back, greeting());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trickling_clients_are_cut_at_the_command_and_outside_session_bounds() {
    let sink = Sink::start(Script::default()).await.unwrap();
    let gw = start_gateway(
        &format!("{INSIDE}command_timeout = 2\noutside_session_timeout = 3\n"),
        &sink.addr().to_string(),
        "",
    );
    // One byte every 200 ms never leaves the client silent for long, but the command line
    // is not complete within 2 s.
    let trickle = |src: IpAddr| {
        let port = gw.port;
        async move {
            let (mut c, g) = Client::connect(src, port).await;
            assert_eq!(g, greeting());
            let t = Instant::now();
            let line = b"NOOP trickle trickle trickle trickle trickle trickle\r\n";
            for b in line.iter() {
                if c.w.write_all(&[*b]).await.is_err() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
                if t.elapsed() > Duration::from_secs(4) {
                    break;
                }
            }
            let r = c.reply().await;
            (r, t.elapsed(), c)
        }
    };
    for src in [outsider(4), insider()] {
        let (r, took, mut c) = trickle(src).await;
        assert_eq!(
            r.as_deref(),
            Some(format!("421 4.4.2 {HOSTNAME} Command timeout, closing connection\r\n").as_str()),
            "{src}"
        );
        assert!(took < Duration::from_secs(6), "{took:?}");
        assert!(c.eof().await);
    }

    // Complete commands, each quick, from an outsider: the session ends at 3 s. The insider
    // doing the same stays.
    let (mut out, _) = Client::connect(outsider(4), gw.port).await;
    let (mut ins, _) = Client::connect(insider(), gw.port).await;
    let t = Instant::now();
    let end = loop {
        let r = out.cmd("NOOP").await;
        if r != "250 2.0.0 OK\r\n" {
            break r;
        }
        assert_eq!(ins.cmd("NOOP").await, "250 2.0.0 OK\r\n");
        assert!(t.elapsed() < Duration::from_secs(10), "no session bound");
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    assert_eq!(
        end,
        format!("421 4.4.2 {HOSTNAME} Session time limit exceeded, closing connection\r\n")
    );
    assert!(out.eof().await);
    assert_eq!(ins.cmd("NOOP").await, "250 2.0.0 OK\r\n");
}

fn b64(s: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(s)
}

fn plain(user: &str, pass: &str) -> String {
    format!("AUTH PLAIN {}", b64(format!("\0{user}\0{pass}").as_bytes()))
}

/// An argon2id hash with these parameters (memory in KiB).
fn argon2_hash(pass: &str, m_kib: u32, t: u32) -> String {
    use argon2::PasswordHasher;
    let params = argon2::Params::new(m_kib, t, 1, None).unwrap();
    let salt = argon2::password_hash::SaltString::encode_b64(b"edge-limits-salt").unwrap();
    argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params)
        .hash_password(pass.as_bytes(), &salt)
        .unwrap()
        .to_string()
}

/// A gateway with AUTH over plain connections and the users file `users`.
fn auth_gateway(server: &str, auth: &str, users: &str, sink: &Sink) -> Gateway {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("users");
    std::fs::write(&path, users).unwrap();
    tokio::task::block_in_place(|| {
        Gateway::start_in(
            dir,
            &format!("{INSIDE}{server}"),
            &sink.addr().to_string(),
            &format!(
                "[server.auth]\nusers_file = \"{}\"\nallow_plaintext = true\nfailure_delay = 0\n{auth}",
                path.display()
            ),
        )
    })
}

const AUTH_FAILED: &str = "535 5.7.8 Authentication credentials invalid\r\n";
const AUTH_OK: &str = "235 2.7.0 Authentication successful\r\n";
const LOCKED: &str =
    "454 4.7.0 Too many authentication failures from your address, try again later\r\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_failures_across_sessions_lock_the_address_out() {
    let sink = Sink::start(Script::default()).await.unwrap();
    let users = format!("alice:{}\n", bcrypt::hash("right", 4).unwrap());
    let gw = auth_gateway(
        "",
        "max_failures = 2\nlockout_failures = 3\nlockout_window = 600\n",
        &users,
        &sink,
    );
    // Session 1: two failures end it; session 2: the third failure.
    let (mut c, _) = Client::connect(outsider(4), gw.port).await;
    c.ehlo().await;
    assert_eq!(c.cmd(&plain("alice", "guess1")).await, AUTH_FAILED);
    assert_eq!(c.cmd(&plain("alice", "guess2")).await, AUTH_FAILED);
    assert_eq!(
        c.reply().await.as_deref(),
        Some(
            format!(
                "421 4.7.0 {HOSTNAME} Too many authentication failures, closing connection\r\n"
            )
            .as_str()
        )
    );
    assert!(c.eof().await);
    let (mut c, _) = Client::connect(outsider(4), gw.port).await;
    c.ehlo().await;
    assert_eq!(c.cmd(&plain("nobody", "guess3")).await, AUTH_FAILED);
    // Locked: the right password is refused too, in this session and the next one.
    assert_eq!(c.cmd(&plain("alice", "right")).await, LOCKED);
    let (mut c, _) = Client::connect(outsider(4), gw.port).await;
    c.ehlo().await;
    assert_eq!(c.cmd(&plain("alice", "right")).await, LOCKED);
    assert_eq!(c.cmd("AUTH LOGIN").await, LOCKED);
    assert_eq!(
        c.cmd("RCPT TO:<x@example.net>").await,
        "503 5.5.1 Need MAIL command first\r\n"
    );

    // Another outside address, and the insider, are not affected.
    for src in [outsider(5), insider()] {
        let (mut c, _) = Client::connect(src, gw.port).await;
        c.ehlo().await;
        assert_eq!(c.cmd(&plain("alice", "right")).await, AUTH_OK, "{src}");
    }
    // The insider's failures do not count (client_networks are exempt, as from Postfix's anvil).
    for _ in 0..2 {
        let (mut c, _) = Client::connect(insider(), gw.port).await;
        c.ehlo().await;
        assert_eq!(c.cmd(&plain("alice", "a")).await, AUTH_FAILED);
        assert_eq!(c.cmd(&plain("alice", "b")).await, AUTH_FAILED);
    }
    let (mut c, _) = Client::connect(insider(), gw.port).await;
    c.ehlo().await;
    assert_eq!(c.cmd(&plain("alice", "right")).await, AUTH_OK);
    assert!(gw.log().contains("address locked out"), "{}", gw.log());
}

/// Peak resident memory of a process (VmHWM), bytes.
fn peak_rss(pid: libc::pid_t) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM");
    kb * 1024
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forty_concurrent_auth_attempts_stay_under_300_mb() {
    let sink = Sink::start(Script::default()).await.unwrap();
    // 64 MiB per check, as in the report.
    let users = format!("alice:{}\n", argon2_hash("right", 65536, 1));
    let gw = auth_gateway(
        "max_connections_per_ip = 100\n",
        "max_failures = 5\nlockout_failures = 1000\n",
        &users,
        &sink,
    );
    let before = peak_rss(gw.pid());
    let mut tasks = Vec::new();
    for i in 0..40 {
        let port = gw.port;
        tasks.push(tokio::spawn(async move {
            let (mut c, _) = Client::connect(outsider(4), port).await;
            c.ehlo().await;
            // Half of them for a user that does not exist: the dummy hash costs the same.
            let user = if i % 2 == 0 { "alice" } else { "mallory" };
            c.cmd(&plain(user, &format!("guess{i}"))).await
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), AUTH_FAILED);
    }
    let peak = peak_rss(gw.pid());
    eprintln!(
        "peak RSS: {} MiB before, {} MiB after 40 concurrent AUTH attempts",
        before >> 20,
        peak >> 20
    );
    assert!(peak < 300 * 1024 * 1024, "peak RSS {} MiB", peak >> 20);
    // At least one check ran: it takes 64 MiB.
    assert!(
        peak > before + 60 * 1024 * 1024,
        "{} -> {}",
        before >> 20,
        peak >> 20
    );
}

/// Not a normal test (timings): `cargo test --test edge_limits -- --ignored --nocapture`.
/// Median time of an AUTH PLAIN failure for an unknown user and for a real user with a wrong
/// password, argon2 with the crate's default parameters (m=19456 KiB, t=2), and bcrypt cost 10.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "measurement, prints medians"]
async fn auth_timing_of_unknown_and_real_users() {
    let sink = Sink::start(Script::default()).await.unwrap();
    for (label, hash) in [
        ("argon2 m=19456 t=2", argon2_hash("right", 19456, 2)),
        ("bcrypt cost 10", bcrypt::hash("right", 10).unwrap()),
    ] {
        let gw = auth_gateway(
            "max_errors = 1000\n",
            "max_failures = 1000\nlockout_failures = 100000\n",
            &format!("alice:{hash}\n"),
            &sink,
        );
        let (mut c, _) = Client::connect(insider(), gw.port).await;
        c.ehlo().await;
        let mut known = Vec::new();
        let mut unknown = Vec::new();
        for i in 0..41 {
            // Interleaved, so that drift of the machine affects both alike.
            for (user, times) in [("alice", &mut known), ("nobody", &mut unknown)] {
                let t = Instant::now();
                assert_eq!(c.cmd(&plain(user, &format!("wrong{i}"))).await, AUTH_FAILED);
                times.push(t.elapsed());
            }
        }
        let median = |v: &mut Vec<Duration>| {
            v.sort();
            v[v.len() / 2]
        };
        let (k, u) = (median(&mut known), median(&mut unknown));
        let spread = |v: &Vec<Duration>| v[v.len() * 3 / 4] - v[v.len() / 4];
        println!(
            "{label}: wrong password for a real user: median {:.2} ms (IQR {:.2} ms); unknown user: median {:.2} ms (IQR {:.2} ms); difference {:+.2} ms",
            k.as_secs_f64() * 1e3,
            spread(&known).as_secs_f64() * 1e3,
            u.as_secs_f64() * 1e3,
            spread(&unknown).as_secs_f64() * 1e3,
            (u.as_secs_f64() - k.as_secs_f64()) * 1e3
        );
    }
}
