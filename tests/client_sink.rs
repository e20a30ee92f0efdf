//! The outbound SMTP client against the scriptable test sink: pipelining, DATA dot-stuffing,
//! BDAT, ESMTP parameter pass-through, HELO fallback and STARTTLS.

// Scripts read best as "the default sink, but with this one change".
#![allow(clippy::field_reassign_with_default)]

use std::sync::Arc;
use std::time::Duration;

use cryptshare_gateway::config::NextHopTls;
use cryptshare_gateway::envelope::{Body, MailFrom, Notify, RcptTo, Ret};
use cryptshare_gateway::outbound::{
    ClientSettings, PhaseTimeouts, RelayError, SmtpClient, reply_for, tls_connector,
};
use cryptshare_gateway::replies::Reply;
use cryptshare_gateway_testkit::envelope::{mail, rcpt};
use cryptshare_gateway_testkit::sink::{Script, Sink};
use rustls::pki_types::ServerName;
use smtp_proto::{EXT_BINARY_MIME, EXT_CHUNKING, EXT_DSN, EXT_SIZE};

fn settings(sink: &Sink) -> ClientSettings {
    ClientSettings {
        host: "127.0.0.1".into(),
        port: sink.addr().port(),
        helo_name: "gw.test".into(),
        tls: NextHopTls::Off,
        tls_connector: None,
        server_name: ServerName::try_from("localhost").unwrap(),
        connect_timeout: Duration::from_secs(10),
        timeouts: PhaseTimeouts::all(Duration::from_secs(10)),
        xforward: true,
    }
}

fn no_chunking() -> Script {
    let mut s = Script::default();
    s.capabilities &= !(EXT_CHUNKING | EXT_BINARY_MIME);
    s
}

async fn send(c: &mut SmtpClient, parts: &[&[u8]]) -> Reply {
    let env = c
        .envelope(&mail("a@example.org"), &[rcpt("b@example.net")], false)
        .await
        .unwrap();
    assert_eq!(env.mail.code, 250);
    assert_eq!(env.rcpts.len(), 1);
    c.send_data(parts).await.map_err(|f| f.error).unwrap()
}

#[tokio::test]
async fn mail_and_rcpts_are_pipelined_in_one_write() {
    let sink = Sink::start(Script::default()).await.unwrap();
    let mut c = SmtpClient::connect(&settings(&sink)).await.unwrap();
    let r = c
        .envelope(
            &mail("a@example.org"),
            &[
                rcpt("b@example.net"),
                rcpt("c@example.net"),
                rcpt("d@example.net"),
            ],
            true,
        )
        .await
        .unwrap();
    assert_eq!(r.mail.to_bytes(), b"250 2.1.0 Sender OK\r\n");
    assert_eq!(r.rcpts.len(), 3);
    let batches = sink.batches();
    assert_eq!(
        batches.last().unwrap(),
        &vec![
            "RSET".to_string(),
            "MAIL FROM:<a@example.org>".into(),
            "RCPT TO:<b@example.net>".into(),
            "RCPT TO:<c@example.net>".into(),
            "RCPT TO:<d@example.net>".into(),
        ]
    );
}

#[tokio::test]
async fn without_pipelining_commands_go_one_by_one() {
    let mut script = Script::default();
    script.capabilities &= !smtp_proto::EXT_PIPELINING;
    let sink = Sink::start(script).await.unwrap();
    let mut c = SmtpClient::connect(&settings(&sink)).await.unwrap();
    c.envelope(&mail("a@x.org"), &[rcpt("b@y.org"), rcpt("c@y.org")], false)
        .await
        .unwrap();
    let batches = sink.batches();
    let n = batches.len();
    assert_eq!(batches[n - 3], vec!["MAIL FROM:<a@x.org>".to_string()]);
    assert_eq!(batches[n - 2], vec!["RCPT TO:<b@y.org>".to_string()]);
    assert_eq!(batches[n - 1], vec!["RCPT TO:<c@y.org>".to_string()]);
}

#[tokio::test]
async fn refused_recipient_gets_the_next_hops_reply() {
    let mut script = Script::default();
    script.rcpt_replies.insert(
        "bad@example.net".into(),
        Reply::new(550, [5, 1, 1], "No such user"),
    );
    let sink = Sink::start(script).await.unwrap();
    let mut c = SmtpClient::connect(&settings(&sink)).await.unwrap();
    let r = c
        .envelope(
            &mail("a@example.org"),
            &[rcpt("good@example.net"), rcpt("bad@example.net")],
            false,
        )
        .await
        .unwrap();
    assert_eq!(r.rcpts[0].code, 250);
    assert_eq!(r.rcpts[1].to_bytes(), b"550 5.1.1 No such user\r\n");
    let reply = c.send_data(&[b"Subject: x\r\n\r\nbody\r\n"]).await.unwrap();
    assert_eq!(reply.code, 250);
    let m = &sink.messages()[0];
    assert_eq!(m.rcpt_to, vec!["RCPT TO:<good@example.net>".to_string()]);
}

