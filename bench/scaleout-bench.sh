#!/usr/bin/env bash
# Scale-out benchmark (issue 15): the PostgreSQL state backend against the file backend, and one
# gateway node against three on one database, in the same run.
#
# Legs, alternated for ROUNDS rounds so that load changing during the run hits all of them:
#   file/1  one node, `[state] backend = "file"` (the default)
#   pg/1    one node, `backend = "postgres"`
#   pg/3    three nodes on the same database (each client session goes to one of them)
# Workloads, each measured on every leg:
#   pass    pass-through, inline: smtp-source, SESSIONS sessions, LENGTH-byte messages, a
#           connection per message -> gateway(s) -> smtp-sink; msg/s
#   spool   the same messages in spool mode (the queue on the state backend: files, or the
#           shared queue in the database), from the first connection until the queue is empty
#           again (accepted, queued durably, delivered, removed); msg/s
#   convert conversions: a Python client, CLIENTS threads, a connection per message, each
#           message with a 128 KB attachment from a sender whose rule converts it (unique
#           Message-ID: every one is a new transfer) -> one cryptshare-sim shared by all nodes;
#           conversions/s
# The database: a private cluster from scripts/test-postgres.sh, with fsync on (as in
# production; the tests run it with fsync off), a fresh database per leg. Everything on loopback.
#
# Usage: bench/scaleout-bench.sh [MESSAGES] [CONVERSIONS]     (defaults 6000, 300 per leg/round)
# Environment: ROUNDS (3), SESSIONS (21: 7 per node with 3), LENGTH (5120), CLIENTS (6),
#   SKIP_BUILD=1, BIN, SIM (default target/release/cryptshare-gateway, …/cryptshare-sim).
# Needs postfix (smtp-source, smtp-sink), postgresql, python3, cargo; root for the cluster's
# unprivileged user (as scripts/test-postgres.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
PATH="$PATH:/usr/sbin"

if [ -z "${CSG_TEST_PG_URL:-}" ]; then
  CSG_PG_FSYNC=on exec scripts/test-postgres.sh "$0" "$@"
fi

MESSAGES=${1:-6000}
CONVERSIONS=${2:-300}
ROUNDS=${ROUNDS:-3}
SESSIONS=${SESSIONS:-21}
LENGTH=${LENGTH:-5120}
CLIENTS=${CLIENTS:-6}
TARGET=${CARGO_TARGET_DIR:-target}
BIN=${BIN:-$TARGET/release/cryptshare-gateway}
SIM=${SIM:-$TARGET/release/cryptshare-sim}

for tool in smtp-source smtp-sink python3 psql; do
  command -v "$tool" >/dev/null || { echo "missing $tool (apt-get install -y postfix postgresql python3)" >&2; exit 1; }
done
if [ "${SKIP_BUILD:-}" != 1 ]; then
  cargo build --release --bins
fi
[ -x "$BIN" ] && [ -x "$SIM" ] || { echo "no $BIN or $SIM" >&2; exit 1; }

# shellcheck source=bench/lib.sh
. bench/lib.sh
NODE_PIDS=()
bench_before_cleanup() {
  for p in "${NODE_PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
}
bench_workdir /var/tmp/scaleout-bench.XXXXXX
chmod 755 "$WORK"

start_sink 256
SIM_PORT=$(free_port)
RUST_LOG=warn "$SIM" --listen "127.0.0.1:$SIM_PORT" --data "$WORK/sim" --processing-polls 0 2>"$WORK/sim.log" &
PIDS+=($!)
wait_port "$SIM_PORT"

