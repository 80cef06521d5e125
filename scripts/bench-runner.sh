#!/usr/bin/env bash
# Load-generator benchmark: the scenario runner (`observastack load`) against oha, taking turns
# against the same neutral target (nginx answering a static 200) in one run:
#   (a) open-loop accuracy at fixed rates (achieved rate, p99 from the planned send time),
#   (b) closed-loop max throughput and client CPU per request at equal concurrency,
#   (c) coordinated omission: the target frozen (SIGSTOP/SIGCONT) for 1 s of a 10 s run.
# Prints tables with ratios and PASS/MISS per target and writes artifacts/bench-runner.json.
# A MISS is reported, not fatal: the script fails only when the setup is broken.
#
# Usage: bash scripts/bench-runner.sh
# Knobs (environment): BENCH_ROUNDS (3), BENCH_DURATION seconds per run (10), BENCH_RATES
# ("100 1000 5000 40000"), BENCH_CONNECTIONS (64), BENCH_FREEZE_RATE (2000), BENCH_NGINX_WORKERS
# (1), BENCH_THREADS (runner worker threads; default one per CPU), BENCH_SKIP_BUILD=1,
# BENCH_OBSERVASTACK_BIN. See docs/benchmarks.md.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

ROUNDS=${BENCH_ROUNDS:-3}
DURATION=${BENCH_DURATION:-10}
RATES=${BENCH_RATES:-"100 1000 5000 40000"}
CONNS=${BENCH_CONNECTIONS:-64}
FREEZE_RATE=${BENCH_FREEZE_RATE:-2000}
NGINX_WORKERS=${BENCH_NGINX_WORKERS:-1}
THREADS=${BENCH_THREADS:-}
OUT_JSON=$ROOT/artifacts/bench-runner.json

log() { printf '[bench-runner] %s\n' "$*" >&2; }
die() { printf '[bench-runner] error: %s\n' "$*" >&2; exit 1; }

# ---------------------------------------------------------------------------------------------
# Tools: installed when missing (Debian packages; oha built from crates.io)
# ---------------------------------------------------------------------------------------------
export PATH="$HOME/.cargo/bin:$PATH"
apt_updated=0
apt_install() {
  [ "$(id -u)" -eq 0 ] || die "need root to apt-get install $*; install it by hand"
  if [ "$apt_updated" -eq 0 ]; then apt-get update -qq; apt_updated=1; fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}
if ! command -v nginx >/dev/null 2>&1 && [ ! -x /usr/sbin/nginx ]; then
  log "installing nginx (Debian package)…"
  apt_install nginx-light || apt_install nginx
fi
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
for tool in curl python3; do
  command -v "$tool" >/dev/null 2>&1 || die "$tool is required"
done
if ! command -v oha >/dev/null 2>&1; then
  log "building oha from crates.io (once; takes a few minutes)…"
  nice -n 10 cargo install oha --locked >&2 || die "cargo install oha failed"
fi
OHA=$(command -v oha)
oha_help=$("$OHA" --help 2>&1 || true)
if grep -q -- '--output-format' <<<"$oha_help"; then
  OHA_JSON=(--output-format json)
elif grep -qE -- '(^|[[:space:]])-j,' <<<"$oha_help"; then
  OHA_JSON=(-j)
else
  die "this oha has no JSON output flag; upgrade it (cargo install oha --locked --force)"
fi
OHA_WAIT=()
grep -q -- '--wait-ongoing-requests-after-deadline' <<<"$oha_help" && OHA_WAIT=(--wait-ongoing-requests-after-deadline)

if [ "${BENCH_SKIP_BUILD:-0}" != 1 ]; then
  log "building observastack (release)…"
  nice -n 10 cargo build --release -q -p observastack >&2 || die "cargo build failed"
fi
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
OBS_BIN=${BENCH_OBSERVASTACK_BIN:-$TARGET_DIR/release/observastack}
[ -x "$OBS_BIN" ] || die "$OBS_BIN missing"
RUNNER_THREADS=()
[ -n "$THREADS" ] && RUNNER_THREADS=(--threads "$THREADS")

