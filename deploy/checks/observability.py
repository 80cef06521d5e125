#!/usr/bin/env python3
"""Checks of prometheus/ and grafana/ (run by scripts/check-observability.sh).

    observability.py static [--dashboards DIR] [--datasources FILE]
                                            dashboards and datasource provisioning, no network
    observability.py queries --datasource loki [--dashboards DIR] [--datasources FILE]
                                            every query of that datasource as Grafana sends it
                                            (variables expanded), JSON [[where, query], ...]
    observability.py otlp-sink --listen HOST:PORT --out DIR
                                            OTLP/HTTP receiver for the native stack: log records
                                            kept as Loki would store them, spans kept for links
    observability.py live --prometheus URL [--otlp DIR --services A,B] [--out FILE]
                                            against a real Prometheus scraping the native stack,
                                            and the Loki queries and links on the sink's records

A dashboard query may only use the variables its own `templating.list` defines (plus Grafana's
built-in `$__…` ones); before a query is parsed or run, every variable is expanded the way
Grafana expands it when the dashboard loads: its current value, or for `All` its `allValue`
(else the values its query returns from the live Prometheus, else `.*`).

Prints one line per failed check and a closing "N passed, N failed" line; exits 1 on failure.
"""

import argparse
import base64
import gzip
import json
import re
import struct
import sys
import threading
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


def load_datasources(path=None):
    doc = yaml.safe_load(Path(path or GRAFANA / "provisioning/datasources/datasources.yml").read_text())
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


# --- Loki: what an OTLP log record becomes, and the LogQL the dashboards run on it ----------------
#
# No Loki runs here. Records are mapped the way Loki 3.3's OTLP endpoint maps them
# (pkg/loghttp/push/otlp.go and the distributor's level discovery at v3.3.2, with deploy/loki.yaml
# setting no otlp_config): the default resource attributes below become stream labels, every other
# resource attribute, the scope and the record's own fields become structured metadata, and the
# body is the line. Names have dots turned into underscores.

# Loki 3.3's default `distributor.otlp.default_resource_attributes_as_index_labels`.
LOKI_INDEX_RESOURCE_ATTRIBUTES = [
    "service.name", "service.namespace", "service.instance.id", "deployment.environment", "cloud.region",
    "cloud.availability_zone", "k8s.cluster.name", "k8s.namespace.name", "k8s.pod.name", "k8s.container.name",
    "container.name", "k8s.replicaset.name", "k8s.deployment.name", "k8s.statefulset.name", "k8s.daemonset.name",
    "k8s.cronjob.name", "k8s.job.name",
]
# Field names of the services' JSON lines that no OTLP record carries under that name, with the
# name that holds the same thing in Loki now.
JSON_LINE_NAMES = {
    "level": "severity_text (or detected_level)",
    "service": "service_name (stream label)",
    "target": "scope_name",
    "message": "the line itself (a line filter)",
    "span": "nothing (the span's name is in Tempo)",
    "timestamp": "the entry's time",
}
LOGQL_PARSERS = {"json", "logfmt", "unpack", "regexp", "pattern"}
# Loki adds `detected_level` from the severity number (OTLP data model ranges).
DETECTED_LEVELS = [(4, "trace"), (8, "debug"), (12, "info"), (16, "warn"), (20, "error"), (24, "fatal")]
LEVEL_LABELS = {"level", "LEVEL", "Level", "Severity", "severity", "SEVERITY", "lvl", "LVL", "Lvl"}
# tracing's levels as opentelemetry-appender-tracing exports them.
TRACING_SEVERITY = {"TRACE": 1, "DEBUG": 5, "INFO": 9, "WARN": 13, "ERROR": 17}


def pb_fields(buf):
    """(field number, wire type, value) of a protobuf message: ints for varint and fixed
    fields, bytes for length-delimited ones."""
    i, n = 0, len(buf)

    def varint():
        nonlocal i
        shift = value = 0
        while True:
            b = buf[i]
            i += 1
            value |= (b & 0x7F) << shift
            if b < 0x80:
                return value
            shift += 7

    while i < n:
        key = varint()
        number, wire = key >> 3, key & 7
        if wire == 0:
            yield number, wire, varint()
        elif wire == 1:
            yield number, wire, int.from_bytes(buf[i:i + 8], "little")
            i += 8
        elif wire == 2:
            size = varint()
            yield number, wire, buf[i:i + size]
            i += size
        elif wire == 5:
            yield number, wire, int.from_bytes(buf[i:i + 4], "little")
            i += 4
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")


