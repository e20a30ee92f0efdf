//! Spool mode: store and forward.
//!
//! A listener in spool mode (`queue.mode = "spool"`, or one of `queue.spool_listen`) answers the
//! end of DATA with `250 2.0.0 queued as ID` once the message is in the local queue, fsync'd
//! ([`crate::store::queue`]). The scheduler here then takes each due message through the same
//! steps as inline mode — plan, transfer (with the same exactly-once state store), rewrite,
//! relay ([`message::process`]) — and decides per recipient what the attempt means:
//!
//! - the next hop's `2xx`: delivered;
//! - a `5xx` (the next hop's, or a permanent Cryptshare refusal under `tempfail` / `reject`):
//!   failed; the sender gets a failure DSN (RFC 3464) unless the recipient asked `NOTIFY=NEVER`
//!   (or a `NOTIFY=` without `FAILURE`), and never for a message from the null sender;
//! - a `4xx`: retried after a backoff that doubles per attempt (`queue.min_backoff` up to
//!   `queue.max_backoff`, ±10 % jitter so that a burst does not come back as one), until
//!   `queue.max_lifetime`; then failed with `4.4.7`. After `queue.delay_warning` the sender gets
//!   one "delayed" DSN for the recipients still waiting (those that did not ask `NOTIFY=` without
//!   `DELAY`).
//!
//! DSNs are messages like any other: queued from the null sender, delivered by the same
//! scheduler, never bounced themselves.
//!
//! Exactly once across restarts: the per-message lease (`flock`, gone with a killed process)
//! keeps two attempts of one message apart; the state store makes a retried conversion reuse its
//! transfer; a recipient marked delivered is never tried again. The one window left is Postfix's
//! too: killed after the next hop's `250` and before the envelope says so, the message goes
//! again at the next start (a duplicate, never a loss).

