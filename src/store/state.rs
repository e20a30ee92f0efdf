//! The idempotency state store: what the gateway knows about Cryptshare transfers it created.
//!
//! Keyed by a message key (SHA-256 over envelope and message bytes). Before the first call that
//! creates something on the server, a `pending` record names the transfer session; once the
//! transfer is finalized and active, the record becomes `finished` with everything needed to
//! rebuild the same rewritten message. A retried message (the upstream MTA retrying after our
//! 4xx, or after a crash) then reuses the transfer instead of creating a second one, and a pending
//! record left by a crash tells which server-side session to delete.
//!
//! Storage is one small JSON file per key, written to a temporary name, fsync'd and renamed into
//! place (then the directory fsync'd) — the same crash-safety argument as a maildir or Postfix's
//! queue, without an embedded database: records are written a few times per converted message, never
//! on the pass-through path, and operators can read them with `cat`.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("state store {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("state record {path} is corrupt: {source}")]
    Corrupt {
        path: PathBuf,
        source: serde_json::Error,
    },
    /// The PostgreSQL backend: the database is unreachable or refused a statement.
    #[error("state database: {0}")]
    Database(String),
    /// The PostgreSQL backend cannot be set up (URL, password file, CA file).
    #[error("state store: {0}")]
    Config(String),
    /// Another node held the message's lease for longer than a client waits.
    #[error("another gateway node is still converting this message")]
    Busy,
    /// This node's lease on the message ran out and another node took it.
    #[error("the lease on this message passed to another gateway node")]
    LeaseLost,
}

/// The state store the gateway uses: the file store or the PostgreSQL one, chosen by
/// `[state] backend`.
///
/// An enum rather than a `dyn` trait: there are exactly two backends, both known here, and
/// the callers (pipeline) need `async` methods — a trait would need boxed futures
/// (`async-trait` or `Pin<Box<dyn Future>>`) on every call for no extensibility anyone uses.
/// The file store's calls stay the synchronous file operations they were (small files, a few
/// per converted message, as before this enum existed); the PostgreSQL ones are awaited.
#[derive(Debug, Clone)]
pub enum StateStore {
    File(FileStore),
    Postgres(super::postgres::PgStore),
}

/// A claim on one message key while it is converted or its copies delivered: nothing for the
/// file store (one process; the pipeline's per-key mutex serialises), a renewed database lease
/// for PostgreSQL (see `store::postgres`). Released when dropped.
pub struct Lease {
    _pg: Option<super::postgres::PgLease>,
}

impl StateStore {
    /// Open the backend `[state] backend` names; `node` names this gateway in the database's
    /// leases (PostgreSQL).
    pub async fn open(
        cfg: &crate::config::StateConfig,
        node: &str,
        metrics: super::postgres::DbMetrics,
    ) -> Result<Self, StateError> {
        Ok(match cfg.backend {
            crate::config::StateBackend::File => StateStore::File(FileStore::open(&cfg.dir)?),
            crate::config::StateBackend::Postgres => {
                StateStore::Postgres(super::postgres::PgStore::start(cfg, node, metrics).await?)
            }
        })
    }

    /// Whether the store is shared by several nodes (leases are taken, crashed nodes' pending
    /// sessions swept while the others run).
    pub fn shared(&self) -> bool {
        matches!(self, StateStore::Postgres(_))
    }

    /// The database's reachability for `/readyz`; `None` for the file store.
    pub fn health(&self) -> Option<tokio::sync::watch::Receiver<Result<(), String>>> {
        match self {
            StateStore::File(_) => None,
            StateStore::Postgres(p) => Some(p.health()),
        }
    }

    pub async fn get(&self, key: &str) -> Result<Option<Record>, StateError> {
        match self {
            StateStore::File(f) => f.get(key),
            StateStore::Postgres(p) => p.metrics().timed("get", p.get(key)).await,
        }
    }

    pub async fn put(&self, key: &str, record: &Record) -> Result<(), StateError> {
        match self {
            StateStore::File(f) => f.put(key, record),
            StateStore::Postgres(p) => p.metrics().timed("put", p.put(key, record)).await,
        }
    }

    pub async fn mark_delivered(&self, key: &str, rcpt: &str) -> Result<(), StateError> {
        match self {
            StateStore::File(f) => f.mark_delivered(key, rcpt),
            StateStore::Postgres(p) => {
                p.metrics()
                    .timed("mark_delivered", p.mark_delivered(key, rcpt))
                    .await
            }
        }
    }

