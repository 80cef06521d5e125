#!/usr/bin/env bash
# Makes sure Node.js 18+ and npm are on PATH (the console's build and e2e tests, the deploy and
# observability checks' npm packages): installs Debian's `nodejs` and `npm` when either is
# missing (with sudo when not root).
set -euo pipefail

if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  echo "installing Node.js and npm (Debian packages)…" >&2
  SUDO=""
  if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends nodejs npm >/dev/null
fi
if ! node -e 'process.exit(Number(process.versions.node.split(".")[0]) >= 18 ? 0 : 1)'; then
  echo "Node.js $(node --version) is too old: 18 or newer is needed" >&2
  exit 1
fi
