//! The relay to the next hop: a pool of outbound connections, the per-client transaction that
//! opens the next hop with MAIL FROM (cut-through, like Exim cutthrough or Haraka's smtp_proxy),
//! and the maildir alternative.
//!
//! Outcomes the client sees (SPEC §3): the next hop's own 4xx/5xx replies are passed through per
//! command; 250 for the data only after the next hop's 250; a next hop that cannot be reached is
//! `451 4.4.1`, a lost connection or a timeout `451 4.4.2` ([`reply_for`] is the one mapping).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rustls::pki_types::ServerName;

use super::client::{ClientSettings, DataFailure, PhaseTimeouts, SmtpClient};
use super::error::{RelayError, reply_for};
use super::maildir::Maildir;
use super::tls::tls_connector;
use super::xforward::ClientOrigin;
use crate::config::{Config, ConfigError, NextHop, NextHopTls};
use crate::envelope::{Body, Extensions, MailFrom, RcptTo};
use crate::replies::{self, Reply};

/// Idle pooled connections older than this are closed rather than reused: most MTAs drop idle
/// clients after a few minutes, and a stale connection costs a failed attempt.
const MAX_IDLE: Duration = Duration::from_secs(60);

/// After a failed attempt to learn the next hop's extensions, answer with the defaults for this
/// long before trying again.
const PROBE_BACKOFF: Duration = Duration::from_secs(10);

/// The relay (cheap to clone). Built once from the configuration.
#[derive(Clone)]
pub struct Relay {
    inner: Arc<Target>,
}

// One target per relay, behind an `Arc`: the size difference between the variants costs
// nothing, boxing would cost an indirection on every delivery.
#[allow(clippy::large_enum_variant)]
enum Target {
    Smtp(SmtpTarget),
    Maildir(Maildir),
}

struct SmtpTarget {
    settings: ClientSettings,
    pool: Mutex<Vec<Idle>>,
    pool_size: usize,
    extensions: Mutex<Option<Extensions>>,
    /// When learning the extensions last failed: the next EHLO should not wait for another
    /// connection attempt to an unreachable next hop right away.
    probe_failed: Mutex<Option<Instant>>,
}

struct Idle {
    client: SmtpClient,
    since: Instant,
    needs_rset: bool,
}

/// A connection held by a transaction.
struct Conn {
    client: SmtpClient,
    reused: bool,
    needs_rset: bool,
}

impl Relay {
    pub fn new(config: &Config) -> Result<Relay, RelayError> {
        let target = match config.relay.next_hop.clone() {
            NextHop::Maildir(dir) => Target::Maildir(
                Maildir::open(&dir, &config.server.hostname).map_err(RelayError::Maildir)?,
            ),
            NextHop::Smtp { host, port } => {
                let r = &config.relay;
                let name = r.tls_server_name.clone().unwrap_or_else(|| host.clone());
                let server_name = ServerName::try_from(name.clone()).map_err(|_| {
                    ConfigError::invalid(
                        "relay.tls_server_name",
                        format!("{name:?} is not a valid TLS server name"),
                    )
                })?;
                let tls_connector = match r.tls {
                    NextHopTls::Off => None,
                    mode => tls_connector(mode, r.ca_file.as_deref())?,
                };
                Target::Smtp(SmtpTarget {
                    settings: ClientSettings {
                        host,
                        port,
                        helo_name: config.server.hostname.clone(),
                        tls: r.tls,
                        tls_connector,
                        server_name,
                        connect_timeout: r.connect_timeout,
                        timeouts: PhaseTimeouts {
                            command: r.command_timeout,
                            data_init: r.data_init_timeout,
                            data_xfer: r.data_xfer_timeout,
                            data_done: r.data_done_timeout,
                        },
                        xforward: r.xforward,
                    },
                    pool: Mutex::new(Vec::new()),
                    pool_size: r.pool_size,
                    extensions: Mutex::new(None),
                    probe_failed: Mutex::new(None),
                })
            }
        };
        Ok(Relay {
            inner: Arc::new(target),
        })
    }

