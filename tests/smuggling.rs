//! SMTP smuggling (issue 10): every end-of-data variant of hannob's smtpsmug and of the SEC Consult
//! research, sent with DATA and with BDAT, split at every byte of the data, through the inbound
//! session and the relay to a test sink that ends DATA strictly (RFC 5321) or leniently (NULs
//! dropped, any "." line after CR or LF ended by CR or LF is the end). The next hop must receive
//! exactly the one message the client meant (or none when the gateway refuses it), and the
//! commands hidden in the content must never run anywhere.

mod inbound_support;

use std::sync::Arc;

use cryptshare_gateway::config::Config;
use cryptshare_gateway::inbound::{self, ConnectionMeta, HandlerFactory, SessionSettings};
use cryptshare_gateway::outbound::Relay;
use cryptshare_gateway_testkit::PassThrough;
use cryptshare_gateway_testkit::sink::{Script, Sink};
use inbound_support::ChunkedStream;
use smtp_proto::{EXT_8BIT_MIME, EXT_ENHANCED_STATUS_CODES, EXT_PIPELINING};

const REFUSED: &str = "554 5.5.2 Bare CR or LF before '.', or a '.' line not ended by CRLF, \
                       is not allowed (SMTP smuggling defence)\r\n";

/// (name, bytes after "body", also refused as BDAT content). In BDAT content a "." line after a
/// CRLF is plain content: the relay dot-stuffs it when it sends the message with DATA.
const VARIANTS: &[(&str, &[u8], bool)] = &[
    ("lflf", b"\n.\n", true),
    ("crcr", b"\r.\r", true),
    ("crlf", b"\r.\n", true),
    ("lfcr", b"\n.\r", true),
    ("lfcrlf", b"\n.\r\n", true),
    ("crlflf", b"\r\n.\n", false),
    ("crcrlf", b"\r.\r\n", true),
    ("crlfcr", b"\r\n.\r", false),
    ("crlfcrx", b"\r\n.\rX", false),
    ("crlf-crcrlf", b"\r\n.\r\r\n", false),
    ("crlf-crcrcrlf", b"\r\n.\r\r\r\n", false),
    ("crcrlf-crcrlf", b"\r\r\n.\r\r\n", false),
    ("nullbefore", b"\r\n\x00.\r\n", true),
    ("nullnullbefore", b"\r\n\x00\x00.\r\n", true),
    ("nullafter", b"\r\n.\x00\r\n", false),
    ("lf-null-dot-lf", b"\n\x00.\n", true),
    ("cr-null-dot-cr", b"\r\x00.\r", true),
    ("crlf-dot-cr-null-lf", b"\r\n.\r\x00\n", false),
];

const SMUGGLED: &[u8] =
    b"MAIL FROM:<evil@attacker.test>\r\nRCPT TO:<victim@y.test>\r\nDATA\r\nsmuggled\r\n";

