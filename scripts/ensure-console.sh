#!/usr/bin/env bash
# Builds the console's web assets (console/dist) when they are missing or older than their
# sources: `npm ci` when package-lock.json changed, then `vite build`. Needs Node.js 20+ and npm
# (installed by scripts/ensure-node.sh when missing or too old).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/ensure-node.sh
cd console

# Dependencies: reinstalled when the lock file is newer than the last install.
if [ ! -d node_modules ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  echo "installing the console's npm dependencies (npm ci)…" >&2
  npm ci --no-audit --no-fund --loglevel=error
fi

# Assets: rebuilt when any source is newer than the last build (or the build is missing).
stamp=dist/.build-stamp
if [ -f "$stamp" ] && [ -f dist/index.html ] \
  && [ -z "$(find src index.html vite.config.ts tsconfig.json package-lock.json -newer "$stamp" -print -quit)" ]; then
  exit 0
fi
echo "building the console (vite)…" >&2
npm run --silent build >/dev/null
touch "$stamp"
