#!/usr/bin/env bash
# Paired comparison of gateway builds (and nginx) under `wrk -t1`: many short rounds, each
# running every target once in rotating order against one shop, so that a drift of the
# machine's speed between rounds (seen as ~20 % on shared 2-vCPU VMs) hits every target alike.
# Prints each round, then per target the median req/s and proxy CPU per request, and the median
# of the per-round ratios against nginx and against the first gateway given.
#
# Usage: bash bench/ab-gateways.sh GATEWAY_BIN [GATEWAY_BIN...]
# Knobs: AB_ROUNDS (24), AB_DURATION seconds per run (3), AB_CONNECTIONS (64),
# AB_SHOP_BIN ($CARGO_TARGET_DIR/release/shop), AB_GATEWAY_ARGS (extra gateway flags, e.g.
# `--threads 1`). nginx and wrk must be installed (`bash scripts/bench-gateway.sh` installs them).
set -euo pipefail
cd "$(dirname "$0")/.."
die() { printf 'ab: %s\n' "$*" >&2; exit 1; }
# psql_admin, free_ports, wait_ready, cpu_ticks
. bench/lib.sh
[ $# -ge 1 ] || { echo "usage: bash bench/ab-gateways.sh GATEWAY_BIN [GATEWAY_BIN...]" >&2; exit 2; }
ROUNDS=${AB_ROUNDS:-24}
DURATION=${AB_DURATION:-3}
CONNS=${AB_CONNECTIONS:-64}
SHOP_BIN=${AB_SHOP_BIN:-${CARGO_TARGET_DIR:-$PWD/target}/release/shop}
read -r -a GW_EXTRA <<<"${AB_GATEWAY_ARGS:-}"
DB=observastack_ab
PG=postgres://postgres@127.0.0.1:5432
for tool in nginx wrk psql curl python3; do
  command -v "$tool" >/dev/null || die "$tool is required"
done
for bin in "$SHOP_BIN" "$@"; do [ -x "$bin" ] || die "$bin is not an executable"; done
bash scripts/ensure-postgres.sh >/dev/null

TMP=$(mktemp -d /tmp/ab-gateways.XXXXXX)
mkdir -p "$TMP/nginx"
PIDS=()
cleanup() {
  local pid
  for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  psql_admin "DROP DATABASE IF EXISTS $DB WITH (FORCE)" 2>/dev/null || true
  rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM


psql_admin "DROP DATABASE IF EXISTS $DB WITH (FORCE)"
psql_admin "CREATE DATABASE $DB"
# A throwaway public key: the services verify tokens with it (no token is used here). The old
# shared secret too, for a binary built before the Ed25519 keys (an A/B against an old revision).
OBSERVASTACK_JWT_PUBLIC_KEYS=$(openssl genpkey -algorithm ed25519 | openssl pkey -pubout)
OBSERVASTACK_JWT_SECRET=$(python3 -c 'import secrets; print(secrets.token_hex(32))')
export OBSERVASTACK_JWT_PUBLIC_KEYS OBSERVASTACK_JWT_SECRET RUST_LOG=warn
read -r -a PORTS <<<"$(free_ports $((2 + 2 * $#)))"
SHOP_URL=http://127.0.0.1:${PORTS[0]}
"$SHOP_BIN" --listen "127.0.0.1:${PORTS[0]}" --database-url "$PG/$DB" --seed-products 1000 --seed-orders 1000 \
  >"$TMP/shop.log" 2>&1 &
SHOP_PID=$!
PIDS+=("$SHOP_PID")
wait_ready shop "$SHOP_URL/readyz" "$SHOP_PID" 180

declare -A URL PROC
NAMES=(nginx)
sed -e "s#@PREFIX@#$TMP/nginx#g" -e "s#@PORT@#${PORTS[1]}#g" -e "s#@UPSTREAM@#127.0.0.1:${PORTS[0]}#g" \
  bench/nginx.conf.tmpl >"$TMP/nginx/nginx.conf"
nginx -p "$TMP/nginx" -c "$TMP/nginx/nginx.conf" -e "$TMP/nginx/error.log" >/dev/null 2>&1 &
PROC[nginx]=$!
PIDS+=("${PROC[nginx]}")
URL[nginx]=http://127.0.0.1:${PORTS[1]}/api/ping
i=0
for bin in "$@"; do
  name=gw$i
  "$bin" --role user --listen "127.0.0.1:${PORTS[$((2 + 2 * i))]}" --admin-listen "127.0.0.1:${PORTS[$((3 + 2 * i))]}" \
    --shop-url "$SHOP_URL" "${GW_EXTRA[@]}" >"$TMP/$name.log" 2>&1 &
  PROC[$name]=$!
  PIDS+=("${PROC[$name]}")
  URL[$name]=http://127.0.0.1:${PORTS[$((2 + 2 * i))]}/api/ping
  NAMES+=("$name")
  echo "$name = $bin" >&2
  i=$((i + 1))
done
for name in "${NAMES[@]}"; do wait_ready "$name" "${URL[$name]}" "${PROC[$name]}"; done

proxy_pids() { if [ "$1" = nginx ]; then echo "${PROC[nginx]}" $(ps -o pid= --ppid "${PROC[nginx]}"); else echo "${PROC[$1]}"; fi; }
TICK_NS=$((1000000000 / $(getconf CLK_TCK)))

for name in "${NAMES[@]}"; do wrk -t1 -c"$CONNS" -d2s "${URL[$name]}" >/dev/null; done
RESULTS=$TMP/results
for round in $(seq 1 "$ROUNDS"); do
  line="round $round:"
  for j in $(seq 0 $((${#NAMES[@]} - 1))); do
    name=${NAMES[$(((j + round) % ${#NAMES[@]}))]}
    read -r -a pids <<<"$(proxy_pids "$name")"
    before=$(cpu_ticks "${pids[@]}")
    out=$(wrk -t1 -c"$CONNS" -d"${DURATION}s" "${URL[$name]}")
    after=$(cpu_ticks "${pids[@]}")
    rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
    requests=$(awk '/requests in/ {print $1}' <<<"$out")
    echo "$round $name $rps $(((after - before) * TICK_NS / requests))" >>"$RESULTS"
    line="$line $name=$rps"
  done
  echo "$line"
done

python3 - "$RESULTS" "${NAMES[@]}" <<'PY'
import statistics, sys
rows = [line.split() for line in open(sys.argv[1])]
names = sys.argv[2:]
rps = {(int(r[0]), r[1]): float(r[2]) for r in rows}
cpu = {(int(r[0]), r[1]): int(r[3]) for r in rows}
rounds = sorted({k[0] for k in rps})
def med_ratio(a, b, table):
    return statistics.median(table[(r, a)] / table[(r, b)] for r in rounds)
print(f"\n{len(rounds)} rounds; medians (req/s, proxy ns CPU/req), and medians of the per-round ratios")
print(f"{'target':8} {'req/s':>9} {'ns/req':>7} {'vs nginx':>9} {'vs gw0':>8} {'CPU vs gw0':>11}")
for n in names:
    line = f"{n:8} {statistics.median(rps[(r, n)] for r in rounds):9.0f} {statistics.median(cpu[(r, n)] for r in rounds):7.0f}"
    line += f" {med_ratio(n, 'nginx', rps):8.3f}x" if n != "nginx" else f" {'':>9}"
    if n.startswith("gw") and n != "gw0":
        line += f" {med_ratio(n, 'gw0', rps):7.3f}x {med_ratio(n, 'gw0', cpu):10.3f}x"
    print(line)
PY
