//! Spool mode's queue on PostgreSQL (`[state] backend = "postgres"` with spool mode): every
//! gateway node queues into, and delivers from, one queue, so that any node delivers any
//! message and the queue of a node that died is taken over by the others.
//!
//! Tables (schema version 2, `store::postgres`):
//! - `csgw_queue`: one row per message — `place` (`active`, `hold`, `corrupt`, as the file
//!   queue's directories), the envelope as JSON (the file queue's first line), `arrival` and
//!   `next_attempt` (copied out of the envelope for the scheduler's index), `size`, the node
//!   that queued it, and the lease (`lease_owner`, `locked_until`);
//! - `csgw_queue_chunk`: the message exactly as received, in chunks of [`CHUNK`] bytes
//!   (`seq` 0, 1, …), deleted with its row.
//!
//! The Postfix promise becomes the database's: `250 queued as` only after the transaction that
//! inserted the row and every chunk committed (with PostgreSQL's default `synchronous_commit =
//! on`, the commit is on the database's disk, and on a synchronous standby if one is set up).
//! The message is written chunk by chunk from the receive spool (memory or a mapped file) and
//! read back chunk by chunk into a new spool ([`SpoolWriter`]), so that no step holds more than
//! a chunk beyond what the receive spool holds anyway.
//!
//! A delivery attempt claims its message with a lease: one `UPDATE … WHERE id = (SELECT … FOR
//! UPDATE SKIP LOCKED)` that succeeds only while no live lease exists, so two nodes never try
//! the same message at once, and a node that finds a message claimed moves on at once instead
//! of waiting on the row. The lease is renewed every third of `state.lease` while the attempt
//! runs (an upload of hundreds of MB outlasts any fixed lease); a node that dies stops renewing,
//! and once its leases ran out (the database's clock decides) the other nodes' scans find its
//! messages. The attempt's result — the new envelope, or the removal — is written only under
//! the lease it took (`WHERE lease_owner = token`): a node that stalled past its lease gets
//! [`QueueError::LeaseLost`] instead of overwriting what the new owner did.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures_util::TryStreamExt;
use tokio_postgres::types::ToSql;

use super::postgres::{PgStore, db_text};
use super::queue::{Envelope, Listed, Place, QueueError, valid_id};
use super::spool::{SpoolWriter, Spooled};

/// Bytes per chunk row: large enough that a 100 MB message is a hundred statements, small
/// enough that one statement's buffers stay small.
pub const CHUNK: usize = 1 << 20;

fn db(e: impl std::error::Error) -> QueueError {
    QueueError::Database(db_text(e))
}

fn place_of(name: &str) -> Place {
    match name {
        "hold" => Place::Hold,
        "corrupt" => Place::Corrupt,
        _ => Place::Active,
    }
}

/// The queue in the state database.
#[derive(Clone)]
pub struct PgQueue {
    store: PgStore,
    /// Reading a message back: kept in memory up to this, then spilled into `spool_dir`.
    memory_limit: usize,
    spool_dir: PathBuf,
    /// The local directory whose file system the receive spool uses (the disk reserve).
    state_dir: PathBuf,
}

impl std::fmt::Debug for PgQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgQueue").finish_non_exhaustive()
    }
}

/// The claim on one queued message (see the module comment); renewed until dropped, released
/// when dropped without [`PgQueue::finish`].
pub struct PgQueueLease {
    store: PgStore,
    pub id: String,
    token: String,
    renew: tokio::task::JoinHandle<()>,
    released: bool,
}

