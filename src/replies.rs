//! SMTP replies. Every reply text the gateway sends is built here, so that the mapping from
//! situations to codes (SPEC §3 "SMTP replies") can be read and changed in one place.

use std::fmt;

/// One SMTP reply: code, optional enhanced status code (RFC 3463), one or more text lines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub code: u16,
    pub enhanced: Option<[u8; 3]>,
    pub lines: Vec<String>,
}

impl Reply {
    pub fn new(code: u16, enhanced: [u8; 3], text: impl Into<String>) -> Reply {
        Reply {
            code,
            enhanced: Some(enhanced),
            lines: vec![text.into()],
        }
    }

    pub fn plain(code: u16, text: impl Into<String>) -> Reply {
        Reply {
            code,
            enhanced: None,
            lines: vec![text.into()],
        }
    }

    pub fn is_positive(&self) -> bool {
        (200..400).contains(&self.code)
    }

    pub fn is_transient(&self) -> bool {
        (400..500).contains(&self.code)
    }

    pub fn is_permanent(&self) -> bool {
        self.code >= 500
    }

    /// Serialise as CRLF-terminated lines (multi-line replies use `code-`). Line texts are
    /// stripped of CR/LF so that no reply text (e.g. one passed on from the next hop) can inject lines.
    pub fn write_to(&self, out: &mut Vec<u8>) {
        let n = self.lines.len().max(1);
        for i in 0..n {
            let text = self.lines.get(i).map(String::as_str).unwrap_or("");
            let sep = if i + 1 == n { ' ' } else { '-' };
            out.extend_from_slice(format!("{}{}", self.code, sep).as_bytes());
            if let Some([a, b, c]) = self.enhanced {
                out.extend_from_slice(format!("{a}.{b}.{c} ").as_bytes());
            }
            // RFC 5321 §4.5.3.1.5: a reply line is at most 512 octets with CRLF, and reply text
            // is US-ASCII. Texts passed on from Cryptshare or the next hop may be neither.
            let start = out.len();
            for ch in text.chars() {
                if ch == '\r' || ch == '\n' {
                    continue;
                }
                if out.len() - start >= 500 {
                    break;
                }
                out.push(if ch == ' ' || ch.is_ascii_graphic() {
                    ch as u8
                } else {
                    b'?'
                });
            }
            out.extend_from_slice(b"\r\n");
        }
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut v = Vec::new();
        self.write_to(&mut v);
        v
    }
}

impl fmt::Display for Reply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.to_bytes();
        let s = String::from_utf8_lossy(&b);
        f.write_str(s.trim_end_matches("\r\n").replace("\r\n", " / ").as_str())
    }
}

// --- The catalogue. Keep codes in sync with SPEC §3 and the README. ---

