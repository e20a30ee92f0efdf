//! The inbound session driven in-process over in-memory streams (`tokio::io::duplex`, and a
//! chunked stream where a test must control read boundaries), asserting exact reply bytes and
//! exactly what the handler was asked.

mod inbound_support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use cryptshare_gateway::smtp::session::{self, ConnectionMeta, SessionSettings, ShutdownSignal};
use cryptshare_gateway::smtp::{MailFrom, RcptTo};
use inbound_support::*;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};

const GREETING: &str = "220 mx.test ESMTP cryptshare-gateway\r\n";
const EHLO: &str = "250-mx.test\r\n250-PIPELINING\r\n250-SIZE 104857600\r\n\
250-ENHANCEDSTATUSCODES\r\n250-8BITMIME\r\n250-DSN\r\n250-SMTPUTF8\r\n250 CHUNKING\r\n";
const BYE: &str = "221 2.0.0 mx.test closing connection\r\n";
const SENDER_OK: &str = "250 2.1.0 Sender OK\r\n";
const RCPT_OK: &str = "250 2.1.5 Recipient OK\r\n";
const GO_AHEAD: &str = "354 End data with <CR><LF>.<CR><LF>\r\n";
const QUEUED: &str = "250 2.0.0 Queued\r\n";
const OK: &str = "250 2.0.0 OK\r\n";

fn settings(dir: &tempfile::TempDir) -> SessionSettings {
    SessionSettings::new("mx.test", dir.path().join("spool"))
}

fn meta(peer: &str) -> ConnectionMeta {
    ConnectionMeta {
        peer: peer.parse::<SocketAddr>().unwrap(),
        local: "127.0.0.1:25".parse().unwrap(),
        tls: false,
    }
}

const LOCAL: &str = "127.0.0.1:40000";

/// Feed `input` (all at once, then EOF) and return everything the session wrote.
async fn transcript(
    settings: SessionSettings,
    peer: &str,
    input: &[u8],
    h: &TestHandler,
) -> String {
    transcript_chunks(settings, peer, vec![input.to_vec()], h).await
}

async fn transcript_chunks(
    settings: SessionSettings,
    peer: &str,
    chunks: Vec<Vec<u8>>,
    h: &TestHandler,
) -> String {
    let stream = ChunkedStream::new(chunks);
    let out = stream.out.clone();
    session::serve(
        stream,
        meta(peer),
        h.clone(),
        Arc::new(settings),
        ShutdownSignal::never(),
    )
    .await;
    let bytes = out.lock().unwrap().clone();
    String::from_utf8(bytes).unwrap()
}

fn mail(addr: &str) -> Call {
    Call::Mail(MailFrom {
        address: addr.into(),
        ..Default::default()
    })
}

fn rcpt(addr: &str) -> Call {
    Call::Rcpt(RcptTo {
        address: addr.into(),
        ..Default::default()
    })
}

fn only_delivery(h: &TestHandler) -> Delivered {
    let d = h.deliveries();
    assert_eq!(d.len(), 1, "{:?}", h.calls());
    d.into_iter().next().unwrap()
}

#[tokio::test]
async fn every_command_has_its_exact_reply() {
    let dir = tempfile::tempdir().unwrap();
    let h = TestHandler::new();
    let input = "RCPT TO:<early@x.test>\r\n\
        MAIL FROM:<early@x.test>\r\n\
        EHLO client.test\r\n\
        HELP\r\n\
        NOOP\r\n\
        VRFY postmaster\r\n\
        EXPN staff\r\n\
        XYZZY\r\n\
        ETRN x.test\r\n\
        DATA\r\n\
        RCPT TO:<a@x.test>\r\n\
        BDAT 3 LAST\r\nabc\
        MAIL FROM:<bad address>\r\n\
        MAIL FROM:<a@b.test> FOO=BAR\r\n\
        MAIL FROM:<s@x.test>\r\n\
        MAIL FROM:<s@x.test>\r\n\
        DATA\r\n\
        RCPT TO:<>\r\n\
        RCPT TO:<bad address>\r\n\
        RCPT TO:<unknown@y.test>\r\n\
        DATA\r\n\
        RCPT TO:<r@y.test>\r\n\
        STARTTLS\r\n\
        DATA\r\n\
        Subject: hi\r\n\
        \r\n\
        ..dot-stuffed\r\n\
        .\r\n\
        RSET\r\n\
        HELO old.test\r\n\
        MAIL FROM:<s@x.test> BODY=8BITMIME\r\n\
        LHLO x\r\n\
        QUIT\r\n\
        NOOP\r\n";
    let mut s = settings(&dir);
    s.max_errors = 100;
    let out = transcript(s, LOCAL, input.as_bytes(), &h).await;
    let expected = [
        GREETING,
        "503 5.5.1 Need MAIL command first\r\n",
        "503 5.5.1 Send EHLO or HELO first\r\n",
        EHLO,
        "214 2.0.0 Commands: EHLO HELO MAIL RCPT DATA BDAT RSET NOOP QUIT HELP STARTTLS AUTH\r\n",
        OK,
        "252 2.5.0 Cannot VRFY user, but will accept message and attempt delivery\r\n",
        "502 5.5.1 Command not implemented\r\n",
        "500 5.5.1 Command unrecognized\r\n",
        "502 5.5.1 Command not implemented\r\n",
        "503 5.5.1 Need MAIL command first\r\n",
        "503 5.5.1 Need MAIL command first\r\n",
        "503 5.5.1 Need MAIL command first\r\n",
        "501 5.1.7 Bad sender address syntax\r\n",
        "555 5.5.4 Unsupported parameter FOO=BAR\r\n",
        SENDER_OK,
        "503 5.5.1 Nested MAIL command\r\n",
        "554 5.5.1 No valid recipients\r\n",
        "501 5.1.3 Bad recipient address syntax\r\n",
        "501 5.1.3 Bad recipient address syntax\r\n",
        "550 5.1.1 User unknown (next hop)\r\n",
        "554 5.5.1 No valid recipients\r\n",
        RCPT_OK,
        // Without [server.tls] STARTTLS is neither offered nor accepted.
        "502 5.5.1 Command not implemented\r\n",
        GO_AHEAD,
        QUEUED,
        OK,
        "250 mx.test\r\n",
        // After HELO no extension is in force.
        "555 5.5.4 Unsupported parameter BODY=8BITMIME\r\n",
        "502 5.5.1 Command not implemented\r\n",
        BYE,
    ]
    .concat();
    assert_eq!(out, expected);
    let d = only_delivery(&h);
    assert_eq!(d.message, b"Subject: hi\r\n\r\n.dot-stuffed\r\n");
    assert_eq!(d.rcpts, vec!["r@y.test"]);
    assert_eq!(
        h.calls(),
        vec![
            Call::Extensions,
            mail("s@x.test"),
            rcpt("unknown@y.test"),
            rcpt("r@y.test"),
            Call::Data(d.clone()),
            Call::Reset, // RSET after the finished transaction; HELO finds nothing open
        ]
    );
    // One Received header, folded, naming the client, us, the protocol and the queue id.
    let re = format!(
        "Received: from client.test ([127.0.0.1])\r\n\tby mx.test with ESMTP id {}\r\n\tfor <r@y.test>; ",
        d.queue_id
    );
    assert!(d.received.starts_with(&re), "{}", d.received);
    assert!(d.received.ends_with("\r\n"));
    assert_eq!(d.received.matches("\r\n").count(), 3);
}
