//! The systemd unit passes `systemd-analyze verify` and stays at an exposure ≤ 2.0, checked
//! against the binary cargo just built (needs systemd-analyze: `apt-get install -y systemd`).

use std::process::Command;

#[test]
fn unit_verifies_and_is_hardened() {
    let out = Command::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/scripts/verify-systemd.sh"
    ))
    .arg(env!("CARGO_BIN_EXE_cryptshare-gateway"))
    .output()
    .expect("run scripts/verify-systemd.sh");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    let last = stdout.lines().last().unwrap_or_default();
    let score: f64 = last
        .split("cryptshare-gateway.service: ")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no exposure score in {last:?}"));
    assert!(score <= 2.0, "{last}");
}