def pb_any_value(buf):
    """An OTLP AnyValue as a Python value (None when unset)."""
    for number, _, value in pb_fields(buf):
        if number == 1:
            return value.decode()
        if number == 2:
            return bool(value)
        if number == 3:
            return value - (1 << 64) if value >= 1 << 63 else value
        if number == 4:
            return struct.unpack("<d", value.to_bytes(8, "little"))[0]
        if number == 5:
            return [pb_any_value(v) for n, _, v in pb_fields(value) if n == 1]
        if number == 6:
            return pb_key_values(v for n, _, v in pb_fields(value) if n == 1)
        if number == 7:
            return bytes(value)
    return None


def pb_key_values(bufs):
    out = {}
    for buf in bufs:
        key, value = "", None
        for number, _, v in pb_fields(buf):
            if number == 1:
                key = v.decode()
            elif number == 2:
                value = pb_any_value(v)
        out[key] = value
    return out


def pb_resource(buf):
    return pb_key_values(v for n, _, v in pb_fields(buf) if n == 1)


def pb_scope(buf):
    scope = {"name": "", "version": "", "attributes": {}}
    attrs = []
    for number, _, v in pb_fields(buf):
        if number == 1:
            scope["name"] = v.decode()
        elif number == 2:
            scope["version"] = v.decode()
        elif number == 3:
            attrs.append(v)
    scope["attributes"] = pb_key_values(attrs)
    return scope


def decode_otlp_logs(body):
    """(resource attributes, scope, record) of every record of an ExportLogsServiceRequest."""
    out = []
    for n, _, resource_logs in pb_fields(body):
        if n != 1:
            continue
        resource, scopes = {}, []
        for m, _, v in pb_fields(resource_logs):
            if m == 1:
                resource = pb_resource(v)
            elif m == 2:
                scopes.append(v)
        for scope_logs in scopes:
            scope, records = {"name": "", "version": "", "attributes": {}}, []
            for m, _, v in pb_fields(scope_logs):
                if m == 1:
                    scope = pb_scope(v)
                elif m == 2:
                    records.append(v)
            for buf in records:
                record = {"time": 0, "observed_time": 0, "severity_number": 0, "severity_text": "", "body": None,
                          "attributes": {}, "flags": 0, "trace_id": b"", "span_id": b""}
                attrs = []
                for m, _, v in pb_fields(buf):
                    if m == 1:
                        record["time"] = v
                    elif m == 11:
                        record["observed_time"] = v
                    elif m == 2:
                        record["severity_number"] = v
                    elif m == 3:
                        record["severity_text"] = v.decode()
                    elif m == 5:
                        record["body"] = pb_any_value(v)
                    elif m == 6:
                        attrs.append(v)
                    elif m == 8:
                        record["flags"] = v
                    elif m == 9:
                        record["trace_id"] = bytes(v)
                    elif m == 10:
                        record["span_id"] = bytes(v)
                record["attributes"] = pb_key_values(attrs)
                out.append((resource, scope, record))
    return out


def decode_otlp_spans(body):
    """{service, trace_id, span_id, parent_span_id, name} of every span of an
    ExportTraceServiceRequest."""
    out = []
    for n, _, resource_spans in pb_fields(body):
        if n != 1:
            continue
        service = ""
        scope_spans = []
        for m, _, v in pb_fields(resource_spans):
            if m == 1:
                service = str(pb_resource(v).get("service.name", ""))
            elif m == 2:
                scope_spans.append(v)
        for buf in scope_spans:
            for m, _, span in pb_fields(buf):
                if m != 2:
                    continue
                s = {"service": service, "trace_id": "", "span_id": "", "parent_span_id": "", "name": ""}
                for k, _, v in pb_fields(span):
                    if k in (1, 2, 4):
                        s[{1: "trace_id", 2: "span_id", 4: "parent_span_id"}[k]] = bytes(v).hex()
                    elif k == 5:
                        s["name"] = v.decode()
                out.append(s)
    return out


def otlp_as_string(value):
    """pcommon.Value.AsString, which Loki applies to attribute values and bodies."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value).removesuffix(".0") if value == int(value) else repr(value)
    if isinstance(value, bytes):
        return base64.b64encode(value).decode()
    if isinstance(value, (dict, list)):
        return json.dumps(value, separators=(",", ":"))
    return str(value)


def loki_label_name(key):
    """Prometheus' NormalizeLabel, which Loki applies to attribute names."""
    name = re.sub(r"[^A-Za-z0-9_]", "_", key)
    if name[:1].isdigit():
        name = "key_" + name
    elif name.startswith("_") and not name.startswith("__"):
        name = "key" + name
    return name


