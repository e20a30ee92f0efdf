//! Spool mode's queue on local disk: one directory per message, readable with standard tools.
//!
//! ```text
//! STATE_DIR/queue/
//!   tmp/ID/        being written, or being removed (a crash leaves it; cleared at the next open)
//!   active/ID/     waiting for delivery (or being delivered)
//!   hold/ID/       held by the operator (`queue hold`), not tried until released
//!   corrupt/ID/    quarantined: its envelope could not be read (reported, never a crash)
//!     envelope.json   sender, recipients and their state, attempts, next attempt (JSON)
//!     message         the message exactly as received (our Received: line is in the envelope)
//!     lock            flock(2) lease of whoever delivers or changes it
//! ```
//!
//! The Postfix promise: `250` only after [`Queue::enqueue`] returned, and it returns only after
//! both files and the directory entries are on disk — files written and fsync'd in `tmp/ID`,
//! the directory fsync'd, renamed into `active/`, and `active/` fsync'd. An envelope update is
//! written to a temporary file, fsync'd and renamed over the old one. The message file is never
//! rewritten, so it can be memory-mapped while being delivered.
//!
//! The lease is an exclusive `flock` on `ID/lock`, taken without waiting: the scheduler holds
//! it for the whole delivery attempt, the `queue` commands for their change, so that a message
//! is never tried twice at once and never deleted under a running delivery. A lock dies with
//! its process: after kill -9 the message is free again at once.
//!
//! This is the file backend; the scheduler uses only the methods here, so that a PostgreSQL
//! queue can stand behind the same calls.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::envelope::{MailFrom, RcptTo};
use crate::store::spool::Spooled;

#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{path}: unreadable envelope ({reason}); quarantined")]
    Corrupt { path: PathBuf, reason: String },
    #[error("no queued message {0}")]
    NotFound(String),
    #[error("message {0} is being delivered or changed right now; try again")]
    Busy(String),
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> QueueError + '_ {
    move |source| QueueError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Where a recipient stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RcptState {
    /// Not delivered yet: tried at the next attempt.
    Pending,
    Delivered,
    /// Failed for good; the DSN (if any) is queued.
    Failed,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct QueuedRcpt {
    pub rcpt: RcptTo,
    pub state: RcptState,
    /// The reply that decided the last attempt for this recipient.
    #[serde(default)]
    pub last_reply: Option<String>,
}

/// The client a message came from (XFORWARD on relay, the DSN's text).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct QueuedClient {
    pub addr: std::net::IpAddr,
    pub port: u16,
    pub helo: String,
    pub esmtp: bool,
    pub local: bool,
}

/// `envelope.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Envelope {
    pub id: String,
    /// Seconds since the epoch when the message was accepted.
    pub arrival: i64,
    pub mail_from: MailFrom,
    pub rcpts: Vec<QueuedRcpt>,
    /// Our `Received:` line (with its CRLF), prepended when relaying.
    pub received: String,
    /// The message is a DSN the gateway wrote (null sender): never a DSN about it.
    #[serde(default)]
    pub is_dsn: bool,
    pub client: Option<QueuedClient>,
    #[serde(default)]
    pub auth_user: Option<String>,
    pub attempts: u32,
    /// Seconds since the epoch: not tried before.
    pub next_attempt: i64,
    #[serde(default)]
    pub last_error: Option<String>,
    /// The one "delayed" DSN went out.
    #[serde(default)]
    pub delay_warned: bool,
}

impl Envelope {
    pub fn pending(&self) -> impl Iterator<Item = &QueuedRcpt> {
        self.rcpts.iter().filter(|r| r.state == RcptState::Pending)
    }
}

/// Which part of the queue a message is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Place {
    Active,
    Hold,
    Corrupt,
}

impl Place {
    /// Its directory's name, also how the tools name it.
    pub fn name(self) -> &'static str {
        match self {
            Place::Active => "active",
            Place::Hold => "hold",
            Place::Corrupt => "corrupt",
        }
    }
}

/// A queued message as listed.
#[derive(Debug, Clone)]
pub struct Listed {
    pub place: Place,
    pub envelope: Option<Envelope>,
    pub id: String,
    pub size: u64,
}

/// The lease on one message (see the module comment); released on drop.
#[derive(Debug)]
pub struct Lease {
    _lock: File,
    pub id: String,
}

pub struct Queue {
    root: PathBuf,
}

impl Queue {
    /// Open (and create) `STATE_DIR/queue` for the gateway; what a crash left in `tmp/` is
    /// removed.
    pub fn open(state_dir: &Path) -> Result<Queue, QueueError> {
        let q = Queue::open_for_tools(state_dir)?;
        let tmp = q.root.join("tmp");
        for e in fs::read_dir(&tmp).map_err(io_err(&tmp))?.flatten() {
            let _ = fs::remove_dir_all(e.path());
        }
        Ok(q)
    }

