//! End-to-end tests of the SMTP relay (issue 2): the real `cryptshare-gateway serve` binary with a
//! config file, real clients (Python `smtplib`, `swaks`, raw commands for BDAT) and real next hops
//! (Postfix `smtp-sink`, the crate's scriptable sink).
//!
//! Byte-exactness: smtp-sink stores the message after dot-unstuffing with CRLF written as LF (see
//! `e2e_support::Dump`). What it stored must be the gateway's `Received:` header followed by exactly
//! the bytes the client sent, under that one transformation. The crate's sink stores raw bytes, so
//! the BDAT and failure tests compare with CRLF intact.
//!
//! Tools (a missing one fails the test): python3, swaks (+ libnet-ssleay-perl for `--tls`),
//! postfix (smtp-sink).

mod e2e_support;
mod support;

use std::collections::HashMap;
use std::process::Command;

use cryptshare_gateway::replies::Reply;
use cryptshare_gateway_testkit::sink::{Script, Sink, Stage};
use e2e_support::*;

/// A Python client: `python3 -c PY PORT MODE CAFILE MSGFILE FROM RCPT...`. MODE is `plain`
/// (smtplib, one command per round trip), `starttls` (smtplib with a verified STARTTLS upgrade)
/// `smtps` (smtplib over implicit TLS), or `pipelining` (raw socket: the envelope and DATA in one
/// write, then the content and QUIT in one write). Environment `MAIL_OPTS` / `RCPT_OPTS`: ESMTP
/// parameters for smtplib. Prints one line per reply: `CMD CODE TEXT` (multi-line texts joined
/// with ` / `).
const PY_CLIENT: &str = r#"
import os, smtplib, socket, ssl, sys
port, mode, cafile, path, sender = sys.argv[1:6]
rcpts = sys.argv[6:]
msg = open(path, 'rb').read()

def show(cmd, code, text):
    if isinstance(text, bytes):
        text = text.decode()
    print(cmd, code, ' / '.join(text.splitlines()), flush=True)

if mode == 'pipelining':
    s = socket.create_connection(('127.0.0.1', int(port)))
    f = s.makefile('rb')
    def reply(cmd):
        lines = []
        while True:
            l = f.readline()
            if not l:
                raise SystemExit('connection closed by the server')
            lines.append(l.decode().rstrip('\r\n'))
            if l[3:4] == b' ':
                break
        show(cmd, lines[0][:3], ' / '.join(l[4:] for l in lines))
        return lines
    reply('GREETING')
    s.sendall(b'EHLO py.e2e.test\r\n')
    ehlo = reply('EHLO')
    if not any(l[4:] == 'PIPELINING' for l in ehlo):
        raise SystemExit('PIPELINING not offered')
    cmds = [('MAIL', b'MAIL FROM:<' + sender.encode() + b'>\r\n')]
    cmds += [('RCPT', b'RCPT TO:<' + r.encode() + b'>\r\n') for r in rcpts]
    cmds += [('DATA', b'DATA\r\n')]
    s.sendall(b''.join(c for _, c in cmds))
    for name, _ in cmds:
        reply(name)
    body = msg.replace(b'\r\n.', b'\r\n..')
    if body.startswith(b'.'):
        body = b'.' + body
    s.sendall(body + b'.\r\nQUIT\r\n')
    reply('DOT')
    reply('QUIT')
else:
    if mode == 'smtps':
        ctx = ssl.create_default_context(cafile=cafile)
        s = smtplib.SMTP_SSL('127.0.0.1', int(port), local_hostname='py.e2e.test', timeout=60, context=ctx)
    else:
        s = smtplib.SMTP('127.0.0.1', int(port), local_hostname='py.e2e.test', timeout=60)
    show('EHLO', *s.ehlo())
    if mode == 'starttls':
        ctx = ssl.create_default_context(cafile=cafile)
        show('STARTTLS', *s.starttls(context=ctx))
        show('EHLO', *s.ehlo())
    if mode in ('starttls', 'smtps'):
        print('CIPHER', s.sock.version(), flush=True)
    mail_opts = os.environ.get('MAIL_OPTS', '').split()
    rcpt_opts = os.environ.get('RCPT_OPTS', '').split()
    show('MAIL', *s.mail(sender, mail_opts))
    for r in rcpts:
        show('RCPT', *s.rcpt(r, rcpt_opts))
    show('DOT', *s.data(msg))
    show('QUIT', *s.quit())
"#;

/// Run [`PY_CLIENT`]; returns its stdout lines.
fn python(
    port: u16,
    mode: &str,
    cafile: &str,
    msg: &[u8],
    from: &str,
    rcpts: &[&str],
    env: &[(&str, &str)],
) -> Vec<String> {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("msg.eml");
    std::fs::write(&path, msg).expect("write message");
    let out = run(
        Command::new("python3")
            .arg("-c")
            .arg(PY_CLIENT)
            .arg(port.to_string())
            .arg(mode)
            .arg(cafile)
            .arg(&path)
            .arg(from)
            .args(rcpts)
            .envs(env.iter().copied()),
        "python3",
    );
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "python client {mode} failed ({}):\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout.lines().map(str::to_string).collect()
}

/// The replies (`CMD CODE TEXT`) other than greeting and EHLO.
fn transaction_lines(lines: &[String]) -> Vec<&str> {
    lines
        .iter()
        .map(String::as_str)
        .filter(|l| !l.starts_with("EHLO ") && !l.starts_with("GREETING "))
        .collect()
}

