#!/usr/bin/env bash
# System calls per message (issue 16): `perf stat -e 'syscalls:sys_enter_*'` on the gateway and
# on smtp-sink while smtp-source sends MESSAGES 5 KB messages, once through the gateway (its
# calls, and smtp-sink's on the gateway's pooled connections) and once straight to smtp-sink.
# Prints, per message, the calls that matter for a relay: reads, writes, readiness waits,
# futex (cross-thread wake-ups) and context switches. The same table in BENCHMARKS.md explains
# the pass-through floor.
#
# Usage: bench/relay-syscalls.sh [MESSAGES]       (default 20000)
# Environment: SESSIONS (20), SOURCE_OPTS (e.g. "-d": one connection per session), BIN (the
#   gateway binary, default target/release/cryptshare-gateway), SKIP_BUILD=1, RUST_LOG (info).
# Needs: postfix (smtp-source, smtp-sink), perf (linux-perf) with tracepoints readable (root, or
#   kernel.perf_event_paranoid <= -1), python3. Everything listens on 127.0.0.1 only.
set -euo pipefail
cd "$(dirname "$0")/.."
PATH="$PATH:/usr/sbin"

MESSAGES=${1:-20000}
SESSIONS=${SESSIONS:-20}
SOURCE_OPTS=${SOURCE_OPTS:-}
BIN=${BIN:-target/release/cryptshare-gateway}

for tool in smtp-source smtp-sink perf python3; do
  command -v "$tool" >/dev/null || { echo "missing $tool (apt-get install -y postfix linux-perf python3)" >&2; exit 1; }
done
if [ "${SKIP_BUILD:-}" != 1 ]; then
  cargo build --release --bin cryptshare-gateway
fi

# shellcheck source=bench/lib.sh
. bench/lib.sh
bench_workdir

start_sink 256
GW_PORT=$(free_port)
XFORWARD=0 pass_config "$WORK/gw.toml" "$GW_PORT" "$WORK/state"
bench_serve "$WORK/gw.toml" "$GW_PORT" "$WORK/gw.log"
GW_PID=$SERVE_PID

EVENTS="syscalls:sys_enter_recvfrom,syscalls:sys_enter_read,syscalls:sys_enter_sendto,syscalls:sys_enter_write,syscalls:sys_enter_poll,syscalls:sys_enter_epoll_wait,syscalls:sys_enter_futex,context-switches"

# perf stat on the given pids while one smtp-source run goes to the port; CSV in $WORK/$name.
measure() { # name port pid...
  local name=$1 port=$2
  shift 2
  local pids
  pids=$(IFS=,; echo "$*")
  perf stat -x, -e "$EVENTS" -p "$pids" --per-thread -o "$WORK/$name.csv" &
  local perf_pid=$!
  # perf needs a moment to attach; poll for its output file header instead of sleeping blindly.
  for _ in $(seq 1 500); do [ -s "$WORK/$name.csv" ] && break; sleep 0.01; done
  # shellcheck disable=SC2086
  smtp-source $SOURCE_OPTS -s "$SESSIONS" -m "$MESSAGES" -l 5120 \
    -f sender@example.org -t rcpt@example.net "127.0.0.1:$port"
  kill -INT "$perf_pid"
  wait "$perf_pid" || true
}

measure via "$GW_PORT" "$GW_PID" "$SINK_PID"
cp "$WORK/via.csv" "$WORK/via-sink.csv"
measure direct "$SINK_PORT" "$SINK_PID"

python3 - "$WORK" "$MESSAGES" "$GW_PID" "$SINK_PID" <<'PY'
import collections, csv, sys
work, n, gw, sink = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]

def totals(path):
    # --per-thread lines: "comm-tid,count,unit,event,...": sum the threads of each process.
    per = collections.defaultdict(lambda: collections.Counter())
    for row in csv.reader(l for l in open(path) if l.strip() and not l.startswith("#")):
        if len(row) < 4 or not row[1].strip().isdigit():
            continue
        tid = row[0].rsplit("-", 1)[-1]
        try:
            pid = open(f"/proc/{tid}/status").read().split("Tgid:")[1].split()[0]
        except OSError:
            pid = tid
        per[pid][row[3].split(":")[-1].replace("sys_enter_", "")] += int(row[1])
    return per

cols = [("recvfrom", "read"), ("sendto", "write"), ("poll",), ("epoll_wait",), ("futex",), ("context-switches",)]
heads = ["recvfrom+read", "sendto+write", "poll", "epoll_wait", "futex", "context switches", "sum of the calls"]
via, direct = totals(f"{work}/via.csv"), totals(f"{work}/direct.csv")
print(f"per message, {n} messages")
print("| process | " + " | ".join(heads) + " |")
print("|---" * (len(heads) + 1) + "|")
for label, c in [("gateway", via[gw]), ("smtp-sink behind the gateway", via[sink]), ("smtp-sink direct", direct[sink])]:
    vals = [sum(c[k] for k in col) / n for col in cols]
    allc = sum(v for k, v in c.items() if k != "context-switches") / n
    print(f"| {label} | " + " | ".join(f"{v:.2f}" for v in vals) + f" | {allc:.2f} |")
PY
