//! A scriptable SMTP next hop for tests and benchmarks, built on smtp-proto.
//!
//! It records every command line, which lines arrived together in one read (to prove pipelining),
//! and each message's envelope and exact bytes (DATA dot-unstuffed, BDAT as sent). Replies can be
//! scripted per command and per recipient, and it can hang at or close before any stage, or be
//! told to drop all open connections.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use smtp_proto::request::receiver::DataReceiver;
use smtp_proto::{
    EXT_8BIT_MIME, EXT_BINARY_MIME, EXT_CHUNKING, EXT_DSN, EXT_ENHANCED_STATUS_CODES,
    EXT_PIPELINING, EXT_SIZE, EXT_SMTP_UTF8, EXT_START_TLS, EhloResponse, Request,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, watch};
use tokio_util::either::Either;

use cryptshare_gateway::replies::Reply;

/// Points in the dialogue where the sink can be told to hang or to close the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    Greeting,
    Ehlo,
    Mail,
    Rcpt,
    /// The reply to `DATA` (before 354).
    Data,
    /// The final reply after the message content.
    DataEnd,
}

/// What the sink answers. Change it at any time with [`Sink::script`].
#[derive(Debug, Clone)]
pub struct Script {
    pub greeting: Reply,
    /// smtp-proto `EXT_*` bits advertised in EHLO (STARTTLS is added when TLS is configured).
    pub capabilities: u32,
    pub size: usize,
    /// Replaces the EHLO reply (e.g. 502 to force a HELO fallback).
    pub ehlo_reply: Option<Reply>,
    /// Offer STARTTLS when a TLS configuration is present.
    pub starttls: bool,
    pub mail_reply: Reply,
    /// Replies per recipient address (lower case); everyone else gets `rcpt_reply`.
    pub rcpt_replies: HashMap<String, Reply>,
    pub rcpt_reply: Reply,
    /// Reply to DATA before the content (354 unless changed).
    pub data_start_reply: Reply,
    /// Final reply after the content.
    pub data_reply: Reply,
    /// Final reply once for a message whose first recipient is this address (lower case),
    /// instead of `data_reply` (then removed): a next hop refusing one copy of several.
    pub data_replies_once: HashMap<String, Reply>,
    /// Never answer at this stage (the connection stays open).
    pub hang: Option<Stage>,
    /// Answer the end of a message only after this long (a next hop that scans content).
    pub slow_data_end: Option<std::time::Duration>,
    /// Close the connection instead of answering at this stage.
    pub close: Option<Stage>,
    /// As `close`, but only once (then cleared).
    pub close_once: Option<Stage>,
    /// Answer STARTTLS with 220, then send garbage instead of a TLS handshake.
    pub broken_tls: bool,
    /// End DATA the way the most lenient implementations do (the model of an SMTP smuggling
    /// target): NUL bytes are dropped, a line starts after CR or LF alone, and a "." line ended
    /// by CR, LF or any run of CRs ends the data. What follows is read as commands.
    pub lenient_data: bool,
    /// Offer Postfix's XFORWARD with these attribute names (e.g. `"NAME ADDR PORT PROTO HELO
    /// SOURCE"`) and answer it with 250 outside a transaction (503 inside).
    pub xforward: Option<String>,
}

impl Default for Script {
    fn default() -> Self {
        Script {
            greeting: Reply::plain(220, "sink.test ESMTP test sink"),
            capabilities: EXT_PIPELINING
                | EXT_8BIT_MIME
                | EXT_SIZE
                | EXT_CHUNKING
                | EXT_BINARY_MIME
                | EXT_SMTP_UTF8
                | EXT_DSN
                | EXT_ENHANCED_STATUS_CODES,
            size: 0,
            ehlo_reply: None,
            starttls: true,
            mail_reply: Reply::new(250, [2, 1, 0], "Sender OK"),
            rcpt_replies: HashMap::new(),
            rcpt_reply: Reply::new(250, [2, 1, 5], "Recipient OK"),
            data_start_reply: Reply::plain(354, "End data with <CR><LF>.<CR><LF>"),
            data_reply: Reply::new(250, [2, 0, 0], "Queued as SINK"),
            data_replies_once: HashMap::new(),
            hang: None,
            slow_data_end: None,
            close: None,
            close_once: None,
            broken_tls: false,
            lenient_data: false,
            xforward: None,
        }
    }
}

