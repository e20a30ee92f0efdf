//! Log formats, secret redaction and the audit line.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::sync::{Arc, Mutex};

use cryptshare_gateway::ops::audit::{
    AuditDurations, AuditError, AuditFile, AuditLog, AuditRecord, Decision,
};
use cryptshare_gateway::ops::logging::{self, HumanOptions, LogError, LogFormat, Redacted, Secret};
use serde_json::json;

/// Captures everything the subscriber writes.
#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Capture {
    fn text(&self) -> String {
        String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
    }
}

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Capture {
    type Writer = Capture;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

const PLAIN: HumanOptions = HumanOptions {
    ansi: false,
    timestamps: false,
};

fn capture(format: LogFormat, filter: &str, f: impl FnOnce()) -> String {
    let out = Capture::default();
    let dispatch = logging::build(format, filter, PLAIN, out.clone()).unwrap();
    tracing::dispatcher::with_default(&dispatch, f);
    out.text()
}

#[test]
fn secrets_are_redacted_in_every_format() {
    let client_id: Secret = Redacted::new("a1b2c3d4e5-client-id".to_string());
    let password = Redacted::new("hunter2");
    assert_eq!(format!("{client_id}"), "[redacted]");
    assert_eq!(format!("{client_id:?}"), "[redacted]");
    assert_eq!(format!("{password:#?}"), "[redacted]");
    assert_eq!(client_id.expose(), "a1b2c3d4e5-client-id");

    let json_out = capture(LogFormat::Json, "info", || {
        tracing::info!(client_id = %client_id, password = ?password, "token requested");
    });
    let line: serde_json::Value = serde_json::from_str(json_out.trim_end()).unwrap();
    assert_eq!(line["level"], "INFO");
    assert_eq!(line["target"], "ops_logging");
    assert_eq!(line["message"], "token requested");
    assert_eq!(line["client_id"], "[redacted]");
    assert_eq!(line["password"], "[redacted]");

    let human = capture(LogFormat::Human, "info", || {
        tracing::info!(client_id = %client_id, "token requested");
    });
    assert_eq!(
        human,
        " INFO ops_logging: token requested client_id=[redacted]\n"
    );
    for out in [&json_out, &human] {
        assert!(!out.contains("a1b2c3d4e5") && !out.contains("hunter2"));
    }
}

#[test]
fn redacted_serializes_as_placeholder_and_reads_transparently() {
    #[derive(serde::Serialize, serde::Deserialize)]
    struct Creds {
        user: String,
        password: Secret,
    }
    let c: Creds = serde_json::from_str(r#"{"user":"alice","password":"s3cr3t"}"#).unwrap();
    assert_eq!(c.password.expose(), "s3cr3t");
    assert_eq!(
        serde_json::to_string(&c).unwrap(),
        r#"{"user":"alice","password":"[redacted]"}"#
    );
}

#[test]
fn filter_and_format_parsing() {
    let out = capture(LogFormat::Human, "warn", || {
        tracing::info!("hidden");
        tracing::warn!("shown");
    });
    assert_eq!(out, " WARN ops_logging: shown\n");

    assert_eq!("json".parse::<LogFormat>().unwrap(), LogFormat::Json);
    assert_eq!("human".parse::<LogFormat>().unwrap(), LogFormat::Human);
    let e = "xml".parse::<LogFormat>().unwrap_err();
    assert_eq!(
        e.to_string(),
        "--log-format: \"xml\" is not one of human, json"
    );
    let bad = logging::build(LogFormat::Json, "info,=[", PLAIN, Capture::default()).unwrap_err();
    assert!(matches!(bad, LogError::Filter { .. }), "{bad}");
}

fn sample_record() -> AuditRecord {
    let mut r = AuditRecord::new("4F2A9C01", Decision::Convert);
    r.time = "2026-11-27T10:00:00.000Z".into();
    r.message_id = Some("abc@example.org".into());
    r.sender = "alice@example.org".into();
    r.recipients = vec!["bob@partner.example".into(), "carol@partner.example".into()];
    r.size = 31_500_000;
    r.policy = Some("example.org".into());
    r.reason = "attachments 31457280 bytes > threshold 10485760".into();
    r.files = vec![AuditFile {
        name: "plan\r\n\"Q4\".pdf".into(),
        size: 31_457_280,
        sha256: "ab".repeat(32),
    }];
    r.tracking_id = Some("20261127-100000-ABCDEFGH".into());
    r.reply = "250 2.0.0 Ok: queued as 4F2A9C01".into();
    r.relay = Some("250 2.0.0 Ok: queued as 9D8E7F".into());
    r.durations = AuditDurations {
        total_ms: 2150,
        cryptshare_ms: 2000,
        relay_ms: 120,
    };
    r
}

#[test]
fn audit_line_shape() {
    let line = sample_record().to_json_line().unwrap();
    assert!(!line.contains('\n'), "one physical line: {line}");
    let v: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(
        v,
        json!({
            "time": "2026-11-27T10:00:00.000Z",
            "queue_id": "4F2A9C01",
            "message_id": "abc@example.org",
            "sender": "alice@example.org",
            "recipients": ["bob@partner.example", "carol@partner.example"],
            "size": 31_500_000,
            "policy": "example.org",
            "decision": "convert",
            "reason": "attachments 31457280 bytes > threshold 10485760",
            "files": [{"name": "plan\r\n\"Q4\".pdf", "size": 31_457_280, "sha256": "ab".repeat(32)}],
            "tracking_id": "20261127-100000-ABCDEFGH",
            "reply": "250 2.0.0 Ok: queued as 4F2A9C01",
            "relay": "250 2.0.0 Ok: queued as 9D8E7F",
            "durations": {"total_ms": 2150, "cryptshare_ms": 2000, "relay_ms": 120}
        })
    );
    let pass = AuditRecord::new("X1", Decision::DeliverOriginal);
    let v: serde_json::Value = serde_json::from_str(&pass.to_json_line().unwrap()).unwrap();
    assert_eq!(v["decision"], "deliver-original");
    assert_eq!(v["policy"], serde_json::Value::Null);
    assert_eq!(v["files"], json!([]));
    // RFC 3339 UTC with milliseconds, e.g. 2026-11-27T10:00:00.123Z
    let t = v["time"].as_str().unwrap();
    assert_eq!((t.len(), &t[10..11], &t[23..]), (24, "T", "Z"), "{t}");
}

#[test]
fn audit_file_appends_whole_lines_and_reopens() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.log");
    std::fs::write(&path, "existing\n").unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
    let log = Arc::new(AuditLog::to_file(&path).unwrap());
    assert_eq!(log.path(), Some(path.as_path()));

    let threads: Vec<_> = (0..8)
        .map(|t| {
            let log = log.clone();
            std::thread::spawn(move || {
                for i in 0..50 {
                    let mut r = sample_record();
                    r.queue_id = format!("Q{t}-{i}");
                    log.write(&r).unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let text = std::fs::read_to_string(&path).unwrap();
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some("existing"));
    let mut ids: Vec<String> = lines
        .map(|l| {
            let r: AuditRecord = serde_json::from_str(l).unwrap();
            r.queue_id
        })
        .collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 400);

    // logrotate: move the file away, reopen, the next line goes to a fresh file.
    let rotated = dir.path().join("audit.log.1");
    std::fs::rename(&path, &rotated).unwrap();
    log.reopen().unwrap();
    log.write(&sample_record()).unwrap();
    assert_eq!(std::fs::read_to_string(&path).unwrap().lines().count(), 1);
    assert_eq!(
        std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
        0o640 & !current_umask()
    );
    assert_eq!(
        std::fs::read_to_string(&rotated).unwrap().lines().count(),
        401
    );
}

/// The umask, read without changing it (umask(2) would race with the other tests' threads).
fn current_umask() -> u32 {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("probe");
    std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .mode(0o777)
        .open(&p)
        .unwrap();
    0o777 & !std::fs::metadata(&p).unwrap().permissions().mode()
}

#[test]
fn audit_file_errors_name_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("no/such/dir/audit.log");
    let e = AuditLog::to_file(&path).unwrap_err();
    assert!(matches!(e, AuditError::Open { .. }));
    assert!(
        e.to_string()
            .starts_with(&format!("audit file {}: ", path.display())),
        "{e}"
    );
}

#[test]
fn audit_to_tracing_uses_the_audit_target() {
    let rec = sample_record();
    let expected = rec.to_json_line().unwrap();
    let out = capture(LogFormat::Json, "info", || {
        AuditLog::to_tracing().write(&rec).unwrap();
    });
    let v: serde_json::Value = serde_json::from_str(out.trim_end()).unwrap();
    assert_eq!(v["target"], "audit");
    assert_eq!(v["message"].as_str(), Some(expected.as_str()));
    // The audit target can be filtered on its own.
    let quiet = capture(LogFormat::Json, "info,audit=off", || {
        AuditLog::to_tracing().write(&rec).unwrap();
    });
    assert_eq!(quiet, "");
}

/// The only test in this binary that installs the global subscriber.
#[test]
fn init_installs_once() {
    assert!(matches!(
        logging::init(LogFormat::Json, Some("info,=[")),
        Err(LogError::Filter { .. })
    ));
    logging::init(LogFormat::Human, Some("warn")).unwrap();
    assert!(matches!(
        logging::init(LogFormat::Human, Some("warn")),
        Err(LogError::AlreadyInitialised)
    ));
}
