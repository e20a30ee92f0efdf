//! Raw SMTP clients for what no tool does (BDAT, exact pipelining, byte-exact replies): a
//! blocking one ([`RawSmtp`], and [`Smtp`] on top of it for code-and-text replies) for tests that
//! drive a separate process, an async one ([`AsyncSmtp`]) for tests that run the server in their
//! own runtime. All read whole (multi-line) replies the same way.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};

use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

use super::process::WAIT;

/// Whether `line` (one reply line, CRLF included) ends its reply: any line but `code-text`.
fn is_last_line(line: &[u8]) -> bool {
    line.get(3) != Some(&b'-')
}

/// Dot-stuff `message` for DATA (a `.` at the start of a line is doubled); no terminator.
pub fn stuff_dots(message: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(message.len() + 1024);
    let mut bol = true;
    for &b in message {
        if bol && b == b'.' {
            out.push(b'.');
        }
        out.push(b);
        bol = b == b'\n';
    }
    out
}

/// Dot-stuff for DATA (the message ends with CRLF) and append the terminator.
pub fn dot_stuffed(message: &[u8]) -> Vec<u8> {
    let mut out = stuff_dots(message);
    out.extend_from_slice(b".\r\n");
    out
}

/// A blocking SMTP client speaking raw commands; replies exactly as received.
pub struct RawSmtp {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl RawSmtp {
    /// Connect to 127.0.0.1:`port` and return the client with the greeting.
    pub fn connect(port: u16) -> (RawSmtp, String) {
        Self::connect_to(("127.0.0.1", port))
    }

    /// Connect to `addr` and return the client with the greeting.
    pub fn connect_to(addr: impl ToSocketAddrs) -> (RawSmtp, String) {
        let s = TcpStream::connect(addr).expect("connect to the SMTP server");
        s.set_read_timeout(Some(WAIT)).expect("timeout");
        let mut c = RawSmtp {
            reader: BufReader::new(s.try_clone().expect("clone")),
            writer: s,
        };
        let g = c.reply();
        (c, g)
    }

    pub fn send(&mut self, bytes: &[u8]) {
        self.writer
            .write_all(bytes)
            .expect("write to the SMTP server");
    }

    /// One complete (possibly multi-line) reply, CRLFs included.
    pub fn reply(&mut self) -> String {
        let mut out = String::new();
        loop {
            let mut line = Vec::new();
            let n = self
                .reader
                .read_until(b'\n', &mut line)
                .expect("reply within WAIT");
            assert!(n > 0, "connection closed; so far: {out:?}");
            let line = String::from_utf8(line).expect("UTF-8 reply");
            let last = is_last_line(line.as_bytes());
            out.push_str(&line);
            if last {
                return out;
            }
        }
    }

    pub fn cmd(&mut self, line: &str) -> String {
        self.send(format!("{line}\r\n").as_bytes());
        self.reply()
    }

    /// Expect the connection to be closed by the server.
    pub fn expect_eof(&mut self) {
        let mut rest = Vec::new();
        let _ = self.reader.read_to_end(&mut rest);
        assert!(rest.is_empty(), "unexpected data: {rest:?}");
    }

    /// True once the server closed the connection (EOF with nothing more to read).
    pub fn closed(&mut self) -> bool {
        let mut buf = [0u8; 1];
        matches!(self.reader.read(&mut buf), Ok(0))
    }
}

/// [`RawSmtp`] with replies as (code, lines joined with `\n`, CRLF stripped).
pub struct Smtp(RawSmtp);

impl Smtp {
    /// Connect and expect a `220` greeting.
    pub fn connect(addr: SocketAddr) -> Smtp {
        let (raw, greeting) = RawSmtp::connect_to(addr);
        let c = Smtp(raw);
        let (code, text) = Self::coded(&greeting);
        assert_eq!(code, 220, "{text}");
        c
    }

