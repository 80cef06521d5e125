#!/usr/bin/env bash
# Installs deploy/checks' npm packages (package-lock.json) into deploy/checks/node_modules when
# they are missing or the lock file changed; Node.js and npm first when they are missing
# (scripts/ensure-node.sh).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
bash "$here/../../scripts/ensure-node.sh"
stamp="$here/node_modules/.observastack-lock"
if ! cmp -s "$here/package-lock.json" "$stamp"; then
  npm ci --prefix "$here" --no-audit --no-fund --silent
  cp "$here/package-lock.json" "$stamp"
fi
