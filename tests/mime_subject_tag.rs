//! Subject tag removal when the tag sits inside RFC 2047 encoded words: the rewritten `Subject:`
//! field is read back by an independent parser (Python's `email` package, default policy) and
//! must decode to exactly the expected text without defects, with every byte outside the field
//! unchanged and the line limits kept.
//!
//! Tools (a missing one fails the test): python3.

use std::process::Command;

use cryptshare_gateway::mime::remove_subject_tag;

struct Case {
    name: &'static str,
    /// Message bytes with `\n` line endings; `crlf` turns them into CRLF.
    msg: String,
    crlf: bool,
    tag: &'static str,
    /// The subject the recipient must see.
    expected: String,
    /// Every line of the new field at most 78 characters (false where one word is longer).
    short_lines: bool,
}

fn case(name: &'static str, subject_field: &str, tag: &'static str, expected: &str) -> Case {
    Case {
        name,
        msg: format!(
            "From: Alice <alice@example.org>\nTo: bob@example.com\n{subject_field}\nMessage-ID: <1@example.org>\nMIME-Version: 1.0\nContent-Type: text/plain; charset=utf-8\n\nSubject: [secure] stays in the body\n"
        ),
        crlf: true,
        tag,
        expected: expected.into(),
        short_lines: true,
    }
}

/// Q-encode `s` as `=?utf-8?Q?…?=` words of at most 60 characters, folded onto lines of their own,
/// the way mail clients split long subjects (a word may end inside the tag).
fn q_words(s: &str) -> String {
    let mut words = Vec::new();
    let mut word = String::new();
    for c in s.chars() {
        let mut enc = String::new();
        if c == ' ' {
            enc.push('_');
        } else if c.is_ascii_alphanumeric() || "[]-.:".contains(c) {
            enc.push(c);
        } else {
            let mut buf = [0; 4];
            for b in c.encode_utf8(&mut buf).bytes() {
                enc.push_str(&format!("={b:02X}"));
            }
        }
        if word.len() + enc.len() > 60 - "=?utf-8?Q??=".len() {
            words.push(format!("=?utf-8?Q?{word}?="));
            word.clear();
        }
        word.push_str(&enc);
    }
    words.push(format!("=?utf-8?Q?{word}?="));
    words.join("\n ")
}

fn cases() -> Vec<Case> {
    let long_umlauts = "Überprüfung der Quartalszahlen für das Geschäftsjahr 2026 ".repeat(6);
    let long_ascii = "Quarterly figures for the business year 2026 and beyond ".repeat(6);
    let long_word = "x".repeat(120);
    let huge_word = "y".repeat(1200);
    let mut cases = vec![
        case(
            "q-encoded, tag inside",
            "Subject: =?utf-8?Q?Bericht_f=C3=BCr_Q3_[secure]?=",
            "[secure]",
            "Bericht für Q3",
        ),
        case(
            "b-encoded, tag first",
            "Subject: =?UTF-8?B?W1NFQ1VSRV0gw5xiZXJ3ZWlzdW5n?=",
            "[secure]",
            "Überweisung",
        ),
        case(
            "tag split over two encoded words",
            "Subject: =?utf-8?q?Q3_[sec?=\n =?utf-8?q?ure]_Bericht_f=C3=BCr_Bob?=",
            "[SECURE]",
            "Q3 Bericht für Bob",
        ),
        case(
            "tag split, ascii result written as is",
            "Subject: =?utf-8?q?Q3_[Sec?=\n =?utf-8?q?ure]_report?=",
            "[secure]",
            "Q3 report",
        ),
        case(
            "mixed literal and encoded words",
            "Subject: Re: =?utf-8?q?f=C3=BCr_[Secure]?= Q3",
            "[secure]",
            "Re: für Q3",
        ),
        case(
            "iso-8859-1",
            "Subject: =?ISO-8859-1?Q?Gr=FC=DFe_aus_K=F6ln_[SeCuRe]?=",
            "[secure]",
            "Grüße aus Köln",
        ),
        case(
            "lowercase header name",
            "subject: =?utf-8?b?W3NlY3VyZV0gR3LDvMOfZQ==?=",
            "[Secure]",
            "Grüße",
        ),
        case(
            "control characters stay encoded",
            "Subject: =?utf-8?q?a=0D=0Ab=00c=09d_[secure]?=",
            "[secure]",
            "a\r\nb\0c\td",
        ),
        case(
            "ascii look-alike of an encoded word is encoded",
            "Subject: =?utf-8?q?=3D=3Fx=3F_[secure]?=",
            "[secure]",
            "=?x?",
        ),
        case(
            "only the tag",
            "Subject: =?utf-8?q?[secure]?=",
            "[secure]",
            "",
        ),
        case(
            "long subject with umlauts",
            &format!("Subject: {}", q_words(&format!("{long_umlauts}[secure]"))),
            "[secure]",
            long_umlauts.trim(),
        ),
        case(
            "long ascii subject, folded at spaces",
            &format!("Subject: {}", q_words(&format!("[secure] {long_ascii}"))),
            "[secure]",
            long_ascii.trim(),
        ),
        case(
            "a word over 998 characters is encoded",
            &format!("Subject: {}", q_words(&format!("{huge_word} [secure]"))),
            "[secure]",
            &huge_word,
        ),
    ];
    let mut long = case(
        "a word over 78 characters stays whole",
        &format!(
            "Subject: {}",
            q_words(&format!("see {long_word} [secure] now"))
        ),
        "[secure]",
        &format!("see {long_word} now"),
    );
    long.short_lines = false;
    cases.push(long);
    let mut lf = case(
        "lf line endings",
        "Subject: =?utf-8?Q?Bericht_f=C3=BCr_Q3?=\n =?utf-8?Q?_[secure]?=",
        "[secure]",
        "Bericht für Q3",
    );
    lf.crlf = false;
    cases.push(lf);
    for (name, subject) in [
        ("lf, long ascii", &long_ascii),
        ("lf, long with umlauts", &long_umlauts),
    ] {
        let mut lf = case(
            name,
            &format!("Subject: {}", q_words(&format!("{subject}[secure]"))),
            "[secure]",
            subject.trim(),
        );
        lf.crlf = false;
        cases.push(lf);
    }
    cases
}

