//! The inbound ESMTP session: one client connection. The state machine knows no stream; the I/O
//! loop ([`serve`]) is generic over it, so that the same code runs over TCP, TLS and in-memory
//! test streams.
//!
//! # Structure
//! The session is a small state machine over the bytes the client sends (`State`): command lines
//! (parsed with smtp-proto's `Request::parse`), DATA (our own end-of-data scanner, `DotScan` in
//! `dotscan.rs`), BDAT chunks, a discarding state for over-long lines, and SASL continuation
//! lines. One read may hold many
//! pipelined commands and data; `Session::ingest` walks through all of it before the replies
//! are flushed, so the output is the same however the input was split into reads.
//! The verbs live in their own files as `impl Session` blocks: `greeting.rs` (EHLO/HELO),
//! `mail.rs` (MAIL/RCPT), `data.rs` (DATA/BDAT and the content scanner), `auth.rs` (AUTH),
//! `starttls.rs` (STARTTLS). STARTTLS changes the stream only: the same `Session` value goes on
//! over the TLS stream after forgetting what RFC 3207 says to forget.
//!
//! # Line handling and SMTP smuggling (documented decisions)
//! * Command lines end at LF; a CR before it is optional (bare-LF commands are accepted, as by
//!   Postfix). A command line may be 512 octets including the line ending; MAIL, RCPT and AUTH
//!   lines (and SASL continuation lines) get 2048 because RFC 1870/3461/4954 extend them for their
//!   parameters. A longer line is discarded up to its LF and answered `500 5.5.6 Line too long`.
//! * DATA ends **only** at `CRLF.CRLF`. `\n.\r\n`, `\r.\r\n`, `\n.\n`, `\r\n.\r\r\n` and
//!   friends never end it (smtp-proto's `DataReceiver` ended DATA at `CRLF.CR CRLF`; it is no
//!   longer used).
//! * Bare CR and bare LF are kept unchanged in the message (relay transparency, signatures), with
//!   one exception: a message with a dot line that a lenient next hop could read as an end of
//!   DATA is refused with `554 5.5.2` (after reading it to its real end): a `.` directly after a
//!   bare LF or a bare CR, a `.` line after CRLF ended by anything but CRLF (`.\r\r\n`, `.\n`,
//!   `.` NUL), NULs between a line ending and a `.` (the full list is in `dotscan.rs`). That is
//!   what an SMTP smuggling attack needs; a bare line ending that is not followed by `.` cannot
//!   end DATA anywhere once the outbound side dot-stuffs every line. The same checks apply to
//!   BDAT content, because it may be relayed with DATA.
//! * Text lines of the message may be `max_line_length` octets including CRLF (default 1000,
//!   RFC 5321 §4.5.3.1.6, the transparency dot not counted; 0 = no limit); a longer line makes the
//!   message fail with `554 5.5.6`. `BODY=BINARYMIME` content has no lines and is not checked.
//! * The message size is counted after dot-unstuffing and checked while receiving: once it passes
//!   `max_message_size` the spool is dropped and the rest is read into a discarding receiver
//!   (`552 5.3.4`). `MAIL FROM … SIZE=` above the limit and a BDAT chunk that would pass it are
//!   refused before any data is stored.
//! * `Received:` headers of the message's header block are counted while receiving; more than
//!   `max_received_headers` is a mail loop (`554 5.4.6`).
//!
//! # Handler calls
//! `mail_from` at MAIL, `rcpt_to` per RCPT that passed relay control and limits, `data` at the end
//! of the message, `reset` before the next MAIL after a transaction was opened (also a failed one),
//! on RSET and EHLO/HELO, and at the end of the connection — never twice in a row.
//!
//! # Errors and limits
//! Protocol errors (unknown commands, syntax, bad sequence, relay denied, over-long lines, AUTH
//! failures) are counted; after more than `max_errors` the session ends with `421 4.7.0`. The count
//! starts again after a transaction the handler accepted. Timeouts end the session with
//! `421 4.4.2`: `idle_timeout` (silence), `command_timeout` (one command line, from when the
//! session waits for it: a client trickling a byte every few seconds never goes silent, but it
//! cannot stretch a command beyond this), and the whole-session bound, `session_timeout` —
//! `outside_session_timeout` for a client outside `client_networks` until it authenticates.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use smtp_proto::{Error as ProtoError, Request};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::auth::SaslStep;
use super::data::Incoming;
use super::dotscan::DotScan;
use super::mail::PathLine;
use super::settings::SessionSettings;
use super::{ConnectionInfo, Handler, PeerProbe};
use crate::envelope::{Extensions, MailFrom, RcptTo};
use crate::replies::{self, Reply};