/// One message the sink accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SunkMessage {
    /// 1-based number of the connection it arrived on.
    pub connection: usize,
    pub tls: bool,
    /// The MAIL command line exactly as received, without CRLF.
    pub mail_from: String,
    /// The accepted RCPT command lines, without CRLF.
    pub rcpt_to: Vec<String>,
    pub data: Vec<u8>,
    pub bdat: bool,
}

#[derive(Default)]
struct State {
    connections: usize,
    live: usize,
    commands: Vec<(usize, String)>,
    batches: Vec<Vec<String>>,
    messages: Vec<SunkMessage>,
}

struct Shared {
    state: Mutex<State>,
    script: Mutex<Script>,
    changed: Notify,
    kill: watch::Sender<u64>,
    tls: Option<tokio_rustls::TlsAcceptor>,
}

impl Shared {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
    fn script(&self) -> Script {
        self.script
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

/// A running sink on 127.0.0.1 (stops when dropped).
pub struct Sink {
    addr: SocketAddr,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Sink {
    fn drop(&mut self) {
        self.task.abort();
        self.shared.kill.send_modify(|k| *k += 1);
    }
}

impl Sink {
    pub async fn start(script: Script) -> std::io::Result<Sink> {
        Self::start_inner(script, None).await
    }

    /// A sink that offers STARTTLS with this server configuration.
    pub async fn start_tls(
        script: Script,
        tls: Arc<rustls::ServerConfig>,
    ) -> std::io::Result<Sink> {
        Self::start_inner(script, Some(tokio_rustls::TlsAcceptor::from(tls))).await
    }

    async fn start_inner(
        script: Script,
        tls: Option<tokio_rustls::TlsAcceptor>,
    ) -> std::io::Result<Sink> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (kill, _) = watch::channel(0u64);
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            script: Mutex::new(script),
            changed: Notify::new(),
            kill,
            tls,
        });
        let s2 = shared.clone();
        let task = tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let _ = tcp.set_nodelay(true);
                let id = {
                    let mut st = s2.state();
                    st.connections += 1;
                    st.live += 1;
                    st.connections
                };
                let s3 = s2.clone();
                tokio::spawn(async move {
                    let kill = s3.kill.subscribe();
                    let _ = session(&s3, tcp, id, kill).await;
                    s3.state().live -= 1;
                    s3.changed.notify_waiters();
                });
            }
        });
        Ok(Sink { addr, shared, task })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Change the script for what follows.
    pub fn script(&self, f: impl FnOnce(&mut Script)) {
        f(&mut self.shared.script.lock().unwrap_or_else(|p| p.into_inner()));
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        self.shared.state().connections
    }

    pub fn messages(&self) -> Vec<SunkMessage> {
        self.shared.state().messages.clone()
    }

    /// Every command line received, with the connection number.
    pub fn commands(&self) -> Vec<(usize, String)> {
        self.shared.state().commands.clone()
    }

    /// Command lines grouped by the read they arrived in (pipelined commands share a group).
    pub fn batches(&self) -> Vec<Vec<String>> {
        self.shared.state().batches.clone()
    }

    /// Close every open connection and wait until they are all gone.
    pub async fn kill_connections(&self) {
        self.shared.kill.send_modify(|k| *k += 1);
        loop {
            let notified = self.shared.changed.notified();
            if self.shared.state().live == 0 {
                return;
            }
            notified.await;
        }
    }

    /// Wait until at least `n` messages have been accepted.
    pub async fn wait_messages(&self, n: usize) -> Vec<SunkMessage> {
        loop {
            let notified = self.shared.changed.notified();
            {
                let st = self.shared.state();
                if st.messages.len() >= n {
                    return st.messages.clone();
                }
            }
            notified.await;
        }
    }
}

type Stream = Either<TcpStream, Box<tokio_rustls::server::TlsStream<TcpStream>>>;

enum Mode {
    Command,
    Data(DataReceiver, Vec<u8>),
    Lenient(Lenient),
    Bdat { left: usize, last: bool },
}

/// The lenient end-of-data model of [`Script::lenient_data`], one byte at a time.
#[derive(Default)]
struct Lenient {
    data: Vec<u8>,
    /// The last byte that was not NUL (0 at the start: a line start).
    prev: u8,
    /// 1: a "." at a line start; 2: followed by one or more CRs.
    dot: u8,
}

