//! The relay (cut-through transaction, pool, replies) against the scriptable test sink, and the
//! maildir next hop.

// Scripts read best as "the default sink, but with this one change".
#![allow(clippy::field_reassign_with_default)]

use cryptshare_gateway::config::Config;
use cryptshare_gateway::envelope::{Body, MailFrom, Notify, RcptTo};
use cryptshare_gateway::inbound::{ConnectionInfo, Handler, HandlerFactory, Transaction};
use cryptshare_gateway::outbound::Relay;
use cryptshare_gateway::replies::Reply;
use cryptshare_gateway::store::spool::Spooled;
use cryptshare_gateway_testkit::PassThrough;
use cryptshare_gateway_testkit::envelope::{mail, rcpt};
use cryptshare_gateway_testkit::sink::{Script, Sink, Stage};
use smtp_proto::{EXT_BINARY_MIME, EXT_CHUNKING, EXT_DSN, EXT_PIPELINING, EXT_SMTP_UTF8};

fn config(next_hop: &str, extra: &str) -> (Config, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gw.toml");
    std::fs::write(
        &path,
        format!(
            "[server]\nhostname = \"gw.test\"\n[relay]\nnext_hop = \"{next_hop}\"\ntls = \"off\"\n{extra}\n"
        ),
    )
    .unwrap();
    (Config::load_with_env(&path, []).unwrap(), dir)
}

fn relay_to(sink: &Sink, extra: &str) -> Relay {
    let (cfg, _dir) = config(&sink.addr().to_string(), extra);
    Relay::new(&cfg).unwrap()
}

/// A scripted sink and a relay to it with the default settings.
async fn sink_and_relay(script: Script) -> (Sink, Relay) {
    let sink = Sink::start(script).await.unwrap();
    let relay = relay_to(&sink, "");
    (sink, relay)
}

const MSG: &[u8] = b"Subject: test\r\n\r\nHello\r\n";
const RECEIVED: &[u8] = b"Received: from client by gw.test; Fri, 27 Nov 2026 10:00:00 +0000\r\n";

#[tokio::test]
async fn one_refused_recipient_others_delivered() {
    let mut script = Script::default();
    script.rcpt_replies.insert(
        "bad@example.net".into(),
        Reply::new(
            550,
            [5, 1, 1],
            "<bad@example.net>: Recipient address rejected",
        ),
    );
    script.rcpt_replies.insert(
        "later@example.net".into(),
        Reply::new(450, [4, 2, 0], "Mailbox busy"),
    );
    let (sink, relay) = sink_and_relay(script).await;
    let mut tx = relay.begin();
    assert_eq!(
        tx.mail_from(&mail("a@example.org")).await.to_bytes(),
        b"250 2.1.0 Sender OK\r\n"
    );
    assert_eq!(tx.rcpt_to(&rcpt("one@example.net")).await.code, 250);
    assert_eq!(
        tx.rcpt_to(&rcpt("bad@example.net")).await.to_bytes(),
        b"550 5.1.1 <bad@example.net>: Recipient address rejected\r\n"
    );
    assert_eq!(
        tx.rcpt_to(&rcpt("later@example.net")).await.to_bytes(),
        b"450 4.2.0 Mailbox busy\r\n"
    );
    assert_eq!(tx.rcpt_to(&rcpt("two@example.net")).await.code, 250);
    let r = tx.data(&[RECEIVED, MSG]).await;
    assert_eq!(
        r.to_bytes(),
        b"250 2.0.0 OK, relayed (Queued as SINK)\r\n".as_slice()
    );
    let m = &sink.messages()[0];
    assert_eq!(m.mail_from, "MAIL FROM:<a@example.org>");
    assert_eq!(
        m.rcpt_to,
        vec![
            "RCPT TO:<one@example.net>".to_string(),
            "RCPT TO:<two@example.net>".into()
        ]
    );
    assert_eq!(m.data, [RECEIVED, MSG].concat());
}

#[tokio::test]
async fn next_hop_down_is_451_4_4_1() {
    // Bound but not listening: connections are refused, and no other test can take the port.
    let closed = tokio::net::TcpSocket::new_v4().unwrap();
    closed.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = closed.local_addr().unwrap();
    let (cfg, _d) = config(&addr.to_string(), "");
    let relay = Relay::new(&cfg).unwrap();
    let mut tx = relay.begin();
    let r = tx.mail_from(&mail("a@example.org")).await;
    assert_eq!(
        r.to_bytes(),
        b"451 4.4.1 Next hop unavailable, try again later (connection refused)\r\n"
    );
    // Not learned from a next hop: the defaults.
    assert_eq!(relay.extensions().await, Default::default());
}