/// Each case: the parts to send and what an RFC 5321 receiver must store after unstuffing.
fn data_cases() -> Vec<(Vec<Vec<u8>>, Vec<u8>)> {
    let mut big = Vec::new();
    let mut i = 0;
    while big.len() < 700 * 1024 {
        big.extend_from_slice(format!(".line {i}\r\n..two {i}\r\nplain {i}\r\n.\r\n").as_bytes());
        i += 1;
    }
    let case = |parts: &[&[u8]], stored: &[u8]| {
        (
            parts.iter().map(|p| p.to_vec()).collect::<Vec<_>>(),
            stored.to_vec(),
        )
    };
    vec![
        case(&[b""], b""),
        case(
            &[b"Subject: a\r\n\r\nbody\r\n"],
            b"Subject: a\r\n\r\nbody\r\n",
        ),
        case(&[b"no trailing crlf"], b"no trailing crlf\r\n"),
        case(&[b".leading dot\r\n"], b".leading dot\r\n"),
        case(&[b"a\r\n.\r\nb\r\n"], b"a\r\n.\r\nb\r\n"),
        case(&[b"a\r\n..\r\n...x\r\n"], b"a\r\n..\r\n...x\r\n"),
        case(&[b"ends with dot\r\n."], b"ends with dot\r\n.\r\n"),
        case(
            &[b"Received: x\r\n", b".starts part two\r\n"],
            b"Received: x\r\n.starts part two\r\n",
        ),
        case(&[b"split\r", b"\n.dot\r\n"], b"split\r\n.dot\r\n"),
        case(&[b"split\r\n", b"", b".", b"\r\n"], b"split\r\n.\r\n"),
        case(
            &[b"H: v\r\n", &big],
            &[b"H: v\r\n".as_slice(), &big].concat(),
        ),
    ]
}

#[tokio::test]
async fn data_dot_stuffing_round_trips_byte_exact() {
    let sink = Sink::start(no_chunking()).await.unwrap();
    let mut c = SmtpClient::connect(&settings(&sink)).await.unwrap();
    let cases = data_cases();
    for (parts, _) in &cases {
        let parts: Vec<&[u8]> = parts.iter().map(Vec::as_slice).collect();
        let r = send(&mut c, &parts).await;
        assert_eq!(r.to_bytes(), b"250 2.0.0 Queued as SINK\r\n");
    }
    let got = sink.messages();
    assert_eq!(got.len(), cases.len());
    for (m, (_, want)) in got.iter().zip(&cases) {
        assert!(!m.bdat);
        assert_eq!(
            String::from_utf8_lossy(&m.data[..m.data.len().min(200)]),
            String::from_utf8_lossy(&want[..want.len().min(200)])
        );
        assert!(m.data == *want, "length {} vs {}", m.data.len(), want.len());
    }
    // All messages went over the one connection: the stream never got out of step.
    assert_eq!(sink.connections(), 1);
    assert!(sink.commands().iter().all(|(_, c)| !c.starts_with('.')));
}

#[tokio::test]
async fn bdat_sends_the_exact_bytes() {
    let sink = Sink::start(Script::default()).await.unwrap();
    let mut c = SmtpClient::connect(&settings(&sink)).await.unwrap();
    let cases = data_cases();
    for (parts, _) in &cases {
        let parts: Vec<&[u8]> = parts.iter().map(Vec::as_slice).collect();
        assert_eq!(send(&mut c, &parts).await.code, 250);
    }
    let got = sink.messages();
    for (m, (parts, _)) in got.iter().zip(&cases) {
        assert!(m.bdat);
        assert!(m.data == parts.concat());
    }
    let bdats: Vec<String> = sink
        .commands()
        .into_iter()
        .map(|(_, c)| c)
        .filter(|c| c.starts_with("BDAT"))
        .collect();
    let want: Vec<String> = cases
        .iter()
        .map(|(parts, _)| format!("BDAT {} LAST", parts.concat().len()))
        .collect();
    assert_eq!(bdats, want);
}

fn full_mail() -> MailFrom {
    MailFrom {
        address: "a@b.example".into(),
        size: Some(12345),
        body: Some(Body::EightBitMime),
        smtputf8: true,
        ret: Some(Ret::Hdrs),
        envid: Some("id+1=x y".into()),
        auth: Some("someone".into()),
    }
}