fn bytes(c: &Case) -> Vec<u8> {
    if c.crlf {
        c.msg.replace('\n', "\r\n").into_bytes()
    } else {
        c.msg.clone().into_bytes()
    }
}

/// `start..end` of the `Subject:` field in `m` (name to the end of its last line, without the line
/// break).
fn field(m: &[u8]) -> (usize, usize) {
    let start = m
        .windows(9)
        .position(|w| w.eq_ignore_ascii_case(b"\nsubject:"))
        .expect("a Subject field")
        + 1;
    let mut end = start;
    loop {
        let nl = end + m[end..].iter().position(|&b| b == b'\n').unwrap();
        end = nl;
        if !matches!(m.get(nl + 1), Some(b' ' | b'\t')) {
            break;
        }
        end = nl + 1;
    }
    if m[end - 1] == b'\r' {
        end -= 1;
    }
    (start, end)
}

fn check_field(c: &Case, input: &[u8], output: &[u8]) {
    let (start, end) = field(input);
    let suffix = &input[end..];
    assert_eq!(
        &output[..start],
        &input[..start],
        "{}: prefix changed",
        c.name
    );
    assert!(output.ends_with(suffix), "{}: suffix changed", c.name);
    let new = &output[start..output.len() - suffix.len()];
    let text = std::str::from_utf8(new).expect("the new field is ASCII");
    let lines: Vec<&str> = if c.crlf {
        text.split("\r\n").collect()
    } else {
        text.split('\n').collect()
    };
    assert_eq!(
        &new[..8],
        &input[start..start + 8],
        "{}: the header name keeps its spelling",
        c.name
    );
    for (i, line) in lines.iter().enumerate() {
        assert!(
            line.bytes().all(|b| (b' '..=b'~').contains(&b)),
            "{}: control or 8-bit character in {line:?}",
            c.name
        );
        assert!(line.len() <= 998, "{}: line over 998", c.name);
        if c.short_lines {
            assert!(line.len() <= 78, "{}: line over 78: {line:?}", c.name);
        }
        if i > 0 {
            assert!(
                line.starts_with(' '),
                "{}: fold without white space",
                c.name
            );
            assert!(line.trim() != "", "{}: blank continuation line", c.name);
        }
        for word in line.split(' ').filter(|w| w.starts_with("=?")) {
            assert!(word.len() <= 75, "{}: encoded word over 75: {word}", c.name);
            assert!(word.starts_with("=?UTF-8?B?") && word.ends_with("?="));
        }
    }
    // The line ending is the message's own: no CR in an LF message, none without LF in CRLF.
    let crs = new.iter().filter(|&&b| b == b'\r').count();
    let lfs = new.iter().filter(|&&b| b == b'\n').count();
    assert_eq!(
        crs,
        if c.crlf { lfs } else { 0 },
        "{}: line endings",
        c.name
    );
    assert_eq!(lines.len(), lfs + 1);
}