impl Drop for PgQueueLease {
    fn drop(&mut self) {
        self.renew.abort();
        if self.released {
            return;
        }
        let (store, id, token) = (
            self.store.clone(),
            std::mem::take(&mut self.id),
            std::mem::take(&mut self.token),
        );
        // A courtesy, as the state store's: an unreleased lease runs out by itself.
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                let released = async {
                    let c = store.client().await.map_err(db)?;
                    c.execute(
                        "UPDATE csgw_queue SET lease_owner = NULL, locked_until = NULL \
                         WHERE id = $1 AND lease_owner = $2",
                        &[&id, &token],
                    )
                    .await
                    .map_err(db)
                };
                if let Err(e) = released.await {
                    tracing::debug!(queue_id = %id, error = %e, "cannot release a queue lease; it runs out by itself");
                }
            });
        }
    }
}

impl PgQueue {
    /// The queue of the gateway `cfg` configures, in `store`'s database: messages read back
    /// spill like received ones (`server.spool_memory_limit`, under `state.dir`).
    pub fn new(store: PgStore, cfg: &crate::config::Config) -> PgQueue {
        PgQueue {
            store,
            memory_limit: cfg.server.spool_memory_limit,
            spool_dir: super::spool::spool_dir(&cfg.state.dir),
            state_dir: cfg.state.dir.clone(),
        }
    }

    /// Time and count one operation in the state database's metrics.
    async fn timed<T>(
        &self,
        op: &'static str,
        f: impl std::future::Future<Output = Result<T, QueueError>>,
    ) -> Result<T, QueueError> {
        self.store.metrics().timed(op, f).await
    }

    /// Free bytes where messages are received before they reach the database.
    pub fn free_space(&self) -> Result<u64, QueueError> {
        super::queue::free_space(&self.state_dir).map_err(|source| QueueError::Io {
            path: self.state_dir.clone(),
            source,
        })
    }

    /// Insert the message and its envelope in one transaction; only after the commit may the
    /// client get `250`.
    pub async fn enqueue(&self, envelope: &Envelope, message: &Spooled) -> Result<(), QueueError> {
        valid_id(&envelope.id)?;
        let json = serde_json::to_value(envelope).expect("envelopes serialise");
        let bytes = message.as_bytes();
        let mut c = self.store.client().await.map_err(db)?;
        let tx = c.transaction().await.map_err(db)?;
        tx.execute(
            "INSERT INTO csgw_queue (id, envelope, arrival, next_attempt, size, queued_by) \
             VALUES ($1, $2, $3, $4, $5, $6)",
            &[
                &envelope.id,
                &json,
                &envelope.arrival,
                &envelope.next_attempt,
                &(bytes.len() as i64),
                &self.store.node(),
            ],
        )
        .await
        .map_err(db)?;
        let insert = tx
            .prepare("INSERT INTO csgw_queue_chunk (id, seq, data) VALUES ($1, $2, $3)")
            .await
            .map_err(db)?;
        for (seq, chunk) in bytes.chunks(CHUNK).enumerate() {
            tx.execute(&insert, &[&envelope.id, &(seq as i32), &chunk])
                .await
                .map_err(db)?;
        }
        tx.commit().await.map_err(db)
    }

    /// Due messages of `active` that no live node holds, oldest due first; the queue's length
    /// (active and held) and its oldest arrival.
    pub async fn scan(&self, now: i64) -> Result<(Vec<String>, usize, Option<i64>), QueueError> {
        let c = self.store.client().await.map_err(db)?;
        let due = c
            .query(
                "SELECT id FROM csgw_queue WHERE place = 'active' AND next_attempt <= $1 \
                 AND (lease_owner IS NULL OR locked_until < now()) \
                 ORDER BY next_attempt, id LIMIT 10000",
                &[&now],
            )
            .await
            .map_err(db)?
            .iter()
            .map(|r| r.get::<_, String>(0))
            .collect();
        let row = c
            .query_one(
                "SELECT count(*), min(arrival) FROM csgw_queue WHERE place IN ('active', 'hold')",
                &[],
            )
            .await
            .map_err(db)?;
        let count: i64 = row.get(0);
        let oldest: Option<i64> = row.get(1);
        Ok((due, usize::try_from(count).unwrap_or(0), oldest))
    }

