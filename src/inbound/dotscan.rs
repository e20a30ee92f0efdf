//! The end of DATA and the SMTP smuggling defence: [`DotScan`] finds `CRLF . CRLF` in the
//! client's byte stream, removes transparency dots, and flags every dot line that some other
//! SMTP implementation could read as an end of data.
//!
//! # Rules (RFC 5321 §4.1.1.4, §4.5.2)
//! * DATA ends **only** at `CRLF . CRLF`: a line that is exactly "." after a CRLF (the CRLF of the
//!   DATA command counts, so an empty message is `.` CRLF at once). The CRLF before the dot
//!   belongs to the message.
//! * A line that starts with "." (after a CRLF) and is not the end loses that first dot.
//! * Refused (`bad`, answered `554 5.5.2` after the real end has been read) — a lenient next hop
//!   might end the message there, and what follows would run as commands (SMTP smuggling):
//!   - a "." after a bare LF or a bare CR (`\n.`, `\r.` in any combination: `\n.\n`, `\r.\r`,
//!     `\r.\n`, `\n.\r`, `\n.\r\n`, `\r.\r\n`, ...);
//!   - a "." line after a CRLF that is ended by anything but CRLF: `.\n`, `.\r` followed by
//!     anything but LF (`.\r\r\n`, `.\r\r\r\n`, `.\rX`), `.` NUL;
//!   - NUL bytes between a line ending (CR or LF) and a "." (`\r\n\0.\r\n`): implementations that
//!     drop NULs see a dot line there.
//!
//! None of these ends the data here; the scan goes on to the real `CRLF . CRLF`.
//! The same checks run over BDAT content ([`Framing::Counted`]: no end, no transparency dots;
//! a "." after a CRLF is content there, and the outbound side dot-stuffs it when it relays the
//! message with DATA), because a BDAT message may be relayed with DATA.
//!
//! # Speed and splits
//! The scan jumps from one `.` or NUL to the next with `memchr2` and copies nothing: it hands
//! out slices of its input. State carried between calls (the last two bytes, a pending dot,
//! a NUL run at a line start) makes the result independent of how the stream was split.

/// How the content is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Framing {
    /// DATA: dot-stuffed, ended by `CRLF . CRLF`.
    Dotted,
    /// BDAT: counted by the chunk sizes; only the smuggling checks apply.
    Counted,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pending {
    None,
    /// A "." right after CRLF, the next byte not seen yet.
    Dot,
    /// "." CR after CRLF, the next byte not seen yet.
    DotCr,
}

/// The result of [`DotScan::feed`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Fed {
    /// Bytes of the input that belong to the data (all of it unless `end`).
    pub(crate) consumed: usize,
    /// `CRLF . CRLF` was found; the input after `consumed` is commands again.
    pub(crate) end: bool,
}

#[derive(Debug)]
pub(crate) struct DotScan {
    framing: Framing,
    /// The last two bytes of the stream so far; as if preceded by CRLF at the start.
    prev: [u8; 2],
    pending: Pending,
    /// Stream offset of the input's first byte.
    offset: u64,
    /// Stream offset just after a run of NULs that started at a line start (after CR or LF).
    nul_run_end: Option<u64>,
    /// A dot line a lenient implementation could take for the end of data was seen.
    pub(crate) bad: bool,
}

impl DotScan {
    pub(crate) fn new(framing: Framing) -> DotScan {
        DotScan {
            framing,
            prev: [b'\r', b'\n'],
            pending: Pending::None,
            offset: 0,
            nul_run_end: None,
            bad: false,
        }
    }

    /// Scan `input`; `content` receives the message bytes in order (transparency dots removed,
    /// nothing of the end marker). Content is handed out even after `bad` is set: the caller
    /// decides what to keep.
    pub(crate) fn feed(&mut self, input: &[u8], mut content: impl FnMut(&[u8])) -> Fed {
        let fed = self.scan(input, &mut content);
        let seen = &input[..fed.consumed];
        match seen.len() {
            0 => {}
            1 => self.prev = [self.prev[1], seen[0]],
            n => self.prev = [seen[n - 2], seen[n - 1]],
        }
        self.offset += fed.consumed as u64;
        fed
    }

