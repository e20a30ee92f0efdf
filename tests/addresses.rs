//! Envelope addresses (issue 10, item 2): every address a client may send under RFC 5321 §4.1.2
//! (quoted local parts with `@`, `>`, spaces and quoted pairs, address literals) and RFC 6531
//! (UTF-8 with SMTPUTF8) goes through the real `cryptshare-gateway serve` binary to the next hop
//! exactly as the client sent it — checked byte for byte in what Postfix `smtp-sink` recorded of
//! the MAIL and RCPT commands (ASCII cases: smtp-sink offers no SMTPUTF8) — and is accepted by a
//! second, independent next hop (Python's `aiosmtpd`, with SMTPUTF8), whose record of every
//! envelope, the UTF-8 ones included, is compared exactly too. Malformed paths get the exact `501` reply. Source routes (`<@relay:a@b>`) are
//! accepted and dropped (RFC 5321 §3.3, appendix C): the mailbox goes on without them.
//!
//! Tools (a missing one fails the test): postfix (smtp-sink), python3 with aiosmtpd.

mod e2e_support;
mod support;

use std::path::Path;
use std::process::{Command, Stdio};

use e2e_support::*;

/// One address as sent by the client and as the next hop must see it; `utf8`: needs SMTPUTF8.
struct Case {
    sent: &'static str,
    relayed: &'static str,
    utf8: bool,
}

const fn same(a: &'static str) -> Case {
    Case {
        sent: a,
        relayed: a,
        utf8: false,
    }
}

/// Valid as sender and as recipient.
const MAILBOXES: &[Case] = &[
    same("\"a@b\"@example.org"),
    same("\"bob smith\"@example.org"),
    same("\"a>b\"@example.org"),
    same("\"\\\"quoted\\\\\"@example.org"),
    same("\"\"@example.org"),
    same("\"<x>,;:\"@example.org"),
    same("user+tag@example.org"),
    same("o'hara@example.org"),
    same("!#$%&'*+-/=?^_`{|}~@example.org"),
    same("MixedCase@Example.ORG"),
    same("user@[192.0.2.1]"),
    same("user@[IPv6:2001:db8::1]"),
    Case {
        sent: "j\u{f6}rg@b\u{fc}cher.example",
        relayed: "j\u{f6}rg@b\u{fc}cher.example",
        utf8: true,
    },
    Case {
        sent: "\"j\u{f6}rg m\"@b\u{fc}cher.example",
        relayed: "\"j\u{f6}rg m\"@b\u{fc}cher.example",
        utf8: true,
    },
    Case {
        sent: "@relay1.example,@relay2.example:user@example.org",
        relayed: "user@example.org",
        utf8: false,
    },
];

const SENDER: &str = "sender@example.org";
const RCPT: &str = "rcpt@example.net";

/// One transaction per address, as sender and as recipient, plus `<>` as sender and
/// `<Postmaster>` (no domain, RFC 5321 §4.1.1.3) as recipient. Returns
/// (MAIL path, RCPT path, SMTPUTF8, relayed MAIL path, relayed RCPT path).
fn transactions(utf8: bool) -> Vec<(String, String, bool, String, String)> {
    let mut t = Vec::new();
    for c in MAILBOXES.iter().filter(|c| utf8 || !c.utf8) {
        t.push((
            c.sent.into(),
            RCPT.into(),
            c.utf8,
            c.relayed.into(),
            RCPT.into(),
        ));
        t.push((
            SENDER.into(),
            c.sent.into(),
            c.utf8,
            SENDER.into(),
            c.relayed.into(),
        ));
    }
    t.push((
        String::new(),
        RCPT.into(),
        false,
        String::new(),
        RCPT.into(),
    ));
    t.push((
        SENDER.into(),
        "Postmaster".into(),
        false,
        SENDER.into(),
        "Postmaster".into(),
    ));
    t.push((
        SENDER.into(),
        "postmaster".into(),
        false,
        SENDER.into(),
        "postmaster".into(),
    ));
    t
}