    /// What can be passed on to the next hop, learned from its EHLO (cached, refreshed with every
    /// new connection). When the next hop cannot be reached, the defaults are returned: the
    /// transaction then fails at MAIL FROM anyway.
    pub async fn extensions(&self) -> Extensions {
        match &*self.inner {
            Target::Maildir(_) => Extensions {
                eight_bit_mime: true,
                smtputf8: true,
                dsn: true,
                chunking: true,
                binarymime: true,
            },
            Target::Smtp(t) => {
                if let Some(e) = *lock(&t.extensions) {
                    return e;
                }
                if lock(&t.probe_failed).is_some_and(|at| at.elapsed() < PROBE_BACKOFF) {
                    return Extensions::default();
                }
                match t.checkout().await {
                    Ok(conn) => {
                        let e = extensions_of(&conn.client);
                        t.checkin(conn, false);
                        e
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "next hop unavailable while learning its extensions");
                        *lock(&t.probe_failed) = Some(Instant::now());
                        Extensions::default()
                    }
                }
            }
        }
    }

    /// The next hop as a DSN names it (`Remote-MTA`): `host:port`, `None` for a maildir.
    pub fn next_hop_name(&self) -> Option<String> {
        match &*self.inner {
            Target::Smtp(t) => Some(t.settings.addr()),
            Target::Maildir(_) => None,
        }
    }

    pub fn begin(&self) -> RelayTransaction {
        RelayTransaction {
            relay: self.clone(),
            conn: None,
            mail: None,
            rcpts: Vec::new(),
            hop_reply: None,
            origin: None,
        }
    }

    /// Close the pooled connections politely (QUIT); for a graceful shutdown.
    pub async fn close_idle(&self) {
        if let Target::Smtp(t) = &*self.inner {
            let idle: Vec<Idle> = std::mem::take(&mut *lock(&t.pool));
            for i in idle {
                i.client.quit_quietly().await;
            }
        }
    }

    /// Idle connections currently pooled (for tests and metrics).
    pub fn idle_connections(&self) -> usize {
        match &*self.inner {
            Target::Smtp(t) => lock(&t.pool).len(),
            Target::Maildir(_) => 0,
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding the pool lock leaves a consistent Vec; keep going.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn extensions_of(c: &SmtpClient) -> Extensions {
    use smtp_proto::{EXT_8BIT_MIME, EXT_BINARY_MIME, EXT_CHUNKING, EXT_DSN, EXT_SMTP_UTF8};
    let caps = c.capabilities();
    Extensions {
        eight_bit_mime: caps.has(EXT_8BIT_MIME),
        smtputf8: caps.has(EXT_SMTP_UTF8),
        dsn: caps.has(EXT_DSN),
        // Inbound BDAT can always be relayed, with DATA if need be; binary content cannot.
        chunking: true,
        binarymime: caps.has(EXT_BINARY_MIME) && caps.has(EXT_CHUNKING),
    }
}

/// Parameters that cannot be dropped silently when the next hop lacks the extension (normally
/// the session never offers them then; this covers a next hop whose capabilities changed).
fn not_relayable(c: &SmtpClient, from: &MailFrom) -> Option<Reply> {
    use smtp_proto::{EXT_BINARY_MIME, EXT_CHUNKING, EXT_SMTP_UTF8};
    let caps = c.capabilities();
    if from.body == Some(Body::BinaryMime) && !(caps.has(EXT_BINARY_MIME) && caps.has(EXT_CHUNKING))
    {
        return Some(replies::binarymime_not_relayable());
    }
    if from.smtputf8 && !caps.has(EXT_SMTP_UTF8) && !from.address.is_ascii() {
        return Some(replies::smtputf8_not_relayable());
    }
    None
}

impl SmtpTarget {
    async fn checkout(&self) -> Result<Conn, RelayError> {
        loop {
            let idle = lock(&self.pool).pop();
            let Some(idle) = idle else { break };
            if idle.since.elapsed() < MAX_IDLE && idle.client.seems_alive() {
                return Ok(Conn {
                    client: idle.client,
                    reused: true,
                    needs_rset: idle.needs_rset,
                });
            }
            tracing::debug!("discarding a stale pooled next-hop connection");
            discard(idle.client);
        }
        let client = match SmtpClient::connect(&self.settings).await {
            // RFC 7435: opportunistic TLS that fails falls back to plaintext (as Postfix `may`)
            // rather than making the next hop unreachable.
            Err(e @ RelayError::Tls { .. }) if self.settings.tls == NextHopTls::Opportunistic => {
                tracing::warn!(error = %e, "opportunistic TLS failed, retrying in plaintext");
                let mut plain = self.settings.clone();
                plain.tls = NextHopTls::Off;
                SmtpClient::connect(&plain).await
            }
            r => r,
        }
        .inspect_err(|e| {
            tracing::warn!(error = %e, "next hop connection failed");
        })?;
        *lock(&self.extensions) = Some(extensions_of(&client));
        Ok(Conn {
            client,
            reused: false,
            needs_rset: false,
        })
    }

    fn checkin(&self, conn: Conn, needs_rset: bool) {
        let mut pool = lock(&self.pool);
        if pool.len() < self.pool_size {
            pool.push(Idle {
                client: conn.client,
                since: Instant::now(),
                needs_rset: needs_rset || conn.needs_rset,
            });
        } else {
            drop(pool);
            discard(conn.client);
        }
    }
}

/// Close a connection politely in the background (QUIT), or just drop it outside a runtime.
fn discard(client: SmtpClient) {
    if let Ok(h) = tokio::runtime::Handle::try_current() {
        h.spawn(client.quit_quietly());
    }
}

/// One client transaction relayed to the next hop.
pub struct RelayTransaction {
    relay: Relay,
    conn: Option<Conn>,
    /// MAIL FROM as accepted by the next hop: a transaction is open there.
    mail: Option<MailFrom>,
    /// Recipients the next hop accepted, in order.
    rcpts: Vec<RcptTo>,
    /// What the next hop itself answered to the last message (see [`Self::next_hop_reply`]).
    hop_reply: Option<Reply>,
    /// The client this transaction relays for, sent as XFORWARD before every MAIL (also a
    /// replayed one) when the next hop offers it.
    origin: Option<ClientOrigin>,
}

impl RelayTransaction {
    /// The original client of this transaction, for XFORWARD (see `xforward.rs`). Set before
    /// [`Self::mail_from`]; it stays for every MAIL of this transaction object.
    pub fn forward_client(&mut self, origin: ClientOrigin) {
        self.origin = Some(origin);
    }

    /// Open the next hop (pooled connection or a new one) and send MAIL FROM.
    pub async fn mail_from(&mut self, from: &MailFrom) -> Reply {
        match self.open(from, None).await {
            Ok(_) => replies::sender_ok(),
            Err(refusal) => refusal,
        }
    }

    /// MAIL FROM and the first RCPT TO together: one write and one round trip to the next hop
    /// when it offers PIPELINING, where [`Self::mail_from`] then [`Self::rcpt_to`] cost two.
    /// The session answers MAIL itself and opens the next hop at the first recipient, so this is
    /// the common case. `Err` is the refusal of the sender (or the next hop's unavailability):
    /// nothing is open then. `Ok` is the reply to the recipient, the next hop's own refusal
    /// passed through.
    pub async fn mail_rcpt(&mut self, from: &MailFrom, rcpt: &RcptTo) -> Result<Reply, Reply> {
        self.open(from, Some(rcpt))
            .await
            .map(|r| r.unwrap_or_else(replies::recipient_ok))
    }

    /// MAIL (and `first`, pipelined with it); `Ok(Some(reply))` is the next hop's refusal of
    /// `first`, `Ok(None)` that everything sent was accepted.
    async fn open(
        &mut self,
        from: &MailFrom,
        first: Option<&RcptTo>,
    ) -> Result<Option<Reply>, Reply> {
        if self.mail.is_some() {
            self.reset().await;
        }
        let relay = self.relay.clone();
        let t = match &*relay.inner {
            Target::Maildir(_) => {
                self.mail = Some(from.clone());
                self.rcpts.extend(first.cloned());
                return Ok(None);
            }
            Target::Smtp(t) => t,
        };
        let first = first.map(std::slice::from_ref).unwrap_or_default();
        loop {
            let mut conn = match self.conn.take() {
                Some(c) => c,
                None => match t.checkout().await {
                    Ok(c) => c,
                    Err(e) => return Err(reply_for(&e)),
                },
            };
            if let Some(refusal) = not_relayable(&conn.client, from) {
                self.conn = Some(conn);
                return Err(refusal);
            }
            match conn
                .client
                .envelope_for(from, first, conn.needs_rset, self.origin.as_ref())
                .await
            {
                Ok(r) => {
                    conn.needs_rset = false;
                    // Used once: a later failure on it deserves one retry on a new connection.
                    conn.reused = true;
                    self.conn = Some(conn);
                    if !r.mail.is_positive() {
                        return Err(r.mail);
                    }
                    self.mail = Some(from.clone());
                    return Ok(match r.rcpts.into_iter().next() {
                        Some(reply) if !reply.is_positive() => Some(reply),
                        _ => {
                            self.rcpts.extend_from_slice(first);
                            None
                        }
                    });
                }
                Err(e) if conn.reused => {
                    // A pooled connection died while idle: replace it transparently.
                    tracing::debug!(error = %e, "pooled next-hop connection failed, reconnecting");
                    continue;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "next hop failed at MAIL FROM");
                    return Err(reply_for(&e));
                }
            }
        }
    }

    /// RCPT TO on the open next-hop transaction; the next hop's refusal is passed through.
    pub async fn rcpt_to(&mut self, rcpt: &RcptTo) -> Reply {
        if self.mail.is_none() {
            return reply_for(&RelayError::Sequence("need MAIL before RCPT"));
        }
        if matches!(&*self.relay.inner, Target::Maildir(_)) {
            self.rcpts.push(rcpt.clone());
            return replies::recipient_ok();
        }
        if self.conn.is_none()
            && let Err(e) = self.replay().await
        {
            return reply_for(&e);
        }
        let Some(conn) = self.conn.as_mut() else {
            return reply_for(&RelayError::Sequence("no next-hop connection"));
        };
        match conn.client.rcpt(rcpt).await {
            Ok(r) if r.is_positive() => {
                self.rcpts.push(rcpt.clone());
                replies::recipient_ok()
            }
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(error = %e, "next hop failed at RCPT TO");
                self.conn = None;
                reply_for(&e)
            }
        }
    }

    /// Send the message (`parts` concatenated, e.g. `[received_header, message]`). 250 only after
    /// the next hop's 250. A connection found dead before the message went out is replaced once,
    /// replaying MAIL and the accepted recipients.
    pub async fn data(&mut self, parts: &[&[u8]]) -> Reply {
        self.data_unless(parts, &|| true).await
    }

    /// As [`Self::data`], asking `wanted` (e.g. "is our client still connected?") before the
    /// message starts and again right before its end goes out. When it says no, the next hop
    /// never gets the end of the message: an open envelope is reset, a half-sent message's
    /// connection closed (the next hop discards it), and the reply is a temporary failure
    /// ([`RelayError::ClientGone`]); nobody is waiting for it but the audit line.
    pub async fn data_unless(
        &mut self,
        parts: &[&[u8]],
        wanted: &(dyn Fn() -> bool + Sync),
    ) -> Reply {
        self.hop_reply = None;
        let Some(mail) = self.mail.clone() else {
            return reply_for(&RelayError::Sequence("need MAIL before DATA"));
        };
        if self.rcpts.is_empty() {
            return replies::no_valid_recipients();
        }
        let relay = self.relay.clone();
        let t = match &*relay.inner {
            Target::Maildir(md) => {
                let res = md.deliver(&mail, &self.rcpts, parts).await;
                self.mail = None;
                self.rcpts.clear();
                return match res {
                    Ok(name) => {
                        // The maildir has no reply of its own: ours names the file it wrote.
                        let r = replies::relayed(&format!("maildir {name}"));
                        self.hop_reply = Some(r.clone());
                        r
                    }
                    Err(e) => {
                        let e = RelayError::Maildir(e);
                        tracing::error!(error = %e, "maildir delivery failed");
                        reply_for(&e)
                    }
                };
            }
            Target::Smtp(t) => t,
        };
        if !wanted() {
            tracing::warn!("client disconnected before the relay; the next hop gets nothing");
            self.reset().await;
            return reply_for(&RelayError::ClientGone);
        }
        let mut replayed = false;
        if !self.conn.as_ref().is_some_and(|c| c.client.is_alive()) {
            self.conn = None;
            if let Err(e) = self.replay().await {
                self.finish_failed();
                return reply_for(&e);
            }
            replayed = true;
        }
        loop {
            let Some(conn) = self.conn.as_mut() else {
                return reply_for(&RelayError::Sequence("no next-hop connection"));
            };
            match conn.client.send_data_unless(parts, wanted).await {
                Ok(r) => {
                    self.hop_reply = Some(r.clone());
                    // The next-hop transaction is over whatever the code: the connection is clean.
                    self.mail = None;
                    self.rcpts.clear();
                    if let Some(conn) = self.conn.take() {
                        t.checkin(conn, false);
                    }
                    return if r.is_positive() {
                        replies::relayed(r.lines.first().map(String::as_str).unwrap_or(""))
                    } else {
                        r
                    };
                }
                Err(f) if f.retryable && !replayed => {
                    tracing::debug!(error = %f.error, "next-hop connection lost before the message, replaying");
                    self.conn = None;
                    if let Err(e) = self.replay().await {
                        self.finish_failed();
                        return reply_for(&e);
                    }
                    replayed = true;
                }
                Err(DataFailure {
                    error: RelayError::ClientGone,
                    ..
                }) => {
                    tracing::warn!(
                        "client disconnected during the relay; closing the next-hop connection before the end of the message"
                    );
                    self.finish_failed();
                    return reply_for(&RelayError::ClientGone);
                }
                Err(f) => {
                    tracing::warn!(error = %f.error, "next hop failed during the message transfer");
                    self.finish_failed();
                    return reply_for(&f.error);
                }
            }
        }
    }

    /// Split the transaction in two: this one keeps the accepted recipients `keep` selects, the
    /// one returned gets the others, with the same sender and XFORWARD client. The next hop has
    /// all of them in one envelope, which cannot lose recipients: it is reset (the connection
    /// goes back to the pool, a RSET due), and each part opens its own when its message goes
    /// out — MAIL and its recipients, as after a lost connection. Nothing changes when every
    /// recipient is kept (the returned transaction then has none).
    pub async fn split_off(&mut self, keep: &(dyn Fn(&RcptTo) -> bool + Sync)) -> RelayTransaction {
        let mut other = self.relay.begin();
        other.origin = self.origin.clone();
        let (kept, dropped): (Vec<RcptTo>, Vec<RcptTo>) = std::mem::take(&mut self.rcpts)
            .into_iter()
            .partition(|r| keep(r));
        if dropped.is_empty() {
            self.rcpts = kept;
            return other;
        }
        let mail = self.mail.clone();
        self.reset().await;
        self.mail = mail.clone();
        self.rcpts = kept;
        other.mail = mail;
        other.rcpts = dropped;
        other
    }

    /// The recipients the next hop accepted for this transaction, in order.
    pub fn recipients(&self) -> &[RcptTo] {
        &self.rcpts
    }

    /// The next hop's own reply to the last [`Self::data`] (for the audit line), which the
    /// client's reply only quotes; `None` when the next hop never answered the message
    /// (unreachable, connection lost, no recipient accepted).
    pub fn next_hop_reply(&self) -> Option<&Reply> {
        self.hop_reply.as_ref()
    }

    /// Abort the transaction; the connection goes back to the pool and gets a RSET before reuse.
    pub async fn reset(&mut self) {
        let open = self.mail.is_some();
        self.mail = None;
        self.rcpts.clear();
        if let Some(conn) = self.conn.take()
            && let Target::Smtp(t) = &*self.relay.inner
        {
            t.checkin(conn, open);
        }
    }

    fn finish_failed(&mut self) {
        self.conn = None;
        self.mail = None;
        self.rcpts.clear();
    }

    /// A new connection with MAIL and the already accepted recipients (pipelined when offered).
    async fn replay(&mut self) -> Result<(), RelayError> {
        let Target::Smtp(t) = &*self.relay.inner else {
            return Ok(());
        };
        let Some(mail) = &self.mail else {
            return Err(RelayError::Sequence("need MAIL"));
        };
        loop {
            let mut conn = t.checkout().await?;
            match conn
                .client
                .envelope_for(mail, &self.rcpts, conn.needs_rset, self.origin.as_ref())
                .await
            {
                Ok(r) => {
                    conn.needs_rset = false;
                    if !r.mail.is_positive() {
                        t.checkin(conn, false);
                        return Err(RelayError::ReplayRefused(r.mail));
                    }
                    if let Some(bad) = r.rcpts.iter().find(|r| !r.is_positive()) {
                        // The client already has our 250 for this recipient; only a temporary
                        // failure of the whole message keeps it correct.
                        let bad = bad.clone();
                        t.checkin(conn, true);
                        return Err(RelayError::ReplayRefused(bad));
                    }
                    self.conn = Some(conn);
                    return Ok(());
                }
                Err(e) if conn.reused => {
                    tracing::debug!(error = %e, "pooled next-hop connection failed, reconnecting");
                }
                Err(e) => return Err(e),
            }
        }
    }
}

impl Drop for RelayTransaction {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take()
            && let Target::Smtp(t) = &*self.relay.inner
        {
            t.checkin(conn, self.mail.is_some());
        }
    }
}
