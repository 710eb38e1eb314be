"""End to end on the real CPU LLM: TTFT and tokens/s streamed from vLLM's CPU build (SmolLM2)
directly and through Hearth, in one run, for the record.

    python -m bench.e2e_llm [--requests 10] [--max-tokens 64] [--concurrency 1] [--no-rag]
                            [--model-dir DIR] [--if-available] [--json OUT]

vLLM is started as Hearth starts it (cli.llm_server.LocalLLMServer, from .venv-vllm, on the
converted model in --model-dir, default HEARTH_TEST_LLM_DIR or .cache/smollm2); `hearth serve-api`
runs in front of it with an embedded PostgreSQL. Requests alternate between the targets (greedy,
same messages, same max_tokens, so both generate the same tokens): direct to vLLM, Hearth in
plain-chat mode (model = the backend's id, no retrieval) and, unless --no-rag, Hearth's `hearth`
model over a tiny corpus ingested with the real MiniLM (a longer, grounded prompt: its TTFT
includes retrieval and the prefill of the passages). Tokens are the backend's usage counts.
With --if-available a missing vLLM or model is reported (and written) as not measured, exit 0.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx

from .harness import (
    EMBED_MODEL,
    REPO,
    bench_main,
    embedded_database,
    first_errors,
    free_port,
    machine,
    make_token,
    now,
    run_script,
    say,
    start_hearth,
    summary,
    table,
)
from .sse_client import StreamResult, Target, run_async, stream_chat

SERVED = "smollm2"  # the backend's model id, as Hearth's LLM_MODEL default names it
LABELS = {
    "direct": "direct to vLLM",
    "hearth": "Hearth (plain chat)",
    "hearth_rag": "Hearth RAG (`hearth` model)",
}
QUESTION = "In two sentences, why do lighthouses flash their lights?"
CORPUS = {
    "lighthouse.md": "# The harbour lighthouse\n\nThe harbour lighthouse was built in 1871 and"
    " its lamp flashes every six seconds. Keepers lived in the cottage beside it until 1986,"
    " when the light was automated.\n",
    "library.md": "# The town library\n\nThe library opened in 2019 and employs 42 people. It"
    " lends tools as well as books, and the reading room is open until 9 pm.\n",
    "ferry.md": "# The island ferry\n\nThe ferry crosses to the island four times a day in"
    " summer and twice a day in winter. Bicycles travel free; cars must be booked.\n",
}
RAG_QUESTIONS = (
    "When was the harbour lighthouse automated?",
    "How many people work at the library?",
    "How often does the ferry cross in winter?",
)


def default_model_dir() -> Path:
    return Path(os.environ.get("HEARTH_TEST_LLM_DIR") or REPO / ".cache" / "smollm2")


def unavailable(model_dir: Path, python: Path) -> str | None:
    """Why the CPU vLLM cannot run here, or None."""
    if not python.exists():
        return f"vLLM's Python not found at {python} (`make vllm` builds .venv-vllm)"
    if not (model_dir / "config.json").is_file():
        return f"no converted model in {model_dir} (`hearth llm prepare --out {model_dir}`)"
    return None


def ingest_corpus(url: str, folder: Path) -> int:
    """The tiny corpus, through Hearth's own pipeline with the packaged MiniLM; chunks written."""
    from core.db import connect
    from core.embedder import load_embedder
    from ingest.pipeline import IngestOptions, ingest_path

    folder.mkdir(parents=True, exist_ok=True)
    embedder = load_embedder(EMBED_MODEL)
    chunks = 0
    with connect(url) as conn:
        for name, text in CORPUS.items():
            (folder / name).write_text(text)
            result = ingest_path(conn, embedder, folder / name, IngestOptions())
            if result.status != "indexed":
                raise RuntimeError(f"{name}: {result.status} {result.error}")
            chunks += result.chunks
    return chunks


def body(question: str, max_tokens: int) -> dict[str, Any]:
    return {
        "messages": [{"role": "user", "content": question}],
        "stream": True,
        "stream_options": {"include_usage": True},
        "max_tokens": max_tokens,
        "temperature": 0,
        "seed": 1,
    }