const RELAYED: &str = "250 2.0.0 OK, relayed (Ok)";

#[test]
fn python_smtplib_plain_pipelining_starttls_and_smtps_are_relayed_byte_exact() {
    let sink = SmtpSink::start(&[]);
    let dir = tempfile::tempdir().expect("tempdir");
    let (cert, key) = write_cert(dir.path());
    let smtps = free_port();
    let gw = Gateway::start_in(
        dir,
        &format!("listen_tls = [\"127.0.0.1:{smtps}\"]"),
        &sink.next_hop(),
        &tls_section(&cert, &key),
    );
    let cafile = cert.display().to_string();

    for (mode, size, rcpts) in [
        ("plain", 2_000, vec!["rcpt@example.net"]),
        (
            "pipelining",
            300_000,
            vec!["rcpt@example.net", "second@example.net"],
        ),
        ("starttls", 70_000, vec!["rcpt@example.net"]),
        ("smtps", 10_000, vec!["rcpt@example.net"]),
    ] {
        let subject = format!("python-{mode}");
        let msg = message(&subject, size);
        let port = if mode == "smtps" { smtps } else { gw.port };
        let lines = python(port, mode, &cafile, &msg, "sender@example.org", &rcpts, &[]);
        let mut want = vec!["MAIL 250 2.1.0 Sender OK".to_string()];
        want.extend(
            rcpts
                .iter()
                .map(|_| "RCPT 250 2.1.5 Recipient OK".to_string()),
        );
        if mode == "pipelining" {
            want.push("DATA 354 End data with <CR><LF>.<CR><LF>".into());
        }
        want.push(format!("DOT {RELAYED}"));
        want.push(format!("QUIT 221 2.0.0 {HOSTNAME} closing connection"));
        let mut got = transaction_lines(&lines);
        let mut proto = "ESMTP";
        if mode == "starttls" {
            assert_eq!(got[0], "STARTTLS 220 2.0.0 Ready to start TLS", "{lines:?}");
            assert!(
                got[1] == "CIPHER TLSv1.3" || got[1] == "CIPHER TLSv1.2",
                "{lines:?}"
            );
            got.drain(..2);
            proto = "ESMTPS";
        }
        if mode == "smtps" {
            assert!(
                got[0] == "CIPHER TLSv1.3" || got[0] == "CIPHER TLSv1.2",
                "{lines:?}"
            );
            got.remove(0);
            proto = "ESMTPS";
        }
        assert_eq!(got, want, "{mode}: {lines:?}");
        let ehlo = lines
            .iter()
            .find(|l| l.starts_with("EHLO 250 "))
            .expect("EHLO");
        assert!(ehlo.contains(" / PIPELINING / "), "{ehlo}");
        // STARTTLS is offered on the plain listener only.
        assert_eq!(ehlo.contains(" / STARTTLS / "), mode != "smtps", "{ehlo}");

        let dump = sink.wait_dump(&format!("Subject: {subject}\n"));
        assert_eq!(dump.trace_values("X-Helo-Args"), vec![HOSTNAME.to_string()]);
        assert_eq!(
            dump.trace_values("X-Mail-Args"),
            vec!["<sender@example.org>".to_string()]
        );
        assert_eq!(
            dump.trace_values("X-Rcpt-Args"),
            rcpts.iter().map(|r| format!("<{r}>")).collect::<Vec<_>>()
        );
        let one = (rcpts.len() == 1).then_some(rcpts[0]);
        let body = dump.after_our_received("py.e2e.test", proto, one);
        assert_bytes_eq(&body, &as_dumped(&msg), mode);
    }
}

/// Run swaks against the gateway; returns (success, server reply lines without swaks' prefixes).
fn swaks(
    port: u16,
    msg: &[u8],
    from: &str,
    to: &str,
    extra: &[&str],
) -> (bool, Vec<String>, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("msg.eml");
    // swaks ends the data with CRLF "." CRLF itself: the file leaves out the final CRLF so that
    // what goes over the wire is exactly `msg`.
    let data = msg.strip_suffix(b"\r\n").expect("message ends with CRLF");
    std::fs::write(&path, data).expect("write message");
    let out = run(
        Command::new("swaks")
            .args(["--server", &format!("127.0.0.1:{port}")])
            .args(["--helo", "swaks.e2e.test", "--from", from, "--to", to])
            .arg("--data")
            .arg(format!("@{}", path.display()))
            .args(["--timeout", "60", "--hide-informational"])
            .args(extra),
        "swaks libnet-ssleay-perl",
    );
    let transcript =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    // Server lines: `<-  ` (plain), `<~  ` (TLS), `<** ` / `<~* ` (failures).
    let replies = transcript
        .lines()
        .filter(|l| l.starts_with('<') && l.len() > 4)
        .map(|l| l[4..].to_string())
        .collect();
    (out.status.success(), replies, transcript)
}

