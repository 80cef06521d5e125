#!/usr/bin/env bash
# The README's two commands on a fresh Debian bookworm: proves that every install step the project
# needs is in its own scripts, and measures how long a newcomer waits.
#
# A container from a `debootstrap --variant=minbase bookworm` image (the one scripts/test-compose.sh
# caches in /var/cache/observastack) gets only what minbase lacks to even start:
#   ca-certificates  HTTPS to crates.io, npm, PyPI (minbase has no CA bundle)
#   git              to clone the repository (and for cargo's git sources, if any)
#   gcc, libc6-dev   rustc links through `cc` and the crt files; the -sys crates (zstd, sqlite,
#                    mimalloc) compile C
# plus the host's Rust toolchain, read-only (~/.rustup and the rustup proxies of ~/.cargo/bin; an
# empty CARGO_HOME, so the crates are downloaded too). Everything else (PostgreSQL, Node.js and
# npm, python3-venv, Prometheus, Chromium, Docker Engine, debootstrap) must be installed by the
# project's scripts. In it, a fresh `git clone` of this checkout's HEAD (not the working tree) then:
#   1. `bash scripts/up.sh`, timed until the console answers (GET http://127.0.0.1:8081/console/,
#      the address `observastack up` prints), then stopped as Ctrl-C does (SIGINT to its process
#      group) and checked: it exits, no service is left, no port but PostgreSQL's still listens;
#   2. one line of crates/shop/src/routes/catalog.rs changed (in the container's clone only),
#      `bash scripts/up.sh` again, timed until the console answers (the incremental rebuild),
#      stopped the same way;
#   3. `bash scripts/test.sh`, timed, with the time of each of its phases.
# It prints a table of the times and exits non-zero when anything failed. The logs (each line
# stamped with the seconds since its step began), the packages the scripts installed and the test
# artifacts stay in target/fresh-os/<date>-<time>/ of this checkout.
#
# Docker inside: test-compose.sh installs Docker Engine and starts dockerd in the container, so it
# runs with every capability the host has (--privileged asks for all and is refused where the
# host's bounding set lacks one, e.g. CAP_SYS_RESOURCE in a VM sandbox), no seccomp/AppArmor profile, /proc/sys writable, the cgroup v1 hierarchy mounted
# read-write (dockerd uses cgroupfs) and a volume, not the overlay rootfs, at /var/lib/docker.
# Needs a Docker Engine on the host (started as test-compose.sh starts it when none answers, and
# stopped again afterwards).
#
#   FRESH_OS_STEPS="up incremental test"  the steps to run (default all three; `none` only sets up)
#   FRESH_OS_CARGO_CACHE=1    seed CARGO_HOME with a copy of the host's ~/.cargo/registry (no crate
#                             downloads)
#   FRESH_OS_TARGET_DIR=DIR   a host directory mounted as CARGO_TARGET_DIR (a warm build);
#                             default: target/ of the container's clone, empty (a cold build)
#   FRESH_OS_KEEP=1           keep the container and its Docker volume afterwards (to look around:
#                             docker exec -it <name> bash)
#   FRESH_OS_PRIVATE_DOCKERD=1  run the container on a dockerd of this check's own (its own socket,
#                             data root, bridge obsfreshos0 on 10.231.0.0/24 or
#                             FRESH_OS_PRIVATE_SUBNET=A.B.C), removed afterwards: on a shared
#                             machine, whatever else kills containers through the machine's Docker
#                             Engine cannot reach this one
#   FRESH_OS_LOGS=DIR         where the logs go (default target/fresh-os/<date>-<time>)
#   FRESH_OS_UP_TIMEOUT=S     how long the first `up.sh` may take to serve the console (default 2400)
#   FRESH_OS_TEST_TIMEOUT=S   how long `test.sh` may take (default 7200)
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

