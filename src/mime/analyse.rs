//! Structure scan, header interpretation and classification.

use std::collections::HashSet;

use mail_parser::{MessageParser, MimeHeaders};

use super::decode::{decode_to_vec, measure};
use super::{
    Analysis, Class, Disposition, InnerFile, MessageFlags, Part, PartFlags, PartId,
    TransferEncoding, tnef,
};

/// Nesting limit (multiparts and parsed messages) against MIME bombs.
pub const MAX_DEPTH: usize = 32;
/// Part-count limit against MIME bombs.
pub const MAX_PARTS: usize = 5000;
/// HTML bodies are searched for `cid:` references up to this many decoded bytes.
const HTML_SCAN_LIMIT: usize = 8 << 20;
/// TNEF containers are opened up to this decoded size to unpack their files; a larger one is
/// moved as it is (the analysis holds the decoded TNEF in memory while it reads it).
const TNEF_LIMIT: usize = 64 << 20;

/// One header field of a header block, as byte ranges into the raw message.
#[derive(Debug, Clone)]
pub(crate) struct Field {
    pub start: usize,
    /// Start of the value (after `:`).
    pub value_start: usize,
    /// End of the value, before the final line break.
    pub value_end: usize,
    /// After the final line break.
    pub end: usize,
    pub name: String,
}

/// Header fields of `raw[start..end]` (a header block, blank line included or not).
pub(crate) fn fields(raw: &[u8], start: usize, end: usize) -> Vec<Field> {
    let mut out: Vec<Field> = Vec::new();
    let mut pos = start;
    while pos < end {
        let line_end = memchr::memchr(b'\n', &raw[pos..end]).map_or(end, |i| pos + i + 1);
        let line = &raw[pos..line_end];
        let content_end = line_end - line.len()
            + line
                .iter()
                .rposition(|&c| c != b'\n' && c != b'\r')
                .map_or(0, |i| i + 1);
        if content_end == pos {
            break; // blank line: end of the header block
        }
        if (line[0] == b' ' || line[0] == b'\t')
            && let Some(last) = out.last_mut()
        {
            last.value_end = content_end;
            last.end = line_end;
        } else if let Some(colon) = memchr::memchr(b':', &raw[pos..content_end]) {
            out.push(Field {
                start: pos,
                value_start: pos + colon + 1,
                value_end: content_end,
                end: line_end,
                name: String::from_utf8_lossy(&raw[pos..pos + colon])
                    .trim()
                    .to_ascii_lowercase(),
            });
        }
        pos = line_end;
    }
    out
}

/// Start of the body of the entity starting at `start`: after the first empty line.
fn body_start(raw: &[u8], start: usize, end: usize) -> usize {
    let mut pos = start;
    while pos < end {
        let line_end = memchr::memchr(b'\n', &raw[pos..end]).map_or(end, |i| pos + i + 1);
        let line = &raw[pos..line_end];
        if line == b"\n" || line == b"\r\n" {
            return line_end;
        }
        pos = line_end;
    }
    end
}

#[derive(Debug, Default)]
struct Headers {
    content_type: Option<String>,
    charset: Option<String>,
    boundary: Option<String>,
    smime_type: Option<String>,
    disposition: Option<Disposition>,
    content_id: Option<String>,
    name: Option<String>,
    encoding: Option<TransferEncoding>,
    subject: Option<String>,
}

