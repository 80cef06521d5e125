#!/usr/bin/env bash
# Runs the facts service against a real S3-compatible server on loopback and checks that the
# lake lives in the bucket:
#   1. moto[server] in a venv outside the clone (reused between runs);
#   2. moto_server on 127.0.0.1, a bucket, dummy AWS_* credentials;
#   3. `facts` built with `--features s3` in its own target dir (the feature changes the
#      object_store features DataFusion is built with, so it would rebuild the main cache);
#   4. facts on the bucket: ingest, flush, rollup, SQL count, dashboard totals; Parquet data
#      files and Iceberg metadata must be in the bucket under the prefix and none in the data dir;
#   5. SIGTERM, restart on the same bucket and data dir: same count read back from S3, and
#      re-posted event_ids are not counted twice.
# Quiet unless it fails; prints a short summary. Only loopback traffic.
# Env: CARGO_TARGET_DIR (default /var/tmp/observastack-s3-target), OBSERVASTACK_S3_VENV
# (default /var/tmp/observastack-s3-venv), OBSERVASTACK_S3_FACTS (facts to post, default 5000).
set -euo pipefail
cd "$(dirname "$0")/.."

started=$(date +%s%N)
venv="${OBSERVASTACK_S3_VENV:-/var/tmp/observastack-s3-venv}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/observastack-s3-target}"
n_facts="${OBSERVASTACK_S3_FACTS:-5000}"
moto_version="5.2.1"
bucket="observastack-check"
prefix="ci/warehouse"

work=$(mktemp -d /tmp/observastack-s3-check.XXXXXX)
data="$work/data"
moto_pid="" facts_pid=""

fail() {
  echo "check-facts-s3: FAIL: $*" >&2
  for log in "$work"/facts-*.log "$work/moto.log"; do
    [ -f "$log" ] || continue
    echo "---- last lines of $(basename "$log")" >&2
    tail -n 30 "$log" >&2
  done
  exit 1
}

stop_facts() {
  if [ -n "$facts_pid" ] && kill -0 "$facts_pid" 2>/dev/null; then
    kill -TERM "$facts_pid" 2>/dev/null || true
    # It flushes the WAL into Iceberg on SIGTERM; give that time before giving up on it.
    for _ in $(seq 1 100); do
      kill -0 "$facts_pid" 2>/dev/null || break
      sleep 0.2
    done
    if kill -0 "$facts_pid" 2>/dev/null; then
      kill -KILL "$facts_pid" 2>/dev/null || true
      wait "$facts_pid" 2>/dev/null || true
      facts_pid=""
      return 1
    fi
    wait "$facts_pid" 2>/dev/null || true
  fi
  facts_pid=""
}

