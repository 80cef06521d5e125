#!/usr/bin/env bash
# Prints the path of a Python venv holding a requirements file of this folder, creating or
# updating it when the requirements changed. Kept outside the clone so CI reuses it between runs.
#
#   venv.sh                          deploy/checks/requirements.txt in /var/tmp/observastack-checks-venv
#                                    (or $OBSERVASTACK_CHECKS_VENV)
#   venv.sh REQUIREMENTS VENV_DIR    another requirements file of this folder, in its own venv
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
requirements="$here/${1:-requirements.txt}"
venv="${2:-${OBSERVASTACK_CHECKS_VENV:-/var/tmp/observastack-checks-venv}}"
stamp="$venv/.requirements"
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv" >&2
fi
if ! cmp -s "$requirements" "$stamp"; then
  "$venv/bin/pip" install -q -r "$requirements" >&2
  cp "$requirements" "$stamp"
fi
printf '%s\n' "$venv"
