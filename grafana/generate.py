#!/usr/bin/env python3
"""Writes the Grafana dashboards in grafana/dashboards/ from this one description.

Why generated: four dashboards share variables, datasources, log panels and layout; writing
them here keeps panel ids unique and every query in one readable place. The committed JSON is
what Grafana provisions; scripts/check-observability.sh fails when it differs from this output.

    python3 grafana/generate.py            # rewrite grafana/dashboards/*.json
    python3 grafana/generate.py --check    # exit 1 when the committed files are stale
"""

import json
import sys
from pathlib import Path

PROM = {"type": "prometheus", "uid": "prometheus"}
LOKI = {"type": "loki", "uid": "loki"}

# Loki holds what the services send over OTLP (deploy/otel-collector.yaml → Loki's /otlp): the
# stream label is `service_name` (the resource's `service.name`), the line is the message, and
# everything else is structured metadata, filtered with `| name=~"…"` right after the selector,
# no parser: `severity_text` (TRACE…ERROR, from the tracing level), `trace_id`, `span_id`,
# `scope_name` (the event's tracing target, e.g. `shop::db`, `sqlx::query`) and the event's own
# fields (`error`, `actor`, `changes`, …). The lines are not JSON: `| json` finds nothing.
WARNINGS = '| severity_text=~"WARN|ERROR"'
# Who changed what, from the fields of service-kit's "config changed" event.
CONFIG_CHANGED = ('|= "config changed" | line_format '
                  '"{{.actor}} ({{.role}}, {{.action}}) revision {{.revision}}: {{.changes}}"')
# Warnings and errors about the database: sqlx's own events (slow statements, PostgreSQL notices),
# the shop's pool and the orchestrator's store, and any error whose text names the database
# (sqlx's "error returned from database: …", "pool timed out …").
DATABASE_TROUBLE = (WARNINGS + ' | scope_name=~"sqlx::.*|shop::db|orchestrator::store"'
                    ' or error=~"(?i).*(database|pool timed out).*"')
SCHEMA_VERSION = 39
OUT = Path(__file__).resolve().parent / "dashboards"

# Services that run in the stack (every scrape job of prometheus/prometheus.yml that is ours).
SERVICE_VAR = {
    "name": "service",
    "label": "service",
    "type": "query",
    "datasource": PROM,
    "query": {"query": "label_values(observastack_build_info, service)", "refId": "service"},
    "definition": "label_values(observastack_build_info, service)",
    "includeAll": True,
    "multi": True,
    "allValue": ".*",
    "current": {"text": "All", "value": "$__all"},
    "refresh": 2,
    "sort": 1,
}
ROUTE_VAR = {
    "name": "route",
    "label": "route",
    "type": "query",
    "datasource": PROM,
    "query": {
        "query": 'label_values(service_route:http_server_requests:rate1m{service=~"$service"}, http_route)',
        "refId": "route",
    },
    "definition": 'label_values(service_route:http_server_requests:rate1m{service=~"$service"}, http_route)',
    "includeAll": True,
    "multi": True,
    "allValue": ".*",
    "current": {"text": "All", "value": "$__all"},
    "refresh": 2,
    "sort": 1,
}

# Filtered by $service: a dashboard that carries them defines SERVICE_VAR (deploy/checks/observability.py
# fails on a variable a dashboard uses without defining it).
CONFIG_ANNOTATIONS = [
    {
        "name": "Config changes",
        "datasource": PROM,
        "enable": True,
        "iconColor": "orange",
        "expr": 'changes(observastack_config_revision{service=~"$service"}[1m]) > 0',
        "step": "15s",
        "titleFormat": "config change: {{service}}",
        "textFormat": "revision changed on {{service}} (see the Config changes log panel for who and what)",
        "tagKeys": "service",
        "useValueForTime": False,
    },
    {
        "name": "Config change log lines",
        "datasource": LOKI,
        "enable": False,
        "iconColor": "yellow",
        "expr": '{service_name=~"$service"} ' + CONFIG_CHANGED,
        "titleFormat": "config changed",
        "tagKeys": "service_name",
    },
]


RUN_ANNOTATIONS = [
    {
        "name": "Scenario runs",
        "datasource": PROM,
        "enable": True,
        "iconColor": "purple",
        "expr": 'sum by (outcome) (changes(orchestrator_runs_total[1m])) > 0',
        "step": "15s",
        "titleFormat": "run {{outcome}}",
        "textFormat": "a scenario run was {{outcome}}",
        "tagKeys": "outcome",
        "useValueForTime": False,
    },
]


