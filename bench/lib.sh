# Shell helpers shared by the proxy benchmarks (scripts/bench-gateway.sh, bench/ab-gateways.sh).
# Sourced, not run; the caller defines `die MESSAGE`.

psql_admin() { PGOPTIONS=--client-min-messages=warning psql -h 127.0.0.1 -U postgres -d postgres -v ON_ERROR_STOP=1 -q -c "$1" >/dev/null; }

free_ports() { # N distinct free loopback ports
  python3 - "$1" <<'PY'
import socket, sys
socks = []
for _ in range(int(sys.argv[1])):
    s = socket.socket(); s.bind(("127.0.0.1", 0)); socks.append(s)
print(" ".join(str(s.getsockname()[1]) for s in socks))
PY
}

wait_ready() { # name url pid [timeout_s]
  local name=$1 url=$2 pid=$3 deadline=$((SECONDS + ${4:-90}))
  while [ $SECONDS -lt $deadline ]; do
    kill -0 "$pid" 2>/dev/null || die "$name exited during startup"
    [ "$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "$url" || true)" = 200 ] && return 0
    sleep 0.2
  done
  die "$name not ready at $url"
}

cpu_ticks() { # utime+stime (all threads) summed over the given pids, in clock ticks
  local total=0 pid stat f
  for pid in "$@"; do
    read -r stat <"/proc/$pid/stat" 2>/dev/null || continue
    stat=${stat##*) }          # drop "pid (comm) ": field 3 (state) is now index 0
    read -r -a f <<<"$stat"
    total=$((total + f[11] + f[12]))   # fields 14 utime, 15 stime
  done
  echo "$total"
}