use std::sync::{Arc, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rand::Rng;
use tokio::sync::{Notify, Semaphore};
use tokio_util::sync::CancellationToken;

use super::gateway::Gateway;
use super::message;
use crate::config::QueueConfig;
use crate::envelope::{MailFrom, RcptTo, Ret};
use crate::inbound::{ConnectionInfo, PeerProbe, Transaction};
use crate::mime;
use crate::ops::{AuditRecord, Decision, QueueOutcome};
use crate::outbound::ClientOrigin;
use crate::replies::{self, Reply};
use crate::store::pg_queue::QueueStore;
use crate::store::queue::{Envelope, Place, QueueError, QueuedClient, QueuedRcpt, RcptState};
use crate::store::spool::Spooled;

/// Seconds since the epoch.
pub(super) fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// The queue and its scheduler, owned by the gateway when any listener spools.
pub struct Spool {
    pub(super) queue: QueueStore,
    cfg: QueueConfig,
    hostname: String,
    max_message_size: u64,
    /// New mail, `queue retry` from this process: look at the queue now.
    wake: Notify,
    /// Shutdown: no new attempt starts.
    stop: CancellationToken,
    slots: Arc<Semaphore>,
    /// Ids with an attempt running in this process: not started twice (the lease would refuse
    /// the second anyway; this saves it the work).
    inflight: std::sync::Mutex<std::collections::HashSet<String>>,
    /// Messages in the queue as of the last scan, plus those queued since: what backpressure
    /// looks at (a directory listing per MAIL FROM would grow with the queue).
    queued: std::sync::atomic::AtomicUsize,
    /// Ids queued since the last scan, for the scheduler to start at once.
    fresh: std::sync::Mutex<Vec<String>>,
}

impl Spool {
    pub(super) fn new(queue: QueueStore, cfg: &crate::config::Config) -> Spool {
        Spool {
            queue,
            cfg: cfg.queue.clone(),
            hostname: cfg.server.hostname.clone(),
            max_message_size: cfg.server.max_message_size,
            wake: Notify::new(),
            stop: CancellationToken::new(),
            slots: Arc::new(Semaphore::new(cfg.queue.concurrency)),
            inflight: Default::default(),
            fresh: Default::default(),
            queued: std::sync::atomic::AtomicUsize::new(0),
        }
    }

    pub fn queue(&self) -> &QueueStore {
        &self.queue
    }

    /// Whether the listener at `local` spools.
    pub(super) fn spools(&self, local: &std::net::SocketAddr) -> bool {
        self.cfg.spools(local)
    }

    /// Backpressure at MAIL FROM: `452 4.3.1` when the queue is full or the disk reserve would
    /// be crossed (by the announced `SIZE=`, or by a message of the largest size allowed).
    pub(super) fn admit(&self, from: &MailFrom) -> Option<Reply> {
        if self.queued.load(std::sync::atomic::Ordering::Relaxed) >= self.cfg.max_messages {
            tracing::warn!(
                limit = self.cfg.max_messages,
                "queue full: new mail deferred"
            );
            return Some(replies::queue_full());
        }
        let need = from.size.unwrap_or(0) + self.cfg.min_free_space;
        match self.queue.free_space() {
            Ok(free) if free >= need => None,
            Ok(free) => {
                tracing::warn!(
                    free,
                    reserve = self.cfg.min_free_space,
                    "disk reserve of the queue reached: new mail deferred"
                );
                Some(replies::queue_full())
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot check the queue's free space");
                Some(replies::queue_full())
            }
        }
    }

    /// The end of DATA on a spooling listener: into the queue, durably, then `250`.
    pub(super) async fn enqueue(&self, info: &ConnectionInfo, t: Transaction) -> Reply {
        let client = QueuedClient {
            addr: info.peer.ip().to_canonical(),
            port: info.peer.port(),
            helo: info.helo.clone(),
            esmtp: info.esmtp,
            local: message::client_origin(info).local,
        };
        let env = Envelope {
            id: t.queue_id.clone(),
            arrival: now(),
            mail_from: t.mail_from.clone(),
            rcpts: t
                .rcpts
                .iter()
                .map(|r| QueuedRcpt {
                    rcpt: r.clone(),
                    state: RcptState::Pending,
                    last_reply: None,
                })
                .collect(),
            received: String::from_utf8_lossy(&t.received).into_owned(),
            is_dsn: false,
            client: Some(client),
            auth_user: info.auth_user.clone(),
            attempts: 0,
            next_attempt: 0,
            last_error: None,
            delay_warned: false,
        };
        // Off the runtime's worker threads: the fsyncs take milliseconds, and the directory
        // sync waits for other sessions' renames (group commit, see `store::queue`) — on a
        // worker it would stall every session scheduled there.
        let size = t.message.len();
        let written = self.queue.enqueue(env.clone(), t.message).await;
        match written {
            Ok(()) => {
                tracing::info!(
                    queue_id = %env.id,
                    from = %crate::mime::strip_invisible(&env.mail_from.address),
                    rcpts = env.rcpts.len(),
                    size,
                    "queued"
                );
                self.fresh
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(env.id.clone());
                self.queued
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                self.wake.notify_one();
                replies::queued(&env.id)
            }
            Err(e) => {
                tracing::error!(queue_id = %env.id, error = %e, "cannot write the message to the queue");
                replies::local_error("cannot queue the message")
            }
        }
    }

    /// Stop starting attempts; wait (up to `grace`) for the running ones.
    pub async fn drain(&self, grace: Duration) {
        self.stop.cancel();
        let all = self.cfg.concurrency as u32;
        let _ = tokio::time::timeout(grace, self.slots.acquire_many(all)).await;
    }
}

/// The scheduler: every due message of `active/` gets an attempt, at most `queue.concurrency`
/// at a time. It looks at the queue when woken (new mail) and at least every second (the `queue`
/// commands change files only), and stops with the gateway.
pub(super) async fn run(gw: Weak<Gateway>) {
    // Due ids not started yet (all slots busy), oldest first; refilled by a full scan at most
    // once a second, and by new mail in between (a scan reads every envelope: under a burst
    // of new mail, one per message would cost more than the mail itself).
    let mut backlog: std::collections::VecDeque<String> = Default::default();
    let mut last_scan: Option<tokio::time::Instant> = None;
    const SCAN: Duration = Duration::from_secs(1);
    loop {
        let Some(g) = gw.upgrade() else { return };
        let Some(spool) = g.spool() else { return };
        if spool.stop.is_cancelled() {
            return;
        }
        if last_scan.is_none_or(|t| t.elapsed() >= SCAN) {
            spool
                .fresh
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clear();
            // The file queue reads every envelope (on the blocking pool); PostgreSQL answers
            // from its index.
            let (due, count, oldest) = spool.queue.scan(now()).await;
            let age = oldest.map_or(0, |o| (now() - o).max(0));
            g.recorder.metrics.queue(count, age);
            spool
                .queued
                .store(count, std::sync::atomic::Ordering::Relaxed);
            backlog = due.into();
            last_scan = Some(tokio::time::Instant::now());
        } else {
            backlog.extend(
                spool
                    .fresh
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .drain(..),
            );
        }
        while let Some(id) = backlog.front().cloned() {
            if spool
                .inflight
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .contains(&id)
            {
                backlog.pop_front();
                continue;
            }
            let Ok(permit) = spool.slots.clone().try_acquire_owned() else {
                break;
            };
            backlog.pop_front();
            spool
                .inflight
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(id.clone());
            let g2 = g.clone();
            tokio::spawn(async move {
                // Whatever happens in the attempt (a panic included), the id is free again
                // afterwards and the next scan finds it: a message never sticks.
                let _done = Inflight(g2.clone(), id.clone());
                // Dropped before `_done`: the slot is free when the wake-up comes.
                let _permit = permit;
                let run = std::panic::AssertUnwindSafe(attempt(&g2, &id));
                if futures_util::FutureExt::catch_unwind(run).await.is_err() {
                    tracing::error!(queue_id = %id, "delivery attempt panicked; retried at the next scan");
                }
            });
        }
        let stop = spool.stop.clone();
        let until_scan = SCAN.saturating_sub(last_scan.map_or(SCAN, |t| t.elapsed()));
        let wait = async {
            tokio::select! {
                _ = spool.wake.notified() => {}
                _ = tokio::time::sleep(until_scan.max(Duration::from_millis(10))) => {}
            }
        };
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = wait => {}
        }
        drop(g);
    }
}