class Dashboard:
    def __init__(self, uid, title, description, tags, variables, annotations=()):
        self.uid, self.title, self.description, self.tags = uid, title, description, tags
        self.variables = variables
        self.annotations = list(annotations)
        self.panels = []
        self.x = self.y = self.row_h = 0

    def _place(self, w, h):
        if self.x + w > 24:
            self.x, self.y = 0, self.y + self.row_h
            self.row_h = 0
        pos = {"x": self.x, "y": self.y, "w": w, "h": h}
        self.x += w
        self.row_h = max(self.row_h, h)
        return pos

    def row(self, title):
        if self.x:
            self.x, self.y, self.row_h = 0, self.y + self.row_h, 0
        self.panels.append({"type": "row", "title": title, "collapsed": False, "panels": [],
                            "gridPos": {"x": 0, "y": self.y, "w": 24, "h": 1}})
        self.y += 1

    def metric(self, title, targets, unit="short", w=8, h=8, kind="timeseries", description="", exemplar=False):
        """A Prometheus panel; each target is (expr, legend)."""
        panel = {
            "type": kind,
            "title": title,
            "description": description,
            "datasource": PROM,
            "gridPos": self._place(w, h),
            "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
            "options": {"legend": {"displayMode": "list", "placement": "bottom", "showLegend": True},
                        "tooltip": {"mode": "multi", "sort": "desc"}} if kind == "timeseries" else
                       {"reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
                        "colorMode": "value", "graphMode": "area", "textMode": "auto"},
            "targets": [
                {"datasource": PROM, "refId": chr(ord("A") + i), "expr": expr, "legendFormat": legend,
                 "range": True, "instant": False, "exemplar": exemplar}
                for i, (expr, legend) in enumerate(targets)
            ],
        }
        self.panels.append(panel)

    def logs(self, title, expr, w=24, h=10, description=""):
        """A Loki log panel; a line's `trace_id` (structured metadata) links to Tempo through
        the Loki datasource's derived field."""
        self.panels.append({
            "type": "logs",
            "title": title,
            "description": description,
            "datasource": LOKI,
            "gridPos": self._place(w, h),
            "options": {"showTime": True, "wrapLogMessage": True, "prettifyLogMessage": False,
                        "enableLogDetails": True, "dedupStrategy": "none", "sortOrder": "Descending"},
            "targets": [{"datasource": LOKI, "refId": "A", "expr": expr, "queryType": "range"}],
        })

    def to_json(self):
        for i, panel in enumerate(self.panels, start=1):
            panel["id"] = i
        return {
            "uid": self.uid,
            "title": self.title,
            "description": self.description,
            "tags": ["observastack", *self.tags],
            "schemaVersion": SCHEMA_VERSION,
            "version": 1,
            "editable": False,
            "graphTooltip": 1,
            "time": {"from": "now-30m", "to": "now"},
            "refresh": "10s",
            "timezone": "utc",
            "templating": {"list": self.variables},
            "annotations": {"list": [
                {"builtIn": 1, "datasource": {"type": "grafana", "uid": "-- Grafana --"}, "enable": True,
                 "hide": True, "iconColor": "rgba(0, 211, 255, 1)", "name": "Annotations & Alerts",
                 "type": "dashboard"},
                *self.annotations,
            ]},
            "links": [{"type": "dashboards", "tags": ["observastack"], "asDropdown": True,
                       "title": "ObservaStack", "includeVars": True, "keepTime": True}],
            "panels": self.panels,
        }


