//! Splicing rewrite: cut the removed parts out by their offsets, put the notice at the top of
//! the text bodies, and copy every other byte unchanged.

use mail_parser::decoders::charsets::map::charset_decoder;

use super::analyse::{Field, fields};
use super::decode::{decode_to_vec, encode_base64, encode_qp};
use super::{Analysis, Class, Notice, NoticeError, Part, PartId, TransferEncoding};

/// SMTP's line limit without the CRLF (RFC 5322 §2.1.1).
const MAX_LINE: usize = 998;

#[derive(Debug, thiserror::Error)]
pub enum RewriteError {
    #[error("part {0} does not exist")]
    NoSuchPart(PartId),
    #[error("part {0} cannot be removed on its own (not a leaf of a multipart)")]
    NotRemovable(PartId),
    #[error("no text body and no room for a notice part (multipart/signed or /encrypted root)")]
    NoRoomForNotice,
    #[error("the analysis does not belong to this message")]
    Mismatch,
    #[error(transparent)]
    Notice(#[from] NoticeError),
}

/// Replace `raw[start..end]` with `bytes`; zero-length edits are insertions.
#[derive(Debug)]
struct Edit {
    start: usize,
    end: usize,
    bytes: Vec<u8>,
}

/// Remove `remove` from the message and add `notice`. With nothing to remove, the message is
/// returned unchanged.
pub fn rewrite(
    raw: &[u8],
    analysis: &Analysis,
    remove: &[PartId],
    notice: &Notice,
) -> Result<Vec<u8>, RewriteError> {
    splice(raw, analysis, remove, Some(notice))
}

/// The message without the parts in `remove` and without a notice: what whole-message mode
/// uploads as the confidential message (the attachments travel as files of their own). A
/// single-part message that is itself the attachment keeps its header with an empty text body.
pub fn without_parts(
    raw: &[u8],
    analysis: &Analysis,
    remove: &[PartId],
) -> Result<Vec<u8>, RewriteError> {
    splice(raw, analysis, remove, None)
}

fn splice(
    raw: &[u8],
    analysis: &Analysis,
    remove: &[PartId],
    notice: Option<&Notice>,
) -> Result<Vec<u8>, RewriteError> {
    let parts = &analysis.parts;
    if parts.is_empty() || parts[0].end != raw.len() {
        return Err(RewriteError::Mismatch);
    }
    if remove.is_empty() {
        return Ok(raw.to_vec());
    }
    let mut removed = vec![false; parts.len()];
    for &id in remove {
        let p = parts.get(id).ok_or(RewriteError::NoSuchPart(id))?;
        if !p.children.is_empty() || (p.cut.is_none() && id != 0) {
            return Err(RewriteError::NotRemovable(id));
        }
        removed[id] = true;
    }
    // A container left without children goes as well (pre-order: children follow parents).
    // The root stays: it receives the notice part instead.
    for i in (1..parts.len()).rev() {
        let p = &parts[i];
        if !p.children.is_empty() && p.children.iter().all(|&c| removed[c]) {
            removed[i] = true;
        }
    }
    let nl = analysis.line_ending;
    let text = match notice {
        Some(n) => n.render_text()?.replace('\n', nl),
        None => String::new(),
    };
    let mut edits: Vec<Edit> = Vec::new();

    if removed[0] {
        replace_root(raw, &parts[0], &text, nl, &mut edits);
        return Ok(apply(raw, edits));
    }
    for p in parts.iter().skip(1) {
        let parent_removed = p.parent.is_some_and(|q| removed[q]);
        if removed[p.id] && !parent_removed {
            let cut = p.cut.clone().ok_or(RewriteError::NotRemovable(p.id))?;
            edits.push(Edit {
                start: cut.start,
                end: cut.end,
                bytes: Vec::new(),
            });
        }
    }

    let alive = |p: &Part| !analysis_removed(analysis, &removed, p.id);
    // When a policy converts signed mail (breaking the signature knowingly), the text bodies
    // inside the signed part are the ones to annotate.
    let signed_body = |p: &Part| {
        p.flags.in_signed
            && !(p.flags.in_encrypted || p.flags.in_message)
            && p.children.is_empty()
            && p.file_name.is_none()
            && p.disposition != Some(super::Disposition::Attachment)
    };
    let first_of = |t: &str| {
        parts
            .iter()
            .find(|p| p.class == Class::Body && p.content_type == t && alive(p))
            .or_else(|| {
                parts
                    .iter()
                    .find(|p| p.content_type == t && signed_body(p) && alive(p))
            })
    };
    let bodies: Vec<&Part> = [first_of("text/plain"), first_of("text/html")]
        .into_iter()
        .flatten()
        .collect();
    let Some(notice) = notice else {
        return Ok(apply(raw, edits));
    };
    if bodies.is_empty() {
        notice_part(raw, analysis, &removed, &text, nl, &mut edits)?;
    } else {
        let html = notice.render_html()?.replace('\n', nl);
        for p in bodies {
            let n = if p.content_type == "text/html" {
                &html
            } else {
                &text
            };
            annotate(raw, p, n, nl, &mut edits);
        }
    }
    if let Some(list) = notice.attachments_html()? {
        attachment_list(analysis, &list, nl, &mut edits);
    }
    Ok(apply(raw, edits))
}

/// `notice_attachment`: the `attachments.html` part goes last into the root `multipart/mixed`
/// — which a message whose attachments moved is, unless it was a single part (then it became
/// the notice itself) or its root is signed or encrypted (no room: exactly two parts).
/// Inserted where the last child ends, before the line break of the closing delimiter; it
/// ends in a line break of its own, as the neutral notice's parts do.
fn attachment_list(a: &Analysis, list: &str, nl: &str, edits: &mut Vec<Edit>) {
    let root = &a.parts[0];
    let (Some(&last), Some(boundary)) = (root.children.last(), root.boundary.as_deref()) else {
        return;
    };
    if root.content_type != "multipart/mixed" {
        return;
    }
    let Some(end) = a.parts[last].cut.as_ref().map(|c| c.end) else {
        return;
    };
    let mut bytes = format!("{nl}--{boundary}{nl}").into_bytes();
    bytes.extend_from_slice(&super::neutral::attachments_html_part(list, nl));
    edits.push(Edit {
        start: end,
        end,
        bytes,
    });
}

fn analysis_removed(a: &Analysis, removed: &[bool], id: PartId) -> bool {
    let mut cur = Some(id);
    while let Some(c) = cur {
        if removed[c] {
            return true;
        }
        cur = a.parts[c].parent;
    }
    false
}

fn apply(raw: &[u8], mut edits: Vec<Edit>) -> Vec<u8> {
    // Stable: insertions at one position keep their order, and come before a cut starting there.
    edits.sort_by_key(|e| (e.start, e.end));
    let extra: usize = edits.iter().map(|e| e.bytes.len()).sum();
    let mut out = Vec::with_capacity(raw.len() + extra);
    let mut cursor = 0;
    for e in edits {
        // Edits never overlap by construction; a defensive clamp keeps output well-formed if
        // an analysis were ever inconsistent.
        let start = e.start.max(cursor);
        out.extend_from_slice(&raw[cursor..start]);
        out.extend_from_slice(&e.bytes);
        cursor = e.end.max(start);
    }
    out.extend_from_slice(&raw[cursor..]);
    out
}

/// Where new header fields go (before the blank line), and whether that blank line exists.
fn header_block_end(raw: &[u8], p: &Part) -> (usize, bool) {
    let head = &raw[p.header_start..p.body_start];
    if head.ends_with(b"\r\n\r\n") || head == b"\r\n" {
        (p.body_start - 2, true)
    } else if head.ends_with(b"\n\n") || head == b"\n" {
        (p.body_start - 1, true)
    } else if head.ends_with(b"\n\r\n") {
        (p.body_start - 2, true)
    } else {
        (p.body_start, false)
    }
}

fn qp_part(text: &str, nl: &str) -> Vec<u8> {
    let mut out = format!(
        "Content-Type: text/plain; charset=utf-8{nl}Content-Transfer-Encoding: quoted-printable{nl}Content-Disposition: inline{nl}{nl}"
    )
    .into_bytes();
    out.extend_from_slice(&encode_qp(text.as_bytes(), nl));
    out
}

/// A single-part message that is itself the attachment: it becomes a text/plain notice.
fn replace_root(raw: &[u8], root: &Part, text: &str, nl: &str, edits: &mut Vec<Edit>) {
    let (block_end, has_blank) = header_block_end(raw, root);
    let mut have_ct = false;
    let mut have_cte = false;
    for f in fields(raw, root.header_start, block_end) {
        let replacement = match f.name.as_str() {
            "content-type" => {
                have_ct = true;
                format!("Content-Type: text/plain; charset=utf-8{nl}")
            }
            "content-transfer-encoding" => {
                have_cte = true;
                format!("Content-Transfer-Encoding: quoted-printable{nl}")
            }
            "content-disposition" | "content-description" | "content-id" => String::new(),
            _ => continue,
        };
        edits.push(Edit {
            start: f.start,
            end: f.end,
            bytes: replacement.into_bytes(),
        });
    }
    let mut add = String::new();
    if !have_ct {
        add.push_str(&format!("Content-Type: text/plain; charset=utf-8{nl}"));
    }
    if !have_cte {
        add.push_str(&format!("Content-Transfer-Encoding: quoted-printable{nl}"));
    }
    if !has_blank {
        add.push_str(nl);
    }
    edits.push(Edit {
        start: block_end,
        end: block_end,
        bytes: add.into_bytes(),
    });
    edits.push(Edit {
        start: root.body_start,
        end: root.end,
        bytes: encode_qp(text.as_bytes(), nl),
    });
}

/// No text body left: the notice becomes the first part of the root multipart.
fn notice_part(
    raw: &[u8],
    a: &Analysis,
    removed: &[bool],
    text: &str,
    nl: &str,
    edits: &mut Vec<Edit>,
) -> Result<(), RewriteError> {
    let root = &a.parts[0];
    let (Some(&first), Some(boundary)) = (root.children.first(), root.boundary.as_deref()) else {
        return Err(RewriteError::NotRemovable(0));
    };
    if root.content_type == "multipart/signed" || root.content_type == "multipart/encrypted" {
        // Exactly two parts by definition: no room for a notice part.
        return Err(RewriteError::NoRoomForNotice);
    }
    let first = &a.parts[first];
    let part = qp_part(text, nl);
    if removed[first.id] {
        // Its cut starts with its own delimiter line: keep that line, put the notice after it.
        let cut = first
            .cut
            .clone()
            .ok_or(RewriteError::NotRemovable(first.id))?;
        let mut bytes = raw[cut.start..first.header_start].to_vec();
        bytes.extend_from_slice(&part);
        for e in edits.iter_mut() {
            if e.start == cut.start && e.end == cut.end {
                e.bytes = std::mem::take(&mut bytes);
            }
        }
    } else {
        let mut bytes = part;
        bytes.extend_from_slice(format!("{nl}--{boundary}{nl}").as_bytes());
        edits.push(Edit {
            start: first.header_start,
            end: first.header_start,
            bytes,
        });
    }
    Ok(())
}

/// The notice in the body's charset, or `None` if that charset cannot carry it.
fn encode_in_charset(text: &str, charset: &str) -> Option<Vec<u8>> {
    match charset {
        "utf-8" | "utf8" => Some(text.as_bytes().to_vec()),
        "iso-8859-1" | "latin1" | "iso-8859-15" | "windows-1252" | "cp1252" | "latin-1" => text
            .chars()
            .map(|c| {
                let v = c as u32;
                // 0xC0..=0xFF is identical in all of these; the rest only as ASCII.
                (v < 0x80 || (0xC0..=0xFF).contains(&v)).then_some(v as u8)
            })
            .collect(),
        _ if text.is_ascii() => Some(text.as_bytes().to_vec()),
        _ => None,
    }
}

fn max_line(data: &[u8]) -> usize {
    data.split(|&c| c == b'\n')
        .map(<[u8]>::len)
        .max()
        .unwrap_or(0)
}

/// Edit the `charset` parameter of the part's Content-Type to utf-8 (or add one).
fn set_utf8(
    raw: &[u8],
    p: &Part,
    hdr: &[Field],
    block_end: usize,
    nl: &str,
    edits: &mut Vec<Edit>,
) {
    let Some(f) = hdr.iter().find(|f| f.name == "content-type") else {
        edits.push(Edit {
            start: block_end,
            end: block_end,
            bytes: format!("Content-Type: {}; charset=utf-8{nl}", p.content_type).into_bytes(),
        });
        return;
    };
    let value = raw[f.value_start..f.value_end].to_ascii_lowercase();
    if let Some(i) = memchr::memmem::find(&value, b"charset") {
        let mut j = i + 7;
        while j < value.len() && (value[j] == b' ' || value[j] == b'\t') {
            j += 1;
        }
        if value.get(j) == Some(&b'=') {
            j += 1;
            let start = j;
            let end = if value.get(j) == Some(&b'"') {
                memchr::memchr(b'"', &value[j + 1..]).map_or(value.len(), |k| j + 1 + k + 1)
            } else {
                value[j..]
                    .iter()
                    .position(|&c| c == b';' || c.is_ascii_whitespace())
                    .map_or(value.len(), |k| j + k)
            };
            edits.push(Edit {
                start: f.value_start + start,
                end: f.value_start + end,
                bytes: b"utf-8".to_vec(),
            });
            return;
        }
    }
    edits.push(Edit {
        start: f.value_end,
        end: f.value_end,
        bytes: b"; charset=utf-8".to_vec(),
    });
}

fn set_qp(raw: &[u8], hdr: &[Field], block_end: usize, nl: &str, edits: &mut Vec<Edit>) {
    let _ = raw;
    match hdr.iter().find(|f| f.name == "content-transfer-encoding") {
        Some(f) => edits.push(Edit {
            start: f.value_start,
            end: f.value_end,
            bytes: b" quoted-printable".to_vec(),
        }),
        None => edits.push(Edit {
            start: block_end,
            end: block_end,
            bytes: format!("Content-Transfer-Encoding: quoted-printable{nl}").into_bytes(),
        }),
    }
}

/// After `<body …>`, else 0.
fn html_insert_point(html: &[u8]) -> usize {
    let lower = html.to_ascii_lowercase();
    memchr::memmem::find_iter(&lower, b"<body")
        .find(|&i| {
            lower
                .get(i + 5)
                .is_none_or(|c| *c == b'>' || c.is_ascii_whitespace() || *c == b'/')
        })
        .and_then(|i| memchr::memchr(b'>', &lower[i..]).map(|k| i + k + 1))
        .unwrap_or(0)
}

/// Put `notice` (lines ending in `nl`) at the top of text body `p`.
fn annotate(raw: &[u8], p: &Part, notice: &str, nl: &str, edits: &mut Vec<Edit>) {
    let (block_end, has_blank) = header_block_end(raw, p);
    let hdr = fields(raw, p.header_start, block_end);
    let sep: &[u8] = if has_blank { b"" } else { nl.as_bytes() };
    let charset = p.charset.clone().unwrap_or_else(|| "us-ascii".into());
    let html = p.content_type == "text/html";
    let body = &raw[p.body_start..p.end];
    let mut to_utf8 = false;
    let bytes = match encode_in_charset(notice, &charset) {
        Some(b) => b,
        None => {
            to_utf8 = true;
            notice.as_bytes().to_vec()
        }
    };
    // ASCII bodies are already UTF-8: only the label changes.
    let label_only = to_utf8
        && if p.encoding.is_identity() {
            body.is_ascii()
        } else {
            decode_to_vec(body, p.encoding, usize::MAX).is_ascii()
        };
    let enc = p.encoding;
    let seven_bit = matches!(enc, TransferEncoding::None | TransferEncoding::SevenBit);

    // Prefix insertion keeps the original body bytes: identity or QP bodies, when the notice fits
    // the body's charset (or the body is ASCII).
    if !to_utf8 || label_only {
        let at = if html && enc.is_identity() {
            html_insert_point(body)
        } else {
            0
        };
        let direct = if enc == TransferEncoding::QuotedPrintable {
            (!html).then(|| encode_qp(&bytes, nl))
        } else if enc == TransferEncoding::Base64
            || (seven_bit && !bytes.is_ascii())
            || max_line(&bytes) > MAX_LINE
        {
            None
        } else {
            Some(bytes.clone())
        };
        if let Some(mut ins) = direct {
            if label_only {
                set_utf8(raw, p, &hdr, block_end, nl, edits);
            }
            let mut with_sep = sep.to_vec();
            with_sep.append(&mut ins);
            edits.push(Edit {
                start: p.body_start + at,
                end: p.body_start + at,
                bytes: with_sep,
            });
            return;
        }
    }

    // Decode, insert, re-encode.
    let mut decoded = decode_to_vec(body, enc, usize::MAX);
    if to_utf8 && !label_only {
        decoded = match charset_decoder(charset.as_bytes()) {
            Some(decode) => decode(&decoded).into_bytes(),
            None => String::from_utf8_lossy(&decoded).into_owned().into_bytes(),
        };
    }
    if to_utf8 {
        set_utf8(raw, p, &hdr, block_end, nl, edits);
    }
    let at = if html { html_insert_point(&decoded) } else { 0 };
    let mut content = Vec::with_capacity(decoded.len() + bytes.len());
    content.extend_from_slice(&decoded[..at]);
    content.extend_from_slice(&bytes);
    content.extend_from_slice(&decoded[at..]);
    let encoded = match enc {
        TransferEncoding::Base64 => {
            let mut e = encode_base64(&content, nl);
            e.truncate(e.len() - nl.len().min(e.len()));
            e
        }
        TransferEncoding::QuotedPrintable => encode_qp(&content, nl),
        TransferEncoding::Binary => content,
        _ if max_line(&content) <= MAX_LINE && (!seven_bit || content.is_ascii()) => content,
        _ => {
            set_qp(raw, &hdr, block_end, nl, edits);
            encode_qp(&content, nl)
        }
    };
    let mut with_sep = sep.to_vec();
    with_sep.extend_from_slice(&encoded);
    edits.push(Edit {
        start: p.body_start,
        end: p.end,
        bytes: with_sep,
    });
}