    /// Claim a message of `place` without waiting: `Busy` while another live lease holds it.
    pub async fn lease(&self, place: Place, id: &str) -> Result<PgQueueLease, QueueError> {
        valid_id(id)?;
        let token = self.store.new_token();
        let secs = self.store.lease_length().as_secs_f64();
        let c = self.store.client().await.map_err(db)?;
        let got = c
            .execute(
                "UPDATE csgw_queue SET lease_owner = $2, \
                     locked_until = now() + make_interval(secs => $3) \
                 WHERE id = (SELECT id FROM csgw_queue WHERE id = $1 AND place = $4 \
                     AND (lease_owner IS NULL OR locked_until < now()) FOR UPDATE SKIP LOCKED)",
                &[&id, &token, &secs, &place.name()],
            )
            .await
            .map_err(db)?;
        if got == 0 {
            let there = c
                .query_opt(
                    "SELECT 1 FROM csgw_queue WHERE id = $1 AND place = $2",
                    &[&id, &place.name()],
                )
                .await
                .map_err(db)?;
            return Err(match there {
                Some(_) => QueueError::Busy(id.to_string()),
                None => QueueError::NotFound(id.to_string()),
            });
        }
        let renew = tokio::spawn(renew_loop(
            self.store.clone(),
            id.to_string(),
            token.clone(),
        ));
        Ok(PgQueueLease {
            store: self.store.clone(),
            id: id.to_string(),
            token,
            renew,
            released: false,
        })
    }

    pub async fn envelope(&self, place: Place, id: &str) -> Result<Envelope, QueueError> {
        valid_id(id)?;
        let c = self.store.client().await.map_err(db)?;
        let row = c
            .query_opt(
                "SELECT envelope FROM csgw_queue WHERE id = $1 AND place = $2",
                &[&id, &place.name()],
            )
            .await
            .map_err(db)?
            .ok_or_else(|| QueueError::NotFound(id.to_string()))?;
        let json: serde_json::Value = row.get(0);
        let env: Envelope = serde_json::from_value(json).map_err(|e| QueueError::Corrupt {
            path: format!("csgw_queue {id}").into(),
            reason: e.to_string(),
        })?;
        if env.id != id {
            return Err(QueueError::Corrupt {
                path: format!("csgw_queue {id}").into(),
                reason: format!("its id is {:?}", env.id),
            });
        }
        Ok(env)
    }

    /// The message, read chunk by chunk into a new receive spool (memory, spilling to a file).
    /// Missing or short chunks make it `Corrupt`.
    pub async fn message(&self, id: &str) -> Result<Spooled, QueueError> {
        valid_id(id)?;
        let c = self.store.client().await.map_err(db)?;
        let size: i64 = c
            .query_opt("SELECT size FROM csgw_queue WHERE id = $1", &[&id])
            .await
            .map_err(db)?
            .ok_or_else(|| QueueError::NotFound(id.to_string()))?
            .get(0);
        let params: [&(dyn ToSql + Sync); 1] = [&id];
        let rows = c
            .query_raw(
                "SELECT seq, data FROM csgw_queue_chunk WHERE id = $1 ORDER BY seq",
                params.iter().map(|p| *p as &dyn ToSql),
            )
            .await
            .map_err(db)?;
        futures_util::pin_mut!(rows);
        let mut w = SpoolWriter::new(self.memory_limit, self.spool_dir.clone());
        let spool_err = |source| QueueError::Io {
            path: self.spool_dir.clone(),
            source,
        };
        let mut expect = 0i32;
        while let Some(row) = rows.try_next().await.map_err(db)? {
            let seq: i32 = row.get(0);
            if seq != expect {
                return Err(corrupt(id, format!("chunk {expect} is missing")));
            }
            expect += 1;
            w.write(row.get::<_, &[u8]>(1)).map_err(spool_err)?;
        }
        if w.len() != size as u64 {
            return Err(corrupt(
                id,
                format!("{} of {size} bytes in the database", w.len()),
            ));
        }
        w.finish().map_err(spool_err)
    }