#[tokio::test]
async fn next_hop_mail_refusal_is_passed_through() {
    let mut script = Script::default();
    script.mail_reply = Reply::new(553, [5, 7, 1], "Sender rejected");
    let (_sink, relay) = sink_and_relay(script).await;
    let mut tx = relay.begin();
    assert_eq!(
        tx.mail_from(&mail("a@example.org")).await.to_bytes(),
        b"553 5.7.1 Sender rejected\r\n"
    );
}

#[tokio::test]
async fn data_4xx_and_5xx_are_passed_through() {
    for (reply, chunking) in [
        (
            Reply::new(452, [4, 3, 1], "Insufficient system storage"),
            true,
        ),
        (
            Reply::new(452, [4, 3, 1], "Insufficient system storage"),
            false,
        ),
        (Reply::new(554, [5, 7, 1], "Message content rejected"), true),
        (
            Reply::new(554, [5, 7, 1], "Message content rejected"),
            false,
        ),
    ] {
        let mut script = Script::default();
        if !chunking {
            script.capabilities &= !EXT_CHUNKING;
        }
        script.data_reply = reply.clone();
        let sink = Sink::start(script).await.unwrap();
        let relay = relay_to(&sink, "");
        let mut tx = relay.begin();
        tx.mail_from(&mail("a@example.org")).await;
        tx.rcpt_to(&rcpt("b@example.net")).await;
        assert_eq!(tx.data(&[MSG]).await, reply);
        // The connection is still good for the next message.
        sink.script(|s| s.data_reply = Reply::new(250, [2, 0, 0], "Fine"));
        tx.mail_from(&mail("a@example.org")).await;
        tx.rcpt_to(&rcpt("b@example.net")).await;
        assert_eq!(tx.data(&[MSG]).await.code, 250);
        assert_eq!(sink.connections(), 1);
    }
}

#[tokio::test]
async fn data_354_refusal_is_passed_through() {
    let mut script = Script::default();
    script.capabilities &= !EXT_CHUNKING;
    script.data_start_reply = Reply::new(451, [4, 3, 0], "Try later");
    let (_sink, relay) = sink_and_relay(script).await;
    let mut tx = relay.begin();
    tx.mail_from(&mail("a@example.org")).await;
    tx.rcpt_to(&rcpt("b@example.net")).await;
    assert_eq!(tx.data(&[MSG]).await.to_bytes(), b"451 4.3.0 Try later\r\n");
}

#[tokio::test]
async fn next_hop_timeout_and_drop_on_data_are_451_4_4_2() {
    // Each phase waits its own time (RFC 5321 §4.5.3.2): only that one is short here, so the
    // timeout must come from it.
    let long = "command_timeout = 600\ndata_init_timeout = 600\ndata_done_timeout = 600\n";
    for (stage, short, chunking) in [
        (Stage::DataEnd, "data_done_timeout", false),
        (Stage::DataEnd, "data_done_timeout", true),
        (Stage::Data, "data_init_timeout", false),
        (Stage::Mail, "command_timeout", false),
        (Stage::Rcpt, "command_timeout", false),
    ] {
        let text = "timeout";
        let mut script = Script::default();
        script.hang = Some(stage);
        if chunking {
            script.capabilities |= smtp_proto::EXT_CHUNKING;
        } else {
            script.capabilities &= !smtp_proto::EXT_CHUNKING;
        }
        let sink = Sink::start(script).await.unwrap();
        let extra = long.replace(&format!("{short} = 600"), &format!("{short} = 1"));
        let relay = relay_to(&sink, &extra);
        let mut tx = relay.begin();
        let r = match stage {
            Stage::Mail => tx.mail_from(&mail("a@example.org")).await,
            Stage::Rcpt => {
                assert_eq!(tx.mail_from(&mail("a@example.org")).await.code, 250);
                tx.rcpt_to(&rcpt("b@example.net")).await
            }
            _ => {
                tx.mail_from(&mail("a@example.org")).await;
                tx.rcpt_to(&rcpt("b@example.net")).await;
                tx.data(&[MSG]).await
            }
        };
        assert_eq!(
            r.to_bytes(),
            format!("451 4.4.2 Next hop connection failed, try again later ({text})\r\n")
                .into_bytes(),
            "{stage:?} {short}"
        );
        assert!(sink.messages().is_empty());
    }
    // A next hop that takes longer than `command_timeout` to accept the message, but not
    // longer than `data_done_timeout`, delivers.
    let mut script = Script::default();
    script.slow_data_end = Some(std::time::Duration::from_millis(2500));
    let sink = Sink::start(script).await.unwrap();
    let relay = relay_to(&sink, "command_timeout = 1\ndata_done_timeout = 30");
    let mut tx = relay.begin();
    tx.mail_from(&mail("a@example.org")).await;
    tx.rcpt_to(&rcpt("b@example.net")).await;
    assert_eq!(tx.data(&[MSG]).await.code, 250);
    assert_eq!(sink.messages().len(), 1);
    // The next hop closes the connection instead of answering the data.
    let mut script = Script::default();
    script.close = Some(Stage::DataEnd);
    let (sink, relay) = sink_and_relay(script).await;
    let mut tx = relay.begin();
    tx.mail_from(&mail("a@example.org")).await;
    tx.rcpt_to(&rcpt("b@example.net")).await;
    assert_eq!(
        tx.data(&[MSG]).await.to_bytes(),
        b"451 4.4.2 Next hop connection failed, try again later (connection lost)\r\n"
    );
    // Not retried: the next hop had the whole message and might have taken it.
    assert_eq!(sink.connections(), 1);
}

