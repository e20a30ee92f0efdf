//! `cryptshare-gateway find`: what the gateway did with a message, by Message-ID, tracking id,
//! queue id or envelope sender — from the audit file (`[audit] file` and its uncompressed
//! rotations) and the state store (`state.dir`: finished transfers and pending sessions).
//!
//! Read-only: nothing is created, locked or written, so it is safe beside a running gateway.
//! The audit records found name their transfers' tracking ids; the state records with those ids
//! are shown too, so a search by Message-ID or queue id also shows what the store remembers.
//! Download links in the state store are counted, never printed (with `links = "per-recipient"`
//! and no password they open the files).

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};

use serde_json::json;

use crate::config::Config;
use crate::ops::audit::AuditRecord;
use crate::store::state::{self, Record, StateError};

#[derive(Debug, thiserror::Error)]
pub enum FindError {
    #[error("audit.file: {path}: {source}")]
    Audit {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("state.dir: {0}")]
    State(#[from] StateError),
}

/// What to look for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Query {
    /// The `Message-ID:` header; angle brackets are optional. Compared exactly.
    MessageId(String),
    /// The Cryptshare tracking id; compared ignoring ASCII case.
    TrackingId(String),
    /// The gateway's queue id (its `Received:` header, log lines); ignoring ASCII case.
    QueueId(String),
    /// The envelope sender (`<>` or an empty string: the null sender); ignoring ASCII case.
    Sender(String),
}

impl Query {
    /// The query with its value normalised (brackets and surrounding space removed).
    pub fn message_id(id: &str) -> Query {
        Query::MessageId(unbracket(id))
    }
    pub fn tracking_id(id: &str) -> Query {
        Query::TrackingId(id.trim().to_string())
    }
    pub fn queue_id(id: &str) -> Query {
        Query::QueueId(id.trim().to_string())
    }
    pub fn sender(addr: &str) -> Query {
        Query::Sender(unbracket(addr))
    }

    /// The option name without dashes, as in the JSON output (`message_id`, …).
    fn key(&self) -> &'static str {
        match self {
            Query::MessageId(_) => "message_id",
            Query::TrackingId(_) => "tracking_id",
            Query::QueueId(_) => "queue_id",
            Query::Sender(_) => "sender",
        }
    }

    fn value(&self) -> &str {
        match self {
            Query::MessageId(v) | Query::TrackingId(v) | Query::QueueId(v) | Query::Sender(v) => v,
        }
    }

    /// `message-id <abc@example.org>`: for messages to a person.
    pub fn describe(&self) -> String {
        match self {
            Query::MessageId(v) => format!("message-id {}", quoted(&format!("<{v}>"))),
            Query::TrackingId(v) => format!("tracking id {}", quoted(v)),
            Query::QueueId(v) => format!("queue id {}", quoted(v)),
            Query::Sender(v) if v.is_empty() => "sender <> (the null sender)".into(),
            Query::Sender(v) => format!("sender {}", quoted(v)),
        }
    }

    fn matches_audit(&self, r: &AuditRecord) -> bool {
        match self {
            Query::MessageId(v) => r.message_id.as_deref() == Some(v.as_str()),
            Query::TrackingId(v) => r
                .tracking_id
                .as_deref()
                .is_some_and(|t| t.eq_ignore_ascii_case(v)),
            Query::QueueId(v) => r.queue_id.eq_ignore_ascii_case(v),
            Query::Sender(v) => r.sender.eq_ignore_ascii_case(v),
        }
    }

    /// A cheap test before parsing a line: can it contain a match at all? The value appears in
    /// a matching line as serde_json writes it (escaped the same way), up to ASCII case.
    fn may_match_line(&self, line_lower: &str) -> bool {
        match self {
            // The null sender is `"sender":""`: no needle to look for.
            Query::Sender(v) if v.is_empty() => true,
            _ => {
                let needle = serde_json::to_string(self.value()).unwrap_or_default();
                let needle = needle.trim_matches('"').to_ascii_lowercase();
                line_lower.contains(&needle)
            }
        }
    }
}

