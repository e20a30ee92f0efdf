//! Issue 16: the gateway's peak memory with many concurrent conversions stays within the bound
//! documented in docs/operations.md ("Memory") and BENCHMARKS.md: 50 sessions convert a message
//! with a 2 MiB attachment each at the same time (the real `cryptshare-gateway serve` process,
//! the embedded Cryptshare emulator in it, the testkit sink as the next hop), and the gateway's
//! peak RSS (VmHWM, which the kernel keeps: no sampling) minus its RSS when idle must stay below
//! `sessions × per-session bound + fixed allowance`.
//!
//! A memory assertion, not a timing one: nothing here depends on how fast the machine is.

mod pipeline_support;
#[path = "pipeline_support/process.rs"]
mod process;
mod support;

use std::sync::Arc;

use cryptshare_gateway_testkit::sink::{Script, Sink};
use pipeline_support::{mixed, payload, read_audit};
use process::{LIMIT, spawn_gateway};
use support::smtp::AsyncSmtp;

const SESSIONS: usize = 50;
const ATTACHMENT: usize = 2 << 20;
const MIB: u64 = 1 << 20;

/// The documented bound per converting session whose message stays below
/// `server.spool_memory_limit`: the message in memory, up to twice over while its buffer grows
/// (the old and the new allocation during a copy), plus the working buffers of the session
/// (read buffer, relay writes, upload chunks in flight, the emulator's file buffer).
fn per_session_bound(message_len: u64) -> u64 {
    2 * message_len + 4 * MIB
}

/// Code pages first touched by the conversions, allocator arenas, runtime threads: the same for
/// any number of sessions.
const FIXED_ALLOWANCE: u64 = 48 * MIB;

fn status_kib(pid: u32, key: &str) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    s.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("no {key} in /proc/{pid}/status"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_concurrent_conversions_stay_within_the_documented_memory_bound() {
    let dir = tempfile::tempdir().unwrap();
    let sink = Sink::start(Script::default()).await.unwrap();
    let audit = dir.path().join("audit.jsonl");
    let config = dir.path().join("gw.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nlisten = [\"127.0.0.1:0\"]\nhostname = \"gw.test\"\n\
             max_message_size = 52428800\nmax_connections = 512\n\
             [relay]\nnext_hop = \"{hop}\"\ntls = \"off\"\n\
             [cryptshare]\nurl = \"embedded\"\nembedded_data_dir = \"{sim}\"\ntimeout = 120\n\
             [state]\ndir = \"{state}\"\n\
             [audit]\nfile = \"{audit}\"\n\
             [[policy]]\nname = \"convert\"\nsenders = [\"*@example.org\"]\n\
             threshold = 1048576\non_error = \"tempfail\"\n",
            hop = sink.addr(),
            sim = dir.path().join("sim").display(),
            state = dir.path().join("state").display(),
            audit = audit.display(),
        ),
    )
    .unwrap();
    let gw = spawn_gateway(&config).await;
    let pid = gw.child.id().unwrap();

    // One attachment for all; each message differs in its Message-ID, so that none is taken
    // for a retry of another (the gateway reuses the transfer of an identical message).
    let data = payload(ATTACHMENT, 16);
    let attachment = [(
        "Content-Type: application/octet-stream; name=\"data.bin\"\r\n\
         Content-Disposition: attachment; filename=\"data.bin\"",
        &data[..],
    )];
    let body = mixed("", "Hello.", &attachment);
    let messages: Vec<Arc<Vec<u8>>> = (0..SESSIONS)
        .map(|i| {
            let mut m = format!(
                "From: <sender@example.org>\r\nTo: <rcpt@example.net>\r\n\
                 Subject: memory {i}\r\nMessage-ID: <memory-{i}@example.org>\r\n"
            )
            .into_bytes();
            m.extend_from_slice(&body);
            Arc::new(m)
        })
        .collect();
    let message_len = messages[0].len() as u64;

    // Idle RSS once the gateway listens (and has served one connection, so that the runtime's
    // worker threads exist).
    let (mut c, _) = AsyncSmtp::connect(gw.smtp).await;
    assert!(c.cmd("EHLO client.test").await.starts_with("250"));
    assert!(c.cmd("QUIT").await.starts_with("221"));
    let idle = status_kib(pid, "VmRSS") * 1024;

    // All sessions have their envelope accepted before any sends its message, so that the 50
    // messages are received and converted together.
    let barrier = Arc::new(tokio::sync::Barrier::new(SESSIONS));
    let mut tasks = Vec::new();
    for m in messages {
        let barrier = barrier.clone();
        let addr = gw.smtp;
        tasks.push(tokio::spawn(async move {
            let (mut c, greeting) = AsyncSmtp::connect(addr).await;
            assert!(greeting.starts_with("220"), "{greeting}");
            assert!(c.cmd("EHLO client.test").await.starts_with("250"));
            let r = c.cmd("MAIL FROM:<sender@example.org>").await;
            assert!(r.starts_with("250"), "MAIL: {r}");
            let r = c.cmd("RCPT TO:<rcpt@example.net>").await;
            assert!(r.starts_with("250"), "RCPT: {r}");
            barrier.wait().await;
            c.data(&m).await
        }));
    }
    for t in tasks {
        let reply = tokio::time::timeout(LIMIT, t)
            .await
            .expect("a conversion within the limit")
            .unwrap();
        assert!(reply.starts_with("250"), "final reply: {reply}");
    }
    let hwm = status_kib(pid, "VmHWM") * 1024;

    // All 50 were converted (the sink got the small rewritten messages, not the attachments).
    let converted = read_audit(&audit)
        .iter()
        .filter(|r| r["decision"] == "convert")
        .count();
    assert_eq!(converted, SESSIONS, "conversions in the audit log");
    let relayed = sink.wait_messages(SESSIONS).await;
    assert!(
        relayed
            .iter()
            .all(|m| (m.data.len() as u64) < message_len / 4),
        "every relayed message is the rewritten one"
    );

    let bound = SESSIONS as u64 * per_session_bound(message_len) + FIXED_ALLOWANCE;
    let grown = hwm.saturating_sub(idle);
    eprintln!(
        "{SESSIONS} concurrent conversions of {message_len}-octet messages: idle RSS {:.1} MiB, \
         VmHWM {:.1} MiB, growth {:.1} MiB = {:.2} MiB per session; bound {:.1} MiB",
        idle as f64 / MIB as f64,
        hwm as f64 / MIB as f64,
        grown as f64 / MIB as f64,
        grown as f64 / MIB as f64 / SESSIONS as f64,
        bound as f64 / MIB as f64,
    );
    assert!(
        grown <= bound,
        "peak RSS grew by {grown} octets over idle ({idle}), above the documented bound {bound}"
    );
}