fn full_rcpt() -> RcptTo {
    RcptTo {
        address: "c@d.example".into(),
        notify: Notify {
            success: true,
            failure: true,
            ..Notify::default()
        },
        orcpt: Some("c+orig@d.example".into()),
    }
}

#[tokio::test]
async fn esmtp_parameters_are_passed_through() {
    let sink = Sink::start(Script::default()).await.unwrap();
    let mut c = SmtpClient::connect(&settings(&sink)).await.unwrap();
    let r = c
        .envelope(&full_mail(), &[full_rcpt()], false)
        .await
        .unwrap();
    assert_eq!(r.mail.code, 250, "{}", r.mail);
    assert_eq!(r.rcpts[0].code, 250, "{}", r.rcpts[0]);
    let cmds: Vec<String> = sink.commands().into_iter().map(|(_, c)| c).collect();
    assert!(
        cmds.contains(
            &"MAIL FROM:<a@b.example> SIZE=12345 BODY=8BITMIME SMTPUTF8 RET=HDRS ENVID=id+2B1+3Dx+20y"
                .to_string()
        ),
        "{cmds:?}"
    );
    assert!(cmds.contains(
        &"RCPT TO:<c@d.example> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;c+2Borig@d.example".to_string()
    ));
}

#[tokio::test]
async fn parameters_the_next_hop_lacks_are_left_out() {
    let mut script = Script::default();
    script.capabilities = smtp_proto::EXT_PIPELINING; // no SIZE, 8BITMIME, SMTPUTF8, DSN
    let sink = Sink::start(script).await.unwrap();
    let mut c = SmtpClient::connect(&settings(&sink)).await.unwrap();
    let mut never = full_rcpt();
    never.notify = Notify {
        never: true,
        ..Notify::default()
    };
    c.envelope(&full_mail(), &[never], false).await.unwrap();
    let cmds: Vec<String> = sink.commands().into_iter().map(|(_, c)| c).collect();
    assert!(
        cmds.contains(&"MAIL FROM:<a@b.example>".to_string()),
        "{cmds:?}"
    );
    assert!(cmds.contains(&"RCPT TO:<c@d.example>".to_string()));
}

#[tokio::test]
async fn notify_never_and_null_sender() {
    let mut script = Script::default();
    script.capabilities = EXT_DSN | EXT_SIZE;
    let sink = Sink::start(script).await.unwrap();
    let mut c = SmtpClient::connect(&settings(&sink)).await.unwrap();
    let r = RcptTo {
        address: "x@y.example".into(),
        notify: Notify {
            never: true,
            ..Notify::default()
        },
        orcpt: None,
    };
    c.envelope(&mail(""), &[r], false).await.unwrap();
    let cmds: Vec<String> = sink.commands().into_iter().map(|(_, c)| c).collect();
    assert!(cmds.contains(&"MAIL FROM:<>".to_string()), "{cmds:?}");
    assert!(cmds.contains(&"RCPT TO:<x@y.example> NOTIFY=NEVER".to_string()));
}

#[tokio::test]
async fn helo_fallback_when_ehlo_is_refused() {
    let mut script = no_chunking();
    script.ehlo_reply = Some(Reply::new(502, [5, 5, 1], "EHLO not implemented"));
    let sink = Sink::start(script).await.unwrap();
    let mut c = SmtpClient::connect(&settings(&sink)).await.unwrap();
    assert!(!c.capabilities().esmtp);
    let r = send(&mut c, &[b"x\r\n"]).await;
    assert_eq!(r.code, 250);
    let cmds: Vec<String> = sink.commands().into_iter().map(|(_, c)| c).collect();
    assert_eq!(
        &cmds[..2],
        &["EHLO gw.test".to_string(), "HELO gw.test".to_string()]
    );
    assert_eq!(sink.messages()[0].data, b"x\r\n");
}

#[tokio::test]
async fn refused_connection_is_next_hop_unavailable() {
    // Bound but not listening: connections are refused, and no other test can take the port.
    let closed = tokio::net::TcpSocket::new_v4().unwrap();
    closed.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let port = closed.local_addr().unwrap().port();
    let sink = Sink::start(Script::default()).await.unwrap();
    let mut s = settings(&sink);
    s.port = port;
    let e = SmtpClient::connect(&s).await.unwrap_err();
    assert!(matches!(e, RelayError::Connect { .. }), "{e}");
    let r = reply_for(&e);
    assert_eq!(r.code, 451);
    assert_eq!(r.enhanced, Some([4, 4, 1]));
}

