#!/usr/bin/env bash
# Spool-mode intake benchmark (issue 13): how fast messages are accepted into a durable queue,
# the gateway in spool mode (fsync'd queue, 250 "queued as") against Postfix's own smtpd ->
# cleanup -> queue (a private Postfix instance, default_transport = discard, so that its queue
# manager empties the queue behind it as the gateway's scheduler does), in the same run.
# smtp-source, SESSIONS parallel sessions, LENGTH-byte messages; the legs alternate for ROUNDS
# rounds. Prints messages/s of every leg, the medians and the ratio gateway / Postfix.
#
# Usage: bench/spool-bench.sh [MESSAGES]           (default 5000 per leg and round)
# Environment: ROUNDS (3), SESSIONS (20), LENGTH (5120; e.g. 1048576 for 1 MB messages),
#   SKIP_BUILD=1, BIN (default target/release/cryptshare-gateway).
# Needs root (Postfix's master), postfix (postfix, smtp-source, smtp-sink), python3, cargo.
# Loopback only; the gateway delivers to smtp-sink, Postfix to discard(8).
set -euo pipefail
cd "$(dirname "$0")/.."
PATH="$PATH:/usr/sbin"

MESSAGES=${1:-5000}
ROUNDS=${ROUNDS:-3}
SESSIONS=${SESSIONS:-20}
LENGTH=${LENGTH:-5120}
BIN=${BIN:-target/release/cryptshare-gateway}

for tool in postfix postconf smtp-source smtp-sink python3; do
  command -v "$tool" >/dev/null || { echo "missing $tool (apt-get install -y postfix python3)" >&2; exit 1; }
done
if [ "${SKIP_BUILD:-}" != 1 ]; then
  cargo build --release --bin cryptshare-gateway
fi
[ -x "$BIN" ] || { echo "no $BIN" >&2; exit 1; }

# shellcheck source=bench/lib.sh
. bench/lib.sh
bench_before_cleanup() {
  postfix -c "$WORK/pf/conf" stop >/dev/null 2>&1 || true
}
bench_workdir /var/tmp/spool-bench.XXXXXX
chmod 755 "$WORK"

# --- Postfix: smtpd -> queue -> discard
PF=$WORK/pf
mkdir -p "$PF/conf" "$PF/queue" "$PF/data"
chown postfix "$PF/data"
PF_PORT=$(free_port)
read -r CMD_DIR DAEMON_DIR META_DIR SHLIB_DIR < <(postconf -d -h command_directory daemon_directory meta_directory shlib_directory | tr '\n' ' '; echo)
cat > "$PF/conf/main.cf" <<EOF
compatibility_level = 3.6
queue_directory = $PF/queue
data_directory = $PF/data
command_directory = $CMD_DIR
daemon_directory = $DAEMON_DIR
meta_directory = $META_DIR
shlib_directory = $SHLIB_DIR
mail_owner = postfix
setgid_group = postdrop
inet_interfaces = loopback-only
inet_protocols = ipv4
myhostname = postfix.bench.test
mydestination =
local_recipient_maps =
alias_maps =
alias_database =
mynetworks = 127.0.0.0/8
smtpd_relay_restrictions = permit_mynetworks, reject
default_transport = discard
message_size_limit = 0
default_process_limit = 100
maillog_file = $PF/maillog
maillog_file_prefixes = $PF
EOF
cat > "$PF/conf/master.cf" <<EOF
127.0.0.1:$PF_PORT inet n - n - - smtpd
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
smtp      unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
EOF
postfix -c "$PF/conf" check
postfix -c "$PF/conf" start >/dev/null
wait_port "$PF_PORT"

# --- the gateway in spool mode, delivering to smtp-sink
start_sink 256
GW_PORT=$(free_port)
mkdir -p "$WORK/gw"
cat > "$WORK/gw/gw.toml" <<EOF
[server]
listen = ["127.0.0.1:$GW_PORT"]
hostname = "gw.bench.test"
max_message_size = 104857600
max_connections = 1024
[relay]
next_hop = "127.0.0.1:$SINK_PORT"
tls = "off"
xforward = false
[cryptshare]
url = "embedded"
client_id = "BenchClientId0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHI"
[queue]
mode = "spool"
min_free_space = 0
max_messages = 1000000
[state]
dir = "$WORK/gw/state"
EOF
RUST_LOG=warn "$BIN" serve --config "$WORK/gw/gw.toml" 2>"$WORK/gw/log" &
PIDS+=($!)
wait_port "$GW_PORT"

run_leg() { # port
  local start end
  start=$(date +%s.%N)
  smtp-source -s "$SESSIONS" -m "$MESSAGES" -l "$LENGTH" -f bench@example.org -t rcpt@example.net "127.0.0.1:$1"
  end=$(date +%s.%N)
  python3 -c "print(round($MESSAGES / ($end - $start)))"
}

GW=() PFX=()
for r in $(seq 1 "$ROUNDS"); do
  g=$(run_leg "$GW_PORT"); GW+=("$g")
  p=$(run_leg "$PF_PORT"); PFX+=("$p")
  echo "round $r: gateway spool $g msg/s, postfix smtpd->queue $p msg/s"
done
python3 - "${GW[*]}" "${PFX[*]}" <<'EOF'
import statistics, sys
g = [int(x) for x in sys.argv[1].split()]
p = [int(x) for x in sys.argv[2].split()]
mg, mp = statistics.median(g), statistics.median(p)
print(f"median: gateway spool {mg:.0f} msg/s, postfix {mp:.0f} msg/s, ratio {mg/mp:.2f}")
EOF
echo "gateway queue left (being delivered to smtp-sink): $(ls "$WORK/gw/state/queue/active" | wc -l)"
