//! The PostgreSQL state store (`[state] backend = "postgres"`): the same records as the file
//! store, shared by every gateway node on one database, plus the per-message lease that keeps
//! two nodes from converting the same message at once.
//!
//! Tables (schema version 1, applied by [`migrate`] at start-up):
//! - `csgw_transfers`: one row per message key — the record as JSON (`NULL` while a row only
//!   carries a lease), when it last changed, and the lease (`lease_owner`, `locked_until`);
//! - `csgw_delivered`: one row per recipient whose per-recipient copy the next hop accepted
//!   (what the file store keeps in the record's `delivered` list);
//! - `csgw_schema_version`: the migrations applied.
//!
//! Why a lease column and not a row lock or an advisory lock held by a connection: the lease
//! outlives no crash for longer than `state.lease` (a killed node stops renewing; the database's
//! own clock decides when it ran out, so the nodes' clocks do not matter), it needs no
//! connection kept open per message being converted (the pool stays small), and it fences the
//! writes — a node whose lease another node took over (it stalled for longer than the lease)
//! gets [`StateError::LeaseLost`] on its next write instead of overwriting the new owner's
//! record. Every time in these queries is the database's `now()`.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use tokio::sync::watch;

use super::state::{Record, StateError};
use crate::config::StateConfig;

/// The migrations, in order. Each runs once, inside the transaction that records it; a new
/// version appends one and never edits an old one.
const MIGRATIONS: &[(i32, &str)] = &[
    (
        1,
        "CREATE TABLE csgw_transfers (
         key text PRIMARY KEY,
         record jsonb,
         updated timestamptz NOT NULL DEFAULT now(),
         lease_owner text,
         locked_until timestamptz
     );
     CREATE INDEX csgw_transfers_updated ON csgw_transfers (updated);
     CREATE INDEX csgw_transfers_pending ON csgw_transfers (key)
         WHERE record->>'state' = 'pending';
     CREATE TABLE csgw_delivered (
         key text NOT NULL REFERENCES csgw_transfers (key) ON DELETE CASCADE,
         recipient text NOT NULL,
         delivered timestamptz NOT NULL DEFAULT now(),
         PRIMARY KEY (key, recipient)
     );",
    ),
    (
        2,
        // Spool mode's queue (`store::pg_queue`): one row per message with its envelope, the
        // message in chunks beside it. `next_attempt` and `arrival` are the nodes' clocks
        // (seconds since the epoch, as in the file queue's envelope); leases are the database's.
        "CREATE TABLE csgw_queue (
         id text PRIMARY KEY,
         place text NOT NULL DEFAULT 'active' CHECK (place IN ('active', 'hold', 'corrupt')),
         envelope jsonb NOT NULL,
         arrival bigint NOT NULL,
         next_attempt bigint NOT NULL,
         size bigint NOT NULL,
         queued_by text NOT NULL,
         lease_owner text,
         locked_until timestamptz
     );
     CREATE INDEX csgw_queue_due ON csgw_queue (next_attempt, id) WHERE place = 'active';
     CREATE TABLE csgw_queue_chunk (
         id text NOT NULL REFERENCES csgw_queue (id) ON DELETE CASCADE,
         seq integer NOT NULL,
         data bytea NOT NULL,
         PRIMARY KEY (id, seq)
     );",
    ),
];

/// The advisory lock that serialises migrations of nodes starting at once ("csgw" in ASCII).
const MIGRATION_LOCK: i64 = 0x6373_6777;

/// How long a node waits for the lease of a message another node converts, before the client
/// gets a 4xx (and retries): a conversion lasts as long as its uploads, and an SMTP client
/// waits 10 minutes for the reply to the end of DATA (RFC 5321 §4.5.3.2.6).
const LEASE_WAIT: Duration = Duration::from_secs(300);

/// Between two tries for a lease someone else holds.
const LEASE_POLL: Duration = Duration::from_millis(200);

/// The health check: every `HEALTHY_EVERY` while the database answers; after a failure again
/// after 250 ms, doubled up to `BACKOFF_MAX`.
const HEALTHY_EVERY: Duration = Duration::from_secs(2);
const BACKOFF_MIN: Duration = Duration::from_millis(250);
const BACKOFF_MAX: Duration = Duration::from_secs(5);
const CHECK_TIMEOUT: Duration = Duration::from_secs(5);

