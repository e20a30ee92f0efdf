//! Acceptance tests of the operations issue, run against the real `cryptshare-gateway serve`
//! binary the way an operator runs it: a config file, signals, `/metrics`, sd_notify, the log.
//!
//! Needs python3 with `prometheus-client` (`pip install prometheus-client`) for the scrape parser.

mod ops_e2e_support;
mod support;

use std::io::ErrorKind;
use std::net::TcpStream;
use std::os::unix::net::UnixDatagram;

use cryptshare_gateway::ops::AuditRecord;
use ops_e2e_support::*;
use sha2::{Digest, Sha256};

const FROM: &str = "alice@example.org";
const TO: &str = "bob@partner.example";

fn assert_converted(gw: &Gateway, id: &str) {
    let m = delivered(gw, id);
    assert!(
        contains(&m, NOTICE),
        "{id} was not converted:\n{}",
        String::from_utf8_lossy(&m)
    );
    assert!(!contains(&m, b"Content-Disposition: attachment"), "{id}");
}

fn assert_passed(gw: &Gateway, id: &str) {
    let m = delivered(gw, id);
    assert!(!contains(&m, NOTICE), "{id} was converted");
    let body = message(id, ATTACHMENT_SIZE);
    assert!(m.ends_with(&body), "{id} was changed");
}

fn assert_relayed(reply: (u16, String)) {
    assert_eq!(reply.0, 250, "{}", reply.1);
    assert!(
        reply.1.starts_with("250 2.0.0 OK, relayed (maildir "),
        "{}",
        reply.1
    );
}

fn send(gw: &Gateway, id: &str) -> (u16, String) {
    let mut c = Smtp::connect(gw.smtp);
    c.open_transaction(FROM, TO);
    let r = c.data(&message(id, ATTACHMENT_SIZE));
    c.expect("QUIT", 221);
    r
}

/// The policy in force when the message's data ends decides; an SMTP session open across the
/// reload continues, and its transaction is processed with the new rules.
#[test]
fn sighup_new_policy_applies_to_the_next_message_while_a_session_stays_open() {
    let mut gw = Gateway::start(HUGE, LogFormat::Human);
    assert_relayed(send(&gw, "before"));
    assert_passed(&gw, "before");

    // A session in the middle of a transaction across the reload.
    let mut open = Smtp::connect(gw.smtp);
    open.open_transaction(FROM, TO);

    write_config(gw.dir.path(), SMALL, "");
    gw.signal(libc::SIGHUP);
    gw.wait_log("configuration reloaded");

    // The open session is not dropped: its transaction completes, under the new policy because
    // the pipeline reads the rules at the end of DATA.
    assert_relayed(open.data(&message("open", ATTACHMENT_SIZE)));
    assert_converted(&gw, "open");
    // A further transaction on the same session, and one on a new connection: converted.
    open.open_transaction(FROM, TO);
    assert_relayed(open.data(&message("same-session", ATTACHMENT_SIZE)));
    assert_converted(&gw, "same-session");
    open.expect("QUIT", 221);
    assert_relayed(send(&gw, "after"));
    assert_converted(&gw, "after");
    assert_eq!(gw.outbox_messages().len(), 4);

    let samples = gw.scrape();
    let reload = |r| value(&samples, "csgw_config_reloads_total", &[("result", r)]);
    assert_eq!((reload("ok"), reload("failed")), (1.0, 0.0));

    gw.signal(libc::SIGTERM);
    assert_eq!(gw.wait_exit().code(), Some(0), "{}", gw.log());
    // Only the policy changed: nothing waits for a restart.
    assert!(!gw.log().contains("next restart"), "{}", gw.log());
}