# ---------------------------------------------------------------------------------------------
# Target: nginx answering 200 "ok" from memory, in a temporary prefix
# ---------------------------------------------------------------------------------------------
TMP=$(mktemp -d /tmp/bench-runner.XXXXXX)
RES=$TMP/results
mkdir -p "$RES" "$TMP/nginx"
NGINX_PID=""
nginx_pids() { [ -n "$NGINX_PID" ] && echo "$NGINX_PID" $(ps -o pid= --ppid "$NGINX_PID" 2>/dev/null); }
cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  if [ -n "$NGINX_PID" ]; then
    kill -CONT $(nginx_pids) 2>/dev/null || true
    kill -TERM "$NGINX_PID" 2>/dev/null || true
    for _ in $(seq 1 50); do kill -0 "$NGINX_PID" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$NGINX_PID" 2>/dev/null && kill -KILL "$NGINX_PID" 2>/dev/null || true
    wait "$NGINX_PID" 2>/dev/null || true
  fi
  if [ "$rc" -ne 0 ] && [ -s "$TMP/nginx/error.log" ]; then
    echo "--- last lines of nginx error.log ---" >&2; tail -n 20 "$TMP/nginx/error.log" >&2
  fi
  rm -rf "$TMP"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
cat >"$TMP/nginx/nginx.conf" <<EOF
daemon off;
master_process on;
worker_processes $NGINX_WORKERS;
pid $TMP/nginx/nginx.pid;
error_log $TMP/nginx/error.log warn;
events { worker_connections 16384; multi_accept on; }
http {
    access_log off;
    server_tokens off;
    keepalive_timeout 75s;
    keepalive_requests 100000000;
    client_body_temp_path $TMP/nginx/client_body;
    proxy_temp_path $TMP/nginx/proxy_temp;
    fastcgi_temp_path $TMP/nginx/fastcgi_temp;
    uwsgi_temp_path $TMP/nginx/uwsgi_temp;
    scgi_temp_path $TMP/nginx/scgi_temp;
    server {
        listen 127.0.0.1:$PORT backlog=4096;
        location / { default_type text/plain; return 200 "ok\n"; }
    }
}
EOF
"$NGINX" -t -q -p "$TMP/nginx" -c "$TMP/nginx/nginx.conf" -e "$TMP/nginx/error.log" || die "nginx rejected its config"
"$NGINX" -p "$TMP/nginx" -c "$TMP/nginx/nginx.conf" -e "$TMP/nginx/error.log" >/dev/null 2>&1 &
NGINX_PID=$!
URL="http://127.0.0.1:$PORT/"
for _ in $(seq 1 100); do
  [ "$(curl -s -o /dev/null -w '%{http_code}' --max-time 1 "$URL" || true)" = 200 ] && break
  kill -0 "$NGINX_PID" 2>/dev/null || die "nginx exited during startup"
  sleep 0.1
done
[ "$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "$URL" || true)" = 200 ] || die "nginx does not answer 200 at $URL"

# ---------------------------------------------------------------------------------------------
# Measurement
# ---------------------------------------------------------------------------------------------
children_cpu() { # CHILD_S := CPU seconds (user + system) of this shell's finished children
  times >"$TMP/times"
  CHILD_S=$(awk 'NR == 2 { t = 0; for (i = 1; i <= 2; i++) { split($i, a, /[ms]/); t += a[1] * 60 + a[2] }
    printf "%.3f", t }' "$TMP/times")
}

freeze_later() { # SIGSTOP the target 3 s into the run, SIGCONT 1 s later; prints the freeze
  # One process with the pids looked up beforehand: spawning `ps` or `kill` between the two
  # signals would lengthen the freeze (and every percentile with it) on a busy machine.
  python3 - "$@" <<'PY'
import os, signal, sys, time
pids = [int(p) for p in sys.argv[1:]]
time.sleep(3)
for p in pids:
    os.kill(p, signal.SIGSTOP)
t = time.monotonic()
time.sleep(1.0)
for p in pids:
    os.kill(p, signal.SIGCONT)
print(f"{(time.monotonic() - t) * 1000:.1f}")
PY
}

