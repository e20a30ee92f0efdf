//! The sender's receipt (`sender_receipt = true`): after a conversion the gateway tells the
//! envelope sender what went to Cryptshare, for whom, until when, and what is left to do.
//!
//! Built by hand like the DSNs (`dsn.rs`; the project has no mail builder crate, and this is
//! one `text/plain` part): UTF-8 in quoted-printable, so 7-bit with lines under 78 octets
//! whatever the file names hold; CRLF throughout.
//!
//! # Documented choices
//! * **An auto-generated message** (RFC 3834): `Auto-Submitted: auto-generated` (§5),
//!   `X-Auto-Response-Suppress: All` (Exchange's out-of-office replies honour only this), sent
//!   by the pipeline with the null reverse path (§3.3: bounces of a receipt go nowhere, and
//!   nobody replies to it automatically). `In-Reply-To`/`References` name the original's
//!   Message-ID, so mail clients thread it with the sent message.
//! * **Untrusted text** (subject, names, addresses): control and invisible format characters
//!   (bidi overrides, zero-width) are dropped before anything is written; the subject goes into
//!   the `Subject:` header as RFC 2047 words when it is not short printable ASCII.
//! * **Never a receipt to the null sender** and never one for a message that is itself
//!   auto-submitted (RFC 3834 §2): the pipeline checks both ([`wants_receipt`]).

use std::fmt::Write as _;

use chrono::{DateTime, NaiveDate, Utc};

use super::decode::encode_qp;
use super::text::is_invisible;
use super::{Access, Language};

/// One moved file as the receipt lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceiptFile {
    pub name: String,
    pub size: u64,
    /// Lower-case hex.
    pub sha256: String,
}

/// Everything a receipt says.
#[derive(Debug, Clone)]
pub struct Receipt<'a> {
    pub language: Language,
    /// The `From:` field's value (`receipt_from`, validated, or the default).
    pub from: &'a str,
    /// The envelope sender (not null: see [`wants_receipt`]).
    pub to: &'a str,
    /// The original's subject, decoded (without the subject tag).
    pub subject: Option<&'a str>,
    /// The original's Message-ID, without angle brackets.
    pub in_reply_to: Option<&'a str>,
    pub recipients: &'a [String],
    pub files: &'a [ReceiptFile],
    pub tracking_id: &'a str,
    pub expires: Option<NaiveDate>,
    pub access: Access,
    /// The text went too, as the transfer's confidential message.
    pub whole_message: bool,
    /// For the Message-ID's right-hand side.
    pub hostname: &'a str,
    pub date: DateTime<Utc>,
}

/// Whether a message from `sender` with header block `raw` gets a receipt: not for the null
/// sender, not for a message with `Auto-Submitted:` other than `no` (RFC 3834 §2).
pub fn wants_receipt(sender: &str, raw: &[u8]) -> bool {
    if sender.is_empty() {
        return false;
    }
    let Some(msg) = mail_parser::MessageParser::default().parse_headers(raw) else {
        return true;
    };
    let auto = msg
        .header_raw("Auto-Submitted")
        .map(|v| v.trim().to_ascii_lowercase());
    auto.is_none_or(|v| v == "no" || v.starts_with("no;") || v.starts_with("no "))
}

fn clean(s: &str, max: usize) -> String {
    s.chars()
        .filter(|&c| !is_invisible(c))
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(max)
        .collect()
}

/// A fresh Message-ID `<receipt.RANDOM@hostname>`.
fn message_id(hostname: &str) -> String {
    use rand::Rng;
    let r: String = rand::rng()
        .sample_iter(&rand::distr::Alphanumeric)
        .take(24)
        .map(char::from)
        .collect();
    let host: String = hostname
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-'))
        .collect();
    let host = if host.is_empty() { "localhost" } else { &host };
    format!("<receipt.{r}@{host}>")
}

/// The `Subject:` field, CRLF-terminated.
fn subject_field(prefix: &str, subject: Option<&str>) -> Vec<u8> {
    let value = match subject.map(|s| clean(s, 300)) {
        Some(s) if !s.trim().is_empty() => format!("{prefix}: {}", s.trim()),
        _ => prefix.to_string(),
    };
    let mut out = b"Subject:".to_vec();
    if value.bytes().all(|b| (0x20..0x7f).contains(&b)) && value.len() <= 68 {
        out.push(b' ');
        out.extend_from_slice(value.as_bytes());
    } else {
        super::subject::encode_words(&value, "Subject:".len(), b"\r\n", &mut out);
    }
    out.extend_from_slice(b"\r\n");
    out
}

