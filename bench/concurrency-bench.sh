#!/usr/bin/env bash
# Concurrent large mail (issue 16): COUNT messages with one attachment of MB MiB each, all
# sent at once over COUNT parallel sessions (examples/smtp_load.rs, one connection each), in
# three legs per case and round:
#   convert: through the gateway from a sender whose policy rule converts (embedded Cryptshare
#            emulator in the gateway's process: files to disk, SHA-256 verified, rewrite, relay)
#   pass:    the same bytes through the gateway from a sender without a rule (cut-through)
#   direct:  the same bytes straight to smtp-sink (the client's and the sink's own cost)
# Each gateway leg runs a fresh gateway process, so that its VmHWM (peak RSS, read at the end)
# is this leg's; RssAnon (heap, stacks) and RssFile (mapped spool files) are sampled every 5 ms
# and their peaks shown (VmHWM counts spool-file pages as well). Prints, per leg: seconds for
# all COUNT messages, aggregate attachment MiB/s, the gateway's CPU seconds and attachment MiB
# per CPU second, VmHWM, peak RssAnon, peak RssFile; then the ratios convert / pass per case
# (medians over ROUNDS).
#
# CASES="20x20 50x2" (default): 20 concurrent 20 MiB and 50 concurrent 2 MiB conversions.
# CASES="1x100": one 100 MiB attachment (attachment throughput: analysis, hashing, upload,
# rewrite; the 100 MiB attachment is a 138 MB message).
#
# Usage: bench/concurrency-bench.sh        CASES="1x100" ROUNDS=5 bench/concurrency-bench.sh
# Environment: CASES, ROUNDS (2), SKIP_BUILD=1, BIN, LOAD (as in tls-bench.sh), LEGS
#   ("convert pass direct").
# Needs: postfix (smtp-sink), python3, cargo. Loopback only; the message files and the
# emulator's data go to a temporary directory ($TMPDIR, /tmp by default).
set -euo pipefail
cd "$(dirname "$0")/.."
PATH="$PATH:/usr/sbin"

CASES=${CASES:-20x20 50x2}
ROUNDS=${ROUNDS:-2}
LEGS=${LEGS:-convert pass direct}
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
bench_workdir "${TMPDIR:-/tmp}/concurrency-bench.XXXXXX"

start_sink 256

make_message() { # MiB, file: multipart/mixed, a text body, one base64 attachment of random bytes
  python3 - "$1" "$2" <<'PY'
import base64, os, sys
mb, path = int(sys.argv[1]), sys.argv[2]
with open(path, "wb") as f:
    f.write(b"From: Bench Sender <bench@example.org>\r\nTo: rcpt@example.net\r\n"
            b"Subject: benchmark\r\nMessage-ID: <bench@example.org>\r\nMIME-Version: 1.0\r\n"
            b"Content-Type: multipart/mixed; boundary=\"b\"\r\n\r\n--b\r\n"
            b"Content-Type: text/plain; charset=utf-8\r\n\r\nHello.\r\n--b\r\n"
            b"Content-Type: application/octet-stream; name=\"data.bin\"\r\n"
            b"Content-Disposition: attachment; filename=\"data.bin\"\r\n"
            b"Content-Transfer-Encoding: base64\r\n\r\n")
    chunk = 57 * 16384
    left = mb * 1024 * 1024
    while left:
        n = min(chunk, left); left -= n
        b = base64.b64encode(os.urandom(n))
        f.write(b"".join(b[i:i + 76] + b"\r\n" for i in range(0, len(b), 76)))
    f.write(b"--b--\r\n")
PY
}

start_gateway() { # dir; sets GW_PID, GW_PORT
  local d=$1
  mkdir -p "$d"
  GW_PORT=$(free_port)
  cat > "$d/gw.toml" <<TOML
[server]
listen = ["127.0.0.1:$GW_PORT"]
hostname = "bench.gateway"
max_message_size = 1073741824
[relay]
next_hop = "127.0.0.1:$SINK_PORT"
tls = "off"
xforward = false
[cryptshare]
url = "embedded"
embedded_data_dir = "$d/sim"
timeout = 300
[state]
dir = "$d/state"
[audit]
file = "$d/audit.jsonl"
[[policy]]
name = "bench"
senders = ["*@convert.test"]
threshold = 1048576
on_error = "tempfail"
TOML
  RUST_LOG=warn "$BIN" serve --config "$d/gw.toml" >"$d/log" 2>&1 &
  GW_PID=$!
  PIDS+=("$GW_PID")
  wait_port "$GW_PORT" || { cat "$d/log" >&2; exit 2; }
}

stop_gateway() { kill "$GW_PID"; wait "$GW_PID" 2>/dev/null || true; }

cpu_s() { awk -v t="$(getconf CLK_TCK)" '{printf "%.3f", ($14 + $15) / t}' "/proc/$1/stat"; }
hwm_mb() { awk '/VmHWM/ {printf "%.1f", $2/1024}' "/proc/$1/status"; }