cleanup() {
  # Only what this script started, by pid.
  stop_facts || true
  if [ -n "$moto_pid" ] && kill "$moto_pid" 2>/dev/null; then
    wait "$moto_pid" 2>/dev/null || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# 1. moto in a venv outside the clone.
if [ ! -x "$venv/bin/moto_server" ] || ! "$venv/bin/python" -c "import moto, boto3, sys; sys.exit(moto.__version__ != '$moto_version')" 2>/dev/null; then
  if [ ! -x "$venv/bin/python" ] || [ ! -x "$venv/bin/pip" ]; then
    bash scripts/ensure-python-venv.sh || fail "python3 cannot create venvs (see above)"
    # --clear: a venv made without ensurepip has a python but no pip; start it over.
    python3 -m venv --clear "$venv" >"$work/venv.log" 2>&1 || fail "cannot create the venv $venv ($(tail -n 3 "$work/venv.log"))"
  fi
  "$venv/bin/pip" install -q "moto[server]==$moto_version" >"$work/pip.log" 2>&1 ||
    fail "pip install moto[server]==$moto_version failed: $(tail -n 5 "$work/pip.log")"
fi
py="$venv/bin/python"

# Dummy credentials for both moto's clients and the facts binary; no profile or config file
# of the machine may leak in.
export AWS_ACCESS_KEY_ID=observastack-check AWS_SECRET_ACCESS_KEY=observastack-check-secret
export AWS_REGION=us-east-1 AWS_DEFAULT_REGION=us-east-1
export AWS_CONFIG_FILE=/dev/null AWS_SHARED_CREDENTIALS_FILE=/dev/null AWS_EC2_METADATA_DISABLED=true
unset AWS_PROFILE AWS_SESSION_TOKEN AWS_ENDPOINT AWS_ENDPOINT_URL
export NO_PROXY="127.0.0.1,localhost${NO_PROXY:+,$NO_PROXY}" no_proxy="127.0.0.1,localhost${no_proxy:+,$no_proxy}"
# A throwaway key pair: the lake verifies tokens with its public key, and check.py sends an
# instructor's token signed with its private key (ingest, SQL, flush and rollup all take one).
(umask 077 && printf 'OBSERVASTACK_JWT_PRIVATE_KEY=base64:%s\n' "$(openssl genpkey -algorithm ed25519 | openssl base64 -A)" >"$work/keys.env")
OBSERVASTACK_JWT_PUBLIC_KEYS=$(sed -n 's/^OBSERVASTACK_JWT_PRIVATE_KEY=base64://p' "$work/keys.env" | openssl base64 -d -A | openssl pkey -pubout)
OBSERVASTACK_CHECK_TOKEN=$(OBSERVASTACK_ENV_FILE="$work/keys.env" bash scripts/compose-env.sh token instructor 1)
export OBSERVASTACK_JWT_PUBLIC_KEYS OBSERVASTACK_CHECK_TOKEN

# The HTTP and S3 steps, in Python (stdlib for HTTP, boto3 for the bucket).
cat >"$work/check.py" <<'PY'
import json, os, random, sys, time, urllib.error, urllib.parse, urllib.request, uuid
from datetime import datetime, timedelta, timezone

def die(msg):
    print(f"check-facts-s3: FAIL: {msg}", file=sys.stderr)
    sys.exit(1)

# An instructor's token (EdDSA, minted by scripts/compose-env.sh with the key pair whose public
# half the facts binary verifies with).
TOKEN = os.environ["OBSERVASTACK_CHECK_TOKEN"]

def http(method, url, body=None, timeout=60):
    data = None if body is None else json.dumps(body).encode()
    headers = {"content-type": "application/json", "authorization": f"Bearer {TOKEN}"}
    req = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, json.loads(resp.read() or b"null")
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(errors="replace")

def ok(method, url, body=None):
    status, out = http(method, url, body)
    if status != 200:
        die(f"{method} {url} answered {status}: {str(out)[:500]}")
    return out

def s3(endpoint):
    import boto3
    return boto3.client("s3", endpoint_url=endpoint, region_name=os.environ["AWS_REGION"])

def uuid7(ms):
    # Python 3.11 has no uuid7: 48-bit Unix ms, version 7, variant 10, random rest.
    r = random.getrandbits(74)
    n = (ms << 80) | (0x7 << 76) | ((r >> 62) << 64) | (0b10 << 62) | (r & ((1 << 62) - 1))
    return str(uuid.UUID(int=n))

def count(base, sql="SELECT count(*) AS n FROM request_facts"):
    return ok("POST", f"{base}/api/v1/sql", {"sql": sql})["rows"][0]["n"]

def board_totals(base, state):
    now = datetime.now(timezone.utc)
    params = urllib.parse.urlencode({
        "from": (now - timedelta(minutes=70)).isoformat(), "to": now.isoformat(),
        "service": "shop", "group_by": "path_template"})
    board = ok("GET", f"{base}/api/v1/dashboard?{params}")
    series = board.get("series") or []
    req = sum(s["total"]["requests"] for s in series)
    err = sum(s["total"]["errors"] for s in series)
    if (req, err) != (state["n"], state["errors"]):
        die(f"dashboard totals {req} requests / {err} errors, posted {state['n']} / {state['errors']}")
    return board

def main():
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "freeport":
        import socket
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            print(s.getsockname()[1])
    elif cmd == "wait":
        url, deadline = args[0], time.time() + float(args[1])
        while time.time() < deadline:
            try:
                with urllib.request.urlopen(url, timeout=2) as resp:
                    if resp.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError, OSError):
                pass
            time.sleep(0.2)
        die(f"{url} not ready after {args[1]} s")
    elif cmd == "mkbucket":
        s3(args[0]).create_bucket(Bucket=args[1])
    elif cmd == "ingest":
        base, n, state_file = args[0], int(args[1]), args[2]
        rng = random.Random(7)
        now = datetime.now(timezone.utc)
        facts, errors = [], 0
        for i in range(n):
            # Within the last hour, at least a minute back (complete minutes for the rollup).
            t = now - timedelta(seconds=rng.uniform(60, 3300))
            status = 500 if i % 10 == 0 else 200
            errors += status >= 500
            facts.append({
                "event_id": uuid7(int(t.timestamp() * 1000)),
                "event_time": t.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
                "service": "shop", "method": rng.choice(["GET", "POST"]),
                "path_template": rng.choice(["/checkout", "/products", "/cart"]),
                "status_code": status, "latency_ms": round(rng.lognormvariate(3, 0.6), 3),
            })
        # Batches of 400, each flushed on its own: more than 10 Iceberg commits, so the old
        # metadata.json files get deleted from the bucket too (previous-versions-max = 10).
        secs, accepted = 0.0, 0
        for i in range(0, n, 400):
            start = time.monotonic()
            accepted += ok("POST", f"{base}/api/v1/facts", facts[i:i + 400])["accepted"]
            secs += time.monotonic() - start
            ok("POST", f"{base}/api/v1/flush")
        if accepted != n:
            die(f"{accepted} of {n} facts accepted")
        # Before the restart the dedup window is in memory: a re-post is all duplicates.
        again = ok("POST", f"{base}/api/v1/facts", facts[:500])
        if again != {"accepted": 0, "duplicates": 500}:
            die(f"re-posting 500 facts answered {again}")
        with open(state_file, "w") as f:
            json.dump({"n": n, "errors": errors, "facts": facts, "post_secs": secs}, f)
    elif cmd == "lake":
        base, state_file = args
        state = json.load(open(state_file))
        ok("POST", f"{base}/api/v1/flush")
        # Before the rollup the dashboard reads the raw Parquet files from the bucket ...
        raw = board_totals(base, state)["sources"]
        if raw["raw_minutes"] < 55:
            die(f"dashboard before the rollup read only {raw} from raw facts")
        run = ok("POST", f"{base}/api/v1/rollup")
        if run.get("facts") != state["n"]:
            die(f"rollup read {run.get('facts')} facts, posted {state['n']}: {run}")
        # ... and after it, metrics_1m.
        rolled = board_totals(base, state)["sources"]
        if rolled["rolled_up_minutes"] < 55:
            die(f"dashboard after the rollup read only {rolled} from metrics_1m")
        status = ok("GET", f"{base}/api/v1/status")
        if status["unflushed_facts"] != 0 or not status["warehouse"].startswith("s3://"):
            die(f"status after flush: {status}")
        got = count(base)
        if got != state["n"]:
            die(f"SELECT count(*) FROM request_facts = {got}, posted {state['n']}")
        minutes = count(base, "SELECT sum(request_count) AS n FROM metrics_1m")
        if minutes != state["n"]:
            die(f"metrics_1m holds {minutes} requests, posted {state['n']}")
        board_totals(base, state)
    elif cmd == "bucket":
        endpoint, bucket, prefix, n, out = args[0], args[1], args[2], int(args[3]), args[4]
        keys = []
        for page in s3(endpoint).get_paginator("list_objects_v2").paginate(Bucket=bucket):
            keys += [(o["Key"], o["Size"]) for o in page.get("Contents", [])]
        outside = [k for k, _ in keys if not k.startswith(prefix + "/")]
        if outside:
            die(f"objects outside {prefix}/: {outside[:5]}")
        for table in ("request_facts", "metrics_1m"):
            mine = [k for k, _ in keys if f"/{table}/" in k]
            kinds = {
                "Parquet data files": [k for k in mine if "/data/" in k and k.endswith(".parquet")],
                "metadata.json": [k for k in mine if "/metadata/" in k and k.endswith(".metadata.json")],
                "manifest lists": [k for k in mine if "/metadata/snap-" in k and k.endswith(".avro")],
                "manifests": [k for k in mine if "/metadata/" in k and k.endswith(".avro") and "/snap-" not in k],
            }
            missing = [kind for kind, ks in kinds.items() if not ks]
            if missing:
                die(f"{table}: no {', '.join(missing)} in s3://{bucket}/{prefix}/ (keys: {[k for k in mine][:10]})")
        # One commit per 400 facts posted: past 10 commits only the current metadata.json and
        # the 10 before it may remain, so the oldest (00000-…) must have been deleted.
        versions = [k for k, _ in keys if "/request_facts/metadata/" in k and k.endswith(".metadata.json")]
        if len(versions) > 11 or (n > 4000 and any("/00000-" in k for k in versions)):
            die(f"{len(versions)} metadata.json files of request_facts in the bucket, old ones not deleted: "
                f"{sorted(k.rsplit('/', 1)[1][:5] for k in versions)}")
        with open(out, "w") as f:
            json.dump({"objects": len(keys), "metadata_json": len(versions), "bytes": sum(s for _, s in keys),
                       "parquet": sum(k.endswith(".parquet") for k, _ in keys)}, f)
    elif cmd == "after-restart":
        base, state_file = args
        state = json.load(open(state_file))
        got = count(base)
        if got != state["n"]:
            die(f"after restart SELECT count(*) = {got}, posted {state['n']}")
        board_totals(base, state)
        # Re-post every fact with its event_id: no id may be stored twice.
        again = {"accepted": 0, "duplicates": 0}
        for i in range(0, state["n"], 500):
            out = ok("POST", f"{base}/api/v1/facts", state["facts"][i:i + 500])
            again = {k: again[k] + out[k] for k in again}
        ok("POST", f"{base}/api/v1/flush")
        # The ingest dedup window (WAL + recent ids) is in memory, so after a restart the raw
        # table may take the rows again (docs/facts.md); each id must still count once: in the
        # rebuild of the hours they made dirty, in SQL's distinct ids and on the dashboard.
        run = ok("POST", f"{base}/api/v1/rollup")
        rows = count(base)
        distinct = count(base, "SELECT count(DISTINCT event_id) AS n FROM request_facts")
        if distinct != state["n"] or (again["accepted"] and run["facts"] != state["n"]):
            die(f"after re-posting {state['n']} facts ({again}): {distinct} distinct event_ids, "
                f"rollup read {run['facts']}, expected {state['n']}")
        board_totals(base, state)
        print(json.dumps({**again, "rows": rows}))
    else:
        die(f"unknown step {cmd}")

