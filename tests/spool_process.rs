//! Issue 13 with the real binary: `queue list|show|hold|retry|release|delete` against the live
//! queue of a running `cryptshare-gateway serve` in spool mode.

mod pipeline_support;
#[path = "pipeline_support/process.rs"]
mod process;
mod support;

use std::process::Command;
use std::time::Duration;

use cryptshare_gateway::replies::Reply;
use cryptshare_gateway::sim::{Emulator, SimOptions};
use cryptshare_gateway_testkit::sink::{Script, Sink};
use pipeline_support::*;
use process::{spawn_gateway, try_send};

struct Ran {
    code: i32,
    stdout: String,
    stderr: String,
}

fn queue(config: &std::path::Path, args: &[&str]) -> Ran {
    let out = Command::new(env!("CARGO_BIN_EXE_cryptshare-gateway"))
        .arg("queue")
        .args(args)
        .arg("--config")
        .arg(config)
        .output()
        .unwrap();
    Ran {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8(out.stdout).unwrap(),
        stderr: String::from_utf8(out.stderr).unwrap(),
    }
}

/// `queue show ID --json`, parsed.
fn show(config: &std::path::Path, id: &str) -> serde_json::Value {
    let r = queue(config, &["show", id, "--json"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    serde_json::from_str(&r.stdout).unwrap()
}

/// Poll what the running gateway does to its queue files, bounded.
async fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    for _ in 0..600 {
        if f() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{what}: not within 30 s");
}

#[tokio::test]
async fn queue_commands_work_on_a_live_queue() {
    let dir = tempfile::tempdir().unwrap();
    let emu = Emulator::start(SimOptions::new(
        ([127, 0, 0, 1], 0).into(),
        dir.path().join("sim"),
    ))
    .await
    .unwrap();
    let sink = Sink::start(Script::default()).await.unwrap();
    sink.script(|s| {
        s.rcpt_replies.insert(
            "bob@example.net".into(),
            Reply::new(451, [4, 2, 0], "Mailbox busy"),
        );
    });
    // A long backoff: after the first attempt only `queue retry` makes the next one.
    let extra = "[queue]\nmode = \"spool\"\nmin_backoff = \"1h\"\nmin_free_space = 0\n";
    let text = config_text(dir.path(), &sink.addr().to_string(), &emu.url(), extra);
    let (path, _) = write_config(dir.path(), &text);
    let mut gw = spawn_gateway(&path).await;

    let msg = b"Subject: queued\r\n\r\nhello\r\n";
    let reply = try_send(gw.smtp, "alice@example.org", "bob@example.net", msg)
        .await
        .unwrap();
    let id = reply
        .strip_prefix("250 2.0.0 queued as ")
        .unwrap_or_else(|| panic!("{reply}"))
        .trim_end()
        .to_string();
    wait_for("the first attempt", || show(&path, &id)["attempts"] == 1).await;
    let v = show(&path, &id);
    assert_eq!(v["place"], "active");
    assert_eq!(v["sender"], "alice@example.org");
    assert_eq!(v["recipients"][0]["address"], "bob@example.net");
    assert_eq!(v["recipients"][0]["state"], "pending");
    assert_eq!(v["recipients"][0]["last_reply"], "451 4.2.0 Mailbox busy");
    assert_eq!(v["reason"], "451 4.2.0 Mailbox busy");

    let list = queue(&path, &["list"]);
    assert_eq!(list.code, 0);
    let lines: Vec<&str> = list.stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{}", list.stdout);
    assert!(
        lines[0].starts_with(&format!("{id}  active  ")),
        "{}",
        lines[0]
    );
    assert!(
        lines[0].contains(&format!(
            "  {} bytes  from alice@example.org  to 1/1 pending  attempts 1  next ",
            msg.len()
        )),
        "{}",
        lines[0]
    );
    assert!(
        lines[0].ends_with("  (451 4.2.0 Mailbox busy)"),
        "{}",
        lines[0]
    );
    assert_eq!(lines[1], "-- 1 messages");

    // Hold: listed as held, `retry` refuses, `release` lets it go again.
    let r = queue(&path, &["hold", &id]);
    assert_eq!(
        (r.code, r.stdout.as_str()),
        (0, format!("{id}: held\n").as_str())
    );
    assert_eq!(show(&path, &id)["place"], "hold");
    assert!(queue(&path, &["list"]).stdout.contains("  next held  "));
    let r = queue(&path, &["retry", &id]);
    assert_eq!(r.code, 1);
    assert_eq!(
        r.stderr,
        format!("{id} is held: `queue release {id}` to deliver it\n")
    );
    // The next hop takes bob now; release (next attempt now) delivers.
    sink.script(|s| {
        s.rcpt_replies.clear();
    });
    let r = queue(&path, &["release", &id]);
    assert_eq!(
        (r.code, r.stdout.as_str()),
        (0, format!("{id}: released, next attempt now\n").as_str())
    );
    let got = sink.wait_messages(1).await;
    assert_eq!(got[0].rcpt_to, ["RCPT TO:<bob@example.net>"]);
    wait_for("the removal", || queue(&path, &["show", &id]).code == 1).await;
    let r = queue(&path, &["show", &id]);
    assert_eq!(r.stderr, format!("no queued message {id}\n"));

    // Delete: a second message, deferred, then dropped without a DSN.
    sink.script(|s| {
        s.rcpt_replies.insert(
            "carol@example.net".into(),
            Reply::new(451, [4, 2, 0], "Mailbox busy"),
        );
    });
    let reply = try_send(gw.smtp, "alice@example.org", "carol@example.net", msg)
        .await
        .unwrap();
    let id2 = reply
        .strip_prefix("250 2.0.0 queued as ")
        .unwrap()
        .trim_end()
        .to_string();
    wait_for("the first attempt", || show(&path, &id2)["attempts"] == 1).await;
    let r = queue(&path, &["delete", &id2]);
    assert_eq!(
        (r.code, r.stdout.as_str()),
        (0, format!("{id2}: deleted\n").as_str())
    );
    assert_eq!(queue(&path, &["list"]).stdout, "-- 0 messages\n");
    let r = queue(&path, &["retry", "NOSUCHID"]);
    assert_eq!(
        (r.code, r.stderr.as_str()),
        (1, "no queued message NOSUCHID\n")
    );
    // Nothing else reached the next hop (no DSN for a deleted message).
    assert_eq!(sink.messages().len(), 1);
    gw.child.kill().await.unwrap();
    // Every exchange with the emulator, the killed ones included, against openapi-1.8.json.
    openapi::assert_exchanges_valid(&emu.exchanges());
}