/// The error with its causes: the driver's `Display` says only "db error" and keeps the
/// server's message (which never holds the password) in its source.
fn db(e: impl std::error::Error) -> StateError {
    StateError::Database(db_text(e))
}

/// The driver's error with its causes, as text.
pub(super) fn db_text(e: impl std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let more = c.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        cause = c.source();
    }
    text
}

/// The state database's metrics (`csgw_state_db_*`, registered by `ops::metrics`): how long
/// each operation takes (pool checkout and statements), how many failed, the pool's
/// connections and whether the database answers. The command-line tools use an unregistered
/// [`DbMetrics::default`].
#[derive(Clone)]
pub struct DbMetrics {
    pub operations: Family<DbOpLabels, Histogram, fn() -> Histogram>,
    pub errors: Family<DbOpLabels, Counter>,
    /// Connections open (idle and in use), idle, the pool's maximum, and tasks waiting for one.
    pub pool_size: Gauge,
    pub pool_idle: Gauge,
    pub pool_max: Gauge,
    pub pool_waiting: Gauge,
    /// 1 while the health check gets answers, else 0.
    pub up: Gauge,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelSet)]
pub struct DbOpLabels {
    pub op: &'static str,
}

/// Statement latencies: milliseconds on a healthy database, seconds while it fails over.
fn db_histogram() -> Histogram {
    Histogram::new([
        0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
    ])
}

impl Default for DbMetrics {
    fn default() -> Self {
        DbMetrics {
            operations: Family::new_with_constructor(db_histogram),
            errors: Family::default(),
            pool_size: Gauge::default(),
            pool_idle: Gauge::default(),
            pool_max: Gauge::default(),
            pool_waiting: Gauge::default(),
            up: Gauge::default(),
        }
    }
}

impl DbMetrics {
    /// Run one operation of the store or the queue, timed and counted as `op`.
    pub async fn timed<T, E>(
        &self,
        op: &'static str,
        f: impl std::future::Future<Output = Result<T, E>>,
    ) -> Result<T, E> {
        let start = std::time::Instant::now();
        let r = f.await;
        let labels = DbOpLabels { op };
        self.operations
            .get_or_create(&labels)
            .observe(start.elapsed().as_secs_f64());
        if r.is_err() {
            self.errors.get_or_create(&labels).inc();
        }
        r
    }
}

/// The shared part: the pool, this node's name, the leases it holds.
struct Inner {
    pool: Pool,
    /// `host:pid:random`, written into `lease_owner` (plus a counter per lease): who holds a
    /// message, for an operator reading the table.
    node: String,
    lease: Duration,
    /// Key → lease token, for the leases this process holds: the fence of its writes.
    held: Mutex<HashMap<String, String>>,
    counter: std::sync::atomic::AtomicU64,
    health: watch::Sender<Result<(), String>>,
    metrics: DbMetrics,
    /// Whether this process has seen the schema at its version ([`migrate`]). A gateway that
    /// starts while the database is down ([`PgStore::start`]) applies the migrations when the
    /// health check first reaches it; until then every operation fails (a 4xx) rather than
    /// running statements against tables that may not exist yet.
    migrated: AtomicBool,
}

/// Why no connection could be taken for an operation.
#[derive(Debug, thiserror::Error)]
pub(super) enum CheckoutError {
    #[error(
        "the state database's schema is not checked yet (the database was unreachable at start-up)"
    )]
    NotMigrated,
    #[error(transparent)]
    Pool(#[from] deadpool_postgres::PoolError),
}

impl Inner {
    /// A pooled connection for an operation, once the schema is known to be current.
    async fn client(&self) -> Result<deadpool_postgres::Object, CheckoutError> {
        if !self.migrated.load(Ordering::Acquire) {
            return Err(CheckoutError::NotMigrated);
        }
        Ok(self.pool.get().await?)
    }
}

#[derive(Clone)]
pub struct PgStore {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgStore")
            .field("node", &self.inner.node)
            .finish()
    }
}

/// A message this node converts; released when dropped (and renewed until then).
pub struct PgLease {
    inner: Arc<Inner>,
    key: String,
    token: String,
    renew: tokio::task::JoinHandle<()>,
}