fn message(subject: &str) -> Vec<u8> {
    format!("From: a@example.org\r\nTo: b@example.net\r\nSubject: {subject}\r\n\r\nbody\r\n")
        .into_bytes()
}

/// Send one transaction and return the replies to MAIL, RCPT and the end of data.
fn send(c: &mut RawSmtp, from: &str, rcpt: &str, utf8: bool, subject: &str) -> [String; 3] {
    let param = if utf8 { " SMTPUTF8" } else { "" };
    let mail = c.cmd(&format!("MAIL FROM:<{from}>{param}"));
    let rcpt = c.cmd(&format!("RCPT TO:<{rcpt}>"));
    assert_eq!(c.cmd("DATA"), "354 End data with <CR><LF>.<CR><LF>\r\n");
    c.send(&dot_stuffed(&message(subject)));
    let dot = c.reply();
    [mail, rcpt, dot]
}

/// EHLO; `utf8`: whether SMTPUTF8 is offered (only when the next hop offers it).
fn ehlo(c: &mut RawSmtp, utf8: bool) {
    let ehlo = c.cmd("EHLO client.example");
    assert_eq!(ehlo.contains("\r\n250-SMTPUTF8\r\n"), utf8, "{ehlo}");
}

/// smtp-sink (Postfix 3.7) does not announce SMTPUTF8, so the gateway does not offer it either
/// and the UTF-8 cases go to aiosmtpd only (below), whose record is compared exactly.
#[test]
fn addresses_reach_smtp_sink_byte_exact() {
    let sink = SmtpSink::start(&[]);
    let gw = Gateway::start("", &sink.next_hop(), "");
    let (mut c, _) = RawSmtp::connect(gw.port);
    ehlo(&mut c, false);
    for (i, (from, rcpt, utf8, out_from, out_rcpt)) in transactions(false).into_iter().enumerate() {
        let subject = format!("addr-{i}");
        let [mail, to, dot] = send(&mut c, &from, &rcpt, utf8, &subject);
        let what = format!("MAIL <{from}> RCPT <{rcpt}>");
        assert_eq!(mail, "250 2.1.0 Sender OK\r\n", "{what}");
        assert_eq!(to, "250 2.1.5 Recipient OK\r\n", "{what}");
        assert!(dot.starts_with("250 2.0.0 "), "{what}: {dot}");
        let dump = sink.wait_dump(&format!("Subject: {subject}\n"));
        let param = if utf8 { " SMTPUTF8" } else { "" };
        assert_eq!(
            dump.trace_values("X-Mail-Args"),
            vec![format!("<{out_from}>{param}")],
            "{what}"
        );
        assert_eq!(
            dump.trace_values("X-Rcpt-Args"),
            vec![format!("<{out_rcpt}>")],
            "{what}"
        );
    }
    assert_eq!(
        c.cmd("QUIT"),
        format!("221 2.0.0 {HOSTNAME} closing connection\r\n")
    );
}

/// `aiosmtpd` as the next hop: prints `READY` once listening, then one line per message,
/// `mail_from TAB rcpt_tos (TAB-separated)`.
const AIOSMTPD: &str = r#"
import asyncio, sys
from aiosmtpd.controller import Controller
class Handler:
    async def handle_DATA(self, server, session, envelope):
        print('\t'.join([envelope.mail_from] + envelope.rcpt_tos), flush=True)
        return '250 2.0.0 accepted'
c = Controller(Handler(), hostname='127.0.0.1', port=int(sys.argv[1]), enable_SMTPUTF8=True)
c.start()
print('READY', flush=True)
sys.stdin.read()
c.stop()
"#;

