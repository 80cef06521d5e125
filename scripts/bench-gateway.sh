#!/usr/bin/env bash
# Proxy benchmark: the user gateway versus nginx (keep-alive reverse proxy) in front of the same
# cheap upstream route, shop's `GET /api/ping`, plus shop hit directly, measured side by side in
# one run. Prints a table, ratios and PASS/MISS per target, and writes the same figures to
# artifacts/bench-gateway.json. A MISS is reported, not fatal: the script exits non-zero only
# when the setup is broken (a tool, build, database or service that does not come up).
#
# Usage: bash scripts/bench-gateway.sh
# Knobs (environment): BENCH_ROUNDS (3), BENCH_DURATION seconds per run (10), BENCH_RATE fixed
# rate in req/s (5000), BENCH_CONNECTIONS (64), BENCH_GATEWAY_THREADS (gateway default),
# BENCH_SKIP_BUILD=1 (use the binaries already in target/release), BENCH_SHOP_BIN and
# BENCH_GATEWAY_BIN (other binaries, e.g. to test the script itself). See docs/benchmarks.md.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

ROUNDS=${BENCH_ROUNDS:-3}
DURATION=${BENCH_DURATION:-10}
RATE=${BENCH_RATE:-5000}
CONNS=${BENCH_CONNECTIONS:-64}
GATEWAY_THREADS=${BENCH_GATEWAY_THREADS:-}
DB_NAME=observastack_bench
ROUTE=/api/ping
OUT_JSON=$ROOT/artifacts/bench-gateway.json

log() { printf '[bench] %s\n' "$*" >&2; }
die() { printf '[bench] error: %s\n' "$*" >&2; exit 1; }
# psql_admin, free_ports, wait_ready, cpu_ticks
. bench/lib.sh

# ---------------------------------------------------------------------------------------------
# Tools: installed when missing (Debian packages, oha built from crates.io; no prebuilt download)
# ---------------------------------------------------------------------------------------------
export PATH="$HOME/.cargo/bin:$PATH"
apt_updated=0
apt_install() {
  [ "$(id -u)" -eq 0 ] || die "need root to apt-get install $*; install it by hand"
  if [ "$apt_updated" -eq 0 ]; then apt-get update -qq; apt_updated=1; fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}
if ! command -v nginx >/dev/null 2>&1 && [ ! -x /usr/sbin/nginx ]; then
  log "installing nginx (Debian package)…"
  apt_install nginx-light || apt_install nginx
fi
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
if ! command -v wrk >/dev/null 2>&1; then
  log "installing wrk (Debian package)…"
  apt_install wrk
fi
for tool in curl python3 psql; do
  command -v "$tool" >/dev/null 2>&1 || die "$tool is required"
done
if ! command -v oha >/dev/null 2>&1; then
  log "building oha from crates.io (once; takes a few minutes)…"
  nice -n 10 cargo install oha --locked >&2 || die "cargo install oha failed"
fi
OHA=$(command -v oha)
oha_help=$("$OHA" --help 2>&1 || true)
if grep -q -- '--output-format' <<<"$oha_help"; then
  OHA_JSON=(--output-format json)
elif grep -qE -- '(^|[[:space:]])-j,' <<<"$oha_help"; then
  OHA_JSON=(-j)
else
  die "this oha has no JSON output flag; upgrade it (cargo install oha --locked --force)"
fi
OHA_WAIT=()
grep -q -- '--wait-ongoing-requests-after-deadline' <<<"$oha_help" && OHA_WAIT=(--wait-ongoing-requests-after-deadline)

