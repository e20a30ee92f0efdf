//! The outbound SMTP client that talks to the next hop, written on smtp-proto's reply parsers.
//!
//! Why not lettre: it never sets `TCP_NODELAY`, copies every message twice, adds a CRLF before the
//! final dot, has no PIPELINING/CHUNKING/DSN and aborts the whole message on one refused recipient
//! (research note §1.3). A relay must be byte-transparent and mirror per-recipient verdicts.
//!
//! TLS to the next hop (`relay.tls`):
//! - `off`: never STARTTLS.
//! - `opportunistic`: STARTTLS when offered, *without* certificate verification (RFC 7435
//!   opportunistic security, like Postfix `may`): unauthenticated encryption beats plaintext, and
//!   a verification failure would otherwise turn into a delivery outage. A handshake that fails
//!   outright is retried once in plaintext on a new connection (the relay does this).
//! - `required`: STARTTLS must be offered and the certificate must verify against the system roots
//!   plus `relay.ca_file`, for `relay.tls_server_name` (default: the host of `relay.next_hop`).

use std::io;
use std::time::Duration;

use memchr::memmem;
use rustls::pki_types::ServerName;
use smtp_proto::response::parser::ResponseReceiver;
use smtp_proto::{
    EXT_8BIT_MIME, EXT_BINARY_MIME, EXT_CHUNKING, EXT_DSN, EXT_PIPELINING, EXT_SIZE, EXT_SMTP_UTF8,
    EXT_START_TLS, EhloResponse,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tokio_util::either::Either;

use super::error::RelayError;
use crate::config::NextHopTls;
use crate::envelope::{Body, MailFrom, RcptTo, Ret, is_mailbox};
use crate::replies::Reply;

/// Bytes handed to one write call while streaming a message.
const WRITE_CHUNK: usize = 256 * 1024;

/// Where and how to connect.
#[derive(Clone)]
pub struct ClientSettings {
    pub host: String,
    pub port: u16,
    /// Our name in EHLO/HELO.
    pub helo_name: String,
    pub tls: NextHopTls,
    /// Built by [`super::tls_connector`]; `None` with `tls = off`.
    pub tls_connector: Option<TlsConnector>,
    pub server_name: ServerName<'static>,
    pub connect_timeout: Duration,
    pub command_timeout: Duration,
}

impl ClientSettings {
    pub fn addr(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

/// What the next hop announced in its EHLO reply.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Capabilities {
    /// smtp-proto `EXT_*` bits.
    pub ext: u32,
    /// `SIZE` limit (0 = none announced).
    pub size: usize,
    /// false after a HELO fallback.
    pub esmtp: bool,
}

impl Capabilities {
    pub fn has(&self, ext: u32) -> bool {
        self.ext & ext != 0
    }
}

/// Replies to a pipelined MAIL + RCPTs.
#[derive(Debug, Clone)]
pub struct EnvelopeReplies {
    pub mail: Reply,
    /// One per recipient when MAIL was accepted; empty when it was not.
    pub rcpts: Vec<Reply>,
}

/// A failed message transfer, telling whether a resend on a new connection is safe.
#[derive(Debug)]
pub struct DataFailure {
    pub error: RelayError,
    /// The end of the message never reached the next hop, so it cannot have accepted it.
    pub retryable: bool,
}

type Stream = Either<TcpStream, Box<TlsStream<TcpStream>>>;

/// One connection to the next hop, greeted and (if configured) encrypted.
pub struct SmtpClient {
    stream: Stream,
    rbuf: Vec<u8>,
    rpos: usize,
    caps: Capabilities,
    tls: bool,
    timeout: Duration,
}

impl std::fmt::Debug for SmtpClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SmtpClient")
            .field("caps", &self.caps)
            .field("tls", &self.tls)
            .finish_non_exhaustive()
    }
}