impl Drop for PgLease {
    fn drop(&mut self) {
        self.renew.abort();
        self.inner
            .held
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.key);
        let (inner, key, token) = (
            self.inner.clone(),
            std::mem::take(&mut self.key),
            std::mem::take(&mut self.token),
        );
        // Releasing is a courtesy (an unreleased lease runs out by itself): in the background,
        // and not at all without a runtime (the process is ending).
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                if let Err(e) = release(&inner, &key, &token).await {
                    tracing::debug!(error = %e, "cannot release a lease; it runs out by itself");
                }
            });
        }
    }
}

async fn release(inner: &Inner, key: &str, token: &str) -> Result<(), StateError> {
    let c = inner.client().await.map_err(db)?;
    c.execute(
        "UPDATE csgw_transfers SET lease_owner = NULL, locked_until = NULL \
         WHERE key = $1 AND lease_owner = $2",
        &[&key, &token],
    )
    .await
    .map_err(db)?;
    c.execute(
        "DELETE FROM csgw_transfers WHERE key = $1 AND record IS NULL AND lease_owner IS NULL",
        &[&key],
    )
    .await
    .map_err(db)?;
    Ok(())
}

/// The TLS configuration for `sslmode=prefer|require`: verifying, with the system's trust
/// anchors plus `state.ca_file`, on the aws-lc-rs provider the rest of the gateway uses.
fn tls_config(ca_file: Option<&Path>) -> Result<rustls::ClientConfig, StateError> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| StateError::Config(e.to_string()))?;
    let mut roots = rustls::RootCertStore::empty();
    let (_added, _ignored) =
        roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
    if let Some(ca) = ca_file {
        let bad = |e: &dyn std::fmt::Display| {
            StateError::Config(format!("state.ca_file {}: {e}", ca.display()))
        };
        let certs = CertificateDer::pem_file_iter(ca)
            .map_err(|e| bad(&e))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| bad(&e))?;
        if certs.is_empty() {
            return Err(bad(&"no certificate"));
        }
        for c in certs {
            roots.add(c).map_err(|e| bad(&e))?;
        }
    }
    Ok(builder.with_root_certificates(roots).with_no_client_auth())
}

impl Inner {
    /// The pool and this node's identity; connects to nothing yet.
    fn build(cfg: &StateConfig, node: &str, metrics: DbMetrics) -> Result<Inner, StateError> {
        let url = cfg
            .url
            .as_ref()
            .ok_or_else(|| StateError::Config("state.url is not set".into()))?;
        let mut pg: tokio_postgres::Config = url
            .expose()
            .parse()
            .map_err(|e| StateError::Config(format!("state.url {url}: {e}")))?;
        if let Some(f) = &cfg.password_file {
            let text = std::fs::read_to_string(f).map_err(|e| {
                StateError::Config(format!("state.password_file {}: {e}", f.display()))
            })?;
            pg.password(text.trim());
        }
        if pg.get_application_name().is_none() {
            pg.application_name("cryptshare-gateway");
        }
        if pg.get_connect_timeout().is_none() {
            pg.connect_timeout(Duration::from_secs(5));
        }
        let tls =
            tokio_postgres_rustls::MakeRustlsConnect::new(tls_config(cfg.ca_file.as_deref())?);
        let manager = Manager::from_config(
            pg,
            tls,
            ManagerConfig {
                // Each connection taken from the pool is checked with an empty query first: one
                // the server dropped (it restarted, a failover) is replaced then, instead of
                // failing the message it was taken for. A round trip per checkout, a few per
                // converted message.
                recycling_method: RecyclingMethod::Verified,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(cfg.pool_size)
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(Duration::from_secs(10)))
            .create_timeout(Some(Duration::from_secs(5)))
            .recycle_timeout(Some(Duration::from_secs(5)))
            .build()
            .map_err(|e| StateError::Config(e.to_string()))?;
        let random: u32 = rand::random();
        let inner = Inner {
            pool,
            node: format!("{node}:{}:{random:08x}", std::process::id()),
            lease: cfg.lease,
            held: Mutex::new(HashMap::new()),
            counter: Default::default(),
            health: watch::Sender::new(Err("not checked yet".into())),
            metrics,
            migrated: AtomicBool::new(false),
        };
        inner.metrics.pool_max.set(cfg.pool_size as i64);
        tracing::debug!(url = %url, "state database");
        Ok(inner)
    }
}

impl PgStore {
    /// Build the pool, apply the migrations (waiting for a node that applies them at the same
    /// time) and start the health check; fails when the database cannot be reached. For the
    /// command-line tools (`queue`, `find`), which have nothing to do without it. `node` names
    /// this process in `lease_owner`.
    pub async fn connect(
        cfg: &StateConfig,
        node: &str,
        metrics: DbMetrics,
    ) -> Result<PgStore, StateError> {
        let inner = Arc::new(Inner::build(cfg, node, metrics)?);
        migrate(&inner.pool).await?;
        inner.migrated.store(true, Ordering::Release);
        Ok(PgStore::running(inner))
    }

