#!/usr/bin/env bash
# Makes sure a PostgreSQL server the stack and its tests can use answers on loopback, and prints
# its admin URL (user `postgres`, no password, database `postgres`) on stdout, the only thing it
# prints there. Scripts do not run it directly: they source scripts/postgres-env.sh, which runs it
# and exports DATABASE_URL plus PGHOST/PGPORT/PGUSER.
#
# The server is the first of these that works:
#   1. DATABASE_URL, when it is set: used as it is once a server answers there (nothing is
#      started, installed or written);
#   2. the machine's cluster on 127.0.0.1:5432 when it lets `postgres` in without a password
#      (trust auth); a Debian cluster on that port that is down is started first;
#   3. otherwise (Debian's default peer/scram auth, or no cluster that starts) a private cluster
#      of this checkout in .observastack/pg: initdb --auth=trust -U postgres, listening on
#      127.0.0.1 only (no Unix socket), on port 55432 or the next free one. Created once,
#      started when it is down (pg_ctl, log in .observastack/pg/postgres.log), reused after.
# Debian's `postgresql` package is installed (as root) when its binaries are missing. The
# machine's own cluster is never reconfigured.
# 2 and 3 also write the URL to .observastack/database-url, for a shell of your own:
#   DATABASE_URL=$(cat .observastack/database-url) cargo test -p shop
#
# Who runs the private cluster: PostgreSQL refuses to run as root, so as root it is the
# `postgres` system user (created by Debian's package), and when that user cannot write into
# the checkout (e.g. a clone under /root, mode 0700) the cluster lives in
# /var/lib/postgresql/observastack-<checksum of the checkout's path> instead. Any other user
# runs it as themselves: no sudo needed. Stop it with
#   /usr/lib/postgresql/15/bin/pg_ctl -D .observastack/pg/data stop   (as root: runuser -u postgres -- …)
#
# Env, mostly for testing this script: OBSERVASTACK_PG_SYSTEM_PORT (default 5432), the port of
# the machine's cluster tried in step 2 (point it at a password-only server to see step 3);
# OBSERVASTACK_PG_PORT (default 55432), the private cluster's first choice of port;
# OBSERVASTACK_PG_DIR (default .observastack/pg), where the private cluster lives.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
state="$root/.observastack"
system_port=${OBSERVASTACK_PG_SYSTEM_PORT:-5432}
private_port=${OBSERVASTACK_PG_PORT:-55432}

# The URL goes to the caller through fd 3; everything else (apt, pg_ctl, messages) to stderr.
exec 3>&1 1>&2

log() { echo "ensure-postgres: $*" >&2; }
die() { log "$*"; exit 1; }
is_root() { [ "$(id -u)" -eq 0 ]; }

# A server answers on 127.0.0.1:PORT (even one that would refuse us).
answers() { pg_isready -q -h 127.0.0.1 -p "$1" -t 5 >/dev/null 2>&1; }
# `postgres` gets in on 127.0.0.1:PORT with no password at all: none typed, none in PGPASSWORD
# or ~/.pgpass, which the tests' URLs do not carry either.
trusts() {
  env -u PGPASSWORD PGPASSFILE=/dev/null PGCONNECT_TIMEOUT=5 \
    psql -X -w -q -At -h 127.0.0.1 -p "$1" -U postgres -d postgres -c 'select 1' >/dev/null 2>&1
}
use() {
  mkdir -p "$state"
  printf '%s\n' "$1" >"$state/database-url"
  printf '%s\n' "$1" >&3
  exit 0
}
apt_install() {
  is_root || die "$1 is not installed; install it (sudo apt-get install $1) and run this again, or set DATABASE_URL"
  log "installing $1 (Debian package)…"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$1" >/dev/null
}
# Runs a command with only stdin, stdout and stderr open: a server it starts outlives this script
# and must not hold open the pipe the URL goes through (its caller would wait for the server to
# exit), the lock, or any pipe of whatever runs the caller (a CI runner).
detached() (
  for f in /proc/self/fd/*; do
    fd=${f##*/}
    [ "$fd" -le 2 ] || exec {fd}>&-
  done
  "$@"
)
newest_bin() { find /usr/lib/postgresql -mindepth 3 -maxdepth 3 -path '*/bin/initdb' -printf '%h\n' 2>/dev/null | sort -V | tail -n 1; }

# 1. The caller's own server.
if [ -n "${DATABASE_URL:-}" ]; then
  command -v pg_isready >/dev/null 2>&1 || apt_install postgresql-client
  redacted=$(sed -E 's#//([^:/@]*):[^@/]*@#//\1:***@#' <<<"$DATABASE_URL")
  pg_isready -q -t 10 -d "$DATABASE_URL" >/dev/null 2>&1 \
    || die "no PostgreSQL answers at DATABASE_URL=$redacted; start it, or unset DATABASE_URL to let this script pick one"
  printf '%s\n' "$DATABASE_URL" >&3
  exit 0
fi