    /// Record that the sender's receipt for the finished transfer `key` went out.
    pub async fn mark_receipt_sent(&self, key: &str) -> Result<(), StateError> {
        match self {
            StateStore::File(f) => f.mark_receipt_sent(key),
            StateStore::Postgres(p) => {
                p.metrics()
                    .timed("mark_receipt_sent", p.mark_receipt_sent(key))
                    .await
            }
        }
    }

    pub async fn remove(&self, key: &str) -> Result<(), StateError> {
        match self {
            StateStore::File(f) => f.remove(key),
            StateStore::Postgres(p) => p.metrics().timed("remove", p.remove(key)).await,
        }
    }

    /// Pending records to clean up: all of them for the file store (at start-up nothing else
    /// runs), those without a live lease for PostgreSQL.
    pub async fn pending(&self) -> Result<Vec<(String, Record)>, StateError> {
        match self {
            StateStore::File(f) => f.pending(),
            StateStore::Postgres(p) => p.metrics().timed("pending", p.pending()).await,
        }
    }

    pub async fn expire(&self, age: Duration) -> Result<usize, StateError> {
        match self {
            StateStore::File(f) => f.expire(age),
            StateStore::Postgres(p) => p.metrics().timed("expire", p.expire(age)).await,
        }
    }

    /// Claim `key`, waiting while another node holds it.
    pub async fn lease(&self, key: &str) -> Result<Lease, StateError> {
        match self {
            StateStore::File(_) => Ok(Lease { _pg: None }),
            StateStore::Postgres(p) => Ok(Lease {
                _pg: Some(p.metrics().timed("lease", p.lease(key)).await?),
            }),
        }
    }

    /// Claim `key` unless another node holds it (`None` then).
    pub async fn try_lease(&self, key: &str) -> Result<Option<Lease>, StateError> {
        match self {
            StateStore::File(_) => Ok(Some(Lease { _pg: None })),
            StateStore::Postgres(p) => Ok(p
                .metrics()
                .timed("try_lease", p.try_lease(key))
                .await?
                .map(|l| Lease { _pg: Some(l) })),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredFile {
    pub name: String,
    pub size: u64,
    pub sha256: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum Record {
    /// A transfer session was (or is about to be) created and is not finished.
    Pending {
        sender: String,
        tracking_id: Option<String>,
        created: i64,
        /// What a later attempt (or run) needs to continue, delete or adopt the session: its
        /// token. Absent until the server gave the tracking id (and in records of older
        /// versions). The files already uploaded come from the server (`GET` session).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        session: Option<PendingSession>,
    },
    /// The transfer is active on the server; the notice can be rebuilt from this.
    Finished {
        sender: String,
        tracking_id: String,
        /// Expiry date of the transfer (YYYY-MM-DD).
        expiration: String,
        files: Vec<StoredFile>,
        download_urls: Vec<String>,
        created: i64,
        /// Each recipient's own link (`links = "per-recipient"`: each copy carries one). Absent
        /// in records of older versions.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        recipient_links: Vec<RecipientLink>,
        /// `links = "per-recipient"`: the recipients whose copy the next hop accepted, as the
        /// client sent them. A retry sends only the others.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        delivered: Vec<String>,
        /// `sender_receipt`: the next hop took the sender's receipt. A retry of the message
        /// (same key) sends none again. Absent (false) in records of older versions.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        receipt_sent: bool,
    },
}

/// One recipient's download link, from the transfer status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecipientLink {
    pub recipient: String,
    pub url: String,
}

/// The resumable part of a pending record. The token is a credential: records are written with
/// file mode 0600, and nothing prints this (`find` shows only that a record is pending).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingSession {
    /// The verification token the session was created with (the server accepts no other one).
    pub token: String,
    /// Its `validUntil`, Unix seconds.
    pub token_valid_until: i64,
}

impl std::fmt::Debug for PendingSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PendingSession")
            .field("token", &"<redacted>")
            .field("token_valid_until", &self.token_valid_until)
            .finish()
    }
}

#[derive(Debug, Clone)]
pub struct FileStore {
    dir: PathBuf,
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> StateError + '_ {
    move |source| StateError::Io {
        path: path.to_path_buf(),
        source,
    }
}

