#!/usr/bin/env bash
# CI check of systemd/cryptshare-gateway.service and its optional socket units (*.socket):
#   1. `systemd-analyze verify` of every unit with the real binary in ExecStart (verify needs the
#      executable to exist; the unit names /usr/bin/cryptshare-gateway, so temporary copies point
#      at the build; the socket units are checked next to that copy, which their Service= names);
#      any diagnostic at all fails the check, because verify exits 0 on unknown keys and bad values.
#   2. `systemd-analyze security --offline=true`: the exposure score must stay ≤ 2.0 ("OK").
# Usage: scripts/verify-systemd.sh [PATH/TO/cryptshare-gateway]
# Needs: systemd (apt-get install -y systemd) for systemd-analyze ≥ 250.
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
unit="$root/systemd/cryptshare-gateway.service"
max_exposure="${MAX_EXPOSURE:-20}" # tenths: 20 = 2.0

bin="${1:-}"
if [[ -z "$bin" ]]; then
    target="${CARGO_TARGET_DIR:-$root/target}"
    for candidate in "$target/release/cryptshare-gateway" "$target/debug/cryptshare-gateway"; do
        if [[ -x "$candidate" ]]; then bin="$candidate"; break; fi
    done
fi
if [[ -z "$bin" ]]; then
    (cd "$root" && cargo build --release --bin cryptshare-gateway)
    bin="${CARGO_TARGET_DIR:-$root/target}/release/cryptshare-gateway"
fi
bin="$(realpath "$bin")"
[[ -x "$bin" ]] || { echo "verify-systemd: $bin is not an executable" >&2; exit 1; }
command -v systemd-analyze >/dev/null || { echo "verify-systemd: systemd-analyze missing (apt-get install -y systemd)" >&2; exit 1; }

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
sed "s#/usr/bin/cryptshare-gateway#$bin#g" "$unit" > "$tmp/cryptshare-gateway.service"
units=("$tmp/cryptshare-gateway.service")
for socket in "$root"/systemd/*.socket; do
    cp "$socket" "$tmp/"
    units+=("$tmp/$(basename "$socket")")
done

echo "== systemd-analyze verify ($(systemd-analyze --version | head -n1)): ${units[*]##*/}"
if ! out="$(systemd-analyze verify --man=no "${units[@]}" 2>&1)"; then
    echo "$out" >&2
    echo "verify-systemd: systemd-analyze verify failed" >&2
    exit 1
fi
if [[ -n "$out" ]]; then
    echo "$out" >&2
    echo "verify-systemd: systemd-analyze verify reported problems" >&2
    exit 1
fi
echo "ok"

echo "== systemd-analyze security --offline=true"
if ! out="$(systemd-analyze security --offline=true --threshold="$max_exposure" \
        --no-pager "$tmp/cryptshare-gateway.service" 2>&1)"; then
    echo "$out" >&2
    echo "verify-systemd: exposure above $max_exposure/10" >&2
    exit 1
fi
echo "$out" | grep -E '^✗' || true
echo "$out" | tail -n 1