    fn scan(&mut self, input: &[u8], content: &mut impl FnMut(&[u8])) -> Fed {
        let all = Fed {
            consumed: input.len(),
            end: false,
        };
        // Where the content not yet handed out starts.
        let mut start = 0;
        // Finish a dot line left open by the previous input.
        match self.pending {
            Pending::None => {}
            Pending::Dot => match input.first() {
                None => return all,
                Some(b'\r') => match input.get(1) {
                    None => {
                        self.pending = Pending::DotCr;
                        return all;
                    }
                    Some(b'\n') => return self.end_at(2),
                    Some(_) => {
                        // Refused; what it would have been does not matter, but stay the same
                        // however the input was split: ".\r" is dropped.
                        start = 1;
                        self.refuse();
                    }
                },
                Some(b'\n' | 0) => self.refuse(),
                Some(_) => {}
            },
            Pending::DotCr => match input.first() {
                None => return all,
                Some(b'\n') => return self.end_at(1),
                Some(_) => self.refuse(),
            },
        }
        self.pending = Pending::None;
        for i in memchr::memchr2_iter(b'.', 0, input) {
            let p1 = if i >= 1 { input[i - 1] } else { self.prev[1] };
            let at = self.offset + i as u64;
            if input[i] == 0 {
                if p1 == b'\r' || p1 == b'\n' || (p1 == 0 && self.nul_run_end == Some(at)) {
                    self.nul_run_end = Some(at + 1);
                }
                continue;
            }
            let p2 = match i {
                0 => self.prev[0],
                1 => self.prev[1],
                _ => input[i - 2],
            };
            let crlf_before = p1 == b'\n' && p2 == b'\r';
            if (p1 == b'\n' && !crlf_before)
                || p1 == b'\r'
                || (p1 == 0 && self.nul_run_end == Some(at))
            {
                self.refuse();
                continue;
            }
            if !crlf_before || self.framing == Framing::Counted {
                continue;
            }
            // A line that starts with a dot: never content itself.
            content(&input[start..i]);
            start = i + 1;
            match input.get(i + 1) {
                None => {
                    self.pending = Pending::Dot;
                    return all;
                }
                Some(b'\r') => match input.get(i + 2) {
                    None => {
                        self.pending = Pending::DotCr;
                        return all;
                    }
                    Some(b'\n') => return self.end_at(i + 3),
                    Some(_) => {
                        start = i + 2;
                        self.refuse();
                    }
                },
                Some(b'\n' | 0) => self.refuse(),
                // A transparency dot (RFC 5321 §4.5.2); a second dot is content.
                Some(_) => {}
            }
        }
        content(&input[start..]);
        all
    }

    fn end_at(&mut self, consumed: usize) -> Fed {
        self.pending = Pending::None;
        Fed {
            consumed,
            end: true,
        }
    }

