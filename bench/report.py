#!/usr/bin/env python3
"""Summarises one run of scripts/bench-gateway.sh.

Reads the raw tool outputs the script left in a results directory:
  meta.env                          key=value facts about the run (machine, versions, VmRSS)
  r<round>-<target>-<kind>.out      wrk output (with the WRKJSON line of bench/wrk-report.lua)
                                    or oha's JSON
  r<round>-<target>-<kind>.cpu      proxy_ticks=… shop_ticks=… (utime+stime during that run),
                                    machine_busy_ticks=… (all CPUs, /proc/stat), loadgen_s=…
and prints the table, the ratios and PASS/MISS per target, and writes the same figures as JSON.

Figures per target and load are medians over the rounds; ratios are ratios of those medians.
Standard library only.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
from pathlib import Path

TARGETS = ("direct", "nginx", "gateway")
KINDS = ("wrk1", "wrk2", "oha")

# Targets of the foundation issue.
THROUGHPUT_MIN = 1.0  # gateway req/s ≥ 1.0 × nginx req/s
CPU_PER_REQ_MAX = 1.25  # gateway CPU s/req ≤ 1.25 × nginx (master + workers)
ADDED_P99_MAX = 1.3  # (p99 gateway − p99 direct) ≤ 1.3 × (p99 nginx − p99 direct)
IDLE_RSS_MAX_MB = 30.0  # shop and gateway VmRSS when idle


def read_meta(path: Path) -> dict[str, str]:
    meta: dict[str, str] = {}
    for line in path.read_text().splitlines():
        if "=" in line:
            k, v = line.split("=", 1)
            meta[k.strip()] = v.strip()
    return meta


def read_cpu(path: Path) -> dict[str, float]:
    out: dict[str, float] = {}
    for part in path.read_text().split():
        k, v = part.split("=", 1)
        if k.endswith("_ticks"):
            out[k] = int(v)
        elif k.endswith("_s"):
            out[k] = float(v)
    return out


def parse_wrk(text: str) -> dict:
    m = re.search(r"^WRKJSON (\{.*\})\s*$", text, re.M)
    if not m:
        raise ValueError("no WRKJSON line in wrk output:\n" + text[-500:])
    raw = json.loads(m.group(1))
    errs = raw["errors"]
    non2xx = errs["status"]  # wrk counts every response with a status above 399 here
    seconds = raw["duration_us"] / 1e6
    return {
        "requests": raw["requests"],
        "seconds": seconds,
        "rps": raw["requests"] / seconds if seconds > 0 else 0.0,
        "p50_ms": raw["latency_us"]["p50"] / 1000,
        "p99_ms": raw["latency_us"]["p99"] / 1000,
        "max_ms": raw["latency_us"]["max"] / 1000,
        "non_2xx": non2xx,
        "socket_errors": errs["connect"] + errs["read"] + errs["write"] + errs["timeout"],
        "errors_detail": errs,
    }


def parse_oha(text: str) -> dict:
    raw = json.loads(text)
    summary = raw["summary"]
    pct = raw["latencyPercentiles"]
    codes = {str(k): int(v) for k, v in (raw.get("statusCodeDistribution") or {}).items()}
    errors = {str(k): int(v) for k, v in (raw.get("errorDistribution") or {}).items()}
    responses = sum(codes.values())
    seconds = float(summary.get("total") or 0.0)
    non2xx = sum(v for k, v in codes.items() if not k.startswith("2"))
    # A request still in flight at the deadline is cancelled by oha unless it waits for it;
    # that is the load generator stopping, not a failure of the target.
    deadline = sum(v for k, v in errors.items() if "deadline" in k.lower())
    return {
        "requests": responses,
        "seconds": seconds,
        "rps": responses / seconds if seconds > 0 else 0.0,
        "p50_ms": float(pct["p50"]) * 1000 if pct.get("p50") is not None else None,
        "p99_ms": float(pct["p99"]) * 1000 if pct.get("p99") is not None else None,
        "max_ms": float(summary["slowest"]) * 1000 if summary.get("slowest") is not None else None,
        "non_2xx": non2xx,
        "socket_errors": sum(errors.values()) - deadline,
        "aborted_at_deadline": deadline,
        "status_codes": codes,
        "errors_detail": errors,
    }


def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def ratio(a, b):
    if a is None or b is None or b == 0:
        return None
    return a / b


def fmt(v, spec=".1f", none="n/a"):
    return none if v is None else format(v, spec)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--results", required=True, type=Path)
    ap.add_argument("--json", required=True, type=Path)
    args = ap.parse_args()

    meta = read_meta(args.results / "meta.env")
    clk = int(meta.get("clk_tck", "100"))
    ncpu = int(meta.get("nproc", "1") or 1)
    rounds = int(meta.get("rounds", "3"))

    runs: list[dict] = []
    for rnd in range(1, rounds + 1):
        for target in TARGETS:
            for kind in KINDS:
                base = args.results / f"r{rnd}-{target}-{kind}"
                text = (base.with_suffix(".out")).read_text()
                rec = parse_oha(text) if kind == "oha" else parse_wrk(text)
                cpu = read_cpu(base.with_suffix(".cpu"))
                proxy_s = cpu["proxy_ticks"] / clk
                shop_s = cpu["shop_ticks"] / clk
                busy_s = cpu["machine_busy_ticks"] / clk
                loadgen_s = cpu["loadgen_s"]
                wall = rec["seconds"] or float(meta.get("duration_s", "10"))
                # CPU that none of ours (proxy, shop, load generator) used during the run: other
                # work on the machine disturbing the figures.
                other_s = max(0.0, busy_s - proxy_s - shop_s - loadgen_s)
                n = rec["requests"]
                rec.update(
                    round=rnd,
                    target=target,
                    kind=kind,
                    proxy_cpu_s=proxy_s if target != "direct" else None,
                    shop_cpu_s=shop_s,
                    proxy_cpu_us_per_req=(proxy_s / n * 1e6) if target != "direct" and n else None,
                    shop_cpu_us_per_req=(shop_s / n * 1e6) if n else None,
                    loadgen_cpu_s=loadgen_s,
                    loadgen_cpu_us_per_req=(loadgen_s / n * 1e6) if n else None,
                    machine_busy_pct=100 * busy_s / (ncpu * wall),
                    other_cpu_pct=100 * other_s / (ncpu * wall),
                )
                runs.append(rec)

    def med(target, kind, field):
        return median([r[field] for r in runs if r["target"] == target and r["kind"] == kind])

    def total(target, kind, field):
        return sum(r[field] for r in runs if r["target"] == target and r["kind"] == kind)

    medians: dict = {}
    for kind in KINDS:
        medians[kind] = {}
        for t in TARGETS:
            medians[kind][t] = {
                f: med(t, kind, f)
                for f in (
                    "rps",
                    "p50_ms",
                    "p99_ms",
                    "proxy_cpu_us_per_req",
                    "shop_cpu_us_per_req",
                    "loadgen_cpu_us_per_req",
                    "machine_busy_pct",
                    "other_cpu_pct",
                )
            }
            medians[kind][t]["non_2xx_total"] = total(t, kind, "non_2xx")
            medians[kind][t]["socket_errors_total"] = total(t, kind, "socket_errors")
            medians[kind][t]["requests_total"] = total(t, kind, "requests")

    mb = lambda key: int(meta[key]) / 1024 if meta.get(key) else None  # noqa: E731
    rss = {
        "shop_start_mb": mb("rss_shop_kb_start"),
        "gateway_start_mb": mb("rss_gateway_kb_start"),
        "nginx_start_mb": mb("rss_nginx_kb_start"),
        "shop_end_mb": mb("rss_shop_kb_end"),
        "gateway_end_mb": mb("rss_gateway_kb_end"),
        "nginx_end_mb": mb("rss_nginx_kb_end"),
    }

    # ---- targets --------------------------------------------------------------------------
    checks: list[dict] = []

    def check(name, value, limit, ok, detail, primary=True):
        checks.append(
            {
                "name": name,
                "value": value,
                "limit": limit,
                "verdict": None if ok is None else ("PASS" if ok else "MISS"),
                "detail": detail,
                "primary": primary,
            }
        )

    for kind, label, primary in (("wrk1", "wrk -t1", True), ("wrk2", "wrk -t2", False)):
        g, n = medians[kind]["gateway"], medians[kind]["nginx"]
        r = ratio(g["rps"], n["rps"])
        check(
            f"throughput gateway/nginx ({label})",
            r,
            f">= {THROUGHPUT_MIN:.2f}x",
            None if r is None else r >= THROUGHPUT_MIN,
            f"{fmt(g['rps'], '.0f')} vs {fmt(n['rps'], '.0f')} req/s",
            primary,
        )
        r = ratio(g["proxy_cpu_us_per_req"], n["proxy_cpu_us_per_req"])
        check(
            f"CPU per request gateway/nginx ({label})",
            r,
            f"<= {CPU_PER_REQ_MAX:.2f}x",
            None if r is None else r <= CPU_PER_REQ_MAX,
            f"{fmt(g['proxy_cpu_us_per_req'], '.2f')} vs {fmt(n['proxy_cpu_us_per_req'], '.2f')} µs CPU/req",
            primary,
        )

    o = medians["oha"]
    added_g = None if o["gateway"]["p99_ms"] is None else o["gateway"]["p99_ms"] - o["direct"]["p99_ms"]
    added_n = None if o["nginx"]["p99_ms"] is None else o["nginx"]["p99_ms"] - o["direct"]["p99_ms"]
    if added_g is None or added_n is None:
        r, ok, note = None, None, "missing p99"
    elif added_n <= 0:
        # nginx added nothing measurable: a ratio is meaningless; the gateway passes only if it
        # added nothing either.
        r, ok, note = None, added_g <= 0, "nginx added p99 <= 0, ratio undefined"
    else:
        r, ok, note = added_g / added_n, added_g / added_n <= ADDED_P99_MAX, ""
    check(
        f"added p99 over direct gateway/nginx (oha {meta.get('rate', '?')} req/s)",
        r,
        f"<= {ADDED_P99_MAX:.2f}x",
        ok,
        f"+{fmt(added_g, '.3f')} vs +{fmt(added_n, '.3f')} ms" + (f"; {note}" if note else ""),
    )
    r = ratio(o["gateway"]["proxy_cpu_us_per_req"], o["nginx"]["proxy_cpu_us_per_req"])
    check(
        f"CPU per request gateway/nginx (oha {meta.get('rate', '?')} req/s)",
        r,
        f"<= {CPU_PER_REQ_MAX:.2f}x",
        None if r is None else r <= CPU_PER_REQ_MAX,
        f"{fmt(o['gateway']['proxy_cpu_us_per_req'], '.2f')} vs {fmt(o['nginx']['proxy_cpu_us_per_req'], '.2f')} µs CPU/req",
        False,
    )
    for svc in ("shop", "gateway"):
        for phase, label in (("start", "after startup"), ("end", "after the runs")):
            v = rss[f"{svc}_{phase}_mb"]
            check(
                f"idle VmRSS {svc} ({label})",
                v,
                f"< {IDLE_RSS_MAX_MB:.0f} MB",
                None if v is None else v < IDLE_RSS_MAX_MB,
                f"{fmt(v, '.1f')} MB",
            )

    # ---- print ----------------------------------------------------------------------------
    out = sys.stdout
    w = out.write
    w("\n")
    w("ObservaStack proxy benchmark: user gateway vs nginx, upstream shop GET "
      f"{meta.get('route', '/api/ping')}\n")
    w(f"  {meta.get('date', '?')}  host {meta.get('host', '?')}: {meta.get('nproc', '?')} cores, "
      f"{meta.get('cpu_model', '?')}, kernel {meta.get('kernel', '?')}\n")
    w(f"  git {meta.get('git_rev', '?')}; nginx {meta.get('nginx_version', '?')} "
      f"({meta.get('nginx_workers', '?')} workers), gateway threads {meta.get('gateway_threads', '?')} "
      f"({meta.get('gateway_threads_os', '?')} OS threads), wrk {meta.get('wrk_version', '?')}, "
      f"{meta.get('oha_version', '?')}\n")
    w(f"  {rounds} interleaved rounds, {meta.get('duration_s', '?')} s per run, "
      f"{meta.get('connections', '?')} keep-alive connections; medians over rounds.\n")
    w("  Load generator, proxy and shop share the same cores: absolute figures are this box's, "
      "the ratios are the point.\n")
    w("  µs/req = CPU time per request (user+system); busy % = whole machine's CPU use during the run; "
      "other % = CPU used by processes that are not part of the bench.\n")

    for kind, title in (
        ("wrk1", f"Max throughput, wrk -t1 -c{meta.get('connections', '?')} -d{meta.get('duration_s', '?')}s"),
        ("wrk2", f"Max throughput, wrk -t2 -c{meta.get('connections', '?')} -d{meta.get('duration_s', '?')}s"),
        ("oha", f"Fixed rate {meta.get('rate', '?')} req/s, oha -c{meta.get('connections', '?')} "
                f"-z{meta.get('duration_s', '?')}s --latency-correction"),
    ):
        w(f"\n{title}\n")
        w(f"  {'target':<8} {'req/s':>8} {'p50 ms':>7} {'p99 ms':>8} {'+p99 ms':>8} "
          f"{'proxy µs/req':>12} {'shop µs/req':>11} {'loadgen µs/req':>14} {'busy %':>6} {'other %':>7} "
          f"{'non-2xx':>7} {'sock err':>8}\n")
        base_p99 = medians[kind]["direct"]["p99_ms"]
        for t in TARGETS:
            m = medians[kind][t]
            added = None if t == "direct" or m["p99_ms"] is None or base_p99 is None else m["p99_ms"] - base_p99
            w(f"  {t:<8} {fmt(m['rps'], '.0f'):>8} {fmt(m['p50_ms'], '.3f'):>7} {fmt(m['p99_ms'], '.3f'):>8} "
              f"{fmt(added, '+.3f', '-'):>8} {fmt(m['proxy_cpu_us_per_req'], '.2f', '-'):>12} "
              f"{fmt(m['shop_cpu_us_per_req'], '.2f'):>11} {fmt(m['loadgen_cpu_us_per_req'], '.2f'):>14} "
              f"{fmt(m['machine_busy_pct'], '.0f'):>6} {fmt(m['other_cpu_pct'], '.1f'):>7} "
              f"{m['non_2xx_total']:>7} {m['socket_errors_total']:>8}\n")

    w("\nIdle resident memory (VmRSS)\n")
    w(f"  {'process':<26} {'after startup':>14} {'after runs':>11}\n")
    for svc, label in (("shop", "shop"), ("gateway", "gateway (user)"), ("nginx", "nginx master+workers (info)")):
        w(f"  {label:<26} {fmt(rss[svc + '_start_mb'], '.1f'):>11} MB {fmt(rss[svc + '_end_mb'], '.1f'):>8} MB\n")

    w("\nTargets (gateway vs nginx; PASS/MISS is reported, not enforced)\n")
    for c in checks:
        v = c["value"]
        if c["name"].startswith("idle"):
            shown = fmt(v, ".1f") + " MB"
        else:
            shown = fmt(v, ".2f") + "x" if v is not None else "n/a"
        verdict = c["verdict"] or "n/a"
        tag = "" if c["primary"] else "  (secondary)"
        w(f"  {verdict:<4}  {c['name']:<58} {shown:>9}  target {c['limit']:<9} {c['detail']}{tag}\n")

    notes = []
    if int(meta.get("busy_before_pct", "0") or 0) > 10:
        notes.append(f"the machine was {meta['busy_before_pct']}% busy before the bench started "
                     "(other work running): figures disturbed")
    for kind in KINDS:
        for t in TARGETS:
            m = medians[kind][t]
            if m["non_2xx_total"] or m["socket_errors_total"]:
                notes.append(f"{kind} → {t}: {m['non_2xx_total']} non-2xx, {m['socket_errors_total']} socket errors")
    for r in runs:
        if r["other_cpu_pct"] > 5:
            notes.append(f"{r['kind']} round {r['round']} → {r['target']}: other processes used "
                         f"{r['other_cpu_pct']:.0f}% of the machine's CPU during the run (figures disturbed)")
        if r["kind"] == "oha" and r["seconds"]:
            rate = float(meta.get("rate", "0") or 0)
            if rate and r["rps"] < 0.95 * rate:
                notes.append(f"oha round {r['round']} → {r['target']}: achieved {r['rps']:.0f} req/s, "
                             f"below the offered {rate:.0f} (target or load generator saturated)")
    if notes:
        w("\nNotes\n")
        for n in notes:
            w(f"  ! {n}\n")
    w(f"\nJSON: {args.json}\n")

    result = {
        "meta": meta,
        "medians": medians,
        "idle_rss_mb": rss,
        "added_p99_ms": {"gateway": added_g, "nginx": added_n},
        "checks": checks,
        "notes": notes,
        "runs": runs,
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
