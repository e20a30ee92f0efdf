//! Interop: a real Postfix instance (private config dir, queue in a temp dir, loopback only) relays
//! through the gateway binary, which relays into Postfix `smtp-sink`. Two deployments, exactly as
//! the README's "Putting it behind Postfix" describes them:
//!
//! * `relayhost = [127.0.0.1]:GATEWAY` — the gateway as Postfix's smart host;
//! * `content_filter = scan:[127.0.0.1]:GATEWAY` with the gateway relaying back into a Postfix
//!   re-injection listener (`-o content_filter=`, `receive_override_options=…`), from where Postfix
//!   delivers to its relayhost (here smtp-sink).
//!
//! Postfix talks to the gateway with STARTTLS (`smtp_tls_security_level = may`). The message that
//! arrives at smtp-sink must be the submitted bytes under the Received headers of each hop.
//!
//! Needs root (Postfix's master runs as root), the `postfix` package (postfix, smtp-sink) and swaks.

mod e2e_support;
mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

use e2e_support::*;

/// A private Postfix instance, stopped when dropped.
struct Postfix {
    dir: tempfile::TempDir,
    conf: PathBuf,
    port: u16,
}

impl Postfix {
    /// `main_extra` is appended to main.cf, `master_extra` to master.cf; the instance's own
    /// smtpd listens on the returned `port`.
    fn start(main_extra: &str, master_extra: &str) -> Postfix {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path();
        // Postfix daemons run as `postfix`: they must be able to reach their directories.
        chmod(root, 0o755);
        let conf = root.join("conf");
        let queue = root.join("queue");
        let data = root.join("data");
        for d in [&conf, &queue, &data] {
            std::fs::create_dir(d).expect("mkdir");
        }
        let out = run(Command::new("chown").arg("postfix").arg(&data), "coreutils");
        assert!(
            out.status.success(),
            "chown postfix {data:?} (is the postfix user there? apt-get install -y postfix): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let port = free_port();
        // The installation's own program and meta directories (distribution layout).
        let out = run(
            Command::new(tool("postconf")).args([
                "-d",
                "-h",
                "command_directory",
                "daemon_directory",
                "meta_directory",
                "shlib_directory",
            ]),
            "postfix",
        );
        let defaults = String::from_utf8_lossy(&out.stdout).into_owned();
        let dirs: Vec<&str> = defaults.lines().collect();
        assert!(
            out.status.success() && dirs.len() == 4,
            "postconf -d: {defaults}"
        );
        let main_cf = format!(
            "compatibility_level = 3.6\n\
             queue_directory = {queue}\n\
             data_directory = {data}\n\
             command_directory = {}\n\
             daemon_directory = {}\n\
             meta_directory = {}\n\
             shlib_directory = {}\n\
             mail_owner = postfix\n\
             setgid_group = postdrop\n\
             inet_interfaces = loopback-only\n\
             inet_protocols = ipv4\n\
             myhostname = postfix.e2e.test\n\
             mydomain = e2e.test\n\
             myorigin = e2e.test\n\
             mydestination =\n\
             local_recipient_maps =\n\
             alias_maps =\n\
             alias_database =\n\
             mynetworks = 127.0.0.0/8\n\
             smtpd_relay_restrictions = permit_mynetworks, reject\n\
             local_header_rewrite_clients =\n\
             disable_mime_output_conversion = yes\n\
             smtp_tls_security_level = may\n\
             maillog_file_prefixes = {root}\n\
             maillog_file = {root}/maillog\n\
             {main_extra}\n",
            dirs[0],
            dirs[1],
            dirs[2],
            dirs[3],
            queue = queue.display(),
            data = data.display(),
            root = root.display(),
        );
        std::fs::write(conf.join("main.cf"), main_cf).expect("main.cf");
        let master_cf =
            format!("127.0.0.1:{port} inet n - n - - smtpd\n{MASTER_CF}{master_extra}\n");
        std::fs::write(conf.join("master.cf"), master_cf).expect("master.cf");
        let pf = Postfix { dir, conf, port };
        let out = pf.postfix("check");
        assert!(out.status.success(), "postfix check failed:\n{}", pf.log());
        let out = pf.postfix("start");
        assert!(out.status.success(), "postfix start failed:\n{}", pf.log());
        // `postfix start` returns once master runs; its smtpd listener is then bound.
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], pf.port));
        wait_until("the Postfix smtpd listener", || {
            std::net::TcpStream::connect(addr).ok()
        });
        pf
    }

    fn postfix(&self, what: &str) -> std::process::Output {
        run(
            Command::new(tool("postfix"))
                .arg("-c")
                .arg(&self.conf)
                .arg(what),
            "postfix",
        )
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("maillog")).unwrap_or_default()
    }
}

