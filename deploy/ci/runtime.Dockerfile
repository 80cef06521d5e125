# A stand-in for gcr.io/distroless/cc-debian12:nonroot, built from Debian's packages where no
# registry is reachable (scripts/test-compose.sh): glibc and libgcc from Debian, CA certificates,
# the `nonroot` user (65532), no shell and no package manager (merged /usr, as Debian lays it out).
ARG DEBIAN_IMAGE=observastack-ci/debian:bookworm
FROM ${DEBIAN_IMAGE} AS debian
RUN apt-get update -qq \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends ca-certificates >/dev/null \
 && mkdir -p /rootfs/etc/ssl/certs /rootfs/tmp /rootfs/home/nonroot /rootfs/usr/lib /rootfs/usr/lib64 \
 && ln -s usr/lib /rootfs/lib && ln -s usr/lib64 /rootfs/lib64 \
 && for pkg in libc6 libgcc-s1; do \
      dpkg -L "$pkg" | while read -r f; do \
        case "$f" in /usr/share/*|/usr/bin/*|/usr/sbin/*|/sbin/*|/bin/*|*/gconv/*) continue ;; esac; \
        if [ -L "$f" ] || [ -f "$f" ]; then mkdir -p "/rootfs$(dirname "$f")" && cp -a "$f" "/rootfs$f"; fi; \
      done; \
    done \
 && cp /etc/ssl/certs/ca-certificates.crt /rootfs/etc/ssl/certs/ \
 && printf 'root:x:0:0:root:/root:/sbin/nologin\nnobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n' >/rootfs/etc/passwd \
 && printf 'root:x:0:\nnobody:x:65534:\nnonroot:x:65532:\n' >/rootfs/etc/group \
 && printf 'hosts: files dns\n' >/rootfs/etc/nsswitch.conf \
 && chmod 1777 /rootfs/tmp && chown 65532:65532 /rootfs/home/nonroot

FROM scratch
COPY --from=debian /rootfs/ /
USER 65532:65532
WORKDIR /home/nonroot
