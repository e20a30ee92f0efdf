#!/usr/bin/env bash
# STARTTLS per connection (issue 16): every message on a new connection with a full TLS
# handshake (no session resumption), the gateway (STARTTLS on its listener, pass-through relay
# to smtp-sink) against Postfix smtpd with STARTTLS (a private Postfix instance relaying to the
# same smtp-sink), with the same certificate, for an ECDSA P-256 and an RSA-2048 certificate
# (self-signed, made with openssl for the run). The four legs alternate for ROUNDS rounds;
# prints msg/s of every leg, the medians and the ratios gateway / Postfix.
#
# Client: examples/smtp_load.rs (--new-connection --starttls --insecure: the handshake
# signature is verified, the chain is not), SESSIONS parallel sessions, LENGTH-octet messages,
# key exchange KX (x25519 by default, because Postfix's OpenSSL 3.0 has no X25519MLKEM768,
# which rustls would otherwise negotiate with the gateway; KX=default measures that).
#
# Usage: bench/tls-bench.sh [MESSAGES]          (default 2000 per leg and round)
# Environment: ROUNDS (3), SESSIONS (20), LENGTH (5120), KX (x25519), SKIP_BUILD=1,
#   BIN (the gateway, default $CARGO_TARGET_DIR/release/cryptshare-gateway),
#   LOAD (default $CARGO_TARGET_DIR/release/examples/smtp_load).
# Needs root (Postfix's master), postfix (postfix, postconf, smtp-sink), openssl, python3,
# cargo. Loopback only.
#
# What differs between the legs: Postfix's smtpd answers 250 once cleanup has written the
# message to its queue (fsync), its qmgr and smtp deliver to smtp-sink behind it; the gateway
# answers with smtp-sink's own 250 (cut-through, no disk), over pooled connections.
set -euo pipefail
cd "$(dirname "$0")/.."
PATH="$PATH:/usr/sbin"

MESSAGES=${1:-2000}
ROUNDS=${ROUNDS:-3}
SESSIONS=${SESSIONS:-20}
LENGTH=${LENGTH:-5120}
KX=${KX:-x25519}
TGT=${CARGO_TARGET_DIR:-target}
BIN=${BIN:-$TGT/release/cryptshare-gateway}
LOAD=${LOAD:-$TGT/release/examples/smtp_load}

for tool in postfix postconf smtp-sink openssl python3; do
  command -v "$tool" >/dev/null || { echo "missing $tool (apt-get install -y postfix openssl python3)" >&2; exit 1; }
done
if [ "${SKIP_BUILD:-}" != 1 ]; then
  cargo build --release --bin cryptshare-gateway --example smtp_load
fi
[ -x "$BIN" ] || { echo "no $BIN" >&2; exit 1; }
[ -x "$LOAD" ] || { echo "no $LOAD" >&2; exit 1; }

# shellcheck source=bench/lib.sh
. bench/lib.sh
bench_before_cleanup() {
  postfix -c "$WORK/pf/conf" stop >/dev/null 2>&1 || true
}
bench_workdir /var/tmp/tls-bench.XXXXXX
chmod 755 "$WORK"

# --- certificates: localhost / 127.0.0.1, self-signed
for kind in ec rsa; do
  case $kind in
    ec) newkey=(-newkey ec -pkeyopt ec_paramgen_curve:prime256v1) ;;
    rsa) newkey=(-newkey rsa:2048) ;;
  esac
  openssl req -x509 "${newkey[@]}" -nodes -days 2 -subj /CN=localhost \
    -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" \
    -keyout "$WORK/$kind.key" -out "$WORK/$kind.crt" 2>/dev/null
  cat "$WORK/$kind.key" "$WORK/$kind.crt" >"$WORK/$kind.pem"   # Postfix: key, then chain
  chmod 644 "$WORK/$kind.key" "$WORK/$kind.pem"
done

start_sink 256