#[tokio::test]
async fn next_hop_421_is_not_passed_through() {
    let mut script = Script::default();
    script.mail_reply = Reply::new(421, [4, 3, 2], "Shutting down");
    let (_sink, relay) = sink_and_relay(script).await;
    let mut tx = relay.begin();
    assert_eq!(
        tx.mail_from(&mail("a@example.org")).await.to_bytes(),
        b"451 4.4.2 Next hop connection failed, try again later (connection closed)\r\n"
    );
}

#[tokio::test]
async fn mail_and_the_first_recipient_go_out_in_one_write() {
    let mut script = Script::default();
    script.rcpt_replies.insert(
        "bad@example.net".into(),
        Reply::new(550, [5, 1, 1], "No such user"),
    );
    let (sink, relay) = sink_and_relay(script).await;
    let mut tx = relay.begin();
    assert_eq!(
        tx.mail_rcpt(&mail("a@example.org"), &rcpt("one@example.net"))
            .await
            .unwrap()
            .to_bytes(),
        b"250 2.1.5 Recipient OK\r\n"
    );
    assert_eq!(tx.rcpt_to(&rcpt("two@example.net")).await.code, 250);
    assert_eq!(tx.data(&[MSG]).await.code, 250);
    // The next transaction on the pooled connection: a refused first recipient is passed
    // through, the transaction stays open for the next one.
    let mut tx = relay.begin();
    assert_eq!(
        tx.mail_rcpt(&mail("c@example.org"), &rcpt("bad@example.net"))
            .await
            .unwrap()
            .to_bytes(),
        b"550 5.1.1 No such user\r\n"
    );
    assert!(tx.recipients().is_empty());
    assert_eq!(tx.rcpt_to(&rcpt("three@example.net")).await.code, 250);
    assert_eq!(tx.data(&[MSG]).await.code, 250);
    let batches = sink.batches();
    for pair in [
        ["MAIL FROM:<a@example.org>", "RCPT TO:<one@example.net>"],
        ["MAIL FROM:<c@example.org>", "RCPT TO:<bad@example.net>"],
    ] {
        assert!(
            batches.contains(&pair.map(String::from).to_vec()),
            "{batches:?}"
        );
    }
    let m = sink.messages();
    assert_eq!(m.len(), 2);
    assert_eq!(
        m[0].rcpt_to,
        ["RCPT TO:<one@example.net>", "RCPT TO:<two@example.net>"]
    );
    assert_eq!(m[1].rcpt_to, ["RCPT TO:<three@example.net>"]);
    assert_eq!(sink.connections(), 1);
}

#[tokio::test]
async fn a_refused_sender_with_the_first_recipient_opens_nothing() {
    let mut script = Script::default();
    script.mail_reply = Reply::new(553, [5, 7, 1], "Sender rejected");
    let (sink, relay) = sink_and_relay(script).await;
    let mut tx = relay.begin();
    let r = tx
        .mail_rcpt(&mail("a@example.org"), &rcpt("one@example.net"))
        .await
        .unwrap_err();
    assert_eq!(r.to_bytes(), b"553 5.7.1 Sender rejected\r\n");
    assert!(tx.recipients().is_empty());
    assert_eq!(
        tx.data(&[MSG]).await.to_bytes(),
        b"503 5.5.1 Bad sequence of commands (need MAIL before DATA)\r\n"
    );
    assert!(sink.messages().is_empty());
}

#[tokio::test]
async fn without_pipelining_mail_and_the_first_recipient_are_sent_one_by_one() {
    let mut script = Script::default();
    script.capabilities &= !EXT_PIPELINING;
    let (sink, relay) = sink_and_relay(script).await;
    let mut tx = relay.begin();
    let r = tx
        .mail_rcpt(&mail("a@example.org"), &rcpt("one@example.net"))
        .await
        .unwrap();
    assert_eq!(r.code, 250);
    assert_eq!(tx.data(&[MSG]).await.code, 250);
    let batches = sink.batches();
    assert!(batches.iter().all(|b| b.len() == 1), "{batches:?}");
    assert_eq!(sink.messages()[0].data, MSG);
}

