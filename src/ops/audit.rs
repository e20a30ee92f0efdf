//! The audit trail: one JSON object per message, on one line, written when the client got its
//! final reply.
//!
//! It goes either to its own file (appended, one `write(2)` per record so that lines from
//! concurrent sessions never interleave, reopened on SIGHUP for log rotation) or, without a file,
//! to the tracing target `audit` so that it lands in the journal beside the other logs.
//! Subjects and bodies are never recorded; file names, addresses and message ids are untrusted
//! input and are JSON-escaped by serde (control characters included).

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

/// Tracing target of audit records when no file is configured.
pub const TARGET: &str = "audit";

#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("audit file {path}: {source}")]
    Open {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("audit file {path}: write failed: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("audit record: {0}")]
    Encode(#[from] serde_json::Error),
}

/// What the gateway did with the message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Decision {
    /// Attachments moved to Cryptshare; the rewritten message was relayed.
    Convert,
    /// Relayed unchanged (no rule matched, below threshold, nothing convertible).
    Pass,
    /// Conversion failed and the policy's `on_error = "deliver-original"` relayed it unchanged.
    DeliverOriginal,
    /// Refused with a temporary error; the client retries.
    Tempfail,
    /// Refused permanently.
    Reject,
}

/// A file moved to Cryptshare.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditFile {
    /// Decoded file name as uploaded.
    pub name: String,
    /// Decoded size in bytes.
    pub size: u64,
    /// Hex SHA-256 of the decoded content.
    pub sha256: String,
}

/// Time spent, in milliseconds.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditDurations {
    /// End of DATA to the final reply.
    pub total_ms: u64,
    /// Cryptshare calls (token to finalize); 0 when nothing was converted.
    pub cryptshare_ms: u64,
    /// Hand-over to the next hop.
    pub relay_ms: u64,
}

/// One audit line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditRecord {
    /// RFC 3339 UTC time of the final reply.
    pub time: String,
    /// The gateway's queue id (also in our `Received:` header and the logs).
    pub queue_id: String,
    /// `Message-ID:` header, without angle brackets; None if missing.
    pub message_id: Option<String>,
    /// Envelope sender; empty for the null sender.
    pub sender: String,
    /// Envelope recipients.
    pub recipients: Vec<String>,
    /// Size of the message as received, in bytes.
    pub size: u64,
    /// Name of the matched `[[policy]]`; None when no rule matched.
    pub policy: Option<String>,
    pub decision: Decision,
    /// Why, in words (e.g. "attachments 31457280 bytes > threshold 10485760").
    pub reason: String,
    /// Files moved to Cryptshare (empty unless converted).
    pub files: Vec<AuditFile>,
    /// Cryptshare transfer tracking id, when a transfer was created.
    pub tracking_id: Option<String>,
    /// The reply the SMTP client got, e.g. `250 2.0.0 Ok: queued as ABC`.
    pub reply: String,
    /// What the next hop answered (None when nothing was relayed).
    pub relay: Option<String>,
    pub durations: AuditDurations,
    /// Spool mode: the attempt (1 for the first) this line reports; absent in inline mode.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempt: Option<u32>,
    /// Spool mode: the line written when the message left the queue without being delivered
    /// to every recipient — `failed` (a permanent refusal) or `expired` (`max_lifetime`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue_outcome: Option<QueueOutcome>,
}

/// How a queued message ended, when not delivered everywhere (see [`AuditRecord::queue_outcome`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum QueueOutcome {
    Failed,
    Expired,
}

impl AuditRecord {
    /// A record stamped now, with everything optional empty.
    pub fn new(queue_id: impl Into<String>, decision: Decision) -> AuditRecord {
        AuditRecord {
            time: String::new(),
            queue_id: queue_id.into(),
            message_id: None,
            sender: String::new(),
            recipients: Vec::new(),
            size: 0,
            policy: None,
            decision,
            reason: String::new(),
            files: Vec::new(),
            tracking_id: None,
            reply: String::new(),
            relay: None,
            durations: AuditDurations::default(),
            attempt: None,
            queue_outcome: None,
        }
        .stamped()
    }

    /// The record with `time` set to now: call it when the client gets the final reply.
    pub fn stamped(mut self) -> AuditRecord {
        self.time = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        self
    }

    /// The record as one JSON line, without the newline.
    pub fn to_json_line(&self) -> Result<String, AuditError> {
        Ok(serde_json::to_string(self)?)
    }
}

#[derive(Debug)]
enum Sink {
    File { path: PathBuf, file: Mutex<File> },
    Tracing,
}

/// Where audit records go.
#[derive(Debug)]
pub struct AuditLog {
    sink: Sink,
}

impl AuditLog {
    /// Append to `path` (created with mode 0640 if missing).
    pub fn to_file(path: &Path) -> Result<AuditLog, AuditError> {
        let file = open_append(path)?;
        Ok(AuditLog {
            sink: Sink::File {
                path: path.to_path_buf(),
                file: Mutex::new(file),
            },
        })
    }

    /// Emit records as `INFO` events on the tracing target [`TARGET`].
    pub fn to_tracing() -> AuditLog {
        AuditLog {
            sink: Sink::Tracing,
        }
    }

    /// The file path, if writing to a file.
    pub fn path(&self) -> Option<&Path> {
        match &self.sink {
            Sink::File { path, .. } => Some(path),
            Sink::Tracing => None,
        }
    }

    /// Write one record. Blocking but short (a single append of one line); the page cache takes it.
    pub fn write(&self, record: &AuditRecord) -> Result<(), AuditError> {
        let mut line = record.to_json_line()?;
        match &self.sink {
            Sink::Tracing => {
                tracing::info!(target: TARGET, "{line}");
                Ok(())
            }
            Sink::File { path, file } => {
                line.push('\n');
                let mut f = file.lock().unwrap_or_else(|p| p.into_inner());
                f.write_all(line.as_bytes())
                    .and_then(|()| f.flush())
                    .map_err(|source| AuditError::Write {
                        path: path.clone(),
                        source,
                    })
            }
        }
    }

    /// Reopen the file (after logrotate moved it away); call on SIGHUP. On error the old handle
    /// stays in use.
    pub fn reopen(&self) -> Result<(), AuditError> {
        if let Sink::File { path, file } = &self.sink {
            let new = open_append(path)?;
            *file.lock().unwrap_or_else(|p| p.into_inner()) = new;
        }
        Ok(())
    }
}

fn open_append(path: &Path) -> Result<File, AuditError> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o640)
        .open(path)
        .map_err(|source| AuditError::Open {
            path: path.to_path_buf(),
            source,
        })
}
