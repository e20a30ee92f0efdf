//! Runs the real `cryptshare-gateway serve` binary as an operator would: a config file in a temp
//! dir, stderr read through a pipe, raw HTTP/1.1 for `/metrics`; the blocking SMTP client and
//! the process handling come from the shared `support` module (re-exported here).
//!
//! Every wait is on an event (a log line, a reply, a datagram, EOF) and bounded by [`WAIT`]; a
//! timeout panics with what was seen so far.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::time::{Duration, Instant};

use base64::Engine;

// Re-exported for the tests; not every test uses every one.
#[allow(unused_imports)]
pub use crate::support::process::{Process, WAIT, gateway_command, python};
#[allow(unused_imports)]
pub use crate::support::smtp::Smtp;

/// The configured Cryptshare client id; must never show up in a log.
pub const CLIENT_ID: &str = "OpsE2eSecretClientId0123456789abcdefghijklmnopqrstuvwxyzABCD";

pub const HOSTNAME: &str = "gw.ops.test";

/// Threshold under which nothing is converted in these tests.
pub const HUGE: u64 = 1_000_000_000;
/// Threshold the test attachment exceeds.
pub const SMALL: u64 = 1_000;
/// Decoded size of the test attachment.
pub const ATTACHMENT_SIZE: usize = 20_000;

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Human,
    Json,
}

/// Writes a gateway configuration for `dir` with the given policy threshold. `extra` is appended
/// verbatim (e.g. an unknown key to break the file).
pub fn write_config(dir: &Path, threshold: u64, extra: &str) -> PathBuf {
    write_config_with(dir, threshold, "", extra)
}

/// [`write_config`] with `server_extra` appended to `[server]` (which already sets `listen`,
/// `hostname` and, unless given here, `shutdown_grace = 60`).
pub fn write_config_with(dir: &Path, threshold: u64, server_extra: &str, extra: &str) -> PathBuf {
    let grace = if server_extra.contains("shutdown_grace") {
        ""
    } else {
        "shutdown_grace = 60\n"
    };
    let path = dir.join("gateway.toml");
    let text = format!(
        r#"[server]
listen = ["127.0.0.1:0"]
hostname = "{HOSTNAME}"
{grace}{server_extra}

[relay]
next_hop = "maildir:{outbox}"

[cryptshare]
url = "embedded"
client_id = "{CLIENT_ID}"

[state]
dir = "{state}"

[metrics]
listen = "127.0.0.1:0"

[[policy]]
name = "trial"
senders = ["*"]
threshold = {threshold}
on_error = "tempfail"
password_mode = "generated"
{extra}
"#,
        outbox = dir.join("outbox").display(),
        state = dir.join("state").display(),
    );
    // Write-then-rename: a SIGHUP must never see a half-written file.
    let tmp = dir.join("gateway.toml.new");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, &path).unwrap();
    path
}

/// The log message (and its `url` field) of the gateway's embedded emulator.
const EMULATOR_LINE: &str = "embedded Cryptshare emulator running";

/// A running gateway. Killed (SIGKILL, by pid) on drop if it is still running. Its embedded
/// emulator's exchanges (the gateway's requests, the emulator's answers) are checked against
/// `openapi-1.8.json` while the process still runs: before a signal that ends it
/// ([`Gateway::signal`]) and on drop ([`Gateway::check_exchanges`]).
pub struct Gateway {
    process: Process,
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
    pub smtp: SocketAddr,
    pub metrics: SocketAddr,
    format: LogFormat,
    lines_rx: Receiver<String>,
    /// Every stderr line received so far.
    pub lines: Vec<String>,
    /// Lines before this index were matched or skipped by [`Gateway::wait_log`].
    cursor: usize,
    eof: bool,
    /// The embedded emulator's URL, from its log line.
    emulator: Option<String>,
}

impl Gateway {
    pub fn start(threshold: u64, format: LogFormat) -> Gateway {
        Self::start_with_env(threshold, format, &[])
    }

    pub fn start_with_env(threshold: u64, format: LogFormat, env: &[(&str, &str)]) -> Gateway {
        Self::start_with(threshold, format, env, "")
    }

    /// `server_extra`: lines for the `[server]` section (see [`write_config_with`]).
    pub fn start_with(
        threshold: u64,
        format: LogFormat,
        env: &[(&str, &str)],
        server_extra: &str,
    ) -> Gateway {
        Self::start_full(threshold, format, env, server_extra, "")
    }

