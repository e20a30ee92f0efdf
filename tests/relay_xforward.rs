//! XFORWARD towards a next hop that offers it (issue 12, item 8): the exact commands, before
//! every MAIL of a pooled connection with each transaction's own client, only the offered
//! attributes, nothing when not offered or with `relay.xforward = false`; and through the
//! gateway, the session's real client. Postfix reading it: `tests/e2e_postfix.rs`.

// Scripts read best as "the default sink, but with this one change".
#![allow(clippy::field_reassign_with_default)]

mod pipeline_support;
mod support;

use std::net::IpAddr;

use cryptshare_gateway::config::Config;
use cryptshare_gateway::outbound::{ClientOrigin, Relay};
use cryptshare_gateway_testkit::envelope::{mail, rcpt};
use cryptshare_gateway_testkit::sink::{Script, Sink};
use pipeline_support::{Client, Harness};
use smtp_proto::EXT_PIPELINING;

const ALL: &str = "NAME ADDR PORT PROTO HELO IDENT SOURCE";
const MSG: &[u8] = b"Subject: xforward\r\n\r\nHello\r\n";

fn relay_to(sink: &Sink, extra: &str) -> (Relay, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gw.toml");
    std::fs::write(
        &path,
        format!(
            "[server]\nhostname = \"gw.test\"\n[relay]\nnext_hop = \"{}\"\ntls = \"off\"\n{extra}\n",
            sink.addr()
        ),
    )
    .unwrap();
    let cfg = Config::load_with_env(&path, []).unwrap();
    (Relay::new(&cfg).unwrap(), dir)
}

fn sink_script(xforward: Option<&str>) -> Script {
    let mut s = Script::default();
    s.xforward = xforward.map(str::to_string);
    s
}

fn origin(addr: &str, port: u16, helo: &str, esmtp: bool, local: bool) -> ClientOrigin {
    ClientOrigin {
        name: None,
        addr: addr.parse().unwrap(),
        port,
        esmtp,
        helo: helo.into(),
        local,
    }
}

/// One transaction for `origin` (or none) with one recipient; returns the final reply.
async fn transaction(relay: &Relay, origin: Option<ClientOrigin>, from: &str) -> String {
    let mut tx = relay.begin();
    if let Some(o) = origin {
        tx.forward_client(o);
    }
    assert_eq!(tx.mail_from(&mail(from)).await.code, 250);
    assert_eq!(tx.rcpt_to(&rcpt("rcpt@example.net")).await.code, 250);
    String::from_utf8(tx.data(&[MSG]).await.to_bytes()).unwrap()
}

/// The command lines of the sink, without EHLO, the data and QUIT.
fn envelope_commands(sink: &Sink) -> Vec<String> {
    sink.commands()
        .into_iter()
        .map(|(_, c)| c)
        .filter(|c| !c.starts_with("EHLO") && !c.starts_with("BDAT") && c != "QUIT")
        .collect()
}

#[tokio::test]
async fn xforward_goes_before_every_mail_with_that_transactions_client() {
    let sink = Sink::start(sink_script(Some(ALL))).await.unwrap();
    let (relay, _d) = relay_to(&sink, "");
    let ok = "250 2.0.0 OK, relayed (Queued as SINK)\r\n";
    let a = origin("192.0.2.7", 40001, "a.example.org", true, false);
    let b = origin("2001:db8::8", 40002, "b.example.org", false, false);
    let c = origin("127.0.0.4", 40003, "[127.0.0.4]", true, true);
    assert_eq!(transaction(&relay, Some(a), "a@example.org").await, ok);
    assert_eq!(transaction(&relay, Some(b), "b@example.org").await, ok);
    // A transaction aborted after MAIL: the next one starts with RSET, then its own XFORWARD.
    let mut aborted = relay.begin();
    aborted.forward_client(c.clone());
    assert_eq!(aborted.mail_from(&mail("x@example.org")).await.code, 250);
    aborted.reset().await;
    drop(aborted);
    assert_eq!(transaction(&relay, Some(c), "c@example.org").await, ok);

    assert_eq!(sink.connections(), 1, "one pooled connection");
    assert_eq!(
        envelope_commands(&sink),
        [
            "XFORWARD NAME=[UNAVAILABLE] ADDR=192.0.2.7 PORT=40001 PROTO=ESMTP HELO=a.example.org SOURCE=REMOTE",
            "MAIL FROM:<a@example.org>",
            "RCPT TO:<rcpt@example.net>",
            "XFORWARD NAME=[UNAVAILABLE] ADDR=2001:db8::8 PORT=40002 PROTO=SMTP HELO=b.example.org SOURCE=REMOTE",
            "MAIL FROM:<b@example.org>",
            "RCPT TO:<rcpt@example.net>",
            "XFORWARD NAME=[UNAVAILABLE] ADDR=127.0.0.4 PORT=40003 PROTO=ESMTP HELO=[127.0.0.4] SOURCE=LOCAL",
            "MAIL FROM:<x@example.org>",
            "RSET",
            "XFORWARD NAME=[UNAVAILABLE] ADDR=127.0.0.4 PORT=40003 PROTO=ESMTP HELO=[127.0.0.4] SOURCE=LOCAL",
            "MAIL FROM:<c@example.org>",
            "RCPT TO:<rcpt@example.net>",
        ]
    );
    // Pipelined: XFORWARD travels with its MAIL (and the RSET before it) in one write.
    let batches = sink.batches();
    assert!(
        batches.iter().any(|b| b.len() == 3
            && b[0] == "RSET"
            && b[1].starts_with("XFORWARD ")
            && b[2] == "MAIL FROM:<c@example.org>"),
        "{batches:?}"
    );
}