measure() { # name tool kind [rate]
  local name=$1 tool=$2 kind=$3 rate=${4:-} out c0 c1 freezer=""
  out=$RES/$name
  children_cpu; c0=$CHILD_S
  [ "$kind" = freeze ] && { freeze_later $(nginx_pids) >"$out.freeze" & freezer=$!; }
  case "$tool:$kind" in
    runner:open|runner:freeze)
      "$OBS_BIN" load --url "$URL" --rate "$rate" --duration "${DURATION}s" --connections "$CONNS" \
        "${RUNNER_THREADS[@]}" --json >"$out.json" 2>"$out.err" || die "runner failed: $(tail -n 3 "$out.err")" ;;
    runner:closed)
      "$OBS_BIN" load --url "$URL" --concurrency "$CONNS" --duration "${DURATION}s" \
        "${RUNNER_THREADS[@]}" --json >"$out.json" 2>"$out.err" || die "runner failed: $(tail -n 3 "$out.err")" ;;
    oha:open|oha:freeze)
      "$OHA" -z "${DURATION}s" -q "$rate" -c "$CONNS" --latency-correction --no-tui "${OHA_WAIT[@]}" \
        "${OHA_JSON[@]}" "$URL" >"$out.json" 2>"$out.err" || die "oha failed: $(tail -n 3 "$out.err")" ;;
    oha:closed)
      "$OHA" -z "${DURATION}s" -c "$CONNS" --no-tui "${OHA_WAIT[@]}" "${OHA_JSON[@]}" "$URL" \
        >"$out.json" 2>"$out.err" || die "oha failed: $(tail -n 3 "$out.err")" ;;
  esac
  [ -n "$freezer" ] && wait "$freezer"
  children_cpu; c1=$CHILD_S
  # The freezer is a child too: its few milliseconds of CPU land on the tool it ran beside,
  # in the freeze runs only (CPU per request is compared in the closed loop).
  echo "{\"tool\": \"$tool\", \"kind\": \"$kind\", \"rate\": ${rate:-null}, \"freeze_ms\": $(cat "$out.freeze" 2>/dev/null || echo null)," \
    "\"cpu_s\": $(awk -v a="$c0" -v b="$c1" 'BEGIN { printf "%.3f", b - a }')}" >"$out.meta"
  sleep 1
}

b0=$(awk '/^cpu / {print $2+$3+$4+$7+$8+$9}' /proc/stat); sleep 2; b1=$(awk '/^cpu / {print $2+$3+$4+$7+$8+$9}' /proc/stat)
busy_pct=$(((b1 - b0) * 100 / (2 * $(getconf CLK_TCK) * $(nproc))))
[ "$busy_pct" -gt 10 ] && log "warning: the machine is already ${busy_pct}% busy before the bench; figures will be disturbed"

log "warming up…"
"$OHA" -z 2s -c "$CONNS" --no-tui "${OHA_JSON[@]}" "$URL" >/dev/null 2>&1 || die "oha warm-up failed"
"$OBS_BIN" load --url "$URL" --concurrency "$CONNS" --duration 2s --json >/dev/null 2>&1 || die "runner warm-up failed"

n_rates=$(wc -w <<<"$RATES")
eta=$((ROUNDS * 2 * (n_rates + 2) * (DURATION + 2)))
log "measuring: $ROUNDS rounds × 2 tools × ($n_rates rates, closed loop, freeze), ${DURATION}s each (~${eta}s)…"
for round in $(seq 1 "$ROUNDS"); do
  # Alternate which tool goes first, so neither always runs on a warmer or cooler machine.
  if [ $((round % 2)) -eq 1 ]; then tools=(runner oha); else tools=(oha runner); fi
  for rate in $RATES; do
    for tool in "${tools[@]}"; do
      log "round $round/$ROUNDS: open loop $rate req/s → $tool"
      measure "r$round-open-$rate-$tool" "$tool" open "$rate"
    done
  done
  for tool in "${tools[@]}"; do
    log "round $round/$ROUNDS: closed loop, $CONNS connections → $tool"
    measure "r$round-closed-$tool" "$tool" closed
  done
  for tool in "${tools[@]}"; do
    log "round $round/$ROUNDS: $FREEZE_RATE req/s with the target frozen for 1 s → $tool"
    measure "r$round-freeze-$tool" "$tool" freeze "$FREEZE_RATE"
  done
