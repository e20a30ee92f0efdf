//! The inbound session driven in-process over in-memory streams (`tokio::io::duplex`, and a
//! chunked stream where a test must control read boundaries), asserting exact reply bytes and
//! exactly what the handler was asked.

mod inbound_support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::DuplexStream;

use cryptshare_gateway::envelope::{MailFrom, RcptTo};
use cryptshare_gateway::inbound::{self, ConnectionMeta, SessionSettings, ShutdownSignal};
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
        probe: Default::default(),
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
    inbound::serve(
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

/// A pipelined script with DATA, BDAT chunks whose payload looks like commands, and commands
/// between the chunks.
const PIPELINED: &str = "EHLO c.test\r\n\
    MAIL FROM:<s@x.test> SIZE=100 BODY=8BITMIME\r\n\
    RCPT TO:<a@y.test> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;a@y.test\r\n\
    RCPT TO:<b@y.test>\r\n\
    DATA\r\n\
    Subject: one\r\n\
    \r\n\
    line\r\n\
    ..stuffed\r\n\
    .\r\n\
    MAIL FROM:<s2@x.test>\r\n\
    RCPT TO:<c@y.test>\r\n\
    BDAT 10\r\n\
    QUIT\r\nabcd\
    BDAT 3\r\n\
    xyz\
    NOOP\r\n\
    BDAT 0 LAST\r\n\
    QUIT\r\n";

fn pipelined_expected() -> String {
    [
        GREETING,
        EHLO,
        SENDER_OK,
        RCPT_OK,
        RCPT_OK,
        GO_AHEAD,
        QUEUED,
        SENDER_OK,
        RCPT_OK,
        "250 2.0.0 10 octets received\r\n",
        "250 2.0.0 3 octets received\r\n",
        OK,
        QUEUED,
        BYE,
    ]
    .concat()
}

/// Calls without the parts that differ per run (queue id, date in Received).
fn stable_calls(h: &TestHandler) -> Vec<Call> {
    h.calls()
        .into_iter()
        .map(|c| match c {
            Call::Data(mut d) => {
                d.queue_id.clear();
                d.received.clear();
                Call::Data(d)
            }
            c => c,
        })
        .collect()
}

#[tokio::test]
async fn pipelined_input_split_anywhere_gives_identical_results() {
    let dir = tempfile::tempdir().unwrap();
    let input = PIPELINED.as_bytes();
    let h = TestHandler::new();
    let whole = transcript(settings(&dir), LOCAL, input, &h).await;
    assert_eq!(whole, pipelined_expected());
    let reference = stable_calls(&h);
    let msgs: Vec<_> = h.deliveries().into_iter().map(|d| d.message).collect();
    assert_eq!(
        msgs,
        vec![
            b"Subject: one\r\n\r\nline\r\n.stuffed\r\n".to_vec(),
            b"QUIT\r\nabcdxyz".to_vec()
        ]
    );
    // The DSN parameters reached the handler.
    let Call::Rcpt(first) = &reference[2] else {
        panic!("{reference:?}")
    };
    assert!(first.notify.success && first.notify.failure && !first.notify.never);
    assert_eq!(first.orcpt.as_deref(), Some("a@y.test"));

    let mut splits: Vec<Vec<Vec<u8>>> = (1..input.len())
        .map(|k| vec![input[..k].to_vec(), input[k..].to_vec()])
        .collect();
    // One byte per read, and a few three-way splits.
    splits.push(input.iter().map(|&b| vec![b]).collect());
    for (a, b) in [(3, 40), (17, 200), (150, 151), (230, 280)] {
        splits.push(vec![
            input[..a].to_vec(),
            input[a..b].to_vec(),
            input[b..].to_vec(),
        ]);
    }
    for chunks in splits {
        let h = TestHandler::new();
        let lens: Vec<_> = chunks.iter().map(Vec::len).collect();
        let out = transcript_chunks(settings(&dir), LOCAL, chunks, &h).await;
        assert_eq!(out, whole, "reads of {lens:?}");
        assert_eq!(stable_calls(&h), reference, "reads of {lens:?}");
    }
}

#[tokio::test]
async fn smuggled_end_of_data_variants_do_not_end_data() {
    for variant in [
        "\n.\r\n",
        "\r.\r\n",
        "\n.\n",
        "\r\n.\r\r\n",
        "\r\n.\r\r\r\n",
    ] {
        let dir = tempfile::tempdir().unwrap();
        let h = TestHandler::new();
        let input = format!(
            "EHLO c.test\r\nMAIL FROM:<s@x.test>\r\nRCPT TO:<r@y.test>\r\nDATA\r\n\
             Subject: x\r\n\r\nbody{variant}\
             MAIL FROM:<evil@x.test>\r\nRCPT TO:<victim@y.test>\r\nDATA\r\nsmuggled\r\n\
             \r\n.\r\nQUIT\r\n"
        );
        let out = transcript(settings(&dir), LOCAL, input.as_bytes(), &h).await;
        let expected = [
            GREETING,
            EHLO,
            SENDER_OK,
            RCPT_OK,
            GO_AHEAD,
            "554 5.5.2 Bare CR or LF before '.', or a '.' line not ended by CRLF, is not allowed (SMTP smuggling defence)\r\n",
            BYE,
        ]
        .concat();
        assert_eq!(out, expected, "variant {variant:?}");
        assert_eq!(
            h.calls(),
            vec![
                Call::Extensions,
                mail("s@x.test"),
                rcpt("r@y.test"),
                Call::Reset
            ],
            "variant {variant:?}"
        );
    }
}

#[tokio::test]
async fn bare_line_endings_without_a_dot_pass_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    let h = TestHandler::new();
    let body = "Subject: x\r\n\r\nunix\nline\rold mac\r\n\r\n..\r\n";
    let input = format!(
        "EHLO c.test\r\nMAIL FROM:<s@x.test>\r\nRCPT TO:<r@y.test>\r\nDATA\r\n{body}.\r\nQUIT\r\n"
    );
    let out = transcript(settings(&dir), LOCAL, input.as_bytes(), &h).await;
    assert_eq!(
        out,
        [GREETING, EHLO, SENDER_OK, RCPT_OK, GO_AHEAD, QUEUED, BYE].concat()
    );
    assert_eq!(
        only_delivery(&h).message,
        b"Subject: x\r\n\r\nunix\nline\rold mac\r\n\r\n.\r\n"
    );
}

