//! The PROXY protocol header (HAProxy's `send-proxy` v1 text and `send-proxy-v2` binary, see
//! <https://www.haproxy.org/download/2.8/doc/proxy-protocol.txt>), read before the greeting on
//! connections from `server.proxy_networks` when `server.proxy_protocol` is on.
//!
//! The version is detected from the first bytes. The reader takes exactly the header's bytes off
//! the stream and never more ([`Framer`]): whatever follows (a TLS ClientHello on an implicit-TLS
//! listener, an early-talking client's command) stays in the socket for the session. A v1
//! header is at most 107 octets and ends at its CRLF, so it is read in steps of one or two
//! octets (never past the CRLF); a v2 header says its length after 16 octets. The complete
//! header is then parsed by the `ppp` crate.
//!
//! Bounds: v1 107 octets (the protocol's own limit), v2 [`V2_MAX`] octets (addresses and TLVs;
//! HAProxy sends a few dozen), [`HEADER_TIMEOUT`] for the whole header. Anything else (no
//! header, a garbled or over-long one, a stall) is a [`ProxyError`]: the connection is closed
//! without a greeting, like Postfix's `smtpd_upstream_proxy_protocol`.
//!
//! What the header says: PROXY with TCP over IPv4/IPv6 names the real client
//! ([`ProxyHeader::client`]). v2 LOCAL (HAProxy's own health checks), v1 `UNKNOWN` and v2 with an
//! unspecified or UNIX address family carry no client: the connection's own peer (the proxy)
//! is used, as the specification asks. TLVs are checked for well-formedness and otherwise
//! ignored.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt};

/// Longest v1 header, CRLF included (specification §2.1).
pub const V1_MAX: usize = 107;
/// Longest v2 header we take: the 16-octet fixed part, addresses (at most 216 for UNIX) and
/// TLVs. HAProxy's `send-proxy-v2` sends 28 (IPv4) or 52 (IPv6) plus any configured TLVs.
pub const V2_MAX: usize = 1024;
/// The whole header must arrive within this (capped by `server.idle_timeout`). HAProxy sends it
/// together with the connection; a proxy that does not is misconfigured.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(5);

const V2_SIGNATURE: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";
const V1_PREFIX: &[u8; 6] = b"PROXY ";
/// Read first: enough to tell v1 from v2, and no more than the shortest header (v1
/// `PROXY UNKNOWN\r\n`, 15 octets).
const FIRST_READ: usize = 8;
/// More TLVs than this is not a header any proxy sends.
const MAX_TLVS: usize = 64;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ProxyError {
    #[error("no PROXY header (connection starts with \"{0}\")")]
    NotProxy(String),
    #[error("PROXY v1 header longer than {V1_MAX} octets")]
    V1TooLong,
    #[error("PROXY v2 header of {0} octets, more than {V2_MAX}")]
    V2TooLong(usize),
    #[error("garbled PROXY v1 header: {0}")]
    V1(String),
    #[error("garbled PROXY v2 header: {0}")]
    V2(String),
    #[error("connection closed before the end of the PROXY header")]
    Closed,
    #[error("PROXY header not complete within {0:?}")]
    Timeout(Duration),
    #[error("reading the PROXY header: {0}")]
    Io(String),
}

/// A parsed header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyHeader {
    /// 1 (text) or 2 (binary).
    pub version: u8,
    /// The real client and the address it connected to; `None` for LOCAL / UNKNOWN / an address
    /// family other than TCP over IP (use the connection's own addresses).
    pub addrs: Option<(SocketAddr, SocketAddr)>,
    /// Octets the header took.
    pub len: usize,
}

impl ProxyHeader {
    /// The client address to use: the one in the header, else the proxy's own (`peer`).
    pub fn client(&self, peer: SocketAddr) -> SocketAddr {
        self.addrs.map_or(peer, |(src, _)| src)
    }
}

/// What the framer needs next.
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    /// Read exactly this many more octets (never past the end of the header).
    More(usize),
    Done(ProxyHeader),
}

