//! systemd socket activation, run against the real `cryptshare-gateway serve` binary: the test
//! plays the service manager. It binds the listening sockets itself, passes them as fds 3, 4, …
//! and sets `LISTEN_FDS` / `LISTEN_FDNAMES`; `LISTEN_PID` must be the gateway's own pid, which a
//! `sh` wrapper sets before it `exec`s the gateway (the pid survives the exec).

mod ops_e2e_support;
mod support;

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use ops_e2e_support::*;
use rustls::pki_types::{CertificateDer, ServerName};

const FROM: &str = "alice@example.org";
const TO: &str = "bob@partner.example";
const BIN: &str = env!("CARGO_BIN_EXE_cryptshare-gateway");

/// At most this many fds are passed (pre_exec must not allocate).
const MAX_FDS: usize = 4;

/// How the child learns that the fds are meant for it.
enum ListenPid {
    /// `LISTEN_PID` = the gateway's pid (a `sh` wrapper exports `$$`, then execs the gateway).
    Own,
    /// `LISTEN_PID` = this pid, which is not the gateway's.
    Other(u32),
}

/// A gateway config (see `write_config_with`) with `[server] listen` set to `listen`.
fn config(dir: &Path, listen: SocketAddr, server_extra: &str) -> PathBuf {
    let path = write_config_with(dir, HUGE, server_extra, "");
    let text = std::fs::read_to_string(&path).unwrap();
    let line = r#"listen = ["127.0.0.1:0"]"#;
    assert!(
        text.contains(line),
        "write_config_with changed its listen line"
    );
    let replaced = text.replacen(line, &format!(r#"listen = ["{listen}"]"#), 1);
    std::fs::write(&path, replaced).unwrap();
    path
}

/// Start `serve` with `fds` as fds 3, 4, … and `LISTEN_FDS` set to their number.
fn start(
    dir: tempfile::TempDir,
    config: PathBuf,
    fds: &[RawFd],
    names: Option<&str>,
    pid: ListenPid,
) -> Gateway {
    start_via(&[BIN], dir, config, fds, names, pid)
}

/// [`start`], with `program` (the gateway binary, or a launcher and its arguments up to the
/// gateway binary) run in place of the gateway binary.
fn start_via(
    program: &[&str],
    dir: tempfile::TempDir,
    config: PathBuf,
    fds: &[RawFd],
    names: Option<&str>,
    pid: ListenPid,
) -> Gateway {
    assert!(fds.len() <= MAX_FDS);
    let mut cmd = match pid {
        ListenPid::Own => {
            let mut c = Command::new("/bin/sh");
            c.args(["-c", r#"LISTEN_PID=$$; export LISTEN_PID; exec "$0" "$@""#]);
            c.args(program);
            c
        }
        ListenPid::Other(p) => {
            let mut c = Command::new(program[0]);
            c.args(&program[1..]);
            c.env("LISTEN_PID", p.to_string());
            c
        }
    };
    cmd.arg("serve").arg("--config").arg(&config);
    for k in [
        "RUST_LOG",
        "NOTIFY_SOCKET",
        "WATCHDOG_USEC",
        "JOURNAL_STREAM",
        "LISTEN_FDNAMES",
    ] {
        cmd.env_remove(k);
    }
    cmd.env("LISTEN_FDS", fds.len().to_string());
    if let Some(n) = names {
        cmd.env("LISTEN_FDNAMES", n);
    }
    let mut src = [-1; MAX_FDS];
    src[..fds.len()].copy_from_slice(fds);
    let n = fds.len();
    // SAFETY: the closure only calls fcntl, dup2 and close (async-signal-safe) and does not
    // allocate.
    unsafe {
        cmd.pre_exec(move || pass_fds(&src[..n]));
    }
    Gateway::spawn(cmd, dir, config, LogFormat::Human)
}

/// In the child: put `fds` on 3, 4, … without close-on-exec. Every source first moves out of
/// that range, since one may already sit on a target number.
fn pass_fds(fds: &[RawFd]) -> io::Result<()> {
    let mut high = [-1; MAX_FDS];
    for (i, &fd) in fds.iter().enumerate() {
        // SAFETY: plain fcntl on an fd of this process.
        high[i] = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 100) };
        if high[i] < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    for (i, &h) in high[..fds.len()].iter().enumerate() {
        // SAFETY: as above; dup2 leaves FD_CLOEXEC clear on the new fd.
        if unsafe { libc::dup2(h, 3 + i as RawFd) } < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `h` is our own duplicate.
        unsafe { libc::close(h) };
    }
    Ok(())
}

/// Wait until the start-up log is complete: the metrics endpoint is logged after every
/// listener.
fn wait_started(gw: &mut Gateway) {
    let l = gw.wait_log("metrics endpoint ready");
    gw.metrics = gw.field(&l, "listen").parse().unwrap();
}

fn lines_with<'a>(gw: &'a Gateway, needle: &str) -> Vec<&'a String> {
    gw.lines.iter().filter(|l| l.contains(needle)).collect()
}

/// SMTP over any stream (plain or TLS), reply by reply.
struct Client<S: Read + Write> {
    s: BufReader<S>,
}

impl<S: Read + Write> Client<S> {
    /// One reply, its lines joined with `\n`, CRLF stripped.
    fn reply(&mut self) -> String {
        let mut lines = Vec::new();
        loop {
            let mut line = String::new();
            let n = self.s.read_line(&mut line).expect("reply within WAIT");
            assert!(n > 0, "connection closed; got so far: {lines:?}");
            assert!(line.ends_with("\r\n"), "reply line without CRLF: {line:?}");
            let line = line.trim_end_matches("\r\n").to_string();
            let more = line.as_bytes().get(3) == Some(&b'-');
            lines.push(line);
            if !more {
                return lines.join("\n");
            }
        }
    }

    fn send(&mut self, bytes: &[u8]) {
        let w = self.s.get_mut();
        w.write_all(bytes).unwrap();
        w.flush().unwrap();
    }

    fn cmd(&mut self, line: &str) -> String {
        self.send(format!("{line}\r\n").as_bytes());
        self.reply()
    }
}

/// One whole transaction with exact replies; the message must arrive unchanged in the outbox.
fn transaction<S: Read + Write>(gw: &Gateway, stream: S, id: &str, tls: bool) {
    let mut c = Client {
        s: BufReader::new(stream),
    };
    assert_eq!(
        c.reply(),
        format!("220 {HOSTNAME} ESMTP cryptshare-gateway")
    );
    let ehlo = c.cmd("EHLO client.ops.test");
    assert!(ehlo.starts_with(&format!("250-{HOSTNAME}\n")), "{ehlo}");
    // STARTTLS is offered on plain connections when TLS is configured, never inside TLS.
    if tls {
        assert!(!ehlo.contains("STARTTLS"), "{ehlo}");
    }
    assert_eq!(c.cmd(&format!("MAIL FROM:<{FROM}>")), "250 2.1.0 Sender OK");
    assert_eq!(c.cmd(&format!("RCPT TO:<{TO}>")), "250 2.1.5 Recipient OK");
    assert_eq!(c.cmd("DATA"), "354 End data with <CR><LF>.<CR><LF>");
    let body = message(id, ATTACHMENT_SIZE);
    c.send(&body);
    c.send(b".\r\n");
    let r = c.reply();
    assert!(r.starts_with("250 2.0.0 OK, relayed (maildir "), "{r}");
    assert_eq!(
        c.cmd("QUIT"),
        format!("221 2.0.0 {HOSTNAME} closing connection")
    );
    assert!(delivered(gw, id).ends_with(&body), "{id} was changed");
}

fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    s
}