def loki_attribute_labels(key, value, prefix=""):
    name = loki_label_name(f"{prefix}_{key}" if prefix else key)
    if isinstance(value, dict):
        return [pair for k, v in value.items() for pair in loki_attribute_labels(k, v, name)]
    return [(name, otlp_as_string(value))]


def loki_entry(resource, scope, record):
    """What Loki 3.3 stores for one OTLP log record: {stream, metadata, line, ts}."""
    stream, metadata = {}, {}
    for key, value in resource.items():
        target = stream if key in LOKI_INDEX_RESOURCE_ATTRIBUTES else metadata
        target.update(loki_attribute_labels(key, value))
    if not stream.get("service_name"):
        stream["service_name"] = "unknown_service"
    for key, value in record["attributes"].items():
        metadata.update(loki_attribute_labels(key, value))
    if record["time"] and record["observed_time"]:
        metadata["observed_timestamp"] = str(record["observed_time"])
    if record["severity_number"]:
        metadata["severity_number"] = str(record["severity_number"])
    if record["severity_text"]:
        metadata["severity_text"] = record["severity_text"]
    if record["flags"]:
        metadata["flags"] = str(record["flags"])
    if any(record["trace_id"]):
        metadata["trace_id"] = record["trace_id"].hex()
    if any(record["span_id"]):
        metadata["span_id"] = record["span_id"].hex()
    for key, value in scope["attributes"].items():
        metadata.update(loki_attribute_labels(key, value))
    if scope["name"]:
        metadata["scope_name"] = scope["name"]
    if scope["version"]:
        metadata["scope_version"] = scope["version"]
    # The distributor's level discovery (discover_log_levels, on by default).
    if not (LEVEL_LABELS & (set(stream) | set(metadata))) and record["severity_number"]:
        metadata["detected_level"] = next((lvl for top, lvl in DETECTED_LEVELS if record["severity_number"] <= top),
                                          "unknown")
    return {"stream": stream, "metadata": metadata, "line": otlp_as_string(record["body"]),
            "ts": record["time"] or record["observed_time"]}


def sample_loki_entry():
    """A shop WARN record logged inside a request, as the service exports it (service-kit's
    telemetry: resource service.name, the tracing target as scope, the event's fields as
    attributes, the span's ids), mapped by Loki."""
    resource = {"service.name": "shop", "telemetry.sdk.language": "rust", "telemetry.sdk.name": "opentelemetry",
                "telemetry.sdk.version": "0.31.0"}
    scope = {"name": "shop::db", "version": "", "attributes": {}}
    record = {"time": 1, "observed_time": 2, "severity_number": TRACING_SEVERITY["WARN"], "severity_text": "WARN",
              "body": "no database connection within the timeout", "attributes": {"timeout_ms": 250},
              "flags": 1, "trace_id": bytes.fromhex(SAMPLE_TRACE_ID), "span_id": bytes.fromhex("00f067aa0ba902b7")}
    return loki_entry(resource, scope, record)


SAMPLE_TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"


class LogQLUnsupported(Exception):
    """A LogQL construct this reader does not evaluate (the dashboards must stay within it so the
    live check can run every query)."""


LOGQL_TOKEN = re.compile(r'''\s*(?:(?P<str>"(?:[^"\\]|\\.)*"|`[^`]*`)|(?P<op>\|=|\|~|!=|!~|=~|==|>=|<=|[|=<>{},()])'''
                         r'''|(?P<num>-?\d+(?:\.\d+)?[a-zA-Z]*)|(?P<id>[A-Za-z_][A-Za-z0-9_]*))''')


def logql_tokens(expr):
    tokens, i = [], 0
    while i < len(expr):
        if expr[i:].strip() == "":
            break
        m = LOGQL_TOKEN.match(expr, i)
        if not m or m.end() == i:
            raise LogQLUnsupported(f"unexpected text at offset {i}: {expr[i:i + 20]!r}")
        kind = m.lastgroup
        text = m.group(kind)
        if kind == "str":
            text = json.loads(text) if text.startswith('"') else text[1:-1]
        tokens.append((kind, text))
        i = m.end()
    return tokens