fn unbracket(s: &str) -> String {
    let s = s.trim();
    let s = s.strip_prefix('<').unwrap_or(s);
    let s = s.strip_suffix('>').unwrap_or(s);
    s.trim().to_string()
}

/// A state record that matched.
#[derive(Debug, Clone)]
pub struct StateHit {
    pub key: String,
    pub path: PathBuf,
    pub record: Record,
}

/// Everything found, oldest first within each source.
#[derive(Debug, Default)]
pub struct Found {
    /// The audit files read (the configured file first, then its rotations).
    pub audit_files: Vec<PathBuf>,
    pub audit: Vec<AuditRecord>,
    pub state: Vec<StateHit>,
    /// Spool mode: queued messages with this queue id or sender (`queue show ID` for more).
    pub queued: Vec<crate::store::queue::Listed>,
    /// What the search could not look at (for standard error): no audit file configured,
    /// compressed rotations, unreadable lines or records.
    pub notes: Vec<String>,
}

impl Found {
    pub fn is_empty(&self) -> bool {
        self.audit.is_empty() && self.state.is_empty() && self.queued.is_empty()
    }
}

/// Search the audit file(s) and the state store of `cfg` for `query`.
pub fn find(cfg: &Config, query: &Query) -> Result<Found, FindError> {
    let mut found = Found::default();
    match &cfg.audit {
        None => found.notes.push(
            "no [audit] file configured: the audit records are in the journal \
             (journalctl -u cryptshare-gateway -o cat -g '^ *INFO audit: '); \
             searched the state store only"
                .into(),
        ),
        Some(a) => {
            let (files, compressed) = audit_files(&a.file)?;
            if files.is_empty() {
                found.notes.push(format!(
                    "audit file {} does not exist (yet)",
                    a.file.display()
                ));
            }
            if compressed > 0 {
                found.notes.push(format!(
                    "{compressed} compressed rotation(s) of {} not searched \
                     (zcat -f {}* | jq -c 'select(.{} == …)')",
                    a.file.display(),
                    a.file.display(),
                    query.key()
                ));
            }
            for f in &files {
                search_audit(f, query, &mut found)?;
            }
            found.audit_files = files;
        }
    }
    found.audit.sort_by(|a, b| a.time.cmp(&b.time));

    let linked: BTreeSet<String> = found
        .audit
        .iter()
        .filter_map(|r| r.tracking_id.as_deref())
        .map(str::to_ascii_uppercase)
        .collect();
    // With PostgreSQL, the records and the queue are read from the database (a connection of
    // this command's own); when it cannot be reached, the audit file still answers.
    let mut pg_queue = None;
    let scanned = if cfg.state.backend == crate::config::StateBackend::Postgres {
        match read_postgres(cfg) {
            Ok((records, queued)) => {
                pg_queue = Some(queued);
                records
            }
            Err(e) => {
                found.notes.push(format!(
                    "state database not searched: {e} (table csgw_transfers, \
                     docs/high-availability.md)"
                ));
                Vec::new()
            }
        }
    } else {
        state::scan(&cfg.state.dir)?
    };
    for s in scanned {
        let record = match s.record {
            Ok(r) => r,
            Err(e) => {
                found.notes.push(format!("skipped: {e}"));
                continue;
            }
        };
        let (sender, tracking) = match &record {
            Record::Pending {
                sender,
                tracking_id,
                ..
            } => (sender, tracking_id.as_deref()),
            Record::Finished {
                sender,
                tracking_id,
                ..
            } => (sender, Some(tracking_id.as_str())),
        };
        let direct = match query {
            Query::Sender(v) => sender.eq_ignore_ascii_case(v),
            Query::TrackingId(v) => tracking.is_some_and(|t| t.eq_ignore_ascii_case(v)),
            Query::MessageId(_) | Query::QueueId(_) => false,
        };
        let via_audit = tracking.is_some_and(|t| linked.contains(&t.to_ascii_uppercase()));
        if direct || via_audit {
            found.state.push(StateHit {
                key: s.key,
                path: s.path,
                record,
            });
        }
    }
    found.state.sort_by_key(|h| created(&h.record));
    // The queue, when there is one (spool mode); reading it never creates it.
    let queued = match pg_queue {
        Some(q) => Some(q),
        None if cfg.state.dir.join("queue").is_dir() => {
            crate::store::queue::Queue::open_for_tools(&cfg.state.dir)
                .and_then(|q| q.list_all())
                .ok()
        }
        None => None,
    };
    if let Some(all) = queued {
        found.queued = all
            .into_iter()
            .filter(|l| match query {
                Query::QueueId(v) => l.id.eq_ignore_ascii_case(v),
                Query::Sender(v) => l
                    .envelope
                    .as_ref()
                    .is_some_and(|e| e.mail_from.address.eq_ignore_ascii_case(v)),
                Query::MessageId(_) | Query::TrackingId(_) => false,
            })
            .collect();
    }
    Ok(found)
}

