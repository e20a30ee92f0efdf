//! Streaming transfer decoding over the raw message slice, plus the encoders the rewrite needs.
//!
//! The decoders are lenient the way mail clients are: whitespace anywhere in base64 is skipped,
//! bad characters are skipped and reported, a stray `=` in quoted-printable is kept literally.
//! Whatever is reported as a problem makes the part ineligible for conversion.

use std::io::{self, Read, Write};

use sha2::{Digest, Sha256};

use super::{Part, TransferEncoding};

const INVALID: u8 = 0xFF;
const SPACE: u8 = 0xFE;
const PAD: u8 = 0xFD;

const B64: [u8; 256] = {
    let mut t = [INVALID; 256];
    let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut i = 0;
    while i < 64 {
        t[alphabet[i] as usize] = i as u8;
        i += 1;
    }
    t[b' ' as usize] = SPACE;
    t[b'\t' as usize] = SPACE;
    t[b'\r' as usize] = SPACE;
    t[b'\n' as usize] = SPACE;
    t[b'=' as usize] = PAD;
    t
};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Identity,
    Base64,
    QuotedPrintable,
}

/// A `std::io::Read` over the decoded body of one part. Holds no copy of the body: it decodes
/// from the raw slice into the caller's buffer.
#[derive(Debug, Clone)]
pub struct PartReader<'a> {
    src: &'a [u8],
    pos: usize,
    mode: Mode,
    pending: [u8; 3],
    pending_len: u8,
    pending_pos: u8,
    done: bool,
    problem: bool,
}

impl<'a> PartReader<'a> {
    /// Reader over `part`'s body in `raw` (the buffer that was analysed).
    pub fn new(raw: &'a [u8], part: &Part) -> Self {
        let start = part.body_start.min(raw.len());
        let end = part.end.clamp(start, raw.len());
        Self::from_encoded(&raw[start..end], part.encoding)
    }

    /// Reader over an encoded body.
    pub fn from_encoded(src: &'a [u8], encoding: TransferEncoding) -> Self {
        let mode = match encoding {
            TransferEncoding::Base64 => Mode::Base64,
            TransferEncoding::QuotedPrintable => Mode::QuotedPrintable,
            _ => Mode::Identity,
        };
        PartReader {
            src,
            pos: 0,
            mode,
            pending: [0; 3],
            pending_len: 0,
            pending_pos: 0,
            done: false,
            problem: false,
        }
    }

    /// Invalid characters or a truncated quantum were seen so far.
    pub fn problem(&self) -> bool {
        self.problem
    }

    /// Next base64 quantum the slow way (whitespace, padding, garbage). `None` at the end.
    fn slow_quantum(&mut self) -> Option<([u8; 3], u8)> {
        let mut sextets = [0u8; 4];
        let mut got = 0;
        while got < 4 && self.pos < self.src.len() {
            let v = B64[self.src[self.pos] as usize];
            self.pos += 1;
            match v {
                SPACE => {}
                PAD => {
                    // Padding ends the data; whatever follows is ignored like other clients do.
                    self.done = true;
                    break;
                }
                INVALID => self.problem = true,
                v => {
                    sextets[got] = v;
                    got += 1;
                }
            }
        }
        if self.pos >= self.src.len() {
            self.done = true;
        }
        let b = [
            (sextets[0] << 2) | (sextets[1] >> 4),
            (sextets[1] << 4) | (sextets[2] >> 2),
            (sextets[2] << 6) | sextets[3],
        ];
        match got {
            4 => Some((b, 3)),
            3 => {
                self.done = true;
                Some((b, 2))
            }
            2 => {
                self.done = true;
                Some((b, 1))
            }
            1 => {
                self.problem = true;
                self.done = true;
                None
            }
            _ => {
                self.done = true;
                None
            }
        }
    }

    fn read_base64(&mut self, buf: &mut [u8]) -> usize {
        let mut n = 0;
        let src = self.src;
        while n < buf.len() && !self.done {
            // Fast path: four alphabet characters in a row (19 of every 20 quanta in MIME).
            if n + 3 <= buf.len() && self.pos + 4 <= src.len() {
                let a = B64[src[self.pos] as usize];
                let b = B64[src[self.pos + 1] as usize];
                let c = B64[src[self.pos + 2] as usize];
                let d = B64[src[self.pos + 3] as usize];
                if (a | b | c | d) < 64 {
                    buf[n] = (a << 2) | (b >> 4);
                    buf[n + 1] = (b << 4) | (c >> 2);
                    buf[n + 2] = (c << 6) | d;
                    n += 3;
                    self.pos += 4;
                    continue;
                }
            }
            match self.slow_quantum() {
                Some((bytes, len)) => {
                    let take = (len as usize).min(buf.len() - n);
                    buf[n..n + take].copy_from_slice(&bytes[..take]);
                    n += take;
                    if take < len as usize {
                        self.pending = bytes;
                        self.pending_len = len;
                        self.pending_pos = take as u8;
                        break;
                    }
                }
                None => break,
            }
        }
        n
    }

