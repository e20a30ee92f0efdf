//! Hand-written structures the property test does not produce: other charsets and transfer
//! encodings, single-part attachments, nested containers, LF line endings, S/MIME, TNEF,
//! RFC 2231/2047 names, MIME bombs.

mod mime_support;

use std::io::Read;

use cryptshare_gateway::mime::{
    self, Analysis, Class, Notice, NoticeFile, PartReader, decode_part, part_sha256,
};
use mime_support::{PyCase, assert_unedited_bytes_identical, edited_ranges, python_check};
use sha2::Digest;

fn notice(lang: &str, a: &Analysis, remove: &[usize]) -> Notice {
    Notice {
        language: lang.into(),
        files: remove
            .iter()
            .map(|&id| NoticeFile {
                name: a.parts[id].upload_name.clone().unwrap(),
                size: a.parts[id].size,
            })
            .collect(),
        expires: chrono::NaiveDate::from_ymd_opt(2026, 12, 24),
        sender: "alice@example.org".into(),
        tracking_id: Some("T-42".into()),
        ..Notice::default()
    }
}

fn crlf(s: &str) -> Vec<u8> {
    s.replace('\n', "\r\n").into_bytes()
}

fn by_path<'a>(a: &'a Analysis, path: &str) -> &'a mime::Part {
    a.parts
        .iter()
        .find(|p| p.path == path)
        .unwrap_or_else(|| panic!("no part {path}"))
}

/// Rewrite removing every candidate; check identity outside the edits; return output + notice.
fn convert_all(raw: &[u8], lang: &str) -> (Analysis, Vec<u8>, Notice) {
    let a = mime::analyse(raw);
    let remove: Vec<_> = a.candidates().map(|p| p.id).collect();
    assert!(!remove.is_empty());
    let n = notice(lang, &a, &remove);
    let out = mime::rewrite(raw, &a, &remove, &n).unwrap();
    assert_unedited_bytes_identical(raw, &out, &edited_ranges(&a, &remove));
    assert_eq!(mime::analyse(&out).candidates().count(), 0);
    (a, out, n)
}

const PDF_B64: &str = "JVBERi0xLjQKJcfsj6IKNSAwIG9iago8PC9MZW5ndGggNiAwIFI+PgpzdHJlYW0K";

fn mixed(text_headers: &str, text_body: &str) -> Vec<u8> {
    crlf(&format!(
        "From: a@example.org\nTo: b@example.net\nSubject: t\nMIME-Version: 1.0\n\
Content-Type: multipart/mixed; boundary=\"XX\"\n\npreamble\n--XX\n{text_headers}\n\n{text_body}\n--XX\n\
Content-Type: application/pdf; name=\"a.pdf\"\nContent-Disposition: attachment; filename=\"a.pdf\"\n\
Content-Transfer-Encoding: base64\n\n{PDF_B64}\n--XX--\nepilogue\n"
    ))
}

#[test]
fn charsets_and_encodings_of_text_bodies() {
    let mut py = Vec::new();
    let cases: Vec<(&str, &str, &str, &str)> = vec![
        // headers, raw body, decoded body, language
        (
            "Content-Type: text/plain; charset=iso-8859-1\nContent-Transfer-Encoding: quoted-printable",
            "Gr=FC=DFe aus K=F6ln",
            "Grüße aus Köln",
            "de",
        ),
        (
            "Content-Type: text/plain; charset=us-ascii\nContent-Transfer-Encoding: 7bit",
            "plain ascii",
            "plain ascii",
            "de",
        ),
        (
            "Content-Type: text/plain",
            "no charset at all",
            "no charset at all",
            "de",
        ),
        (
            "Content-Type: text/plain; charset=\"utf-8\"\nContent-Transfer-Encoding: base64",
            "R3LDvMOfZQ==",
            "Grüße",
            "de",
        ),
        (
            "Content-Type: text/plain; charset=windows-1252\nContent-Transfer-Encoding: 8bit",
            "caf\u{e9}",
            "café",
            "en",
        ),
        (
            "Content-Type: text/plain; charset=koi8-r\nContent-Transfer-Encoding: quoted-printable",
            "=F0=D2=C9=D7=C5=D4",
            "Привет",
            "de",
        ),
    ];
    for (headers, body, decoded, lang) in cases {
        let mut raw = mixed(headers, "BODY");
        // Latin-1 bytes for the 8bit case.
        let body_bytes: Vec<u8> = if headers.contains("windows-1252") {
            body.chars().map(|c| c as u32 as u8).collect()
        } else {
            body.as_bytes().to_vec()
        };
        let at = memchr::memmem::find(&raw, b"BODY").unwrap();
        raw.splice(at..at + 4, body_bytes);
        let (a, out, n) = convert_all(&raw, lang);
        assert_eq!(a.candidates().count(), 1);
        let want = format!("{}{decoded}", n.render_text().unwrap());
        py.push(PyCase {
            bytes: out,
            attachments: Some(vec![]),
            baseline: None,
            plain: Some(want),
            html: None,
        });
    }
    python_check(&py);
}

