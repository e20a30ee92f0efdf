//! The small pieces of the next-hop protocol that `client.rs` uses: reply conversion, EHLO
//! parsing (with the XFORWARD attributes), xtext, address and `421` checks, the socket peek of
//! an idle connection, and where the `BDAT … LAST` chunk starts. Its own file to keep the client
//! under the size limit.

use std::io;

use smtp_proto::{
    EXT_8BIT_MIME, EXT_BINARY_MIME, EXT_CHUNKING, EXT_DSN, EXT_PIPELINING, EXT_SIZE, EXT_SMTP_UTF8,
    EXT_START_TLS, EhloResponse,
};
use tokio::net::TcpStream;

use super::client::Capabilities;
use super::error::RelayError;
use super::xforward;
use crate::replies::Reply;

/// Length of the last line of the concatenated `parts` (after the last LF but one), at most 1000:
/// what the `BDAT … LAST` chunk carries.
pub(super) fn last_line_len(parts: &[&[u8]]) -> usize {
    const MAX: usize = 1000;
    let mut len = 0;
    for p in parts.iter().rev() {
        // Skip the message's final line ending, then look for the LF before it.
        let search = if len == 0 {
            p.strip_suffix(b"\n").unwrap_or(p)
        } else {
            p
        };
        match memchr::memrchr(b'\n', search) {
            Some(i) => return (len + p.len() - i - 1).min(MAX),
            None => len += p.len(),
        }
        if len >= MAX {
            return MAX;
        }
    }
    len.min(MAX)
}

pub(super) enum PeekState {
    Empty,
    Data,
    Closed,
}

/// Ask the kernel directly (not tokio's cached readiness, which is only updated when the reactor
/// runs) whether the peer closed the socket or sent something.
pub(super) fn peek_socket(tcp: &TcpStream) -> PeekState {
    use std::os::fd::AsRawFd;
    let mut b = [0u8; 1];
    // SAFETY: a valid, open socket descriptor owned by `tcp` for the duration of the call, and a
    // one-byte buffer we own; MSG_PEEK leaves the data in the socket, MSG_DONTWAIT never blocks.
    let n = unsafe {
        libc::recv(
            tcp.as_raw_fd(),
            b.as_mut_ptr().cast(),
            1,
            libc::MSG_PEEK | libc::MSG_DONTWAIT,
        )
    };
    match n {
        0 => PeekState::Closed,
        n if n > 0 => PeekState::Data,
        _ => match io::Error::last_os_error().kind() {
            io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted => PeekState::Empty,
            _ => PeekState::Closed,
        },
    }
}

/// A `421` means the next hop is closing the connection: never pass it to our client (it
/// would close *our* session), treat it as a lost connection instead.
pub(super) fn check_closing(r: &Reply) -> Result<(), RelayError> {
    if r.code == 421 {
        Err(RelayError::Closing(r.clone()))
    } else {
        Ok(())
    }
}

/// A refused XFORWARD costs only the log attribution: warn and go on, unless the next hop is
/// closing the connection.
pub(super) fn xforward_answered(r: &Reply) -> Result<(), RelayError> {
    check_closing(r)?;
    if r.code != 250 {
        tracing::warn!(reply = %r, "next hop refused XFORWARD; relaying without it");
    }
    Ok(())
}

/// An address goes out exactly as the client sent it, so it must be what the inbound side
/// accepts: a mailbox per RFC 5321 §4.1.2 (quoted local parts with `<`, `>`, `@` or spaces
/// included, UTF-8 under SMTPUTF8), `<>` or `<Postmaster>`. That grammar has no CR, LF or
/// other control character, and a `>` only inside a quoted string, so nothing can end the
/// path or the command line early.
pub(super) fn check_address(a: &str) -> Result<(), RelayError> {
    if a.is_empty() || a.eq_ignore_ascii_case("postmaster") || crate::envelope::is_mailbox(a) {
        return Ok(());
    }
    Err(RelayError::Protocol("malformed address".into()))
}

pub(super) fn to_reply(code: u16, esc: [u8; 3], message: &str) -> Reply {
    Reply {
        code,
        enhanced: if esc == [0, 0, 0] { None } else { Some(esc) },
        lines: message
            .split('\n')
            .map(|l| l.trim_end_matches('\r').to_string())
            .collect(),
    }
}

pub(super) fn parse_ehlo(raw: &[u8], reply: &Reply) -> Capabilities {
    match EhloResponse::<String>::parse(&mut raw.iter()) {
        Ok(e) => Capabilities {
            ext: e.capabilities,
            size: e.size,
            esmtp: true,
            xforward: xforward_offered(reply),
        },
        Err(_) => {
            // smtp-proto refuses some odd capability lines (e.g. unknown AUTH mechanisms);
            // fall back to the keywords that matter for relaying.
            let mut caps = Capabilities {
                esmtp: true,
                xforward: xforward_offered(reply),
                ..Capabilities::default()
            };
            for line in reply.lines.iter().skip(1) {
                let mut words = line.split_ascii_whitespace();
                let kw = words.next().unwrap_or("").to_ascii_uppercase();
                caps.ext |= match kw.as_str() {
                    "PIPELINING" => EXT_PIPELINING,
                    "8BITMIME" => EXT_8BIT_MIME,
                    "BINARYMIME" => EXT_BINARY_MIME,
                    "CHUNKING" => EXT_CHUNKING,
                    "SMTPUTF8" => EXT_SMTP_UTF8,
                    "DSN" => EXT_DSN,
                    "STARTTLS" => EXT_START_TLS,
                    "SIZE" => {
                        caps.size = words.next().and_then(|s| s.parse().ok()).unwrap_or(0);
                        EXT_SIZE
                    }
                    _ => 0,
                };
            }
            caps
        }
    }
}

/// The attributes of an `XFORWARD NAME ADDR …` line of the EHLO reply (smtp-proto does not know
/// the keyword).
pub(super) fn xforward_offered(reply: &Reply) -> u8 {
    reply
        .lines
        .iter()
        .skip(1)
        .find_map(|line| {
            let mut words = line.split_ascii_whitespace();
            let kw = words.next()?;
            kw.eq_ignore_ascii_case("XFORWARD")
                .then(|| xforward::offered(words))
        })
        .unwrap_or(0)
}

/// RFC 3461 xtext: printable ASCII except `+` and `=` literally, everything else as `+XX`.
pub(super) fn xtext_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if (b'!'..=b'~').contains(&b) && b != b'+' && b != b'=' {
            out.push(b as char);
        } else {
            out.push_str(&format!("+{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xtext_round_trip_characters() {
        assert_eq!(xtext_encode("a+b=c d"), "a+2Bb+3Dc+20d");
        assert_eq!(xtext_encode("ü"), "+C3+BC");
        assert_eq!(xtext_encode("plain@example.org"), "plain@example.org");
    }

    #[test]
    fn reply_conversion_keeps_lines_and_code() {
        let r = to_reply(250, [2, 1, 0], "Sender\nOK");
        assert_eq!(r.to_bytes(), b"250-2.1.0 Sender\r\n250 2.1.0 OK\r\n");
        assert_eq!(to_reply(250, [0, 0, 0], "x").enhanced, None);
    }
}