    fn read_qp(&mut self, buf: &mut [u8]) -> usize {
        let src = self.src;
        let mut n = 0;
        while n < buf.len() && self.pos < src.len() {
            let window_end = src.len().min(self.pos + (buf.len() - n));
            let window = &src[self.pos..window_end];
            let plain = memchr::memchr(b'=', window).unwrap_or(window.len());
            buf[n..n + plain].copy_from_slice(&window[..plain]);
            n += plain;
            self.pos += plain;
            if plain < window.len() {
                // src[self.pos] == b'='
                let rest = &src[self.pos + 1..];
                if rest.len() >= 2
                    && let (Some(h), Some(l)) = (hex(rest[0]), hex(rest[1]))
                {
                    buf[n] = (h << 4) | l;
                    n += 1;
                    self.pos += 3;
                    continue;
                }
                let ws = rest
                    .iter()
                    .take_while(|&&c| c == b' ' || c == b'\t')
                    .count();
                let after = &rest[ws..];
                if after.is_empty() {
                    self.pos = src.len();
                } else if after.starts_with(b"\r\n") {
                    self.pos += 1 + ws + 2;
                } else if after[0] == b'\n' {
                    self.pos += 1 + ws + 1;
                } else {
                    self.problem = true;
                    buf[n] = b'=';
                    n += 1;
                    self.pos += 1;
                }
            }
        }
        n
    }
}

fn hex(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'A'..=b'F' => Some(c - b'A' + 10),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    }
}

impl Read for PartReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        let mut n = 0;
        while self.pending_pos < self.pending_len && n < buf.len() {
            buf[n] = self.pending[self.pending_pos as usize];
            self.pending_pos += 1;
            n += 1;
        }
        if n == buf.len() {
            return Ok(n);
        }
        let rest = &mut buf[n..];
        let m = match self.mode {
            Mode::Identity => {
                let take = rest.len().min(self.src.len() - self.pos);
                rest[..take].copy_from_slice(&self.src[self.pos..self.pos + take]);
                self.pos += take;
                take
            }
            Mode::Base64 => self.read_base64(rest),
            Mode::QuotedPrintable => self.read_qp(rest),
        };
        Ok(n + m)
    }
}

/// Stream the decoded body of `part` into `out`; returns the number of decoded bytes.
pub fn decode_part(raw: &[u8], part: &Part, out: &mut impl Write) -> io::Result<u64> {
    let mut reader = PartReader::new(raw, part);
    let mut buf = vec![0u8; 64 * 1024];
    let mut total = 0u64;
    loop {
        let n = reader.read(&mut buf)?;
        if n == 0 {
            return Ok(total);
        }
        out.write_all(&buf[..n])?;
        total += n as u64;
    }
}

/// Decoded size and SHA-256 of `part`'s body.
pub fn part_sha256(raw: &[u8], part: &Part) -> (u64, [u8; 32]) {
    sha256_of(PartReader::new(raw, part))
}

/// A `std::io::Read` over one file of a transfer ([`super::Upload`]): the part's decoded body,
/// or the bytes `within` it for a file inside a TNEF. The bytes before the range are decoded and
/// dropped (no copy is kept), so a file is streamed out of the message like any other part.
#[derive(Debug, Clone)]
pub struct UploadReader<'a> {
    inner: PartReader<'a>,
    skip: u64,
    left: Option<u64>,
}

impl<'a> UploadReader<'a> {
    pub fn new(raw: &'a [u8], part: &Part, upload: &super::Upload) -> Self {
        let inner = PartReader::new(raw, part);
        match &upload.within {
            Some(r) => UploadReader {
                inner,
                skip: r.start,
                left: Some(r.end.saturating_sub(r.start)),
            },
            None => UploadReader {
                inner,
                skip: 0,
                left: None,
            },
        }
    }
}

impl Read for UploadReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.skip > 0 {
            let mut sink = [0u8; 8192];
            let want = sink
                .len()
                .min(usize::try_from(self.skip).unwrap_or(usize::MAX));
            let n = self.inner.read(&mut sink[..want])?;
            if n == 0 {
                return Ok(0);
            }
            self.skip -= n as u64;
        }
        let limit = match self.left {
            Some(0) => return Ok(0),
            Some(left) => buf.len().min(usize::try_from(left).unwrap_or(usize::MAX)),
            None => buf.len(),
        };
        let n = self.inner.read(&mut buf[..limit])?;
        if let Some(left) = self.left.as_mut() {
            *left -= n as u64;
        }
        Ok(n)
    }
}

/// Size and SHA-256 of one file of a transfer, as [`UploadReader`] streams it.
pub fn upload_sha256(raw: &[u8], part: &Part, upload: &super::Upload) -> (u64, [u8; 32]) {
    sha256_of(UploadReader::new(raw, part, upload))
}

/// Length and SHA-256 of what `reader` yields; its readers decode from a slice and cannot fail.
fn sha256_of(mut reader: impl Read) -> (u64, [u8; 32]) {
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut total = 0u64;
    while let Ok(n) = reader.read(&mut buf) {
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        total += n as u64;
    }
    (total, hasher.finalize().into())
}