pub fn ok() -> Reply {
    Reply::new(250, [2, 0, 0], "OK")
}
pub fn sender_ok() -> Reply {
    Reply::new(250, [2, 1, 0], "Sender OK")
}
pub fn recipient_ok() -> Reply {
    Reply::new(250, [2, 1, 5], "Recipient OK")
}
pub fn relay_denied() -> Reply {
    Reply::new(554, [5, 7, 1], "Relay access denied")
}
pub fn message_too_big() -> Reply {
    Reply::new(
        552,
        [5, 3, 4],
        "Message size exceeds fixed maximum message size",
    )
}
pub fn too_many_recipients() -> Reply {
    Reply::new(452, [4, 5, 3], "Too many recipients")
}
pub fn mail_loop() -> Reply {
    Reply::new(
        554,
        [5, 4, 6],
        "Too many Received headers: mail loop detected",
    )
}
pub fn next_hop_unavailable(detail: &str) -> Reply {
    Reply::new(
        451,
        [4, 4, 1],
        format!("Next hop unavailable, try again later ({detail})"),
    )
}
pub fn next_hop_failed(detail: &str) -> Reply {
    Reply::new(
        451,
        [4, 4, 2],
        format!("Next hop connection failed, try again later ({detail})"),
    )
}
pub fn local_error(detail: &str) -> Reply {
    Reply::new(
        451,
        [4, 3, 0],
        format!("Local error, try again later ({detail})"),
    )
}
pub fn shutting_down(hostname: &str) -> Reply {
    Reply::new(
        421,
        [4, 3, 2],
        format!("{hostname} Service shutting down, closing transmission channel"),
    )
}
/// Spool mode: the message is in the queue, fsync'd (SPEC §3).
pub fn queued(id: &str) -> Reply {
    Reply::new(250, [2, 0, 0], format!("queued as {id}"))
}
/// Spool mode: the queue is full or its disk reserve reached (SPEC §3), at MAIL FROM.
pub fn queue_full() -> Reply {
    Reply::new(
        452,
        [4, 3, 1],
        "Insufficient system storage, try again later",
    )
}
pub fn relayed(detail: &str) -> Reply {
    let detail: String = detail.chars().take(200).collect();
    Reply::new(250, [2, 0, 0], format!("OK, relayed ({detail})"))
}
/// Per-recipient links: the next hop refused some copies for good (`refusal`, its 5xx) after it
/// had accepted the copies of `delivered`. SMTP has one reply per message: the refusal, so that
/// the sender hears of it, saying who did get a copy (a retry would not send those again).
pub fn copies_partly_refused(refusal: &Reply, refused: &[String], delivered: &[String]) -> Reply {
    let first = refusal.lines.first().map(String::as_str).unwrap_or("");
    let first: String = first.chars().take(200).collect();
    let text = format!(
        "Copy for {} refused by the next hop: {} {first}; the copies for {} were delivered",
        refused.join(", "),
        refusal.code,
        delivered.join(", ")
    );
    Reply {
        code: refusal.code,
        enhanced: Some(refusal.enhanced.unwrap_or([5, 0, 0])),
        lines: vec![text],
    }
}
/// Per-recipient links: no download link for this recipient in the transfer status.
pub fn no_recipient_link() -> Reply {
    local_error("no download link for a recipient")
}
pub fn bad_sequence_in(detail: &str) -> Reply {
    Reply::new(
        503,
        [5, 5, 1],
        format!("Bad sequence of commands ({detail})"),
    )
}

// --- Inbound session replies (src/inbound/). ---