/// Frees an id in `Spool::inflight` when its attempt ends, however it ends.
struct Inflight(Arc<Gateway>, String);

impl Drop for Inflight {
    fn drop(&mut self) {
        if let Some(s) = self.0.spool() {
            s.inflight
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&self.1);
            // A slot is free: start the next one from the backlog.
            s.wake.notify_one();
        }
    }
}

/// What one attempt decided for one recipient.
enum Verdict {
    Delivered,
    Failed(Reply),
    Deferred(Reply),
}

fn verdict(r: &Reply) -> Verdict {
    if r.is_positive() {
        Verdict::Delivered
    } else if r.is_transient() {
        Verdict::Deferred(r.clone())
    } else {
        Verdict::Failed(r.clone())
    }
}

/// One delivery attempt of one message (see the module comment).
async fn attempt(gw: &Arc<Gateway>, id: &str) {
    let Some(spool) = gw.spool() else { return };
    let q = &spool.queue;
    let lease = match q.lease(Place::Active, id).await {
        Ok(l) => l,
        Err(QueueError::Busy(_) | QueueError::NotFound(_)) => return,
        Err(e) => {
            tracing::error!(queue_id = %id, error = %e, "cannot lease the queued message");
            return;
        }
    };
    // Read under the lease: an attempt that just finished may have changed it.
    let mut env = match q.envelope(Place::Active, id).await {
        Ok(e) => e,
        Err(QueueError::NotFound(_)) => return,
        Err(e) => {
            tracing::error!(queue_id = %id, error = %e, "queued message unreadable");
            return;
        }
    };
    if env.next_attempt > now() {
        return;
    }
    let message = match q.message(Place::Active, id).await {
        Ok(m) => m,
        Err(e @ (QueueError::Corrupt { .. } | QueueError::Io { .. })) => {
            // The envelope is there, the message is not (or cannot be read): nothing to
            // deliver, and retrying would not change that. Quarantined, reported.
            tracing::error!(queue_id = %id, error = %e, "queued message unreadable");
            q.quarantine(Place::Active, lease, id, &e.to_string()).await;
            return;
        }
        Err(e) => {
            // The database is away: the next scan tries again.
            tracing::error!(queue_id = %id, error = %e, "cannot read the queued message");
            return;
        }
    };
    let size = message.len() as u64;
    let verdicts = relay_once(gw, &env, message).await;
    env.attempts += 1;
    let mut failed: Vec<(RcptTo, Reply)> = Vec::new();
    // Every pending recipient was tried: those still pending afterwards are these.
    let mut deferred: Vec<(RcptTo, Reply)> = Vec::new();
    for (rcpt, v) in verdicts {
        let Some(r) = env.rcpts.iter_mut().find(|r| r.rcpt == rcpt) else {
            continue;
        };
        match v {
            Verdict::Delivered => {
                r.state = RcptState::Delivered;
                r.last_reply = None;
            }
            Verdict::Failed(reply) => {
                r.state = RcptState::Failed;
                r.last_reply = Some(reply.to_string().trim_end().to_string());
                failed.push((rcpt, reply));
            }
            Verdict::Deferred(reply) => {
                r.last_reply = Some(reply.to_string().trim_end().to_string());
                env.last_error = r.last_reply.clone();
                deferred.push((rcpt, reply));
            }
        }
    }
    let age = Duration::from_secs((now() - env.arrival).max(0) as u64);
    let mut delay_dsn = false;
    let mut expired = false;
    if env.pending().next().is_some() {
        if age >= spool.cfg.max_lifetime {
            expired = true;
            for r in env
                .rcpts
                .iter_mut()
                .filter(|r| r.state == RcptState::Pending)
            {
                r.state = RcptState::Failed;
                let why = r.last_reply.clone().unwrap_or_default();
                // 4.4.7 (RFC 3463: delivery time expired), with the reply that kept it waiting.
                let reply = Reply::new(
                    451,
                    [4, 4, 7],
                    format!("Delivery time expired; last reply: {why}"),
                );
                failed.push((r.rcpt.clone(), reply));
            }
        } else {
            if !env.delay_warned
                && !spool.cfg.delay_warning.is_zero()
                && age >= spool.cfg.delay_warning
            {
                env.delay_warned = true;
                delay_dsn = true;
            }
            defer(spool, &mut env);
            gw.recorder.metrics.deferred();
        }
    }
    // The DSNs first: a crash before the envelope update repeats a DSN, never loses one.
    if !failed.is_empty() {
        send_dsn(gw, spool, &env, &failed, mime::DsnAction::Failed).await;
        audit_failed(gw, &env, size, &failed, expired);
    }
    if delay_dsn {
        send_dsn(gw, spool, &env, &deferred, mime::DsnAction::Delayed).await;
    }
    let done = env.pending().next().is_none();
    if done {
        tracing::info!(
            queue_id = %id,
            attempts = env.attempts,
            delivered = env.rcpts.iter().filter(|r| r.state == RcptState::Delivered).count(),
            failed = env.rcpts.iter().filter(|r| r.state == RcptState::Failed).count(),
            "removed from the queue"
        );
    } else {
        tracing::info!(
            queue_id = %id,
            attempts = env.attempts,
            next_attempt = env.next_attempt,
            reason = %env.last_error.as_deref().unwrap_or(""),
            "deferred"
        );
    }
    // Still under the lease, which `finish` gives up only once the change is durable.
    if let Err(e) = spool.queue.finish(Place::Active, lease, env, done).await {
        tracing::error!(queue_id = %id, error = %e, "cannot update the queued message");
    }
}

