#!/usr/bin/env bash
# Instructions per proxied request of the user gateway (and of the shop behind it), counted by
# valgrind's callgrind over a fixed number of requests. Unlike wall-clock figures these counts
# barely move when other work shares the machine, so they compare one build with the next.
# User-space instructions only: the kernel's share (syscalls, loopback TCP) is not counted.
#
# Usage: bash bench/profile-gateway.sh [gateway|shop]   (default: gateway)
# Knobs: PROFILE_REQUESTS (20000), PROFILE_CONNECTIONS (16), PROFILE_ROUTE (/api/ping),
# PROFILE_OUT (callgrind output file, kept for `callgrind_annotate`), CARGO_TARGET_DIR,
# PROFILE_FORWARDED=1 (send `x-forwarded-for` and `traceparent`, the two fields the gateway adds
# to a request: with `shop`, what the shop pays for a request that came through the gateway).
# Binaries are taken from $CARGO_TARGET_DIR/release (build them first with
# `cargo build --release --workspace --bin gateway --bin shop`, the features `up` builds with).
set -euo pipefail
cd "$(dirname "$0")/.."
WHO=${1:-gateway}
N=${PROFILE_REQUESTS:-20000}
CONNS=${PROFILE_CONNECTIONS:-16}
ROUTE=${PROFILE_ROUTE:-/api/ping}
HEADERS=()
[ "${PROFILE_FORWARDED:-0}" = 1 ] && HEADERS=(-H "x-forwarded-for: 127.0.0.1"
  -H "traceparent: 00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
BIN_DIR=${CARGO_TARGET_DIR:-$PWD/target}/release
DB=observastack_profile
PG=postgres://postgres@127.0.0.1:5432
export PATH="$HOME/.cargo/bin:$PATH"
for tool in valgrind callgrind_control oha psql curl python3; do
  command -v "$tool" >/dev/null || { echo "profile: $tool is required" >&2; exit 1; }
done

TMP=$(mktemp -d /tmp/profile-gateway.XXXXXX)
OUT=${PROFILE_OUT:-$TMP/callgrind.out}
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  psql -q -h 127.0.0.1 -U postgres -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)" >/dev/null 2>&1 || true
  [ -n "${PROFILE_OUT:-}" ] || rm -rf "$TMP"
}
trap cleanup EXIT

read -r SHOP_PORT GW_PORT GW_ADMIN <<<"$(python3 -c 'import socket
s=[socket.socket() for _ in range(3)]
[x.bind(("127.0.0.1",0)) for x in s]
print(" ".join(str(x.getsockname()[1]) for x in s))')"
wait_ok() { for _ in $(seq 1 600); do curl -sf -o /dev/null "$1" && return 0; sleep 0.2; done; echo "profile: $1 not ready" >&2; exit 1; }

psql -q -h 127.0.0.1 -U postgres -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)" >/dev/null
psql -q -h 127.0.0.1 -U postgres -c "CREATE DATABASE $DB" >/dev/null
# A throwaway public key: the services verify tokens with it (no token is used here).
OBSERVASTACK_JWT_PUBLIC_KEYS=$(openssl genpkey -algorithm ed25519 | openssl pkey -pubout)
export OBSERVASTACK_JWT_PUBLIC_KEYS RUST_LOG=warn
GRIND=(valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$OUT")

SHOP_CMD=("$BIN_DIR/shop" --listen "127.0.0.1:$SHOP_PORT" --database-url "$PG/$DB" --seed-products 100 --seed-orders 100)
[ "$WHO" = shop ] && SHOP_CMD=("${GRIND[@]}" "${SHOP_CMD[@]}")
"${SHOP_CMD[@]}" >"$TMP/shop.log" 2>&1 &
SHOP_PID=$!; PIDS+=("$SHOP_PID")
wait_ok "http://127.0.0.1:$SHOP_PORT/readyz"
TARGET="http://127.0.0.1:$SHOP_PORT$ROUTE"
GRIND_PID=$SHOP_PID

if [ "$WHO" = gateway ]; then
  "${GRIND[@]}" "$BIN_DIR/gateway" --role user --threads 1 --listen "127.0.0.1:$GW_PORT" \
    --admin-listen "127.0.0.1:$GW_ADMIN" --shop-url "http://127.0.0.1:$SHOP_PORT" >"$TMP/gateway.log" 2>&1 &
  GRIND_PID=$!; PIDS+=("$GRIND_PID")
  wait_ok "http://127.0.0.1:$GW_ADMIN/readyz"
  TARGET="http://127.0.0.1:$GW_PORT$ROUTE"
fi

# Warm-up outside the counted window: connections, pools and lazy statics are set up.
oha -n 2000 -c "$CONNS" --no-tui "${HEADERS[@]}" "$TARGET" >/dev/null
callgrind_control -z "$GRIND_PID" >/dev/null
callgrind_control -i on "$GRIND_PID" >/dev/null
oha -n "$N" -c "$CONNS" --no-tui "${HEADERS[@]}" "$TARGET" >"$TMP/oha.txt"
callgrind_control -i off "$GRIND_PID" >/dev/null
callgrind_control -d "$GRIND_PID" >/dev/null
sleep 1
ok=$(awk '/\[200\]/ {print $2}' "$TMP/oha.txt")
[ "${ok:-0}" = "$N" ] || { echo "profile: only ${ok:-0} of $N requests answered 200" >&2; cat "$TMP/oha.txt" >&2; exit 1; }
dump=$(ls -t "$OUT"* | head -n 1)
total=$(awk '/^totals:/ {print $2; exit}' "$dump")
printf 'profile: %s, %s requests on %s: %s instructions, %d per request (%s)\n' \
  "$WHO" "$N" "$ROUTE" "$total" $((total / N)) "$dump"