#[test]
fn sighup_with_a_broken_config_keeps_the_old_one() {
    let mut gw = Gateway::start(SMALL, LogFormat::Json);
    // Would let everything pass, but the unknown key makes the whole file invalid.
    write_config(gw.dir.path(), HUGE, "thresold_typo = 5\n");
    gw.signal(libc::SIGHUP);
    let line = gw.wait_log("configuration reload refused");
    let v: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(v["level"], "ERROR", "{line}");
    let msg = v["message"].as_str().unwrap();
    assert!(
        msg.starts_with("configuration reload refused, keeping the old configuration: "),
        "{msg}"
    );
    assert!(msg.contains("thresold_typo"), "the key is not named: {msg}");

    // The old policy (small threshold) is still in force.
    assert_relayed(send(&gw, "still-old"));
    assert_converted(&gw, "still-old");

    let samples = gw.scrape();
    let reload = |s: &[Sample], r| value(s, "csgw_config_reloads_total", &[("result", r)]);
    assert_eq!(reload(&samples, "failed"), 1.0);
    assert_eq!(reload(&samples, "ok"), 0.0);

    // Fixed file, second SIGHUP: accepted, and the new policy applies.
    write_config(gw.dir.path(), HUGE, "");
    gw.signal(libc::SIGHUP);
    gw.wait_log("configuration reloaded");
    assert_relayed(send(&gw, "fixed"));
    assert_passed(&gw, "fixed");
    let samples = gw.scrape();
    assert_eq!(reload(&samples, "failed"), 1.0);
    assert_eq!(reload(&samples, "ok"), 1.0);
}

#[test]
fn sigterm_lets_an_open_transaction_finish_then_exits_0() {
    let mut gw = Gateway::start(SMALL, LogFormat::Human);
    wait_ready(&gw);
    let msg = message("draining", ATTACHMENT_SIZE);
    let (head, tail) = msg.split_at(msg.len() / 2);

    let mut busy = Smtp::connect(gw.smtp);
    busy.open_transaction(FROM, TO);
    busy.expect("DATA", 354);
    busy.send(head);
    let mut idle = Smtp::connect(gw.smtp);
    idle.expect("EHLO idle.ops.test", 250);

    gw.signal(libc::SIGTERM);
    gw.wait_log("shutdown requested signal=\"SIGTERM\"");
    gw.wait_log("shutting down: no new connections, finishing open transactions");

    // Listeners are closed: new clients are refused; load balancers see 503.
    let err = TcpStream::connect(gw.smtp).expect_err("the SMTP listener is closed");
    assert_eq!(err.kind(), ErrorKind::ConnectionRefused, "{err}");
    assert_eq!(
        gw.http_get("/readyz"),
        (503, "not ready: shutting down\n".to_string())
    );
    // An idle session is closed at once.
    let bye = format!("421 4.3.2 {HOSTNAME} Service shutting down, closing transmission channel");
    assert_eq!(idle.reply(), (421, bye.clone()));
    assert!(idle.closed());

    // The open transaction completes normally, then its session is closed too.
    busy.send(tail);
    busy.send(b".\r\n");
    assert_relayed(busy.reply());
    assert_eq!(busy.reply(), (421, bye));
    assert!(busy.closed());
    assert_converted(&gw, "draining");

    let status = gw.wait_exit();
    assert_eq!(status.code(), Some(0), "{}", gw.log());
    gw.wait_log("stopped");
    assert!(!gw.log().contains(CLIENT_ID), "the client id is in the log");
}

/// Session limits are taken when a connection is accepted: a reload lowering
/// `server.max_message_size` applies to new connections, an open session keeps its limit.
#[test]
fn sighup_limits_apply_to_new_connections_open_sessions_keep_theirs() {
    let mut gw = Gateway::start(HUGE, LogFormat::Json);
    let mut open = Smtp::connect(gw.smtp);

    write_config_with(gw.dir.path(), HUGE, "max_message_size = 10000\n", "");
    gw.signal(libc::SIGHUP);
    gw.wait_log("configuration reloaded");

    // Connected before the reload: the old limit (100 MiB), even for an EHLO sent after it.
    let ehlo = open.expect("EHLO client.ops.test", 250);
    assert!(ehlo.contains("\n250-SIZE 104857600\n"), "{ehlo}");
    open.expect(&format!("MAIL FROM:<{FROM}>"), 250);
    open.expect(&format!("RCPT TO:<{TO}>"), 250);
    assert_relayed(open.data(&message("old-limit", ATTACHMENT_SIZE)));
    open.expect("QUIT", 221);
    assert_passed(&gw, "old-limit");

    let mut new = Smtp::connect(gw.smtp);
    let ehlo = new.expect("EHLO client.ops.test", 250);
    assert!(ehlo.contains("\n250-SIZE 10000\n"), "{ehlo}");
    new.expect(&format!("MAIL FROM:<{FROM}>"), 250);
    new.expect(&format!("RCPT TO:<{TO}>"), 250);
    let (code, text) = new.data(&message("new-limit", ATTACHMENT_SIZE));
    assert_eq!(
        (code, text.as_str()),
        (
            552,
            "552 5.3.4 Message size exceeds fixed maximum message size"
        )
    );
    new.expect("QUIT", 221);
    assert_eq!(gw.outbox_messages().len(), 1);
}

