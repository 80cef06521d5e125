#!/usr/bin/env bash
# Makes sure `python3 -m venv` can create a virtual environment with pip in it (the deploy,
# observability and contract checks keep their PyPI packages in venvs): Debian ships venv's
# ensurepip apart from python3, in `python3-venv`, installed here as root when it is missing.
# Not root: prints the apt-get command to run and exits non-zero.
set -euo pipefail

can_venv() { command -v python3 >/dev/null 2>&1 && python3 -c 'import ensurepip, venv' >/dev/null 2>&1; }

if can_venv; then
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "python3 cannot create virtual environments (no python3, or no ensurepip); install it: sudo apt-get install python3-venv" >&2
  exit 1
fi
echo "installing python3-venv (Debian package)…" >&2
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends python3-venv >/dev/null
can_venv || {
  echo "python3 ($(command -v python3 || echo 'not on PATH')) still cannot create virtual environments after installing python3-venv; is it Debian's /usr/bin/python3?" >&2
  exit 1
}
