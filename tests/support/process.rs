//! Processes: the real `cryptshare-gateway` binary and external tools, and the bounded waits
//! for them. Missing tools are failures, never skips: the panics name the package to install.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// Upper bound for anything the tests wait for (process start, a reply, a dump file to appear).
/// Generous: CI has 2 cores shared by parallel tests.
pub const WAIT: Duration = Duration::from_secs(60);
/// Interval between two polls of a condition that has no event to wait on (a port, a file).
const POLL: Duration = Duration::from_millis(10);

/// `cryptshare-gateway` as built for these tests, to be given its arguments.
pub fn gateway_command() -> Command {
    Command::new(env!("CARGO_BIN_EXE_cryptshare-gateway"))
}

/// A spawned child process: signalled by pid, killed (SIGKILL) and reaped on drop if it is still
/// running.
pub struct Process {
    pub child: Child,
}

impl Process {
    pub fn pid(&self) -> libc::pid_t {
        libc::pid_t::try_from(self.child.id()).expect("pid")
    }

    /// Send `signal` (e.g. `libc::SIGTERM`) to the process.
    pub fn signal(&self, signal: libc::c_int) {
        let pid = self.pid();
        // SAFETY: plain kill(2) on our own child, which has not been reaped yet.
        assert_eq!(
            unsafe { libc::kill(pid, signal) },
            0,
            "kill({pid}, {signal})"
        );
    }

    /// Wait (bounded, polling) for the process to exit.
    pub fn wait_exit(&mut self) -> ExitStatus {
        let child = &mut self.child;
        wait_until("the process to exit", || {
            child.try_wait().expect("try_wait")
        })
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

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

/// The first line a listener on `port` sends, or `None` when nothing (else) listens there yet.
pub fn greeting(port: u16) -> Option<String> {
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

/// Run `python3 -c script args…` with `input` on its stdin, to completion. `needs` names what
/// must be installed besides python3 (e.g. `pip install prometheus-client`).
pub fn python(script: &str, args: &[&str], input: &[u8], needs: &str) -> std::process::Output {
    let mut child = Command::new("python3")
        .arg("-c")
        .arg(script)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("python3 must be installed ({needs}): {e}"));
    child.stdin.take().unwrap().write_all(input).unwrap();
    child.wait_with_output().unwrap()
}