def parse_logql(expr):
    """A log query in the subset the dashboards use, as (stream matchers, stages): a selector;
    line filters (`|=`, `!=`, `|~`, `!~`); label filters (`| a="x"`, `=~`, `!=`, `!~`,
    joined by `and`, `,` or `or`, `and` first); parsers; `line_format` with `{{.name}}` only.
    Stages: ("line", op, text), ("labels", [[(name, op, value), ...], ...]) (or of ands),
    ("parser", name), ("line_format", template). Raises LogQLUnsupported otherwise."""
    tokens = logql_tokens(expr)
    pos = 0

    def peek(k=0):
        return tokens[pos + k] if pos + k < len(tokens) else (None, None)

    def take(kind=None, text=None):
        nonlocal pos
        tok = peek()
        if tok[0] is None or (kind and tok[0] != kind) or (text and tok[1] != text):
            raise LogQLUnsupported(f"expected {text or kind}, found {tok[1]!r} (token {pos})")
        pos += 1
        return tok[1]

    def matcher():
        name = take("id")
        op = take("op")
        if op not in ("=", "!=", "=~", "!~"):
            raise LogQLUnsupported(f"label filter operator {op!r} on {name} (only =, !=, =~, !~)")
        return name, op, take("str")

    take("op", "{")
    selector = [matcher()]
    while peek() == ("op", ","):
        take()
        selector.append(matcher())
    take("op", "}")
    stages = []
    while pos < len(tokens):
        kind, text = peek()
        if kind == "op" and text in ("|=", "|~", "!=", "!~"):
            take()
            stages.append(("line", text, take("str")))
            continue
        take("op", "|")
        kind, text = peek()
        if kind == "id" and text in LOGQL_PARSERS:
            take()
            if pos < len(tokens) and peek()[1] not in ("|", "|=", "|~", "!=", "!~"):
                raise LogQLUnsupported(f"arguments of | {text}")
            stages.append(("parser", text))
        elif kind == "id" and text == "line_format":
            take()
            stages.append(("line_format", take("str")))
        elif kind == "id" and peek(1)[0] == "op" and peek(1)[1] in ("=", "!=", "=~", "!~", "==", ">", "<", ">=", "<="):
            alternatives = [[matcher()]]
            while peek() in (("id", "and"), ("op", ","), ("id", "or")):
                joiner = take()
                if joiner == "or":
                    alternatives.append([matcher()])
                else:
                    alternatives[-1].append(matcher())
            stages.append(("labels", alternatives))
        else:
            raise LogQLUnsupported(f"stage | {text}")
    return selector, stages


def logql_label_filter_names(stages):
    return [name for stage in stages if stage[0] == "labels" for group in stage[1] for name, _, _ in group]


def _matches(op, value, pattern):
    if op == "=":
        return value == pattern
    if op == "!=":
        return value != pattern
    full = re.fullmatch(pattern, value) is not None
    return full if op == "=~" else not full


LINE_FORMAT_FIELD = re.compile(r"\{\{\s*\.([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")


def run_logql(expr, entries):
    """The entries a log query returns, each as (entry, labels, line after line_format)."""
    selector, stages = parse_logql(expr)
    out = []
    for entry in entries:
        if not all(_matches(op, entry["stream"].get(name, ""), value) for name, op, value in selector):
            continue
        labels = {**entry["stream"], **entry["metadata"]}
        line = entry["line"]
        kept = True
        for stage in stages:
            if stage[0] == "line":
                _, op, text = stage
                found = (text in line) if op in ("|=", "!=") else re.search(text, line) is not None
                kept = found if op in ("|=", "|~") else not found
            elif stage[0] == "labels":
                kept = any(all(_matches(op, labels.get(name, ""), value) for name, op, value in group)
                           for group in stage[1])
            elif stage[0] == "parser" and stage[1] == "json":
                try:
                    parsed = json.loads(line)
                except ValueError:
                    parsed = None
                if isinstance(parsed, dict):
                    for key, value in parsed.items():
                        labels.update(loki_attribute_labels(key, value))
                else:
                    labels["__error__"] = "JSONParserErr"
            elif stage[0] == "parser":
                raise LogQLUnsupported(f"| {stage[1]} is not evaluated here")
            elif stage[0] == "line_format":
                if re.sub(LINE_FORMAT_FIELD, "", stage[1]).count("{{"):
                    raise LogQLUnsupported(f"line_format beyond {{{{.name}}}}: {stage[1]}")
                line = LINE_FORMAT_FIELD.sub(lambda m: labels.get(m.group(1), ""), stage[1])
            if not kept:
                break
        if kept:
            out.append((entry, labels, line))
    return out


def otlp_services():
    """The services that send their logs to Loki over OTLP, by `service.name`: the ObservaStack
    scrape jobs of prometheus/prometheus.yml (those read through the observability gateway),
    named as the services name themselves (checked live against their records)."""
    doc = yaml.safe_load((PROMETHEUS / "prometheus.yml").read_text())
    return sorted(job["job_name"] for job in doc["scrape_configs"]
                  if str(job.get("metrics_path", "")).startswith("/api/services/"))


