//! `cryptshare-gateway explain`, run as the built binary.

use std::path::Path;
use std::process::{Command, Output};

use serde_json::{Value, json};

const CONFIG: &str = r#"
[server]
[relay]
next_hop = "127.0.0.1:10026"

[[policy]]
name = "boss"
senders = ["ceo@example.org"]
threshold = 1000000

[[policy]]
name = "example.org"
senders = ["*@example.org", "*@*.example.org"]
threshold = 10
language = "de"
links = "per-recipient"
"#;

const MESSAGE: &str = "From: a@example.org\r\nSubject: x\r\nMIME-Version: 1.0\r\n\
Content-Type: multipart/mixed; boundary=B\r\n\r\n--B\r\nContent-Type: text/plain\r\n\r\nhello\r\n\
--B\r\nContent-Type: application/pdf; name=\"=?utf-8?q?B=C3=A4r?=.pdf\"\r\n\
Content-Disposition: attachment; filename=\"=?utf-8?q?B=C3=A4r?=.pdf\"\r\n\
Content-Transfer-Encoding: base64\r\n\r\nJVBERi0xLjQKJcfsj6IK\r\n--B\r\n\
Content-Type: text/calendar; method=REQUEST\r\n\r\nBEGIN:VCALENDAR\r\n--B--\r\n";

fn run(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_cryptshare-gateway"))
        .arg("explain")
        .arg("--config")
        .arg(dir.join("gw.toml"))
        .args(args)
        .env_remove("CSGW__RELAY__NEXT_HOP")
        .output()
        .unwrap()
}

fn setup() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("gw.toml"), CONFIG).unwrap();
    std::fs::write(dir.path().join("m.eml"), MESSAGE).unwrap();
    std::fs::write(
        dir.path().join("junk.eml"),
        b"\xff\x00--\r\n\r\n\x80garbage",
    )
    .unwrap();
    dir
}

fn json_of(out: &Output) -> Value {
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn json_convert_decision() {
    let dir = setup();
    let m = dir.path().join("m.eml");
    let v = json_of(&run(
        dir.path(),
        &[
            "--from",
            "Alice@Mail.Example.ORG",
            "--to",
            "b@x.net",
            "--to",
            "c@y.net",
            "--json",
            m.to_str().unwrap(),
        ],
    ));
    assert_eq!(v["policy"], json!("example.org"));
    assert_eq!(v["action"], json!("convert"));
    let atts = v["attachments"].as_array().unwrap();
    assert_eq!(atts.len(), 1);
    assert_eq!(atts[0]["name"], json!("Bär.pdf"));
    assert_eq!(atts[0]["size"], json!(15));
    assert_eq!(atts[0]["content_type"], json!("application/pdf"));
    assert_eq!(atts[0]["convert"], json!(true));
    assert!(
        atts[0]["reason"]
            .as_str()
            .unwrap()
            .contains("above the threshold of 10 bytes")
    );
}

#[test]
fn json_pass_decisions() {
    let dir = setup();
    let m = dir.path().join("m.eml");
    let m = m.to_str().unwrap();
    // First match wins: the boss rule's threshold keeps the attachment.
    let v = json_of(&run(
        dir.path(),
        &["--from", "ceo@example.org", "--to", "b@x.net", "--json", m],
    ));
    assert_eq!(v["policy"], json!("boss"));
    assert_eq!(v["links"], json!("notification"));
    assert_eq!(v["action"], json!("pass"));
    assert_eq!(v["attachments"][0]["convert"], json!(false));
    // No rule.
    let v = json_of(&run(
        dir.path(),
        &["--from", "x@example.com", "--to", "b@x.net", "--json", m],
    ));
    assert_eq!(v["policy"], Value::Null);
    assert_eq!(v["links"], Value::Null);
    assert_eq!(v["action"], json!("pass"));
    // Malformed input is analysed, not refused.
    let junk = dir.path().join("junk.eml");
    let v = json_of(&run(
        dir.path(),
        &[
            "--from",
            "a@example.org",
            "--to",
            "b@x.net",
            "--json",
            junk.to_str().unwrap(),
        ],
    ));
    assert_eq!(v["action"], json!("pass"));
    assert_eq!(v["attachments"], json!([]));
    assert_eq!(v["links"], json!("per-recipient"));
}

#[test]
fn text_output_shows_the_tree() {
    let dir = setup();
    let m = dir.path().join("m.eml");
    let out = run(
        dir.path(),
        &[
            "--from",
            "a@example.org",
            "--to",
            "b@x.net",
            m.to_str().unwrap(),
        ],
    );
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("policy:     example.org\n"), "{text}");
    assert!(text.contains("action:     convert"), "{text}");
    assert!(
        text.contains(
            "\nlinks:      per-recipient (one relayed copy per recipient, each with its own download link)\n"
        ),
        "{text}"
    );
    assert!(
        text.contains("  root multipart/mixed [container]"),
        "{text}"
    );
    assert!(
        text.contains("    2 application/pdf [attachment] 15 B base64 \"Bär.pdf\" CONVERT"),
        "{text}"
    );
    assert!(text.contains("    3 text/calendar [kept]"), "{text}");
}

