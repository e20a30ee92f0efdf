//! SMTP load generator for the benchmarks under `bench/` (issue 16).
//!
//! Sends `--messages` messages of `--size` octets (or the message in `--eml`) to `--server` over
//! `--concurrency` parallel sessions, either keeping one connection per session (the default) or
//! opening a new connection for every message (`--new-connection`), optionally with STARTTLS
//! (`--starttls`, verified against `--ca FILE` or not at all with `--insecure`). MAIL, RCPT and
//! DATA go in one write when the server offers PIPELINING (`--no-pipelining` to wait for each).
//!
//! The message is prepared once (dot-stuffed, with the final `.`) and written with one
//! `write_all` per message, so large messages go out in big writes; the payload is shared by
//! all sessions. Every message gets a header line of its own in front,
//! `X-Load-Id: <run>-<number>`, so that no two messages are identical (the gateway treats an
//! identical message — same envelope, same bytes — as a retry of the first and reuses its
//! transfer instead of converting it again).
//!
//! Output: a human-readable summary on standard error and one line on standard output,
//! `RESULT key=value …`, for the scripts:
//! `messages`, `failed`, `seconds`, `msg_s`, `mib_s` (payload MiB/s, 1 MiB = 2^20 octets, the
//! message as given, before dot-stuffing), and latencies in milliseconds: `conn_p50/p90/p99`
//! (from the start of the connection attempt, or with a reused connection from the MAIL
//! command, to the final reply after the data) and `data_p50/p90/p99` (from sending DATA to
//! the final reply). A message whose final reply is not 2xx counts as failed; the exit status
//! is 1 then.
//!
//! ```sh
//! cargo build --release --example smtp_load
//! target/release/examples/smtp_load --server 127.0.0.1:2525 -n 10000 -c 20 --size 5120
//! target/release/examples/smtp_load --server 127.0.0.1:2525 -n 2000 -c 20 --new-connection \
//!     --starttls --ca cert.pem --server-name localhost
//! target/release/examples/smtp_load --server 127.0.0.1:2525 -n 1 --eml big.eml --from a@convert.test
//! ```

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use clap::Parser;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

#[derive(Parser, Debug, Clone)]
#[command(about = "SMTP load generator (bench/): N messages over C sessions, msg/s and latencies")]
struct Args {
    /// Server address, IP:port.
    #[arg(long, default_value = "127.0.0.1:2525")]
    server: SocketAddr,
    /// Messages to send in total.
    #[arg(short = 'n', long, default_value_t = 1000)]
    messages: u64,
    /// Parallel sessions.
    #[arg(short = 'c', long, default_value_t = 1)]
    concurrency: usize,
    /// Size of the generated message in octets (headers included; 76-column text lines).
    #[arg(long, default_value_t = 5120)]
    size: usize,
    /// Send this message file instead of a generated one (LF or CRLF line ends; sent with CRLF).
    #[arg(long)]
    eml: Option<PathBuf>,
    /// A new connection for every message (greeting, EHLO, [STARTTLS, EHLO], transaction, QUIT).
    #[arg(long)]
    new_connection: bool,
    /// STARTTLS after the first EHLO (the server must offer it).
    #[arg(long)]
    starttls: bool,
    /// PEM CA certificate(s) to verify the server's certificate against.
    #[arg(long)]
    ca: Option<PathBuf>,
    /// Accept any server certificate (benchmarks only); the handshake signature is still checked.
    #[arg(long)]
    insecure: bool,
    /// Name to verify the certificate against and to send as SNI (default: the server's IP).
    #[arg(long)]
    server_name: Option<String>,
    /// Resume TLS sessions (tickets / session ids) across connections; off by default, so that
    /// every connection makes a full handshake.
    #[arg(long)]
    tls_resume: bool,
    /// Key exchange: `default` (rustls' list: X25519MLKEM768 first, then X25519, P-256, P-384)
    /// or one group, `x25519` / `p256` (e.g. to match a server whose OpenSSL has no ML-KEM).
    #[arg(long, default_value = "default")]
    kx: String,
    /// Wait for each reply even when the server offers PIPELINING.
    #[arg(long)]
    no_pipelining: bool,
    /// Envelope sender.
    #[arg(long, default_value = "bench@example.org")]
    from: String,
    /// Envelope recipient.
    #[arg(long, default_value = "rcpt@example.net")]
    to: String,
    /// EHLO name.
    #[arg(long, default_value = "load.bench.test")]
    ehlo: String,
    /// Runtime worker threads (default: the number of CPUs).
    #[arg(long)]
    threads: Option<usize>,
    /// Seconds to wait for any one reply.
    #[arg(long, default_value_t = 900)]
    timeout: u64,
}

