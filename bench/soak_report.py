"""The soak run's verdict (is memory flat, do errors grow?) and its table, from its samples."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from typing import Any

from .harness import table

PARTS = ("api", "worker", "worker-interactive", "beat", "watcher", "vllm", "redis", "postgres")
SHORT = ("api", "wrk", "wrk-i", "beat", "watch", "vllm", "redis", "pg")
# a part grows if its last-third median RSS exceeds its first-third median by more than both:
# small absolute drifts (allocator arenas, Postgres touching more shared buffers) are not leaks
GROWTH_MB = 25.0
GROWTH_SHARE = 0.05
ERROR_RATE_SLACK = 0.01  # the last third's error rate may exceed the first's by 1 point


def _thirds(samples: Sequence[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The first and last thirds of the samples taken under load (the t=0 one is before it)."""
    loaded = list(samples[1:]) or list(samples)
    k = max(1, len(loaded) // 3)
    return loaded[:k], loaded[-k:]


def _trend(first: list[float], last: list[float], minutes: float) -> dict[str, Any]:
    a, b = statistics.median(first), statistics.median(last)
    return {
        "first_mb": round(a, 1),
        "last_mb": round(b, 1),
        "slope_mb_per_min": round((b - a) / minutes, 2) if minutes > 0 else 0.0,
        "growing": b - a > max(GROWTH_MB, GROWTH_SHARE * a),
    }


def _errors(part: list[dict[str, Any]]) -> dict[str, Any]:
    reqs = sum(k["requests"] for s in part for k in s["requests"].values())
    errs = sum(k["errors"] for s in part for k in s["requests"].values())
    return {"requests": reqs, "errors": errs, "rate": round(errs / reqs, 4) if reqs else 0.0}


def total_rss(sample: dict[str, Any]) -> float:
    return float(sum(p["rss_mb"] for p in sample["rss_mb"].values()))


def verdict(samples: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Memory: each part's median RSS over the first third of the samples against the last
    third's, as MB/min between the thirds' median times. Errors: the thirds' error rates."""
    first, last = _thirds(samples)
    minutes = (statistics.median(s["t_s"] for s in last) - statistics.median(
        s["t_s"] for s in first)) / 60  # fmt: skip
    memory = {}
    for name in PARTS:
        a = [s["rss_mb"][name]["rss_mb"] for s in first if name in s["rss_mb"]]
        b = [s["rss_mb"][name]["rss_mb"] for s in last if name in s["rss_mb"]]
        if a and b:
            memory[name] = _trend(a, b, minutes)
    total = _trend([total_rss(s) for s in first], [total_rss(s) for s in last], minutes)
    errors = {"first_third": _errors(first), "last_third": _errors(last)}
    errors["growing"] = errors["last_third"]["rate"] > (
        errors["first_third"]["rate"] + ERROR_RATE_SLACK
    )
    memory_flat = not total["growing"] and not any(m["growing"] for m in memory.values())
    return {
        "samples_per_third": len(first),
        "minutes_between_thirds": round(minutes, 2),
        "memory": memory,
        "total": total,
        "errors": errors,
        "memory_flat": memory_flat,
        "errors_flat": not errors["growing"],
        "ok": memory_flat and not errors["growing"],
    }


def _kind(s: dict[str, Any], kind: str) -> list[str]:
    k = s["requests"][kind]
    return [f"{k['requests']}/{k['errors']}", f"{k['p50_ms']:.0f}/{k['p95_ms']:.0f}"]


def render(result: dict[str, Any]) -> str:
    samples, v, m = result["samples"], result["verdict"], result["meta"]
    header = ["min", *SHORT, "total", "search n/err", "p50/p95 ms", "chat n/err", "p50/p95 ms"]
    header += ["upload n/err", "p50/p95 ms", "writes", "docs ok/wait/fail", "load"]
    rows = []
    for s in samples:
        rss = [f"{s['rss_mb'][p]['rss_mb']:.0f}" if p in s["rss_mb"] else "-" for p in PARTS]
        d = s["documents"]
        wait = sum(d.get(k, 0) for k in ("queued", "parsing"))
        docs = f"{d.get('indexed', 0)}/{wait}/{d.get('failed', 0) + d.get('needs_ocr', 0)}"
        kinds = [*_kind(s, "search"), *_kind(s, "chat"), *_kind(s, "upload")]
        tail = [str(s["requests"]["write"]["requests"]), docs, f"{s['load_average']:.1f}"]
        rows.append([f"{s['t_s'] / 60:.1f}", *rss, f"{total_rss(s):.0f}", *kinds, *tail])
    lines = [
        f"Hearth soak: {m['minutes']:g} min of mixed load on `hearth up` (embedded defaults, CPU"
        f" vLLM), a sample every {m['sample_s']:g} s; {m['cpus']} CPUs, shared machine",
        "RSS in MB per part (summed over its processes); requests/errors and latencies per"
        " interval; docs: indexed / queued+parsing / failed",
        "",
        *table(header, rows, first=5),
        "",
        f"memory, median RSS first third -> last third ({v['samples_per_third']} samples each,"
        f" {v['minutes_between_thirds']:g} min apart):",
    ]
    for name, t in [*v["memory"].items(), ("total", v["total"])]:
        flag = "  GROWING" if t["growing"] else ""
        lines.append(
            f"  {name:<20} {t['first_mb']:>8.0f} -> {t['last_mb']:>8.0f} MB"
            f"  {t['slope_mb_per_min']:+7.2f} MB/min{flag}"
        )
    e = v["errors"]
    lines += [
        "errors: first third {errors}/{requests} ({rate:.1%})".format(**e["first_third"])
        + ", last third {errors}/{requests} ({rate:.1%})".format(**e["last_third"]),
        f"supervisor restarts: {result['restarts']}; tracebacks in the stack's log:"
        f" {result['log_tracebacks']}",
        f"verdict: memory {'flat' if v['memory_flat'] else 'GROWING'}, errors"
        f" {'not growing' if v['errors_flat'] else 'GROWING'}",
    ]
    if result["error_examples"]:
        lines += ["first errors:", *(f"  {x}" for x in result["error_examples"][:5])]
    return "\n".join(lines)
