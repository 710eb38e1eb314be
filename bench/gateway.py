"""Gateway overhead: Hearth's chat endpoint in plain-chat mode (the backend's own model id, no
retrieval) in front of a streaming mock backend, against the client calling the mock directly
and against LiteLLM's proxy in front of the same mock, all in one run.

    python -m bench.gateway [--concurrency 1,16,64] [--rate 200] [--tokens 32] [--requests N]
                            [--litellm PATH] [--json OUT]

The mock (bench.mock_llm, its own process) streams `--tokens` tokens at `--rate` tokens/s per
stream. Hearth runs as `hearth serve-api` with an embedded PostgreSQL (it authenticates the token,
logs the request and stores the conversation, as in production); LiteLLM runs from its own venv
(.cache/bench-litellm, made by bench.litellm_venv: `hearth bench chat --litellm` installs
`litellm[proxy]` from PyPI there; never in Hearth's venv, its pins clash) with a master key. The
load generator (bench.sse_client) is one httpx AsyncClient per simulated user; TTFT is the time to
the first SSE chunk that carries content.
"""

from __future__ import annotations

import argparse
import os
import secrets
import signal
import statistics
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx

from .harness import (
    Child,
    child_env,
    embedded_database,
    first_errors,
    free_port,
    machine,
    make_token,
    run_load,
    say,
    start_hearth,
    start_mock,
    summary,
    table,
    write_json,
)
from .litellm_venv import executable
from .sse_client import StreamResult, Target, run_async, stream_chat

LITELLM = executable()
LABELS = {
    "direct": "direct to the mock",
    "hearth": "Hearth (plain chat)",
    "litellm": "LiteLLM proxy",
}


def level_summary(results: Sequence[StreamResult], wall: float) -> dict[str, Any]:
    ok = [r for r in results if r.ok]
    errors = [r.error for r in results if not r.ok]
    rates = [(r.tokens - 1) / r.decode_s for r in ok if r.decode_s > 0 and r.tokens > 1]
    return {
        "requests": len(results),
        "errors": len(errors),
        "first_error": errors[0] if errors else None,
        "ttft_ms": summary([r.ttft for r in ok]),
        "total_ms": summary([r.seconds for r in ok]),
        "tokens": sum(r.tokens for r in ok),
        "tokens_per_s": sum(r.tokens for r in ok) / wall,
        "stream_tokens_per_s_p50": statistics.median(rates) if rates else 0.0,
        "wall_s": wall,
    }


async def backend_connections(client: httpx.AsyncClient, mock_root: str) -> int:
    """Connections the mock has accepted so far (the client's own included, for direct)."""
    return int((await client.get(mock_root + "/bench/stats")).json()["connections"])


async def run_level(
    clients: Sequence[httpx.AsyncClient],
    mock_root: str,
    target: Target,
    concurrency: int,
    requests: int,
    tokens: int,
) -> dict[str, Any]:
    body = {
        "messages": [{"role": "user", "content": "Tell me a short story about a lighthouse."}],
        "stream": True,
        "max_tokens": tokens,
    }
    results: list[StreamResult] = []

    async def call(w: int, i: int) -> None:
        try:
            results.append(await stream_chat(clients[w], target, body))
        except httpx.HTTPError as exc:
            results.append(StreamResult(False, error=f"{type(exc).__name__}: {exc}"))

    await run_load(call, range(concurrency), concurrency)  # one warm connection per client
    results.clear()
    cpu = target.server.cpu_seconds() if target.server else 0.0
    conns = await backend_connections(clients[0], mock_root)
    _, wall = await run_load(call, range(requests), concurrency)
    row = level_summary(results, wall)
    row["backend_connections_per_request"] = (
        await backend_connections(clients[0], mock_root) - conns
    ) / requests
    if target.server:
        cpu = target.server.cpu_seconds() - cpu
        row["server_cpu_share"] = cpu / wall  # 1.0 = one core busy
        row["server_cpu_us_per_token"] = cpu / max(row["tokens"], 1) * 1e6
    return row


def requests_for(concurrency: int, base: int) -> int:
    """Enough requests for a p99 at one client; several rounds of every stream above that."""
    return max(base, 5 * concurrency)