def logql_vocabulary_problems(expr, services=None):
    """Why a log query cannot work on the OTLP records in Loki (empty when it can). `services`:
    the service names a `service_name` matcher may select."""
    try:
        selector, stages = parse_logql(expr)
    except LogQLUnsupported as err:
        return [f"outside the LogQL the checks evaluate ({err})"]
    problems = []
    for name, op, value in selector:
        if name == "service_name" and services is not None and op in ("=", "=~"):
            if not any(_matches(op, service, value) for service in services):
                problems.append(f"service_name{op}\"{value}\" selects no service that sends logs to Loki "
                                f"({', '.join(services)}); containers without OTLP (PostgreSQL, the "
                                "observability stack) are only in `docker compose logs`")
    for stage in stages:
        if stage[0] == "parser":
            problems.append(f"`| {stage[1]}`: the line is the message alone, there is nothing to parse; "
                            "filter on structured metadata (`| severity_text=~\"WARN|ERROR\"`, `| trace_id=\"…\"`)")
        if stage[0] == "line" and (re.search(r"\$\{__(span|trace)\.|\b[0-9a-f]{32}\b|\"(trace_id|span_id|level)\"",
                                             stage[2])):
            problems.append(f"line filter {stage[1]} {stage[2]!r}: trace ids and levels are structured metadata, "
                            "not in the line; use `| trace_id=\"…\"` / `| severity_text=…`")
    for name in logql_label_filter_names(stages):
        if name in JSON_LINE_NAMES:
            problems.append(f"filters on `{name}`, a field of the JSON lines that Loki no longer has; "
                            f"in Loki it is {JSON_LINE_NAMES[name]}")
    return problems


def grafana_derived_field_value(field, labels):
    """The value Grafana's Loki datasource gives a derived field of type label on one entry's
    labels, twice: (Grafana 11.3, which takes the label named exactly `matcherRegex`; Grafana
    11.4+, which takes the first label whose name the regex finds). (None, None) for a regex-type
    field, which reads the line."""
    if field.get("matcherType") != "label":
        return None, None
    key = field.get("matcherRegex", "")
    exact = labels.get(key)
    found = next((k for k in labels if re.search(key, k)), None)
    return exact, (labels[found] if found else None)


def provisioned(value):
    """A string as Grafana reads it from a provisioning file (`$$` is an escaped `$`)."""
    return value.replace("$$", "$") if isinstance(value, str) else value


