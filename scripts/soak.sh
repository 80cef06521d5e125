#!/usr/bin/env bash
# Soak: the native stack (`observastack up`, release binaries) under a steady journey load for
# N minutes. Every minute: RSS and open FDs of every ObservaStack process, and the p99 of that
# minute's journeys (from `observastack load --json`, the runner engine). At the end: error-level
# log lines, a table and a verdict: RSS within ±10 % between the first sample after warm-up and
# the last; FDs flat (the highest count of the second half at most 10 above that of the first:
# sockets come and go with the DB pool and keep-alive connections, a leak keeps climbing); the
# median per-minute p99 of the second half at most 1.5× (+5 ms) that of the first; no more than
# 0.1 % failed journeys; zero error-level log lines. The load average is printed beside each
# minute, since the machine may be shared.
#
#   scripts/soak.sh [MINUTES=30] [RATE=40 journeys/s]
# Env: SOAK_PORT_OFFSET (default 1000, so it runs beside a stack on the default ports),
#      DATABASE_URL (admin URL; default: the server scripts/ensure-postgres.sh picks; the soak
#      uses its own database `observastack_soak` there).
# Exit status 0 when the verdict is PASS.
set -euo pipefail
cd "$(dirname "$0")/.."

minutes="${1:-30}"
rate="${2:-40}"
offset="${SOAK_PORT_OFFSET:-1000}"
warmup=1
target="${CARGO_TARGET_DIR:-target}"

. scripts/postgres-env.sh
admin_url=$DATABASE_URL
db_url="${admin_url%/*}/observastack_soak"
echo "building release binaries…" >&2
cargo build --release --workspace --bins --locked >&2
bin="$target/release"

work="$(mktemp -d /var/tmp/observastack-soak.XXXXXX)"
state="$work/state"
echo "soak: ${minutes} min at ${rate} journeys/s, state in $state" >&2

"$bin/observastack" --state-dir "$state" up --database-url "$db_url" --port-offset "$offset" \
    --bin-dir "$bin" >"$work/up.out" 2>&1 &
up_pid=$!
cleanup() {
    kill -TERM "$up_pid" 2>/dev/null || true
    wait "$up_pid" 2>/dev/null || true
}
trap cleanup EXIT

gateway="http://127.0.0.1:$((8080 + offset))"
for _ in $(seq 1 300); do
    curl -fsS -o /dev/null "$gateway/api/ping" 2>/dev/null && break
    kill -0 "$up_pid" 2>/dev/null || { cat "$work/up.out" >&2; exit 1; }
    sleep 1
done

# `up` and its children: pid and name (binary, plus the gateway's role).
processes() {
    for pid in "$up_pid" $(ps -o pid= --ppid "$up_pid"); do
        name=$(tr '\0' ' ' 2>/dev/null <"/proc/$pid/cmdline" |
            awk '{n=$1; sub(".*/","",n); for(i=2;i<NF;i++) if($i=="--role") n=n"-"$(i+1); print n}')
        [ -n "$name" ] && printf '%s %s\n' "$pid" "$name"
    done
}

samples="$work/samples.tsv" # minute  name  rss_kib  fds
p99s="$work/p99.tsv"        # minute  p99_ms  completed  failed  loadavg
: >"$samples"
: >"$p99s"
for minute in $(seq 1 "$minutes"); do
    "$bin/observastack" --state-dir "$state" load --target "$gateway" --rate "$rate" --duration 60s \
        --json >"$work/load-$minute.json" 2>/dev/null || true
    python3 - "$work/load-$minute.json" "$minute" >>"$p99s" <<'EOF'
import json, sys
try:
    a = json.load(open(sys.argv[1]))["all"]
    load = open("/proc/loadavg").read().split()[0]
    print(f"{sys.argv[2]}\t{a['p99_ms']:.1f}\t{a['completed']}\t{a['failed']}\t{load}")
except Exception:
    print(f"{sys.argv[2]}\tnan\t0\t0\tnan")
EOF
    while read -r pid name; do
        rss=$(awk '/^VmRSS:/ {print $2}' "/proc/$pid/status" 2>/dev/null || echo 0)
        fds=$(find "/proc/$pid/fd" -mindepth 1 -maxdepth 1 2>/dev/null | wc -l)
        printf '%s\t%s\t%s\t%s\n' "$minute" "$name" "${rss:-0}" "$fds" >>"$samples"
    done < <(processes)
    printf 'minute %s/%s: p99 %s ms\n' "$minute" "$minutes" "$(tail -1 "$p99s" | cut -f2)" >&2
done

errors=$(cat "$state"/logs/*.log 2>/dev/null | grep -ci '"level":"error"' || true)
python3 - "$samples" "$p99s" "$warmup" "$errors" <<'EOF'
import sys, collections
samples, p99s, warmup, errors = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
by = collections.defaultdict(dict)
for line in open(samples):
    m, name, rss, fds = line.split("\t")
    by[name][int(m)] = (int(rss), int(fds))
ok = True
print(f"{'process':<22}{'RSS first':>11}{'RSS last':>11}{'ΔRSS':>8}{'FD max 1st half':>17}{'FD max 2nd half':>17}  verdict")
for name, pts in sorted(by.items()):
    ms = sorted(m for m in pts if m > warmup) or sorted(pts)
    (r0, _), (r1, _) = pts[ms[0]], pts[ms[-1]]
    d = (r1 - r0) / r0 * 100 if r0 else 0.0
    half = max(1, len(ms) // 2)
    f0 = max(pts[m][1] for m in ms[:half])
    f1 = max(pts[m][1] for m in ms[half:] or ms[-1:])
    good = abs(d) <= 10 and f1 - f0 <= 10
    ok &= good
    print(f"{name:<22}{r0/1024:>9.1f}M{r1/1024:>9.1f}M{d:>7.1f}%{f0:>17}{f1:>17}  {'ok' if good else 'FAIL'}")
rows = [l.rstrip("\n").split("\t") for l in open(p99s)]
print("\nminute  p99 ms  journeys  failed  loadavg")
for m, p, c, f, load in rows:
    print(f"{m:>6}{p:>8}{c:>10}{f:>8}{load:>9}")
vals = [(int(m), float(p), int(c), int(f)) for m, p, c, f, _ in rows if p != "nan"]
post = [v for v in vals if v[0] > warmup] or vals
half = max(1, len(post) // 2)
first = [v[1] for v in post[:half]]
second = [v[1] for v in post[half:]] or first
med = lambda xs: sorted(xs)[len(xs) // 2] if xs else float("nan")
p_ok = bool(post) and med(second) <= 1.5 * med(first) + 5
done = sum(v[2] for v in vals); failed = sum(v[3] for v in vals)
f_ok = done > 0 and failed <= done * 0.001
print(f"\nmedian p99 first/second half after warm-up: {med(first) if post else 'nan'} / {med(second) if post else 'nan'} ms  {'ok' if p_ok else 'FAIL'}")
print(f"journeys {done}, failed {failed}  {'ok' if f_ok else 'FAIL'}")
print(f"error-level log lines: {errors}  {'ok' if errors == 0 else 'FAIL'}")
ok = ok and p_ok and f_ok and errors == 0
print("verdict:", "PASS" if ok else "FAIL")
sys.exit(0 if ok else 1)
EOF