    fn refuse(&mut self) {
        self.bad = true;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Content, whether refused, and the bytes left after the end (None: no end).
    fn run(framing: Framing, parts: &[&[u8]]) -> (Vec<u8>, bool, Option<Vec<u8>>) {
        let mut s = DotScan::new(framing);
        let mut out = Vec::new();
        for (n, p) in parts.iter().enumerate() {
            let fed = s.feed(p, |c| out.extend_from_slice(c));
            if fed.end {
                let mut rest = p[fed.consumed..].to_vec();
                for q in &parts[n + 1..] {
                    rest.extend_from_slice(q);
                }
                return (out, s.bad, Some(rest));
            }
            assert_eq!(fed.consumed, p.len());
        }
        (out, s.bad, None)
    }

    /// The same result for the whole input, every split in two and byte by byte.
    fn check(framing: Framing, input: &[u8]) -> (Vec<u8>, bool, Option<Vec<u8>>) {
        let whole = run(framing, &[input]);
        for at in 0..=input.len() {
            let (a, b) = input.split_at(at);
            assert_eq!(run(framing, &[a, b]), whole, "{input:?} split at {at}");
        }
        let bytes: Vec<&[u8]> = input.chunks(1).collect();
        assert_eq!(run(framing, &bytes), whole, "{input:?} byte by byte");
        whole
    }

    #[test]
    fn only_crlf_dot_crlf_ends_data() {
        let (c, bad, rest) = check(Framing::Dotted, b"a\r\n.\r\nQUIT\r\n");
        assert_eq!((c.as_slice(), bad), (&b"a\r\n"[..], false));
        assert_eq!(rest.unwrap(), b"QUIT\r\n");
        let (c, bad, rest) = check(Framing::Dotted, b".\r\nNOOP\r\n");
        assert_eq!((c.as_slice(), bad), (&b""[..], false));
        assert_eq!(rest.unwrap(), b"NOOP\r\n");
    }

    #[test]
    fn transparency_dots_are_removed() {
        let (c, bad, rest) = check(Framing::Dotted, b"..a\r\n...\r\nb.c\r\n..\r\n.\r\n");
        assert_eq!(c, b".a\r\n..\r\nb.c\r\n.\r\n");
        assert!(!bad);
        assert_eq!(rest.unwrap(), b"");
    }

    #[test]
    fn lenient_ends_are_refused_and_do_not_end_data() {
        // (variant, also refused in BDAT content: there a dot after CRLF is content, and it is
        // dot-stuffed when relayed with DATA)
        let variants: [(&[u8], bool); 22] = [
            (b"\n.\n", true),
            (b"\r.\r", true),
            (b"\r.\n", true),
            (b"\n.\r", true),
            (b"\n.\r\n", true),
            (b"\r\n.\n", false),
            (b"\r.\r\n", true),
            (b"\r\n.\r", false),
            (b"\r\n.\rX", false),
            (b"\r\n.\r\r\n", false),
            (b"\r\n.\r\r\r\n", false),
            (b"\r\r\n.\r\r\n", false),
            (b"\r\n\x00.\r\n", true),
            (b"\r\n\x00\x00.\r\n", true),
            (b"\r\n.\x00\r\n", false),
            (b"\n\x00.\n", true),
            (b"\r\x00.\r", true),
            (b"\r\n.\r\x00\n", false),
            (b"x\r\n\r.\r\n", true),
            (b"\r\n\r\n.\n\r\n", false),
            (b"\n\n.\n\n", true),
            (b"\r\r.\r\r", true),
        ];
        for (v, bad_in_bdat) in variants {
            let input = [
                b"body".as_slice(),
                v,
                b"MAIL FROM:<e@x>\r\n",
                b"\r\n.\r\nQUIT\r\n",
            ]
            .concat();
            let (_, bad, rest) = check(Framing::Dotted, &input);
            assert!(bad, "{v:?}");
            assert_eq!(rest.as_deref(), Some(&b"QUIT\r\n"[..]), "{v:?}");
            let (_, bad, rest) = check(Framing::Counted, &input);
            assert_eq!(bad, bad_in_bdat, "BDAT {v:?}");
            assert_eq!(rest, None);
        }
    }

    #[test]
    fn harmless_content_passes() {
        for input in [
            &b"a\nb\rc\r\n"[..],
            b"a.b\r\n\x00x\r\n.\x01\r\n",
            b"x\x00.\r\n",
            b"\r\n\x00a.\r\n",
            b"a..\r\n",
        ] {
            let (c, bad, _) = check(Framing::Counted, input);
            assert!(!bad, "{input:?}");
            assert_eq!(c, input);
            let (_, bad, rest) = check(Framing::Dotted, &[input, b".\r\n"].concat());
            assert!(!bad, "{input:?}");
            assert_eq!(rest.as_deref(), Some(&b""[..]));
        }
    }
}