/// Longest command line, CRLF included (RFC 5321 §4.5.3.1.4).
const COMMAND_LINE_MAX: usize = 512;
/// Longest MAIL / RCPT / AUTH line and SASL continuation line: 512 plus the increases of SIZE
/// (+26), DSN (ENVID +100, ORCPT +500) and AUTH= (+500), rounded up.
const EXTENDED_LINE_MAX: usize = 2048;

const READ_BUFFER: usize = 64 * 1024;

/// Shutdown as a session sees it. `drain`: finish the open transaction, then close with 421;
/// idle sessions close at once. `abort`: close now with 421, even in the middle of a transaction.
#[derive(Debug, Clone, Default)]
pub struct ShutdownSignal {
    pub drain: CancellationToken,
    pub abort: CancellationToken,
}

impl ShutdownSignal {
    /// A signal that never fires (tests, tools).
    pub fn never() -> ShutdownSignal {
        ShutdownSignal::default()
    }
}

/// The addresses of a connection, whether it is already encrypted (implicit TLS), and the probe
/// of its socket (`PeerProbe::default()` for a stream without one).
#[derive(Debug, Clone)]
pub struct ConnectionMeta {
    pub peer: SocketAddr,
    pub local: SocketAddr,
    pub tls: bool,
    pub probe: PeerProbe,
}