    fn coded(reply: &str) -> (u16, String) {
        let lines: Vec<&str> = reply
            .split_inclusive('\n')
            .map(|l| {
                assert!(l.ends_with("\r\n"), "reply line without CRLF: {l:?}");
                l.trim_end_matches("\r\n")
            })
            .collect();
        let code = lines[0][..3].parse().unwrap();
        (code, lines.join("\n"))
    }

    /// One reply: (code, all lines joined with `\n`, CRLF stripped).
    pub fn reply(&mut self) -> (u16, String) {
        Self::coded(&self.0.reply())
    }

    pub fn send(&mut self, bytes: &[u8]) {
        self.0.send(bytes);
    }

    pub fn cmd(&mut self, line: &str) -> (u16, String) {
        self.send(format!("{line}\r\n").as_bytes());
        self.reply()
    }

    pub fn expect(&mut self, line: &str, code: u16) -> String {
        let (c, text) = self.cmd(line);
        assert_eq!(c, code, "{line} -> {text}");
        text
    }

    /// EHLO, MAIL, RCPT: the transaction is open and waits for DATA.
    pub fn open_transaction(&mut self, from: &str, to: &str) {
        self.expect("EHLO client.ops.test", 250);
        self.expect(&format!("MAIL FROM:<{from}>"), 250);
        self.expect(&format!("RCPT TO:<{to}>"), 250);
    }

    /// DATA, the message (already dot-stuffed, CRLF line ends), the final dot: the final reply.
    pub fn data(&mut self, message: &[u8]) -> (u16, String) {
        self.expect("DATA", 354);
        self.send(message);
        self.send(b".\r\n");
        self.reply()
    }

    /// True once the server closed the connection (EOF with nothing more to read).
    pub fn closed(&mut self) -> bool {
        self.0.closed()
    }
}

/// An async raw SMTP client: every reply is returned exactly as received (all lines, CRLF
/// included).
pub struct AsyncSmtp {
    r: tokio::io::BufReader<OwnedReadHalf>,
    w: OwnedWriteHalf,
}

impl AsyncSmtp {
    pub async fn connect(addr: SocketAddr) -> (AsyncSmtp, String) {
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        Self::greeted(tcp).await
    }

    /// As [`AsyncSmtp::connect`], from `local` (any 127.0.0.0/8 address on Linux), so that the
    /// server sees a client address other than 127.0.0.1.
    pub async fn connect_from(local: std::net::IpAddr, addr: SocketAddr) -> (AsyncSmtp, String) {
        let sock = tokio::net::TcpSocket::new_v4().unwrap();
        sock.bind(SocketAddr::new(local, 0)).unwrap();
        let tcp = sock.connect(addr).await.unwrap();
        Self::greeted(tcp).await
    }

    async fn greeted(tcp: tokio::net::TcpStream) -> (AsyncSmtp, String) {
        let (r, w) = tcp.into_split();
        let mut c = AsyncSmtp {
            r: tokio::io::BufReader::new(r),
            w,
        };
        let greeting = c.reply().await;
        (c, greeting)
    }

    pub async fn reply(&mut self) -> String {
        let mut all = String::new();
        loop {
            let mut line = String::new();
            let n = self.r.read_line(&mut line).await.unwrap();
            assert!(n > 0, "connection closed; got so far: {all:?}");
            all.push_str(&line);
            if is_last_line(line.as_bytes()) {
                return all;
            }
        }
    }

    pub async fn cmd(&mut self, line: &str) -> String {
        self.w
            .write_all(format!("{line}\r\n").as_bytes())
            .await
            .unwrap();
        self.reply().await
    }

    /// DATA with dot-stuffing (and a final CRLF if the message lacks one); the final reply.
    pub async fn data(&mut self, msg: &[u8]) -> String {
        let r = self.cmd("DATA").await;
        assert!(r.starts_with("354"), "DATA: {r}");
        let mut stuffed = stuff_dots(msg);
        if !stuffed.ends_with(b"\r\n") {
            stuffed.extend_from_slice(b"\r\n");
        }
        self.w.write_all(&stuffed).await.unwrap();
        self.w.write_all(b".\r\n").await.unwrap();
        self.reply().await
    }
}