#[test]
fn html_identity_body_gets_notice_after_body_tag() {
    let raw = mixed(
        "Content-Type: text/html; charset=utf-8",
        "<html><head><title>x</title></head><BODY class=\"m\"><p>Hi</p></BODY></html>",
    );
    let (_, out, n) = convert_all(&raw, "en");
    let html = n.render_html().unwrap();
    let want = format!(
        "<html><head><title>x</title></head><BODY class=\"m\">{html}<p>Hi</p></BODY></html>"
    );
    assert!(
        memchr::memmem::find(&out, want.replace('\n', "\r\n").as_bytes()).is_some(),
        "{}",
        String::from_utf8_lossy(&out)
    );
    python_check(&[PyCase {
        bytes: out,
        attachments: Some(vec![]),
        baseline: None,
        plain: None,
        html: Some(want),
    }]);
}

#[test]
fn single_part_attachment_becomes_a_notice() {
    let raw = crlf(&format!(
        "From: a@example.org\nSubject: scan\nMIME-Version: 1.0\nContent-Type: application/pdf; name=scan.pdf\n\
Content-Disposition: attachment; filename=scan.pdf\nContent-Transfer-Encoding: base64\n\n{PDF_B64}\n"
    ));
    let (a, out, n) = convert_all(&raw, "de");
    assert_eq!(a.parts.len(), 1);
    assert_eq!(a.parts[0].upload_name.as_deref(), Some("scan.pdf"));
    let text = String::from_utf8_lossy(&out);
    assert!(text.starts_with("From: a@example.org\r\nSubject: scan\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n"));
    python_check(&[PyCase {
        bytes: out,
        attachments: Some(vec![]),
        baseline: None,
        plain: Some(n.render_text().unwrap()),
        html: None,
    }]);
}

#[test]
fn nested_mixed_emptied_and_root_without_text() {
    // Root mixed: a nested mixed holding only attachments, and one more attachment.
    let raw = crlf(&format!(
        "From: a@example.org\nMIME-Version: 1.0\nContent-Type: multipart/mixed; boundary=outer\n\n\
--outer\nContent-Type: multipart/mixed; boundary=inner\n\n--inner\nContent-Type: application/zip\n\
Content-Disposition: attachment; filename*=utf-8''%C3%BCber%20sicht.zip\nContent-Transfer-Encoding: base64\n\n{PDF_B64}\n\
--inner\nContent-Type: application/octet-stream\nContent-Transfer-Encoding: base64\n\n{PDF_B64}\n--inner--\n\
--outer\nContent-Type: image/png; name=\"=?utf-8?q?B=C3=A4r?=.png\"\nContent-Transfer-Encoding: base64\n\n{PDF_B64}\n--outer--\n"
    ));
    let (a, out, n) = convert_all(&raw, "en");
    let names: Vec<_> = a
        .candidates()
        .map(|p| p.upload_name.clone().unwrap())
        .collect();
    assert_eq!(names, ["über sicht.zip", "attachment-2.bin", "Bär.png"]);
    python_check(&[PyCase {
        bytes: out.clone(),
        attachments: Some(vec![]),
        baseline: None,
        plain: Some(n.render_text().unwrap()),
        html: None,
    }]);
    // The emptied inner multipart is gone as a whole.
    assert!(memchr::memmem::find(&out, b"boundary=inner").is_none());
}

