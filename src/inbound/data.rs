//! DATA and BDAT: the message content, dot-unstuffed (DATA, by [`DotScan`]) or counted (BDAT),
//! checked while it arrives by the content scanner ([`ContentScan`]: text line lengths,
//! `Received:` headers), the smuggling checks of [`DotScan`] and the size limit, spooled, and
//! handed to the handler with our `Received:` header.

use super::dotscan::{DotScan, Framing};
use super::session::{Flow, Session, State, Tx, guarded, log_tx};
use super::{ConnectionInfo, Handler, Transaction};
use crate::envelope::Body;
use crate::replies::{self, Reply};
use crate::store::spool::SpoolWriter;

/// Longest text line of a message, CRLF included (RFC 5321 §4.5.3.1.6).
pub const TEXT_LINE_MAX: usize = 1000;

/// A message being received.
pub(super) struct Incoming {
    spool: Option<SpoolWriter>,
    scan: ContentScan,
    /// BDAT: the smuggling checks over the content (for DATA they run in `State::Data`).
    dots: Option<DotScan>,
    size: u64,
    refused: Option<Reply>,
}

impl Incoming {
    /// Keep the first reason; drop what was spooled so far.
    fn refuse(&mut self, r: Reply) {
        if self.refused.is_none() {
            self.refused = Some(r);
        }
        self.spool = None;
    }
}

impl<H: Handler> Session<H> {
    fn new_incoming(&self, binary: bool, bdat: bool) -> Incoming {
        Incoming {
            spool: Some(SpoolWriter::new(
                self.settings.spool_memory_limit,
                self.settings.spool_dir.clone(),
            )),
            scan: ContentScan::new(binary, self.settings.max_line_length),
            dots: bdat.then(|| DotScan::new(Framing::Counted)),
            size: 0,
            refused: None,
        }
    }

    pub(super) fn data(&mut self) -> Flow {
        // Content sent before the 354 (RFC 2920 §3.1: DATA ends a pipelined group, the client
        // waits for its reply). A client that does this is a spam bot, or it is trying to make
        // command and data disagree between us and the next hop: the answer is Postfix's
        // (`smtpd_forbid_unauth_pipelining`, on by default since 3.9), and the connection ends,
        // so that none of those bytes is taken as a command or as content. Only what arrived in
        // the same read as the DATA line is judged, before anything else about DATA: content
        // after a refused DATA would otherwise be read as commands. Every real MTA and mail
        // client waits here; an authenticated client is not checked (as in Postfix).
        if self.input_pending && self.info.auth_user.is_none() {
            tracing::info!(
                peer = %self.info.peer,
                "content sent before the 354 reply: connection closed"
            );
            self.reply(replies::pipelining_violation());
            return Flow::Close;
        }
        let Some(tx) = &self.tx else {
            return self.error(replies::need_mail());
        };
        if tx.bdat {
            return self.error(replies::data_after_bdat());
        }
        if tx.rcpts.is_empty() {
            return self.error(replies::no_valid_recipients());
        }
        if tx.from.body == Some(Body::BinaryMime) {
            return self.error(replies::binarymime_needs_bdat());
        }
        let incoming = self.new_incoming(false, false);
        if let Some(tx) = &mut self.tx {
            tx.incoming = Some(incoming);
        }
        self.state = State::Data(DotScan::new(Framing::Dotted));
        self.reply(replies::start_data());
        Flow::Continue
    }

