//! `check-config --online` (issue 11): the real `cryptshare-gateway` binary against the real
//! `cryptshare-sim` binary, as an operator runs it before a reload. Exact exit codes and output
//! lines; the emulator's exchanges (the gateway client's requests, the emulator's answers) are
//! checked against `openapi-1.8.json` after each run.

mod support;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

use support::openapi;

const GATEWAY: &str = env!("CARGO_BIN_EXE_cryptshare-gateway");
const SIM: &str = env!("CARGO_BIN_EXE_cryptshare-sim");
const CLIENT_ID: &str = "OpsCheckOnline0123456789abcdefghijklmnopqrstuvwxyzABCDEFGH";

/// A `cryptshare-sim` process on 127.0.0.1:0; killed on drop.
struct Sim {
    child: Child,
    url: String,
}

impl Sim {
    /// Start with `args` (strictness flags, `--policy …`) and wait for its `listening on URL`.
    fn start(data: &Path, args: &[&str]) -> Sim {
        let mut child = Command::new(SIM)
            .args(["--listen", "127.0.0.1:0", "--data"])
            .arg(data)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn cryptshare-sim");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let url = line
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("cryptshare-sim printed {line:?}"))
            .to_owned();
        Sim { child, url }
    }

    /// Every API call so far; panics unless each is valid against `openapi-1.8.json`,
    /// request bodies included.
    fn exchanges(&self) -> Vec<cryptshare_gateway::sim::SimExchange> {
        let ex = openapi::fetch_exchanges_blocking(&self.url);
        openapi::assert_exchanges_valid(&ex);
        ex
    }

    /// (method, path, status) of [`Sim::exchanges`].
    fn calls(&self) -> Vec<(String, String, u16)> {
        self.exchanges()
            .into_iter()
            .map(|e| (e.method, e.path, e.status))
            .collect()
    }

    /// SIGTERM, and wait for the clean exit: nothing listens on its port afterwards.
    fn stop(mut self) {
        let pid = libc::pid_t::try_from(self.child.id()).unwrap();
        // SAFETY: kill(2) on our own child, not reaped yet.
        assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
        assert!(self.child.wait().unwrap().success());
    }
}

