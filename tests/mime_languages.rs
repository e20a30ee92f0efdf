//! Every built-in language's text and HTML notice, for every way the recipients get link and
//! password, against snapshots (`UPDATE_GOLDEN=1 cargo test --test mime_languages`
//! regenerates); and each language's rewrite parsed by Python's `email` without defects. The
//! same for whole-message mode's neutral notice (with `attachments.html`) and the sender's
//! receipt (snapshots `message-<lang>.txt`).

mod mime_support;

use cryptshare_gateway::mime::{self, Access, Language, Notice, NoticeFile};
use mime_support::{PyCase, python_check};

const GOLDEN: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/golden/notices");

fn notice(language: Language, access: Access, url: bool) -> Notice {
    Notice {
        language,
        files: vec![
            NoticeFile {
                name: "Angebot <2026> & Preise.pdf".into(),
                size: 1536 * 1024,
            },
            NoticeFile {
                name: "notes.txt".into(),
                size: 512,
            },
        ],
        expires: chrono::NaiveDate::from_ymd_opt(2026, 12, 11),
        sender: "Alice Example".into(),
        tracking_id: Some("20261127-100000-ABCDEFGH".into()),
        download_url: url.then(|| "https://cs.example.org/download?id=abc".into()),
        access,
        template_dir: None,
        whole_message: false,
        attachment_list: false,
    }
}

#[test]
fn every_language_matches_its_snapshot() {
    let update = std::env::var_os("UPDATE_GOLDEN").is_some();
    let mut mismatches = Vec::new();
    for l in Language::ALL {
        let mut got = String::new();
        for (i, a) in Access::ALL.iter().enumerate() {
            let n = notice(l, *a, i == 0);
            got.push_str(&format!(
                "===== link_from_cryptshare={} password_from_sender={} download_url={}\n",
                a.link_from_cryptshare,
                a.password_from_sender,
                i == 0
            ));
            got.push_str("----- text\n");
            got.push_str(&n.render_text().unwrap());
            got.push_str("----- html\n");
            got.push_str(&n.render_html().unwrap());
        }
        let file = std::path::Path::new(GOLDEN).join(format!("{}.txt", l.tag()));
        if update {
            std::fs::write(&file, &got).unwrap();
        } else if std::fs::read_to_string(&file).ok().as_deref() != Some(got.as_str()) {
            mismatches.push(format!("{}:\n{got}", file.display()));
        }
    }
    assert!(mismatches.is_empty(), "{}", mismatches.join("\n"));
}

#[test]
fn every_language_rewrites_to_valid_mime() {
    let raw = "From: a@example.org\r\nTo: b@example.net\r\nSubject: t\r\nMIME-Version: 1.0\r\n\
Content-Type: multipart/mixed; boundary=\"XX\"\r\n\r\n--XX\r\n\
Content-Type: multipart/alternative; boundary=\"YY\"\r\n\r\n--YY\r\n\
Content-Type: text/plain; charset=iso-8859-1\r\n\r\nHallo\r\n--YY\r\n\
Content-Type: text/html; charset=us-ascii\r\n\r\n<html><body><p>Hallo</p></body></html>\r\n--YY--\r\n\
--XX\r\nContent-Type: application/pdf; name=\"a.pdf\"\r\nContent-Disposition: attachment; filename=\"a.pdf\"\r\n\
Content-Transfer-Encoding: base64\r\n\r\nJVBERi0xLjQK\r\n--XX--\r\n"
        .as_bytes();
    let a = mime::analyse(raw);
    let remove: Vec<_> = a.candidates().map(|p| p.id).collect();
    assert_eq!(remove.len(), 1);
    let mut cases = Vec::new();
    for l in Language::ALL {
        let n = notice(l, Access::default(), false);
        let out = mime::rewrite(raw, &a, &remove, &n).unwrap();
        let text = n.render_text().unwrap();
        let t = l.texts();
        assert!(text.contains(&format!(
            "{}{}",
            t.label(t.available_until),
            l.date(n.expires.unwrap())
        )));
        assert!(text.contains(&l.size(1536 * 1024)));
        cases.push(PyCase {
            bytes: out,
            attachments: Some(vec![]),
            baseline: None,
            plain: Some(format!("{text}Hallo")),
            html: None,
        });
    }
    python_check(&cases);
}

/// Whole-message mode and the receipt, per language: the neutral notice (text, HTML,
/// `attachments.html`) and the receipt's text against snapshots; both messages valid MIME.
#[test]
fn every_language_renders_the_neutral_notice_and_the_receipt() {
    let update = std::env::var_os("UPDATE_GOLDEN").is_some();
    let raw = "From: a@example.org\r\nTo: b@example.net\r\nSubject: t\r\nMIME-Version: 1.0\r\n\
Content-Type: text/plain; charset=utf-8\r\n\r\nThe secret text\r\n"
        .as_bytes();
    let a = mime::analyse(raw);
    let files = [mime::ReceiptFile {
        name: "Angebot <2026> & Preise.pdf".into(),
        size: 1536 * 1024,
        sha256: "ab".repeat(32),
    }];
    let rcpts = ["b@example.net".to_string(), "c@example.net".to_string()];
    let mut mismatches = Vec::new();
    let mut cases = Vec::new();
    for l in Language::ALL {
        let n = Notice {
            whole_message: true,
            attachment_list: true,
            ..notice(l, Access::default(), true)
        };
        let receipt = mime::Receipt {
            language: l,
            from: "Cryptshare Gateway <postmaster@gw.example.org>",
            to: "a@example.org",
            subject: Some("Angebot <script>"),
            in_reply_to: Some("m1@example.org"),
            recipients: &rcpts,
            files: &files,
            tracking_id: "20261127-100000-ABCDEFGH",
            expires: n.expires,
            access: Access::default(),
            whole_message: true,
            hostname: "gw.example.org",
            date: chrono::Utc::now(),
        };
        let mut got = String::from("----- text\n");
        got.push_str(&n.render_text().unwrap());
        got.push_str("----- html\n");
        got.push_str(&n.render_html().unwrap());
        got.push_str("----- attachments.html\n");
        got.push_str(&n.attachments_html().unwrap().unwrap());
        got.push_str("----- receipt\n");
        got.push_str(&mime::receipt_text(&receipt));
        let html = got
            .split("----- html\n")
            .nth(1)
            .unwrap()
            .split("----- receipt")
            .next()
            .unwrap();
        assert!(
            !html.contains("<2026>") && html.contains("&lt;2026&gt; &amp; Preise"),
            "{html}"
        );
        assert!(!got.contains("secret"), "{got}");
        let file = std::path::Path::new(GOLDEN).join(format!("message-{}.txt", l.tag()));
        if update {
            std::fs::write(&file, &got).unwrap();
        } else if std::fs::read_to_string(&file).ok().as_deref() != Some(got.as_str()) {
            mismatches.push(format!("{}:\n{got}", file.display()));
        }
        let neutral = mime::neutral_message(raw, &a, &n).unwrap();
        assert!(!String::from_utf8_lossy(&neutral).contains("secret"));
        cases.push(PyCase {
            bytes: neutral,
            attachments: Some(vec!["attachments.html".into()]),
            baseline: None,
            plain: Some(n.render_text().unwrap()),
            html: None,
        });
        cases.push(PyCase {
            bytes: mime::build_receipt(&receipt),
            attachments: Some(vec![]),
            baseline: None,
            plain: Some(mime::receipt_text(&receipt)),
            html: None,
        });
    }
    assert!(mismatches.is_empty(), "{}", mismatches.join("\n"));
    python_check(&cases);
}