#[tokio::test]
async fn empty_message_and_bdat_0_last() {
    let dir = tempfile::tempdir().unwrap();
    let h = TestHandler::new();
    let input = "EHLO c.test\r\nMAIL FROM:<>\r\nRCPT TO:<r@y.test>\r\nDATA\r\n.\r\n\
        MAIL FROM:<>\r\nRCPT TO:<r@y.test>\r\nBDAT 0 LAST\r\nQUIT\r\n";
    let out = transcript(settings(&dir), LOCAL, input.as_bytes(), &h).await;
    assert_eq!(
        out,
        [
            GREETING, EHLO, SENDER_OK, RCPT_OK, GO_AHEAD, QUEUED, SENDER_OK, RCPT_OK, QUEUED, BYE
        ]
        .concat()
    );
    let d = h.deliveries();
    assert_eq!(d.len(), 2);
    assert!(d.iter().all(|d| d.message.is_empty() && d.from.is_empty()));
    assert_ne!(d[0].queue_id, d[1].queue_id);
}

const TOO_BIG: &str = "552 5.3.4 Message size exceeds fixed maximum message size\r\n";

#[tokio::test]
async fn oversize_is_refused_while_receiving() {
    let dir = tempfile::tempdir().unwrap();
    let h = TestHandler::new();
    let mut s = settings(&dir);
    s.max_message_size = 64;
    let big = "x".repeat(70);
    let input = format!(
        "EHLO c.test\r\n\
         MAIL FROM:<s@x.test> SIZE=65\r\n\
         MAIL FROM:<s@x.test> SIZE=64\r\nRCPT TO:<r@y.test>\r\nDATA\r\n{big}\r\n.\r\n\
         MAIL FROM:<s@x.test>\r\nRCPT TO:<r@y.test>\r\nBDAT 70\r\nQUIT\r\n{}\
         BDAT 6 LAST\r\nNOOP\r\n\
         MAIL FROM:<s@x.test>\r\nRCPT TO:<r@y.test>\r\nBDAT 40\r\n{}BDAT 30 LAST\r\n{}\
         MAIL FROM:<s@x.test>\r\nRCPT TO:<r@y.test>\r\nDATA\r\nsmall\r\n.\r\nQUIT\r\n",
        "y".repeat(64),
        "z".repeat(40),
        "w".repeat(30),
    );
    let out = transcript(s, LOCAL, input.as_bytes(), &h).await;
    let ehlo = EHLO.replace("SIZE 104857600", "SIZE 64");
    let expected = [
        GREETING,
        &ehlo,
        TOO_BIG,
        SENDER_OK,
        RCPT_OK,
        GO_AHEAD,
        TOO_BIG,
        SENDER_OK,
        RCPT_OK,
        TOO_BIG,
        // The chunk pipelined after the failed one is read and dropped (RFC 3030).
        "503 5.5.1 Need MAIL command first\r\n",
        SENDER_OK,
        RCPT_OK,
        "250 2.0.0 40 octets received\r\n",
        TOO_BIG,
        SENDER_OK,
        RCPT_OK,
        GO_AHEAD,
        QUEUED,
        BYE,
    ]
    .concat();
    assert_eq!(out, expected);
    assert_eq!(only_delivery(&h).message, b"small\r\n");
}

#[tokio::test]
async fn relay_is_denied_outside_client_networks() {
    let dir = tempfile::tempdir().unwrap();
    let h = TestHandler::new();
    let input = "EHLO c.test\r\nMAIL FROM:<s@x.test>\r\nRCPT TO:<r@y.test>\r\nDATA\r\nQUIT\r\n";
    let out = transcript(settings(&dir), "192.0.2.7:1234", input.as_bytes(), &h).await;
    assert_eq!(
        out,
        [
            GREETING,
            EHLO,
            SENDER_OK,
            "554 5.7.1 Relay access denied\r\n",
            "554 5.5.1 No valid recipients\r\n",
            BYE
        ]
        .concat()
    );
    assert_eq!(
        h.calls(),
        vec![Call::Extensions, mail("s@x.test"), Call::Reset]
    );
}

