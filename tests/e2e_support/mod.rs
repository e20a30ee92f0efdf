//! Shared pieces of the end-to-end tests: the real `cryptshare-gateway` binary started as an
//! operator would (config file in a temp dir), Postfix `smtp-sink` as a next-hop process, a
//! blocking raw SMTP client, and the parsing of smtp-sink's dump files.
//!
//! Missing tools are failures, never skips: the panics name the package to install.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Upper bound for anything the tests wait for (process start, a dump file to appear).
pub const WAIT: Duration = Duration::from_secs(60);
/// Interval between two polls of a condition that has no event to wait on (a port, a file).
const POLL: Duration = Duration::from_millis(10);

pub const HOSTNAME: &str = "gw.e2e.test";

/// A port that was free a moment ago (bound to port 0, then released for the process under test).
pub fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().expect("local addr").port()
}

/// Poll until `port` accepts connections; fail at once when `child` exits first.
pub fn wait_for_port(port: u16, child: &mut Child, what: &str, log: Option<&Path>) {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let deadline = Instant::now() + WAIT;
    loop {
        if let Ok(s) = TcpStream::connect_timeout(&addr, Duration::from_secs(1)) {
            // A free port lies in the ephemeral range, so a connect with nobody listening can
            // succeed as a TCP self-connect (source port = destination port). That is not the
            // process under test.
            if s.local_addr().ok() != s.peer_addr().ok() {
                return;
            }
        }
        if let Ok(Some(status)) = child.try_wait() {
            let log = log
                .and_then(|p| std::fs::read_to_string(p).ok())
                .unwrap_or_default();
            panic!("{what} exited ({status}) before listening on {addr}:\n{log}");
        }
        assert!(
            Instant::now() < deadline,
            "{what} did not listen on {addr} within {WAIT:?}"
        );
        std::thread::sleep(POLL);
    }
}

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

/// The first line a listener on `port` sends, or `None` when nothing (else) listens there yet.
fn greeting(port: u16) -> Option<String> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let s = TcpStream::connect_timeout(&addr, Duration::from_secs(1)).ok()?;
    // A self-connect (see `wait_for_port`) greets nobody.
    if s.local_addr().ok() == s.peer_addr().ok() {
        return None;
    }
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    let mut line = String::new();
    BufReader::new(s).read_line(&mut line).ok()?;
    Some(line)
}

/// Poll `f` until it returns `Some`, failing with `what` after [`WAIT`].
pub fn wait_until<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(POLL);
    }
}

/// A tool's path: from `PATH`, else `/usr/sbin` (Postfix's programs live there, and CI shells do
/// not always have it in `PATH`). Unfound, the bare name: spawning it then fails with its name.
pub fn tool(name: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin")])
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| PathBuf::from(name))
}

/// Run a tool to completion; a missing tool is a failure naming the package.
pub fn run(cmd: &mut Command, package: &str) -> std::process::Output {
    let name = format!("{:?}", cmd.get_program());
    cmd.stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {name} ({e}): apt-get install -y {package}"))
}

/// The gateway binary running `serve` on a free loopback port; killed when dropped.
pub struct Gateway {
    child: Child,
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
        let mut child = Command::new(env!("CARGO_BIN_EXE_cryptshare-gateway"))
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
            child,
            port,
            dir,
            config,
            log,
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Send `signal` (e.g. `libc::SIGTERM`) to the gateway process.
    pub fn signal(&self, signal: i32) {
        let pid = i32::try_from(self.child.id()).expect("pid");
        // SAFETY: plain kill(2) on our own child, which has not been reaped yet.
        assert_eq!(
            unsafe { libc::kill(pid, signal) },
            0,
            "kill({pid}, {signal})"
        );
    }

    /// Wait (bounded) for the process to exit.
    pub fn wait_exit(&mut self) -> std::process::ExitStatus {
        let child = &mut self.child;
        wait_until("the gateway to exit", || {
            child.try_wait().expect("try_wait")
        })
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("--- gateway log ---\n{}", self.log());
        }
    }
}

/// Postfix `smtp-sink` on a loopback port, dumping every transaction into its own file.
pub struct SmtpSink {
    child: Child,
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
            Some(SmtpSink { child, port, dir })
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

impl Drop for SmtpSink {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
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

/// Dot-stuff for DATA (the message ends with CRLF) and append the terminator.
pub fn dot_stuffed(message: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(message.len() + 16);
    let mut bol = true;
    for &b in message {
        if bol && b == b'.' {
            out.push(b'.');
        }
        out.push(b);
        bol = b == b'\n';
    }
    out.extend_from_slice(b".\r\n");
    out
}

/// A blocking SMTP client speaking raw commands, for what no tool does (BDAT, exact pipelining).
pub struct RawSmtp {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl RawSmtp {
    /// Connect and return the client with the greeting.
    pub fn connect(port: u16) -> (RawSmtp, String) {
        let s = TcpStream::connect(("127.0.0.1", port)).expect("connect to gateway");
        s.set_read_timeout(Some(WAIT)).expect("timeout");
        let mut c = RawSmtp {
            reader: BufReader::new(s.try_clone().expect("clone")),
            writer: s,
        };
        let g = c.reply();
        (c, g)
    }

    pub fn send(&mut self, bytes: &[u8]) {
        self.writer.write_all(bytes).expect("write to gateway");
    }

    /// One complete (possibly multi-line) reply, CRLFs included.
    pub fn reply(&mut self) -> String {
        let mut out = String::new();
        loop {
            let mut line = Vec::new();
            let n = self
                .reader
                .read_until(b'\n', &mut line)
                .expect("read reply");
            assert!(n > 0, "connection closed; so far: {out:?}");
            let line = String::from_utf8(line).expect("UTF-8 reply");
            let last = line.as_bytes().get(3) == Some(&b' ');
            out.push_str(&line);
            if last {
                return out;
            }
        }
    }

    pub fn cmd(&mut self, line: &str) -> String {
        self.send(format!("{line}\r\n").as_bytes());
        self.reply()
    }

    /// Expect the connection to be closed by the server.
    pub fn expect_eof(&mut self) {
        let mut rest = Vec::new();
        let _ = self.reader.read_to_end(&mut rest);
        assert!(rest.is_empty(), "unexpected data: {rest:?}");
    }
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
