//! Delivery status notifications: RFC 3464 `message/delivery-status` in an RFC 6522
//! `multipart/report`, built by hand (lettre's builder has no multipart/report).
//!
//! 1. `text/plain; charset=utf-8` for a person: `7bit` when ASCII with lines of at most 998
//!    octets, else `quoted-printable`.
//! 2. `message/delivery-status`, always 7-bit: `Original-Envelope-Id`, `Reporting-MTA`,
//!    `Arrival-Date`, `X-Gateway-Queue-ID`, then one block per recipient in RFC 3464's order.
//! 3. With `RET=FULL` and a failed recipient the original as `message/rfc822`; otherwise (HDRS,
//!    no RET, only delays: RFC 3461 §4.3) its header block as `text/rfc822-headers`.
//!
//! # Documented choices
//! * **Untrusted text.** No control character reaches a field: addresses lose them; in the
//!   diagnostic, remote MTA and queue id they and whitespace runs become one space. Invisible
//!   format characters ([`is_invisible`]: bidi overrides, zero-width) go from the diagnostic
//!   and from everything the text part shows.
//! * **Non-ASCII addresses** stay in the 7-bit part: address type `utf-8` in RFC 6533's
//!   `utf-8-addr-xtext` form (`\x{HEX}` for non-ASCII, space, `\`, `+`, `=`), safe without
//!   SMTPUTF8 (RFC 6533 §3). ASCII addresses are `rfc822;` exactly as sent (quoted local parts
//!   too). Other non-ASCII machine text (diagnostic, envid) uses the same `\x{HEX}` notation.
//! * **Folding** at spaces to 78 columns where possible; a word that would pass 998 octets is
//!   broken with an inserted space (not inside a character or an escape).
//! * **The original** goes unchanged as `message/rfc822` when it is a valid `8bit` body; bare
//!   CR and LF become CRLF; with NUL or a line over 998 octets (BINARYMIME only) its headers go
//!   instead ([`BuiltDsn::returned`]). The header block ends at the first empty line (bare LF
//!   too) or the end, is capped at [`MAX_RETURNED_HEADERS`] in whole lines, gets CRLF, loses
//!   NULs and has lines over 998 octets folded.
//! * **8-bit.** Non-ASCII octets in part 3 make it and the message `8bit`: send with
//!   `BODY=8BITMIME` ([`BuiltDsn::eight_bit`]). A non-ASCII sender is UTF-8 in `To:` (RFC 6532):
//!   send with `SMTPUTF8` ([`BuiltDsn::smtputf8`]), as its address needs anyway.
//! * **Ids.** [`build_dsn`] draws a random Message-ID and boundary (`=_`-prefixed, which
//!   quoted-printable cannot contain; drawn again if it occurs in the content).
//!   [`build_dsn_with_ids`] takes the caller's (a spool can store them to rebuild the same
//!   report) and refuses a boundary that occurs in the content.

use std::borrow::Cow;
use std::fmt::Write as _;

use chrono::{DateTime, Utc};
use rand::Rng;

use super::text::is_invisible;

/// At most this many octets of the original's header block are returned.
pub const MAX_RETURNED_HEADERS: usize = 64 * 1024;
/// A longer diagnostic is cut (at a character boundary) and ends with `...`.
const MAX_DIAGNOSTIC: usize = 2000;
/// Preferred line length (RFC 5322 §2.1.1 "SHOULD").
const WIDTH: usize = 78;
/// Line length limit without the CRLF (RFC 5322 §2.1.1 "MUST").
const MAX_LINE: usize = 998;

/// What happened to a recipient (RFC 3464 §2.3.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DsnAction {
    Failed,
    Delayed,
}

impl DsnAction {
    pub fn as_str(self) -> &'static str {
        match self {
            DsnAction::Failed => "failed",
            DsnAction::Delayed => "delayed",
        }
    }
}

