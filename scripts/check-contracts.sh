#!/usr/bin/env bash
# Contract tests: Schemathesis (PyPI, deploy/checks/contracts-requirements.txt) runs every OpenAPI
# document of docs/api/ against the listener that serves it on the real native stack (debug
# binaries under `observastack up`, its own ports, database and state dir): no 5xx, responses
# match their schemas, content types and documented statuses, valid requests are accepted and
# invalid ones refused, 401 without a token, 405 with a true `Allow`, created carts findable
# (settings and the few exceptions, each with its reason: deploy/checks/schemathesis.toml).
#
# Two passes over a calm stack: first every operation that changes nothing a later request
# depends on, then per document the ones that do (`/config` writes, runs, reset), each followed
# by `POST /api/reset`, so a fault or a started scenario never leaks into another document's run.
#
#   CONTRACTS_MAX_EXAMPLES=N  test cases per operation and phase (default 25; more finds more)
#   CONTRACTS_SEED=N          Schemathesis seed, to repeat a run (each run prints its seed)
#   CONTRACTS_DOCS="shop …"   only these documents (file names without .json)
#   CONTRACTS_PORT_OFFSET=N   the stack's port offset (default 600)
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

. scripts/postgres-env.sh # DATABASE_URL: the admin URL of the server to create $db in
venv=$(bash deploy/checks/venv.sh contracts-requirements.txt "${OBSERVASTACK_CONTRACTS_VENV:-/var/tmp/observastack-contracts-venv}")

target=${CARGO_TARGET_DIR:-target}
bins=(observastack shop gateway runner orchestrator facts)
if [ -z "${OBSERVASTACK_BINS_BUILT:-}" ]; then # else scripts/test.sh's `cargo test` built them
  echo "== contracts: building debug binaries" >&2
  cargo build --locked --bins -p observastack -p shop -p gateway -p runner -p orchestrator -p facts
fi

# A private copy of the binaries: a shared target directory may be rebuilt by another checkout
# while this stack runs.
work=$(mktemp -d)
mkdir -p "$work/bin" "$work/console"
for b in "${bins[@]}"; do cp "$target/debug/$b" "$work/bin/"; done
# The console's pages are in the orchestrator's document; a stand-in page makes them answer as
# a built console does (building the real one is the console e2e's job).
echo '<!doctype html><title>ObservaStack console</title>' >"$work/console/index.html"

offset=${CONTRACTS_PORT_OFFSET:-600}
db=observastack_contracts
examples=${CONTRACTS_MAX_EXAMPLES:-25}
reports=${CONTRACTS_REPORTS:-$root/target/contracts}
rm -rf "$reports"
mkdir -p "$reports"
psql -q -d "$DATABASE_URL" -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null

up_pid=""
cleanup() {
  if [ -n "$up_pid" ] && kill -0 "$up_pid" 2>/dev/null; then
    kill -TERM "$up_pid" 2>/dev/null || true
    for _ in $(seq 1 40); do kill -0 "$up_pid" 2>/dev/null || break; sleep 0.5; done
    kill -KILL "$up_pid" 2>/dev/null || true
  fi
  cp -r "$work/state/logs" "$reports/stack-logs" 2>/dev/null || true
  rm -rf "$work"
  psql -q -d "$DATABASE_URL" -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null 2>&1 || true
}
trap cleanup EXIT

echo "== contracts: starting the stack (port offset $offset, database $db)" >&2
"$work/bin/observastack" --state-dir "$work/state" up \
  --bin-dir "$work/bin" --port-offset "$offset" \
  --database-url "${DATABASE_URL%/*}/$db" \
  --seed-products 500 --seed-orders 500 \
  --console-dir "$work/console" --scenarios "$root/scenarios" \
  >"$work/up.out" 2>&1 &
up_pid=$!
for _ in $(seq 1 600); do
  grep -q "ObservaStack is up." "$work/up.out" && break
  if ! kill -0 "$up_pid" 2>/dev/null; then
    cat "$work/up.out" >&2
    echo "observastack up exited before the stack was ready" >&2
    exit 1
  fi
  sleep 0.5
done
if ! grep -q "ObservaStack is up." "$work/up.out"; then
  cat "$work/up.out" >&2
  echo "the stack was not up after 300 s" >&2
  exit 1
fi
token=$("$work/bin/observastack" --state-dir "$work/state" token --role instructor --subject contracts)