# 2. The machine's cluster, when it trusts loopback.
if command -v psql >/dev/null 2>&1 && trusts "$system_port"; then
  use "postgres://postgres@127.0.0.1:$system_port/postgres"
fi
if [ -z "$(newest_bin)" ] || ! command -v psql >/dev/null 2>&1; then
  apt_install postgresql
fi
if ! answers "$system_port" && command -v pg_lsclusters >/dev/null 2>&1; then
  while read -r version name port status _; do
    if [ "$port" = "$system_port" ] && [ "${status%%,*}" = down ]; then
      log "starting the local cluster $version/$name (port $port)…"
      detached pg_ctlcluster --skip-systemctl-redirect "$version" "$name" start || true
    fi
  done < <(pg_lsclusters -h 2>/dev/null)
  for _ in $(seq 1 30); do answers "$system_port" && break; sleep 1; done
fi
if trusts "$system_port"; then
  use "postgres://postgres@127.0.0.1:$system_port/postgres"
fi

# 3. The private cluster.
if answers "$system_port"; then
  log "the PostgreSQL on 127.0.0.1:$system_port wants a password (not trust auth); using this checkout's own cluster"
else
  log "no PostgreSQL on 127.0.0.1:$system_port; using this checkout's own cluster"
fi
base=${OBSERVASTACK_PG_DIR:-$state/pg}
case $base in /*) ;; *) base="$PWD/$base" ;; esac
if is_root; then
  id postgres >/dev/null 2>&1 || die "PostgreSQL will not run as root and there is no \`postgres\` user to run it (apt-get install postgresql creates one)"
  owner=postgres
  mkdir -p "$base"
  chown postgres: "$base"
  if ! runuser -u postgres -- test -w "$base" -a -x "$base"; then
    base="/var/lib/postgresql/observastack-$(printf '%s' "$root" | cksum | cut -d ' ' -f 1)"
    log "the postgres user cannot write into $root; the private cluster lives in $base"
    mkdir -p "$base"
    chown postgres: "$base"
  fi
else
  owner=$(id -un)
  mkdir -p "$base"
fi
as_owner() {
  if is_root; then runuser -u "$owner" -- "$@"; else "$@"; fi
}
data="$base/data"
logfile="$base/postgres.log"
mkdir -p "$state"
cd / # the owner may not be allowed into the current directory

# One caller at a time sets the cluster up; concurrent scripts wait here.
exec 9>"$state/pg.lock"
flock -w 180 9 || die "another ensure-postgres.sh holds $state/pg.lock"

if [ ! -s "$data/PG_VERSION" ]; then
  if [ -d "$data" ] && [ -n "$(ls -A "$data")" ]; then
    die "$data is neither empty nor a PostgreSQL cluster; remove it and run this again"
  fi
  bin=$(newest_bin)
  log "creating a private PostgreSQL cluster (trust, loopback only) in $data…"
  as_owner "$bin/initdb" -D "$data" -U postgres --auth=trust --encoding=UTF8 --locale=C.UTF-8 \
    >"$base/initdb.log" 2>&1 || { cat "$base/initdb.log" >&2; die "initdb failed"; }
  cat >>"$data/postgresql.conf" <<'EOF'

# ObservaStack's private test cluster (scripts/ensure-postgres.sh): TCP on loopback only. The
# port is given by pg_ctl at each start (the first free one from 55432).
listen_addresses = '127.0.0.1'
unix_socket_directories = ''
EOF
fi
version=$(cat "$data/PG_VERSION")
bin="/usr/lib/postgresql/$version/bin"
[ -x "$bin/pg_ctl" ] || die "the cluster in $data was made by PostgreSQL $version, whose binaries are gone; remove $base to make a new one"

if as_owner "$bin/pg_ctl" -D "$data" status >/dev/null 2>&1; then
  port=$(sed -n 4p "$data/postmaster.pid")
else
  port=$private_port
  for _ in $(seq 1 20); do
    # Skip ports something listens on; one that still fails to bind is retried with the next.
    while (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; do port=$((port + 1)); done
    log "starting the private cluster on 127.0.0.1:$port (log: $logfile)…"
    : >>"$logfile"
    [ "$owner" = "$(id -un)" ] || chown "$owner": "$logfile"
    lines=$(wc -l <"$logfile")
    if detached as_owner "$bin/pg_ctl" -D "$data" -l "$logfile" -o "-p $port" -w -t 60 start >"$base/pg_ctl.out" 2>&1; then
      break
    fi
    if ! tail -n "+$((lines + 1))" "$logfile" | grep -q 'could not bind'; then
      cat "$base/pg_ctl.out" >&2
      tail -n 20 "$logfile" >&2
      die "the private cluster did not start"
    fi
    port=$((port + 1))
  done
fi
trusts "$port" || { tail -n 20 "$logfile" >&2; die "the private cluster does not answer on 127.0.0.1:$port (log: $logfile)"; }
use "postgres://postgres@127.0.0.1:$port/postgres"
