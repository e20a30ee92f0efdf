//! Delivery status notifications the gateway writes itself (spool mode): RFC 3464
//! `message/delivery-status` inside an RFC 6522 `multipart/report`, with the per-recipient
//! fields RFC 3461 asks for (`Original-Recipient` from `ORCPT=`, `Original-Envelope-Id` from
//! `ENVID=`).
//!
//! Written by hand: lettre's builder has no `multipart/report`. Every untrusted string (the
//! diagnostic, addresses, the envelope id) loses its control and format characters before it
//! goes into a field, and long fields are folded, so that no line passes 998 octets.

use chrono::{DateTime, Utc};

use super::text::strip_invisible;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DsnAction {
    Failed,
    Delayed,
}

impl DsnAction {
    fn field(self) -> &'static str {
        match self {
            DsnAction::Failed => "failed",
            DsnAction::Delayed => "delayed",
        }
    }
}

/// One recipient of a DSN.
#[derive(Debug, Clone)]
pub struct DsnRecipient {
    /// The forward path as the client sent it.
    pub address: String,
    /// `ORCPT=` (rfc822 type), xtext-decoded.
    pub orcpt: Option<String>,
    pub action: DsnAction,
    /// `5.7.1`, `4.4.7`, …
    pub status: String,
    /// The SMTP reply that decided it, as one line.
    pub diagnostic: Option<String>,
    /// The next hop, `host:port`.
    pub remote_mta: Option<String>,
    pub last_attempt: DateTime<Utc>,
    /// For a delay: until when the gateway keeps trying.
    pub will_retry_until: Option<DateTime<Utc>>,
}

/// What of the original the DSN carries (`RET=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DsnReturn {
    /// `RET=FULL`: the whole message, `message/rfc822`.
    Full,
    /// `RET=HDRS` or none: its header block, `text/rfc822-headers`.
    Headers,
}

/// The DSN's Message-ID and MIME boundary; [`DsnIds::random`] outside tests.
#[derive(Debug, Clone)]
pub struct DsnIds {
    pub message_id: String,
    pub boundary: String,
}

impl DsnIds {
    pub fn random(reporting_mta: &str) -> DsnIds {
        use rand::Rng;
        let mut rng = rand::rng();
        let a: u64 = rng.random();
        let b: u64 = rng.random();
        DsnIds {
            message_id: format!("<dsn.{a:016x}@{}>", clean(reporting_mta)),
            boundary: format!("=_dsn_{b:016x}"),
        }
    }
}

pub struct Dsn<'a> {
    /// Our host name (`server.hostname`).
    pub reporting_mta: &'a str,
    /// The gateway's queue id of the original.
    pub queue_id: &'a str,
    /// `ENVID=` of the original.
    pub envid: Option<&'a str>,
    pub arrival: DateTime<Utc>,
    /// The envelope sender of the original: the DSN's only recipient.
    pub sender: &'a str,
    pub recipients: &'a [DsnRecipient],
    pub original: &'a [u8],
    pub ret: DsnReturn,
    pub now: DateTime<Utc>,
    pub ids: &'a DsnIds,
}