/// The audit line of recipients that leave the queue undelivered: the attempt's own line (written
/// by the pipeline) shows the next hop's or Cryptshare's answer; this one says that it was final.
fn audit_failed(
    gw: &Arc<Gateway>,
    env: &Envelope,
    size: u64,
    failed: &[(RcptTo, Reply)],
    expired: bool,
) {
    let mut rec = AuditRecord::new(&env.id, Decision::Reject);
    rec.sender = env.mail_from.address.clone();
    rec.recipients = failed.iter().map(|(r, _)| r.address.clone()).collect();
    rec.size = size;
    rec.attempt = Some(env.attempts);
    rec.queue_outcome = Some(if expired {
        QueueOutcome::Expired
    } else {
        QueueOutcome::Failed
    });
    let dsn = if env.is_dsn || env.mail_from.address.is_empty() {
        "no DSN (null sender)"
    } else {
        "DSN to the sender unless NOTIFY says otherwise"
    };
    rec.reason = format!(
        "{} after {} attempt(s); {dsn}",
        if expired {
            "delivery time expired"
        } else {
            "permanent failure"
        },
        env.attempts
    );
    rec.reply = failed[0].1.to_string().trim_end().to_string();
    if let Err(e) = gw.recorder.log.write(&rec) {
        tracing::error!(error = %e, queue_id = %env.id, "cannot write the audit line");
    }
}

