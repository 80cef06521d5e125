# A stand-in for docker.io/library/busybox:musl: Debian's static busybox at /bin/busybox (the
# images copy it for their HEALTHCHECK), with a shell for the build step that needs one.
ARG DEBIAN_IMAGE=observastack-ci/debian:bookworm
FROM ${DEBIAN_IMAGE}
RUN apt-get update -qq \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends busybox-static >/dev/null \
 && rm -rf /var/lib/apt/lists/*