    pub(super) async fn bdat(&mut self, size: u64, last: bool) -> Flow {
        // The chunk is always read, even when refused: its bytes must never be taken as commands.
        let refused = if !self.ext().chunking {
            Some(replies::not_implemented())
        } else {
            match &self.tx {
                None => Some(replies::need_mail()),
                Some(tx) if tx.rcpts.is_empty() => Some(replies::no_valid_recipients()),
                Some(_) => None,
            }
        };
        if refused.is_none() {
            let binary = self
                .tx
                .as_ref()
                .is_some_and(|t| t.from.body == Some(Body::BinaryMime));
            let fresh = self
                .tx
                .as_ref()
                .is_some_and(|t| t.incoming.is_none())
                .then(|| self.new_incoming(binary, true));
            let max = self.settings.max_message_size;
            if let Some(tx) = &mut self.tx {
                tx.bdat = true;
                if let Some(inc) = fresh {
                    tx.incoming = Some(inc);
                }
                if let Some(inc) = &mut tx.incoming
                    && inc.size.saturating_add(size) > max
                {
                    inc.refuse(replies::message_too_big());
                }
            }
        }
        if size == 0 {
            return self.chunk_done(0, last, refused).await;
        }
        self.state = State::Chunk {
            left: size,
            size,
            last,
            refused,
        };
        Flow::Continue
    }

    pub(super) async fn chunk_done(
        &mut self,
        size: u64,
        last: bool,
        refused: Option<Reply>,
    ) -> Flow {
        if let Some(r) = refused {
            return self.error(r);
        }
        let failed = self
            .tx
            .as_ref()
            .and_then(|t| t.incoming.as_ref())
            .is_some_and(|i| i.refused.is_some());
        if last || failed {
            // RFC 3030: a failed chunk ends the transaction; later chunks get 503.
            return self.end_of_message().await;
        }
        self.reply(replies::chunk_received(size));
        Flow::Continue
    }

    /// Account for message bytes. Returns true once the message is refused.
    pub(super) fn absorb(&mut self, data: &[u8]) -> bool {
        let max_size = self.settings.max_message_size;
        let max_received = self.settings.max_received_headers;
        let Some(inc) = self.tx.as_mut().and_then(|t| t.incoming.as_mut()) else {
            return true;
        };
        if inc.refused.is_some() {
            return true;
        }
        inc.size += data.len() as u64;
        if inc.size > max_size {
            inc.refuse(replies::message_too_big());
            return true;
        }
        inc.scan.feed(data);
        if inc.scan.received > max_received {
            inc.refuse(replies::mail_loop());
            return true;
        }
        if let Some(dots) = &mut inc.dots {
            dots.feed(data, |_| {});
            if dots.bad {
                inc.refuse(replies::bare_line_ending_dot());
                return true;
            }
        }
        if inc.scan.long_line {
            inc.refuse(replies::text_line_too_long(self.settings.max_line_length));
            return true;
        }
        if let Some(sp) = &mut inc.spool
            && let Err(e) = sp.write(data)
        {
            tracing::error!(error = %e, "spool write failed");
            inc.refuse(replies::local_error("spool write failed"));
            return true;
        }
        false
    }

    /// DATA had a dot line a lenient next hop could take for the end (see `dotscan.rs`).
    pub(super) fn refuse_dot_line(&mut self) {
        if let Some(inc) = self.tx.as_mut().and_then(|t| t.incoming.as_mut()) {
            inc.refuse(replies::bare_line_ending_dot());
        }
    }

    pub(super) async fn end_of_message(&mut self) -> Flow {
        let Some(mut tx) = self.tx.take() else {
            // Cannot happen: DATA/BDAT states exist only inside a transaction.
            self.reply(replies::bad_sequence());
            return Flow::Continue;
        };
        let Some(mut inc) = tx.incoming.take() else {
            self.reply(replies::bad_sequence());
            return Flow::Continue;
        };
        inc.scan.finish();
        if inc.refused.is_none() && inc.scan.long_line {
            inc.refuse(replies::text_line_too_long(self.settings.max_line_length));
        }
        if let Some(r) = inc.refused {
            log_tx(&self.info, &tx, inc.size, &r.to_string());
            self.reply(r);
            return Flow::Continue;
        }
        let message = match inc.spool.take().map(SpoolWriter::finish) {
            Some(Ok(m)) => m,
            _ => {
                let r = replies::local_error("spool failed");
                log_tx(&self.info, &tx, inc.size, &r.to_string());
                self.reply(r);
                return Flow::Continue;
            }
        };
        let received = received_header(&self.settings.hostname, &self.info, &tx);
        let queue_id = tx.queue_id.clone();
        let transaction = Transaction {
            queue_id: queue_id.clone(),
            mail_from: tx.from.clone(),
            rcpts: tx.rcpts.clone(),
            received,
            message,
            client: self.info.peer_probe.clone(),
        };
        let Some(r) = guarded(
            &self.shutdown.abort,
            self.handler.data(&self.info, transaction),
        )
        .await
        else {
            log_tx(&self.info, &tx, inc.size, "aborted: shutdown");
            return self.shutting_down();
        };
        log_tx(&self.info, &tx, inc.size, &r.to_string());
        if r.is_positive() {
            self.errors = 0;
        }
        self.reply(r);
        Flow::Continue
    }
}