/// A self-signed certificate for `localhost` in `dir`: the `[server.tls]` section and a client
/// config that trusts it.
fn tls_setup(dir: &Path) -> (String, Arc<rustls::ClientConfig>) {
    cryptshare_gateway::install_crypto_provider();
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert, ck.cert.pem()).unwrap();
    std::fs::write(&key, ck.signing_key.serialize_pem()).unwrap();
    let section = format!(
        "\n[server.tls]\ncert = \"{}\"\nkey = \"{}\"\n",
        cert.display(),
        key.display()
    );
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from(ck.cert.der().to_vec()))
        .unwrap();
    let client = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    (section, Arc::new(client))
}

fn tls_connect(
    addr: SocketAddr,
    client: &Arc<rustls::ClientConfig>,
) -> rustls::StreamOwned<rustls::ClientConnection, TcpStream> {
    let name = ServerName::try_from("localhost").unwrap();
    let conn = rustls::ClientConnection::new(client.clone(), name).unwrap();
    rustls::StreamOwned::new(conn, connect(addr))
}

/// The `using socket passed by systemd` lines: (fd, address, role), in fd order.
fn inherited_lines(gw: &Gateway) -> Vec<(String, String, String)> {
    lines_with(gw, "using socket passed by systemd")
        .into_iter()
        .map(|l| {
            (
                gw.field(l, "fd"),
                gw.field(l, "listen"),
                gw.field(l, "role"),
            )
        })
        .collect()
}

