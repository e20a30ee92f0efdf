#!/usr/bin/env bash
# Short cargo-fuzz runs of every fuzz target (nightly toolchain; cargo-fuzz from crates.io).
# Usage: scripts/fuzz-smoke.sh [SECONDS_PER_TARGET]
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
secs=${1:-60}
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
for t in $(cargo +nightly fuzz list); do
  echo "--- fuzz target $t (${secs}s)"
  mkdir -p "corpus/$t"
  cargo +nightly fuzz run "$t" "corpus/$t" -- -max_total_time="$secs" -rss_limit_mb=2048 2>&1 | tail -n 3
done
echo "fuzz smoke: $(cargo +nightly fuzz list | wc -l) targets ran without a crash"
