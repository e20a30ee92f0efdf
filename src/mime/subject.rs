//! Removing a policy's subject tag (e.g. `[secure]`) from the `Subject:` header.
//!
//! A tag that stands literally in the raw header (outside any RFC 2047 encoded word) is cut out
//! of the bytes, possibly across a folded line's whitespace: everything else in the message stays
//! byte-identical. Clients encode any subject with non-ASCII characters, though, and the tag then
//! sits inside an encoded word (`=?utf-8?Q?Bericht_f=C3=BCr_Q3_[secure]?=`), maybe split across
//! two of them. Encoded bytes cannot be cut, so then the subject is decoded (with mail-parser, the
//! same decoder the policy matched the tag with), the tag is removed from the text, and the whole
//! `Subject:` field is written anew (white space at either end dropped): printable ASCII as it
//! is, folded at spaces, anything else as UTF-8 `B` encoded words, so no control character of the
//! untrusted decoded text reaches the header raw. Only that field changes. A tag found both
//! literally and inside an encoded word goes by the literal cut, the smaller edit.

use base64::Engine as _;

/// Longest header line we aim for (RFC 5322 §2.1.1) and the hard limit.
const SOFT_LINE: usize = 78;
const HARD_LINE: usize = 998;
/// RFC 2047 §2: an encoded word is at most 75 characters, a line carrying one at most 76.
const WORD_MAX: usize = 75;
const WORD_LINE: usize = 76;
const WORD_OPEN: &[u8] = b"=?UTF-8?B?";
const WORD_CLOSE: &[u8] = b"?=";

/// The message with the first case-insensitive occurrence of `tag` removed from its top-level
/// `Subject:` header (plus one adjoining space), or `None` when there is nothing to remove.
///
/// A literal occurrence is cut out of the raw bytes; otherwise, when the decoded subject
/// contains the tag, the `Subject:` field is replaced by a re-encoded one (see the module docs).
pub fn remove_subject_tag(msg: &[u8], tag: &str) -> Option<Vec<u8>> {
    if tag.is_empty() {
        return None;
    }
    let (start, end) = subject_field(msg)?;
    let value_start = start + b"subject:".len();
    match find_literal(&msg[value_start..end], tag.as_bytes()) {
        Some(at) => Some(cut_literal(msg, start, end, value_start + at, tag.len())),
        None => reencode(msg, start, end, tag),
    }
}

/// The literal path: cut `len` bytes at `at` (plus one space) out of the field `start..end`.
fn cut_literal(msg: &[u8], start: usize, end: usize, at: usize, len: usize) -> Vec<u8> {
    let value_start = start + b"subject:".len();
    let mut cut = at..at + len;
    // Take one space with it, preferring the one after the tag ("[secure] Report").
    if msg.get(cut.end) == Some(&b' ') {
        cut.end += 1;
    } else if cut.start > value_start + 1 && msg[cut.start - 1] == b' ' {
        cut.start -= 1;
    }
    // A folded continuation line left with only white space would end the header block early:
    // take the whole line, with the line break before it.
    let line_start = msg[..cut.start]
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(0, |i| i + 1);
    let line_end = cut.end
        + msg[cut.end..end]
            .iter()
            .take_while(|&&b| b == b' ' || b == b'\t')
            .count();
    let blank = |r: &[u8]| r.iter().all(|&b| b == b' ' || b == b'\t');
    if line_start > start && line_end == end && blank(&msg[line_start..cut.start]) {
        let lf = line_start - 1;
        let br = if lf > 0 && msg[lf - 1] == b'\r' {
            lf - 1
        } else {
            lf
        };
        cut = br..end;
    }
    let mut out = Vec::with_capacity(msg.len());
    out.extend_from_slice(&msg[..cut.start]);
    out.extend_from_slice(&msg[cut.end..]);
    out
}