#[tokio::test]
async fn recipients_beyond_the_limit_are_deferred() {
    let dir = tempfile::tempdir().unwrap();
    let h = TestHandler::new();
    let mut s = settings(&dir);
    s.max_recipients = 2;
    let input = "EHLO c.test\r\nMAIL FROM:<s@x.test>\r\nRCPT TO:<a@y.test>\r\n\
        RCPT TO:<unknown@y.test>\r\nRCPT TO:<b@y.test>\r\nRCPT TO:<c@y.test>\r\n\
        DATA\r\nx\r\n.\r\nQUIT\r\n";
    let out = transcript(s, LOCAL, input.as_bytes(), &h).await;
    assert_eq!(
        out,
        [
            GREETING,
            EHLO,
            SENDER_OK,
            RCPT_OK,
            "550 5.1.1 User unknown (next hop)\r\n",
            RCPT_OK,
            "452 4.5.3 Too many recipients\r\n",
            GO_AHEAD,
            QUEUED,
            BYE
        ]
        .concat()
    );
    let d = only_delivery(&h);
    assert_eq!(d.rcpts, vec!["a@y.test", "b@y.test"]);
    // Several recipients: no `for <…>` clause that would disclose them.
    assert!(!d.received.contains("for <"), "{}", d.received);
}

#[tokio::test]
async fn too_many_received_headers_is_a_loop() {
    let dir = tempfile::tempdir().unwrap();
    let h = TestHandler::new();
    let mut s = settings(&dir);
    s.max_received_headers = 2;
    let looped = "Received: from a\r\n\tby b; date\r\nRECEIVED: from c\r\nX: y\r\n\
        received: from d\r\n\r\nbody\r\n";
    let fine = "Received: from a\r\nReceived: from c\r\n\r\nReceived: in the body\r\n";
    let input = format!(
        "EHLO c.test\r\nMAIL FROM:<s@x.test>\r\nRCPT TO:<r@y.test>\r\nDATA\r\n{looped}.\r\n\
         MAIL FROM:<s@x.test>\r\nRCPT TO:<r@y.test>\r\nDATA\r\n{fine}.\r\nQUIT\r\n"
    );
    let out = transcript(s, LOCAL, input.as_bytes(), &h).await;
    assert_eq!(
        out,
        [
            GREETING,
            EHLO,
            SENDER_OK,
            RCPT_OK,
            GO_AHEAD,
            "554 5.4.6 Too many Received headers: mail loop detected\r\n",
            SENDER_OK,
            RCPT_OK,
            GO_AHEAD,
            QUEUED,
            BYE
        ]
        .concat()
    );
    assert_eq!(only_delivery(&h).message, fine.as_bytes());
}

#[tokio::test]
async fn over_long_lines_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let h = TestHandler::new();
    let long_cmd = format!("NOOP {}\r\n", "n".repeat(600));
    let long_mail = format!("MAIL FROM:<s@x.test> {}\r\n", "m".repeat(2100));
    let ok_text = format!("{}\r\n", "a".repeat(998));
    let long_text = format!("{}\r\n", "b".repeat(999));
    let input = format!(
        "EHLO c.test\r\n{long_cmd}{long_mail}NOOP\r\n\
         MAIL FROM:<s@x.test>\r\nRCPT TO:<r@y.test>\r\nDATA\r\n{long_text}.\r\n\
         MAIL FROM:<s@x.test>\r\nRCPT TO:<r@y.test>\r\nDATA\r\n{ok_text}.\r\nQUIT\r\n"
    );
    // Also in small reads, so that the over-long line spans several of them.
    let chunks = input.as_bytes().chunks(100).map(<[u8]>::to_vec).collect();
    let out = transcript_chunks(settings(&dir), LOCAL, chunks, &h).await;
    assert_eq!(
        out,
        [
            GREETING,
            EHLO,
            "500 5.5.6 Line too long\r\n",
            "500 5.5.6 Line too long\r\n",
            OK,
            SENDER_OK,
            RCPT_OK,
            GO_AHEAD,
            "554 5.5.6 Message contains a line longer than 1000 octets\r\n",
            SENDER_OK,
            RCPT_OK,
            GO_AHEAD,
            QUEUED,
            BYE
        ]
        .concat()
    );
    assert_eq!(only_delivery(&h).message, ok_text.as_bytes());
}

#[tokio::test]
async fn without_a_line_limit_long_lines_are_relayed_as_received() {
    let dir = tempfile::tempdir().unwrap();
    let h = TestHandler::new();
    let mut s = settings(&dir);
    s.max_line_length = 0;
    let message = format!(
        "Subject: one-line HTML\r\n\r\n<html>{}</html>\r\n",
        "<p>x</p>".repeat(2000)
    );
    let input = format!(
        "EHLO c.test\r\nMAIL FROM:<s@x.test>\r\nRCPT TO:<r@y.test>\r\nDATA\r\n{message}.\r\nQUIT\r\n"
    );
    let chunks = input.as_bytes().chunks(700).map(<[u8]>::to_vec).collect();
    let out = transcript_chunks(s, LOCAL, chunks, &h).await;
    assert_eq!(
        out,
        [GREETING, EHLO, SENDER_OK, RCPT_OK, GO_AHEAD, QUEUED, BYE].concat()
    );
    assert_eq!(only_delivery(&h).message, message.as_bytes());
}

#[tokio::test]
async fn error_limit_closes_the_session() {
    let dir = tempfile::tempdir().unwrap();
    let h = TestHandler::new();
    let mut s = settings(&dir);
    s.max_errors = 2;
    let out = transcript(s, LOCAL, b"FOO\r\nBAR\r\nBAZ\r\nNOOP\r\n", &h).await;
    assert_eq!(
        out,
        [
            GREETING,
            "500 5.5.1 Command unrecognized\r\n",
            "500 5.5.1 Command unrecognized\r\n",
            "500 5.5.1 Command unrecognized\r\n",
            "421 4.7.0 mx.test Too many errors, closing connection\r\n",
        ]
        .concat()
    );
}