#[tokio::test]
async fn a_pooled_connection_closed_right_after_its_last_reply_is_replaced_at_mail() {
    let (sink, relay) = sink_and_relay(Script::default()).await;
    let mut tx = relay.begin();
    assert!(
        tx.mail_rcpt(&mail("a@example.org"), &rcpt("b@example.net"))
            .await
            .is_ok()
    );
    assert_eq!(tx.data(&[MSG]).await.code, 250);
    drop(tx);
    // Closed within a moment of its last reply: the pool hands it out without a socket check
    // (`seems_alive`), MAIL fails on it, and a new connection takes the transaction.
    sink.kill_connections().await;
    let mut tx = relay.begin();
    let r = tx
        .mail_rcpt(&mail("c@example.org"), &rcpt("d@example.net"))
        .await
        .unwrap();
    assert_eq!(r.code, 250, "{r}");
    assert_eq!(tx.data(&[MSG]).await.code, 250);
    assert_eq!(sink.connections(), 2);
    let m = sink.messages();
    assert_eq!(m.len(), 2);
    assert_eq!(m[1].mail_from, "MAIL FROM:<c@example.org>");
    assert_eq!(m[1].connection, 2);
}

#[tokio::test]
async fn pooled_connection_is_reused_and_reset() {
    let sink = Sink::start(Script::default()).await.unwrap();
    let relay = relay_to(&sink, "pool_size = 2");
    for i in 0..3 {
        let mut tx = relay.begin();
        tx.mail_from(&mail("a@example.org")).await;
        tx.rcpt_to(&rcpt("b@example.net")).await;
        assert_eq!(
            tx.data(&[format!("msg {i}\r\n").as_bytes()]).await.code,
            250
        );
    }
    assert_eq!(sink.connections(), 1);
    assert_eq!(relay.idle_connections(), 1);
    // An aborted transaction leaves the connection needing a RSET, sent with the next MAIL.
    let mut tx = relay.begin();
    tx.mail_from(&mail("a@example.org")).await;
    tx.rcpt_to(&rcpt("b@example.net")).await;
    tx.reset().await;
    tx.mail_from(&mail("c@example.org")).await;
    tx.rcpt_to(&rcpt("d@example.net")).await;
    assert_eq!(tx.data(&[MSG]).await.code, 250);
    let batches = sink.batches();
    assert!(
        batches.contains(&vec![
            "RSET".to_string(),
            "MAIL FROM:<c@example.org>".to_string()
        ]),
        "{batches:?}"
    );
    assert_eq!(sink.connections(), 1);
    assert_eq!(sink.messages().len(), 4);
    assert_eq!(sink.messages()[3].mail_from, "MAIL FROM:<c@example.org>");
}

#[tokio::test]
async fn concurrent_transactions_use_separate_connections_and_pool_is_bounded() {
    let sink = Sink::start(Script::default()).await.unwrap();
    let relay = relay_to(&sink, "pool_size = 1");
    let mut a = relay.begin();
    let mut b = relay.begin();
    a.mail_from(&mail("a@example.org")).await;
    b.mail_from(&mail("b@example.org")).await;
    a.rcpt_to(&rcpt("x@example.net")).await;
    b.rcpt_to(&rcpt("y@example.net")).await;
    assert_eq!(a.data(&[b"A\r\n"]).await.code, 250);
    assert_eq!(b.data(&[b"B\r\n"]).await.code, 250);
    assert_eq!(sink.connections(), 2);
    assert_eq!(relay.idle_connections(), 1);
    let m = sink.messages();
    assert_eq!(m[0].data, b"A\r\n");
    assert_eq!(m[1].data, b"B\r\n");
    assert_ne!(m[0].connection, m[1].connection);
}

#[tokio::test]
async fn dead_pooled_connection_is_replaced_transparently() {
    let (sink, relay) = sink_and_relay(Script::default()).await;
    let mut tx = relay.begin();
    tx.mail_from(&mail("a@example.org")).await;
    tx.rcpt_to(&rcpt("b@example.net")).await;
    assert_eq!(tx.data(&[MSG]).await.code, 250);
    assert_eq!(relay.idle_connections(), 1);
    sink.kill_connections().await;
    assert_eq!(
        tx.mail_from(&mail("a@example.org")).await.to_bytes(),
        b"250 2.1.0 Sender OK\r\n"
    );
    tx.rcpt_to(&rcpt("b@example.net")).await;
    assert_eq!(tx.data(&[MSG]).await.code, 250);
    assert_eq!(sink.connections(), 2);
    assert_eq!(sink.messages().len(), 2);
}