/// The state records and the queue in PostgreSQL.
fn read_postgres(
    cfg: &Config,
) -> Result<(Vec<state::ScannedRecord>, Vec<crate::store::queue::Listed>), String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    rt.block_on(async {
        let pg = crate::store::postgres::PgStore::connect(
            &cfg.state,
            "find",
            crate::store::postgres::DbMetrics::default(),
        )
        .await
        .map_err(|e| e.to_string())?;
        let records = pg.scan().await.map_err(|e| e.to_string())?;
        let queue = crate::store::pg_queue::PgQueue::new(pg, cfg);
        let queued = queue.list_all().await.map_err(|e| e.to_string())?;
        Ok((records, queued))
    })
}

/// The audit file and its uncompressed rotations (`FILE-20261127`, `FILE.1`: what logrotate's
/// `dateext` / numbered rotation with `delaycompress` leave), and how many compressed ones were
/// left out. A missing file is no file.
fn audit_files(file: &Path) -> Result<(Vec<PathBuf>, usize), FindError> {
    let mut files = Vec::new();
    if file.exists() {
        files.push(file.to_path_buf());
    }
    let (Some(dir), Some(name)) = (file.parent(), file.file_name()) else {
        return Ok((files, 0));
    };
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    let name = name.to_string_lossy();
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((files, 0)),
        Err(source) => {
            return Err(FindError::Audit {
                path: dir.to_path_buf(),
                source,
            });
        }
    };
    let mut rotated = Vec::new();
    let mut compressed = 0;
    for entry in entries.flatten() {
        let n = entry.file_name().to_string_lossy().into_owned();
        let Some(rest) = n.strip_prefix(name.as_ref()) else {
            continue;
        };
        if !(rest.starts_with('-') || rest.starts_with('.')) || rest.len() < 2 {
            continue;
        }
        if [".gz", ".xz", ".bz2", ".zst", ".lz4", ".Z"]
            .iter()
            .any(|ext| rest.ends_with(ext))
        {
            compressed += 1;
        } else if entry.file_type().is_ok_and(|t| t.is_file()) {
            rotated.push(entry.path());
        }
    }
    rotated.sort();
    files.extend(rotated);
    Ok((files, compressed))
}

fn search_audit(path: &Path, query: &Query, found: &mut Found) -> Result<(), FindError> {
    let err = |source| FindError::Audit {
        path: path.to_path_buf(),
        source,
    };
    let reader = BufReader::new(File::open(path).map_err(err)?);
    let mut bad = Vec::new();
    for (i, line) in reader.split(b'\n').enumerate() {
        let line = line.map_err(err)?;
        let line = String::from_utf8_lossy(&line);
        if line.trim().is_empty() || !query.may_match_line(&line.to_ascii_lowercase()) {
            continue;
        }
        match serde_json::from_str::<AuditRecord>(&line) {
            Ok(r) if query.matches_audit(&r) => found.audit.push(r),
            Ok(_) => {}
            Err(_) => bad.push(i + 1),
        }
    }
    if let Some(first) = bad.first() {
        found.notes.push(format!(
            "{}: {} line(s) that may match are not audit records (first: line {first})",
            path.display(),
            bad.len()
        ));
    }
    Ok(())
}

