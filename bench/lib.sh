# Helpers the bench scripts share; sourced, never run. After `. bench/lib.sh`:
#   bench_workdir [TEMPLATE]  make $WORK (mktemp -d TEMPLATE), removed on exit together with every
#                             process whose pid is in PIDS (killed, then waited for). A script that
#                             has more to undo defines `bench_before_cleanup` (run first).
#   free_port                 a free TCP port on 127.0.0.1.
#   wait_port PORT [PID]      poll until something listens on PORT (at most 10 s), no fixed
#                             sleeps; with PID, give up as soon as that process has died.
#   now                       seconds since the epoch, with nanoseconds.
#   start_sink [BACKLOG]      smtp-sink on a free port: SINK_PORT, SINK_PID.
#   bench_serve CONFIG PORT LOG [BINARY]  a gateway ($BIN) in the background: SERVE_PID.
# Everything listens on loopback only.

PIDS=()

bench_cleanup() {
  if [ "$(type -t bench_before_cleanup)" = function ]; then bench_before_cleanup || true; fi
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$WORK"
}

bench_workdir() { # [template]
  if [ $# -gt 0 ]; then WORK=$(mktemp -d "$1"); else WORK=$(mktemp -d); fi
  trap bench_cleanup EXIT
}

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

wait_port() { # port [pid]
  for _ in $(seq 1 1000); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
    if [ $# -gt 1 ] && ! kill -0 "$2" 2>/dev/null; then
      echo "the process meant to listen on port $1 has exited" >&2
      return 1
    fi
    sleep 0.01
  done
  echo "nothing listens on port $1" >&2
  return 1
}

now() { date +%s.%N; }

# start_sink [BACKLOG]: Postfix smtp-sink on a free port (SINK_PORT, SINK_PID), answering 250 to
# everything and keeping nothing; returns once it listens.
start_sink() {
  SINK_PORT=$(free_port)
  smtp-sink -u nobody "127.0.0.1:$SINK_PORT" "${1:-256}" &
  SINK_PID=$!
  PIDS+=("$SINK_PID")
  wait_port "$SINK_PORT" "$SINK_PID" || { echo "smtp-sink did not start" >&2; exit 1; }
}

# bench_serve CONFIG PORT LOG [BINARY]: `BINARY serve --config CONFIG` (default $BIN) in the
# background with RUST_LOG (default info), standard output and error in LOG; returns once PORT
# listens (SERVE_PID), exits 2 with the log when the gateway does not start.
bench_serve() {
  RUST_LOG=${RUST_LOG:-info} NO_COLOR=1 "${4:-$BIN}" serve --config "$1" >"$3" 2>&1 &
  SERVE_PID=$!
  PIDS+=("$SERVE_PID")
  if ! wait_port "$2" "$SERVE_PID"; then
    echo "the gateway did not start:" >&2
    cat "$3" >&2
    exit 2
  fi
}

# pass_config FILE PORT STATE_DIR: the pass-through gateway of relay-bench.sh and
# relay-syscalls.sh: listens on PORT, relays everything to the smtp-sink of start_sink (pool of
# 64), no policy. smtp-sink offers XFORWARD to everybody, a real Postfix only to
# smtpd_authorized_xforward_hosts (empty by default): the gateway sends none unless XFORWARD=1
# (one more command per message).
pass_config() {
  cat >"$1" <<CONF
[server]
listen = ["127.0.0.1:$2"]
hostname = "gw.bench"
max_connections = 512
client_networks = ["127.0.0.0/8"]

[relay]
next_hop = "127.0.0.1:$SINK_PORT"
tls = "off"
pool_size = 64
xforward = $([ "${XFORWARD:-0}" = 1 ] && echo true || echo false)

[state]
dir = "$3"
CONF
}
