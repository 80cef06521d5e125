#!/usr/bin/env python3
"""Checks of terraform/ that need no provider download (run by scripts/check-deploy.sh next to
`terraform fmt -check` and, when the registry is reachable, `terraform validate`): variables and
outputs are described, every reference resolves, the three paths have their firewall rules, no
secret has a default, and the startup script renders to valid bash.

Prints one line per failed check and a closing "N passed, N failed" line; exits 1 on failure.
"""

import re
import subprocess
import sys
from pathlib import Path

import hcl2

TF = Path(__file__).resolve().parents[2] / "terraform"


def main():
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
    for kind, name in re.findall(r"\b(google_[a-z_]+|random_[a-z_]+)\.([a-z_][a-z0-9_]*)\b", text):
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
    check("0.0.0.0/0" not in str([firewall(n).get("source_ranges") for n in ("control", "observability", "iap")]),
          "no literal 0.0.0.0/0 on control, observability or SSH")
    check(("google_secret_manager_secret", "stack") in resources and "jwt-secret" in text,
          "the JWT secret lives in Secret Manager")
    check(not re.search(r'(?i)(password|secret)\s*=\s*"[^"$]+"', text), "no literal password or secret in terraform/")

    # The startup template: every ${var} is passed by templatefile(), and the result is valid bash.
    passed_vars = set(re.findall(r"^\s*([a-z_]+)\s*=", text[text.index("templatefile("):text.index("})", text.index("templatefile("))], re.M))
    tpl_vars = set(re.findall(r"(?<!\$)\$\{([a-z_]+)\}", template))
    check(tpl_vars == passed_vars, f"startup.sh.tftpl uses exactly the variables templatefile passes ({sorted(tpl_vars)} vs {sorted(passed_vars)})")
    rendered = re.sub(r"(?<!\$)\$\{([a-z_]+)\}", "x", template).replace("$${", "${")
    result = subprocess.run(["bash", "-n"], input=rendered, text=True, capture_output=True)
    check(result.returncode == 0, f"startup.sh.tftpl renders to valid bash ({result.stderr.strip()})")
    check((TF / "README.md").is_file() and "terraform apply" in (TF / "README.md").read_text(), "terraform/README.md explains init/plan/apply")

    print(f"  variables: {len(variables)}, outputs: {len(outputs)}, resources: {len(resources)}")
    print(f"{passed} passed, {len(failed)} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