#[test]
fn swaks_plain_tls_auth_and_pipelining_are_relayed_byte_exact() {
    let sink = SmtpSink::start(&[]);
    let dir = tempfile::tempdir().expect("tempdir");
    let (cert, key) = write_cert(dir.path());
    // Relaying needs AUTH here: 127.0.0.1 is outside client_networks.
    let bcrypt_hash = bcrypt::hash("alice secret", 4).expect("bcrypt");
    let argon = {
        use argon2::password_hash::{PasswordHasher, SaltString};
        let params = argon2::Params::new(1024, 1, 1, None).expect("params");
        let a = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
        let salt = SaltString::encode_b64(b"e2e-test-salt-16").expect("salt");
        a.hash_password(b"bob secret", &salt)
            .expect("argon2")
            .to_string()
    };
    let users = dir.path().join("users");
    std::fs::write(&users, format!("alice:{bcrypt_hash}\nbob:{argon}\n")).expect("users");
    let auth_gw_dir = tempfile::tempdir().expect("tempdir");
    let auth_gw = Gateway::start_in(
        auth_gw_dir,
        "client_networks = [\"192.0.2.0/24\"]",
        &sink.next_hop(),
        &format!(
            "{}[server.auth]\nusers_file = \"{}\"\n",
            tls_section(&cert, &key),
            users.display()
        ),
    );
    let gw = Gateway::start_in(dir, "", &sink.next_hop(), &tls_section(&cert, &key));

    let tail = |rcpts: usize| {
        let mut v = vec!["250 2.1.0 Sender OK".to_string()];
        v.extend((0..rcpts).map(|_| "250 2.1.5 Recipient OK".to_string()));
        v.push("354 End data with <CR><LF>.<CR><LF>".into());
        v.push(RELAYED.into());
        v.push(format!("221 2.0.0 {HOSTNAME} closing connection"));
        v
    };
    let cases: Vec<(&str, u16, Vec<&str>, &str, &str)> = vec![
        ("plain", gw.port, vec![], "ESMTP", "rcpt@example.net"),
        ("tls", gw.port, vec!["--tls"], "ESMTPS", "rcpt@example.net"),
        (
            "pipeline",
            gw.port,
            vec!["--pipeline"],
            "ESMTP",
            "rcpt@example.net,second@example.net,third@example.net",
        ),
        (
            "auth-bcrypt",
            auth_gw.port,
            vec![
                "--tls",
                "--auth",
                "PLAIN",
                "--auth-user",
                "alice",
                "--auth-password",
                "alice secret",
            ],
            "ESMTPSA",
            "rcpt@example.net",
        ),
        (
            "auth-argon2",
            auth_gw.port,
            vec![
                "--tls",
                "--auth",
                "LOGIN",
                "--auth-user",
                "bob",
                "--auth-password",
                "bob secret",
                "--pipeline",
            ],
            "ESMTPSA",
            "rcpt@example.net",
        ),
    ];
    for (name, port, extra, proto, to) in cases {
        let subject = format!("swaks-{name}");
        let msg = message(&subject, 40_000);
        let (ok, replies, transcript) = swaks(port, &msg, "sender@example.org", to, &extra);
        assert!(ok, "{name}: swaks failed:\n{transcript}");
        let rcpts: Vec<&str> = to.split(',').collect();
        let want = tail(rcpts.len());
        assert_eq!(
            replies[replies.len() - want.len()..],
            want[..],
            "{name}:\n{transcript}"
        );
        if extra.contains(&"--pipeline") {
            // Pipelined for real: DATA went out before the reply to MAIL came back.
            let pos = |pat: &str| {
                transcript
                    .lines()
                    .position(|l| l.ends_with(pat))
                    .unwrap_or_else(|| panic!("{pat:?} not in:\n{transcript}"))
            };
            assert!(
                pos("> DATA") < pos("250 2.1.0 Sender OK"),
                "{name}:\n{transcript}"
            );
        }
        if extra.contains(&"--tls") {
            assert!(
                replies.contains(&"220 2.0.0 Ready to start TLS".to_string()),
                "{name}:\n{transcript}"
            );
        }
        if extra.contains(&"--auth") {
            assert!(
                replies.contains(&"235 2.7.0 Authentication successful".to_string()),
                "{name}:\n{transcript}"
            );
        }
        let dump = sink.wait_dump(&format!("Subject: {subject}\n"));
        assert_eq!(
            dump.trace_values("X-Rcpt-Args"),
            rcpts.iter().map(|r| format!("<{r}>")).collect::<Vec<_>>()
        );
        let one = (rcpts.len() == 1).then_some(rcpts[0]);
        let body = dump.after_our_received("swaks.e2e.test", proto, one);
        assert_bytes_eq(&body, &as_dumped(&msg), name);
    }

    // The AUTH gateway refuses the wrong password and, unauthenticated, relaying.
    let (ok, replies, transcript) = swaks(
        auth_gw.port,
        &message("swaks-badpw", 100),
        "sender@example.org",
        "rcpt@example.net",
        &[
            "--tls",
            "--auth",
            "PLAIN",
            "--auth-user",
            "alice",
            "--auth-password",
            "wrong",
        ],
    );
    assert!(!ok, "{transcript}");
    assert!(
        replies.contains(&"535 5.7.8 Authentication credentials invalid".to_string()),
        "{transcript}"
    );
    let (ok, replies, transcript) = swaks(
        auth_gw.port,
        &message("swaks-noauth", 100),
        "sender@example.org",
        "rcpt@example.net",
        &["--tls"],
    );
    assert!(!ok, "{transcript}");
    assert!(
        replies.contains(&"554 5.7.1 Relay access denied".to_string()),
        "{transcript}"
    );
    let stored = sink.dumps();
    assert!(
        stored
            .iter()
            .all(|d| !String::from_utf8_lossy(d).contains("swaks-badpw")
                && !String::from_utf8_lossy(d).contains("swaks-noauth")),
        "a refused message reached the next hop"
    );
}