/// Run one SMTP session to its end: greeting, commands, STARTTLS upgrade, closing.
pub async fn serve<S, H>(
    mut stream: S,
    meta: ConnectionMeta,
    handler: H,
    settings: Arc<SessionSettings>,
    shutdown: ShutdownSignal,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send,
    H: Handler,
{
    let mut buf = vec![0u8; READ_BUFFER];
    let mut session = Session::new(meta, handler, settings, shutdown);
    let greeting = replies::greeting(&session.settings.hostname, &session.settings.greeting);
    session.reply(greeting);
    match session.run(&mut stream, &mut buf).await {
        End::Closed => session.finish(stream).await,
        End::StartTls => session.start_tls(stream, &mut buf).await,
    }
}

pub(super) enum End {
    Closed,
    StartTls,
}

#[derive(Debug, PartialEq, Eq)]
pub(super) enum Flow {
    Continue,
    Close,
    StartTls,
}

pub(super) enum State {
    Command,
    /// Discarding an over-long command line up to its LF.
    SkipLine,
    /// DATA content up to `CRLF.CRLF` (also when the message is refused: it is read to its end).
    Data(DotScan),
    /// A BDAT chunk; `refused`: read and drop it, then answer this (a protocol error).
    Chunk {
        left: u64,
        size: u64,
        last: bool,
        refused: Option<Reply>,
    },
    Sasl(SaslStep),
}

/// An open mail transaction.
pub(super) struct Tx {
    pub(super) queue_id: String,
    pub(super) from: MailFrom,
    pub(super) rcpts: Vec<RcptTo>,
    pub(super) incoming: Option<Incoming>,
    pub(super) bdat: bool,
}

/// Everything of one connection except its byte stream: what survives a STARTTLS upgrade is this
/// one value, continued over the new stream.
pub(super) struct Session<H> {
    pub(super) handler: H,
    pub(super) settings: Arc<SessionSettings>,
    pub(super) info: ConnectionInfo,
    pub(super) shutdown: ShutdownSignal,
    pub(super) started: Instant,
    /// End of the whole session (moved when an outside client authenticates).
    pub(super) deadline: Instant,
    /// When the session began waiting for the command line it is reading (command timeout).
    pub(super) waiting_since: Instant,
    pub(super) state: State,
    pub(super) line: Vec<u8>,
    pub(super) out: Vec<u8>,
    pub(super) greeted: bool,
    /// Extensions advertised by the last EHLO; `None` after HELO.
    pub(super) ext: Option<Extensions>,
    pub(super) tx: Option<Tx>,
    pub(super) handler_dirty: bool,
    pub(super) errors: u32,
    pub(super) auth_failures: u32,
    /// Bytes of this read follow the command line being executed: the client sent them before
    /// it could have seen the reply (what RFC 2920 forbids after DATA).
    pub(super) input_pending: bool,
}

impl<H: Handler> Session<H> {
    fn new(
        meta: ConnectionMeta,
        handler: H,
        settings: Arc<SessionSettings>,
        shutdown: ShutdownSignal,
    ) -> Self {
        let info = ConnectionInfo {
            peer: meta.peer,
            local: meta.local,
            helo: String::new(),
            esmtp: false,
            tls: meta.tls,
            auth_user: None,
            may_relay: settings.may_relay(&meta.peer),
            peer_probe: meta.probe,
        };
        let started = Instant::now();
        let bound = if info.may_relay {
            settings.session_timeout
        } else {
            settings
                .outside_session_timeout
                .min(settings.session_timeout)
        };
        Session {
            handler,
            settings,
            info,
            shutdown,
            started,
            deadline: started + bound,
            waiting_since: started,
            state: State::Command,
            line: Vec::with_capacity(256),
            out: Vec::with_capacity(1024),
            greeted: false,
            ext: None,
            tx: None,
            handler_dirty: false,
            errors: 0,
            auth_failures: 0,
            input_pending: false,
        }
    }

    /// End of connection: close an open transaction towards the handler, then the stream.
    pub(super) async fn finish<S: AsyncWrite + Unpin>(self, mut io: S) {
        self.close().await;
        let _ = tokio::time::timeout(Duration::from_secs(5), io.shutdown()).await;
    }

    /// End of connection without a stream to close (a failed TLS handshake consumed it).
    pub(super) async fn close(mut self) {
        if let Some(tx) = self.tx.take() {
            log_tx(&self.info, &tx, 0, "aborted: connection closed");
        }
        if self.handler_dirty {
            self.handler.reset().await;
        }
    }

    pub(super) fn reply(&mut self, r: Reply) {
        r.write_to(&mut self.out);
    }

    async fn flush<S: AsyncWrite + Unpin>(&mut self, io: &mut S) -> bool {
        if self.out.is_empty() {
            return true;
        }
        let timeout = self.settings.idle_timeout;
        let res = tokio::time::timeout(timeout, async {
            io.write_all(&self.out).await?;
            io.flush().await
        })
        .await;
        self.out.clear();
        matches!(res, Ok(Ok(())))
    }

    fn idle(&self) -> bool {
        self.tx.is_none() && matches!(self.state, State::Command | State::Sasl(_))
    }

    /// Reading a command (or SASL) line rather than message data.
    fn reading_command(&self) -> bool {
        matches!(
            self.state,
            State::Command | State::Sasl(_) | State::SkipLine
        )
    }

    pub(super) async fn run<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        io: &mut S,
        buf: &mut [u8],
    ) -> End {
        loop {
            if !self.flush(io).await {
                return End::Closed;
            }
            let now = Instant::now();
            let idle_at = now + self.settings.idle_timeout;
            let command_at = if self.reading_command() {
                self.waiting_since + self.settings.command_timeout
            } else {
                idle_at
            };
            let wake = idle_at.min(self.deadline).min(command_at);
            let idle = self.idle();
            let read = tokio::select! {
                biased;
                _ = self.shutdown.abort.cancelled() => None,
                _ = self.shutdown.drain.cancelled(), if idle => None,
                r = tokio::time::timeout_at(wake, io.read(buf)) => Some(r),
            };
            let n = match read {
                None => {
                    // Say why an open transaction ends here, before `finish` sees only a close.
                    if let Some(tx) = self.tx.take() {
                        log_tx(&self.info, &tx, 0, "aborted: shutdown");
                    }
                    let r = replies::shutting_down(&self.settings.hostname);
                    self.reply(r);
                    let _ = self.flush(io).await;
                    return End::Closed;
                }
                Some(Err(_)) => {
                    let r = if wake == self.deadline {
                        replies::session_timeout(&self.settings.hostname)
                    } else if wake == command_at && command_at < idle_at {
                        replies::command_timeout(&self.settings.hostname)
                    } else {
                        replies::idle_timeout(&self.settings.hostname)
                    };
                    self.reply(r);
                    let _ = self.flush(io).await;
                    return End::Closed;
                }
                Some(Ok(Ok(0))) | Some(Ok(Err(_))) => return End::Closed,
                Some(Ok(Ok(n))) => n,
            };
            let flow = self.ingest(&buf[..n]).await;
            // A new command's clock starts while nothing of it has arrived yet: after a
            // complete line, after the data, and while not reading commands at all (an
            // over-long line being skipped is still the same command).
            let partial = !self.line.is_empty() || matches!(self.state, State::SkipLine);
            if !self.reading_command() || !partial {
                self.waiting_since = Instant::now();
            }
            match flow {
                Flow::Continue => {}
                Flow::Close => {
                    let _ = self.flush(io).await;
                    return End::Closed;
                }
                Flow::StartTls => {
                    // Whatever followed STARTTLS in this read is dropped here: plaintext must
                    // never be executed as if it had come through TLS (CVE-2011-0411 class).
                    return if self.flush(io).await {
                        End::StartTls
                    } else {
                        End::Closed
                    };
                }
            }
        }
    }

    /// Process one read's worth of input completely.
    async fn ingest(&mut self, mut input: &[u8]) -> Flow {
        while !input.is_empty() {
            let state = std::mem::replace(&mut self.state, State::Command);
            let flow = match state {
                State::Command => match take_line(&mut self.line, &mut input, false) {
                    LineStatus::Complete => {
                        let line = std::mem::take(&mut self.line);
                        self.input_pending = !input.is_empty();
                        let flow = self.command(&line).await;
                        self.line = line;
                        self.line.clear();
                        flow
                    }
                    LineStatus::Partial => Flow::Continue,
                    LineStatus::TooLong { skip_rest } => self.too_long(skip_rest),
                },
                State::SkipLine => match memchr::memchr(b'\n', input) {
                    Some(p) => {
                        input = &input[p + 1..];
                        self.error(replies::line_too_long())
                    }
                    None => {
                        input = &[];
                        self.state = State::SkipLine;
                        Flow::Continue
                    }
                },
                State::Sasl(step) => match take_line(&mut self.line, &mut input, true) {
                    LineStatus::Complete => {
                        let line = std::mem::take(&mut self.line);
                        let flow = self.sasl(step, &line).await;
                        self.line = line;
                        self.line.clear();
                        flow
                    }
                    LineStatus::Partial => {
                        self.state = State::Sasl(step);
                        Flow::Continue
                    }
                    LineStatus::TooLong { skip_rest } => self.too_long(skip_rest),
                },
                State::Data(mut scan) => {
                    let fed = scan.feed(input, |content| {
                        self.absorb(content);
                    });
                    input = &input[fed.consumed..];
                    if scan.bad {
                        self.refuse_dot_line();
                    }
                    if fed.end {
                        self.end_of_message().await
                    } else {
                        self.state = State::Data(scan);
                        Flow::Continue
                    }
                }
                State::Chunk {
                    left,
                    size,
                    last,
                    refused,
                } => {
                    let n = usize::try_from(left).unwrap_or(usize::MAX).min(input.len());
                    let (part, rest) = input.split_at(n);
                    input = rest;
                    if refused.is_none() {
                        self.absorb(part);
                    }
                    let left = left - n as u64;
                    if left == 0 {
                        self.chunk_done(size, last, refused).await
                    } else {
                        self.state = State::Chunk {
                            left,
                            size,
                            last,
                            refused,
                        };
                        Flow::Continue
                    }
                }
            };
            match flow {
                Flow::Continue => {}
                other => return other,
            }
        }
        Flow::Continue
    }

    /// An over-long command or SASL line: answered at once when its LF has been seen, else
    /// after discarding the rest of it (`State::SkipLine`).
    fn too_long(&mut self, skip_rest: bool) -> Flow {
        self.line.clear();
        if skip_rest {
            self.state = State::SkipLine;
            Flow::Continue
        } else {
            self.error(replies::line_too_long())
        }
    }

    /// Reply with a protocol error and count it.
    pub(super) fn error(&mut self, r: Reply) -> Flow {
        self.reply(r);
        self.errors += 1;
        if self.errors > self.settings.max_errors {
            let r = replies::too_many_errors(&self.settings.hostname);
            self.reply(r);
            return Flow::Close;
        }
        Flow::Continue
    }

    pub(super) fn shutting_down(&mut self) -> Flow {
        let r = replies::shutting_down(&self.settings.hostname);
        self.reply(r);
        Flow::Close
    }

    pub(super) async fn reset_handler(&mut self) -> bool {
        if self.handler_dirty {
            self.handler_dirty = false;
            return guarded(&self.shutdown.abort, self.handler.reset())
                .await
                .is_some();
        }
        true
    }

    pub(super) async fn reset_tx(&mut self, why: &str) -> bool {
        if let Some(tx) = self.tx.take() {
            log_tx(&self.info, &tx, 0, why);
        }
        self.reset_handler().await
    }

    async fn command(&mut self, line: &[u8]) -> Flow {
        // MAIL / RCPT: smtp-proto parses the parameters only; the path is read as sent.
        let parse_line = PathLine::split(line).map(|p| p.for_parser());
        let req = match Request::parse(&mut parse_line.as_deref().unwrap_or(line).iter()) {
            Ok(r) => r.into_owned(),
            Err(e) => return self.parse_error(e),
        };
        match req {
            Request::Ehlo { host } => self.helo(host, true).await,
            Request::Helo { host } => self.helo(host, false).await,
            Request::Mail { from } => self.mail(from, line).await,
            Request::Rcpt { to } => self.rcpt(to, line).await,
            Request::Data => self.data(),
            Request::Bdat {
                chunk_size,
                is_last,
            } => self.bdat(chunk_size as u64, is_last).await,
            Request::Auth {
                mechanism,
                initial_response,
            } => self.auth(mechanism, initial_response).await,
            Request::Rset => {
                if !self.reset_tx("aborted: RSET").await {
                    return self.shutting_down();
                }
                self.reply(replies::ok());
                Flow::Continue
            }
            Request::Noop { .. } => {
                self.reply(replies::ok());
                Flow::Continue
            }
            Request::Vrfy { .. } => {
                self.reply(replies::vrfy());
                Flow::Continue
            }
            Request::Help { .. } => {
                self.reply(replies::help());
                Flow::Continue
            }
            Request::Quit => {
                let r = replies::closing(&self.settings.hostname);
                self.reply(r);
                Flow::Close
            }
            Request::StartTls => self.starttls(line),
            Request::Expn { .. }
            | Request::Lhlo { .. }
            | Request::Etrn { .. }
            | Request::Atrn { .. }
            | Request::Burl { .. } => self.error(replies::not_implemented()),
        }
    }

    fn parse_error(&mut self, e: ProtoError) -> Flow {
        let r = match e {
            ProtoError::UnknownCommand => replies::unknown_command(),
            ProtoError::InvalidSenderAddress => replies::bad_sender_syntax(),
            ProtoError::InvalidRecipientAddress => replies::bad_recipient_syntax(),
            ProtoError::SyntaxError { syntax } => replies::syntax_error(syntax),
            ProtoError::InvalidParameter { param } => replies::invalid_parameter(param),
            ProtoError::UnsupportedParameter { param } => replies::unsupported_parameter(&param),
            ProtoError::ResponseTooLong => replies::line_too_long(),
            ProtoError::NeedsMoreData { .. } | ProtoError::InvalidResponse { .. } => {
                replies::syntax_error("command")
            }
        };
        self.error(r)
    }
}