#[tokio::test]
async fn bad_greeting_is_next_hop_unavailable() {
    let mut script = Script::default();
    script.greeting = Reply::plain(554, "go away");
    let sink = Sink::start(script).await.unwrap();
    let e = SmtpClient::connect(&settings(&sink)).await.unwrap_err();
    assert_eq!(
        reply_for(&e).to_bytes(),
        b"451 4.4.1 Next hop unavailable, try again later (session refused)\r\n"
    );
}

// --- STARTTLS -------------------------------------------------------------------------------

struct Pki {
    ca_pem: String,
    server: Arc<rustls::ServerConfig>,
}

fn pki() -> Pki {
    cryptshare_gateway::install_crypto_provider();
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "Test CA");
    let ca = rcgen::CertifiedIssuer::self_signed(ca_params, ca_key).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let params =
        rcgen::CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
            .unwrap();
    let cert = params.signed_by(&key, &ca).unwrap();
    let server = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.der().clone()],
            rustls::pki_types::PrivateKeyDer::try_from(key.serialize_der()).unwrap(),
        )
        .unwrap();
    Pki {
        ca_pem: ca.pem(),
        server: Arc::new(server),
    }
}

fn tls_settings(sink: &Sink, mode: NextHopTls, ca: Option<&std::path::Path>) -> ClientSettings {
    let mut s = settings(sink);
    s.tls = mode;
    s.tls_connector = tls_connector(mode, ca).unwrap();
    s
}

#[tokio::test]
async fn starttls_required_verifies_with_ca_file() {
    let pki = pki();
    let sink = Sink::start_tls(Script::default(), pki.server.clone())
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, &pki.ca_pem).unwrap();
    let mut c = SmtpClient::connect(&tls_settings(&sink, NextHopTls::Required, Some(&ca)))
        .await
        .unwrap();
    assert!(c.is_tls());
    assert_eq!(send(&mut c, &[b"secret\r\n"]).await.code, 250);
    let m = &sink.messages()[0];
    assert!(m.tls);
    assert_eq!(m.data, b"secret\r\n");
    // EHLO again after the handshake, as RFC 3207 requires.
    let cmds: Vec<String> = sink.commands().into_iter().map(|(_, c)| c).collect();
    assert_eq!(
        &cmds[..3],
        &[
            "EHLO gw.test".to_string(),
            "STARTTLS".into(),
            "EHLO gw.test".into()
        ]
    );
}

#[tokio::test]
async fn starttls_required_fails_without_the_right_ca() {
    let pki = pki();
    let other = pki_other_ca();
    let sink = Sink::start_tls(Script::default(), pki.server.clone())
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, other).unwrap();
    let e = SmtpClient::connect(&tls_settings(&sink, NextHopTls::Required, Some(&ca)))
        .await
        .unwrap_err();
    assert!(matches!(e, RelayError::Tls { .. }), "{e}");
    assert_eq!(reply_for(&e).enhanced, Some([4, 4, 1]));
    assert!(sink.messages().is_empty());
}

fn pki_other_ca() -> String {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    p.self_signed(&key).unwrap().pem()
}

#[tokio::test]
async fn starttls_required_fails_when_not_offered() {
    let pki = pki();
    let mut script = Script::default();
    script.starttls = false;
    let sink = Sink::start_tls(script, pki.server.clone()).await.unwrap();
    let e = SmtpClient::connect(&tls_settings(&sink, NextHopTls::Required, None))
        .await
        .unwrap_err();
    assert!(matches!(e, RelayError::TlsRequired { .. }), "{e}");
    assert_eq!(
        reply_for(&e).to_bytes(),
        b"451 4.4.1 Next hop unavailable, try again later (STARTTLS not offered)\r\n"
    );
    let cmds: Vec<String> = sink.commands().into_iter().map(|(_, c)| c).collect();
    assert_eq!(cmds, vec!["EHLO gw.test".to_string(), "QUIT".into()]);
}

#[tokio::test]
async fn starttls_opportunistic_encrypts_without_verification_and_off_never_tries() {
    let pki = pki();
    let sink = Sink::start_tls(Script::default(), pki.server.clone())
        .await
        .unwrap();
    let c = SmtpClient::connect(&tls_settings(&sink, NextHopTls::Opportunistic, None))
        .await
        .unwrap();
    assert!(c.is_tls());
    let c = SmtpClient::connect(&tls_settings(&sink, NextHopTls::Off, None))
        .await
        .unwrap();
    assert!(!c.is_tls());

    let mut script = Script::default();
    script.starttls = false;
    let plain = Sink::start_tls(script, pki.server.clone()).await.unwrap();
    let c = SmtpClient::connect(&tls_settings(&plain, NextHopTls::Opportunistic, None))
        .await
        .unwrap();
    assert!(!c.is_tls());
}
