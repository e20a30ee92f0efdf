//! TNEF (`application/ms-tnef`, Outlook's `winmail.dat`): find the files inside, so that the
//! gateway moves them to Cryptshare under their own names instead of one opaque `winmail.dat`.
//!
//! # Why our own parser
//!
//! The Rust crates for TNEF are `tnef` 0.1 (last released years ago, reads the attribute stream
//! but not the MAPI properties, so no long file names) and `ytnef` (bindings to the C library
//! libytnef, i.e. unsafe C code on untrusted input). What the gateway needs is small: the
//! attribute records of MS-OXTNEF §2.1.3 and, in the `attAttachment` properties, the file
//! names. And it needs the *position* of each file's bytes in the decoded stream, so that the
//! upload can stream them out of the message ([`super::UploadReader`]) instead of keeping a
//! copy of every file in memory. About 250 lines do that.
//!
//! # Format (little-endian throughout)
//!
//! ```text
//! u32 signature 0x223E9F78 | u16 legacy key | attribute*
//! attribute = u8 level (1 message, 2 attachment) | u32 id (low 16 bits: id, high: type)
//!           | u32 length | length bytes | u16 checksum (sum of the bytes mod 65536)
//! ```
//!
//! `attAttachRendData` starts an attachment; the attributes after it belong to it:
//! `attAttachTitle` (the short, often 8.3 name), `attAttachData` (the file's bytes) and
//! `attAttachment` (its MAPI properties, among them `PR_ATTACH_LONG_FILENAME`).
//!
//! # All or nothing
//!
//! A stream is unpacked only when it is well formed from the signature to its last byte: every
//! length within the remaining input, every checksum right, every attachment with its data, at
//! most [`MAX_FILES`] attachments, at least one. Anything else ([`Unpacked`] is `None`) means
//! the gateway moves the `winmail.dat` as it is, so damaged or unusual TNEF (an embedded
//! Outlook item, whose data sits in a MAPI object property rather than `attAttachData`, a
//! meeting request without files) never loses a byte. There is no nesting to bound: embedded
//! messages are exactly what is not opened. The work is linear in the input: each attribute is
//! visited once, each MAPI property once, and every length is checked against what is left
//! before it is used.

use std::ops::Range;

const SIGNATURE: u32 = 0x223E_9F78;
const LVL_ATTACHMENT: u8 = 0x02;
/// Attribute ids (low 16 bits of the attribute's `id` field).
const ATT_ATTACH_REND_DATA: u16 = 0x9002;
const ATT_ATTACH_TITLE: u16 = 0x8010;
const ATT_ATTACH_DATA: u16 = 0x800F;
const ATT_ATTACHMENT: u16 = 0x9005;
/// MAPI property ids in `attAttachment`.
const PR_ATTACH_LONG_FILENAME: u16 = 0x3707;
const PR_ATTACH_FILENAME: u16 = 0x3704;
const PR_DISPLAY_NAME: u16 = 0x3001;

/// More attachments than this in one `winmail.dat` are not unpacked (moved as one file): a
/// transfer of thousands of tiny files is more likely an attack than a mail.
pub const MAX_FILES: usize = 256;
/// MAPI properties of one attachment read, at most.
const MAX_PROPS: u32 = 4096;

/// One file inside a TNEF stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TnefFile {
    /// The best name the stream gives, as decoded (not yet sanitised): the long file name
    /// property, else the title, else the short file name, else the display name; empty when
    /// there is none.
    pub name: String,
    /// Where the file's bytes lie in the decoded TNEF stream.
    pub range: Range<u64>,
}

/// The files of a well-formed TNEF stream; `None` when it is not TNEF, is damaged or is not
/// one this parser unpacks (see the module documentation).
pub type Unpacked = Option<Vec<TnefFile>>;

fn u16_at(d: &[u8], at: usize) -> Option<u16> {
    let b = d.get(at..at.checked_add(2)?)?;
    Some(u16::from_le_bytes([b[0], b[1]]))
}

