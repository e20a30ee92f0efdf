//! The end-to-end tests' harness: the real `cryptshare-gateway` binary started as an operator
//! would (config file in a temp dir, log in a file) relaying to a next hop, the check of our
//! `Received:` header in what the next hop got, and test messages. Processes, raw SMTP clients
//! and Postfix `smtp-sink` come from the shared `support` module (re-exported here).
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};

// Re-exported for the tests; not every test uses every one.
#[allow(unused_imports)]
pub use crate::support::process::{
    Process, WAIT, free_port, gateway_command, run, tool, wait_for_port, wait_until,
};
#[allow(unused_imports)]
pub use crate::support::smtp::{RawSmtp, dot_stuffed};
#[allow(unused_imports)]
pub use crate::support::smtp_sink::{Dump, SmtpSink, read_dumps, wait_dump_in};

pub const HOSTNAME: &str = "gw.e2e.test";

/// The port of the gateway's `SMTP listener ready listen=127.0.0.1:PORT` log line, once written;
/// fails at once when the gateway exits first.
fn wait_for_listen_log(child: &mut Child, log: &Path) -> u16 {
    wait_until("the gateway's SMTP listener", || {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        let found = text.lines().find_map(|l| {
            let rest = &l[l.find("SMTP listener ready")?..];
            let addr = rest.split("listen=").nth(1)?.split_whitespace().next()?;
            addr.parse::<SocketAddr>().ok().map(|a| a.port())
        });
        if found.is_none()
            && let Ok(Some(status)) = child.try_wait()
        {
            panic!("cryptshare-gateway exited ({status}) before listening:\n{text}");
        }
        found
    })
}

/// The gateway binary running `serve` on a free loopback port; killed when dropped. Its
/// embedded Cryptshare emulator (`cryptshare.url` defaults to `embedded`) is asked for its
/// exchanges on drop, while the process still runs: they must be valid against
/// `openapi-1.8.json` ([`Gateway::check_exchanges`]).
pub struct Gateway {
    process: Process,
    pub port: u16,
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
    log: PathBuf,
}

impl Gateway {
    /// Start with `[server]` keys `server_extra`, next hop `next_hop`, and further TOML `tail`
    /// (tables such as `[server.tls]`). Returns once the listener accepts connections.
    pub fn start(server_extra: &str, next_hop: &str, tail: &str) -> Gateway {
        Self::start_in(
            tempfile::tempdir().expect("tempdir"),
            server_extra,
            next_hop,
            tail,
        )
    }