#[test]
fn unreadable_input_exits_2() {
    let dir = setup();
    let missing = dir.path().join("missing.eml");
    let out = run(
        dir.path(),
        &[
            "--from",
            "a@example.org",
            "--to",
            "b@x.net",
            missing.to_str().unwrap(),
        ],
    );
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("cannot read") && err.contains("missing.eml"),
        "{err}"
    );
    assert!(out.stdout.is_empty());
}

/// `explain … -` with `input` on standard input.
fn run_stdin(dir: &Path, args: &[&str], input: &[u8]) -> Output {
    use std::io::Write;
    let mut child = Command::new(env!("CARGO_BIN_EXE_cryptshare-gateway"))
        .arg("explain")
        .arg("--config")
        .arg(dir.join("gw.toml"))
        .args(args)
        .env_remove("CSGW__RELAY__NEXT_HOP")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(input).unwrap();
    child.wait_with_output().unwrap()
}

/// What `postcat -bh` prints: the message with LF line ends (Postfix stores lines, not CRLF).
fn as_postcat(crlf: &str) -> Vec<u8> {
    crlf.replace("\r\n", "\n").into_bytes()
}

#[test]
fn dash_reads_standard_input_like_a_file() {
    let dir = setup();
    let m = dir.path().join("m.eml");
    let args = ["--from", "a@example.org", "--to", "b@x.net", "--json"];
    let from_file = run(dir.path(), &[&args[..], &[m.to_str().unwrap()]].concat());
    let from_stdin = run_stdin(
        dir.path(),
        &[&args[..], &["-"]].concat(),
        MESSAGE.as_bytes(),
    );
    assert_eq!(json_of(&from_stdin), json_of(&from_file));
    let v = json_of(&from_stdin);
    assert_eq!(v["action"], json!("convert"));
    assert_eq!(
        v["envelope"],
        json!({"sender": "a@example.org", "sender_source": "option",
               "recipients": ["b@x.net"], "recipients_source": "option"})
    );
}

const HEADERS_ONLY_ENVELOPE: &str = "From: Alice <alice@example.org>\r\n\
To: b@x.net, Carol <c@y.net>\r\nCc: d@z.net\r\nBcc: B@x.net\r\nSubject: x\r\n\
MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=B\r\n\r\n--B\r\n\
Content-Type: text/plain\r\n\r\nhello\r\n--B\r\nContent-Type: application/pdf\r\n\
Content-Disposition: attachment; filename=a.pdf\r\nContent-Transfer-Encoding: base64\r\n\r\n\
JVBERi0xLjQKJcfsj6IK\r\n--B--\r\n";

#[test]
fn envelope_from_the_headers_of_postcat_output() {
    let dir = setup();
    let input = as_postcat(HEADERS_ONLY_ENVELOPE);
    let v = json_of(&run_stdin(dir.path(), &["--json", "-"], &input));
    assert_eq!(
        v["envelope"],
        json!({"sender": "alice@example.org", "sender_source": "From",
               "recipients": ["b@x.net", "c@y.net", "d@z.net"],
               "recipients_source": "To/Cc/Bcc"})
    );
    assert_eq!(v["policy"], json!("example.org"));
    assert_eq!(v["action"], json!("convert"));
    assert_eq!(v["attachments"][0]["name"], json!("a.pdf"));
    assert_eq!(v["attachments"][0]["size"], json!(15));

    let out = run_stdin(dir.path(), &["-"], &input);
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.starts_with(
            "sender:     alice@example.org (from the From: header; no --from given)\n\
             recipients: b@x.net, c@y.net, d@z.net (from the To/Cc/Bcc headers; no --to given)\n\
             policy:     example.org\n"
        ),
        "{text}"
    );
}