impl FileStore {
    /// Open (and create) the store under `<state_dir>/transfers`, and remove the temporary
    /// files that failed writes of dead processes left behind (see [`FileStore::put`]).
    pub fn open(state_dir: &Path) -> Result<FileStore, StateError> {
        let dir = state_dir.join("transfers");
        fs::create_dir_all(&dir).map_err(io_err(&dir))?;
        let store = FileStore { dir };
        store.remove_leftovers()?;
        Ok(store)
    }

    /// `<key>.tmp.<pid>` of a process that no longer runs (or of this one: nothing of ours is
    /// being written while the store opens). A write in flight in another live process — a
    /// second command on the same directory — keeps its file.
    fn remove_leftovers(&self) -> Result<(), StateError> {
        let own = std::process::id();
        for entry in fs::read_dir(&self.dir).map_err(io_err(&self.dir))? {
            let entry = entry.map_err(io_err(&self.dir))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some((_, pid)) = name.rsplit_once(".tmp.") else {
                continue;
            };
            if !entry.file_type().is_ok_and(|t| t.is_file()) {
                continue;
            }
            let Ok(pid) = pid.parse::<u32>() else {
                continue;
            };
            if pid == own || !Path::new(&format!("/proc/{pid}")).exists() {
                let path = entry.path();
                match fs::remove_file(&path) {
                    Ok(()) => {
                        tracing::info!(file = %path.display(), "removed the leftover of a failed state write")
                    }
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => return Err(StateError::Io { path, source: e }),
                }
            }
        }
        Ok(())
    }

    fn path(&self, key: &str) -> PathBuf {
        // Keys are hex digests; anything else is hashed so that it can never escape the directory.
        if key.len() <= 128 && key.bytes().all(|b| b.is_ascii_alphanumeric()) {
            self.dir.join(format!("{key}.json"))
        } else {
            use sha2::Digest;
            self.dir.join(format!(
                "{}.json",
                hex::encode(sha2::Sha256::digest(key.as_bytes()))
            ))
        }
    }

    pub fn get(&self, key: &str) -> Result<Option<Record>, StateError> {
        let path = self.path(key);
        match fs::read(&path) {
            Ok(b) => serde_json::from_slice(&b)
                .map(Some)
                .map_err(|source| StateError::Corrupt { path, source }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(StateError::Io { path, source: e }),
        }
    }

    /// Write atomically and durably: tmp file (mode 0600: a pending record holds a token),
    /// fsync, rename, fsync the directory. A failed write removes its tmp file as far as it
    /// can; what a crash leaves goes at the next [`FileStore::open`].
    pub fn put(&self, key: &str, record: &Record) -> Result<(), StateError> {
        let path = self.path(key);
        let tmp = path.with_extension(format!("tmp.{}", std::process::id()));
        let body = serde_json::to_vec_pretty(record).expect("records always serialise");
        let written = (|| {
            let mut f = private_file(&tmp)?;
            f.write_all(&body)?;
            f.sync_all()?;
            fs::rename(&tmp, &path)?;
            fs::File::open(&self.dir)?.sync_all()
        })();
        if written.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        written.map_err(io_err(&path))
    }

    /// Record that `rcpt`'s copy of the message `key` was delivered (per-recipient links),
    /// durably, before the next copy goes out. Nothing happens without a finished record.
    pub fn mark_delivered(&self, key: &str, rcpt: &str) -> Result<(), StateError> {
        let Some(mut record) = self.get(key)? else {
            return Ok(());
        };
        let Record::Finished { delivered, .. } = &mut record else {
            return Ok(());
        };
        if delivered.iter().any(|d| d == rcpt) {
            return Ok(());
        }
        delivered.push(rcpt.to_string());
        self.put(key, &record)
    }

    /// Record that the sender's receipt for the finished transfer `key` went out.
    pub fn mark_receipt_sent(&self, key: &str) -> Result<(), StateError> {
        let Some(mut record) = self.get(key)? else {
            return Ok(());
        };
        let Record::Finished { receipt_sent, .. } = &mut record else {
            return Ok(());
        };
        if *receipt_sent {
            return Ok(());
        }
        *receipt_sent = true;
        self.put(key, &record)
    }

    pub fn remove(&self, key: &str) -> Result<(), StateError> {
        let path = self.path(key);
        match fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(StateError::Io { path, source: e }),
        }
    }