impl SmtpClient {
    /// Connect, read the greeting, EHLO (HELO fallback) and STARTTLS according to `relay.tls`.
    /// Every failure here is a [`RelayError`] of the "next hop unavailable" kind.
    pub async fn connect(s: &ClientSettings) -> Result<SmtpClient, RelayError> {
        let addr = s.addr();
        let tcp = match tokio::time::timeout(
            s.connect_timeout,
            TcpStream::connect((s.host.as_str(), s.port)),
        )
        .await
        {
            Err(_) => return Err(RelayError::ConnectTimeout { addr }),
            Ok(Err(source)) => return Err(RelayError::Connect { addr, source }),
            Ok(Ok(t)) => t,
        };
        // Without NODELAY the small final write of each message waits for a delayed ACK (40 ms).
        tcp.set_nodelay(true)
            .map_err(|source| RelayError::Connect {
                addr: addr.clone(),
                source,
            })?;
        let mut c = SmtpClient {
            stream: Either::Left(tcp),
            rbuf: Vec::with_capacity(1024),
            rpos: 0,
            caps: Capabilities::default(),
            tls: false,
            timeout: s.connect_timeout,
        };
        let setup = |reason: String| RelayError::Setup {
            addr: addr.clone(),
            reason,
        };
        let greeting = c.read_reply().await.map_err(|e| setup(e.to_string()))?;
        if greeting.code != 220 {
            return Err(setup(format!("greeting {greeting}")));
        }
        c.hello(&s.helo_name)
            .await
            .map_err(|e| setup(e.to_string()))?;

        let offered = c.caps.has(EXT_START_TLS);
        match (s.tls, offered, &s.tls_connector) {
            (NextHopTls::Off, _, _) | (NextHopTls::Opportunistic, false, _) => {}
            (NextHopTls::Required, false, _) => {
                c.quit_quietly().await;
                return Err(RelayError::TlsRequired { addr });
            }
            (_, true, None) => {
                return Err(RelayError::Tls {
                    addr,
                    reason: "no TLS configuration".into(),
                });
            }
            (mode, true, Some(connector)) => {
                let r = c
                    .command(b"STARTTLS\r\n")
                    .await
                    .map_err(|e| setup(e.to_string()))?;
                if r.code != 220 {
                    if mode == NextHopTls::Required {
                        return Err(RelayError::Tls {
                            addr,
                            reason: format!("STARTTLS refused: {r}"),
                        });
                    }
                    // Opportunistic: the next hop withdrew the offer (454); carry on in plaintext.
                } else {
                    // Anything the server sent after its 220 was not protected: drop it.
                    c.rbuf.clear();
                    c.rpos = 0;
                    let Either::Left(tcp) = c.stream else {
                        return Err(RelayError::Tls {
                            addr,
                            reason: "STARTTLS twice".into(),
                        });
                    };
                    let tls = tokio::time::timeout(
                        s.connect_timeout,
                        connector.connect(s.server_name.clone(), tcp),
                    )
                    .await
                    .map_err(|_| RelayError::Tls {
                        addr: addr.clone(),
                        reason: "handshake timed out".into(),
                    })?
                    .map_err(|e| RelayError::Tls {
                        addr: addr.clone(),
                        reason: e.to_string(),
                    })?;
                    c.stream = Either::Right(Box::new(tls));
                    c.tls = true;
                    c.hello(&s.helo_name)
                        .await
                        .map_err(|e| setup(e.to_string()))?;
                }
            }
        }
        c.timeout = s.command_timeout;
        Ok(c)
    }

    pub fn capabilities(&self) -> Capabilities {
        self.caps
    }

    pub fn is_tls(&self) -> bool {
        self.tls
    }

    /// A cheap check for an idle connection: false when the peer has closed it, reset it, or
    /// sent something unsolicited (typically `421` before an idle timeout close).
    pub fn is_alive(&self) -> bool {
        if self.rpos < self.rbuf.len() {
            return false;
        }
        let tcp = match &self.stream {
            Either::Left(t) => t,
            Either::Right(t) => t.get_ref().0,
        };
        match peek_socket(tcp) {
            PeekState::Empty => true,
            PeekState::Closed => false,
            // Under TLS, pending bytes may be a post-handshake message (session ticket); the
            // RSET before reuse verifies such a connection.
            PeekState::Data => self.tls,
        }
    }