fn main() -> Result<()> {
    let args = Args::parse();
    let mut rt = tokio::runtime::Builder::new_multi_thread();
    if let Some(t) = args.threads {
        rt.worker_threads(t.max(1));
    }
    rt.enable_all().build()?.block_on(run(args))
}

struct Shared {
    args: Args,
    /// The dot-stuffed message with the final ".\r\n".
    payload: Vec<u8>,
    /// Its size as given (before dot-stuffing).
    message_len: usize,
    tls: Option<tokio_rustls::TlsConnector>,
    server_name: ServerName<'static>,
    /// Distinguishes this run's messages from earlier runs' (`X-Load-Id`).
    run_id: String,
    /// Messages handed out so far.
    next: AtomicU64,
    failed: AtomicU64,
    /// Errors so far (only the first few are printed).
    errors: AtomicUsize,
}

#[derive(Default)]
struct Samples {
    conn: Vec<Duration>,
    data: Vec<Duration>,
}

async fn run(args: Args) -> Result<()> {
    let message = match &args.eml {
        Some(p) => std::fs::read(p).with_context(|| format!("reading {}", p.display()))?,
        None => generate(args.size),
    };
    let message = to_crlf(message);
    let payload = dot_stuff(&message);
    let server_name = match &args.server_name {
        Some(n) => ServerName::try_from(n.clone()).map_err(|e| anyhow!("--server-name: {e}"))?,
        None => ServerName::IpAddress(args.server.ip().into()),
    };
    let tls = if args.starttls {
        Some(connector(&args)?)
    } else {
        None
    };
    let shared = Arc::new(Shared {
        message_len: message.len(),
        payload,
        tls,
        server_name,
        run_id: format!(
            "{:x}.{}",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default()
                .as_nanos(),
            std::process::id()
        ),
        next: AtomicU64::new(0),
        failed: AtomicU64::new(0),
        errors: AtomicUsize::new(0),
        args: args.clone(),
    });
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..args.concurrency.max(1) {
        let s = shared.clone();
        tasks.push(tokio::spawn(async move { session_loop(s).await }));
    }
    let mut all = Samples::default();
    for t in tasks {
        let s = t.await?;
        all.conn.extend(s.conn);
        all.data.extend(s.data);
    }
    let secs = start.elapsed().as_secs_f64();
    let ok = all.conn.len() as u64;
    let failed = shared.failed.load(Ordering::Relaxed);
    let mib = (ok as f64) * shared.message_len as f64 / (1u64 << 20) as f64;
    all.conn.sort();
    all.data.sort();
    let ms = |v: &[Duration], q: f64| -> f64 {
        if v.is_empty() {
            return f64::NAN;
        }
        let i = ((v.len() as f64 * q).ceil() as usize).clamp(1, v.len()) - 1;
        v[i].as_secs_f64() * 1e3
    };
    eprintln!(
        "{ok} messages of {} octets ({failed} failed) in {secs:.3} s over {} sessions{}{}: \
         {:.1} msg/s, {:.1} MiB/s",
        shared.message_len,
        args.concurrency,
        if args.new_connection {
            ", a connection per message"
        } else {
            ""
        },
        if args.starttls { ", STARTTLS" } else { "" },
        ok as f64 / secs,
        mib / secs,
    );
    eprintln!(
        "latency ms: connect/MAIL -> final reply p50 {:.3} p90 {:.3} p99 {:.3}; \
         DATA -> final reply p50 {:.3} p90 {:.3} p99 {:.3}",
        ms(&all.conn, 0.5),
        ms(&all.conn, 0.9),
        ms(&all.conn, 0.99),
        ms(&all.data, 0.5),
        ms(&all.data, 0.9),
        ms(&all.data, 0.99),
    );
    println!(
        "RESULT messages={ok} failed={failed} seconds={secs:.4} msg_s={:.1} mib_s={:.2} \
         conn_p50={:.3} conn_p90={:.3} conn_p99={:.3} data_p50={:.3} data_p90={:.3} data_p99={:.3}",
        ok as f64 / secs,
        mib / secs,
        ms(&all.conn, 0.5),
        ms(&all.conn, 0.9),
        ms(&all.conn, 0.99),
        ms(&all.data, 0.5),
        ms(&all.data, 0.9),
        ms(&all.data, 0.99),
    );
    if failed > 0 || ok == 0 {
        std::process::exit(1);
    }
    Ok(())
}

