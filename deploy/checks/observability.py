#!/usr/bin/env python3
"""Checks of prometheus/ and grafana/ (run by scripts/check-observability.sh).

    observability.py static [--dashboards DIR]
                                            dashboards and datasource provisioning, no network
    observability.py queries --datasource loki [--dashboards DIR]
                                            every query of that datasource as Grafana sends it
                                            (variables expanded), JSON [[where, query], ...]
    observability.py live --prometheus URL --logs DIR [--out FILE]
                                            against a real Prometheus scraping the native stack

A dashboard query may only use the variables its own `templating.list` defines (plus Grafana's
built-in `$__…` ones); before a query is parsed or run, every variable is expanded the way
Grafana expands it when the dashboard loads: its current value, or for `All` its `allValue`
(else the values its query returns from the live Prometheus, else `.*`).

Prints one line per failed check and a closing "N passed, N failed" line; exits 1 on failure.
"""

import argparse
import json
import re
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
GRAFANA = ROOT / "grafana"
PROMETHEUS = ROOT / "prometheus"
MIN_SCHEMA_VERSION = 36

# PromQL words that are not metric names.
PROMQL_WORDS = {
    "sum", "min", "max", "avg", "count", "stddev", "stdvar", "topk", "bottomk", "quantile", "count_values", "group",
    "by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless", "bool", "offset",
    "rate", "irate", "increase", "delta", "idelta", "changes", "resets", "deriv", "histogram_quantile",
    "label_values", "label_replace", "label_join", "abs", "ceil", "floor", "round", "clamp_min", "clamp_max",
    "vector", "scalar", "time", "timestamp", "absent", "absent_over_time", "sum_over_time", "avg_over_time",
    "max_over_time", "min_over_time", "count_over_time", "last_over_time", "sort", "sort_desc", "le", "inf", "nan",
}


class Checks:
    def __init__(self):
        self.passed = 0
        self.failures = []
        self.figures = {}

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


def load_datasources():
    doc = yaml.safe_load((GRAFANA / "provisioning/datasources/datasources.yml").read_text())
    return {d["uid"]: d for d in doc["datasources"]}


def dashboards(folder=None):
    for path in sorted(Path(folder or GRAFANA / "dashboards").glob("*.json")):
        yield path, json.loads(path.read_text(encoding="utf-8"))


def all_panels(dashboard):
    for panel in dashboard.get("panels", []):
        yield panel
        yield from panel.get("panels", [])


def datasource_refs(dashboard):
    """Every datasource reference of a dashboard, with where it is."""
    for panel in all_panels(dashboard):
        if "datasource" in panel:
            yield f"panel {panel.get('id')} '{panel.get('title')}'", panel["datasource"]
        for target in panel.get("targets", []):
            if "datasource" in target:
                yield f"panel {panel.get('id')} target {target.get('refId')}", target["datasource"]
    for var in dashboard.get("templating", {}).get("list", []):
        if "datasource" in var:
            yield f"variable {var.get('name')}", var["datasource"]
    for ann in dashboard.get("annotations", {}).get("list", []):
        yield f"annotation {ann.get('name')}", ann.get("datasource")


def queries(dashboard):
    """(where, expr, kind, datasource uid) of every query of a dashboard: panel targets,
    variables, annotations. kind is 'panel', 'variable' or 'annotation'."""
    for panel in all_panels(dashboard):
        for target in panel.get("targets", []):
            uid = (target.get("datasource") or panel.get("datasource") or {}).get("uid")
            yield f"{dashboard['uid']} panel '{panel['title']}' {target['refId']}", target.get("expr", ""), "panel", uid
    for var in dashboard.get("templating", {}).get("list", []):
        query = var.get("query")
        if (var.get("datasource") or {}).get("uid") and query is not None:
            query = query["query"] if isinstance(query, dict) else query
            yield f"{dashboard['uid']} variable ${var['name']}", query, "variable", var["datasource"]["uid"]
    for ann in dashboard.get("annotations", {}).get("list", []):
        if "expr" in ann:
            uid = (ann.get("datasource") or {}).get("uid")
            yield f"{dashboard['uid']} annotation '{ann['name']}'", ann["expr"], "annotation", uid


def promql_exprs(dashboard):
    return [(where, expr, kind) for where, expr, kind, uid in queries(dashboard) if uid == "prometheus"]


def logql_exprs(dashboard):
    return [(where, expr) for where, expr, _, uid in queries(dashboard) if uid == "loki"]


# --- dashboard variables ------------------------------------------------------------------------