impl Lenient {
    /// Returns the bytes used and whether the data ended.
    fn ingest(&mut self, input: &[u8]) -> (usize, bool) {
        for (i, &b) in input.iter().enumerate() {
            if b == 0 {
                continue;
            }
            match (self.dot, b) {
                (0, b'.') if matches!(self.prev, 0 | b'\r' | b'\n') => self.dot = 1,
                (0, _) => {
                    self.data.push(b);
                    self.prev = b;
                }
                (1 | 2, b'\r') => self.dot = 2,
                (1 | 2, b'\n') => return (i + 1, true),
                // ".\r" and something else: ended before this byte.
                (2, _) => return (i, true),
                // A transparency dot.
                (_, _) => {
                    self.dot = 0;
                    self.data.push(b);
                    self.prev = b;
                }
            }
        }
        (input.len(), false)
    }
}

struct Tx {
    mail: String,
    rcpts: Vec<String>,
    data: Vec<u8>,
    bdat: bool,
}

enum Step {
    Continue,
    Close,
    Hang,
    StartTls,
}

async fn session(
    shared: &Shared,
    tcp: TcpStream,
    id: usize,
    mut kill: watch::Receiver<u64>,
) -> std::io::Result<()> {
    let mut stream: Stream = Either::Left(tcp);
    let script = shared.script();
    let mut out = Vec::new();
    match stage_action(shared, &script, Stage::Greeting) {
        Step::Hang => return hang(&mut kill).await,
        Step::Close => return Ok(()),
        _ => {}
    }
    script.greeting.write_to(&mut out);
    stream.write_all(&out).await?;
    let mut buf: Vec<u8> = Vec::new();
    let mut mode = Mode::Command;
    let mut tx: Option<Tx> = None;
    let mut tls = false;
    loop {
        let mut chunk = vec![0u8; 64 * 1024];
        let n = tokio::select! {
            r = stream.read(&mut chunk) => r?,
            _ = kill.changed() => return Ok(()),
        };
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
        out.clear();
        let mut batch = Vec::new();
        let mut pos = 0;
        let mut step = Step::Continue;
        let mut ended = false;
        while pos < buf.len() {
            match &mut mode {
                Mode::Data(rx, data) => {
                    let mut it = buf[pos..].iter();
                    let done = rx.ingest(&mut it, data);
                    pos = buf.len() - it.len();
                    if done {
                        let Some(mut t) = tx.take() else { break };
                        // Drop the CRLF used to prime the receiver (see `Mode::Data` below).
                        t.data = data.split_off(2.min(data.len()));
                        mode = Mode::Command;
                        step = finish(shared, &mut out, t, id, tls);
                        ended = true;
                        if !matches!(step, Step::Continue) {
                            break;
                        }
                    }
                }
                Mode::Lenient(l) => {
                    let (used, done) = l.ingest(&buf[pos..]);
                    pos += used;
                    if done {
                        let Some(mut t) = tx.take() else { break };
                        t.data = std::mem::take(&mut l.data);
                        mode = Mode::Command;
                        step = finish(shared, &mut out, t, id, tls);
                        ended = true;
                        if !matches!(step, Step::Continue) {
                            break;
                        }
                    }
                }
                Mode::Bdat { left, last } => {
                    let take = (*left).min(buf.len() - pos);
                    if let Some(t) = tx.as_mut() {
                        t.data.extend_from_slice(&buf[pos..pos + take]);
                    }
                    pos += take;
                    *left -= take;
                    if *left == 0 {
                        let last = *last;
                        mode = Mode::Command;
                        if last {
                            match tx.take() {
                                Some(t) => {
                                    step = finish(shared, &mut out, t, id, tls);
                                    ended = true;
                                    if !matches!(step, Step::Continue) {
                                        break;
                                    }
                                }
                                None => {
                                    Reply::new(503, [5, 5, 1], "No transaction").write_to(&mut out)
                                }
                            }
                        } else {
                            Reply::new(250, [2, 0, 0], "Chunk OK").write_to(&mut out);
                        }
                    }
                }
                Mode::Command => {
                    let Some(nl) = memchr::memchr(b'\n', &buf[pos..]) else {
                        break;
                    };
                    let line = buf[pos..pos + nl + 1].to_vec();
                    pos += nl + 1;
                    let text = String::from_utf8_lossy(&line)
                        .trim_end_matches(['\r', '\n'])
                        .to_string();
                    batch.push(text.clone());
                    shared.state().commands.push((id, text.clone()));
                    step = command(
                        shared,
                        &line,
                        &text,
                        &mut out,
                        &mut mode,
                        &mut tx,
                        (tls, id),
                    );
                    if !matches!(step, Step::Continue) {
                        break;
                    }
                }
            }
        }
        buf.drain(..pos);
        if !batch.is_empty() {
            shared.state().batches.push(batch);
        }
        shared.changed.notify_waiters();
        if let (true, Some(d)) = (ended, script.slow_data_end) {
            tokio::time::sleep(d).await;
        }
        stream.write_all(&out).await?;
        match step {
            Step::Continue => {}
            Step::Close => return Ok(()),
            Step::Hang => return hang(&mut kill).await,
            Step::StartTls => {
                let (Either::Left(tcp), Some(acceptor)) = (stream, shared.tls.as_ref()) else {
                    return Ok(());
                };
                // Plaintext pipelined after STARTTLS is discarded, never executed.
                buf.clear();
                if shared.script().broken_tls {
                    let mut tcp = tcp;
                    tcp.write_all(b"this is not a TLS handshake\r\n").await?;
                    return Ok(());
                }
                stream = Either::Right(Box::new(acceptor.accept(tcp).await?));
                tls = true;
            }
        }
    }
}