# start_nodes BACKEND COUNT MODE: starts COUNT gateways (fresh state, a fresh database for
# postgres), sets PORTS and NODE_DIRS.
start_nodes() {
  local backend=$1 count=$2 mode=$3 state_extra="" url=""
  if [ "$backend" = postgres ]; then
    # Each leg runs in a subshell ($(…)): a name no earlier leg can have used.
    local db="bench_$(date +%s%N)_$RANDOM"
    psql -q "$CSG_TEST_PG_URL" -c "CREATE DATABASE $db" >/dev/null
    url=${CSG_TEST_PG_URL/\/postgres\?//$db?}
    state_extra="backend = \"postgres\"
url = \"$url\"
pool_size = 16"
  fi
  PORTS=()
  NODE_DIRS=()
  NODE_PIDS=()
  local queue=""
  if [ "$mode" = spool ]; then
    queue="[queue]
mode = \"spool\"
min_free_space = 0
max_messages = 1000000"
  fi
  for n in $(seq 1 "$count"); do
    local d="$WORK/leg-$(date +%s%N)-$backend-$count-$mode-$n"
    mkdir -p "$d"
    local port
    port=$(free_port)
    cat >"$d/gw.toml" <<EOF
[server]
listen = ["127.0.0.1:$port"]
hostname = "node$n.bench.test"
max_message_size = 104857600
max_connections = 1024
[relay]
next_hop = "127.0.0.1:$SINK_PORT"
tls = "off"
xforward = false
pool_size = 64
[cryptshare]
url = "http://127.0.0.1:$SIM_PORT"
client_id = "BenchClientId0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHI"
[state]
dir = "$d/state"
$state_extra
$queue
[[policy]]
name = "bench"
senders = ["*@convert.test"]
threshold = 65536
on_error = "tempfail"
password_mode = "generated"
EOF
    RUST_LOG=warn "$BIN" serve --config "$d/gw.toml" 2>"$d/log" &
    NODE_PIDS+=($!)
    PORTS+=("$port")
    NODE_DIRS+=("$d")
  done
  for p in "${PORTS[@]}"; do wait_port "$p"; done
  QUEUE_URL=$url
}

stop_nodes() {
  for p in "${NODE_PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${NODE_PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  NODE_PIDS=()
}

# smtp-source spread over the nodes: SESSIONS sessions and MESSAGES messages in all.
source_all() {
  local count=${#PORTS[@]} i=0 srcs=()
  for p in "${PORTS[@]}"; do
    i=$((i + 1))
    smtp-source -s $((SESSIONS / count)) -m $((MESSAGES / count)) -l "$LENGTH" \
      -f bench@plain.test -t rcpt@example.net "127.0.0.1:$p" &
    srcs+=($!)
  done
  for s in "${srcs[@]}"; do wait "$s"; done
}

queued() { # messages still in the queue of the running nodes
  if [ -n "$QUEUE_URL" ]; then
    psql -qtA "$QUEUE_URL" -c "SELECT count(*) FROM csgw_queue"
  else
    find "${NODE_DIRS[0]}/state/queue/active" -type f ! -name '*.env' 2>/dev/null | wc -l
  fi
}

leg_pass() { # backend count -> msg/s
  start_nodes "$1" "$2" inline
  local t0 t1
  t0=$(now); source_all; t1=$(now)
  stop_nodes
  python3 -c "print(f'{$MESSAGES / ($t1 - $t0):.0f}')"
}

leg_spool() {
  start_nodes "$1" "$2" spool
  local t0 t1
  t0=$(now); source_all
  while [ "$(queued)" != 0 ]; do sleep 0.05; done
  t1=$(now)
  stop_nodes
  python3 -c "print(f'{$MESSAGES / ($t1 - $t0):.0f}')"
}

leg_convert() {
  start_nodes "$1" "$2" inline
  local rate
  rate=$(python3 - "$CONVERSIONS" "$CLIENTS" "$RANDOM$RANDOM" "${PORTS[@]}" <<'PY'
import base64, concurrent.futures, os, smtplib, sys, time
total, clients, tag, ports = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], [int(p) for p in sys.argv[4:]]
body = base64.encodebytes(os.urandom(128 * 1024)).replace(b"\n", b"\r\n")
def message(n):
    return (f"From: Bench <bench@convert.test>\r\nTo: rcpt@example.net\r\nSubject: convert {n}\r\n"
            f"Message-ID: <bench-{tag}-{n}@convert.test>\r\nMIME-Version: 1.0\r\n"
            "Content-Type: multipart/mixed; boundary=\"b\"\r\n\r\n--b\r\n"
            "Content-Type: text/plain\r\n\r\nThe figures.\r\n--b\r\n"
            f"Content-Type: application/octet-stream; name=\"f{n}.bin\"\r\n"
            f"Content-Disposition: attachment; filename=\"f{n}.bin\"\r\n"
            "Content-Transfer-Encoding: base64\r\n\r\n").encode() + body + b"--b--\r\n"
def send(n):
    s = smtplib.SMTP("127.0.0.1", ports[n % len(ports)], timeout=120)
    s.sendmail("bench@convert.test", ["rcpt@example.net"], message(n))
    s.quit()
t = time.monotonic()
with concurrent.futures.ThreadPoolExecutor(clients) as pool:
    list(pool.map(send, range(total)))
print(f"{total / (time.monotonic() - t):.1f}")
PY
)
  for d in "${NODE_DIRS[@]}"; do
    if grep -q '"level":"ERROR"\|ERROR' "$d/log"; then echo "errors in $d/log" >&2; fi
  done
  stop_nodes
  echo "$rate"
}

LEGS=("file 1" "postgres 1" "postgres 3")
declare -A R
echo "messages $MESSAGES x $LENGTH B (sessions $SESSIONS), conversions $CONVERSIONS (clients $CLIENTS), rounds $ROUNDS"
printf '%-6s %-12s %10s %10s %12s\n' round leg "pass msg/s" "spool msg/s" "conversions/s"
for r in $(seq 1 "$ROUNDS"); do
  for leg in "${LEGS[@]}"; do
    set -- $leg
    p=$(leg_pass "$1" "$2"); s=$(leg_spool "$1" "$2"); c=$(leg_convert "$1" "$2")
    R["$1/$2 pass"]+="$p "; R["$1/$2 spool"]+="$s "; R["$1/$2 convert"]+="$c "
    printf '%-6s %-12s %10s %10s %12s\n' "$r" "$1/$2" "$p" "$s" "$c"
  done
done

median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
echo
echo "medians, and ratios to file/1 of the same run:"
printf '%-12s %10s %7s %10s %7s %12s %7s\n' leg pass ratio spool ratio conversions ratio
for w in pass spool convert; do eval "base_$w=$(echo "${R["file/1 $w"]}" | median)"; done
for leg in "${LEGS[@]}"; do
  set -- $leg
  p=$(echo "${R["$1/$2 pass"]}" | median); s=$(echo "${R["$1/$2 spool"]}" | median); c=$(echo "${R["$1/$2 convert"]}" | median)
  printf '%-12s %10s %7.2f %10s %7.2f %12s %7.2f\n' "$1/$2" "$p" "$(echo "$p / $base_pass" | bc -l)" \
    "$s" "$(echo "$s / $base_spool" | bc -l)" "$c" "$(echo "$c / $base_convert" | bc -l)"
done