/// Decides from the octets so far how many more make up the header, and parses it once
/// complete. Pure, so that the fuzz target and the unit tests drive the same code as the socket.
pub fn step(buf: &[u8]) -> Result<Step, ProxyError> {
    if buf.len() < FIRST_READ {
        return Ok(Step::More(FIRST_READ - buf.len()));
    }
    if V2_SIGNATURE.starts_with(&buf[..buf.len().min(V2_SIGNATURE.len())]) {
        if buf.len() < 16 {
            return Ok(Step::More(16 - buf.len()));
        }
        let total = 16 + usize::from(u16::from_be_bytes([buf[14], buf[15]]));
        if total > V2_MAX {
            return Err(ProxyError::V2TooLong(total));
        }
        if buf.len() < total {
            return Ok(Step::More(total - buf.len()));
        }
        return parse_v2(&buf[..total]).map(Step::Done);
    }
    if buf.starts_with(V1_PREFIX) {
        return match memchr::memchr(b'\n', buf) {
            Some(p) if p + 1 == buf.len() => parse_v1(buf).map(Step::Done),
            Some(_) => Err(ProxyError::V1("line feed inside the header".into())),
            None if buf.len() >= V1_MAX => Err(ProxyError::V1TooLong),
            // The header ends with CRLF: after a CR one more octet may be its end, otherwise
            // at least two more are still to come.
            None if buf.ends_with(b"\r") => Ok(Step::More(1)),
            None => Ok(Step::More(2.min(V1_MAX - buf.len()))),
        };
    }
    // Escaped: control characters and non-ASCII never reach the log as they are.
    Err(ProxyError::NotProxy(buf.escape_ascii().to_string()))
}

fn parse_v1(buf: &[u8]) -> Result<ProxyHeader, ProxyError> {
    use ppp::v1::{Addresses, Header};
    // The v1 header is US-ASCII (specification §2.1). Checked here, before `ppp`: it cuts the
    // line at its first CR by byte index, which panics inside a multi-byte UTF-8 character
    // (`PROXY \r\u{e9}\n`, found by the fuzz target).
    if !buf.is_ascii() {
        return Err(ProxyError::V1("not ASCII".into()));
    }
    let text = std::str::from_utf8(buf).map_err(|_| ProxyError::V1("not ASCII".into()))?;
    let h = Header::try_from(text).map_err(|e| ProxyError::V1(e.to_string()))?;
    let addrs = match h.addresses {
        Addresses::Tcp4(a) => Some((
            SocketAddr::from((a.source_address, a.source_port)),
            SocketAddr::from((a.destination_address, a.destination_port)),
        )),
        Addresses::Tcp6(a) => Some((
            SocketAddr::from((a.source_address, a.source_port)),
            SocketAddr::from((a.destination_address, a.destination_port)),
        )),
        Addresses::Unknown => None,
    };
    Ok(ProxyHeader {
        version: 1,
        addrs,
        len: buf.len(),
    })
}

fn parse_v2(buf: &[u8]) -> Result<ProxyHeader, ProxyError> {
    use ppp::v2::{Addresses, Command, Header, Protocol};
    let h = Header::try_from(buf).map_err(|e| ProxyError::V2(e.to_string()))?;
    // Ignored, but a header whose TLVs do not add up is not one a proxy sent.
    for (i, tlv) in h.tlvs().enumerate() {
        if i >= MAX_TLVS {
            return Err(ProxyError::V2(format!("more than {MAX_TLVS} TLVs")));
        }
        tlv.map_err(|e| ProxyError::V2(format!("TLV: {e}")))?;
    }
    let addrs = match (h.command, h.protocol, h.addresses) {
        (Command::Local, _, _) => None,
        (Command::Proxy, Protocol::Stream, Addresses::IPv4(a)) => Some((
            SocketAddr::from((a.source_address, a.source_port)),
            SocketAddr::from((a.destination_address, a.destination_port)),
        )),
        (Command::Proxy, Protocol::Stream, Addresses::IPv6(a)) => Some((
            SocketAddr::from((a.source_address, a.source_port)),
            SocketAddr::from((a.destination_address, a.destination_port)),
        )),
        // Unspecified family/protocol or UNIX sockets: the specification says to use the
        // connection's own addresses.
        (Command::Proxy, _, Addresses::Unspecified | Addresses::Unix(_)) => None,
        (Command::Proxy, p, _) => {
            return Err(ProxyError::V2(format!(
                "transport {p:?} is not a stream (TCP)"
            )));
        }
    };
    Ok(ProxyHeader {
        version: 2,
        addrs,
        len: buf.len(),
    })
}