fn created(r: &Record) -> i64 {
    match r {
        Record::Pending { created, .. } | Record::Finished { created, .. } => *created,
    }
}

fn unix_time(t: i64) -> String {
    chrono::DateTime::from_timestamp(t, 0)
        .map(|d| d.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_else(|| t.to_string())
}

/// A value for a `key=value` line: bare when it is plain printable ASCII without spaces or
/// quotes; otherwise in double quotes with control and format characters escaped (values come
/// from mail: a Message-ID or an address may hold anything).
fn quoted(s: &str) -> String {
    let plain = !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_graphic() && c != '"' && c != '\\');
    if plain {
        return s.to_string();
    }
    let mut out = String::from('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() || is_format(c) => {
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Invisible characters that reorder or hide text on a terminal (bidi controls, zero-width,
/// BOM, soft hyphen, line/paragraph separators).
fn is_format(c: char) -> bool {
    matches!(c as u32, 0xAD | 0x061C | 0x180E | 0x200B..=0x200F | 0x2028..=0x202E
        | 0x2060..=0x206F | 0xFEFF | 0xFFF9..=0xFFFB)
}

fn opt(s: Option<&str>) -> String {
    s.map_or_else(|| "-".to_string(), quoted)
}

/// One line per record: audit records first, then state records, each oldest first.
pub fn render_text(found: &Found) -> String {
    let mut s = String::new();
    for r in &found.audit {
        let _ = writeln!(
            s,
            "audit {} queue_id={} message_id={} sender={} recipients={} size={} policy={} \
             decision={} tracking_id={} files={} reply={} relay={} reason={}",
            r.time,
            quoted(&r.queue_id),
            opt(r.message_id.as_deref()),
            if r.sender.is_empty() {
                "<>".to_string()
            } else {
                quoted(&r.sender)
            },
            quoted(&r.recipients.join(",")),
            r.size,
            opt(r.policy.as_deref()),
            serde_json::to_value(r.decision)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default(),
            opt(r.tracking_id.as_deref()),
            r.files.len(),
            quoted(&r.reply),
            opt(r.relay.as_deref()),
            quoted(&r.reason),
        );
    }
    for h in &found.state {
        let file = quoted(&h.path.display().to_string());
        match &h.record {
            Record::Pending {
                sender,
                tracking_id,
                created,
                ..
            } => {
                let _ = writeln!(
                    s,
                    "state {} pending tracking_id={} sender={} file={file}",
                    unix_time(*created),
                    opt(tracking_id.as_deref()),
                    quoted(sender),
                );
            }
            Record::Finished {
                sender,
                tracking_id,
                expiration,
                files,
                download_urls,
                created,
                ..
            } => {
                let _ = writeln!(
                    s,
                    "state {} finished tracking_id={} sender={} expiration={} files={} \
                     download_links={} file={file}",
                    unix_time(*created),
                    quoted(tracking_id),
                    quoted(sender),
                    quoted(expiration),
                    files.len(),
                    download_urls.len(),
                );
            }
        }
    }
    for l in &found.queued {
        let place = l.place.name();
        match &l.envelope {
            Some(e) => {
                let _ = writeln!(
                    s,
                    "queue {} {place} queue_id={} sender={} pending={}/{} attempts={} reason={}",
                    unix_time(e.arrival),
                    quoted(&l.id),
                    if e.mail_from.address.is_empty() {
                        "<>".to_string()
                    } else {
                        quoted(&e.mail_from.address)
                    },
                    e.pending().count(),
                    e.rcpts.len(),
                    e.attempts,
                    opt(e.last_error.as_deref()),
                );
            }
            None => {
                let _ = writeln!(
                    s,
                    "queue - {place} queue_id={} (envelope unreadable)",
                    quoted(&l.id)
                );
            }
        }
    }
    s
}

/// `{"query": {KEY: VALUE}, "found": bool, "audit_files": […], "audit": [records],
/// "state": [{…}], "notes": […]}`, pretty-printed.
pub fn render_json(query: &Query, found: &Found) -> String {
    let state: Vec<_> = found
        .state
        .iter()
        .map(|h| {
            let mut v = match &h.record {
                Record::Pending {
                    sender,
                    tracking_id,
                    created,
                    ..
                } => json!({
                    "state": "pending", "sender": sender, "tracking_id": tracking_id,
                    "created": unix_time(*created),
                }),
                Record::Finished {
                    sender,
                    tracking_id,
                    expiration,
                    files,
                    download_urls,
                    created,
                    ..
                } => json!({
                    "state": "finished", "sender": sender, "tracking_id": tracking_id,
                    "created": unix_time(*created), "expiration": expiration,
                    "files": files, "download_links": download_urls.len(),
                }),
            };
            v["key"] = json!(h.key);
            v["file"] = json!(h.path);
            v
        })
        .collect();
    let mut q = serde_json::Map::new();
    q.insert(query.key().into(), json!(query.value()));
    let v = json!({
        "query": q,
        "found": !found.is_empty(),
        "audit_files": found.audit_files,
        "audit": found.audit,
        "state": state,
        "queue": found.queued.iter().map(|l| json!({
            "queue_id": l.id,
            "place": l.place.name(),
            "arrival": l.envelope.as_ref().map(|e| unix_time(e.arrival)),
            "attempts": l.envelope.as_ref().map(|e| e.attempts),
            "pending": l.envelope.as_ref().map(|e| e.pending().count()),
            "reason": l.envelope.as_ref().and_then(|e| e.last_error.clone()),
        })).collect::<Vec<_>>(),
        "notes": found.notes,
    });
    let mut s = serde_json::to_string_pretty(&v).unwrap_or_default();
    s.push('\n');
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_quoted_and_escaped_when_needed() {
        assert_eq!(quoted("abc@example.org"), "abc@example.org");
        assert_eq!(quoted(""), "\"\"");
        assert_eq!(quoted("250 2.0.0 Ok"), "\"250 2.0.0 Ok\"");
        assert_eq!(quoted("a\"b\\c"), "\"a\\\"b\\\\c\"");
        assert_eq!(
            quoted("x\u{202E}fdp.exe\r\n"),
            "\"x\\u{202e}fdp.exe\\u{d}\\u{a}\""
        );
        assert_eq!(quoted("Bär"), "\"Bär\"");
    }

    #[test]
    fn queries_are_normalised() {
        assert_eq!(Query::message_id(" <a@b> "), Query::MessageId("a@b".into()));
        assert_eq!(Query::sender("<>"), Query::Sender(String::new()));
        assert_eq!(
            Query::sender("<>").describe(),
            "sender <> (the null sender)"
        );
        assert_eq!(
            Query::message_id("a b@c").describe(),
            "message-id \"<a b@c>\""
        );
    }

    #[test]
    fn the_line_filter_never_hides_a_match() {
        let mut r = AuditRecord::new("Q1", crate::ops::Decision::Pass);
        r.message_id = Some("we\"ird\u{1}@X".into());
        r.sender = "Alice@Example.ORG".into();
        let line = r.to_json_line().unwrap().to_ascii_lowercase();
        for q in [
            Query::message_id("we\"ird\u{1}@X"),
            Query::sender("alice@example.org"),
            Query::queue_id("q1"),
        ] {
            assert!(q.may_match_line(&line), "{q:?}");
            assert!(q.matches_audit(&r), "{q:?}");
        }
        assert!(!Query::message_id("we\"ird\u{1}@x").matches_audit(&r));
    }
}
