//! Arbitrary bytes as the content of one DATA command, read in pieces whose size the input
//! chooses, followed by the real `CRLF . CRLF` and a smuggled second transaction. Asserts that
//! at most one message comes out, that it is the client's content as RFC 5321 unstuffs it, and
//! that a lenient next hop (NULs dropped, any "." line after CR or LF ended by CR or LF is the
//! end — the model of an SMTP smuggling target) reading the message dot-stuffed as the relay
//! sends it finds its end of data exactly at the end, never before.
#![no_main]

mod feed;

use feed::Feed;

use std::sync::{Arc, Mutex};

use cryptshare_gateway::envelope::{Extensions, MailFrom, RcptTo};
use cryptshare_gateway::inbound::{
    self, ConnectionInfo, ConnectionMeta, Handler, SessionSettings, ShutdownSignal, Transaction,
};
use cryptshare_gateway::replies::{self, Reply};
use libfuzzer_sys::fuzz_target;

/// Records the messages.
struct Collect(Arc<Mutex<Vec<Vec<u8>>>>);

impl Handler for Collect {
    async fn extensions(&mut self) -> Extensions {
        Extensions::default()
    }
    async fn mail_from(&mut self, _: &ConnectionInfo, _: &MailFrom) -> Reply {
        replies::sender_ok()
    }
    async fn rcpt_to(&mut self, _: &ConnectionInfo, _: &RcptTo) -> Reply {
        replies::recipient_ok()
    }
    async fn data(&mut self, _: &ConnectionInfo, tx: Transaction) -> Reply {
        self.0.lock().unwrap().push(tx.message.as_bytes().to_vec());
        replies::ok()
    }
    async fn reset(&mut self) {}
}

/// RFC 5321 §4.5.2 receiver side, the reference: the content up to the first line "." after
/// CRLF, with the first dot of other lines starting with "." removed, and the bytes used up to
/// the end of that line (None if there is none).
fn strict_unstuff(raw: &[u8]) -> Option<(Vec<u8>, usize)> {
    let mut out = Vec::new();
    let mut line_start = true;
    let mut i = 0;
    while i < raw.len() {
        if line_start && raw[i] == b'.' {
            if raw[i + 1..].starts_with(b"\r\n") {
                return Some((out, i + 3));
            }
            i += 1;
            line_start = false;
            continue;
        }
        line_start = raw[i] == b'\n' && i > 0 && raw[i - 1] == b'\r';
        out.push(raw[i]);
        i += 1;
    }
    None
}

/// What the relay sends after DATA: a "." added after every LF (bare or not) and at the start,
/// CRLF added if the message does not end with one, then ".\r\n" (outbound `write_stuffed`).
fn relay_stuffed(message: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(message.len() + 8);
    let mut line_start = true;
    for &b in message {
        if line_start && b == b'.' {
            out.push(b'.');
        }
        out.push(b);
        line_start = b == b'\n';
    }
    if !message.is_empty() && !message.ends_with(b"\r\n") {
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b".\r\n");
    out
}

/// The lenient next hop: how many bytes it reads as data before its end (None: no end).
fn lenient_end(stream: &[u8]) -> Option<usize> {
    let mut prev = 0u8; // 0: a line start
    let mut dot = 0u8;
    for (i, &b) in stream.iter().enumerate() {
        if b == 0 {
            continue;
        }
        match (dot, b) {
            (0, b'.') if matches!(prev, 0 | b'\r' | b'\n') => dot = 1,
            (0, _) => prev = b,
            (1 | 2, b'\r') => dot = 2,
            (1 | 2, b'\n') => return Some(i + 1),
            (2, _) => return Some(i),
            (_, _) => {
                dot = 0;
                prev = b;
            }
        }
    }
    None
}

const PREAMBLE: &[u8] = b"EHLO f\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<c@d.test>\r\nDATA\r\n";
const SMUGGLED: &[u8] =
    b"MAIL FROM:<evil@e.test>\r\nRCPT TO:<victim@v.test>\r\nDATA\r\nsmuggled\r\n.\r\nQUIT\r\n";

fuzz_target!(|data: &[u8]| {
    let Some((&ctl, content)) = data.split_first() else {
        return;
    };
    let raw = [content, b"\r\n.\r\n"].concat();
    let Some((expected, used)) = strict_unstuff(&raw) else {
        unreachable!("the appended CRLF.CRLF always ends the data");
    };
    if used != raw.len() {
        // The content holds CRLF.CRLF itself: what follows are the client's own commands.
        return;
    }
    let mut input = PREAMBLE.to_vec();
    input.extend_from_slice(&raw);
    input.extend_from_slice(SMUGGLED);
    let mut settings = SessionSettings::new("fuzz.test", std::env::temp_dir().join("csgw-fuzz"));
    settings.max_line_length = 0;
    settings.max_received_headers = usize::MAX;
    settings.max_errors = 10_000;
    let meta = ConnectionMeta {
        peer: "127.0.0.1:1".parse().unwrap(),
        local: "127.0.0.1:25".parse().unwrap(),
        tls: false,
        probe: Default::default(),
    };
    let messages = Arc::new(Mutex::new(Vec::new()));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    rt.block_on(inbound::serve(
        Feed {
            input,
            pos: 0,
            chunk: usize::from(ctl) + 1,
            wait_for_354: true,
        },
        meta,
        Collect(messages.clone()),
        Arc::new(settings),
        ShutdownSignal::never(),
    ));
    let messages = messages.lock().unwrap();
    // One message per transaction: the content's (unless refused), then the client's second
    // transaction after the real end, which must arrive whole, and nothing else.
    assert!(
        matches!(messages.len(), 1 | 2),
        "{} messages: {messages:?}",
        messages.len()
    );
    assert_eq!(messages.last().unwrap(), b"smuggled\r\n");
    if messages.len() == 2 {
        let m = &messages[0];
        assert_eq!(m, &expected, "content changed");
        let stuffed = relay_stuffed(m);
        assert_eq!(
            lenient_end(&stuffed),
            Some(stuffed.len()),
            "a lenient next hop ends the data early: {m:?}"
        );
    }
});
