#!/usr/bin/env python3
"""Structural checks of the Docker Compose stack, the Dockerfile and docs/ports.md (run by
scripts/check-deploy.sh after `docker-compose config` has validated the file against the
Compose specification).

    deploy.py --resolved resolved.json

`resolved.json` is `docker-compose config --format json` of docker-compose.yml with a throwaway
.env; the raw file is read too, to see what is literal and what is interpolated.
Prints one line per failed check and a closing "N passed, N failed" line; exits 1 on failure.
"""

import argparse
import base64
import json
import re
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]

# Services allowed without a container healthcheck, and why (see docker-compose.yml).
NO_HEALTHCHECK = {"otel-collector": "scratch image without a shell or HTTP client; scraped by Prometheus"}
APP_SERVICES = {"shop", "gateway-user", "gateway-control", "gateway-observability", "orchestrator", "runner", "facts"}
EXPECTED_SERVICES = APP_SERVICES | {"postgres", "otel-collector", "prometheus", "grafana", "loki", "tempo"}
# Bind mounts that may appear, all read-only. Nothing of the host's: services send their logs
# over OTLP, so the collector reads no Docker log files (absent on Docker Desktop, rootless, Gitpod).
ALLOWED_BINDS = {"./prometheus", "./grafana/provisioning", "./grafana/dashboards", "./deploy/otel-collector.yaml",
                 "./deploy/loki.yaml", "./deploy/tempo.yaml", "./deploy/postgres/initdb.d"}
SECRET_KEY = re.compile(r"(PASSWORD|SECRET|TOKEN|DATABASE_URL|PRIVATE_KEY|PUBLIC_KEYS)", re.I)
# The one service that mints tokens, and so the one given the stack's private key.
MINTER = "orchestrator"


class Checks:
    def __init__(self):
        self.passed, self.failures, self.figures = 0, [], {}

    def check(self, ok, what):
        if ok:
            self.passed += 1
        else:
            self.failures.append(what)
            print(f"FAIL: {what}", file=sys.stderr)
        return ok

    def finish(self):
        for key, value in self.figures.items():
            print(f"  {key}: {value}")
        print(f"{self.passed} passed, {len(self.failures)} failed")
        return 1 if self.failures else 0


def ports_table(first="service"):
    """Rows of the first table in docs/ports.md whose header starts with `| {first} |`."""
    rows, header = [], None
    for line in (ROOT / "docs/ports.md").read_text().splitlines():
        if not line.startswith("|"):
            if header and rows:
                break
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if header is None:
            if cells and cells[0] == first:
                header = cells
            continue
        if set(line.replace("|", "").strip()) <= set("-: "):
            continue
        rows.append(dict(zip(header, cells)))
    return rows


def split_list(cell):
    return {x.strip().strip("`") for x in re.split(r"[,\s]+", cell) if x.strip().strip("`") not in ("", "—", "-")}