def tempo_logs_query(tempo, span_tags, trace_id, span_id="00f067aa0ba902b7"):
    """Tempo's trace-to-logs custom query for one span, with Grafana's span variables expanded."""
    t2l = tempo.get("jsonData", {}).get("tracesToLogsV2", {})
    query = provisioned(t2l.get("query", ""))

    def tag(m):
        key = m.group(1) or m.group(2)
        if key not in span_tags:
            raise UndefinedVariable(f"span tag {key} is not on the span")
        return str(span_tags[key])

    query = re.sub(r'\$\{__span\.tags\["([^"]+)"\]\}|\$\{__span\.tags\.([A-Za-z0-9_]+)\}', tag, query)
    query = query.replace("${__trace.traceId}", trace_id).replace("${__span.traceId}", trace_id)
    query = query.replace("${__span.spanId}", span_id)
    if "${" in query or "$__" in query:
        raise UndefinedVariable(f"unexpanded Grafana variable in {query}")
    return query


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
    datasources = load_datasources(args.datasources)
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
    # A record's trace id is structured metadata (Loki's OTLP mapping), never in the line: the
    # field must read the `trace_id` label, in the Grafana of compose (11.3, exact name) and later.
    sample = sample_loki_entry()
    sample_labels = {**sample["stream"], **sample["metadata"]}
    for field in trace_fields:
        c.check(field.get("matcherType") == "label" and field.get("matcherRegex") == "trace_id",
                f"Loki's trace_id derived field reads the trace_id structured metadata by name "
                f"(matcherType: label, matcherRegex: trace_id), not a regex over the line ({field})")
        c.check(grafana_derived_field_value(field, sample_labels) == (SAMPLE_TRACE_ID, SAMPLE_TRACE_ID),
                f"Loki's trace_id derived field yields the trace id of an OTLP record as Loki stores it "
                f"(Grafana 11.3 and 11.4+ give {grafana_derived_field_value(field, sample_labels)})")
        c.check(provisioned(field.get("url")) == "${__value.raw}",
                f"Loki's trace_id derived field opens the trace id itself in Tempo ({field.get('url')})")
    t2l = tempo.get("jsonData", {}).get("tracesToLogsV2", {})
    c.check(t2l.get("datasourceUid") == "loki", "Tempo spans link to Loki logs (tracesToLogsV2)")
    # Trace → logs: the span's service's stream, its trace's records by their trace_id metadata.
    c.check(t2l.get("customQuery") is True, "Tempo's trace-to-logs uses its own query (customQuery: true)")
    try:
        t2l_query = tempo_logs_query(tempo, {"service.name": "shop"}, SAMPLE_TRACE_ID)
        selector, stages = parse_logql(t2l_query)
        c.check(selector == [("service_name", "=", "shop")],
                f"Tempo's trace-to-logs selects the span's service by service_name ({t2l_query})")
        c.check(("labels", [[("trace_id", "=", SAMPLE_TRACE_ID)]]) in stages,
                f"Tempo's trace-to-logs filters on the trace_id structured metadata ({t2l_query})")
        problems = logql_vocabulary_problems(t2l_query)
        c.check(not problems, f"Tempo's trace-to-logs query works on OTLP records: {problems} ({t2l_query})")
        c.check([entry for entry, _, _ in run_logql(t2l_query, [sample])] == [sample],
                f"Tempo's trace-to-logs finds an OTLP record of the span's trace ({t2l_query})")
    except (LogQLUnsupported, UndefinedVariable) as err:
        c.check(False, f"Tempo's trace-to-logs query cannot be read: {err} ({t2l.get('query')})")
    c.check(tempo.get("jsonData", {}).get("tracesToMetrics", {}).get("datasourceUid") == "prometheus",
            "Tempo spans link to Prometheus metrics (tracesToMetrics)")
    c.check(not any(k in d for d in datasources.values() for k in ("secureJsonData", "basicAuthPassword", "password")),
            "no datasource ships a password or secret")

    provider = yaml.safe_load((GRAFANA / "provisioning/dashboards/dashboards.yml").read_text())
    paths = [p["options"]["path"] for p in provider["providers"]]
    c.check(paths == ["/var/lib/grafana/dashboards"], f"dashboards are provisioned from /var/lib/grafana/dashboards ({paths})")

    uids = set()
    n_dash = n_panels = n_logs = n_prom = n_logql = n_vars = 0
    services = otlp_services()
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
            try:
                problems = logql_vocabulary_problems(Variables(d).expand(expr), services)
            except UndefinedVariable:
                continue  # reported by the variable checks
            c.check(not problems, f"{where}: LogQL reads what Loki stores for OTLP records: {'; '.join(problems)} "
                                  f"({expr})")
        n_prom += len(promql_exprs(d))
        n_vars += variable_checks(c, name, d)
    c.check(n_dash >= 4, f"at least four dashboards (got {n_dash})")
    c.figures.update({"dashboards": n_dash, "panels": n_panels, "log panels": n_logs,
                      "PromQL expressions in dashboards": n_prom, "LogQL expressions": n_logql,
                      "variable references, each defined by its dashboard": n_vars})
    return c.finish()


def expanded_queries(args):
    """Prints [[where, query], ...]: every query of one datasource with its variables expanded
    (deploy/checks/logql.cjs parses the Loki ones with Grafana's grammar); for Loki, Tempo's
    trace-to-logs query too, expanded for a sample span."""
    out = []
    if args.datasource == "loki":
        try:
            out.append(["datasources.yml: Tempo tracesToLogsV2 query (for a shop span)",
                        tempo_logs_query(load_datasources(args.datasources)["tempo"], {"service.name": "shop"},
                                         SAMPLE_TRACE_ID)])
        except UndefinedVariable as err:
            print(f"FAIL: Tempo's trace-to-logs query cannot be expanded: {err}", file=sys.stderr)
            return 1
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


# --- OTLP sink: what the collector would hand Loki and Tempo ------------------------------------