#[tokio::test]
async fn pooled_connection_failing_at_mail_is_replaced_transparently() {
    let (sink, relay) = sink_and_relay(Script::default()).await;
    let mut tx = relay.begin();
    tx.mail_from(&mail("a@example.org")).await;
    tx.rcpt_to(&rcpt("b@example.net")).await;
    assert_eq!(tx.data(&[MSG]).await.code, 250);
    // Looks alive while idle, but the next hop drops it when the MAIL arrives.
    sink.script(|s| s.close_once = Some(Stage::Mail));
    assert_eq!(tx.mail_from(&mail("a@example.org")).await.code, 250);
    tx.rcpt_to(&rcpt("b@example.net")).await;
    assert_eq!(tx.data(&[MSG]).await.code, 250);
    assert_eq!(sink.connections(), 2);
    assert_eq!(sink.messages()[1].connection, 2);
}

#[tokio::test]
async fn connection_lost_before_data_reconnects_and_replays() {
    for chunking in [false, true] {
        lost_before_data(chunking).await;
    }
}

async fn lost_before_data(chunking: bool) {
    let mut script = Script::default();
    if !chunking {
        script.capabilities &= !EXT_CHUNKING;
    }
    let (sink, relay) = sink_and_relay(script).await;
    let mut tx = relay.begin();
    let from = MailFrom {
        address: "a@example.org".into(),
        size: Some(100),
        body: Some(Body::EightBitMime),
        ..MailFrom::default()
    };
    tx.mail_from(&from).await;
    tx.rcpt_to(&rcpt("one@example.net")).await;
    sink.script(|s| {
        s.rcpt_replies
            .insert("bad@example.net".into(), Reply::new(550, [5, 1, 1], "No"));
    });
    assert_eq!(tx.rcpt_to(&rcpt("bad@example.net")).await.code, 550);
    tx.rcpt_to(&rcpt("two@example.net")).await;
    // e.g. a long Cryptshare upload in between: the next hop dropped us.
    sink.kill_connections().await;
    let r = tx.data(&[RECEIVED, MSG]).await;
    assert_eq!(r.code, 250, "{r}");
    assert_eq!(sink.connections(), 2);
    let m = &sink.messages()[0];
    assert_eq!(m.connection, 2);
    assert_eq!(
        m.mail_from,
        "MAIL FROM:<a@example.org> SIZE=100 BODY=8BITMIME"
    );
    assert_eq!(
        m.rcpt_to,
        vec![
            "RCPT TO:<one@example.net>".to_string(),
            "RCPT TO:<two@example.net>".into()
        ]
    );
    assert_eq!(m.data, [RECEIVED, MSG].concat());
    assert_eq!(m.bdat, chunking);
    // MAIL and both recipients went out in one pipelined write on the new connection.
    assert!(sink.batches().contains(&vec![
        "MAIL FROM:<a@example.org> SIZE=100 BODY=8BITMIME".to_string(),
        "RCPT TO:<one@example.net>".into(),
        "RCPT TO:<two@example.net>".into(),
    ]));
}

#[tokio::test]
async fn replay_refused_is_a_temporary_failure() {
    let (sink, relay) = sink_and_relay(Script::default()).await;
    let mut tx = relay.begin();
    tx.mail_from(&mail("a@example.org")).await;
    tx.rcpt_to(&rcpt("one@example.net")).await;
    sink.kill_connections().await;
    sink.script(|s| {
        s.rcpt_replies
            .insert("one@example.net".into(), Reply::new(550, [5, 1, 1], "Gone"));
    });
    assert_eq!(
        tx.data(&[MSG]).await.to_bytes(),
        b"451 4.4.2 Next hop connection failed, try again later (envelope refused on reconnect)\r\n"
    );
    assert!(sink.messages().is_empty());
}

#[tokio::test]
async fn extensions_follow_the_next_hop() {
    let (_sink, relay) = sink_and_relay(Script::default()).await;
    let e = relay.extensions().await;
    assert!(e.eight_bit_mime && e.smtputf8 && e.dsn && e.chunking && e.binarymime);
    // Learned once, then cached; the probing connection went to the pool.
    assert_eq!(relay.idle_connections(), 1);

    let mut script = Script::default();
    script.capabilities = EXT_PIPELINING | EXT_BINARY_MIME; // BINARYMIME without CHUNKING
    let sink2 = Sink::start(script).await.unwrap();
    let relay2 = relay_to(&sink2, "");
    let e = relay2.extensions().await;
    assert!(!e.eight_bit_mime && !e.smtputf8 && !e.dsn && !e.binarymime);
    assert!(e.chunking, "inbound BDAT is relayed with DATA");

    let mut script = Script::default();
    script.capabilities = EXT_SMTP_UTF8 | EXT_DSN | EXT_CHUNKING;
    let sink3 = Sink::start(script).await.unwrap();
    let e = relay_to(&sink3, "").extensions().await;
    assert!(e.smtputf8 && e.dsn && !e.eight_bit_mime && !e.binarymime);
}

