//! Spool mode's queue on local disk: one file per message, readable with standard tools.
//!
//! ```text
//! STATE_DIR/queue/
//!   tmp/           files being written; a crash leaves them, the next start clears them
//!   active/ID      waiting for delivery (or being delivered)
//!   active/ID.env  its current envelope, once it changed after queueing (a deferral, `queue
//!                  retry`); absent until then
//!   hold/ID[.env]  held by the operator (`queue hold`), not tried until released
//!   corrupt/ID     quarantined: unreadable or truncated (reported, never a crash)
//! ```
//!
//! A queue file is one line of JSON — `{"queue_format":1,"message_size":N,"envelope":{…}}` —
//! and then the message exactly as received, N octets (`head -1 ID | jq .envelope`,
//! `tail -n +2 ID`). A file whose length does not match its first line is truncated and is
//! quarantined.
//!
//! The Postfix promise: `250` only after [`Queue::enqueue`] returned, and it returns only after
//! the file and its directory entry are on disk: the file is written in `tmp/`, fdatasync'd,
//! renamed into `active/`, and `active/` fsync'd. That is one fsync of the message's own and one
//! of the directory, and the directory's is shared: while one thread syncs `active/`, the
//! renames of others queue up behind it and the next sync covers them all (group commit, see
//! [`DirSync`]). Under a burst of twenty sessions that brings the cost to about one fsync per
//! message, as Postfix's single queue file. The message part of a file is never rewritten, so it
//! can be memory-mapped while being delivered; an envelope change goes to `ID.env` (written in
//! `tmp/`, fsync'd, renamed, directory synced), and removal unlinks both and syncs the
//! directory (shared again).
//!
//! The lease is an exclusive `flock` on the queue file itself, taken without waiting: the
//! scheduler holds it for the whole delivery attempt, the `queue` commands for their change, so
//! that a message is never tried twice at once and never deleted under a running delivery. A
//! lock dies with its process: after kill -9 the message is free again at once. A rename (hold,
//! release, quarantine) keeps the file and so the lock.
//!
//! Queues of the previous format (one directory per message with `envelope.json`, `message` and
//! `lock`) are converted when the gateway opens the queue; the `queue` commands read them as
//! they are.
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
    /// The PostgreSQL queue: the database is unreachable or refused a statement.
    #[error("queue database: {0}")]
    Database(String),
    /// This node's lease on a queued message ran out (it stalled) and another node took it.
    #[error("the lease on queued message {0} passed to another gateway node")]
    LeaseLost(String),
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

/// A message's envelope: the first line of its queue file (in its `envelope` member).
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

/// The first line of a queue file.
#[derive(Serialize)]
struct HeadOut<'a> {
    queue_format: u32,
    message_size: u64,
    envelope: &'a Envelope,
}

#[derive(Deserialize)]
struct HeadIn {
    queue_format: u32,
    message_size: u64,
    envelope: Envelope,
}

const FORMAT: u32 = 1;
/// A first line longer than this is not one we wrote (an envelope with thousands of
/// recipients is a few hundred KB).
const MAX_HEAD: u64 = 16 << 20;

/// A parsed first line: the envelope it holds, and where the message starts.
struct Head {
    envelope: Envelope,
    start: u64,
    size: u64,
}

/// Group commit of one directory's fsync (see the module comment). `requested` counts the
/// changes whose durability someone waits for; a sync covers every change requested before it
/// started. One thread syncs at a time; the others wait for a sync that started after their
/// change, or become the next syncer. A failed sync advances nothing: its caller gets the
/// error, and the waiters try again themselves.
struct DirSync {
    dir: File,
    state: std::sync::Mutex<SyncState>,
    done: std::sync::Condvar,
}

#[derive(Default)]
struct SyncState {
    requested: u64,
    synced: u64,
    running: bool,
}

impl DirSync {
    fn open(path: &Path) -> io::Result<DirSync> {
        Ok(DirSync {
            dir: File::open(path)?,
            state: Default::default(),
            done: Default::default(),
        })
    }

    /// Returns once a directory sync that began after this call has finished.
    fn sync(&self) -> io::Result<()> {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        st.requested += 1;
        let mine = st.requested;
        loop {
            if st.synced >= mine {
                return Ok(());
            }
            if st.running {
                st = self.done.wait(st).unwrap_or_else(|e| e.into_inner());
                continue;
            }
            st.running = true;
            let target = st.requested;
            drop(st);
            let r = self.dir.sync_all();
            st = self.state.lock().unwrap_or_else(|e| e.into_inner());
            st.running = false;
            if r.is_ok() {
                st.synced = st.synced.max(target);
            }
            self.done.notify_all();
            r?;
        }
    }
}

