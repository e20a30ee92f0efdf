//! Postfix `smtp-sink` as a next-hop process, dumping every transaction into its own file, and
//! the parsing of those dumps.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::process::{Process, free_port, greeting, tool, wait_until};

/// Postfix `smtp-sink` on a loopback port, dumping every transaction into its own file.
pub struct SmtpSink {
    process: Process,
    pub port: u16,
    dir: tempfile::TempDir,
}

impl SmtpSink {
    /// On a free port. The port is picked as free and released for smtp-sink, so another
    /// process may take it in between: then another port is tried.
    pub fn start(extra: &[&str]) -> SmtpSink {
        for _attempt in 0..5 {
            if let Some(sink) = Self::try_start_on(free_port(), extra) {
                return sink;
            }
        }
        panic!("smtp-sink found no free port in 5 attempts");
    }

    /// On `port`, which must be free.
    pub fn start_on(port: u16, extra: &[&str]) -> SmtpSink {
        Self::try_start_on(port, extra)
            .unwrap_or_else(|| panic!("smtp-sink could not listen on port {port}"))
    }

    fn try_start_on(port: u16, extra: &[&str]) -> Option<SmtpSink> {
        let dir = tempfile::tempdir().expect("tempdir");
        // smtp-sink refuses to run as root and writes its dumps as `nobody`.
        std::fs::set_permissions(
            dir.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o777),
        )
        .expect("chmod");
        // Its own name in the greeting tells this smtp-sink from any other listener on the port.
        let name = format!("sink-{}-{port}", std::process::id());
        let mut child = Command::new(tool("smtp-sink"))
            .args(["-u", "nobody", "-h", &name, "-d"])
            .arg(format!("{}/msg.", dir.path().display()))
            .args(extra)
            .arg(format!("127.0.0.1:{port}"))
            .arg("64")
            .stdin(Stdio::null())
            .spawn()
            .expect("smtp-sink not found: apt-get install -y postfix");
        let ours = wait_until("smtp-sink to listen", || {
            if let Some(greeting) = greeting(port) {
                return Some(greeting.starts_with(&format!("220 {name} ")));
            }
            match child.try_wait() {
                Ok(Some(_)) => Some(false),
                _ => None,
            }
        });
        if ours {
            Some(SmtpSink {
                process: Process { child },
                port,
                dir,
            })
        } else {
            let _ = child.kill();
            let _ = child.wait();
            None
        }
    }

    pub fn next_hop(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn dump_dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn dumps(&self) -> Vec<Vec<u8>> {
        read_dumps(self.dir.path())
    }

    /// Wait for the complete dump of the message containing `marker`.
    pub fn wait_dump(&self, marker: &str) -> Dump {
        wait_dump_in(self.dir.path(), marker)
    }
}

pub fn read_dumps(dir: &Path) -> Vec<Vec<u8>> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|rd| rd.filter_map(|e| e.ok()).map(|e| e.path()).collect())
        .unwrap_or_default();
    paths.sort();
    paths.iter().filter_map(|p| std::fs::read(p).ok()).collect()
}

/// Poll `dir` until the dump of the message containing `marker` is complete. A complete dump
/// ends with the message's last line and smtp-sink's closing empty line (`\n\n`); every test
/// message ends with CRLF.
pub fn wait_dump_in(dir: &Path, marker: &str) -> Dump {
    let raw = wait_until(&format!("a dump containing {marker:?} in {dir:?}"), || {
        read_dumps(dir)
            .into_iter()
            .find(|d| d.ends_with(b"\n\n") && String::from_utf8_lossy(d).contains(marker))
    });
    Dump::parse(&raw)
}

/// An smtp-sink dump: its trace lines (`X-Client-Addr:` … its own 3-line `Received:`), then the
/// message as received after dot-unstuffing with every CRLF written as LF, then an empty line.
#[derive(Debug)]
pub struct Dump {
    pub trace: String,
    /// The message as relayed (LF line ends, smtp-sink's closing empty line removed).
    pub message: Vec<u8>,
}

impl Dump {
    pub fn parse(raw: &[u8]) -> Dump {
        let text = String::from_utf8_lossy(raw);
        let start = text
            .find("\nReceived: from ")
            .map(|i| i + 1)
            .unwrap_or_else(|| panic!("no smtp-sink Received header in dump:\n{text}"));
        let mut end = start;
        for _ in 0..3 {
            end += text[end..].find('\n').expect("3-line Received") + 1;
        }
        assert!(
            text[start..end].contains(" (smtp-sink) with "),
            "unexpected trace: {text}"
        );
        let mut message = raw[end..].to_vec();
        assert_eq!(
            message.pop(),
            Some(b'\n'),
            "dump lacks its closing empty line"
        );
        Dump {
            trace: text[..end].to_string(),
            message,
        }
    }

    /// The trace values of one smtp-sink header (`X-Rcpt-Args` etc.), in order.
    pub fn trace_values(&self, name: &str) -> Vec<String> {
        let prefix = format!("{name}: ");
        self.trace
            .lines()
            .filter_map(|l| l.strip_prefix(&prefix).map(str::to_string))
            .collect()
    }
}