/// `220 <hostname> <greeting>`: the banner, without an enhanced code (RFC 2034 covers 2xx/4xx/5xx
/// replies to commands only).
pub fn greeting(hostname: &str, text: &str) -> Reply {
    Reply::plain(220, format!("{hostname} {text}"))
}
pub fn helo(hostname: &str) -> Reply {
    Reply::plain(250, hostname.to_string())
}
/// The EHLO reply: our own first line, then one keyword per line.
pub fn ehlo(hostname: &str, keywords: Vec<String>) -> Reply {
    let mut lines = Vec::with_capacity(keywords.len() + 1);
    lines.push(hostname.to_string());
    lines.extend(keywords);
    Reply {
        code: 250,
        enhanced: None,
        lines,
    }
}
pub fn closing(hostname: &str) -> Reply {
    Reply::new(221, [2, 0, 0], format!("{hostname} closing connection"))
}
pub fn help() -> Reply {
    Reply::new(
        214,
        [2, 0, 0],
        "Commands: EHLO HELO MAIL RCPT DATA BDAT RSET NOOP QUIT HELP STARTTLS AUTH",
    )
}
pub fn vrfy() -> Reply {
    Reply::new(
        252,
        [2, 5, 0],
        "Cannot VRFY user, but will accept message and attempt delivery",
    )
}
pub fn not_implemented() -> Reply {
    Reply::new(502, [5, 5, 1], "Command not implemented")
}
pub fn unknown_command() -> Reply {
    Reply::new(500, [5, 5, 1], "Command unrecognized")
}
pub fn line_too_long() -> Reply {
    Reply::new(500, [5, 5, 6], "Line too long")
}
pub fn syntax_error(syntax: &str) -> Reply {
    Reply::new(501, [5, 5, 2], format!("Syntax: {syntax}"))
}
pub fn bad_sender_syntax() -> Reply {
    Reply::new(501, [5, 1, 7], "Bad sender address syntax")
}
pub fn bad_recipient_syntax() -> Reply {
    Reply::new(501, [5, 1, 3], "Bad recipient address syntax")
}
/// A verb that takes no argument was given one (`STARTTLS now`).
pub fn no_argument(verb: &str) -> Reply {
    Reply::new(501, [5, 5, 4], format!("Syntax: {verb}"))
}
pub fn duplicate_parameter(param: &str) -> Reply {
    Reply::new(
        501,
        [5, 5, 4],
        format!("Duplicate parameter {}", clip(param)),
    )
}
pub fn invalid_parameter(param: &str) -> Reply {
    Reply::new(501, [5, 5, 4], format!("Invalid parameter {}", clip(param)))
}
pub fn unsupported_parameter(param: &str) -> Reply {
    Reply::new(
        555,
        [5, 5, 4],
        format!("Unsupported parameter {}", clip(param)),
    )
}
pub fn smtputf8_required() -> Reply {
    Reply::new(553, [5, 6, 7], "Non-ASCII address requires SMTPUTF8")
}
pub fn helo_first() -> Reply {
    Reply::new(503, [5, 5, 1], "Send EHLO or HELO first")
}
pub fn nested_mail() -> Reply {
    Reply::new(503, [5, 5, 1], "Nested MAIL command")
}
pub fn need_mail() -> Reply {
    Reply::new(503, [5, 5, 1], "Need MAIL command first")
}
pub fn no_valid_recipients() -> Reply {
    Reply::new(554, [5, 5, 1], "No valid recipients")
}
pub fn bad_sequence() -> Reply {
    Reply::new(503, [5, 5, 1], "Bad sequence of commands")
}
pub fn data_after_bdat() -> Reply {
    Reply::new(503, [5, 5, 1], "DATA not allowed after BDAT")
}
pub fn binarymime_needs_bdat() -> Reply {
    Reply::new(503, [5, 5, 1], "BODY=BINARYMIME requires BDAT")
}
pub fn start_data() -> Reply {
    Reply::plain(354, "End data with <CR><LF>.<CR><LF>")
}
/// Content sent before the 354 by a client that is not trusted (RFC 2920 §3.1); the wording is
/// Postfix's (`smtpd_forbid_unauth_pipelining`), and the connection ends after it.
pub fn pipelining_violation() -> Reply {
    Reply::new(554, [5, 5, 0], "Error: SMTP protocol synchronization")
}
pub fn chunk_received(octets: u64) -> Reply {
    Reply::new(250, [2, 0, 0], format!("{octets} octets received"))
}
/// A `.` right after a bare LF or bare CR: a next hop that accepts bare line endings could take
/// it for the end of DATA (SMTP smuggling), so such a message is refused as a whole.
pub fn bare_line_ending_dot() -> Reply {
    Reply::new(
        554,
        [5, 5, 2],
        "Bare CR or LF before '.', or a '.' line not ended by CRLF, is not allowed (SMTP smuggling defence)",
    )
}
pub fn text_line_too_long(limit: usize) -> Reply {
    Reply::new(
        554,
        [5, 5, 6],
        format!("Message contains a line longer than {limit} octets"),
    )
}
pub fn tls_ready() -> Reply {
    Reply::new(220, [2, 0, 0], "Ready to start TLS")
}
pub fn tls_unavailable() -> Reply {
    Reply::new(454, [4, 7, 0], "TLS not available")
}
pub fn already_tls() -> Reply {
    Reply::new(503, [5, 5, 1], "TLS already active")
}
pub fn too_many_errors(hostname: &str) -> Reply {
    Reply::new(
        421,
        [4, 7, 0],
        format!("{hostname} Too many errors, closing connection"),
    )
}
pub fn idle_timeout(hostname: &str) -> Reply {
    Reply::new(
        421,
        [4, 4, 2],
        format!("{hostname} Idle timeout, closing connection"),
    )
}
pub fn session_timeout(hostname: &str) -> Reply {
    Reply::new(
        421,
        [4, 4, 2],
        format!("{hostname} Session time limit exceeded, closing connection"),
    )
}
pub fn auth_not_available() -> Reply {
    Reply::new(502, [5, 5, 1], "AUTH not available")
}
pub fn auth_encryption_required() -> Reply {
    Reply::new(
        538,
        [5, 7, 11],
        "Encryption required for requested authentication mechanism",
    )
}
pub fn auth_already() -> Reply {
    Reply::new(503, [5, 5, 1], "Already authenticated")
}
pub fn auth_in_transaction() -> Reply {
    Reply::new(503, [5, 5, 1], "AUTH not allowed during a mail transaction")
}
pub fn auth_mechanism_unsupported() -> Reply {
    Reply::new(504, [5, 5, 4], "Unrecognized authentication type")
}
/// `334 <base64 challenge>` (no enhanced code: it is a SASL continuation).
pub fn auth_challenge(challenge_b64: &str) -> Reply {
    Reply::plain(334, challenge_b64.to_string())
}
pub fn auth_cancelled() -> Reply {
    Reply::new(501, [5, 7, 0], "Authentication cancelled")
}
pub fn auth_bad_base64() -> Reply {
    Reply::new(501, [5, 5, 2], "Invalid base64 data")
}
pub fn auth_ok() -> Reply {
    Reply::new(235, [2, 7, 0], "Authentication successful")
}
pub fn auth_failed() -> Reply {
    Reply::new(535, [5, 7, 8], "Authentication credentials invalid")
}
pub fn auth_temp_failure() -> Reply {
    Reply::new(454, [4, 7, 0], "Temporary authentication failure")
}
pub fn auth_locked_out() -> Reply {
    Reply::new(
        454,
        [4, 7, 0],
        "Too many authentication failures from your address, try again later",
    )
}
pub fn command_timeout(hostname: &str) -> Reply {
    Reply::new(
        421,
        [4, 4, 2],
        format!("{hostname} Command timeout, closing connection"),
    )
}
pub fn too_many_connections_from_ip(hostname: &str) -> Reply {
    Reply::new(
        421,
        [4, 7, 0],
        format!("{hostname} Too many connections from your address, try again later"),
    )
}
pub fn too_many_connections(hostname: &str) -> Reply {
    Reply::new(
        421,
        [4, 7, 0],
        format!("{hostname} Too many connections, try again later"),
    )
}
pub fn too_many_auth_failures(hostname: &str) -> Reply {
    Reply::new(
        421,
        [4, 7, 0],
        format!("{hostname} Too many authentication failures, closing connection"),
    )
}