    /// Move a message whose content cannot be read to `corrupt` (reported, never retried).
    pub async fn quarantine(&self, lease: PgQueueLease, reason: &str) -> QueueError {
        tracing::error!(queue_id = %lease.id, reason, "corrupt queue entry quarantined");
        let r = self
            .finish_with(
                lease,
                "UPDATE csgw_queue SET place = 'corrupt', lease_owner = NULL, locked_until = NULL \
                 WHERE id = $1 AND lease_owner = $2",
                &[],
            )
            .await;
        match r {
            Ok(id) | Err(QueueError::LeaseLost(id)) => QueueError::Corrupt {
                path: format!("csgw_queue {id}").into(),
                reason: reason.to_string(),
            },
            Err(e) => e,
        }
    }

    /// The end of an attempt: the message leaves the queue (`done`), or its new envelope is
    /// stored and the lease given back — only while the lease is still this attempt's.
    pub async fn finish(
        &self,
        lease: PgQueueLease,
        envelope: &Envelope,
        done: bool,
    ) -> Result<(), QueueError> {
        if done {
            self.finish_with(
                lease,
                "DELETE FROM csgw_queue WHERE id = $1 AND lease_owner = $2",
                &[],
            )
            .await
            .map(drop)
        } else {
            self.update(lease, envelope).await
        }
    }

    /// Store a changed envelope (and its next attempt) and give the lease back.
    pub async fn update(&self, lease: PgQueueLease, envelope: &Envelope) -> Result<(), QueueError> {
        let json = serde_json::to_value(envelope).expect("envelopes serialise");
        self.finish_with(
            lease,
            "UPDATE csgw_queue SET envelope = $3, next_attempt = $4, \
                 lease_owner = NULL, locked_until = NULL \
             WHERE id = $1 AND lease_owner = $2",
            &[&json, &envelope.next_attempt],
        )
        .await
        .map(drop)
    }

    /// Move a leased message between `active` and `hold` (`queue hold|release`), with a new
    /// envelope when given.
    pub async fn move_to(
        &self,
        lease: PgQueueLease,
        to: Place,
        envelope: Option<&Envelope>,
    ) -> Result<(), QueueError> {
        match envelope {
            Some(e) => {
                let json = serde_json::to_value(e).expect("envelopes serialise");
                self.finish_with(
                    lease,
                    "UPDATE csgw_queue SET place = $3, envelope = $4, next_attempt = $5, \
                         lease_owner = NULL, locked_until = NULL \
                     WHERE id = $1 AND lease_owner = $2",
                    &[&to.name(), &json, &e.next_attempt],
                )
                .await
            }
            None => {
                self.finish_with(
                    lease,
                    "UPDATE csgw_queue SET place = $3, lease_owner = NULL, locked_until = NULL \
                     WHERE id = $1 AND lease_owner = $2",
                    &[&to.name()],
                )
                .await
            }
        }
        .map(drop)
    }

    /// Remove a leased message (`queue delete`).
    pub async fn remove(&self, lease: PgQueueLease) -> Result<(), QueueError> {
        self.finish_with(
            lease,
            "DELETE FROM csgw_queue WHERE id = $1 AND lease_owner = $2",
            &[],
        )
        .await
        .map(drop)
    }

