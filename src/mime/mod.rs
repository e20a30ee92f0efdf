//! MIME engine: find the attachments worth moving, stream their decoded bytes, and rewrite the
//! message byte-exactly.
//!
//! # API for the pipeline
//!
//! ```text
//! mime::analyse(raw: &[u8]) -> Analysis                    // never panics; MAX_DEPTH / MAX_PARTS
//! Analysis::candidates() -> impl Iterator<Item = &Part>    // what a policy may move
//! mime::PartReader::new(raw, &Part): std::io::Read          // streaming decode, no second copy
//! mime::decode_part(raw, &Part, &mut impl Write) -> io::Result<u64>
//! mime::part_sha256(raw, &Part) -> (u64, [u8; 32])         // decoded size + SHA-256
//! mime::rewrite(raw, &Analysis, remove: &[PartId], &Notice) -> Result<Vec<u8>, RewriteError>
//! mime::Notice { language: Language, files: Vec<NoticeFile { name, size }>,
//!                expires: Option<NaiveDate>, sender, tracking_id, download_url,
//!                access: Access, template_dir }
//! mime::Language::parse(tag) -> Option<Language>           // en de fr es it nl: the one language test
//! mime::check_template(text) -> Result<(), TemplateError>  // operator templates, at config load
//! mime::build_dsn(&Dsn) -> Result<BuiltDsn, DsnError>      // RFC 3464 multipart/report
//! ```
//!
//! Typical use (the pipeline's `plan` step does the first two with `policy::select_for`):
//! `let a = analyse(&raw);` choose the parts to move, then for each: `part_sha256` for the file
//! registration and a `PartReader` as the upload body, named `part.upload_name` (sanitised,
//! unique); finally `rewrite(&raw, &a, &chosen, &notice)`. This module knows nothing of the
//! configuration, the policies or the pipeline above it.
//!
//! `Analysis::parts` is a pre-order list of every MIME entity; `Part::id` is its index. Every
//! leaf has a [`Class`] and a human-readable reason. Parts inside `multipart/signed`,
//! `multipart/encrypted`, `application/pkcs7-mime`, `multipart/report` or an inline forwarded
//! message, and attachments with decoding problems, are `Class::Kept`; natural attachments among
//! them still get an `upload_name` so a policy that converts signed mail can find them
//! ([`Analysis::signed_attachments`]).
//!
//! The rewrite cuts removed parts out by their offsets (a container left empty goes as well),
//! puts the notice at the top of the first `text/plain` and the first `text/html` body (the
//! alternatives of a normal message), in the body's own charset and transfer encoding or
//! relabelled to UTF-8 / quoted-printable when they cannot carry it, and adds a `text/plain`
//! notice part as the first child of the root when no text body is left. A single-part message
//! that is itself the attachment becomes a text/plain notice. Everything else is copied.
//!
//! # Why our own structure scanner
//!
//! Header fields are parsed with mail-parser 0.11 (RFC 2047 encoded words, RFC 2231 parameter
//! continuations and charsets), but the tree itself is found by scanning delimiters here:
//! mail-parser 0.11 decodes every body eagerly (a 100 MB attachment would cost another 100 MB of
//! heap just to learn its offsets), matches `--boundary` in mid-line (#156), and gives offsets into
//! decoded copies for encoded `message/rfc822`. Scanning ourselves keeps memory independent of the
//! attachment size and gives exact offsets for every header field, delimiter and body, which the
//! splicing rewrite needs.

mod analyse;
mod decode;
mod dsn;
mod language;
mod neutral;
mod notice;
mod receipt;
mod rewrite;
mod subject;
mod text;
mod tnef;

pub use analyse::{MAX_DEPTH, MAX_PARTS, analyse};
pub use decode::{PartReader, UploadReader, decode_part, part_sha256, upload_sha256};
pub use dsn::{
    BuiltDsn, Dsn, DsnAction, DsnError, DsnIds, DsnRecipient, DsnReturn, MAX_RETURNED_HEADERS,
    build_dsn, build_dsn_with_ids,
};
pub use language::{Access, Language, Texts};
pub use neutral::neutral_message;
pub use notice::{
    Notice, NoticeError, NoticeFile, PLACEHOLDERS, TemplateError, check_template, human_size,
};
pub use receipt::{Receipt, ReceiptFile, build_receipt, receipt_text, wants_receipt};
pub use rewrite::{RewriteError, rewrite, without_parts};
pub use subject::{remove_subject_tag, remove_tag_from_text};
pub use text::{is_invisible, strip_invisible};