    /// All pending records (for clean-up at start-up), with their keys.
    pub fn pending(&self) -> Result<Vec<(String, Record)>, StateError> {
        let mut out = Vec::new();
        for entry in fs::read_dir(&self.dir).map_err(io_err(&self.dir))? {
            let entry = entry.map_err(io_err(&self.dir))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some(key) = name.strip_suffix(".json") else {
                continue;
            };
            if let Some(r @ Record::Pending { .. }) = self.get(key)? {
                out.push((key.to_string(), r));
            }
        }
        Ok(out)
    }

    /// Forget records older than `age` (and leftover temporary files). Returns how many were removed.
    pub fn expire(&self, age: Duration) -> Result<usize, StateError> {
        let now = SystemTime::now();
        let mut n = 0;
        for entry in fs::read_dir(&self.dir).map_err(io_err(&self.dir))? {
            let entry = entry.map_err(io_err(&self.dir))?;
            let modified = entry
                .metadata()
                .and_then(|m| m.modified())
                .map_err(io_err(&entry.path()))?;
            if now.duration_since(modified).unwrap_or_default() > age {
                fs::remove_file(entry.path()).map_err(io_err(&entry.path()))?;
                n += 1;
            }
        }
        Ok(n)
    }
}

/// A new file readable by its owner only.
fn private_file(path: &Path) -> io::Result<fs::File> {
    let mut o = fs::OpenOptions::new();
    o.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        o.mode(0o600);
    }
    o.open(path)
}

/// One record as [`scan`] found it.
#[derive(Debug)]
pub struct ScannedRecord {
    /// The key (the file name without `.json`).
    pub key: String,
    pub path: PathBuf,
    /// The record, or why it could not be read.
    pub record: Result<Record, StateError>,
}