/// One recipient of the report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DsnRecipient {
    /// The forward path as the client sent it, without angle brackets (may be a quoted local
    /// part, may be UTF-8).
    pub address: String,
    /// `ORCPT` (rfc822 type), xtext-decoded.
    pub orcpt: Option<String>,
    pub action: DsnAction,
    /// RFC 3463 status, `5.7.1`; anything that is not `class.subject.detail` with class 2, 4
    /// or 5 is reported as `5.0.0` (failed) or `4.0.0` (delayed).
    pub status: String,
    /// The SMTP reply that decided it, e.g. `554 5.7.1 Attachments refused …`.
    pub diagnostic: Option<String>,
    /// The next hop that gave the reply: `127.0.0.1:10026` or a host name.
    pub remote_mta: Option<String>,
    pub last_attempt: DateTime<Utc>,
    /// For delayed recipients: when the gateway gives up (ignored for failed ones).
    pub will_retry_until: Option<DateTime<Utc>>,
}

/// What of the original goes back: the envelope's `RET` (RFC 3461 §4.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DsnReturn {
    /// `RET=FULL`: the whole message as `message/rfc822`.
    Full,
    /// `RET=HDRS` or no `RET`: the header block as `text/rfc822-headers`.
    #[default]
    Headers,
}

/// Everything a report is made of.
#[derive(Debug, Clone)]
pub struct Dsn<'a> {
    /// This gateway's host name (`server.hostname`): `Reporting-MTA`, `From:`, `Message-ID`.
    pub reporting_mta: &'a str,
    /// The gateway's id of the message: in the text part and as `X-Gateway-Queue-ID`.
    pub queue_id: &'a str,
    /// `ENVID`, xtext-decoded: `Original-Envelope-Id`.
    pub envid: Option<&'a str>,
    pub arrival: DateTime<Utc>,
    /// The envelope sender the report goes to, without angle brackets; never the null sender.
    pub sender: &'a str,
    pub recipients: &'a [DsnRecipient],
    /// The original message as received.
    pub original: &'a [u8],
    pub ret: DsnReturn,
    /// `Date:` of the report.
    pub now: DateTime<Utc>,
}

/// The report's own identifiers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DsnIds {
    /// `Message-ID` without angle brackets: `dot-atom-text "@" (dot-atom-text / domain-literal)`.
    pub message_id: String,
    /// MIME boundary: 1 to 70 of `A-Za-z0-9'()+_,-./:=?` (RFC 2046 bchars without space).
    pub boundary: String,
}

impl DsnIds {
    /// Fresh ids for `d`: Message-ID `<YYYYmmddHHMMSS.QUEUEID.RANDOM@reporting_mta>` (the queue
    /// id reduced to letters, digits, `-` and `_`), boundary `=_dsn_` and 32 random letters
    /// and digits.
    pub fn random(d: &Dsn) -> DsnIds {
        let queue: String = d
            .queue_id
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
            .take(64)
            .collect();
        let dot = if queue.is_empty() { "" } else { "." };
        let now = d.now.format("%Y%m%d%H%M%S");
        let message_id = format!("{now}{dot}{queue}.{}@{}", random_alnum(16), d.reporting_mta);
        DsnIds {
            message_id,
            boundary: new_boundary(),
        }
    }
}

