# A stand-in for docker.io/prom/prometheus: Debian's `prometheus` package with the official
# image's interface (entrypoint /bin/prometheus, which merged /usr makes /usr/bin/prometheus; storage in /prometheus owned by nobody, a
# `wget` for the compose healthcheck).
ARG DEBIAN_IMAGE=observastack-ci/debian:bookworm
FROM ${DEBIAN_IMAGE}
RUN apt-get update -qq \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus busybox-static >/dev/null \
 && rm -rf /var/lib/apt/lists/* \
 && ln -s /bin/busybox /usr/local/bin/wget \
 && mkdir -p /prometheus /etc/prometheus \
 && chown nobody:nogroup /prometheus
USER nobody
WORKDIR /prometheus
EXPOSE 9090
ENTRYPOINT ["/bin/prometheus"]
CMD ["--config.file=/etc/prometheus/prometheus.yml", "--storage.tsdb.path=/prometheus"]