/// The text of the receipt (LF line ends).
pub fn receipt_text(r: &Receipt) -> String {
    let l = r.language;
    let t = l.texts();
    let mut s = String::new();
    let intro = if r.whole_message {
        t.receipt_intro_message
    } else {
        t.receipt_intro
    };
    let _ = writeln!(s, "{intro}\n");
    if let Some(subject) = r.subject.map(|x| clean(x, 300)).filter(|x| !x.is_empty()) {
        let _ = writeln!(s, "{}{subject}", t.label(t.subject));
    }
    let _ = writeln!(s, "{}{}", t.label(t.tracking_id), clean(r.tracking_id, 100));
    if let Some(d) = r.expires {
        let _ = writeln!(s, "{}{}", t.label(t.available_until), l.date(d));
    }
    let _ = writeln!(s, "\n{}", t.label(t.recipients).trim_end());
    for rcpt in r.recipients {
        let _ = writeln!(s, "  - {}", clean(rcpt, 254));
    }
    if !r.files.is_empty() {
        let _ = writeln!(s, "\n{}", t.label(t.files).trim_end());
        for f in r.files {
            let _ = writeln!(s, "  - {} ({})", clean(&f.name, 255), l.size(f.size));
            let _ = writeln!(s, "    SHA-256: {}", clean(&f.sha256, 64));
        }
    }
    let _ = writeln!(s, "\n{}", r.access.sender_instructions(l));
    let _ = writeln!(s, "\n-- \n{}", t.receipt_footer);
    s
}

/// The whole receipt message (header and body), CRLF line ends, 7-bit.
pub fn build_receipt(r: &Receipt) -> Vec<u8> {
    let mut out = Vec::with_capacity(2048);
    let push = |out: &mut Vec<u8>, s: &str| out.extend_from_slice(s.as_bytes());
    push(&mut out, &format!("From: {}\r\n", clean(r.from, 900)));
    push(&mut out, &format!("To: <{}>\r\n", clean(r.to, 900)));
    out.extend_from_slice(&subject_field(
        r.language.texts().receipt_subject,
        r.subject,
    ));
    push(&mut out, &format!("Date: {}\r\n", r.date.to_rfc2822()));
    push(
        &mut out,
        &format!("Message-ID: {}\r\n", message_id(r.hostname)),
    );
    if let Some(id) = r.in_reply_to {
        let id: String = id
            .chars()
            .filter(|c| c.is_ascii_graphic() && !matches!(c, '<' | '>'))
            .take(250)
            .collect();
        if id.contains('@') {
            push(
                &mut out,
                &format!("In-Reply-To: <{id}>\r\nReferences: <{id}>\r\n"),
            );
        }
    }
    push(
        &mut out,
        &format!(
            "Auto-Submitted: auto-generated\r\nX-Auto-Response-Suppress: All\r\n\
             Content-Language: {}\r\nMIME-Version: 1.0\r\n\
             Content-Type: text/plain; charset=utf-8\r\n\
             Content-Transfer-Encoding: quoted-printable\r\n\r\n",
            r.language.tag()
        ),
    );
    out.extend_from_slice(&encode_qp(receipt_text(r).as_bytes(), "\r\n"));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_receipt_for_the_null_sender_or_an_auto_submitted_message() {
        assert!(wants_receipt("a@b.c", b"Subject: x\r\n\r\nbody"));
        assert!(!wants_receipt("", b"Subject: x\r\n\r\nbody"));
        assert!(!wants_receipt(
            "a@b.c",
            b"Auto-Submitted: auto-replied\r\n\r\nbody"
        ));
        assert!(wants_receipt("a@b.c", b"Auto-Submitted: no\r\n\r\nbody"));
    }

    #[test]
    fn subjects_are_plain_when_short_ascii_else_encoded_words() {
        assert_eq!(
            subject_field("Cryptshare receipt", Some("Figures")),
            b"Subject: Cryptshare receipt: Figures\r\n"
        );
        let f =
            String::from_utf8(subject_field("R", Some("Zahlen \u{202e}für Q4\r\nBcc: x"))).unwrap();
        assert!(f.starts_with("Subject: =?UTF-8?B?"), "{f}");
        assert!(f.lines().all(|l| l.len() <= 78), "{f}");
        assert_eq!(f.matches("\r\n").count(), f.lines().count());
    }
}
