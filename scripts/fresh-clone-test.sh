#!/usr/bin/env bash
# Runs the README's test command (`cargo test --release`, under scripts/test-postgres.sh) in a fresh clone of this repository,
# in an empty directory with no ../shared beside it: whatever a test reads must be in the
# repository itself (tests/data/), as it is for a user who just cloned it.
# Extra arguments are passed to cargo test.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
git clone -q "$repo" "$work/cryptshare-gateway"
[ ! -e "$work/shared" ] || { echo "FAIL: $work/shared exists"; exit 1; }
# Reuse the repository's build cache for the dependencies (the crate itself is rebuilt: its path differs).
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$repo/target}"
cd "$work/cryptshare-gateway"
echo "fresh clone at $PWD (HEAD $(git rev-parse --short HEAD)), no ../shared"
cargo test --release --locked "$@"