def stream_summary(results: Sequence[StreamResult], wall: float) -> dict[str, Any]:
    ok = [r for r in results if r.ok]
    errors = [r.error for r in results if not r.ok]
    tokens = [r.usage_tokens or 0 for r in ok]
    rates = [
        (n - 1) / r.decode_s for r, n in zip(ok, tokens, strict=True) if n > 1 and r.decode_s > 0
    ]
    return {
        "requests": len(results),
        "errors": len(errors),
        "first_error": errors[0] if errors else None,
        "ttft_ms": summary([r.ttft for r in ok]),
        "total_ms": summary([r.seconds for r in ok]),
        "completion_tokens": sum(tokens),
        "usage_reported": all(r.usage_tokens is not None for r in ok),
        "tokens_per_s": sum(tokens) / wall if wall else 0.0,
        "stream_tokens_per_s_p50": statistics.median(rates) if rates else 0.0,
        "wall_s": wall,
    }


async def measure(
    targets: Sequence[Target], questions: dict[str, Sequence[str]], args: argparse.Namespace
) -> dict[str, dict[str, Any]]:
    """Per concurrency level, rounds of `c` concurrent streams, the targets taking turns (the
    order rotated each round), after one warm-up stream each."""
    levels: dict[str, dict[str, Any]] = {}
    async with httpx.AsyncClient(timeout=600, trust_env=False) as client:

        async def one(t: Target, i: int) -> StreamResult:
            qs = questions[t.name]
            try:
                return await stream_chat(client, t, body(qs[i % len(qs)], args.max_tokens))
            except httpx.HTTPError as exc:
                return StreamResult(False, error=f"{type(exc).__name__}: {exc}")

        for t in targets:
            warm = await one(t, 0)
            if not warm.ok:
                raise RuntimeError(f"{t.name}: warm-up failed: {warm.error}")
        for c in args.concurrency:
            results: dict[str, list[StreamResult]] = {t.name: [] for t in targets}
            walls = dict.fromkeys(results, 0.0)
            for n, start in enumerate(range(0, args.requests, c)):
                batch = range(start, min(start + c, args.requests))
                for t in [*targets[n % len(targets) :], *targets[: n % len(targets)]]:
                    began = now()
                    results[t.name] += await asyncio.gather(*(one(t, i) for i in batch))
                    walls[t.name] += now() - began
            say(f"{c} at a time: {args.requests} streams per target done")
            rows = {name: stream_summary(r, walls[name]) for name, r in results.items()}
            add_ratios(rows)
            levels[str(c)] = rows
    return levels


def add_ratios(rows: dict[str, Any]) -> None:
    base = rows["direct"]
    for name, row in rows.items():
        if name == "direct" or not row["ttft_ms"].get("n") or not base["ttft_ms"].get("n"):
            continue
        row["ttft_vs_direct"] = {
            k: row["ttft_ms"][k] / base["ttft_ms"][k] for k in ("p50", "p95") if base["ttft_ms"][k]
        }
        row["added_ttft_ms"] = {k: row["ttft_ms"][k] - base["ttft_ms"][k] for k in ("p50", "p95")}
        if base["tokens_per_s"]:
            row["tokens_per_s_vs_direct"] = row["tokens_per_s"] / base["tokens_per_s"]
        if base["stream_tokens_per_s_p50"]:
            row["stream_tokens_per_s_vs_direct"] = (
                row["stream_tokens_per_s_p50"] / base["stream_tokens_per_s_p50"]
            )


def run(args: argparse.Namespace) -> dict[str, Any]:
    from cli.llm_server import LocalLLMServer
    from core.settings import Settings

    python = Settings(_env_file=None).vllm_python_path  # type: ignore[call-arg]
    meta: dict[str, Any] = {
        **machine(),
        "model_dir": str(args.model_dir),
        "vllm_python": str(python),
        "requests": args.requests,
        "max_tokens": args.max_tokens,
        "rag": args.rag,
    }
    reason = unavailable(args.model_dir, python)
    if reason:
        return {"meta": meta, "available": False, "reason": reason, "levels": {}}
    with tempfile.TemporaryDirectory(prefix="hearth-bench-llm-") as tmp_name:
        tmp = Path(tmp_name)
        server = LocalLLMServer(
            args.model_dir,
            python=python,
            port=free_port(),
            cache_dir=REPO / ".cache" / "bench" / "vllm-cache",
            log_path=tmp / "vllm.log",
            served_model_name=SERVED,
            max_model_len=Settings(_env_file=None).llm_max_model_len,  # type: ignore[call-arg]
        )
        say(f"starting vLLM (CPU) on {args.model_dir}")
        started = now()
        with server, embedded_database(tmp / "pg") as url:
            meta["vllm_ready_s"] = now() - started
            if args.rag:
                say("ingesting the tiny corpus (MiniLM)")
                meta["rag_chunks"] = ingest_corpus(url, tmp / "corpus")
            say("starting hearth serve-api")
            hearth, base = start_hearth(
                tmp,
                url,
                server.base_url,
                SERVED,
                LLM_LOCAL_MODEL_DIR=str(args.model_dir),  # its tokenizer counts prompt tokens
                RELEVANCE_THRESHOLD="0",  # a turn found "not covered" never reaches the model
            )
            try:
                headers = {"Authorization": f"Bearer {make_token(url)}", "X-Hearth-Footer": "off"}
                chat = base + "/v1/chat/completions"
                targets = [
                    Target("direct", server.base_url + "/chat/completions", SERVED, {}),
                    Target("hearth", chat, SERVED, headers),
                ]
                questions: dict[str, Sequence[str]] = {"direct": [QUESTION], "hearth": [QUESTION]}
                if args.rag:
                    targets.append(Target("hearth_rag", chat, "hearth", headers))
                    questions["hearth_rag"] = RAG_QUESTIONS
                levels = run_async(measure(targets, questions, args))
            finally:
                hearth.stop()
    meta["targets"] = [t.name for t in targets]
    return {"meta": meta, "available": True, "levels": levels}