use std::ops::Range;

/// Index of a part in [`Analysis::parts`] (pre-order, root = 0).
pub type PartId = usize;

/// Content-Transfer-Encoding of a part.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransferEncoding {
    /// No header: 7bit by definition.
    None,
    SevenBit,
    EightBit,
    Binary,
    Base64,
    QuotedPrintable,
    /// Anything else (`x-uuencode`, garbage): bytes are passed through undecoded.
    Other,
}

impl TransferEncoding {
    pub fn as_str(self) -> &'static str {
        match self {
            TransferEncoding::None => "none",
            TransferEncoding::SevenBit => "7bit",
            TransferEncoding::EightBit => "8bit",
            TransferEncoding::Binary => "binary",
            TransferEncoding::Base64 => "base64",
            TransferEncoding::QuotedPrintable => "quoted-printable",
            TransferEncoding::Other => "other",
        }
    }

    /// Bodies whose raw bytes are the decoded bytes.
    pub fn is_identity(self) -> bool {
        !matches!(
            self,
            TransferEncoding::Base64 | TransferEncoding::QuotedPrintable
        )
    }
}

/// `Content-Disposition` type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Disposition {
    Inline,
    Attachment,
    Other(String),
}

/// What a part is, as far as moving it to Cryptshare is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// multipart/* (and a parsed inline message/rfc822).
    Container,
    /// A text/plain or text/html body: receives the notice.
    Body,
    /// An image or other part referenced from HTML via `cid:`: stays.
    Inline,
    /// A file attachment: may be moved.
    Attachment,
    /// Kept for a structural reason (calendar, alternative, signature, report, forwarded content …).
    Kept,
}

impl Class {
    pub fn as_str(self) -> &'static str {
        match self {
            Class::Container => "container",
            Class::Body => "body",
            Class::Inline => "inline",
            Class::Attachment => "attachment",
            Class::Kept => "kept",
        }
    }
}

/// Per-part observations.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PartFlags {
    /// Invalid base64/quoted-printable, truncated input.
    pub decoding_problem: bool,
    /// Inside `multipart/signed` or an `application/pkcs7-mime` signature.
    pub in_signed: bool,
    /// Inside `multipart/encrypted` (or is `application/pkcs7-mime`).
    pub in_encrypted: bool,
    /// Inside `multipart/report`.
    pub in_report: bool,
    /// Inside a forwarded `message/rfc822` that is shown inline.
    pub in_message: bool,
    /// `application/ms-tnef` / winmail.dat.
    pub tnef: bool,
    /// A multipart without its closing delimiter, or whose boundary never appears.
    pub malformed: bool,
}

/// One MIME entity. Offsets are into the analysed buffer.
#[derive(Debug, Clone)]
pub struct Part {
    pub id: PartId,
    pub parent: Option<PartId>,
    pub children: Vec<PartId>,
    /// IMAP-style section path: `1`, `1.2`, `1.2.1`; the root of a single-part message is `1`.
    pub path: String,
    pub depth: usize,
    /// Lower-case `type/subtype`; `text/plain` when missing (RFC 2045 default).
    pub content_type: String,
    pub charset: Option<String>,
    pub boundary: Option<String>,
    pub disposition: Option<Disposition>,
    pub content_id: Option<String>,
    /// Decoded file name as sent (`filename`/`name`, RFC 2231/2047).
    pub file_name: Option<String>,
    /// Name to use in the Cryptshare transfer: sanitised and unique among the candidates
    /// (derived `attachment-N.ext` when missing). Set for attachments only.
    pub upload_name: Option<String>,
    pub encoding: TransferEncoding,
    /// Start of the header block (right after the delimiter line).
    pub header_start: usize,
    /// Start of the body (after the blank line).
    pub body_start: usize,
    /// End of the body, excluding the line break before the next delimiter.
    pub end: usize,
    /// For children of a multipart: what removing the part cuts out, from the line break that
    /// precedes its delimiter line (or the delimiter itself at the start of the body) to the
    /// line break before the next delimiter (or the end of the parent).
    pub cut: Option<Range<usize>>,
    /// Decoded size of the body in bytes (leaves only).
    pub size: u64,
    pub class: Class,
    pub reason: String,
    pub flags: PartFlags,
    /// Upload names of the files inside a TNEF (winmail.dat) part that is unpacked (see
    /// [`Part::tnef_contents`]); empty when it is moved as it is.
    pub tnef_files: Vec<String>,
    /// The files a well-formed TNEF part is unpacked into when it is moved: their upload names
    /// (sanitised, unique among all the message's upload names) and where their bytes lie in the
    /// decoded part. Empty for every other part, and for a TNEF that is damaged, larger than the
    /// analysis opens, or holds something other than plain files ([`tnef`](self) module docs):
    /// such a part is moved as the one file it is.
    pub tnef_contents: Vec<InnerFile>,
}

