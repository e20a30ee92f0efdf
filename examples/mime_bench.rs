//! MIME engine benchmark: analysis, streaming decode + SHA-256, and rewrite of a message with
//! one large base64 attachment. Reports MB/s and peak RSS (VmHWM, reset before the measured
//! phase via /proc/self/clear_refs).
//!
//! `cargo run --release --example mime_bench -- [ATTACHMENT_MB]` (default 100)

use std::io::Write;
use std::time::Instant;

use base64::Engine;
use cryptshare_gateway::mime::{self, Notice, NoticeFile};

fn status_kb(key: &str) -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    s.lines()
        .find(|l| l.starts_with(key))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn main() {
    let mb: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(100);
    let size = mb * 1024 * 1024;

    // Build the message chunk by chunk so the decoded attachment never exists in memory.
    let mut raw = Vec::with_capacity(size / 3 * 4 + size / 57 * 2 + 4096);
    raw.extend_from_slice(
        b"From: Alice <alice@example.org>\r\nTo: bob@example.net\r\nSubject: big\r\n\
MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"b1\"\r\n\r\n--b1\r\n\
Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n\
Hello Bob, the data is attached.\r\n--b1\r\nContent-Type: application/octet-stream; name=\"data.bin\"\r\n\
Content-Disposition: attachment; filename=\"data.bin\"\r\nContent-Transfer-Encoding: base64\r\n\r\n",
    );
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let mut chunk = vec![0u8; 57 * 1024];
    let mut line = String::with_capacity(80);
    let mut left = size;
    while left > 0 {
        let n = left.min(chunk.len());
        for b in chunk[..n].iter_mut() {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            *b = state as u8;
        }
        for l in chunk[..n].chunks(57) {
            line.clear();
            base64::engine::general_purpose::STANDARD.encode_string(l, &mut line);
            raw.extend_from_slice(line.as_bytes());
            raw.extend_from_slice(b"\r\n");
        }
        left -= n;
    }
    raw.extend_from_slice(b"--b1--\r\n");
    drop(chunk);

    let raw_mb = raw.len() as f64 / 1e6;
    let rss_before = status_kb("VmRSS:");
    // Reset the high-water mark so it covers only the measured phase.
    let reset = std::fs::write("/proc/self/clear_refs", "5").is_ok();

    let t = Instant::now();
    let a = mime::analyse(&raw);
    let t_analyse = t.elapsed().as_secs_f64();
    let att = a.candidates().next().expect("attachment found");
    assert_eq!(att.size as usize, size);

    let t = Instant::now();
    let (n, sum) = mime::part_sha256(&raw, att);
    let t_sha = t.elapsed().as_secs_f64();
    assert_eq!(n as usize, size);

    let t = Instant::now();
    let n = mime::decode_part(&raw, att, &mut std::io::sink()).unwrap();
    let t_decode = t.elapsed().as_secs_f64();
    assert_eq!(n as usize, size);

    let notice = Notice {
        language: "en".into(),
        files: vec![NoticeFile {
            name: att.upload_name.clone().unwrap_or_default(),
            size: att.size,
        }],
        sender: "alice@example.org".into(),
        ..Notice::default()
    };
    let t = Instant::now();
    let out = mime::rewrite(&raw, &a, &[att.id], &notice).unwrap();
    let t_rewrite = t.elapsed().as_secs_f64();

    let hwm = status_kb("VmHWM:");

    // For comparison: mail-parser 0.11's full parse (decodes every body eagerly).
    let out_len = out.len();
    drop(out);
    let _ = std::fs::write("/proc/self/clear_refs", "5");
    let t = Instant::now();
    let parsed = mail_parser::MessageParser::default().parse(&raw);
    let t_mp = t.elapsed().as_secs_f64();
    let mp_parts = parsed.as_ref().map_or(0, |m| m.parts.len());
    drop(parsed);
    let mp_hwm = status_kb("VmHWM:");
    let mut o = std::io::stdout().lock();
    let _ = writeln!(
        o,
        "message {raw_mb:.1} MB (attachment {mb} MiB decoded), rewritten to {} bytes",
        out_len
    );
    let _ = writeln!(
        o,
        "analyse (structure + decoded size):  {:7.1} ms  {:7.0} MB/s",
        t_analyse * 1e3,
        raw_mb / t_analyse
    );
    let _ = writeln!(
        o,
        "decode to sink:                      {:7.1} ms  {:7.0} MB/s (encoded input)",
        t_decode * 1e3,
        raw_mb / t_decode
    );
    let _ = writeln!(
        o,
        "decode + SHA-256:                    {:7.1} ms  {:7.0} MB/s  sha256={}",
        t_sha * 1e3,
        raw_mb / t_sha,
        hex::encode(&sum[..8])
    );
    let _ = writeln!(
        o,
        "rewrite (remove attachment):         {:7.1} ms  {:7.0} MB/s",
        t_rewrite * 1e3,
        raw_mb / t_rewrite
    );
    let _ = writeln!(
        o,
        "analyse + rewrite:                   {:7.0} MB/s",
        raw_mb / (t_analyse + t_rewrite)
    );
    let _ = writeln!(
        o,
        "RSS before: {:.1} MiB (the raw message); peak during the measured phase (VmHWM{}): {:.1} MiB",
        rss_before as f64 / 1024.0,
        if reset { ", reset" } else { ", NOT reset" },
        hwm as f64 / 1024.0
    );
    let _ = writeln!(
        o,
        "comparison, mail-parser 0.11 full parse: {:7.1} ms  {:7.0} MB/s  peak {:.1} MiB ({mp_parts} parts)",
        t_mp * 1e3,
        raw_mb / t_mp,
        mp_hwm as f64 / 1024.0
    );
}