/// BDAT in two chunks, pipelined with the envelope; returns the replies as one string.
fn send_bdat(port: u16, msg: &[u8], rcpts: &[&str]) -> String {
    let (mut c, greeting) = RawSmtp::connect(port);
    assert!(
        greeting.starts_with(&format!("220 {HOSTNAME} ")),
        "{greeting}"
    );
    let ehlo = c.cmd("EHLO raw.e2e.test");
    assert!(
        ehlo.contains("\r\n250-CHUNKING\r\n") || ehlo.ends_with("250 CHUNKING\r\n"),
        "{ehlo}"
    );
    let (a, b) = msg.split_at(msg.len() / 3);
    let mut out = b"MAIL FROM:<sender@example.org>\r\n".to_vec();
    for r in rcpts {
        out.extend_from_slice(format!("RCPT TO:<{r}>\r\n").as_bytes());
    }
    out.extend_from_slice(format!("BDAT {}\r\n", a.len()).as_bytes());
    out.extend_from_slice(a);
    out.extend_from_slice(format!("BDAT {} LAST\r\n", b.len()).as_bytes());
    out.extend_from_slice(b);
    out.extend_from_slice(b"QUIT\r\n");
    c.send(&out);
    let mut replies = String::new();
    for _ in 0..rcpts.len() + 4 {
        replies.push_str(&c.reply());
    }
    c.expect_eof();
    replies
}

#[test]
fn bdat_is_relayed_byte_exact_to_smtp_sink_and_to_a_chunking_next_hop() {
    // smtp-sink offers no CHUNKING: the gateway relays BDAT with DATA.
    let sink = SmtpSink::start(&[]);
    let gw = Gateway::start("", &sink.next_hop(), "");
    let msg = message("bdat-smtp-sink", 100_000);
    let replies = send_bdat(gw.port, &msg, &["rcpt@example.net"]);
    let (a, _) = msg.split_at(msg.len() / 3);
    assert_eq!(
        replies,
        format!(
            "250 2.1.0 Sender OK\r\n250 2.1.5 Recipient OK\r\n250 2.0.0 {} octets received\r\n{RELAYED}\r\n221 2.0.0 {HOSTNAME} closing connection\r\n",
            a.len()
        )
    );
    let dump = sink.wait_dump("Subject: bdat-smtp-sink\n");
    let body = dump.after_our_received("raw.e2e.test", "ESMTP", Some("rcpt@example.net"));
    assert_bytes_eq(&body, &as_dumped(&msg), "BDAT via smtp-sink");

    // A next hop with CHUNKING receives raw bytes: compare with CRLF intact.
    let rt = runtime();
    let chunking = rt.block_on(Sink::start(Script::default())).expect("sink");
    let gw = Gateway::start("", &chunking.addr().to_string(), "");
    let msg = message("bdat-chunking", 100_000);
    let replies = send_bdat(gw.port, &msg, &["rcpt@example.net", "other@example.net"]);
    assert!(
        replies.ends_with(&format!(
            "250 2.0.0 OK, relayed (Queued as SINK)\r\n221 2.0.0 {HOSTNAME} closing connection\r\n"
        )),
        "{replies}"
    );
    let got = chunking.messages();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].mail_from, "MAIL FROM:<sender@example.org>");
    assert_eq!(
        got[0].rcpt_to,
        vec!["RCPT TO:<rcpt@example.net>", "RCPT TO:<other@example.net>"]
    );
    let body = split_received(&got[0].data, "\r\n", "raw.e2e.test", "ESMTP", None);
    assert_bytes_eq(&body, &msg, "BDAT via chunking sink");
}

fn runtime() -> tokio::runtime::Runtime {
    cryptshare_gateway::install_crypto_provider();
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime")
}

/// EHLO + MAIL on a fresh session.
fn open(port: u16) -> RawSmtp {
    let (mut c, _) = RawSmtp::connect(port);
    let ehlo = c.cmd("EHLO raw.e2e.test");
    assert!(ehlo.starts_with(&format!("250-{HOSTNAME}\r\n")), "{ehlo}");
    c
}

#[test]
fn next_hop_down_is_451_and_the_retried_message_is_delivered() {
    // Nothing listens on the next-hop port yet.
    let port = free_port();
    let gw = Gateway::start("", &format!("127.0.0.1:{port}"), "");
    let msg = message("next-hop-down", 5_000);

    let mut c = open(gw.port);
    // The next hop is contacted only for an allowed recipient: MAIL is answered locally.
    assert_eq!(
        c.cmd("MAIL FROM:<sender@example.org>"),
        "250 2.1.0 Sender OK\r\n"
    );
    let down = "451 4.4.1 Next hop unavailable, try again later (connection refused)\r\n";
    assert_eq!(c.cmd("RCPT TO:<rcpt@example.net>"), down);
    // One attempt per transaction: the next recipient gets the same answer.
    assert_eq!(c.cmd("RCPT TO:<other@example.net>"), down);
    // The client holds the message (4xx) and the session goes on.
    assert_eq!(c.cmd("DATA"), "554 5.5.1 No valid recipients\r\n");
    assert_eq!(
        c.cmd("QUIT"),
        format!("221 2.0.0 {HOSTNAME} closing connection\r\n")
    );

    // The next hop comes back; the client retries and the message arrives once, intact.
    let sink = SmtpSink::start_on(port, &[]);
    let mut c = open(gw.port);
    assert_eq!(
        c.cmd("MAIL FROM:<sender@example.org>"),
        "250 2.1.0 Sender OK\r\n"
    );
    assert_eq!(
        c.cmd("RCPT TO:<rcpt@example.net>"),
        "250 2.1.5 Recipient OK\r\n"
    );
    assert_eq!(c.cmd("DATA"), "354 End data with <CR><LF>.<CR><LF>\r\n");
    c.send(&dot_stuffed(&msg));
    assert_eq!(c.reply(), format!("{RELAYED}\r\n"));
    let dump = sink.wait_dump("Subject: next-hop-down\n");
    let body = dump.after_our_received("raw.e2e.test", "ESMTP", Some("rcpt@example.net"));
    assert_bytes_eq(&body, &as_dumped(&msg), "retried message");
    assert_eq!(sink.dumps().len(), 1);
}