    async fn hello(&mut self, name: &str) -> Result<(), RelayError> {
        self.write(format!("EHLO {name}\r\n").as_bytes()).await?;
        let mut raw = Vec::new();
        let r = self.read_reply_raw(Some(&mut raw)).await?;
        if r.code == 250 {
            self.caps = parse_ehlo(&raw, &r);
            return Ok(());
        }
        if r.code == 421 || r.is_transient() {
            return Err(RelayError::Protocol(format!("EHLO answered {r}")));
        }
        let r = self.command(format!("HELO {name}\r\n").as_bytes()).await?;
        if r.code != 250 {
            return Err(RelayError::Protocol(format!("HELO answered {r}")));
        }
        self.caps = Capabilities::default();
        Ok(())
    }

    /// MAIL FROM and RCPTs, in one write when the next hop offers PIPELINING. `rset` sends a RSET
    /// first (a reused connection after an aborted transaction); a failed RSET is an error.
    pub async fn envelope(
        &mut self,
        from: &MailFrom,
        rcpts: &[RcptTo],
        rset: bool,
    ) -> Result<EnvelopeReplies, RelayError> {
        let mail_cmd = self.mail_command(from)?;
        let rcpt_cmds = rcpts
            .iter()
            .map(|r| self.rcpt_command(r))
            .collect::<Result<Vec<_>, _>>()?;
        if self.caps.has(EXT_PIPELINING) {
            let mut out = Vec::with_capacity(64 + mail_cmd.len() + 64 * rcpt_cmds.len());
            if rset {
                out.extend_from_slice(b"RSET\r\n");
            }
            out.extend_from_slice(&mail_cmd);
            for c in &rcpt_cmds {
                out.extend_from_slice(c);
            }
            self.write(&out).await?;
            if rset {
                let r = self.read_reply().await?;
                if r.code != 250 {
                    return Err(RelayError::Protocol(format!("RSET answered {r}")));
                }
            }
            let mail = self.read_reply().await?;
            let mut replies = Vec::with_capacity(rcpt_cmds.len());
            for _ in &rcpt_cmds {
                replies.push(self.read_reply().await?);
            }
            check_closing(&mail)?;
            if !mail.is_positive() {
                replies.clear();
            }
            for r in &replies {
                check_closing(r)?;
            }
            return Ok(EnvelopeReplies {
                mail,
                rcpts: replies,
            });
        }
        if rset {
            let r = self.command(b"RSET\r\n").await?;
            if r.code != 250 {
                return Err(RelayError::Protocol(format!("RSET answered {r}")));
            }
        }
        let mail = self.command(&mail_cmd).await?;
        check_closing(&mail)?;
        let mut replies = Vec::new();
        if mail.is_positive() {
            for c in &rcpt_cmds {
                let r = self.command(c).await?;
                check_closing(&r)?;
                replies.push(r);
            }
        }
        Ok(EnvelopeReplies {
            mail,
            rcpts: replies,
        })
    }

    pub async fn rcpt(&mut self, rcpt: &RcptTo) -> Result<Reply, RelayError> {
        let cmd = self.rcpt_command(rcpt)?;
        let r = self.command(&cmd).await?;
        check_closing(&r)?;
        Ok(r)
    }

    pub async fn rset(&mut self) -> Result<Reply, RelayError> {
        let r = self.command(b"RSET\r\n").await?;
        check_closing(&r)?;
        Ok(r)
    }

    pub async fn noop(&mut self) -> Result<Reply, RelayError> {
        let r = self.command(b"NOOP\r\n").await?;
        check_closing(&r)?;
        Ok(r)
    }

    /// QUIT and close, ignoring every error: the connection is being discarded anyway.
    pub async fn quit_quietly(mut self) {
        let _ = tokio::time::timeout(Duration::from_secs(5), async {
            if self.write(b"QUIT\r\n").await.is_ok() {
                let _ = self.read_reply().await;
            }
            let _ = self.stream.shutdown().await;
        })
        .await;
    }