    /// Run `sql` with `$1` = id, `$2` = the lease's token and `extra` after them; no row means
    /// the lease passed to another node.
    async fn finish_with(
        &self,
        mut lease: PgQueueLease,
        sql: &str,
        extra: &[&(dyn ToSql + Sync)],
    ) -> Result<String, QueueError> {
        lease.renew.abort();
        let id = lease.id.clone();
        let mut params: Vec<&(dyn ToSql + Sync)> = vec![&id, &lease.token];
        params.extend_from_slice(extra);
        // The attempt's outcome is known here (for `DELETE`: the next hop said 250) and must
        // not be lost to a database that is away for a moment (a restart, a failover): the
        // statement is tried again until it lands. Other nodes cannot take the message before
        // the lease, renewed until just now, runs out; and since the statement is fenced by
        // the token, a late success after that is still right (no row: another node has it).
        // Only an outage longer than the lease leaves a delivered message to be delivered
        // again. Gives up after twice the lease, when another node will have taken over.
        let first_failure = std::time::Instant::now();
        let mut pause = Duration::from_millis(100);
        let n = loop {
            let tried = async {
                let c = self.store.client().await.map_err(db)?;
                c.execute(sql, &params).await.map_err(db)
            };
            match tried.await {
                Ok(n) => break n,
                Err(e) if first_failure.elapsed() < 2 * self.store.lease_length() => {
                    tracing::warn!(queue_id = %id, error = %e, "cannot record the end of an attempt yet; trying again");
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_secs(2));
                }
                Err(e) => return Err(e),
            }
        };
        lease.released = true;
        if n == 0 {
            tracing::error!(queue_id = %id, "the lease on a queued message passed to another node before its attempt ended");
            return Err(QueueError::LeaseLost(id));
        }
        Ok(id)
    }

    /// Where a message is.
    pub async fn find(&self, id: &str) -> Result<Place, QueueError> {
        valid_id(id)?;
        let c = self.store.client().await.map_err(db)?;
        let row = c
            .query_opt("SELECT place FROM csgw_queue WHERE id = $1", &[&id])
            .await
            .map_err(db)?
            .ok_or_else(|| QueueError::NotFound(id.to_string()))?;
        Ok(place_of(row.get(0)))
    }

    /// Everything, oldest id first, with envelopes where readable (`queue list`).
    pub async fn list_all(&self) -> Result<Vec<Listed>, QueueError> {
        let c = self.store.client().await.map_err(db)?;
        let rows = c
            .query(
                "SELECT id, place, envelope, size FROM csgw_queue ORDER BY id",
                &[],
            )
            .await
            .map_err(db)?;
        Ok(rows
            .iter()
            .map(|r| {
                let id: String = r.get(0);
                let envelope = serde_json::from_value::<Envelope>(r.get(2))
                    .ok()
                    .filter(|e| e.id == id);
                Listed {
                    place: place_of(r.get(1)),
                    envelope,
                    id,
                    size: r.get::<_, i64>(3).max(0) as u64,
                }
            })
            .collect())
    }
}

fn corrupt(id: &str, reason: String) -> QueueError {
    QueueError::Corrupt {
        path: format!("csgw_queue_chunk {id}").into(),
        reason,
    }
}

/// Renew a queue lease every third of its length while the attempt runs.
async fn renew_loop(store: PgStore, id: String, token: String) {
    let every = store.lease_length() / 3;
    loop {
        tokio::time::sleep(every).await;
        let renewed = async {
            let c = store.client().await.map_err(db)?;
            c.execute(
                "UPDATE csgw_queue SET locked_until = now() + make_interval(secs => $3) \
                 WHERE id = $1 AND lease_owner = $2",
                &[&id, &token, &store.lease_length().as_secs_f64()],
            )
            .await
            .map_err(db)
        };
        match renewed.await {
            Ok(1) => {}
            Ok(_) => {
                tracing::error!(queue_id = %id, "the lease on a queued message being delivered was taken over by another node");
                return;
            }
            Err(e) => {
                tracing::warn!(queue_id = %id, error = %e, "cannot renew the lease on a queued message")
            }
        }
    }
}

/// The queue either backend keeps; what the scheduler and the `queue` commands use.
///
/// An enum for the same reason as [`super::state::StateStore`]: two backends, both here, and
/// async callers. The file queue's calls are blocking file work, run on tokio's blocking pool.
#[derive(Clone)]
pub enum QueueStore {
    File(Arc<super::queue::Queue>),
    Postgres(PgQueue),
}