# ---------------------------------------------------------------------------------------------
# Build, database
# ---------------------------------------------------------------------------------------------
# DATABASE_URL and PGHOST/PGPORT/PGUSER (psql_admin's port): the server ensure-postgres.sh picks.
. scripts/postgres-env.sh || die "no PostgreSQL is available (scripts/ensure-postgres.sh)"
PG=${DATABASE_URL%/*}
if [ "${BENCH_SKIP_BUILD:-0}" != 1 ]; then
  log "building shop and gateway (release)…"
  nice -n 10 cargo build --release -q --workspace --bin shop --bin gateway >&2 || die "cargo build failed"
fi
SHOP_BIN=${BENCH_SHOP_BIN:-${CARGO_TARGET_DIR:-$ROOT/target}/release/shop}
GATEWAY_BIN=${BENCH_GATEWAY_BIN:-${CARGO_TARGET_DIR:-$ROOT/target}/release/gateway}
[ -x "$SHOP_BIN" ] && [ -x "$GATEWAY_BIN" ] || die "$SHOP_BIN or $GATEWAY_BIN missing"

# ---------------------------------------------------------------------------------------------
# Processes, cleanup
# ---------------------------------------------------------------------------------------------
TMP=$(mktemp -d /tmp/bench-gateway.XXXXXX)
RES=$TMP/results
mkdir -p "$RES" "$TMP/nginx"
SHOP_PID="" GATEWAY_PID="" NGINX_PID="" DB_CREATED=0

stop_pid() { # TERM, then KILL after 5 s; only our own children
  local pid=$1
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 0
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}
cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  stop_pid "$GATEWAY_PID"
  stop_pid "$NGINX_PID"
  stop_pid "$SHOP_PID"
  if [ "$DB_CREATED" = 1 ]; then
    psql_admin "DROP DATABASE IF EXISTS $DB_NAME WITH (FORCE)" 2>/dev/null || true
  fi
  if [ "$rc" -ne 0 ] && [ -d "$TMP" ]; then
    for f in shop.log gateway.log nginx/error.log; do
      [ -s "$TMP/$f" ] && { echo "--- last lines of $f ---" >&2; tail -n 20 "$TMP/$f" >&2; }
    done
  fi
  rm -rf "$TMP"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

read -r SHOP_PORT GW_PORT GW_ADMIN_PORT NGINX_PORT <<<"$(free_ports 4)"

log "creating throwaway database $DB_NAME…"
psql_admin "DROP DATABASE IF EXISTS $DB_NAME WITH (FORCE)" || die "cannot reach PostgreSQL as postgres@127.0.0.1:$PGPORT"
psql_admin "CREATE DATABASE $DB_NAME" || die "cannot create database $DB_NAME"
DB_CREATED=1

# A throwaway public key: the services verify tokens with it (no token is used here). The old
# shared secret too, for a binary built before the Ed25519 keys (an A/B against an old revision).
OBSERVASTACK_JWT_PUBLIC_KEYS=$(openssl genpkey -algorithm ed25519 | openssl pkey -pubout)
OBSERVASTACK_JWT_SECRET=$(python3 -c 'import secrets; print(secrets.token_hex(32))')
export OBSERVASTACK_JWT_PUBLIC_KEYS OBSERVASTACK_JWT_SECRET
export RUST_LOG=warn

shop_help=$("$SHOP_BIN" --help 2>&1 || true)
SHOP_ARGS=(--listen "127.0.0.1:$SHOP_PORT")
grep -q -- '--database-url' <<<"$shop_help" && SHOP_ARGS+=(--database-url "$PG/$DB_NAME")
grep -q -- '--seed-products' <<<"$shop_help" && SHOP_ARGS+=(--seed-products 1000)
grep -q -- '--seed-orders' <<<"$shop_help" && SHOP_ARGS+=(--seed-orders 1000)
log "starting shop on 127.0.0.1:$SHOP_PORT…"
DATABASE_URL="$PG/$DB_NAME" "$SHOP_BIN" "${SHOP_ARGS[@]}" >"$TMP/shop.log" 2>&1 &
SHOP_PID=$!
wait_ready shop "http://127.0.0.1:$SHOP_PORT/readyz" "$SHOP_PID" 180

gw_help=$("$GATEWAY_BIN" --help 2>&1 || true)
GW_ARGS=(--role user --listen "127.0.0.1:$GW_PORT" --admin-listen "127.0.0.1:$GW_ADMIN_PORT"
  --shop-url "http://127.0.0.1:$SHOP_PORT")
if [ -n "$GATEWAY_THREADS" ]; then
  grep -q -- '--threads' <<<"$gw_help" || die "BENCH_GATEWAY_THREADS set but gateway has no --threads"
  GW_ARGS+=(--threads "$GATEWAY_THREADS")
fi
log "starting gateway (role user) on 127.0.0.1:$GW_PORT…"
"$GATEWAY_BIN" "${GW_ARGS[@]}" >"$TMP/gateway.log" 2>&1 &
GATEWAY_PID=$!
wait_ready gateway "http://127.0.0.1:$GW_ADMIN_PORT/readyz" "$GATEWAY_PID"

log "starting nginx on 127.0.0.1:$NGINX_PORT…"
sed -e "s#@PREFIX@#$TMP/nginx#g" -e "s#@PORT@#$NGINX_PORT#g" -e "s#@UPSTREAM@#127.0.0.1:$SHOP_PORT#g" \
  bench/nginx.conf.tmpl >"$TMP/nginx/nginx.conf"
"$NGINX" -t -q -p "$TMP/nginx" -c "$TMP/nginx/nginx.conf" -e "$TMP/nginx/error.log" \
  || die "nginx rejected the generated config"
"$NGINX" -p "$TMP/nginx" -c "$TMP/nginx/nginx.conf" -e "$TMP/nginx/error.log" >/dev/null 2>&1 &
NGINX_PID=$!
wait_ready nginx "http://127.0.0.1:$NGINX_PORT$ROUTE" "$NGINX_PID" 30

declare -A URL=(
  [direct]="http://127.0.0.1:$SHOP_PORT$ROUTE"
  [nginx]="http://127.0.0.1:$NGINX_PORT$ROUTE"
  [gateway]="http://127.0.0.1:$GW_PORT$ROUTE"
)
for t in direct nginx gateway; do
  code=$(curl -s -o "$TMP/probe-$t" -w '%{http_code}' --max-time 5 "${URL[$t]}" || true)
  [ "$code" = 200 ] || die "$t: GET ${URL[$t]} answered $code, expected 200 ($(head -c 200 "$TMP/probe-$t" 2>/dev/null))"
done

# ---------------------------------------------------------------------------------------------
# Measurement helpers
# ---------------------------------------------------------------------------------------------
CLK_TCK=$(getconf CLK_TCK)
nginx_pids() { echo "$NGINX_PID" $(ps -o pid= --ppid "$NGINX_PID" 2>/dev/null); }
proxy_pids() { # the process(es) that do the proxying for a target ("" for direct)
  case $1 in
    nginx) nginx_pids ;;
    gateway) echo "$GATEWAY_PID" ;;
    direct) echo "" ;;
  esac
}
machine_busy_ticks() { # all CPUs' non-idle time since boot (/proc/stat), in clock ticks
  local cpu user nice system idle iowait irq softirq steal rest
  read -r cpu user nice system idle iowait irq softirq steal rest </proc/stat
  echo $((user + nice + system + irq + softirq + steal))
}
children_cpu() { # CHILD_S := CPU seconds of this shell's finished children (`times`, 2nd line)
  times >"$TMP/times"        # in this shell, not a subshell: a subshell has its own children
  CHILD_S=$(awk 'NR == 2 { t = 0; for (i = 1; i <= 2; i++) { split($i, a, /[ms]/); t += a[1] * 60 + a[2] }
    printf "%.3f", t }' "$TMP/times")
}
rss_kb() { # VmRSS summed over the given pids, kB
  local total=0 pid v
  for pid in "$@"; do
    v=$(awk '/^VmRSS:/ {print $2}' "/proc/$pid/status" 2>/dev/null || true)
    total=$((total + ${v:-0}))
  done
  echo "$total"
}
record_rss() { # phase
  {
    echo "rss_shop_kb_$1=$(rss_kb "$SHOP_PID")"
    echo "rss_gateway_kb_$1=$(rss_kb "$GATEWAY_PID")"
    echo "rss_nginx_kb_$1=$(rss_kb $(nginx_pids))"
  } >>"$RES/meta.env"
}

measure() { # round target kind
  local round=$1 target=$2 kind=$3 base pp p0 p1 s0 s1 m0 m1 l0 l1
  base=$RES/r$round-$target-$kind
  pp=$(proxy_pids "$target")
  m0=$(machine_busy_ticks); p0=$(cpu_ticks $pp); s0=$(cpu_ticks "$SHOP_PID")
  children_cpu; l0=$CHILD_S
  case $kind in
    wrk1|wrk2)
      wrk "-t${kind#wrk}" "-c$CONNS" "-d${DURATION}s" --latency -s bench/wrk-report.lua "${URL[$target]}" \
        >"$base.out" 2>&1 || die "wrk failed against $target: $(tail -n 3 "$base.out")"
      ;;
    oha)
      "$OHA" -z "${DURATION}s" -q "$RATE" -c "$CONNS" --latency-correction --no-tui "${OHA_WAIT[@]}" \
        "${OHA_JSON[@]}" "${URL[$target]}" >"$base.out" 2>"$base.err" \
        || die "oha failed against $target: $(tail -n 3 "$base.err")"
      ;;
  esac
  children_cpu; l1=$CHILD_S  # the load generator's CPU (wrk or oha, our only child meanwhile)
  p1=$(cpu_ticks $pp); s1=$(cpu_ticks "$SHOP_PID"); m1=$(machine_busy_ticks)
  echo "proxy_ticks=$((p1 - p0)) shop_ticks=$((s1 - s0)) machine_busy_ticks=$((m1 - m0))" \
    "loadgen_s=$(awk -v a="$l0" -v b="$l1" 'BEGIN { printf "%.3f", b - a }')" \
    "proxy_pids=$(echo $pp | tr ' ' ,)" >"$base.cpu"
  sleep 1
}

# ---------------------------------------------------------------------------------------------
# Run
# ---------------------------------------------------------------------------------------------
sleep 2
record_rss start
{
  echo "date=$(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "git_rev=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet HEAD -- crates 2>/dev/null || echo -dirty)"
  echo "host=$(hostname)"
  echo "nproc=$(nproc)"
  echo "cpu_model=$(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo)"
  echo "kernel=$(uname -r)"
  echo "nginx_version=$("$NGINX" -v 2>&1 | sed 's#^nginx version: ##')"
  echo "nginx_workers=$(($(nginx_pids | wc -w) - 1))"
  echo "wrk_version=$(wrk -v 2>&1 | head -n 1 | awk '{print $2}')"
  echo "oha_version=$("$OHA" --version 2>&1 | head -n 1)"
  echo "gateway_threads=${GATEWAY_THREADS:-default}"
  echo "gateway_threads_os=$(ls /proc/$GATEWAY_PID/task | wc -l)"
  echo "shop_threads_os=$(ls /proc/$SHOP_PID/task | wc -l)"
  echo "clk_tck=$CLK_TCK"
  echo "rounds=$ROUNDS"
  echo "duration_s=$DURATION"
  echo "rate=$RATE"
  echo "connections=$CONNS"
  echo "route=$ROUTE"
} >>"$RES/meta.env"

# How busy the machine is without us (our processes are idle now): other work on the 2 cores
# disturbs every figure, so it is measured and reported, not hidden.
b0=$(machine_busy_ticks); sleep 3; b1=$(machine_busy_ticks)
busy_pct=$(((b1 - b0) * 100 / (3 * CLK_TCK * $(nproc))))
echo "busy_before_pct=$busy_pct" >>"$RES/meta.env"
[ "$busy_pct" -gt 10 ] && log "warning: the machine is already ${busy_pct}% busy before the bench; figures will be disturbed"

log "warming up (2 s per target)…"
for t in direct nginx gateway; do
  wrk -t1 "-c$CONNS" -d2s "${URL[$t]}" >/dev/null 2>&1 || die "wrk warm-up against $t failed"
done

targets=(direct nginx gateway)
eta=$((ROUNDS * 3 * 3 * (DURATION + 1)))
log "measuring: $ROUNDS rounds × 3 targets × (wrk -t1, wrk -t2, oha at $RATE req/s), ${DURATION}s each (~${eta}s)…"
for round in $(seq 1 "$ROUNDS"); do
  # Rotate the order each round so that no target always runs first or last.
  order=()
  for i in 0 1 2; do order+=("${targets[$(((i + round - 1) % 3))]}"); done
  for kind in wrk1 wrk2 oha; do
    for t in "${order[@]}"; do
      log "round $round/$ROUNDS: $kind → $t"
      measure "$round" "$t" "$kind"
    done
  done
done

for name in SHOP GATEWAY NGINX; do
  pid_var=${name}_PID
  kill -0 "${!pid_var}" 2>/dev/null || die "${name,,} died during the run"
done
sleep 3
record_rss end
echo "nginx_error_log_lines=$(grep -c . "$TMP/nginx/error.log" 2>/dev/null || echo 0)" >>"$RES/meta.env"
echo "gateway_log_lines=$(grep -c . "$TMP/gateway.log" 2>/dev/null || echo 0)" >>"$RES/meta.env"
echo "shop_log_lines=$(grep -c . "$TMP/shop.log" 2>/dev/null || echo 0)" >>"$RES/meta.env"

mkdir -p "$(dirname "$OUT_JSON")"
python3 bench/report.py --results "$RES" --json "$OUT_JSON" || die "report failed"
for f in gateway.log shop.log nginx/error.log; do
  if [ -s "$TMP/$f" ]; then
    log "note: $f is not empty during the run ($(grep -c . "$TMP/$f") lines); first lines:"
    head -n 5 "$TMP/$f" >&2
  fi
done