/// Streaming checks over the message as received (after dot-unstuffing): text line lengths and
/// `Received:` headers in the header block. Independent of how the
/// message was split into reads.
#[derive(Debug)]
pub(crate) struct ContentScan {
    /// Longest text line with CRLF; `usize::MAX` for BINARYMIME bodies and without a limit.
    max_line: usize,
    line_len: usize,
    in_header: bool,
    start: [u8; 9],
    start_len: usize,
    pub(crate) received: usize,
    pub(crate) long_line: bool,
}

impl ContentScan {
    pub(crate) fn new(binary: bool, max_line_length: usize) -> ContentScan {
        ContentScan {
            max_line: if binary || max_line_length == 0 {
                usize::MAX
            } else {
                max_line_length
            },
            line_len: 0,
            in_header: true,
            start: [0; 9],
            start_len: 0,
            received: 0,
            long_line: false,
        }
    }

    pub(crate) fn feed(&mut self, data: &[u8]) {
        if data.is_empty() {
            return;
        }
        let mut start = 0;
        for i in memchr::memchr_iter(b'\n', data) {
            self.line_bytes(&data[start..i]);
            self.end_of_line();
            start = i + 1;
        }
        self.line_bytes(&data[start..]);
    }

    fn line_bytes(&mut self, seg: &[u8]) {
        if self.in_header && self.start_len < self.start.len() {
            let n = (self.start.len() - self.start_len).min(seg.len());
            self.start[self.start_len..self.start_len + n].copy_from_slice(&seg[..n]);
            self.start_len += n;
        }
        self.line_len += seg.len();
        // The LF still to come makes it one longer.
        if self.line_len >= self.max_line {
            self.long_line = true;
        }
    }

    fn end_of_line(&mut self) {
        if self.in_header {
            let start = &self.start[..self.start_len];
            if self.line_len == 0 || (self.line_len == 1 && start == b"\r") {
                self.in_header = false;
            } else if start.eq_ignore_ascii_case(b"received:") {
                self.received += 1;
            }
        }
        self.line_len = 0;
        self.start_len = 0;
    }

    /// The message ended (a last line without LF is checked like any other).
    pub(crate) fn finish(&mut self) {
        if self.line_len > self.max_line {
            self.long_line = true;
        }
    }
}

/// An upper bound of the length of [`received_header`] for this connection: its fixed text and
/// the longest queue id, protocol name, IPv6 literal, recipient path (256) and date.
pub(super) fn received_allowance(hostname: &str, info: &ConnectionInfo) -> u64 {
    let helo = info.helo.len().max("unknown".len());
    (helo + hostname.len() + 512) as u64
}

