//! Removing a policy's subject tag (e.g. `[secure]`) from the `Subject:` header.
//!
//! Only a tag that stands literally in the raw header is removed (possibly across a folded
//! line's whitespace, never inside an RFC 2047 encoded word, whose bytes would have to be
//! re-encoded): everything else in the message stays byte-identical.

/// The message with the first literal, case-insensitive occurrence of `tag` removed from its
/// top-level `Subject:` header (plus one adjoining space), or `None` when there is nothing to
/// remove.
pub fn remove_subject_tag(msg: &[u8], tag: &str) -> Option<Vec<u8>> {
    let tag = tag.as_bytes();
    if tag.is_empty() {
        return None;
    }
    let (start, end) = subject_field(msg)?;
    let value_start = start + b"subject:".len();
    let field = &msg[value_start..end];
    let at = find_ci(field, tag)? + value_start;
    let mut cut = at..at + tag.len();
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
    Some(out)
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
            remove_subject_tag(b"Subject: =?utf-8?q?=5Bsecure=5D_x?=\r\n\r\n", "[secure]"),
            None
        );
    }
}