async fn hang(kill: &mut watch::Receiver<u64>) -> std::io::Result<()> {
    let _ = kill.changed().await;
    Ok(())
}

fn stage_action(shared: &Shared, script: &Script, stage: Stage) -> Step {
    if script.hang == Some(stage) {
        Step::Hang
    } else if script.close == Some(stage) {
        Step::Close
    } else if script.close_once == Some(stage) {
        let mut s = shared.script.lock().unwrap_or_else(|p| p.into_inner());
        if s.close_once == Some(stage) {
            s.close_once = None;
            return Step::Close;
        }
        Step::Continue
    } else {
        Step::Continue
    }
}

fn finish(shared: &Shared, out: &mut Vec<u8>, t: Tx, id: usize, tls: bool) -> Step {
    let script = shared.script();
    let step = stage_action(shared, &script, Stage::DataEnd);
    if !matches!(step, Step::Continue) {
        return step;
    }
    let first = t.rcpts.first().and_then(|r| {
        let (_, rest) = r.split_once('<')?;
        Some(rest.split_once('>')?.0.to_ascii_lowercase())
    });
    let once = first.and_then(|a| {
        shared
            .script
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .data_replies_once
            .remove(&a)
    });
    let reply = once.unwrap_or_else(|| script.data_reply.clone());
    if reply.is_positive() {
        shared.state().messages.push(SunkMessage {
            connection: id,
            tls,
            mail_from: t.mail,
            rcpt_to: t.rcpts,
            data: t.data,
            bdat: t.bdat,
        });
    }
    reply.write_to(out);
    Step::Continue
}

