#!/usr/bin/env bash
# Times what a fresh clone's `docker compose up` does first: build every ObservaStack image from
# source with deploy/Dockerfile (Rust release build inside the image, the console with npm).
# No registry is reached here, so the Dockerfile's base images are swapped (build args) for
# stand-ins built from Debian: the host's Rust toolchain on the Debian base, Debian's Node.js,
# and scripts/test-compose.sh's busybox and runtime images (run that script once first). Where
# this host trusts extra CAs (a TLS-intercepting proxy in front of crates.io and npm), the Rust
# and Node stand-ins trust them too.
#   bash bench/compose-from-source.sh        prints the build's wall time and each image's size
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
docker_cli=docker
docker buildx version >/dev/null 2>&1 || docker_cli=/usr/bin/docker
docker() { command "$docker_cli" "$@"; }
for image in debian busybox runtime; do
  docker image inspect "observastack-ci/$image:bookworm" >/dev/null 2>&1 \
    || { echo "observastack-ci/$image:bookworm is missing: run bash scripts/test-compose.sh once" >&2; exit 1; }
done
toolchain=$(rustc --print sysroot)
version=$(rustc --version | awk '{print $2}')

echo "== stand-in base images: Rust $version (the host's toolchain), Node.js from Debian" >&2
DOCKER_BUILDKIT=1 docker build -q -t "observastack-ci/rust:$version" -f - "$toolchain" >/dev/null <<DOCKERFILE
FROM observastack-ci/debian:bookworm
RUN apt-get update -qq \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends gcc libc6-dev ca-certificates >/dev/null \
 && rm -rf /var/lib/apt/lists/*
COPY . /opt/rust/
ENV CARGO_HOME=/usr/local/cargo PATH=/usr/local/cargo/bin:/opt/rust/bin:/usr/sbin:/usr/bin:/sbin:/bin
DOCKERFILE
empty=$(mktemp -d)
DOCKER_BUILDKIT=1 docker build -q -t observastack-ci/node:bookworm -f - "$empty" >/dev/null <<'DOCKERFILE'
FROM observastack-ci/debian:bookworm
RUN apt-get update -qq \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends nodejs npm ca-certificates >/dev/null \
 && rm -rf /var/lib/apt/lists/*
DOCKERFILE
rmdir "$empty"
if compgen -G "/usr/local/share/ca-certificates/*.crt" >/dev/null; then
  for image in "observastack-ci/rust:$version" observastack-ci/node:bookworm; do
    DOCKER_BUILDKIT=1 docker build -q -t "$image" -f - /usr/local/share/ca-certificates >/dev/null <<DOCKERFILE
FROM $image
COPY *.crt /usr/local/share/ca-certificates/
RUN update-ca-certificates >/dev/null
ENV NODE_EXTRA_CA_CERTS=/etc/ssl/certs/ca-certificates.crt
DOCKERFILE
  done
fi

echo "== building the six images from source (no build cache)" >&2
docker builder prune -af >/dev/null
started=$(date +%s)
for target in shop gateway runner orchestrator facts cli; do
  DOCKER_BUILDKIT=1 docker build -q -f deploy/Dockerfile --target "$target" -t "observastack-src/$target:bench" \
    --build-arg "RUST_IMAGE=observastack-ci/rust:$version" \
    --build-arg NODE_IMAGE=observastack-ci/node:bookworm \
    --build-arg BUSYBOX_IMAGE=observastack-ci/busybox:bookworm \
    --build-arg RUNTIME_IMAGE=observastack-ci/runtime:bookworm \
    "$root" >/dev/null
  echo "  $target built at $(( $(date +%s) - started )) s" >&2
done
echo "first build from source: $(( $(date +%s) - started )) s on $(nproc) cores" >&2
for target in shop gateway runner orchestrator facts cli; do
  size=$(docker image inspect --format '{{.Size}}' "observastack-src/$target:bench")
  awk -v name="$target" -v size="$size" 'BEGIN { printf "  %-13s %6.1f MB (on the %s stand-in runtime)\n", name, size / 1e6, "Debian" }'
done