def compose_checks(c, resolved, raw):
    services = resolved["services"]
    c.check(set(services) == EXPECTED_SERVICES, f"services are {sorted(EXPECTED_SERVICES)} (got {sorted(services)})")
    declared_networks = set(resolved.get("networks", {}))
    declared_volumes = set(resolved.get("volumes", {}))
    dockerfile_targets = set(re.findall(r"^FROM\s+\S+\s+AS\s+(\S+)", (ROOT / "deploy/Dockerfile").read_text(), re.M | re.I))
    members = {}
    for name, svc in sorted(services.items()):
        image = svc.get("image", "")
        m = re.fullmatch(r"(?:[^/]+/)*[^/:@]+(?::([^@]+))?(?:@sha256:[0-9a-f]{64})?", image)
        tag = m.group(1) if m else None
        c.check(bool(image), f"{name}: has an image")
        c.check(bool(tag) and tag != "latest" and ("@sha256:" in image or re.search(r"\d", tag)),
                f"{name}: image is pinned to a version ({image})")
        if name in APP_SERVICES:
            c.check(image.startswith("docker.io/observastack/"), f"{name}: uses the published image ({image})")
            repo = image.split("/")[-1].split(":")[0]
            c.check(repo in dockerfile_targets, f"{name}: deploy/Dockerfile has a `{repo}` target for its image")
            # A fresh clone runs: Compose builds what it cannot pull, from this checkout.
            build = svc.get("build") or {}
            c.check(build.get("context") == str(ROOT) and build.get("dockerfile") == "deploy/Dockerfile"
                    and build.get("target") == repo,
                    f"{name}: builds from this checkout with deploy/Dockerfile --target {repo} when the image is missing ({build})")
            c.check(svc.get("read_only") is True and "ALL" in svc.get("cap_drop", []),
                    f"{name}: read-only root filesystem and no capabilities")
            c.check(svc.get("user") in (None, "", "65532", "65532:65532"), f"{name}: runs as the image's non-root user")
        # Scenarios burn CPU on purpose: nothing may take the whole machine.
        limits = ((svc.get("deploy") or {}).get("resources") or {}).get("limits") or {}
        c.check(float(limits.get("cpus") or 0) > 0 and int(limits.get("memory") or 0) > 0,
                f"{name}: has a CPU and a memory limit ({limits})")
        health = svc.get("healthcheck", {})
        has_probe = bool(health.get("test")) and not health.get("disable")
        one_shot = svc.get("restart") in (None, "no") and not svc.get("ports")
        if name in NO_HEALTHCHECK:
            c.check(not has_probe, f"{name}: listed as probe-less ({NO_HEALTHCHECK[name]}) — remove it from the list if it gains a probe")
        else:
            c.check(has_probe or one_shot, f"{name}: has a healthcheck (or is a one-shot)")
        for dep, cond in (svc.get("depends_on") or {}).items():
            c.check(dep in services, f"{name}: depends_on target {dep} exists")
            condition = cond.get("condition")
            c.check(condition in ("service_healthy", "service_completed_successfully"),
                    f"{name}: depends_on {dep} waits for a condition (got {condition})")
            if condition == "service_healthy" and dep in services:
                dep_health = services[dep].get("healthcheck", {})
                c.check(bool(dep_health.get("test")) and not dep_health.get("disable"),
                        f"{name}: waits for {dep} to be healthy, and {dep} has a healthcheck")
        c.check(not svc.get("privileged") and svc.get("network_mode") in (None, "") and svc.get("pid") in (None, ""),
                f"{name}: not privileged, no host network or pid namespace")
        for vol in svc.get("volumes", []):
            source, kind = vol.get("source", ""), vol.get("type")
            c.check("docker.sock" not in source and "docker.sock" not in vol.get("target", ""),
                    f"{name}: does not mount the Docker socket")
            if kind == "volume":
                c.check(source in declared_volumes, f"{name}: volume {source} is a declared named volume")
            elif kind == "bind":
                rel = "./" + str(Path(source).relative_to(ROOT)) if source.startswith(str(ROOT)) else source
                c.check(rel in ALLOWED_BINDS, f"{name}: bind mount {rel} is one of the expected files")
                c.check(vol.get("read_only") is True, f"{name}: bind mount {rel} is read-only")
                if source.startswith(str(ROOT)):
                    c.check(Path(source).exists(), f"{name}: bind mount {rel} exists in the repository")
        nets = set(svc.get("networks", {}))
        c.check(nets <= declared_networks and nets, f"{name}: joins declared networks only ({sorted(nets)})")
        if name == "otel-collector":
            mounts = {v.get("source", "").removeprefix(str(ROOT) + "/") for v in svc.get("volumes", [])}
            c.check(mounts == {"deploy/otel-collector.yaml"},
                    f"otel-collector: mounts its config only, no host logs or state (got {sorted(mounts)})")
            c.check(svc.get("user") in (None, ""), f"otel-collector: runs as its image's non-root user (user: {svc.get('user')})")
        for net in nets:
            members.setdefault(net, set()).add(name)

    # Secrets: never a literal value in the file, always `${VAR:?…}` from the generated .env.
    for name, svc in raw["services"].items():
        env = svc.get("environment", {})
        items = env.items() if isinstance(env, dict) else (e.split("=", 1) for e in env)
        for key, value in items:
            if key == "<<":
                continue
            if SECRET_KEY.search(key):
                c.check(isinstance(value, str) and re.search(r"\$\{[A-Z_]+:\?", value) is not None,
                        f"{name}: {key} comes from .env and is required (`${{VAR:?…}}`), never a default")
    for anchor, keys in (("x-public-keys", ["OBSERVASTACK_JWT_PUBLIC_KEYS"]),
                         ("x-emitter", ["OBSERVASTACK_JWT_PUBLIC_KEYS", "OBSERVASTACK_SERVICE_TOKEN"])):
        for key in keys:
            value = raw.get(anchor, {}).get(key, "")
            c.check(re.fullmatch(rf"\$\{{{key}:\?.*\}}", str(value)) is not None,
                    f"{anchor}: {key} is required from .env, never defaulted")
    key_checks(c, services)
    return members


