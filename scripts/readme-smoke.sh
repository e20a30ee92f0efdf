#!/usr/bin/env bash
# Runs exactly the README's first command in a fresh clone of this repository, then takes the
# 5-minute tour: a message with a 3 MB attachment sent with swaks must arrive in the maildir
# outbox with the notice instead of the attachment, the file must sit in the embedded emulator's
# data dir with the same SHA-256, an audit line must be logged and the metrics must count it.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"' EXIT
git clone -q "$repo" "$work/clone"
# Reuse the build cache of the repository so that the smoke test does not compile twice.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$repo/target}"
cd "$work/clone"
cargo run --release --locked -- serve --config config/gateway.toml >"$work/gateway.log" 2>&1 &
for _ in $(seq 600); do
  if (exec 3<>/dev/tcp/127.0.0.1/2525) 2>/dev/null; then break; fi
  if ! kill -0 %1 2>/dev/null; then cat "$work/gateway.log"; echo "FAIL: gateway exited"; exit 1; fi
  sleep 0.5
done
head -c 3000000 /dev/urandom >"$work/report.bin"
swaks --server 127.0.0.1:2525 --from alice@example.org --to bob@example.com \
  --header "Subject: Quarterly report" --body "Hello Bob" \
  --attach-name report.bin --attach @"$work/report.bin" >"$work/swaks.log" 2>&1 \
  || { cat "$work/swaks.log"; echo "FAIL: swaks"; exit 1; }
grep -q '^<-  250 2.0.0' "$work/swaks.log" || { cat "$work/swaks.log"; echo "FAIL: no 250 after DATA"; exit 1; }
msg=$(ls data/outbox/new/* | head -n1)
grep -q 'moved to a secure Cryptshare transfer' "$msg" || { cat "$msg"; echo "FAIL: no notice"; exit 1; }
grep -q 'report.bin (2.9 MB)' "$msg" || { cat "$msg"; echo "FAIL: the notice does not name report.bin (2.9 MB)"; exit 1; }
# The 3 MB attachment is about 4 MB in base64; without it the message is a few KB.
size=$(stat -c %s "$msg")
[ "$size" -lt 100000 ] || { echo "FAIL: attachment still in the mail ($size bytes)"; exit 1; }
want=$(sha256sum "$work/report.bin" | cut -d' ' -f1)
found=no
for f in $(find data/state/cryptshare-sim -type f); do
  if [ "$(sha256sum "$f" | cut -d' ' -f1)" = "$want" ]; then found=yes; fi
done
[ "$found" = yes ] || { echo "FAIL: the attachment is not in the emulator's data dir"; exit 1; }
grep -q '"decision":"convert"' "$work/gateway.log" || { cat "$work/gateway.log"; echo "FAIL: no audit line"; exit 1; }
# Read the whole page first: `curl | grep -q` fails under pipefail when grep stops reading early.
metrics=$(curl -fsS http://127.0.0.1:9325/metrics)
grep -q 'csgw_messages_total{.*result="converted".*} 1' <<<"$metrics" \
  || { grep csgw_messages <<<"$metrics"; echo "FAIL: metrics"; exit 1; }
kill -TERM %1
wait %1 || true
echo "README smoke test: 1 passed, 0 failed"