steps=" ${FRESH_OS_STEPS:-up incremental test} "
steps=${steps//,/ }
run_id=$(date -u +%Y%m%d-%H%M%S)
logs=${FRESH_OS_LOGS:-$root/target/fresh-os/$run_id}
name=observastack-fresh-os-$run_id
volume=$name-docker
image=observastack-fresh/debian:bookworm
cache=${OBSERVASTACK_DOCKER_CACHE:-/var/cache/observastack}
tarball=$cache/debian-bookworm-minbase.tar
rustup_home=${RUSTUP_HOME:-$HOME/.rustup}
cargo_home=${CARGO_HOME:-$HOME/.cargo}
up_timeout=${FRESH_OS_UP_TIMEOUT:-2400}
test_timeout=${FRESH_OS_TEST_TIMEOUT:-7200}
clone=/root/observastack # where a newcomer working as root would clone it
commit=$(git rev-parse HEAD)
branch=$(git symbolic-ref --short -q HEAD || echo fresh-os)
mkdir -p "$logs"
summary=$logs/summary.txt
: >"$summary"
failed=0
started_dockerd=""
container=""
events_pid=""

log() { echo "fresh-os: $*" >&2; }
die() { log "$*"; exit 1; }
# row PHASE SECONDS RESULT [GOAL]: one line of the summary table.
row() {
  printf '%-44s %8s  %-6s %s\n' "$1" "$2" "$3" "${4:-}" >>"$summary"
  [ "$3" != FAIL ] || failed=1
}
# The Debian packages the project's scripts installed: those in the container now that were not
# there after the setup (dependencies included), and the ones asked for by name.
record_packages() {
  [ -s "$logs/packages-setup.txt" ] || return 0
  docker exec "$container" bash -c 'dpkg-query -W -f "\${Package}\n" | sort' >"$logs/packages-after.txt" 2>/dev/null || return 0
  comm -13 "$logs/packages-setup.txt" "$logs/packages-after.txt" >"$logs/packages-installed-by-the-scripts.txt"
  grep -xE 'postgresql|nodejs|npm|python3-venv|prometheus|chromium|docker.io|debootstrap|curl|openssl|python3' \
    "$logs/packages-installed-by-the-scripts.txt" | xargs
}
secs() { awk -v s="$1" 'BEGIN { printf "%d min %02d s", s / 60, s % 60 }'; }

cleanup() {
  local rc=$?
  set +e
  if [ -n "$container" ]; then
    # The artifacts the tests leave in the clone (screenshots, contract reports, stack logs).
    for dir in target/console-artifacts target/compose-artifacts target/contracts .observastack/logs; do
      docker cp "$container:$clone/$dir" "$logs/artifacts-${dir//\//-}" >/dev/null 2>&1
    done
    record_packages
    [ -z "$events_pid" ] || kill "$events_pid" 2>/dev/null # before this script's own removal
    if [ "${FRESH_OS_KEEP:-0}" = 1 ]; then
      log "kept: docker exec -it $container bash; remove with: docker rm -f $container && docker volume rm $volume"
    else
      # A dockerd left running inside (a failed test-compose.sh) stops its containers first, so
      # their cgroups (in the host's hierarchy) are removed too.
      docker exec "$container" bash -c 'pid=$(cat /var/run/docker.pid 2>/dev/null) || exit 0
        docker ps -q | xargs -r docker rm -f >/dev/null 2>&1; kill -TERM "$pid"
        for _ in $(seq 1 60); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done' >/dev/null 2>&1
      docker rm -f "$container" >/dev/null 2>&1
      for _ in 1 2 3 4 5; do docker volume rm "$volume" >/dev/null 2>&1 && break; sleep 2; done
      ! docker volume inspect "$volume" >/dev/null 2>&1 || log "left behind: docker volume rm $volume"
    fi
  fi
  if [ -n "$started_dockerd" ] && [ "${FRESH_OS_KEEP:-0}" != 1 ]; then
    kill -TERM "$started_dockerd" 2>/dev/null
    for _ in $(seq 1 60); do kill -0 "$started_dockerd" 2>/dev/null || break; sleep 0.5; done
    if [ -n "${private_run:-}" ]; then
      for rule in "${private_rules[@]}"; do
        read -r -a r <<<"$rule"
        if [ "${r[0]}" = -t ]; then iptables -t nat -D "${r[@]:2}"; else iptables -D "${r[@]}"; fi
      done
      ip link del "$private_bridge"
      # Only once the daemon has let go of its mounts.
      if ! kill -0 "$started_dockerd" 2>/dev/null && ! grep -qF " $private_data/" /proc/mounts; then
        rm -rf "$private_data" "$private_run"
      fi
    fi
  elif [ -n "$started_dockerd" ]; then
    log "kept: the dockerd this check started (pid $started_dockerd${DOCKER_HOST:+, DOCKER_HOST=$DOCKER_HOST})"
  fi
  exit "$rc"
}
trap cleanup EXIT

# --- the host's Docker Engine (or a private one) and the base image --------------------------
command -v docker >/dev/null 2>&1 || die "no docker client: run scripts/test-compose.sh once (it installs Docker Engine)"
if [ "${FRESH_OS_PRIVATE_DOCKERD:-0}" = 1 ]; then
  # A dockerd of this check's own, on its own socket, data root and bridge (NAT by two iptables
  # rules of its own), so that nothing using the machine's Docker Engine sees the container.
  [ "$(id -u)" = 0 ] || die "FRESH_OS_PRIVATE_DOCKERD=1 needs root"
  private_run=/run/observastack-fresh-os
  private_data=/var/lib/observastack-fresh-os
  private_net=${FRESH_OS_PRIVATE_SUBNET:-10.231.0}
  private_bridge=obsfreshos0
  mkdir -p "$private_run" "$private_data"
  ip link show "$private_bridge" >/dev/null 2>&1 || {
    ip link add "$private_bridge" type bridge
    ip addr add "$private_net.1/24" dev "$private_bridge"
  }
  ip link set "$private_bridge" up
  private_rules=(
    "-t nat POSTROUTING -s $private_net.0/24 ! -o $private_bridge -j MASQUERADE"
    "FORWARD -i $private_bridge -j ACCEPT"
    "FORWARD -o $private_bridge -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT"
  )
  for rule in "${private_rules[@]}"; do
    read -r -a r <<<"$rule"
    if [ "${r[0]}" = -t ]; then
      iptables -t nat -C "${r[@]:2}" 2>/dev/null || iptables -t nat -I "${r[@]:2}"
    else
      iptables -C "${r[@]}" 2>/dev/null || iptables -I "${r[@]}"
    fi
  done
  log "starting a private dockerd (socket $private_run/docker.sock, bridge $private_bridge $private_net.0/24)…"
  dockerd --host "unix://$private_run/docker.sock" --data-root "$private_data" --exec-root "$private_run/exec" \
    --pidfile "$private_run/docker.pid" --bridge "$private_bridge" --iptables=false --ip-masq=false \
    --storage-driver overlay2 --exec-opt native.cgroupdriver=cgroupfs >"$logs/private-dockerd.log" 2>&1 &
  started_dockerd=$!
  export DOCKER_HOST="unix://$private_run/docker.sock"
elif ! docker info >/dev/null 2>&1; then
  [ "$(id -u)" = 0 ] || die "no Docker Engine answers and this is not root: start dockerd"
  log "starting dockerd (overlay2, cgroupfs)…"
  dockerd --storage-driver overlay2 --exec-opt native.cgroupdriver=cgroupfs >"$logs/host-dockerd.log" 2>&1 &
  started_dockerd=$!
fi
if [ -n "$started_dockerd" ]; then
  for _ in $(seq 1 60); do docker info >/dev/null 2>&1 && break; sleep 0.5; done
  docker info >/dev/null 2>&1 || { cat "$logs"/*dockerd.log >&2; die "dockerd did not start"; }
fi
if ! docker image inspect "$image" >/dev/null 2>&1; then
  # The same file scripts/test-compose.sh uses, so one serves both.
  bash scripts/debian-base.sh "$tarball" "$logs/debootstrap.log" || die "debootstrap failed"
  docker import "$tarball" "$image" >/dev/null
fi
[ -x "$cargo_home/bin/cargo" ] && [ -d "$rustup_home/toolchains" ] \
  || die "no rustup toolchain in $rustup_home and $cargo_home/bin"

# --- the container ------------------------------------------------------------------------------
# Every capability this host can grant (--privileged asks for all, which fails where the host's
# bounding set lacks one).
cap_names=(CHOWN DAC_OVERRIDE DAC_READ_SEARCH FOWNER FSETID KILL SETGID SETUID SETPCAP
  LINUX_IMMUTABLE NET_BIND_SERVICE NET_BROADCAST NET_ADMIN NET_RAW IPC_LOCK IPC_OWNER SYS_MODULE
  SYS_RAWIO SYS_CHROOT SYS_PTRACE SYS_PACCT SYS_ADMIN SYS_BOOT SYS_NICE SYS_RESOURCE SYS_TIME
  SYS_TTY_CONFIG MKNOD LEASE AUDIT_WRITE AUDIT_CONTROL SETFCAP MAC_OVERRIDE MAC_ADMIN SYSLOG
  WAKE_ALARM BLOCK_SUSPEND AUDIT_READ PERFMON BPF CHECKPOINT_RESTORE)
bounding=$((16#$(awk '/^CapBnd:/ {print $2}' /proc/self/status)))
caps=(--cap-add ALL)
for i in "${!cap_names[@]}"; do
  (((bounding >> i) & 1)) || caps+=(--cap-drop "${cap_names[$i]}")
done
log "capabilities: all but ${caps[*]:2}"

mounts=(
  -v "$rustup_home:/root/.rustup:ro" # where rustup put it; its toolchain links may be absolute
  -v "$cargo_home/bin:/opt/host-cargo/bin:ro"
  -v "$root:$root:ro" # cloned from, by its own path
  -v "$logs:/fresh-os"
  -v "$volume:/var/lib/docker"
  -v "$cache:$cache:ro" # the debootstrapped base for test-compose.sh's images
  -v /sys/fs/cgroup:/sys/fs/cgroup:rw
)
env=(
  -e HOME=/root -e RUSTUP_HOME=/root/.rustup -e CARGO_HOME=/root/.cargo
  -e PATH=/opt/host-cargo/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
  -e CARGO_TERM_PROGRESS_WHEN=never
)
# Where this machine's egress intercepts TLS, its extra CAs go in (ca-certificates' postinst adds
# them to the system bundle) and the variables that point Node, pip and curl at the bundle go
# along. A machine whose traffic is not intercepted has neither, and needs neither.
if compgen -G "/usr/local/share/ca-certificates/*.crt" >/dev/null; then
  mounts+=(-v /usr/local/share/ca-certificates:/usr/local/share/ca-certificates:ro)
fi
for var in NODE_EXTRA_CA_CERTS PIP_CERT REQUESTS_CA_BUNDLE SSL_CERT_FILE CURL_CA_BUNDLE GIT_SSL_CAINFO; do
  [ -z "${!var:-}" ] || env+=(-e "$var=${!var}")
done
if [ "${FRESH_OS_CARGO_CACHE:-0}" = 1 ]; then
  mounts+=(-v "$cargo_home/registry:/opt/host-cargo/registry:ro")
fi
if [ -n "${FRESH_OS_TARGET_DIR:-}" ]; then
  mkdir -p "$FRESH_OS_TARGET_DIR"
  mounts+=(-v "$FRESH_OS_TARGET_DIR:/fresh-target")
  env+=(-e CARGO_TARGET_DIR=/fresh-target)
fi

phase_start=$(date +%s)
log "logs in $logs"
docker volume create "$volume" >/dev/null
# --init: a PID 1 that reaps, as a booted system's has (pg_ctl's and dockerd's daemons end up
# its children). --shm-size: Chromium needs more than Docker's 64 MB default /dev/shm. The idle
# process restarts its `sleep` should something on the host kill sleeps by name (the container
# ends with it otherwise).
docker run -d --name "$name" --hostname fresh-os --init --shm-size 2g \
  "${caps[@]}" --security-opt seccomp=unconfined --security-opt apparmor=unconfined \
  --security-opt systempaths=unconfined "${mounts[@]}" "${env[@]}" "$image" \
  bash -c 'trap "exit 0" TERM; while :; do sleep 3600 & wait $!; done' >/dev/null
container=$name
# What the Docker Engine did to the container (a kill through its API shows here, with the signal).
docker events --filter "container=$name" --filter event=kill --filter event=die --filter event=oom --filter event=stop \
  --format '{{.Time}} {{.Action}} signal={{.Actor.Attributes.signal}} exit={{.Actor.Attributes.exitCode}}' \
  >"$logs/docker-events.log" 2>&1 &
events_pid=$!

# Runs a bash script in the container (in the clone once it exists), with the helpers below.
inside() { docker exec "$container" bash -c "$helpers"$'\n'"$1"; }
# The container still runs; else a failed row saying how it ended, once.
dead=""
alive() {
  [ "$(docker inspect -f '{{.State.Running}}' "$container" 2>/dev/null)" != true ] || return 0
  [ -n "$dead" ] || row "the container stopped (see docker-events.log)" - FAIL \
    "$(docker inspect -f 'exit {{.State.ExitCode}} at {{.State.FinishedAt}}, OOM killed: {{.State.OOMKilled}}' "$container" 2>/dev/null || echo 'it is gone')"
  dead=1
  return 1
}
helpers=$(
  cat <<'EOF'
set -euo pipefail
[ -d /root/observastack ] && cd /root/observastack
# Each line prefixed by the seconds since the stamping began; Ctrl-C (SIGINT to the process
# group) must not cut the log short while the stack drains.
stamp() {
  trap '' INT TERM
  local t0 now line
  printf -v t0 '%(%s)T' -1
  while IFS= read -r line || [ -n "$line" ]; do
    printf -v now '%(%s)T' -1
    printf '[%5ds] %s\n' $((now - t0)) "$line"
  done
}
export -f stamp
# The console answers 200 (no curl in minbase; bash's /dev/tcp instead).
console_ok() {
  local status
  { exec 3<>/dev/tcp/127.0.0.1/8081; } 2>/dev/null || return 1
  printf 'GET /console/ HTTP/1.1\r\nHost: 127.0.0.1:8081\r\nConnection: close\r\n\r\n' >&3
  IFS= read -r -t 10 status <&3 || status=""
  exec 3<&- 3>&-
  [[ $status == "HTTP/1."?" 200"* ]]
}
# Listening TCP ports with the process that holds each, as PORT:COMMAND (from /proc: no ss or
# netstat in minbase).
listening() {
  local -A owner=()
  local fd link pid _sl addr _rem state _queues _timer _retr _uid _timeout inode _rest
  for fd in /proc/[0-9]*/fd/*; do
    link=$(readlink "$fd" 2>/dev/null) || continue
    [[ $link == "socket:["*"]" ]] || continue
    pid=${fd#/proc/}
    owner[${link//[^0-9]/}]=$(cat "/proc/${pid%%/*}/comm" 2>/dev/null || echo "?")
  done
  cat /proc/net/tcp /proc/net/tcp6 2>/dev/null | while read -r _sl addr _rem state _queues _timer _retr _uid _timeout inode _rest; do
    if [ "$state" = 0A ]; then echo "$((16#${addr##*:})):${owner[$inode]:-?}"; fi
  done | sort -u -t: -k1,1n | xargs
}
# The stack's processes still alive.
stack_processes() {
  local p comm
  for p in /proc/[0-9]*; do
    comm=$(cat "$p/comm" 2>/dev/null) || continue
    case $comm in observastack | shop | gateway | runner | orchestrator | facts) echo "${p#/proc/}:$comm" ;; esac
  done | xargs
}
EOF
)

log "container setup: the packages minbase lacks to start, the clone"
inside '
dpkg-query -W -f "\${Package}\n" | sort >/fresh-os/packages-minbase.txt
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
  ca-certificates git gcc libc6-dev >/dev/null
dpkg-query -W -f "\${Package}\n" | sort >/fresh-os/packages-setup.txt
git clone -q '"$root $clone"'
cd '"$clone"'
git checkout -q -B '"$branch $commit"'
git log -1 --format="clone at %H (%cI) %s"
if [ -d /opt/host-cargo/registry ]; then cp -a /opt/host-cargo/registry /root/.cargo/; echo "CARGO_HOME seeded with the host registry"; fi
echo "$(rustc --version), $(cargo --version)"
' 2>&1 | tee "$logs/setup.log" >&2 || die "container setup failed (log: $logs/setup.log)"
row "container setup (apt: 4 packages, clone)" $(($(date +%s) - phase_start)) ok

# run_up LABEL: `bash scripts/up.sh` in the background; seconds until the console answers, then
# Ctrl-C and the checks that the stack is gone. Sets up_seconds, up_stop_seconds.
run_up() {
  local label=$1 t0 pgid result
  t0=$(date +%s)
  pgid=$(inside 'setsid bash -c "set -o pipefail; bash scripts/up.sh 2>&1 | stamp" >/fresh-os/'"$label"'.log 2>&1 </dev/null & echo $!')
  # setsid forks only when it is a process group leader; the shell `&` made it none, so its pid
  # is the group's.
  result=$(inside '
    deadline=$(( $(printf "%(%s)T" -1) + '"$up_timeout"' ))
    until console_ok; do
      kill -0 '"$pgid"' 2>/dev/null || { echo exited; exit 0; }
      [ "$(printf "%(%s)T" -1)" -lt "$deadline" ] || { echo timeout; exit 0; }
      sleep 1
    done
    echo served') || result="error"
  up_seconds=$(($(date +%s) - t0))
  if [ "$result" != served ]; then
    log "$label: the console was not served ($result); last lines of $logs/$label.log:"
    tail -n 30 "$logs/$label.log" >&2 || true
    inside "kill -TERM -- -$pgid 2>/dev/null || true" || true
    return 1
  fi
  grep -q "ObservaStack is up." "$logs/$label.log" || log "$label: the console answers before 'ObservaStack is up.' was printed"
  t0=$(date +%s)
  result=$(inside '
    kill -INT -- -'"$pgid"'
    for _ in $(seq 1 120); do kill -0 '"$pgid"' 2>/dev/null || break; sleep 0.5; done
    if kill -0 '"$pgid"' 2>/dev/null; then kill -KILL -- -'"$pgid"'; echo "still running 60 s after SIGINT"; exit 0; fi
    sleep 1
    left=$(stack_processes)
    [ -z "$left" ] || { echo "processes left: $left"; exit 0; }
    # PostgreSQL keeps running (ensure-postgres.sh started it for later runs).
    ports=$(listening | tr " " "\n" | grep -v ":postgres$" | xargs || true)
    [ -z "$ports" ] || { echo "ports still listening: $ports"; exit 0; }
    echo stopped') || result=error
  up_stop_seconds=$(($(date +%s) - t0))
  if [ "$result" != stopped ]; then
    log "$label: Ctrl-C did not stop the stack cleanly: $result"
    return 2
  fi
}

# cargo's own figure for the build in an up log ("Finished `dev` profile … in 4m 12s").
cargo_finished() { grep -o 'Finished .* in [0-9hms. ]*' "$1" | tail -n 1 | sed 's/.* in //' || true; }
# The seconds from the start of the log to its first line matching PATTERN.
at() { grep -m1 -E "$2" "$1" | sed -E 's/^\[ *([0-9]+)s\].*/\1/' || true; }

up_done=""
if [[ $steps == *" up "* ]] && alive; then
  log "step 1: bash scripts/up.sh until the console answers (cold)"
  if run_up up-cold; then
    up_done=1
    b=$(at "$logs/up-cold.log" 'building \(')
    row "up.sh, cold: until the build starts (installs)" "${b:-?}" ok
    row "up.sh, cold: cargo build" "$(cargo_finished "$logs/up-cold.log")" ok
    row "up.sh, cold: to console served" "$up_seconds" ok "goal <= 600 s; $(secs "$up_seconds")"
    row "up.sh stop (Ctrl-C, drained, ports freed)" "$up_stop_seconds" ok
  else
    rc=$?
    if [ "$rc" = 2 ]; then
      up_done=1
      row "up.sh, cold: to console served" "$up_seconds" ok "$(secs "$up_seconds")"
      row "up.sh stop (Ctrl-C, drained, ports freed)" "$up_stop_seconds" FAIL
    else
      row "up.sh, cold: to console served" "$up_seconds" FAIL
    fi
  fi
fi

if [[ $steps == *" incremental "* && $steps == *" up "* && -z $up_done ]]; then
  row "up.sh after a one-line change" - skip "the first up.sh failed"
elif [[ $steps == *" incremental "* ]] && alive; then
  log "step 2: a one-line change in crates/shop/src/routes/catalog.rs, bash scripts/up.sh again"
  edit=$(inside '
    f=crates/shop/src/routes/catalog.rs
    cp "$f" /tmp/catalog.rs.orig
    sed -i "0,/unknown category; expected one of/s//unknown category (fresh-os edit); expected one of/" "$f"
    # Should that message be gone, a comment line is the one-line change.
    cmp -s "$f" /tmp/catalog.rs.orig && echo "// fresh-os: a one-line change for the incremental rebuild" >>"$f"
    cmp -s "$f" /tmp/catalog.rs.orig && exit 1
    { diff /tmp/catalog.rs.orig "$f" || true; } | grep "^>" | head -n 1' 2>&1) || edit="(edit failed)"
  log "changed: $edit"
  if run_up up-incremental; then
    row "up.sh after a one-line change: cargo build" "$(cargo_finished "$logs/up-incremental.log")" ok
    row "up.sh after a one-line change: console served" "$up_seconds" ok "goal <= 60 s"
    row "up.sh stop (Ctrl-C, drained, ports freed)" "$up_stop_seconds" ok
  else
    rc=$?
    [ "$rc" = 2 ] && row "up.sh after a one-line change: console served" "$up_seconds" ok "goal <= 60 s"
    [ "$rc" = 2 ] && row "up.sh stop (Ctrl-C, drained, ports freed)" "$up_stop_seconds" FAIL
    [ "$rc" = 2 ] || row "up.sh after a one-line change: console served" "$up_seconds" FAIL
  fi
  inside 'git checkout -q -- crates/shop/src/routes/catalog.rs' || true
fi

if [[ $steps == *" test "* ]] && alive; then
  log "step 3: bash scripts/test.sh (log: $logs/test.log)"
  t0=$(date +%s)
  status=0
  inside 'timeout --foreground '"$test_timeout"' bash scripts/test.sh 2>&1 | stamp >/fresh-os/test.log; exit "${PIPESTATUS[0]}"' || status=$?
  total=$(($(date +%s) - t0))
  # Its phases: the `echo "== …"` lines of scripts/test.sh, in the order they were printed.
  phase_name() { local n=${1#== }; echo "${n%% (*}"; }
  markers=$(git show "$commit:scripts/test.sh" | sed -n 's/^echo "\(== [^"]*\)" >&2$/\1/p')
  prev_name="" prev_at=0
  while IFS= read -r marker; do
    [ -n "$marker" ] || continue
    t=$(grep -m1 -F "] $marker" "$logs/test.log" 2>/dev/null | sed -E 's/^\[ *([0-9]+)s\].*/\1/' || true)
    [ -n "$t" ] || continue
    [ -z "$prev_name" ] || row "  test.sh: $(phase_name "$prev_name")" $((t - prev_at)) ok
    prev_name=$marker prev_at=$t
  done <<<"$markers"
  last=$(tail -n 1 "$logs/test.log" 2>/dev/null | sed -nE 's/^\[ *([0-9]+)s\].*/\1/p')
  [ -z "$prev_name" ] || row "  test.sh: $(phase_name "$prev_name")" $((${last:-$prev_at} - prev_at)) "$([ "$status" = 0 ] && echo ok || echo '?')"
  if [ "$status" = 0 ]; then
    row "test.sh total" "$total" ok "$(secs "$total")"
  else
    row "test.sh total" "$total" FAIL "exit $status; $(secs "$total")"
    tail -n 40 "$logs/test.log" >&2
  fi
fi

alive || true
{
  echo
  echo "fresh Debian bookworm (minbase), commit $commit"
  printf '%-44s %8s  %-6s %s\n' phase seconds result note
  cat "$summary"
  echo "installed by the project's scripts: $(record_packages) ($(wc -l 2>/dev/null <"$logs/packages-installed-by-the-scripts.txt" || echo 0) packages with their dependencies)"
  echo "logs: $logs"
} | tee "$logs/report.txt" >&2
[ "$failed" = 0 ] || die "FAILED"
log "all steps passed"