# Samples RssAnon/RssFile of $1 every 5 ms until $2 exists; prints "anon_mb file_mb".
sampler() {
  python3 - "$1" "$2" <<'PY'
import os, sys, time
pid, stop = sys.argv[1], sys.argv[2]
peak = {"RssAnon": 0, "RssFile": 0}
while not os.path.exists(stop):
    try:
        for line in open(f"/proc/{pid}/status"):
            k, _, v = line.partition(":")
            if k in peak:
                peak[k] = max(peak[k], int(v.split()[0]))
    except OSError:
        break
    time.sleep(0.005)
print(f"{peak['RssAnon']/1024:.1f} {peak['RssFile']/1024:.1f}")
PY
}

# One leg; sets LEG_RES to "seconds MiB/s cpu_s MiB/cpu_s vmhwm anon file".
run_leg() { # leg count mb msgfile round
  local leg=$1 count=$2 mb=$3 msg=$4 round=$5 port from out secs d="" stop samp cpu0 cpu1
  case $leg in
    convert) from=bench@convert.test ;;
    *) from=bench@plain.test ;;
  esac
  if [ "$leg" = direct ]; then
    port=$SINK_PORT
  else
    d="$WORK/$leg-${count}x$mb-$round"
    start_gateway "$d"
    port=$GW_PORT
    stop="$d/stop"
    sampler "$GW_PID" "$stop" >"$d/peaks" &
    samp=$!
    cpu0=$(cpu_s "$GW_PID")
  fi
  out=$("$LOAD" --server "127.0.0.1:$port" -n "$count" -c "$count" --eml "$msg" --from "$from" 2>"$WORK/load.err") \
    || { cat "$WORK/load.err" >&2; [ -z "$d" ] || tail -5 "$d/log" >&2; exit 3; }
  secs=$(sed -n 's/.* seconds=\([0-9.]*\) .*/\1/p' <<<"$out")
  if [ "$leg" = direct ]; then
    LEG_RES=$(python3 -c "print(f'$secs {$count * $mb / $secs:.1f} - - - - -')")
    return
  fi
  cpu1=$(cpu_s "$GW_PID")
  touch "$stop"; wait "$samp"
  if [ "$leg" = convert ]; then
    converted=$(grep -c '"decision":"convert"' "$d/audit.jsonl" || true)
    [ "$converted" -eq "$count" ] || { echo "$converted of $count converted" >&2; exit 4; }
  fi
  # CPU time comes in clock ticks (10 ms): a tiny case can measure 0 ("nan" then, not a crash).
  LEG_RES=$(python3 -c "c=$cpu1-$cpu0; print(f'$secs {$count * $mb / $secs:.1f} {c:.2f} {$count * $mb / c if c > 0 else float(\"nan\"):.1f} $(hwm_mb "$GW_PID") $(cat "$d/peaks")')")
  stop_gateway
  rm -rf "$d/sim" "$d/state"
}

echo "machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //'), load $(cut -d' ' -f1-3 /proc/loadavg)"
echo "cases=$CASES (count x MiB attachment), rounds=$ROUNDS, legs=$LEGS"
printf '%-7s %-8s %-5s %9s %11s %9s %12s %9s %11s %11s\n' case leg round seconds "att MiB/s" "CPU s" "MiB/CPU s" "VmHWM MB" "RssAnon MB" "RssFile MB"
for c in $CASES; do
  count=${c%x*} mb=${c#*x}
  msg="$WORK/msg-$mb.eml"
  make_message "$mb" "$msg"
  declare -A RES=()
  for r in $(seq 1 "$ROUNDS"); do
    for leg in $LEGS; do
      run_leg "$leg" "$count" "$mb" "$msg" "$r"
      res=$LEG_RES
      RES[$leg]+="$res;"
      read -r a b e f g h i <<<"$res"
      printf '%-7s %-8s %-5s %9s %11s %9s %12s %9s %11s %11s\n' "$c" "$leg" "$r" "$a" "$b" "$e" "$f" "$g" "$h" "$i"
    done
  done
  python3 - "$c" "${RES[convert]:-}" "${RES[pass]:-}" "${RES[direct]:-}" <<'EOF'
import statistics, sys
case = sys.argv[1]
def rows(a):
    return [r.split() for r in a.split(";") if r.strip()]
def med(rs, i):
    v = [float(r[i]) for r in rs if r[i] != "-"]
    return statistics.median(v) if v else float("nan")
legs = dict(zip(("convert", "pass", "direct"), map(rows, sys.argv[2:5])))
for name, rs in legs.items():
    if rs:
        print(f"{case} median {name}: {med(rs,0):.3f} s, {med(rs,1):.1f} attachment MiB/s, "
              f"{med(rs,3):.1f} MiB per gateway CPU s, VmHWM {med(rs,4):.1f} MB, "
              f"RssAnon {med(rs,5):.1f} MB, RssFile {med(rs,6):.1f} MB")
c, p, d = legs["convert"], legs["pass"], legs["direct"]
if c and p:
    print(f"{case} ratio convert/pass (MiB/s): {med(c,1)/med(p,1):.2f}")
if p and d:
    print(f"{case} ratio pass/direct (MiB/s): {med(p,1)/med(d,1):.2f}")
EOF
  unset RES
  rm -f "$msg"
done
