#!/usr/bin/env bash
# Checks prometheus/ and grafana/ against the real thing:
#   1. promtool check config / check rules; promtool test rules (and that the tests can fail);
#   2. dashboards and datasource provisioning (valid, uids, log panels, trace↔log links, LogQL
#      that reads Loki's OTLP records: structured metadata, no JSON parsing), LogQL parsed with
#      Grafana's grammar;
#   3. live: starts the native stack (`observastack up`, own port offset and database) exporting
#      over OTLP to a loopback sink that stores each log record as Loki's OTLP endpoint would,
#      puts load on it (runner journeys, then the bad release so 5xx exist), starts a real
#      Prometheus on loopback with prometheus/prometheus.yml rewritten to loopback targets, and
#      asserts that every target is up, every rule evaluates, every recording rule and dashboard
#      query returns data (the LogQL ones on the captured records), and the log → trace and
#      trace → logs links find real records. Everything it started is stopped on exit.
# Env: CARGO_TARGET_DIR (binaries in $CARGO_TARGET_DIR/debug), OBSERVASTACK_CHECK_PORT_OFFSET
# (default 500), DATABASE_URL (admin URL of the PostgreSQL to create the throwaway database in;
# default: the server scripts/ensure-postgres.sh picks).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

bash scripts/ensure-prometheus.sh
venv=$(bash deploy/checks/venv.sh)
py="$venv/bin/python"