struct Aiosmtpd {
    _process: Process,
    port: u16,
    out: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl Aiosmtpd {
    fn start() -> Aiosmtpd {
        let dir = tempfile::tempdir().expect("tempdir");
        let out = dir.path().join("envelopes");
        let port = free_port();
        let child = Command::new("python3")
            .args(["-c", AIOSMTPD, &port.to_string()])
            .stdin(Stdio::piped())
            .stdout(std::fs::File::create(&out).expect("output file"))
            .spawn()
            .expect("python3");
        let mut process = Process { child };
        wait_until("aiosmtpd to listen", || {
            if let Ok(Some(status)) = process.child.try_wait() {
                panic!("aiosmtpd exited ({status}); python3 -m pip install aiosmtpd");
            }
            lines(&out).first().map(|l| assert_eq!(l, "READY"))
        });
        Aiosmtpd {
            _process: process,
            port,
            out,
            _dir: dir,
        }
    }

    fn envelopes(&self) -> Vec<String> {
        lines(&self.out).into_iter().skip(1).collect()
    }
}

fn lines(p: &Path) -> Vec<String> {
    std::fs::read_to_string(p)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

#[test]
fn addresses_are_accepted_by_aiosmtpd() {
    let next = Aiosmtpd::start();
    let gw = Gateway::start("", &format!("127.0.0.1:{}", next.port), "");
    let (mut c, _) = RawSmtp::connect(gw.port);
    ehlo(&mut c, true);
    let mut want = Vec::new();
    for (i, (from, rcpt, utf8, out_from, out_rcpt)) in transactions(true).into_iter().enumerate() {
        let [mail, to, dot] = send(&mut c, &from, &rcpt, utf8, &format!("aio-{i}"));
        let what = format!("MAIL <{from}> RCPT <{rcpt}>");
        assert_eq!(mail, "250 2.1.0 Sender OK\r\n", "{what}");
        assert_eq!(to, "250 2.1.5 Recipient OK\r\n", "{what}");
        assert!(dot.starts_with("250 2.0.0 "), "{what}: {dot}");
        // aiosmtpd records the null sender as `<>`.
        let out_from = if out_from.is_empty() {
            "<>".into()
        } else {
            out_from
        };
        want.push(format!("{out_from}\t{out_rcpt}"));
    }
    assert_eq!(next.envelopes(), want);
}

#[test]
fn malformed_paths_are_refused_exactly() {
    let sink = SmtpSink::start(&[]);
    let gw = Gateway::start("max_errors = 100", &sink.next_hop(), "");
    let (mut c, _) = RawSmtp::connect(gw.port);
    ehlo(&mut c, false);
    let bad = [
        "<a\"b@example.org>",
        "<\"unterminated@example.org>",
        "<\"a\"b@example.org>",
        "<a@@b>",
        "<a@b..c>",
        "<a@b.>",
        "<.a@b>",
        "<a..b@example.org>",
        "<a b@example.org>",
        "<a@-b.example>",
        "<a@[192.0.2.256]>",
        "<a@[IPv6:2001:db8::zz]>",
        "<@route:>",
        "<@:a@b>",
        "<@route.example:Postmaster>",
        "<user>",
        "<@example.org>",
        "<a@>",
        "<a@b",
        "",
    ];
    for p in bad {
        assert_eq!(
            c.cmd(&format!("MAIL FROM:{p}")),
            "501 5.1.7 Bad sender address syntax\r\n",
            "MAIL FROM:{p}"
        );
    }
    assert_eq!(
        c.cmd(&format!("MAIL FROM:<{SENDER}>")),
        "250 2.1.0 Sender OK\r\n"
    );
    for p in bad.iter().chain(&["<>"]) {
        assert_eq!(
            c.cmd(&format!("RCPT TO:{p}")),
            "501 5.1.3 Bad recipient address syntax\r\n",
            "RCPT TO:{p}"
        );
    }
    // Without SMTPUTF8 a UTF-8 address is well-formed but not allowed.
    assert_eq!(
        c.cmd("RCPT TO:<j\u{f6}rg@b\u{fc}cher.example>"),
        "553 5.6.7 Non-ASCII address requires SMTPUTF8\r\n"
    );
    assert_eq!(c.cmd("RSET"), "250 2.0.0 OK\r\n");
    assert_eq!(
        c.cmd("MAIL FROM:<j\u{f6}rg@b\u{fc}cher.example>"),
        "553 5.6.7 Non-ASCII address requires SMTPUTF8\r\n"
    );
    assert!(sink.dumps().is_empty());
}