def decoded(value):
    """An env value as text, `base64:` values (how .env carries keys) decoded."""
    value = str(value)
    if value.startswith("base64:"):
        try:
            return base64.b64decode(value.removeprefix("base64:")).decode("utf-8", "replace")
        except ValueError:
            return value
    return value


def key_checks(c, services):
    """Least privilege for the token keys, on the resolved file: every ObservaStack service gets
    the public keys, the orchestrator alone the private key, and no service anything of it."""
    private = services.get(MINTER, {}).get("environment", {}).get("OBSERVASTACK_JWT_PRIVATE_KEY", "")
    c.check(bool(private), f"{MINTER}: is given the private key (OBSERVASTACK_JWT_PRIVATE_KEY) it mints with")
    for name, svc in services.items():
        env = svc.get("environment") or {}
        if name in APP_SERVICES:
            c.check(bool(env.get("OBSERVASTACK_JWT_PUBLIC_KEYS")), f"{name}: verifies tokens with the public keys")
        c.check("OBSERVASTACK_JWT_SECRET" not in env, f"{name}: no shared signing secret (OBSERVASTACK_JWT_SECRET)")
        if name == MINTER:
            continue
        holds = [key for key, value in env.items()
                 if key == "OBSERVASTACK_JWT_PRIVATE_KEY" or (private and private in str(value))
                 or "PRIVATE KEY" in decoded(value)]
        c.check(not holds, f"{name}: holds no private key material (only {MINTER} mints tokens; found in {holds})")
        if env.get("OBSERVASTACK_FACTS_URL"):
            c.check(bool(env.get("OBSERVASTACK_SERVICE_TOKEN")), f"{name}: sends facts with a `service` token")


def network_checks(c, resolved, members):
    services = resolved["services"]
    user_nets = set(services["gateway-user"]["networks"])
    c.check(user_nets == {"user", "business", "user-admin", "telemetry-user"},
            f"gateway-user joins only user, business, user-admin, telemetry-user (got {sorted(user_nets)})")
    for forbidden in ("control", "data", "observability", "telemetry"):
        c.check(forbidden not in user_nets, f"gateway-user is not on the {forbidden} network")
    reach = set().union(*(members[n] for n in user_nets)) - {"gateway-user"}
    c.check(reach == {"shop", "runner", "gateway-control", "gateway-observability", "otel-collector", "facts"},
            f"gateway-user reaches only shop, runner, the other gateways' public/admin listeners and the telemetry sinks (got {sorted(reach)})")
    c.check(members.get("business") == {"gateway-user", "shop"}, f"business network is gateway-user + shop ({members.get('business')})")
    c.check(members.get("data") == {"postgres", "shop", "orchestrator", "facts"},
            f"data network is postgres + shop + orchestrator + facts, the last for deploy markers ({members.get('data')})")
    c.check(set(services["postgres"]["networks"]) == {"data"}, "postgres is on the data network only")
    for name in ("prometheus", "grafana", "loki", "tempo"):
        c.check(set(services[name]["networks"]) == {"observability"}, f"{name} is on the observability network only")
    for net in ("business", "data", "user-admin", "telemetry", "telemetry-user"):
        c.check(resolved["networks"][net].get("internal") is True, f"network {net} is internal (no way out)")
    c.check("gateway-user" not in members.get("control", set()), "the control network has no user gateway")


def ports_checks(c, resolved):
    rows = ports_table()
    c.check(len(rows) >= len(EXPECTED_SERVICES), f"docs/ports.md lists every service ({len(rows)} rows)")
    services = resolved["services"]
    documented = {}
    for row in rows:
        name = row["service"].strip("`")
        c.check(name in services, f"docs/ports.md: {name} is a compose service")
        if name not in services:
            continue
        svc = services[name]
        published = {int(p["published"]) for p in svc.get("ports", [])}
        doc_pub = {int(p) for p in split_list(row.get("published", ""))}
        c.check(published == doc_pub, f"{name}: published ports {sorted(published)} match docs/ports.md {sorted(doc_pub)}")
        for p in svc.get("ports", []):
            c.check(int(p["published"]) == int(p["target"]), f"{name}: port {p['target']} is published as itself")
            c.check(p.get("host_ip") == "127.0.0.1", f"{name}: port {p['target']} binds 127.0.0.1 unless OBSERVASTACK_BIND says otherwise")
        doc_nets = split_list(row.get("networks", ""))
        c.check(set(svc.get("networks", {})) == doc_nets,
                f"{name}: networks {sorted(svc.get('networks', {}))} match docs/ports.md {sorted(doc_nets)}")
        documented[name] = row
        # Listening ports named in the command must be documented.
        cmd = " ".join(svc.get("command") or [])
        listens = {int(x) for x in re.findall(r"0\.0\.0\.0:(\d+)", cmd)}
        doc_ports = {int(p) for p in split_list(row.get("ports", ""))}
        c.check(listens <= doc_ports, f"{name}: listening ports {sorted(listens)} are documented ({sorted(doc_ports)})")
    c.check(set(documented) == set(services), f"docs/ports.md documents every service (missing {sorted(set(services) - set(documented))})")