#[test]
fn return_path_then_sender_then_from() {
    let dir = setup();
    let with = |extra: &str| format!("{extra}{HEADERS_ONLY_ENVELOPE}");
    let envelope = |input: String, args: &[&str]| {
        let v = json_of(&run_stdin(
            dir.path(),
            &[args, &["--json", "-"]].concat(),
            input.as_bytes(),
        ));
        (v["envelope"].clone(), v["policy"].clone())
    };
    let (e, policy) = envelope(
        with("Return-Path: <bounce@lists.example.com>\r\nSender: s@other.example\r\n"),
        &[],
    );
    assert_eq!(e["sender"], json!("bounce@lists.example.com"));
    assert_eq!(e["sender_source"], json!("Return-Path"));
    // No rule for example.com.
    assert_eq!(policy, Value::Null);

    let (e, _) = envelope(with("Sender: s@mail.example.org\r\n"), &[]);
    assert_eq!(e["sender"], json!("s@mail.example.org"));
    assert_eq!(e["sender_source"], json!("Sender"));

    // The null sender of a bounce.
    let (e, policy) = envelope(with("Return-Path: <>\r\n"), &[]);
    assert_eq!(e["sender"], json!(""));
    assert_eq!(e["sender_source"], json!("Return-Path"));
    assert_eq!(policy, Value::Null);

    // Each half separately: --from given, the recipients still from the headers.
    let (e, _) = envelope(with(""), &["--from", "ceo@example.org"]);
    assert_eq!(
        e,
        json!({"sender": "ceo@example.org", "sender_source": "option",
               "recipients": ["b@x.net", "c@y.net", "d@z.net"],
               "recipients_source": "To/Cc/Bcc"})
    );
}

#[test]
fn no_envelope_anywhere_is_still_analysed() {
    let dir = setup();
    let out = run_stdin(dir.path(), &["-"], b"\xff\x00--\r\n\r\n\x80garbage");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.starts_with(
            "sender:     <> (no --from given and no Return-Path, Sender or From header)\n\
             recipients: (none: no --to given and no To, Cc or Bcc header)\n\
             policy:     (none)\n"
        ),
        "{text}"
    );
    let v = json_of(&run_stdin(dir.path(), &["--json", "-"], b""));
    assert_eq!(
        v["envelope"],
        json!({"sender": "", "sender_source": "none", "recipients": [],
               "recipients_source": "none"})
    );
}

/// An Outlook winmail.dat: `explain` lists the files it would be unpacked into, and the total
/// counts their sizes (244 + 893 bytes), not the winmail.dat's.
#[test]
fn winmail_dat_shows_the_files_inside() {
    use base64::Engine;
    let dir = setup();
    let tnef = include_bytes!("data/tnef/two-files.tnef");
    let b64 = base64::engine::general_purpose::STANDARD.encode(tnef);
    let msg = format!(
        "From: a@example.org\r\nSubject: x\r\nMIME-Version: 1.0\r\n\
Content-Type: multipart/mixed; boundary=B\r\n\r\n--B\r\nContent-Type: text/plain\r\n\r\nhello\r\n\
--B\r\nContent-Type: application/ms-tnef; name=\"winmail.dat\"\r\n\
Content-Transfer-Encoding: base64\r\n\r\n{b64}\r\n--B--\r\n"
    );
    let m = dir.path().join("tnef.eml");
    std::fs::write(&m, msg).unwrap();
    let args = ["--from", "a@example.org", "--to", "b@x.net"];
    let out = run(dir.path(), &[&args[..], &[m.to_str().unwrap()]].concat());
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("\"winmail.dat\" CONVERT"), "{text}");
    assert!(text.contains("  (in winmail.dat) \"AUTHORS\"\n"), "{text}");
    assert!(text.contains("  (in winmail.dat) \"README\"\n"), "{text}");
    let out = run(
        dir.path(),
        &[&args[..], &["--json", m.to_str().unwrap()]].concat(),
    );
    let v = json_of(&out);
    assert_eq!(v["total"], 244 + 893);
    assert_eq!(v["parts"][2]["tnef_files"], json!(["AUTHORS", "README"]));
}