/// The `Received:` header (RFC 5321 §4.4, protocol names of RFC 3848/6531). `for <rcpt>` only
/// with exactly one recipient, so that Bcc recipients are not disclosed to each other.
fn received_header(hostname: &str, info: &ConnectionInfo, tx: &Tx) -> Vec<u8> {
    let ip = match info.peer.ip().to_canonical() {
        std::net::IpAddr::V4(v4) => v4.to_string(),
        std::net::IpAddr::V6(v6) => format!("IPv6:{v6}"),
    };
    let helo = if info.helo.is_empty() {
        "unknown"
    } else {
        &info.helo
    };
    let mut proto = String::new();
    if tx.from.smtputf8 {
        proto.push_str("UTF8SMTP");
    } else {
        proto.push_str("ESMTP");
    }
    if info.tls {
        proto.push('S');
    }
    if info.auth_user.is_some() {
        proto.push('A');
    }
    let date = chrono::Local::now().to_rfc2822();
    let mut h = format!(
        "Received: from {helo} ([{ip}])\r\n\tby {hostname} with {proto} id {}",
        tx.queue_id
    );
    match tx.rcpts.as_slice() {
        [only] => h.push_str(&format!("\r\n\tfor <{}>; {date}\r\n", only.address)),
        _ => h.push_str(&format!(";\r\n\t{date}\r\n")),
    }
    h.into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::envelope::{MailFrom, RcptTo};
    use crate::inbound::mail::new_queue_id;

    fn scan_split(msg: &[u8], at: usize) -> ContentScan {
        let mut s = ContentScan::new(false, TEXT_LINE_MAX);
        s.feed(&msg[..at]);
        s.feed(&msg[at..]);
        s.finish();
        s
    }

    #[test]
    fn received_allowance_covers_the_longest_received_header() {
        let info = ConnectionInfo {
            peer: "[ffff:ffff:ffff:ffff:ffff:ffff:ffff:fffe]:65535"
                .parse()
                .unwrap(),
            local: "[::1]:25".parse().unwrap(),
            helo: "h".repeat(255),
            esmtp: true,
            tls: true,
            auth_user: Some("user".into()),
            may_relay: true,
            peer_probe: Default::default(),
        };
        let tx = Tx {
            queue_id: new_queue_id(),
            from: MailFrom {
                smtputf8: true,
                ..MailFrom::default()
            },
            rcpts: vec![RcptTo {
                address: format!("{}@{}", "l".repeat(64), "d".repeat(190)),
                ..RcptTo::default()
            }],
            incoming: None,
            bdat: false,
        };
        let hostname = "gateway.example.org";
        let h = received_header(hostname, &info, &tx);
        assert!(
            (h.len() as u64) <= received_allowance(hostname, &info),
            "{}",
            String::from_utf8_lossy(&h)
        );
    }

    #[test]
    fn scan_is_split_independent() {
        let msg = b"Received: a\r\nreceived: b\r\nX: y\r\nReceived\r\n\r\nReceived: body\r\n";
        for at in 0..=msg.len() {
            let s = scan_split(msg, at);
            assert_eq!(s.received, 2, "split at {at}");
            assert!(!s.long_line);
        }
    }

    #[test]
    fn text_line_limit_is_1000_with_crlf() {
        let ok = [vec![b'x'; 998], b"\r\n".to_vec()].concat();
        let bad = [vec![b'x'; 999], b"\r\n".to_vec()].concat();
        for at in [0, 1, 500, 998, 999, 1000] {
            assert!(!scan_split(&ok, at.min(ok.len())).long_line);
            assert!(scan_split(&bad, at.min(bad.len())).long_line);
        }
        assert!(scan_split(&vec![b'x'; 1001], 3).long_line);
        let mut bin = ContentScan::new(true, TEXT_LINE_MAX);
        bin.feed(&vec![b'x'; 5000]);
        bin.finish();
        assert!(!bin.long_line);
        // server.max_line_length = 0: no limit; a higher limit counts the same way.
        let mut unlimited = ContentScan::new(false, 0);
        unlimited.feed(&vec![b'x'; 100_000]);
        unlimited.feed(b"\r\n");
        unlimited.finish();
        assert!(!unlimited.long_line);
        let line = |n: usize| [vec![b'x'; n - 2], b"\r\n".to_vec()].concat();
        for (len, long) in [(2048, false), (2049, true)] {
            let mut s = ContentScan::new(false, 2048);
            s.feed(&line(len));
            s.finish();
            assert_eq!(s.long_line, long, "{len}");
        }
    }
}
