//! Delivery status notifications (`mime::build_dsn`): exact bytes, and what two independent
//! parsers (mail-parser and Python's `email` package) read from them.

use std::process::Command;

use chrono::{DateTime, TimeZone, Utc};
use cryptshare_gateway::mime::{
    BuiltDsn, Dsn, DsnAction, DsnError, DsnIds, DsnRecipient, DsnReturn, MAX_RETURNED_HEADERS,
    build_dsn, build_dsn_with_ids,
};
use mail_parser::{MessageParser, MimeHeaders, PartType};

const ORIGINAL: &[u8] = b"From: Alice <alice@example.com>\r\nTo: bob@example.org\r\n\
Subject: Report\r\nMessage-ID: <m1@example.com>\r\n\r\nHello\r\n";

const POLICY_REPLY: &str = "554 5.7.1 Attachments refused by the Cryptshare policy: report.pdf \
(12 MB) is larger than the limit of 10 MB";

fn t(h: u32, m: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 3, 2, h, m, 0).unwrap()
}

fn failed(address: &str) -> DsnRecipient {
    DsnRecipient {
        address: address.into(),
        orcpt: Some(address.into()),
        action: DsnAction::Failed,
        status: "5.7.1".into(),
        diagnostic: Some(POLICY_REPLY.into()),
        remote_mta: Some("127.0.0.1:10026".into()),
        last_attempt: t(9, 1),
        will_retry_until: None,
    }
}

fn delayed(address: &str) -> DsnRecipient {
    DsnRecipient {
        address: address.into(),
        orcpt: None,
        action: DsnAction::Delayed,
        status: "4.4.1".into(),
        diagnostic: Some("421 4.4.1 next hop not reachable".into()),
        remote_mta: Some("relay.example.net".into()),
        last_attempt: t(10, 30),
        will_retry_until: Some(Utc.with_ymd_and_hms(2026, 3, 7, 9, 0, 0).unwrap()),
    }
}

fn dsn<'a>(recipients: &'a [DsnRecipient], original: &'a [u8], ret: DsnReturn) -> Dsn<'a> {
    Dsn {
        reporting_mta: "gw.example.com",
        queue_id: "4F2A9C",
        envid: Some("env-1"),
        arrival: t(9, 0),
        sender: "alice@example.com",
        recipients,
        original,
        ret,
        now: t(9, 2),
    }
}

fn ids() -> DsnIds {
    DsnIds {
        message_id: "dsn.4F2A9C.fixed@gw.example.com".into(),
        boundary: "=_dsn_test".into(),
    }
}

/// Build with the fixed ids and check what holds for every report: CRLF only, no line over
/// 998 octets, ASCII unless flagged, the boundary only where it belongs.
fn build(d: &Dsn) -> BuiltDsn {
    let b = build_dsn_with_ids(d, &ids()).expect("DSN built");
    check_invariants(&b, "=_dsn_test");
    b
}

fn check_invariants(b: &BuiltDsn, boundary: &str) {
    let bytes = &b.bytes;
    for (i, &c) in bytes.iter().enumerate() {
        if c == b'\n' {
            assert!(i > 0 && bytes[i - 1] == b'\r', "bare LF at {i}");
        }
        if c == b'\r' {
            assert_eq!(bytes.get(i + 1), Some(&b'\n'), "bare CR at {i}");
        }
    }
    assert!(bytes.ends_with(b"\r\n"));
    for line in bytes.split(|&c| c == b'\n') {
        assert!(line.len() <= 999, "line of {} octets", line.len());
    }
    let (head, body) = split_head(bytes);
    assert_eq!(b.smtputf8, !head.is_ascii());
    assert_eq!(b.eight_bit, !body.is_ascii());
    let delimiter = format!("\r\n--{boundary}");
    assert_eq!(
        count(bytes, delimiter.as_bytes()),
        4,
        "3 delimiters and the close"
    );
    assert_eq!(
        count(bytes, boundary.as_bytes()),
        5,
        "and once in Content-Type"
    );
    assert!(bytes.ends_with(format!("\r\n--{boundary}--\r\n").as_bytes()));
}