pub struct Queue {
    root: PathBuf,
    /// `active/`, `hold/`, `corrupt/`, in [`Place`] order.
    syncs: [DirSync; 3],
}

const PLACES: [Place; 3] = [Place::Active, Place::Hold, Place::Corrupt];

impl Queue {
    /// Open (and create) `STATE_DIR/queue` for the gateway: what a crash left in `tmp/` is
    /// removed, a sidecar envelope left behind by a crashed move follows its message, and
    /// entries of the previous format are converted.
    pub fn open(state_dir: &Path) -> Result<Queue, QueueError> {
        let q = Queue::open_for_tools(state_dir)?;
        let tmp = q.root.join("tmp");
        for e in fs::read_dir(&tmp).map_err(io_err(&tmp))?.flatten() {
            let p = e.path();
            let _ = if p.is_dir() {
                fs::remove_dir_all(&p)
            } else {
                fs::remove_file(&p)
            };
        }
        q.repair()?;
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
        let sync = |p: Place| {
            let d = root.join(p.name());
            DirSync::open(&d).map_err(io_err(&d))
        };
        Ok(Queue {
            syncs: [
                sync(Place::Active)?,
                sync(Place::Hold)?,
                sync(Place::Corrupt)?,
            ],
            root,
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn path(&self, place: Place, id: &str) -> PathBuf {
        self.root.join(place.name()).join(id)
    }

    fn env_path(&self, place: Place, id: &str) -> PathBuf {
        self.root.join(place.name()).join(format!("{id}.env"))
    }

    fn sync_dir(&self, place: Place) -> Result<(), QueueError> {
        let i = PLACES.iter().position(|p| *p == place).expect("a place");
        self.syncs[i]
            .sync()
            .map_err(io_err(&self.root.join(place.name())))
    }

    /// Write the message durably (see the module comment); only then may the client get `250`.
    pub fn enqueue(&self, envelope: &Envelope, message: &[u8]) -> Result<(), QueueError> {
        valid_id(&envelope.id)?;
        let tmp = self.root.join("tmp").join(&envelope.id);
        let dest = self.path(Place::Active, &envelope.id);
        let written = (|| {
            let mut f = new_private_file(&tmp)?;
            let mut head = serde_json::to_vec(&HeadOut {
                queue_format: FORMAT,
                message_size: message.len() as u64,
                envelope,
            })
            .expect("envelopes serialise");
            head.push(b'\n');
            f.write_all(&head)?;
            f.write_all(message)?;
            f.sync_data()?;
            if dest.exists() {
                return Err(io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    "a queued message has this id",
                ));
            }
            fs::rename(&tmp, &dest)
        })();
        if written.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        written.map_err(io_err(&tmp))?;
        self.sync_dir(Place::Active)
    }

    /// Replace the envelope of a message (durably), under its lease.
    pub fn update(&self, place: Place, envelope: &Envelope) -> Result<(), QueueError> {
        valid_id(&envelope.id)?;
        let path = self.env_path(place, &envelope.id);
        let tmp = self.root.join("tmp").join(format!("{}.env", envelope.id));
        (|| {
            let mut f = private_file(&tmp)?;
            f.write_all(&serde_json::to_vec_pretty(envelope).expect("envelopes serialise"))?;
            f.sync_data()?;
            fs::rename(&tmp, &path)
        })()
        .map_err(io_err(&path))?;
        self.sync_dir(place)
    }

    /// The envelope; a message whose envelope cannot be read is moved to `corrupt/`.
    pub fn envelope(&self, place: Place, id: &str) -> Result<Envelope, QueueError> {
        valid_id(id)?;
        match self.read_envelope(place, id) {
            Ok(env) => Ok(env),
            Err(Unreadable::Io(e)) => Err(e),
            Err(Unreadable::Bad(why)) if place == Place::Corrupt => Err(QueueError::Corrupt {
                path: self.path(place, id),
                reason: why,
            }),
            Err(Unreadable::Bad(why)) => Err(self.quarantine(place, id, &why)),
        }
    }

    /// The envelope without quarantining: the sidecar if there is one, else the file's first
    /// line (or a directory of the previous format).
    fn read_envelope(&self, place: Place, id: &str) -> Result<Envelope, Unreadable> {
        let side = self.env_path(place, id);
        let env = match fs::read(&side) {
            Ok(b) => serde_json::from_slice::<Envelope>(&b)
                .map_err(|e| Unreadable::Bad(format!("{id}.env: {e}")))?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let path = self.path(place, id);
                if path.is_dir() {
                    read_legacy_envelope(&path)?
                } else {
                    let f = File::open(&path).map_err(|e| not_found_or_io(id, &path, e))?;
                    read_head(&f, &path)?.envelope
                }
            }
            Err(e) => {
                return Err(Unreadable::Io(QueueError::Io {
                    path: side,
                    source: e,
                }));
            }
        };
        if env.id != id {
            return Err(Unreadable::Bad(format!("its id is {:?}", env.id)));
        }
        Ok(env)
    }

    /// The message, memory-mapped when large.
    pub fn message(&self, place: Place, id: &str) -> Result<Spooled, QueueError> {
        valid_id(id)?;
        let path = self.path(place, id);
        if path.is_dir() {
            let p = path.join("message");
            return Spooled::open(&p).map_err(io_err(&p));
        }
        let f = File::open(&path).map_err(io_err(&path))?;
        let head = match read_head(&f, &path) {
            Ok(h) => h,
            Err(Unreadable::Io(e)) => return Err(e),
            Err(Unreadable::Bad(why)) => {
                return Err(QueueError::Corrupt { path, reason: why });
            }
        };
        Spooled::open_at(f, head.start).map_err(io_err(&path))
    }

    /// Move a message that cannot be delivered as it is (its message unreadable) to
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
        let from = self.path(place, id);
        tracing::error!(queue_id = %id, path = %from.display(), reason, "corrupt queue entry quarantined");
        let _ = fs::rename(&from, self.path(Place::Corrupt, id));
        let _ = fs::rename(self.env_path(place, id), self.env_path(Place::Corrupt, id));
        let _ = self.sync_dir(Place::Corrupt);
        let _ = self.sync_dir(place);
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
        for place in PLACES {
            for id in self.list(place)? {
                let envelope = self.read_envelope(place, &id).ok();
                let size = self.message_size(place, &id).unwrap_or(0);
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

    fn message_size(&self, place: Place, id: &str) -> Option<u64> {
        let path = self.path(place, id);
        if path.is_dir() {
            return fs::metadata(path.join("message")).ok().map(|m| m.len());
        }
        let f = File::open(&path).ok()?;
        read_head(&f, &path).ok().map(|h| h.size)
    }

    /// Where a message is.
    pub fn find(&self, id: &str) -> Result<Place, QueueError> {
        valid_id(id)?;
        PLACES
            .into_iter()
            .find(|p| self.path(*p, id).exists())
            .ok_or_else(|| QueueError::NotFound(id.to_string()))
    }

    /// Take the lease on a message without waiting: `Busy` when someone else has it.
    pub fn lease(&self, place: Place, id: &str) -> Result<Lease, QueueError> {
        use std::os::unix::fs::MetadataExt;
        valid_id(id)?;
        let path = self.path(place, id);
        let f = File::open(&path).map_err(|e| open_error(id, &path, e))?;
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
        // Taken after its holder removed or moved the message: the lock is on a file that is
        // no longer this one.
        let same = match (f.metadata(), fs::metadata(&path)) {
            (Ok(a), Ok(b)) => a.ino() == b.ino() && a.dev() == b.dev() && a.nlink() > 0,
            _ => false,
        };
        if !same {
            return Err(QueueError::NotFound(id.to_string()));
        }
        Ok(Lease {
            _lock: f,
            id: id.to_string(),
        })
    }

    /// Remove a message (delivered, failed for good, or deleted by the operator), durably. The
    /// queue file goes first: a crash between the two unlinks leaves a sidecar without its
    /// message, which the next open removes — never a message with an older envelope.
    pub fn remove(&self, place: Place, _lease: &Lease, id: &str) -> Result<(), QueueError> {
        let path = self.path(place, id);
        if path.is_dir() {
            let gone = self.root.join("tmp").join(format!("{id}.removed"));
            fs::rename(&path, &gone).map_err(io_err(&path))?;
            self.sync_dir(place)?;
            let _ = fs::remove_dir_all(&gone);
            return Ok(());
        }
        fs::remove_file(&path).map_err(io_err(&path))?;
        match fs::remove_file(self.env_path(place, id)) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err(&path)(e)),
        }
        self.sync_dir(place)
    }

    /// Move a message between `active/` and `hold/`. The queue file first, then its sidecar:
    /// after a crash between the two, the next open moves the sidecar after it.
    pub fn move_to(
        &self,
        from: Place,
        to: Place,
        _lease: &Lease,
        id: &str,
    ) -> Result<(), QueueError> {
        let src = self.path(from, id);
        fs::rename(&src, self.path(to, id)).map_err(io_err(&src))?;
        match fs::rename(self.env_path(from, id), self.env_path(to, id)) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err(&src)(e)),
        }
        self.sync_dir(to)?;
        self.sync_dir(from)
    }

    /// Free bytes on the queue's file system.
    pub fn free_space(&self) -> Result<u64, QueueError> {
        free_space(&self.root).map_err(io_err(&self.root))
    }

    /// At the gateway's start: sidecars whose message is elsewhere or gone, and entries of the
    /// previous format.
    fn repair(&self) -> Result<(), QueueError> {
        for place in PLACES {
            let dir = self.root.join(place.name());
            let names: Vec<String> = fs::read_dir(&dir)
                .map_err(io_err(&dir))?
                .flatten()
                .filter_map(|e| e.file_name().into_string().ok())
                .collect();
            for name in names {
                if let Some(id) = name.strip_suffix(".env")
                    && valid_id(id).is_ok()
                    && !self.path(place, id).exists()
                {
                    let side = self.env_path(place, id);
                    let elsewhere = PLACES.into_iter().find(|p| {
                        *p != place
                            && self.path(*p, id).is_file()
                            && !self.env_path(*p, id).exists()
                    });
                    let _ = match elsewhere {
                        Some(p) => fs::rename(&side, self.env_path(p, id)),
                        None => fs::remove_file(&side),
                    };
                } else if let Some(id) = name.strip_suffix(".old")
                    && valid_id(id).is_ok()
                {
                    // A conversion that a crash interrupted: the converted file is in place
                    // (done but for the clean-up) or not (start again).
                    let old = dir.join(&name);
                    if self.path(place, id).is_file() {
                        let _ = fs::remove_dir_all(&old);
                    } else {
                        let back = self.path(place, id);
                        fs::rename(&old, &back).map_err(io_err(&old))?;
                        self.convert(place, id)?;
                    }
                } else if valid_id(&name).is_ok()
                    && place != Place::Corrupt
                    && self.path(place, &name).is_dir()
                {
                    self.convert(place, &name)?;
                }
            }
            self.sync_dir(place)?;
        }
        Ok(())
    }

    /// One message of the previous format (a directory) into a queue file, keeping it durable
    /// at every step: the new file is complete and synced before the directory steps aside.
    fn convert(&self, place: Place, id: &str) -> Result<(), QueueError> {
        let dir = self.path(place, id);
        let env = match read_legacy_envelope(&dir) {
            Ok(env) if env.id == id => env,
            Ok(env) => {
                self.quarantine(place, id, &format!("its id is {:?}", env.id));
                return Ok(());
            }
            Err(Unreadable::Bad(why)) => {
                self.quarantine(place, id, &why);
                return Ok(());
            }
            Err(Unreadable::Io(e)) => return Err(e),
        };
        let msg_path = dir.join("message");
        let message = match fs::read(&msg_path) {
            Ok(m) => m,
            Err(e) => {
                self.quarantine(place, id, &format!("message: {e}"));
                return Ok(());
            }
        };
        let tmp = self.root.join("tmp").join(format!("{id}.new"));
        let head = serde_json::to_vec(&HeadOut {
            queue_format: FORMAT,
            message_size: message.len() as u64,
            envelope: &env,
        })
        .expect("envelopes serialise");
        let old = self.root.join(place.name()).join(format!("{id}.old"));
        (|| {
            let mut f = private_file(&tmp)?;
            f.write_all(&head)?;
            f.write_all(b"\n")?;
            f.write_all(&message)?;
            f.sync_data()?;
            fs::rename(&dir, &old)?;
            fs::rename(&tmp, &dir)
        })()
        .map_err(io_err(&dir))?;
        self.sync_dir(place)?;
        let _ = fs::remove_dir_all(&old);
        tracing::info!(queue_id = %id, place = place.name(), "queue entry converted to the one-file format");
        Ok(())
    }
}