fn command(
    shared: &Shared,
    line: &[u8],
    text: &str,
    out: &mut Vec<u8>,
    mode: &mut Mode,
    tx: &mut Option<Tx>,
    (tls, id): (bool, usize),
) -> Step {
    let script = shared.script();
    if script.xforward.is_some()
        && text
            .get(..9)
            .is_some_and(|v| v.eq_ignore_ascii_case("XFORWARD "))
    {
        let r = if tx.is_some() {
            Reply::new(503, [5, 5, 1], "Error: MAIL transaction in progress")
        } else {
            Reply::new(250, [2, 0, 0], "Ok")
        };
        r.write_to(out);
        return Step::Continue;
    }
    let req = match Request::parse(&mut line.iter()) {
        Ok(r) => r,
        Err(e) => {
            Reply::new(501, [5, 5, 2], format!("Syntax error: {e:?}")).write_to(out);
            return Step::Continue;
        }
    };
    let reply = |r: &Reply, out: &mut Vec<u8>| r.write_to(out);
    match req {
        Request::Ehlo { .. } => {
            let step = stage_action(shared, &script, Stage::Ehlo);
            if !matches!(step, Step::Continue) {
                return step;
            }
            if let Some(r) = &script.ehlo_reply {
                reply(r, out);
            } else {
                let mut e = EhloResponse::new("sink.test");
                e.capabilities = script.capabilities;
                if shared.tls.is_some() && script.starttls && !tls {
                    e.capabilities |= EXT_START_TLS;
                }
                e.size = script.size;
                let mut ehlo = Vec::new();
                let _ = e.write(&mut ehlo);
                match &script.xforward {
                    Some(attrs) => {
                        // One more keyword line after the domain line.
                        let mut lines: Vec<String> = String::from_utf8_lossy(&ehlo)
                            .lines()
                            .map(|l| l.get(4..).unwrap_or("").to_string())
                            .collect();
                        lines.insert(1.min(lines.len()), format!("XFORWARD {attrs}"));
                        let r = Reply {
                            code: 250,
                            enhanced: None,
                            lines,
                        };
                        reply(&r, out);
                    }
                    None => out.extend_from_slice(&ehlo),
                }
            }
        }
        Request::Helo { .. } | Request::Lhlo { .. } => {
            reply(&Reply::plain(250, "sink.test"), out);
        }
        Request::StartTls => {
            if shared.tls.is_some() && !tls {
                reply(&Reply::new(220, [2, 0, 0], "Ready to start TLS"), out);
                return Step::StartTls;
            }
            reply(&Reply::new(502, [5, 5, 1], "No TLS"), out);
        }
        Request::Mail { .. } => {
            let step = stage_action(shared, &script, Stage::Mail);
            if !matches!(step, Step::Continue) {
                return step;
            }
            if tx.is_some() {
                reply(&Reply::new(503, [5, 5, 1], "Nested MAIL"), out);
            } else {
                if script.mail_reply.is_positive() {
                    *tx = Some(Tx {
                        mail: text.to_string(),
                        rcpts: Vec::new(),
                        data: Vec::new(),
                        bdat: false,
                    });
                }
                reply(&script.mail_reply, out);
            }
        }
        Request::Rcpt { to } => {
            let step = stage_action(shared, &script, Stage::Rcpt);
            if !matches!(step, Step::Continue) {
                return step;
            }
            let Some(t) = tx.as_mut() else {
                reply(&Reply::new(503, [5, 5, 1], "Need MAIL"), out);
                return Step::Continue;
            };
            let r = script
                .rcpt_replies
                .get(&to.address.to_lowercase())
                .unwrap_or(&script.rcpt_reply);
            if r.is_positive() {
                t.rcpts.push(text.to_string());
            }
            reply(r, out);
        }
        Request::Data => {
            let step = stage_action(shared, &script, Stage::Data);
            if !matches!(step, Step::Continue) {
                return step;
            }
            match tx {
                Some(t) if !t.rcpts.is_empty() => {
                    reply(&script.data_start_reply, out);
                    if script.data_start_reply.code == 354 && script.lenient_data {
                        *mode = Mode::Lenient(Lenient::default());
                    } else if script.data_start_reply.code == 354 {
                        // smtp-proto's DataReceiver only recognises a dot after a CRLF it has
                        // seen, so prime it with one: a leading "." line and an empty message
                        // (".\r\n" at once) are then handled as RFC 5321 says.
                        let mut rx = DataReceiver::new();
                        let mut data = Vec::new();
                        rx.ingest(&mut b"\r\n".iter(), &mut data);
                        *mode = Mode::Data(rx, data);
                    } else {
                        *tx = None;
                    }
                }
                _ => reply(&Reply::new(554, [5, 5, 1], "No valid recipients"), out),
            }
        }
        Request::Bdat {
            chunk_size,
            is_last,
        } => {
            *mode = Mode::Bdat {
                left: chunk_size,
                last: is_last,
            };
            match tx {
                Some(t) if !t.rcpts.is_empty() => t.bdat = true,
                _ => *tx = None,
            }
            if chunk_size == 0 && is_last {
                *mode = Mode::Command;
                if let Some(t) = tx.take() {
                    return finish(shared, out, t, id, tls);
                }
                reply(&Reply::new(554, [5, 5, 1], "No valid recipients"), out);
            } else if chunk_size == 0 {
                *mode = Mode::Command;
                reply(&Reply::new(250, [2, 0, 0], "Chunk OK"), out);
            }
        }
        Request::Rset => {
            *tx = None;
            reply(&Reply::new(250, [2, 0, 0], "OK"), out);
        }
        Request::Noop { .. } => reply(&Reply::new(250, [2, 0, 0], "OK"), out),
        Request::Quit => {
            reply(&Reply::new(221, [2, 0, 0], "Bye"), out);
            return Step::Close;
        }
        _ => reply(&Reply::new(502, [5, 5, 1], "Not implemented"), out),
    }
    Step::Continue
}