/// Python's reading of each message: the subject and the defects found (message and header).
const PY_READ: &str = r#"
import email, email.policy, json, sys
out = []
for path in sys.argv[1:]:
    msg = email.message_from_bytes(open(path, 'rb').read(), policy=email.policy.default)
    s = msg['subject']
    defects = [repr(d) for d in msg.defects] + [repr(d) for d in getattr(s, 'defects', ())]
    out.append({'subject': str(s), 'defects': defects})
print(json.dumps(out))
"#;

#[test]
fn encoded_subjects_lose_the_tag_and_read_back_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let cases = cases();
    let mut paths = Vec::new();
    for (i, c) in cases.iter().enumerate() {
        let input = bytes(c);
        let output = remove_subject_tag(&input, c.tag)
            .unwrap_or_else(|| panic!("{}: the tag was not removed", c.name));
        check_field(c, &input, &output);
        let path = dir.path().join(format!("{i}.eml"));
        std::fs::write(&path, &output).unwrap();
        paths.push(path);
    }
    let out = Command::new("python3")
        .arg("-c")
        .arg(PY_READ)
        .args(&paths)
        .output()
        .expect("python3 is required (apt-get install -y python3)");
    assert!(
        out.status.success(),
        "python failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let read: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(read.len(), cases.len());
    for (c, r) in cases.iter().zip(&read) {
        assert_eq!(r["subject"], c.expected.as_str(), "{}", c.name);
        assert_eq!(r["defects"], serde_json::json!([]), "{}", c.name);
    }
}

#[test]
fn literal_tags_keep_the_byte_minimal_cut() {
    // Literal tag next to encoded words: only the tag and its space go, the words stay as sent.
    let m = b"Subject: [secure] =?utf-8?q?f=C3=BCr?= Q3\r\n\r\nx";
    assert_eq!(
        remove_subject_tag(m, "[SECURE]").unwrap(),
        b"Subject: =?utf-8?q?f=C3=BCr?= Q3\r\n\r\nx"
    );
    // A literal tag wins over an earlier encoded one: the cut is smaller.
    let m = b"Subject: =?utf-8?q?[secure]?= [secure]\r\n\r\nx";
    assert_eq!(
        remove_subject_tag(m, "[secure]").unwrap(),
        b"Subject: =?utf-8?q?[secure]?=\r\n\r\nx"
    );
}

#[test]
fn no_tag_in_the_decoded_subject_changes_nothing() {
    for (m, tag) in [
        (
            &b"Subject: =?utf-8?q?Bericht_f=C3=BCr_Q3?=\r\n\r\n[secure]"[..],
            "[secure]",
        ),
        // The tag text inside the encoded word's syntax (its charset) is not subject text.
        (b"Subject: =?utf-8?q?Hallo?=\r\n\r\n", "utf"),
        (b"Subject: =?utf-8?q?[sec?= ure]\r\n\r\n", "[secure]"),
        (
            b"From: a@b.c\r\n\r\nSubject: =?utf-8?q?[secure]?=",
            "[secure]",
        ),
    ] {
        assert_eq!(remove_subject_tag(m, tag), None, "{m:?}");
    }
}

const PIECES: &[&str] = &[
    "[secure]",
    "[SeC",
    "ure]",
    " ",
    "\t",
    "x",
    "für",
    "_",
    "=?utf-8?q?",
    "=?UTF-8?B?",
    "=?",
    "?=",
    "=C3=BC",
    "=5B",
    "W3NlY3VyZV0=",
    "=?utf-8?b?W3NlY3VyZV0gw7w=?=",
    "=?iso-8859-1?q?=FC_[secure]?=",
    "\r\n ",
    "\n ",
    "\r\n",
    "\r",
    "\0",
];

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(512))]

    /// Whatever the subject holds: no panic, nothing outside the field changes, and a rewritten
    /// field (anything but a plain cut) is clean: no control or 8-bit character, no blank or
    /// unindented continuation line, no line over 998, encoded words within 75.
    #[test]
    fn any_subject_keeps_the_rest_and_a_rewrite_is_clean(
        pieces in proptest::collection::vec(proptest::sample::select(PIECES), 0..24),
        crlf in proptest::bool::ANY,
    ) {
        let nl = if crlf { "\r\n" } else { "\n" };
        let input = format!("From: a@b.c{nl}Subject: {}{nl}To: x@y.z{nl}{nl}body", pieces.concat());
        let input = input.as_bytes();
        let Some(out) = remove_subject_tag(input, "[secure]") else {
            return Ok(());
        };
        let (start, end) = field(input);
        let suffix = &input[end..];
        proptest::prop_assert_eq!(&out[..start], &input[..start]);
        proptest::prop_assert!(out.ends_with(suffix));
        let head = out.iter().zip(input).take_while(|(x, y)| x == y).count();
        let tail = out.iter().rev().zip(input.iter().rev()).take_while(|(x, y)| x == y).count();
        let cut = out.len() < input.len() && head + tail >= out.len();
        if !cut {
            let new = &out[start..out.len() - suffix.len()];
            let text = std::str::from_utf8(new).unwrap();
            // The field's own line ending, which a mixed message may not share.
            let nl = if input[end] == b'\r' { "\r\n" } else { "\n" };
            for (i, line) in text.split(nl).enumerate() {
                proptest::prop_assert!(line.bytes().all(|b| (b' '..=b'~').contains(&b)), "{:?}", line);
                proptest::prop_assert!(line.len() <= 998);
                if i > 0 {
                    proptest::prop_assert!(line.starts_with(' ') && !line.trim().is_empty());
                }
                for w in line.split(' ').filter(|w| w.starts_with("=?")) {
                    proptest::prop_assert!(w.len() <= 75 && w.starts_with("=?UTF-8?B?"), "{}", w);
                }
            }
        }
    }
}

