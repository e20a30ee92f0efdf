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
            for ch in text.chars() {
                if ch != '\r' && ch != '\n' {
                    let mut buf = [0u8; 4];
                    out.extend_from_slice(ch.encode_utf8(&mut buf).as_bytes());
                }
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
pub fn relayed(detail: &str) -> Reply {
    let detail: String = detail.chars().take(200).collect();
    Reply::new(250, [2, 0, 0], format!("OK, relayed ({detail})"))
}
pub fn bad_sequence(detail: &str) -> Reply {
    Reply::new(
        503,
        [5, 5, 1],
        format!("Bad sequence of commands ({detail})"),
    )
}
pub fn no_valid_recipients() -> Reply {
    Reply::new(554, [5, 5, 1], "No valid recipients")
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