/// Claim the next message number, if any is left.
fn claim(s: &Shared) -> Option<u64> {
    let n = s.next.fetch_add(1, Ordering::Relaxed);
    (n < s.args.messages).then_some(n)
}

fn report(s: &Shared, e: &anyhow::Error) {
    s.failed.fetch_add(1, Ordering::Relaxed);
    // The first few errors only: a dead server would otherwise print one per message.
    if s.errors.fetch_add(1, Ordering::Relaxed) < 5 {
        eprintln!("error: {e:#}");
    }
}

async fn session_loop(s: Arc<Shared>) -> Samples {
    let mut samples = Samples::default();
    if s.args.new_connection {
        while let Some(n) = claim(&s) {
            let t0 = Instant::now();
            let r = async {
                let mut c = Conn::open(&s).await?;
                let data = c.transaction(&s, n).await?;
                let total = t0.elapsed();
                c.quit().await;
                Ok::<_, anyhow::Error>((total, data))
            }
            .await;
            match r {
                Ok((total, data)) => {
                    samples.conn.push(total);
                    samples.data.push(data);
                }
                Err(e) => report(&s, &e),
            }
        }
        return samples;
    }
    let mut conn: Option<Conn> = None;
    while let Some(n) = claim(&s) {
        let r = async {
            if conn.is_none() {
                conn = Some(Conn::open(&s).await?);
            }
            let c = conn.as_mut().expect("connected");
            let t0 = Instant::now();
            let data = c.transaction(&s, n).await?;
            Ok::<_, anyhow::Error>((t0.elapsed(), data))
        }
        .await;
        match r {
            Ok((total, data)) => {
                samples.conn.push(total);
                samples.data.push(data);
            }
            Err(e) => {
                conn = None;
                report(&s, &e);
            }
        }
    }
    if let Some(c) = conn {
        c.quit().await;
    }
    samples
}

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

struct Conn {
    io: Box<dyn Io>,
    buf: Vec<u8>,
    pipelining: bool,
    timeout: Duration,
}

impl Conn {
    async fn open(s: &Shared) -> Result<Conn> {
        let tcp = TcpStream::connect(s.args.server)
            .await
            .with_context(|| format!("connecting to {}", s.args.server))?;
        tcp.set_nodelay(true)?;
        let mut c = Conn {
            io: Box::new(tcp),
            buf: Vec::with_capacity(4096),
            pipelining: false,
            timeout: Duration::from_secs(s.args.timeout),
        };
        c.expect(220, "greeting").await?;
        let mut ehlo = c.ehlo(&s.args.ehlo).await?;
        if let Some(tls) = &s.tls {
            if !has_ext(&ehlo, "STARTTLS") {
                bail!("the server does not offer STARTTLS");
            }
            c.send(b"STARTTLS\r\n").await?;
            c.expect(220, "STARTTLS").await?;
            if !c.buf.is_empty() {
                bail!("bytes after the STARTTLS reply");
            }
            let io = std::mem::replace(&mut c.io, Box::new(tokio::io::duplex(1).0));
            let tls = tls
                .connect(s.server_name.clone(), io)
                .await
                .context("TLS handshake")?;
            c.io = Box::new(tls);
            ehlo = c.ehlo(&s.args.ehlo).await?;
        }
        c.pipelining = !s.args.no_pipelining && has_ext(&ehlo, "PIPELINING");
        Ok(c)
    }

