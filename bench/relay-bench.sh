#!/usr/bin/env bash
# Relay benchmark (issue 2): Postfix smtp-source -> gateway -> smtp-sink versus
# smtp-source -> smtp-sink directly, in the same run. 5 KB messages, 20 parallel sessions.
# The legs alternate for ROUNDS rounds (so that a noisy neighbour hits both alike); prints
# messages/s of every leg, the medians and the ratio (issue 16's target: gateway >= 0.75 x
# direct), the CPU time per message of smtp-source, smtp-sink and the gateway (getrusage,
# /proc/PID/stat), and the "CPU-bound ceiling": the ratio that CPU cost alone allows, (source +
# sink) / (source + gateway + sink), when all processes share the machine's cores.
#
# Usage: bench/relay-bench.sh [MESSAGES]          (default 30000 per leg)
# Environment: ROUNDS (5), SESSIONS (20), LENGTH (5120), SOURCE_OPTS (extra smtp-source flags,
#   e.g. "-d" to send all messages of a session over one connection), RUST_LOG (info: the
#   gateway logs one line per transaction, as in production), SKIP_BUILD=1, BIN (the gateway
#   binary, default target/release/cryptshare-gateway), BASELINE (a second gateway binary, e.g.
#   the build before a change: it runs as a third leg in every round, on its own port with the
#   same configuration, and its ratio is printed next to the gateway's), XFORWARD=1 (let the
#   gateway send XFORWARD, which smtp-sink offers; off by default, see the config below).
# Needs: postfix (smtp-source, smtp-sink), python3, cargo. Everything listens on 127.0.0.1 only;
# the gateway relays to smtp-sink (no maildir, no disk writes on the gateway side).
set -euo pipefail
cd "$(dirname "$0")/.."
PATH="$PATH:/usr/sbin"   # Postfix tools

MESSAGES=${1:-30000}
ROUNDS=${ROUNDS:-5}
SESSIONS=${SESSIONS:-20}
LENGTH=${LENGTH:-5120}
SOURCE_OPTS=${SOURCE_OPTS:-}
BIN=${BIN:-target/release/cryptshare-gateway}
BASELINE=${BASELINE:-}

for tool in smtp-source smtp-sink python3; do
  command -v "$tool" >/dev/null || { echo "missing $tool (apt-get install -y postfix python3)" >&2; exit 1; }
done
if [ "${SKIP_BUILD:-}" != 1 ]; then
  cargo build --release --bin cryptshare-gateway
fi
[ -x "$BIN" ] || { echo "no $BIN" >&2; exit 1; }

# shellcheck source=bench/lib.sh
. bench/lib.sh
bench_workdir

# One run of smtp-source against a port; prints messages/s and smtp-source's own CPU
# microseconds per message (user + system, from getrusage of the child).
run_leg() { # port
  # shellcheck disable=SC2086
  python3 - "$MESSAGES" smtp-source $SOURCE_OPTS -s "$SESSIONS" -m "$MESSAGES" -l "$LENGTH" \
    -f sender@example.org -t rcpt@example.net "127.0.0.1:$1" <<'PY'
import resource, subprocess, sys, time
n = int(sys.argv[1])
t0 = time.monotonic()
subprocess.run(sys.argv[2:], check=True, stdout=sys.stderr)
dt = time.monotonic() - t0
ru = resource.getrusage(resource.RUSAGE_CHILDREN)
print(f"{n / dt:.0f} {(ru.ru_utime + ru.ru_stime) * 1e6 / n:.0f}")
PY
}

# CPU time (user + system, in clock ticks) a process has used so far.
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
TCK=$(getconf CLK_TCK)
# CPU microseconds per message between two cpu_ticks readings.
us_per_msg() { python3 -c "print(f'{($2 - $1) * 1e6 / $TCK / $MESSAGES:.0f}')"; }

median() { python3 -c 'import statistics,sys; print(f"{statistics.median(map(float, sys.argv[1:])):.0f}")' "$@"; }

start_sink 256

GW_PORT=$(free_port)
pass_config "$WORK/gw.toml" "$GW_PORT" "$WORK/state"

