#!/usr/bin/env bash
# Makes the Debian bookworm minbase root filesystem tarball, once: `debootstrap --variant=minbase`
# (installed from Debian when missing), without apt's caches. No registry is reachable, so this
# tarball, `docker import`ed, is the base of every image the Compose test and the fresh-OS check
# run. Does nothing when the tarball exists.
#
#   bash scripts/debian-base.sh TARBALL LOGFILE
set -euo pipefail
tarball=${1:?usage: debian-base.sh TARBALL LOGFILE}
logfile=${2:?usage: debian-base.sh TARBALL LOGFILE}
[ -s "$tarball" ] && exit 0
command -v debootstrap >/dev/null 2>&1 || {
  DEBIAN_FRONTEND=noninteractive apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends debootstrap >/dev/null
}
echo "debootstrap --variant=minbase bookworm (cached in $tarball)…" >&2
mkdir -p "$(dirname "$tarball")"
rootfs=$(mktemp -d /tmp/observastack-rootfs.XXXXXX)
trap 'rm -rf "$rootfs"' EXIT
debootstrap --variant=minbase bookworm "$rootfs" http://deb.debian.org/debian >"$logfile" 2>&1 \
  || { tail -20 "$logfile" >&2; echo "debootstrap failed" >&2; exit 1; }
rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
tar -C "$rootfs" -cf "$tarball.tmp" . && mv "$tarball.tmp" "$tarball"
