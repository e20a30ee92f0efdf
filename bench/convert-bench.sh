#!/usr/bin/env bash
# Conversion benchmark (BENCHMARKS.md, section "Conversion").
#
# For each size in $SIZES (MB of attachment, default 100): one message with one attachment of that
# many random bytes (base64, 76-column lines) is sent over SMTP (Python smtplib, pre-dot-stuffed)
#   1. straight to the next hop (Postfix smtp-sink)                         -> "direct"
#   2. through the gateway from a sender without a policy rule             -> "pass"  (the floor)
#   3. through the gateway from a sender whose rule converts it           -> "convert"
#      (embedded Cryptshare emulator: files written to disk, SHA-256 verified, rewrite, relay)
# Time = from the DATA command to the final reply. Each gateway run is a fresh process; its peak
# RSS is VmHWM from /proc/PID/status, read after the reply. VmHWM counts the pages of the
# memory-mapped spool file too (page cache, not heap), so RssAnon (heap, stacks) and RssFile
# (mapped files) are also sampled every 5 ms during the transaction and their peaks shown.
#
# Needs: a release build (built if missing), python3, smtp-sink (apt-get install postfix).
# Usage: bench/convert-bench.sh            SIZES="25 100" bench/convert-bench.sh
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=${BIN:-$ROOT/target/release/cryptshare-gateway}
SIZES=${SIZES:-100}
RUNS=${RUNS:-1}

if [ ! -x "$BIN" ]; then
    (cd "$ROOT" && cargo build --release --bin cryptshare-gateway)
fi
command -v smtp-sink >/dev/null || { echo "smtp-sink missing: apt-get install postfix" >&2; exit 1; }

# shellcheck source=bench/lib.sh
. "$ROOT/bench/lib.sh"
bench_workdir "${TMPDIR:-/tmp}/convert-bench.XXXXXX"

# The next hop: smtp-sink discards everything (no dump), answers 250.
start_sink 64
python3 - "$SINK_PORT" <<'PY'
import socket, sys, time
for _ in range(500):
    try:
        socket.create_connection(("127.0.0.1", int(sys.argv[1]))).close(); break
    except OSError:
        time.sleep(0.02)
PY

make_message() { # $1 = MB, $2 = file
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
    chunk = 57 * 16384  # whole base64 lines per chunk
    left = mb * 1024 * 1024
    while left:
        n = min(chunk, left); left -= n
        b = base64.b64encode(os.urandom(n))
        f.write(b"".join(b[i:i + 76] + b"\r\n" for i in range(0, len(b), 76)))
    f.write(b"--b--\r\n")
PY
}

# Prints "seconds peak-RssAnon-MB peak-RssFile-MB" (from DATA to the final reply; the two peaks
# sampled from /proc/$4/status every 5 ms while the transaction runs, "-" without a pid);
# fails unless the reply is 250.
send() { # $1 = port, $2 = sender, $3 = message file, $4 = gateway pid or 0
    python3 - "$1" "$2" "$3" "$4" <<'PY'
import re, smtplib, sys, threading, time
port, sender, path, pid = int(sys.argv[1]), sys.argv[2], sys.argv[3], int(sys.argv[4])
data = open(path, "rb").read()
data = re.sub(rb"(?m)^\.", b"..", data) + b".\r\n"
peak = {"RssAnon": 0, "RssFile": 0}
done = threading.Event()
def sample():
    while not done.is_set():
        try:
            for line in open(f"/proc/{pid}/status"):
                k, _, v = line.partition(":")
                if k in peak:
                    peak[k] = max(peak[k], int(v.split()[0]))
        except OSError:
            pass
        time.sleep(0.005)
s = smtplib.SMTP("127.0.0.1", port, timeout=900)
s.ehlo("bench.client")
code, msg = s.mail(sender); assert code == 250, (code, msg)
code, msg = s.rcpt("rcpt@example.net"); assert code == 250, (code, msg)
if pid:
    threading.Thread(target=sample, daemon=True).start()
t = time.monotonic()
s.putcmd("data"); code, msg = s.getreply(); assert code == 354, (code, msg)
s.sock.sendall(data)
code, msg = s.getreply()
dt = time.monotonic() - t
done.set()
assert code == 250, (code, msg)
s.quit()
if pid:
    print(f"{dt:.3f} {peak['RssAnon']/1024:.1f} {peak['RssFile']/1024:.1f}")
else:
    print(f"{dt:.3f} - -")
PY
}

start_gateway() { # $1 = dir; sets GW_PID, GW_PORT
    local d=$1
    mkdir -p "$d"
    cat > "$d/gw.toml" <<TOML
[server]
listen = ["127.0.0.1:0"]
hostname = "bench.gateway"
max_message_size = 1073741824
[relay]
next_hop = "127.0.0.1:$SINK_PORT"
tls = "off"
[cryptshare]
url = "embedded"
embedded_data_dir = "$d/sim"
timeout = 120
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
    "$BIN" serve --config "$d/gw.toml" --log-format json 2> "$d/log" &
    GW_PID=$!
    PIDS+=("$GW_PID")
    GW_PORT=""
    for _ in $(seq 1 1000); do
        GW_PORT=$(sed -n 's/.*"listen":"127\.0\.0\.1:\([0-9]*\)".*SMTP listener ready.*/\1/p; s/.*SMTP listener ready.*"listen":"127\.0\.0\.1:\([0-9]*\)".*/\1/p' "$d/log" | head -1)
        [ -n "$GW_PORT" ] && break
        kill -0 "$GW_PID" || { cat "$d/log" >&2; exit 1; }
        sleep 0.02
    done
    [ -n "$GW_PORT" ] || { echo "gateway did not start" >&2; cat "$d/log" >&2; exit 1; }
}

stop_gateway() {
    kill "$GW_PID"; wait "$GW_PID" 2>/dev/null || true
}

hwm_mb() { awk '/VmHWM/ {printf "%.1f", $2/1024}' "/proc/$1/status"; }

row() { # path, MB, "seconds anon file", hwm
    set -- "$1" "$2" $3 "$4"
    printf '%-8s %-9s %9s %9.1f %10s %12s %12s\n' "$2" "$1" "$3" "$(echo "$2 / $3" | bc -l)" "$6" "$4" "$5"
}

printf '%-8s %-9s %9s %9s %10s %12s %12s\n' "MB" "path" "seconds" "MB/s" "VmHWM MB" "RssAnon MB" "RssFile MB"
for mb in $SIZES; do
    msg="$WORK/msg-$mb.eml"
    make_message "$mb" "$msg"
    for run in $(seq 1 "$RUNS"); do
        row direct "$mb" "$(send "$SINK_PORT" "bench@plain.test" "$msg" 0)" "-"

        start_gateway "$WORK/pass-$mb-$run"
        r_pass=$(send "$GW_PORT" "bench@plain.test" "$msg" "$GW_PID")
        row pass "$mb" "$r_pass" "$(hwm_mb "$GW_PID")"
        stop_gateway

        start_gateway "$WORK/conv-$mb-$run"
        r_conv=$(send "$GW_PORT" "bench@convert.test" "$msg" "$GW_PID")
        row convert "$mb" "$r_conv" "$(hwm_mb "$GW_PID")"
        grep -q '"decision":"convert"' "$WORK/conv-$mb-$run/audit.jsonl" || { echo "not converted" >&2; exit 1; }
        stop_gateway
        printf '%-8s %-9s %9.2f  (convert / pass)\n' "$mb" ratio "$(echo "${r_conv%% *} / ${r_pass%% *}" | bc -l)"
    done
    rm -f "$msg"
done