#[test]
fn next_hop_lost_during_the_data_is_451_and_the_retry_is_delivered() {
    let rt = runtime();
    let next = rt
        .block_on(Sink::start(Script {
            close: Some(Stage::DataEnd),
            ..Script::default()
        }))
        .expect("sink");
    let gw = Gateway::start("", &next.addr().to_string(), "");
    let msg = message("lost-at-data-end", 5_000);
    let mut c = open(gw.port);
    assert_eq!(
        c.cmd("MAIL FROM:<sender@example.org>"),
        "250 2.1.0 Sender OK\r\n"
    );
    assert_eq!(
        c.cmd("RCPT TO:<rcpt@example.net>"),
        "250 2.1.5 Recipient OK\r\n"
    );
    assert_eq!(c.cmd("DATA"), "354 End data with <CR><LF>.<CR><LF>\r\n");
    c.send(&dot_stuffed(&msg));
    assert_eq!(
        c.reply(),
        "451 4.4.2 Next hop connection failed, try again later (connection lost)\r\n"
    );
    assert!(next.messages().is_empty());

    // The client kept the message; its retry is delivered once, intact.
    next.script(|s| s.close = None);
    let mut c = open(gw.port);
    c.send(b"MAIL FROM:<sender@example.org>\r\nRCPT TO:<rcpt@example.net>\r\nDATA\r\n");
    let mut replies = String::new();
    for _ in 0..3 {
        replies.push_str(&c.reply());
    }
    assert_eq!(
        replies,
        "250 2.1.0 Sender OK\r\n250 2.1.5 Recipient OK\r\n354 End data with <CR><LF>.<CR><LF>\r\n"
    );
    c.send(&dot_stuffed(&msg));
    assert_eq!(c.reply(), "250 2.0.0 OK, relayed (Queued as SINK)\r\n");
    let got = next.messages();
    assert_eq!(got.len(), 1);
    let body = split_received(
        &got[0].data,
        "\r\n",
        "raw.e2e.test",
        "ESMTP",
        Some("rcpt@example.net"),
    );
    assert_bytes_eq(&body, &msg, "retried message");
}

#[test]
fn next_hop_5xx_on_one_recipient_refuses_only_that_recipient() {
    let rt = runtime();
    let mut rcpt_replies = HashMap::new();
    rcpt_replies.insert(
        "unknown@example.net".to_string(),
        Reply::new(
            550,
            [5, 1, 1],
            "unknown@example.net: Recipient address rejected",
        ),
    );
    let next = rt
        .block_on(Sink::start(Script {
            rcpt_replies,
            ..Script::default()
        }))
        .expect("sink");
    let gw = Gateway::start("", &next.addr().to_string(), "");
    let msg = message("one-refused", 5_000);
    let mut c = open(gw.port);
    // Pipelined envelope: the refusal arrives at RCPT time, in order.
    c.send(
        b"MAIL FROM:<sender@example.org>\r\nRCPT TO:<a@example.net>\r\nRCPT TO:<unknown@example.net>\r\nRCPT TO:<b@example.net>\r\nDATA\r\n",
    );
    let mut replies = String::new();
    for _ in 0..5 {
        replies.push_str(&c.reply());
    }
    assert_eq!(
        replies,
        "250 2.1.0 Sender OK\r\n250 2.1.5 Recipient OK\r\n\
         550 5.1.1 unknown@example.net: Recipient address rejected\r\n\
         250 2.1.5 Recipient OK\r\n354 End data with <CR><LF>.<CR><LF>\r\n"
    );
    c.send(&dot_stuffed(&msg));
    assert_eq!(c.reply(), "250 2.0.0 OK, relayed (Queued as SINK)\r\n");
    let got = next.messages();
    assert_eq!(got.len(), 1);
    assert_eq!(
        got[0].rcpt_to,
        vec!["RCPT TO:<a@example.net>", "RCPT TO:<b@example.net>"]
    );
    let body = split_received(&got[0].data, "\r\n", "raw.e2e.test", "ESMTP", None);
    assert_bytes_eq(&body, &msg, "delivered to the others");
    // The next hop got MAIL with the first recipient in one write (one round trip), and each
    // further recipient as the client's own RCPT arrived.
    let batches = next.batches();
    let envelope = [
        "MAIL FROM:<sender@example.org>".to_string(),
        "RCPT TO:<a@example.net>".to_string(),
    ];
    assert!(
        batches.iter().any(|b| b.ends_with(&envelope)),
        "{batches:?}"
    );
    assert!(
        batches.contains(&vec!["RCPT TO:<unknown@example.net>".to_string()]),
        "{batches:?}"
    );
}