fn interpret(block: &[u8]) -> Headers {
    let mut h = Headers::default();
    if block.iter().all(|c| c.is_ascii_whitespace()) {
        return h;
    }
    let Some(msg) = MessageParser::default().parse_headers(block) else {
        return h;
    };
    if let Some(ct) = msg.content_type() {
        let t = ct.ctype().trim().to_ascii_lowercase();
        let s = ct.subtype().unwrap_or("").trim().to_ascii_lowercase();
        if !t.is_empty() {
            h.content_type = Some(if s.is_empty() { t } else { format!("{t}/{s}") });
        }
        h.charset = ct
            .attribute("charset")
            .map(|c| c.trim().to_ascii_lowercase());
        h.boundary = ct.attribute("boundary").map(str::to_owned);
        h.smime_type = ct
            .attribute("smime-type")
            .map(|c| c.trim().to_ascii_lowercase());
    }
    if let Some(cd) = msg.content_disposition() {
        h.disposition = Some(match cd.ctype().trim().to_ascii_lowercase().as_str() {
            "inline" => Disposition::Inline,
            "attachment" => Disposition::Attachment,
            other => Disposition::Other(other.to_owned()),
        });
    }
    h.content_id = msg
        .content_id()
        .map(|c| c.trim().trim_matches(['<', '>']).to_owned())
        .filter(|c| !c.is_empty());
    h.name = msg.attachment_name().map(str::to_owned);
    if h.name.is_some() && std::str::from_utf8(block).is_err() {
        h.name = eight_bit_name(block, h.charset.as_deref()).or(h.name);
    }
    h.encoding =
        msg.content_transfer_encoding()
            .map(|e| match e.trim().to_ascii_lowercase().as_str() {
                "base64" => TransferEncoding::Base64,
                "quoted-printable" => TransferEncoding::QuotedPrintable,
                "7bit" => TransferEncoding::SevenBit,
                "8bit" => TransferEncoding::EightBit,
                "binary" => TransferEncoding::Binary,
                _ => TransferEncoding::Other,
            });
    h.subject = msg.subject().map(str::to_owned);
    h
}

/// The file name of a header block with raw 8-bit octets (`filename="Fr\xF6sche.txt"`, not
/// RFC 2231/2047 encoded, as old mailers write them). mail-parser reads such octets as UTF-8 and
/// makes `Fr\u{FFFD}sche.txt` of them; instead the block is decoded with the part's charset
/// (when that is a known charset other than UTF-8, which the octets are evidently not) or else
/// windows-1252, the superset of Latin-1 that such mailers used, and the name is read again.
fn eight_bit_name(block: &[u8], charset: Option<&str>) -> Option<String> {
    use mail_parser::decoders::charsets::map::charset_decoder;
    let decoder = charset
        .filter(|c| !c.eq_ignore_ascii_case("utf-8") && !c.eq_ignore_ascii_case("utf8"))
        .and_then(|c| charset_decoder(c.as_bytes()))
        .or_else(|| charset_decoder(b"windows-1252"))?;
    let text = decoder(block);
    let msg = MessageParser::default().parse_headers(text.as_bytes())?;
    msg.attachment_name().map(str::to_owned)
}

struct Delimiter {
    /// Start of the line break before the delimiter line (or the delimiter itself).
    start: usize,
    /// After the delimiter line.
    after: usize,
    close: bool,
}

/// Delimiter lines for `boundary` in `raw[from..to]`; stops after the close delimiter.
fn delimiters(raw: &[u8], from: usize, to: usize, boundary: &[u8]) -> Vec<Delimiter> {
    let mut needle = Vec::with_capacity(boundary.len() + 2);
    needle.extend_from_slice(b"--");
    needle.extend_from_slice(boundary);
    let mut out = Vec::new();
    for hit in memchr::memmem::find_iter(&raw[from..to], &needle) {
        let p = from + hit;
        if p > from && raw[p - 1] != b'\n' {
            continue;
        }
        let q = p + needle.len();
        let close = raw[q..to].starts_with(b"--");
        let line_end = memchr::memchr(b'\n', &raw[q..to]).map_or(to, |i| q + i + 1);
        if !close
            && !raw[q..line_end]
                .iter()
                .all(|&c| c == b' ' || c == b'\t' || c == b'\r' || c == b'\n')
        {
            continue; // a longer boundary that starts with ours
        }
        let start = if p > from {
            if p - 1 > from && raw[p - 2] == b'\r' {
                p - 2
            } else {
                p - 1
            }
        } else {
            p
        };
        out.push(Delimiter {
            start,
            after: line_end,
            close,
        });
        if close {
            break;
        }
    }
    out
}

struct Scanner<'a> {
    raw: &'a [u8],
    parts: Vec<Part>,
    flags: MessageFlags,
    cids: HashSet<String>,
}

