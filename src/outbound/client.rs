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
    EXT_START_TLS,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tokio_util::either::Either;

use super::error::RelayError;
use super::wire::{
    PeekState, check_address, check_closing, last_line_len, parse_ehlo, peek_socket, to_reply,
    xforward_answered, xtext_encode,
};
use super::xforward::{self, ClientOrigin};
use crate::config::NextHopTls;
use crate::envelope::{Body, MailFrom, RcptTo, Ret};
use crate::replies::Reply;

/// Bytes handed to one write call while streaming a message.
const WRITE_CHUNK: usize = 256 * 1024;

/// How recent a reply makes a pooled connection alive without a socket check
/// ([`SmtpClient::seems_alive`]).
const FRESH: Duration = Duration::from_millis(500);

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
    /// The reply waits after the connection is set up, per phase (RFC 5321 §4.5.3.2).
    pub timeouts: PhaseTimeouts,
    /// Send XFORWARD when the next hop offers it (`relay.xforward`).
    pub xforward: bool,
}

/// How long the client waits in each phase of a transaction, RFC 5321 §4.5.3.2's client
/// timeouts (and Postfix's `smtp_*_timeout` names): a next hop that is slow to accept the final
/// dot (content scanning) is given long, one that stalls earlier is given up on sooner.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PhaseTimeouts {
    /// EHLO, MAIL, RCPT, RSET, NOOP, XFORWARD replies (§4.5.3.2.2–3: 5 minutes).
    pub command: Duration,
    /// The reply to DATA (the 354, §4.5.3.2.4: 2 minutes).
    pub data_init: Duration,
    /// Each write of the content, and the reply to a BDAT chunk that is not the last
    /// (§4.5.3.2.5: 3 minutes).
    pub data_xfer: Duration,
    /// The reply after the final dot or `BDAT … LAST` (§4.5.3.2.6: 10 minutes).
    pub data_done: Duration,
}

impl PhaseTimeouts {
    /// The RFC's values.
    pub const RFC5321: PhaseTimeouts = PhaseTimeouts {
        command: Duration::from_secs(300),
        data_init: Duration::from_secs(120),
        data_xfer: Duration::from_secs(180),
        data_done: Duration::from_secs(600),
    };