/// Byte range of the top-level `Subject:` field (name to the end of its last folded line,
/// without the final line break).
fn subject_field(msg: &[u8]) -> Option<(usize, usize)> {
    let mut pos = 0;
    while pos < msg.len() {
        let line_end = memchr::memchr(b'\n', &msg[pos..]).map_or(msg.len(), |i| pos + i);
        let line = &msg[pos..line_end];
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            return None; // end of the header block
        }
        if line.len() >= 8 && line[..8].eq_ignore_ascii_case(b"subject:") {
            let start = pos;
            let mut end = pos + line.len();
            let mut next = line_end + 1;
            // Folded continuation lines start with white space.
            while next < msg.len() && matches!(msg[next], b' ' | b'\t') {
                let le = memchr::memchr(b'\n', &msg[next..]).map_or(msg.len(), |i| next + i);
                let l = &msg[next..le];
                end = next + l.strip_suffix(b"\r").unwrap_or(l).len();
                next = le + 1;
            }
            return Some((start, end));
        }
        pos = line_end + 1;
    }
    None
}

/// Offset of the first case-insensitive occurrence of `tag` in the raw field value that lies
/// outside every encoded word: cutting inside one would corrupt it (and a short tag could even
/// match base64 text by chance).
fn find_literal(value: &[u8], tag: &[u8]) -> Option<usize> {
    let words = encoded_word_spans(value);
    let mut from = 0;
    while from + tag.len() <= value.len() {
        let at = from + find_ci(&value[from..], tag)?;
        let end = at + tag.len();
        if !words.iter().any(|w| at < w.end && w.start < end) {
            return Some(at);
        }
        from = at + 1;
    }
    None
}

/// Byte ranges of everything shaped like an RFC 2047 encoded word (`=?charset?B|Q?text?=`, no
/// white space inside). Deliberately generous: a false span only sends a literal tag down the
/// decoding path, which removes it just as well.
fn encoded_word_spans(v: &[u8]) -> Vec<std::ops::Range<usize>> {
    let mut spans = Vec::new();
    let mut i = 0;
    while let Some(p) = memchr::memmem::find(&v[i..], b"=?").map(|p| i + p) {
        match encoded_word_end(v, p) {
            Some(end) => {
                spans.push(p..end);
                i = end;
            }
            None => i = p + 2,
        }
    }
    spans
}

/// End of the encoded word starting at `p` (which holds `=?`), if it is one.
fn encoded_word_end(v: &[u8], p: usize) -> Option<usize> {
    let inner = |b: &u8| !b.is_ascii_whitespace() && b.is_ascii_graphic();
    let rest = &v[p + 2..];
    let charset = rest.iter().position(|&b| b == b'?' || !inner(&b))?;
    if charset == 0 || rest[charset] != b'?' {
        return None;
    }
    let rest = &rest[charset + 1..];
    if rest.len() < 2 || !matches!(rest[0], b'B' | b'b' | b'Q' | b'q') || rest[1] != b'?' {
        return None;
    }
    let text = &rest[2..];
    let close = memchr::memmem::find(text, b"?=")?;
    if !text[..close].iter().all(inner) {
        return None;
    }
    Some(p + 2 + charset + 1 + 2 + close + 2)
}

/// The decoding path: the field `start..end` replaced by one carrying the decoded subject without
/// the tag, or `None` when the decoded subject does not contain it either.
fn reencode(msg: &[u8], start: usize, end: usize, tag: &str) -> Option<Vec<u8>> {
    let subject = decode_subject(&msg[start..end])?;
    let rest = remove_tag_from_text(&subject, tag)?;
    let value = rest.as_str();
    // Keep the message's own line ending; the field ends right before it.
    let nl: &[u8] = match msg.get(end) {
        Some(b'\n') => b"\n",
        _ => b"\r\n",
    };
    let name = &msg[start..start + b"subject:".len()];
    let mut out = Vec::with_capacity(msg.len() + value.len() * 2);
    out.extend_from_slice(&msg[..start]);
    out.extend_from_slice(name);
    match fold_ascii(value, name.len(), nl) {
        Some(v) => out.extend_from_slice(&v),
        None => encode_words(value, name.len(), nl, &mut out),
    }
    out.extend_from_slice(&msg[end..]);
    Some(out)
}

/// A decoded subject without the first case-insensitive occurrence of `tag` and one adjoining
/// space, trimmed; `None` when the tag is not in it. The same cut as in the header, for the texts
/// that carry the subject elsewhere (the Cryptshare notification).
pub fn remove_tag_from_text(subject: &str, tag: &str) -> Option<String> {
    let (mut a, mut b) = find_ci_str(subject, tag)?;
    if subject[b..].starts_with(' ') {
        b += 1;
    } else if subject[..a].ends_with(' ') {
        a -= 1;
    }
    let rest = format!("{}{}", &subject[..a], &subject[b..]);
    Some(rest.trim_matches([' ', '\t']).to_string())
}