impl Drop for Postfix {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- Postfix maillog ---\n{}", self.log());
        }
        let _ = self.postfix("stop");
        // Wait until master is gone before the temp dir (its queue) is removed.
        let pid = std::fs::read_to_string(self.dir.path().join("queue/pid/master.pid"))
            .ok()
            .and_then(|s| s.trim().parse::<i32>().ok());
        if let Some(pid) = pid {
            let deadline = std::time::Instant::now() + WAIT;
            // SAFETY: kill with signal 0 only checks whether the process exists.
            while unsafe { libc::kill(pid, 0) } == 0 && std::time::Instant::now() < deadline {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
        }
    }
}

/// The services a relay-only Postfix needs, none chrooted (the queue lives in a temp dir).
const MASTER_CF: &str = "\
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
tlsmgr    unix  -       -       n       1000?   1       tlsmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
";

fn chmod(p: &Path, mode: u32) {
    std::fs::set_permissions(p, std::os::unix::fs::PermissionsExt::from_mode(mode)).expect("chmod");
}

/// Submit `msg` (CRLF, ends with CRLF) with swaks; swaks adds the final CRLF "." CRLF itself.
fn submit(port: u16, msg: &[u8], to: &str) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("msg.eml");
    std::fs::write(&path, msg.strip_suffix(b"\r\n").expect("CRLF")).expect("write");
    let out = run(
        Command::new("swaks")
            .args(["--server", &format!("127.0.0.1:{port}")])
            .args([
                "--helo",
                "swaks.e2e.test",
                "--from",
                "sender@example.org",
                "--to",
                to,
            ])
            .arg("--data")
            .arg(format!("@{}", path.display()))
            .args(["--timeout", "60"]),
        "swaks",
    );
    let transcript = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "submission failed:\n{transcript}");
    assert!(
        transcript.contains("<-  250 2.0.0 Ok: queued as "),
        "{transcript}"
    );
}

/// Check a Postfix `Received:` header at the start of `msg` (LF line ends) and return the rest.
fn skip_postfix_received(msg: &[u8], helo: &str, rcpt: &str) -> Vec<u8> {
    let text = String::from_utf8_lossy(msg);
    let lines: Vec<&str> = text.splitn(4, '\n').collect();
    assert_eq!(lines.len(), 4, "{text}");
    assert_eq!(
        lines[0],
        format!("Received: from {helo} (localhost [127.0.0.1])")
    );
    assert!(
        lines[1].starts_with("\tby postfix.e2e.test (Postfix) with ESMTP id "),
        "{}",
        lines[1]
    );
    assert!(
        lines[2].starts_with(&format!("\tfor <{rcpt}>; ")),
        "{}",
        lines[2]
    );
    let len = lines[0].len() + lines[1].len() + lines[2].len() + 3;
    msg[len..].to_vec()
}

/// A message Postfix leaves alone: all the headers cleanup would otherwise add are there.
fn postfix_message(subject: &str) -> Vec<u8> {
    let mut m = b"Date: Fri, 27 Nov 2026 10:00:00 +0000\r\n".to_vec();
    m.extend_from_slice(&message(subject, 30_000));
    m
}

fn gateway_with_tls(next_hop: &str) -> Gateway {
    let dir = tempfile::tempdir().expect("tempdir");
    let (cert, key) = write_cert(dir.path());
    Gateway::start_in(dir, "", next_hop, &tls_section(&cert, &key))
}

#[test]
fn postfix_relays_through_the_gateway_as_relayhost() {
    let sink = SmtpSink::start(&[]);
    let gw = gateway_with_tls(&sink.next_hop());
    let pf = Postfix::start(&format!("relayhost = [127.0.0.1]:{}", gw.port), "");
    let msg = postfix_message("postfix-relayhost");
    submit(pf.port, &msg, "rcpt@example.net");

    let dump = sink.wait_dump("Subject: postfix-relayhost\n");
    // Postfix's ESMTP parameters pass through the gateway: BODY=8BITMIME (it saw 8-bit
    // content), ORCPT.
    assert_eq!(
        dump.trace_values("X-Mail-Args"),
        vec!["<sender@example.org> BODY=8BITMIME".to_string()]
    );
    assert_eq!(
        dump.trace_values("X-Rcpt-Args"),
        vec!["<rcpt@example.net> ORCPT=rfc822;rcpt@example.net".to_string()]
    );
    let rest = dump.after_our_received("postfix.e2e.test", "ESMTPS", Some("rcpt@example.net"));
    let rest = skip_postfix_received(&rest, "swaks.e2e.test", "rcpt@example.net");
    assert_bytes_eq(
        &rest,
        &as_dumped(&msg),
        "relayed by Postfix via the gateway",
    );
    assert_eq!(sink.dumps().len(), 1);
}