# Each document at the listener that serves it (docs/ports.md). `internal.json` describes the
# gateways' admin listeners; the observability gateway's is the one whose config changes touch
# no other document's run.
declare -A port=(
  [shop]=8101 [orchestrator]=8102 [runner]=8103 [facts]=8104 [internal]=8113
  [gateway-user]=8080 [gateway-control]=8081 [gateway-observability]=8082
)
docs=(shop orchestrator runner facts internal gateway-user gateway-control gateway-observability)
# Documents run only when named in CONTRACTS_DOCS until their owner's fixes land (none now).
pending=()
[ -n "${CONTRACTS_DOCS:-}" ] && read -r -a docs <<<"$CONTRACTS_DOCS"
for doc in "${docs[@]}"; do
  [ -f "docs/api/$doc.json" ] && [ -n "${port[$doc]:-}" ] || { echo "no document or listener for $doc" >&2; exit 1; }
done
# Every document in docs/api/ is run unless CONTRACTS_DOCS picks some.
if [ -z "${CONTRACTS_DOCS:-}" ]; then
  for file in docs/api/*.json; do
    name=$(basename "$file" .json)
    [ -n "${port[$name]:-}" ] || { echo "docs/api/$name.json has no listener in scripts/check-contracts.sh" >&2; exit 1; }
  done
  if [ "${#pending[@]}" -gt 0 ]; then echo "== contracts: not run until fixed: ${pending[*]}" >&2; fi
fi

# Operations whose effects outlive the request: config writes (a fault, a shrunk pool), runs
# (a scenario injects faults and starts load) and the reset.
writes='^(start_run|stop_run|give_up|reset|patch_config|put_config|reset_config|patch_service_config|put_service_config|reset_service_config)$'
# Config writes whose valid values the schema cannot fully describe: a fault key must name a
# route of the service (rule `known_route`, checked after the schema so the 400 can list the
# routes), the runner's load plan has cross-field rules (ramp and spike need `target_rate`,
# steps in time order, a mix with some weight), and the control gateway forwards to any
# service, so its body's schema depends on `{service}`. Their refusals of generated "valid"
# changes are by design; crates/observastack/tests/fuzz.rs proves each names field and rule.
declare -A partial_schema=([shop]=1 [runner]=1 [internal]=1 [gateway-control]=1)

seed_args=()
[ -n "${CONTRACTS_SEED:-}" ] && seed_args=(--seed "$CONTRACTS_SEED")
failed=()
summary=()
st_run() { # document phase st-arguments...
  local doc=$1 phase=$2 started status
  shift 2
  started=$(date +%s)
  status=0
  (cd "$work" && "$venv/bin/st" --config-file "$root/deploy/checks/schemathesis.toml" run "$root/docs/api/$doc.json" \
    --url "http://127.0.0.1:$((port[$doc] + offset))" -H "Authorization: Bearer $token" \
    --max-examples "$examples" --request-timeout 15 --generation-database none --no-color \
    "${seed_args[@]}" "$@") >"$reports/$doc.$phase.txt" 2>&1 || status=$?
  local verdict
  verdict=$(grep -E '^=+ .* in [0-9.]+s =+$' "$reports/$doc.$phase.txt" | tr -d '=' | xargs || true)
  summary+=("$(printf '%-22s %-6s %4ss  %s' "$doc" "$phase" "$(($(date +%s) - started))" "${verdict:-exit $status}")")
  if [ "$status" -ne 0 ]; then
    failed+=("$doc ($phase)")
    sed -n '/= FAILURES =/,$p' "$reports/$doc.$phase.txt" >&2
  fi
}

reset_stack() {
  local code
  code=$(curl -s -o "$reports/reset.json" -w '%{http_code}' -X POST -H "Authorization: Bearer $token" \
    "http://127.0.0.1:$((8102 + offset))/api/reset")
  [ "$code" = 200 ] || { echo "POST /api/reset answered $code" >&2; failed+=("reset"); }
}

for doc in "${docs[@]}"; do
  echo "== contracts: $doc.json (operations that change nothing lasting)" >&2
  st_run "$doc" read --exclude-operation-id-regex "$writes"
done
for doc in "${docs[@]}"; do
  if ! grep -qE '"operationId": "(start_run|stop_run|give_up|reset|patch_config|put_config|reset_config|patch_service_config|put_service_config|reset_service_config)"' "docs/api/$doc.json"; then
    continue
  fi
  echo "== contracts: $doc.json (config writes, runs, reset)" >&2
  extra=()
  [ -n "${partial_schema[$doc]:-}" ] && extra=(--exclude-checks positive_data_acceptance)
  # No stateful phase: the links between these operations and the others are filtered out.
  st_run "$doc" write --include-operation-id-regex "$writes" --phases examples,coverage,fuzzing "${extra[@]}"
  reset_stack
done

printf '%s\n' "== contracts: $examples examples per operation and phase; reports in $reports" "${summary[@]}" >&2
if [ "${#failed[@]}" -gt 0 ]; then
  echo "contract failures: ${failed[*]}" >&2
  exit 1
fi