def network_table_checks(c, resolved, members):
    """docs/ports.md's "What each network connects" table is what compose builds."""
    rows = ports_table("network")
    documented = {}
    for row in rows:
        m = re.match(r"`([^`]+)`(\s*\(internal\))?", row["network"])
        c.check(m is not None, f"docs/ports.md: network cell `{row['network']}` names a network")
        if not m:
            continue
        name, internal = m.group(1), bool(m.group(2))
        documented[name] = row
        c.check(name in resolved.get("networks", {}), f"docs/ports.md: network {name} exists in compose")
        c.check(split_list(row["members"]) == members.get(name, set()),
                f"network {name}: members {sorted(members.get(name, set()))} match docs/ports.md {sorted(split_list(row['members']))}")
        c.check(bool(resolved["networks"].get(name, {}).get("internal")) == internal,
                f"network {name}: internal={internal} as docs/ports.md says")
    c.check(set(documented) == set(resolved.get("networks", {})),
            f"docs/ports.md documents every network (missing {sorted(set(resolved.get('networks', {})) - set(documented))})")


def dockerfile_checks(c):
    text = (ROOT / "deploy/Dockerfile").read_text()
    # Join continuation lines, drop comments.
    lines = re.sub(r"\\\n", " ", text).splitlines()
    lines = [l.strip() for l in lines if l.strip() and not l.strip().startswith("#")]
    stages, current = {"<global>": {"base": None, "lines": []}}, "<global>"
    # Global ARGs (before the first FROM) parameterise base images; their defaults are what a
    # user's build uses, so those are checked.
    global_args = {}
    for line in lines:
        instr, _, rest = line.partition(" ")
        instr = instr.upper()
        if instr == "ARG" and current == "<global>":
            key, _, default = rest.partition("=")
            global_args[key.strip()] = default.strip()
        if instr == "FROM":
            m = re.match(r"(\S+)(?:\s+AS\s+(\S+))?", rest, re.I)
            base = re.sub(r"\$\{(\w+)\}", lambda a: global_args.get(a.group(1), a.group(0)), m.group(1))
            current = m.group(2) or base
            stages[current] = {"base": base, "lines": []}
            if base not in stages and base != "scratch":
                c.check("${" not in base and ":" in base.split("/")[-1] and not base.endswith(":latest"),
                        f"Dockerfile: base image {base} carries a tag, not latest")
        else:
            stages[current]["lines"].append((instr, rest))
        c.check(instr != "ADD", f"Dockerfile: COPY rather than ADD ({line[:60]})")
        if instr == "RUN":
            c.check("curl " not in rest and "wget " not in rest, f"Dockerfile: no downloads in RUN ({rest[:60]})")
            c.check("apt-get install" not in rest or "--no-install-recommends" in rest,
                    f"Dockerfile: apt-get install without recommends ({rest[:60]})")
            c.check("cargo install" not in rest or ("--locked" in rest and "--version" in rest),
                    f"Dockerfile: cargo install pinned and locked ({rest[:60]})")
        if instr in ("ENTRYPOINT", "CMD", "HEALTHCHECK") and "NONE" not in rest:
            payload = rest.split("CMD", 1)[-1] if instr == "HEALTHCHECK" else rest
            c.check(payload.strip().startswith("["), f"Dockerfile: {instr} in exec form ({rest[:60]})")

    def inherited(stage, key):
        while stage in stages:
            for instr, rest in reversed(stages[stage]["lines"]):
                if instr == key:
                    return rest
            stage = stages[stage]["base"]
        return None

    for target in ("shop", "gateway", "runner", "orchestrator", "facts", "cli"):
        c.check(target in stages, f"Dockerfile: has a `{target}` target")
        if target not in stages:
            continue
        user = inherited(target, "USER")
        c.check(user is not None and user.split(":")[0] not in ("0", "root"), f"Dockerfile {target}: runs as a non-root user ({user})")
        c.check(inherited(target, "ENTRYPOINT") is not None, f"Dockerfile {target}: has an ENTRYPOINT")
        health = inherited(target, "HEALTHCHECK")
        c.check(health is not None, f"Dockerfile {target}: declares a HEALTHCHECK (or NONE for the CLI)")
        root = stages[target]["base"]
        while root in stages:
            root = stages[root]["base"]
        c.check("distroless" in root, f"Dockerfile {target}: runtime is distroless ({root})")
    c.check("cargo chef cook" in text and "cargo chef prepare" in text, "Dockerfile: dependencies are cached with cargo-chef")
    ignore = (ROOT / ".dockerignore").read_text().splitlines()
    c.check("target/" in ignore and ".env" in ignore and ".git/" in ignore, ".dockerignore keeps target/, .git/ and .env out of the context")


