//! The [`Gateway`] every connection shares (relay, Cryptshare client, state store, audit log,
//! metrics, the live policies) and the SMTP core's [`Handler`] built on it.
//!
//! Cut-through: the client sees the next hop's own per-recipient verdicts. MAIL FROM is only
//! remembered (and answered 250 locally); the next-hop transaction is opened at the first RCPT
//! TO the session let through, i.e. once relay control has allowed a recipient. A client that
//! may not relay (outside `client_networks`, not authenticated) therefore never costs a next-hop
//! connection, however many sessions it opens. A dead next hop or its refusal of the sender is
//! the reply to that first RCPT (and to every further one of the transaction). MAIL goes out
//! pipelined with that first RCPT ([`RelayTransaction::mail_rcpt`]): one round trip to the next
//! hop, not two, when it offers PIPELINING. The end of DATA
//! hands the message to [`message::process`](super::message::process).

use std::collections::HashMap;
use std::sync::{Arc, RwLock, Weak};
use std::time::Duration;

use super::PipelineError;
use super::message;
use super::outcome::Recorder;
use super::recovery;
use crate::config::{Config, DkimSign};
use crate::cryptshare;
use crate::envelope::{Extensions, MailFrom, RcptTo};
use crate::inbound::{ConnectionInfo, Handler, HandlerFactory, Transaction};
use crate::ops::audit::AuditLog;
use crate::ops::metrics::{Metrics, TransactionGuard, TxOutcome};
use crate::outbound::{Relay, RelayTransaction, dkim};
use crate::policy::Rules;
use crate::replies::{self, Reply};
use crate::sim::{Emulator, EmulatorHandle};
use crate::store::pg_queue::{PgQueue, QueueStore};
use crate::store::queue::Queue;
use crate::store::state::{Lease, StateError, StateStore};

/// One attempt's hold on a message key ([`Gateway::hold`]).
pub(super) struct Held {
    _local: tokio::sync::OwnedMutexGuard<()>,
    _lease: Lease,
}

/// What can change on SIGHUP.
pub(super) struct Live {
    pub rules: Rules,
    /// `[dkim]`: the keys (rotated by replacing the file and SIGHUP) and what they sign.
    pub dkim: Option<(Arc<dkim::Signer>, DkimSign)>,
}

impl Live {
    fn new(cfg: &Config) -> Result<Live, dkim::DkimError> {
        let dkim = match &cfg.dkim {
            Some(d) => Some((Arc::new(dkim::Signer::from_config(d)?), d.sign)),
            None => None,
        };
        Ok(Live {
            rules: Rules::new(&cfg.policy),
            dkim,
        })
    }
}

/// Shared by every connection.
pub struct Gateway {
    pub(super) relay: Relay,
    live: RwLock<Arc<Live>>,
    pub(super) cryptshare: cryptshare::Client,
    pub(super) state: StateStore,
    /// `[server] hostname`: the default `From:` of the sender's receipts and their
    /// Message-IDs.
    pub(super) hostname: String,
    /// The audit log and the metrics: where every message ends.
    pub(super) recorder: Recorder,
    /// Keeps the embedded emulator running as long as the gateway.
    embedded: Option<EmulatorHandle>,
    /// One lock per message key being converted: an upstream that gives up and retries while
    /// the first attempt still runs must wait for it (and then reuse its transfer) instead of
    /// creating a second one or deleting the first one's session.
    converting: std::sync::Mutex<HashMap<String, Weak<tokio::sync::Mutex<()>>>>,
    /// Spool mode's queue and scheduler, when any listener spools (`[queue]`).
    spool: Option<super::spool::Spool>,
    /// One EHLO at a time learns the next hop's extensions: a burst of new sessions (a flood)
    /// would otherwise open one probe connection each before the first answer is cached.
    probing: tokio::sync::Mutex<()>,
}

