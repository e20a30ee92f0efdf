//! Whole-message mode (`content = "message"`): the relayed mail becomes a neutral notice.
//!
//! The text of the message went to Cryptshare as the transfer's confidential message, so the
//! relayed mail must not carry any of it: not the plain or the HTML body, not an inline image,
//! not a forwarded message. What stays is the header block as the sender wrote it (From, To,
//! Cc, Subject, Date, Message-ID, threading headers, byte for byte), minus the fields that
//! describe the old body (`Content-*`, `MIME-Version`), plus a new body: a
//! `multipart/alternative` with the notice as text and as HTML, both UTF-8 in
//! quoted-printable (7-bit safe, lines well under 998 octets), and with `notice_attachment`
//! the `attachments.html` part next to it in a `multipart/mixed`.
//!
//! The Subject stays: recipients and their filters need it, and Cryptshare's own Web App keeps
//! it too (only its notification uses a neutral subject). An operator who wants a neutral
//! subject can have the client put the subject tag in and nothing else.

use rand::Rng;

use super::analyse::fields;
use super::decode::encode_qp;
use super::rewrite::RewriteError;
use super::{Analysis, Notice};

/// A fresh boundary: `=_` cannot occur in quoted-printable, and the rest is random.
pub(super) fn new_boundary(tag: &str) -> String {
    let r: String = rand::rng()
        .sample_iter(&rand::distr::Alphanumeric)
        .take(24)
        .map(char::from)
        .collect();
    format!("=_csgw_{tag}_{r}")
}

/// The neutral notice message for `raw` (see the module comment).
pub fn neutral_message(
    raw: &[u8],
    analysis: &Analysis,
    notice: &Notice,
) -> Result<Vec<u8>, RewriteError> {
    let root = analysis.parts.first().ok_or(RewriteError::Mismatch)?;
    if root.end != raw.len() {
        return Err(RewriteError::Mismatch);
    }
    let nl = analysis.line_ending;
    let mut out = Vec::with_capacity(4096);
    for f in fields(raw, root.header_start, root.body_start) {
        if f.name.starts_with("content-") || f.name == "mime-version" {
            continue;
        }
        out.extend_from_slice(&raw[f.start..f.end]);
        // A last field without its line break (a message that is only a header).
        if !raw[..f.end].ends_with(b"\n") {
            out.extend_from_slice(nl.as_bytes());
        }
    }
    let text = notice.render_text()?;
    let html = format!(
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"></head><body>\n{}</body></html>\n",
        notice.render_html()?
    );
    let alt = new_boundary("alt");
    let mut body = Vec::new();
    push(&mut body, &format!("--{alt}{nl}"));
    push_text_part(&mut body, "text/plain", &text, nl);
    push(&mut body, &format!("{nl}--{alt}{nl}"));
    push_text_part(&mut body, "text/html", &html, nl);
    push(&mut body, &format!("{nl}--{alt}--{nl}"));

    push(&mut out, &format!("MIME-Version: 1.0{nl}"));
    match notice.attachments_html()? {
        None => {
            push(
                &mut out,
                &format!("Content-Type: multipart/alternative;{nl} boundary=\"{alt}\"{nl}{nl}"),
            );
            out.extend_from_slice(&body);
        }
        Some(list) => {
            let mixed = new_boundary("mix");
            push(
                &mut out,
                &format!(
                    "Content-Type: multipart/mixed;{nl} boundary=\"{mixed}\"{nl}{nl}\
                     --{mixed}{nl}Content-Type: multipart/alternative;{nl} boundary=\"{alt}\"{nl}{nl}"
                ),
            );
            out.extend_from_slice(&body);
            push(&mut out, &format!("{nl}--{mixed}{nl}"));
            out.extend_from_slice(&attachments_html_part(&list, nl));
            push(&mut out, &format!("{nl}--{mixed}--{nl}"));
        }
    }
    Ok(out)
}

fn push(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(s.as_bytes());
}

/// One UTF-8 quoted-printable text part, without the line break before the next delimiter.
fn push_text_part(out: &mut Vec<u8>, content_type: &str, text: &str, nl: &str) {
    push(
        out,
        &format!(
            "Content-Type: {content_type}; charset=utf-8{nl}\
             Content-Transfer-Encoding: quoted-printable{nl}{nl}"
        ),
    );
    out.extend_from_slice(&qp_one_final_break(text, nl));
}

/// Quoted-printable of `text` ending in exactly one line break: the text's last line keeps
/// its break (the one before the next delimiter belongs to the delimiter, RFC 2046 §5.1.1).
fn qp_one_final_break(text: &str, nl: &str) -> Vec<u8> {
    let mut qp = encode_qp(text.as_bytes(), nl);
    while qp.ends_with(nl.as_bytes()) {
        qp.truncate(qp.len() - nl.len());
    }
    qp.extend_from_slice(nl.as_bytes());
    qp
}

/// The `attachments.html` part (header and body, without the line break before the next
/// delimiter): an attachment in the MIME sense, so that clients showing "has attachments"
/// show the mail as one that has them.
pub(super) fn attachments_html_part(html: &str, nl: &str) -> Vec<u8> {
    let mut out = format!(
        "Content-Type: text/html; charset=utf-8; name=\"attachments.html\"{nl}\
         Content-Disposition: attachment; filename=\"attachments.html\"{nl}\
         Content-Transfer-Encoding: quoted-printable{nl}{nl}"
    )
    .into_bytes();
    out.extend_from_slice(&qp_one_final_break(html, nl));
    out
}