done

{
  echo "{"
  echo "\"date\": \"$(date -u +%Y-%m-%dT%H:%M:%SZ)\","
  echo "\"git_rev\": \"$(git rev-parse --short HEAD 2>/dev/null || echo unknown)\","
  echo "\"nproc\": $(nproc),"
  echo "\"cpu_model\": \"$(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo)\","
  echo "\"oha_version\": \"$("$OHA" --version 2>&1 | head -n 1)\","
  echo "\"nginx_version\": \"$("$NGINX" -v 2>&1 | sed 's#^nginx version: ##')\","
  echo "\"nginx_workers\": $NGINX_WORKERS,"
  echo "\"busy_before_pct\": $busy_pct,"
  echo "\"rounds\": $ROUNDS, \"duration_s\": $DURATION, \"connections\": $CONNS, \"freeze_rate\": $FREEZE_RATE"
  echo "}"
} >"$RES/meta.json"

mkdir -p "$(dirname "$OUT_JSON")"
python3 - "$RES" "$OUT_JSON" <<'PY'
import glob, json, os, statistics, sys

res, out_path = sys.argv[1], sys.argv[2]
meta = json.load(open(os.path.join(res, "meta.json")))
duration = meta["duration_s"]

def load(name):
    run = json.load(open(os.path.join(res, name + ".json")))
    m = json.load(open(os.path.join(res, name + ".meta")))
    if m["tool"] == "runner":
        a = run["all"]
        ok = a["completed"] - a["failed"]
        fig = {"ok": ok, "errors": a["failed"] + run["dropped"], "p50": a["p50_ms"], "p95": a["p95_ms"],
               "p99": a["p99_ms"], "max": a["max_ms"]}
    else:
        codes = run.get("statusCodeDistribution") or {}
        ok = sum(v for k, v in codes.items() if k.startswith("2"))
        errors = sum(v for k, v in codes.items() if not k.startswith("2")) + sum((run.get("errorDistribution") or {}).values())
        p = run["latencyPercentiles"]
        ms = lambda v: (v or 0.0) * 1000.0
        fig = {"ok": ok, "errors": errors, "p50": ms(p.get("p50")), "p95": ms(p.get("p95")), "p99": ms(p.get("p99")),
               "max": ms(run["summary"].get("slowest"))}
    fig["rps"] = fig["ok"] / duration
    fig["cpu_us_per_req"] = m["cpu_s"] * 1e6 / fig["ok"] if fig["ok"] else None
    fig.update(m)
    return fig

runs = [load(os.path.basename(p)[:-5]) for p in sorted(glob.glob(os.path.join(res, "r*.meta")))]
med = lambda xs: statistics.median(xs) if xs else None

def figures(kind, tool, rate=None):
    sel = [r for r in runs if r["kind"] == kind and r["tool"] == tool and (rate is None or r["rate"] == rate)]
    keys = ["rps", "p50", "p95", "p99", "max", "cpu_us_per_req", "errors", "freeze_ms"]
    return {k: med([r[k] for r in sel if r.get(k) is not None]) for k in keys}

checks, lines = [], []
def check(name, ok, detail):
    checks.append({"check": name, "pass": bool(ok), "detail": detail})
    lines.append(f"  {'PASS' if ok else 'MISS'}  {name}: {detail}")