#[test]
fn serves_smtp_on_the_inherited_socket_and_binds_nothing_itself() {
    let dir = tempfile::tempdir().unwrap();
    // The configured address is held by this test: had the gateway tried to bind it, the start
    // would have failed with "server.listen: cannot listen on".
    let held = TcpListener::bind("127.0.0.1:0").unwrap();
    let inherited = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = inherited.local_addr().unwrap();
    let cfg = config(dir.path(), held.local_addr().unwrap(), "");
    let mut gw = start(
        dir,
        cfg,
        &[inherited.as_raw_fd()],
        Some("smtp"),
        ListenPid::Own,
    );
    wait_started(&mut gw);
    assert_eq!(
        inherited_lines(&gw),
        vec![("3".to_string(), addr.to_string(), "smtp".to_string())],
        "{}",
        gw.log()
    );
    let ready = lines_with(&gw, "SMTP listener ready");
    assert_eq!(ready.len(), 1, "{}", gw.log());
    assert_eq!(gw.field(ready[0], "listen"), addr.to_string());
    assert!(lines_with(&gw, "SMTPS").is_empty(), "{}", gw.log());
    assert_eq!(
        lines_with(
            &gw,
            "socket activation: server.listen and server.listen_tls are not bound"
        )
        .len(),
        1,
        "{}",
        gw.log()
    );
    transaction(&gw, connect(addr), "sockact-plain", false);
    // Still served after the first connection (the socket is the gateway's listener, not a
    // one-shot): a second transaction.
    transaction(&gw, connect(addr), "sockact-plain-2", false);

    // A reload with another `listen` (unused under socket activation) and another
    // `max_connections` (restart-only): the warning names only the latter.
    let text = std::fs::read_to_string(&gw.config).unwrap();
    let changed = text
        .replacen(
            &format!(r#"listen = ["{}"]"#, held.local_addr().unwrap()),
            r#"listen = ["127.0.0.1:1"]"#,
            1,
        )
        .replacen("[server]\n", "[server]\nmax_connections = 7\n", 1);
    assert!(changed.contains("127.0.0.1:1") && changed.contains("max_connections = 7"));
    let tmp = gw.config.with_extension("new");
    std::fs::write(&tmp, changed).unwrap();
    std::fs::rename(&tmp, &gw.config).unwrap();
    gw.signal(libc::SIGHUP);
    gw.wait_log("configuration reloaded");
    let warning = gw.wait_log("take effect at the next restart");
    assert_eq!(gw.field(&warning, "keys"), "server.max_connections");
    transaction(&gw, connect(addr), "sockact-plain-3", false);
}

#[test]
fn proxy_protocol_on_an_inherited_socket() {
    // The inherited socket goes through the same accept loop: a connection from the proxy
    // (127.0.0.1) starts with a PROXY header naming the client, which alone may relay.
    let dir = tempfile::tempdir().unwrap();
    let held = TcpListener::bind("127.0.0.1:0").unwrap();
    let inherited = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = inherited.local_addr().unwrap();
    let cfg = config(
        dir.path(),
        held.local_addr().unwrap(),
        "client_networks = [\"127.0.0.4/32\"]\nproxy_protocol = true\n\
         proxy_networks = [\"127.0.0.1/32\"]\n",
    );
    let mut gw = start(
        dir,
        cfg,
        &[inherited.as_raw_fd()],
        Some("smtp"),
        ListenPid::Own,
    );
    wait_started(&mut gw);
    let mut s = connect(addr);
    s.write_all(b"PROXY TCP4 127.0.0.4 127.0.0.1 40000 25\r\n")
        .unwrap();
    transaction(&gw, s, "sockact-proxy", false);
    // Without the header: closed, no greeting.
    let mut s = connect(addr);
    s.write_all(b"EHLO client.ops.test\r\n").unwrap();
    // Closed with our unread bytes in its buffer, the gateway's kernel may answer with a reset.
    let mut rest = Vec::new();
    match s.read_to_end(&mut rest) {
        Ok(_) => {}
        Err(e) => assert_eq!(e.kind(), io::ErrorKind::ConnectionReset, "{e}"),
    }
    assert_eq!(rest, b"", "no greeting without a PROXY header");
    gw.wait_log("connection from a proxy closed: no valid PROXY header");
}

#[test]
fn a_socket_named_smtps_serves_implicit_tls() {
    let dir = tempfile::tempdir().unwrap();
    let (tls, client) = tls_setup(dir.path());
    let held = TcpListener::bind("127.0.0.1:0").unwrap();
    let plain = TcpListener::bind("127.0.0.1:0").unwrap();
    let smtps = TcpListener::bind("127.0.0.1:0").unwrap();
    let (plain_addr, smtps_addr) = (plain.local_addr().unwrap(), smtps.local_addr().unwrap());
    let cfg = config(dir.path(), held.local_addr().unwrap(), &tls);
    let mut gw = start(
        dir,
        cfg,
        &[plain.as_raw_fd(), smtps.as_raw_fd()],
        Some("smtp:smtps"),
        ListenPid::Own,
    );
    wait_started(&mut gw);
    assert_eq!(
        inherited_lines(&gw),
        vec![
            ("3".to_string(), plain_addr.to_string(), "smtp".to_string()),
            ("4".to_string(), smtps_addr.to_string(), "smtps".to_string()),
        ],
        "{}",
        gw.log()
    );
    let tls_ready = lines_with(&gw, "SMTPS (implicit TLS) listener ready");
    assert_eq!(tls_ready.len(), 1, "{}", gw.log());
    assert_eq!(gw.field(tls_ready[0], "listen"), smtps_addr.to_string());
    transaction(&gw, tls_connect(smtps_addr, &client), "sockact-smtps", true);
    // The other socket stays plain SMTP, with STARTTLS on offer.
    let mut c = Client {
        s: BufReader::new(connect(plain_addr)),
    };
    assert_eq!(
        c.reply(),
        format!("220 {HOSTNAME} ESMTP cryptshare-gateway")
    );
    let ehlo = c.cmd("EHLO client.ops.test");
    assert!(ehlo.contains("\n250-STARTTLS\n"), "{ehlo}");
}

#[test]
fn a_socket_on_a_listen_tls_address_serves_implicit_tls_without_a_name() {
    let dir = tempfile::tempdir().unwrap();
    let (tls, client) = tls_setup(dir.path());
    let held = TcpListener::bind("127.0.0.1:0").unwrap();
    let smtps = TcpListener::bind("127.0.0.1:0").unwrap();
    let smtps_addr = smtps.local_addr().unwrap();
    let server_extra = format!("listen_tls = [\"{smtps_addr}\"]\n{tls}");
    let cfg = config(dir.path(), held.local_addr().unwrap(), &server_extra);
    let mut gw = start(dir, cfg, &[smtps.as_raw_fd()], None, ListenPid::Own);
    wait_started(&mut gw);
    assert_eq!(
        inherited_lines(&gw),
        vec![("3".to_string(), smtps_addr.to_string(), "smtps".to_string())],
        "{}",
        gw.log()
    );
    assert!(
        lines_with(&gw, "SMTP listener ready").is_empty(),
        "{}",
        gw.log()
    );
    transaction(
        &gw,
        tls_connect(smtps_addr, &client),
        "sockact-tls-addr",
        true,
    );
}

#[test]
fn fds_for_another_process_are_ignored() {
    let dir = tempfile::tempdir().unwrap();
    let inherited = TcpListener::bind("127.0.0.1:0").unwrap();
    let cfg = config(dir.path(), "127.0.0.1:0".parse().unwrap(), "");
    // pid 1 is never the gateway's.
    let mut gw = start(
        dir,
        cfg,
        &[inherited.as_raw_fd()],
        Some("smtp"),
        ListenPid::Other(1),
    );
    let l = gw.wait_log("SMTP listener ready");
    let bound: SocketAddr = gw.field(&l, "listen").parse().unwrap();
    wait_started(&mut gw);
    assert_ne!(bound, inherited.local_addr().unwrap());
    assert!(inherited_lines(&gw).is_empty(), "{}", gw.log());
    assert!(
        lines_with(&gw, "socket activation").is_empty(),
        "{}",
        gw.log()
    );
    transaction(&gw, connect(bound), "sockact-other-pid", false);
}

/// systemd's own implementation of the protocol: `systemd-socket-activate` (from the systemd
/// package) gets the sockets, waits for the first connection, then execs the gateway with
/// `LISTEN_PID`, `LISTEN_FDS` and `LISTEN_FDNAMES` set the way the service manager sets them.
#[test]
fn systemd_socket_activate_starts_the_gateway_on_the_first_connection() {
    let tool = "systemd-socket-activate";
    let out = Command::new(tool)
        .arg("--version")
        .output()
        .unwrap_or_else(|e| panic!("{tool}: {e} (apt-get install -y systemd)"));
    assert!(out.status.success(), "{tool} --version: {out:?}");
    let dir = tempfile::tempdir().unwrap();
    let (tls, client) = tls_setup(dir.path());
    let held = TcpListener::bind("127.0.0.1:0").unwrap();
    let plain = TcpListener::bind("127.0.0.1:0").unwrap();
    let smtps = TcpListener::bind("127.0.0.1:0").unwrap();
    let (plain_addr, smtps_addr) = (plain.local_addr().unwrap(), smtps.local_addr().unwrap());
    let cfg = config(dir.path(), held.local_addr().unwrap(), &tls);
    let mut gw = start_via(
        &[tool, "--fdname=smtp:smtps", BIN],
        dir,
        cfg,
        &[plain.as_raw_fd(), smtps.as_raw_fd()],
        None,
        ListenPid::Own,
    );
    // This connection is what starts the gateway: it waits in the backlog meanwhile.
    transaction(&gw, connect(plain_addr), "sockact-ssa-plain", false);
    gw.wait_log("Communication attempt on fd 3");
    wait_started(&mut gw);
    assert_eq!(
        inherited_lines(&gw),
        vec![
            ("3".to_string(), plain_addr.to_string(), "smtp".to_string()),
            ("4".to_string(), smtps_addr.to_string(), "smtps".to_string()),
        ],
        "{}",
        gw.log()
    );
    transaction(
        &gw,
        tls_connect(smtps_addr, &client),
        "sockact-ssa-tls",
        true,
    );
}

/// Start with `fds` passed for the gateway's pid; it must exit with status 1, and print
/// `cryptshare-gateway: {message}`.
fn assert_refused(fds: &[RawFd], names: Option<&str>, message: &str) {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), "127.0.0.1:0".parse().unwrap(), "");
    let mut gw = start(dir, cfg, fds, names, ListenPid::Own);
    let status = gw.wait_exit();
    assert_eq!(status.code(), Some(1), "{}", gw.log());
    let want = format!("cryptshare-gateway: {message}");
    assert!(
        gw.lines.iter().any(|l| l == &want),
        "no line {want:?} in:\n{}",
        gw.log()
    );
    assert!(lines_with(&gw, "listener ready").is_empty(), "{}", gw.log());
}