/// A built report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuiltDsn {
    /// The message, CRLF line endings throughout, ready for DATA/BDAT (not dot-stuffed).
    pub bytes: Vec<u8>,
    /// Its `Message-ID`, without angle brackets.
    pub message_id: String,
    /// The body has 8-bit octets: send with `BODY=8BITMIME`.
    pub eight_bit: bool,
    /// The header has UTF-8 (a non-ASCII sender in `To:`): send with `SMTPUTF8`.
    pub smtputf8: bool,
    /// What was attached of the original: [`DsnReturn::Headers`] also when `RET=FULL` was
    /// asked but the report has no failed recipient or the original cannot be carried.
    pub returned: DsnReturn,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DsnError {
    #[error("no delivery status notification for the null sender")]
    NullSender,
    #[error("the sender address is too long for a To: header ({0} octets)")]
    SenderTooLong(usize),
    #[error("a delivery status notification needs at least one recipient")]
    NoRecipients,
    #[error("reporting MTA {0:?} is not a host name")]
    ReportingMta(String),
    #[error("invalid DSN ids: {0}")]
    InvalidIds(&'static str),
    #[error("the MIME boundary occurs in the report's content")]
    BoundaryInContent,
}

/// Build the report with fresh random ids ([`DsnIds::random`]).
pub fn build_dsn(d: &Dsn) -> Result<BuiltDsn, DsnError> {
    let mut ids = DsnIds::random(d);
    loop {
        match build_dsn_with_ids(d, &ids) {
            Err(DsnError::BoundaryInContent) => ids.boundary = new_boundary(),
            other => return other,
        }
    }
}

/// Build the report with the caller's ids; [`DsnError::BoundaryInContent`] if the boundary
/// occurs anywhere in the parts.
pub fn build_dsn_with_ids(d: &Dsn, ids: &DsnIds) -> Result<BuiltDsn, DsnError> {
    let sender = strip_controls(d.sender);
    if sender.is_empty() || sender == "<>" {
        return Err(DsnError::NullSender);
    }
    if "To: <>".len() + sender.len() > MAX_LINE {
        return Err(DsnError::SenderTooLong(sender.len()));
    }
    if d.recipients.is_empty() {
        return Err(DsnError::NoRecipients);
    }
    if !is_host(d.reporting_mta) {
        return Err(DsnError::ReportingMta(strip_controls(d.reporting_mta)));
    }
    check_ids(ids)?;

    let any_failed = d.recipients.iter().any(|r| r.action == DsnAction::Failed);
    let full = if d.ret == DsnReturn::Full && any_failed {
        full_original(d.original)
    } else {
        None
    };
    let (returned, part3): (DsnReturn, Cow<[u8]>) = match full {
        Some(b) => (DsnReturn::Full, b),
        None => (DsnReturn::Headers, Cow::Owned(header_block(d.original))),
    };
    let (text_cte, part1) = encode_text(&human_text(d, returned));
    let part2 = delivery_status(d);

    let boundary = ids.boundary.as_bytes();
    let found = |hay: &[u8]| memchr::memmem::find(hay, boundary).is_some();
    if found(part1.as_bytes()) || found(part2.as_bytes()) || found(&part3) {
        return Err(DsnError::BoundaryInContent);
    }
    let eight_bit = part3.iter().any(|&b| b >= 0x80);

    let mut h = String::with_capacity(1024);
    let from = format!("Mail Delivery System <MAILER-DAEMON@{}>", d.reporting_mta);
    push_field(&mut h, "From", &from);
    let subject = if any_failed {
        "Undelivered Mail Returned to Sender"
    } else {
        "Delayed Mail (still being retried)"
    };
    // Each of these fits a line (the address is not folded; host names are 255 octets at most).
    let _ = write!(
        h,
        "To: <{sender}>\r\nSubject: {subject}\r\nDate: {}\r\nMessage-ID: <{}>\r\n\
         Auto-Submitted: auto-replied\r\nMIME-Version: 1.0\r\n\
         Content-Type: multipart/report; report-type=delivery-status;\r\n\tboundary=\"{}\"\r\n",
        date(d.now),
        ids.message_id,
        ids.boundary
    );
    if eight_bit {
        h.push_str("Content-Transfer-Encoding: 8bit\r\n");
    }
    h.push_str("\r\nThis is a MIME-encapsulated message.\r\n");

    let b = &ids.boundary;
    let _ = write!(
        h,
        "\r\n--{b}\r\nContent-Description: Notification\r\n\
         Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: {text_cte}\r\n\r\n"
    );
    h.push_str(&part1);
    let _ = write!(
        h,
        "\r\n--{b}\r\nContent-Description: Delivery report\r\n\
         Content-Type: message/delivery-status\r\n\r\n"
    );
    h.push_str(&part2);
    let (description, content_type) = match returned {
        DsnReturn::Full => ("Undelivered Message", "message/rfc822"),
        DsnReturn::Headers if any_failed => ("Undelivered Message Headers", "text/rfc822-headers"),
        DsnReturn::Headers => ("Delayed Message Headers", "text/rfc822-headers"),
    };
    let _ = write!(
        h,
        "\r\n--{b}\r\nContent-Description: {description}\r\nContent-Type: {content_type}\r\n"
    );
    if eight_bit {
        h.push_str("Content-Transfer-Encoding: 8bit\r\n");
    }
    h.push_str("\r\n");
    let tail = format!("\r\n--{b}--\r\n");

    let mut bytes = Vec::with_capacity(h.len() + part3.len() + tail.len());
    bytes.extend_from_slice(h.as_bytes());
    bytes.extend_from_slice(&part3);
    bytes.extend_from_slice(tail.as_bytes());
    Ok(BuiltDsn {
        bytes,
        message_id: ids.message_id.clone(),
        eight_bit,
        smtputf8: !sender.is_ascii(),
        returned,
    })
}

// ---------------------------------------------------------------------------------------------
// Part 1: the human-readable text

fn human_text(d: &Dsn, returned: DsnReturn) -> Vec<String> {
    let (failed, delayed): (Vec<&DsnRecipient>, Vec<&DsnRecipient>) = d
        .recipients
        .iter()
        .partition(|r| r.action == DsnAction::Failed);
    let mut l: Vec<String> = Vec::new();
    l.push(format!("This is the mail system at {}.", d.reporting_mta));
    l.push(String::new());
    if !failed.is_empty() {
        l.push("Your message could not be delivered to one or more recipients.".into());
        if !delayed.is_empty() {
            l.push("Delivery to the delayed recipients below is still being retried.".into());
        }
    } else {
        l.push("Delivery of your message to one or more recipients is delayed.".into());
        l.push("It is still being retried; you do not need to send it again.".into());
    }
    l.push(String::new());
    l.push(format!("Queue ID: {}", display(&one_line(d.queue_id))));
    l.push(format!("Arrival date: {}", date(d.arrival)));
    for (title, group) in [
        ("Failed recipients:", &failed),
        ("Delayed recipients:", &delayed),
    ] {
        if group.is_empty() {
            continue;
        }
        l.push(String::new());
        l.push(title.into());
        for r in group.iter() {
            l.push(String::new());
            l.push(format!("  <{}>", display(&strip_controls(&r.address))));
            let status = status_of(r);
            let kind = match (status.as_bytes()[0], r.action) {
                (b'2', _) => "success",
                (b'4', DsnAction::Delayed) => "temporary failure",
                (b'4', DsnAction::Failed) => "temporary failure, no longer retried",
                _ => "permanent failure",
            };
            l.push(format!("    Status: {status} ({kind})"));
            if let Some(m) = r.remote_mta.as_deref().map(one_line)
                && !m.is_empty()
            {
                l.push(format!("    Remote server: {}", display(&m)));
            }
            if let Some(diag) = diagnostic(r) {
                wrap(&mut l, "    Reply: ", "        ", &display(&diag));
            }
            l.push(format!("    Last attempt: {}", date(r.last_attempt)));
            if r.action == DsnAction::Delayed
                && let Some(until) = r.will_retry_until
            {
                l.push(format!("    Retrying until: {}", date(until)));
            }
        }
    }
    l.push(String::new());
    l.push(
        match returned {
            DsnReturn::Full => "Your message is attached.",
            DsnReturn::Headers => "The headers of your message are attached.",
        }
        .into(),
    );
    l
}

/// Word-wrap `text` (single spaces) to [`WIDTH`] columns after `first`, continuing with `cont`.
fn wrap(out: &mut Vec<String>, first: &str, cont: &str, text: &str) {
    let mut line = first.to_string();
    let mut has_word = false;
    for word in text.split(' ').filter(|w| !w.is_empty()) {
        let len = line.chars().count();
        if has_word && len + 1 + word.chars().count() > WIDTH {
            out.push(std::mem::replace(&mut line, cont.to_string()));
            has_word = false;
        }
        if has_word {
            line.push(' ');
        }
        line.push_str(word);
        has_word = true;
    }
    out.push(line);
}

/// `7bit` when every line is ASCII and short enough, else quoted-printable (RFC 2045 §6.7).
fn encode_text(lines: &[String]) -> (&'static str, String) {
    let mut out = String::new();
    if lines.iter().all(|l| l.is_ascii() && l.len() <= MAX_LINE) {
        for l in lines {
            out.push_str(l);
            out.push_str("\r\n");
        }
        return ("7bit", out);
    }
    for l in lines {
        let bytes = l.as_bytes();
        let mut col = 0;
        for (i, &b) in bytes.iter().enumerate() {
            let last = i + 1 == bytes.len();
            let literal = (b'!'..=b'~').contains(&b) && b != b'=' || (b == b' ' && !last);
            let token_len = if literal { 1 } else { 3 };
            // 76 octets a line including the soft break's "=".
            if col + token_len > 75 {
                out.push_str("=\r\n");
                col = 0;
            }
            if literal {
                out.push(b as char);
            } else {
                let _ = write!(out, "={b:02X}");
            }
            col += token_len;
        }
        out.push_str("\r\n");
    }
    ("quoted-printable", out)
}

// ---------------------------------------------------------------------------------------------
// Part 2: message/delivery-status

fn delivery_status(d: &Dsn) -> String {
    let mut s = String::new();
    if let Some(envid) = d.envid.map(strip_controls)
        && !envid.is_empty()
    {
        push_field(&mut s, "Original-Envelope-Id", &escape_non_ascii(&envid));
    }
    push_field(
        &mut s,
        "Reporting-MTA",
        &format!("dns; {}", d.reporting_mta),
    );
    push_field(&mut s, "Arrival-Date", &date(d.arrival));
    let queue = escape_non_ascii(&one_line(d.queue_id));
    if !queue.is_empty() {
        push_field(&mut s, "X-Gateway-Queue-ID", &queue);
    }
    for r in d.recipients {
        s.push_str("\r\n");
        if let Some(orcpt) = r.orcpt.as_deref().map(strip_controls)
            && !orcpt.is_empty()
        {
            push_field(&mut s, "Original-Recipient", &typed_address(&orcpt));
        }
        push_field(
            &mut s,
            "Final-Recipient",
            &typed_address(&strip_controls(&r.address)),
        );
        push_field(&mut s, "Action", r.action.as_str());
        push_field(&mut s, "Status", &status_of(r));
        if let Some(m) = r.remote_mta.as_deref().map(one_line)
            && !m.is_empty()
        {
            push_field(
                &mut s,
                "Remote-MTA",
                &format!("dns; {}", escape_non_ascii(&m)),
            );
        }
        if let Some(diag) = diagnostic(r) {
            push_field(
                &mut s,
                "Diagnostic-Code",
                &format!("smtp; {}", escape_non_ascii(&diag)),
            );
        }
        push_field(&mut s, "Last-Attempt-Date", &date(r.last_attempt));
        if r.action == DsnAction::Delayed
            && let Some(until) = r.will_retry_until
        {
            push_field(&mut s, "Will-Retry-Until", &date(until));
        }
    }
    s
}

/// `rfc822; addr` for ASCII, `utf-8; ` with RFC 6533 utf-8-addr-xtext otherwise.
fn typed_address(a: &str) -> String {
    if a.is_ascii() {
        return format!("rfc822; {a}");
    }
    // QCHAR = %x21-2a / %x2c-3c / %x3e-5b / %x5d-7e
    let qchar = |c: char| ('!'..='~').contains(&c) && !matches!(c, '+' | '=' | '\\');
    format!("utf-8; {}", escape(a, qchar))
}

fn status_of(r: &DsnRecipient) -> String {
    let s = r.status.trim();
    let mut it = s.split('.');
    let ok = matches!(it.next(), Some("2" | "4" | "5"))
        && it
            .by_ref()
            .take(2)
            .filter(|n| (1..=3).contains(&n.len()) && n.bytes().all(|b| b.is_ascii_digit()))
            .count()
            == 2
        && it.next().is_none();
    if ok {
        s.to_string()
    } else {
        match r.action {
            DsnAction::Failed => "5.0.0".into(),
            DsnAction::Delayed => "4.0.0".into(),
        }
    }
}

fn diagnostic(r: &DsnRecipient) -> Option<String> {
    let mut d = one_line(r.diagnostic.as_deref()?);
    if d.is_empty() {
        return None;
    }
    if d.len() > MAX_DIAGNOSTIC {
        let mut cut = MAX_DIAGNOSTIC;
        while !d.is_char_boundary(cut) {
            cut -= 1;
        }
        d.truncate(cut);
        d.push_str("...");
    }
    Some(d)
}

// ---------------------------------------------------------------------------------------------
// Part 3: the original

#[derive(Clone, Copy, PartialEq, Eq)]
enum Ending {
    None,
    CrLf,
    /// A bare CR or a bare LF.
    Bare,
}

/// Lines ended by CRLF, bare LF or bare CR.
struct Lines<'a> {
    s: &'a [u8],
    pos: usize,
}