/// Decoded size and whether decoding hit a problem, without storing anything.
pub(crate) fn measure(src: &[u8], encoding: TransferEncoding) -> (u64, bool) {
    if encoding.is_identity() {
        return (src.len() as u64, false);
    }
    let mut reader = PartReader::from_encoded(src, encoding);
    let mut buf = vec![0u8; 64 * 1024];
    let mut total = 0u64;
    while let Ok(n) = reader.read(&mut buf) {
        if n == 0 {
            break;
        }
        total += n as u64;
    }
    (total, reader.problem())
}

/// Decode a (small) body fully.
pub(crate) fn decode_to_vec(src: &[u8], encoding: TransferEncoding, limit: usize) -> Vec<u8> {
    let mut out = Vec::new();
    let reader = PartReader::from_encoded(src, encoding);
    let _ = reader.take(limit as u64).read_to_end(&mut out);
    out
}

/// Base64 with lines of 76 characters.
pub(crate) fn encode_base64(data: &[u8], nl: &str) -> Vec<u8> {
    use base64::Engine;
    let mut out = Vec::with_capacity(data.len() / 3 * 4 + data.len() / 57 * 2 + 8);
    for chunk in data.chunks(57) {
        out.extend_from_slice(
            base64::engine::general_purpose::STANDARD
                .encode(chunk)
                .as_bytes(),
        );
        out.extend_from_slice(nl.as_bytes());
    }
    out
}

/// Quoted-printable (RFC 2045 §6.7): hard line breaks stay (`\r\n` or `\n` as found), lines are
/// soft-wrapped at 76 characters, trailing whitespace and all 8-bit, `=` and control bytes are
/// encoded. The output never ends in a soft break.
pub(crate) fn encode_qp(data: &[u8], nl: &str) -> Vec<u8> {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut out = Vec::with_capacity(data.len() + data.len() / 8 + 8);
    let mut line_len = 0usize;
    let mut i = 0;
    while i < data.len() {
        let c = data[i];
        if c == b'\n' || (c == b'\r' && data.get(i + 1) == Some(&b'\n')) {
            out.extend_from_slice(nl.as_bytes());
            line_len = 0;
            i += if c == b'\r' { 2 } else { 1 };
            continue;
        }
        let next_is_break =
            i + 1 == data.len() || data[i + 1] == b'\n' || data[i + 1..].starts_with(b"\r\n");
        let literal =
            (c == b' ' || c == b'\t') && !next_is_break || (33..=126).contains(&c) && c != b'=';
        // A leading '.' or "From " is encoded too: keeps SMTP dot-stuffing and mbox out of it.
        let literal = literal && !(line_len == 0 && (c == b'.' || c == b'F'));
        let width = if literal { 1 } else { 3 };
        if line_len + width > 75 {
            out.push(b'=');
            out.extend_from_slice(nl.as_bytes());
            line_len = 0;
        }
        if literal {
            out.push(c);
        } else {
            out.extend_from_slice(&[b'=', HEX[(c >> 4) as usize], HEX[(c & 15) as usize]]);
        }
        line_len += width;
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dec(src: &[u8], enc: TransferEncoding) -> (Vec<u8>, bool) {
        let mut r = PartReader::from_encoded(src, enc);
        let mut out = Vec::new();
        // Tiny buffers exercise the pending-bytes path.
        let mut buf = [0u8; 2];
        loop {
            let n = r.read(&mut buf).unwrap();
            if n == 0 {
                break;
            }
            out.extend_from_slice(&buf[..n]);
        }
        (out, r.problem())
    }

    #[test]
    fn base64_lenient() {
        assert_eq!(
            dec(b"SGVsbG8gV29ybGQh\r\nSGVsbG8=", TransferEncoding::Base64),
            (b"Hello World!Hello".to_vec(), false)
        );
        assert_eq!(
            dec(b"SGVs bG8", TransferEncoding::Base64),
            (b"Hello".to_vec(), false)
        );
        assert_eq!(
            dec(b"SGV*sbG8=", TransferEncoding::Base64),
            (b"Hello".to_vec(), true)
        );
        assert!(dec(b"SGVsb", TransferEncoding::Base64).1);
    }

    #[test]
    fn qp_roundtrip_and_soft_breaks() {
        assert_eq!(
            dec(b"a=3Db=\r\nc= \r\nd=XY", TransferEncoding::QuotedPrintable),
            (b"a=bcd=XY".to_vec(), true)
        );
        let text = "Grüße — ".repeat(40) + "\r\nline two  \r\n.dot\r\nFrom x";
        let enc = encode_qp(text.as_bytes(), "\r\n");
        assert!(enc.split(|&c| c == b'\n').all(|l| l.len() <= 77));
        assert_eq!(
            dec(&enc, TransferEncoding::QuotedPrintable),
            (text.into_bytes(), false)
        );
    }

    #[test]
    fn base64_encode_roundtrip() {
        let data: Vec<u8> = (0..1000u32).map(|i| (i * 7) as u8).collect();
        let enc = encode_base64(&data, "\r\n");
        assert_eq!(dec(&enc, TransferEncoding::Base64), (data, false));
    }
}