def service_overview():
    d = Dashboard("observastack-service-overview", "Service Overview",
                  "RED per service and route (traffic, errors, latency). Orange marks are config changes.",
                  ["red"], [SERVICE_VAR, ROUTE_VAR], CONFIG_ANNOTATIONS + RUN_ANNOTATIONS)
    d.row("Per service")
    d.metric("Requests per second", [('service:http_server_requests:rate1m{service=~"$service"}', "{{service}}")],
             unit="reqps")
    d.metric("Error ratio (5xx)", [('service:http_server_error_ratio:rate1m{service=~"$service"}', "{{service}}")],
             unit="percentunit")
    d.metric("Latency p95", [('service:http_server_request_duration_seconds:p95_1m{service=~"$service"}',
                              "{{service}}")], unit="s", exemplar=True)
    d.row("Per route (group by path template)")
    route = '{service=~"$service", http_route=~"$route"}'
    d.metric("Requests per second by route",
             [(f"service_route:http_server_requests:rate1m{route}", "{{service}} {{http_route}}")], unit="reqps")
    d.metric("Error ratio by route",
             [(f"service_route:http_server_error_ratio:rate1m{route}", "{{service}} {{http_route}}")],
             unit="percentunit")
    d.metric("Latency p50 / p95 by route",
             [(f"service_route:http_server_request_duration_seconds:p95_1m{route}", "p95 {{service}} {{http_route}}"),
              (f"service_route:http_server_request_duration_seconds:p50_1m{route}", "p50 {{service}} {{http_route}}")],
             unit="s", exemplar=True)
    d.metric("Responses by status code",
             [('sum by (service, http_response_status_code) (rate(http_server_request_duration_seconds_count'
               '{service=~"$service", http_route=~"$route"}[$__rate_interval]))',
               "{{service}} {{http_response_status_code}}")], unit="reqps", w=12)
    d.metric("Config revision", [('observastack_config_revision{service=~"$service"}', "{{service}}")],
             kind="stat", w=6)
    d.metric("Build", [('observastack_build_info{service=~"$service"}', "{{service}} {{version}}")],
             kind="stat", w=6)
    d.row("Logs")
    d.logs("Warnings and errors", '{service_name=~"$service"} ' + WARNINGS, w=12,
           description="Open a line: its trace_id links to the trace in Tempo.")
    d.logs("Config changes (who, when, old → new)", '{service_name=~"$service"} ' + CONFIG_CHANGED, w=12)
    return d


def gateway_pools():
    d = Dashboard("observastack-gateway-pools", "Gateway & Pools",
                  "Upstream pools of the gateways, the shop's worker pool and its database pool.",
                  ["saturation"], [SERVICE_VAR], CONFIG_ANNOTATIONS)
    d.row("Gateway upstream pools")
    d.metric("Upstream pool in use / size",
             [('gateway_upstream_pool_in_use{service=~"$service"}', "in use {{service}}"),
              ('gateway_upstream_pool_size{service=~"$service"}', "size {{service}}")])
    d.metric("Upstream pool waiting", [('gateway_upstream_pool_waiting{service=~"$service"}', "{{service}}")])
    d.metric("Upstream pool wait p95",
             [('gateway:upstream_pool_wait_seconds:p95_1m{service=~"$service"}', "{{service}}")], unit="s")
    d.metric("Upstream requests by outcome",
             [('gateway_upstream:requests:rate1m{service=~"$service"}', "{{service}} → {{upstream}} {{outcome}}")],
             unit="reqps", w=12)
    d.metric("Upstream pool utilisation",
             [('gateway:upstream_pool_utilisation:ratio{service=~"$service"}', "{{service}}")],
             unit="percentunit", w=12)
    d.row("Shop worker pool")
    d.metric("Workers in flight / queued / limit",
             [("shop_worker_pool_in_flight", "in flight"), ("shop_worker_pool_queued", "queued"),
              ("shop_worker_pool_limit", "limit")])
    d.metric("Queue wait p95", [("shop:worker_pool_queue_wait_seconds:p95_1m", "p95")], unit="s")
    d.metric("Rejected (503) by reason",
             [("sum by (reason) (rate(shop_worker_pool_rejected_total[$__rate_interval]))", "{{reason}}")],
             unit="reqps")
    d.row("Shop database pool")
    d.metric("Connections in use / size / waiting",
             [("shop_db_pool_in_use", "in use"), ("shop_db_pool_size", "size"), ("shop_db_pool_waiting", "waiting")])
    d.metric("Acquire p95", [("shop:db_pool_acquire_duration_seconds:p95_1m", "p95")], unit="s")
    d.metric("CPU per service", [('service:process_cpu_seconds:rate1m{service=~"$service"}', "{{service}}")],
             unit="percentunit")
    d.row("Logs")
    d.logs("Gateway and shop warnings", '{service_name=~"gateway-.*|shop"} ' + WARNINGS)
    return d


