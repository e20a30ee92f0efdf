//! Client gone = no delivery (issue 12, item 9): when the client disconnected while its message
//! was being converted (an upstream timeout shorter than the conversion), the next hop never
//! gets the end of the message; the upstream's retry reuses the transfer and is delivered once.

// Scripts read best as "the default sink, but with this one change".
#![allow(clippy::field_reassign_with_default)]

mod pipeline_support;
mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use cryptshare_gateway::config::Config;
use cryptshare_gateway::outbound::Relay;
use cryptshare_gateway::sim::{Endpoint, FaultSpec};
use cryptshare_gateway_testkit::envelope::{mail, rcpt};
use cryptshare_gateway_testkit::sink::{Script, Sink};
use pipeline_support::*;
use smtp_proto::{EXT_BINARY_MIME, EXT_CHUNKING, EXT_PIPELINING};

fn message() -> Vec<u8> {
    mixed(
        HEADERS,
        "see attachment",
        &[(
            "Content-Type: application/pdf; name=\"report.pdf\"\r\nContent-Disposition: attachment; filename=\"report.pdf\"",
            &payload(200 * 1024, 12),
        )],
    )
}

/// An upstream MTA with a 3 s timeout that retries at once after giving up (at most 6 times).
const UPSTREAM: &str = r#"
import smtplib, socket, sys
port = int(sys.argv[1])
msg = sys.stdin.buffer.read()
for i in range(1, 7):
    try:
        with smtplib.SMTP("127.0.0.1", port, timeout=3) as s:
            s.ehlo("upstream.test")
            s.sendmail("alice@example.org", ["bob@example.net"], msg)
        print("delivered", flush=True)
        break
    except (socket.timeout, TimeoutError, smtplib.SMTPServerDisconnected) as e:
        print("gave up", flush=True)
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_that_times_out_during_the_conversion_gets_one_copy_delivered() {
    let hop = RecordingHop::start(vec!["250 2.0.0 Queued as HOP"]).await;
    let h = Harness::start_with_hop(&policy("tempfail"), hop.addr).await;
    // Cryptshare takes 8 s for the first finalize: longer than the upstream's 3 s.
    h.emu.inject_fault(FaultSpec {
        endpoint: Endpoint::Finalize,
        latency: Some(Duration::from_secs(8)),
        count: Some(1),
        ..FaultSpec::default()
    });
    let port = h.smtp.port().to_string();
    let msg = message();
    let out = tokio::task::spawn_blocking(move || {
        support::process::python(UPSTREAM, &[&port], &msg, "python3 only")
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let attempts: Vec<&str> = stdout.lines().collect();
    assert_eq!(attempts.last(), Some(&"delivered"), "{stdout}");
    assert!(
        attempts.len() >= 2,
        "the first attempt must time out: {stdout}"
    );

    // Every attempt ends in an audit line; the ones whose client was gone before they reached
    // the next hop may finish after the upstream's last attempt.
    let deadline = Instant::now() + Duration::from_secs(30);
    let audit = loop {
        let a = h.audit();
        if a.len() >= attempts.len() {
            break a;
        }
        assert!(Instant::now() < deadline, "audit lines: {a:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(audit.len(), attempts.len(), "{audit:?}");
    let seen = hop.seen();
    assert_eq!(seen.len(), 1, "exactly one copy reaches the next hop");
    assert_eq!(h.emu.transfers().len(), 1, "exactly one transfer");
    assert_eq!(h.emu.stats().sessions_created, 1);
    let delivered: Vec<_> = audit
        .iter()
        .filter(|a| a["reply"].as_str().unwrap().starts_with("250 "))
        .collect();
    assert_eq!(delivered.len(), 1, "{audit:?}");
    let gone: Vec<_> = audit
        .iter()
        .filter(|a| {
            a["reply"]
                .as_str()
                .unwrap()
                .contains("client disconnected before delivery")
        })
        .collect();
    assert_eq!(gone.len(), attempts.len() - 1, "{audit:?}");
    assert!(gone.iter().all(|a| a["relay"].is_null()), "{audit:?}");
    h.stop().await;
}

fn relay_to(sink: &Sink) -> (Relay, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gw.toml");
    std::fs::write(
        &path,
        format!(
            "[server]\nhostname = \"gw.test\"\n[relay]\nnext_hop = \"{}\"\ntls = \"off\"\n",
            sink.addr()
        ),
    )
    .unwrap();
    let cfg = Config::load_with_env(&path, []).unwrap();
    (Relay::new(&cfg).unwrap(), dir)
}

const MSG: &[u8] = b"Subject: gone\r\n\r\nline one\r\nthe last line\r\n";
const GONE: &str =
    "451 4.3.0 Local error, try again later (client disconnected before delivery)\r\n";

/// `wanted` answers yes `yes` times, then no.
fn answers(yes: usize) -> impl Fn() -> bool + Sync {
    let asked = AtomicUsize::new(0);
    move || asked.fetch_add(1, Ordering::SeqCst) < yes
}

async fn abort_case(script: Script, yes: usize) -> (Sink, Vec<String>) {
    let sink = Sink::start(script).await.unwrap();
    let (relay, _d) = relay_to(&sink);
    let mut tx = relay.begin();
    assert_eq!(tx.mail_from(&mail("a@example.org")).await.code, 250);
    assert_eq!(tx.rcpt_to(&rcpt("b@example.net")).await.code, 250);
    let r = tx.data_unless(&[MSG], &answers(yes)).await;
    assert_eq!(String::from_utf8(r.to_bytes()).unwrap(), GONE);
    assert!(tx.next_hop_reply().is_none());
    // The next transaction is delivered normally.
    let mut tx = relay.begin();
    assert_eq!(tx.mail_from(&mail("c@example.org")).await.code, 250);
    assert_eq!(tx.rcpt_to(&rcpt("d@example.net")).await.code, 250);
    assert_eq!(tx.data(&[MSG]).await.code, 250);
    drop(tx);
    let msgs = sink.messages();
    assert_eq!(msgs.len(), 1, "only the second message");
    assert_eq!(msgs[0].mail_from, "MAIL FROM:<c@example.org>");
    assert_eq!(msgs[0].data, MSG);
    let cmds = sink.commands().into_iter().map(|(_, c)| c).collect();
    (sink, cmds)
}

#[tokio::test]
async fn bdat_client_gone_before_the_last_chunk_closes_the_connection() {
    let (sink, cmds) = abort_case(Script::default(), 1).await;
    let body = MSG.len() - b"the last line\r\n".len();
    let tail = MSG.len() - body;
    // The delivered message: the body as one chunk, the last line as the LAST chunk. Of the
    // aborted one nothing went out: its first chunk was still queued with the LAST chunk (the
    // client writes a small message in one go when the next hop pipelines) when the question
    // came, so the next hop saw its envelope and then a closed connection.
    let bdats: Vec<&String> = cmds.iter().filter(|c| c.starts_with("BDAT")).collect();
    assert_eq!(
        bdats,
        [&format!("BDAT {body}"), &format!("BDAT {tail} LAST")],
        "{cmds:?}"
    );
    assert_eq!(
        sink.connections(),
        2,
        "the half-sent connection was dropped"
    );
}

#[tokio::test]
async fn bdat_without_pipelining_waits_for_each_chunk() {
    let mut s = Script::default();
    s.capabilities &= !EXT_PIPELINING;
    let sink = Sink::start(s).await.unwrap();
    let (relay, _d) = relay_to(&sink);
    let mut tx = relay.begin();
    assert_eq!(tx.mail_from(&mail("a@example.org")).await.code, 250);
    assert_eq!(tx.rcpt_to(&rcpt("b@example.net")).await.code, 250);
    let r = tx.data_unless(&[MSG], &|| true).await;
    assert_eq!(r.code, 250);
    assert_eq!(sink.messages()[0].data, MSG);
    let batches = sink.batches();
    assert!(batches.iter().all(|b| b.len() == 1), "{batches:?}");
}

#[tokio::test]
async fn data_client_gone_before_the_final_dot_closes_the_connection() {
    let mut s = Script::default();
    s.capabilities &= !(EXT_CHUNKING | EXT_BINARY_MIME);
    let (sink, cmds) = abort_case(s, 1).await;
    assert_eq!(cmds.iter().filter(|c| *c == "DATA").count(), 2, "{cmds:?}");
    assert_eq!(sink.connections(), 2);
}

#[tokio::test]
async fn client_gone_before_the_relay_sends_nothing_and_keeps_the_connection() {
    let (sink, cmds) = abort_case(Script::default(), 0).await;
    let after_first_rcpt: Vec<&String> = cmds
        .iter()
        .skip_while(|c| !c.starts_with("RCPT TO:<b@"))
        .skip(1)
        .take(2)
        .collect();
    assert_eq!(after_first_rcpt, ["RSET", "MAIL FROM:<c@example.org>"]);
    assert_eq!(sink.connections(), 1);
}