    /// `extra`: lines appended after the `[[policy]]` keys (further keys, or new tables).
    pub fn start_with_policy_extra(threshold: u64, format: LogFormat, extra: &str) -> Gateway {
        Self::start_full(threshold, format, &[], "", extra)
    }

    fn start_full(
        threshold: u64,
        format: LogFormat,
        env: &[(&str, &str)],
        server_extra: &str,
        extra: &str,
    ) -> Gateway {
        let dir = tempfile::tempdir().unwrap();
        let config = write_config_with(dir.path(), threshold, server_extra, extra);
        let mut cmd = gateway_command();
        cmd.arg("serve").arg("--config").arg(&config);
        if format == LogFormat::Json {
            cmd.args(["--log-format", "json"]);
        }
        cmd.env_remove("RUST_LOG")
            .env_remove("NOTIFY_SOCKET")
            .env_remove("WATCHDOG_USEC")
            .env_remove("JOURNAL_STREAM");
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut gw = Gateway::spawn(cmd, dir, config, format);
        let l = gw.wait_log("SMTP listener ready");
        gw.smtp = gw.field(&l, "listen").parse().unwrap();
        let l = gw.wait_log("metrics endpoint ready");
        gw.metrics = gw.field(&l, "listen").parse().unwrap();
        gw
    }

    /// Spawn a prepared command (arguments, environment, `pre_exec`: the caller's) with stderr
    /// read as by [`Gateway::start`], without waiting for anything: the caller waits for the log
    /// lines it expects and fills in `smtp` / `metrics` if it needs them. `dir` holds `config`.
    pub fn spawn(
        mut cmd: Command,
        dir: tempfile::TempDir,
        config: PathBuf,
        format: LogFormat,
    ) -> Gateway {
        let mut child = cmd
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn cryptshare-gateway");
        let stderr = child.stderr.take().unwrap();
        let (tx, lines_rx) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Gateway {
            process: Process { child },
            dir,
            config,
            smtp: "0.0.0.0:0".parse().unwrap(),
            metrics: "0.0.0.0:0".parse().unwrap(),
            format,
            lines_rx,
            lines: Vec::new(),
            cursor: 0,
            eof: false,
            emulator: None,
        }
    }

    pub fn outbox(&self) -> PathBuf {
        self.dir.path().join("outbox")
    }

    pub fn sim_dir(&self) -> PathBuf {
        self.dir.path().join("state").join("cryptshare-sim")
    }

    pub fn pid(&self) -> libc::pid_t {
        self.process.pid()
    }

    /// Send `sig`; one that ends the process (TERM, INT, QUIT, KILL) checks the embedded
    /// emulator's exchanges first, while it can still be asked.
    pub fn signal(&mut self, sig: libc::c_int) {
        if [libc::SIGTERM, libc::SIGINT, libc::SIGQUIT, libc::SIGKILL].contains(&sig) {
            self.check_exchanges();
        }
        self.process.signal(sig);
    }

    /// Assert that every exchange of the embedded emulator so far is valid against
    /// `openapi-1.8.json` (requests included: the client is the gateway's). Nothing to check
    /// when the process has exited or its emulator never started (no log line).
    pub fn check_exchanges(&mut self) {
        if std::thread::panicking() || !matches!(self.process.child.try_wait(), Ok(None)) {
            return;
        }
        while let Ok(l) = self.lines_rx.try_recv() {
            self.take_line(l);
        }
        if let Some(url) = &self.emulator {
            crate::support::openapi::assert_remote_exchanges_valid(url, true);
        }
    }

    fn take_line(&mut self, l: String) {
        if self.emulator.is_none() && l.contains(EMULATOR_LINE) {
            self.emulator = Some(self.field(&l, "url"));
        }
        self.lines.push(l);
    }

    /// A field of a log line: the JSON key, or `key=value` in the human format.
    pub fn field(&self, line: &str, key: &str) -> String {
        match self.format {
            LogFormat::Json => {
                let v: serde_json::Value =
                    serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
                match &v[key] {
                    serde_json::Value::String(s) => s.clone(),
                    other => other.to_string(),
                }
            }
            LogFormat::Human => line
                .split_whitespace()
                .find_map(|w| w.strip_prefix(&format!("{key}=")))
                .unwrap_or_else(|| panic!("no {key}= in {line}"))
                .trim_matches('"')
                .to_string(),
        }
    }