def render(result: dict[str, Any]) -> str:
    m = result["meta"]
    if not result["available"]:
        return (
            "Hearth end-to-end LLM benchmark: NOT RUN, the CPU vLLM is not available:"
            f" {result['reason']}"
        )
    lines = [
        f"Hearth end-to-end LLM benchmark: SmolLM2-135M on vLLM's CPU build ({m['model_dir']}),"
        f" {m['requests']} streams per target and level, greedy, max_tokens {m['max_tokens']};"
        f" {m['cpus']} CPUs; vLLM ready in {m['vllm_ready_s']:.0f} s",
        "TTFT = time to the first content-bearing SSE chunk; tok/s = completion tokens (usage) /"
        " wall time; stream tok/s = one stream's decode rate after its first token, p50;"
        " RAG adds retrieval and a longer prompt to prefill",
    ]
    header = ["streams / target", "TTFT p50", "p95", "vs direct", "added p50", "tok/s"]
    header += ["vs direct", "stream tok/s", "vs direct", "tokens", "errors"]
    rows = []
    for c, group in result["levels"].items():
        for name, r in group.items():
            t, vs = r["ttft_ms"], r.get("ttft_vs_direct", {})
            rows.append(
                [
                    f"{c:>2}  {LABELS[name]}",
                    *(f"{t[k]:.1f}" if k in t else "-" for k in ("p50", "p95")),
                    f"{vs['p50']:.2f}x" if "p50" in vs else "-",
                    f"{r['added_ttft_ms']['p50']:+.1f}" if "added_ttft_ms" in r else "-",
                    f"{r['tokens_per_s']:.1f}",
                    f"{r['tokens_per_s_vs_direct']:.1%}" if "tokens_per_s_vs_direct" in r else "-",
                    f"{r['stream_tokens_per_s_p50']:.1f}",
                    f"{r['stream_tokens_per_s_vs_direct']:.1%}"
                    if "stream_tokens_per_s_vs_direct" in r
                    else "-",
                    str(r["completion_tokens"]),
                    f"{r['errors']}/{r['requests']}",
                ]
            )
    lines += table(header, rows, first=34)
    lines += first_errors(result["levels"])
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m bench.e2e_llm", description=__doc__.split("\n")[0])
    ap.add_argument("--requests", type=int, default=10, help="streams per target and level")
    ap.add_argument("--max-tokens", type=int, default=64, help="tokens per answer (default 64)")
    ap.add_argument("--concurrency", default="1", help="comma-separated stream counts")
    ap.add_argument("--no-rag", dest="rag", action="store_false", help="plain chat only")
    ap.add_argument("--model-dir", type=Path, default=default_model_dir())
    ap.add_argument(
        "--if-available",
        action="store_true",
        help="a missing vLLM or model is reported as not measured (exit 0), not an error",
    )
    ap.add_argument("--json", type=Path, help="write the results here")
    args = ap.parse_args(argv)
    args.concurrency = [int(c) for c in args.concurrency.split(",") if c.strip()]
    return args


def main(argv: Sequence[str] | None = None) -> int:
    return bench_main(parse_args, run, render, argv)


if __name__ == "__main__":
    run_script(main)