impl Scanner<'_> {
    #[allow(clippy::too_many_arguments)]
    fn entity(
        &mut self,
        header_start: usize,
        end: usize,
        parent: Option<PartId>,
        path: String,
        depth: usize,
        cut: Option<std::ops::Range<usize>>,
        inherited: PartFlags,
    ) -> PartId {
        let raw = self.raw;
        let body = body_start(raw, header_start, end);
        let h = interpret(&raw[header_start..body]);
        let parent_type = parent.map(|p| self.parts[p].content_type.as_str());
        let default_type = if parent_type == Some("multipart/digest") {
            "message/rfc822"
        } else {
            "text/plain"
        };
        let content_type = h
            .content_type
            .clone()
            .unwrap_or_else(|| default_type.to_owned());
        let id = self.parts.len();
        let mut flags = inherited;
        flags.tnef = content_type == "application/ms-tnef"
            || h.name
                .as_deref()
                .is_some_and(|n| n.eq_ignore_ascii_case("winmail.dat"));
        let mut part = Part {
            id,
            parent,
            children: Vec::new(),
            path,
            depth,
            content_type: content_type.clone(),
            charset: h.charset.clone(),
            boundary: h.boundary.clone(),
            disposition: h.disposition.clone(),
            content_id: h.content_id.clone(),
            file_name: h.name.clone(),
            upload_name: None,
            encoding: h.encoding.unwrap_or(TransferEncoding::None),
            header_start,
            body_start: body,
            end,
            cut,
            size: 0,
            class: Class::Kept,
            reason: String::new(),
            flags,
            tnef_files: Vec::new(),
            tnef_contents: Vec::new(),
        };
        self.parts.push(part.clone());

        let limit = depth >= MAX_DEPTH || self.parts.len() >= MAX_PARTS;
        let mut child_flags = flags;
        match content_type.as_str() {
            "multipart/signed" => {
                self.flags.signed = true;
                child_flags.in_signed = true;
            }
            "multipart/encrypted" => {
                self.flags.encrypted = true;
                child_flags.in_encrypted = true;
            }
            "multipart/report" => {
                self.flags.report = true;
                child_flags.in_report = true;
            }
            "application/pkcs7-mime" | "application/x-pkcs7-mime" => {
                if h.smime_type.as_deref() == Some("signed-data") {
                    self.flags.signed = true;
                    part.flags.in_signed = true;
                } else {
                    self.flags.encrypted = true;
                    part.flags.in_encrypted = true;
                }
            }
            _ => {}
        }

        if content_type.starts_with("multipart/") && !limit {
            let children = match h.boundary.as_deref().filter(|b| !b.is_empty()) {
                Some(b) => self.multipart(id, body, end, b, depth, child_flags),
                None => None,
            };
            match children {
                Some((children, closed)) => {
                    part.flags.malformed |= !closed;
                    part.children = children;
                    part.class = Class::Container;
                    part.reason = "multipart".into();
                }
                None => {
                    // No boundary or none found: an opaque body, kept as it is.
                    part.flags.malformed = true;
                    self.flags.malformed = true;
                    part.reason = "multipart without usable boundary".into();
                }
            }
        } else if content_type == "message/rfc822"
            && part.encoding.is_identity()
            && h.disposition == Some(Disposition::Inline)
            && !limit
        {
            // A forwarded message shown inline: its parts are part of this message's display.
            child_flags.in_message = true;
            let child_path = format!("{}.1", part.path.trim_start_matches('.'));
            let child = self.entity(
                body,
                end,
                Some(id),
                child_path,
                depth + 1,
                None,
                child_flags,
            );
            part.children = vec![child];
            part.class = Class::Container;
            part.reason = "forwarded message shown inline".into();
        } else {
            if limit && (content_type.starts_with("multipart/") || content_type == "message/rfc822")
            {
                self.flags.limit_reached = true;
            }
            let (size, problem) = measure(&raw[body..end.max(body)], part.encoding);
            part.size = size;
            part.flags.decoding_problem |= problem;
            self.flags.decoding_problem |= problem;
            if content_type == "text/html" {
                let html = decode_to_vec(&raw[body..end.max(body)], part.encoding, HTML_SCAN_LIMIT);
                collect_cids(&html, &mut self.cids);
            }
            if part.flags.tnef {
                self.flags.tnef = true;
                if size <= TNEF_LIMIT as u64 && !problem {
                    let data = decode_to_vec(&raw[body..end.max(body)], part.encoding, TNEF_LIMIT);
                    // Names as the stream gives them: `name_attachments` sanitises them.
                    part.tnef_contents = tnef::unpack(&data)
                        .unwrap_or_default()
                        .into_iter()
                        .map(|f| InnerFile {
                            name: f.name,
                            range: f.range,
                        })
                        .collect();
                }
            }
            if content_type == "message/rfc822" && part.file_name.is_none() {
                // Name a forwarded message after its subject.
                let inner = decode_to_vec(&raw[body..end.max(body)], part.encoding, 256 << 10);
                let inner_body = body_start(&inner, 0, inner.len());
                part.file_name = interpret(&inner[..inner_body])
                    .subject
                    .map(|s| format!("{}.eml", s.trim()))
                    .filter(|s| s.len() > 4);
            }
        }
        if part.flags.malformed {
            self.flags.malformed = true;
        }
        self.parts[id] = part;
        id
    }

    fn multipart(
        &mut self,
        id: PartId,
        body: usize,
        end: usize,
        boundary: &str,
        depth: usize,
        flags: PartFlags,
    ) -> Option<(Vec<PartId>, bool)> {
        let delims = delimiters(self.raw, body, end, boundary.as_bytes());
        let first_open = delims.iter().position(|d| !d.close)?;
        let mut children = Vec::new();
        let closed = delims.last().is_some_and(|d| d.close);
        for (i, d) in delims.iter().enumerate().skip(first_open) {
            if d.close {
                break;
            }
            if self.parts.len() >= MAX_PARTS {
                self.flags.limit_reached = true;
                break;
            }
            let next = delims.get(i + 1).map_or(end, |n| n.start);
            let part_end = next.max(d.after);
            let path = if self.parts[id].path.is_empty() {
                format!("{}", children.len() + 1)
            } else {
                format!("{}.{}", self.parts[id].path, children.len() + 1)
            };
            let child = self.entity(
                d.after,
                part_end,
                Some(id),
                path,
                depth + 1,
                Some(d.start..next),
                flags,
            );
            children.push(child);
        }
        Some((children, closed))
    }
}