# Grafana's built-in variables (no dashboard defines them), with the value a query is tested with.
BUILTIN_VARIABLES = {
    "__rate_interval": "1m", "__interval": "15s", "__interval_ms": "15000",
    "__range": "5m", "__range_s": "300", "__range_ms": "300000",
}
# Grafana's variable syntaxes: $name, ${name}, ${name:format}, [[name]], [[name:format]].
VARIABLE_REF = re.compile(r"\$(\w+)|\$\{(\w+)(?::[^}]*)?\}|\[\[(\w+)(?::[^\]]*)?\]\]")
ALL = "$__all"


def variable_refs(expr):
    """Names of the variables an expression uses."""
    return {m.group(1) or m.group(2) or m.group(3) for m in VARIABLE_REF.finditer(expr or "")}


def defined_variables(dashboard):
    return {v["name"]: v for v in dashboard.get("templating", {}).get("list", []) if v.get("name")}


class UndefinedVariable(Exception):
    pass


def regex_escape(value):
    """Grafana's escaping of one of several values in a Prometheus/Loki regex matcher."""
    return re.sub(r"([\\^$*+?.()|{}\[\]])", r"\\\\\1", value)


class Variables:
    """A dashboard's variables, resolved the way Grafana resolves them when the dashboard loads.

    `all_values(var, query)` returns the values of a query variable set to `All` without an
    `allValue` (the live check asks Prometheus); without it, such a variable becomes `.*`."""

    def __init__(self, dashboard, all_values=None):
        self.defined = defined_variables(dashboard)
        self.all_values = all_values
        self.resolved = {}

    def value(self, name, seen=()):
        if name in BUILTIN_VARIABLES:
            return BUILTIN_VARIABLES[name]
        if name not in self.defined:
            raise UndefinedVariable(f"${name} is not defined in templating.list")
        if name in seen:
            raise UndefinedVariable(f"${name} depends on itself ({' -> '.join(seen + (name,))})")
        if name not in self.resolved:
            self.resolved[name] = self._resolve(self.defined[name], seen + (name,))
        return self.resolved[name]

    def _resolve(self, var, seen):
        kind = var.get("type", "query")
        query = var["query"]["query"] if isinstance(var.get("query"), dict) else var.get("query", "")
        current = (var.get("current") or {}).get("value")
        if current in (None, "", []) and kind in ("constant", "textbox"):
            current = query
        if current in (None, "", []) and kind in ("custom", "interval"):
            options = [o.get("value") for o in var.get("options", [])] or \
                [x.strip() for x in str(query).split(",") if x.strip()]
            current = options[:1]
        if current in (None, "", []):
            if not var.get("includeAll"):
                raise UndefinedVariable(f"${var['name']} has no current value to expand")
            current = ALL
        values = current if isinstance(current, list) else [current]
        if ALL in values:
            if not var.get("includeAll"):
                raise UndefinedVariable(f"${var['name']} is set to All but does not include All")
            if var.get("allValue"):
                return self.expand(var["allValue"], seen)
            values = self.all_values(var, self.expand(query, seen)) if self.all_values and kind == "query" else []
            if not values:
                return ".*"
        values = [self.expand(str(v), seen) for v in values]
        if not var.get("multi") and not var.get("includeAll"):
            return values[0]
        if isinstance(current, str):
            return regex_escape(values[0])
        return "(" + "|".join(regex_escape(v) for v in values) + ")"

    def expand(self, expr, seen=()):
        """The expression as Grafana sends it: every variable replaced by its value."""
        return VARIABLE_REF.sub(lambda m: self.value(m.group(1) or m.group(2) or m.group(3), seen), expr or "")