/// The next attempt after a temporary failure: `min_backoff × 2^(attempts-1)`, at most
/// `max_backoff`, ±10 %.
fn defer(spool: &Spool, env: &mut Envelope) {
    let base = spool.cfg.min_backoff.as_secs_f64()
        * 2f64.powi(env.attempts.saturating_sub(1).min(30) as i32);
    let capped = base.min(spool.cfg.max_backoff.as_secs_f64());
    let jitter = rand::rng().random_range(0.9..=1.1);
    env.next_attempt = now() + (capped * jitter).round().max(1.0) as i64;
}

/// One relay of the pending recipients: MAIL, RCPT each, then the message through the
/// pipeline (conversion included) to those the next hop accepted.
async fn relay_once(gw: &Arc<Gateway>, env: &Envelope, message: Spooled) -> Vec<(RcptTo, Verdict)> {
    let pending: Vec<RcptTo> = env.pending().map(|r| r.rcpt.clone()).collect();
    let mut tx = gw.relay.begin();
    if let Some(c) = &env.client {
        tx.forward_client(ClientOrigin {
            name: None,
            addr: c.addr,
            port: c.port,
            esmtp: c.esmtp,
            helo: c.helo.clone(),
            local: c.local,
        });
    }
    let r = tx.mail_from(&env.mail_from).await;
    if !r.is_positive() {
        tx.reset().await;
        return pending.into_iter().map(|p| (p, verdict(&r))).collect();
    }
    let mut out = Vec::new();
    let mut accepted = Vec::new();
    for p in pending {
        let r = tx.rcpt_to(&p).await;
        if r.is_positive() {
            accepted.push(p);
        } else {
            out.push((p, verdict(&r)));
        }
    }
    if accepted.is_empty() {
        tx.reset().await;
        return out;
    }
    let t = Transaction {
        queue_id: env.id.clone(),
        mail_from: env.mail_from.clone(),
        rcpts: accepted.clone(),
        received: env.received.clone().into_bytes(),
        message,
        client: PeerProbe::default(),
    };
    // With per-recipient links each recipient has its copy's own reply.
    let all: Vec<String> = env.rcpts.iter().map(|r| r.rcpt.address.clone()).collect();
    let spool = message::SpoolAttempt {
        all: &all,
        number: env.attempts + 1,
    };
    let d = message::process_each(gw, &mut tx, t, Some(spool)).await;
    tx.reset().await;
    out.extend(accepted.into_iter().map(|p| {
        let own = d.each.iter().find(|(a, _)| *a == p.address).map(|(_, r)| r);
        let v = verdict(own.unwrap_or(&d.reply));
        (p, v)
    }));
    out
}