#[test]
fn a_file_as_fd_3_is_a_start_up_error() {
    let file = tempfile::tempfile().unwrap();
    assert_refused(
        &[file.as_raw_fd()],
        None,
        "socket activation: inherited fd 3 is not a listening TCP socket: \
         Socket operation on non-socket (os error 88)",
    );
}

#[test]
fn a_udp_socket_as_fd_4_is_a_start_up_error() {
    let tcp = TcpListener::bind("127.0.0.1:0").unwrap();
    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    assert_refused(
        &[tcp.as_raw_fd(), udp.as_raw_fd()],
        None,
        &format!(
            "socket activation: inherited fd 4 is not a listening TCP socket: socket type {}, not a stream socket",
            libc::SOCK_DGRAM
        ),
    );
}

#[test]
fn a_connected_tcp_socket_is_a_start_up_error() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let stream = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    assert_refused(
        &[stream.as_raw_fd()],
        None,
        "socket activation: inherited fd 3 is not a listening TCP socket: the socket is not listening",
    );
}

#[test]
fn an_smtps_socket_without_tls_configured_is_a_start_up_error() {
    let smtps = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = smtps.local_addr().unwrap();
    assert_refused(
        &[smtps.as_raw_fd()],
        Some("smtps"),
        &format!("inherited fd 3 ({addr}) serves implicit TLS, which needs [server.tls]"),
    );
}