#[tokio::test]
async fn handler_refusals_and_parameters_reach_the_client() {
    let dir = tempfile::tempdir().unwrap();
    let h = TestHandler::new();
    let input = "EHLO c.test\r\n\
        MAIL FROM:<tempfail@x.test>\r\n\
        RCPT TO:<r@y.test>\r\n\
        MAIL FROM:<s@x.test> RET=HDRS ENVID=QQ+2B1 SMTPUTF8 AUTH=<>\r\n\
        RCPT TO:<rcpt@y.test>\r\n\
        RSET\r\n\
        MAIL FROM:<üser@x.test>\r\n\
        QUIT\r\n";
    let out = transcript(settings(&dir), LOCAL, input.as_bytes(), &h).await;
    assert_eq!(
        out,
        [
            GREETING,
            EHLO,
            "451 4.4.1 Next hop unavailable, try again later (connection refused)\r\n",
            "503 5.5.1 Need MAIL command first\r\n",
            SENDER_OK,
            RCPT_OK,
            OK,
            "553 5.6.7 Non-ASCII address requires SMTPUTF8\r\n",
            BYE
        ]
        .concat()
    );
    let calls = h.calls();
    assert_eq!(calls[1], mail("tempfail@x.test"));
    // The failed MAIL opened something at the handler: reset before the next MAIL.
    assert_eq!(calls[2], Call::Reset);
    let Call::Mail(m) = &calls[3] else {
        panic!("{calls:?}")
    };
    assert_eq!(m.ret, Some(cryptshare_gateway::envelope::Ret::Hdrs));
    assert_eq!(m.envid.as_deref(), Some("QQ+1"));
    assert!(m.smtputf8);
    assert_eq!(m.auth.as_deref(), Some("<>"));
    assert_eq!(calls[4], rcpt("rcpt@y.test"));
    assert_eq!(calls[5], Call::Reset);
    assert_eq!(calls.len(), 6);
}

// --- Tests over a real duplex stream (timeouts, shutdown, TLS). ---

struct Client<S> {
    io: BufReader<S>,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Client<S> {
    fn new(io: S) -> Self {
        Client {
            io: BufReader::new(io),
        }
    }

    /// One complete (possibly multi-line) reply.
    async fn reply(&mut self) -> String {
        let mut all = String::new();
        loop {
            let mut line = String::new();
            let n = self.io.read_line(&mut line).await.unwrap();
            assert!(n > 0, "EOF after {all:?}");
            all.push_str(&line);
            if line.as_bytes().get(3) == Some(&b' ') {
                return all;
            }
        }
    }

    async fn send(&mut self, s: &str) {
        self.io.get_mut().write_all(s.as_bytes()).await.unwrap();
    }

    async fn cmd(&mut self, s: &str) -> String {
        self.send(s).await;
        self.reply().await
    }

    async fn eof(&mut self) -> String {
        let mut rest = String::new();
        self.io.read_to_string(&mut rest).await.unwrap();
        rest
    }
}

fn spawn_session(
    settings: SessionSettings,
    peer: &str,
    h: &TestHandler,
    signal: ShutdownSignal,
) -> (Client<DuplexStream>, tokio::task::JoinHandle<()>) {
    let (client, server) = tokio::io::duplex(64 * 1024);
    let task = tokio::spawn(inbound::serve(
        server,
        meta(peer),
        h.clone(),
        Arc::new(settings),
        signal,
    ));
    (Client::new(client), task)
}

#[tokio::test]
async fn idle_client_gets_421() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = settings(&dir);
    s.idle_timeout = Duration::from_millis(50);
    let h = TestHandler::new();
    let (mut c, task) = spawn_session(s, LOCAL, &h, ShutdownSignal::never());
    assert_eq!(c.reply().await, GREETING);
    assert_eq!(
        c.eof().await,
        "421 4.4.2 mx.test Idle timeout, closing connection\r\n"
    );
    task.await.unwrap();
}

#[tokio::test]
async fn session_time_limit_gets_421() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = settings(&dir);
    s.session_timeout = Duration::from_millis(50);
    let h = TestHandler::new();
    let (mut c, task) = spawn_session(s, LOCAL, &h, ShutdownSignal::never());
    assert_eq!(c.reply().await, GREETING);
    assert_eq!(c.cmd("NOOP\r\n").await, OK);
    assert_eq!(
        c.eof().await,
        "421 4.4.2 mx.test Session time limit exceeded, closing connection\r\n"
    );
    task.await.unwrap();
}

