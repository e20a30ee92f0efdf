//! Shared pieces of the inbound SMTP tests: a recording, scripted [`Handler`], certificates, and
//! an in-memory stream that hands the session its input in fixed pieces.
#![allow(dead_code)]

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use cryptshare_gateway::envelope::{Extensions, MailFrom, RcptTo};
use cryptshare_gateway::inbound::{ConnectionInfo, Handler, HandlerFactory, Transaction};
use cryptshare_gateway::replies::{self, Reply};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::mpsc;

/// What the session asked the handler, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Call {
    Extensions,
    Mail(MailFrom),
    Rcpt(RcptTo),
    Data(Delivered),
    Reset,
}

/// A transaction as the handler saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivered {
    pub queue_id: String,
    pub from: String,
    pub rcpts: Vec<String>,
    pub received: String,
    pub message: Vec<u8>,
    pub auth_user: Option<String>,
    pub tls: bool,
    /// The spool moved the message to a file (it was larger than `spool_memory_limit`).
    pub spilled: bool,
}

/// Scripted answers: senders starting with `tempfail` get 451 at MAIL, recipients starting with
/// `unknown` get the next hop's 550, everything else is accepted; data gets `250 2.0.0 Queued`.
#[derive(Clone)]
pub struct TestHandler {
    pub calls: Arc<Mutex<Vec<Call>>>,
    pub ext: Extensions,
    pub delivered: Option<mpsc::UnboundedSender<Delivered>>,
    /// When set, `data` reports the message and then never answers (a next hop that hangs).
    pub hang_in_data: bool,
}

impl TestHandler {
    pub fn new() -> TestHandler {
        TestHandler {
            calls: Arc::default(),
            ext: Extensions::default(),
            delivered: None,
            hang_in_data: false,
        }
    }

    pub fn calls(&self) -> Vec<Call> {
        self.calls.lock().unwrap().clone()
    }

    pub fn deliveries(&self) -> Vec<Delivered> {
        self.calls()
            .into_iter()
            .filter_map(|c| match c {
                Call::Data(d) => Some(d),
                _ => None,
            })
            .collect()
    }

    fn record(&self, c: Call) {
        self.calls.lock().unwrap().push(c);
    }
}

pub fn queued() -> Reply {
    Reply::new(250, [2, 0, 0], "Queued")
}

pub fn next_hop_unknown_user() -> Reply {
    Reply::new(550, [5, 1, 1], "User unknown (next hop)")
}

impl Handler for TestHandler {
    async fn extensions(&mut self) -> Extensions {
        self.record(Call::Extensions);
        self.ext
    }

    async fn mail_from(&mut self, _info: &ConnectionInfo, from: &MailFrom) -> Reply {
        self.record(Call::Mail(from.clone()));
        if from.address.starts_with("tempfail") {
            replies::next_hop_unavailable("connection refused")
        } else {
            replies::sender_ok()
        }
    }

    async fn rcpt_to(&mut self, _info: &ConnectionInfo, rcpt: &RcptTo) -> Reply {
        self.record(Call::Rcpt(rcpt.clone()));
        if rcpt.address.starts_with("unknown") {
            next_hop_unknown_user()
        } else {
            replies::recipient_ok()
        }
    }

    async fn data(&mut self, info: &ConnectionInfo, tx: Transaction) -> Reply {
        let d = Delivered {
            queue_id: tx.queue_id.clone(),
            from: tx.mail_from.address.clone(),
            rcpts: tx.rcpts.iter().map(|r| r.address.clone()).collect(),
            received: String::from_utf8(tx.received.clone()).unwrap(),
            message: tx.message.as_bytes().to_vec(),
            auth_user: info.auth_user.clone(),
            tls: info.tls,
            spilled: tx.message.is_spilled(),
        };
        self.record(Call::Data(d.clone()));
        if let Some(ch) = &self.delivered {
            let _ = ch.send(d);
        }
        if self.hang_in_data {
            std::future::pending::<()>().await;
        }
        queued()
    }

    async fn reset(&mut self) {
        self.record(Call::Reset);
    }
}

/// One [`TestHandler`] per connection, all reporting to the same channel and call log.
pub struct TestFactory {
    pub template: TestHandler,
    /// Handlers created so far, i.e. connections accepted.
    pub created: std::sync::atomic::AtomicUsize,
}