#[tokio::test]
async fn only_offered_attributes_and_one_command_at_a_time_without_pipelining() {
    let mut script = sink_script(Some("ADDR HELO"));
    script.capabilities &= !EXT_PIPELINING;
    let sink = Sink::start(script).await.unwrap();
    let (relay, _d) = relay_to(&sink, "");
    let o = origin("192.0.2.9", 1, "h\u{202e}x y.example", true, false);
    transaction(&relay, Some(o), "a@example.org").await;
    assert_eq!(
        envelope_commands(&sink)[..2],
        [
            "XFORWARD ADDR=192.0.2.9 HELO=hxy.example",
            "MAIL FROM:<a@example.org>"
        ]
    );
    assert!(sink.batches().iter().all(|b| b.len() == 1));
}

#[tokio::test]
async fn nothing_when_not_offered_or_switched_off() {
    let plain = Sink::start(sink_script(None)).await.unwrap();
    let (relay, _d) = relay_to(&plain, "");
    let o = origin("192.0.2.7", 40001, "a.example.org", true, false);
    transaction(&relay, Some(o.clone()), "a@example.org").await;
    assert_eq!(
        envelope_commands(&plain),
        ["MAIL FROM:<a@example.org>", "RCPT TO:<rcpt@example.net>"]
    );

    let offered = Sink::start(sink_script(Some(ALL))).await.unwrap();
    let (relay, _d2) = relay_to(&offered, "xforward = false");
    transaction(&relay, Some(o), "a@example.org").await;
    assert_eq!(
        envelope_commands(&offered),
        ["MAIL FROM:<a@example.org>", "RCPT TO:<rcpt@example.net>"]
    );
}

/// Through the whole gateway: the next hop learns the session's client (address, port, EHLO
/// name), not the gateway's own address.
#[tokio::test]
async fn the_gateway_forwards_the_sessions_client() {
    let h = Harness::start("").await;
    h.sink.script(|s| s.xforward = Some(ALL.into()));
    let client: IpAddr = "127.0.0.4".parse().unwrap();
    let (mut c, greeting) = Client::connect_from(client, h.smtp).await;
    assert!(greeting.starts_with("220 "), "{greeting}");
    assert!(c.cmd("EHLO client.xforward.test").await.starts_with("250"));
    assert!(
        c.cmd("MAIL FROM:<alice@example.org>")
            .await
            .starts_with("250")
    );
    assert!(c.cmd("RCPT TO:<bob@example.net>").await.starts_with("250"));
    let r = c.data(MSG).await;
    assert!(r.starts_with("250 "), "{r}");
    let xf: Vec<String> = envelope_commands(&h.sink)
        .into_iter()
        .filter(|c| c.starts_with("XFORWARD"))
        .collect();
    assert_eq!(xf.len(), 1, "{xf:?}");
    let re = "XFORWARD NAME=[UNAVAILABLE] ADDR=127.0.0.4 PORT=";
    let rest = xf[0]
        .strip_prefix(re)
        .unwrap_or_else(|| panic!("{}", xf[0]));
    let (port, rest) = rest.split_once(' ').unwrap();
    assert!(port.parse::<u16>().unwrap() > 0);
    assert_eq!(rest, "PROTO=ESMTP HELO=client.xforward.test SOURCE=LOCAL");
    let _ = c.cmd("QUIT").await;
    h.stop().await;
}
