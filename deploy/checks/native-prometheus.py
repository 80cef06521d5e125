#!/usr/bin/env python3
"""Writes a native variant of prometheus/prometheus.yml: the same service jobs, scraped through
the native observability gateway on loopback, plus Prometheus itself; the compose-only jobs of
the observability stack (collector, Loki, Tempo, Grafana) are left out, and so is a service the
native gateway does not front (reported on stderr).

    native-prometheus.py --gateway 127.0.0.1:8482 --self 127.0.0.1:9490 --rules DIR --services a,b,c > prometheus.yml
"""

import argparse
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_GATEWAY = "gateway-observability:8082"
COMPOSE_ONLY = {"otel-collector", "loki", "tempo", "grafana"}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--gateway", required=True, help="host:port of the native observability gateway")
    parser.add_argument("--self", required=True, help="host:port this Prometheus listens on")
    parser.add_argument("--rules", required=True, help="directory holding the rule files")
    parser.add_argument("--services", required=True, help="comma-separated services the gateway fronts")
    args = parser.parse_args()
    fronted = set(args.services.split(","))
    config = yaml.safe_load((ROOT / "prometheus/prometheus.yml").read_text())
    config["rule_files"] = [f"{args.rules}/*.yml"]
    jobs = []
    for job in config["scrape_configs"]:
        name = job["job_name"]
        static = job["static_configs"]
        targets = [t for s in static for t in s["targets"]]
        if targets == [COMPOSE_GATEWAY]:
            if name not in fronted:
                print(f"native check: skipping job {name} (the native stack does not run it)", file=sys.stderr)
                continue
            for s in static:
                s["targets"] = [args.gateway]
        elif name == "prometheus":
            for s in static:
                s["targets"] = [args.self]
        elif name in COMPOSE_ONLY:
            continue
        else:
            sys.exit(f"job {name}: unknown target {targets}; teach native-prometheus.py about it")
        jobs.append(job)
    config["scrape_configs"] = jobs
    yaml.safe_dump(config, sys.stdout, sort_keys=False)


if __name__ == "__main__":
    main()