main()
PY
step() { "$py" "$work/check.py" "$@"; }

# 2. moto_server on loopback, one bucket.
moto_port=$(step freeport)
endpoint="http://127.0.0.1:$moto_port"
"$venv/bin/moto_server" -H 127.0.0.1 -p "$moto_port" >"$work/moto.log" 2>&1 &
moto_pid=$!
step wait "$endpoint/moto-api/" 30 || fail "moto_server did not start on $endpoint"
step mkbucket "$endpoint" "$bucket" || fail "cannot create bucket $bucket"

# 3. The facts binary with S3 support, in its own target dir.
build_started=$(date +%s%N)
nice -n 10 cargo build -q --locked -p facts --features s3 --bin facts >"$work/build.log" 2>&1 ||
  fail "cargo build -p facts --features s3 failed: $(tail -n 20 "$work/build.log")"
build_ms=$((($(date +%s%N) - build_started) / 1000000))
facts_bin="$CARGO_TARGET_DIR/debug/facts"

start_facts() {
  local port
  port=$(step freeport)
  base="http://127.0.0.1:$port"
  "$facts_bin" --listen "127.0.0.1:$port" --data-dir "$data" --flush-interval 1s \
    --s3-bucket "$bucket" --s3-endpoint "$endpoint" --s3-region "$AWS_REGION" --s3-prefix "$prefix" \
    --log info >"$work/facts-$1.log" 2>&1 &
  facts_pid=$!
  step wait "$base/readyz" 60 || fail "facts ($1) did not become ready on $base"
}