/// Read one header off `io`, exactly its octets, within `timeout`.
pub async fn read_header<S: AsyncRead + Unpin>(
    io: &mut S,
    timeout: Duration,
) -> Result<ProxyHeader, ProxyError> {
    let read = async {
        let mut buf = Vec::with_capacity(64);
        loop {
            match step(&buf)? {
                Step::Done(h) => return Ok(h),
                Step::More(n) => {
                    let at = buf.len();
                    buf.resize(at + n, 0);
                    io.read_exact(&mut buf[at..]).await.map_err(|e| {
                        if e.kind() == std::io::ErrorKind::UnexpectedEof {
                            ProxyError::Closed
                        } else {
                            ProxyError::Io(e.to_string())
                        }
                    })?;
                }
            }
        }
    };
    tokio::time::timeout(timeout, read)
        .await
        .unwrap_or(Err(ProxyError::Timeout(timeout)))
}

/// Drive [`step`] over an in-memory input, as [`read_header`] does over a socket: the header and
/// the octets after it (fuzzing, tests).
pub fn frame(input: &[u8]) -> Result<(ProxyHeader, &[u8]), ProxyError> {
    let mut have = 0;
    loop {
        match step(&input[..have])? {
            Step::Done(h) => return Ok((h.clone(), &input[h.len..])),
            Step::More(n) => {
                if have + n > input.len() {
                    return Err(ProxyError::Closed);
                }
                have += n;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    fn v2(cmd: u8, fam: u8, addr: &[u8], tlvs: &[u8]) -> Vec<u8> {
        let mut b = V2_SIGNATURE.to_vec();
        b.push(0x20 | cmd);
        b.push(fam);
        b.extend(((addr.len() + tlvs.len()) as u16).to_be_bytes());
        b.extend(addr);
        b.extend(tlvs);
        b
    }

    fn parsed(b: &[u8]) -> Result<ProxyHeader, ProxyError> {
        frame(b).map(|(h, _)| h)
    }

    const V4_ADDRS: [u8; 12] = [192, 0, 2, 4, 198, 51, 100, 1, 0x30, 0x39, 0, 25];

    #[test]
    fn v1_tcp4_tcp6_unknown() {
        let (h, rest) = frame(b"PROXY TCP4 192.0.2.4 198.51.100.1 12345 25\r\nEHLO x\r\n").unwrap();
        assert_eq!(
            h.addrs,
            Some((sa("192.0.2.4:12345"), sa("198.51.100.1:25")))
        );
        assert_eq!((h.version, h.len), (1, 44));
        assert_eq!(rest, b"EHLO x\r\n", "nothing after the header is consumed");
        let (h, _) = frame(b"PROXY TCP6 2001:db8::4 2001:db8::1 40000 587\r\n").unwrap();
        assert_eq!(h.client(sa("127.0.0.1:1")), sa("[2001:db8::4]:40000"));
        let (h, rest) = frame(b"PROXY UNKNOWN\r\n").unwrap();
        assert_eq!((h.addrs, rest), (None, &b""[..]));
        assert_eq!(h.client(sa("127.0.0.1:7")), sa("127.0.0.1:7"));
        // UNKNOWN may carry anything up to the CRLF.
        let (h, _) = frame(b"PROXY UNKNOWN ffff::1 ffff::2 1 2\r\n").unwrap();
        assert_eq!(h.addrs, None);
    }

    #[test]
    fn v1_never_reads_past_crlf() {
        let hdr = b"PROXY TCP4 192.0.2.4 198.51.100.1 1 2\r\n";
        let mut have = 0;
        loop {
            match step(&hdr[..have]).unwrap() {
                Step::More(n) => {
                    have += n;
                    assert!(have <= hdr.len(), "asked for {have} of {}", hdr.len());
                }
                Step::Done(h) => {
                    assert_eq!(h.len, hdr.len());
                    break;
                }
            }
        }
    }

    #[test]
    fn v1_garbled_and_oversize() {
        for bad in [
            &b"PROXY TCP4 192.0.2.4 198.51.100.1 12345\r\n"[..],
            b"PROXY TCP4 192.0.2.400 198.51.100.1 1 2\r\n",
            b"PROXY TCP4 2001:db8::1 198.51.100.1 1 2\r\n",
            b"PROXY TCP4 192.0.2.4 198.51.100.1 1 2\n",
            b"PROXY TCP5 192.0.2.4 198.51.100.1 1 2\r\n",
            b"PROXY TCP4 192.0.2.4 198.51.100.1 01 2\r\n",
            b"PROXY TCP4 192.0.2.4 198.51.100.1 1 65536\r\n",
            // A CR before a multi-byte character: ppp would cut inside it (fuzz finding).
            "PROXY \r\u{e9}\n".as_bytes(),
            "PROXY UNKNOWN caf\u{e9}\r\n".as_bytes(),
        ] {
            assert!(
                matches!(frame(bad), Err(ProxyError::V1(_))),
                "{:?}: {:?}",
                String::from_utf8_lossy(bad),
                frame(bad)
            );
        }
        let mut long = b"PROXY UNKNOWN ".to_vec();
        long.resize(200, b'x');
        assert_eq!(frame(&long).unwrap_err(), ProxyError::V1TooLong);
        long.truncate(V1_MAX - 2);
        long.extend(b"\r\n");
        assert!(frame(&long).is_ok(), "107 octets is the limit, not over it");
    }

    #[test]
    fn v2_proxy_local_tlvs() {
        let b = v2(1, 0x11, &V4_ADDRS, &[]);
        let with_hello = [&b[..], b"\x16\x03\x01"].concat();
        let (h, rest) = frame(&with_hello).unwrap();
        assert_eq!(
            h.addrs,
            Some((sa("192.0.2.4:12345"), sa("198.51.100.1:25")))
        );
        assert_eq!((h.version, h.len), (2, 28));
        assert_eq!(rest, b"\x16\x03\x01");
        let mut v6 = Vec::new();
        v6.extend(
            "2001:db8::4"
                .parse::<std::net::Ipv6Addr>()
                .unwrap()
                .octets(),
        );
        v6.extend(
            "2001:db8::1"
                .parse::<std::net::Ipv6Addr>()
                .unwrap()
                .octets(),
        );
        v6.extend([0x9c, 0x40, 0, 25]);
        let (h, _) = frame(&v2(1, 0x21, &v6, &[])).unwrap();
        assert_eq!(h.client(sa("127.0.0.1:1")), sa("[2001:db8::4]:40000"));
        // LOCAL (health check): the proxy's own address, whatever the address block says.
        let (h, _) = frame(&v2(0, 0x00, &[], &[])).unwrap();
        assert_eq!(h.addrs, None);
        let (h, _) = frame(&v2(0, 0x11, &V4_ADDRS, &[])).unwrap();
        assert_eq!(h.client(sa("127.0.0.1:9")), sa("127.0.0.1:9"));
        // TLVs (ALPN "smtp", NOOP padding) are skipped.
        let tlvs = [&[0x01, 0, 4][..], b"smtp", &[0x04, 0, 2, 0, 0]].concat();
        let (h, _) = frame(&v2(1, 0x11, &V4_ADDRS, &tlvs)).unwrap();
        assert_eq!(h.len, 28 + tlvs.len());
        assert!(h.addrs.is_some());
    }

    #[test]
    fn v2_garbled_truncated_oversize() {
        // A TLV longer than what is left.
        let bad = parsed(&v2(1, 0x11, &V4_ADDRS, &[0x01, 0, 9, b'x']));
        assert!(matches!(bad, Err(ProxyError::V2(_))), "{bad:?}");
        // Address block shorter than the family needs.
        let bad = parsed(&v2(1, 0x11, &V4_ADDRS[..8], &[]));
        assert!(matches!(bad, Err(ProxyError::V2(_))), "{bad:?}");
        // Version 1 in the binary format, unknown command.
        let mut b = v2(1, 0x11, &V4_ADDRS, &[]);
        b[12] = 0x11;
        assert!(matches!(frame(&b), Err(ProxyError::V2(_))));
        b[12] = 0x2f;
        assert!(matches!(frame(&b), Err(ProxyError::V2(_))));
        // UDP is not a connection we serve.
        let bad = parsed(&v2(1, 0x12, &V4_ADDRS, &[]));
        assert!(matches!(bad, Err(ProxyError::V2(_))), "{bad:?}");
        // Truncated anywhere: the reader wants more, the stream ends.
        let b = v2(1, 0x11, &V4_ADDRS, &[]);
        for cut in 0..b.len() {
            assert_eq!(
                frame(&b[..cut]).unwrap_err(),
                ProxyError::Closed,
                "cut {cut}"
            );
        }
        // Oversize: refused from the length field, before reading the rest.
        let mut big = V2_SIGNATURE.to_vec();
        big.extend([0x21, 0x11, 0xff, 0xff]);
        assert_eq!(frame(&big).unwrap_err(), ProxyError::V2TooLong(16 + 65535));
    }

    #[test]
    fn wrong_signature_is_not_proxy() {
        for bad in [
            &b"EHLO client.example\r\n"[..],
            b"proxy TCP4 192.0.2.4 198.51.100.1 1 2\r\n",
            b"\r\n\r\n\0\r\nQUIX\n\x21\x11\x00\x0c",
            b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc",
        ] {
            assert!(
                matches!(frame(bad), Err(ProxyError::NotProxy(_))),
                "{bad:?}: {:?}",
                frame(bad)
            );
        }
        // Control characters never reach the log.
        let ProxyError::NotProxy(shown) = frame(b"\x1b[2J\x07abcdef").unwrap_err() else {
            panic!()
        };
        assert!(!shown.chars().any(char::is_control), "{shown:?}");
    }

    /// The fuzz target's invariants (fuzz/fuzz_targets/proxy_header.rs), on stable: any input
    /// and valid headers with bytes changed never panic, an accepted header is in bounds, takes
    /// exactly its own octets, and parses the same on its own.
    fn invariants(input: &[u8]) {
        if let Ok((h, rest)) = frame(input) {
            assert!(h.len <= input.len() && h.len <= V2_MAX.max(V1_MAX));
            assert_eq!(rest, &input[h.len..]);
            assert_eq!(frame(&input[..h.len]).unwrap().0, h);
        }
    }

    proptest::proptest! {
        #[test]
        fn any_bytes(input in proptest::collection::vec(proptest::num::u8::ANY, 0..300)) {
            invariants(&input);
        }

        #[test]
        fn mutated_headers(
            which in 0usize..3,
            at in 0usize..64,
            byte in proptest::num::u8::ANY,
            tail in proptest::collection::vec(proptest::num::u8::ANY, 0..40),
        ) {
            let mut h = match which {
                0 => b"PROXY TCP4 192.0.2.4 198.51.100.1 12345 25\r\n".to_vec(),
                1 => v2(1, 0x11, &V4_ADDRS, &[0x04, 0, 1, 0]),
                _ => v2(0, 0x00, &[], &[]),
            };
            let at = at % h.len();
            h[at] = byte;
            h.extend(tail);
            invariants(&h);
        }
    }

    #[tokio::test]
    async fn reads_exactly_the_header_from_a_stream() {
        let (mut client, mut server) = tokio::io::duplex(256);
        let b = v2(1, 0x11, &V4_ADDRS, &[]);
        tokio::io::AsyncWriteExt::write_all(&mut client, &[&b[..], b"EHLO x\r\n"].concat())
            .await
            .unwrap();
        let h = read_header(&mut server, HEADER_TIMEOUT).await.unwrap();
        assert_eq!(h.len, 28);
        let mut rest = [0u8; 8];
        server.read_exact(&mut rest).await.unwrap();
        assert_eq!(&rest, b"EHLO x\r\n");
        // A proxy that stalls half-way.
        let (mut client, mut server) = tokio::io::duplex(256);
        tokio::io::AsyncWriteExt::write_all(&mut client, b"PROXY TCP4 ")
            .await
            .unwrap();
        let t = Duration::from_millis(50);
        assert_eq!(
            read_header(&mut server, t).await.unwrap_err(),
            ProxyError::Timeout(t)
        );
        drop(client);
    }
}