def database():
    d = Dashboard("observastack-database", "Database",
                  "The shop on PostgreSQL: pool, acquire waits, query mix, orders; the services' database "
                  "warnings and errors.",
                  ["database"], [SERVICE_VAR], CONFIG_ANNOTATIONS)
    d.metric("DB pool utilisation", [("shop:db_pool_utilisation:ratio", "in use / size")], unit="percentunit")
    d.metric("Acquire p95", [("shop:db_pool_acquire_duration_seconds:p95_1m", "p95")], unit="s")
    d.metric("Acquire timeouts", [("rate(shop_db_pool_acquire_timeouts_total[$__rate_interval])", "timeouts")],
             unit="ops")
    d.metric("Searches by strategy",
             [("sum by (strategy) (rate(shop_search_queries_total[$__rate_interval]))", "{{strategy}}")], unit="ops",
             description="full_scan is the unindexed search path of the database-bottleneck scenario.")
    d.metric("Orders created", [("rate(shop_orders_created_total[$__rate_interval])", "orders/s")], unit="ops")
    d.metric("Checkout failures by reason",
             [("sum by (reason) (rate(shop_checkout_failures_total[$__rate_interval]))", "{{reason}}")], unit="ops")
    d.metric("Pricing CPU by algorithm", [("shop:pricing_cpu_seconds:rate1m", "{{algorithm}}")],
             unit="percentunit", w=12)
    d.metric("Shop request latency p95 by route",
             [('service_route:http_server_request_duration_seconds:p95_1m{service="shop"}', "{{http_route}}")],
             unit="s", w=12, exemplar=True)
    d.logs("Database warnings and errors (shop, orchestrator)",
           '{service_name=~"shop|orchestrator"} ' + DATABASE_TROUBLE, w=12,
           description="What the shop and the orchestrator log about PostgreSQL: sqlx's own warnings (slow "
                       "statements, PostgreSQL notices), pool timeouts, failed queries. PostgreSQL's own log "
                       "does not reach Loki: see `docker compose logs postgres`.")
    d.logs("Shop warnings and errors", '{service_name="shop"} ' + WARNINGS, w=12)
    return d


def scenario():
    d = Dashboard("observastack-scenario", "Scenario",
                  "The current run as users feel it: the scenario runner's journeys (coordinated omission "
                  "corrected), orders, and the orchestrator's run state.", ["scenario"], [SERVICE_VAR],
                  CONFIG_ANNOTATIONS + RUN_ANNOTATIONS)
    d.metric("Run active", [("orchestrator_active_run", "active")], kind="stat", w=6, h=5)
    d.metric("Journey success", [("runner:journey_success:ratio1m", "success")], unit="percentunit", kind="stat",
             w=6, h=5)
    d.metric("Orders per minute", [("runner:orders:rate1m * 60", "orders/min")], kind="stat", w=6, h=5)
    d.metric("Offered load", [("runner_offered_rate", "journeys/s")], unit="reqps", kind="stat", w=6, h=5)
    d.metric("Journeys by outcome", [("runner_journey:journeys:rate1m", "{{journey}} {{outcome}}")], unit="reqps",
             w=12)
    d.metric("Journey latency p95", [("runner_journey:journey_duration_seconds:p95_1m", "{{journey}}")], unit="s",
             w=12)
    d.metric("In flight / dropped",
             [("runner_in_flight_journeys", "in flight"),
              ("sum(rate(runner_dropped_journeys_total[$__rate_interval]))", "dropped/s")], w=12)
    d.metric("Runs by outcome", [("orchestrator_runs_total", "{{outcome}}")], kind="stat", w=12)
    d.logs("Orchestrator (state changes, hints, faults applied)", '{service_name="orchestrator"}', w=12)
    d.logs("Runner", '{service_name="runner"}', w=12)
    return d


DASHBOARDS = [service_overview, gateway_pools, database, scenario]


def render():
    return {f"{d.uid.removeprefix('observastack-')}.json": json.dumps(d.to_json(), indent=2, ensure_ascii=False) + "\n"
            for d in (make() for make in DASHBOARDS)}


def main():
    files = render()
    if "--check" in sys.argv:
        stale = [name for name, text in files.items()
                 if not (OUT / name).is_file() or (OUT / name).read_text(encoding="utf-8") != text]
        extra = sorted(p.name for p in OUT.glob("*.json") if p.name not in files)
        if stale or extra:
            print(f"stale dashboards: {stale} extra: {extra}; run python3 grafana/generate.py", file=sys.stderr)
            return 1
        return 0
    OUT.mkdir(exist_ok=True)
    for name, text in files.items():
        (OUT / name).write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
