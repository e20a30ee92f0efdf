//! Analysis + rewrite of arbitrary bytes: never panics, every candidate can be removed, every
//! part can be decoded, and the rewritten message analyses again. The subject-tag removal runs
//! over the same bytes (literal and encoded-word paths) and never panics.
#![no_main]

use cryptshare_gateway::mime::{self, Notice, NoticeFile};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let a = mime::analyse(data);
    for p in &a.parts {
        assert!(p.header_start <= p.body_start && p.body_start <= p.end && p.end <= data.len());
        let _ = mime::part_sha256(data, p);
    }
    let remove: Vec<_> = a.candidates().map(|p| p.id).collect();
    let notice = Notice {
        language: if data.len() % 2 == 0 { "de" } else { "en" }.into(),
        files: a
            .candidates()
            .map(|p| NoticeFile {
                name: p.upload_name.clone().unwrap_or_default(),
                size: p.size,
            })
            .collect(),
        sender: "fuzz@example.org".into(),
        ..Notice::default()
    };
    let out = mime::rewrite(data, &a, &remove, &notice).expect("candidates are removable");
    let b = mime::analyse(&out);
    if !remove.is_empty() {
        // Removing a part never creates new attachments.
        assert!(b.candidates().count() <= a.candidates().count());
    }
    for tag in ["[secure]", "x", "=?", "\u{fc}"] {
        if let Some(t) = mime::remove_subject_tag(data, tag) {
            let _ = mime::analyse(&t);
        }
    }
});