    /// Send the message: BDAT when the next hop offers CHUNKING, else DATA with dot-stuffing done
    /// while streaming. `parts` are concatenated (e.g. our `Received:` header and the message);
    /// nothing is copied as a whole. Returns the next hop's final reply, whatever its code.
    pub async fn send_data(&mut self, parts: &[&[u8]]) -> Result<Reply, DataFailure> {
        let fail = |error, retryable| DataFailure { error, retryable };
        let total: usize = parts.iter().map(|p| p.len()).sum();
        if self.caps.has(EXT_CHUNKING) {
            let head = format!("BDAT {total} LAST\r\n");
            self.write(head.as_bytes())
                .await
                .map_err(|e| fail(e, true))?;
            for p in parts {
                for piece in p.chunks(WRITE_CHUNK) {
                    self.write(piece).await.map_err(|e| fail(e, true))?;
                }
            }
        } else {
            self.write(b"DATA\r\n").await.map_err(|e| fail(e, true))?;
            let r = self.read_reply().await.map_err(|e| fail(e, true))?;
            if r.code != 354 {
                check_closing(&r).map_err(|e| fail(e, false))?;
                return Ok(r);
            }
            self.write_stuffed(parts, total)
                .await
                .map_err(|e| fail(e, true))?;
        }
        let r = self.read_reply().await.map_err(|e| fail(e, false))?;
        check_closing(&r).map_err(|e| fail(e, false))?;
        Ok(r)
    }

    async fn write_stuffed(&mut self, parts: &[&[u8]], total: usize) -> Result<(), RelayError> {
        let mut out: Vec<u8> = Vec::with_capacity(WRITE_CHUNK.min(total) + 64);
        // The start of the message is the start of a line.
        let mut at_line_start = true;
        let mut tail = [0u8; 2];
        for part in parts {
            if part.is_empty() {
                continue;
            }
            match part.len() {
                1 => tail = [tail[1], part[0]],
                n => tail = [part[n - 2], part[n - 1]],
            }
            let mut rest: &[u8] = part;
            while !rest.is_empty() {
                if at_line_start && rest[0] == b'.' {
                    out.push(b'.');
                }
                // A line starts after every LF, bare or not: receivers that accept bare LF as a
                // line end must never see an unstuffed "\n.\n" (SMTP smuggling).
                let window = &rest[..rest.len().min(WRITE_CHUNK)];
                match memmem::find(window, b"\n.") {
                    Some(p) => {
                        out.extend_from_slice(&window[..=p]);
                        out.push(b'.');
                        rest = &rest[p + 1..];
                        at_line_start = false;
                    }
                    None => {
                        out.extend_from_slice(window);
                        at_line_start = window.last() == Some(&b'\n');
                        rest = &rest[window.len()..];
                    }
                }
                if out.len() >= WRITE_CHUNK {
                    self.write(&out).await?;
                    out.clear();
                }
            }
        }
        if total > 0 && tail != *b"\r\n" {
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b".\r\n");
        self.write(&out).await
    }

    fn mail_command(&self, m: &MailFrom) -> Result<Vec<u8>, RelayError> {
        check_address(&m.address)?;
        let mut c = format!("MAIL FROM:<{}>", m.address);
        if let Some(size) = m.size
            && self.caps.has(EXT_SIZE)
        {
            c.push_str(&format!(" SIZE={size}"));
        }
        match m.body {
            Some(Body::SevenBit) if self.caps.has(EXT_8BIT_MIME) => c.push_str(" BODY=7BIT"),
            Some(Body::EightBitMime) if self.caps.has(EXT_8BIT_MIME) => {
                c.push_str(" BODY=8BITMIME")
            }
            Some(Body::BinaryMime)
                if self.caps.has(EXT_BINARY_MIME) && self.caps.has(EXT_CHUNKING) =>
            {
                c.push_str(" BODY=BINARYMIME")
            }
            _ => {}
        }
        if m.smtputf8 && self.caps.has(EXT_SMTP_UTF8) {
            c.push_str(" SMTPUTF8");
        }
        if self.caps.has(EXT_DSN) {
            match m.ret {
                Some(Ret::Full) => c.push_str(" RET=FULL"),
                Some(Ret::Hdrs) => c.push_str(" RET=HDRS"),
                None => {}
            }
            if let Some(envid) = &m.envid {
                c.push_str(" ENVID=");
                c.push_str(&xtext_encode(envid));
            }
        }
        c.push_str("\r\n");
        Ok(c.into_bytes())
    }