def metric_names(expr):
    """Metric names a PromQL expression reads (a plain lexer, enough for our expressions)."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    text = re.sub(r"\{[^}]*\}", " ", text)
    text = re.sub(r"\[[^\]]*\]", " ", text)
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    names = set()
    for match in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", text):
        word = match.group(0)
        rest = text[match.end():].lstrip()
        if word.lower() in PROMQL_WORDS or rest.startswith("("):
            continue
        names.add(word)
    return names


def variable_query(expr):
    """label_values(metric{...}, label) → (an instant query that is non-empty iff the variable has
    values, the label holding them)."""
    m = re.fullmatch(r"\s*label_values\((.*),\s*([A-Za-z_][A-Za-z0-9_]*)\)\s*", expr)
    if not m:
        return expr, None
    return f"count by ({m.group(2)}) ({m.group(1)})", m.group(2)


# --- static -------------------------------------------------------------------------------------

def variable_checks(c, name, dashboard):
    """Every variable a query uses (panel targets, annotations, other variables' queries, of
    any datasource) is defined by this dashboard's templating.list or is a Grafana built-in,
    and expands to a value. Returns the number of references checked."""
    defined = defined_variables(dashboard)
    variables = Variables(dashboard)
    n = 0
    for where, expr, _, _ in queries(dashboard):
        refs = variable_refs(expr)
        n += len(refs)
        undefined = sorted(refs - set(defined) - set(BUILTIN_VARIABLES))
        c.check(not undefined, f"{name}: {where} uses {', '.join('$' + u for u in undefined)}, which its "
                               f"templating.list does not define (defined: {sorted(defined)}): {expr}")
        if undefined:
            continue
        try:
            expanded = variables.expand(expr)
            c.check(not VARIABLE_REF.search(expanded), f"{name}: {where} expands completely ({expanded})")
        except UndefinedVariable as err:
            c.check(False, f"{name}: {where} cannot be expanded: {err}")
    for var in defined:
        try:
            variables.value(var)
        except UndefinedVariable as err:
            c.check(False, f"{name}: variable ${var} has no value: {err}")
    return n


def static(args):
    c = Checks()
    datasources = load_datasources()
    c.check(set(datasources) == {"prometheus", "loki", "tempo"},
            f"datasource uids are prometheus, loki, tempo (got {sorted(datasources)})")
    types = {uid: d["type"] for uid, d in datasources.items()}
    prom, loki, tempo = datasources.get("prometheus", {}), datasources.get("loki", {}), datasources.get("tempo", {})
    exemplars = prom.get("jsonData", {}).get("exemplarTraceIdDestinations", [])
    c.check(any(e.get("datasourceUid") == "tempo" and e.get("name") == "trace_id" for e in exemplars),
            "Prometheus exemplars with trace_id link to Tempo")
    derived = loki.get("jsonData", {}).get("derivedFields", [])
    trace_fields = [f for f in derived if f.get("datasourceUid") == "tempo"]
    c.check(len(trace_fields) == 1, "Loki has one derived field linking trace_id to Tempo")
    sample = ('{"level":"INFO","message":"request","service":"shop","span_id":"00f067aa0ba902b7",'
              '"trace_id":"4bf92f3577b34da6a3ce929d0e0e4736"}')
    for field in trace_fields:
        m = re.search(field["matcherRegex"], sample)
        c.check(bool(m) and m.group(1) == "4bf92f3577b34da6a3ce929d0e0e4736",
                "Loki's trace_id derived field extracts the trace id from a service log line")
    t2l = tempo.get("jsonData", {}).get("tracesToLogsV2", {})
    c.check(t2l.get("datasourceUid") == "loki", "Tempo spans link to Loki logs (tracesToLogsV2)")
    c.check(tempo.get("jsonData", {}).get("tracesToMetrics", {}).get("datasourceUid") == "prometheus",
            "Tempo spans link to Prometheus metrics (tracesToMetrics)")
    c.check(not any(k in d for d in datasources.values() for k in ("secureJsonData", "basicAuthPassword", "password")),
            "no datasource ships a password or secret")

    provider = yaml.safe_load((GRAFANA / "provisioning/dashboards/dashboards.yml").read_text())
    paths = [p["options"]["path"] for p in provider["providers"]]
    c.check(paths == ["/var/lib/grafana/dashboards"], f"dashboards are provisioned from /var/lib/grafana/dashboards ({paths})")

    uids = set()
    n_dash = n_panels = n_logs = n_prom = n_logql = n_vars = 0
    for path, d in dashboards(args.dashboards):
        n_dash += 1
        name = path.name
        c.check(bool(d.get("uid")) and d["uid"] not in uids, f"{name}: has a unique uid")
        uids.add(d.get("uid"))
        c.check(bool(d.get("title")), f"{name}: has a title")
        c.check(isinstance(d.get("schemaVersion"), int) and d["schemaVersion"] >= MIN_SCHEMA_VERSION,
                f"{name}: schemaVersion >= {MIN_SCHEMA_VERSION}")
        panels = list(all_panels(d))
        ids = [p.get("id") for p in panels]
        c.check(all(isinstance(i, int) for i in ids) and len(ids) == len(set(ids)), f"{name}: panel ids are unique integers")
        for p in panels:
            g = p.get("gridPos", {})
            c.check(all(k in g for k in "xywh") and g["x"] + g["w"] <= 24, f"{name}: panel {p.get('id')} has a valid gridPos")
        n_panels += len(panels)
        for where, ref in datasource_refs(d):
            uid = (ref or {}).get("uid")
            if uid == "-- Grafana --":
                continue
            c.check(uid in types and ref.get("type") == types[uid],
                    f"{name}: {where} references a provisioned datasource by uid ({ref})")
        logs = [p for p in panels if p.get("type") == "logs"]
        metrics = [p for p in panels if p.get("type") in ("timeseries", "stat") and p["datasource"]["uid"] == "prometheus"]
        n_logs += len(logs)
        c.check(len(logs) >= 1 and all(p["datasource"]["uid"] == "loki" for p in logs), f"{name}: has Loki log panels")
        c.check(len(metrics) >= 1, f"{name}: has Prometheus metric panels next to the logs")
        for where, expr in logql_exprs(d):
            n_logql += 1
            c.check(re.match(r'^\{service_name(=|=~)"[^"]+"\}', expr) is not None,
                    f"{where}: LogQL starts with a service_name stream selector ({expr})")
        n_prom += len(promql_exprs(d))
        n_vars += variable_checks(c, name, d)
    c.check(n_dash >= 4, f"at least four dashboards (got {n_dash})")
    c.figures.update({"dashboards": n_dash, "panels": n_panels, "log panels": n_logs,
                      "PromQL expressions in dashboards": n_prom, "LogQL expressions": n_logql,
                      "variable references, each defined by its dashboard": n_vars})
    return c.finish()


def expanded_queries(args):
    """Prints [[where, query], ...]: every query of one datasource with its variables expanded
    (deploy/checks/logql.cjs parses the Loki ones with Grafana's grammar)."""
    out = []
    for path, d in dashboards(args.dashboards):
        variables = Variables(d)
        for where, expr, _, uid in queries(d):
            if uid == args.datasource:
                try:
                    out.append([f"{path.name}: {where}", variables.expand(expr)])
                except UndefinedVariable as err:
                    print(f"FAIL: {path.name}: {where} cannot be expanded: {err}", file=sys.stderr)
                    return 1
    json.dump(out, sys.stdout, indent=1)
    print()
    return 0


# --- live ---------------------------------------------------------------------------------------

def get_json(url, timeout=10):
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        return json.loads(resp.read().decode())


def query(prom, expr):
    """(ok, error, result) of an instant query."""
    url = f"{prom}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    try:
        body = get_json(url)
    except urllib.error.HTTPError as err:
        body = json.loads(err.read().decode() or "{}")
        return False, body.get("error", str(err)), []
    except OSError as err:
        return False, str(err), []
    return body.get("status") == "success", body.get("error", ""), body.get("data", {}).get("result", [])


def recording_rules():
    for path in sorted((PROMETHEUS / "rules").glob("*.yml")):
        for group in yaml.safe_load(path.read_text())["groups"]:
            for rule in group["rules"]:
                yield path.name, rule


def live(args):
    prom = args.prometheus.rstrip("/")
    exprs = [(f"--extra-expr {e}", e, True) for e in args.extra_expr]  # (where, expr, must_have_data)
    # Alerts that the injected symptom must raise (pending or firing), on the given label only.
    expected_alerts = []
    for spec in args.expect_alert:
        name, _, matcher = spec.partition(":")
        label, _, value = matcher.partition("=")
        expected_alerts.append((name, label, value))
        exprs.append((f"alert {name} raised for {label}={value}", f'ALERTS{{alertname="{name}", {label}="{value}"}}', True))
    for file, rule in recording_rules():
        if "record" in rule:
            exprs.append((f"{file} record {rule['record']}", rule["record"], True))
            exprs.append((f"{file} record {rule['record']} expr", rule["expr"], True))
        else:
            # An alert's expression is empty while nothing is wrong; it must parse and read real metrics.
            exprs.append((f"{file} alert {rule['alert']}", rule["expr"], False))
    def all_values(_var, query_text):
        # What Grafana's `All` sends for a variable without allValue: every value its query finds.
        expr, label = variable_query(query_text)
        ok, _, result = query(prom, expr)
        return sorted({r["metric"][label] for r in result if label in r["metric"]}) if ok and label else []

    for _, d in dashboards():
        variables = Variables(d, all_values)
        for where, expr, kind in promql_exprs(d):
            sent = variables.expand(expr)
            if kind == "variable":
                exprs.append((where, variable_query(sent)[0], True))
            else:
                # Annotations are empty unless a config change or a run happened in the last minute.
                exprs.append((where, sent, kind == "panel"))

    deadline = time.monotonic() + args.timeout
    while True:
        pending = []
        targets = get_json(f"{prom}/api/v1/targets")["data"]["activeTargets"]
        down = [f"{t['labels'].get('job')} ({t.get('lastError') or t['health']})" for t in targets if t["health"] != "up"]
        if down:
            pending.append(f"targets not up: {down}")
        for where, expr, must in exprs:
            ok, _, result = query(prom, expr)
            if ok and must and not result:
                pending.append(where)
        if not pending or time.monotonic() > deadline:
            break
        time.sleep(5)

    c = Checks()
    targets = get_json(f"{prom}/api/v1/targets")["data"]["activeTargets"]
    c.check(len(targets) >= args.min_targets, f"at least {args.min_targets} scrape targets (got {len(targets)})")
    for t in targets:
        c.check(t["health"] == "up", f"scrape target {t['labels'].get('job')} is up ({t.get('lastError')})")
    groups = get_json(f"{prom}/api/v1/rules")["data"]["groups"]
    rules = [r for g in groups for r in g["rules"]]
    for r in rules:
        c.check(r.get("health") == "ok", f"rule {r.get('name')} evaluates without error ({r.get('lastError')})")
    n_data = n_parse_only = 0
    names = set()
    for where, expr, must in exprs:
        ok, error, result = query(prom, expr)
        c.check(ok, f"{where}: parses and runs ({error}): {expr}")
        names |= metric_names(expr)
        if must:
            n_data += 1
            c.check(bool(result), f"{where}: returns data: {expr}")
        else:
            n_parse_only += 1
    for name, label, value in expected_alerts:
        _, _, others = query(prom, f'ALERTS{{alertname="{name}", {label}!="{value}"}}')
        c.check(not others, f"alert {name} is raised for {label}={value} only (also: {[o['metric'].get(label) for o in others]})")
    recorded = {rule["record"] for _, rule in recording_rules() if "record" in rule}
    for name in sorted(names - recorded):
        ok, _, result = query(prom, f'count({{__name__="{name}"}})')
        c.check(ok and bool(result), f"metric {name} exists in the live stack")
    for name in sorted(names & recorded):
        c.check(True, name)

    # The Loki derived field must find the trace id in real service log lines.
    loki = load_datasources()["loki"]["jsonData"]["derivedFields"][0]["matcherRegex"]
    lines = [line for f in sorted(Path(args.logs).glob("*.log")) for line in f.read_text(errors="replace").splitlines()
             if '"trace_id"' in line]
    matched = [line for line in lines if re.search(loki, line)]
    c.check(bool(lines) and len(matched) == len(lines),
            f"the Loki trace_id derived field matches every real log line with a trace id ({len(matched)}/{len(lines)})")

    c.figures.update({
        "scrape targets up": f"{sum(t['health'] == 'up' for t in targets)}/{len(targets)}",
        "rules evaluating ok": f"{sum(r.get('health') == 'ok' for r in rules)}/{len(rules)}",
        "expressions checked (parse + run)": len(exprs),
        "alerts raised by the injected bad release": ", ".join(f"{n} {l}={v}" for n, l, v in expected_alerts) or "none asked",
        "of which must return data (recording rules, dashboard panels, variables)": n_data,
        "parse-only (alert expressions, annotations)": n_parse_only,
        "distinct metric names read, all present": len(names - recorded),
        "log lines with trace_id matched by the derived field": f"{len(matched)}/{len(lines)}",
    })
    if args.out:
        Path(args.out).write_text(json.dumps(c.figures, indent=2) + "\n")
    return c.finish()


def main():
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="cmd", required=True)
    sp = sub.add_parser("static")
    sp.add_argument("--dashboards", help="folder of dashboards to check (default grafana/dashboards)")
    qp = sub.add_parser("queries")
    qp.add_argument("--datasource", required=True, help="datasource uid, e.g. loki")
    qp.add_argument("--dashboards", help="folder of dashboards (default grafana/dashboards)")
    lp = sub.add_parser("live")
    lp.add_argument("--prometheus", required=True)
    lp.add_argument("--logs", required=True)
    lp.add_argument("--timeout", type=float, default=150)
    lp.add_argument("--min-targets", type=int, default=7)
    lp.add_argument("--out")
    lp.add_argument("--expect-alert", action="append", default=[], metavar="NAME:LABEL=VALUE",
                    help="an alert that must be pending or firing for LABEL=VALUE, and for no other value")
    lp.add_argument("--extra-expr", action="append", default=[],
                    help="an expression that must return data too (the script's self-test passes one that cannot)")
    args = parser.parse_args()
    return {"static": static, "queries": expanded_queries, "live": live}[args.cmd](args)


if __name__ == "__main__":
    sys.exit(main())