/// Client-supplied text echoed in a reply is cut short: it must not blow up the reply line.
fn clip(s: &str) -> &str {
    match s.char_indices().nth(64) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}
pub fn binarymime_not_relayable() -> Reply {
    Reply::new(
        554,
        [5, 6, 3],
        "BODY=BINARYMIME cannot be relayed: the next hop does not support it",
    )
}
pub fn smtputf8_not_relayable() -> Reply {
    Reply::new(
        553,
        [5, 6, 7],
        "Non-ASCII addresses cannot be relayed: the next hop does not support SMTPUTF8",
    )
}

// --- Conversion replies (src/pipeline/outcome.rs decides which one). ---

/// After finalize the transfer exists (or may): only the retry, which adopts it, ends well.
pub fn transfer_not_confirmed(detail: &str) -> Reply {
    Reply::new(
        451,
        [4, 3, 0],
        format!("Cryptshare transfer not confirmed, try again later: {detail}"),
    )
}
pub fn attachments_refused(detail: &str) -> Reply {
    Reply::new(
        554,
        [5, 7, 1],
        format!("Attachments refused by the Cryptshare policy: {detail}"),
    )
}
pub fn attachments_not_moved(detail: &str) -> Reply {
    Reply::new(
        554,
        [5, 3, 0],
        format!("Attachments could not be moved to Cryptshare: {detail}"),
    )
}
pub fn cryptshare_unavailable(detail: &str) -> Reply {
    Reply::new(
        451,
        [4, 3, 0],
        format!("Cryptshare unavailable, try again later: {detail}"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reply_lines_are_ascii_and_at_most_512_octets() {
        let r = Reply::new(451, [4, 3, 0], format!("Grüße\r\nQUIT {}", "x".repeat(600)));
        let b = r.to_bytes();
        assert_eq!(b.len(), 512);
        assert!(b.starts_with(b"451 4.3.0 Gr??eQUIT xxx"));
        assert!(b.ends_with(b"x\r\n"));
        assert!(b.is_ascii());
    }
}
