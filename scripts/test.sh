#!/usr/bin/env bash
# Runs every test: formatting, lints, the whole workspace's tests against a real PostgreSQL,
# the deploy and observability checks, the OpenAPI contracts and the console in Chromium on the
# native stack, and the Docker Compose stack on a real Docker Engine. Installs and starts
# whatever the tests need.
set -euo pipefail
cd "$(dirname "$0")/.."

# DATABASE_URL (and PGHOST/PGPORT/PGUSER): the caller's, the local trust cluster, or this
# checkout's own (scripts/ensure-postgres.sh).
. scripts/postgres-env.sh

echo "== cargo fmt --check" >&2
cargo fmt --all -- --check
echo "== cargo clippy" >&2
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "== cargo test" >&2
cargo test --workspace --locked --no-fail-fast
# `cargo test` built every binary (each package with a binary has integration tests); the
# scripts below use those instead of building the tree again without dev-dependency features.
export OBSERVASTACK_BINS_BUILT=1
echo "== deploy checks (compose, Dockerfile, workflows, Gitpod, terraform)" >&2
bash scripts/check-deploy.sh
echo "== observability checks (promtool, dashboards, real Prometheus on the native stack)" >&2
bash scripts/check-observability.sh
echo "== contracts (Schemathesis on every OpenAPI document of docs/api/, native stack)" >&2
bash scripts/check-contracts.sh
echo "== console e2e (headless Chromium against the real stack)" >&2
bash scripts/test-console.sh
echo "== Docker Compose stack on a real Docker Engine (images from the binaries built above)" >&2
bash scripts/test-compose.sh
