#!/usr/bin/env bash
# Runs a command with a private, throw-away PostgreSQL cluster for the tests of the PostgreSQL
# state store (tests/state_postgres.rs), then stops the cluster and deletes it:
#
#   scripts/test-postgres.sh cargo test --test state_postgres
#   scripts/test-postgres.sh cargo test --release            # the whole suite (README)
#
# The cluster: Debian's postgresql binaries (installed with apt-get when missing and this runs
# as root), initdb + pg_ctl as an unprivileged user (PostgreSQL refuses to run as root: as
# root the cluster belongs to `nobody`), in a temporary directory, listening on 127.0.0.1 on
# a free port and on a Unix socket in that directory, password authentication (SCRAM), TLS
# offered with a certificate of a throw-away CA (openssl; clients choose with sslmode). Nothing
# of the machine's own PostgreSQL (if any) is used or touched.
#
# The command gets:
#   CSG_TEST_PG_URL     postgres://csgw:PASSWORD@127.0.0.1:PORT/postgres?sslmode=disable
#                       (a superuser: each test creates its own database)
#   CSG_TEST_PG_CTL     a script taking `stop` or `start`, for the tests that take the
#                       database away and bring it back
#   CSG_TEST_PG_SOCKET  the directory of the Unix socket
#   CSG_TEST_PG_CA      the CA certificate (PEM) that signed the server's certificate
#                       (IP 127.0.0.1, DNS localhost), for the TLS tests
set -euo pipefail
[ $# -gt 0 ] || { echo "usage: $0 COMMAND [ARGS...]" >&2; exit 2; }

if ! compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null; then
  if [ "$(id -u)" = 0 ]; then
    echo "installing postgresql (apt-get)" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends postgresql >/dev/null
  else
    echo "FAIL: PostgreSQL is not installed: sudo apt-get install postgresql" >&2
    exit 1
  fi
fi
bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
command -v openssl >/dev/null || { echo "FAIL: openssl is not installed: apt-get install openssl" >&2; exit 1; }

work=$(mktemp -d /tmp/csgw-pg.XXXXXX)
as_user=""
if [ "$(id -u)" = 0 ]; then
  chown nobody:nogroup "$work"
  as_user="runuser -u nobody --"
fi
chmod 755 "$work"
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
password=$(od -An -N12 -tx1 /dev/urandom | tr -d ' \n')
printf '%s\n' "$password" >"$work/pwfile"
[ -z "$as_user" ] || chown nobody:nogroup "$work/pwfile"

# The server's certificate, from a CA made for this run (ECDSA P-256): what a private CA for
# the database looks like in a deployment (state.ca_file).
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
  -subj "/CN=csgw test CA" -addext basicConstraints=critical,CA:TRUE \
  -addext keyUsage=critical,keyCertSign,cRLSign \
  -keyout "$work/ca.key" -out "$work/ca.pem" 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj "/CN=127.0.0.1" \
  -keyout "$work/server.key" -out "$work/server.csr" 2>/dev/null
printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n' \
  >"$work/server.ext"
openssl x509 -req -in "$work/server.csr" -CA "$work/ca.pem" -CAkey "$work/ca.key" -CAcreateserial \
  -days 2 -extfile "$work/server.ext" -out "$work/server.pem" 2>/dev/null
rm -f "$work/ca.key" "$work/server.csr" "$work/server.ext"
chmod 600 "$work/server.key"
[ -z "$as_user" ] || chown nobody:nogroup "$work/server.key" "$work/server.pem"
chmod 644 "$work/ca.pem"

# fsync=off: the cluster dies with the test run, and `stop` (immediate, as a crash) keeps what
# the OS has; synchronous_commit stays on, since a commit still in the server's WAL buffers
# would be lost by that stop. CSG_PG_FSYNC=on (the benchmarks) keeps PostgreSQL's default.
fsync=${CSG_PG_FSYNC:-off}
case "$fsync" in on|off) ;; *) echo "CSG_PG_FSYNC must be on or off, not $fsync" >&2; exit 2 ;; esac
cat >"$work/pgctl" <<EOF
#!/bin/sh
# The private test cluster in $work: start | stop.
case "\$1" in
  start) exec $as_user "$bin/pg_ctl" -D "$work/data" -l "$work/postgres.log" -w -t 60 \
           -o "-c listen_addresses=127.0.0.1 -p $port -k $work -c fsync=$fsync -c max_connections=300 -c ssl=on -c ssl_cert_file=$work/server.pem -c ssl_key_file=$work/server.key" start >/dev/null ;;
  stop) exec $as_user "$bin/pg_ctl" -D "$work/data" -w -t 60 -m immediate stop >/dev/null ;;
  *) echo "usage: \$0 start|stop" >&2; exit 2 ;;
esac
EOF
chmod 755 "$work/pgctl"

cleanup() {
  "$work/pgctl" stop 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

if ! $as_user "$bin/initdb" -D "$work/data" -U csgw --auth=scram-sha-256 --pwfile="$work/pwfile" \
     -E UTF8 --no-locale >"$work/initdb.log" 2>&1; then
  cat "$work/initdb.log" >&2
  echo "FAIL: initdb" >&2
  exit 1
fi
rm -f "$work/pwfile"
if ! "$work/pgctl" start; then
  cat "$work/postgres.log" >&2
  echo "FAIL: pg_ctl start" >&2
  exit 1
fi
echo "private PostgreSQL $("$bin/postgres" --version | awk '{print $3}') on 127.0.0.1:$port ($work)" >&2

export CSG_TEST_PG_URL="postgres://csgw:$password@127.0.0.1:$port/postgres?sslmode=disable"
export CSG_TEST_PG_CTL="$work/pgctl"
export CSG_TEST_PG_SOCKET="$work"
export CSG_TEST_PG_CA="$work/ca.pem"
set +e
"$@"
rc=$?
set -e
exit $rc
