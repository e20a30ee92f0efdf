//! The inbound ESMTP session: one client connection, generic over the byte stream so that the same
//! code runs over TCP, TLS and in-memory test streams.
//!
//! # Structure
//! The session is a small state machine over the bytes the client sends (`State`): command lines
//! (parsed with smtp-proto's `Request::parse`), DATA (smtp-proto's `DataReceiver`), BDAT chunks,
//! discarding states for refused data, and SASL continuation lines. One read may hold many
//! pipelined commands and data; `Session::ingest` walks through all of it before the replies
//! are flushed, so the output is the same however the input was split into reads.
//! STARTTLS is a change of type: the plain `Session<S>` is taken apart and a `Session<TlsStream<S>>`
//! is built from its parts.
//!
//! # Line handling and SMTP smuggling (documented decisions)
//! * Command lines end at LF; a CR before it is optional (bare-LF commands are accepted, as by
//!   Postfix). A command line may be [`COMMAND_LINE_MAX`] octets including the line ending; MAIL,
//!   RCPT and AUTH lines get [`EXTENDED_LINE_MAX`] because RFC 1870/3461/4954 extend them for their
//!   parameters. A longer line is discarded up to its LF and answered `500 5.5.6 Line too long`.
//! * DATA ends **only** at `CRLF.CRLF`. `\n.\r\n`, `\r.\r\n`, `\n.\n` and friends are content.
//! * Bare CR and bare LF are kept unchanged in the message (relay transparency, signatures), with
//!   one exception: a message in which a `.` directly follows a bare LF or a bare CR is refused
//!   with `554 5.5.2` (after reading it to its real end). Those are exactly the sequences a next
//!   hop that tolerates bare line endings could read as an end of DATA, i.e. what an SMTP smuggling
//!   attack needs; a bare line ending that is not followed by `.` cannot end DATA anywhere once the
//!   outbound side dot-stuffs every line. The same check applies to BDAT content, because it may
//!   be relayed with DATA.
//! * Text lines of the message may be 1000 octets including CRLF (RFC 5321 §4.5.3.1.6, the
//!   transparency dot not counted); a longer line makes the message fail with `554 5.5.6`.
//!   `BODY=BINARYMIME` content has no lines and is not checked.
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
//! starts again after a transaction the handler accepted. Idle and whole-session timeouts end the
//! session with `421 4.4.2`.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ipnet::IpNet;
use smtp_proto::request::receiver::{DataReceiver, DummyDataReceiver};
use smtp_proto::{Error as ProtoError, Request};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use super::auth::{self, UserDb};
use super::replies::{self, Reply};
use super::{
    Body, ConnectionInfo, Extensions, Handler, MailFrom, Notify, RcptTo, Ret, Transaction,
};
use crate::config::Config;
use crate::store::spool::{self, SpoolWriter};

/// Longest command line, CRLF included (RFC 5321 §4.5.3.1.4).
pub const COMMAND_LINE_MAX: usize = 512;
/// Longest MAIL / RCPT / AUTH line and SASL continuation line: 512 plus the increases of SIZE
/// (+26), DSN (ENVID +100, ORCPT +500) and AUTH= (+500), rounded up.
pub const EXTENDED_LINE_MAX: usize = 2048;
/// Longest text line of a message, CRLF included (RFC 5321 §4.5.3.1.6).
pub const TEXT_LINE_MAX: usize = 1000;

const READ_BUFFER: usize = 64 * 1024;

/// Problems turning the configuration into session settings. Each names its key.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error(transparent)]
    Tls(#[from] super::tls::TlsError),
    #[error("server.auth.users_file: {0}")]
    Auth(#[from] auth::AuthError),
}

/// AUTH settings of a session.
#[derive(Debug, Clone)]
pub struct AuthSettings {
    pub users: UserDb,
    /// Offer and accept AUTH without TLS (tests only).
    pub allow_plaintext: bool,
    /// Wait before answering a failed attempt; multiplied by the number of failures so far.
    pub failure_delay: Duration,
    /// Failed attempts after which the session is closed with 421.
    pub max_failures: u32,
}

/// Everything a session needs from the configuration, resolved once. The server hands each new
/// connection the snapshot current at accept time, so a reload never changes a running session.
#[derive(Clone)]
pub struct SessionSettings {
    pub hostname: String,
    pub greeting: String,
    pub max_message_size: u64,
    pub max_recipients: usize,
    pub client_networks: Vec<IpNet>,
    pub idle_timeout: Duration,
    pub session_timeout: Duration,
    pub max_errors: u32,
    pub max_received_headers: usize,
    /// Longest text line with CRLF; 0 = no limit.
    pub max_line_length: usize,
    pub spool_memory_limit: usize,
    pub spool_dir: PathBuf,
    /// Enables STARTTLS (and implicit-TLS listeners in the server).
    pub tls: Option<TlsAcceptor>,
    pub auth: Option<AuthSettings>,
}

impl std::fmt::Debug for SessionSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionSettings")
            .field("hostname", &self.hostname)
            .field("max_message_size", &self.max_message_size)
            .field("max_recipients", &self.max_recipients)
            .field("client_networks", &self.client_networks)
            .field("tls", &self.tls.is_some())
            .field("auth", &self.auth)
            .finish_non_exhaustive()
    }
}