    /// One value for every phase (tests, tools).
    pub fn all(d: Duration) -> PhaseTimeouts {
        PhaseTimeouts {
            command: d,
            data_init: d,
            data_xfer: d,
            data_done: d,
        }
    }
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
    /// The XFORWARD attributes offered (bits of `xforward.rs`; 0 = none, or `relay.xforward`
    /// is off).
    pub xforward: u8,
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
    /// Output not yet handed to the socket: commands and message bytes are queued here and go
    /// out in one write when a reply is awaited (or the buffer is full), so a pipelined envelope
    /// or a small message with its final dot costs one system call, not one per piece.
    wbuf: Vec<u8>,
    rbuf: Vec<u8>,
    rpos: usize,
    /// When the next hop last answered (see [`Self::seems_alive`]).
    answered: std::time::Instant,
    caps: Capabilities,
    tls: bool,
    /// The wait of the phase the client is in (one of `timeouts`, or the connect timeout).
    timeout: Duration,
    timeouts: PhaseTimeouts,
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
            wbuf: Vec::with_capacity(4096),
            rbuf: Vec::with_capacity(1024),
            rpos: 0,
            answered: std::time::Instant::now(),
            caps: Capabilities::default(),
            tls: false,
            timeout: s.connect_timeout,
            timeouts: s.timeouts,
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
        if !s.xforward {
            c.caps.xforward = 0;
        }
        c.timeout = s.timeouts.command;
        Ok(c)
    }

    pub fn capabilities(&self) -> Capabilities {
        self.caps
    }

    pub fn is_tls(&self) -> bool {
        self.tls
    }

    /// As [`Self::is_alive`], without asking the socket when the next hop answered within the
    /// last [`FRESH`]: for taking a connection from the pool, where pass-through mail finds the
    /// connection the previous message left microseconds ago, and the peek was one of the
    /// gateway's 24 system calls per message (BENCHMARKS.md). One that died in that instant fails at MAIL,
    /// before anything of a message was sent, and the relay takes another (as for a stale one).
    /// Not for the check before a message: a connection lost under the message cannot always
    /// be told apart from one that delivered it.
    pub fn seems_alive(&self) -> bool {
        (self.answered.elapsed() < FRESH && self.rpos == self.rbuf.len()) || self.is_alive()
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
        self.envelope_for(from, rcpts, rset, None).await
    }

    /// As [`Self::envelope`], with the original client as XFORWARD between RSET and MAIL when
    /// the next hop offers it (see `xforward.rs`); a refused XFORWARD is logged and the
    /// transaction goes on without it.
    pub async fn envelope_for(
        &mut self,
        from: &MailFrom,
        rcpts: &[RcptTo],
        rset: bool,
        origin: Option<&ClientOrigin>,
    ) -> Result<EnvelopeReplies, RelayError> {
        let xforward_cmds = match origin {
            Some(o) if self.caps.xforward != 0 => xforward::commands(o, self.caps.xforward),
            _ => Vec::new(),
        };
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
            for c in &xforward_cmds {
                out.extend_from_slice(c);
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
            for _ in &xforward_cmds {
                let r = self.read_reply().await?;
                xforward_answered(&r)?;
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
        for c in &xforward_cmds {
            let r = self.command(c).await?;
            xforward_answered(&r)?;
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
        self.send_data_inner(parts, None).await
    }

    /// As [`Self::send_data`], asking `wanted` once everything but the end of the message is
    /// out: when it says no, the end (the final dot, or the `BDAT … LAST` chunk) is never sent
    /// and the error is [`RelayError::ClientGone`]; the connection is then mid-message and must
    /// be dropped (the next hop discards what it got). With CHUNKING the message goes as one
    /// `BDAT` chunk and a `BDAT … LAST` chunk with its last line (at most 1000 octets), so that
    /// the next hop cannot accept it before that question.
    pub async fn send_data_unless(
        &mut self,
        parts: &[&[u8]],
        wanted: &(dyn Fn() -> bool + Sync),
    ) -> Result<Reply, DataFailure> {
        self.send_data_inner(parts, Some(wanted)).await
    }

    async fn send_data_inner(
        &mut self,
        parts: &[&[u8]],
        ask: Option<&(dyn Fn() -> bool + Sync)>,
    ) -> Result<Reply, DataFailure> {
        let r = self.send_data_phases(parts, ask).await;
        // The connection may be reused: its next command waits the command time again.
        self.timeout = self.timeouts.command;
        r
    }

    async fn send_data_phases(
        &mut self,
        parts: &[&[u8]],
        ask: Option<&(dyn Fn() -> bool + Sync)>,
    ) -> Result<Reply, DataFailure> {
        let t = self.timeouts;
        self.timeout = t.data_xfer;
        let wanted = || ask.is_none_or(|w| w());
        let fail = |error, retryable| DataFailure { error, retryable };
        let gone = || DataFailure {
            error: RelayError::ClientGone,
            retryable: false,
        };
        let total: usize = parts.iter().map(|p| p.len()).sum();
        if self.caps.has(EXT_CHUNKING) {
            // Nothing to ask: the whole message in one `BDAT … LAST`.
            let tail_len = if ask.is_some() {
                last_line_len(parts).min(total)
            } else {
                total
            };
            let body = total - tail_len;
            // Without PIPELINING each chunk's reply comes before the next chunk.
            let mut pending = false;
            if body > 0 {
                self.write(format!("BDAT {body}\r\n").as_bytes())
                    .await
                    .map_err(|e| fail(e, true))?;
                self.write_range(parts, 0, body)
                    .await
                    .map_err(|e| fail(e, true))?;
                pending = true;
                if !self.caps.has(EXT_PIPELINING) {
                    pending = false;
                    let r = self.read_reply().await.map_err(|e| fail(e, true))?;
                    check_closing(&r).map_err(|e| fail(e, true))?;
                    if !r.is_positive() {
                        return Ok(r);
                    }
                }
            }
            if !wanted() {
                return Err(gone());
            }
            self.write(format!("BDAT {tail_len} LAST\r\n").as_bytes())
                .await
                .map_err(|e| fail(e, true))?;
            self.write_range(parts, body, total)
                .await
                .map_err(|e| fail(e, true))?;
            self.timeout = t.data_done;
            if pending {
                let r = self.read_reply().await.map_err(|e| fail(e, false))?;
                check_closing(&r).map_err(|e| fail(e, false))?;
                if !r.is_positive() {
                    // The first chunk was refused: the LAST one is answered too; drop that.
                    let _ = self.read_reply().await;
                    return Ok(r);
                }
            }
        } else {
            self.timeout = t.data_init;
            self.write(b"DATA\r\n").await.map_err(|e| fail(e, true))?;
            let r = self.read_reply().await.map_err(|e| fail(e, true))?;
            if r.code != 354 {
                check_closing(&r).map_err(|e| fail(e, false))?;
                return Ok(r);
            }
            self.timeout = t.data_xfer;
            self.write_stuffed(parts, total)
                .await
                .map_err(|e| fail(e, true))?;
            if !wanted() {
                return Err(gone());
            }
            self.write(b".\r\n").await.map_err(|e| fail(e, false))?;
            self.timeout = t.data_done;
        }
        let r = self.read_reply().await.map_err(|e| fail(e, false))?;
        check_closing(&r).map_err(|e| fail(e, false))?;
        Ok(r)
    }

    async fn write_stuffed(&mut self, parts: &[&[u8]], total: usize) -> Result<(), RelayError> {
        // The stuffed copy is built in the output buffer itself (empty after the 354) and goes
        // out whenever it reaches `WRITE_CHUNK`; the rest leaves with the final dot.
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
                    self.wbuf.push(b'.');
                }
                // A line starts after every LF, bare or not: receivers that accept bare LF as a
                // line end must never see an unstuffed "\n.\n" (SMTP smuggling).
                let window = &rest[..rest.len().min(WRITE_CHUNK)];
                match memmem::find(window, b"\n.") {
                    Some(p) => {
                        self.wbuf.extend_from_slice(&window[..=p]);
                        self.wbuf.push(b'.');
                        rest = &rest[p + 1..];
                        at_line_start = false;
                    }
                    None => {
                        self.wbuf.extend_from_slice(window);
                        at_line_start = window.last() == Some(&b'\n');
                        rest = &rest[window.len()..];
                    }
                }
                if self.wbuf.len() >= WRITE_CHUNK {
                    self.flush_out().await?;
                }
            }
        }
        if total > 0 && tail != *b"\r\n" {
            self.wbuf.extend_from_slice(b"\r\n");
        }
        // The final dot is the caller's: it asks first whether the message is still wanted.
        Ok(())
    }

    /// Bytes `from..to` of the concatenation of `parts`, in writes of at most `WRITE_CHUNK`.
    async fn write_range(
        &mut self,
        parts: &[&[u8]],
        from: usize,
        to: usize,
    ) -> Result<(), RelayError> {
        let mut at = 0;
        for p in parts {
            let (start, end) = (at, at + p.len());
            at = end;
            let (a, b) = (from.max(start), to.min(end));
            if a >= b {
                continue;
            }
            for piece in p[a - start..b - start].chunks(WRITE_CHUNK) {
                self.write(piece).await?;
            }
        }
        Ok(())
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

    /// Queue `b` for the next hop. Small pieces wait in the output buffer for the next reply
    /// to be awaited; a large one (message content) goes straight to the socket after what is
    /// queued, without a copy.
    async fn write(&mut self, b: &[u8]) -> Result<(), RelayError> {
        if b.len() >= WRITE_CHUNK / 2 {
            self.flush_out().await?;
            return self.send_now(b).await;
        }
        if self.wbuf.len() + b.len() > WRITE_CHUNK {
            self.flush_out().await?;
        }
        self.wbuf.extend_from_slice(b);
        Ok(())
    }

    /// Hand everything queued to the socket.
    async fn flush_out(&mut self) -> Result<(), RelayError> {
        if self.wbuf.is_empty() {
            return Ok(());
        }
        let buf = std::mem::take(&mut self.wbuf);
        let r = self.send_now(&buf).await;
        self.wbuf = buf;
        self.wbuf.clear();
        r
    }

    async fn send_now(&mut self, b: &[u8]) -> Result<(), RelayError> {
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

    /// The next reply; what is queued goes out first (a reply is only ever awaited for a
    /// command that has been sent).
    async fn read_reply_raw(&mut self, mut raw: Option<&mut Vec<u8>>) -> Result<Reply, RelayError> {
        self.flush_out().await?;
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
                    Ok(r) => {
                        self.answered = std::time::Instant::now();
                        return Ok(to_reply(r.code, r.esc, &r.message));
                    }
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