pub(super) async fn guarded<F: Future>(abort: &CancellationToken, f: F) -> Option<F::Output> {
    tokio::select! {
        biased;
        _ = abort.cancelled() => None,
        r = f => Some(r),
    }
}

enum LineStatus {
    Complete,
    Partial,
    /// `skip_rest`: the LF has not been seen yet.
    TooLong {
        skip_rest: bool,
    },
}

/// Move bytes from `input` into `line` up to and including the next LF. `sasl`: the line is a
/// SASL continuation (base64, no verb).
fn take_line(line: &mut Vec<u8>, input: &mut &[u8], sasl: bool) -> LineStatus {
    let limit = |line: &[u8]| {
        if sasl {
            EXTENDED_LINE_MAX
        } else {
            line_limit(line)
        }
    };
    match memchr::memchr(b'\n', input) {
        Some(p) => {
            line.extend_from_slice(&input[..=p]);
            *input = &input[p + 1..];
            if line.len() > limit(line) {
                LineStatus::TooLong { skip_rest: false }
            } else {
                LineStatus::Complete
            }
        }
        None => {
            line.extend_from_slice(input);
            *input = &[];
            // Beyond 512 octets the verb is known, so the limit is too.
            if line.len() > EXTENDED_LINE_MAX
                || (line.len() > COMMAND_LINE_MAX && line.len() > limit(line))
            {
                LineStatus::TooLong { skip_rest: true }
            } else {
                LineStatus::Partial
            }
        }
    }
}