    /// As [`Gateway::start`], in a directory prepared by the caller (certificates, users file).
    pub fn start_in(
        dir: tempfile::TempDir,
        server_extra: &str,
        next_hop: &str,
        tail: &str,
    ) -> Gateway {
        // Port 0: the gateway binds a port of the kernel's choice and logs it, so that no other
        // process can take the port between a test picking it and the gateway binding it.
        let config = dir.path().join("gateway.toml");
        let text = format!(
            "[server]\nlisten = [\"127.0.0.1:0\"]\nhostname = \"{HOSTNAME}\"\n{server_extra}\n\
             [relay]\nnext_hop = \"{next_hop}\"\ntls = \"off\"\nconnect_timeout = 10\ncommand_timeout = 60\n\
             [state]\ndir = \"{}\"\n{tail}\n",
            dir.path().join("state").display()
        );
        std::fs::write(&config, text).expect("write config");
        let log = dir.path().join("gateway.log");
        let logfile = std::fs::File::create(&log).expect("log file");
        let mut child = gateway_command()
            .arg("serve")
            .arg("--config")
            .arg(&config)
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(logfile.try_clone().expect("log file"))
            .stderr(logfile)
            .spawn()
            .expect("start cryptshare-gateway");
        let port = wait_for_listen_log(&mut child, &log);
        Gateway {
            process: Process { child },
            port,
            dir,
            config,
            log,
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn pid(&self) -> libc::pid_t {
        self.process.pid()
    }

    /// Send `signal` (e.g. `libc::SIGTERM`) to the gateway process.
    pub fn signal(&self, signal: i32) {
        self.process.signal(signal);
    }

    /// Wait (bounded) for the process to exit.
    pub fn wait_exit(&mut self) -> std::process::ExitStatus {
        self.process.wait_exit()
    }

    /// The embedded emulator's URL, from its log line (`… url=http://127.0.0.1:PORT …`).
    fn emulator_url(&self) -> Option<String> {
        let log = self.log();
        let line = log
            .lines()
            .find(|l| l.contains("embedded Cryptshare emulator running"))?;
        line.split_whitespace()
            .find_map(|w| w.strip_prefix("url="))
            .map(|u| u.trim_matches('"').to_owned())
    }

    /// Assert that every exchange of the embedded emulator so far is valid against
    /// `openapi-1.8.json` (requests included: the client is the gateway's). Nothing to check
    /// when the process has exited or the emulator never started.
    pub fn check_exchanges(&mut self) {
        if std::thread::panicking() || !matches!(self.process.child.try_wait(), Ok(None)) {
            return;
        }
        if let Some(url) = self.emulator_url() {
            crate::support::openapi::assert_remote_exchanges_valid(&url, true);
        }
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- gateway log ---\n{}", self.log());
        }
        self.check_exchanges();
    }
}

impl Dump {
    /// Split off the gateway's `Received:` header, check its form, and return the rest.
    pub fn after_our_received(&self, helo: &str, proto: &str, one_rcpt: Option<&str>) -> Vec<u8> {
        split_received(&self.message, "\n", helo, proto, one_rcpt)
    }
}

/// Check the gateway's `Received:` header at the start of `msg` (lines ending in `eol`) and
/// return what follows it. The header is exactly
/// `Received: from HELO ([127.0.0.1])` / `\tby HOST with PROTO id QID` / `\tfor <RCPT>; DATE`
/// (or `;` and `\tDATE` without a single recipient), DATE in RFC 2822 form.
pub fn split_received(
    msg: &[u8],
    eol: &str,
    helo: &str,
    proto: &str,
    one_rcpt: Option<&str>,
) -> Vec<u8> {
    let text = String::from_utf8_lossy(msg);
    let mut lines = text.split_inclusive(eol);
    let mut take = || {
        lines
            .next()
            .and_then(|l| l.strip_suffix(eol))
            .unwrap_or_else(|| panic!("truncated Received header in {text}"))
            .to_string()
    };
    let l1 = take();
    let l2 = take();
    let l3 = take();
    assert_eq!(l1, format!("Received: from {helo} ([127.0.0.1])"), "{text}");
    let by = format!("\tby {HOSTNAME} with {proto} id ");
    let id = l2
        .strip_prefix(&by)
        .unwrap_or_else(|| panic!("{l2:?} does not start with {by:?}"));
    let date = match one_rcpt {
        Some(r) => {
            assert!(id.chars().all(|c| c.is_ascii_alphanumeric()), "{l2:?}");
            l3.strip_prefix(&format!("\tfor <{r}>; "))
                .unwrap_or_else(|| panic!("{l3:?} lacks `for <{r}>;`"))
        }
        None => {
            let id = id
                .strip_suffix(';')
                .unwrap_or_else(|| panic!("{l2:?} lacks ';'"));
            assert!(id.chars().all(|c| c.is_ascii_alphanumeric()), "{l2:?}");
            l3.strip_prefix('\t').unwrap_or_else(|| panic!("{l3:?}"))
        }
    };
    chrono::DateTime::parse_from_rfc2822(date)
        .unwrap_or_else(|e| panic!("Received date {date:?}: {e}"));
    let header_len = l1.len() + l2.len() + l3.len() + 3 * eol.len();
    msg[header_len..].to_vec()
}

/// `message` (CRLF line ends) as smtp-sink writes it: LF line ends.
pub fn as_dumped(message: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(message.len());
    let mut i = 0;
    while i < message.len() {
        if message[i] == b'\r' && message.get(i + 1) == Some(&b'\n') {
            i += 1;
            continue;
        }
        out.push(message[i]);
        i += 1;
    }
    out
}

/// Byte comparison with a readable failure (first differing offset and the surroundings).
pub fn assert_bytes_eq(got: &[u8], want: &[u8], what: &str) {
    if got == want {
        return;
    }
    let at = got
        .iter()
        .zip(want)
        .position(|(a, b)| a != b)
        .unwrap_or(got.len().min(want.len()));
    let around = |b: &[u8]| {
        String::from_utf8_lossy(&b[at.saturating_sub(40)..(at + 40).min(b.len())]).into_owned()
    };
    panic!(
        "{what}: differs at byte {at} (got {} bytes, want {})\n got: {:?}\nwant: {:?}",
        got.len(),
        want.len(),
        around(got),
        around(want)
    );
}

/// A test message: CRLF line ends, a unique Subject (the marker to find its dump), lines that
/// need dot-stuffing, 8-bit text, long lines, and `size` bytes of body filler.
pub fn message(subject: &str, size: usize) -> Vec<u8> {
    let mut m = format!(
        "From: Sender <sender@example.org>\r\nTo: rcpt@example.net\r\nSubject: {subject}\r\n\
         Message-ID: <{subject}@e2e.test>\r\nMIME-Version: 1.0\r\n\
         Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n\
         .leading dot\r\n..two dots\r\n.\r\nGr\u{fc}\u{df}e, line after a lone dot\r\n\r\n"
    )
    .into_bytes();
    let mut n = 0;
    while m.len() < size {
        m.extend_from_slice(
            format!(
                "{n:06} {}\r\n",
                "abcdefghijklmnopqrstuvwxyz0123456789".repeat(2)
            )
            .as_bytes(),
        );
        n += 1;
    }
    m.extend_from_slice(b"-- \r\nend\r\n");
    m
}

/// A self-signed certificate for `localhost` and 127.0.0.1, written as PEM files into `dir`.
/// Returns (cert path, key path).
pub fn write_cert(dir: &Path) -> (PathBuf, PathBuf) {
    let ck =
        rcgen::generate_simple_self_signed(vec!["localhost".to_string(), "127.0.0.1".to_string()])
            .expect("rcgen");
    let cert = dir.join("cert.pem");
    let key = dir.join("key.pem");
    std::fs::write(&cert, ck.cert.pem()).expect("write cert");
    std::fs::write(&key, ck.signing_key.serialize_pem()).expect("write key");
    (cert, key)
}

/// `[server.tls]` for certificate files written by [`write_cert`].
pub fn tls_section(cert: &Path, key: &Path) -> String {
    format!(
        "[server.tls]\ncert = \"{}\"\nkey = \"{}\"\n",
        cert.display(),
        key.display()
    )
}
