#!/usr/bin/env bash
# Prints the path of a Python venv holding a requirements file of this folder, creating or
# updating it when the requirements changed. Kept outside the clone so CI reuses it between runs.
# Installs python3-venv first when python3 cannot make venvs (scripts/ensure-python-venv.sh).
#
#   venv.sh                          deploy/checks/requirements.txt in /var/tmp/observastack-checks-venv
#                                    (or $OBSERVASTACK_CHECKS_VENV)
#   venv.sh REQUIREMENTS VENV_DIR    another requirements file of this folder, in its own venv
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
requirements="$here/${1:-requirements.txt}"
venv="${2:-${OBSERVASTACK_CHECKS_VENV:-/var/tmp/observastack-checks-venv}}"
stamp="$venv/.requirements"
if [ ! -x "$venv/bin/python" ] || [ ! -x "$venv/bin/pip" ]; then
  bash "$here/../../scripts/ensure-python-venv.sh" >&2
  # --clear: a venv made without ensurepip has a python but no pip; start it over.
  python3 -m venv --clear "$venv" >&2
  rm -f "$stamp"
fi
if ! cmp -s "$requirements" "$stamp"; then
  "$venv/bin/pip" install -q -r "$requirements" >&2
  cp "$requirements" "$stamp"
fi
printf '%s\n' "$venv"