    fn rcpt_command(&self, r: &RcptTo) -> Result<Vec<u8>, RelayError> {
        check_address(&r.address)?;
        let mut c = format!("RCPT TO:<{}>", r.address);
        if self.caps.has(EXT_DSN) {
            let n = &r.notify;
            if n.never {
                c.push_str(" NOTIFY=NEVER");
            } else if n.is_set() {
                let mut v = Vec::new();
                if n.success {
                    v.push("SUCCESS");
                }
                if n.failure {
                    v.push("FAILURE");
                }
                if n.delay {
                    v.push("DELAY");
                }
                c.push_str(" NOTIFY=");
                c.push_str(&v.join(","));
            }
            if let Some(orcpt) = &r.orcpt {
                c.push_str(" ORCPT=rfc822;");
                c.push_str(&xtext_encode(orcpt));
            }
        }
        c.push_str("\r\n");
        Ok(c.into_bytes())
    }

    async fn command(&mut self, cmd: &[u8]) -> Result<Reply, RelayError> {
        self.write(cmd).await?;
        self.read_reply().await
    }

    async fn write(&mut self, b: &[u8]) -> Result<(), RelayError> {
        match tokio::time::timeout(self.timeout, async {
            self.stream.write_all(b).await?;
            self.stream.flush().await
        })
        .await
        {
            Err(_) => Err(RelayError::Timeout),
            Ok(Err(e)) => Err(RelayError::Io(e)),
            Ok(Ok(())) => Ok(()),
        }
    }

    async fn read_reply(&mut self) -> Result<Reply, RelayError> {
        self.read_reply_raw(None).await
    }

    async fn read_reply_raw(&mut self, mut raw: Option<&mut Vec<u8>>) -> Result<Reply, RelayError> {
        let mut rx = ResponseReceiver::default();
        loop {
            if self.rpos < self.rbuf.len() {
                let avail = &self.rbuf[self.rpos..];
                let mut it = avail.iter();
                let res = rx.parse(&mut it);
                let used = avail.len() - it.len();
                if let Some(raw) = raw.as_deref_mut() {
                    raw.extend_from_slice(&avail[..used]);
                }
                self.rpos += used;
                match res {
                    Ok(r) => return Ok(to_reply(r.code, r.esc, &r.message)),
                    Err(smtp_proto::Error::NeedsMoreData { .. }) => {}
                    Err(e) => {
                        return Err(RelayError::Protocol(format!("unparsable reply: {e:?}")));
                    }
                }
            }
            self.rbuf.clear();
            self.rpos = 0;
            let mut chunk = [0u8; 4096];
            let n = match tokio::time::timeout(self.timeout, self.stream.read(&mut chunk)).await {
                Err(_) => return Err(RelayError::Timeout),
                Ok(Err(e)) => return Err(RelayError::Io(e)),
                Ok(Ok(n)) => n,
            };
            if n == 0 {
                return Err(RelayError::Io(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "connection closed by next hop",
                )));
            }
            self.rbuf.extend_from_slice(&chunk[..n]);
        }
    }
}

enum PeekState {
    Empty,
    Data,
    Closed,
}

/// Ask the kernel directly (not tokio's cached readiness, which is only updated when the reactor
/// runs) whether the peer closed the socket or sent something.
fn peek_socket(tcp: &TcpStream) -> PeekState {
    use std::os::fd::AsRawFd;
    let mut b = [0u8; 1];
    // SAFETY: a valid, open socket descriptor owned by `tcp` for the duration of the call, and a
    // one-byte buffer we own; MSG_PEEK leaves the data in the socket, MSG_DONTWAIT never blocks.
    let n = unsafe {
        libc::recv(
            tcp.as_raw_fd(),
            b.as_mut_ptr().cast(),
            1,
            libc::MSG_PEEK | libc::MSG_DONTWAIT,
        )
    };
    match n {
        0 => PeekState::Closed,
        n if n > 0 => PeekState::Data,
        _ => match io::Error::last_os_error().kind() {
            io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted => PeekState::Empty,
            _ => PeekState::Closed,
        },
    }
}