#[test]
fn client_outside_client_networks_gets_554_at_rcpt() {
    let rt = runtime();
    let next = rt.block_on(Sink::start(Script::default())).expect("sink");
    let gw = Gateway::start(
        "client_networks = [\"192.0.2.0/24\"]",
        &next.addr().to_string(),
        "",
    );
    let mut c = open(gw.port);
    assert_eq!(
        c.cmd("MAIL FROM:<sender@example.org>"),
        "250 2.1.0 Sender OK\r\n"
    );
    assert_eq!(
        c.cmd("RCPT TO:<rcpt@example.net>"),
        "554 5.7.1 Relay access denied\r\n"
    );
    assert_eq!(c.cmd("DATA"), "554 5.5.1 No valid recipients\r\n");
    assert_eq!(
        c.cmd("QUIT"),
        format!("221 2.0.0 {HOSTNAME} closing connection\r\n")
    );
    c.expect_eof();
    assert!(next.messages().is_empty());
}

#[test]
fn oversize_message_is_552_while_receiving_and_nothing_is_relayed() {
    let rt = runtime();
    let next = rt.block_on(Sink::start(Script::default())).expect("sink");
    let gw = Gateway::start("max_message_size = 10000", &next.addr().to_string(), "");
    let mut c = open(gw.port);
    let ehlo = c.cmd("EHLO raw.e2e.test");
    assert!(ehlo.contains("\r\n250-SIZE 10000\r\n"), "{ehlo}");
    // Declared too big.
    assert_eq!(
        c.cmd("MAIL FROM:<sender@example.org> SIZE=20000"),
        "552 5.3.4 Message size exceeds fixed maximum message size\r\n"
    );
    // Undeclared, with DATA.
    assert_eq!(
        c.cmd("MAIL FROM:<sender@example.org>"),
        "250 2.1.0 Sender OK\r\n"
    );
    assert_eq!(
        c.cmd("RCPT TO:<rcpt@example.net>"),
        "250 2.1.5 Recipient OK\r\n"
    );
    assert_eq!(c.cmd("DATA"), "354 End data with <CR><LF>.<CR><LF>\r\n");
    c.send(&dot_stuffed(&message("too-big", 50_000)));
    assert_eq!(
        c.reply(),
        "552 5.3.4 Message size exceeds fixed maximum message size\r\n"
    );
    // With BDAT.
    assert_eq!(
        c.cmd("MAIL FROM:<sender@example.org>"),
        "250 2.1.0 Sender OK\r\n"
    );
    assert_eq!(
        c.cmd("RCPT TO:<rcpt@example.net>"),
        "250 2.1.5 Recipient OK\r\n"
    );
    let big = message("too-big-bdat", 12_000);
    let mut bdat = format!("BDAT {} LAST\r\n", big.len()).into_bytes();
    bdat.extend_from_slice(&big);
    c.send(&bdat);
    assert_eq!(
        c.reply(),
        "552 5.3.4 Message size exceeds fixed maximum message size\r\n"
    );
    // The session is still usable: a small message goes through, and it is the only one relayed.
    let small = message("small-enough", 1_000);
    assert_eq!(
        c.cmd("MAIL FROM:<sender@example.org>"),
        "250 2.1.0 Sender OK\r\n"
    );
    assert_eq!(
        c.cmd("RCPT TO:<rcpt@example.net>"),
        "250 2.1.5 Recipient OK\r\n"
    );
    assert_eq!(c.cmd("DATA"), "354 End data with <CR><LF>.<CR><LF>\r\n");
    c.send(&dot_stuffed(&small));
    assert_eq!(c.reply(), "250 2.0.0 OK, relayed (Queued as SINK)\r\n");
    let got = next.messages();
    assert_eq!(got.len(), 1, "only the small message may be relayed");
    let body = split_received(
        &got[0].data,
        "\r\n",
        "raw.e2e.test",
        "ESMTP",
        Some("rcpt@example.net"),
    );
    assert_bytes_eq(&body, &small, "small message");
}

fn check_config(text: &str, env: &[(&str, &str)]) -> (i32, String, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("gateway.toml");
    std::fs::write(&path, text).expect("write config");
    let out = Command::new(env!("CARGO_BIN_EXE_cryptshare-gateway"))
        .args(["check-config", "--config"])
        .arg(&path)
        .envs(env.iter().copied())
        .output()
        .expect("run cryptshare-gateway");
    (
        out.status.code().expect("exit code"),
        String::from_utf8_lossy(&out.stdout).replace(&path.display().to_string(), "FILE"),
        String::from_utf8_lossy(&out.stderr).replace(&path.display().to_string(), "FILE"),
    )
}

#[test]
fn check_config_exits_2_naming_the_key() {
    const GOOD: &str =
        "[server]\nlisten = [\"127.0.0.1:2525\"]\n[relay]\nnext_hop = \"127.0.0.1:10026\"\n";
    assert_eq!(
        check_config(GOOD, &[]),
        (0, "FILE: OK\n".into(), String::new())
    );
    assert_eq!(
        check_config(
            &GOOD.replace("[relay]", "max_message_size = 0\n[relay]"),
            &[]
        ),
        (
            2,
            String::new(),
            "FILE:3: server.max_message_size: must be greater than 0\n".into()
        )
    );
    let (code, _, err) = check_config(
        "[server]\nclient_networks = [\"127.0.0.0/8\", \"not-a-net\"]\n[relay]\nnext_hop = \"127.0.0.1:10026\"\n",
        &[],
    );
    assert_eq!(code, 2);
    assert_eq!(
        err,
        "FILE:2: server.client_networks[1]: \"not-a-net\" is not a network (CIDR)\n"
    );
    let (code, _, err) = check_config(&GOOD.replace("listen", "listn"), &[]);
    assert_eq!(code, 2);
    assert!(
        err.starts_with("FILE:2: server.listn: unknown key (valid: listen, listen_tls, "),
        "{err}"
    );
    // Environment overrides are checked like the file.
    let (code, _, err) = check_config(GOOD, &[("CSGW__SERVER__LISTEN", "localhost:25")]);
    assert_eq!(code, 2);
    assert!(
        err.starts_with(
            "CSGW__SERVER__LISTEN: server.listen[0]: \"localhost:25\" is not an IP:port"
        ),
        "{err}"
    );
}

