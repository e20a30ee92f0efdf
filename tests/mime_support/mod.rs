//! Shared checks for the MIME tests: byte identity outside the edited ranges, and Python's
//! `email` package (policy.default) as an independent parser.

#![allow(dead_code)] // each test binary uses a part of the shared checks
use std::process::Command;

use cryptshare_gateway::mime::{Analysis, Class, PartId};

/// Ranges of the original that the rewrite may change: cut parts and annotated text bodies
/// (header block included, since the charset or transfer encoding may be relabelled).
pub fn edited_ranges(a: &Analysis, removed: &[PartId]) -> Vec<(usize, usize)> {
    let mut r: Vec<(usize, usize)> = Vec::new();
    for &id in removed {
        let p = &a.parts[id];
        match &p.cut {
            Some(c) => r.push((c.start, c.end)),
            None => r.push((p.header_start, p.end)),
        }
    }
    // A container whose children are all removed goes too.
    for p in a.parts.iter().skip(1) {
        if !p.children.is_empty()
            && p.children.iter().all(|c| removed.contains(c))
            && let Some(c) = &p.cut
        {
            r.push((c.start, c.end));
        }
    }
    for t in ["text/plain", "text/html"] {
        if let Some(p) = a
            .parts
            .iter()
            .find(|p| p.class == Class::Body && p.content_type == t)
        {
            r.push((p.header_start, p.end));
        }
    }
    // Where a notice part may be inserted: after the first delimiter of the root.
    if let Some(&first) = a.parts[0].children.first() {
        let h = a.parts[first].header_start;
        r.push((h, h));
    }
    r.sort();
    r
}

/// Every byte of `original` outside `edited` appears in `output`, in order, with only the
/// edits in between; the first and last unedited segments are anchored at both ends.
pub fn assert_unedited_bytes_identical(original: &[u8], output: &[u8], edited: &[(usize, usize)]) {
    let mut segments = Vec::new();
    let mut cursor = 0;
    for &(s, e) in edited {
        if s > cursor {
            segments.push(&original[cursor..s]);
        }
        cursor = cursor.max(e);
    }
    let tail = &original[cursor.min(original.len())..];
    let head_len = edited.first().map_or(original.len(), |r| r.0);
    assert!(
        output.starts_with(&original[..head_len]),
        "the bytes before the first edit changed"
    );
    assert!(
        output.ends_with(tail),
        "the bytes after the last edit changed"
    );
    let mut pos = 0;
    for seg in segments {
        match memchr::memmem::find(&output[pos..], seg) {
            Some(i) => pos += i + seg.len(),
            None => panic!(
                "unedited segment missing from the output: {:?}",
                String::from_utf8_lossy(&seg[..seg.len().min(200)])
            ),
        }
    }
}

const CHECK_PY: &str = r#"
import email, email.policy, json, sys, os
failures = []
cases = json.load(open(sys.argv[1]))
def norm(s):
    return s.replace('\r\n', '\n')
for case in cases:
    path = case['file']
    with open(path, 'rb') as f:
        msg = email.message_from_bytes(f.read(), policy=email.policy.default)
    def defects_of(m):
        out = []
        for part in m.walk():
            out += [type(d).__name__ for d in part.defects]
        return sorted(set(out))
    defects = defects_of(msg)
    allowed = []
    if case.get('baseline'):
        with open(case['baseline'], 'rb') as f:
            allowed = defects_of(email.message_from_bytes(f.read(), policy=email.policy.default))
    new = [d for d in defects if d not in allowed]
    if new:
        failures.append(f'{path}: defects {new}')
        continue
    atts = sorted(p.get_filename() or '' for p in msg.walk() if p.get_content_disposition() == 'attachment')
    if case['attachments'] is not None and atts != sorted(case['attachments']):
        failures.append(f'{path}: attachments {atts} != {sorted(case["attachments"])}')
    for kind in ('plain', 'html'):
        want = case.get(kind)
        if want is None:
            continue
        body = msg.get_body(preferencelist=(kind,))
        if body is None:
            failures.append(f'{path}: no {kind} body')
            continue
        got = norm(body.get_content())
        if got != norm(want):
            failures.append(f'{path}: {kind} body differs:\n--- got\n{got!r}\n--- want\n{norm(want)!r}')
    for line in open(path, 'rb').read().split(b'\n'):
        if len(line.rstrip(b'\r')) > 998:
            failures.append(f'{path}: line longer than 998 octets')
            break
if failures:
    print('\n'.join(failures))
    sys.exit(1)
print(f'ok {len(cases)}')
"#;

/// What Python must find in one rewritten message.
pub struct PyCase {
    pub bytes: Vec<u8>,
    /// File names of the parts with `Content-Disposition: attachment` (`None`: not checked).
    pub attachments: Option<Vec<String>>,
    /// The original message: its own defects are tolerated in the output.
    pub baseline: Option<Vec<u8>>,
    /// Expected decoded text/plain body (preferred plain body), if checked.
    pub plain: Option<String>,
    pub html: Option<String>,
}

/// Parse every case with Python's `email` package (policy.default): no defects, the expected
/// attachments and bodies, no line over 998 octets. Fails if python3 is missing.
pub fn python_check(cases: &[PyCase]) {
    let dir = tempfile::tempdir().unwrap();
    let mut index = Vec::new();
    for (i, c) in cases.iter().enumerate() {
        let file = dir.path().join(format!("{i}.eml"));
        std::fs::write(&file, &c.bytes).unwrap();
        let baseline = c.baseline.as_ref().map(|b| {
            let f = dir.path().join(format!("{i}.orig.eml"));
            std::fs::write(&f, b).unwrap();
            f
        });
        index.push(serde_json::json!({
            "file": file,
            "attachments": c.attachments,
            "baseline": baseline,
            "plain": c.plain,
            "html": c.html,
        }));
    }
    let index_file = dir.path().join("cases.json");
    std::fs::write(&index_file, serde_json::to_vec(&index).unwrap()).unwrap();
    let script = dir.path().join("check.py");
    std::fs::write(&script, CHECK_PY).unwrap();
    let out = Command::new("python3")
        .arg(&script)
        .arg(&index_file)
        .output()
        .expect("python3 is required for the MIME tests (apt-get install -y python3)");
    assert!(
        out.status.success(),
        "python email check failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("ok {}", cases.len())
    );
}