    /// As [`PgStore::connect`], for the gateway: a database that cannot be reached at start-up
    /// is not fatal. The node starts, answers 451 to mail and `/readyz` 503 (the health check
    /// says why), and applies the migrations when the database answers — as it would after the
    /// database went away later. A node restarted by systemd during a database outage, or a
    /// whole site booting with the gateways up before PostgreSQL, needs no manual restart.
    /// What is not a connection problem (a schema newer than this binary, a migration the
    /// server refuses) still stops the start.
    pub async fn start(
        cfg: &StateConfig,
        node: &str,
        metrics: DbMetrics,
    ) -> Result<PgStore, StateError> {
        let inner = Arc::new(Inner::build(cfg, node, metrics)?);
        match inner.pool.get().await {
            Ok(c) => {
                drop(c);
                migrate(&inner.pool).await?;
                inner.migrated.store(true, Ordering::Release);
            }
            Err(e) => {
                let e = db_text(e);
                tracing::error!(
                    error = %e,
                    "the state database is unreachable at start-up: mail gets 451 until it answers"
                );
                let _ = inner.health.send_replace(Err(e));
            }
        }
        Ok(PgStore::running(inner))
    }

    fn running(inner: Arc<Inner>) -> PgStore {
        if inner.migrated.load(Ordering::Acquire) {
            let _ = inner.health.send_replace(Ok(()));
            inner.metrics.up.set(1);
        }
        tokio::spawn(health_loop(Arc::downgrade(&inner)));
        tracing::info!(node = %inner.node, "state store on PostgreSQL");
        PgStore { inner }
    }

    /// The pool, this node's name and the lease length, for the queue (`store::pg_queue`),
    /// which shares them.
    pub(super) async fn client(&self) -> Result<deadpool_postgres::Object, CheckoutError> {
        self.inner.client().await
    }

    pub(super) fn node(&self) -> &str {
        &self.inner.node
    }

    /// Where its operations are timed and counted.
    pub fn metrics(&self) -> &DbMetrics {
        &self.inner.metrics
    }

    pub(super) fn lease_length(&self) -> Duration {
        self.inner.lease
    }

    /// A token for a new lease: this node's name and a counter.
    pub(super) fn new_token(&self) -> String {
        let n = self
            .inner
            .counter
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        format!("{}:{n}", self.inner.node)
    }

    /// Whether the database answers (`/readyz`), updated by the health check.
    pub fn health(&self) -> watch::Receiver<Result<(), String>> {
        self.inner.health.subscribe()
    }

    fn fence(&self, key: &str) -> Option<String> {
        self.inner
            .held
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(key)
            .cloned()
    }

    pub async fn get(&self, key: &str) -> Result<Option<Record>, StateError> {
        let c = self.inner.client().await.map_err(db)?;
        let row = c
            .query_opt(
                "SELECT record, ARRAY(SELECT recipient FROM csgw_delivered d \
                 WHERE d.key = t.key ORDER BY delivered, recipient) \
                 FROM csgw_transfers t WHERE key = $1 AND record IS NOT NULL",
                &[&key],
            )
            .await
            .map_err(db)?;
        let Some(row) = row else {
            return Ok(None);
        };
        let json: serde_json::Value = row.get(0);
        let copies: Vec<String> = row.get(1);
        let mut record: Record = serde_json::from_value(json)
            .map_err(|e| StateError::Database(format!("record {key} is corrupt: {e}")))?;
        if let Record::Finished { delivered, .. } = &mut record {
            *delivered = copies;
        }
        Ok(Some(record))
    }