fn line_limit(line: &[u8]) -> usize {
    let verb = line.trim_ascii_start();
    let verb = &verb[..verb.len().min(5)];
    let extended = [b"MAIL ".as_slice(), b"RCPT ", b"AUTH "]
        .iter()
        .any(|v| verb.eq_ignore_ascii_case(v));
    if extended {
        EXTENDED_LINE_MAX
    } else {
        COMMAND_LINE_MAX
    }
}

/// One log line per transaction; no content, no credentials.
pub(super) fn log_tx(info: &ConnectionInfo, tx: &Tx, size: u64, outcome: &str) {
    tracing::info!(
        queue_id = %tx.queue_id,
        peer = %info.peer,
        from = %tx.from.address,
        rcpts = tx.rcpts.len(),
        size,
        tls = info.tls,
        outcome,
        "transaction"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_limits() {
        assert_eq!(line_limit(b"MAIL FROM:<a@b>"), EXTENDED_LINE_MAX);
        assert_eq!(line_limit(b"rcpt to:<a@b>"), EXTENDED_LINE_MAX);
        assert_eq!(line_limit(b"NOOP xxxxxxxx"), COMMAND_LINE_MAX);
        assert_eq!(line_limit(b"EHLO x"), COMMAND_LINE_MAX);
    }
}
