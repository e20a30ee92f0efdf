//! The small error set the pipeline acts on (its `outcome` step maps it to SMTP replies): each
//! Cryptshare failure is either worth retrying later ([`Error::Temporary`]), a permanent refusal
//! by the server's policy ([`Error::Refused`]), a verification problem ([`Error::Auth`]) or a
//! request the server found malformed, i.e. our own bug ([`Error::Invalid`]).

use std::fmt;

/// What went wrong, without secrets: never a token, client id or password.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Detail {
    /// The API operation, e.g. `create-session`.
    pub operation: &'static str,
    /// HTTP status, when the server answered.
    pub status: Option<u16>,
    /// The proprietary `errorCode`, when the server sent one.
    pub error_code: Option<i32>,
    pub message: String,
}

impl fmt::Display for Detail {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.operation)?;
        if let Some(s) = self.status {
            write!(f, ": HTTP {s}")?;
        }
        if let Some(c) = self.error_code {
            write!(f, " errorCode {c}")?;
        }
        write!(f, ": {}", self.message)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// Connect/timeout/transport errors, 5xx, 429, 404 (unsupported version, vanished entity),
    /// and every error answer without a Cryptshare `errorCode` (a proxy's page).
    #[error("cryptshare temporary failure: {0}")]
    Temporary(Detail),
    /// 403 3010/3011 (policy), 409 2001 (settings or size), a transfer that ended `FAILED`.
    #[error("cryptshare refused: {0}")]
    Refused(Detail),
    /// 3001/3002 after one re-verification; client-id verification unavailable.
    #[error("cryptshare verification failed: {0}")]
    Auth(Detail),
    /// 400 and other answers that mean this client sent something wrong.
    #[error("cryptshare rejected the request as invalid: {0}")]
    Invalid(Detail),
}

/// The class of an [`Error`], for matching without the detail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    Temporary,
    Refused,
    Auth,
    Invalid,
}

impl Error {
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::Temporary(_) => ErrorKind::Temporary,
            Error::Refused(_) => ErrorKind::Refused,
            Error::Auth(_) => ErrorKind::Auth,
            Error::Invalid(_) => ErrorKind::Invalid,
        }
    }

    /// One short line for an SMTP reply: the operation and what happened, without the chain of
    /// transport causes the log line carries (e.g. `transfer-policy: connect failed (Connection
    /// refused)` or `create-session: HTTP 503`).
    pub fn brief(&self) -> String {
        let d = self.detail();
        let mut out = d.operation.to_string();
        if let Some(s) = d.status {
            out.push_str(&format!(": HTTP {s}"));
            if let Some(c) = d.error_code {
                out.push_str(&format!(" errorCode {c}"));
            }
            if !d.message.is_empty() {
                out.push_str(": ");
                out.push_str(&d.message);
            }
        } else {
            // Transport messages are "<what>: <reqwest error>: <cause>: … : <root cause>".
            let segments: Vec<&str> = d.message.split(": ").collect();
            out.push_str(": ");
            out.push_str(segments[0]);
            if let Some(root) = segments.get(1..).and_then(|rest| rest.last()) {
                let root = match root.find(" (os error") {
                    Some(i) => &root[..i],
                    None => root,
                };
                out.push_str(&format!(" ({root})"));
            }
        }
        out
    }

    pub fn detail(&self) -> &Detail {
        match self {
            Error::Temporary(d) | Error::Refused(d) | Error::Auth(d) | Error::Invalid(d) => d,
        }
    }

    pub fn is_temporary(&self) -> bool {
        self.kind() == ErrorKind::Temporary
    }
    pub fn is_refused(&self) -> bool {
        self.kind() == ErrorKind::Refused
    }
    pub fn is_auth(&self) -> bool {
        self.kind() == ErrorKind::Auth
    }
    pub fn is_invalid(&self) -> bool {
        self.kind() == ErrorKind::Invalid
    }

    /// The server's `errorCode`, if any.
    pub fn error_code(&self) -> Option<i32> {
        self.detail().error_code
    }

    /// The HTTP status, if the server answered.
    pub fn status(&self) -> Option<u16> {
        self.detail().status
    }

    pub(crate) fn local(
        kind: ErrorKind,
        operation: &'static str,
        message: impl Into<String>,
    ) -> Self {
        Self::from_kind(
            kind,
            Detail {
                operation,
                status: None,
                error_code: None,
                message: message.into(),
            },
        )
    }

    pub(crate) fn from_kind(kind: ErrorKind, d: Detail) -> Self {
        match kind {
            ErrorKind::Temporary => Error::Temporary(d),
            ErrorKind::Refused => Error::Refused(d),
            ErrorKind::Auth => Error::Auth(d),
            ErrorKind::Invalid => Error::Invalid(d),
        }
    }

    /// Classify an HTTP error answer by status and Cryptshare error code (see [`classify`]).
    pub(crate) fn from_status(
        operation: &'static str,
        status: u16,
        error_code: Option<i32>,
        message: String,
    ) -> Self {
        let kind = classify(status, error_code);
        Self::from_kind(
            kind,
            Detail {
                operation,
                status: Some(status),
                error_code,
                message,
            },
        )
    }

    /// A transport failure (connect, TLS, timeout, reset): always worth a later retry.
    pub(crate) fn transport(operation: &'static str, e: reqwest::Error) -> Self {
        let what = if e.is_timeout() {
            "timeout"
        } else if e.is_connect() {
            "connect failed"
        } else {
            "transport error"
        };
        // The URL would only repeat the operation and the sender address.
        let e = e.without_url();
        let mut msg = format!("{what}: {}", sanitize(&e.to_string()));
        let mut src = std::error::Error::source(&e);
        while let Some(s) = src {
            msg.push_str(": ");
            msg.push_str(&sanitize(&s.to_string()));
            src = s.source();
        }
        Error::Temporary(Detail {
            operation,
            status: None,
            error_code: None,
            message: msg,
        })
    }
}

