//! 200 MB client ↔ emulator round trip with peak-RSS report (issue 3 acceptance).
//!
//! `cargo run --release --example cs_roundtrip [-- SIZE_MB]`
//!
//! Writes a pseudo-random file, uploads it through `cryptshare::Client` to an in-process
//! emulator (streamed, explicit Content-Length), finalizes, downloads it through the recipient
//! endpoint, compares SHA-256, and prints `VmHWM` (peak RSS) from /proc/self/status before and
//! after: the difference must not grow with the file size.

use std::io::Write;
use std::time::{Duration, Instant};

use cryptshare_gateway::cryptshare::{
    Client, ClientOptions, NewTransferSession, PasswordMode, Recipient, Recipients, SecurityMode,
    Sender, TransferSessionPatch,
};
use cryptshare_gateway::sim::{Emulator, SimOptions};
use sha2::{Digest, Sha256};

const CLIENT_ID: &str = "ExampleClient0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMN";
const SENDER: &str = "alice@example.org";

fn vm_hwm_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

fn write_file(path: &std::path::Path, size: u64) -> std::io::Result<String> {
    let mut f = std::io::BufWriter::new(std::fs::File::create(path)?);
    let mut h = Sha256::new();
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut buf = vec![0u8; 1 << 20];
    let mut left = size;
    while left > 0 {
        let n = left.min(buf.len() as u64) as usize;
        for c in buf[..n].chunks_mut(8) {
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            let v = x.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes();
            c.copy_from_slice(&v[..c.len()]);
        }
        f.write_all(&buf[..n])?;
        h.update(&buf[..n]);
        left -= n as u64;
    }
    f.flush()?;
    Ok(hex::encode(h.finalize()))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    cryptshare_gateway::install_crypto_provider();
    let mb: u64 = std::env::args()
        .nth(1)
        .map(|a| a.parse())
        .transpose()?
        .unwrap_or(200);
    let size = mb * 1024 * 1024;
    let dir = tempfile::tempdir()?;
    let src = dir.path().join("payload.bin");
    let sha = write_file(&src, size)?;
    let sim = Emulator::start(SimOptions::new(
        "127.0.0.1:0".parse()?,
        dir.path().join("sim"),
    ))
    .await?;
    let cs = Client::new(&sim.url(), CLIENT_ID.into(), ClientOptions::default())?;
    let before = vm_hwm_kib();

    let t0 = Instant::now();
    let tid = cs
        .create_session(
            SENDER,
            Some("en"),
            &NewTransferSession {
                sender: Sender {
                    name: Some("Alice".into()),
                    phone: None,
                },
                recipients: Recipients {
                    to: vec![Recipient::new("bob@example.com")],
                    ..Recipients::default()
                },
            },
        )
        .await?;
    cs.patch_settings(
        SENDER,
        &tid,
        &TransferSessionPatch {
            security_mode: Some(SecurityMode::one_time_password(PasswordMode::None, None)),
            ..TransferSessionPatch::default()
        },
    )
    .await?;
    let fid = cs
        .register_file(SENDER, &tid, "payload.bin", size, &sha)
        .await?;
    cs.upload_path(SENDER, &tid, &fid, &src, 0, size).await?;
    let upload = t0.elapsed();
    cs.finalize(SENDER, &tid).await?;
    let status = cs
        .wait_active(SENDER, &tid, Duration::from_secs(30))
        .await?;
    let after_upload = vm_hwm_kib();

    // Download through the recipient endpoint, hashing while streaming.
    let t = sim
        .transfers()
        .into_iter()
        .next()
        .ok_or_else(|| anyhow::anyhow!("no transfer"))?;
    let rid = &t.recipient_ids[0].transfer_id;
    let http = reqwest::Client::new();
    let mut resp = http
        .get(format!("{}/api/transfers/{rid}/files/{fid}", sim.url()))
        .header("X-CS-MajorApiVersion", "1")
        .header("X-CS-MinimumMinorApiVersion", "8")
        .header("X-CS-ClientId", CLIENT_ID)
        .header("X-CS-Password", &t.password)
        .send()
        .await?
        .error_for_status()?;
    let mut h = Sha256::new();
    let mut n = 0u64;
    while let Some(c) = resp.chunk().await? {
        n += c.len() as u64;
        h.update(&c);
    }
    let got = hex::encode(h.finalize());
    let after_download = vm_hwm_kib();

    println!("size:                 {mb} MiB ({size} bytes)");
    println!("state:                {:?}", status.status.state);
    println!("download urls:        {}", status.download_urls().len());
    println!(
        "upload:               {:.2} s ({:.0} MiB/s)",
        upload.as_secs_f64(),
        mb as f64 / upload.as_secs_f64()
    );
    println!("sha256 sent:          {sha}");
    println!("sha256 downloaded:    {got} ({n} bytes)");
    println!("VmHWM before upload:  {before} kB");
    println!("VmHWM after upload:   {after_upload} kB");
    println!("VmHWM after download: {after_download} kB");
    println!(
        "peak RSS growth:      {} kB (client, emulator and downloader in one process)",
        after_download.saturating_sub(before)
    );
    anyhow::ensure!(got == sha && n == size, "content differs");
    sim.shutdown().await;
    Ok(())
}