#[tokio::test]
async fn drain_lets_the_open_transaction_finish() {
    let dir = tempfile::tempdir().unwrap();
    let h = TestHandler::new();
    let signal = ShutdownSignal::default();
    let (mut c, task) = spawn_session(settings(&dir), LOCAL, &h, signal.clone());
    assert_eq!(c.reply().await, GREETING);
    assert_eq!(c.cmd("EHLO c.test\r\n").await, EHLO);
    assert_eq!(c.cmd("MAIL FROM:<s@x.test>\r\n").await, SENDER_OK);
    signal.drain.cancel();
    assert_eq!(c.cmd("RCPT TO:<r@y.test>\r\n").await, RCPT_OK);
    assert_eq!(c.cmd("DATA\r\n").await, GO_AHEAD);
    assert_eq!(c.cmd("hello\r\n.\r\n").await, QUEUED);
    assert_eq!(
        c.eof().await,
        "421 4.3.2 mx.test Service shutting down, closing transmission channel\r\n"
    );
    task.await.unwrap();
    assert_eq!(only_delivery(&h).message, b"hello\r\n");

    // An idle session is closed at once; abort closes one in a transaction.
    let signal = ShutdownSignal::default();
    let (mut c, task) = spawn_session(settings(&dir), LOCAL, &h, signal.clone());
    assert_eq!(c.reply().await, GREETING);
    assert_eq!(c.cmd("EHLO c.test\r\n").await, EHLO);
    assert_eq!(c.cmd("MAIL FROM:<s@x.test>\r\n").await, SENDER_OK);
    signal.drain.cancel();
    signal.abort.cancel();
    assert_eq!(
        c.eof().await,
        "421 4.3.2 mx.test Service shutting down, closing transmission channel\r\n"
    );
    task.await.unwrap();
}

// --- STARTTLS and AUTH, with a real TLS handshake over the duplex stream. ---

const EHLO_TLS_OFFER: &str = "250-mx.test\r\n250-PIPELINING\r\n250-SIZE 104857600\r\n\
250-STARTTLS\r\n250-ENHANCEDSTATUSCODES\r\n250-8BITMIME\r\n250-DSN\r\n250-SMTPUTF8\r\n250 CHUNKING\r\n";
const EHLO_AUTH_OFFER: &str = "250-mx.test\r\n250-PIPELINING\r\n250-SIZE 104857600\r\n\
250-AUTH PLAIN LOGIN\r\n250-ENHANCEDSTATUSCODES\r\n250-8BITMIME\r\n250-DSN\r\n250-SMTPUTF8\r\n250 CHUNKING\r\n";
const TLS_READY: &str = "220 2.0.0 Ready to start TLS\r\n";

/// Send STARTTLS (plus whatever `injected` plaintext rides along) and complete the handshake.
async fn starttls(
    mut c: Client<DuplexStream>,
    cert: &TestCert,
    injected: &str,
) -> Client<tokio_rustls::client::TlsStream<DuplexStream>> {
    c.send(&format!("STARTTLS\r\n{injected}")).await;
    assert_eq!(c.reply().await, TLS_READY);
    // Nothing but the 220 came before the handshake.
    assert!(c.io.buffer().is_empty());
    let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
    let tls = connector(cert)
        .connect(name, c.io.into_inner())
        .await
        .unwrap();
    Client::new(tls)
}

/// Test hashes with small argon2 parameters: the default ones take seconds in a debug build.
fn users_file(dir: &tempfile::TempDir) -> cryptshare_gateway::inbound::UserDb {
    use argon2::PasswordHasher;
    let params = argon2::Params::new(1024, 1, 1, None).unwrap();
    let a2 = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
    let salt = argon2::password_hash::SaltString::encode_b64(b"saltsaltsalt").unwrap();
    let alice = a2.hash_password(b"wonderland", &salt).unwrap().to_string();
    let bob = bcrypt::hash("builder", 4).unwrap();
    let path = dir.path().join("users");
    std::fs::write(&path, format!("alice:{alice}\nbob:{bob}\n")).unwrap();
    cryptshare_gateway::inbound::UserDb::load(&path).unwrap()
}

fn auth_settings(dir: &tempfile::TempDir, cert: &TestCert) -> SessionSettings {
    let mut s = settings(dir);
    s.tls = Some(acceptor(cert));
    s.auth = Some(inbound::AuthSettings {
        users: users_file(dir),
        allow_plaintext: false,
        failure_delay: Duration::from_millis(1),
        max_failures: 2,
        lockout: Default::default(),
    });
    s
}

fn b64(s: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(s)
}

#[tokio::test]
async fn starttls_discards_pipelined_plaintext() {
    let dir = tempfile::tempdir().unwrap();
    let cert = test_cert();
    let mut s = settings(&dir);
    s.tls = Some(acceptor(&cert));
    let h = TestHandler::new();
    let (mut c, task) = spawn_session(s, LOCAL, &h, ShutdownSignal::never());
    assert_eq!(c.reply().await, GREETING);
    assert_eq!(c.cmd("EHLO c.test\r\n").await, EHLO_TLS_OFFER);
    // The injected commands would be executed inside the TLS session by a vulnerable server.
    let mut c = starttls(c, &cert, "RSET\r\nMAIL FROM:<inject@x.test>\r\n").await;
    assert_eq!(c.cmd("EHLO c.test\r\n").await, EHLO);
    assert_eq!(
        c.cmd("STARTTLS\r\n").await,
        "503 5.5.1 TLS already active\r\n"
    );
    assert_eq!(c.cmd("MAIL FROM:<s@x.test>\r\n").await, SENDER_OK);
    assert_eq!(c.cmd("RCPT TO:<r@y.test>\r\n").await, RCPT_OK);
    assert_eq!(c.cmd("DATA\r\n").await, GO_AHEAD);
    assert_eq!(c.cmd("Subject: tls\r\n\r\nsecret\r\n.\r\n").await, QUEUED);
    assert_eq!(c.cmd("QUIT\r\n").await, BYE);
    task.await.unwrap();
    let d = only_delivery(&h);
    assert!(d.tls);
    assert_eq!(d.message, b"Subject: tls\r\n\r\nsecret\r\n");
    assert!(
        d.received.contains("by mx.test with ESMTPS id "),
        "{}",
        d.received
    );
    assert_eq!(
        h.calls()[..3],
        [Call::Extensions, Call::Extensions, mail("s@x.test")]
    );
}

