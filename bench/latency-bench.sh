#!/usr/bin/env bash
# Latency added by the gateway (issue 16): one client, sequential (one message at a time), a
# small message, straight to smtp-sink against through the gateway (pass-through, cut-through
# relay to the same smtp-sink), in the same run; legs alternated for ROUNDS rounds. Two modes:
#   reuse: one connection, MESSAGES transactions on it; latency = MAIL command -> final 250
#   new:   a new connection per message; latency = connect -> final 250 (greeting, EHLO and
#          the transaction; QUIT after it is not counted)
# Both also report DATA -> final 250. Prints p50/p99 per round and leg, the medians over the
# rounds and the difference gateway - direct (target: p99 added under 2 ms on loopback).
#
# Client: examples/smtp_load.rs -c 1 (PIPELINING used where offered: smtp-sink and the
# gateway both offer it, so MAIL, RCPT and DATA go in one write).
#
# Usage: bench/latency-bench.sh [MESSAGES]    (default 2000 per leg and round)
# Environment: ROUNDS (5), LENGTH (1024), MODES ("reuse new"), RUST_LOG (info), SKIP_BUILD=1,
#   BIN, LOAD (as in tls-bench.sh).
# Needs: postfix (smtp-sink), python3, cargo. Loopback only.
set -euo pipefail
cd "$(dirname "$0")/.."
PATH="$PATH:/usr/sbin"

MESSAGES=${1:-2000}
ROUNDS=${ROUNDS:-5}
LENGTH=${LENGTH:-1024}
MODES=${MODES:-reuse new}
TGT=${CARGO_TARGET_DIR:-target}
BIN=${BIN:-$TGT/release/cryptshare-gateway}
LOAD=${LOAD:-$TGT/release/examples/smtp_load}

for tool in smtp-sink python3; do
  command -v "$tool" >/dev/null || { echo "missing $tool (apt-get install -y postfix python3)" >&2; exit 1; }
done
if [ "${SKIP_BUILD:-}" != 1 ]; then
  cargo build --release --bin cryptshare-gateway --example smtp_load
fi
[ -x "$BIN" ] || { echo "no $BIN" >&2; exit 1; }
[ -x "$LOAD" ] || { echo "no $LOAD" >&2; exit 1; }

# shellcheck source=bench/lib.sh
. bench/lib.sh
bench_workdir

start_sink 64

GW_PORT=$(free_port)
cat > "$WORK/gw.toml" <<EOF
[server]
listen = ["127.0.0.1:$GW_PORT"]
hostname = "gw.bench.test"
[relay]
next_hop = "127.0.0.1:$SINK_PORT"
tls = "off"
pool_size = 8
xforward = false
[state]
dir = "$WORK/state"
EOF
bench_serve "$WORK/gw.toml" "$GW_PORT" "$WORK/gw.log"

# Prints "conn_p50 conn_p99 data_p50 data_p99" (ms).
run_leg() { # port mode
  local opts=() out
  [ "$2" = new ] && opts+=(--new-connection)
  out=$("$LOAD" --server "127.0.0.1:$1" -n "$MESSAGES" -c 1 --size "$LENGTH" --threads 1 "${opts[@]}" 2>"$WORK/load.err") \
    || { cat "$WORK/load.err" >&2; exit 3; }
  python3 -c 'import sys; kv=dict(x.split("=") for x in sys.argv[1].split()[1:]); print(kv["conn_p50"], kv["conn_p99"], kv["data_p50"], kv["data_p99"])' "$out"
}

echo "machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //'), load $(cut -d' ' -f1-3 /proc/loadavg)"
echo "messages=$MESSAGES per leg, length=$LENGTH, rounds=$ROUNDS, one client, sequential"
for mode in $MODES; do
  D=() G=()
  for r in $(seq 1 "$ROUNDS"); do
    d=$(run_leg "$SINK_PORT" "$mode"); D+=("$d")
    g=$(run_leg "$GW_PORT" "$mode"); G+=("$g")
    echo "$mode round $r: direct p50/p99 $(cut -d' ' -f1-2 <<<"$d") ms (DATA->250 $(cut -d' ' -f3-4 <<<"$d")), gateway $(cut -d' ' -f1-2 <<<"$g") ms (DATA->250 $(cut -d' ' -f3-4 <<<"$g"))"
  done
  python3 - "$mode" "$(printf '%s;' "${D[@]}")" "$(printf '%s;' "${G[@]}")" <<'EOF'
import statistics, sys
mode = sys.argv[1]
rows = lambda a: [[float(x) for x in r.split()] for r in a.split(";") if r.strip()]
d, g = rows(sys.argv[2]), rows(sys.argv[3])
med = lambda rs, i: statistics.median(r[i] for r in rs)
what = "MAIL -> final 250" if mode == "reuse" else "connect -> final 250"
print(f"median {mode} ({what}): direct p50 {med(d,0):.3f} p99 {med(d,1):.3f} ms; "
      f"gateway p50 {med(g,0):.3f} p99 {med(g,1):.3f} ms; "
      f"added p50 {med(g,0)-med(d,0):+.3f} p99 {med(g,1)-med(d,1):+.3f} ms (target p99 < 2 ms)")
print(f"median {mode} (DATA -> final 250): direct p50 {med(d,2):.3f} p99 {med(d,3):.3f} ms; "
      f"gateway p50 {med(g,2):.3f} p99 {med(g,3):.3f} ms; "
      f"added p50 {med(g,2)-med(d,2):+.3f} p99 {med(g,3)-med(d,3):+.3f} ms")
EOF
done
if [ "${RUST_LOG:-info}" = info ]; then
  relayed=$(grep -c 'outcome="250 ' "$WORK/gw.log" || true)
  n_modes=$(wc -w <<<"$MODES")
  echo "gateway relayed $relayed of $((MESSAGES * ROUNDS * n_modes)) messages with 250"
fi