/// Every record under `<state_dir>/transfers`, for reading (`find`): opens nothing for writing
/// and creates nothing; a missing directory holds no records. A record that cannot be read or
/// parsed comes back as its error, the others still.
pub fn scan(state_dir: &Path) -> Result<Vec<ScannedRecord>, StateError> {
    let dir = state_dir.join("transfers");
    let entries = match fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => {
            return Err(StateError::Io {
                path: dir,
                source: e,
            });
        }
    };
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry.map_err(io_err(&dir))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(key) = name.strip_suffix(".json") else {
            continue;
        };
        let path = entry.path();
        let record = match fs::read(&path) {
            Ok(b) => serde_json::from_slice(&b).map_err(|source| StateError::Corrupt {
                path: path.clone(),
                source,
            }),
            Err(source) => Err(StateError::Io {
                path: path.clone(),
                source,
            }),
        };
        out.push(ScannedRecord {
            key: key.to_string(),
            path,
            record,
        });
    }
    out.sort_by(|a, b| a.key.cmp(&b.key));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_pending_listing() {
        let d = tempfile::tempdir().unwrap();
        let s = FileStore::open(d.path()).unwrap();
        assert_eq!(s.get("abc").unwrap(), None);
        let p = Record::Pending {
            sender: "a@b.c".into(),
            tracking_id: Some("20261127-101010-ABCDEFGH".into()),
            created: 1,
            session: Some(PendingSession {
                token: "tok".into(),
                token_valid_until: 5,
            }),
        };
        s.put("abc", &p).unwrap();
        assert_eq!(s.get("abc").unwrap(), Some(p.clone()));
        assert_eq!(s.pending().unwrap(), vec![("abc".to_string(), p)]);
        let f = Record::Finished {
            sender: "a@b.c".into(),
            tracking_id: "20261127-101010-ABCDEFGH".into(),
            expiration: "2026-12-11".into(),
            files: vec![StoredFile {
                name: "x.pdf".into(),
                size: 3,
                sha256: "00".into(),
            }],
            download_urls: vec![],
            created: 2,
            recipient_links: vec![RecipientLink {
                recipient: "b@c.d".into(),
                url: "https://cs/download?id=1".into(),
            }],
            delivered: vec![],
            receipt_sent: false,
        };
        s.put("abc", &f).unwrap();
        assert_eq!(s.get("abc").unwrap(), Some(f.clone()));
        s.mark_delivered("abc", "b@c.d").unwrap();
        s.mark_delivered("abc", "b@c.d").unwrap();
        let Some(Record::Finished { delivered, .. }) = s.get("abc").unwrap() else {
            panic!("finished record expected");
        };
        assert_eq!(delivered, ["b@c.d"]);
        s.put("abc", &f).unwrap();
        assert!(s.pending().unwrap().is_empty());
        s.remove("abc").unwrap();
        assert_eq!(s.get("abc").unwrap(), None);
    }

    #[test]
    fn odd_keys_cannot_escape() {
        let d = tempfile::tempdir().unwrap();
        let s = FileStore::open(d.path()).unwrap();
        let r = Record::Pending {
            sender: "x".into(),
            tracking_id: None,
            created: 0,
            session: None,
        };
        s.put("../../etc/passwd", &r).unwrap();
        assert_eq!(s.get("../../etc/passwd").unwrap(), Some(r));
        assert_eq!(fs::read_dir(d.path().join("transfers")).unwrap().count(), 1);
    }

    #[test]
    fn scan_reads_every_record_and_creates_nothing() {
        let d = tempfile::tempdir().unwrap();
        assert!(scan(&d.path().join("missing")).unwrap().is_empty());
        assert!(!d.path().join("missing").exists());
        let s = FileStore::open(d.path()).unwrap();
        let r = Record::Pending {
            sender: "x@y.z".into(),
            tracking_id: None,
            created: 0,
            session: None,
        };
        s.put("b", &r).unwrap();
        fs::write(d.path().join("transfers/a.json"), b"{nope").unwrap();
        fs::write(d.path().join("transfers/c.tmp.1"), b"{}").unwrap();
        let found = scan(d.path()).unwrap();
        assert_eq!(found.len(), 2);
        assert_eq!(found[0].key, "a");
        assert!(matches!(found[0].record, Err(StateError::Corrupt { .. })));
        assert_eq!(found[1].key, "b");
        assert_eq!(found[1].record.as_ref().unwrap(), &r);
        assert_eq!(found[1].path, d.path().join("transfers/b.json"));
    }

    #[test]
    fn records_are_private_and_old_records_still_read() {
        use std::os::unix::fs::PermissionsExt;
        let d = tempfile::tempdir().unwrap();
        let s = FileStore::open(d.path()).unwrap();
        s.put(
            "k",
            &Record::Pending {
                sender: "x".into(),
                tracking_id: None,
                created: 0,
                session: None,
            },
        )
        .unwrap();
        let mode = fs::metadata(d.path().join("transfers/k.json"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        // A record written before sessions were resumable.
        fs::write(
            d.path().join("transfers/old.json"),
            br#"{"state":"pending","sender":"x","tracking_id":"T","created":1}"#,
        )
        .unwrap();
        assert_eq!(
            s.get("old").unwrap(),
            Some(Record::Pending {
                sender: "x".into(),
                tracking_id: Some("T".into()),
                created: 1,
                session: None
            })
        );
        let debug = format!(
            "{:?}",
            PendingSession {
                token: "s3cret".into(),
                token_valid_until: 0
            }
        );
        assert!(!debug.contains("s3cret"), "{debug}");
    }

    #[test]
    fn leftover_tmp_files_of_dead_processes_go_at_open() {
        let d = tempfile::tempdir().unwrap();
        let t = d.path().join("transfers");
        fs::create_dir_all(&t).unwrap();
        // pid_max is at most 2^22 on Linux: 4194305 never runs.
        fs::write(t.join("abc.tmp.4194305"), b"{").unwrap();
        fs::write(t.join(format!("own.tmp.{}", std::process::id())), b"{").unwrap();
        // A live process (pid 1) may be writing: kept.
        fs::write(t.join("live.tmp.1"), b"{").unwrap();
        fs::write(t.join("abc.json"), b"{}").unwrap();
        FileStore::open(d.path()).unwrap();
        let mut left: Vec<String> = fs::read_dir(&t)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(left, ["abc.json", "live.tmp.1"]);
    }

    #[test]
    fn corrupt_record_is_an_error_not_a_panic() {
        let d = tempfile::tempdir().unwrap();
        let s = FileStore::open(d.path()).unwrap();
        fs::write(d.path().join("transfers/k.json"), b"{nope").unwrap();
        assert!(matches!(s.get("k"), Err(StateError::Corrupt { .. })));
    }
}