/// A `421` means the next hop is closing the connection: never pass it to our client (it
/// would close *our* session), treat it as a lost connection instead.
fn check_closing(r: &Reply) -> Result<(), RelayError> {
    if r.code == 421 {
        Err(RelayError::Closing(r.clone()))
    } else {
        Ok(())
    }
}

/// An address goes out exactly as the client sent it, so it must be what the inbound side
/// accepts: a mailbox per RFC 5321 §4.1.2 (quoted local parts with `<`, `>`, `@` or spaces
/// included, UTF-8 under SMTPUTF8), `<>` or `<Postmaster>`. That grammar has no CR, LF or
/// other control character, and a `>` only inside a quoted string, so nothing can end the
/// path or the command line early.
fn check_address(a: &str) -> Result<(), RelayError> {
    if a.is_empty() || a.eq_ignore_ascii_case("postmaster") || is_mailbox(a) {
        return Ok(());
    }
    Err(RelayError::Protocol("malformed address".into()))
}

fn to_reply(code: u16, esc: [u8; 3], message: &str) -> Reply {
    Reply {
        code,
        enhanced: if esc == [0, 0, 0] { None } else { Some(esc) },
        lines: message
            .split('\n')
            .map(|l| l.trim_end_matches('\r').to_string())
            .collect(),
    }
}

fn parse_ehlo(raw: &[u8], reply: &Reply) -> Capabilities {
    match EhloResponse::<String>::parse(&mut raw.iter()) {
        Ok(e) => Capabilities {
            ext: e.capabilities,
            size: e.size,
            esmtp: true,
        },
        Err(_) => {
            // smtp-proto refuses some odd capability lines (e.g. unknown AUTH mechanisms);
            // fall back to the keywords that matter for relaying.
            let mut caps = Capabilities {
                esmtp: true,
                ..Capabilities::default()
            };
            for line in reply.lines.iter().skip(1) {
                let mut words = line.split_ascii_whitespace();
                let kw = words.next().unwrap_or("").to_ascii_uppercase();
                caps.ext |= match kw.as_str() {
                    "PIPELINING" => EXT_PIPELINING,
                    "8BITMIME" => EXT_8BIT_MIME,
                    "BINARYMIME" => EXT_BINARY_MIME,
                    "CHUNKING" => EXT_CHUNKING,
                    "SMTPUTF8" => EXT_SMTP_UTF8,
                    "DSN" => EXT_DSN,
                    "STARTTLS" => EXT_START_TLS,
                    "SIZE" => {
                        caps.size = words.next().and_then(|s| s.parse().ok()).unwrap_or(0);
                        EXT_SIZE
                    }
                    _ => 0,
                };
            }
            caps
        }
    }
}

/// RFC 3461 xtext: printable ASCII except `+` and `=` literally, everything else as `+XX`.
pub fn xtext_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if (b'!'..=b'~').contains(&b) && b != b'+' && b != b'=' {
            out.push(b as char);
        } else {
            out.push_str(&format!("+{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xtext_round_trip_characters() {
        assert_eq!(xtext_encode("a+b=c d"), "a+2Bb+3Dc+20d");
        assert_eq!(xtext_encode("ü"), "+C3+BC");
        assert_eq!(xtext_encode("plain@example.org"), "plain@example.org");
    }

    #[test]
    fn reply_conversion_keeps_lines_and_code() {
        let r = to_reply(250, [2, 1, 0], "Sender\nOK");
        assert_eq!(r.to_bytes(), b"250-2.1.0 Sender\r\n250 2.1.0 OK\r\n");
        assert_eq!(to_reply(250, [0, 0, 0], "x").enhanced, None);
    }
}