impl SessionSettings {
    /// The defaults of the configuration (`[server]` without keys), no TLS, no AUTH.
    pub fn new(hostname: impl Into<String>, spool_dir: impl Into<PathBuf>) -> SessionSettings {
        let d = crate::config::ServerConfig::default();
        SessionSettings {
            hostname: hostname.into(),
            greeting: d.greeting,
            max_message_size: d.max_message_size,
            max_recipients: d.max_recipients,
            client_networks: d.client_networks,
            idle_timeout: d.idle_timeout,
            session_timeout: d.session_timeout,
            max_errors: d.max_errors,
            max_received_headers: d.max_received_headers,
            max_line_length: d.max_line_length,
            spool_memory_limit: d.spool_memory_limit,
            spool_dir: spool_dir.into(),
            tls: None,
            auth: None,
        }
    }

    /// Resolve `[server]` (loads the TLS certificate and the users file).
    pub fn from_config(cfg: &Config) -> Result<SessionSettings, SettingsError> {
        let s = &cfg.server;
        let tls = match &s.tls {
            Some(t) => Some(super::tls::load_acceptor(&t.cert, &t.key)?),
            None => None,
        };
        let auth = match &s.auth {
            Some(a) => Some(AuthSettings {
                users: UserDb::load(&a.users_file)?,
                allow_plaintext: a.allow_plaintext,
                failure_delay: a.failure_delay,
                max_failures: a.max_failures,
            }),
            None => None,
        };
        Ok(SessionSettings {
            hostname: s.hostname.clone(),
            greeting: s.greeting.clone(),
            max_message_size: s.max_message_size,
            max_recipients: s.max_recipients,
            client_networks: s.client_networks.clone(),
            idle_timeout: s.idle_timeout,
            session_timeout: s.session_timeout,
            max_errors: s.max_errors,
            max_received_headers: s.max_received_headers,
            max_line_length: s.max_line_length,
            spool_memory_limit: s.spool_memory_limit,
            spool_dir: spool::spool_dir(&cfg.state.dir),
            tls,
            auth,
        })
    }

    fn may_relay(&self, peer: &SocketAddr) -> bool {
        let ip = peer.ip().to_canonical();
        self.client_networks.iter().any(|n| n.contains(&ip))
    }
}

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

/// The addresses of a connection and whether it is already encrypted (implicit TLS).
#[derive(Debug, Clone, Copy)]
pub struct ConnectionMeta {
    pub peer: SocketAddr,
    pub local: SocketAddr,
    pub tls: bool,
}