fn u32_at(d: &[u8], at: usize) -> Option<u32> {
    let b = d.get(at..at.checked_add(4)?)?;
    Some(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

#[derive(Default)]
struct Attachment {
    title: Option<String>,
    data: Option<Range<u64>>,
    long_name: Option<String>,
    short_name: Option<String>,
    display_name: Option<String>,
}

/// Unpack a decoded TNEF stream (see the module documentation).
pub fn unpack(data: &[u8]) -> Unpacked {
    if u32_at(data, 0)? != SIGNATURE {
        return None;
    }
    let mut attachments: Vec<Attachment> = Vec::new();
    let mut pos = 6usize; // signature + legacy key
    while pos < data.len() {
        let level = *data.get(pos)?;
        let id = (u32_at(data, pos + 1)? & 0xFFFF) as u16;
        let len = u32_at(data, pos + 5)? as usize;
        let start = pos + 9;
        let end = start.checked_add(len)?;
        let value = data.get(start..end)?;
        let checksum = u16_at(data, end)?;
        let sum = value
            .iter()
            .fold(0u16, |s, &b| s.wrapping_add(u16::from(b)));
        if sum != checksum {
            return None;
        }
        pos = end + 2;
        if level != LVL_ATTACHMENT {
            continue;
        }
        if id == ATT_ATTACH_REND_DATA || attachments.is_empty() {
            if attachments.len() == MAX_FILES {
                return None;
            }
            attachments.push(Attachment::default());
        }
        let a = attachments.last_mut()?;
        match id {
            ATT_ATTACH_TITLE => a.title = Some(string8(value)),
            ATT_ATTACH_DATA => a.data = Some(start as u64..end as u64),
            ATT_ATTACHMENT => mapi_names(value, a),
            _ => {}
        }
    }
    if attachments.is_empty() {
        return None;
    }
    attachments
        .into_iter()
        .map(|a| {
            let name = [a.long_name, a.title, a.short_name, a.display_name]
                .into_iter()
                .flatten()
                .map(|n| n.trim().to_owned())
                .find(|n| !n.is_empty())
                .unwrap_or_default();
            Some(TnefFile {
                name,
                range: a.data?,
            })
        })
        .collect()
}

/// A PT_STRING8 / attribute string: up to the first NUL; UTF-8 when it is, else windows-1252
/// (Outlook writes the sender's ANSI code page, which for the names that matter here is 1252).
fn string8(b: &[u8]) -> String {
    let b = b.split(|&c| c == 0).next().unwrap_or_default();
    match std::str::from_utf8(b) {
        Ok(s) => s.to_owned(),
        Err(_) => mail_parser::decoders::charsets::map::charset_decoder(b"windows-1252")
            .map_or_else(|| String::from_utf8_lossy(b).into_owned(), |d| d(b)),
    }
}

/// A PT_UNICODE string: UTF-16LE up to the first NUL.
fn unicode(b: &[u8]) -> String {
    let units: Vec<u16> = b
        .chunks_exact(2)
        .map(|c| u16::from_le_bytes([c[0], c[1]]))
        .take_while(|&u| u != 0)
        .collect();
    String::from_utf16_lossy(&units)
}

/// Size of one value of a fixed-size MAPI type, padded to 4 bytes; `None` for the variable
/// types and unknown ones.
fn fixed_size(t: u16) -> Option<usize> {
    Some(match t {
        0x0001 | 0x0002 | 0x0003 | 0x0004 | 0x000A | 0x000B => 4,
        0x0005..=0x0007 | 0x0014 | 0x0040 => 8,
        0x0048 => 16,
        _ => return None,
    })
}

/// The file names among the MAPI properties of `attAttachment` (MS-OXTNEF §2.1.3.4). Names
/// are a nicety: a property block this does not understand ends the reading of names, it does
/// not make the stream damaged (the title is still there).
fn mapi_names(d: &[u8], a: &mut Attachment) {
    let _ = read_props(d, a);
}

fn read_props(d: &[u8], a: &mut Attachment) -> Option<()> {
    let count = u32_at(d, 0)?.min(MAX_PROPS);
    let mut pos = 4usize;
    for _ in 0..count {
        let ptype = u16_at(d, pos)?;
        let pid = u16_at(d, pos + 2)?;
        pos += 4;
        if pid >= 0x8000 {
            // Named property: GUID, kind, then a number or a UTF-16 name (padded to 4).
            let kind = u32_at(d, pos + 16)?;
            pos += 20;
            if kind == 0 {
                pos += 4;
            } else {
                let n = u32_at(d, pos)? as usize;
                pos = pos
                    .checked_add(4)?
                    .checked_add(n.checked_next_multiple_of(4)?)?;
            }
        }
        let multi = ptype & 0x1000 != 0;
        let base = ptype & !0x1000;
        let variable = matches!(base, 0x001E | 0x001F | 0x0102 | 0x000D);
        let values = if multi || variable {
            let n = u32_at(d, pos)?;
            pos += 4;
            n
        } else {
            1
        };
        for _ in 0..values {
            if variable {
                let n = u32_at(d, pos)? as usize;
                let start = pos.checked_add(4)?;
                let value = d.get(start..start.checked_add(n)?)?;
                pos = start.checked_add(n.checked_next_multiple_of(4)?)?;
                if multi {
                    continue;
                }
                let text = match base {
                    0x001E => string8(value),
                    0x001F => unicode(value),
                    _ => continue,
                };
                match pid {
                    PR_ATTACH_LONG_FILENAME => a.long_name = Some(text),
                    PR_ATTACH_FILENAME => a.short_name = Some(text),
                    PR_DISPLAY_NAME => a.display_name = Some(text),
                    _ => {}
                }
            } else {
                pos = pos.checked_add(fixed_size(base)?)?;
            }
            if pos > d.len() {
                return None;
            }
        }
    }
    Some(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attr(level: u8, id: u32, data: &[u8]) -> Vec<u8> {
        let mut v = vec![level];
        v.extend_from_slice(&id.to_le_bytes());
        v.extend_from_slice(&(data.len() as u32).to_le_bytes());
        v.extend_from_slice(data);
        let sum = data.iter().fold(0u16, |s, &b| s.wrapping_add(u16::from(b)));
        v.extend_from_slice(&sum.to_le_bytes());
        v
    }

    /// An `attAttachment` block with one PT_UNICODE long file name.
    fn long_name_props(name: &str) -> Vec<u8> {
        let mut utf16: Vec<u8> = name.encode_utf16().flat_map(u16::to_le_bytes).collect();
        utf16.extend_from_slice(&[0, 0]);
        let mut v = 2u32.to_le_bytes().to_vec();
        // PT_LONG PR_ATTACH_METHOD = 1
        v.extend_from_slice(&[0x03, 0x00, 0x05, 0x37, 1, 0, 0, 0]);
        v.extend_from_slice(&[0x1F, 0x00, 0x07, 0x37]);
        v.extend_from_slice(&1u32.to_le_bytes());
        v.extend_from_slice(&(utf16.len() as u32).to_le_bytes());
        let padded = utf16.len().next_multiple_of(4);
        v.extend_from_slice(&utf16);
        v.resize(v.len() + padded - utf16.len(), 0);
        v
    }

    fn stream() -> Vec<u8> {
        let mut d = SIGNATURE.to_le_bytes().to_vec();
        d.extend_from_slice(&[1, 0]);
        d.extend(attr(1, 0x0001_8004, b"subject\0"));
        d.extend(attr(2, 0x0006_9002, &[1, 0, 0xff, 0xff, 0xff, 0xff]));
        d.extend(attr(2, 0x0001_8010, b"REPORT~1.PDF\0"));
        d.extend(attr(2, 0x0006_800F, b"%PDF-1.4"));
        d.extend(attr(
            2,
            0x0006_9005,
            &long_name_props("Quarterly report.pdf"),
        ));
        d.extend(attr(2, 0x0006_9002, &[1, 0, 0xff, 0xff, 0xff, 0xff]));
        d.extend(attr(2, 0x0006_800F, b"hello"));
        d.extend(attr(2, 0x0001_8010, b"a.txt\0"));
        d
    }

    #[test]
    fn names_and_ranges() {
        let d = stream();
        let files = unpack(&d).expect("well formed");
        assert_eq!(files.len(), 2);
        assert_eq!(files[0].name, "Quarterly report.pdf");
        let r = &files[0].range;
        assert_eq!(&d[r.start as usize..r.end as usize], b"%PDF-1.4");
        assert_eq!(files[1].name, "a.txt");
        let r = &files[1].range;
        assert_eq!(&d[r.start as usize..r.end as usize], b"hello");
    }

    #[test]
    fn damaged_streams_are_not_unpacked() {
        let d = stream();
        // Every truncation inside an attribute is damaged, and none panics. (A cut between two
        // attributes is a shorter well-formed stream: TNEF has no overall length; a message cut
        // short is caught by the MIME layer as a decoding problem.)
        let mut boundaries = vec![6];
        while let Some(&b) = boundaries.last().filter(|&&b| b < d.len()) {
            let len = u32_at(&d, b + 5).unwrap() as usize;
            boundaries.push(b + 11 + len);
        }
        for cut in 0..d.len() {
            if !boundaries.contains(&cut) {
                assert_eq!(unpack(&d[..cut]), None, "cut at {cut}");
            }
        }
        // A flipped byte inside a value breaks its checksum.
        let mut bad = d.clone();
        let at = d.windows(5).position(|w| w == b"hello").unwrap();
        bad[at] ^= 0x20;
        assert_eq!(unpack(&bad), None);
        // Trailing garbage is damage too.
        let mut tail = d.clone();
        tail.push(0);
        assert_eq!(unpack(&tail), None);
        assert_eq!(unpack(b"not tnef"), None);
    }

    #[test]
    fn attachments_without_data_or_too_many_are_not_unpacked() {
        let mut d = SIGNATURE.to_le_bytes().to_vec();
        d.extend_from_slice(&[1, 0]);
        d.extend(attr(2, 0x0006_9002, &[1, 0]));
        d.extend(attr(2, 0x0001_8010, b"embedded.msg\0"));
        assert_eq!(unpack(&d), None);

        let mut many = SIGNATURE.to_le_bytes().to_vec();
        many.extend_from_slice(&[1, 0]);
        for _ in 0..=MAX_FILES {
            many.extend(attr(2, 0x0006_9002, &[1, 0]));
            many.extend(attr(2, 0x0006_800F, b"x"));
        }
        assert_eq!(unpack(&many), None);
        // No attachment at all (a meeting request): nothing to unpack.
        let mut none = SIGNATURE.to_le_bytes().to_vec();
        none.extend_from_slice(&[1, 0]);
        none.extend(attr(1, 0x0001_8004, b"subject\0"));
        assert_eq!(unpack(&none), None);
    }

    #[test]
    fn broken_property_blocks_only_lose_the_long_name() {
        let mut props = long_name_props("Long name.txt");
        props.truncate(props.len() - 6);
        let mut d = SIGNATURE.to_le_bytes().to_vec();
        d.extend_from_slice(&[1, 0]);
        d.extend(attr(2, 0x0006_9002, &[1, 0]));
        d.extend(attr(2, 0x0001_8010, b"LONGNA~1.TXT\0"));
        d.extend(attr(2, 0x0006_800F, b"x"));
        d.extend(attr(2, 0x0006_9005, &props));
        let files = unpack(&d).unwrap();
        assert_eq!(files[0].name, "LONGNA~1.TXT");
        // Windows-1252 titles.
        assert_eq!(string8(b"Fr\xF6sche.txt\0junk"), "Fr\u{f6}sche.txt");
    }

    fn sha256(b: &[u8]) -> String {
        use sha2::{Digest, Sha256};
        hex::encode(Sha256::digest(b))
    }

    /// A sample stream and the files in it: name, size, SHA-256.
    type Sample<'a> = (&'a [u8], &'a [(&'a str, usize, &'a str)]);

    /// Real Outlook streams from the test suite of the `tnef` program (tests/data/README.md),
    /// with the names it extracts and the SHA-256 of its baseline files.
    #[test]
    fn real_outlook_samples() {
        let cases: [Sample; 4] = [
            (
                // Title `208225~1.mp3`, long file name (PT_STRING8) the real one; multi-valued
                // MAPI properties before it.
                include_bytes!("../../tests/data/tnef/multi-value-attribute.tnef"),
                &[(
                    "208225__5_seconds__Voice_Mail.mp3",
                    10656,
                    "cf2e3cd4175a3acd5cd193623cd8f79fda1c22f4823560213e561851c3fdd4e8",
                )],
            ),
            (
                include_bytes!("../../tests/data/tnef/two-files.tnef"),
                &[
                    (
                        "AUTHORS",
                        244,
                        "36c47da7d11846caf0474a4b3df83bb4eba9ea01d2bca500c288fa108e123d28",
                    ),
                    (
                        "README",
                        893,
                        "d0f163180d6ad5d8d3b4e7c6bc0cc948d05888bff0f69dba375b946ea4c6b0fa",
                    ),
                ],
            ),
            (
                include_bytes!("../../tests/data/tnef/unicode-mapi-attr-name.tnef"),
                &[
                    (
                        "spaconsole2.cfg",
                        8387,
                        "4d9639506fa4bf42ede43ffbaa8ed5a8f8fe2338bc2562f9b9aef7970bc4a25e",
                    ),
                    (
                        "image001.png",
                        3815,
                        "037f9d1fa06bccd31878332853814a43e6ed86b3893770b42b057597b49d19c9",
                    ),
                    (
                        "image002.png",
                        3573,
                        "ea179fb97a7e850e58b830f51a1fe411d5a4e5ffb1620c895abe9788cfac6f07",
                    ),
                    (
                        "image003.png",
                        3792,
                        "20c51557b9c7ec0a5da9ccfd4c2efb0ff7be72d15b05e1ddecc3d1c69fc8eaa9",
                    ),
                ],
            ),
            (
                // The data comes before the title here.
                include_bytes!("../../tests/data/tnef/data-before-name.tnef"),
                &[
                    (
                        "AUTOEXEC.BAT",
                        0,
                        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
                    ),
                    (
                        "CONFIG.SYS",
                        0,
                        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
                    ),
                    (
                        "boot.ini",
                        289,
                        "a815374e31481bbb939d99e73ecfe1de7914363ecd5c670c60a9022474251bce",
                    ),
                ],
            ),
        ];
        for (data, want) in cases {
            let files = unpack(data).expect("the sample unpacks");
            let got: Vec<(&str, usize, String)> = files
                .iter()
                .map(|f| {
                    let bytes = &data[f.range.start as usize..f.range.end as usize];
                    (f.name.as_str(), bytes.len(), sha256(bytes))
                })
                .collect();
            let want: Vec<(&str, usize, String)> = want
                .iter()
                .map(|&(n, l, h)| (n, l, h.to_string()))
                .collect();
            assert_eq!(got, want);
            // A flipped bit anywhere in an attribute's value is seen by its checksum, and a cut
            // inside the last attribute is seen too.
            let mut bad = data.to_vec();
            let mid = files[files.len() - 1].range.start as usize;
            if mid < bad.len()
                && files[files.len() - 1].range.end > files[files.len() - 1].range.start
            {
                bad[mid] ^= 1;
                assert_eq!(unpack(&bad), None);
            }
            assert_eq!(unpack(&data[..data.len() - 1]), None);
        }
    }
}