/// Queue a DSN about `rcpts` to the message's sender — unless the sender is null, the message
/// is itself a DSN, or every recipient's `NOTIFY=` excludes it.
async fn send_dsn(
    gw: &Arc<Gateway>,
    spool: &Spool,
    env: &Envelope,
    rcpts: &[(RcptTo, Reply)],
    action: mime::DsnAction,
) {
    if env.is_dsn || env.mail_from.address.is_empty() {
        return;
    }
    let wanted: Vec<&(RcptTo, Reply)> = rcpts
        .iter()
        .filter(|(r, _)| {
            let n = r.notify;
            if !n.is_set() {
                return true;
            }
            !n.never
                && match action {
                    mime::DsnAction::Failed => n.failure,
                    mime::DsnAction::Delayed => n.delay,
                }
        })
        .collect();
    if wanted.is_empty() {
        return;
    }
    let original = match spool.queue.message(Place::Active, &env.id).await {
        Ok(m) => m,
        Err(e) => {
            tracing::error!(queue_id = %env.id, error = %e, "cannot read the message for its DSN");
            Spooled::from_bytes(Vec::new())
        }
    };
    let last = chrono::Utc::now();
    let until = chrono::DateTime::<chrono::Utc>::from_timestamp(
        env.arrival + spool.cfg.max_lifetime.as_secs() as i64,
        0,
    );
    let recipients: Vec<mime::DsnRecipient> = wanted
        .iter()
        .map(|(r, reply)| mime::DsnRecipient {
            address: r.address.clone(),
            orcpt: r.orcpt.clone(),
            action,
            status: reply
                .enhanced
                .map(|e| format!("{}.{}.{}", e[0], e[1], e[2]))
                .unwrap_or_else(|| {
                    if reply.is_transient() {
                        "4.0.0"
                    } else {
                        "5.0.0"
                    }
                    .to_string()
                }),
            diagnostic: Some(reply.to_string().trim_end().to_string()),
            remote_mta: gw.relay.next_hop_name(),
            last_attempt: last,
            will_retry_until: match action {
                mime::DsnAction::Delayed => until,
                mime::DsnAction::Failed => None,
            },
        })
        .collect();
    let arrival = chrono::DateTime::<chrono::Utc>::from_timestamp(env.arrival, 0).unwrap_or(last);
    let ret = match env.mail_from.ret {
        Some(Ret::Full) => mime::DsnReturn::Full,
        _ => mime::DsnReturn::Headers,
    };
    let dsn = mime::Dsn {
        reporting_mta: &spool.hostname,
        queue_id: &env.id,
        envid: env.mail_from.envid.as_deref(),
        arrival,
        sender: &env.mail_from.address,
        recipients: &recipients,
        original: original.as_bytes(),
        ret,
        now: last,
    };
    let built = match mime::build_dsn(&dsn) {
        Ok(b) => b,
        Err(e) => {
            tracing::error!(queue_id = %env.id, error = %e, "cannot build the DSN");
            return;
        }
    };
    // A DSN larger than the queue takes (RET=FULL of a large message) goes with headers only.
    let bytes = if built.bytes.len() as u64 > spool.max_message_size {
        let dsn = mime::Dsn {
            ret: mime::DsnReturn::Headers,
            ..dsn
        };
        match mime::build_dsn(&dsn) {
            Ok(b) => b,
            Err(_) => return,
        }
    } else {
        built
    };
    let id = crate::inbound::new_queue_id();
    let dsn_env = Envelope {
        id: id.clone(),
        arrival: now(),
        mail_from: MailFrom {
            address: String::new(),
            body: bytes
                .eight_bit
                .then_some(crate::envelope::Body::EightBitMime),
            smtputf8: bytes.smtputf8,
            ..MailFrom::default()
        },
        rcpts: vec![QueuedRcpt {
            rcpt: RcptTo {
                address: env.mail_from.address.clone(),
                ..RcptTo::default()
            },
            state: RcptState::Pending,
            last_reply: None,
        }],
        received: format!(
            "Received: by {} (cryptshare-gateway)\r\n\tid {id}; {}\r\n",
            spool.hostname,
            last.to_rfc2822()
        ),
        is_dsn: true,
        client: None,
        auth_user: None,
        attempts: 0,
        next_attempt: 0,
        last_error: None,
        delay_warned: false,
    };
    match spool
        .queue
        .enqueue(dsn_env, Spooled::from_bytes(bytes.bytes))
        .await
    {
        Ok(()) => {
            tracing::info!(
                queue_id = %env.id,
                dsn_queue_id = %id,
                action = ?action,
                recipients = recipients.len(),
                "DSN queued"
            );
            gw.recorder
                .metrics
                .dsn(matches!(action, mime::DsnAction::Failed));
            spool
                .fresh
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(id.clone());
            spool.wake.notify_one();
        }
        Err(e) => tracing::error!(queue_id = %env.id, error = %e, "cannot queue the DSN"),
    }
}