impl<'a> Iterator for Lines<'a> {
    type Item = (&'a [u8], Ending);
    fn next(&mut self) -> Option<Self::Item> {
        let rest = self.s.get(self.pos..).filter(|r| !r.is_empty())?;
        match memchr::memchr2(b'\r', b'\n', rest) {
            None => {
                self.pos = self.s.len();
                Some((rest, Ending::None))
            }
            Some(i) if rest[i] == b'\r' && rest.get(i + 1) == Some(&b'\n') => {
                self.pos += i + 2;
                Some((&rest[..i], Ending::CrLf))
            }
            Some(i) => {
                self.pos += i + 1;
                Some((&rest[..i], Ending::Bare))
            }
        }
    }
}

fn lines(s: &[u8]) -> Lines<'_> {
    Lines { s, pos: 0 }
}

/// The original as an `8bit` body: as it is, or with CRLF line endings; `None` if it has NUL or
/// a line longer than 998 octets.
fn full_original(original: &[u8]) -> Option<Cow<'_, [u8]>> {
    let mut bare = false;
    for (line, end) in lines(original) {
        if line.len() > MAX_LINE || memchr::memchr(0, line).is_some() {
            return None;
        }
        bare |= end == Ending::Bare;
    }
    if !bare {
        return Some(Cow::Borrowed(original));
    }
    let mut out = Vec::with_capacity(original.len() + original.len() / 32);
    for (line, end) in lines(original) {
        out.extend_from_slice(line);
        if end != Ending::None {
            out.extend_from_slice(b"\r\n");
        }
    }
    Some(Cow::Owned(out))
}