fn split_head(bytes: &[u8]) -> (&[u8], &[u8]) {
    let i = find(bytes, b"\r\n\r\n").expect("header/body separator");
    (&bytes[..i + 2], &bytes[i + 4..])
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn count(hay: &[u8], needle: &[u8]) -> usize {
    hay.windows(needle.len()).filter(|w| *w == needle).count()
}

fn text(b: &BuiltDsn) -> &str {
    std::str::from_utf8(&b.bytes).expect("UTF-8")
}

/// The bytes of part 3 (between its header and the closing delimiter).
fn part3(b: &BuiltDsn) -> &[u8] {
    let bytes = &b.bytes;
    let start = find(bytes, b"Content-Description: Und")
        .or_else(|| find(bytes, b"Content-Description: Delayed Message"))
        .expect("part 3");
    let body = start + find(&bytes[start..], b"\r\n\r\n").unwrap() + 4;
    let end = bytes.len() - "\r\n--=_dsn_test--\r\n".len();
    &bytes[body..end]
}

const PYTHON: &str = r#"
import sys, email
from email import policy
m = email.message_from_bytes(open(sys.argv[1], 'rb').read(), policy=policy.default)
out = []
out.append(f"{m.get_content_type()} report-type={m.get_param('report-type')}")
out.append(f"defects={sum(len(p.defects) for p in m.walk())}")
for h in ('To', 'Subject', 'Auto-Submitted'):
    out.append(f"{h}: {m[h]}")
parts = m.get_payload()
out.append(f"parts={len(parts)}")
p1, p2, p3 = parts
out.append(f"1 {p1.get_content_type()} charset={p1.get_content_charset()} cte={p1['Content-Transfer-Encoding']}")
out.extend(p1.get_content().replace('\r\n', '\n').rstrip('\n').split('\n'))
out.append(f"2 {p2.get_content_type()}")
for block in p2.get_payload():
    out.append('[')
    for k, v in block.items():
        out.append(f"{k}: {v}")
out.append(f"3 {p3.get_content_type()} cte={p3['Content-Transfer-Encoding']}")
if p3.get_content_type() == 'message/rfc822':
    inner = p3.get_payload()[0]
    for k, v in inner.items():
        out.append(f"{k}: {v}")
    out.append(ascii(inner.get_payload(decode=True)))
else:
    out.append(ascii(p3.get_payload()))
sys.stdout.buffer.write(('\n'.join(out) + '\n').encode('utf-8', 'backslashreplace'))
"#;

/// What Python's `email` package reads from the report.
fn python(b: &BuiltDsn) -> String {
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), &b.bytes).unwrap();
    let out = Command::new("python3")
        .arg("-c")
        .arg(PYTHON)
        .arg(file.path())
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "python3 failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// `"…\n…"` with CRLF.
fn crlf(s: &str) -> String {
    s.replace('\n', "\r\n")
}

#[test]
fn failure_report_exact_bytes() {
    let r = [failed("bob@example.org")];
    let b = build(&dsn(&r, ORIGINAL, DsnReturn::Headers));
    let expected = crlf(
        r#"From: Mail Delivery System <MAILER-DAEMON@gw.example.com>
To: <alice@example.com>
Subject: Undelivered Mail Returned to Sender
Date: Mon, 02 Mar 2026 09:02:00 +0000
Message-ID: <dsn.4F2A9C.fixed@gw.example.com>
Auto-Submitted: auto-replied
MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status;
	boundary="=_dsn_test"

This is a MIME-encapsulated message.

--=_dsn_test
Content-Description: Notification
Content-Type: text/plain; charset=utf-8
Content-Transfer-Encoding: 7bit

This is the mail system at gw.example.com.

Your message could not be delivered to one or more recipients.

Queue ID: 4F2A9C
Arrival date: Mon, 02 Mar 2026 09:00:00 +0000

Failed recipients:

  <bob@example.org>
    Status: 5.7.1 (permanent failure)
    Remote server: 127.0.0.1:10026
    Reply: 554 5.7.1 Attachments refused by the Cryptshare policy: report.pdf
        (12 MB) is larger than the limit of 10 MB
    Last attempt: Mon, 02 Mar 2026 09:01:00 +0000

The headers of your message are attached.

--=_dsn_test
Content-Description: Delivery report
Content-Type: message/delivery-status

Original-Envelope-Id: env-1
Reporting-MTA: dns; gw.example.com
Arrival-Date: Mon, 02 Mar 2026 09:00:00 +0000
X-Gateway-Queue-ID: 4F2A9C

Original-Recipient: rfc822; bob@example.org
Final-Recipient: rfc822; bob@example.org
Action: failed
Status: 5.7.1
Remote-MTA: dns; 127.0.0.1:10026
Diagnostic-Code: smtp; 554 5.7.1 Attachments refused by the Cryptshare policy:
 report.pdf (12 MB) is larger than the limit of 10 MB
Last-Attempt-Date: Mon, 02 Mar 2026 09:01:00 +0000

--=_dsn_test
Content-Description: Undelivered Message Headers
Content-Type: text/rfc822-headers

From: Alice <alice@example.com>
To: bob@example.org
Subject: Report
Message-ID: <m1@example.com>

--=_dsn_test--
"#,
    );
    assert_eq!(text(&b), expected);
    assert_eq!(b.message_id, "dsn.4F2A9C.fixed@gw.example.com");
    assert_eq!(b.returned, DsnReturn::Headers);
    assert!(!b.eight_bit && !b.smtputf8);
    // Our own header and machine lines stay within 78 columns.
    for line in text(&b).split("\r\n") {
        assert!(line.len() <= 78, "{line:?}");
    }
}