#[test]
fn lf_only_message_keeps_lf() {
    let raw = String::from_utf8(mixed("Content-Type: text/plain; charset=utf-8", "hello"))
        .unwrap()
        .replace("\r\n", "\n")
        .into_bytes();
    let (a, out, n) = convert_all(&raw, "de");
    assert_eq!(a.line_ending, "\n");
    assert!(!out.contains(&b'\r'));
    python_check(&[PyCase {
        bytes: out,
        attachments: Some(vec![]),
        baseline: None,
        plain: Some(format!("{}hello", n.render_text().unwrap())),
        html: None,
    }]);
}

#[test]
fn protected_structures_are_not_candidates() {
    let signed = crlf(&format!(
        "Content-Type: multipart/signed; protocol=\"application/pkcs7-signature\"; boundary=S\n\n\
--S\nContent-Type: multipart/mixed; boundary=M\n\n--M\nContent-Type: text/plain\n\nhi\n--M\n\
Content-Type: application/pdf\nContent-Disposition: attachment; filename=a.pdf\n\n%PDF\n--M--\n\
--S\nContent-Type: application/pkcs7-signature; name=smime.p7s\nContent-Transfer-Encoding: base64\n\n{PDF_B64}\n--S--\n"
    ));
    let a = mime::analyse(&signed);
    assert!(a.flags.signed);
    assert_eq!(a.candidates().count(), 0);
    assert_eq!(a.signed_attachments().count(), 2);

    let enc = crlf(&format!(
        "Content-Type: application/pkcs7-mime; smime-type=enveloped-data; name=smime.p7m\n\
Content-Transfer-Encoding: base64\n\n{PDF_B64}\n"
    ));
    let a = mime::analyse(&enc);
    assert!(a.flags.encrypted);
    assert_eq!(a.candidates().count(), 0);

    let report = crlf(
        "Content-Type: multipart/report; report-type=delivery-status; boundary=R\n\n--R\n\
Content-Type: text/plain\n\nfailed\n--R\nContent-Type: message/delivery-status\n\nReporting-MTA: dns; x\n\
--R\nContent-Type: message/rfc822\n\nSubject: orig\n\nbody\n--R--\n",
    );
    let a = mime::analyse(&report);
    assert!(a.flags.report);
    assert_eq!(a.candidates().count(), 0);

    let calendar = crlf(
        "Content-Type: multipart/mixed; boundary=C\n\n--C\nContent-Type: text/plain\n\nmeet\n--C\n\
Content-Type: text/calendar; method=REQUEST; name=invite.ics\nContent-Disposition: attachment; filename=invite.ics\n\nBEGIN:VCALENDAR\n--C--\n",
    );
    let a = mime::analyse(&calendar);
    assert_eq!(a.candidates().count(), 0);
    assert_eq!(by_path(&a, "2").class, Class::Kept);
}

#[test]
fn cid_and_related_rules() {
    let raw = crlf(&format!(
        "Content-Type: multipart/related; boundary=R\n\n--R\nContent-Type: text/html\nContent-Transfer-Encoding: quoted-printable\n\n\
<img src=3D\"cid:logo%40x\">\n--R\nContent-Type: image/png\nContent-ID: <logo@x>\nContent-Disposition: attachment; filename=logo.png\n\
Content-Transfer-Encoding: base64\n\n{PDF_B64}\n--R\nContent-Type: image/gif\nContent-ID: <domino@x>\nContent-Transfer-Encoding: base64\n\n{PDF_B64}\n--R--\n"
    ));
    let a = mime::analyse(&raw);
    assert_eq!(by_path(&a, "2").class, Class::Inline);
    assert_eq!(by_path(&a, "3").class, Class::Inline);
    assert_eq!(a.candidates().count(), 0);
}

/// A TNEF attribute record: level, id, length, data, checksum.
fn tnef_attr(level: u8, id: u32, data: &[u8], good_checksum: bool) -> Vec<u8> {
    let mut v = vec![level];
    v.extend_from_slice(&id.to_le_bytes());
    v.extend_from_slice(&(data.len() as u32).to_le_bytes());
    v.extend_from_slice(data);
    let sum = data.iter().fold(0u16, |s, &b| s.wrapping_add(u16::from(b)));
    let sum = if good_checksum { sum } else { sum ^ 1 };
    v.extend_from_slice(&sum.to_le_bytes());
    v
}