/// Run one SMTP session to its end: greeting, commands, STARTTLS upgrade, closing.
pub async fn serve<S, H>(
    stream: S,
    meta: ConnectionMeta,
    handler: H,
    settings: Arc<SessionSettings>,
    shutdown: ShutdownSignal,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send,
    H: Handler,
{
    let mut buf = vec![0u8; READ_BUFFER];
    let mut session = Session::new(stream, meta, handler, settings, shutdown);
    let greeting = replies::greeting(&session.settings.hostname, &session.settings.greeting);
    session.reply(greeting);
    match session.run(&mut buf).await {
        End::Closed => session.finish().await,
        End::StartTls => {
            let (io, mut parts) = session.into_parts();
            let Some(acceptor) = parts.settings.tls.clone() else {
                return parts.finish().await;
            };
            let timeout = parts.settings.idle_timeout;
            let handshake = tokio::time::timeout(timeout, acceptor.accept(io)).await;
            let ok = matches!(handshake, Ok(Ok(_)));
            crate::ops::metrics::global().tls_handshake(crate::ops::TlsSide::Inbound, ok);
            match handshake {
                Ok(Ok(tls)) => {
                    parts.info.tls = true;
                    let mut session = Session::from_parts(tls, parts);
                    // A TLS session never returns StartTls: STARTTLS is refused once encrypted.
                    let _ = session.run(&mut buf).await;
                    session.finish().await;
                }
                Ok(Err(e)) => {
                    tracing::debug!(peer = %parts.info.peer, error = %e, "TLS handshake failed");
                    parts.finish().await;
                }
                Err(_) => {
                    tracing::debug!(peer = %parts.info.peer, "TLS handshake timed out");
                    parts.finish().await;
                }
            }
        }
    }
}

enum End {
    Closed,
    StartTls,
}

#[derive(Debug, PartialEq, Eq)]
enum Flow {
    Continue,
    Close,
    StartTls,
}

enum SaslStep {
    Plain,
    LoginUser,
    LoginPass(String),
}

enum State {
    Command,
    /// Discarding an over-long command line up to its LF.
    SkipLine,
    Data(DataReceiver),
    /// Reading a refused DATA body to its end, then answering with the reply.
    SkipData(DummyDataReceiver),
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
struct Tx {
    queue_id: String,
    from: MailFrom,
    rcpts: Vec<RcptTo>,
    incoming: Option<Incoming>,
    bdat: bool,
}

/// A message being received.
struct Incoming {
    spool: Option<SpoolWriter>,
    scan: ContentScan,
    size: u64,
    refused: Option<Reply>,
}

/// The state that survives a STARTTLS upgrade (the stream does not).
struct Parts<H> {
    handler: H,
    settings: Arc<SessionSettings>,
    info: ConnectionInfo,
    shutdown: ShutdownSignal,
    deadline: Instant,
    errors: u32,
    auth_failures: u32,
    handler_dirty: bool,
}

impl<H: Handler> Parts<H> {
    async fn finish(mut self) {
        if self.handler_dirty {
            self.handler.reset().await;
        }
    }
}

struct Session<S, H> {
    io: S,
    handler: H,
    settings: Arc<SessionSettings>,
    info: ConnectionInfo,
    shutdown: ShutdownSignal,
    deadline: Instant,
    state: State,
    line: Vec<u8>,
    scratch: Vec<u8>,
    out: Vec<u8>,
    greeted: bool,
    /// Extensions advertised by the last EHLO; `None` after HELO.
    ext: Option<Extensions>,
    tx: Option<Tx>,
    handler_dirty: bool,
    errors: u32,
    auth_failures: u32,
}

impl<S, H> Session<S, H>
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
    H: Handler,
{
    fn new(
        io: S,
        meta: ConnectionMeta,
        handler: H,
        settings: Arc<SessionSettings>,
        shutdown: ShutdownSignal,
    ) -> Self {
        let info = ConnectionInfo {
            peer: meta.peer,
            local: meta.local,
            helo: String::new(),
            tls: meta.tls,
            auth_user: None,
            may_relay: settings.may_relay(&meta.peer),
        };
        let deadline = Instant::now() + settings.session_timeout;
        Self::from_parts(
            io,
            Parts {
                handler,
                settings,
                info,
                shutdown,
                deadline,
                errors: 0,
                auth_failures: 0,
                handler_dirty: false,
            },
        )
    }

    fn into_parts(self) -> (S, Parts<H>) {
        (
            self.io,
            Parts {
                handler: self.handler,
                settings: self.settings,
                info: self.info,
                shutdown: self.shutdown,
                deadline: self.deadline,
                errors: self.errors,
                auth_failures: self.auth_failures,
                handler_dirty: self.handler_dirty,
            },
        )
    }

    /// Build the session after a TLS handshake (or at connect): RFC 3207 §4.2 — everything
    /// learnt before TLS (EHLO argument, AUTH identity) is forgotten.
    fn from_parts(io: S, mut p: Parts<H>) -> Self {
        if p.info.auth_user.take().is_some() {
            p.info.may_relay = p.settings.may_relay(&p.info.peer);
        }
        p.info.helo.clear();
        Session {
            io,
            handler: p.handler,
            settings: p.settings,
            info: p.info,
            shutdown: p.shutdown,
            deadline: p.deadline,
            state: State::Command,
            line: Vec::with_capacity(256),
            scratch: Vec::new(),
            out: Vec::with_capacity(1024),
            greeted: false,
            ext: None,
            tx: None,
            handler_dirty: p.handler_dirty,
            errors: p.errors,
            auth_failures: p.auth_failures,
        }
    }

    /// End of connection: close an open transaction towards the handler.
    async fn finish(mut self) {
        if let Some(tx) = self.tx.take() {
            log_tx(&self.info, &tx, 0, "aborted: connection closed");
        }
        if self.handler_dirty {
            self.handler.reset().await;
        }
        let _ = tokio::time::timeout(Duration::from_secs(5), self.io.shutdown()).await;
    }

    fn reply(&mut self, r: Reply) {
        r.write_to(&mut self.out);
    }

    async fn flush(&mut self) -> bool {
        if self.out.is_empty() {
            return true;
        }
        let timeout = self.settings.idle_timeout;
        let res = tokio::time::timeout(timeout, async {
            self.io.write_all(&self.out).await?;
            self.io.flush().await
        })
        .await;
        self.out.clear();
        matches!(res, Ok(Ok(())))
    }

    fn idle(&self) -> bool {
        self.tx.is_none() && matches!(self.state, State::Command | State::Sasl(_))
    }

    async fn run(&mut self, buf: &mut [u8]) -> End {
        loop {
            if !self.flush().await {
                return End::Closed;
            }
            let now = Instant::now();
            let idle_at = now + self.settings.idle_timeout;
            let wake = idle_at.min(self.deadline);
            let idle = self.idle();
            let read = tokio::select! {
                biased;
                _ = self.shutdown.abort.cancelled() => None,
                _ = self.shutdown.drain.cancelled(), if idle => None,
                r = tokio::time::timeout_at(wake, self.io.read(buf)) => Some(r),
            };
            let n = match read {
                None => {
                    // Say why an open transaction ends here, before `finish` sees only a close.
                    if let Some(tx) = self.tx.take() {
                        log_tx(&self.info, &tx, 0, "aborted: shutdown");
                    }
                    let r = replies::shutting_down(&self.settings.hostname);
                    self.reply(r);
                    let _ = self.flush().await;
                    return End::Closed;
                }
                Some(Err(_)) => {
                    let r = if wake == self.deadline {
                        replies::session_timeout(&self.settings.hostname)
                    } else {
                        replies::idle_timeout(&self.settings.hostname)
                    };
                    self.reply(r);
                    let _ = self.flush().await;
                    return End::Closed;
                }
                Some(Ok(Ok(0))) | Some(Ok(Err(_))) => return End::Closed,
                Some(Ok(Ok(n))) => n,
            };
            match self.ingest(&buf[..n]).await {
                Flow::Continue => {}
                Flow::Close => {
                    let _ = self.flush().await;
                    return End::Closed;
                }
                Flow::StartTls => {
                    // Whatever followed STARTTLS in this read is dropped here: plaintext must
                    // never be executed as if it had come through TLS (CVE-2011-0411 class).
                    return if self.flush().await {
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
                        let flow = self.command(&line).await;
                        self.line = line;
                        self.line.clear();
                        flow
                    }
                    LineStatus::Partial => Flow::Continue,
                    LineStatus::TooLong { skip_rest } => {
                        self.line.clear();
                        if skip_rest {
                            self.state = State::SkipLine;
                            Flow::Continue
                        } else {
                            self.error(replies::line_too_long())
                        }
                    }
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
                    LineStatus::TooLong { skip_rest } => {
                        self.line.clear();
                        if skip_rest {
                            self.state = State::SkipLine;
                            Flow::Continue
                        } else {
                            self.error(replies::line_too_long())
                        }
                    }
                },
                State::Data(mut rx) => {
                    let mut iter = input.iter();
                    let mut scratch = std::mem::take(&mut self.scratch);
                    let done = rx.ingest(&mut iter, &mut scratch);
                    input = iter.as_slice();
                    // The receiver takes back a CR it has output when the LF of `CRLF.CRLF`
                    // follows, assuming one growing buffer. A trailing CR therefore stays in
                    // the scratch buffer until the next read shows whether it was content.
                    let keep = usize::from(!done && scratch.last() == Some(&b'\r'));
                    let upto = scratch.len() - keep;
                    let refused = self.absorb(&scratch[..upto]);
                    scratch.drain(..upto);
                    if done {
                        self.end_of_message().await
                    } else if refused {
                        self.state = State::SkipData(DummyDataReceiver::new_data(&rx));
                        Flow::Continue
                    } else {
                        self.scratch = scratch;
                        self.state = State::Data(rx);
                        Flow::Continue
                    }
                }
                State::SkipData(mut rx) => {
                    let mut iter = input.iter();
                    let done = rx.ingest(&mut iter);
                    input = iter.as_slice();
                    if done {
                        self.end_of_message().await
                    } else {
                        self.state = State::SkipData(rx);
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

    /// Reply with a protocol error and count it.
    fn error(&mut self, r: Reply) -> Flow {
        self.reply(r);
        self.errors += 1;
        if self.errors > self.settings.max_errors {
            let r = replies::too_many_errors(&self.settings.hostname);
            self.reply(r);
            return Flow::Close;
        }
        Flow::Continue
    }

    fn shutting_down(&mut self) -> Flow {
        let r = replies::shutting_down(&self.settings.hostname);
        self.reply(r);
        Flow::Close
    }

    async fn reset_handler(&mut self) -> bool {
        if self.handler_dirty {
            self.handler_dirty = false;
            return guarded(&self.shutdown.abort, self.handler.reset())
                .await
                .is_some();
        }
        true
    }

    async fn reset_tx(&mut self, why: &str) -> bool {
        if let Some(tx) = self.tx.take() {
            log_tx(&self.info, &tx, 0, why);
        }
        self.reset_handler().await
    }

    async fn command(&mut self, line: &[u8]) -> Flow {
        let req = match Request::parse(&mut line.iter()) {
            Ok(r) => r.into_owned(),
            Err(e) => return self.parse_error(e),
        };
        match req {
            Request::Ehlo { host } => self.helo(host, true).await,
            Request::Helo { host } => self.helo(host, false).await,
            Request::Mail { from } => self.mail(from).await,
            Request::Rcpt { to } => self.rcpt(to).await,
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
            Request::StartTls => self.starttls(),
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

    async fn helo(&mut self, host: String, extended: bool) -> Flow {
        if !self.reset_tx("aborted: EHLO/HELO").await {
            return self.shutting_down();
        }
        self.info.helo = sanitize_helo(&host);
        self.greeted = true;
        if !extended {
            self.ext = None;
            let r = replies::helo(&self.settings.hostname);
            self.reply(r);
            return Flow::Continue;
        }
        let Some(ext) = guarded(&self.shutdown.abort, self.handler.extensions()).await else {
            return self.shutting_down();
        };
        self.ext = Some(ext);
        let s = &self.settings;
        let mut kw = vec![
            "PIPELINING".to_string(),
            format!("SIZE {}", s.max_message_size),
        ];
        if s.tls.is_some() && !self.info.tls {
            kw.push("STARTTLS".into());
        }
        if let Some(a) = &s.auth
            && (self.info.tls || a.allow_plaintext)
            && self.info.auth_user.is_none()
        {
            kw.push("AUTH PLAIN LOGIN".into());
        }
        kw.push("ENHANCEDSTATUSCODES".into());
        if ext.eight_bit_mime {
            kw.push("8BITMIME".into());
        }
        if ext.binarymime && ext.chunking {
            kw.push("BINARYMIME".into());
        }
        if ext.dsn {
            kw.push("DSN".into());
        }
        if ext.smtputf8 {
            kw.push("SMTPUTF8".into());
        }
        if ext.chunking {
            kw.push("CHUNKING".into());
        }
        let r = replies::ehlo(&s.hostname, kw);
        self.reply(r);
        Flow::Continue
    }

    /// Extensions in force: those of the last EHLO, none after HELO.
    fn ext(&self) -> Extensions {
        self.ext.unwrap_or(Extensions {
            eight_bit_mime: false,
            smtputf8: false,
            dsn: false,
            chunking: false,
            binarymime: false,
        })
    }

    async fn mail(&mut self, from: smtp_proto::MailFrom<String>) -> Flow {
        if self.shutdown.drain.is_cancelled() {
            return self.shutting_down();
        }
        if !self.greeted {
            return self.error(replies::helo_first());
        }
        if self.tx.is_some() {
            return self.error(replies::nested_mail());
        }
        let from = match convert_mail_from(from, self.ext()) {
            Ok(f) => f,
            Err(r) => return self.error(r),
        };
        if from
            .size
            .is_some_and(|n| n > self.settings.max_message_size)
        {
            self.reply(replies::message_too_big());
            return Flow::Continue;
        }
        if !from.smtputf8 && !from.address.is_ascii() {
            return self.error(replies::smtputf8_required());
        }
        if !self.reset_handler().await {
            return self.shutting_down();
        }
        self.handler_dirty = true;
        // The message the handler relays is the client's plus our Received: header, so the size
        // declared onwards must include it (RFC 1870: SIZE is an upper estimate, never less).
        let mut onward = from.clone();
        if let Some(n) = onward.size.as_mut() {
            *n = n.saturating_add(received_allowance(&self.settings.hostname, &self.info));
        }
        let Some(r) = guarded(
            &self.shutdown.abort,
            self.handler.mail_from(&self.info, &onward),
        )
        .await
        else {
            return self.shutting_down();
        };
        if r.is_positive() {
            self.tx = Some(Tx {
                queue_id: new_queue_id(),
                from,
                rcpts: Vec::new(),
                incoming: None,
                bdat: false,
            });
        }
        self.reply(r);
        Flow::Continue
    }

    async fn rcpt(&mut self, to: smtp_proto::RcptTo<String>) -> Flow {
        let ext = self.ext();
        let Some(tx) = &self.tx else {
            return self.error(replies::need_mail());
        };
        if tx.incoming.is_some() {
            return self.error(replies::bad_sequence());
        }
        let smtputf8 = tx.from.smtputf8;
        let count = tx.rcpts.len();
        let rcpt = match convert_rcpt_to(to, ext) {
            Ok(r) => r,
            Err(r) => return self.error(r),
        };
        if rcpt.address.is_empty() {
            return self.error(replies::bad_recipient_syntax());
        }
        if !smtputf8 && !rcpt.address.is_ascii() {
            return self.error(replies::smtputf8_required());
        }
        if !self.info.may_relay {
            return self.error(replies::relay_denied());
        }
        if count >= self.settings.max_recipients {
            self.reply(replies::too_many_recipients());
            return Flow::Continue;
        }
        let Some(r) = guarded(
            &self.shutdown.abort,
            self.handler.rcpt_to(&self.info, &rcpt),
        )
        .await
        else {
            return self.shutting_down();
        };
        if r.is_positive()
            && let Some(tx) = &mut self.tx
        {
            tx.rcpts.push(rcpt);
        }
        self.reply(r);
        Flow::Continue
    }

    fn new_incoming(&self, binary: bool) -> Incoming {
        Incoming {
            spool: Some(SpoolWriter::new(
                self.settings.spool_memory_limit,
                self.settings.spool_dir.clone(),
            )),
            scan: ContentScan::new(binary, self.settings.max_line_length),
            size: 0,
            refused: None,
        }
    }

    fn data(&mut self) -> Flow {
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
        let incoming = self.new_incoming(false);
        if let Some(tx) = &mut self.tx {
            tx.incoming = Some(incoming);
        }
        self.state = State::Data(primed_data_receiver());
        self.reply(replies::start_data());
        Flow::Continue
    }

    async fn bdat(&mut self, size: u64, last: bool) -> Flow {
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
                .then(|| self.new_incoming(binary));
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

    async fn chunk_done(&mut self, size: u64, last: bool, refused: Option<Reply>) -> Flow {
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
    fn absorb(&mut self, data: &[u8]) -> bool {
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
        if inc.scan.bare_dot {
            inc.refuse(replies::bare_line_ending_dot());
            return true;
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

    async fn end_of_message(&mut self) -> Flow {
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

    fn starttls(&mut self) -> Flow {
        if self.info.tls {
            return self.error(replies::already_tls());
        }
        if self.settings.tls.is_none() {
            return self.error(replies::not_implemented());
        }
        if self.tx.is_some() {
            return self.error(replies::bad_sequence());
        }
        self.reply(replies::tls_ready());
        Flow::StartTls
    }

    async fn auth(&mut self, mechanism: u64, initial: String) -> Flow {
        let Some(a) = &self.settings.auth else {
            return self.error(replies::auth_not_available());
        };
        if !self.info.tls && !a.allow_plaintext {
            return self.error(replies::auth_encryption_required());
        }
        if self.ext.is_none() {
            return self.error(replies::bad_sequence());
        }
        if self.info.auth_user.is_some() {
            return self.error(replies::auth_already());
        }
        if self.tx.is_some() {
            return self.error(replies::auth_in_transaction());
        }
        match mechanism {
            smtp_proto::AUTH_PLAIN if initial.is_empty() => {
                self.state = State::Sasl(SaslStep::Plain);
                self.reply(replies::auth_challenge(""));
                Flow::Continue
            }
            smtp_proto::AUTH_PLAIN => self.auth_plain(&initial).await,
            smtp_proto::AUTH_LOGIN if initial.is_empty() => {
                self.state = State::Sasl(SaslStep::LoginUser);
                self.reply(replies::auth_challenge(&auth::encode_b64(b"Username:")));
                Flow::Continue
            }
            smtp_proto::AUTH_LOGIN => self.login_user(&initial),
            _ => self.error(replies::auth_mechanism_unsupported()),
        }
    }

    async fn sasl(&mut self, step: SaslStep, line: &[u8]) -> Flow {
        let text = String::from_utf8_lossy(line);
        let text = text.trim_end_matches(['\r', '\n']);
        if text == "*" {
            return self.error(replies::auth_cancelled());
        }
        match step {
            SaslStep::Plain => self.auth_plain(text).await,
            SaslStep::LoginUser => self.login_user(text),
            SaslStep::LoginPass(user) => match auth::decode_b64(text) {
                Some(pass) => self.verify(user, pass).await,
                None => self.error(replies::auth_bad_base64()),
            },
        }
    }

    fn login_user(&mut self, b64: &str) -> Flow {
        match auth::decode_b64(b64).and_then(|u| String::from_utf8(u).ok()) {
            Some(user) => {
                self.state = State::Sasl(SaslStep::LoginPass(user));
                self.reply(replies::auth_challenge(&auth::encode_b64(b"Password:")));
                Flow::Continue
            }
            None => self.error(replies::auth_bad_base64()),
        }
    }

    async fn auth_plain(&mut self, b64: &str) -> Flow {
        if auth::decode_b64(b64).is_none() {
            return self.error(replies::auth_bad_base64());
        }
        match auth::decode_plain(b64) {
            Some((user, pass)) => self.verify(user, pass).await,
            None => self.auth_failure(None).await,
        }
    }

    async fn verify(&mut self, user: String, pass: Vec<u8>) -> Flow {
        let Some(a) = self.settings.auth.clone() else {
            return self.error(replies::auth_not_available());
        };
        let Some(ok) = guarded(&self.shutdown.abort, a.users.verify(&user, &pass)).await else {
            return self.shutting_down();
        };
        if ok {
            tracing::info!(peer = %self.info.peer, user = %user, "authenticated");
            self.info.auth_user = Some(user);
            self.info.may_relay = true;
            self.reply(replies::auth_ok());
            return Flow::Continue;
        }
        self.auth_failure(Some(&user)).await
    }

    async fn auth_failure(&mut self, user: Option<&str>) -> Flow {
        let Some(a) = self.settings.auth.clone() else {
            return self.error(replies::auth_not_available());
        };
        self.auth_failures += 1;
        tracing::warn!(peer = %self.info.peer, user = user.unwrap_or(""), failures = self.auth_failures, "authentication failed");
        // Throttle guessing: each failure waits longer before its reply.
        let delay = a.failure_delay * self.auth_failures;
        if guarded(&self.shutdown.abort, tokio::time::sleep(delay))
            .await
            .is_none()
        {
            return self.shutting_down();
        }
        if self.auth_failures >= a.max_failures {
            self.reply(replies::auth_failed());
            let r = replies::too_many_auth_failures(&self.settings.hostname);
            self.reply(r);
            return Flow::Close;
        }
        self.error(replies::auth_failed())
    }
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

async fn guarded<F: Future>(abort: &CancellationToken, f: F) -> Option<F::Output> {
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

/// smtp-proto's receiver recognises `.CRLF` only after a CRLF it has seen itself; the DATA
/// command's own CRLF counts, so an empty message (`DATA`, `.`) and a dot-stuffed first line work.
fn primed_data_receiver() -> DataReceiver {
    let mut rx = DataReceiver::new();
    let mut sink = Vec::with_capacity(2);
    rx.ingest(&mut b"\r\n".iter(), &mut sink);
    rx
}

/// Streaming checks over the message as received (after dot-unstuffing): text line lengths,
/// `.` after a bare CR/LF, and `Received:` headers in the header block. Independent of how the
/// message was split into reads.
#[derive(Debug)]
pub(crate) struct ContentScan {
    /// Longest text line with CRLF; `usize::MAX` for BINARYMIME bodies and without a limit.
    max_line: usize,
    line_len: usize,
    prev: [u8; 2],
    in_header: bool,
    start: [u8; 9],
    start_len: usize,
    pub(crate) received: usize,
    pub(crate) long_line: bool,
    pub(crate) bare_dot: bool,
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
            // As if preceded by CRLF: a leading '.' is no bare-line-ending dot.
            prev: [b'\r', b'\n'],
            in_header: true,
            start: [0; 9],
            start_len: 0,
            received: 0,
            long_line: false,
            bare_dot: false,
        }
    }

    pub(crate) fn feed(&mut self, data: &[u8]) {
        if data.is_empty() {
            return;
        }
        if !self.bare_dot {
            for i in memchr::memchr_iter(b'.', data) {
                let p1 = if i >= 1 { data[i - 1] } else { self.prev[1] };
                let p2 = match i {
                    0 => self.prev[0],
                    1 => self.prev[1],
                    _ => data[i - 2],
                };
                if p1 == b'\r' || (p1 == b'\n' && p2 != b'\r') {
                    self.bare_dot = true;
                    break;
                }
            }
        }
        let mut start = 0;
        for i in memchr::memchr_iter(b'\n', data) {
            self.line_bytes(&data[start..i]);
            self.end_of_line();
            start = i + 1;
        }
        self.line_bytes(&data[start..]);
        if data.len() >= 2 {
            self.prev = [data[data.len() - 2], data[data.len() - 1]];
        } else {
            self.prev = [self.prev[1], data[0]];
        }
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

fn convert_mail_from(m: smtp_proto::MailFrom<String>, ext: Extensions) -> Result<MailFrom, Reply> {
    use smtp_proto::{
        MAIL_BODY_7BIT, MAIL_BODY_8BITMIME, MAIL_BODY_BINARYMIME, MAIL_BY_NOTIFY, MAIL_BY_RETURN,
        MAIL_BY_TRACE, MAIL_CONPERM, MAIL_REQUIRETLS, MAIL_RET_FULL, MAIL_RET_HDRS, MAIL_SMTPUTF8,
    };
    let unsupported = |p: &str| Err(replies::unsupported_parameter(p));
    if m.flags & (MAIL_REQUIRETLS | MAIL_CONPERM | MAIL_BY_NOTIFY | MAIL_BY_RETURN | MAIL_BY_TRACE)
        != 0
        || m.trans_id.is_some()
        || m.by != 0
        || m.solicit.is_some()
        || m.mtrk.is_some()
        || m.hold_for != 0
        || m.hold_until != 0
        || m.mt_priority != 0
    {
        return unsupported("(extension not offered)");
    }
    let body = if m.flags & MAIL_BODY_BINARYMIME != 0 {
        if !(ext.binarymime && ext.chunking) {
            return unsupported("BODY=BINARYMIME");
        }
        Some(Body::BinaryMime)
    } else if m.flags & MAIL_BODY_8BITMIME != 0 {
        if !ext.eight_bit_mime {
            return unsupported("BODY=8BITMIME");
        }
        Some(Body::EightBitMime)
    } else if m.flags & MAIL_BODY_7BIT != 0 {
        if !ext.eight_bit_mime {
            return unsupported("BODY=7BIT");
        }
        Some(Body::SevenBit)
    } else {
        None
    };
    let smtputf8 = m.flags & MAIL_SMTPUTF8 != 0;
    if smtputf8 && !ext.smtputf8 {
        return unsupported("SMTPUTF8");
    }
    let ret = if m.flags & MAIL_RET_FULL != 0 {
        Some(Ret::Full)
    } else if m.flags & MAIL_RET_HDRS != 0 {
        Some(Ret::Hdrs)
    } else {
        None
    };
    if (ret.is_some() || m.env_id.is_some()) && !ext.dsn {
        return unsupported("RET/ENVID");
    }
    // SIZE: an empty value parses as 0, which carries no information.
    let size = (m.size != 0).then_some(m.size as u64);
    // An AUTH= without the extension being used is tolerated: it is passed on as received.
    Ok(MailFrom {
        address: m.address,
        size,
        body,
        smtputf8,
        ret,
        envid: m.env_id,
        auth: m.auth,
    })
}

fn convert_rcpt_to(r: smtp_proto::RcptTo<String>, ext: Extensions) -> Result<RcptTo, Reply> {
    use smtp_proto::{
        RCPT_CONNEG, RCPT_NOTIFY_DELAY, RCPT_NOTIFY_FAILURE, RCPT_NOTIFY_NEVER,
        RCPT_NOTIFY_SUCCESS, RCPT_RRVS_CONTINUE, RCPT_RRVS_REJECT,
    };
    if r.flags & (RCPT_CONNEG | RCPT_RRVS_REJECT | RCPT_RRVS_CONTINUE) != 0 || r.rrvs != 0 {
        return Err(replies::unsupported_parameter("(extension not offered)"));
    }
    let notify = Notify {
        never: r.flags & RCPT_NOTIFY_NEVER != 0,
        success: r.flags & RCPT_NOTIFY_SUCCESS != 0,
        failure: r.flags & RCPT_NOTIFY_FAILURE != 0,
        delay: r.flags & RCPT_NOTIFY_DELAY != 0,
    };
    if (notify.is_set() || r.orcpt.is_some()) && !ext.dsn {
        return Err(replies::unsupported_parameter("NOTIFY/ORCPT"));
    }
    Ok(RcptTo {
        address: r.address,
        notify,
        orcpt: r.orcpt,
    })
}

/// The EHLO/HELO argument as it may appear in a header and a log line.
fn sanitize_helo(host: &str) -> String {
    host.chars()
        .take(255)
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '[' | ']' | '_') {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// A queue id: microseconds since the epoch plus a process-wide counter, in upper-case hex.
/// Unique within the process and, in practice, across restarts.
pub fn new_queue_id() -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let micros = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros())
        .unwrap_or(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed) & 0xF_FFFF;
    format!("{micros:X}{n:05X}")
}

/// An upper bound of the length of [`received_header`] for this connection: its fixed text and
/// the longest queue id, protocol name, IPv6 literal, recipient path (256) and date.
fn received_allowance(hostname: &str, info: &ConnectionInfo) -> u64 {
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

/// One log line per transaction; no content, no credentials.
fn log_tx(info: &ConnectionInfo, tx: &Tx, size: u64, outcome: &str) {
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
            tls: true,
            auth_user: Some("user".into()),
            may_relay: true,
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
            assert!(!s.bare_dot && !s.long_line);
        }
    }

    #[test]
    fn bare_line_ending_dots() {
        for (msg, bad) in [
            (&b"a\r\n.b\r\n"[..], false),
            (b".a\r\n", false),
            (b"a\n.\r\n", true),
            (b"a\r.\r\n", true),
            (b"a\n.\n", true),
            (b"a\r\n\n.x", true),
            (b"a\nb\rc\r\n", false),
        ] {
            for at in 0..=msg.len() {
                assert_eq!(scan_split(msg, at).bare_dot, bad, "{msg:?} split at {at}");
            }
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

    #[test]
    fn primed_receiver_handles_empty_message_and_leading_dot() {
        let mut rx = primed_data_receiver();
        let mut out = Vec::new();
        assert!(rx.ingest(&mut b".\r\n".iter(), &mut out));
        assert!(out.is_empty());
        let mut rx = primed_data_receiver();
        let mut out = Vec::new();
        assert!(rx.ingest(&mut b"..a\r\n.\r\n".iter(), &mut out));
        assert_eq!(out, b".a\r\n");
    }

    #[test]
    fn line_limits() {
        assert_eq!(line_limit(b"MAIL FROM:<a@b>"), EXTENDED_LINE_MAX);
        assert_eq!(line_limit(b"rcpt to:<a@b>"), EXTENDED_LINE_MAX);
        assert_eq!(line_limit(b"NOOP xxxxxxxx"), COMMAND_LINE_MAX);
        assert_eq!(line_limit(b"EHLO x"), COMMAND_LINE_MAX);
    }

    #[test]
    fn queue_ids_are_unique() {
        let ids: std::collections::HashSet<_> = (0..10_000).map(|_| new_queue_id()).collect();
        assert_eq!(ids.len(), 10_000);
        assert!(ids.iter().all(|i| i.bytes().all(|b| b.is_ascii_hexdigit())));
    }
}
