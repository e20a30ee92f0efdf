//! Issue 14, TNEF: an Outlook `winmail.dat` (application/ms-tnef) above the threshold reaches
//! Cryptshare as the files inside it, under their own names, byte-identical (downloaded through
//! the emulator's recipient page), and the relayed notice lists them; the relayed message is
//! valid MIME (Python's `email`, policy.default, finds no defect). A damaged winmail.dat (a
//! checksum that does not match) goes as the one file it is, byte-identical.
//!
//! The real `cryptshare-gateway serve` process, the in-test emulator, the testkit sink. The
//! sample is a real Outlook stream (tests/data/README.md).

mod pipeline_support;
#[path = "pipeline_support/process.rs"]
mod process;
mod support;

use cryptshare_gateway::sim::FinishedTransfer;
use cryptshare_gateway_testkit::sink::{Script, Sink};
use pipeline_support::*;
use process::{spawn_gateway, try_send};

/// Outlook 2010's winmail.dat with four files, their names in PT_UNICODE long-file-name
/// properties (from the test suite of the `tnef` program).
const SAMPLE: &[u8] = include_bytes!("data/tnef/unicode-mapi-attr-name.tnef");

/// The files inside [`SAMPLE`]: name, size and SHA-256 as the `tnef` program's baselines have
/// them.
const INSIDE: [(&str, u64, &str); 4] = [
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
];

const WINMAIL_HEAD: &str = "Content-Type: application/ms-tnef; name=\"winmail.dat\"\r\n\
                            Content-Disposition: attachment; filename=\"winmail.dat\"";

/// What one conversion left: the emulator (still running, for downloads), its finished
/// transfer, the message the sink got (without our Received:).
struct Converted {
    emu: Emu,
    t: FinishedTransfer,
    relayed: Vec<u8>,
    dir: tempfile::TempDir,
}

/// Gateway process, emulator and sink; `tnef` is sent as the winmail.dat of a message to one
/// recipient.
async fn convert(tnef: &[u8]) -> Converted {
    let dir = tempfile::tempdir().unwrap();
    let emu = Emu::start(dir.path().join("sim")).await;
    let sink = Sink::start(Script::default()).await.unwrap();
    let text = config_text(
        dir.path(),
        &sink.addr().to_string(),
        &emu.url(),
        &policy("tempfail"),
    );
    let (path, _) = write_config(dir.path(), &text);
    let mut gw = spawn_gateway(&path).await;
    let msg = mixed(HEADERS, "The files from Outlook.", &[(WINMAIL_HEAD, tnef)]);
    let reply = try_send(gw.smtp, "alice@example.org", "bob@example.net", &msg)
        .await
        .unwrap();
    assert_eq!(reply, "250 2.0.0 OK, relayed (Queued as SINK)\r\n");
    gw.child.kill().await.unwrap();
    let ts = emu.transfers();
    assert_eq!(ts.len(), 1, "{ts:?}");
    let got = sink.messages();
    assert_eq!(got.len(), 1);
    let relayed = split_received(&got[0].data).1.to_vec();
    Converted {
        emu,
        t: ts.into_iter().next().unwrap(),
        relayed,
        dir,
    }
}

/// File `i` of the transfer through the emulator's recipient page, with the password.
async fn download(t: &FinishedTransfer, i: usize) -> Vec<u8> {
    let link = &t.recipient_ids[0].download_url;
    let url = format!("{link}&password={}&get={}", t.password, t.files[i].id);
    let r = reqwest::get(&url).await.unwrap();
    assert_eq!(r.status(), 200, "{url}");
    r.bytes().await.unwrap().to_vec()
}

/// What Python's `email` package (policy.default) makes of `message`.
fn python_parse(dir: &std::path::Path, message: &[u8]) -> serde_json::Value {
    let p = dir.join("relayed.eml");
    std::fs::write(&p, message).unwrap();
    let out = std::process::Command::new("python3")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/data/mime_check.py"
        ))
        .arg(&p)
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    v[0].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn winmail_dat_goes_to_cryptshare_as_the_files_inside() {
    let Converted {
        emu,
        t,
        relayed,
        dir,
    } = convert(SAMPLE).await;
    let got: Vec<(&str, u64)> = t.files.iter().map(|f| (f.name.as_str(), f.size)).collect();
    let want: Vec<(&str, u64)> = INSIDE.iter().map(|&(n, s, _)| (n, s)).collect();
    assert_eq!(got, want);
    for (i, (f, (_, _, sha))) in t.files.iter().zip(INSIDE).enumerate() {
        assert_eq!(f.checksum.as_deref(), Some(sha));
        assert_eq!(f.uploaded_sha256, sha);
        assert_eq!(sha256_hex(&download(&t, i).await), sha, "{}", f.name);
    }

    // The relayed message: no winmail.dat left, the notice lists the four files.
    let text = String::from_utf8_lossy(&relayed);
    assert!(
        !text.contains("ms-tnef") && !text.contains("winmail.dat"),
        "{text}"
    );
    let parsed = python_parse(dir.path(), &relayed);
    assert_eq!(parsed["defects"], serde_json::json!([]));
    let body = parsed["text"].as_str().unwrap();
    for (name, _, _) in INSIDE {
        assert!(body.contains(&format!("  - {name} (")), "{name}: {body}");
    }
    assert!(body.contains(&t.tracking_id), "{body}");
    assert!(body.contains("The files from Outlook."), "{body}");

    // The audit line names the files inside, with their checksums.
    let audit = read_audit(&dir.path().join("audit.jsonl"));
    assert_eq!(audit.len(), 1);
    assert_eq!(audit[0]["decision"], "convert");
    let files: Vec<(&str, &str)> = audit[0]["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| (f["name"].as_str().unwrap(), f["sha256"].as_str().unwrap()))
        .collect();
    let want: Vec<(&str, &str)> = INSIDE.iter().map(|&(n, _, h)| (n, h)).collect();
    assert_eq!(files, want);
    emu.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damaged_winmail_dat_goes_as_it_is() {
    // One bit flipped inside the first file's bytes: the attribute's checksum no longer matches.
    let mut damaged = SAMPLE.to_vec();
    let first_png = damaged
        .windows(4)
        .position(|w| w == b"\x89PNG")
        .expect("a PNG inside");
    damaged[first_png + 100] ^= 0x01;
    let Converted {
        emu,
        t,
        relayed,
        dir,
    } = convert(&damaged).await;
    assert_eq!(t.files.len(), 1, "{:?}", t.files);
    assert_eq!(t.files[0].name, "winmail.dat");
    assert_eq!(t.files[0].size, damaged.len() as u64);
    assert_eq!(t.files[0].uploaded_sha256, sha256_hex(&damaged));
    assert_eq!(sha256_hex(&download(&t, 0).await), sha256_hex(&damaged));
    let parsed = python_parse(dir.path(), &relayed);
    assert_eq!(parsed["defects"], serde_json::json!([]));
    let body = parsed["text"].as_str().unwrap();
    assert!(body.contains("  - winmail.dat ("), "{body}");
    assert!(!body.contains("image001.png"), "{body}");
    emu.shutdown().await;
}
