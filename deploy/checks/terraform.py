#!/usr/bin/env python3
"""Checks of terraform/ that need no provider download (run by scripts/check-deploy.sh next to
`terraform fmt -check` and, when the registry is reachable, `terraform validate`): variables and
outputs are described, every reference resolves, the three paths have their firewall rules, no
secret has a default, and the startup script renders to valid bash. Also:
  - the VM builds what it runs from a checkout of var.repo_url at var.git_ref (default `main`):
    no tag that must already exist, no image pulled from our registry, `docker compose up
    --build --wait`;
  - every API a resource type (or an output's `--tunnel-through-iap`) needs is in local.apis and
    enabled by google_project_service.apis, no other API is, and every other google_ resource
    waits for them (depends_on, directly or through what it references);
  - outputs and the startup script's URLs reference attributes that exist (a table of the
    attributes each resource type exports, from the provider's documentation) and are built
    from the VM's static address;
  - every secret docker-compose.yml requires (`${VAR:?…}`) is written into .env by the startup
    script from Secret Manager (but the fact emitters' `service` token, which compose-env.sh
    mints on the VM with the private key); the token keys are an Ed25519 pair made here.

    terraform.py [DIR]      DIR defaults to terraform/

Prints one line per failed check and a closing "N passed, N failed" line; exits 1 on failure.
"""

import json
import re
import subprocess
import sys
from pathlib import Path

import hcl2

ROOT = Path(__file__).resolve().parents[2]
TF = ROOT / "terraform"

# The API each resource type needs (enabled by google_project_service.apis).
API_OF = {
    "google_compute_network": "compute.googleapis.com",
    "google_compute_subnetwork": "compute.googleapis.com",
    "google_compute_firewall": "compute.googleapis.com",
    "google_compute_address": "compute.googleapis.com",
    "google_compute_instance": "compute.googleapis.com",
    "google_secret_manager_secret": "secretmanager.googleapis.com",
    "google_secret_manager_secret_version": "secretmanager.googleapis.com",
    "google_secret_manager_secret_iam_member": "secretmanager.googleapis.com",
    "google_service_account": "iam.googleapis.com",
    "google_project_iam_member": "cloudresourcemanager.googleapis.com",
}
IAP_API = "iap.googleapis.com"  # `gcloud compute ssh --tunnel-through-iap`

# Attributes each resource type exports that this configuration may read (hashicorp/google 6.x
# and hashicorp/random 3.x documentation); a reference to anything else fails.
ATTRIBUTES = {
    "google_compute_network": {"id", "name", "self_link"},
    "google_compute_subnetwork": {"id", "name", "self_link"},
    "google_compute_address": {"id", "name", "address", "self_link"},
    "google_compute_instance": {"id", "name", "zone", "instance_id", "self_link",
                                "network_interface[0].network_ip",
                                "network_interface[0].access_config[0].nat_ip"},
    "google_secret_manager_secret": {"id", "name", "secret_id"},
    "google_secret_manager_secret_version": {"id", "name", "version"},
    "google_service_account": {"id", "email", "name", "unique_id", "member"},
    "google_project_service": {"id"},
    "random_id": {"hex", "b64_url", "b64_std", "dec", "id"},
    "random_password": {"result"},
    "tls_private_key": {"id", "private_key_pem", "private_key_pem_pkcs8", "private_key_openssh",
                        "public_key_pem", "public_key_openssh", "public_key_fingerprint_sha256"},
}
# Required by docker-compose.yml, yet no secret of its own: derived on the VM, and by what.
DERIVED = {"OBSERVASTACK_SERVICE_TOKEN": "scripts/compose-env.sh mints it with the private key"}
REFERENCE = re.compile(r"\b((?:google|random|tls)_[a-z_]+)\.([a-z_][a-z0-9_]*)((?:\[[^\]]*\])?)((?:\.[a-z_][a-z0-9_]*(?:\[\d+\])?)*)")