/// The header block: up to the first empty line (or everything), CRLF line endings, no NUL,
/// lines folded at 998 octets, at most [`MAX_RETURNED_HEADERS`] octets of whole (folded) lines.
fn header_block(original: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut folded = Vec::new();
    for (line, end) in lines(original) {
        if line.is_empty() && end != Ending::None {
            break;
        }
        let line: Cow<[u8]> = if memchr::memchr(0, line).is_some() {
            Cow::Owned(line.iter().copied().filter(|&b| b != 0).collect())
        } else {
            Cow::Borrowed(line)
        };
        folded.clear();
        fold_raw(&line, &mut folded);
        if out.len() + folded.len() > MAX_RETURNED_HEADERS {
            break;
        }
        out.extend_from_slice(&folded);
    }
    out
}

/// `line` plus CRLF, broken into lines of at most [`MAX_LINE`] octets (continuations start with
/// a space), not inside a UTF-8 sequence where the octets are UTF-8.
fn fold_raw(line: &[u8], out: &mut Vec<u8>) {
    let mut rest = line;
    let mut room = MAX_LINE;
    while rest.len() > room {
        let mut cut = room;
        // Back to the start of a UTF-8 sequence (at most three continuation octets).
        while room - cut < 3 && cut > 1 && rest[cut] & 0xC0 == 0x80 {
            cut -= 1;
        }
        if rest[cut] & 0xC0 == 0x80 {
            cut = room;
        }
        out.extend_from_slice(&rest[..cut]);
        out.extend_from_slice(b"\r\n ");
        rest = &rest[cut..];
        room = MAX_LINE - 1;
    }
    out.extend_from_slice(rest);
    out.extend_from_slice(b"\r\n");
}