fn info() -> ConnectionInfo {
    ConnectionInfo {
        peer: "127.0.0.1:40000".parse().unwrap(),
        local: "127.0.0.1:2525".parse().unwrap(),
        helo: "client.test".into(),
        esmtp: true,
        tls: false,
        auth_user: None,
        may_relay: true,
        peer_probe: Default::default(),
    }
}

#[tokio::test]
async fn pass_through_handler_relays_received_header_and_message() {
    let sink = Sink::start(Script::default()).await.unwrap();
    let factory = PassThrough::new(relay_to(&sink, ""));
    let mut h = factory.handler();
    assert!(h.extensions().await.chunking);
    let from = MailFrom {
        address: "a@example.org".into(),
        size: Some(42),
        ..MailFrom::default()
    };
    let to = RcptTo {
        address: "b@example.net".into(),
        notify: Notify {
            failure: true,
            ..Notify::default()
        },
        orcpt: Some("b@example.net".into()),
    };
    assert_eq!(h.mail_from(&info(), &from).await.code, 250);
    assert_eq!(h.rcpt_to(&info(), &to).await.code, 250);
    let t = Transaction {
        queue_id: "Q1".into(),
        mail_from: from,
        rcpts: vec![to],
        received: RECEIVED.to_vec(),
        message: Spooled::from_bytes(MSG),
        client: Default::default(),
    };
    assert_eq!(h.data(&info(), t).await.code, 250);
    h.reset().await;
    let m = &sink.messages()[0];
    assert_eq!(m.mail_from, "MAIL FROM:<a@example.org> SIZE=42");
    assert_eq!(
        m.rcpt_to,
        vec!["RCPT TO:<b@example.net> NOTIFY=FAILURE ORCPT=rfc822;b@example.net".to_string()]
    );
    assert_eq!(m.data, [RECEIVED, MSG].concat());
}

// --- maildir --------------------------------------------------------------------------------

