//! The conversion pipeline: the gateway's [`Handler`] joining the SMTP core, the policy, the MIME
//! engine, Cryptshare and the relay.
//!
//! Per transaction: MAIL FROM and RCPT TO go straight to the next hop (cut-through, so the
//! client sees the next hop's per-recipient verdicts). At the end of DATA the pipeline matches the
//! sender's policy, analyses the message and, when attachments are to be moved, runs the
//! Cryptshare workflow (token → transfer-policy → create → patch → register + upload → finalize →
//! active), rewrites the message and relays it. The client's reply is the outcome: `250` only
//! after the next hop's `250`.
//!
//! All or nothing: if any Cryptshare step fails, no rewritten message is relayed, the server-side
//! session is deleted, and the policy's `on_error` decides (see [`failure_outcome`], the one
//! place where conversion failures become SMTP replies).
//!
//! Exactly once: a finished transfer is recorded in the [`StateStore`] under the message key
//! (envelope + bytes). An upstream retry of the same message — after our 4xx, or after a crash —
//! reuses it and produces the same rewritten message instead of a second transfer.

mod convert;

use std::collections::HashMap;
use std::sync::{Arc, RwLock, Weak};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use crate::config::{Config, OnError, PolicyConfig};
use crate::cryptshare;
use crate::mime::{self, Analysis};
use crate::ops::audit::{AuditLog, AuditRecord, Decision};
use crate::ops::metrics::{MessageResult, TransactionGuard, TxOutcome};
use crate::policy::{self, Rules};
use crate::sim::{Emulator, EmulatorHandle};
use crate::smtp::relay::{Relay, RelayTransaction};
use crate::smtp::{
    ConnectionInfo, Extensions, Handler, HandlerFactory, MailFrom, RcptTo, Reply, Transaction,
    replies,
};
use crate::store::spool::Spooled;
use crate::store::state::{Record, StateStore};

pub use convert::{ConvertError, Converted};

