//! Property test: random well-formed messages (mail-builder) with random attachments. The
//! rewrite removes exactly the chosen parts, leaves every other byte identical, and the output
//! parses with mail-parser and with Python's `email` (policy.default, no defects) with the same
//! text bodies plus the notice.

mod mime_support;

use std::cell::RefCell;

use cryptshare_gateway::mime::{self, Class, Notice, NoticeFile};
use mail_builder::MessageBuilder;
use mail_parser::{MessageParser, MimeHeaders};
use mime_support::{PyCase, assert_unedited_bytes_identical, edited_ranges, python_check};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};

#[derive(Debug, Clone)]
struct Input {
    text: Option<String>,
    html: Option<String>,
    attachments: Vec<(String, String, Vec<u8>)>,
    inline: Vec<Vec<u8>>,
    remove_mask: Vec<bool>,
    german: bool,
}

fn input() -> impl Strategy<Value = Input> {
    let text = "[ -~äöüß€\n]{0,400}";
    let ctype = prop::sample::select(vec![
        "application/pdf",
        "application/octet-stream",
        "image/png",
        "text/plain",
        "application/zip",
    ]);
    let attachment = (
        ctype.prop_map(str::to_owned),
        "[a-zA-Z0-9äöü_-][a-zA-Z0-9äöü ._-]{0,23}\\.[a-z]{3}",
        prop::collection::vec(any::<u8>(), 0..3000),
    );
    (
        prop::option::of(text),
        prop::option::of("[ -~äöü\n]{0,300}"),
        prop::collection::vec(attachment, 0..4),
        prop::collection::vec(prop::collection::vec(any::<u8>(), 1..500), 0..2),
        prop::collection::vec(any::<bool>(), 4),
        any::<bool>(),
    )
        .prop_map(
            |(text, html, attachments, inline, remove_mask, german)| Input {
                text,
                html,
                attachments,
                inline,
                remove_mask,
                german,
            },
        )
}

fn html_doc(inner: &str, inline: usize) -> String {
    let imgs: String = (0..inline)
        .map(|i| format!("<img src=\"cid:img{i}@example.org\">"))
        .collect();
    format!(
        "<html><body>{}{imgs}</body></html>",
        inner.replace('<', "&lt;")
    )
}

fn build(input: &Input) -> Vec<u8> {
    let mut b = MessageBuilder::new()
        .from(("Alice", "alice@example.org"))
        .to("bob@example.net")
        .subject("Report");
    if let Some(t) = &input.text {
        b = b.text_body(t.clone());
    }
    let inline = if input.html.is_some() {
        input.inline.len()
    } else {
        0
    };
    if let Some(h) = &input.html {
        b = b.html_body(html_doc(h, inline));
        for (i, img) in input.inline.iter().enumerate() {
            b = b.inline("image/png", format!("img{i}@example.org"), img.clone());
        }
    }
    for (ct, name, data) in &input.attachments {
        b = b.attachment(ct.as_str(), name.clone(), data.clone());
    }
    b.write_to_vec().unwrap()
}

fn plain_body(raw: &[u8]) -> Option<String> {
    let m = MessageParser::default().parse(raw)?;
    m.text_body
        .iter()
        .filter_map(|&id| m.part(id))
        .find(|p| p.is_content_type("text", "plain"))
        .and_then(|p| p.text_contents().map(str::to_owned))
}

fn html_body(raw: &[u8]) -> Option<String> {
    let m = MessageParser::default().parse(raw)?;
    m.html_body
        .iter()
        .filter_map(|&id| m.part(id))
        .find(|p| p.is_content_type("text", "html"))
        .and_then(|p| p.text_contents().map(str::to_owned))
}

#[test]
fn rewrite_random_messages() {
    let cases: RefCell<Vec<PyCase>> = RefCell::new(Vec::new());
    let mut runner = TestRunner::new(Config {
        cases: std::env::var("MIME_PROPTEST_CASES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(96),
        failure_persistence: None,
        ..Config::default()
    });
    let result = runner.run(&input(), |input| {
        let raw = build(&input);
        let a = mime::analyse(&raw);
        let candidates: Vec<_> = a.candidates().map(|p| p.id).collect();
        prop_assert_eq!(candidates.len(), input.attachments.len());
        let inline = a.parts.iter().filter(|p| p.class == Class::Inline).count();
        prop_assert_eq!(
            inline,
            if input.html.is_some() {
                input.inline.len()
            } else {
                0
            }
        );
        let remove: Vec<_> = candidates
            .iter()
            .zip(&input.remove_mask)
            .filter(|(_, r)| **r)
            .map(|(id, _)| *id)
            .collect();
        let notice = Notice {
            language: if input.german { "de" } else { "en" }.into(),
            files: remove
                .iter()
                .map(|&id| NoticeFile {
                    name: a.parts[id].upload_name.clone().unwrap(),
                    size: a.parts[id].size,
                })
                .collect(),
            expires: chrono::NaiveDate::from_ymd_opt(2026, 12, 24),
            sender: "alice@example.org".into(),
            tracking_id: Some("T-1".into()),
            ..Notice::default()
        };
        let out = mime::rewrite(&raw, &a, &remove, &notice).unwrap();
        if remove.is_empty() {
            prop_assert_eq!(&out, &raw);
            return Ok(());
        }
        assert_unedited_bytes_identical(&raw, &out, &edited_ranges(&a, &remove));

        // Exactly the chosen parts are gone.
        let b = mime::analyse(&out);
        let kept: Vec<String> = a
            .candidates()
            .filter(|p| !remove.contains(&p.id))
            .map(|p| p.file_name.clone().unwrap())
            .collect();
        let mut left: Vec<String> = b
            .candidates()
            .map(|p| p.file_name.clone().unwrap())
            .collect();
        let mut want = kept.clone();
        left.sort();
        want.sort();
        prop_assert_eq!(&left, &want);
        for id in &remove {
            let p = &a.parts[*id];
            // The encoded body is gone (unless it is trivially short and occurs elsewhere).
            if p.end - p.body_start > 64 {
                prop_assert!(memchr::memmem::find(&out, &raw[p.body_start..p.end]).is_none());
            }
        }

        // Same bodies plus the notice, as mail-parser sees them.
        let nl_text = notice.render_text().unwrap().replace('\n', "\r\n");
        let nl_html = notice.render_html().unwrap().replace('\n', "\r\n");
        let orig_plain = plain_body(&raw);
        let orig_html = html_body(&raw);
        let want_plain = match (&orig_plain, &orig_html) {
            (Some(p), _) => Some(format!("{nl_text}{p}")),
            (None, None) => Some(nl_text.clone()),
            (None, Some(_)) => None,
        };
        let want_html = orig_html
            .as_ref()
            .map(|h| h.replacen("<body>", &format!("<body>{nl_html}"), 1));
        if want_plain.is_some() {
            prop_assert_eq!(plain_body(&out), want_plain.clone());
        }
        if want_html.is_some() {
            prop_assert_eq!(html_body(&out), want_html.clone());
        }
        cases.borrow_mut().push(PyCase {
            bytes: out,
            attachments: Some(kept),
            baseline: None,
            plain: want_plain,
            html: want_html,
        });
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
    let cases = cases.into_inner();
    assert!(cases.len() > 20, "too few rewritten cases: {}", cases.len());
    python_check(&cases);
}