/// The claim on one message while an attempt or a `queue` command works on it.
pub enum QueueLease {
    File(super::queue::Lease),
    Postgres(PgQueueLease),
}

fn joined(e: tokio::task::JoinError) -> QueueError {
    QueueError::Io {
        path: PathBuf::from("queue"),
        source: std::io::Error::other(e.to_string()),
    }
}

impl QueueStore {
    /// The file queue, for tests and tools that look at its files.
    pub fn file(&self) -> Option<&super::queue::Queue> {
        match self {
            QueueStore::File(q) => Some(q),
            QueueStore::Postgres(_) => None,
        }
    }

    /// Where it is, for messages.
    pub fn describe(&self) -> String {
        match self {
            QueueStore::File(q) => q.root().display().to_string(),
            QueueStore::Postgres(_) => "the state database (csgw_queue)".into(),
        }
    }

    pub fn free_space(&self) -> Result<u64, QueueError> {
        match self {
            QueueStore::File(q) => q.free_space(),
            QueueStore::Postgres(q) => q.free_space(),
        }
    }

    pub async fn enqueue(&self, envelope: Envelope, message: Spooled) -> Result<(), QueueError> {
        match self {
            QueueStore::File(q) => {
                let q = q.clone();
                tokio::task::spawn_blocking(move || q.enqueue(&envelope, message.as_bytes()))
                    .await
                    .map_err(joined)?
            }
            QueueStore::Postgres(q) => {
                q.timed("queue_enqueue", q.enqueue(&envelope, &message))
                    .await
            }
        }
    }

    /// Due ids, the queue's length and its oldest arrival (see [`PgQueue::scan`]).
    pub async fn scan(&self, now: i64) -> (Vec<String>, usize, Option<i64>) {
        match self {
            QueueStore::File(q) => {
                let q = q.clone();
                tokio::task::spawn_blocking(move || scan_files(&q, now))
                    .await
                    .unwrap_or_default()
            }
            QueueStore::Postgres(q) => {
                q.timed("queue_scan", q.scan(now))
                    .await
                    .unwrap_or_else(|e| {
                        tracing::error!(error = %e, "cannot scan the queue");
                        Default::default()
                    })
            }
        }
    }

    pub async fn lease(&self, place: Place, id: &str) -> Result<QueueLease, QueueError> {
        match self {
            QueueStore::File(q) => q.lease(place, id).map(QueueLease::File),
            QueueStore::Postgres(q) => q
                .timed("queue_lease", q.lease(place, id))
                .await
                .map(QueueLease::Postgres),
        }
    }

    pub async fn envelope(&self, place: Place, id: &str) -> Result<Envelope, QueueError> {
        match self {
            QueueStore::File(q) => q.envelope(place, id),
            QueueStore::Postgres(q) => q.timed("queue_envelope", q.envelope(place, id)).await,
        }
    }

    pub async fn message(&self, place: Place, id: &str) -> Result<Spooled, QueueError> {
        match self {
            QueueStore::File(q) => q.message(place, id),
            QueueStore::Postgres(q) => q.timed("queue_message", q.message(id)).await,
        }
    }

    pub async fn quarantine(
        &self,
        place: Place,
        lease: QueueLease,
        id: &str,
        reason: &str,
    ) -> QueueError {
        match (self, lease) {
            (QueueStore::File(q), QueueLease::File(l)) => {
                q.quarantine_leased(place, &l, id, reason)
            }
            (QueueStore::Postgres(q), QueueLease::Postgres(l)) => q.quarantine(l, reason).await,
            _ => unreachable!("a lease belongs to its own backend"),
        }
    }