def otlp_sink(args):
    """An OTLP/HTTP (protobuf) receiver on loopback for the native stack: every log record is
    written to DIR/logs.jsonl as Loki would store it ({stream, metadata, line, ts}), every span
    to DIR/spans.jsonl ({service, trace_id, span_id, parent_span_id, name}). Runs until killed."""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    lock = threading.Lock()
    files = {"/v1/logs": (out / "logs.jsonl").open("a"), "/v1/traces": (out / "spans.jsonl").open("a")}

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self):  # noqa: N802 (http.server's name)
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            status = 200
            try:
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                if "protobuf" not in self.headers.get("Content-Type", ""):
                    status = 415
                elif self.path == "/v1/logs":
                    rows = [loki_entry(*r) for r in decode_otlp_logs(body)]
                elif self.path == "/v1/traces":
                    rows = decode_otlp_spans(body)
                else:
                    status = 404
            except (ValueError, IndexError, UnicodeDecodeError) as err:
                print(f"otlp-sink: undecodable {self.path}: {err}", file=sys.stderr)
                status = 400
            if status == 200:
                with lock:
                    sink = files[self.path]
                    for row in rows:
                        sink.write(json.dumps(row, separators=(",", ":")) + "\n")
                    sink.flush()
            self.send_response(status)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *_):
            pass

    host, _, port = args.listen.rpartition(":")
    ThreadingHTTPServer((host, int(port)), Handler).serve_forever()
    return 0


def read_jsonl(path):
    """Rows of a JSON-lines file another process is appending to (a torn last line is skipped)."""
    rows = []
    if path.is_file():
        for line in path.read_text().splitlines():
            try:
                rows.append(json.loads(line))
            except ValueError:
                pass
    return rows


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

    # Loki: every log query of the dashboards (panels and annotations), run on the records the
    # services sent over OTLP, as Loki stores them (otlp-sink), must return some.
    logql = [(f"--extra-logql {e}", e) for e in args.extra_logql]
    for _, d in dashboards():
        variables = Variables(d, all_values)
        for where, expr, kind in promql_exprs(d):
            sent = variables.expand(expr)
            if kind == "variable":
                exprs.append((where, variable_query(sent)[0], True))
            else:
                # Annotations are empty unless a config change or a run happened in the last minute.
                exprs.append((where, sent, kind == "panel"))
        if args.otlp:
            logql += [(where, variables.expand(expr)) for where, expr in logql_exprs(d)]
    tempo = load_datasources()["tempo"]
    otlp = Path(args.otlp) if args.otlp else None

    def loki_state():
        """(entries, spans, [(where, query, result)], [(record, spans of its trace)])."""
        entries, spans = read_jsonl(otlp / "logs.jsonl"), read_jsonl(otlp / "spans.jsonl")
        results = []
        for where, expr in logql:
            try:
                results.append((where, expr, run_logql(expr, entries), None))
            except (LogQLUnsupported, re.error) as err:
                results.append((where, expr, [], err))
        # Errors logged inside a request (service-kit's "internal error", the bad release's 500s).
        traced = [(e, [s for s in spans if s["trace_id"] == e["metadata"].get("trace_id")
                       and s["service"] == e["stream"]["service_name"]])
                  for e in entries if e["line"] == "internal error"]
        return entries, spans, results, traced

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
        if otlp:
            _, _, results, traced = loki_state()
            pending += [where for where, _, result, err in results if not result and not err]
            if not any(spans for _, spans in traced):
                pending.append("a request's error record with its trace's spans")
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

    if otlp:
        loki_live_checks(c, args, prom, tempo, *loki_state())

    c.figures.update({
        "scrape targets up": f"{sum(t['health'] == 'up' for t in targets)}/{len(targets)}",
        "rules evaluating ok": f"{sum(r.get('health') == 'ok' for r in rules)}/{len(rules)}",
        "expressions checked (parse + run)": len(exprs),
        "alerts raised by the injected bad release": ", ".join(f"{n} {l}={v}" for n, l, v in expected_alerts) or "none asked",
        "of which must return data (recording rules, dashboard panels, variables)": n_data,
        "parse-only (alert expressions, annotations)": n_parse_only,
        "distinct metric names read, all present": len(names - recorded),
    })
    if args.out:
        Path(args.out).write_text(json.dumps(c.figures, indent=2) + "\n")
    return c.finish()