rates = sorted({r["rate"] for r in runs if r["kind"] == "open"})
table = {"open": {}, "closed": {}, "freeze": {}}
print(f"\n(a) open loop, {duration:.0f} s per run, {meta['connections']} connections; medians of {meta['rounds']} rounds")
print(f"{'rate':>7} {'tool':<7} {'achieved/s':>11} {'Δ%':>7} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>9} {'errors':>7} {'p99 runner/oha':>15}")
for rate in rates:
    fr, fo = figures("open", "runner", rate), figures("open", "oha", rate)
    table["open"][rate] = {"runner": fr, "oha": fo}
    for tool, f in (("runner", fr), ("oha", fo)):
        dev = (f["rps"] / rate - 1) * 100
        ratio = f"{fr['p99'] / fo['p99']:.2f}" if tool == "runner" and fo["p99"] else ""
        print(f"{rate:>7} {tool:<7} {f['rps']:>11.1f} {dev:>+7.2f} {f['p50']:>8.3f} {f['p99']:>8.3f} {f['max']:>9.3f} {f['errors']:>7.0f} {ratio:>15}")
    dev = abs(fr["rps"] / rate - 1) * 100
    check(f"(a) runner achieved rate at {rate}/s within ±0.5%", dev <= 0.5, f"{fr['rps']:.1f}/s ({dev:.3f}% off)")
    check(f"(a) runner p99 ≤ 1.5 × oha's at {rate}/s", fo["p99"] and fr["p99"] <= 1.5 * fo["p99"],
          f"{fr['p99']:.3f} ms vs {fo['p99']:.3f} ms (×{fr['p99'] / fo['p99']:.2f})" if fo["p99"] else "oha p99 missing")

fr, fo = figures("closed", "runner"), figures("closed", "oha")
table["closed"] = {"runner": fr, "oha": fo}
print(f"\n(b) closed loop, {meta['connections']} concurrent, {duration:.0f} s; medians")
print(f"{'tool':<7} {'req/s':>10} {'p50 ms':>8} {'p99 ms':>8} {'client µs CPU/req':>18}")
for tool, f in (("runner", fr), ("oha", fo)):
    print(f"{tool:<7} {f['rps']:>10.0f} {f['p50']:>8.3f} {f['p99']:>8.3f} {f['cpu_us_per_req']:>18.2f}")
thr = fr["rps"] / fo["rps"]
cpu = fr["cpu_us_per_req"] / fo["cpu_us_per_req"]
print(f"ratios runner/oha: throughput ×{thr:.3f}, CPU per request ×{cpu:.3f}")
check("(b) closed-loop throughput ≥ 0.9 × oha", thr >= 0.9, f"×{thr:.3f}")
check("(b) client CPU per request ≤ 1.2 × oha", cpu <= 1.2, f"×{cpu:.3f}")

fr, fo = figures("freeze", "runner"), figures("freeze", "oha")
table["freeze"] = {"runner": fr, "oha": fo}
print(f"\n(c) {meta['freeze_rate']} req/s for {duration:.0f} s, target frozen (SIGSTOP) from 3 s to 4 s; medians")
print(f"{'tool':<7} {'achieved/s':>11} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} {'max ms':>9} {'freeze ms':>10}")
for tool, f in (("runner", fr), ("oha", fo)):
    print(f"{tool:<7} {f['rps']:>11.1f} {f['p50']:>8.3f} {f['p95']:>8.1f} {f['p99']:>8.1f} {f['max']:>9.1f} {f['freeze_ms'] or 0:>10.1f}")
for tool, f in (("runner", fr), ("oha", fo)):
    check(f"(c) {tool} corrected p95 in 450–550 ms", 450 <= f["p95"] <= 550, f"{f['p95']:.1f} ms")
    check(f"(c) {tool} corrected p99 in 850–950 ms", 850 <= f["p99"] <= 950, f"{f['p99']:.1f} ms")

print("\nchecks:")
print("\n".join(lines))
json.dump({"meta": meta, "runs": runs, "medians": {k: {str(kk): vv for kk, vv in v.items()} for k, v in table.items()},
           "checks": checks}, open(out_path, "w"), indent=2)
print(f"\nwritten to {out_path}")
PY
