//! Issue 14, DKIM: `[dkim]` signs what the gateway relays, and an independent verifier (Python's
//! `dkimpy`, with the selector's DNS record answered from the test's public key) accepts the
//! signature — on a converted message and on the same message passed through unchanged. A
//! changed byte after signing must fail the same check, so the check is seen to be able to fail.

mod pipeline_support;
mod support;

use std::path::Path;
use std::process::Command;

use pipeline_support::*;

/// An RSA-2048 key written by `openssl genrsa` (`traditional`: PKCS#1, else PKCS#8), and the
/// base64 `p=` value of its DNS record (SubjectPublicKeyInfo DER).
fn rsa_key(dir: &Path, traditional: bool) -> (std::path::PathBuf, String) {
    let key = dir.join(if traditional {
        "pkcs1.pem"
    } else {
        "pkcs8.pem"
    });
    let mut genrsa = Command::new("openssl");
    genrsa.arg("genrsa");
    if traditional {
        genrsa.arg("-traditional");
    }
    let out = genrsa
        .args(["-out", key.to_str().unwrap(), "2048"])
        .output()
        .expect("openssl must be installed (Debian package openssl)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let pem = std::fs::read_to_string(&key).unwrap();
    let header = if traditional {
        "-----BEGIN RSA PRIVATE KEY-----"
    } else {
        "-----BEGIN PRIVATE KEY-----"
    };
    assert!(pem.starts_with(header), "{pem}");
    let out = Command::new("openssl")
        .args([
            "pkey",
            "-in",
            key.to_str().unwrap(),
            "-pubout",
            "-outform",
            "DER",
        ])
        .output()
        .unwrap();
    assert!(out.status.success());
    use base64::Engine;
    (
        key,
        base64::engine::general_purpose::STANDARD.encode(out.stdout),
    )
}

/// An Ed25519 key written by `openssl genpkey` (PKCS#8), and the base64 `p=` value of its DNS
/// record (RFC 8463: the raw 32-byte public key, the tail of its SubjectPublicKeyInfo DER).
fn ed25519_key(dir: &Path) -> (std::path::PathBuf, String) {
    let key = dir.join("ed25519.pem");
    let out = Command::new("openssl")
        .args([
            "genpkey",
            "-algorithm",
            "ed25519",
            "-out",
            key.to_str().unwrap(),
        ])
        .output()
        .expect("openssl must be installed (Debian package openssl)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = Command::new("openssl")
        .args([
            "pkey",
            "-in",
            key.to_str().unwrap(),
            "-pubout",
            "-outform",
            "DER",
        ])
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(out.stdout.len(), 44, "Ed25519 SubjectPublicKeyInfo");
    use base64::Engine;
    (
        key,
        base64::engine::general_purpose::STANDARD.encode(&out.stdout[12..]),
    )
}

/// dkimpy's verdict on `message`, the DNS answering `v=DKIM1; k=rsa; p=P` for
/// `SELECTOR._domainkey.DOMAIN` only.
fn dkimpy_verifies(message: &[u8], record_name: &str, p: &str) -> bool {
    dkimpy_verifies_k(message, record_name, "rsa", p)
}

/// As [`dkimpy_verifies`], with the record's key type `k` (`rsa` or `ed25519`; dkimpy checks
/// Ed25519 with PyNaCl).
fn dkimpy_verifies_k(message: &[u8], record_name: &str, k: &str, p: &str) -> bool {
    let script = r#"
import sys, dkim
name, k, p = sys.argv[1], sys.argv[2], sys.argv[3]
def dns(q, timeout=5):
    q = q.decode() if isinstance(q, bytes) else q
    return ("v=DKIM1; k=" + k + "; p=" + p).encode() if q.rstrip(".") == name else None
msg = sys.stdin.buffer.read()
print("pass" if dkim.verify(msg, dnsfunc=dns) else "fail")
"#;
    let out = support::process::python(
        script,
        &[record_name, k, p],
        message,
        "pip install dkimpy pynacl",
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    match String::from_utf8_lossy(&out.stdout).trim() {
        "pass" => true,
        "fail" => false,
        other => panic!("dkimpy said {other:?}"),
    }
}

fn dkim_config(sign: &str, key: &Path) -> String {
    format!(
        "[dkim]\nsign = \"{sign}\"\n[[dkim.key]]\ndomain = \"example.org\"\nselector = \"gw2026\"\n\
         key_file = \"{}\"\n",
        key.display()
    )
}

fn message() -> Vec<u8> {
    let big = payload(200 * 1024, 7);
    let head = "Content-Type: application/octet-stream; name=\"figures.bin\"\r\n\
                Content-Disposition: attachment; filename=\"figures.bin\"";
    mixed(
        HEADERS,
        "Hello Bob,\r\nthe figures are attached.\r\nAlice",
        &[(head, &big)],
    )
}

fn tamper(signed: &[u8]) -> Vec<u8> {
    let mut t = signed.to_vec();
    let at = t
        .windows(5)
        .position(|w| w == b"Hello")
        .expect("the body text");
    t[at] = b'J';
    t
}

#[tokio::test]
async fn converted_and_passed_through_messages_verify_with_an_independent_verifier() {
    let keys = tempfile::tempdir().unwrap();
    let (key, p) = rsa_key(keys.path(), false);
    let h = Harness::start(&format!(
        "{}{}",
        policy("tempfail"),
        dkim_config("all", &key)
    ))
    .await;
    let msg = message();
    // Converted: the policy matches the envelope sender at example.org.
    let reply = h
        .send("alice@example.org", &["bob@example.net"], &msg)
        .await;
    assert!(reply.starts_with("250 "), "{reply}");
    // The same bytes from a sender without a rule: relayed unchanged, signed (`sign = "all"`).
    let reply = h.send("relay@other.test", &["bob@example.net"], &msg).await;
    assert!(reply.starts_with("250 "), "{reply}");
    let got = h.sink.messages();
    assert_eq!(got.len(), 2);
    let (converted, passed) = (&got[0].data, &got[1].data);
    for m in [converted, passed] {
        assert!(
            m.starts_with(
                b"DKIM-Signature: v=1; a=rsa-sha256; s=gw2026; d=example.org; c=relaxed/relaxed;"
            ),
            "{}",
            String::from_utf8_lossy(&m[..200.min(m.len())])
        );
        assert!(dkimpy_verifies(m, "gw2026._domainkey.example.org", &p));
        assert!(!dkimpy_verifies(
            &tamper(m),
            "gw2026._domainkey.example.org",
            &p
        ));
    }
    // The converted one really was rewritten, and the passed one is the original after the
    // signature and our Received: line.
    assert!(converted.len() < msg.len());
    assert!(passed.ends_with(&msg));
    h.stop().await;
}

#[tokio::test]
async fn sign_converted_leaves_pass_through_alone_and_reads_pkcs1_keys() {
    let keys = tempfile::tempdir().unwrap();
    let (key, p) = rsa_key(keys.path(), true);
    let h = Harness::start(&format!(
        "{}{}",
        policy("tempfail"),
        dkim_config("converted", &key)
    ))
    .await;
    let msg = message();
    assert!(
        h.send("alice@example.org", &["bob@example.net"], &msg)
            .await
            .starts_with("250 ")
    );
    assert!(
        h.send("relay@other.test", &["bob@example.net"], &msg)
            .await
            .starts_with("250 ")
    );
    // From: at a domain without a key: converted, but not signed (it could not align).
    let other_from = String::from_utf8(msg.clone()).unwrap().replacen(
        "From: Alice Example <alice@example.org>",
        "From: Alice <alice@example.com>",
        1,
    );
    assert_ne!(other_from.as_bytes(), &msg[..]);
    assert!(
        h.send(
            "alice@example.org",
            &["bob@example.net"],
            other_from.as_bytes()
        )
        .await
        .starts_with("250 ")
    );
    let got = h.sink.messages();
    assert_eq!(got.len(), 3);
    assert!(got[0].data.starts_with(b"DKIM-Signature: "));
    assert!(dkimpy_verifies(
        &got[0].data,
        "gw2026._domainkey.example.org",
        &p
    ));
    assert!(
        got[1].data.starts_with(b"Received: "),
        "pass-through stays unsigned"
    );
    assert!(got[1].data.ends_with(&msg));
    assert!(
        got[2].data.starts_with(b"Received: "),
        "no key aligns with example.com"
    );
    h.stop().await;
}

/// An Ed25519 key (RFC 8463): the converted and the passed-through copy carry
/// `a=ed25519-sha256` and verify with dkimpy against the raw public key in DNS; a changed byte
/// fails.
#[tokio::test]
async fn ed25519_signatures_verify_with_an_independent_verifier() {
    let keys = tempfile::tempdir().unwrap();
    let (key, p) = ed25519_key(keys.path());
    let h = Harness::start(&format!(
        "{}{}",
        policy("tempfail"),
        dkim_config("all", &key)
    ))
    .await;
    let msg = message();
    for sender in ["alice@example.org", "relay@other.test"] {
        let reply = h.send(sender, &["bob@example.net"], &msg).await;
        assert!(reply.starts_with("250 "), "{reply}");
    }
    let got = h.sink.messages();
    assert_eq!(got.len(), 2);
    assert!(
        got[0].data.len() < msg.len(),
        "the first copy was converted"
    );
    assert!(got[1].data.ends_with(&msg), "the second passed unchanged");
    for m in got.iter().map(|m| &m.data) {
        assert!(
            m.starts_with(
                b"DKIM-Signature: v=1; a=ed25519-sha256; s=gw2026; d=example.org; c=relaxed/relaxed;"
            ),
            "{}",
            String::from_utf8_lossy(&m[..200.min(m.len())])
        );
        let name = "gw2026._domainkey.example.org";
        assert!(dkimpy_verifies_k(m, name, "ed25519", &p));
        assert!(!dkimpy_verifies_k(&tamper(m), name, "ed25519", &p));
        // The same signature against an RSA record of that name: not accepted.
        assert!(!dkimpy_verifies_k(m, name, "rsa", &p));
    }
    h.stop().await;
}