/// The subject as the policy saw it: mail-parser's decoding of the unstructured field.
fn decode_subject(field: &[u8]) -> Option<String> {
    let mut block = Vec::with_capacity(field.len() + 4);
    block.extend_from_slice(field);
    block.extend_from_slice(b"\r\n\r\n");
    mail_parser::MessageParser::default()
        .parse_headers(&block)?
        .subject()
        .map(str::to_owned)
}

/// Byte range of the first occurrence of `tag` in `s`, comparing lower-cased characters (as the
/// policy's match does), so a non-ASCII tag is found too and the cut stays on char boundaries.
fn find_ci_str(s: &str, tag: &str) -> Option<(usize, usize)> {
    let t: Vec<char> = tag.chars().flat_map(char::to_lowercase).collect();
    if t.is_empty() {
        return None;
    }
    s.char_indices().find_map(|(i, _)| {
        let mut k = 0;
        for (j, c) in s[i..].char_indices() {
            for l in c.to_lowercase() {
                if t.get(k) != Some(&l) {
                    return None;
                }
                k += 1;
            }
            if k == t.len() {
                return Some((i, i + j + c.len_utf8()));
            }
        }
        None
    })
}

/// ` value` folded at spaces, when `value` can stand unencoded: printable ASCII only (so no
/// control character from the untrusted decoded text reaches the header raw), nothing a reader
/// would take for an encoded word, and no line over the hard limit. `name_len` is the length of
/// `Subject:` on the first line.
fn fold_ascii(value: &str, name_len: usize, nl: &[u8]) -> Option<Vec<u8>> {
    if !value.bytes().all(|b| (b' '..=b'~').contains(&b)) || value.contains("=?") {
        return None;
    }
    let mut out = Vec::with_capacity(value.len() + 16);
    out.push(b' ');
    let mut line = name_len + 1;
    // A continuation line of white space only would end the header block.
    let mut content = false;
    let mut rest = value;
    while !rest.is_empty() {
        // The next piece runs up to the next space after its first byte: folds go before spaces.
        let len = rest[1..].find(' ').map_or(rest.len(), |i| i + 1);
        let (piece, r) = rest.split_at(len);
        rest = r;
        if content && line + piece.len() > SOFT_LINE {
            out.extend_from_slice(nl);
            line = 0;
            content = false;
        }
        out.extend_from_slice(piece.as_bytes());
        line += piece.len();
        content |= piece.bytes().any(|b| b != b' ');
        if line > HARD_LINE {
            return None;
        }
    }
    Some(out)
}

/// ` =?UTF-8?B?…?=` words for `value`, one per line, each whole characters only, so that every
/// line (the first one after `Subject:`) stays within RFC 2047's 76 characters.
pub(super) fn encode_words(value: &str, name_len: usize, nl: &[u8], out: &mut Vec<u8>) {
    let b64 = base64::engine::general_purpose::STANDARD;
    let overhead = WORD_OPEN.len() + WORD_CLOSE.len();
    let mut room = WORD_MAX.min(WORD_LINE - name_len - 1);
    let mut rest = value;
    out.push(b' ');
    let mut first = true;
    while !rest.is_empty() {
        let max_bytes = room.saturating_sub(overhead) / 4 * 3;
        let mut take = 0;
        for c in rest.chars() {
            if take + c.len_utf8() > max_bytes {
                break;
            }
            take += c.len_utf8();
        }
        // Never stall, even if the room were too small for one character.
        if take == 0 {
            take = rest.chars().next().map_or(rest.len(), char::len_utf8);
        }
        let (chunk, r) = rest.split_at(take);
        rest = r;
        if !first {
            out.extend_from_slice(nl);
            out.push(b' ');
        }
        out.extend_from_slice(WORD_OPEN);
        out.extend_from_slice(b64.encode(chunk).as_bytes());
        out.extend_from_slice(WORD_CLOSE);
        first = false;
        room = WORD_MAX;
    }
}