    /// Insert or replace the record (`INSERT … ON CONFLICT`), unless another node's lease on
    /// the key is live: then [`StateError::LeaseLost`]. A finished record's `delivered` list
    /// replaces the key's delivery rows, as the file store replaces the whole record.
    pub async fn put(&self, key: &str, record: &Record) -> Result<(), StateError> {
        let mut json = serde_json::to_value(record).expect("records always serialise");
        let copies = match (&mut json, record) {
            (serde_json::Value::Object(o), Record::Finished { delivered, .. }) => {
                o.remove("delivered");
                delivered.clone()
            }
            _ => Vec::new(),
        };
        let token = self.fence(key);
        let mut c = self.inner.client().await.map_err(db)?;
        let tx = c.transaction().await.map_err(db)?;
        let n = tx
            .execute(
                "INSERT INTO csgw_transfers (key, record, updated) VALUES ($1, $2, now()) \
                 ON CONFLICT (key) DO UPDATE SET record = EXCLUDED.record, updated = now() \
                 WHERE csgw_transfers.lease_owner IS NULL \
                    OR csgw_transfers.locked_until < now() \
                    OR csgw_transfers.lease_owner = $3",
                &[&key, &json, &token],
            )
            .await
            .map_err(db)?;
        if n == 0 {
            return Err(StateError::LeaseLost);
        }
        tx.execute("DELETE FROM csgw_delivered WHERE key = $1", &[&key])
            .await
            .map_err(db)?;
        for r in &copies {
            tx.execute(
                "INSERT INTO csgw_delivered (key, recipient) VALUES ($1, $2) \
                 ON CONFLICT DO NOTHING",
                &[&key, r],
            )
            .await
            .map_err(db)?;
        }
        tx.commit().await.map_err(db)
    }

    /// One delivery row, only for a finished record (as the file store).
    pub async fn mark_delivered(&self, key: &str, rcpt: &str) -> Result<(), StateError> {
        let c = self.inner.client().await.map_err(db)?;
        c.execute(
            "INSERT INTO csgw_delivered (key, recipient) SELECT $1, $2 WHERE EXISTS \
             (SELECT 1 FROM csgw_transfers WHERE key = $1 AND record->>'state' = 'finished') \
             ON CONFLICT DO NOTHING",
            &[&key, &rcpt],
        )
        .await
        .map_err(db)?;
        Ok(())
    }

    /// The receipt flag lives in the record's JSON (`receipt_sent`, read as false when absent),
    /// set in place; only a finished record has one.
    pub async fn mark_receipt_sent(&self, key: &str) -> Result<(), StateError> {
        let c = self.inner.client().await.map_err(db)?;
        c.execute(
            "UPDATE csgw_transfers SET record = jsonb_set(record, '{receipt_sent}', 'true'), \
             updated = now() WHERE key = $1 AND record->>'state' = 'finished'",
            &[&key],
        )
        .await
        .map_err(db)?;
        Ok(())
    }

    pub async fn remove(&self, key: &str) -> Result<(), StateError> {
        let token = self.fence(key);
        let mut c = self.inner.client().await.map_err(db)?;
        let tx = c.transaction().await.map_err(db)?;
        let n = tx
            .execute(
                "UPDATE csgw_transfers SET record = NULL, updated = now() \
                 WHERE key = $1 AND record IS NOT NULL AND (lease_owner IS NULL \
                    OR locked_until < now() OR lease_owner = $2)",
                &[&key, &token],
            )
            .await
            .map_err(db)?;
        if n == 0 {
            let live = tx
                .query_opt(
                    "SELECT 1 FROM csgw_transfers WHERE key = $1 AND record IS NOT NULL",
                    &[&key],
                )
                .await
                .map_err(db)?;
            if live.is_some() {
                return Err(StateError::LeaseLost);
            }
        }
        tx.execute("DELETE FROM csgw_delivered WHERE key = $1", &[&key])
            .await
            .map_err(db)?;
        tx.execute(
            "DELETE FROM csgw_transfers WHERE key = $1 AND record IS NULL \
             AND (lease_owner IS NULL OR locked_until < now())",
            &[&key],
        )
        .await
        .map_err(db)?;
        tx.commit().await.map_err(db)
    }

    /// The pending records no live node holds a lease on: those of a crashed node (once its
    /// lease ran out) or of failed attempts that kept their record for the retry.
    pub async fn pending(&self) -> Result<Vec<(String, Record)>, StateError> {
        let c = self.inner.client().await.map_err(db)?;
        let rows = c
            .query(
                "SELECT key, record FROM csgw_transfers WHERE record->>'state' = 'pending' \
                 AND (lease_owner IS NULL OR locked_until < now()) ORDER BY key",
                &[],
            )
            .await
            .map_err(db)?;
        let mut out = Vec::new();
        for row in rows {
            let key: String = row.get(0);
            let json: serde_json::Value = row.get(1);
            match serde_json::from_value(json) {
                Ok(r) => out.push((key, r)),
                Err(e) => tracing::warn!(key = %key, error = %e, "a corrupt pending record"),
            }
        }
        Ok(out)
    }