#[tokio::test]
async fn auth_over_tls_lets_an_outside_client_relay() {
    let dir = tempfile::tempdir().unwrap();
    let cert = test_cert();
    let h = TestHandler::new();
    let outside = "192.0.2.7:1234";
    let (mut c, task) = spawn_session(
        auth_settings(&dir, &cert),
        outside,
        &h,
        ShutdownSignal::never(),
    );
    assert_eq!(c.reply().await, GREETING);
    // No AUTH offered or accepted in plaintext.
    assert_eq!(c.cmd("EHLO c.test\r\n").await, EHLO_TLS_OFFER);
    let plain = b64(b"\0alice\0wonderland");
    assert_eq!(
        c.cmd(&format!("AUTH PLAIN {plain}\r\n")).await,
        "538 5.7.11 Encryption required for requested authentication mechanism\r\n"
    );
    let mut c = starttls(c, &cert, "").await;
    assert_eq!(c.cmd("EHLO c.test\r\n").await, EHLO_AUTH_OFFER);
    assert_eq!(c.cmd("MAIL FROM:<s@x.test>\r\n").await, SENDER_OK);
    assert_eq!(
        c.cmd("RCPT TO:<r@y.test>\r\n").await,
        "554 5.7.1 Relay access denied\r\n"
    );
    assert_eq!(
        c.cmd(&format!("AUTH PLAIN {plain}\r\n")).await,
        "503 5.5.1 AUTH not allowed during a mail transaction\r\n"
    );
    assert_eq!(c.cmd("RSET\r\n").await, OK);
    let wrong = b64(b"\0alice\0wrong");
    assert_eq!(
        c.cmd(&format!("AUTH PLAIN {wrong}\r\n")).await,
        "535 5.7.8 Authentication credentials invalid\r\n"
    );
    assert_eq!(c.cmd("AUTH LOGIN\r\n").await, "334 VXNlcm5hbWU6\r\n");
    assert_eq!(
        c.cmd(&format!("{}\r\n", b64(b"alice"))).await,
        "334 UGFzc3dvcmQ6\r\n"
    );
    assert_eq!(
        c.cmd(&format!("{}\r\n", b64(b"wonderland"))).await,
        "235 2.7.0 Authentication successful\r\n"
    );
    assert_eq!(c.cmd("EHLO c.test\r\n").await, EHLO);
    assert_eq!(
        c.cmd(&format!("AUTH PLAIN {plain}\r\n")).await,
        "503 5.5.1 Already authenticated\r\n"
    );
    assert_eq!(c.cmd("MAIL FROM:<s@x.test>\r\n").await, SENDER_OK);
    assert_eq!(c.cmd("RCPT TO:<r@y.test>\r\n").await, RCPT_OK);
    // An authenticated client may send the content with DATA, without waiting for the 354
    // (as Postfix, which checks only unauthenticated clients for it).
    c.send("DATA\r\nhi\r\n.\r\n").await;
    assert_eq!(c.reply().await, GO_AHEAD);
    assert_eq!(c.reply().await, QUEUED);
    assert_eq!(c.cmd("QUIT\r\n").await, BYE);
    task.await.unwrap();
    let d = only_delivery(&h);
    assert_eq!(d.auth_user.as_deref(), Some("alice"));
    assert!(d.received.contains(" with ESMTPSA id "), "{}", d.received);
    assert!(
        d.received
            .starts_with("Received: from c.test ([192.0.2.7])\r\n")
    );
}

#[tokio::test]
async fn auth_failures_are_limited() {
    let dir = tempfile::tempdir().unwrap();
    let cert = test_cert();
    let h = TestHandler::new();
    let (mut c, task) = spawn_session(
        auth_settings(&dir, &cert),
        LOCAL,
        &h,
        ShutdownSignal::never(),
    );
    assert_eq!(c.reply().await, GREETING);
    assert_eq!(c.cmd("EHLO c.test\r\n").await, EHLO_TLS_OFFER);
    let mut c = starttls(c, &cert, "").await;
    assert_eq!(c.cmd("EHLO c.test\r\n").await, EHLO_AUTH_OFFER);
    assert_eq!(
        c.cmd("AUTH CRAM-MD5\r\n").await,
        "504 5.5.4 Unrecognized authentication type\r\n"
    );
    assert_eq!(c.cmd("AUTH PLAIN\r\n").await, "334 \r\n");
    assert_eq!(
        c.cmd("*\r\n").await,
        "501 5.7.0 Authentication cancelled\r\n"
    );
    assert_eq!(
        c.cmd("AUTH PLAIN !!notbase64\r\n").await,
        "501 5.5.2 Invalid base64 data\r\n"
    );
    // bcrypt user, wrong password; then an unknown user: same answer.
    assert_eq!(c.cmd("AUTH PLAIN\r\n").await, "334 \r\n");
    assert_eq!(
        c.cmd(&format!("{}\r\n", b64(b"\0bob\0wrong"))).await,
        "535 5.7.8 Authentication credentials invalid\r\n"
    );
    c.send(&format!("AUTH PLAIN {}\r\n", b64(b"\0mallory\0builder")))
        .await;
    assert_eq!(
        c.eof().await,
        "535 5.7.8 Authentication credentials invalid\r\n\
         421 4.7.0 mx.test Too many authentication failures, closing connection\r\n"
    );
    task.await.unwrap();

    // The bcrypt user with the right password.
    let (mut c, task) = spawn_session(
        auth_settings(&dir, &cert),
        LOCAL,
        &h,
        ShutdownSignal::never(),
    );
    c.reply().await;
    c.cmd("EHLO c.test\r\n").await;
    let mut c = starttls(c, &cert, "").await;
    c.cmd("EHLO c.test\r\n").await;
    assert_eq!(
        c.cmd(&format!("AUTH PLAIN {}\r\n", b64(b"bob\0bob\0builder")))
            .await,
        "235 2.7.0 Authentication successful\r\n"
    );
    assert_eq!(c.cmd("QUIT\r\n").await, BYE);
    task.await.unwrap();
}