bench_serve "$WORK/gw.toml" "$GW_PORT" "$WORK/gw.log"
GW_PID=$SERVE_PID
if [ -n "$BASELINE" ]; then
  BASE_PORT=$(free_port)
  mkdir -p "$WORK/base"
  # The same settings, xforward included: a baseline that sent XFORWARD would pay one more
  # command per message than the gateway (a build from before relay.xforward existed, 0a7a6e6,
  # refuses the key; use BASELINE_SED='/^xforward = /d' for it).
  sed -e "s/127.0.0.1:$GW_PORT/127.0.0.1:$BASE_PORT/" -e "s#$WORK/state#$WORK/base/state#" -e "${BASELINE_SED:-}" \
    "$WORK/gw.toml" >"$WORK/base/gw.toml"
  bench_serve "$WORK/base/gw.toml" "$BASE_PORT" "$WORK/base/gw.log" "$BASELINE"
  BASE_PID=$SERVE_PID
fi

echo "machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //')"
echo "messages=$MESSAGES per leg, sessions=$SESSIONS, length=$LENGTH, rounds=$ROUNDS, smtp-source opts='$SOURCE_OPTS'"
DIRECT=()
GATEWAY=()
BASE=()
CEILING=()
for r in $(seq 1 "$ROUNDS"); do
  s0=$(cpu_ticks "$SINK_PID")
  read -r d src_d < <(run_leg "$SINK_PORT")
  s1=$(cpu_ticks "$SINK_PID"); g0=$(cpu_ticks "$GW_PID")
  read -r g src_g < <(run_leg "$GW_PORT")
  s2=$(cpu_ticks "$SINK_PID"); g1=$(cpu_ticks "$GW_PID")
  DIRECT+=("$d")
  GATEWAY+=("$g")
  sink_d=$(us_per_msg "$s0" "$s1"); sink_g=$(us_per_msg "$s1" "$s2"); gw=$(us_per_msg "$g0" "$g1")
  # With every process CPU-bound on the same cores, throughput is inversely proportional to the
  # CPU all processes spend per message: the ratio a perfect scheduler would give.
  ceiling=$(python3 -c "print(f'{($src_d + $sink_d) / ($src_g + $gw + $sink_g):.2f}')")
  CEILING+=("$ceiling")
  base=""
  if [ -n "$BASELINE" ]; then
    b0=$(cpu_ticks "$BASE_PID")
    read -r b _ < <(run_leg "$BASE_PORT")
    b1=$(cpu_ticks "$BASE_PID")
    BASE+=("$b")
    base=", baseline $b msg/s ($(us_per_msg "$b0" "$b1") CPU µs/msg)"
  fi
  echo "round $r: direct $d msg/s, gateway $g msg/s$base;" \
    "CPU µs/msg: smtp-source $src_d / $src_g, smtp-sink $sink_d (direct) / $sink_g (via gateway)," \
    "gateway $gw; CPU-bound ceiling $ceiling"
done
D=$(median "${DIRECT[@]}")
G=$(median "${GATEWAY[@]}")
echo "direct  smtp-source -> smtp-sink:            $D msg/s (median)"
echo "gateway smtp-source -> gateway -> smtp-sink: $G msg/s (median)"
C=$(python3 -c 'import statistics,sys; print(f"{statistics.median(map(float, sys.argv[1:])):.2f}")' "${CEILING[@]}")
python3 -c "print(f'ratio gateway/direct: {$G / $D:.2f} (target >= 0.75); CPU-bound ceiling (median): $C')"
if [ -n "$BASELINE" ]; then
  B=$(median "${BASE[@]}")
  echo "baseline smtp-source -> baseline -> smtp-sink: $B msg/s (median)"
  python3 -c "print(f'ratio baseline/direct: {$B / $D:.2f}; gateway/baseline: {$G / $B:.2f}')"
fi

# Sanity: every message went through the gateway with a 250 (needs info logs).
if [ "${RUST_LOG:-info}" = info ]; then
  relayed=$(grep -c 'outcome="250 ' "$WORK/gw.log" || true)
  want=$((MESSAGES * ROUNDS))
  echo "gateway relayed $relayed of $want messages with 250"
  [ "$relayed" -eq "$want" ] || { echo "gateway lost or refused messages:" >&2; grep -v 'outcome="250 ' "$WORK/gw.log" | tail -20 >&2; exit 3; }
fi
