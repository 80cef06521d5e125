#!/usr/bin/env bash
# Builds the whole stack (and the console's web assets when their sources changed) and starts it
# natively (no Docker). Arguments are passed to `observastack up` (see `observastack up --help`).
#
#   OBSERVASTACK_PROFILE=dev      (default) cargo's dev profile: the first build takes minutes, not
#                                 the release build's twenty, a one-line change rebuilds in seconds,
#                                 and the test command builds into the same target/debug. Fast
#                                 enough for every scenario (the tests run them on these binaries).
#   OBSERVASTACK_PROFILE=release  optimised binaries in target/release (benchmarks, soak, images).
set -euo pipefail
cd "$(dirname "$0")/.."
# The stack's database is `observastack` on the server ensure-postgres.sh picks; a DATABASE_URL
# of the caller's own is passed on as it is.
caller_url=${DATABASE_URL:-}
. scripts/postgres-env.sh
[ -n "$caller_url" ] || DATABASE_URL="${DATABASE_URL%/*}/observastack"
bash scripts/ensure-console.sh
profile=${OBSERVASTACK_PROFILE:-dev}
case "$profile" in
  dev) flags=(); dir=debug ;;
  release) flags=(--release); dir=release ;;
  *) echo "OBSERVASTACK_PROFILE must be dev or release, not '$profile'" >&2; exit 2 ;;
esac
echo "building ($profile profile; later builds are incremental)…" >&2
cargo build "${flags[@]}" --workspace --bins
exec "${CARGO_TARGET_DIR:-target}/$dir/observastack" up "$@"