#[test]
fn failure_report_structure_with_mail_parser() {
    let r = [failed("bob@example.org"), failed("carol@example.org")];
    let b = build(&dsn(&r, ORIGINAL, DsnReturn::Headers));
    let m = MessageParser::default().parse(&b.bytes).expect("parses");
    let ct = m.content_type().expect("content type");
    assert_eq!((ct.ctype(), ct.subtype()), ("multipart", Some("report")));
    assert_eq!(ct.attribute("report-type"), Some("delivery-status"));
    assert_eq!(ct.attribute("boundary"), Some("=_dsn_test"));
    assert_eq!(m.subject(), Some("Undelivered Mail Returned to Sender"));
    assert_eq!(m.message_id(), Some("dsn.4F2A9C.fixed@gw.example.com"));
    let from = m.from().and_then(|a| a.first()).expect("From");
    assert_eq!(from.name(), Some("Mail Delivery System"));
    assert_eq!(from.address(), Some("MAILER-DAEMON@gw.example.com"));
    let to = m.to().and_then(|a| a.first()).expect("To");
    assert_eq!(to.address(), Some("alice@example.com"));
    assert_eq!(m.header_raw("Auto-Submitted"), Some(" auto-replied\r\n"));

    let PartType::Multipart(children) = &m.parts[0].body else {
        panic!("root is not multipart: {:?}", m.parts[0].body);
    };
    let types: Vec<String> = children
        .iter()
        .map(|&i| {
            let ct = m.parts[i as usize].content_type().unwrap();
            format!("{}/{}", ct.ctype(), ct.subtype().unwrap_or(""))
        })
        .collect();
    assert_eq!(
        types,
        [
            "text/plain",
            "message/delivery-status",
            "text/rfc822-headers"
        ]
    );
    let human = &m.parts[children[0] as usize];
    assert_eq!(
        human.content_type().unwrap().attribute("charset"),
        Some("utf-8")
    );
    let PartType::Text(body) = &human.body else {
        panic!("text part: {:?}", human.body)
    };
    assert!(body.contains("  <bob@example.org>\r\n    Status: 5.7.1 (permanent failure)"));
    assert!(body.contains("  <carol@example.org>\r\n    Status: 5.7.1 (permanent failure)"));

    let status = m.parts[children[1] as usize].contents();
    let status = std::str::from_utf8(status).unwrap();
    let blocks: Vec<&str> = status.split("\r\n\r\n").collect();
    assert_eq!(blocks.len(), 3, "{status:?}");
    assert!(
        blocks[0].starts_with("Original-Envelope-Id: env-1\r\nReporting-MTA: dns; gw.example.com")
    );
    assert!(blocks[1].contains("Final-Recipient: rfc822; bob@example.org\r\nAction: failed"));
    assert!(blocks[2].contains("Final-Recipient: rfc822; carol@example.org\r\nAction: failed"));

    let headers = m.parts[children[2] as usize].contents();
    assert_eq!(
        headers,
        &ORIGINAL[..find(ORIGINAL, b"\r\n\r\n").unwrap() + 2]
    );
}