#[tokio::test]
async fn maildir_stores_exact_bytes_atomically_with_envelope_sidecar() {
    let dir = tempfile::tempdir().unwrap();
    let md = dir.path().join("out");
    let (cfg, _d) = config(&format!("maildir:{}", md.display()), "");
    let relay = Relay::new(&cfg).unwrap();
    let e = relay.extensions().await;
    assert!(e.binarymime && e.chunking && e.eight_bit_mime && e.smtputf8 && e.dsn);
    let mut tx = relay.begin();
    let from = MailFrom {
        address: "a@example.org".into(),
        body: Some(Body::EightBitMime),
        envid: Some("E1".into()),
        ..MailFrom::default()
    };
    assert_eq!(tx.mail_from(&from).await.code, 250);
    tx.rcpt_to(&rcpt("b@example.net")).await;
    tx.rcpt_to(&RcptTo {
        address: "c@example.net".into(),
        notify: Notify {
            success: true,
            delay: true,
            ..Notify::default()
        },
        orcpt: Some("c@example.net".into()),
    })
    .await;
    // No trailing CRLF and a dot line: stored exactly as given.
    let body: &[u8] = b"Subject: m\r\n\r\n.\r\nend";
    let r = tx.data(&[RECEIVED, body]).await;
    assert_eq!(r.code, 250);
    assert_eq!(r.enhanced, Some([2, 0, 0]));

    let names: Vec<_> = std::fs::read_dir(md.join("new"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(names.len(), 1);
    assert!(r.lines[0].contains(&names[0]), "{r}");
    assert_eq!(
        std::fs::read(md.join("new").join(&names[0])).unwrap(),
        [RECEIVED, body].concat()
    );
    assert_eq!(std::fs::read_dir(md.join("tmp")).unwrap().count(), 0);
    let env: serde_json::Value = serde_json::from_slice(
        &std::fs::read(md.join("envelope").join(format!("{}.json", names[0]))).unwrap(),
    )
    .unwrap();
    assert_eq!(
        env,
        serde_json::json!({
            "mail_from": "a@example.org",
            "size": null,
            "body": "8BITMIME",
            "smtputf8": false,
            "ret": null,
            "envid": "E1",
            "rcpt_to": [
                {"address": "b@example.net", "notify": [], "orcpt": null},
                {"address": "c@example.net", "notify": ["SUCCESS", "DELAY"], "orcpt": "c@example.net"}
            ],
            "message_size": RECEIVED.len() + body.len()
        })
    );

    // A second message gets its own file.
    tx.mail_from(&mail("")).await;
    tx.rcpt_to(&rcpt("b@example.net")).await;
    assert_eq!(tx.data(&[b""]).await.code, 250);
    let mut names2: Vec<_> = std::fs::read_dir(md.join("new"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    names2.sort();
    assert_eq!(names2.len(), 2);
    assert_eq!(std::fs::read_dir(md.join("envelope")).unwrap().count(), 2);
}

#[tokio::test]
async fn maildir_that_cannot_be_written_is_a_local_tempfail() {
    let dir = tempfile::tempdir().unwrap();
    let md = dir.path().join("out");
    let (cfg, _d) = config(&format!("maildir:{}", md.display()), "");
    let relay = Relay::new(&cfg).unwrap();
    // Replace tmp/ by a file: the write fails even for root.
    std::fs::remove_dir(md.join("tmp")).unwrap();
    std::fs::write(md.join("tmp"), b"").unwrap();
    let mut tx = relay.begin();
    tx.mail_from(&mail("a@example.org")).await;
    tx.rcpt_to(&rcpt("b@example.net")).await;
    assert_eq!(
        tx.data(&[MSG]).await.to_bytes(),
        b"451 4.3.0 Local error, try again later (cannot store message)\r\n"
    );
    assert_eq!(std::fs::read_dir(md.join("new")).unwrap().count(), 0);
}

// --- STARTTLS through the configuration ------------------------------------------------------

fn tls_sink_pki() -> (String, std::sync::Arc<rustls::ServerConfig>) {
    cryptshare_gateway::install_crypto_provider();
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = rcgen::CertifiedIssuer::self_signed(ca_params, ca_key).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["mx.internal.test".to_string()])
        .unwrap()
        .signed_by(&key, &ca)
        .unwrap();
    let server = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.der().clone()],
            rustls::pki_types::PrivateKeyDer::try_from(key.serialize_der()).unwrap(),
        )
        .unwrap();
    (ca.pem(), std::sync::Arc::new(server))
}

#[tokio::test]
async fn relay_tls_required_with_ca_file_and_server_name() {
    let (ca_pem, server) = tls_sink_pki();
    let sink = Sink::start_tls(Script::default(), server).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, ca_pem).unwrap();
    let (cfg, _d) = config(
        &sink.addr().to_string(),
        &format!(
            "ca_file = \"{}\"\ntls_server_name = \"mx.internal.test\"",
            ca.display()
        ),
    );
    let mut cfg = cfg;
    cfg.relay.tls = cryptshare_gateway::config::NextHopTls::Required;
    let relay = Relay::new(&cfg).unwrap();
    let mut tx = relay.begin();
    assert_eq!(tx.mail_from(&mail("a@example.org")).await.code, 250);
    tx.rcpt_to(&rcpt("b@example.net")).await;
    assert_eq!(tx.data(&[MSG]).await.code, 250);
    let m = &sink.messages()[0];
    assert!(m.tls);
    assert_eq!(m.data, MSG);

    // The certificate does not match the default server name (the next hop's IP address).
    cfg.relay.tls_server_name = None;
    let relay = Relay::new(&cfg).unwrap();
    let mut tx = relay.begin();
    assert_eq!(
        tx.mail_from(&mail("a@example.org")).await.to_bytes(),
        b"451 4.4.1 Next hop unavailable, try again later (TLS failed)\r\n"
    );
    assert_eq!(sink.messages().len(), 1);
}

#[tokio::test]
async fn parameters_that_cannot_be_downgraded_are_refused() {
    let mut script = Script::default();
    script.capabilities = EXT_PIPELINING | EXT_CHUNKING;
    let (sink, relay) = sink_and_relay(script).await;
    let mut tx = relay.begin();
    let binary = MailFrom {
        address: "a@example.org".into(),
        body: Some(Body::BinaryMime),
        ..MailFrom::default()
    };
    assert_eq!(
        tx.mail_from(&binary).await.to_bytes(),
        b"554 5.6.3 BODY=BINARYMIME cannot be relayed: the next hop does not support it\r\n"
    );
    let utf8 = MailFrom {
        address: "jörg@example.org".into(),
        smtputf8: true,
        ..MailFrom::default()
    };
    assert_eq!(tx.mail_from(&utf8).await.code, 553);
    // An ASCII sender with SMTPUTF8 is relayed without the parameter.
    let ascii = MailFrom {
        address: "a@example.org".into(),
        smtputf8: true,
        ..MailFrom::default()
    };
    assert_eq!(tx.mail_from(&ascii).await.code, 250);
    tx.rcpt_to(&rcpt("b@example.net")).await;
    assert_eq!(tx.data(&[MSG]).await.code, 250);
    assert_eq!(sink.messages()[0].mail_from, "MAIL FROM:<a@example.org>");
    assert!(
        !sink
            .commands()
            .iter()
            .any(|(_, c)| c.contains("BINARYMIME"))
    );
}