fn tnef_message(tnef: &[u8]) -> Vec<u8> {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(tnef);
    crlf(&format!(
        "Content-Type: multipart/mixed; boundary=T\n\n--T\nContent-Type: text/plain\n\nx\n--T\n\
Content-Type: application/octet-stream\nContent-Disposition: attachment; filename=x.txt\n\nplain\n--T\n\
Content-Type: application/ms-tnef; name=winmail.dat\nContent-Transfer-Encoding: base64\n\n{b64}\n--T--\n"
    ))
}

#[test]
fn tnef_is_unpacked_into_sanitised_unique_names() {
    let stream = |last_checksum_good: bool| {
        let mut t = 0x223E_9F78u32.to_le_bytes().to_vec();
        t.extend_from_slice(&[1, 0]);
        t.extend(tnef_attr(2, 0x0006_9002, &[1, 0], true));
        t.extend(tnef_attr(
            2,
            0x0001_8010,
            b"..\\..\\evil\xE2\x80\xAEcod.exe\0",
            true,
        ));
        t.extend(tnef_attr(2, 0x0006_800F, b"report bytes", true));
        t.extend(tnef_attr(2, 0x0006_9002, &[1, 0], true));
        t.extend(tnef_attr(2, 0x0001_8010, b"x.txt\0", true));
        t.extend(tnef_attr(2, 0x0006_800F, b"second", last_checksum_good));
        t
    };
    let raw = tnef_message(&stream(true));
    let a = mime::analyse(&raw);
    assert!(a.flags.tnef);
    let p = by_path(&a, "3");
    assert_eq!(p.class, Class::Attachment);
    // No path, no bidi override (U+202E); `x.txt` is taken by the other attachment.
    assert_eq!(p.tnef_files, ["evilcod.exe", "x (2).txt"]);
    assert_eq!(p.transfer_size(), 18);
    let uploads = p.uploads();
    assert_eq!(uploads.len(), 2);
    let read = |u: &mime::Upload| {
        let mut out = Vec::new();
        mime::UploadReader::new(&raw, p, u)
            .read_to_end(&mut out)
            .unwrap();
        out
    };
    assert_eq!(read(&uploads[0]), b"report bytes");
    assert_eq!(read(&uploads[1]), b"second");
    assert_eq!(mime::upload_sha256(&raw, p, &uploads[1]).0, 6);

    // One wrong checksum: the winmail.dat is moved as it is.
    let damaged = stream(false);
    let raw = tnef_message(&damaged);
    let a = mime::analyse(&raw);
    let p = by_path(&a, "3");
    assert!(p.tnef_files.is_empty());
    assert_eq!(p.transfer_size(), damaged.len() as u64);
    let uploads = p.uploads();
    assert_eq!(uploads.len(), 1);
    assert_eq!(uploads[0].name, "winmail.dat");
    assert_eq!(uploads[0].within, None);
}

#[test]
fn invalid_base64_is_reported_and_kept() {
    let raw = crlf(
        "Content-Type: multipart/mixed; boundary=B\n\n--B\nContent-Type: text/plain\n\nx\n--B\n\
Content-Type: application/pdf\nContent-Disposition: attachment; filename=a.pdf\nContent-Transfer-Encoding: base64\n\n\
JVBER!!!i0xLjQK\n--B--\n",
    );
    let a = mime::analyse(&raw);
    assert!(a.flags.decoding_problem);
    assert_eq!(a.candidates().count(), 0);
    assert!(by_path(&a, "2").reason.contains("decoding problem"));
}

#[test]
fn boundary_in_mid_line_is_not_a_delimiter() {
    let raw = crlf(
        "Content-Type: multipart/mixed; boundary=B\n\n--B\nContent-Type: text/plain\n\nsee --B here\n--Bx not either\n\
--B\nContent-Type: application/pdf\nContent-Disposition: attachment; filename=a.pdf\n\n%PDF\n--B--\n",
    );
    let a = mime::analyse(&raw);
    assert_eq!(a.parts.len(), 3);
    assert_eq!(
        &raw[a.parts[1].body_start..a.parts[1].end],
        b"see --B here\r\n--Bx not either"
    );
}