    /// The end of an attempt (see [`PgQueue::finish`]); the file queue's fsyncs on the
    /// blocking pool, under the lease until they are done.
    pub async fn finish(
        &self,
        place: Place,
        lease: QueueLease,
        envelope: Envelope,
        done: bool,
    ) -> Result<(), QueueError> {
        match (self, lease) {
            (QueueStore::File(q), QueueLease::File(l)) => {
                let q = q.clone();
                tokio::task::spawn_blocking(move || {
                    let r = if done {
                        q.remove(place, &l, &envelope.id)
                    } else {
                        q.update(place, &envelope)
                    };
                    drop(l);
                    r
                })
                .await
                .map_err(joined)?
            }
            (QueueStore::Postgres(q), QueueLease::Postgres(l)) => {
                q.timed("queue_finish", q.finish(l, &envelope, done)).await
            }
            _ => unreachable!("a lease belongs to its own backend"),
        }
    }
}

/// What the `queue` commands need beyond the scheduler's calls.
impl QueueStore {
    pub async fn find(&self, id: &str) -> Result<Place, QueueError> {
        match self {
            QueueStore::File(q) => q.find(id),
            QueueStore::Postgres(q) => q.find(id).await,
        }
    }

    pub async fn list_all(&self) -> Result<Vec<Listed>, QueueError> {
        match self {
            QueueStore::File(q) => q.list_all(),
            QueueStore::Postgres(q) => q.list_all().await,
        }
    }

    /// Store a changed envelope under the lease, and give the lease up.
    pub async fn update(
        &self,
        place: Place,
        lease: QueueLease,
        envelope: &Envelope,
    ) -> Result<(), QueueError> {
        match (self, lease) {
            (QueueStore::File(q), QueueLease::File(l)) => {
                let r = q.update(place, envelope);
                drop(l);
                r
            }
            (QueueStore::Postgres(q), QueueLease::Postgres(l)) => q.update(l, envelope).await,
            _ => unreachable!("a lease belongs to its own backend"),
        }
    }

    pub async fn remove(
        &self,
        place: Place,
        lease: QueueLease,
        id: &str,
    ) -> Result<(), QueueError> {
        match (self, lease) {
            (QueueStore::File(q), QueueLease::File(l)) => q.remove(place, &l, id),
            (QueueStore::Postgres(q), QueueLease::Postgres(l)) => q.remove(l).await,
            _ => unreachable!("a lease belongs to its own backend"),
        }
    }

    /// Move between `active` and `hold`, with `envelope` stored on the way when given.
    pub async fn move_to(
        &self,
        from: Place,
        to: Place,
        lease: QueueLease,
        id: &str,
        envelope: Option<&Envelope>,
    ) -> Result<(), QueueError> {
        match (self, lease) {
            (QueueStore::File(q), QueueLease::File(l)) => {
                if let Some(e) = envelope {
                    q.update(from, e)?;
                }
                q.move_to(from, to, &l, id)
            }
            (QueueStore::Postgres(q), QueueLease::Postgres(l)) => q.move_to(l, to, envelope).await,
            _ => unreachable!("a lease belongs to its own backend"),
        }
    }
}

/// The file queue's scan: every active envelope read (a message being delivered is skipped
/// later, by its lease).
fn scan_files(q: &super::queue::Queue, t: i64) -> (Vec<String>, usize, Option<i64>) {
    let Ok(ids) = q.list(Place::Active) else {
        return (Vec::new(), 0, None);
    };
    let held = q.list(Place::Hold).map(|h| h.len()).unwrap_or(0);
    let count = ids.len() + held;
    let mut oldest: Option<i64> = None;
    let mut due = Vec::new();
    for id in ids {
        if let Ok(env) = q.envelope(Place::Active, &id) {
            oldest = Some(oldest.map_or(env.arrival, |o| o.min(env.arrival)));
            if env.next_attempt <= t {
                due.push(id);
            }
        }
    }
    (due, count, oldest)
}