/// A transaction still open when `server.shutdown_grace` runs out gets `421` in the middle of
/// DATA; nothing is relayed (the client keeps the message) and the gateway still exits 0.
#[test]
fn sigterm_grace_over_answers_421_mid_data() {
    let mut gw = Gateway::start_with(SMALL, LogFormat::Json, &[], "shutdown_grace = 1\n");
    let msg = message("too-slow", ATTACHMENT_SIZE);
    let mut c = Smtp::connect(gw.smtp);
    c.open_transaction(FROM, TO);
    c.expect("DATA", 354);
    c.send(&msg[..msg.len() / 2]);

    gw.signal(libc::SIGTERM);
    gw.wait_log("shutdown grace period over: closing remaining sessions");
    assert_eq!(
        c.reply(),
        (
            421,
            format!("421 4.3.2 {HOSTNAME} Service shutting down, closing transmission channel")
        )
    );
    assert!(c.closed());
    assert_eq!(gw.wait_exit().code(), Some(0), "{}", gw.log());
    assert!(gw.outbox_messages().is_empty());
    // The session logs its transaction as aborted (today "aborted: connection closed", size 0:
    // see the report; "aborted: shutdown" would be more precise).
    let aborted = gw
        .lines
        .iter()
        .filter(|l| {
            l.contains("\"message\":\"transaction\"") && l.contains("\"outcome\":\"aborted")
        })
        .count();
    assert_eq!(aborted, 1, "{}", gw.log());
}

/// Message-ids of the audit records in `p`, in order.
fn audit_ids(p: &std::path::Path) -> Vec<String> {
    std::fs::read_to_string(p)
        .unwrap()
        .lines()
        .map(|l| {
            let r: AuditRecord = serde_json::from_str(l).unwrap();
            r.message_id.unwrap()
        })
        .collect()
}

/// logrotate's part: send a message, move the audit file away, run `rotate` (which signals the
/// gateway and waits for its answer), send another: each record must be in its own file.
fn audit_rotation(rotate: impl FnOnce(&mut Gateway, &std::path::Path)) -> Gateway {
    let dir = tempfile::tempdir().unwrap();
    let audit = dir.path().join("audit.log");
    let extra = format!("\n[audit]\nfile = \"{}\"\n", audit.display());
    let mut gw = Gateway::start_with_policy_extra(SMALL, LogFormat::Json, &extra);
    assert_relayed(send(&gw, "first"));
    let rotated = dir.path().join("audit.log.1");
    std::fs::rename(&audit, &rotated).unwrap();
    let config = write_config(gw.dir.path(), SMALL, &extra);
    rotate(&mut gw, &config);
    assert_relayed(send(&gw, "second"));
    assert_eq!(audit_ids(&rotated), ["first@example.org"]);
    assert_eq!(audit_ids(&audit), ["second@example.org"]);
    gw
}

/// logrotate: move the audit file away, SIGHUP, and the next record goes to a new file.
#[test]
fn sighup_reopens_the_audit_file_for_log_rotation() {
    let gw = audit_rotation(|gw, _| {
        gw.signal(libc::SIGHUP);
        gw.wait_log("configuration reloaded");
    });
    // With a file, audit records are not in the log.
    assert!(!gw.log().contains("\"target\":\"audit\""), "{}", gw.log());
}

/// logrotate's postrotate: SIGUSR1 reopens the audit file and reloads nothing — a configuration
/// file changed in the meantime (here: to a broken one) is neither read nor reported.
#[test]
fn sigusr1_reopens_the_audit_file_without_a_reload() {
    let gw = audit_rotation(|gw, config| {
        std::fs::write(config, "[server\nbroken").unwrap();
        gw.signal(libc::SIGUSR1);
        gw.wait_log("audit file reopened (SIGUSR1)");
    });
    let log = gw.log();
    assert!(!log.contains("reload"), "{log}");
}