# --- Postfix: smtpd with STARTTLS (one listener per certificate) -> queue -> smtp -> smtp-sink
PF=$WORK/pf
mkdir -p "$PF/conf" "$PF/queue" "$PF/data"
chown postfix "$PF/data"
PF_EC=$(free_port)
PF_RSA=$(free_port)
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
relayhost = [127.0.0.1]:$SINK_PORT
smtp_tls_security_level = none
smtpd_tls_security_level = may
smtpd_tls_loglevel = 0
message_size_limit = 0
default_process_limit = 100
maillog_file = $PF/maillog
maillog_file_prefixes = $PF
EOF
cat > "$PF/conf/master.cf" <<EOF
127.0.0.1:$PF_EC inet n - n - - smtpd -o smtpd_tls_chain_files=$WORK/ec.pem
127.0.0.1:$PF_RSA inet n - n - - smtpd -o smtpd_tls_chain_files=$WORK/rsa.pem
tlsmgr    unix  -       -       n       1000?   1       tlsmgr
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
wait_port "$PF_EC"
wait_port "$PF_RSA"

# --- the gateway, one process per certificate: STARTTLS, pass-through to smtp-sink
start_gateway() { # kind; sets GW_PORT
  local kind=$1 port
  port=$(free_port)
  mkdir -p "$WORK/gw-$kind"
  cat > "$WORK/gw-$kind/gw.toml" <<EOF
[server]
listen = ["127.0.0.1:$port"]
hostname = "gw.bench.test"
max_connections = 512
[server.tls]
cert = "$WORK/$kind.crt"
key = "$WORK/$kind.key"
[relay]
next_hop = "127.0.0.1:$SINK_PORT"
tls = "off"
pool_size = 64
xforward = false
[state]
dir = "$WORK/gw-$kind/state"
EOF
  bench_serve "$WORK/gw-$kind/gw.toml" "$port" "$WORK/gw-$kind/log"
  GW_PORT=$port
}
start_gateway ec; GW_EC=$GW_PORT
start_gateway rsa; GW_RSA=$GW_PORT

run_leg() { # port; prints msg/s
  local out
  out=$("$LOAD" --server "127.0.0.1:$1" -n "$MESSAGES" -c "$SESSIONS" --size "$LENGTH" \
    --new-connection --starttls --insecure --server-name localhost --kx "$KX" 2>"$WORK/load.err") \
    || { cat "$WORK/load.err" >&2; exit 3; }
  sed -n 's/.* msg_s=\([0-9.]*\) .*/\1/p' <<<"$out"
}

echo "machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //'), load $(cut -d' ' -f1-3 /proc/loadavg)"
echo "messages=$MESSAGES per leg, sessions=$SESSIONS, length=$LENGTH, rounds=$ROUNDS, kx=$KX, $(postconf -h mail_version | sed 's/^/Postfix /'), $(openssl version | cut -d' ' -f1-2)"
GE=() PE=() GR=() PR=()
for r in $(seq 1 "$ROUNDS"); do
  ge=$(run_leg "$GW_EC"); GE+=("$ge")
  pe=$(run_leg "$PF_EC"); PE+=("$pe")
  gr=$(run_leg "$GW_RSA"); GR+=("$gr")
  pr=$(run_leg "$PF_RSA"); PR+=("$pr")
  echo "round $r: ECDSA P-256: gateway $ge msg/s, postfix $pe msg/s; RSA-2048: gateway $gr msg/s, postfix $pr msg/s"
done
python3 - "${GE[*]}" "${PE[*]}" "${GR[*]}" "${PR[*]}" <<'EOF'
import statistics, sys
ge, pe, gr, pr = ([float(x) for x in a.split()] for a in sys.argv[1:5])
for name, g, p in (("ECDSA P-256", ge, pe), ("RSA-2048", gr, pr)):
    mg, mp = statistics.median(g), statistics.median(p)
    print(f"median {name}: gateway {mg:.0f} msg/s, postfix {mp:.0f} msg/s, ratio gateway/postfix {mg/mp:.2f}")
EOF
if [ "${RUST_LOG:-info}" = info ]; then
  for kind in ec rsa; do
    relayed=$(grep -c 'outcome="250 ' "$WORK/gw-$kind/log" || true)
    echo "gateway ($kind) relayed $relayed of $((MESSAGES * ROUNDS)) messages with 250"
  done
fi