fn collect_cids(html: &[u8], out: &mut HashSet<String>) {
    let lower = html.to_ascii_lowercase();
    for hit in memchr::memmem::find_iter(&lower, b"cid:") {
        let rest = &html[hit + 4..];
        let len = rest
            .iter()
            .position(|&c| {
                matches!(c, b'"' | b'\'' | b')' | b'>' | b'<') || c.is_ascii_whitespace()
            })
            .unwrap_or(rest.len());
        let id = percent_decode(&rest[..len]);
        if !id.is_empty() {
            out.insert(id.to_lowercase());
        }
    }
}

fn percent_decode(s: &[u8]) -> String {
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        if s[i] == b'%'
            && i + 3 <= s.len()
            && let Ok(v) = u8::from_str_radix(&String::from_utf8_lossy(&s[i + 1..i + 3]), 16)
        {
            out.push(v);
            i += 3;
            continue;
        }
        out.push(s[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Analyse a message. Never panics; malformed input is analysed as well as it can be.
pub fn analyse(raw: &[u8]) -> Analysis {
    let line_ending = match memchr::memchr(b'\n', raw) {
        Some(i) if i > 0 && raw[i - 1] == b'\r' => "\r\n",
        Some(_) => "\n",
        None => "\r\n",
    };
    let mut s = Scanner {
        raw,
        parts: Vec::new(),
        flags: MessageFlags::default(),
        cids: HashSet::new(),
    };
    s.entity(
        0,
        raw.len(),
        None,
        String::new(),
        0,
        None,
        PartFlags::default(),
    );
    let root_body = s.parts[0].body_start;
    let subject = interpret(&raw[..root_body]).subject;
    let mut analysis = Analysis {
        parts: s.parts,
        flags: s.flags,
        line_ending,
        subject,
    };
    classify(&mut analysis, &s.cids);
    name_attachments(&mut analysis);
    analysis
}

fn is_text_body_type(t: &str) -> bool {
    t == "text/plain" || t == "text/html"
}

fn classify(a: &mut Analysis, cids: &HashSet<String>) {
    for i in 0..a.parts.len() {
        if a.parts[i].class == Class::Container {
            continue;
        }
        let parent_type = a.parts[i]
            .parent
            .map(|p| a.parts[p].content_type.clone())
            .unwrap_or_default();
        let p = &a.parts[i];
        let t = p.content_type.as_str();
        let referenced = p
            .content_id
            .as_ref()
            .is_some_and(|c| cids.contains(&c.to_lowercase()));
        let (class, reason): (Class, String) = if p.reason == "multipart without usable boundary" {
            (Class::Kept, p.reason.clone())
        } else if t == "text/calendar" || t == "application/ics" {
            (Class::Kept, "calendar data is never moved".into())
        } else if referenced {
            (Class::Inline, "referenced from HTML as cid:".into())
        } else if p.disposition == Some(Disposition::Attachment) {
            (Class::Attachment, "Content-Disposition: attachment".into())
        } else if parent_type == "multipart/alternative" {
            if is_text_body_type(t) {
                (Class::Body, "body alternative".into())
            } else {
                (Class::Kept, "alternative representation of the body".into())
            }
        } else if is_text_body_type(t) && p.file_name.is_none() {
            (Class::Body, "text body".into())
        } else if t == "message/partial" || t == "message/external-body" {
            (Class::Kept, format!("{t} is left alone"))
        } else if t == "message/rfc822" {
            (Class::Attachment, "forwarded message (.eml)".into())
        } else if parent_type == "multipart/related" && p.content_id.is_some() {
            (
                Class::Inline,
                "part of multipart/related with a Content-ID".into(),
            )
        } else if p.file_name.is_some() {
            (
                Class::Attachment,
                "file name without attachment disposition".into(),
            )
        } else if t.starts_with("text/") || t.starts_with("multipart/") {
            (Class::Kept, "text part without a file name".into())
        } else if t == "application/pgp-signature" || t == "application/pkcs7-signature" {
            (Class::Kept, "signature".into())
        } else {
            (Class::Attachment, "non-text part".into())
        };
        let p = &mut a.parts[i];
        p.class = class;
        p.reason = reason;
        if class == Class::Attachment {
            // Remember it may be named for upload even when protection keeps it below.
            p.upload_name = Some(String::new());
        }
        let protection = if p.flags.in_encrypted {
            Some("part of an encrypted message")
        } else if p.flags.in_signed {
            Some("part of a signed message")
        } else if p.flags.in_report {
            Some("part of a delivery report")
        } else if p.flags.in_message {
            Some("inside a forwarded message")
        } else if class == Class::Attachment && p.flags.decoding_problem {
            Some("decoding problem: left in the message")
        } else {
            None
        };
        if let Some(why) = protection
            && class != Class::Inline
        {
            p.reason = format!("{why} ({})", p.reason);
            p.class = Class::Kept;
        }
    }
}

fn extension_for(content_type: &str) -> &str {
    match content_type {
        "application/pdf" => "pdf",
        "application/zip" | "application/x-zip-compressed" => "zip",
        "application/msword" => "doc",
        "application/vnd.openxmlformats-officedocument.wordprocessingml.document" => "docx",
        "application/vnd.ms-excel" => "xls",
        "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet" => "xlsx",
        "application/vnd.ms-powerpoint" => "ppt",
        "application/vnd.openxmlformats-officedocument.presentationml.presentation" => "pptx",
        "application/ms-tnef" => "dat",
        "image/jpeg" | "image/jpg" | "image/pjpeg" => "jpg",
        "image/png" => "png",
        "image/gif" => "gif",
        "image/tiff" => "tif",
        "audio/mpeg" => "mp3",
        "video/mp4" => "mp4",
        "message/rfc822" => "eml",
        "text/plain" => "txt",
        "text/html" => "html",
        "text/csv" => "csv",
        "text/calendar" => "ics",
        // `image/webp` -> `webp`; long or vendor subtypes say nothing useful.
        t => match t.split_once('/') {
            Some((_, sub))
                if (2..=4).contains(&sub.len())
                    && sub.bytes().all(|c| c.is_ascii_alphanumeric()) =>
            {
                sub
            }
            _ => "bin",
        },
    }
}

/// A file name that is safe in a Cryptshare transfer and on every desktop OS: last path
/// component only, no control characters, invisible format characters (bidi overrides,
/// zero-width characters: [`super::text`]) or reserved punctuation, at most 200 bytes.
pub(crate) fn sanitise_file_name(name: &str) -> String {
    let base = name.rsplit(['/', '\\']).next().unwrap_or(name);
    let mut s: String = base
        .chars()
        .filter(|&c| !super::text::is_invisible(c))
        .map(|c| match c {
            c if c.is_control() => '_',
            ':' | '*' | '?' | '"' | '<' | '>' | '|' => '_',
            c => c,
        })
        .collect();
    s = s
        .trim_matches(|c: char| c == '.' || c.is_whitespace())
        .to_owned();
    if s.len() > 200 {
        let (stem, ext) = split_ext(&s);
        let ext = if ext.len() <= 16 { ext } else { "" };
        let mut cut = 200 - ext.len();
        while !stem.is_char_boundary(cut.min(stem.len())) {
            cut -= 1;
        }
        s = format!("{}{}", &stem[..cut.min(stem.len())], ext);
    }
    s
}

/// `("report", ".pdf")`; no extension for dot-files or names without a dot.
fn split_ext(name: &str) -> (&str, &str) {
    match name.rfind('.') {
        Some(i) if i > 0 => (&name[..i], &name[i..]),
        _ => (name, ""),
    }
}

fn name_attachments(a: &mut Analysis) {
    let mut used: HashSet<String> = HashSet::new();
    let mut n = 0;
    let unique = |base: String, used: &mut HashSet<String>| {
        let mut name = base.clone();
        let mut k = 2;
        while !used.insert(name.to_lowercase()) {
            let (stem, ext) = split_ext(&base);
            name = format!("{stem} ({k}){ext}");
            k += 1;
        }
        name
    };
    for p in a.parts.iter_mut() {
        if p.upload_name.is_none() {
            // Never moved: its TNEF names only show in `explain`, sanitised all the same.
            for f in &mut p.tnef_contents {
                f.name = sanitise_file_name(&f.name);
            }
            p.tnef_files = p.tnef_contents.iter().map(|f| f.name.clone()).collect();
            continue;
        }
        n += 1;
        let mut base = p
            .file_name
            .as_deref()
            .map(sanitise_file_name)
            .unwrap_or_default();
        if base.is_empty() {
            base = format!("attachment-{n}.{}", extension_for(&p.content_type));
        }
        p.upload_name = Some(unique(base, &mut used));
        // The files of a TNEF are named like attachments of their own: the name the stream
        // gives (untrusted, so sanitised), unique among all the files of the transfer.
        for f in &mut p.tnef_contents {
            n += 1;
            let mut base = sanitise_file_name(&f.name);
            if base.is_empty() {
                base = format!("attachment-{n}.bin");
            }
            f.name = unique(base, &mut used);
        }
        p.tnef_files = p.tnef_contents.iter().map(|f| f.name.clone()).collect();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sanitising() {
        assert_eq!(sanitise_file_name("../../etc/passwd"), "passwd");
        assert_eq!(sanitise_file_name("C:\\x\\a\u{0}b?.pdf"), "a_b_.pdf");
        assert_eq!(sanitise_file_name(" .. "), "");
        let long = "ä".repeat(150) + ".pdf";
        let s = sanitise_file_name(&long);
        assert!(s.len() <= 200 && s.ends_with(".pdf"));
        assert_eq!(
            sanitise_file_name("invoice\u{202E}fdp.exe"),
            "invoicefdp.exe"
        );
        assert_eq!(sanitise_file_name("\u{200B}\u{FEFF}"), "");
    }

    #[test]
    fn raw_eight_bit_file_names() {
        let latin1 = b"Content-Type: text/plain; charset=iso-8859-1; name=\"Fr\xF6sche.txt\"\r\n\
Content-Disposition: attachment; filename=\"Fr\xF6sche.txt\"\r\n\r\n";
        assert_eq!(interpret(latin1).name.as_deref(), Some("Fr\u{f6}sche.txt"));
        // No charset (or a UTF-8 one the octets are not): windows-1252.
        let cp1252 = b"Content-Type: application/octet-stream; charset=utf-8\r\n\
Content-Disposition: attachment; filename=\"\x93Quote\x94 \xE9t\xE9.pdf\"\r\n\r\n";
        assert_eq!(
            interpret(cp1252).name.as_deref(),
            Some("\u{201c}Quote\u{201d} \u{e9}t\u{e9}.pdf")
        );
        // Real UTF-8 stays as it is.
        let utf8 = "Content-Disposition: attachment; filename=\"Fr\u{f6}sche.txt\"\r\n\r\n";
        assert_eq!(
            interpret(utf8.as_bytes()).name.as_deref(),
            Some("Fr\u{f6}sche.txt")
        );
    }

    #[test]
    fn header_fields_with_folding() {
        let raw = b"A: 1\r\nB: x\r\n  y\r\nC:z\r\n\r\nbody";
        let f = fields(raw, 0, raw.len());
        assert_eq!(f.len(), 3);
        assert_eq!(&raw[f[1].value_start..f[1].value_end], b" x\r\n  y");
        assert_eq!(&raw[f[2].start..f[2].end], b"C:z\r\n");
    }
}
