//! The relay against Postfix `smtp-sink` as a real next hop (`apt-get install postfix`).
//!
//! smtp-sink's dump file (`-d`) holds its own trace headers (`X-Mail-Args:`, `X-Rcpt-Args:`, a
//! three-line `Received:`), then the message as received after dot-unstuffing with each CRLF
//! written as LF, then one empty line. The comparison below is byte-exact under exactly that
//! transformation. smtp-sink 3.7 does not offer CHUNKING, so this path is DATA; BDAT is covered
//! against the test sink.

mod e2e_support;
mod support;

use cryptshare_gateway::config::Config;
use cryptshare_gateway::envelope::{Body, MailFrom, Notify, RcptTo};
use cryptshare_gateway::outbound::Relay;
use cryptshare_gateway_testkit::envelope::rcpt;
use e2e_support::SmtpSink;

/// A relay to `sink`, from a config file as an operator would write it.
fn relay_to(sink: &SmtpSink) -> (Relay, tempfile::TempDir) {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("gw.toml");
    std::fs::write(
        &p,
        format!(
            "[server]\nhostname = \"gw.test\"\n[relay]\nnext_hop = \"127.0.0.1:{}\"\ntls = \"off\"\ncommand_timeout = 30\n",
            sink.port
        ),
    )
    .unwrap();
    let cfg = Config::load_with_env(&p, []).unwrap();
    (Relay::new(&cfg).unwrap(), d)
}

/// Split a dump into (smtp-sink trace headers, message part).
fn split_dump(dump: &[u8]) -> (String, Vec<u8>) {
    let text = String::from_utf8_lossy(dump);
    // The trace ends with the 3-line Received header: "Received: …\n\tby …\n\t<date>\n".
    let start = text.find("Received: from ").expect("trace Received header");
    let mut end = start;
    for _ in 0..3 {
        end += text[end..].find('\n').unwrap() + 1;
    }
    (text[..end].to_string(), dump[end..].to_vec())
}

fn as_dumped(message: &[u8]) -> Vec<u8> {
    let mut v = String::from_utf8(message.to_vec())
        .unwrap()
        .replace("\r\n", "\n")
        .into_bytes();
    v.push(b'\n');
    v
}

fn find_dump(sink: &SmtpSink, marker: &str) -> Vec<u8> {
    sink.dumps()
        .into_iter()
        .find(|b| String::from_utf8_lossy(b).contains(marker))
        .unwrap_or_else(|| panic!("no dump contains {marker:?} in {:?}", sink.dump_dir()))
}

#[tokio::test]
async fn smtp_sink_stores_exactly_what_was_relayed_via_data() {
    let sink = SmtpSink::start(&[]);
    let (relay, _d) = relay_to(&sink);
    let received = b"Received: from client.test ([127.0.0.1]) by gw.test with ESMTP id Q1;\r\n\tFri, 27 Nov 2026 10:00:00 +0000\r\n";
    let mut big = String::new();
    for i in 0..20_000 {
        big.push_str(&format!(".{i} dotted line\r\n..two\r\nplain {i}\r\n.\r\n"));
    }
    let messages: Vec<(String, Vec<u8>)> = vec![
        ("m1".into(), b"Subject: m1\r\n\r\nHello\r\n".to_vec()),
        (
            "m2".into(),
            b"Subject: m2\r\n\r\n.leading\r\n..double\r\n.\r\nafter a lone dot\r\n".to_vec(),
        ),
        (
            "m3".into(),
            format!("Subject: m3\r\n\r\n{big}").into_bytes(),
        ),
    ];
    for (subject, msg) in &messages {
        let mut tx = relay.begin();
        let from = MailFrom {
            address: "sender@example.org".into(),
            body: Some(Body::EightBitMime),
            envid: Some(format!("env {subject}")),
            ..MailFrom::default()
        };
        assert_eq!(tx.mail_from(&from).await.code, 250);
        let to = RcptTo {
            address: "rcpt@example.net".into(),
            notify: Notify {
                success: true,
                failure: true,
                ..Notify::default()
            },
            orcpt: Some("rcpt@example.net".into()),
        };
        assert_eq!(tx.rcpt_to(&to).await.code, 250);
        assert_eq!(tx.rcpt_to(&rcpt("second@example.net")).await.code, 250);
        let r = tx.data(&[received, msg]).await;
        assert_eq!(r.to_bytes(), b"250 2.0.0 OK, relayed (Ok)\r\n");
        let dump = find_dump(&sink, &format!("Subject: {subject}\n"));
        let (trace, body) = split_dump(&dump);
        assert!(
            trace.contains(&format!(
                "X-Mail-Args: <sender@example.org> BODY=8BITMIME ENVID=env+20{subject}\n"
            )),
            "{trace}"
        );
        assert!(trace.contains(
            "X-Rcpt-Args: <rcpt@example.net> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;rcpt@example.net\nX-Rcpt-Args: <second@example.net>\n"
        ), "{trace}");
        assert!(trace.contains("X-Helo-Args: gw.test\n"), "{trace}");
        let want = as_dumped(&[received.as_slice(), msg].concat());
        assert_eq!(body.len(), want.len(), "{subject}");
        assert!(body == want, "{subject}: content differs");
    }
    // All three over one pooled connection.
    assert_eq!(relay.idle_connections(), 1);
}

#[tokio::test]
async fn smtp_sink_soft_reject_of_the_data_is_passed_through() {
    let sink = SmtpSink::start(&["-r", "."]);
    let (relay, _d) = relay_to(&sink);
    let mut tx = relay.begin();
    assert_eq!(
        tx.mail_from(&MailFrom {
            address: "a@example.org".into(),
            ..MailFrom::default()
        })
        .await
        .code,
        250
    );
    assert_eq!(tx.rcpt_to(&rcpt("b@example.net")).await.code, 250);
    assert_eq!(
        tx.data(&[b"Subject: x\r\n\r\nx\r\n"]).await.to_bytes(),
        b"450 4.3.0 Error: command failed\r\n"
    );
}

#[tokio::test]
async fn smtp_sink_hard_reject_of_recipients_is_passed_through() {
    let sink = SmtpSink::start(&["-f", "RCPT"]);
    let (relay, _d) = relay_to(&sink);
    let mut tx = relay.begin();
    assert_eq!(
        tx.mail_from(&MailFrom::default()).await.to_bytes(),
        b"250 2.1.0 Sender OK\r\n"
    );
    assert_eq!(
        tx.rcpt_to(&rcpt("b@example.net")).await.to_bytes(),
        b"500 5.3.0 Error: command failed\r\n"
    );
}
