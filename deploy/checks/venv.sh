#!/usr/bin/env bash
# Prints the path of a Python venv holding deploy/checks/requirements.txt, creating or updating
# it when the requirements changed. Kept outside the clone so CI reuses it between runs.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
venv="${OBSERVASTACK_CHECKS_VENV:-/var/tmp/observastack-checks-venv}"
stamp="$venv/.requirements"
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv" >&2
fi
if ! cmp -s "$here/requirements.txt" "$stamp"; then
  "$venv/bin/pip" install -q -r "$here/requirements.txt" >&2
  cp "$here/requirements.txt" "$stamp"
fi
printf '%s\n' "$venv"