impl Drop for Sim {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// `gateway.toml` in `dir` for the server at `url` with one `[[policy]]` named `org` for
/// `*@example.org`, whose further keys are `rule`.
fn config(dir: &Path, url: &str, rule: &str) {
    std::fs::write(
        dir.join("gateway.toml"),
        format!(
            "[server]\nlisten = [\"127.0.0.1:0\"]\n[relay]\nnext_hop = \"127.0.0.1:10026\"\n\
             [state]\ndir = \"{state}\"\n\
             [cryptshare]\nurl = \"{url}\"\nclient_id = \"{CLIENT_ID}\"\n\
             [[policy]]\nname = \"org\"\nsenders = [\"*@example.org\"]\nthreshold = 1024\n{rule}",
            state = dir.join("state").display()
        ),
    )
    .unwrap();
}

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

/// `check-config --online --config DIR/gateway.toml` plus `args`; DIR replaced by `DIR` in
/// the output.
fn check_online(dir: &Path, args: &[&str]) -> Run {
    let out = Command::new(GATEWAY)
        .args(["check-config", "--online", "--config"])
        .arg(dir.join("gateway.toml"))
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .expect("run cryptshare-gateway");
    let d = dir.display().to_string();
    Run {
        code: out.status.code().expect("exit code"),
        stdout: String::from_utf8_lossy(&out.stdout).replace(&d, "DIR"),
        stderr: String::from_utf8_lossy(&out.stderr).replace(&d, "DIR"),
    }
}

/// The calls of one check for `sender`: verification status, token, transfer policy.
fn calls(sender: &str) -> Vec<(String, String, u16)> {
    [
        "GET verification",
        "POST verification/token",
        "POST transfer-policy",
    ]
    .iter()
    .map(|c| {
        let (method, path) = c.split_once(' ').unwrap();
        (method.into(), format!("/api/users/{sender}/{path}"), 200)
    })
    .collect()
}

/// A permissive server and a rule within its policy: exit 0, one line naming the API checked,
/// nothing on stderr. The rule's first sender pattern made concrete is the test sender.
#[test]
fn a_permissive_server_passes_with_one_ok_line() {
    let dir = tempfile::tempdir().unwrap();
    let sim = Sim::start(&dir.path().join("sim"), &[]);
    config(
        dir.path(),
        &sim.url,
        "password_mode = \"generated\"\nexpiration_days = 7\n",
    );
    let r = check_online(dir.path(), &[]);
    assert_eq!(
        (r.code, r.stdout.as_str(), r.stderr.as_str()),
        (
            0,
            format!("DIR/gateway.toml: OK (checked against {}/api)\n", sim.url).as_str(),
            ""
        )
    );
    assert_eq!(sim.calls(), calls("check-config@example.org"));
    // Without --recipient the test sender sends to itself.
    assert_eq!(
        sim.exchanges()[2].request,
        Some(serde_json::json!({"recipients": ["check-config@example.org"]}))
    );

    // A setting the server caps is a warning only: still exit 0.
    config(
        dir.path(),
        &sim.url,
        "password_mode = \"none\"\nexpiration_days = 60\n",
    );
    let r = check_online(dir.path(), &["--sender", "ann@example.org"]);
    assert_eq!(
        (r.code, r.stdout.as_str(), r.stderr.as_str()),
        (
            0,
            format!("DIR/gateway.toml: OK (checked against {}/api)\n", sim.url).as_str(),
            "DIR/gateway.toml: warning: policy[0].expiration_days: 60 exceeds what the server \
             allows (30 days): transfers expire after 29 days\n"
        )
    );
    let all = sim.calls();
    assert_eq!(all[3..], calls("ann@example.org")[..]);
    sim.stop();
}

/// A locked-down server whose policy forbids the rule's password mode: exit 2, the error
/// names the policy and the key (and the test sender), then one warning per setting of the
/// rule that differs from what the server decides itself; nothing on stdout.
#[test]
fn a_password_mode_the_server_forbids_exits_2_naming_the_policy_and_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let sim = Sim::start(
        &dir.path().join("sim"),
        &[
            "--locked-down",
            "--policy",
            r#"{"allowed_password_modes":["MANUAL","NONE"]}"#,
        ],
    );
    config(
        dir.path(),
        &sim.url,
        "password_mode = \"generated\"\nexpiration_days = 7\nshow_file_names = false\n",
    );
    let r = check_online(dir.path(), &[]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert_eq!(r.stdout, "");
    assert_eq!(
        r.stderr.lines().collect::<Vec<_>>(),
        [
            "DIR/gateway.toml: error: policy[0].password_mode: \"generated\" is not allowed by the \
             Cryptshare server's policy (allowed: MANUAL, NONE; MANUAL needs a person to type the \
             password and is not supported) (sender check-config@example.org)",
            "DIR/gateway.toml: warning: policy[0].show_file_names: false has no effect: the server \
             does not let clients change showFileNames (server default true)",
            "DIR/gateway.toml: warning: policy[0].show_zip_file_content: false has no effect: the \
             server does not let clients change showZipFileContent (server default true)",
            "DIR/gateway.toml: warning: policy[0].download_notifications: false has no effect: the \
             server does not let clients change sendDownloadNotifications (server default true)",
            "DIR/gateway.toml: warning: policy[0].notify_recipients: the server does not let \
             clients edit the recipient notification: recipients get its default text, not the \
             message's subject and text",
        ]
    );
    assert_eq!(sim.calls(), calls("check-config@example.org"));
    sim.stop();

    // The locked-down server with GENERATED only, and a rule asking for no password but
    // otherwise matching the server's defaults (no warnings): the gateway would send GENERATED,
    // which is not what the operator asked for, so it is an error too.
    let sim = Sim::start(&dir.path().join("sim2"), &["--locked-down"]);
    config(
        dir.path(),
        &sim.url,
        "password_mode = \"none\"\nexpiration_days = 7\nshow_zip_file_content = true\n\
         download_notifications = true\nnotify_recipients = false\n",
    );
    let r = check_online(dir.path(), &[]);
    assert_eq!(
        (r.code, r.stdout.as_str(), r.stderr.as_str()),
        (
            2,
            "",
            "DIR/gateway.toml: error: policy[0].password_mode: \"none\" is not allowed by the \
             Cryptshare server's policy for check-config@example.org (allowed: GENERATED); \
             transfers get GENERATED\n"
        )
    );
    sim.stop();
}

/// A recipient the server's policy refuses (`--recipient`): exit 2 on `senders`.
#[test]
fn a_refused_test_recipient_exits_2_on_senders() {
    let dir = tempfile::tempdir().unwrap();
    let sim = Sim::start(
        &dir.path().join("sim"),
        &["--refuse-recipient", "*@blocked.test"],
    );
    config(dir.path(), &sim.url, "expiration_days = 7\n");
    let r = check_online(
        dir.path(),
        &[
            "--sender",
            "ann@example.org",
            "--recipient",
            "bob@blocked.test",
        ],
    );
    assert_eq!(
        (r.code, r.stdout.as_str(), r.stderr.as_str()),
        (
            2,
            "",
            "DIR/gateway.toml: error: policy[0].senders: the Cryptshare server's policy refuses \
             sender ann@example.org\n"
        )
    );
    assert_eq!(sim.calls(), calls("ann@example.org"));
    assert_eq!(
        sim.exchanges()[2].request,
        Some(serde_json::json!({"recipients": ["bob@blocked.test"]}))
    );
    sim.stop();
}

/// The server is not there (the emulator stopped, its port closed): exit 2 with the connect
/// error on `cryptshare.url`, after the client's retries; nothing on stdout.
#[test]
fn an_unreachable_server_exits_2_on_cryptshare_url() {
    let dir = tempfile::tempdir().unwrap();
    let sim = Sim::start(&dir.path().join("sim"), &[]);
    let url = sim.url.clone();
    sim.stop();
    config(dir.path(), &url, "expiration_days = 7\n");
    let r = check_online(dir.path(), &[]);
    assert_eq!(
        (r.code, r.stdout.as_str(), r.stderr.as_str()),
        (
            2,
            "",
            "DIR/gateway.toml: cryptshare.url: the transfer policy for check-config@example.org: \
             cryptshare temporary failure: verification: connect failed: error sending request: \
             client error (Connect): tcp connect error: Connection refused (os error 111)\n"
        )
    );
}

/// `cryptshare.url = "embedded"`: no server to ask, exit 0 with one line saying so.
#[test]
fn the_embedded_emulator_is_not_asked() {
    let dir = tempfile::tempdir().unwrap();
    config(dir.path(), "embedded", "expiration_days = 7\n");
    let r = check_online(dir.path(), &[]);
    assert_eq!(
        (r.code, r.stdout.as_str(), r.stderr.as_str()),
        (
            0,
            "DIR/gateway.toml: OK (cryptshare.url = \"embedded\": no server to ask)\n",
            ""
        )
    );
}