impl Gateway {
    /// Build the gateway: relay, Cryptshare client (starting the embedded emulator for
    /// `cryptshare.url = "embedded"`), state store, audit log; `metrics` is where its counters
    /// go (the process-wide registry in `serve`, a fresh one in a test). Cleans up transfer
    /// sessions a previous run left unfinished.
    pub async fn new(cfg: &Config, metrics: Arc<Metrics>) -> Result<Arc<Gateway>, PipelineError> {
        let relay = Relay::new(cfg)?;
        let state = StateStore::open(&cfg.state, &cfg.server.hostname, metrics.state_db()).await?;
        let (cryptshare, embedded) = connect_cryptshare(cfg, metrics.clone()).await?;
        let log = match &cfg.audit {
            Some(a) => AuditLog::to_file(&a.file)?,
            None => AuditLog::to_tracing(),
        };
        // The queue lives where the state does: with PostgreSQL, every node queues into and
        // delivers from the one queue in the database (`store::pg_queue`).
        let spool = if cfg.queue.enabled() {
            let queue = match &state {
                StateStore::File(_) => QueueStore::File(Arc::new(Queue::open(&cfg.state.dir)?)),
                StateStore::Postgres(pg) => QueueStore::Postgres(PgQueue::new(pg.clone(), cfg)),
            };
            Some(super::spool::Spool::new(queue, cfg))
        } else {
            None
        };
        let gw = Arc::new(Gateway {
            spool,
            relay,
            live: RwLock::new(Arc::new(Live::new(cfg)?)),
            cryptshare,
            state,
            hostname: cfg.server.hostname.clone(),
            recorder: Recorder { metrics, log },
            embedded,
            converting: Default::default(),
            probing: Default::default(),
        });
        if gw.spool.is_some() {
            tokio::spawn(super::spool::run(Arc::downgrade(&gw)));
        }
        let retention = Duration::from_secs(u64::from(cfg.state.retention_days) * 86_400);
        let cleanup = gw.clone();
        let shared = gw.state.shared();
        let sweep = cfg.state.lease.max(Duration::from_secs(1));
        tokio::spawn(async move {
            recovery::clean_up_pending(&cleanup.cryptshare, &cleanup.state, retention).await;
            // A shared store outlives any one node: the pending sessions of a node that died
            // are this node's to clean up once their lease ran out, not only at a start.
            // Holds the gateway only weakly between sweeps, so that it can be dropped.
            if shared {
                let weak = Arc::downgrade(&cleanup);
                drop(cleanup);
                loop {
                    tokio::time::sleep(sweep).await;
                    let Some(gw) = weak.upgrade() else { return };
                    recovery::clean_up_pending(&gw.cryptshare, &gw.state, retention).await;
                }
            }
        });
        Ok(gw)
    }

    /// Swap in new policies (SIGHUP). The policy is looked up when a message's data ends, so every
    /// message whose data ends after the reload uses the new rules, also in sessions already open.
    /// A DKIM key that cannot be loaded (the reload's check reads every key first, so this is
    /// a file changed in between) keeps the old keys, rather than relaying unsigned mail.
    pub fn reload(&self, cfg: &Config) {
        let live = match Live::new(cfg) {
            Ok(live) => Arc::new(live),
            Err(e) => {
                tracing::error!(error = %e, "reload: keeping the previous DKIM keys and policies");
                return;
            }
        };
        *self.live.write().unwrap_or_else(|e| e.into_inner()) = live;
    }