#[test]
fn mime_bombs_hit_limits_without_panicking() {
    let mut deep = String::new();
    for i in 0..200 {
        deep.push_str(&format!(
            "Content-Type: multipart/mixed; boundary=b{i}\n\n--b{i}\n"
        ));
    }
    deep.push_str("Content-Type: text/plain\n\nx\n");
    let a = mime::analyse(&crlf(&deep));
    assert!(a.flags.limit_reached);
    assert!(a.parts.len() <= mime::MAX_DEPTH + 2);

    let mut wide = String::from("Content-Type: multipart/mixed; boundary=w\n\n");
    for _ in 0..20_000 {
        wide.push_str("--w\n\nx\n");
    }
    let a = mime::analyse(wide.as_bytes());
    assert!(a.flags.limit_reached);
    assert!(a.parts.len() <= mime::MAX_PARTS);
}

#[test]
fn streaming_decode_matches_and_hashes() {
    let data: Vec<u8> = (0..200_000u32).map(|i| (i * 31 % 251) as u8).collect();
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(&data);
    let wrapped: Vec<&str> = b64
        .as_bytes()
        .chunks(76)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect();
    let raw = crlf(&format!(
        "Content-Type: multipart/mixed; boundary=B\n\n--B\nContent-Type: application/octet-stream\n\
Content-Disposition: attachment; filename=d.bin\nContent-Transfer-Encoding: base64\n\n{}\n--B--\n",
        wrapped.join("\n")
    ));
    let a = mime::analyse(&raw);
    let p = by_path(&a, "1");
    assert_eq!(p.size, data.len() as u64);
    let mut out = Vec::new();
    assert_eq!(decode_part(&raw, p, &mut out).unwrap(), data.len() as u64);
    assert_eq!(out, data);
    let mut via_reader = Vec::new();
    PartReader::new(&raw, p)
        .read_to_end(&mut via_reader)
        .unwrap();
    assert_eq!(via_reader, data);
    let (size, sum) = part_sha256(&raw, p);
    assert_eq!(size, data.len() as u64);
    assert_eq!(sum, <[u8; 32]>::from(sha2::Sha256::digest(&data)));
}

#[test]
fn duplicate_and_hostile_names_are_made_unique_and_safe() {
    let raw = crlf(
        "Content-Type: multipart/mixed; boundary=B\n\n--B\nContent-Type: text/plain\n\nx\n--B\n\
Content-Disposition: attachment; filename=\"../../a.pdf\"\n\n1\n--B\n\
Content-Disposition: attachment; filename=\"A.pdf\"\n\n2\n--B\n\
Content-Disposition: attachment; filename*0*=utf-8''%E2%82%AC; filename*1=\"_long.txt\"\n\n3\n--B--\n",
    );
    let a = mime::analyse(&raw);
    let names: Vec<_> = a
        .candidates()
        .map(|p| p.upload_name.clone().unwrap())
        .collect();
    assert_eq!(names, ["a.pdf", "A (2).pdf", "€_long.txt"]);
}

#[test]
fn rewrite_rejects_bad_requests() {
    let raw = mixed("Content-Type: text/plain", "x");
    let a = mime::analyse(&raw);
    let n = notice("en", &a, &[]);
    assert!(mime::rewrite(&raw, &a, &[99], &n).is_err());
    assert!(mime::rewrite(&raw, &a, &[0], &n).is_err()); // the root multipart
    assert!(mime::rewrite(&raw[1..], &a, &[2], &n).is_err()); // another message
    assert_eq!(mime::rewrite(&raw, &a, &[], &n).unwrap(), raw);
}

#[test]
fn converting_signed_mail_annotates_the_signed_body() {
    let raw = crlf(
        "Content-Type: multipart/signed; protocol=\"application/pkcs7-signature\"; boundary=S\n\n\
--S\nContent-Type: multipart/mixed; boundary=M\n\n--M\nContent-Type: text/plain; charset=utf-8\n\nsigned text\n--M\n\
Content-Type: application/pdf\nContent-Disposition: attachment; filename=a.pdf\n\n%PDF\n--M--\n\
--S\nContent-Type: application/pkcs7-signature; name=smime.p7s\n\nSIG\n--S--\n",
    );
    let a = mime::analyse(&raw);
    let pdf: Vec<_> = a
        .signed_attachments()
        .filter(|p| p.content_type == "application/pdf")
        .map(|p| p.id)
        .collect();
    let n = notice("en", &a, &pdf);
    let out = mime::rewrite(&raw, &a, &pdf, &n).unwrap();
    python_check(&[PyCase {
        bytes: out,
        attachments: Some(vec![]),
        baseline: None,
        plain: Some(format!("{}signed text", n.render_text().unwrap())),
        html: None,
    }]);
}