async def measure(
    targets: list[Target], levels: Sequence[int], base_requests: int, tokens: int
) -> dict[str, dict[str, Any]]:
    mock_root = targets[0].url.removesuffix("/v1/chat/completions")  # direct's: the mock
    # one client (one keep-alive connection) per simulated user: a shared pool of 64 connections
    # in one httpx client stalls requests for seconds before they are even sent
    clients = {
        t.name: [httpx.AsyncClient(timeout=120) for _ in range(max(levels))] for t in targets
    }
    out: dict[str, dict[str, Any]] = {}
    try:
        for n, c in enumerate(levels):
            rows: dict[str, Any] = {}
            order = targets[n % len(targets) :] + targets[: n % len(targets)]  # rotated
            for t in order:
                requests = requests_for(c, base_requests)
                say(f"{t.name}: {requests} streams, {c} at a time")
                rows[t.name] = await run_level(clients[t.name], mock_root, t, c, requests, tokens)
            out[str(c)] = {name: rows[name] for name in (t.name for t in targets)}
            add_ratios(out[str(c)])
    finally:
        for group in clients.values():
            for client in group:
                await client.aclose()
    return out


def add_ratios(rows: dict[str, Any]) -> None:
    base = rows["direct"]
    for name, row in rows.items():
        if name == "direct" or not row["ttft_ms"].get("n"):
            continue
        row["added_ttft_ms"] = {
            k: row["ttft_ms"][k] - base["ttft_ms"][k] for k in ("p50", "p95", "p99")
        }
        row["throughput_vs_direct"] = row["tokens_per_s"] / base["tokens_per_s"]


def start_litellm(workdir: Path, mock_base: str, exe: Path) -> tuple[Child, Target]:
    key = "sk-bench-" + secrets.token_hex(16)
    port = free_port()
    env = child_env(
        LITELLM_MASTER_KEY=key,
        LITELLM_LOCAL_MODEL_COST_MAP="True",  # no fetch of the price list at start
        OPENAI_API_KEY="sk-unused",
    )
    argv = [str(exe), "--model", "openai/mock", "--api_base", mock_base]
    argv += ["--host", "127.0.0.1", "--port", str(port)]
    child = Child("litellm", argv, env, workdir / "litellm.log")
    child.wait_http(f"http://127.0.0.1:{port}/health/liveliness", timeout_s=180)
    target = Target(
        "litellm",
        f"http://127.0.0.1:{port}/v1/chat/completions",
        "openai/mock",
        {"Authorization": f"Bearer {key}"},
        child,
    )
    return child, target


def run(args: argparse.Namespace) -> dict[str, Any]:
    load_at_start = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="hearth-bench-gateway-") as tmp_name:
        tmp = Path(tmp_name)
        children: list[Child] = []
        litellm_note = None
        try:
            mock, mock_base = start_mock(tmp, rate=args.rate, tokens=args.tokens)
            children.append(mock)
            targets = [Target("direct", mock_base + "/chat/completions", "mock", {}, mock)]
            with embedded_database(tmp / "pg") as url:
                say("starting hearth serve-api")
                hearth, base = start_hearth(tmp, url, mock_base, "mock")
                children.append(hearth)
                headers = {"Authorization": f"Bearer {make_token(url)}", "X-Hearth-Footer": "off"}
                url = base + "/v1/chat/completions"
                targets.append(Target("hearth", url, "mock", headers, hearth))
                if args.litellm and args.litellm.exists():
                    say(f"starting LiteLLM ({args.litellm})")
                    try:
                        proxy, target = start_litellm(tmp, mock_base, args.litellm)
                        children.append(proxy)
                        targets.append(target)
                    except RuntimeError as exc:
                        litellm_note = f"LiteLLM did not start: {str(exc)[-500:]}"
                elif args.litellm:
                    litellm_note = (
                        f"LiteLLM not installed at {args.litellm}: `hearth bench chat --litellm`"
                        " (or `python -m bench.litellm_venv`) installs it from PyPI"
                    )
                else:
                    litellm_note = "LiteLLM left out (--no-litellm)"
                if litellm_note:
                    say(litellm_note)
                levels = run_async(measure(targets, args.concurrency, args.requests, args.tokens))
        finally:
            for child in reversed(children):
                child.stop()
    return {
        "meta": {
            **machine(),
            "mock": {"tokens_per_s_per_stream": args.rate, "tokens": args.tokens},
            "targets": [t.name for t in targets],
            "load_average_start": load_at_start,  # machine()'s is at the end
            "litellm": litellm_note or f"{args.litellm} (its own venv, 1 worker, master key)",
            "hearth": "hearth serve-api, plain-chat mode (model = backend id), embedded"
            " PostgreSQL, rate limits off (RATE_LIMIT_RPS=0, MAX_STREAMS_PER_TOKEN=0),"
            f" API_WORKERS={os.environ.get('API_WORKERS') or os.cpu_count()}",
        },
        "levels": levels,
        "targets": targets_met(levels),
    }