    /// The queue as the `queue` and `find` commands see it, beside a running gateway: `tmp/`
    /// is left alone (the gateway may be writing there).
    pub fn open_for_tools(state_dir: &Path) -> Result<Queue, QueueError> {
        let root = state_dir.join("queue");
        for d in ["tmp", "active", "hold", "corrupt"] {
            let p = root.join(d);
            fs::create_dir_all(&p).map_err(io_err(&p))?;
        }
        Ok(Queue { root })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn dir(&self, place: Place, id: &str) -> PathBuf {
        self.root.join(place.name()).join(id)
    }

    /// Write the message durably (see the module comment); only then may the client get `250`.
    pub fn enqueue(&self, envelope: &Envelope, message: &[u8]) -> Result<(), QueueError> {
        valid_id(&envelope.id)?;
        let tmp = self.root.join("tmp").join(&envelope.id);
        let written = (|| {
            fs::create_dir(&tmp)?;
            let mut f = private_file(&tmp.join("message"))?;
            f.write_all(message)?;
            f.sync_all()?;
            let mut f = private_file(&tmp.join("envelope.json"))?;
            f.write_all(&serde_json::to_vec_pretty(envelope).expect("envelopes serialise"))?;
            f.sync_all()?;
            private_file(&tmp.join("lock"))?;
            File::open(&tmp)?.sync_all()?;
            let active = self.root.join("active");
            fs::rename(&tmp, active.join(&envelope.id))?;
            File::open(&active)?.sync_all()
        })();
        if written.is_err() {
            let _ = fs::remove_dir_all(&tmp);
        }
        written.map_err(io_err(&tmp))
    }

    /// Replace the envelope of a message (durably).
    pub fn update(&self, place: Place, envelope: &Envelope) -> Result<(), QueueError> {
        let dir = self.dir(place, &envelope.id);
        let path = dir.join("envelope.json");
        let tmp = dir.join("envelope.json.tmp");
        (|| {
            let mut f = private_file(&tmp)?;
            f.write_all(&serde_json::to_vec_pretty(envelope).expect("envelopes serialise"))?;
            f.sync_all()?;
            fs::rename(&tmp, &path)?;
            File::open(&dir)?.sync_all()
        })()
        .map_err(io_err(&path))
    }

    /// The envelope; a message whose envelope cannot be read is moved to `corrupt/`.
    pub fn envelope(&self, place: Place, id: &str) -> Result<Envelope, QueueError> {
        valid_id(id)?;
        let dir = self.dir(place, id);
        let path = dir.join("envelope.json");
        let bytes = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound && !dir.exists() => {
                return Err(QueueError::NotFound(id.to_string()));
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(self.quarantine(place, id, "envelope.json is missing"));
            }
            Err(e) => return Err(QueueError::Io { path, source: e }),
        };
        match serde_json::from_slice::<Envelope>(&bytes) {
            Ok(env) if env.id == id => Ok(env),
            Ok(env) => Err(self.quarantine(place, id, &format!("its id is {:?}", env.id))),
            Err(e) => Err(self.quarantine(place, id, &e.to_string())),
        }
    }

    /// The message file, memory-mapped when large.
    pub fn message(&self, place: Place, id: &str) -> Result<Spooled, QueueError> {
        valid_id(id)?;
        let path = self.dir(place, id).join("message");
        Spooled::open(&path).map_err(io_err(&path))
    }

    /// Move a message that cannot be delivered as it is (its message file unreadable) to
    /// `corrupt/`, under its lease.
    pub fn quarantine_leased(
        &self,
        place: Place,
        _lease: &Lease,
        id: &str,
        reason: &str,
    ) -> QueueError {
        self.quarantine(place, id, reason)
    }

    fn quarantine(&self, place: Place, id: &str, reason: &str) -> QueueError {
        let from = self.dir(place, id);
        let to = self.dir(Place::Corrupt, id);
        tracing::error!(queue_id = %id, path = %from.display(), reason, "corrupt queue entry quarantined");
        let _ = fs::rename(&from, &to);
        QueueError::Corrupt {
            path: from,
            reason: reason.to_string(),
        }
    }

