//! `check-config --online` (issue 11 item 2): the real binary asks the emulator's transfer
//! policy for each `[[policy]]`: a permissive server is OK, a server that forbids what a rule
//! demands is exit 2 naming the rule's key, an unreachable server exit 2 naming the call.

mod pipeline_support;
mod support;

use std::process::Command;

use cryptshare_gateway::cryptshare::PasswordMode;
use cryptshare_gateway::sim::{Emulator, SimOptions, SimPolicy};
use pipeline_support::*;

struct Ran {
    code: i32,
    stdout: String,
    stderr: String,
}

async fn check_online(config: std::path::PathBuf) -> Ran {
    tokio::task::spawn_blocking(move || {
        let out = Command::new(env!("CARGO_BIN_EXE_cryptshare-gateway"))
            .args(["check-config", "--online", "--config"])
            .arg(&config)
            .output()
            .unwrap();
        Ran {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8(out.stdout).unwrap(),
            stderr: String::from_utf8(out.stderr).unwrap(),
        }
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_config_online_against_the_live_policy() {
    let dir = tempfile::tempdir().unwrap();
    let emu = Emulator::start(SimOptions::new(
        ([127, 0, 0, 1], 0).into(),
        dir.path().join("sim"),
    ))
    .await
    .unwrap();
    let text = config_text(dir.path(), "127.0.0.1:1", &emu.url(), &policy("tempfail"));
    let (path, _) = write_config(dir.path(), &text);
    let p = path.display().to_string();

    // A permissive, well-configured server.
    let r = check_online(path.clone()).await;
    assert_eq!((r.code, r.stderr.as_str()), (0, ""), "{}", r.stdout);
    assert_eq!(
        r.stdout,
        format!("{p}: OK (checked against {}/api)\n", emu.url())
    );

    // A server that allows no generated password: the rule demands one.
    emu.set_policy(SimPolicy {
        allowed_password_modes: vec![PasswordMode::Manual],
        ..SimPolicy::default()
    });
    let r = check_online(path.clone()).await;
    assert_eq!(r.code, 2, "{} {}", r.stdout, r.stderr);
    assert_eq!(r.stdout, "");
    let errors: Vec<&str> = r
        .stderr
        .lines()
        .filter(|l| l.contains(": error: "))
        .collect();
    assert_eq!(errors.len(), 1, "{}", r.stderr);
    assert!(
        errors[0].starts_with(&format!("{p}: error: policy[0].password_mode: ")),
        "{}",
        r.stderr
    );
    // Every exchange of the check is valid against openapi-1.8.json.
    openapi::assert_exchanges_valid(&emu.exchanges());

    // No server: exit 2, naming what failed.
    let text = config_text(
        dir.path(),
        "127.0.0.1:1",
        "http://127.0.0.1:9",
        &policy("tempfail"),
    );
    let (path, _) = write_config(dir.path(), &text);
    let r = check_online(path.clone()).await;
    assert_eq!(r.code, 2, "{} {}", r.stdout, r.stderr);
    assert_eq!(r.stdout, "");
    assert!(r.stderr.starts_with(&format!("{p}: ")), "{}", r.stderr);
    assert!(r.stderr.contains("connect failed"), "{}", r.stderr);
}