def loki_live_checks(c, args, prom, tempo, entries, spans, results, traced):
    """What the dashboards and the datasource links do with the services' real OTLP records."""
    names = {e["stream"]["service_name"] for e in entries}
    for service in args.services.split(",") if args.services else []:
        c.check(service in names, f"{service} sends log records over OTLP with service_name={service} "
                                  f"(records from: {sorted(names)})")
    ok, _, result = query(prom, "count by (service) (observastack_build_info)")
    prom_services = {r["metric"].get("service") for r in result} if ok else set()
    c.check(bool(prom_services) and prom_services <= names,
            f"every value of the dashboards' $service (Prometheus' service label) is a Loki service_name "
            f"(Prometheus: {sorted(prom_services)}, Loki: {sorted(names)})")
    for where, expr, result, err in results:
        c.check(err is None, f"{where}: LogQL the live check can run ({err}): {expr}")
        c.check(bool(result), f"{where}: returns records from the services' OTLP logs: {expr}")
    # Log → trace: the derived field, as Grafana computes it from the labels Loki returns.
    derived = load_datasources()["loki"]["jsonData"]["derivedFields"]
    field = next(f for f in derived if f.get("datasourceUid") == "tempo")
    with_trace = [e for e in entries if "trace_id" in e["metadata"]]
    wrong = [e for e in with_trace
             if grafana_derived_field_value(field, {**e["stream"], **e["metadata"]}) != (e["metadata"]["trace_id"],) * 2
             or not re.fullmatch(r"[0-9a-f]{32}", e["metadata"]["trace_id"])]
    c.check(bool(with_trace) and not wrong,
            f"the trace_id derived field yields the 32-hex trace id of every record that has one "
            f"({len(with_trace) - len(wrong)}/{len(with_trace)}; first wrong: {wrong[:1]})")
    untraced = [e for e, _ in traced if not {"trace_id", "span_id"} <= set(e["metadata"])]
    c.check(bool(traced) and not untraced,
            f"every error logged inside a request carries trace_id and span_id ({len(traced) - len(untraced)}/"
            f"{len(traced)}; first without: {untraced[:1]})")
    # Trace → logs: Tempo's query for a span of that request's trace finds that record.
    linked = [(e, s[0]) for e, s in traced if s][:5]
    c.check(bool(linked), f"spans of the traces of those errors were exported ({len(spans)} spans captured)")
    for entry, span in linked:
        try:
            t2l = tempo_logs_query(tempo, {"service.name": span["service"]}, span["trace_id"], span["span_id"])
            found = [e for e, _, _ in run_logql(t2l, entries)]
        except (UndefinedVariable, LogQLUnsupported) as err:
            c.check(False, f"Tempo's trace-to-logs query cannot run for span {span}: {err}")
            continue
        c.check(entry in found and all(e["metadata"].get("trace_id") == span["trace_id"] for e in found),
                f"Tempo's trace-to-logs for {span['service']} span {span['name']} of trace {span['trace_id']} finds "
                f"that trace's records ({len(found)}), the request's error among them: {t2l}")
    c.figures.update({
        "OTLP log records captured (as Loki stores them)": len(entries),
        "LogQL queries run on them / returning records": f"{len(results)} / {sum(bool(r) for _, _, r, _ in results)}",
        "records with trace_id, derived field correct": f"{len(with_trace) - len(wrong)}/{len(with_trace)}",
        "request errors followed from span to logs": len(linked),
    })


def main():
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="cmd", required=True)
    sp = sub.add_parser("static")
    sp.add_argument("--dashboards", help="folder of dashboards to check (default grafana/dashboards)")
    sp.add_argument("--datasources", help="datasource provisioning file (default grafana/provisioning/datasources/"
                                          "datasources.yml)")
    qp = sub.add_parser("queries")
    qp.add_argument("--datasource", required=True, help="datasource uid, e.g. loki")
    qp.add_argument("--dashboards", help="folder of dashboards (default grafana/dashboards)")
    qp.add_argument("--datasources", help="datasource provisioning file (default: the repository's)")
    lp = sub.add_parser("live")
    lp.add_argument("--prometheus", required=True)
    lp.add_argument("--otlp", help="folder an `otlp-sink` writes to: the Loki queries and links run on its records")
    lp.add_argument("--services", help="comma-separated services that must send log records over OTLP")
    lp.add_argument("--timeout", type=float, default=150)
    lp.add_argument("--min-targets", type=int, default=7)
    lp.add_argument("--out")
    lp.add_argument("--expect-alert", action="append", default=[], metavar="NAME:LABEL=VALUE",
                    help="an alert that must be pending or firing for LABEL=VALUE, and for no other value")
    lp.add_argument("--extra-expr", action="append", default=[],
                    help="an expression that must return data too (the script's self-test passes one that cannot)")
    lp.add_argument("--extra-logql", action="append", default=[],
                    help="a log query that must return records too (with --otlp; the self-test passes one that cannot)")
    op = sub.add_parser("otlp-sink")
    op.add_argument("--listen", required=True, help="HOST:PORT")
    op.add_argument("--out", required=True, help="folder for logs.jsonl and spans.jsonl")
    args = parser.parse_args()
    return {"static": static, "queries": expanded_queries, "live": live, "otlp-sink": otlp_sink}[args.cmd](args)


if __name__ == "__main__":
    sys.exit(main())
