//! Issue 10 item 7: bidi overrides and zero-width characters in the names a person reads never
//! leave the gateway. A converted message with `invoice\u{202E}fdp.exe` (which displays as
//! `invoiceexe.pdf`) as file name, sender name and subject: the notice in the relayed mail, the
//! Cryptshare `fileName`, the sender name and the notification subject all carry the name without
//! the invisible characters, and the audit line too.

mod pipeline_support;
mod support;

use pipeline_support::*;

const OK: &str = "250 2.0.0 OK, relayed (Queued as SINK)\r\n";

/// UTF-8 bytes of the invisible characters used below.
const INVISIBLE: &[&str] = &["\u{202E}", "\u{200B}", "\u{2066}", "\u{FEFF}", "\u{200D}"];

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    count(hay, needle) > 0
}

fn count(hay: &[u8], needle: &[u8]) -> usize {
    hay.windows(needle.len()).filter(|w| *w == needle).count()
}

#[tokio::test]
async fn bidi_and_zero_width_are_removed_from_names_subject_and_notice() {
    let h = Harness::start(&policy("tempfail")).await;
    // Sender name and subject as RFC 2047 words; the file name as RFC 2231 parameter, the way
    // mail clients send non-ASCII names.
    let headers = "From: =?utf-8?q?Mal=E2=80=AEory_=E2=81=A6Admin?= <alice@example.org>\r\n\
                   To: Bob <bob@example.net>\r\n\
                   Subject: =?utf-8?q?invoice=E2=80=AEfdp.exe=E2=80=8B_for_you?=\r\n\
                   Date: Fri, 27 Nov 2026 10:00:00 +0000\r\n\
                   Message-ID: <invisible-1@example.org>\r\n";
    let data = payload(64 * 1024, 7);
    let head = "Content-Type: application/octet-stream; name*=utf-8''invoice%E2%80%AEfdp.exe\r\n\
                Content-Disposition: attachment; filename*=utf-8''in%E2%80%8Bvoice%E2%80%AEfdp%EF%BB%BF.exe";
    let msg = mixed(
        headers,
        "Please\u{200D} pay.\u{2066}",
        &[(head, data.as_slice())],
    );
    let reply = h
        .send("alice@example.org", &["bob@example.net"], &msg)
        .await;
    assert_eq!(reply, OK);

    // Cryptshare: the stored fileName, sender name and notification without them.
    let ts = h.emu.transfers();
    assert_eq!(ts.len(), 1, "{ts:?}");
    let t = &ts[0];
    assert_eq!(t.files.len(), 1);
    assert_eq!(t.files[0].name, "invoicefdp.exe");
    let s = &t.settings;
    assert_eq!(
        s.sender.as_ref().unwrap().name.as_deref(),
        Some("Malory Admin")
    );
    let n = s.notification_message.as_ref().unwrap();
    assert_eq!(n.subject.as_deref(), Some("invoicefdp.exe for you"));
    assert_eq!(n.body.as_deref(), Some("Please pay."));

    // The relayed mail: the notice names the file without them and adds no invisible character
    // (the original text body keeps its own, the headers their encoded words: bytes unchanged).
    let got = h.sink.messages();
    assert_eq!(got.len(), 1);
    let data = &got[0].data;
    assert!(
        contains(data, b"invoicefdp.exe"),
        "{}",
        String::from_utf8_lossy(data)
    );
    for c in INVISIBLE {
        assert_eq!(
            count(data, c.as_bytes()),
            count(&msg, c.as_bytes()),
            "{c:?} added to the relayed mail:\n{}",
            String::from_utf8_lossy(data)
        );
    }
    assert!(contains(
        data,
        b"Subject: =?utf-8?q?invoice=E2=80=AEfdp.exe=E2=80=8B_for_you?=\r\n"
    ));

    // The audit line names the file the same way.
    let audit = h.audit();
    let line = audit.last().expect("an audit line").to_string();
    assert!(line.contains("invoicefdp.exe"), "{line}");
    for c in INVISIBLE {
        assert!(!line.contains(c), "{c:?} in the audit line: {line}");
    }
    h.stop().await;
}