/// Why an entry could not be read: the file system failed (`Io`, `NotFound`), or what is there
/// is not a queue entry (`Bad`: quarantine it).
enum Unreadable {
    Io(QueueError),
    Bad(String),
}

fn not_found_or_io(id: &str, path: &Path, e: io::Error) -> Unreadable {
    Unreadable::Io(open_error(id, path, e))
}

fn open_error(id: &str, path: &Path, e: io::Error) -> QueueError {
    if e.kind() == io::ErrorKind::NotFound {
        QueueError::NotFound(id.to_string())
    } else {
        QueueError::Io {
            path: path.to_path_buf(),
            source: e,
        }
    }
}

/// The first line of a queue file, checked against the file's length.
fn read_head(f: &File, path: &Path) -> Result<Head, Unreadable> {
    use std::io::{BufRead, Read};
    let len = f
        .metadata()
        .map_err(|e| Unreadable::Io(io_err(path)(e)))?
        .len();
    let mut line = Vec::new();
    io::BufReader::with_capacity(16 << 10, f.take(MAX_HEAD))
        .read_until(b'\n', &mut line)
        .map_err(|e| Unreadable::Io(io_err(path)(e)))?;
    if line.last() != Some(&b'\n') {
        return Err(Unreadable::Bad("no envelope line".into()));
    }
    let head: HeadIn =
        serde_json::from_slice(&line).map_err(|e| Unreadable::Bad(format!("envelope: {e}")))?;
    if head.queue_format != FORMAT {
        return Err(Unreadable::Bad(format!(
            "queue format {} (this version reads {FORMAT})",
            head.queue_format
        )));
    }
    let start = line.len() as u64;
    if len != start + head.message_size {
        return Err(Unreadable::Bad(format!(
            "truncated: {} octets of message, {} announced",
            len.saturating_sub(start),
            head.message_size
        )));
    }
    Ok(Head {
        envelope: head.envelope,
        start,
        size: head.message_size,
    })
}