    /// Every record, for reading (`find`), in the file store's [`ScannedRecord`] shape: the
    /// "path" names the table and key.
    pub async fn scan(&self) -> Result<Vec<super::state::ScannedRecord>, StateError> {
        let c = self.inner.client().await.map_err(db)?;
        let rows = c
            .query(
                "SELECT key, record, ARRAY(SELECT recipient FROM csgw_delivered d \
                 WHERE d.key = t.key ORDER BY delivered, recipient) \
                 FROM csgw_transfers t WHERE record IS NOT NULL ORDER BY key",
                &[],
            )
            .await
            .map_err(db)?;
        Ok(rows
            .iter()
            .map(|row| {
                let key: String = row.get(0);
                let copies: Vec<String> = row.get(2);
                let record = serde_json::from_value::<Record>(row.get(1))
                    .map_err(|e| StateError::Database(format!("record {key} is corrupt: {e}")))
                    .map(|mut r| {
                        if let Record::Finished { delivered, .. } = &mut r {
                            *delivered = copies;
                        }
                        r
                    });
                super::state::ScannedRecord {
                    path: format!("postgres:csgw_transfers/{key}").into(),
                    key,
                    record,
                }
            })
            .collect())
    }

    /// Forget records unchanged for longer than `age` that no live node holds.
    pub async fn expire(&self, age: Duration) -> Result<usize, StateError> {
        let c = self.inner.client().await.map_err(db)?;
        let n = c
            .execute(
                "DELETE FROM csgw_transfers WHERE updated < now() - make_interval(secs => $1) \
                 AND (lease_owner IS NULL OR locked_until < now())",
                &[&age.as_secs_f64()],
            )
            .await
            .map_err(db)?;
        Ok(usize::try_from(n).unwrap_or(usize::MAX))
    }

    /// Take the lease on `key` if no live node holds it.
    pub async fn try_lease(&self, key: &str) -> Result<Option<PgLease>, StateError> {
        let n = self
            .inner
            .counter
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let token = format!("{}:{n}", self.inner.node);
        let c = self.inner.client().await.map_err(db)?;
        let got = c
            .execute(
                "INSERT INTO csgw_transfers (key, lease_owner, locked_until) \
                 VALUES ($1, $2, now() + make_interval(secs => $3)) \
                 ON CONFLICT (key) DO UPDATE SET lease_owner = EXCLUDED.lease_owner, \
                     locked_until = EXCLUDED.locked_until \
                 WHERE csgw_transfers.lease_owner IS NULL \
                    OR csgw_transfers.locked_until < now()",
                &[&key, &token, &self.inner.lease.as_secs_f64()],
            )
            .await
            .map_err(db)?;
        if got == 0 {
            return Ok(None);
        }
        self.inner
            .held
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key.to_string(), token.clone());
        let renew = tokio::spawn(renew_loop(
            Arc::downgrade(&self.inner),
            key.to_string(),
            token.clone(),
        ));
        Ok(Some(PgLease {
            inner: self.inner.clone(),
            key: key.to_string(),
            token,
            renew,
        }))
    }

    /// Take the lease on `key`, waiting while another node holds it (it converts the same
    /// message: this attempt then finds its record), at most [`LEASE_WAIT`].
    pub async fn lease(&self, key: &str) -> Result<PgLease, StateError> {
        let deadline = tokio::time::Instant::now() + LEASE_WAIT;
        let mut logged = false;
        loop {
            if let Some(l) = self.try_lease(key).await? {
                return Ok(l);
            }
            if !logged {
                tracing::info!(key = %key, "another gateway node converts this message; waiting for it");
                logged = true;
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(StateError::Busy);
            }
            tokio::time::sleep(LEASE_POLL).await;
        }
    }
}