#[tokio::test]
async fn narrowed_extensions_are_neither_offered_nor_accepted() {
    let dir = tempfile::tempdir().unwrap();
    let mut h = TestHandler::new();
    h.ext = cryptshare_gateway::envelope::Extensions {
        eight_bit_mime: true,
        smtputf8: false,
        dsn: false,
        chunking: false,
        binarymime: false,
    };
    let input = "EHLO c.test\r\n\
        MAIL FROM:<s@x.test> RET=FULL\r\n\
        MAIL FROM:<s@x.test> SMTPUTF8\r\n\
        MAIL FROM:<s@x.test> BODY=8BITMIME\r\n\
        RCPT TO:<r@y.test> NOTIFY=NEVER\r\n\
        RCPT TO:<r@y.test>\r\n\
        BDAT 6 LAST\r\nQUIT\r\n\
        RSET\r\nQUIT\r\n";
    let out = transcript(settings(&dir), LOCAL, input.as_bytes(), &h).await;
    assert_eq!(
        out,
        [
            GREETING,
            "250-mx.test\r\n250-PIPELINING\r\n250-SIZE 104857600\r\n\
             250-ENHANCEDSTATUSCODES\r\n250 8BITMIME\r\n",
            "555 5.5.4 Unsupported parameter RET/ENVID\r\n",
            "555 5.5.4 Unsupported parameter SMTPUTF8\r\n",
            SENDER_OK,
            "555 5.5.4 Unsupported parameter NOTIFY/ORCPT\r\n",
            RCPT_OK,
            // Not offered: refused, but its chunk is still read and dropped.
            "502 5.5.1 Command not implemented\r\n",
            OK,
            BYE,
        ]
        .concat()
    );
    assert!(h.deliveries().is_empty());
}

#[tokio::test]
async fn large_messages_spill_to_the_spool_directory() {
    let dir = tempfile::tempdir().unwrap();
    let h = TestHandler::new();
    let mut s = settings(&dir);
    s.spool_memory_limit = 1024;
    let body: String = (0..200)
        .map(|i| format!("line {i:04} of the body\r\n"))
        .collect();
    let input = format!(
        "EHLO c.test\r\nMAIL FROM:<s@x.test>\r\nRCPT TO:<r@y.test>\r\nDATA\r\n\
         Subject: big\r\n\r\n{body}.\r\nQUIT\r\n"
    );
    let chunks = input.as_bytes().chunks(333).map(<[u8]>::to_vec).collect();
    let out = transcript_chunks(s, LOCAL, chunks, &h).await;
    assert_eq!(
        out,
        [GREETING, EHLO, SENDER_OK, RCPT_OK, GO_AHEAD, QUEUED, BYE].concat()
    );
    let d = only_delivery(&h);
    assert!(d.spilled);
    assert_eq!(d.message, format!("Subject: big\r\n\r\n{body}").as_bytes());
    assert!(dir.path().join("spool").is_dir());
}

#[tokio::test]
async fn starttls_works_with_a_tls12_only_client() {
    let dir = tempfile::tempdir().unwrap();
    let cert = test_cert();
    let mut s = settings(&dir);
    s.tls = Some(acceptor(&cert));
    let h = TestHandler::new();
    let (mut c, task) = spawn_session(s, LOCAL, &h, ShutdownSignal::never());
    assert_eq!(c.reply().await, GREETING);
    assert_eq!(c.cmd("EHLO c.test\r\n").await, EHLO_TLS_OFFER);
    assert_eq!(c.cmd("STARTTLS\r\n").await, TLS_READY);
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert.cert_der.clone()).unwrap();
    let cfg = rustls::ClientConfig::builder_with_protocol_versions(&[&rustls::version::TLS12])
        .with_root_certificates(roots)
        .with_no_client_auth();
    let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
    let tls = tokio_rustls::TlsConnector::from(Arc::new(cfg))
        .connect(name, c.io.into_inner())
        .await
        .unwrap();
    assert_eq!(
        tls.get_ref().1.protocol_version(),
        Some(rustls::ProtocolVersion::TLSv1_2)
    );
    let mut c = Client::new(tls);
    assert_eq!(c.cmd("EHLO c.test\r\n").await, EHLO);
    assert_eq!(c.cmd("QUIT\r\n").await, BYE);
    task.await.unwrap();
}