impl TestFactory {
    pub fn new(template: TestHandler) -> TestFactory {
        TestFactory {
            template,
            created: Default::default(),
        }
    }
}

impl HandlerFactory for TestFactory {
    type Handler = TestHandler;
    fn handler(&self) -> TestHandler {
        self.created
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.template.clone()
    }
}

/// A self-signed certificate for `localhost` and its key, as DER and PEM.
pub struct TestCert {
    pub cert_der: rustls_pki_types::CertificateDer<'static>,
    pub key_der: Vec<u8>,
    pub cert_pem: String,
    pub key_pem: String,
}

pub fn test_cert() -> TestCert {
    let ck =
        rcgen::generate_simple_self_signed(vec!["localhost".to_string(), "127.0.0.1".to_string()])
            .unwrap();
    TestCert {
        cert_der: ck.cert.der().clone(),
        key_der: ck.signing_key.serialize_der(),
        cert_pem: ck.cert.pem(),
        key_pem: ck.signing_key.serialize_pem(),
    }
}

pub fn acceptor(c: &TestCert) -> tokio_rustls::TlsAcceptor {
    let key = rustls_pki_types::PrivateKeyDer::Pkcs8(c.key_der.clone().into());
    cryptshare_gateway::inbound::acceptor_from_der(vec![c.cert_der.clone()], key).unwrap()
}

/// A client that trusts exactly the test certificate.
pub fn connector(c: &TestCert) -> tokio_rustls::TlsConnector {
    cryptshare_gateway::install_crypto_provider();
    let mut roots = rustls::RootCertStore::empty();
    roots.add(c.cert_der.clone()).unwrap();
    let cfg = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    tokio_rustls::TlsConnector::from(Arc::new(cfg))
}

/// Input handed out in exactly the given pieces, one piece per read (so a test controls where
/// the session sees read boundaries); output collected.
pub struct ChunkedStream {
    chunks: std::collections::VecDeque<Vec<u8>>,
    /// End a read after each `DATA<CRLF>`, as a client that waits for the 354 does.
    wait_for_354: bool,
    /// The last bytes read, to find a `DATA<CRLF>` split across chunks.
    recent: Vec<u8>,
    pub out: Arc<Mutex<Vec<u8>>>,
}

impl ChunkedStream {
    /// Reads as a well-behaved client sends: each chunk is one read, and a read also ends after
    /// every `DATA` line (any case), because a client waits for the 354 before it sends the
    /// content (RFC 2920 §3.1; the session closes on content that came with the DATA line). A
    /// cut in the middle of content is harmless: how content is split into reads never changes
    /// what the session does with it.
    pub fn new(chunks: Vec<Vec<u8>>) -> ChunkedStream {
        ChunkedStream {
            wait_for_354: true,
            ..ChunkedStream::eager(chunks)
        }
    }

    /// Exactly these reads, content pipelined after DATA included.
    pub fn eager(chunks: Vec<Vec<u8>>) -> ChunkedStream {
        ChunkedStream {
            chunks: chunks.into_iter().filter(|c| !c.is_empty()).collect(),
            wait_for_354: false,
            recent: Vec::new(),
            out: Arc::default(),
        }
    }
}

impl AsyncRead for ChunkedStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if let Some(mut c) = self.chunks.pop_front() {
            let mut n = c.len().min(buf.remaining());
            if self.wait_for_354 {
                let mut seen = std::mem::take(&mut self.recent);
                let before = seen.len();
                seen.extend_from_slice(&c[..n]);
                if let Some(end) = (before + 1..=seen.len())
                    .find(|&e| e >= 6 && seen[e - 6..e].eq_ignore_ascii_case(b"DATA\r\n"))
                {
                    n = end - before;
                    seen.truncate(end);
                }
                let keep = seen.len().saturating_sub(5);
                self.recent = seen.split_off(keep);
            }
            buf.put_slice(&c[..n]);
            if n < c.len() {
                c.drain(..n);
                self.chunks.push_front(c);
            }
        }
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for ChunkedStream {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.out.lock().unwrap().extend_from_slice(buf);
        Poll::Ready(Ok(buf.len()))
    }
    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}