    /// Every message of `place`, oldest id first (ids grow with time).
    pub fn list(&self, place: Place) -> Result<Vec<String>, QueueError> {
        let dir = self.root.join(place.name());
        let mut ids: Vec<String> = fs::read_dir(&dir)
            .map_err(io_err(&dir))?
            .flatten()
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|n| valid_id(n).is_ok())
            .collect();
        ids.sort();
        Ok(ids)
    }

    /// Messages in the active part (the queue length).
    pub fn count(&self) -> usize {
        self.list(Place::Active).map(|l| l.len()).unwrap_or(0)
            + self.list(Place::Hold).map(|l| l.len()).unwrap_or(0)
    }

    /// Everything, with envelopes where readable (for `queue list`; does not quarantine).
    pub fn list_all(&self) -> Result<Vec<Listed>, QueueError> {
        let mut out = Vec::new();
        for place in [Place::Active, Place::Hold, Place::Corrupt] {
            for id in self.list(place)? {
                let dir = self.dir(place, &id);
                let envelope = fs::read(dir.join("envelope.json"))
                    .ok()
                    .and_then(|b| serde_json::from_slice(&b).ok());
                let size = fs::metadata(dir.join("message"))
                    .map(|m| m.len())
                    .unwrap_or(0);
                out.push(Listed {
                    place,
                    envelope,
                    id,
                    size,
                });
            }
        }
        Ok(out)
    }

    /// Where a message is.
    pub fn find(&self, id: &str) -> Result<Place, QueueError> {
        valid_id(id)?;
        [Place::Active, Place::Hold, Place::Corrupt]
            .into_iter()
            .find(|p| self.dir(*p, id).is_dir())
            .ok_or_else(|| QueueError::NotFound(id.to_string()))
    }

    /// Take the lease on a message without waiting: `Busy` when someone else has it.
    pub fn lease(&self, place: Place, id: &str) -> Result<Lease, QueueError> {
        valid_id(id)?;
        let path = self.dir(place, id).join("lock");
        // Never created here: `enqueue` makes it. A lock file that is gone means the message is
        // gone (removed under its lease); creating a new one would lease a ghost.
        let f = match OpenOptions::new().read(true).write(true).open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(QueueError::NotFound(id.to_string()));
            }
            Err(e) => return Err(QueueError::Io { path, source: e }),
        };
        // SAFETY: flock on a descriptor this function owns.
        let r = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if r != 0 {
            let e = io::Error::last_os_error();
            return Err(if e.kind() == io::ErrorKind::WouldBlock {
                QueueError::Busy(id.to_string())
            } else {
                QueueError::Io { path, source: e }
            });
        }
        // Taken after its holder removed the message: the lock was on a deleted file.
        if !self.dir(place, id).join("lock").exists() {
            return Err(QueueError::NotFound(id.to_string()));
        }
        Ok(Lease {
            _lock: f,
            id: id.to_string(),
        })
    }

    /// Remove a message (delivered, failed for good, or deleted by the operator). Atomic: the
    /// directory is renamed into `tmp/` first (and `place/` fsync'd), then deleted there; a
    /// crash half-way through the deletion leaves nothing but `tmp/`, which the next open
    /// clears — never a message with some of its files gone.
    pub fn remove(&self, place: Place, _lease: &Lease, id: &str) -> Result<(), QueueError> {
        let dir = self.dir(place, id);
        let gone = self.root.join("tmp").join(format!("{id}.removed"));
        fs::rename(&dir, &gone).map_err(io_err(&dir))?;
        let parent = self.root.join(place.name());
        File::open(&parent)
            .and_then(|f| f.sync_all())
            .map_err(io_err(&parent))?;
        let _ = fs::remove_dir_all(&gone);
        Ok(())
    }

    /// Move a message between `active/` and `hold/`.
    pub fn move_to(
        &self,
        from: Place,
        to: Place,
        _lease: &Lease,
        id: &str,
    ) -> Result<(), QueueError> {
        let src = self.dir(from, id);
        fs::rename(&src, self.dir(to, id)).map_err(io_err(&src))?;
        for p in [from, to] {
            let d = self.root.join(p.name());
            File::open(&d)
                .and_then(|f| f.sync_all())
                .map_err(io_err(&d))?;
        }
        Ok(())
    }

    /// Free bytes on the queue's file system.
    pub fn free_space(&self) -> Result<u64, QueueError> {
        free_space(&self.root).map_err(io_err(&self.root))
    }
}

/// Ids are what `new_queue_id` makes (hex); nothing that could walk out of the directory.
fn valid_id(id: &str) -> Result<(), QueueError> {
    if !id.is_empty() && id.len() <= 64 && id.bytes().all(|b| b.is_ascii_alphanumeric()) {
        Ok(())
    } else {
        Err(QueueError::NotFound(id.chars().take(64).collect()))
    }
}

fn private_file(path: &Path) -> io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
}

fn free_space(path: &Path) -> io::Result<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    // SAFETY: statvfs with a valid NUL-terminated path and an out-parameter it fills.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(st.f_bavail as u64 * st.f_frsize as u64)
}