/// `envelope.json` of a directory of the previous format.
fn read_legacy_envelope(dir: &Path) -> Result<Envelope, Unreadable> {
    let path = dir.join("envelope.json");
    match fs::read(&path) {
        Ok(b) => serde_json::from_slice(&b).map_err(|e| Unreadable::Bad(e.to_string())),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            Err(Unreadable::Bad("envelope.json is missing".into()))
        }
        Err(e) => Err(Unreadable::Io(QueueError::Io { path, source: e })),
    }
}

/// Ids are what `new_queue_id` makes (hex); nothing that could walk out of the directory.
pub(super) fn valid_id(id: &str) -> Result<(), QueueError> {
    if !id.is_empty() && id.len() <= 64 && id.bytes().all(|b| b.is_ascii_alphanumeric()) {
        Ok(())
    } else {
        Err(QueueError::NotFound(id.chars().take(64).collect()))
    }
}

fn new_private_file(path: &Path) -> io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
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

pub(super) fn free_space(path: &Path) -> io::Result<u64> {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn env(id: &str) -> Envelope {
        Envelope {
            id: id.into(),
            arrival: 1_700_000_000,
            mail_from: MailFrom {
                address: "a@example.org".into(),
                ..Default::default()
            },
            rcpts: vec![QueuedRcpt {
                rcpt: RcptTo {
                    address: "b@example.net".into(),
                    ..Default::default()
                },
                state: RcptState::Pending,
                last_reply: None,
            }],
            received: "Received: from x\r\n".into(),
            is_dsn: false,
            client: None,
            auth_user: None,
            attempts: 0,
            next_attempt: 0,
            last_error: None,
            delay_warned: false,
        }
    }

    fn files(q: &Queue, place: Place) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(q.root.join(place.name()))
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn one_file_per_message_readable_with_standard_tools() {
        let d = tempfile::tempdir().unwrap();
        let q = Queue::open(d.path()).unwrap();
        let msg = b"Subject: x\r\n\r\nbody\r\n.\r\n";
        q.enqueue(&env("A1"), msg).unwrap();
        assert_eq!(files(&q, Place::Active), ["A1"]);
        assert_eq!(fs::read_dir(q.root.join("tmp")).unwrap().count(), 0);
        let raw = fs::read(q.path(Place::Active, "A1")).unwrap();
        let nl = raw.iter().position(|&b| b == b'\n').unwrap();
        let head: serde_json::Value = serde_json::from_slice(&raw[..nl]).unwrap();
        assert_eq!(head["queue_format"], 1);
        assert_eq!(head["message_size"], msg.len());
        assert_eq!(head["envelope"]["id"], "A1");
        assert_eq!(&raw[nl + 1..], msg);
        assert_eq!(q.message(Place::Active, "A1").unwrap().as_bytes(), msg);
        assert_eq!(q.envelope(Place::Active, "A1").unwrap().id, "A1");
        // The same id twice is refused, and the first stays.
        assert!(q.enqueue(&env("A1"), b"other").is_err());
        assert_eq!(q.message(Place::Active, "A1").unwrap().as_bytes(), msg);
    }

    #[test]
    fn large_messages_are_mapped_after_the_envelope_line() {
        let d = tempfile::tempdir().unwrap();
        let q = Queue::open(d.path()).unwrap();
        let msg: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
        q.enqueue(&env("BIG"), &msg).unwrap();
        let m = q.message(Place::Active, "BIG").unwrap();
        assert!(m.is_spilled());
        assert!(m.as_bytes() == &msg[..]);
        assert_eq!(q.list_all().unwrap()[0].size, msg.len() as u64);
    }

    #[test]
    fn updates_go_to_the_sidecar_and_follow_moves_and_removal() {
        let d = tempfile::tempdir().unwrap();
        let q = Queue::open(d.path()).unwrap();
        q.enqueue(&env("C1"), b"m").unwrap();
        let lease = q.lease(Place::Active, "C1").unwrap();
        assert!(matches!(
            q.lease(Place::Active, "C1"),
            Err(QueueError::Busy(_))
        ));
        let mut e = env("C1");
        e.attempts = 3;
        q.update(Place::Active, &e).unwrap();
        assert_eq!(files(&q, Place::Active), ["C1", "C1.env"]);
        assert_eq!(q.envelope(Place::Active, "C1").unwrap().attempts, 3);
        q.move_to(Place::Active, Place::Hold, &lease, "C1").unwrap();
        assert_eq!(files(&q, Place::Hold), ["C1", "C1.env"]);
        assert_eq!(q.find("C1").unwrap(), Place::Hold);
        // The lease moved with the file.
        assert!(matches!(
            q.lease(Place::Hold, "C1"),
            Err(QueueError::Busy(_))
        ));
        assert_eq!(q.envelope(Place::Hold, "C1").unwrap().attempts, 3);
        q.remove(Place::Hold, &lease, "C1").unwrap();
        drop(lease);
        assert!(files(&q, Place::Hold).is_empty());
        assert!(matches!(
            q.lease(Place::Hold, "C1"),
            Err(QueueError::NotFound(_))
        ));
        assert!(matches!(q.find("C1"), Err(QueueError::NotFound(_))));
    }

    #[test]
    fn a_lease_taken_on_a_removed_file_is_refused() {
        let d = tempfile::tempdir().unwrap();
        let q = Queue::open(d.path()).unwrap();
        q.enqueue(&env("D1"), b"m").unwrap();
        q.enqueue(&env("D2"), b"m").unwrap();
        let lease = q.lease(Place::Active, "D1").unwrap();
        q.remove(Place::Active, &lease, "D1").unwrap();
        drop(lease);
        assert!(matches!(
            q.lease(Place::Active, "D1"),
            Err(QueueError::NotFound(_))
        ));
        assert_eq!(q.list(Place::Active).unwrap(), ["D2"]);
    }

    #[test]
    fn truncated_or_garbled_files_are_quarantined_not_a_crash() {
        let d = tempfile::tempdir().unwrap();
        let q = Queue::open(d.path()).unwrap();
        q.enqueue(&env("T1"), b"0123456789").unwrap();
        q.enqueue(&env("T2"), b"x").unwrap();
        let p = q.path(Place::Active, "T1");
        let raw = fs::read(&p).unwrap();
        fs::write(&p, &raw[..raw.len() - 3]).unwrap();
        fs::write(q.path(Place::Active, "T2"), b"\x00\x01garbage").unwrap();
        fs::write(q.path(Place::Active, "T3"), b"").unwrap();
        for id in ["T1", "T2", "T3"] {
            match q.envelope(Place::Active, id) {
                Err(QueueError::Corrupt { reason, .. }) => {
                    if id == "T1" {
                        assert!(reason.starts_with("truncated: 7 octets"), "{reason}");
                    }
                }
                other => panic!("{id}: {other:?}"),
            }
        }
        assert!(q.list(Place::Active).unwrap().is_empty());
        assert_eq!(files(&q, Place::Corrupt), ["T1", "T2", "T3"]);
        // Listed, never quarantined again, never a panic.
        assert_eq!(q.list_all().unwrap().len(), 3);
        assert!(matches!(
            q.envelope(Place::Corrupt, "T1"),
            Err(QueueError::Corrupt { .. })
        ));
    }

    #[test]
    fn the_previous_format_is_converted_at_open() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path().join("queue");
        for (place, id) in [("active", "L1"), ("hold", "L2")] {
            let dir = root.join(place).join(id);
            fs::create_dir_all(&dir).unwrap();
            fs::write(
                dir.join("envelope.json"),
                serde_json::to_vec_pretty(&env(id)).unwrap(),
            )
            .unwrap();
            fs::write(dir.join("message"), format!("message {id}")).unwrap();
            fs::write(dir.join("lock"), b"").unwrap();
        }
        // A conversion cut off after the directory stepped aside.
        let cut = root.join("active").join("L3.old");
        fs::create_dir_all(&cut).unwrap();
        fs::write(
            cut.join("envelope.json"),
            serde_json::to_vec(&env("L3")).unwrap(),
        )
        .unwrap();
        fs::write(cut.join("message"), b"message L3").unwrap();
        // Tools read the old format as it is.
        let tools = Queue::open_for_tools(d.path()).unwrap();
        assert_eq!(tools.list_all().unwrap().len(), 2);
        assert_eq!(
            tools.message(Place::Hold, "L2").unwrap().as_bytes(),
            b"message L2"
        );
        let q = Queue::open(d.path()).unwrap();
        assert_eq!(files(&q, Place::Active), ["L1", "L3"]);
        assert_eq!(files(&q, Place::Hold), ["L2"]);
        for (place, id) in [
            (Place::Active, "L1"),
            (Place::Hold, "L2"),
            (Place::Active, "L3"),
        ] {
            assert!(q.path(place, id).is_file());
            assert_eq!(
                q.message(place, id).unwrap().as_bytes(),
                format!("message {id}").as_bytes()
            );
            assert_eq!(q.envelope(place, id).unwrap().id, id);
        }
    }

    #[test]
    fn a_sidecar_left_by_a_crashed_move_follows_its_message() {
        let d = tempfile::tempdir().unwrap();
        let q = Queue::open(d.path()).unwrap();
        q.enqueue(&env("M1"), b"m").unwrap();
        let mut e = env("M1");
        e.attempts = 2;
        q.update(Place::Active, &e).unwrap();
        // The file moved to hold/, the crash came before its sidecar followed.
        fs::rename(q.path(Place::Active, "M1"), q.path(Place::Hold, "M1")).unwrap();
        // And an orphan sidecar of a removed message.
        fs::write(
            q.env_path(Place::Active, "M2"),
            serde_json::to_vec(&env("M2")).unwrap(),
        )
        .unwrap();
        drop(q);
        let q = Queue::open(d.path()).unwrap();
        assert!(files(&q, Place::Active).is_empty());
        assert_eq!(files(&q, Place::Hold), ["M1", "M1.env"]);
        assert_eq!(q.envelope(Place::Hold, "M1").unwrap().attempts, 2);
    }

    #[test]
    fn concurrent_enqueues_share_directory_syncs_and_all_land() {
        let d = tempfile::tempdir().unwrap();
        let q = std::sync::Arc::new(Queue::open(d.path()).unwrap());
        // Opening may already have synced (the repair pass); count from here.
        let before = q.syncs[0].state.lock().unwrap().requested;
        let threads: Vec<_> = (0..16)
            .map(|t| {
                let q = q.clone();
                std::thread::spawn(move || {
                    for i in 0..20 {
                        q.enqueue(&env(&format!("G{t}x{i}")), b"m").unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(q.list(Place::Active).unwrap().len(), 320);
        let st = q.syncs[0].state.lock().unwrap();
        assert_eq!(st.requested - before, 320);
        assert_eq!(st.synced, st.requested);
        assert!(!st.running);
    }
}