/// The DSN's bytes; `eight_bit` when it carries an 8-bit original (relay it with
/// `BODY=8BITMIME`).
#[derive(Debug, Clone)]
pub struct BuiltDsn {
    pub bytes: Vec<u8>,
    pub eight_bit: bool,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DsnError {
    #[error("no DSN to the null sender")]
    NullSender,
    #[error("a DSN needs at least one recipient")]
    NoRecipients,
}

/// Longest header block of the original carried back (`text/rfc822-headers`).
const MAX_HEADERS: usize = 64 * 1024;

pub fn build_dsn(d: &Dsn) -> Result<BuiltDsn, DsnError> {
    if d.sender.is_empty() {
        return Err(DsnError::NullSender);
    }
    if d.recipients.is_empty() {
        return Err(DsnError::NoRecipients);
    }
    let failed = d.recipients.iter().any(|r| r.action == DsnAction::Failed);
    let mta = clean(d.reporting_mta);
    // A boundary must not occur in what it separates; lengthen it until it does not.
    let mut boundary = d.ids.boundary.clone();
    while contains(d.original, boundary.as_bytes()) {
        boundary.push('x');
    }
    let mut out: Vec<u8> = Vec::with_capacity(4096 + d.original.len());
    let mut h = |name: &str, value: &str| fold(&mut out, name, value);
    h(
        "From",
        &format!("Mail Delivery System <MAILER-DAEMON@{mta}>"),
    );
    h("To", &format!("<{}>", clean(d.sender)));
    h(
        "Subject",
        if failed {
            "Undelivered Mail Returned to Sender"
        } else {
            "Delayed Mail (still being retried)"
        },
    );
    h("Date", &d.now.to_rfc2822());
    h("Message-ID", &clean(&d.ids.message_id));
    h("Auto-Submitted", "auto-replied");
    h("MIME-Version", "1.0");
    h(
        "Content-Type",
        &format!("multipart/report; report-type=delivery-status; boundary=\"{boundary}\""),
    );
    out.extend_from_slice(b"\r\nThis is a MIME-encapsulated message.\r\n\r\n");

    // 1. The human-readable part.
    part_header(&mut out, &boundary, "text/plain; charset=utf-8", "8bit");
    let mut text = String::new();
    text.push_str(&format!("This is the mail system at host {mta}.\r\n\r\n"));
    if failed {
        text.push_str(
            "Your message could not be delivered to one or more recipients.\r\n\
             It is attached below.\r\n\r\n",
        );
    } else {
        text.push_str(
            "Your message could not be delivered yet to one or more recipients.\r\n\
             The mail system keeps trying; no action is required.\r\n\r\n",
        );
    }
    for r in d.recipients {
        text.push_str(&format!(
            "<{}>: {}\r\n",
            clean(&r.address),
            r.action.field()
        ));
        if let Some(diag) = &r.diagnostic {
            for line in wrap(&clean(diag), 74) {
                text.push_str(&format!("    {line}\r\n"));
            }
        }
        if let Some(until) = r.will_retry_until {
            text.push_str(&format!(
                "    Retrying until {}.\r\n",
                until.format("%Y-%m-%d %H:%M UTC")
            ));
        }
    }
    text.push_str(&format!("\r\nQueue id: {}\r\n", clean(d.queue_id)));
    out.extend_from_slice(text.as_bytes());
    out.extend_from_slice(b"\r\n");

    // 2. The machine-readable report.
    part_header(&mut out, &boundary, "message/delivery-status", "7bit");
    let mut ds = Vec::new();
    fold(&mut ds, "Reporting-MTA", &format!("dns; {mta}"));
    fold(&mut ds, "X-Gateway-Queue-ID", &clean(d.queue_id));
    if let Some(envid) = d.envid {
        fold(&mut ds, "Original-Envelope-Id", &xtext(&clean(envid)));
    }
    fold(&mut ds, "Arrival-Date", &d.arrival.to_rfc2822());
    for r in d.recipients {
        ds.extend_from_slice(b"\r\n");
        if let Some(o) = &r.orcpt {
            fold(
                &mut ds,
                "Original-Recipient",
                &format!("rfc822; {}", xtext(&clean(o))),
            );
        }
        fold(
            &mut ds,
            "Final-Recipient",
            &format!("rfc822; {}", xtext(&clean(&r.address))),
        );
        fold(&mut ds, "Action", r.action.field());
        fold(&mut ds, "Status", &status(&r.status, r.action));
        if let Some(m) = &r.remote_mta {
            fold(&mut ds, "Remote-MTA", &format!("dns; {}", clean(m)));
        }
        if let Some(diag) = &r.diagnostic {
            fold(
                &mut ds,
                "Diagnostic-Code",
                &format!("smtp; {}", ascii(&clean(diag))),
            );
        }
        fold(&mut ds, "Last-Attempt-Date", &r.last_attempt.to_rfc2822());
        if let Some(until) = r.will_retry_until {
            fold(&mut ds, "Will-Retry-Until", &until.to_rfc2822());
        }
    }
    out.extend_from_slice(&ds);
    out.extend_from_slice(b"\r\n");

    // 3. The original, or its headers.
    let mut eight_bit = false;
    match d.ret {
        DsnReturn::Full => {
            eight_bit = d.original.iter().any(|&b| b >= 0x80);
            part_header(
                &mut out,
                &boundary,
                "message/rfc822",
                if eight_bit { "8bit" } else { "7bit" },
            );
            out.extend_from_slice(d.original);
            if !d.original.ends_with(b"\r\n") {
                out.extend_from_slice(b"\r\n");
            }
        }
        DsnReturn::Headers => {
            part_header(&mut out, &boundary, "text/rfc822-headers", "7bit");
            let headers = header_block(d.original);
            // 8-bit header bytes (raw UTF-8 subjects) would make the DSN 8-bit: replaced.
            for line in headers.split(|&b| b == b'\n') {
                let line = line.strip_suffix(b"\r").unwrap_or(line);
                if line.is_empty() {
                    continue;
                }
                let line: Vec<u8> = line
                    .iter()
                    .take(998)
                    .map(|&b| {
                        if b >= 0x80 || (b < 0x20 && b != b'\t') {
                            b'?'
                        } else {
                            b
                        }
                    })
                    .collect();
                out.extend_from_slice(&line);
                out.extend_from_slice(b"\r\n");
            }
        }
    }
    out.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    Ok(BuiltDsn {
        bytes: out,
        eight_bit,
    })
}

fn part_header(out: &mut Vec<u8>, boundary: &str, content_type: &str, cte: &str) {
    out.extend_from_slice(format!("--{boundary}\r\n").as_bytes());
    out.extend_from_slice(format!("Content-Type: {content_type}\r\n").as_bytes());
    out.extend_from_slice(format!("Content-Transfer-Encoding: {cte}\r\n\r\n").as_bytes());
}

/// `Name: value` folded at spaces to lines of at most 78 octets where possible (a word longer
/// than that stays whole, up to 998).
fn fold(out: &mut Vec<u8>, name: &str, value: &str) {
    let mut line = format!("{name}:");
    let mut first = true;
    for word in value.split(' ').filter(|w| !w.is_empty()) {
        let word: String = word.chars().take(900).collect();
        if !first && line.len() + 1 + word.len() > 78 {
            out.extend_from_slice(line.as_bytes());
            out.extend_from_slice(b"\r\n");
            line = String::from("\t");
            line.push_str(&word);
        } else {
            line.push(' ');
            line.push_str(&word);
        }
        first = false;
    }
    out.extend_from_slice(line.as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// Lines of at most `width` characters, broken at spaces.
fn wrap(s: &str, width: usize) -> Vec<String> {
    let mut lines = Vec::new();
    let mut line = String::new();
    for word in s.split(' ').filter(|w| !w.is_empty()) {
        if !line.is_empty() && line.chars().count() + 1 + word.chars().count() > width {
            lines.push(std::mem::take(&mut line));
        }
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(word);
    }
    if !line.is_empty() {
        lines.push(line);
    }
    lines
}

/// No control or format characters (bidi overrides, zero-width), no line breaks.
fn clean(s: &str) -> String {
    strip_invisible(s)
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect::<String>()
        .trim()
        .to_string()
}

/// A field of `message/delivery-status` is ASCII: other characters as `?`.
fn ascii(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_ascii() { c } else { '?' })
        .collect()
}

/// RFC 3461 §4 xtext for an address type `rfc822` value: `+`, `=`, controls and non-ASCII as
/// `+XX` (UTF-8 bytes).
fn xtext(s: &str) -> String {
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

/// `X.Y.Z` as RFC 3463 wants it, and of the class the action implies.
fn status(s: &str, action: DsnAction) -> String {
    let ok = s.split('.').count() == 3
        && s.split('.')
            .all(|p| !p.is_empty() && p.len() <= 3 && p.bytes().all(|b| b.is_ascii_digit()));
    if ok && (s.starts_with('4') || s.starts_with('5')) {
        return s.to_string();
    }
    match action {
        DsnAction::Failed => "5.0.0".into(),
        DsnAction::Delayed => "4.0.0".into(),
    }
}

/// The header block: up to the first empty line (CRLF or bare LF), at most `MAX_HEADERS`.
fn header_block(m: &[u8]) -> &[u8] {
    let end = find(m, b"\r\n\r\n")
        .or_else(|| find(m, b"\n\n"))
        .unwrap_or(m.len());
    &m[..end.min(MAX_HEADERS)]
}

fn find(h: &[u8], n: &[u8]) -> Option<usize> {
    memchr::memmem::find(h, n)
}

fn contains(h: &[u8], n: &[u8]) -> bool {
    find(h, n).is_some()
}