def main():
    global TF
    if len(sys.argv) > 1:  # another copy of terraform/ (a mutant)
        TF = Path(sys.argv[1])
    passed, failed = 0, []

    def check(ok, what):
        nonlocal passed
        if ok:
            passed += 1
        else:
            failed.append(what)
            print(f"FAIL: {what}", file=sys.stderr)

    docs = {}
    for path in sorted(TF.glob("*.tf")):
        with path.open() as f:
            docs[path.name] = hcl2.load(f)
    text = "\n".join(p.read_text() for p in sorted(TF.glob("*.tf")))
    template = (TF / "startup.sh.tftpl").read_text()

    variables = {name: body for d in docs.values() for block in d.get("variable", []) for name, body in block.items()}
    outputs = {name: body for d in docs.values() for block in d.get("output", []) for name, body in block.items()}
    resources = {(kind, name): body for d in docs.values() for block in d.get("resource", [])
                 for kind, named in block.items() for name, body in named.items()}
    for name, body in variables.items():
        check(bool(body.get("description")), f"variable {name} has a description")
        check("type" in body, f"variable {name} has a type")
        check(not re.search(r"(?i)secret|password|token", name) or "default" not in body,
              f"variable {name} holds no default secret")
    for name, body in outputs.items():
        check(bool(body.get("description")), f"output {name} has a description")
    used = set(re.findall(r"\bvar\.([a-z_][a-z0-9_]*)", text))
    check(used <= set(variables), f"every var.X is declared (undeclared: {sorted(used - set(variables))})")
    check(set(variables) <= used, f"every variable is used (unused: {sorted(set(variables) - used)})")
    for kind, name in re.findall(r"\b(google_[a-z_]+|random_[a-z_]+|tls_[a-z_]+)\.([a-z_][a-z0-9_]*)\b", text):
        if (kind, name) not in resources and not text.count(f'data "{kind}" "{name}"'):
            check(False, f"reference {kind}.{name} resolves to a resource")
    check(("google_compute_network", "vpc") in resources, "a VPC")

    def firewall(name):
        return resources.get(("google_compute_firewall", name), {})

    def ports(rule):
        return {p for allow in rule.get("allow", []) for p in allow.get("ports", [])}

    check(ports(firewall("user")) == {"8080"} and "var.user_allowed_cidrs" in str(firewall("user").get("source_ranges")),
          "user path: 8080 only, from user_allowed_cidrs")
    check(ports(firewall("control")) == {"8081"} and "var.control_allowed_cidrs" in str(firewall("control").get("source_ranges")),
          "control path: 8081 only, from control_allowed_cidrs")
    check(ports(firewall("observability")) == {"3000", "8082", "9090"}
          and "var.observability_allowed_cidrs" in str(firewall("observability").get("source_ranges")),
          "observability path: 3000/8082/9090, only from observability_allowed_cidrs")
    check("default" not in variables.get("control_allowed_cidrs", {"default": 1}), "control_allowed_cidrs has no default (never public)")
    check(variables.get("observability_allowed_cidrs", {}).get("default") == [], "observability is not public by default")
    https_rule, acme_rule = firewall("control_https"), firewall("acme")
    check(ports(https_rule) == {"443"} and "var.control_allowed_cidrs" in str(https_rule.get("source_ranges"))
          and "local.https" in str(https_rule.get("count")),
          "control path over HTTPS: 443 only, from control_allowed_cidrs, only with a domain")
    check(ports(acme_rule) == {"80"} and "local.https" in str(acme_rule.get("count")),
          "the public ACME rule opens 80 only, and only with a domain")
    check("reverse_proxy 127.0.0.1:8081" in template, "Caddy proxies the control gateway only")
    check("0.0.0.0/0" not in str([firewall(n).get("source_ranges") for n in ("control", "control_https", "observability", "iap")]),
          "no literal 0.0.0.0/0 on control, observability or SSH")
    check(("google_secret_manager_secret", "stack") in resources and "jwt-private-key" in text
          and "jwt-public-keys" in text, "the token keys live in Secret Manager")
    check(resources.get(("tls_private_key", "jwt"), {}).get("algorithm") == "ED25519",
          "the token keys are an Ed25519 pair (tls_private_key.jwt)")
    check(("random_id", "jwt_secret") not in resources, "no shared HS256 signing secret (random_id.jwt_secret)")
    check(not re.search(r'(?i)(password|secret)\s*=\s*"[^"$]+"', text), "no literal password or secret in terraform/")

    # The startup template: every ${var} is passed by templatefile(), and the result is valid bash.
    passed_vars = set(re.findall(r"^\s*([a-z_]+)\s*=", text[text.index("templatefile("):text.index("})", text.index("templatefile("))], re.M))
    tpl_vars = set(re.findall(r"(?<!\$)\$\{([a-z_]+)\}", template))
    check(tpl_vars == passed_vars, f"startup.sh.tftpl uses exactly the variables templatefile passes ({sorted(tpl_vars)} vs {sorted(passed_vars)})")
    rendered = re.sub(r"(?<!\$)\$\{([a-z_]+)\}", "x", template).replace("$${", "${")
    result = subprocess.run(["bash", "-n"], input=rendered, text=True, capture_output=True)
    check(result.returncode == 0, f"startup.sh.tftpl renders to valid bash ({result.stderr.strip()})")
    check((TF / "README.md").is_file() and "terraform apply" in (TF / "README.md").read_text(), "terraform/README.md explains init/plan/apply")

    # Built from a checkout of any ref: nothing that has to be tagged or published beforehand.
    git_ref = variables.get("git_ref", {})
    check(git_ref.get("default") == "main", f"variable git_ref defaults to main (got {git_ref.get('default')!r})")
    check("repo_url" in variables, "variable repo_url names the repository the VM builds from")
    check(not re.search(r"(?i)--branch|\bv\$\{|\$\{version\}|/[a-z-]+:\$\{|observastack_version", template + text),
          "no release tag or published image version that must exist (no `--branch v…`, no version variable)")
    check(re.search(r'fetch\b[^\n]*"\$\{git_ref\}"', template) is not None and "FETCH_HEAD" in template,
          "the startup script fetches ${git_ref} by name (a branch, tag or commit) and checks it out")
    check("docker compose pull" not in template and "docker compose up -d --build --wait" in template,
          "the startup script builds the images and waits for health (`docker compose up -d --build --wait`), pulls none")

    # APIs: enabled exactly for what is used, and waited for.
    local_values = {k: v for d in docs.values() for block in d.get("locals", []) for k, v in block.items()}
    apis = set(local_values.get("apis", []))
    check(("google_project_service", "apis") in resources
          and "local.apis" in str(resources[("google_project_service", "apis")].get("for_each")),
          "google_project_service.apis enables local.apis")
    needed = {}
    for kind, name in resources:
        if kind.startswith("google_") and kind != "google_project_service":
            check(kind in API_OF, f"deploy/checks/terraform.py knows which API {kind} needs")
            needed.setdefault(API_OF.get(kind), []).append(f"{kind}.{name}")
    outputs_text = json.dumps(outputs)
    if "--tunnel-through-iap" in outputs_text:
        needed.setdefault(IAP_API, []).append("outputs (--tunnel-through-iap)")
    for api, users in sorted((a, u) for a, u in needed.items() if a):
        check(api in apis, f"{api} is enabled (needed by {', '.join(users)})")
    check(apis <= set(needed), f"no API is enabled that nothing uses ({sorted(apis - set(needed))})")

    def refs(body):
        return {(k, n) for k, n, *_ in REFERENCE.findall(json.dumps(body))}
    waits = {("google_project_service", "apis")}
    changed = True
    while changed:
        changed = False
        for key, body in resources.items():
            if key not in waits and refs(body) & waits:
                waits.add(key)
                changed = True
    for kind, name in resources:
        if kind.startswith("google_"):
            check((kind, name) in waits, f"{kind}.{name} waits for the APIs (depends_on, or a resource that does)")

    # Attributes read by outputs, locals and the VM's metadata exist; the URLs come from the address.
    def attribute_refs(value, where):
        for kind, name, index, path in REFERENCE.findall(json.dumps(value)):
            check((kind, name) in resources, f"{where}: {kind}.{name} is a resource of this configuration")
            attr = re.sub(r"^\.", "", path)
            check(attr in ATTRIBUTES.get(kind, set()), f"{where}: {kind}.{name}{index}.{attr} is an attribute {kind} exports")
    for name, body in outputs.items():
        attribute_refs(body.get("value"), f"output {name}")
        for local in re.findall(r"\blocal\.([a-z_]+)", json.dumps(body.get("value"))):
            check(local in local_values, f"output {name}: local.{local} is defined")
    for name, value in local_values.items():
        attribute_refs(value, f"local {name}")
    instance = resources.get(("google_compute_instance", "stack"), {})
    attribute_refs(instance.get("metadata"), "the VM's metadata")
    nat = json.dumps(instance.get("network_interface"))
    check("google_compute_address.stack.address" in nat, "the VM's external address is the static google_compute_address.stack")
    address_locals = {k for k, v in local_values.items() if "google_compute_address.stack.address" in json.dumps(v)}
    for _ in range(3):  # locals built from locals built from the address
        address_locals |= {k for k, v in local_values.items()
                           if any(f"local.{a}" in json.dumps(v) for a in address_locals)}
    for name in ("user_url", "console_url", "login_command", "grafana_url", "service_health_url"):
        value = json.dumps(outputs.get(name, {}).get("value"))
        check("google_compute_address.stack.address" in value or any(f"local.{a}" in value for a in address_locals),
              f"output {name} is built from the VM's address")
    check("OBSERVASTACK_CONTROL_URL=" in json.dumps(outputs.get("login_command"))
          and "compose-env.sh login" in json.dumps(outputs.get("login_command")),
          "login_command prints a console login URL for the VM's address (OBSERVASTACK_CONTROL_URL)")
    for key in ("OBSERVASTACK_CONTROL_URL", "OBSERVASTACK_GRAFANA_URL", "OBSERVASTACK_SERVICE_HEALTH_URL"):
        check(re.search(rf'set_env {key} "\$\{{[a-z_]+\}}"', template) is not None,
              f"the startup script sets {key} in .env from the VM's address")

    # Every secret compose requires reaches .env from Secret Manager.
    compose = (ROOT / "docker-compose.yml").read_text()
    required = set(re.findall(r"\$\{([A-Z_]+):\?", compose))
    from_secrets = {a or b: secret_id for a, b, secret_id in
                    re.findall(r'(?:set_env ([A-Z_]+) "(?:base64:)?|^([A-Z_]+)=)\$\(secret ([a-z-]+)\b', template, re.M)}
    secret_ids = set(re.findall(r"^\s*([a-z-]+)\s*=", text[text.index("secrets = {"):text.index("}", text.index("secrets = {"))], re.M))
    for var in sorted(required - set(DERIVED)):
        check(var in from_secrets, f"the startup script writes {var} (required by docker-compose.yml) from Secret Manager")
    after_keys = template[template.find("OBSERVASTACK_JWT_PRIVATE_KEY"):]
    check("compose-env.sh" in after_keys, f"OBSERVASTACK_SERVICE_TOKEN: {DERIVED['OBSERVASTACK_SERVICE_TOKEN']} after the keys are written")
    for var, secret_id in from_secrets.items():
        check(secret_id in secret_ids, f"{var} comes from a secret Terraform creates ({secret_id})")

    print(f"  variables: {len(variables)}, outputs: {len(outputs)}, resources: {len(resources)}")
    print(f"{passed} passed, {len(failed)} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