/// The relay is built at start: a reload that changes `relay.next_hop` applies the rest of the
/// file, says in the log that the next hop needs a restart, and keeps relaying to the old one.
#[test]
fn sighup_names_settings_that_need_a_restart() {
    let mut gw = Gateway::start(HUGE, LogFormat::Json);
    let path = write_config(gw.dir.path(), SMALL, "");
    let old = std::fs::read_to_string(&path).unwrap();
    let outbox = gw.outbox().display().to_string();
    let moved = old.replace(&outbox, &format!("{outbox}-new"));
    assert_ne!(old, moved);
    std::fs::write(gw.dir.path().join("gateway.toml.new"), moved).unwrap();
    std::fs::rename(gw.dir.path().join("gateway.toml.new"), &path).unwrap();
    gw.signal(libc::SIGHUP);
    gw.wait_log("configuration reloaded");
    let line = gw.wait_log("take effect at the next restart");
    let v: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(v["level"], "WARN");
    assert_eq!(v["keys"], "relay", "{line}");

    assert_relayed(send(&gw, "where"));
    assert_converted(&gw, "where");
    // Still pending at the next reload: compared with what runs, not with the previous file.
    gw.signal(libc::SIGHUP);
    gw.wait_log("configuration reloaded");
    let line = gw.wait_log("take effect at the next restart");
    assert!(line.contains("\"keys\":\"relay\""), "{line}");
    assert!(!gw.dir.path().join("outbox-new").exists());
    assert!(!gw.log().contains(CLIENT_ID));
}

#[test]
fn metrics_count_a_converted_and_a_passed_message() {
    let gw = Gateway::start(SMALL, LogFormat::Json);
    assert_eq!(gw.http_get("/healthz"), (200, "ok\n".to_string()));
    wait_ready(&gw);
    let before = gw.scrape();
    assert_eq!(sum(&before, "csgw_connections_total", &[]), 0.0);

    let mut c = Smtp::connect(gw.smtp);
    c.open_transaction(FROM, TO);
    assert_relayed(c.data(&message("big", ATTACHMENT_SIZE)));
    c.open_transaction(FROM, TO);
    assert_relayed(c.data(&message("small", 100)));
    c.expect("QUIT", 221);
    assert_converted(&gw, "big");

    let s = gw.scrape();
    let msgs = |r| {
        value(
            &s,
            "csgw_messages_total",
            &[("policy", "trial"), ("result", r)],
        )
    };
    assert_eq!(msgs("converted"), 1.0);
    assert_eq!(msgs("passed"), 1.0);
    assert_eq!(msgs("failed"), 0.0);
    let tx = |o| value(&s, "csgw_transactions_total", &[("outcome", o)]);
    assert_eq!(tx("accepted"), 2.0);
    assert_eq!(tx("tempfail") + tx("rejected") + tx("aborted"), 0.0);
    assert_eq!(
        value(&s, "csgw_connections_total", &[("listener", "smtp")]),
        1.0
    );
    for endpoint in ["create-session", "upload", "finalize"] {
        assert_eq!(
            sum(
                &s,
                "csgw_cryptshare_request_duration_seconds_count",
                &[("endpoint", endpoint)]
            ),
            1.0,
            "{endpoint}"
        );
    }
    let uploaded = value(&s, "csgw_uploaded_bytes_total", &[("policy", "trial")]);
    assert_eq!(uploaded, ATTACHMENT_SIZE as f64);
    assert_eq!(
        value(&s, "csgw_uploaded_files_total", &[("policy", "trial")]),
        1.0
    );
    assert_eq!(
        value(
            &s,
            "csgw_next_hop_duration_seconds_count",
            &[("result", "2xx")]
        ),
        2.0
    );
    assert_eq!(value(&s, "csgw_transactions_active", &[]), 0.0);
    // The session gauge drops when the server has closed the connection, after the 221.
    gw.scrape_until("csgw_connections_active 0", |s| {
        value(s, "csgw_connections_active", &[]) == 0.0
    });

    // The scrape header, and OpenMetrics for scrapers that ask for it (Prometheus does).
    let (status, head, _) = http_request(gw.metrics, "/metrics", &[]);
    assert_eq!(status, 200);
    assert!(
        head.contains("\r\ncontent-type: text/plain; version=0.0.4; charset=utf-8"),
        "{head}"
    );
    let (status, head, body) = http_request(
        gw.metrics,
        "/metrics",
        &["Accept: application/openmetrics-text; version=1.0.0"],
    );
    assert_eq!(status, 200);
    assert!(
        head.contains(
            "\r\ncontent-type: application/openmetrics-text; version=1.0.0; charset=utf-8"
        ),
        "{head}"
    );
    assert!(body.ends_with("# EOF\n"));
    let om = parse_openmetrics(&body);
    assert_eq!(
        value(
            &om,
            "csgw_messages_total",
            &[("policy", "trial"), ("result", "converted")]
        ),
        1.0
    );
    assert_eq!(
        value(&om, "csgw_uploaded_bytes_total", &[("policy", "trial")]),
        ATTACHMENT_SIZE as f64
    );

    // Still ready after traffic.
    assert_eq!(gw.http_get("/readyz"), (200, "ready\n".to_string()));
}