def telemetry_config_checks(c):
    """The collector, Loki and Tempo configs parse, and the collector's pipelines only name
    components it declares (what the collector itself refuses at start-up)."""
    col = yaml.safe_load((ROOT / "deploy/otel-collector.yaml").read_text())
    service = col.get("service", {})
    for ext in service.get("extensions", []):
        c.check(ext in col.get("extensions", {}), f"otel-collector: extension {ext} is declared")
    pipelines = service.get("pipelines", {})
    c.check(set(pipelines) == {"traces", "logs", "metrics"}, f"otel-collector: traces, logs and metrics pipelines ({sorted(pipelines)})")
    logs_in = pipelines.get("logs", {}).get("receivers", [])
    c.check(logs_in == ["otlp"], f"otel-collector: logs arrive over OTLP only ({logs_in})")
    file_readers = [n for n in list(col.get("receivers") or {}) + list(col.get("extensions") or {})
                    if n.split("/")[0] in ("filelog", "file_storage")]
    c.check(not file_readers, f"otel-collector: reads no files of the host ({file_readers})")
    for name, pipeline in pipelines.items():
        for kind in ("receivers", "processors", "exporters"):
            for component in pipeline.get(kind, []):
                c.check(component in (col.get(kind) or {}), f"otel-collector: {name} pipeline's {kind[:-1]} {component} is declared")
    exporters = col.get("exporters", {})
    c.check(exporters.get("otlp/tempo", {}).get("endpoint") == "tempo:4317", "otel-collector: traces go to tempo:4317")
    c.check(exporters.get("otlphttp/loki", {}).get("endpoint") == "http://loki:3100/otlp", "otel-collector: logs go to Loki's OTLP endpoint")
    c.check(exporters.get("prometheusremotewrite", {}).get("endpoint") == "http://prometheus:9090/api/v1/write",
            "otel-collector: metrics go to Prometheus' remote-write receiver")
    loki = yaml.safe_load((ROOT / "deploy/loki.yaml").read_text())
    c.check(loki.get("server", {}).get("http_listen_port") == 3100 and loki.get("auth_enabled") is False, "loki: single tenant on 3100")
    c.check(loki.get("limits_config", {}).get("allow_structured_metadata") is True, "loki: structured metadata on (OTLP ingestion)")
    tempo = yaml.safe_load((ROOT / "deploy/tempo.yaml").read_text())
    c.check(tempo.get("server", {}).get("http_listen_port") == 3200, "tempo: HTTP API on 3200")
    protocols = tempo.get("distributor", {}).get("receivers", {}).get("otlp", {}).get("protocols", {})
    c.check(protocols.get("grpc", {}).get("endpoint") == "0.0.0.0:4317", "tempo: OTLP gRPC on 0.0.0.0:4317")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--resolved", required=True)
    parser.add_argument("--compose", default=str(ROOT / "docker-compose.yml"), help="the raw compose file")
    args = parser.parse_args()
    resolved = json.loads(Path(args.resolved).read_text())
    raw = yaml.safe_load(Path(args.compose).read_text())
    c = Checks()
    members = compose_checks(c, resolved, raw)
    network_checks(c, resolved, members)
    ports_checks(c, resolved)
    network_table_checks(c, resolved, members)
    dockerfile_checks(c)
    telemetry_config_checks(c)
    c.figures.update({"compose services": len(resolved["services"]), "networks": len(resolved.get("networks", {})),
                      "named volumes": len(resolved.get("volumes", {})), "docs/ports.md rows": len(ports_table())})
    return c.finish()


if __name__ == "__main__":
    sys.exit(main())
