#!/usr/bin/env bash
# Makes sure `prometheus` and `promtool` are on PATH for the observability checks, and `curl`,
# which they (and the contract checks after them) talk to Prometheus and the stack with: installs
# Debian's `prometheus` and `curl` packages (non-interactively, without recommends) when one is
# absent (a minimal Debian has no curl). The package's own service is not started: the checks run
# their own Prometheus on loopback.
set -euo pipefail

if command -v prometheus >/dev/null 2>&1 && command -v promtool >/dev/null 2>&1 && command -v curl >/dev/null 2>&1; then
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "prometheus/promtool or curl are missing; install them (Debian: apt-get install prometheus curl)" >&2
  exit 1
fi
apt-get update -qq
if ! command -v curl >/dev/null 2>&1; then
  echo "installing curl (Debian package)…" >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends curl >/dev/null
fi
if command -v prometheus >/dev/null 2>&1 && command -v promtool >/dev/null 2>&1; then
  exit 0
fi
echo "installing Prometheus (Debian package)…" >&2
# policy-rc.d keeps the package's init script from starting a Prometheus on :9090.
policy=/usr/sbin/policy-rc.d
created_policy=0
if [ ! -e "$policy" ]; then
  printf '#!/bin/sh\nexit 101\n' >"$policy"
  chmod +x "$policy"
  created_policy=1
fi
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null
[ "$created_policy" = 1 ] && rm -f "$policy"
command -v promtool >/dev/null 2>&1 || { echo "promtool still missing after installing prometheus" >&2; exit 1; }
