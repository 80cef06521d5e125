#!/usr/bin/env bash
# Builds the whole stack in release mode (and the console's web assets when their sources
# changed) and starts it natively (no Docker).
# Arguments are passed to `observastack up` (see `observastack up --help`).
set -euo pipefail
cd "$(dirname "$0")/.."
# The stack's database is `observastack` on the server ensure-postgres.sh picks; a DATABASE_URL
# of the caller's own is passed on as it is.
caller_url=${DATABASE_URL:-}
. scripts/postgres-env.sh
[ -n "$caller_url" ] || DATABASE_URL="${DATABASE_URL%/*}/observastack"
bash scripts/ensure-console.sh
echo "building (release; the first build takes about 20 minutes on 2 cores, later ones are incremental)…" >&2
cargo build --release --workspace --bins
exec "${CARGO_TARGET_DIR:-target}/release/observastack" up "$@"