#[tokio::test]
async fn binarymime_goes_out_with_bdat_byte_exact() {
    let (sink, relay) = sink_and_relay(Script::default()).await;
    let mut tx = relay.begin();
    let binary = MailFrom {
        address: "a@example.org".into(),
        body: Some(Body::BinaryMime),
        ..MailFrom::default()
    };
    assert_eq!(tx.mail_from(&binary).await.code, 250);
    tx.rcpt_to(&rcpt("b@example.net")).await;
    let content: &[u8] =
        b"Content-Type: application/octet-stream\r\n\r\n\x00\xff\r.\n.\r\n\r\n.\r\n\x00";
    assert_eq!(tx.data(&[RECEIVED, content]).await.code, 250);
    let m = &sink.messages()[0];
    assert_eq!(m.mail_from, "MAIL FROM:<a@example.org> BODY=BINARYMIME");
    assert!(m.bdat);
    assert_eq!(m.data, [RECEIVED, content].concat());
}

#[tokio::test]
async fn silent_next_hop_at_greeting_is_451_4_4_1_after_connect_timeout() {
    let mut script = Script::default();
    script.hang = Some(Stage::Greeting);
    let sink = Sink::start(script).await.unwrap();
    let relay = relay_to(&sink, "connect_timeout = 1\ncommand_timeout = 600");
    let mut tx = relay.begin();
    assert_eq!(
        tx.mail_from(&mail("a@example.org")).await.to_bytes(),
        b"451 4.4.1 Next hop unavailable, try again later (session refused)\r\n"
    );
}

#[tokio::test]
async fn close_idle_quits_pooled_connections() {
    let (sink, relay) = sink_and_relay(Script::default()).await;
    relay.extensions().await;
    assert_eq!(relay.idle_connections(), 1);
    relay.close_idle().await;
    assert_eq!(relay.idle_connections(), 0);
    let cmds: Vec<String> = sink.commands().into_iter().map(|(_, c)| c).collect();
    assert_eq!(cmds, vec!["EHLO gw.test".to_string(), "QUIT".into()]);
}

#[tokio::test]
async fn failed_opportunistic_tls_falls_back_to_plaintext_required_does_not() {
    let (_ca, server) = tls_sink_pki();
    let mut script = Script::default();
    script.broken_tls = true;
    let sink = Sink::start_tls(script, server).await.unwrap();
    let (mut cfg, _d) = config(&sink.addr().to_string(), "");
    cfg.relay.tls = cryptshare_gateway::config::NextHopTls::Opportunistic;
    let relay = Relay::new(&cfg).unwrap();
    let mut tx = relay.begin();
    assert_eq!(tx.mail_from(&mail("a@example.org")).await.code, 250);
    tx.rcpt_to(&rcpt("b@example.net")).await;
    assert_eq!(tx.data(&[MSG]).await.code, 250);
    let m = &sink.messages()[0];
    assert!(!m.tls);
    assert_eq!(m.connection, 2);
    let first: Vec<String> = sink
        .commands()
        .into_iter()
        .filter(|(c, _)| *c == 1)
        .map(|(_, c)| c)
        .collect();
    assert_eq!(first, vec!["EHLO gw.test".to_string(), "STARTTLS".into()]);

    cfg.relay.tls = cryptshare_gateway::config::NextHopTls::Required;
    let relay = Relay::new(&cfg).unwrap();
    let mut tx = relay.begin();
    assert_eq!(
        tx.mail_from(&mail("a@example.org")).await.to_bytes(),
        b"451 4.4.1 Next hop unavailable, try again later (TLS failed)\r\n"
    );
    assert_eq!(sink.connections(), 3);
}

#[tokio::test]
async fn spilled_message_is_streamed_from_the_memory_map() {
    use cryptshare_gateway::store::spool::SpoolWriter;
    let dir = tempfile::tempdir().unwrap();
    let mut w = SpoolWriter::new(64 * 1024, dir.path());
    let mut want = Vec::new();
    let mut i = 0u32;
    while want.len() < 3 * 1024 * 1024 {
        let line = format!(".{i:08} {}\r\n", "x".repeat((i % 97) as usize));
        w.write(line.as_bytes()).unwrap();
        want.extend_from_slice(line.as_bytes());
        i += 1;
    }
    let spooled = w.finish().unwrap();
    assert!(spooled.is_spilled());
    for chunking in [true, false] {
        let mut script = Script::default();
        if !chunking {
            script.capabilities &= !EXT_CHUNKING;
        }
        let sink = Sink::start(script).await.unwrap();
        let relay = relay_to(&sink, "");
        let mut tx = relay.begin();
        tx.mail_from(&mail("a@example.org")).await;
        tx.rcpt_to(&rcpt("b@example.net")).await;
        assert_eq!(tx.data(&[RECEIVED, spooled.as_bytes()]).await.code, 250);
        let m = &sink.messages()[0];
        assert_eq!(m.bdat, chunking);
        assert!(m.data == [RECEIVED, &want].concat(), "chunking={chunking}");
    }
}