#[test]
fn sigterm_closes_idle_sessions_lets_open_transactions_finish_and_exits_0() {
    let rt = runtime();
    let next = rt.block_on(Sink::start(Script::default())).expect("sink");
    let mut gw = Gateway::start("", &next.addr().to_string(), "");
    let msg = message("in-flight-at-sigterm", 20_000);
    let (head, _) = msg.split_at(msg.len() / 2);

    let mut idle = open(gw.port);
    let mut busy = open(gw.port);
    busy.send(b"MAIL FROM:<sender@example.org>\r\nRCPT TO:<rcpt@example.net>\r\nDATA\r\n");
    for want in [
        "250 2.1.0 Sender OK\r\n",
        "250 2.1.5 Recipient OK\r\n",
        "354 End data with <CR><LF>.<CR><LF>\r\n",
    ] {
        assert_eq!(busy.reply(), want);
    }
    let stuffed = dot_stuffed(&msg);
    let half = dot_stuffed(head).len() - 3;
    busy.send(&stuffed[..half]);

    gw.signal(libc::SIGTERM);
    let closing =
        format!("421 4.3.2 {HOSTNAME} Service shutting down, closing transmission channel\r\n");
    // The session without a transaction is closed at once; that 421 also says the drain began.
    assert_eq!(idle.reply(), closing);
    idle.expect_eof();
    // The open transaction finishes and is relayed; then that session is closed too.
    busy.send(&stuffed[half..]);
    assert_eq!(busy.reply(), "250 2.0.0 OK, relayed (Queued as SINK)\r\n");
    assert_eq!(busy.reply(), closing);
    busy.expect_eof();
    let status = gw.wait_exit();
    assert!(status.success(), "exit status {status}");
    let got = next.messages();
    assert_eq!(got.len(), 1);
    let body = split_received(
        &got[0].data,
        "\r\n",
        "raw.e2e.test",
        "ESMTP",
        Some("rcpt@example.net"),
    );
    assert_bytes_eq(&body, &msg, "message finished during shutdown");
}

#[test]
fn python_esmtp_parameters_pass_through_and_are_downgraded_to_the_next_hop() {
    let rt = runtime();
    let next = rt.block_on(Sink::start(Script::default())).expect("sink");
    let gw = Gateway::start("", &next.addr().to_string(), "");
    let msg = message("esmtp-parameters", 3_000);
    let sender = "s\u{e9}nder@ex\u{e4}mple.org";
    let lines = python(
        gw.port,
        "plain",
        "",
        &msg,
        sender,
        &["rcpt@example.net"],
        &[
            (
                "MAIL_OPTS",
                &format!(
                    "SMTPUTF8 BODY=8BITMIME SIZE={} RET=HDRS ENVID=abc+2Bdef",
                    msg.len()
                ),
            ),
            (
                "RCPT_OPTS",
                "NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;rcpt@example.net",
            ),
        ],
    );
    let ehlo = &lines[0];
    for kw in ["8BITMIME", "SMTPUTF8", "DSN", "CHUNKING", "SIZE 104857600"] {
        assert!(ehlo.contains(&format!(" / {kw}")), "{kw}: {ehlo}");
    }
    assert_eq!(
        transaction_lines(&lines),
        vec![
            "MAIL 250 2.1.0 Sender OK".to_string(),
            "RCPT 250 2.1.5 Recipient OK".to_string(),
            "DOT 250 2.0.0 OK, relayed (Queued as SINK)".to_string(),
            format!("QUIT 221 2.0.0 {HOSTNAME} closing connection"),
        ]
    );
    let got = next.messages();
    assert_eq!(got.len(), 1);
    assert_eq!(
        got[0].mail_from,
        format!(
            "MAIL FROM:<{sender}> SIZE={} BODY=8BITMIME SMTPUTF8 RET=HDRS ENVID=abc+2Bdef",
            // The declared size plus room for our Received: header (HELO name + hostname + 512).
            msg.len() + "py.e2e.test".len() + HOSTNAME.len() + 512
        )
    );
    assert_eq!(
        got[0].rcpt_to,
        vec!["RCPT TO:<rcpt@example.net> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;rcpt@example.net"]
    );
    let body = split_received(
        &got[0].data,
        "\r\n",
        "py.e2e.test",
        "UTF8SMTP",
        Some("rcpt@example.net"),
    );
    assert_bytes_eq(&body, &msg, "SMTPUTF8 message");

    // smtp-sink offers neither SMTPUTF8 nor CHUNKING: the gateway does not offer SMTPUTF8 either
    // (nothing is accepted that cannot be passed on); BDAT is still offered (relayed as DATA).
    let sink = SmtpSink::start(&[]);
    let gw = Gateway::start("", &sink.next_hop(), "");
    let (mut c, _) = RawSmtp::connect(gw.port);
    let ehlo = c.cmd("EHLO raw.e2e.test");
    assert!(!ehlo.contains("SMTPUTF8"), "{ehlo}");
    assert!(ehlo.contains("\r\n250-8BITMIME\r\n"), "{ehlo}");
    assert!(ehlo.contains("CHUNKING\r\n"), "{ehlo}");
    assert_eq!(
        c.cmd(&format!("MAIL FROM:<{sender}> SMTPUTF8")),
        "555 5.5.4 Unsupported parameter SMTPUTF8\r\n"
    );
}

