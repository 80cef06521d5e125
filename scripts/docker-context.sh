#!/usr/bin/env bash
# Assembles a Docker build context from binaries built once, for
#   docker build -f deploy/Dockerfile --build-arg BINARIES=prebuilt --target IMAGE CONTEXT
# Usage: scripts/docker-context.sh BIN_DIR CONTEXT_DIR [ARCH]
#   BIN_DIR      a folder holding shop, gateway, runner, orchestrator, facts and observastack
#                (e.g. target/release, or target/debug after `cargo test`)
#   CONTEXT_DIR  created or emptied; receives bin/ARCH/*, console/dist/, scenarios/ and empty/
#                (the facts image's /data)
#   ARCH         Docker's name for the binaries' architecture (default: this machine's)
# The binaries are stripped of symbols and debug info on the way (the images stay small).
# The console is built first when it is missing or stale (scripts/ensure-console.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -ge 2 ] || { echo "usage: $0 BIN_DIR CONTEXT_DIR [ARCH]" >&2; exit 2; }
bin_dir=$1
context=$2
case "$(uname -m)" in x86_64) native=amd64 ;; aarch64|arm64) native=arm64 ;; *) native=$(uname -m) ;; esac
arch=${3:-$native}

binaries="shop gateway runner orchestrator facts observastack"
for b in $binaries; do
  [ -x "$bin_dir/$b" ] || { echo "$bin_dir/$b is missing: build the workspace's binaries first" >&2; exit 1; }
done
bash scripts/ensure-console.sh

rm -rf "$context"
mkdir -p "$context/bin/$arch" "$context/console" "$context/empty"
for b in $binaries; do
  if command -v objcopy >/dev/null 2>&1; then
    objcopy --strip-all "$bin_dir/$b" "$context/bin/$arch/$b"
  else
    cp "$bin_dir/$b" "$context/bin/$arch/$b"
  fi
done
cp -r console/dist "$context/console/dist"
rm -f "$context/console/dist/.build-stamp"
cp -r scenarios "$context/scenarios"