/// A file inside a TNEF part.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InnerFile {
    /// Sanitised, unique upload name.
    pub name: String,
    /// The file's bytes in the decoded body of the part.
    pub range: Range<u64>,
}

/// One file of a transfer: a whole part, or one file inside an unpacked TNEF part.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upload {
    pub part: PartId,
    /// Sanitised, unique name in the transfer.
    pub name: String,
    /// Decoded size in bytes.
    pub size: u64,
    /// `Some`: only these bytes of the part's decoded body (a file inside a TNEF).
    pub within: Option<Range<u64>>,
}

impl Part {
    pub fn is_multipart(&self) -> bool {
        self.content_type.starts_with("multipart/")
    }
    pub fn body(&self) -> Range<usize> {
        self.body_start..self.end
    }

    /// The bytes moving this part puts into a transfer: the decoded size, or for an unpacked
    /// TNEF the sum of its files (the TNEF's own framing, message properties and rich-text body
    /// are not moved). Policies count this against `threshold` and `min_attachment_size`.
    pub fn transfer_size(&self) -> u64 {
        if self.tnef_contents.is_empty() {
            self.size
        } else {
            self.tnef_contents
                .iter()
                .map(|f| f.range.end.saturating_sub(f.range.start))
                .sum()
        }
    }

    /// The files moving this part puts into a transfer (one, or the files of an unpacked TNEF).
    pub fn uploads(&self) -> Vec<Upload> {
        if self.tnef_contents.is_empty() {
            return vec![Upload {
                part: self.id,
                name: self
                    .upload_name
                    .clone()
                    .unwrap_or_else(|| format!("attachment-{}.bin", self.id)),
                size: self.size,
                within: None,
            }];
        }
        self.tnef_contents
            .iter()
            .map(|f| Upload {
                part: self.id,
                name: f.name.clone(),
                size: f.range.end.saturating_sub(f.range.start),
                within: Some(f.range.clone()),
            })
            .collect()
    }
}

/// Whole-message observations.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MessageFlags {
    pub signed: bool,
    pub encrypted: bool,
    pub report: bool,
    pub tnef: bool,
    pub decoding_problem: bool,
    pub malformed: bool,
    /// Depth or part-count limit reached: the rest was treated as opaque leaves.
    pub limit_reached: bool,
}

/// Result of [`analyse`].
#[derive(Debug, Clone)]
pub struct Analysis {
    pub parts: Vec<Part>,
    pub flags: MessageFlags,
    /// `\r\n` or `\n`: the line ending the message uses, for inserted text.
    pub line_ending: &'static str,
    /// Decoded `Subject:` of the message.
    pub subject: Option<String>,
}

impl Analysis {
    pub fn part(&self, id: PartId) -> Option<&Part> {
        self.parts.get(id)
    }

    /// Attachments a policy may move: class `Attachment`, no decoding problem, not in a
    /// signed, encrypted or report structure.
    pub fn candidates(&self) -> impl Iterator<Item = &Part> {
        self.parts.iter().filter(|p| p.class == Class::Attachment)
    }

    /// Attachments a policy could move only if it accepts breaking a signature.
    pub fn signed_attachments(&self) -> impl Iterator<Item = &Part> {
        self.parts.iter().filter(|p| {
            p.class == Class::Kept
                && p.flags.in_signed
                && !(p.flags.in_encrypted || p.flags.in_message || p.flags.decoding_problem)
                && p.upload_name.is_some()
        })
    }

    /// `true` if `id` is `ancestor` or lies below it.
    pub fn is_within(&self, id: PartId, ancestor: PartId) -> bool {
        let mut cur = Some(id);
        while let Some(c) = cur {
            if c == ancestor {
                return true;
            }
            cur = self.parts.get(c).and_then(|p| p.parent);
        }
        false
    }
}