    pub(super) fn live(&self) -> Arc<Live> {
        self.live.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Hold message `key` for one attempt: this process's per-key mutex (another session of
    /// this node with the same message waits), then the state store's lease (another node
    /// with the same message waits: PostgreSQL; nothing with the file store). Both are held
    /// until the returned guard drops. A database that cannot be reached is the error (the
    /// client gets `451 4.3.0`, never the original or a second transfer).
    pub(super) async fn hold(&self, key: &str) -> Result<Held, StateError> {
        let local = self.key_lock(key).lock_owned().await;
        let lease = self.state.lease(key).await?;
        Ok(Held {
            _local: local,
            _lease: lease,
        })
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

    /// Spool mode's queue, when any listener spools.
    pub fn spool(&self) -> Option<&super::spool::Spool> {
        self.spool.as_ref()
    }

    /// The embedded emulator, when `cryptshare.url = "embedded"`.
    pub fn embedded(&self) -> Option<&EmulatorHandle> {
        self.embedded.as_ref()
    }

    pub fn state(&self) -> &StateStore {
        &self.state
    }

    /// Reopen the audit file (after log rotation; SIGHUP).
    pub fn reopen_audit(&self) {
        if let Err(e) = self.recorder.log.reopen() {
            tracing::error!(error = %e, "cannot reopen the audit file");
        }
    }
}

/// The Cryptshare server of `[cryptshare]`, or the embedded emulator (started here) for
/// `url = "embedded"`, with a client for it: the emulator's and the client's own constructors
/// for a configuration ([`Emulator::embedded`], [`cryptshare::Client::from_config`]), so nothing
/// in the pipeline knows how either is set up.
async fn connect_cryptshare(
    cfg: &Config,
    metrics: Arc<Metrics>,
) -> Result<(cryptshare::Client, Option<EmulatorHandle>), PipelineError> {
    let embedded = if cfg.cryptshare.url == "embedded" {
        let handle = Emulator::embedded(cfg)
            .await
            .map_err(|e| PipelineError::Embedded(e.to_string()))?;
        Some(handle)
    } else {
        None
    };
    let url = embedded.as_ref().map(EmulatorHandle::url);
    let client = cryptshare::Client::from_config(&cfg.cryptshare, url.as_deref(), metrics)?;
    Ok((client, embedded))
}

/// The [`HandlerFactory`] the server runs: one [`GatewayHandler`] per connection.
#[derive(Clone)]
pub struct GatewayFactory(pub Arc<Gateway>);

impl HandlerFactory for GatewayFactory {
    type Handler = GatewayHandler;
    fn handler(&self) -> GatewayHandler {
        GatewayHandler {
            gw: self.0.clone(),
            spooling: false,
            from: None,
            tx: None,
            refused: None,
            counted: None,
        }
    }
}

pub struct GatewayHandler {
    gw: Arc<Gateway>,
    /// The open transaction is spool mode's: nothing goes to the next hop before the queue.
    spooling: bool,
    /// MAIL FROM of the open transaction, sent to the next hop at the first allowed RCPT.
    from: Option<MailFrom>,
    tx: Option<RelayTransaction>,
    /// The next hop's answer when opening its transaction failed: the reply to every RCPT
    /// of this transaction (one attempt per transaction, not one per recipient).
    refused: Option<Reply>,
    /// Counts the open transaction; dropped unfinished (RSET, disconnect) it counts as aborted.
    counted: Option<TransactionGuard>,
}

impl Handler for GatewayHandler {
    async fn extensions(&mut self) -> Extensions {
        let _one = self.gw.probing.lock().await;
        self.gw.relay.extensions().await
    }

    async fn mail_from(&mut self, info: &ConnectionInfo, from: &MailFrom) -> Reply {
        self.from = Some(from.clone());
        self.tx = None;
        self.refused = None;
        self.spooling = false;
        if let Some(spool) = self.gw.spool.as_ref().filter(|s| s.spools(&info.local)) {
            if let Some(full) = spool.admit(from) {
                self.from = None;
                return full;
            }
            self.spooling = true;
        }
        self.counted = Some(self.gw.recorder.metrics.transaction_started());
        replies::sender_ok()
    }

    async fn rcpt_to(&mut self, info: &ConnectionInfo, rcpt: &RcptTo) -> Reply {
        if self.spooling {
            // Relay control and limits passed in the session; the next hop is asked later.
            return replies::recipient_ok();
        }
        if let Some(r) = &self.refused {
            return r.clone();
        }
        if self.tx.is_none() {
            let Some(from) = &self.from else {
                return replies::need_mail();
            };
            let mut tx = self.gw.relay.begin();
            tx.forward_client(message::client_origin(info));
            // MAIL and this first RCPT go to the next hop together (one round trip).
            return match tx.mail_rcpt(from, rcpt).await {
                Ok(r) => {
                    self.tx = Some(tx);
                    r
                }
                Err(r) => {
                    self.refused = Some(r.clone());
                    // Nothing is open at the next hop; the connection (if any) goes back to the pool.
                    tx.reset().await;
                    r
                }
            };
        }
        match &mut self.tx {
            Some(tx) => tx.rcpt_to(rcpt).await,
            None => replies::need_mail(),
        }
    }

    async fn data(&mut self, info: &ConnectionInfo, t: Transaction) -> Reply {
        if self.spooling
            && let Some(spool) = &self.gw.spool
        {
            let reply = spool.enqueue(info, t).await;
            if let Some(g) = self.counted.take() {
                g.finish(TxOutcome::from_reply_code(reply.code));
            }
            return reply;
        }
        let Some(mut tx) = self.tx.take() else {
            return replies::need_mail();
        };
        let reply = message::process(&self.gw, &mut tx, t).await;
        self.tx = Some(tx);
        if let Some(g) = self.counted.take() {
            g.finish(TxOutcome::from_reply_code(reply.code));
        }
        reply
    }

    async fn reset(&mut self) {
        self.counted = None;
        self.spooling = false;
        self.from = None;
        self.refused = None;
        if let Some(mut tx) = self.tx.take() {
            tx.reset().await;
        }
    }
}