#[test]
fn postfix_content_filter_with_reinjection() {
    let sink = SmtpSink::start(&[]);
    let reinject = free_port();
    let gw = gateway_with_tls(&format!("127.0.0.1:{reinject}"));
    let pf = Postfix::start(
        &format!(
            "relayhost = [127.0.0.1]:{}\n\
             content_filter = scan:[127.0.0.1]:{}\n\
             receive_override_options = no_address_mappings",
            sink.port, gw.port
        ),
        &format!(
            "scan      unix  -       -       n       -       10      smtp\n\
             \x20 -o disable_mime_output_conversion=yes\n\
             \x20 -o smtp_generic_maps=\n\
             127.0.0.1:{reinject} inet n - n - 10 smtpd\n\
             \x20 -o content_filter=\n\
             \x20 -o receive_override_options=no_unknown_recipient_checks,no_header_body_checks,no_milters\n\
             \x20 -o smtpd_helo_restrictions=\n\
             \x20 -o smtpd_client_restrictions=\n\
             \x20 -o smtpd_sender_restrictions=\n\
             \x20 -o smtpd_relay_restrictions=\n\
             \x20 -o smtpd_recipient_restrictions=permit_mynetworks,reject\n\
             \x20 -o mynetworks=127.0.0.0/8\n"
        ),
    );
    let msg = postfix_message("postfix-content-filter");
    submit(pf.port, &msg, "rcpt@example.net");

    let dump = sink.wait_dump("Subject: postfix-content-filter\n");
    // Outermost first: Postfix after re-injection, the gateway, Postfix before the filter.
    let rest = skip_postfix_received(&dump.message, "gw.e2e.test", "rcpt@example.net");
    let rest = split_received(
        &rest,
        "\n",
        "postfix.e2e.test",
        "ESMTPS",
        Some("rcpt@example.net"),
    );
    let rest = skip_postfix_received(&rest, "swaks.e2e.test", "rcpt@example.net");
    assert_bytes_eq(&rest, &as_dumped(&msg), "content_filter round trip");
    assert_eq!(sink.dumps().len(), 1);
}

/// Issue 12, item 8: the gateway relays into a Postfix smtpd that trusts it for XFORWARD
/// (`smtpd_authorized_xforward_hosts`); Postfix's log names the gateway's client (here
/// 127.0.0.4) besides the gateway's own connection from 127.0.0.1 (Postfix 3.7 logs the real
/// peer as `client=` and the forwarded one as `orig_client=`; its Received header keeps the
/// real peer).
#[test]
fn postfix_logs_the_original_client_from_xforward() {
    let sink = SmtpSink::start(&[]);
    let pf = Postfix::start(
        &format!(
            "relayhost = [127.0.0.1]:{}\nsmtpd_authorized_xforward_hosts = 127.0.0.0/8",
            sink.port
        ),
        "",
    );
    let gw = Gateway::start("", &format!("127.0.0.1:{}", pf.port), "");
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("msg.eml");
    let msg = postfix_message("postfix-xforward");
    std::fs::write(&path, msg.strip_suffix(b"\r\n").expect("CRLF")).expect("write");
    let out = run(
        Command::new("swaks")
            .args(["--server", &format!("127.0.0.1:{}", gw.port)])
            .args(["--local-interface", "127.0.0.4"])
            .args(["--helo", "client.xforward.test"])
            .args(["--from", "sender@example.org", "--to", "rcpt@example.net"])
            .arg("--data")
            .arg(format!("@{}", path.display()))
            .args(["--timeout", "60"]),
        "swaks",
    );
    let transcript = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "submission failed:\n{transcript}");
    sink.wait_dump("Subject: postfix-xforward\n");
    assert_eq!(sink.dumps().len(), 1);
    let log = pf.log();
    let line = log
        .lines()
        .find(|l| l.contains("postfix/smtpd") && l.contains(": client="))
        .unwrap_or_else(|| panic!("no smtpd client= line in:\n{log}"));
    assert!(
        line.ends_with(": client=localhost[127.0.0.1], orig_client=unknown[127.0.0.4]"),
        "{line}"
    );
}