    async fn ehlo(&mut self, name: &str) -> Result<String> {
        self.send(format!("EHLO {name}\r\n").as_bytes()).await?;
        let (code, text) = self.reply().await?;
        if code != 250 {
            bail!("EHLO: {code} {text}");
        }
        Ok(text)
    }

    /// MAIL, RCPT, DATA, message number `n`; returns the time from DATA to the final reply.
    async fn transaction(&mut self, s: &Shared, n: u64) -> Result<Duration> {
        let mail = format!("MAIL FROM:<{}>\r\n", s.args.from);
        let rcpt = format!("RCPT TO:<{}>\r\n", s.args.to);
        let t_data;
        if self.pipelining {
            let cmds = [mail.as_bytes(), rcpt.as_bytes(), b"DATA\r\n"].concat();
            t_data = Instant::now();
            self.send(&cmds).await?;
            let mail_r = self.reply().await?;
            let rcpt_r = self.reply().await?;
            let data_r = self.reply().await?;
            if mail_r.0 != 250 || rcpt_r.0 / 100 != 2 || data_r.0 != 354 {
                if data_r.0 == 354 {
                    // DATA was accepted although the envelope was not: end it empty.
                    self.send(b".\r\n").await?;
                    let _ = self.reply().await;
                }
                bail!(
                    "MAIL {} {}; RCPT {} {}; DATA {} {}",
                    mail_r.0,
                    mail_r.1,
                    rcpt_r.0,
                    rcpt_r.1,
                    data_r.0,
                    data_r.1
                );
            }
        } else {
            self.send(mail.as_bytes()).await?;
            self.expect(250, "MAIL").await?;
            self.send(rcpt.as_bytes()).await?;
            let (code, text) = self.reply().await?;
            if code / 100 != 2 {
                bail!("RCPT: {code} {text}");
            }
            t_data = Instant::now();
            self.send(b"DATA\r\n").await?;
            self.expect(354, "DATA").await?;
        }
        let id = format!("X-Load-Id: {}-{n}\r\n", s.run_id);
        if s.payload.len() <= 64 * 1024 {
            self.send(&[id.as_bytes(), &s.payload].concat()).await?;
        } else {
            self.io.write_all(id.as_bytes()).await?;
            self.send(&s.payload).await?;
        }
        let (code, text) = self.reply().await?;
        let dt = t_data.elapsed();
        if code / 100 != 2 {
            bail!("end of data: {code} {text}");
        }
        Ok(dt)
    }

    async fn quit(mut self) {
        if self.send(b"QUIT\r\n").await.is_ok() {
            let _ = self.reply().await;
        }
        let _ = self.io.shutdown().await;
    }

    async fn send(&mut self, b: &[u8]) -> Result<()> {
        self.io.write_all(b).await?;
        self.io.flush().await?;
        Ok(())
    }

    async fn expect(&mut self, want: u16, what: &str) -> Result<()> {
        let (code, text) = self.reply().await?;
        if code != want {
            bail!("{what}: {code} {text}");
        }
        Ok(())
    }

    /// One (possibly multi-line) reply: its code and its lines' texts joined by "\n".
    async fn reply(&mut self) -> Result<(u16, String)> {
        let mut text = String::new();
        loop {
            let line = self.line().await?;
            if line.len() < 3 || !line.is_char_boundary(3) {
                bail!("malformed reply line {line:?}");
            }
            let code: u16 = line[..3]
                .parse()
                .map_err(|_| anyhow!("malformed reply line {line:?}"))?;
            if !text.is_empty() {
                text.push('\n');
            }
            text.push_str(line.get(4..).unwrap_or(""));
            if line.as_bytes().get(3) != Some(&b'-') {
                return Ok((code, text));
            }
        }
    }