/// The SIZE a fresh session's EHLO advertises.
fn advertised_size(port: u16) -> String {
    let (mut c, _) = RawSmtp::connect(port);
    let ehlo = c.cmd("EHLO raw.e2e.test");
    ehlo.lines()
        .find_map(|l| l.strip_prefix("250-SIZE "))
        .unwrap_or_else(|| panic!("no SIZE in {ehlo}"))
        .to_string()
}

#[test]
fn sighup_reloads_the_config_and_keeps_the_old_one_when_the_new_is_broken() {
    let rt = runtime();
    let next = rt.block_on(Sink::start(Script::default())).expect("sink");
    let gw = Gateway::start("max_message_size = 10000", &next.addr().to_string(), "");
    assert_eq!(advertised_size(gw.port), "10000");
    let (mut open_session, _) = RawSmtp::connect(gw.port);
    assert!(
        open_session
            .cmd("EHLO raw.e2e.test")
            .contains("250-SIZE 10000\r\n")
    );

    let text = std::fs::read_to_string(&gw.config).expect("config");
    std::fs::write(
        &gw.config,
        text.replace("max_message_size = 10000", "max_message_size = 20000"),
    )
    .expect("rewrite config");
    gw.signal(libc::SIGHUP);
    // New sessions get the new settings once the reload is done.
    wait_until("the reloaded SIZE", || {
        (advertised_size(gw.port) == "20000").then_some(())
    });
    // An open session keeps the settings it started with.
    assert!(
        open_session
            .cmd("EHLO raw.e2e.test")
            .contains("250-SIZE 10000\r\n")
    );

    std::fs::write(
        &gw.config,
        text.replace("max_message_size = 10000", "max_message_size = 0"),
    )
    .expect("rewrite config");
    gw.signal(libc::SIGHUP);
    wait_until("the refused reload in the log", || {
        gw.log()
            .contains("configuration reload refused, keeping the old configuration")
            .then_some(())
    });
    assert!(
        gw.log()
            .contains("server.max_message_size: must be greater than 0"),
        "{}",
        gw.log()
    );
    assert_eq!(advertised_size(gw.port), "20000");
}

#[test]
fn recipient_limit_and_mail_loop_limit_from_the_config() {
    let rt = runtime();
    let next = rt.block_on(Sink::start(Script::default())).expect("sink");
    let gw = Gateway::start(
        "max_recipients = 2\nmax_received_headers = 3",
        &next.addr().to_string(),
        "",
    );
    let mut c = open(gw.port);
    c.send(
        b"MAIL FROM:<sender@example.org>\r\nRCPT TO:<a@example.net>\r\nRCPT TO:<b@example.net>\r\nRCPT TO:<c@example.net>\r\nDATA\r\n",
    );
    let mut replies = String::new();
    for _ in 0..5 {
        replies.push_str(&c.reply());
    }
    assert_eq!(
        replies,
        "250 2.1.0 Sender OK\r\n250 2.1.5 Recipient OK\r\n250 2.1.5 Recipient OK\r\n\
         452 4.5.3 Too many recipients\r\n354 End data with <CR><LF>.<CR><LF>\r\n"
    );
    // Three Received headers are fine (the gateway's own makes the fourth downstream) ...
    let three = [
        "Received: from a by b; Fri, 27 Nov 2026 10:00:00 +0000\r\n"
            .repeat(3)
            .into_bytes(),
        message("three-hops", 1_000),
    ]
    .concat();
    c.send(&dot_stuffed(&three));
    assert_eq!(c.reply(), "250 2.0.0 OK, relayed (Queued as SINK)\r\n");
    // ... four are a loop.
    let four = [
        "Received: from a by b; Fri, 27 Nov 2026 10:00:00 +0000\r\n"
            .repeat(4)
            .into_bytes(),
        message("four-hops", 1_000),
    ]
    .concat();
    assert_eq!(
        c.cmd("MAIL FROM:<sender@example.org>"),
        "250 2.1.0 Sender OK\r\n"
    );
    assert_eq!(
        c.cmd("RCPT TO:<a@example.net>"),
        "250 2.1.5 Recipient OK\r\n"
    );
    assert_eq!(c.cmd("DATA"), "354 End data with <CR><LF>.<CR><LF>\r\n");
    c.send(&dot_stuffed(&four));
    assert_eq!(
        c.reply(),
        "554 5.4.6 Too many Received headers: mail loop detected\r\n"
    );
    let got = next.messages();
    assert_eq!(got.len(), 1);
    assert_eq!(
        got[0].rcpt_to,
        vec!["RCPT TO:<a@example.net>", "RCPT TO:<b@example.net>"]
    );
    let body = split_received(&got[0].data, "\r\n", "raw.e2e.test", "ESMTP", None);
    assert_bytes_eq(&body, &three, "three hops");
}