#[tokio::test]
async fn absurd_size_duplicate_parameters_and_starttls_arguments_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let h = TestHandler::new();
    let input = "EHLO c.test\r\n\
        MAIL FROM:<s@x.test> SIZE=99999999999999999999999\r\n\
        MAIL FROM:<s@x.test> SIZE=99999999999999999999\r\n\
        MAIL FROM:<s@x.test> SIZE=9999999999999999999\r\n\
        MAIL FROM:<s@x.test> SIZE=1e5\r\n\
        MAIL FROM:<s@x.test> RET=FULL ret=HDRS\r\n\
        MAIL FROM:<s@x.test> BODY=8BITMIME BODY=8BITMIME\r\n\
        STARTTLS now\r\n\
        MAIL FROM:<s@x.test> SIZE=1525\r\n\
        RCPT TO:<r@y.test> NOTIFY=NEVER NOTIFY=NEVER\r\n\
        RCPT TO:<r@y.test>\r\n\
        QUIT\r\n";
    let mut s = settings(&dir);
    s.max_errors = 100;
    let out = transcript(s, LOCAL, input.as_bytes(), &h).await;
    let expected = [
        GREETING,
        EHLO,
        "501 5.5.4 Invalid parameter SIZE\r\n",
        // 20 digits beyond 2^64: smtp-proto's own syntax error.
        "501 5.5.4 Invalid parameter SIZE\r\n",
        "552 5.3.4 Message size exceeds fixed maximum message size\r\n",
        "501 5.5.4 Invalid parameter SIZE\r\n",
        "501 5.5.4 Duplicate parameter ret\r\n",
        "501 5.5.4 Duplicate parameter BODY\r\n",
        "501 5.5.4 Syntax: STARTTLS\r\n",
        SENDER_OK,
        // smtp-proto refuses a second NOTIFY itself.
        "501 5.5.4 Invalid parameter NOTIFY\r\n",
        RCPT_OK,
        BYE,
    ]
    .concat();
    assert_eq!(out, expected);
    let mut m = mail("s@x.test");
    if let Call::Mail(f) = &mut m {
        // Passed on with room for the Received: header.
        f.size = Some(1525 + 512 + "mx.test".len() as u64 + "c.test".len().max(7) as u64);
    }
    assert_eq!(h.calls()[1], m);
}

#[tokio::test]
async fn too_many_recipients_count_towards_the_error_limit() {
    let dir = tempfile::tempdir().unwrap();
    let h = TestHandler::new();
    let mut s = settings(&dir);
    s.max_recipients = 1;
    s.max_errors = 2;
    let input = "EHLO c.test\r\nMAIL FROM:<s@x.test>\r\nRCPT TO:<a@y.test>\r\n\
        RCPT TO:<b@y.test>\r\nRCPT TO:<c@y.test>\r\nRCPT TO:<d@y.test>\r\nRCPT TO:<e@y.test>\r\n";
    let out = transcript(s, LOCAL, input.as_bytes(), &h).await;
    let deferred = "452 4.5.3 Too many recipients\r\n";
    assert_eq!(
        out,
        [
            GREETING,
            EHLO,
            SENDER_OK,
            RCPT_OK,
            deferred,
            deferred,
            deferred,
            "421 4.7.0 mx.test Too many errors, closing connection\r\n",
        ]
        .concat()
    );
}

/// Content that arrives with the DATA line was sent before the 354 (RFC 2920 §3.1): the
/// session answers as Postfix's `smtpd_forbid_unauth_pipelining` does and closes, so that none
/// of it — here a second, smuggled transaction — is read as commands or as content. Inside
/// `client_networks` too: every real client waits for the 354 (authenticated clients are not
/// checked: `auth_over_tls_lets_an_outside_client_relay`).
#[tokio::test]
async fn content_sent_before_the_354_closes_the_connection() {
    for peer in [LOCAL, "192.0.2.9:40000"] {
        let dir = tempfile::tempdir().unwrap();
        let h = TestHandler::new();
        let input = b"EHLO c.test\r\nMAIL FROM:<s@x.test>\r\nRCPT TO:<r@y.test>\r\nDATA\r\n\
            Subject: x\r\n\r\nbody\r\n.\r\n\
            MAIL FROM:<evil@x.test>\r\nRCPT TO:<victim@y.test>\r\nDATA\r\nsmuggled\r\n.\r\nQUIT\r\n";
        let stream = ChunkedStream::eager(vec![input.to_vec()]);
        let out = stream.out.clone();
        inbound::serve(
            stream,
            meta(peer),
            h.clone(),
            Arc::new(settings(&dir)),
            ShutdownSignal::never(),
        )
        .await;
        let out = String::from_utf8(out.lock().unwrap().clone()).unwrap();
        let rcpt_reply = if peer == LOCAL {
            RCPT_OK
        } else {
            "554 5.7.1 Relay access denied\r\n"
        };
        let expected = [
            GREETING,
            EHLO,
            SENDER_OK,
            rcpt_reply,
            "554 5.5.0 Error: SMTP protocol synchronization\r\n",
        ]
        .concat();
        assert_eq!(out, expected, "peer {peer}");
        assert!(h.deliveries().is_empty(), "{:?}", h.calls());
    }
    // The same bytes from a client that waits for the 354 are two messages.
    let dir = tempfile::tempdir().unwrap();
    let h = TestHandler::new();
    let input = b"EHLO c.test\r\nMAIL FROM:<s@x.test>\r\nRCPT TO:<r@y.test>\r\nDATA\r\n\
        Subject: x\r\n\r\nbody\r\n.\r\n\
        MAIL FROM:<evil@x.test>\r\nRCPT TO:<victim@y.test>\r\nDATA\r\nsmuggled\r\n.\r\nQUIT\r\n";
    transcript(settings(&dir), LOCAL, input, &h).await;
    assert_eq!(h.deliveries().len(), 2);
}