/// Renew a lease every third of its length while its holder lives. A renewal that finds the
/// lease gone (another node took it after this one stalled) says so; the holder's next write
/// then fails with [`StateError::LeaseLost`].
async fn renew_loop(inner: std::sync::Weak<Inner>, key: String, token: String) {
    loop {
        let Some(every) = inner.upgrade().map(|i| i.lease / 3) else {
            return;
        };
        tokio::time::sleep(every).await;
        let Some(i) = inner.upgrade() else {
            return;
        };
        let renewed = async {
            let c = i.client().await.map_err(db)?;
            c.execute(
                "UPDATE csgw_transfers SET locked_until = now() + make_interval(secs => $3) \
                 WHERE key = $1 AND lease_owner = $2",
                &[&key, &token, &i.lease.as_secs_f64()],
            )
            .await
            .map_err(db)
        };
        match renewed.await {
            Ok(1) => {}
            Ok(_) => {
                tracing::error!(key = %key, "the lease on a message being converted was taken over by another node");
                return;
            }
            Err(e) => tracing::warn!(key = %key, error = %e, "cannot renew the lease on a message"),
        }
    }
}

/// `SELECT 1` on a pooled connection: every [`HEALTHY_EVERY`] while it answers, with a growing
/// pause after failures (each try makes the pool connect anew).
async fn health_loop(inner: std::sync::Weak<Inner>) {
    let mut backoff = BACKOFF_MIN;
    loop {
        let Some(i) = inner.upgrade() else {
            return;
        };
        let check = async {
            let c = i.pool.get().await.map_err(db_text)?;
            c.simple_query("SELECT 1").await.map_err(db_text)?;
            drop(c);
            // A node that started while the database was down brings the schema up to date
            // first (as `connect` would have), then takes mail.
            if !i.migrated.load(Ordering::Acquire) {
                migrate(&i.pool).await.map_err(|e| e.to_string())?;
                i.migrated.store(true, Ordering::Release);
                tracing::info!("the state database's schema is current");
            }
            Ok::<(), String>(())
        };
        let result = match tokio::time::timeout(CHECK_TIMEOUT, check).await {
            Ok(r) => r,
            Err(_) => Err("no answer within 5 s".into()),
        };
        let pause = match &result {
            Ok(()) => {
                backoff = BACKOFF_MIN;
                HEALTHY_EVERY
            }
            Err(_) => {
                let p = backoff;
                backoff = (backoff * 2).min(BACKOFF_MAX);
                p
            }
        };
        let status = i.pool.status();
        let m = &i.metrics;
        m.up.set(i64::from(result.is_ok()));
        m.pool_size.set(status.size as i64);
        m.pool_idle.set(status.available as i64);
        m.pool_waiting.set(status.waiting as i64);
        let was = i.health.send_replace(result.clone());
        match (&was, &result) {
            (Ok(()), Err(e)) => tracing::error!(error = %e, "the state database is unreachable"),
            (Err(_), Ok(())) => tracing::info!("the state database answers again"),
            _ => {}
        }
        drop(i);
        tokio::time::sleep(pause).await;
    }
}

/// Apply the missing migrations, one transaction under an advisory lock: nodes starting at once
/// wait for each other, and the second finds the schema current. A database newer than this
/// binary (after a downgrade) is refused rather than used with a schema it does not know.
async fn migrate(pool: &Pool) -> Result<(), StateError> {
    let mut c = pool.get().await.map_err(db)?;
    let tx = c.transaction().await.map_err(db)?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await
        .map_err(db)?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS csgw_schema_version (
             version integer PRIMARY KEY,
             applied timestamptz NOT NULL DEFAULT now()
         )",
    )
    .await
    .map_err(db)?;
    let current: i32 = tx
        .query_one(
            "SELECT coalesce(max(version), 0) FROM csgw_schema_version",
            &[],
        )
        .await
        .map_err(db)?
        .get(0);
    let latest = MIGRATIONS.last().map_or(0, |m| m.0);
    if current > latest {
        return Err(StateError::Database(format!(
            "the database schema is at version {current}, newer than this gateway's {latest}: \
             run the newer gateway version"
        )));
    }
    for (version, sql) in MIGRATIONS.iter().filter(|m| m.0 > current) {
        tx.batch_execute(sql).await.map_err(db)?;
        tx.execute(
            "INSERT INTO csgw_schema_version (version) VALUES ($1)",
            &[version],
        )
        .await
        .map_err(db)?;
        tracing::info!(version, "applied a state database migration");
    }
    tx.commit().await.map_err(db)
}