#[test]
fn failure_report_as_python_reads_it() {
    let r = [failed("bob@example.org")];
    let b = build(&dsn(&r, ORIGINAL, DsnReturn::Headers));
    assert_eq!(
        python(&b),
        r#"multipart/report report-type=delivery-status
defects=0
To: alice@example.com
Subject: Undelivered Mail Returned to Sender
Auto-Submitted: auto-replied
parts=3
1 text/plain charset=utf-8 cte=7bit
This is the mail system at gw.example.com.

Your message could not be delivered to one or more recipients.

Queue ID: 4F2A9C
Arrival date: Mon, 02 Mar 2026 09:00:00 +0000

Failed recipients:

  <bob@example.org>
    Status: 5.7.1 (permanent failure)
    Remote server: 127.0.0.1:10026
    Reply: 554 5.7.1 Attachments refused by the Cryptshare policy: report.pdf
        (12 MB) is larger than the limit of 10 MB
    Last attempt: Mon, 02 Mar 2026 09:01:00 +0000

The headers of your message are attached.
2 message/delivery-status
[
Original-Envelope-Id: env-1
Reporting-MTA: dns; gw.example.com
Arrival-Date: Mon, 02 Mar 2026 09:00:00 +0000
X-Gateway-Queue-ID: 4F2A9C
[
Original-Recipient: rfc822; bob@example.org
Final-Recipient: rfc822; bob@example.org
Action: failed
Status: 5.7.1
Remote-MTA: dns; 127.0.0.1:10026
Diagnostic-Code: smtp; 554 5.7.1 Attachments refused by the Cryptshare policy: report.pdf (12 MB) is larger than the limit of 10 MB
Last-Attempt-Date: Mon, 02 Mar 2026 09:01:00 +0000
3 text/rfc822-headers cte=None
'From: Alice <alice@example.com>\r\nTo: bob@example.org\r\nSubject: Report\r\nMessage-ID: <m1@example.com>\r\n'
"#
    );
}

#[test]
fn delay_report_returns_headers_even_with_ret_full() {
    let r = [delayed("dave@example.net")];
    let d = Dsn {
        envid: None,
        ..dsn(&r, ORIGINAL, DsnReturn::Full)
    };
    let b = build(&d);
    assert_eq!(b.returned, DsnReturn::Headers);
    assert_eq!(
        python(&b),
        r#"multipart/report report-type=delivery-status
defects=0
To: alice@example.com
Subject: Delayed Mail (still being retried)
Auto-Submitted: auto-replied
parts=3
1 text/plain charset=utf-8 cte=7bit
This is the mail system at gw.example.com.

Delivery of your message to one or more recipients is delayed.
It is still being retried; you do not need to send it again.

Queue ID: 4F2A9C
Arrival date: Mon, 02 Mar 2026 09:00:00 +0000

Delayed recipients:

  <dave@example.net>
    Status: 4.4.1 (temporary failure)
    Remote server: relay.example.net
    Reply: 421 4.4.1 next hop not reachable
    Last attempt: Mon, 02 Mar 2026 10:30:00 +0000
    Retrying until: Sat, 07 Mar 2026 09:00:00 +0000

The headers of your message are attached.
2 message/delivery-status
[
Reporting-MTA: dns; gw.example.com
Arrival-Date: Mon, 02 Mar 2026 09:00:00 +0000
X-Gateway-Queue-ID: 4F2A9C
[
Final-Recipient: rfc822; dave@example.net
Action: delayed
Status: 4.4.1
Remote-MTA: dns; relay.example.net
Diagnostic-Code: smtp; 421 4.4.1 next hop not reachable
Last-Attempt-Date: Mon, 02 Mar 2026 10:30:00 +0000
Will-Retry-Until: Sat, 07 Mar 2026 09:00:00 +0000
3 text/rfc822-headers cte=None
'From: Alice <alice@example.com>\r\nTo: bob@example.org\r\nSubject: Report\r\nMessage-ID: <m1@example.com>\r\n'
"#
    );
    assert!(text(&b).contains("\r\nContent-Description: Delayed Message Headers\r\n"));
}

#[test]
fn mixed_report_failures_win_and_ret_full_returns_the_message() {
    let mut expired = failed("erin@example.org");
    expired.status = "4.4.7".into();
    expired.diagnostic = None;
    expired.remote_mta = None;
    // Will-Retry-Until belongs to delayed recipients only.
    expired.will_retry_until = Some(t(12, 0));
    let r = [delayed("dave@example.net"), expired];
    let b = build(&dsn(&r, ORIGINAL, DsnReturn::Full));
    assert_eq!(b.returned, DsnReturn::Full);
    assert!(!b.eight_bit);
    assert_eq!(part3(&b), ORIGINAL);
    assert_eq!(
        python(&b),
        r#"multipart/report report-type=delivery-status
defects=0
To: alice@example.com
Subject: Undelivered Mail Returned to Sender
Auto-Submitted: auto-replied
parts=3
1 text/plain charset=utf-8 cte=7bit
This is the mail system at gw.example.com.

Your message could not be delivered to one or more recipients.
Delivery to the delayed recipients below is still being retried.

Queue ID: 4F2A9C
Arrival date: Mon, 02 Mar 2026 09:00:00 +0000

Failed recipients:

  <erin@example.org>
    Status: 4.4.7 (temporary failure, no longer retried)
    Last attempt: Mon, 02 Mar 2026 09:01:00 +0000

Delayed recipients:

  <dave@example.net>
    Status: 4.4.1 (temporary failure)
    Remote server: relay.example.net
    Reply: 421 4.4.1 next hop not reachable
    Last attempt: Mon, 02 Mar 2026 10:30:00 +0000
    Retrying until: Sat, 07 Mar 2026 09:00:00 +0000

Your message is attached.
2 message/delivery-status
[
Original-Envelope-Id: env-1
Reporting-MTA: dns; gw.example.com
Arrival-Date: Mon, 02 Mar 2026 09:00:00 +0000
X-Gateway-Queue-ID: 4F2A9C
[
Final-Recipient: rfc822; dave@example.net
Action: delayed
Status: 4.4.1
Remote-MTA: dns; relay.example.net
Diagnostic-Code: smtp; 421 4.4.1 next hop not reachable
Last-Attempt-Date: Mon, 02 Mar 2026 10:30:00 +0000
Will-Retry-Until: Sat, 07 Mar 2026 09:00:00 +0000
[
Original-Recipient: rfc822; erin@example.org
Final-Recipient: rfc822; erin@example.org
Action: failed
Status: 4.4.7
Last-Attempt-Date: Mon, 02 Mar 2026 09:01:00 +0000
3 message/rfc822 cte=None
From: Alice <alice@example.com>
To: bob@example.org
Subject: Report
Message-ID: <m1@example.com>
b'Hello\r\n'
"#
    );
}

#[test]
fn ret_full_with_an_8bit_original_keeps_it_byte_for_byte() {
    let original = "From: alice@example.com\r\nSubject: Grüße\r\n\
Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n\
Grüße aus Köln\r\n.\r\n..leading dots\r\n"
        .as_bytes();
    let r = [failed("bob@example.org")];
    let b = build(&dsn(&r, original, DsnReturn::Full));
    assert_eq!(b.returned, DsnReturn::Full);
    assert!(b.eight_bit, "8-bit body: BODY=8BITMIME");
    assert!(!b.smtputf8);
    assert_eq!(part3(&b), original);
    let (head, _) = split_head(&b.bytes);
    assert!(find(head, b"\r\nContent-Transfer-Encoding: 8bit\r\n").is_some());
    assert!(text(&b).contains(
        "Content-Description: Undelivered Message\r\nContent-Type: message/rfc822\r\n\
Content-Transfer-Encoding: 8bit\r\n\r\nFrom: alice@example.com\r\n"
    ));
    let py = python(&b);
    let tail = py.split_once("3 message/rfc822").expect(&py).1;
    assert_eq!(
        tail,
        r#" cte=8bit
From: alice@example.com
Subject: Grüße
Content-Type: text/plain; charset="utf-8"
Content-Transfer-Encoding: 8bit
b'Gr\xc3\xbc\xc3\x9fe aus K\xc3\xb6ln\r\n.\r\n..leading dots\r\n'
"#
    );
    assert!(py.starts_with("multipart/report report-type=delivery-status\ndefects=0\n"));

    let m = MessageParser::default().parse(&b.bytes).unwrap();
    let inner = m
        .parts
        .iter()
        .find_map(|p| match &p.body {
            PartType::Message(inner) => Some(inner),
            _ => None,
        })
        .expect("a message/rfc822 part");
    assert_eq!(inner.subject(), Some("Grüße"));
    assert_eq!(
        inner.body_text(0).as_deref(),
        Some("Grüße aus Köln\r\n.\r\n..leading dots\r\n")
    );
}

#[test]
fn malformed_original_headers_are_normalised() {
    // No header/body separator, bare LF, a bare CR, a NUL and a 1500-octet line.
    let mut original = b"Subject: no separator\nX-Bare-CR: a\rX-Nul: a\0b\nX-Long: ".to_vec();
    original.extend(std::iter::repeat_n(b'x', 1500));
    original.extend_from_slice(b"\nTo: bob@example.org");
    let r = [failed("bob@example.org")];

    let mut expected = b"Subject: no separator\r\nX-Bare-CR: a\r\nX-Nul: ab\r\nX-Long: ".to_vec();
    expected.extend(std::iter::repeat_n(b'x', 998 - 8));
    expected.extend_from_slice(b"\r\n ");
    expected.extend(std::iter::repeat_n(b'x', 1500 - (998 - 8)));
    expected.extend_from_slice(b"\r\nTo: bob@example.org\r\n");

    let b = build(&dsn(&r, &original, DsnReturn::Headers));
    assert_eq!(part3(&b), expected);
    // RET=FULL cannot carry a NUL or a 998+ line in 8BITMIME: the headers go instead.
    let full = build(&dsn(&r, &original, DsnReturn::Full));
    assert_eq!(full.returned, DsnReturn::Headers);
    assert_eq!(part3(&full), expected);
    assert!(text(&full).contains("\r\nThe headers of your message are attached.\r\n"));
    assert!(python(&full).contains("\n3 text/rfc822-headers cte=None\n"));

    // A bare-LF blank line ends the header block.
    let lf = b"Subject: lf only\nFrom: a@example.com\n\nNot-A-Header: body\n.\nlast line";
    let b = build(&dsn(&r, lf, DsnReturn::Headers));
    assert_eq!(part3(&b), b"Subject: lf only\r\nFrom: a@example.com\r\n");
    // RET=FULL: the same message with CRLF line endings.
    let b = build(&dsn(&r, lf, DsnReturn::Full));
    assert_eq!(b.returned, DsnReturn::Full);
    assert_eq!(
        part3(&b),
        b"Subject: lf only\r\nFrom: a@example.com\r\n\r\nNot-A-Header: body\r\n.\r\nlast line"
    );
    let py = python(&b);
    assert!(
        py.ends_with(
            "3 message/rfc822 cte=None\nSubject: lf only\nFrom: a@example.com\n\
b'Not-A-Header: body\\r\\n.\\r\\nlast line'\n"
        ),
        "{py}"
    );

    // No headers at all.
    let b = build(&dsn(&r, b"\r\nbody only\r\n", DsnReturn::Headers));
    assert_eq!(part3(&b), b"");
    let b = build(&dsn(&r, b"", DsnReturn::Headers));
    assert_eq!(part3(&b), b"");
}

#[test]
fn huge_header_block_is_capped_at_whole_lines() {
    let mut original = Vec::new();
    for i in 0..20_000 {
        original.extend_from_slice(format!("X-Filler-{i:05}: {}\r\n", "y".repeat(20)).as_bytes());
    }
    original.extend_from_slice(b"\r\nbody\r\n");
    let r = [failed("bob@example.org")];
    let b = build(&dsn(&r, &original, DsnReturn::Headers));
    let headers = part3(&b);
    let line = "X-Filler-00000: yyyyyyyyyyyyyyyyyyyy\r\n".len();
    assert_eq!(headers.len(), MAX_RETURNED_HEADERS / line * line);
    assert_eq!(headers, &original[..headers.len()]);
    assert!(headers.len() <= MAX_RETURNED_HEADERS);

    // A long line that would be folded across the cap is left out whole, not cut.
    let mut original = Vec::new();
    for i in 0..1700 {
        original.extend_from_slice(format!("X-Filler-{i:05}: {}\r\n", "y".repeat(20)).as_bytes());
    }
    let kept = original.len();
    original.extend_from_slice(format!("X-Long: {}\r\n", "z".repeat(3000)).as_bytes());
    original.extend_from_slice(b"X-After: 1\r\n\r\nbody\r\n");
    let b = build(&dsn(&r, &original, DsnReturn::Headers));
    assert_eq!(part3(&b), &original[..kept]);
}

#[test]
fn quoted_local_parts_stay_as_sent() {
    let mut r = failed(r#""a b"@example.org"#);
    r.orcpt = Some(r#""a b"+orig@example.org"#.into());
    let d = Dsn {
        sender: r#""alice smith"@example.com"#,
        ..dsn(std::slice::from_ref(&r), ORIGINAL, DsnReturn::Headers)
    };
    let b = build(&d);
    let t = text(&b);
    assert!(t.contains("\r\nTo: <\"alice smith\"@example.com>\r\n"));
    assert!(t.contains("\r\n  <\"a b\"@example.org>\r\n"));
    assert!(t.contains(
        "\r\nOriginal-Recipient: rfc822; \"a b\"+orig@example.org\r\n\
Final-Recipient: rfc822; \"a b\"@example.org\r\n"
    ));
    let py = python(&b);
    assert!(py.contains("\nTo: \"alice smith\"@example.com\n"), "{py}");
    assert!(
        py.contains(
            "\n[\nOriginal-Recipient: rfc822; \"a b\"+orig@example.org\n\
Final-Recipient: rfc822; \"a b\"@example.org\nAction: failed\nStatus: 5.7.1\n"
        ),
        "{py}"
    );
}

#[test]
fn utf8_addresses_use_the_rfc6533_utf8_type_in_a_7bit_report() {
    let mut r = failed("jörg+dsn@bücher.example");
    r.diagnostic = Some("550 5.1.1 Unbekannter Empfänger".into());
    let d = Dsn {
        sender: "zoë@example.com",
        ..dsn(std::slice::from_ref(&r), ORIGINAL, DsnReturn::Headers)
    };
    let b = build(&d);
    assert!(b.smtputf8, "UTF-8 in To:");
    assert!(!b.eight_bit, "the body stays 7-bit");
    let t = text(&b);
    assert!(t.contains("\r\nTo: <zoë@example.com>\r\n"));
    assert!(t.contains("\r\nContent-Transfer-Encoding: quoted-printable\r\n"));
    assert!(t.contains("\r\n  <j=C3=B6rg+dsn@b=C3=BCcher.example>\r\n"));
    assert!(t.contains(
        "\r\nOriginal-Recipient: utf-8; j\\x{F6}rg\\x{2B}dsn@b\\x{FC}cher.example\r\n\
Final-Recipient: utf-8; j\\x{F6}rg\\x{2B}dsn@b\\x{FC}cher.example\r\n"
    ));
    assert!(t.contains("\r\nDiagnostic-Code: smtp; 550 5.1.1 Unbekannter Empf\\x{E4}nger\r\n"));
    let py = python(&b);
    assert!(py.contains("\nTo: zoë@example.com\n"), "{py}");
    assert!(py.contains("\n1 text/plain charset=utf-8 cte=quoted-printable\n"));
    assert!(
        py.contains(
            "\n  <jörg+dsn@bücher.example>\n    Status: 5.7.1 (permanent failure)\n    \
Remote server: 127.0.0.1:10026\n    Reply: 550 5.1.1 Unbekannter Empfänger\n"
        ),
        "{py}"
    );
    assert!(py.contains("\nFinal-Recipient: utf-8; j\\x{F6}rg\\x{2B}dsn@b\\x{FC}cher.example\n"));
}

#[test]
fn injection_attempts_are_stripped() {
    let r = DsnRecipient {
        address: "carol@example.org\r\nX-Injected: 1".into(),
        orcpt: Some("carol@example.org\n\nAction: delivered".into()),
        action: DsnAction::Failed,
        status: "5.1.1\r\nX-Status: 2.0.0".into(),
        diagnostic: Some(
            "550 5.1.1 no such user\r\nAction: delivered\r\n\r\nFinal-Recipient: rfc822; \
evil@example.net\u{202E}fdp.exe\u{0}\u{1b}[31m\u{2066}red\u{85}end"
                .into(),
        ),
        remote_mta: Some("mx.example.net\r\nRemote-MTA: dns; evil".into()),
        last_attempt: t(9, 1),
        will_retry_until: None,
    };
    let d = Dsn {
        sender: "alice@example.com\r\nBcc: victim@example.net",
        envid: Some("env\r\nX-Env: 1"),
        queue_id: "4F2A9C\r\nX-Queue: 2",
        ..dsn(std::slice::from_ref(&r), ORIGINAL, DsnReturn::Headers)
    };
    let b = build(&d);
    let t = text(&b);
    for bad in [
        "\r\nX-Injected",
        "\r\nAction: delivered",
        "\r\nX-Status",
        "\r\nBcc",
        "\r\nX-Env",
        "\r\nX-Queue",
        "\r\nRemote-MTA: dns; evil",
        "\r\n\r\nFinal-Recipient: rfc822; evil",
        "\u{202E}",
        "\u{2066}",
        "\u{85}",
        "\u{1b}",
        "\0",
    ] {
        assert!(!t.contains(bad), "{bad:?} in\n{t}");
    }
    assert!(t.contains("\r\nTo: <alice@example.comBcc: victim@example.net>\r\n"));
    assert!(t.contains("\r\n  <carol@example.orgX-Injected: 1>\r\n"));
    let py = python(&b);
    let status = py
        .split_once("\n2 message/delivery-status\n")
        .unwrap()
        .1
        .split_once("\n3 ")
        .unwrap()
        .0;
    assert_eq!(
        status,
        r#"[
Original-Envelope-Id: envX-Env: 1
Reporting-MTA: dns; gw.example.com
Arrival-Date: Mon, 02 Mar 2026 09:00:00 +0000
X-Gateway-Queue-ID: 4F2A9C X-Queue: 2
[
Original-Recipient: rfc822; carol@example.orgAction: delivered
Final-Recipient: rfc822; carol@example.orgX-Injected: 1
Action: failed
Status: 5.0.0
Remote-MTA: dns; mx.example.net Remote-MTA: dns; evil
Diagnostic-Code: smtp; 550 5.1.1 no such user Action: delivered Final-Recipient: rfc822; evil@example.netfdp.exe [31mred end
Last-Attempt-Date: Mon, 02 Mar 2026 09:01:00 +0000"#
    );
    assert!(py.starts_with("multipart/report report-type=delivery-status\ndefects=0\n"));
}

#[test]
fn long_diagnostics_are_folded_and_capped() {
    let mut r = failed("bob@example.org");
    let words = format!("554 5.7.1 {}", "word ".repeat(600));
    r.diagnostic = Some(words.clone());
    let b = build(&dsn(std::slice::from_ref(&r), ORIGINAL, DsnReturn::Headers));
    let t = text(&b);
    let field = &t[t.find("\r\nDiagnostic-Code: ").unwrap() + 2..];
    let field = &field[..field.find("\r\nLast-Attempt-Date").unwrap()];
    assert!(field.split("\r\n").count() > 20);
    for line in field.split("\r\n") {
        assert!(line.len() <= 78, "{line:?}");
    }
    // Capped at 2000 octets of the (single-spaced) reply.
    assert_eq!(
        field.replace("\r\n", ""),
        format!("Diagnostic-Code: smtp; {}...", &words[..2000])
    );

    // One 1500-octet word: folded onto a line of its own, then broken with an inserted space
    // to stay within 998.
    r.diagnostic = Some(format!("554 {}", "x".repeat(1500)));
    let b = build(&dsn(std::slice::from_ref(&r), ORIGINAL, DsnReturn::Headers));
    let t = text(&b);
    let expected = format!(
        "\r\nDiagnostic-Code: smtp; 554\r\n {}\r\n {}\r\nLast-Attempt-Date: ",
        "x".repeat(997),
        "x".repeat(503)
    );
    assert!(t.contains(&expected), "{t}");
    let py = python(&b);
    let diag = py
        .lines()
        .find(|l| l.starts_with("Diagnostic-Code: "))
        .unwrap();
    assert_eq!(
        diag,
        format!(
            "Diagnostic-Code: smtp; 554 {} {}",
            "x".repeat(997),
            "x".repeat(503)
        )
    );
    // The text part goes quoted-printable rather than carry a 1500-octet line.
    assert!(text(&b).contains("\r\nContent-Transfer-Encoding: quoted-printable\r\n"));
    assert!(py.contains(&format!("\n    Reply: 554\n        {}\n", "x".repeat(1500))));
}

#[test]
fn random_ids_differ_and_avoid_the_content() {
    let r = [failed("bob@example.org")];
    let d = dsn(&r, ORIGINAL, DsnReturn::Headers);
    let a = build_dsn(&d).unwrap();
    let b = build_dsn(&d).unwrap();
    assert_ne!(a.message_id, b.message_id);
    for x in [&a, &b] {
        let (left, right) = x.message_id.split_once('@').unwrap();
        assert_eq!(right, "gw.example.com");
        let rnd = left.strip_prefix("20260302090200.4F2A9C.").expect(left);
        assert_eq!(rnd.len(), 16);
        assert!(rnd.bytes().all(|c| c.is_ascii_alphanumeric()));
        let t = text(x);
        assert!(t.contains(&format!("\r\nMessage-ID: <{}>\r\n", x.message_id)));
        let boundary = t
            .split_once("\tboundary=\"")
            .unwrap()
            .1
            .split_once('"')
            .unwrap()
            .0;
        assert_eq!(boundary.len(), "=_dsn_".len() + 32);
        check_invariants(x, boundary);
    }
    assert_ne!(
        text(&a).split_once("boundary=").unwrap().1[..40],
        text(&b).split_once("boundary=").unwrap().1[..40]
    );
    assert_eq!(DsnIds::random(&d).message_id.len(), a.message_id.len());
}

#[test]
fn refused_inputs() {
    let r = [failed("bob@example.org")];
    let base = dsn(&r, ORIGINAL, DsnReturn::Headers);
    for sender in ["", "<>", "\r\n"] {
        let d = Dsn {
            sender,
            ..base.clone()
        };
        assert_eq!(build_dsn(&d), Err(DsnError::NullSender), "{sender:?}");
    }
    let long = format!("{}@example.com", "a".repeat(1000));
    let d = Dsn {
        sender: &long,
        ..base.clone()
    };
    assert_eq!(build_dsn(&d), Err(DsnError::SenderTooLong(long.len())));
    let d = Dsn {
        recipients: &[],
        ..base.clone()
    };
    assert_eq!(build_dsn(&d), Err(DsnError::NoRecipients));
    for mta in [
        "",
        "gw example.com",
        "gw..example.com",
        "gw\r\n.example.com",
        "gw.exämple.com",
    ] {
        let d = Dsn {
            reporting_mta: mta,
            ..base.clone()
        };
        assert!(
            matches!(build_dsn(&d), Err(DsnError::ReportingMta(_))),
            "{mta:?}"
        );
    }
    let long_host = format!("{}.example", "a".repeat(250));
    let long_literal = format!("[{}]", "1".repeat(300));
    for mta in [&long_host, &long_literal] {
        let d = Dsn {
            reporting_mta: mta,
            ..base.clone()
        };
        assert!(matches!(build_dsn(&d), Err(DsnError::ReportingMta(_))));
    }
    let d = Dsn {
        reporting_mta: "[192.0.2.1]",
        ..base.clone()
    };
    assert!(build_dsn(&d).is_ok());

    for (message_id, boundary) in [
        ("no-at-sign", "=_ok"),
        ("a b@gw.example.com", "=_ok"),
        ("<x@gw.example.com>", "=_ok"),
        ("x@gw.example.com", ""),
        ("x@gw.example.com", "with space"),
        ("x@gw.example.com", "quote\"d"),
    ] {
        let ids = DsnIds {
            message_id: message_id.into(),
            boundary: boundary.into(),
        };
        assert!(
            matches!(
                build_dsn_with_ids(&base, &ids),
                Err(DsnError::InvalidIds(_))
            ),
            "{ids:?}"
        );
    }
    let long_boundary = DsnIds {
        message_id: "x@gw.example.com".into(),
        boundary: "b".repeat(71),
    };
    assert!(matches!(
        build_dsn_with_ids(&base, &long_boundary),
        Err(DsnError::InvalidIds(_))
    ));

    // A boundary that occurs in the original (or in any other part) is refused.
    let original = b"Subject: x\r\n\r\n--=_dsn_test\r\n";
    let d = Dsn {
        original,
        ret: DsnReturn::Full,
        ..base.clone()
    };
    assert_eq!(
        build_dsn_with_ids(&d, &ids()),
        Err(DsnError::BoundaryInContent)
    );
    let mut r2 = failed("bob@example.org");
    r2.diagnostic = Some("550 see =_dsn_test".into());
    let d = Dsn {
        recipients: std::slice::from_ref(&r2),
        ..base.clone()
    };
    assert_eq!(
        build_dsn_with_ids(&d, &ids()),
        Err(DsnError::BoundaryInContent)
    );
    // With random ids the same inputs build.
    assert!(build_dsn(&d).is_ok());
}

#[test]
fn odd_statuses_long_addresses_and_utf8_header_lines() {
    let mut bad = failed("bob@example.org");
    bad.status = "5.7.1000".into();
    let mut class3 = delayed("dave@example.net");
    class3.status = "3.1.1".into();
    let mut short = failed("carol@example.org");
    short.status = " 5.1 ".into();
    // 600 non-ASCII characters: 3600 octets of \x{E9}, one word, broken to fit 998.
    let mut long = failed(&format!("{}@example.org", "é".repeat(600)));
    long.orcpt = None;
    let r = [bad, class3, short, long];
    let mut original = b"Subject: ".to_vec();
    original.extend("ü".repeat(1000).as_bytes());
    original.extend_from_slice(b"\r\nFrom: a@example.com\r\n\r\nbody\r\n");
    let b = build(&dsn(&r, &original, DsnReturn::Headers));

    let py = python(&b);
    let statuses: Vec<&str> = py.lines().filter(|l| l.starts_with("Status: ")).collect();
    assert_eq!(
        statuses,
        [
            "Status: 5.0.0",
            "Status: 4.0.0",
            "Status: 5.0.0",
            "Status: 5.7.1"
        ]
    );
    let fin = py
        .lines()
        .filter(|l| l.starts_with("Final-Recipient: utf-8; "))
        .collect::<Vec<_>>();
    assert_eq!(fin.len(), 1);
    assert_eq!(fin[0].matches("\\x{E9}").count(), 600);
    assert!(fin[0].ends_with("@example.org"));
    let t = text(&b);
    assert!(
        t.contains("\r\nFinal-Recipient: utf-8;\r\n \\x{E9}"),
        "folded after the type"
    );

    // The UTF-8 header line is folded at 998 octets without splitting a character.
    let headers = std::str::from_utf8(part3(&b)).expect("UTF-8 kept whole");
    let lines: Vec<&str> = headers.split_terminator("\r\n").collect();
    assert_eq!(lines.len(), 4, "{lines:?}");
    // "Subject: " and 2000 octets of "ü": 9 + 988, " " + 996, " " + 16 (998 would split a "ü").
    let lens: Vec<usize> = lines[..3].iter().map(|l| l.len()).collect();
    assert_eq!(lens, [997, 997, 17]);
    assert!(lines[1].starts_with(' ') && lines[2].starts_with(' '));
    assert_eq!(lines[3], "From: a@example.com");
    assert_eq!(headers.matches('ü').count(), 1000);
    assert!(b.eight_bit);
}