// ---------------------------------------------------------------------------------------------
// Small pieces

/// `Name: value` folded at spaces to [`WIDTH`] columns where possible, never over
/// [`MAX_LINE`] octets (a longer word is broken with an inserted space).
fn push_field(out: &mut String, name: &str, value: &str) {
    let mut line = format!("{name}:");
    let mut has_word = false;
    for word in value.split(' ') {
        if has_word && !word.is_empty() && line.len() + 1 + word.len() > WIDTH {
            push_line(out, &line);
            line.clear();
        }
        line.push(' ');
        line.push_str(word);
        has_word |= !word.is_empty();
    }
    push_line(out, &line);
}

/// One (possibly over-long) line of a folded field, broken at [`MAX_LINE`], neither inside a
/// character nor inside a `\x{HEX}` escape (at most 10 octets).
fn push_line(out: &mut String, line: &str) {
    let mut rest = line;
    let mut room = MAX_LINE;
    while rest.len() > room {
        let mut cut = room;
        while !rest.is_char_boundary(cut) {
            cut -= 1;
        }
        if let Some(p) = rest[..cut].rfind('\\')
            && cut - p < 10
            && rest[p..].starts_with("\\x{")
            && !rest[p..cut].contains('}')
        {
            cut = p;
        }
        out.push_str(&rest[..cut]);
        out.push_str("\r\n ");
        rest = &rest[cut..];
        // The inserted space counts towards the next line.
        room = MAX_LINE - 1;
    }
    out.push_str(rest);
    out.push_str("\r\n");
}