    fn recv_line(&mut self, deadline: Instant) -> Option<String> {
        let left = deadline.saturating_duration_since(Instant::now());
        match self.lines_rx.recv_timeout(left) {
            Ok(l) => {
                self.take_line(l.clone());
                Some(l)
            }
            Err(RecvTimeoutError::Timeout) => None,
            Err(RecvTimeoutError::Disconnected) => {
                self.eof = true;
                None
            }
        }
    }

    /// Wait for the next line (after the last match) that contains `needle`.
    pub fn wait_log(&mut self, needle: &str) -> String {
        self.wait_log_where(needle, |l| l.contains(needle))
    }

    pub fn wait_log_where(&mut self, what: &str, pred: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(i) = (self.cursor..self.lines.len()).find(|&i| pred(&self.lines[i])) {
                self.cursor = i + 1;
                return self.lines[i].clone();
            }
            if self.eof || self.recv_line(deadline).is_none() {
                let why = if self.eof {
                    "stderr closed"
                } else {
                    "timed out"
                };
                panic!(
                    "waiting for a log line with {what:?}: {why}; log so far:\n{}",
                    self.lines.join("\n")
                );
            }
        }
    }

    /// Wait for the process to close stderr (it exited), then reap it.
    pub fn wait_exit(&mut self) -> ExitStatus {
        let deadline = Instant::now() + WAIT;
        while !self.eof {
            if self.recv_line(deadline).is_none() && !self.eof {
                panic!(
                    "the gateway did not exit; log so far:\n{}",
                    self.lines.join("\n")
                );
            }
        }
        self.process.child.wait().unwrap()
    }

    pub fn log(&self) -> String {
        self.lines.join("\n")
    }

    /// `GET path` on the metrics listener: (status, body).
    pub fn http_get(&self, path: &str) -> (u16, String) {
        http_get(self.metrics, path)
    }

    /// Every sample of `/metrics`, parsed by the Python `prometheus_client` text parser.
    pub fn scrape(&self) -> Vec<Sample> {
        let (status, body) = self.http_get("/metrics");
        assert_eq!(status, 200, "{body}");
        parse_prometheus(&body)
    }

    /// Scrape until `done` holds: for values that settle just after the client saw its reply (a
    /// session's gauge drops after its socket is closed). Bounded by [`WAIT`].
    pub fn scrape_until(&self, what: &str, done: impl Fn(&[Sample]) -> bool) -> Vec<Sample> {
        let deadline = Instant::now() + WAIT;
        loop {
            let s = self.scrape();
            if done(&s) {
                return s;
            }
            assert!(Instant::now() < deadline, "/metrics never showed {what}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Messages delivered to the maildir outbox (`new/`), sorted by file name.
    pub fn outbox_messages(&self) -> Vec<Vec<u8>> {
        let mut names: Vec<PathBuf> = match std::fs::read_dir(self.outbox().join("new")) {
            Ok(rd) => rd.map(|e| e.unwrap().path()).collect(),
            Err(_) => Vec::new(),
        };
        names.sort();
        names.iter().map(|p| std::fs::read(p).unwrap()).collect()
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        self.check_exchanges();
    }
}

pub fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let (status, _, body) = http_request(addr, path, &[]);
    (status, body)
}

/// `GET path` with extra header lines: (status, lower-cased header block, body).
pub fn http_request(addr: SocketAddr, path: &str, headers: &[&str]) -> (u16, String, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    let mut req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for h in headers {
        req.push_str(h);
        req.push_str("\r\n");
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let text = String::from_utf8(raw).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("bad status line: {head}"));
    let head = head.to_ascii_lowercase();
    assert!(
        !head.contains("transfer-encoding: chunked"),
        "unexpected chunked body: {head}"
    );
    (status, head, body.to_string())
}

/// Poll `/readyz` until 200: readiness has no event to wait on from outside the process, so this
/// retries (bounded by [`WAIT`]) with a short pause between attempts.
pub fn wait_ready(gw: &Gateway) {
    let deadline = Instant::now() + WAIT;
    loop {
        let (status, body) = gw.http_get("/readyz");
        if status == 200 {
            assert_eq!(body, "ready\n");
            return;
        }
        assert_eq!(status, 503, "{body}");
        assert!(
            Instant::now() < deadline,
            "/readyz still {status} {body:?}; log:\n{}",
            gw.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// One sample of a scrape.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct Sample {
    pub name: String,
    pub labels: std::collections::BTreeMap<String, String>,
    pub value: f64,
}

/// The value of the sample `name` whose labels include `labels`; panics when there is none or
/// more than one.
pub fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> f64 {
    let found: Vec<&Sample> = samples
        .iter()
        .filter(|s| {
            s.name == name
                && labels
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
        .collect();
    assert_eq!(
        found.len(),
        1,
        "{name}{labels:?}: expected one sample, got {found:?}"
    );
    found[0].value
}

/// Sum of every sample named `name` whose labels include `labels`.
pub fn sum(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> f64 {
    samples
        .iter()
        .filter(|s| {
            s.name == name
                && labels
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|s| s.value)
        .sum()
}

const PARSER: &str = r#"
import json, sys
if sys.argv[1] == "openmetrics":
    from prometheus_client.openmetrics.parser import text_string_to_metric_families
else:
    from prometheus_client.parser import text_string_to_metric_families
out = []
for fam in text_string_to_metric_families(sys.stdin.read()):
    for s in fam.samples:
        out.append({"name": s.name, "labels": s.labels, "value": s.value})
print(json.dumps(out))
"#;

/// Parse the exposition with `prometheus_client` (pip install prometheus-client); a parse error
/// fails the test.
pub fn parse_prometheus(text: &str) -> Vec<Sample> {
    parse_with(text, "prometheus")
}

/// Parse OpenMetrics 1.0 text with `prometheus_client`'s (strict) OpenMetrics parser.
pub fn parse_openmetrics(text: &str) -> Vec<Sample> {
    parse_with(text, "openmetrics")
}

fn parse_with(text: &str, format: &str) -> Vec<Sample> {
    let out = python(
        PARSER,
        &[format],
        text.as_bytes(),
        "pip install prometheus-client",
    );
    assert!(
        out.status.success(),
        "prometheus_client could not parse /metrics: {}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// A message with one `application/octet-stream` attachment of `size` bytes (base64, 76-column
/// lines), CRLF line ends, nothing that needs dot-stuffing.
pub fn message(id: &str, size: usize) -> Vec<u8> {
    let content: Vec<u8> = (0..size).map(|i| (i * 7 % 251) as u8).collect();
    let b64 = base64::engine::general_purpose::STANDARD.encode(&content);
    let mut m = format!(
        "From: alice@example.org\r\n\
         To: bob@partner.example\r\n\
         Subject: ops e2e {id}\r\n\
         Message-ID: <{id}@example.org>\r\n\
         MIME-Version: 1.0\r\n\
         Content-Type: multipart/mixed; boundary=\"b-{id}\"\r\n\
         \r\n\
         --b-{id}\r\n\
         Content-Type: text/plain; charset=us-ascii\r\n\
         \r\n\
         Hello, see the attachment.\r\n\
         --b-{id}\r\n\
         Content-Type: application/octet-stream; name=\"data-{id}.bin\"\r\n\
         Content-Disposition: attachment; filename=\"data-{id}.bin\"\r\n\
         Content-Transfer-Encoding: base64\r\n\
         \r\n"
    );
    for chunk in b64.as_bytes().chunks(76) {
        m.push_str(std::str::from_utf8(chunk).unwrap());
        m.push_str("\r\n");
    }
    m.push_str(&format!("--b-{id}--\r\n"));
    m.into_bytes()
}

/// The outbox message whose subject names `id` (a [`message`]); exactly one must be there.
pub fn delivered(gw: &Gateway, id: &str) -> Vec<u8> {
    let subject = format!("Subject: ops e2e {id}\r\n");
    let found: Vec<Vec<u8>> = gw
        .outbox_messages()
        .into_iter()
        .filter(|m| contains(m, subject.as_bytes()))
        .collect();
    assert_eq!(found.len(), 1, "outbox messages for {id}");
    found.into_iter().next().unwrap()
}

/// The notice the pipeline puts into a converted message.
pub const NOTICE: &[u8] = b"[Cryptshare] 1 attachment(s) of this message were moved";

pub fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}