fn recv(sock: &UnixDatagram) -> String {
    let mut buf = [0u8; 4096];
    let n = sock
        .recv(&mut buf)
        .expect("an sd_notify datagram within WAIT");
    String::from_utf8(buf[..n].to_vec()).unwrap()
}

/// The next datagram that is not a watchdog keep-alive; counts those in `pings`.
fn recv_state(sock: &UnixDatagram, pings: &mut usize) -> String {
    loop {
        let m = recv(sock);
        if m == "WATCHDOG=1" {
            *pings += 1;
        } else {
            return m;
        }
    }
}

#[test]
fn sd_notify_ready_reloading_stopping_and_watchdog() {
    let sock_dir = tempfile::tempdir().unwrap();
    let path = sock_dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&path).unwrap();
    sock.set_read_timeout(Some(WAIT)).unwrap();
    let mut gw = Gateway::start_with_env(
        SMALL,
        LogFormat::Json,
        &[
            ("NOTIFY_SOCKET", path.to_str().unwrap()),
            // 2 s: a keep-alive every second.
            ("WATCHDOG_USEC", "2000000"),
        ],
    );
    let mut pings = 0;
    assert_eq!(
        recv_state(&sock, &mut pings),
        "READY=1\nSTATUS=accepting mail"
    );
    // READY=1 comes once the listener is bound.
    let mut c = Smtp::connect(gw.smtp);
    c.expect("QUIT", 221);
    while pings == 0 {
        assert_eq!(recv(&sock), "WATCHDOG=1");
        pings += 1;
    }

    gw.signal(libc::SIGHUP);
    let reloading = recv_state(&sock, &mut pings);
    let usec = reloading
        .strip_prefix("RELOADING=1\nMONOTONIC_USEC=")
        .unwrap_or_else(|| panic!("{reloading:?}"));
    assert!(usec.parse::<u64>().unwrap() > 0, "{reloading:?}");
    assert_eq!(
        recv_state(&sock, &mut pings),
        "READY=1\nSTATUS=configuration reloaded"
    );

    // A refused reload still ends with READY=1, its status naming the problem.
    write_config(gw.dir.path(), SMALL, "bogus = 1\n");
    gw.signal(libc::SIGHUP);
    assert!(recv_state(&sock, &mut pings).starts_with("RELOADING=1\n"));
    let status = recv_state(&sock, &mut pings);
    assert!(
        status.starts_with("READY=1\nSTATUS=configuration reload refused: ")
            && status.contains("bogus"),
        "{status:?}"
    );
    assert_eq!(status.lines().count(), 2, "{status:?}");

    gw.signal(libc::SIGTERM);
    assert_eq!(recv_state(&sock, &mut pings), "STOPPING=1");
    assert_eq!(gw.wait_exit().code(), Some(0), "{}", gw.log());
    // Nothing after STOPPING=1 but keep-alives sent before the exit.
    sock.set_nonblocking(true).unwrap();
    let mut buf = [0u8; 4096];
    loop {
        match sock.recv(&mut buf) {
            Ok(n) => assert_eq!(&buf[..n], b"WATCHDOG=1"),
            Err(e) => {
                assert_eq!(e.kind(), ErrorKind::WouldBlock);
                break;
            }
        }
    }
}