echo "== promtool check rules / config" >&2
promtool check rules prometheus/rules/*.yml
work=$(mktemp -d /tmp/observastack-obs-check.XXXXXX)
# The compose config names its rules by their path inside the container; check it with ours.
sed "s#/etc/prometheus/rules/#$root/prometheus/rules/#" prometheus/prometheus.yml >"$work/compose-prometheus.yml"
promtool check config "$work/compose-prometheus.yml"

echo "== promtool test rules" >&2
promtool test rules prometheus/tests/*.test.yml
# The tests must be able to fail: a weakened error-ratio threshold has to break them.
mkdir -p "$work/mutant/rules" "$work/mutant/tests"
sed 's/http_server_error_ratio:rate1m > 0.05/http_server_error_ratio:rate1m > 0.5/' prometheus/rules/alerts.yml >"$work/mutant/rules/alerts.yml"
cp prometheus/rules/recording.yml "$work/mutant/rules/"
cp prometheus/tests/*.test.yml "$work/mutant/tests/"
if cmp -s prometheus/rules/alerts.yml "$work/mutant/rules/alerts.yml"; then
  echo "FAIL: the mutation found nothing to change in alerts.yml" >&2; exit 1
fi
if promtool test rules "$work/mutant/tests/"*.test.yml >/dev/null 2>&1; then
  echo "FAIL: promtool test rules passed with a broken alert threshold; the tests cannot fail" >&2; exit 1
fi
echo "  a weakened RouteErrorRatioHigh threshold fails the rule tests, as it should" >&2

echo "== grafana dashboards" >&2
"$py" grafana/generate.py --check
"$py" deploy/checks/observability.py static
# LogQL with each dashboard's variables expanded from its own definitions (and Tempo's
# trace-to-logs query for a sample span), parsed by Grafana's grammar.
"$py" deploy/checks/observability.py queries --datasource loki >"$work/logql.json"
bash deploy/checks/node.sh
node deploy/checks/logql.cjs "$work/logql.json"

# The Loki checks must catch the JSON-line era's queries and links, which find nothing in OTLP
# records: each mutant has to fail `static` with the reason named.
loki_mutant() {
  local name=$1 expect=$2 file=$3 code=$4
  rm -rf "$work/loki-mutant"
  mkdir -p "$work/loki-mutant"
  cp -r grafana/dashboards "$work/loki-mutant/dashboards"
  cp grafana/provisioning/datasources/datasources.yml "$work/loki-mutant/datasources.yml"
  local path="$work/loki-mutant/$file"
  case "$file" in *.json) path="$work/loki-mutant/dashboards/$file" ;; esac
  "$py" - "$path" "$code" <<'PY'
import json, sys, yaml
path, code = sys.argv[1:3]
is_json = path.endswith(".json")
doc = json.load(open(path)) if is_json else yaml.safe_load(open(path))
before = json.dumps(doc)
exec(code, {"doc": doc})
if json.dumps(doc) == before:
    sys.exit(f"the mutation changed nothing in {path}")
with open(path, "w") as f:
    json.dump(doc, f, indent=2) if is_json else yaml.safe_dump(doc, f)
PY
  if "$py" deploy/checks/observability.py static --dashboards "$work/loki-mutant/dashboards" \
      --datasources "$work/loki-mutant/datasources.yml" >/dev/null 2>"$work/mutant.err"; then
    echo "FAIL: the Loki checks missed a mutant: $name" >&2; exit 1
  fi
  grep -qF -- "$expect" "$work/mutant.err" \
    || { cat "$work/mutant.err" >&2; echo "FAIL: Loki mutant '$name' failed for another reason" >&2; exit 1; }
  echo "  caught: $name" >&2
}
loki_mutant "warnings parsed from a JSON line (| json | level=~)" "filters on \`level\`" service-overview.json \
  'p = next(p for p in doc["panels"] if p["title"] == "Warnings and errors"); p["targets"][0]["expr"] = p["targets"][0]["expr"].replace("| severity_text=~", "| json | level=~")'
loki_mutant "a log panel of PostgreSQL, which sends nothing to Loki" 'service_name="postgres" selects no service' database.json \
  'p = next(p for p in doc["panels"] if p.get("type") == "logs"); p["targets"][0]["expr"] = "{service_name=\"postgres\"}"'
loki_mutant "the derived field's regex over a JSON line" "reads the trace_id structured metadata by name" datasources.yml \
  'f = next(d for d in doc["datasources"] if d["uid"] == "loki")["jsonData"]["derivedFields"][0]; f.pop("matcherType"); f["matcherRegex"] = "\"trace_id\":\"([0-9a-f]{32})\""'
loki_mutant "trace to logs searching the line for the trace id" "filters on the trace_id structured metadata" datasources.yml \
  't = next(d for d in doc["datasources"] if d["uid"] == "tempo")["jsonData"]["tracesToLogsV2"]; t["query"] = t["query"].replace("| trace_id=", "|= ")'

# The variable checks must catch a dashboard that uses a variable it does not define: each mutant
# of grafana/dashboards has to fail `static` on exactly that, and `queries --datasource DS` (what
# the LogQL parse and, in the same code, the live check expand) must refuse it.
dashboard_mutant() {
  local name=$1 file=$2 code=$3 ds=$4
  rm -rf "$work/dashboards"
  cp -r grafana/dashboards "$work/dashboards"
  "$py" - "$work/dashboards/$file" "$code" <<'PY'
import json, sys
path, code = sys.argv[1:3]
doc = json.load(open(path))
before = json.dumps(doc)
exec(code, {"doc": doc})
if json.dumps(doc) == before:
    sys.exit(f"the mutation changed nothing in {path}")
json.dump(doc, open(path, "w"), indent=2)
PY
  if "$py" deploy/checks/observability.py static --dashboards "$work/dashboards" >/dev/null 2>"$work/mutant.err"; then
    echo "FAIL: the dashboard checks missed a mutant: $name" >&2; exit 1
  fi
  grep -q "which its templating.list does not define" "$work/mutant.err" \
    || { cat "$work/mutant.err" >&2; echo "FAIL: mutant '$name' failed for another reason" >&2; exit 1; }
  if "$py" deploy/checks/observability.py queries --datasource "$ds" --dashboards "$work/dashboards" >/dev/null 2>&1; then
    echo "FAIL: queries --datasource $ds expanded the mutant '$name' despite its undefined variable" >&2; exit 1
  fi
  echo "  caught: $name" >&2
}
dashboard_mutant "Database without its service variable (its config-change annotations use \$service)" database.json \
  'doc["templating"]["list"] = [v for v in doc["templating"]["list"] if v["name"] != "service"]' prometheus
dashboard_mutant "Scenario without its service variable" scenario.json \
  'doc["templating"]["list"] = []' loki
dashboard_mutant "a Service Overview panel filtering on an undefined \${instance}" service-overview.json \
  'p = next(p for p in doc["panels"] if p.get("targets")); p["targets"][0]["expr"] = p["targets"][0]["expr"].replace("$service", "${instance}")' prometheus
dashboard_mutant "Service Overview without service (the route variable's own query uses it)" service-overview.json \
  'doc["templating"]["list"] = [v for v in doc["templating"]["list"] if v["name"] != "service"]' prometheus

echo "== live: native stack + real Prometheus" >&2
target="${CARGO_TARGET_DIR:-target}/debug"
offset="${OBSERVASTACK_CHECK_PORT_OFFSET:-500}"
# scripts/test.sh has just built every binary with `cargo test`; building them again with plain
# `cargo build` would compile the dependency tree a second time (dev-dependency features differ).
[ -n "${OBSERVASTACK_BINS_BUILT:-}" ] || cargo build --workspace --bins --locked -q
. scripts/postgres-env.sh
admin_url=$DATABASE_URL
db="observastack_obs_check"
stack_url="${admin_url%/*}/$db"

up_pid="" prom_pid="" sink_pid=""
cleanup() {
  # Only what this script started, by pid: Prometheus, then `observastack up` (which stops its
  # children on SIGTERM), then the OTLP sink.
  if [ -n "$prom_pid" ] && kill "$prom_pid" 2>/dev/null; then
    wait "$prom_pid" 2>/dev/null || true
  fi
  if [ -n "$up_pid" ] && kill -0 "$up_pid" 2>/dev/null; then
    kill -TERM "$up_pid" 2>/dev/null || true
    # It stops its services on SIGTERM; a finished child stays a zombie until reaped, so look
    # at its state rather than at `kill -0`.
    for _ in $(seq 1 40); do
      state=$(ps -o stat= -p "$up_pid" 2>/dev/null || true)
      case "$state" in ''|Z*) break ;; esac
      sleep 0.5
    done
    kill -KILL "$up_pid" 2>/dev/null || true
    wait "$up_pid" 2>/dev/null || true
  fi
  if [ -n "$sink_pid" ] && kill "$sink_pid" 2>/dev/null; then
    wait "$sink_pid" 2>/dev/null || true
  fi
  psql -q "$admin_url" -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT
psql -q "$admin_url" -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null 2>&1 || true

port() { echo $(($1 + offset)); }
# The services export logs and spans over OTLP, as in compose, to a sink that keeps each log
# record as Loki's OTLP endpoint would store it (stream labels, structured metadata, line).
otlp_addr="127.0.0.1:$(port 4318)"
"$py" deploy/checks/observability.py otlp-sink --listen "$otlp_addr" --out "$work/otlp" 2>"$work/sink.log" &
sink_pid=$!
for _ in $(seq 1 40); do
  curl -sf -o /dev/null -X POST -H 'Content-Type: application/x-protobuf' "http://$otlp_addr/v1/logs" && break
  kill -0 "$sink_pid" 2>/dev/null || { cat "$work/sink.log" >&2; echo "FAIL: the OTLP sink exited" >&2; exit 1; }
  sleep 0.25
done
OBSERVASTACK_STATE_DIR="$work/state" "$target/observastack" up --bin-dir "$target" --port-offset "$offset" \
  --database-url "$stack_url" --seed-products 500 --seed-orders 500 --scenarios scenarios \
  --otlp-endpoint "http://$otlp_addr" >"$work/up.log" 2>&1 &
up_pid=$!
for _ in $(seq 1 240); do
  grep -q "ObservaStack is up." "$work/up.log" && break
  kill -0 "$up_pid" 2>/dev/null || { cat "$work/up.log" >&2; echo "FAIL: observastack up exited" >&2; exit 1; }
  sleep 0.5
done
grep -q "ObservaStack is up." "$work/up.log" || { cat "$work/up.log" >&2; echo "FAIL: the stack did not come up" >&2; exit 1; }

control="http://127.0.0.1:$(port 8081)"
observability="127.0.0.1:$(port 8082)"
# Tokens come from scripts/compose-env.sh's minting (the one compose users get, OpenSSL's
# Ed25519), signed with the native stack's private key: this also proves that minting right.
(umask 077 && printf 'OBSERVASTACK_JWT_PRIVATE_KEY=base64:%s\n' "$(openssl base64 -A <"$work/state/jwt-private.pem")" >"$work/env")
token=$(OBSERVASTACK_ENV_FILE="$work/env" bash scripts/compose-env.sh token learner 1)
code=$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $token" "$control/api/services/shop/config")
[ "$code" = 200 ] || { echo "FAIL: a token minted by scripts/compose-env.sh got $code from the control gateway" >&2; exit 1; }
(umask 077 && printf 'OBSERVASTACK_JWT_PRIVATE_KEY=base64:%s\n' "$(openssl genpkey -algorithm ed25519 | openssl base64 -A)" >"$work/env-bad")
bad=$(OBSERVASTACK_ENV_FILE="$work/env-bad" bash scripts/compose-env.sh token learner 1)
code=$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $bad" "$control/api/services/shop/config")
[ "$code" = 401 ] || { echo "FAIL: a token signed with another key got $code, not 401" >&2; exit 1; }
echo "  scripts/compose-env.sh tokens: accepted (200) with the stack's private key, refused (401) with another" >&2

# Only the instructor role may change the runner (the offered load is the scenario's).
instructor=$(OBSERVASTACK_ENV_FILE="$work/env" bash scripts/compose-env.sh token instructor 1)
patch() {
  local service=$1 body=$2 code
  code=$(curl -s -o "$work/patch.out" -w '%{http_code}' -X PATCH -H "Authorization: Bearer $instructor" \
    -H 'Content-Type: application/json' -d "$body" "$control/api/services/$service/config")
  [ "$code" = 200 ] || { echo "FAIL: PATCH $service $body -> $code $(cat "$work/patch.out")" >&2; exit 1; }
}
patch runner '{"enabled": true, "load": {"pattern": "constant", "rate": 15, "think_time_ms": 20}}'

# docker-compose.yml points the orchestrator at the user gateway's /config through the control
# gateway (`gateway=http://gateway-control:8081/api/services/gateway-user`), so the orchestrator
# shares no network with the user gateway. Make the calls the orchestrator makes on that base URL.
base="$control/api/services/gateway-user"
orchestrator_call() {
  local method=$1 path=$2 code
  local args=(-s -o "$work/call.out" -w '%{http_code}' -X "$method" -H "Authorization: Bearer $instructor")
  [ "$method" = PATCH ] && args+=(-H 'Content-Type: application/json' -d '{}')
  code=$(curl "${args[@]}" "$base$path")
  [ "$code" = 200 ] || { echo "FAIL: orchestrator-style $method $base$path -> $code $(cat "$work/call.out")" >&2; exit 1; }
}
orchestrator_call GET /config
orchestrator_call GET "/config/history?limit=5"
orchestrator_call PATCH /config
echo "  the orchestrator's compose route to the user gateway's /config (through the control gateway) answers" >&2

services=$(curl -s "http://$observability/api/services" | "$py" -c 'import json,sys; print(",".join(s["name"] for s in json.load(sys.stdin)["services"]))')
mkdir -p "$work/prom/data"
cp -r prometheus/rules "$work/prom/rules"
prom_addr="127.0.0.1:$(port 9090)"
"$py" deploy/checks/native-prometheus.py --gateway "$observability" --self "$prom_addr" --rules "$work/prom/rules" \
  --services "$services" >"$work/prom/prometheus.yml"
promtool check config "$work/prom/prometheus.yml" >/dev/null
prometheus --config.file="$work/prom/prometheus.yml" --storage.tsdb.path="$work/prom/data" \
  --web.listen-address="$prom_addr" --storage.tsdb.retention.time=1h --log.level=warn >"$work/prom.log" 2>&1 &
prom_pid=$!
for _ in $(seq 1 60); do
  curl -sf "http://$prom_addr/-/ready" >/dev/null 2>&1 && break
  kill -0 "$prom_pid" 2>/dev/null || { cat "$work/prom.log" >&2; echo "FAIL: prometheus exited" >&2; exit 1; }
  sleep 0.5
done

# Calm traffic first (orders succeed), then the bad release so 5xx series exist too.
sleep 25
patch shop '{"release": {"version": "2.4.1"}}'
min_targets=$(($(tr ',' '\n' <<<"$services" | wc -l) + 1))
live=(--prometheus "http://$prom_addr" --otlp "$work/otlp" --services "$services" --min-targets "$min_targets")
"$py" deploy/checks/observability.py live "${live[@]}" --timeout 150 \
  --expect-alert 'RouteErrorRatioHigh:http_route=/api/checkout'
# The live check must be able to fail: a panel reading a metric nobody exports has to fail it,
# and so must the JSON-line era's warnings query on the real OTLP records.
if "$py" deploy/checks/observability.py live "${live[@]}" --timeout 0 \
  --extra-expr 'rate(shop_requests_that_do_not_exist_total[1m])' >/dev/null 2>&1; then
  echo "FAIL: the live check accepted an expression over a metric that does not exist" >&2; exit 1
fi
echo "  an expression over a missing metric fails the live check, as it should" >&2
old_warnings='{service_name="shop"} | json | level=~"WARN|ERROR"'
if "$py" deploy/checks/observability.py live "${live[@]}" --timeout 0 --extra-logql "$old_warnings" \
    >/dev/null 2>"$work/live-mutant.err"; then
  echo "FAIL: the live check found records for $old_warnings in OTLP logs, which carry no JSON" >&2; exit 1
fi
grep -qF -- "--extra-logql $old_warnings: returns records" "$work/live-mutant.err" \
  || { cat "$work/live-mutant.err" >&2; echo "FAIL: the JSON-era query failed the live check for another reason" >&2; exit 1; }
echo "  the JSON-line era's '| json | level=~' query finds no OTLP record and fails the live check, as it should" >&2