/// RFC 5322 date-time.
fn date(t: DateTime<Utc>) -> String {
    t.format("%a, %d %b %Y %H:%M:%S +0000").to_string()
}

/// Without control characters (an address: its spaces are its own).
fn strip_controls(s: &str) -> String {
    s.chars().filter(|c| !c.is_control()).collect()
}

/// One line: controls and whitespace runs become one space, invisible characters go.
fn one_line(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if is_invisible(c) {
            continue;
        }
        if c.is_control() || c.is_whitespace() {
            if !out.is_empty() && !out.ends_with(' ') {
                out.push(' ');
            }
        } else {
            out.push(c);
        }
    }
    while out.ends_with(' ') {
        out.pop();
    }
    out
}

/// For the text part: without invisible format characters.
fn display(s: &str) -> String {
    s.chars().filter(|&c| !is_invisible(c)).collect()
}

/// Non-ASCII characters as `\x{HEX}` (RFC 6533 notation).
fn escape_non_ascii(s: &str) -> String {
    escape(s, |c| c.is_ascii())
}

/// `s` with each character `keep` refuses as RFC 6533's EmbeddedUnicodeChar `\x{HEX}`
/// (HEXPOINT: upper-case, at least two digits, no other leading zeros).
fn escape(s: &str, keep: impl Fn(char) -> bool) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if keep(c) {
            out.push(c);
        } else {
            let _ = write!(out, "\\x{{{:02X}}}", c as u32);
        }
    }
    out
}

fn is_atext(c: u8) -> bool {
    c.is_ascii_alphanumeric() || b"!#$%&'*+-/=?^_`{|}~".contains(&c)
}

fn is_dot_atom(s: &str) -> bool {
    !s.is_empty()
        && s.split('.')
            .all(|a| !a.is_empty() && a.bytes().all(is_atext))
}

/// A dot-atom host name or a domain literal `[…]`, at most 255 octets.
fn is_host(s: &str) -> bool {
    let literal = |s: &str| {
        s.strip_prefix('[')
            .and_then(|s| s.strip_suffix(']'))
            .is_some_and(|l| {
                !l.is_empty()
                    && l.bytes()
                        .all(|b| (33..=126).contains(&b) && !b"[]\\".contains(&b))
            })
    };
    s.len() <= 255 && (is_dot_atom(s) || literal(s))
}

fn check_ids(ids: &DsnIds) -> Result<(), DsnError> {
    let (left, right) = ids
        .message_id
        .rsplit_once('@')
        .ok_or(DsnError::InvalidIds("Message-ID without @"))?;
    if left.len() > 255 || !is_dot_atom(left) || !is_host(right) {
        return Err(DsnError::InvalidIds(
            "Message-ID is not dot-atom@domain (255 octets each at most)",
        ));
    }
    let b = &ids.boundary;
    if b.is_empty()
        || b.len() > 70
        || !b
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || b"'()+_,-./:=?".contains(&c))
    {
        return Err(DsnError::InvalidIds(
            "boundary must be 1 to 70 of A-Za-z0-9'()+_,-./:=?",
        ));
    }
    Ok(())
}

fn random_alnum(n: usize) -> String {
    rand::rng()
        .sample_iter(&rand::distr::Alphanumeric)
        .take(n)
        .map(char::from)
        .collect()
}

fn new_boundary() -> String {
    format!("=_dsn_{}", random_alnum(32))
}