/// Fields of an audit record, in the order `AuditRecord` declares them.
const AUDIT_FIELDS: [&str; 14] = [
    "time",
    "queue_id",
    "message_id",
    "sender",
    "recipients",
    "size",
    "policy",
    "decision",
    "reason",
    "files",
    "tracking_id",
    "reply",
    "relay",
    "durations",
];

#[test]
fn json_logs_carry_audit_records_and_no_secrets() {
    // Debug level: more lines that could leak.
    let mut gw = Gateway::start_with_env(
        SMALL,
        LogFormat::Json,
        &[("RUST_LOG", "debug,hyper=info,h2=info,rustls=info")],
    );
    assert_relayed(send(&gw, "big"));
    let mut c = Smtp::connect(gw.smtp);
    c.open_transaction(FROM, TO);
    assert_relayed(c.data(&message("small", 100)));
    c.expect("QUIT", 221);
    gw.signal(libc::SIGTERM);
    assert_eq!(gw.wait_exit().code(), Some(0), "{}", gw.log());

    let mut audits = Vec::new();
    for line in &gw.lines {
        let v: serde_json::Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("stderr line is not JSON ({e}): {line}"));
        for key in ["timestamp", "level", "target", "message"] {
            assert!(v.get(key).is_some(), "no {key}: {line}");
        }
        if v["target"] == "audit" {
            assert_eq!(v["level"], "INFO");
            let text = v["message"].as_str().unwrap();
            let record: serde_json::Value = serde_json::from_str(text).unwrap();
            let keys: Vec<&str> = record
                .as_object()
                .unwrap()
                .keys()
                .map(String::as_str)
                .collect();
            let mut expected = AUDIT_FIELDS.to_vec();
            expected.sort_unstable();
            let mut got = keys.clone();
            got.sort_unstable();
            assert_eq!(got, expected, "{text}");
            let typed: AuditRecord = serde_json::from_value(record.clone()).unwrap();
            assert_eq!(serde_json::to_value(&typed).unwrap(), record);
            audits.push(typed);
        }
    }
    assert_eq!(audits.len(), 2, "one audit line per message");

    let big = &audits[0];
    assert_eq!(big.message_id.as_deref(), Some("big@example.org"));
    assert_eq!(
        (big.sender.as_str(), big.recipients.as_slice()),
        (FROM, &[TO.to_string()][..])
    );
    assert_eq!(big.policy.as_deref(), Some("trial"));
    assert_eq!(serde_json::to_value(big.decision).unwrap(), "convert");
    assert_eq!(big.size, message("big", ATTACHMENT_SIZE).len() as u64);
    assert_eq!(big.files.len(), 1);
    assert_eq!(big.files[0].name, "data-big.bin");
    assert_eq!(big.files[0].size, ATTACHMENT_SIZE as u64);
    let content: Vec<u8> = (0..ATTACHMENT_SIZE).map(|i| (i * 7 % 251) as u8).collect();
    assert_eq!(big.files[0].sha256, hex::encode(Sha256::digest(&content)));
    let tracking = big.tracking_id.as_deref().expect("tracking id");
    assert!(
        big.reply.starts_with("250 2.0.0 OK, relayed (maildir "),
        "{}",
        big.reply
    );
    assert_eq!(big.relay.as_deref(), Some(big.reply.as_str()));
    assert!(big.durations.total_ms >= big.durations.cryptshare_ms);

    let small = &audits[1];
    assert_eq!(small.message_id.as_deref(), Some("small@example.org"));
    assert_eq!(serde_json::to_value(small.decision).unwrap(), "pass");
    assert!(small.files.is_empty() && small.tracking_id.is_none());
    assert_eq!(small.durations.cryptshare_ms, 0);

    // The generated download password is in the emulator's upload summary for the sender.
    let summary = std::fs::read_to_string(
        gw.sim_dir()
            .join("mails")
            .join(format!("{tracking}-sender.eml")),
    )
    .unwrap();
    let password = summary
        .lines()
        .find_map(|l| l.strip_prefix("Password: "))
        .expect("a generated password in the upload summary");
    assert!(password.len() >= 8, "{password:?}");
    let log = gw.log();
    assert!(!log.contains(CLIENT_ID), "the client id is in the log");
    assert!(
        !log.contains(password),
        "the download password is in the log"
    );
}
