#!/usr/bin/env bash
# Relay benchmark (issue 2): Postfix smtp-source -> gateway -> smtp-sink versus
# smtp-source -> smtp-sink directly, in the same run. 5 KB messages, 20 parallel sessions.
# Prints messages/s of each leg and the ratio (target: gateway >= 0.5 x direct).
#
# Usage: bench/relay-bench.sh [MESSAGES]      (default 20000)
# ROUNDS (default 3) alternates direct and gateway runs and reports the medians, so that load
# changing during the run (other jobs on the machine) hits both legs alike.
# Needs: postfix (smtp-source, smtp-sink), python3, a release build (built if missing).
# Everything listens on 127.0.0.1 only.
set -euo pipefail
cd "$(dirname "$0")/.."

MESSAGES=${1:-20000}
SESSIONS=${SESSIONS:-20}
ROUNDS=${ROUNDS:-3}
LENGTH=${LENGTH:-5120}
# Extra smtp-source options, e.g. SOURCE_OPTS=-d to keep each session's connection open
# (default: one connection per message, as smtp-source does by default).
SOURCE_OPTS=${SOURCE_OPTS:-}
BIN=${BIN:-target/release/cryptshare-gateway}

for tool in smtp-source smtp-sink python3; do
  command -v "$tool" >/dev/null || { echo "missing $tool (apt-get install -y postfix python3)" >&2; exit 1; }
done
[ -x "$BIN" ] || cargo build --release --bin cryptshare-gateway

WORK=$(mktemp -d)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

wait_port() { # port pid
  for _ in $(seq 1 200); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
    kill -0 "$2" 2>/dev/null || return 1
    sleep 0.05
  done
  return 1
}

now() { date +%s.%N; }

# One run of smtp-source against a port; prints messages/s.
run_leg() { # port
  local t0 t1
  t0=$(now)
  # shellcheck disable=SC2086 # SOURCE_OPTS is a list of options
  smtp-source $SOURCE_OPTS -s "$SESSIONS" -m "$MESSAGES" -l "$LENGTH" \
    -f sender@example.org -t rcpt@example.net "127.0.0.1:$1"
  t1=$(now)
  python3 -c "print(f'{$MESSAGES / ($t1 - $t0):.0f}')"
}

SINK_PORT=$(free_port)
smtp-sink -u nobody "127.0.0.1:$SINK_PORT" 256 &
PIDS+=($!)
wait_port "$SINK_PORT" "${PIDS[-1]}" || { echo "smtp-sink did not start" >&2; exit 1; }

GW_PORT=$(free_port)
cat >"$WORK/gw.toml" <<EOF
[server]
listen = ["127.0.0.1:$GW_PORT"]
hostname = "gw.bench"
max_connections = 512
client_networks = ["127.0.0.0/8"]

[relay]
next_hop = "127.0.0.1:$SINK_PORT"
tls = "off"
pool_size = 64

[state]
dir = "$WORK/state"
EOF

RUST_LOG=${RUST_LOG:-warn} "$BIN" serve --config "$WORK/gw.toml" >"$WORK/gw.log" 2>&1 &
PIDS+=($!)
GW_UP=1
wait_port "$GW_PORT" "${PIDS[-1]}" || GW_UP=0

echo "messages=$MESSAGES sessions=$SESSIONS length=$LENGTH rounds=$ROUNDS source_opts=${SOURCE_OPTS:-none}"
D=() G=()
for r in $(seq 1 "$ROUNDS"); do
  D+=("$(run_leg "$SINK_PORT")")
  echo "round $r direct  smtp-source -> smtp-sink:            ${D[-1]} msg/s"
  if [ "$GW_UP" = 1 ]; then
    G+=("$(run_leg "$GW_PORT")")
    echo "round $r gateway smtp-source -> gateway -> smtp-sink: ${G[-1]} msg/s"
  fi
done
median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
DIRECT=$(median "${D[@]}")
echo "median direct:  $DIRECT msg/s"
if [ "$GW_UP" = 0 ]; then
  echo "gateway did not start (is 'serve' wired in this build?):" >&2
  cat "$WORK/gw.log" >&2
  echo "median gateway: not measured"
  exit 2
fi
GATEWAY=$(median "${G[@]}")
echo "median gateway: $GATEWAY msg/s"
python3 -c "print(f'ratio gateway/direct: {$GATEWAY / $DIRECT:.2f} (target >= 0.50)')"