    async fn line(&mut self) -> Result<String> {
        loop {
            if let Some(i) = self.buf.windows(2).position(|w| w == b"\r\n") {
                let line = String::from_utf8_lossy(&self.buf[..i]).into_owned();
                self.buf.drain(..i + 2);
                return Ok(line);
            }
            let mut chunk = [0u8; 4096];
            let n = tokio::time::timeout(self.timeout, self.io.read(&mut chunk))
                .await
                .map_err(|_| anyhow!("no reply within {:?}", self.timeout))??;
            if n == 0 {
                bail!("connection closed by the server");
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }
}

fn has_ext(ehlo: &str, ext: &str) -> bool {
    ehlo.lines().any(|l| {
        l.split_whitespace()
            .next()
            .is_some_and(|k| k.eq_ignore_ascii_case(ext))
    })
}

/// A text message of `size` octets: headers, then 76-column lines of letters.
fn generate(size: usize) -> Vec<u8> {
    let mut m = b"From: <bench@example.org>\r\nTo: <rcpt@example.net>\r\nSubject: load\r\n\
Message-ID: <load@bench.test>\r\n\r\n"
        .to_vec();
    let mut x: u32 = 0x1234_5678;
    while m.len() + 2 < size {
        let n = (size - m.len() - 2).min(76);
        for _ in 0..n {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            m.push(b'a' + (x % 26) as u8);
        }
        m.extend_from_slice(b"\r\n");
    }
    m
}

/// Bare LF line ends become CRLF; the message ends with CRLF.
fn to_crlf(m: Vec<u8>) -> Vec<u8> {
    let bare_lf = m
        .iter()
        .enumerate()
        .any(|(i, &b)| b == b'\n' && (i == 0 || m[i - 1] != b'\r'));
    let mut out = if bare_lf {
        let mut out = Vec::with_capacity(m.len() + m.len() / 50);
        for (i, &b) in m.iter().enumerate() {
            if b == b'\n' && (i == 0 || m[i - 1] != b'\r') {
                out.push(b'\r');
            }
            out.push(b);
        }
        out
    } else {
        m
    };
    if !out.ends_with(b"\r\n") {
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// RFC 5321 §4.5.2 transparency plus the final ".\r\n" (the message ends with CRLF).
fn dot_stuff(m: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(m.len() + m.len() / 1000 + 8);
    let mut line_start = true;
    for &b in m {
        if line_start && b == b'.' {
            out.push(b'.');
        }
        out.push(b);
        line_start = b == b'\n';
    }
    out.extend_from_slice(b".\r\n");
    out
}

fn connector(args: &Args) -> Result<tokio_rustls::TlsConnector> {
    use rustls::crypto::aws_lc_rs::kx_group;
    let mut provider = rustls::crypto::aws_lc_rs::default_provider();
    match args.kx.as_str() {
        "default" => {}
        "x25519" => provider.kx_groups = vec![kx_group::X25519],
        "p256" => provider.kx_groups = vec![kx_group::SECP256R1],
        other => bail!("--kx {other}: default, x25519 or p256"),
    }
    let provider = Arc::new(provider);
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?;
    let mut config = if let Some(ca) = &args.ca {
        let pem = std::fs::read(ca).with_context(|| format!("reading {}", ca.display()))?;
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(&pem) {
            let cert: CertificateDer<'static> = cert.context("--ca: not a PEM certificate")?;
            roots.add(cert)?;
        }
        builder.with_root_certificates(roots).with_no_client_auth()
    } else if args.insecure {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAny(provider)))
            .with_no_client_auth()
    } else {
        bail!("--starttls needs --ca FILE or --insecure");
    };
    if !args.tls_resume {
        config.resumption = rustls::client::Resumption::disabled();
    }
    Ok(tokio_rustls::TlsConnector::from(Arc::new(config)))
}

/// Accepts any certificate, but checks the handshake signature with it (so that a benchmark
/// makes the same computations as a verifying client, less the chain).
#[derive(Debug)]
struct AcceptAny(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AcceptAny {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
