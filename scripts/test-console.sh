#!/usr/bin/env bash
# The console's end-to-end tests: starts the real stack (debug binaries, its own database and
# ports) with `observastack up`, then drives headless Chromium through it with playwright-core
# (console/e2e/run.mjs). Screenshots land in target/console-artifacts/.
#
#   CONSOLE_REPORT=1  also measure first paint and asset sizes (console/e2e/report.mjs)
#   CONSOLE_ONLY_REPORT=1  only measure (scripts/bench-console.sh)
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

. scripts/postgres-env.sh # DATABASE_URL: the admin URL of the server to create $db in
bash scripts/ensure-chromium.sh
bash scripts/ensure-console.sh

target=${CARGO_TARGET_DIR:-target}
if [ -z "${OBSERVASTACK_BINS_BUILT:-}" ]; then # else scripts/test.sh's `cargo test` built them
  echo "== console e2e: building debug binaries" >&2
  cargo build --locked --bins -p observastack -p shop -p gateway -p runner -p orchestrator
fi

# A private copy of the binaries: a shared target directory may be rebuilt by another
# checkout while this stack runs.
work=$(mktemp -d)
mkdir -p "$work/bin"
for b in observastack shop gateway runner orchestrator; do cp "$target/debug/$b" "$work/bin/"; done

offset=${CONSOLE_E2E_PORT_OFFSET:-400}
db=observastack_console_e2e
artifacts=${CONSOLE_ARTIFACTS:-$root/target/console-artifacts}
mkdir -p "$artifacts"
psql -q -d "$DATABASE_URL" -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null

up_pid=""
cleanup() {
  if [ -n "$up_pid" ] && kill -0 "$up_pid" 2>/dev/null; then
    kill -TERM "$up_pid" 2>/dev/null || true
    for _ in $(seq 1 40); do kill -0 "$up_pid" 2>/dev/null || break; sleep 0.5; done
    kill -KILL "$up_pid" 2>/dev/null || true
  fi
  cp -r "$work/state/logs" "$artifacts/stack-logs" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

echo "== console e2e: starting the stack (port offset $offset, database $db)" >&2
"$work/bin/observastack" --state-dir "$work/state" up \
  --bin-dir "$work/bin" --port-offset "$offset" \
  --database-url "${DATABASE_URL%/*}/$db" \
  --seed-products 2000 --seed-orders 2000 \
  --console-dir "$root/console/dist" --scenarios "$root/scenarios" \
  >"$work/up.out" 2>&1 &
up_pid=$!

login=""
for _ in $(seq 1 600); do
  login=$(grep -o 'http://[^ ]*/console/login?code=[^ ]*' "$work/up.out" | head -n 1 || true)
  [ -n "$login" ] && break
  if ! kill -0 "$up_pid" 2>/dev/null; then
    cat "$work/up.out" >&2
    echo "observastack up exited before the stack was ready" >&2
    exit 1
  fi
  sleep 0.5
done
if [ -z "$login" ]; then
  cat "$work/up.out" >&2
  echo "no console login URL after 300 s" >&2
  exit 1
fi
cp "$work/up.out" "$artifacts/up.out"

export CONSOLE_LOGIN_URL="$login" CONSOLE_ARTIFACTS="$artifacts" CONSOLE_DIST="$root/console/dist"
export CONSOLE_UP_PID="$up_pid" CONSOLE_SESSION_FILE="$work/session.json"
cd console
if [ "${CONSOLE_ONLY_REPORT:-0}" != 1 ]; then
  echo "== console e2e: headless Chromium" >&2
  node e2e/run.mjs
fi
if [ "${CONSOLE_ONLY_REPORT:-0}" = 1 ] || [ "${CONSOLE_REPORT:-0}" = 1 ]; then
  echo "== console report: first paint and asset sizes" >&2
  node e2e/report.mjs
fi