/// HTTP status + errorCode → class. Only a Cryptshare `errorCode` can make a refusal
/// permanent (or the client's fault): an error answer without one comes from something in
/// between — a reverse proxy's bare 403/413/502 page, a load balancer — and is temporary.
pub fn classify(status: u16, error_code: Option<i32>) -> ErrorKind {
    match (status, error_code) {
        (_, None) => ErrorKind::Temporary,
        (401, _) | (403, Some(3001 | 3002)) => ErrorKind::Auth,
        (403, Some(3010 | 3011)) => ErrorKind::Refused,
        (409, _) | (413, _) | (410, _) => ErrorKind::Refused,
        (429, _) | (408, _) => ErrorKind::Temporary,
        // Unsupported version, vanished session or unknown endpoint: an operator (or a server
        // upgrade) fixes it; the message must stay queued meanwhile.
        (404, _) => ErrorKind::Temporary,
        (403, _) => ErrorKind::Refused,
        (s, _) if s >= 500 => ErrorKind::Temporary,
        _ => ErrorKind::Invalid,
    }
}

/// Server-supplied text is untrusted: keep it short and on one line.
pub(crate) fn sanitize(s: &str) -> String {
    let mut out: String = s
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(300)
        .collect();
    if s.chars().count() > 300 {
        out.push_str("...");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classification_table() {
        assert_eq!(classify(500, Some(5000)), ErrorKind::Temporary);
        assert_eq!(classify(503, None), ErrorKind::Temporary);
        assert_eq!(classify(429, Some(2007)), ErrorKind::Temporary);
        assert_eq!(classify(404, Some(2004)), ErrorKind::Temporary);
        assert_eq!(classify(403, Some(3010)), ErrorKind::Refused);
        assert_eq!(classify(403, Some(3011)), ErrorKind::Refused);
        assert_eq!(classify(409, Some(2001)), ErrorKind::Refused);
        assert_eq!(classify(401, Some(3002)), ErrorKind::Auth);
        assert_eq!(classify(403, Some(3002)), ErrorKind::Auth);
        assert_eq!(classify(403, Some(3001)), ErrorKind::Auth);
        assert_eq!(classify(400, Some(1002)), ErrorKind::Invalid);
        assert_eq!(classify(400, Some(1004)), ErrorKind::Invalid);
        // No errorCode: a proxy's page, never permanent, never "our bug".
        for s in [400, 401, 403, 404, 409, 410, 413, 502, 503] {
            assert_eq!(classify(s, None), ErrorKind::Temporary, "{s}");
        }
    }

    #[test]
    fn brief_is_one_short_line() {
        let e = Error::Temporary(Detail {
            operation: "transfer-policy",
            status: None,
            error_code: None,
            message: "connect failed: error sending request: client error (Connect): tcp connect error: Connection refused (os error 111)".into(),
        });
        assert_eq!(
            e.brief(),
            "transfer-policy: connect failed (Connection refused)"
        );
        let e = Error::Refused(Detail {
            operation: "transfer-policy",
            status: Some(403),
            error_code: Some(3010),
            message: "recipient not allowed".into(),
        });
        assert_eq!(
            e.brief(),
            "transfer-policy: HTTP 403 errorCode 3010: recipient not allowed"
        );
    }

    #[test]
    fn sanitize_strips_controls_and_truncates() {
        assert_eq!(sanitize("a\r\nb"), "a  b");
        let long = "x".repeat(400);
        assert_eq!(sanitize(&long).chars().count(), 303);
    }
}