# 4. Ingest, flush, rollup, SQL and the dashboard on the bucket.
start_facts 1
step ingest "$base" "$n_facts" "$work/state.json" || fail "ingest"
step lake "$base" "$work/state.json" || fail "lake checks on S3"
step bucket "$endpoint" "$bucket" "$prefix" "$n_facts" "$work/bucket.json" || fail "bucket contents"
local_files=$(find "$data" -name '*.parquet' -o -name '*.avro' -o -name '*.metadata.json' | head -n 5)
[ -z "$local_files" ] || fail "lake files in the local data dir: $local_files"

# 5. Restart on the same bucket and data dir.
stop_facts || fail "facts did not stop within 20 s of SIGTERM"
start_facts 2
repost=$(step after-restart "$base" "$work/state.json") || fail "after restart"
local_files=$(find "$data" -name '*.parquet' -o -name '*.avro' -o -name '*.metadata.json' | head -n 5)
[ -z "$local_files" ] || fail "lake files in the local data dir after restart: $local_files"
step bucket "$endpoint" "$bucket" "$prefix" "$n_facts" "$work/bucket.json" || fail "bucket contents after restart"
stop_facts || fail "facts did not stop within 20 s of SIGTERM"

total_ms=$((($(date +%s%N) - started) / 1000000))
"$py" - "$work/state.json" "$work/bucket.json" "$repost" "$total_ms" "$build_ms" "$bucket" "$prefix" <<'PY'
import json, sys
state, bucket = json.load(open(sys.argv[1])), json.load(open(sys.argv[2]))
repost, total, build = json.loads(sys.argv[3]), int(sys.argv[4]) / 1000, int(sys.argv[5]) / 1000
print(f"check-facts-s3: ok in {total:.1f} s (build {build:.1f} s): {state['n']} facts posted at "
      f"{state['n'] / state['post_secs']:.0f}/s; s3://{sys.argv[6]}/{sys.argv[7]}/ holds "
      f"{bucket['objects']} objects ({bucket['parquet']} Parquet), {bucket['bytes']} bytes; "
      f"{bucket['metadata_json']} request_facts metadata.json kept; count {state['n']} read back after "
      f"restart; re-posting every event_id after it: {repost['duplicates']} refused as duplicates, "
      f"{repost['accepted']} stored again as raw rows ({repost['rows']} rows), each id still counted once")
PY