def targets_met(levels: dict[str, Any]) -> dict[str, bool | None]:
    one, top = levels.get("1", {}), levels[max(levels, key=int)]
    hearth = one.get("hearth", {}).get("added_ttft_ms")
    out: dict[str, bool | None] = {
        "added_ttft_p50_le_2ms": hearth["p50"] <= 2 if hearth else None,
        "added_ttft_p99_le_10ms": hearth["p99"] <= 10 if hearth else None,
        "throughput_top_level_ge_90pct": top["hearth"].get("throughput_vs_direct", 0) >= 0.90,
        "lower_overhead_than_litellm": None,
    }
    if "litellm" in top:
        out["lower_overhead_than_litellm"] = all(
            lv["hearth"]["added_ttft_ms"]["p50"] < lv["litellm"]["added_ttft_ms"]["p50"]
            for lv in levels.values()
            if "added_ttft_ms" in lv.get("litellm", {})
        )
    return out


def render(result: dict[str, Any]) -> str:
    m = result["meta"]
    lines = [
        f"Hearth gateway benchmark: mock backend at {m['mock']['tokens_per_s_per_stream']:g}"
        f" tokens/s per stream, {m['mock']['tokens']} tokens per answer; {m['cpus']} CPUs",
        f"Hearth: {m['hearth']}",
        "load average (1, 5, 15 min) at start "
        + " / ".join(f"{x:.2f}" for x in m.get("load_average_start", ()))
        + ", at end "
        + " / ".join(f"{x:.2f}" for x in m["load_average"]),
        f"LiteLLM: {m['litellm']}",
        "",
        "TTFT = time to the first content-bearing SSE chunk; added = minus direct's, same"
        " concurrency, same run; tok/s = all streams' tokens / wall time; server CPU = the"
        " server's processes (the mock's for direct; 100% = one core) and its CPU per token;"
        " conns/req = new TCP connections the mock accepted per request (0: kept alive)",
    ]
    header = [
        "streams / target",
        "TTFT p50",
        "p95",
        "p99",
        "added p50",
        "added p99",
        "tok/s",
        "vs direct",
        "stream tok/s",
        "server CPU",
        "µs/token",
        "conns/req",
        "errors",
    ]
    rows = []
    for c, group in result["levels"].items():
        for name, r in group.items():
            t, added = r["ttft_ms"], r.get("added_ttft_ms")
            rows.append(
                [
                    f"{c:>2}  {LABELS[name]}",
                    *(f"{t[k]:.2f}" if k in t else "-" for k in ("p50", "p95", "p99")),
                    f"{added['p50']:+.2f}" if added else "-",
                    f"{added['p99']:+.2f}" if added else "-",
                    f"{r['tokens_per_s']:.0f}",
                    f"{r['throughput_vs_direct']:.1%}" if "throughput_vs_direct" in r else "-",
                    f"{r['stream_tokens_per_s_p50']:.0f}",
                    f"{r['server_cpu_share']:.0%}" if "server_cpu_share" in r else "-",
                    f"{r['server_cpu_us_per_token']:.0f}"
                    if "server_cpu_us_per_token" in r
                    else "-",
                    f"{r['backend_connections_per_request']:.2f}",
                    f"{r['errors']}/{r['requests']}",
                ]
            )
    lines += table(header, rows, first=30)
    lines += first_errors(result["levels"])
    lines += [
        "",
        "targets: "
        + ", ".join(
            f"{k} {'met' if v else 'NOT met' if v is not None else 'not measured'}"
            for k, v in result["targets"].items()
        ),
    ]
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m bench.gateway", description=__doc__.split("\n")[0])
    ap.add_argument("--concurrency", default="1,16,64", help="comma-separated stream counts")
    ap.add_argument("--rate", type=float, default=200.0, help="mock tokens/s per stream")
    ap.add_argument("--tokens", type=int, default=32, help="tokens per answer (default 32)")
    ap.add_argument(
        "--requests", type=int, default=150, help="streams per level (at least 5 per client)"
    )
    ap.add_argument("--litellm", type=Path, default=LITELLM, help="the litellm executable")
    ap.add_argument("--no-litellm", dest="litellm", action="store_const", const=None)
    ap.add_argument("--json", type=Path, help="write the results here")
    args = ap.parse_args(argv)
    args.concurrency = [int(c) for c in args.concurrency.split(",") if c.strip()]
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    result = run(args)
    print(render(result))
    write_json(args.json, result)
    return 0


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    sys.exit(main())