fn find_ci(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len())
        .position(|w| w.eq_ignore_ascii_case(needle))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn removes_the_tag_and_one_space_only() {
        let m = b"From: a@b.c\r\nSubject: [SECURE] Quarterly report\r\nTo: x@y.z\r\n\r\nbody [secure]\r\n";
        assert_eq!(
            remove_subject_tag(m, "[secure]").unwrap(),
            b"From: a@b.c\r\nSubject: Quarterly report\r\nTo: x@y.z\r\n\r\nbody [secure]\r\n"
        );
        let m = b"Subject: Report\r\n [secure]\r\nTo: x@y.z\r\n\r\nx";
        assert_eq!(
            remove_subject_tag(m, "[secure]").unwrap(),
            b"Subject: Report\r\nTo: x@y.z\r\n\r\nx"
        );
        let m = b"Subject: Report [Secure]\n\nx";
        assert_eq!(
            remove_subject_tag(m, "[secure]").unwrap(),
            b"Subject: Report\n\nx"
        );
    }

    #[test]
    fn nothing_to_remove() {
        assert_eq!(
            remove_subject_tag(b"Subject: Report\r\n\r\n[secure]", "[secure]"),
            None
        );
        assert_eq!(
            remove_subject_tag(b"To: a@b.c\r\n\r\nSubject: [secure]", "[secure]"),
            None
        );
        assert_eq!(
            remove_subject_tag(b"Subject: =?utf-8?q?=5Bsecure=5D_x?=\r\n\r\n", "[geheim]"),
            None
        );
    }

    #[test]
    fn encoded_tag_rewrites_only_the_subject_field() {
        let m = b"From: a@b.c\r\nSubject: =?utf-8?Q?Bericht_f=C3=BCr_Q3_[secure]?=\r\nTo: x@y.z\r\n\r\nbody";
        assert_eq!(
            remove_subject_tag(m, "[SECURE]").unwrap(),
            b"From: a@b.c\r\nSubject: =?UTF-8?B?QmVyaWNodCBmw7xyIFEz?=\r\nTo: x@y.z\r\n\r\nbody"
        );
        // Split across two words, the rest plain ASCII: written as is, LF kept, name spelling kept.
        let m = b"subject: =?utf-8?q?Q3_[sec?=\n =?utf-8?q?ure]_report?=\nTo: x@y.z\n\nbody";
        assert_eq!(
            remove_subject_tag(m, "[secure]").unwrap(),
            b"subject: Q3 report\nTo: x@y.z\n\nbody"
        );
    }

    #[test]
    fn ascii_fast_path_refuses_what_must_be_encoded() {
        assert_eq!(fold_ascii("a\tb", 8, b"\r\n"), None);
        assert_eq!(fold_ascii("a\r\nTo: x", 8, b"\r\n"), None);
        assert_eq!(fold_ascii("=?x?", 8, b"\r\n"), None);
        assert_eq!(fold_ascii("für", 8, b"\r\n"), None);
        assert_eq!(fold_ascii(&"y".repeat(990), 8, b"\r\n"), None);
        assert_eq!(fold_ascii("a  b", 8, b"\n").unwrap(), b" a  b");
    }

    #[test]
    fn encoded_words_never_split_a_character() {
        let mut out = Vec::new();
        let s = "€".repeat(40);
        encode_words(&s, 8, b"\r\n", &mut out);
        let text = String::from_utf8(out).unwrap();
        let mut back = String::new();
        for w in text.split("\r\n") {
            let w = w.strip_prefix(' ').unwrap();
            assert!(w.len() <= WORD_MAX);
            let b64 = &w[WORD_OPEN.len()..w.len() - WORD_CLOSE.len()];
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(b64)
                .unwrap();
            back.push_str(std::str::from_utf8(&bytes).expect("whole characters per word"));
        }
        assert_eq!(back, s);
    }

    #[test]
    fn case_insensitive_match_on_characters() {
        assert_eq!(find_ci_str("Grüße [SECURE]", "[secure]"), Some((8, 16)));
        assert_eq!(
            find_ci_str("x [VERTRAULICH-Ä]", "[vertraulich-ä]"),
            Some((2, 18))
        );
        assert_eq!(find_ci_str("[secur", "[secure]"), None);
    }
}