/// Random subjects (spaces, tabs, control characters, 2- to 4-byte UTF-8) with the tag at a random
/// place, encoded as a client would (Q or B words split at random characters, folded); Python
/// must read back exactly the subject without the tag and one adjoining space.
#[test]
fn random_encoded_subjects_read_back_exactly_in_python() {
    use base64::Engine as _;
    use rand::{Rng, SeedableRng};
    const CHARS: &[char] = &[
        'a', 'Z', '0', ' ', ' ', ' ', '\t', '\r', '\n', '\0', 'ü', 'ß', '€', '😀', '=', '?', '_',
        ']', ':', '"',
    ];
    let mut rng = rand::rngs::StdRng::seed_from_u64(2047);
    let text = |rng: &mut rand::rngs::StdRng| -> String {
        let n = rng.random_range(0..40);
        (0..n)
            .map(|_| CHARS[rng.random_range(0..CHARS.len())])
            .collect()
    };
    let dir = tempfile::tempdir().unwrap();
    let mut expected = Vec::new();
    let mut paths = Vec::new();
    for i in 0..200 {
        let (left, right) = (text(&mut rng), text(&mut rng));
        let full = format!("{left}[SeCuRe]{right}");
        let want = if let Some(r) = right.strip_prefix(' ') {
            format!("{left}{r}")
        } else if let Some(l) = left.strip_suffix(' ') {
            format!("{l}{right}")
        } else {
            format!("{left}{right}")
        };
        let want = want.trim_matches([' ', '\t']).to_string();
        // Encode in chunks of 1..12 characters, each word Q or B.
        let chars: Vec<char> = full.chars().collect();
        let mut words = Vec::new();
        let mut at = 0;
        while at < chars.len() {
            let n = rng.random_range(1..12).min(chars.len() - at);
            let chunk: String = chars[at..at + n].iter().collect();
            at += n;
            words.push(if rng.random_bool(0.5) {
                let b64 = base64::engine::general_purpose::STANDARD.encode(&chunk);
                format!("=?utf-8?B?{b64}?=")
            } else {
                let q: String = chunk
                    .bytes()
                    .map(|b| match b {
                        b' ' => "_".to_string(),
                        b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'[' | b']' => {
                            (b as char).to_string()
                        }
                        _ => format!("={b:02X}"),
                    })
                    .collect();
                format!("=?UTF-8?q?{q}?=")
            });
        }
        let nl = if i % 2 == 0 { "\r\n" } else { "\n" };
        let input = format!(
            "From: a@b.c{nl}Subject: {}{nl}To: x@y.z{nl}{nl}body{nl}",
            words.join(&format!("{nl} "))
        );
        let input = input.as_bytes();
        let out = remove_subject_tag(input, "[secure]")
            .unwrap_or_else(|| panic!("tag not removed from {full:?}"));
        let (start, end) = field(input);
        assert_eq!(&out[..start], &input[..start]);
        assert!(out.ends_with(&input[end..]));
        for line in out[start..out.len() - (input.len() - end)].split(|&b| b == b'\n') {
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            assert!(line.len() <= 78, "{:?}", String::from_utf8_lossy(line));
            assert!(line.iter().all(|b| (b' '..=b'~').contains(b)));
        }
        let path = dir.path().join(format!("{i}.eml"));
        std::fs::write(&path, &out).unwrap();
        paths.push(path);
        expected.push(want);
    }
    let out = Command::new("python3")
        .arg("-c")
        .arg(PY_READ)
        .args(&paths)
        .output()
        .expect("python3 is required (apt-get install -y python3)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let read: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(read.len(), expected.len());
    for (want, r) in expected.iter().zip(&read) {
        assert_eq!(r["subject"], want.as_str());
        assert_eq!(r["defects"], serde_json::json!([]), "{want:?}");
    }
}