#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error("cryptshare: {0}")]
    Cryptshare(#[from] cryptshare::Error),
    #[error("cryptshare.client_id: {0}")]
    ClientId(String),
    #[error("embedded Cryptshare emulator: {0}")]
    Embedded(String),
    #[error("state.dir: {0}")]
    State(#[from] crate::store::state::StateError),
    #[error("audit.file: {0}")]
    Audit(#[from] crate::ops::audit::AuditError),
    #[error("relay: {0}")]
    Relay(#[from] crate::smtp::relay::RelayError),
}

/// What can change on SIGHUP.
struct Live {
    rules: Rules,
}

/// Shared by every connection.
pub struct Gateway {
    relay: Relay,
    live: RwLock<Arc<Live>>,
    cryptshare: cryptshare::Client,
    state: StateStore,
    audit: AuditLog,
    /// Keeps the embedded emulator running as long as the gateway.
    embedded: Option<EmulatorHandle>,
    /// One lock per message key being converted: an upstream that gives up and retries while
    /// the first attempt still runs must wait for it (and then reuse its transfer) instead of
    /// creating a second one or deleting the first one's session.
    converting: std::sync::Mutex<HashMap<String, Weak<tokio::sync::Mutex<()>>>>,
}

impl Gateway {
    /// Build the gateway: relay, Cryptshare client (starting the embedded emulator for
    /// `cryptshare.url = "embedded"`), state store. Cleans up transfer sessions a previous run
    /// left unfinished.
    pub async fn new(cfg: &Config) -> Result<Arc<Gateway>, PipelineError> {
        let relay = Relay::new(cfg)?;
        let state = StateStore::open(&cfg.state.dir)?;
        let embedded = if cfg.cryptshare.url == "embedded" {
            let handle = Emulator::embedded(cfg)
                .await
                .map_err(|e| PipelineError::Embedded(e.to_string()))?;
            Some(handle)
        } else {
            None
        };
        let cryptshare = cryptshare::Client::from_config(
            &cfg.cryptshare,
            embedded.as_ref().map(EmulatorHandle::url).as_deref(),
            crate::ops::metrics::global().clone(),
        )?;
        let audit = match &cfg.audit {
            Some(a) => AuditLog::to_file(&a.file)?,
            None => AuditLog::to_tracing(),
        };
        let gw = Arc::new(Gateway {
            relay,
            live: RwLock::new(Arc::new(Live {
                rules: Rules::new(&cfg.policy),
            })),
            cryptshare,
            state,
            audit,
            embedded,
            converting: Default::default(),
        });
        let retention = Duration::from_secs(u64::from(cfg.state.retention_days) * 86_400);
        let cleanup = gw.clone();
        tokio::spawn(async move { cleanup.clean_up_pending(retention).await });
        Ok(gw)
    }

    /// Swap in new policies (SIGHUP). The policy is looked up when a message's data ends, so every
    /// message whose data ends after the reload uses the new rules, also in sessions already open.
    pub fn reload(&self, cfg: &Config) {
        let live = Arc::new(Live {
            rules: Rules::new(&cfg.policy),
        });
        *self.live.write().unwrap_or_else(|e| e.into_inner()) = live;
    }

    fn live(&self) -> Arc<Live> {
        self.live.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn key_lock(&self, key: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut map = self.converting.lock().unwrap_or_else(|e| e.into_inner());
        map.retain(|_, w| w.strong_count() > 0);
        if let Some(l) = map.get(key).and_then(Weak::upgrade) {
            return l;
        }
        let l = Arc::new(tokio::sync::Mutex::new(()));
        map.insert(key.to_string(), Arc::downgrade(&l));
        l
    }

    /// The embedded emulator, when `cryptshare.url = "embedded"`.
    pub fn embedded(&self) -> Option<&EmulatorHandle> {
        self.embedded.as_ref()
    }

    pub fn state(&self) -> &StateStore {
        &self.state
    }

    /// Delete server-side sessions that a crashed run left behind, and forget old records.
    async fn clean_up_pending(&self, retention: Duration) {
        match self.state.pending() {
            Ok(list) => {
                for (key, rec) in list {
                    if let Record::Pending {
                        sender,
                        tracking_id,
                        ..
                    } = rec
                    {
                        if let Some(id) = &tracking_id {
                            match convert::earlier_transfer(&self.cryptshare, &sender, id).await {
                                // The retry of that message adopts it (no second transfer).
                                Ok(convert::Earlier::Finalized(_)) => {
                                    tracing::info!(tracking_id = %id, "an earlier run finalized this transfer; kept for the retry");
                                    continue;
                                }
                                Ok(convert::Earlier::Unusable) => {}
                                Ok(convert::Earlier::Unfinished) => {
                                    if let Err(e) =
                                        self.cryptshare.delete_session(&sender, id).await
                                    {
                                        tracing::warn!(tracking_id = %id, error = %e, "cannot delete an unfinished transfer session; will retry at the next start");
                                        continue;
                                    }
                                    tracing::info!(tracking_id = %id, "deleted an unfinished transfer session left by an earlier run");
                                }
                                Err(e) => {
                                    tracing::warn!(tracking_id = %id, error = %e, "cannot check a transfer session left by an earlier run; will retry at the next start");
                                    continue;
                                }
                            }
                        }
                        // A retry may have replaced the record meanwhile: remove only ours.
                        if let Ok(Some(Record::Pending {
                            tracking_id: now, ..
                        })) = self.state.get(&key)
                            && now == tracking_id
                        {
                            let _ = self.state.remove(&key);
                        }
                    }
                }
            }
            Err(e) => tracing::error!(error = %e, "cannot list the state store"),
        }
        if let Err(e) = self.state.expire(retention) {
            tracing::warn!(error = %e, "cannot expire old state records");
        }
    }

    /// The end of every message: the audit line and the message metrics.
    fn audit(&self, rec: &AuditRecord) {
        let m = crate::ops::metrics::global();
        let policy = rec.policy.as_deref();
        let result = match rec.decision {
            Decision::Convert => MessageResult::Converted,
            Decision::Pass => MessageResult::Passed,
            Decision::DeliverOriginal | Decision::Tempfail | Decision::Reject => {
                MessageResult::Failed
            }
        };
        // A message refused by the next hop was not converted or passed in the end.
        let relayed = rec.reply.starts_with('2');
        m.message(
            policy,
            if relayed {
                result
            } else {
                MessageResult::Failed
            },
        );
        if rec.decision == Decision::Convert && rec.durations.cryptshare_ms > 0 {
            m.uploaded(
                policy,
                rec.files.len() as u64,
                rec.files.iter().map(|f| f.size).sum(),
            );
        }
        if let Err(e) = self.audit.write(rec) {
            tracing::error!(error = %e, queue_id = %rec.queue_id, "cannot write the audit line");
        }
    }

    /// Reopen the audit file (after log rotation; SIGHUP).
    pub fn reopen_audit(&self) {
        if let Err(e) = self.audit.reopen() {
            tracing::error!(error = %e, "cannot reopen the audit file");
        }
    }
}

/// The [`HandlerFactory`] the server runs: one [`GatewayHandler`] per connection.
#[derive(Clone)]
pub struct GatewayFactory(pub Arc<Gateway>);

impl HandlerFactory for GatewayFactory {
    type Handler = GatewayHandler;
    fn handler(&self) -> GatewayHandler {
        GatewayHandler {
            gw: self.0.clone(),
            tx: None,
            counted: None,
        }
    }
}

pub struct GatewayHandler {
    gw: Arc<Gateway>,
    tx: Option<RelayTransaction>,
    /// Counts the open transaction; dropped unfinished (RSET, disconnect) it counts as aborted.
    counted: Option<TransactionGuard>,
}

impl Handler for GatewayHandler {
    async fn extensions(&mut self) -> Extensions {
        self.gw.relay.extensions().await
    }

    async fn mail_from(&mut self, _info: &ConnectionInfo, from: &MailFrom) -> Reply {
        let mut tx = self.gw.relay.begin();
        let r = tx.mail_from(from).await;
        self.tx = Some(tx);
        if r.is_positive() {
            self.counted = Some(crate::ops::metrics::global().transaction_started());
        }
        r
    }

    async fn rcpt_to(&mut self, _info: &ConnectionInfo, rcpt: &RcptTo) -> Reply {
        match &mut self.tx {
            Some(tx) => tx.rcpt_to(rcpt).await,
            None => replies::need_mail(),
        }
    }

    async fn data(&mut self, _info: &ConnectionInfo, t: Transaction) -> Reply {
        let Some(mut tx) = self.tx.take() else {
            return replies::need_mail();
        };
        let reply = process(&self.gw, &mut tx, t).await;
        self.tx = Some(tx);
        if let Some(g) = self.counted.take() {
            g.finish(TxOutcome::from_reply_code(reply.code));
        }
        reply
    }

    async fn reset(&mut self) {
        self.counted = None;
        if let Some(mut tx) = self.tx.take() {
            tx.reset().await;
        }
    }
}

async fn process(gw: &Arc<Gateway>, tx: &mut RelayTransaction, t: Transaction) -> Reply {
    let started = Instant::now();
    let live = gw.live();
    let Transaction {
        queue_id,
        mail_from,
        rcpts,
        received,
        message,
    } = t;
    let rcpt_addrs: Vec<String> = rcpts.iter().map(|r| r.address.clone()).collect();
    let mut audit = AuditRecord::new(&queue_id, Decision::Pass);
    audit.sender = mail_from.address.clone();
    audit.recipients = rcpt_addrs.clone();
    audit.size = message.len() as u64;
    audit.message_id = header_message_id(message.as_bytes());

    let message = Arc::new(message);
    let Some(Plan {
        policy,
        analysis,
        selection,
        key,
    }) = plan(&live, &mail_from.address, &rcpt_addrs, &message, &mut audit).await
    else {
        return relay_and_audit(
            gw,
            tx,
            &received,
            message.as_bytes(),
            audit,
            Decision::Pass,
            started,
        )
        .await;
    };

    let job = convert::Job {
        cs: &gw.cryptshare,
        state: &gw.state,
        policy: &policy,
        key: &key,
        sender: &mail_from.address,
        rcpts: &rcpt_addrs,
        message: message.clone(),
        analysis: &analysis,
        selection: &selection.convert,
    };
    let lock = gw.key_lock(&key);
    let converted = {
        let _same_message = lock.lock().await;
        job.run().await
    };
    match converted {
        Ok(converted) => {
            audit.files = converted.audit_files();
            audit.tracking_id = Some(converted.tracking_id.clone());
            let decision = Decision::Convert;
            if converted.reused {
                audit.reason = format!(
                    "{}; reused the transfer of an earlier attempt",
                    audit.reason
                );
            }
            audit.durations.cryptshare_ms = converted.cryptshare_ms;
            let rewritten =
                match rewrite(&message, &analysis, &selection.convert, &policy, &converted) {
                    Ok(r) => r,
                    Err(e) => {
                        // The transfer exists and is recorded; a retry will reuse it.
                        tracing::error!(queue_id = %queue_id, error = %e, "rewrite failed");
                        audit.reason = format!("rewrite failed: {e}");
                        let reply = replies::local_error("rewrite failed");
                        audit.reply = reply.to_string();
                        gw.audit(&finish(audit, Decision::Tempfail, started));
                        return reply;
                    }
                };
            relay_and_audit(gw, tx, &received, &rewritten, audit, decision, started).await
        }
        Err(e) => {
            tracing::warn!(queue_id = %queue_id, error = %e, "conversion failed");
            audit.reason = format!("conversion failed: {e}");
            match failure_outcome(&e, policy.on_error) {
                Failure::DeliverOriginal => {
                    relay_and_audit(
                        gw,
                        tx,
                        &received,
                        message.as_bytes(),
                        audit,
                        Decision::DeliverOriginal,
                        started,
                    )
                    .await
                }
                Failure::Reply(reply) => {
                    audit.reply = reply.to_string();
                    let d = if reply.is_transient() {
                        Decision::Tempfail
                    } else {
                        Decision::Reject
                    };
                    gw.audit(&finish(audit, d, started));
                    reply
                }
            }
        }
    }
}

/// A message the matched policy wants converted.
struct Plan {
    policy: PolicyConfig,
    analysis: Analysis,
    selection: policy::Selection,
    /// The message key for the state store.
    key: String,
}

/// Match the policy and analyse the message. `None` means "relay it unchanged", with the reason
/// (and the matched policy, if any) recorded in `audit`.
async fn plan(
    live: &Live,
    from: &str,
    rcpts: &[String],
    message: &Arc<Spooled>,
    audit: &mut AuditRecord,
) -> Option<Plan> {
    let Some(policy) = live.rules.match_sender(from).cloned() else {
        audit.reason = "no policy matches the sender".into();
        return None;
    };
    audit.policy = Some(policy.name.clone());
    // Analysis touches every byte of a possibly huge message: off the async workers.
    let analysed = {
        let message = message.clone();
        let policy = policy.clone();
        let from = from.to_string();
        let rcpts = rcpts.to_vec();
        tokio::task::spawn_blocking(move || {
            let raw = message.as_bytes();
            let analysis = mime::analyse(raw);
            let selection = policy::select_for(&policy, &analysis, &rcpts);
            // Hashing the whole message is only worth it when a transfer is to be made.
            let key = if selection.convert.is_empty() {
                String::new()
            } else {
                message_key(&from, &rcpts, raw)
            };
            (analysis, selection, key)
        })
        .await
    };
    let Ok((analysis, selection, key)) = analysed else {
        // A panic in analysis must not lose the message: relay it unchanged.
        audit.reason = "analysis failed; relayed unchanged".into();
        return None;
    };
    audit.reason = selection.reason.clone();
    if selection.convert.is_empty() {
        return None;
    }
    Some(Plan {
        policy,
        analysis,
        selection,
        key,
    })
}

fn finish(mut audit: AuditRecord, decision: Decision, started: Instant) -> AuditRecord {
    audit.decision = decision;
    audit.durations.total_ms = started.elapsed().as_millis() as u64;
    audit
}

async fn relay_and_audit(
    gw: &Arc<Gateway>,
    tx: &mut RelayTransaction,
    received: &[u8],
    body: &[u8],
    mut audit: AuditRecord,
    decision: Decision,
    started: Instant,
) -> Reply {
    let relay_started = Instant::now();
    let reply = tx.data(&[received, body]).await;
    crate::ops::metrics::global().next_hop(Some(reply.code), relay_started.elapsed());
    audit.durations.relay_ms = relay_started.elapsed().as_millis() as u64;
    audit.reply = reply.to_string();
    audit.relay = Some(reply.to_string());
    gw.audit(&finish(audit, decision, started));
    reply
}

/// How a failed conversion ends, per the policy's `on_error`.
enum Failure {
    DeliverOriginal,
    Reply(Reply),
}

/// The one place where conversion failures become SMTP replies (SPEC §3):
/// - a failure after finalize, when the transfer exists or may exist, is always `451`: the
///   retry adopts that transfer (exactly once); delivering the original would send the files
///   twice, a `554` would bounce a message whose files went out;
/// - a permanent refusal by the Cryptshare policy (sender, recipients, size) is never
///   retried for days: `554 5.7.1` unless the rule says `deliver-original`;
/// - everything else (unreachable, timeout, 5xx, 429, token refused, local trouble) is
///   `451` with `tempfail`, the original with `deliver-original`, `554` with `reject`.
fn failure_outcome(e: &ConvertError, on_error: OnError) -> Failure {
    if e.after_finalize() {
        return Failure::Reply(Reply::new(
            451,
            [4, 3, 0],
            format!(
                "Cryptshare transfer not confirmed, try again later: {}",
                e.short()
            ),
        ));
    }
    if on_error == OnError::DeliverOriginal {
        return Failure::DeliverOriginal;
    }
    let permanent = e.is_refusal();
    match (permanent, on_error) {
        (true, _) => Failure::Reply(Reply::new(
            554,
            [5, 7, 1],
            format!(
                "Attachments refused by the Cryptshare policy: {}",
                e.short()
            ),
        )),
        (false, OnError::Reject) => Failure::Reply(Reply::new(
            554,
            [5, 3, 0],
            format!(
                "Attachments could not be moved to Cryptshare: {}",
                e.short()
            ),
        )),
        (false, _) => Failure::Reply(Reply::new(
            451,
            [4, 3, 0],
            format!("Cryptshare unavailable, try again later: {}", e.short()),
        )),
    }
}

fn rewrite(
    message: &Spooled,
    analysis: &Analysis,
    remove: &[mime::PartId],
    policy: &PolicyConfig,
    c: &Converted,
) -> Result<Vec<u8>, mime::RewriteError> {
    let notice = mime::Notice {
        language: policy.language.clone(),
        files: c
            .files
            .iter()
            .map(|f| mime::NoticeFile {
                name: f.name.clone(),
                size: f.size,
            })
            .collect(),
        expires: chrono::NaiveDate::parse_from_str(&c.expiration, "%Y-%m-%d").ok(),
        sender: c.sender_display.clone(),
        tracking_id: Some(c.tracking_id.clone()),
        download_url: c.download_url.clone(),
        instructions: Some(c.instructions(&policy.language)),
        template_dir: policy.template_dir.clone(),
    };
    let out = mime::rewrite(message.as_bytes(), analysis, remove, &notice)?;
    // The tag asked for the conversion; it has done its job and leaves the subject.
    Ok(match policy.subject_tag.as_deref() {
        Some(tag) => mime::remove_subject_tag(&out, tag).unwrap_or(out),
        None => out,
    })
}

/// SHA-256 over the envelope and the message bytes (not our `Received:` line, which differs on
/// every attempt).
pub fn message_key(from: &str, rcpts: &[String], raw: &[u8]) -> String {
    let mut h = Sha256::new();
    h.update(from.to_ascii_lowercase().as_bytes());
    h.update([0]);
    let mut r: Vec<String> = rcpts.iter().map(|r| r.to_ascii_lowercase()).collect();
    r.sort();
    for a in &r {
        h.update(a.as_bytes());
        h.update([0]);
    }
    h.update([0]);
    h.update(raw);
    hex::encode(h.finalize())
}

/// The `Message-ID:` of the message, for the audit line.
fn header_message_id(raw: &[u8]) -> Option<String> {
    let msg = mail_parser::MessageParser::default().parse_headers(raw)?;
    msg.message_id()
        .map(|s| s.chars().filter(|c| !c.is_control()).take(250).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(f: Failure) -> Option<String> {
        match f {
            Failure::DeliverOriginal => None,
            Failure::Reply(r) => Some(r.to_string()),
        }
    }

    #[test]
    fn failure_outcomes_follow_on_error_except_after_finalize() {
        let temp = || ConvertError::Local("disk full".into());
        let refused = || ConvertError::PolicyRefused("sender not allowed".into());
        let after = || ConvertError::AfterFinalize("timeout".into());
        assert_eq!(
            reply(failure_outcome(&temp(), OnError::Tempfail)).as_deref(),
            Some("451 4.3.0 Cryptshare unavailable, try again later: disk full")
        );
        assert_eq!(
            reply(failure_outcome(&temp(), OnError::Reject)).as_deref(),
            Some("554 5.3.0 Attachments could not be moved to Cryptshare: disk full")
        );
        assert!(reply(failure_outcome(&temp(), OnError::DeliverOriginal)).is_none());
        for on_error in [OnError::Tempfail, OnError::Reject] {
            assert_eq!(
                reply(failure_outcome(&refused(), on_error)).as_deref(),
                Some(
                    "554 5.7.1 Attachments refused by the Cryptshare policy: refused by the Cryptshare transfer policy: sender not allowed"
                )
            );
        }
        assert!(reply(failure_outcome(&refused(), OnError::DeliverOriginal)).is_none());
        for on_error in [OnError::Tempfail, OnError::Reject, OnError::DeliverOriginal] {
            assert_eq!(
                reply(failure_outcome(&after(), on_error)).as_deref(),
                Some(
                    "451 4.3.0 Cryptshare transfer not confirmed, try again later: transfer sent, not yet confirmed: timeout"
                )
            );
        }
    }

    #[test]
    fn message_key_ignores_recipient_order_and_case() {
        let a = message_key("A@x.org", &["b@y.org".into(), "c@z.org".into()], b"m");
        let b = message_key("a@x.org", &["C@z.org".into(), "b@y.org".into()], b"m");
        assert_eq!(a, b);
        assert_ne!(a, message_key("a@x.org", &["b@y.org".into()], b"m"));
        assert_ne!(
            a,
            message_key("a@x.org", &["b@y.org".into(), "c@z.org".into()], b"n")
        );
    }
}