fn relay(sink: &Sink) -> (Relay, tempfile::TempDir) {
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

/// A sink without CHUNKING, so that the relay sends every message with DATA.
async fn sink(lenient: bool) -> Sink {
    let script = Script {
        capabilities: EXT_PIPELINING | EXT_8BIT_MIME | EXT_ENHANCED_STATUS_CODES,
        lenient_data: lenient,
        ..Script::default()
    };
    Sink::start(script).await.unwrap()
}

/// Run one session with the input in the given reads; returns the replies.
async fn session(factory: &PassThrough, spool: &std::path::Path, chunks: Vec<Vec<u8>>) -> String {
    let stream = ChunkedStream::new(chunks);
    let out = stream.out.clone();
    let meta = ConnectionMeta {
        peer: "127.0.0.1:40000".parse().unwrap(),
        local: "127.0.0.1:25".parse().unwrap(),
        tls: false,
        probe: Default::default(),
    };
    inbound::serve(
        stream,
        meta,
        factory.handler(),
        Arc::new(SessionSettings::new("gw.test", spool)),
        inbound::ShutdownSignal::never(),
    )
    .await;
    let bytes = out.lock().unwrap().clone();
    String::from_utf8(bytes).unwrap()
}

const HEAD: &[u8] = b"EHLO c.test\r\nMAIL FROM:<s@x.test>\r\nRCPT TO:<r@y.test>\r\n";

/// The whole input and where its data part starts and ends.
fn data_input(variant: &[u8]) -> (Vec<u8>, usize, usize) {
    let mut v = HEAD.to_vec();
    v.extend_from_slice(b"DATA\r\n");
    let from = v.len();
    v.extend_from_slice(b"Subject: x\r\n\r\nbody");
    v.extend_from_slice(variant);
    v.extend_from_slice(SMUGGLED);
    v.extend_from_slice(b"\r\n.\r\n");
    let to = v.len();
    v.extend_from_slice(b"QUIT\r\n");
    (v, from, to)
}

fn bdat_content(variant: &[u8]) -> Vec<u8> {
    [
        b"Subject: x\r\n\r\nbody".as_slice(),
        variant,
        SMUGGLED,
        b"\r\n.\r\n",
    ]
    .concat()
}

fn bdat_input(variant: &[u8]) -> (Vec<u8>, usize, usize) {
    let content = bdat_content(variant);
    let mut v = HEAD.to_vec();
    let from = v.len();
    v.extend_from_slice(format!("BDAT {} LAST\r\n", content.len()).as_bytes());
    v.extend_from_slice(&content);
    let to = v.len();
    v.extend_from_slice(b"QUIT\r\n");
    (v, from, to)
}

/// Every way of cutting the data part in two, and the whole input byte by byte.
fn splits(input: &[u8], from: usize, to: usize) -> Vec<Vec<Vec<u8>>> {
    let mut all: Vec<Vec<Vec<u8>>> = (from..=to)
        .map(|at| vec![input[..at].to_vec(), input[at..].to_vec()])
        .collect();
    all.push(input.chunks(1).map(<[u8]>::to_vec).collect());
    all
}

const EXPECT_HEAD: &str = "220 gw.test ESMTP cryptshare-gateway\r\n";

fn replies_ok(out: &str) -> bool {
    out.contains("250 2.1.0 Sender OK\r\n") && out.contains("250 2.1.5 Recipient OK\r\n")
}

async fn check(lenient: bool, bdat: bool) {
    let sink = sink(lenient).await;
    let (relay, _cfg) = relay(&sink);
    let factory = PassThrough::new(relay);
    let spool = tempfile::tempdir().unwrap();
    let mut expected_messages = 0;
    for &(name, variant, bad_in_bdat) in VARIANTS {
        let refused = !bdat || bad_in_bdat;
        let (input, from, to) = if bdat {
            bdat_input(variant)
        } else {
            data_input(variant)
        };
        for chunks in splits(&input, from, to) {
            let cut: Vec<usize> = chunks.iter().map(Vec::len).collect();
            let why = format!(
                "{name} bdat={bdat} lenient={lenient} reads {:?}",
                &cut[..cut.len().min(3)]
            );
            let out = session(&factory, spool.path(), chunks).await;
            assert!(
                out.starts_with(EXPECT_HEAD) && replies_ok(&out),
                "{why}: {out}"
            );
            let end = if refused {
                REFUSED.to_string()
            } else {
                "250 2.0.0 OK, relayed (Queued as SINK)\r\n".to_string()
            };
            assert!(
                out.ends_with(&format!("{end}221 2.0.0 gw.test closing connection\r\n")),
                "{why}: {out}"
            );
            assert!(!out.contains("Sender OK\r\n250 2.1.0"), "{why}: {out}");
            if !refused {
                expected_messages += 1;
            }
            let messages = sink.messages();
            assert_eq!(messages.len(), expected_messages, "{why}: {messages:?}");
            if !refused {
                let m = messages.last().unwrap();
                assert_eq!(m.mail_from, "MAIL FROM:<s@x.test>", "{why}");
                // Only BDAT content gets here; its "." line is content, dot-stuffed on the way.
                assert!(m.data.ends_with(b"smuggled\r\n\r\n.\r\n"), "{why}: {m:?}");
                assert!(
                    m.data.windows(variant.len()).any(|w| w == variant) || lenient,
                    "{why}"
                );
            }
            // Nothing of the content ever reached the next hop as a command.
            assert!(
                sink.commands().iter().all(|(_, c)| !c.contains("evil")
                    && !c.contains("victim")
                    && !c.contains("smuggled")),
                "{why}: {:?}",
                sink.commands()
            );
        }
    }
}

#[tokio::test]
async fn data_variants_strict_next_hop() {
    check(false, false).await;
}

#[tokio::test]
async fn data_variants_lenient_next_hop() {
    check(true, false).await;
}

#[tokio::test]
async fn bdat_variants_strict_next_hop() {
    check(false, true).await;
}

#[tokio::test]
async fn bdat_variants_lenient_next_hop() {
    check(true, true).await;
}

/// The lenient model itself: without the gateway, a smuggled message reaches it as a second
/// message. (Otherwise the tests above could not fail.)
#[tokio::test]
async fn lenient_sink_falls_for_smuggling() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let sink = sink(true).await;
    let mut c = tokio::net::TcpStream::connect(sink.addr()).await.unwrap();
    c.write_all(b"EHLO c\r\nMAIL FROM:<s@x.test>\r\nRCPT TO:<r@y.test>\r\nDATA\r\nbody\r\n.\r\r\n")
        .await
        .unwrap();
    c.write_all(SMUGGLED).await.unwrap();
    c.write_all(b".\r\nQUIT\r\n").await.unwrap();
    let mut all = Vec::new();
    c.read_to_end(&mut all).await.unwrap();
    let m = sink.messages();
    assert_eq!(m.len(), 2, "{m:?}");
    assert_eq!(m[1].mail_from, "MAIL FROM:<evil@attacker.test>");
    assert_eq!(m[1].data, b"smuggled\r\n");
}
