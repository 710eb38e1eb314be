"""RAG turn latency: from a chat request (model `hearth`, retrieval on) to the moment the backend
receives the grounded prompt, end to end and stage by stage.

    python -m bench.rag_turn [--scale N] [--questions 100] [--json OUT]

Uses the synthetic index bench.search_scale leaves in .cache/bench/search-N (the 100,000-chunk
one when present, else it loads 10,000 chunks there). `hearth serve-api` runs in front of the mock
backend (bench.mock_llm), which records when each request arrives (CLOCK_MONOTONIC, the client's
clock too): request -> backend is that minus the client's send time, one request at a time.
A follow-up (history in the request) adds the query rewrite, one short LLM call to the mock.

The API's own stages come from the Server-Timing header of the same questions asked once more,
not streamed (api.timing: auth, open, embed, search, ground, answer; fresh texts, so each
embeds). The stages are then timed by calling Hearth's own functions in this process, in the order
a turn runs them: token lookup (api.store.accounts.authenticate), opening the turn (readable
collections, conversation), the query embedding (MiniLM on the API's query-embedding thread, with
an API process's share of the cores), hybrid search (retrieval.search.search) and the prompt build
(api.prompt.build_prompt, counting tokens). RELEVANCE_THRESHOLD is 0 here: the synthetic vectors
mean nothing to MiniLM, and a turn found "not covered" never reaches the backend.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx

from .dataset import default_dir, open_dataset, read_meta
from .harness import (
    bench_main,
    fmt_ms,
    machine,
    make_token,
    now,
    run_script,
    say,
    start_hearth,
    start_mock,
    summary,
    table,
)
from .sse_client import StreamResult, Target, run_async, stream_chat
from .stages import server_timing, stage_summary

FULL_SCALE, FALLBACK_SCALE = 100_000, 10_000
STAGES = {
    "auth": "auth (token lookup)",
    "open_turn": "open turn (readable collections, conversation)",
    "embed": "query embedding (MiniLM)",
    "search": "hybrid search",
    "prompt": "prompt build (token counting)",
}
# request -> backend receives the grounded prompt, p50, no rewrite: (bar ms, from this many
# chunks on): the first round's bar (set at 100k chunks) and issue 15's at a million
TARGETS_P50_MS = {
    "request_to_backend_p50_le_40ms_no_rewrite": (40.0, 0),
    "request_to_backend_p50_le_60ms_no_rewrite_at_1M": (60.0, 1_000_000),
}
# Server-Timing stages of a non-streamed chat turn (api.timing), in turn order
API_STAGES = ("auth", "open", "embed", "embed-model", "search", "ground", "answer", "total")


async def _arrivals(client: httpx.AsyncClient, mock_root: str) -> dict[bool, list[float]]:
    """When chat requests reached the mock since the last call (and clears its log): streamed
    ones (the grounded prompt) under True, the others (query rewrites) under False."""
    log = (await client.get(mock_root + "/bench/log")).json()
    return {kind: [e["t"] for e in log if e["stream"] is kind] for kind in (True, False)}


async def measure_http(
    base: str, mock_base: str, token: str, questions: Sequence[str], warm: int = 5
) -> dict[str, Any]:
    """Request -> backend, one request at a time: a first question, then a follow-up."""
    warm = min(warm, len(questions))
    mock_root = mock_base.removesuffix("/v1")
    target = Target(
        "hearth",
        base + "/v1/chat/completions",
        "hearth",
        {"Authorization": f"Bearer {token}", "X-Hearth-Footer": "off"},
    )
    out: dict[str, Any] = {}
    async with httpx.AsyncClient(timeout=120) as client:
        for kind in ("first", "follow_up"):
            sends: list[float] = []
            results: list[StreamResult] = []
            asked = [*questions[:warm], *questions]
            for i, q in enumerate(asked):
                if i == warm:
                    await _arrivals(client, mock_root)
                    sends.clear()
                    results.clear()
                messages = [{"role": "user", "content": q}]
                if kind == "follow_up":
                    earlier = asked[i - 1]  # asked[-1] for the first: any other question
                    messages[:0] = [
                        {"role": "user", "content": earlier},
                        {"role": "assistant", "content": "It is described in the manual [1]."},
                    ]
                body = {"messages": messages, "stream": True, "max_tokens": 8}
                sends.append(now())
                results.append(await stream_chat(client, target, body))
            log = await _arrivals(client, mock_root)
            arrivals, rewrites = log[True], log[False]
            errors = [r.error for r in results if not r.ok]
            if errors or len(arrivals) != len(sends):
                raise RuntimeError(
                    f"{kind}: {len(arrivals)} backend requests for {len(sends)} turns;"
                    f" errors: {errors[:3]}"
                )
            out[kind] = {
                "to_backend_ms": summary([a - s for a, s in zip(arrivals, sends, strict=True)]),
                "ttft_ms": summary([r.ttft for r in results]),
            }
            if len(rewrites) == len(sends):  # one rewrite call per follow-up, before the prompt
                out[kind]["to_rewrite_ms"] = summary(
                    [r - s for r, s in zip(rewrites, sends, strict=True)]
                )
                out[kind]["rewrite_to_backend_ms"] = summary(
                    [a - r for a, r in zip(arrivals, rewrites, strict=True)]
                )
    return out


async def measure_api_stages(
    base: str, token: str, questions: Sequence[str], warm: int = 5
) -> dict[str, Any]:
    """The API's own account of each turn (its Server-Timing), not streamed, one at a time;
    each question reworded so that its vector is not in the API's cache."""
    headers = {"Authorization": f"Bearer {token}", "X-Hearth-Footer": "off"}
    seen: list[dict[str, float]] = []
    async with httpx.AsyncClient(base_url=base, headers=headers, timeout=120) as client:
        for i, q in enumerate([*questions[:warm], *questions]):
            body = {
                "model": "hearth",
                "messages": [{"role": "user", "content": f"{q} (again {i})"}],
                "max_tokens": 8,
            }
            resp = await client.post("/v1/chat/completions", json=body)
            if resp.status_code != 200:
                raise RuntimeError(f"chat answered {resp.status_code}: {resp.text[:300]}")
            if i >= warm:
                seen.append(server_timing(resp.headers.get("server-timing", "")))
    return {"stages_ms": stage_summary(seen, API_STAGES), "questions": len(seen)}


async def measure_stages(
    url: str, token: str, settings: Any, questions: Sequence[str], warm: int = 5
) -> dict[str, Any]:
    from api.prompt import build_prompt
    from api.query_embedding import QueryEmbedder
    from api.store import access
    from api.store.accounts import authenticate
    from api.store.conversations import open_conversation
    from api.tokenizer import load_counter
    from core.db import async_pool
    from core.embedder import embedder_for
    from retrieval.filters import SearchFilter
    from retrieval.search import SearchParams, search

    embedder = embedder_for(settings)
    queries = QueryEmbedder()  # as api.search.query_vector embeds a question
    counter = load_counter(settings.tokenizer_file)
    times: dict[str, list[float]] = {s: [] for s in STAGES}
    passages_given: list[int] = []
    pool = async_pool(url)
    await pool.open(wait=True)
    try:
        warm = min(warm, len(questions))
        for i, q in enumerate([*questions[:warm], *questions]):
            marks = [now()]
            async with pool.connection() as conn:
                user = await authenticate(conn, token)
            assert user is not None
            marks.append(now())
            async with pool.connection() as conn:
                readable = await access.readable(conn, user)
                await open_conversation(conn, user.id, None, readable)
            marks.append(now())
            vector, _ = await queries.embed(embedder, q)
            marks.append(now())
            params = SearchParams.from_settings(
                settings, filter=SearchFilter().restricted_to(readable)
            )
            async with pool.connection() as conn:
                passages = await search(conn, q, vector, params)
            marks.append(now())
            prompt = build_prompt(
                q,
                passages,
                [],
                counter=counter,
                context_tokens=settings.llm_max_model_len,
                max_answer_tokens=settings.llm_max_tokens,
            )
            marks.append(now())
            t = dict(zip(STAGES, itertools.pairwise(marks), strict=True))
            if i >= warm:
                for stage, (a, b) in t.items():
                    times[stage].append(b - a)
                passages_given.append(len(prompt.passages))
    finally:
        await pool.close()
    stages = {s: summary(v) for s, v in times.items()}
    total = [sum(times[s][i] for s in STAGES) for i in range(len(questions))]
    return {
        "stages_ms": stages,
        "sum_ms": summary(total),
        "share_of_p50_sum": {
            s: stages[s]["p50"] / sum(stages[x]["p50"] for x in STAGES) for s in STAGES
        },
        "passages_in_prompt_p50": sorted(passages_given)[len(passages_given) // 2],
        "token_counter_exact": counter.exact,
    }


def pick_scale(requested: int | None, data_dir: Path | None) -> int:
    if requested:
        return requested
    meta = read_meta(data_dir or default_dir(FULL_SCALE))
    if data_dir:
        return int(meta["chunks"]) if meta else FALLBACK_SCALE
    return FULL_SCALE if meta else FALLBACK_SCALE


def run(args: argparse.Namespace) -> dict[str, Any]:
    from cli.serve import share_cores
    from core.offline import go_offline
    from core.settings import get_settings

    go_offline()
    # the in-process stages run as in an API process: its share of the cores, idle threads asleep
    share_cores(get_settings())
    scale = pick_scale(args.scale, args.data_dir)
    with (
        open_dataset(scale, data_dir=args.data_dir, reuse=True) as (url, corpus, meta),
        tempfile.TemporaryDirectory(prefix="hearth-bench-rag-") as tmp_name,
    ):
        tmp = Path(tmp_name)
        questions = [q.text for q in corpus.queries(args.questions, seed=7)]
        mock, mock_base = start_mock(tmp, rate=args.rate, tokens=8)
        try:
            say("starting hearth serve-api (loads MiniLM)")
            hearth, base = start_hearth(tmp, url, mock_base, "mock", RELEVANCE_THRESHOLD="0")
            try:
                token = make_token(url)
                say(f"{len(questions)} turns through HTTP, one at a time")
                http = run_async(measure_http(base, mock_base, token, questions))
                say(f"{len(questions)} turns not streamed, for the API's Server-Timing")
                api_stages = run_async(measure_api_stages(base, token, questions))
            finally:
                hearth.stop()
            settings = get_settings(
                database_url=url, llm_base_url=mock_base, llm_model="mock", relevance_threshold=0
            )
            say(f"{len(questions)} turns stage by stage, in this process")
            stages = asyncio.run(measure_stages(url, token, settings, questions))
        finally:
            mock.stop()
    e2e = http["first"]["to_backend_ms"]["p50"]
    return {
        "meta": {
            **machine(),
            "data": meta["data"],
            "chunks": meta["chunks"],
            "dataset_dir": meta["dir"],
            "questions": args.questions,
            "mock": {"tokens_per_s_per_stream": args.rate, "tokens": 8},
            "search": {"top_k": settings.top_k, "candidates": settings.search_candidates},
        },
        "http": http,
        "api_stages": api_stages,
        "stages": stages,
        "outside_stages_p50_ms": e2e - stages["sum_ms"]["p50"],
        "targets": {
            name: e2e <= bar
            for name, (bar, from_chunks) in TARGETS_P50_MS.items()
            if int(meta["chunks"]) >= from_chunks
        },
    }


def render(result: dict[str, Any]) -> str:
    m, http, st = result["meta"], result["http"], result["stages"]
    api = result["api_stages"]["stages_ms"]
    lines = [
        f"Hearth RAG turn benchmark: {m['chunks']:,} chunks ({m['data'].split(':')[0]}),"
        f" {m['questions']} questions one at a time, top_k {m['search']['top_k']},"
        f" {m['search']['candidates']} candidates a leg; {m['cpus']} CPUs",
        "",
        "inside the API (Server-Timing of the same questions, not streamed: embed includes waiting"
        " for the embedding thread; ground = rewrite + embed + search + prompt build; answer ="
        " the backend and the answer's checks)",
        *table(
            ["", "p50 ms", "p95 ms"],
            [[name, *fmt_ms(row, ("p50", "p95"))] for name, row in api.items()],
            first=48,
        ),
        "",
        "stage (called in this process, in turn order, as an API process runs them)",
    ]
    rows = [
        [STAGES[s], *fmt_ms(st["stages_ms"][s], ("p50", "p95")), f"{st['share_of_p50_sum'][s]:.0%}"]
        for s in STAGES
    ]
    rows.append(["sum of the stages", *fmt_ms(st["sum_ms"], ("p50", "p95")), "100%"])
    lines += table(["", "p50 ms", "p95 ms", "share"], rows, first=48)
    first, follow = http["first"], http["follow_up"]
    k1, k2, pcts = "to_rewrite_ms", "rewrite_to_backend_ms", ("p50", "p95")
    lines += [
        "",
        "through HTTP (hearth serve-api; the mock notes when the grounded prompt arrives)",
        *table(
            ["", "p50 ms", "p95 ms"],
            [
                [
                    "request -> backend, first question",
                    *fmt_ms(first["to_backend_ms"], ("p50", "p95")),
                ],
                ["TTFT at the client, first question", *fmt_ms(first["ttft_ms"], ("p50", "p95"))],
                [
                    "request -> backend, follow-up (rewrite on)",
                    *fmt_ms(follow["to_backend_ms"], ("p50", "p95")),
                ],
                *(
                    [
                        ["  request -> rewrite call at the backend", *fmt_ms(follow[k1], pcts)],
                        ["  rewrite call -> grounded prompt", *fmt_ms(follow[k2], pcts)],
                    ]
                    if k1 in follow
                    else []
                ),
            ],
            first=48,
        ),
        f"outside the stages (HTTP, middleware and request log, LLM client), p50:"
        f" {result['outside_stages_p50_ms']:.2f} ms"
        f" ({result['outside_stages_p50_ms'] / first['to_backend_ms']['p50']:.0%} of the turn)",
        "the follow-up's rewrite is one LLM call: here the mock's 8 tokens at"
        f" {m['mock']['tokens_per_s_per_stream']:g} tokens/s (a real model's speed replaces"
        " it), and the query it yields is the mock's words, which no chunk contains: its search"
        " is cheaper than a real one",
        "",
        "targets, request -> backend p50 without rewrite: "
        + ", ".join(
            f"<= {TARGETS_P50_MS[name][0]:.0f} ms"
            + (f" at {TARGETS_P50_MS[name][1]:,} chunks" if TARGETS_P50_MS[name][1] else "")
            + (" met" if met else " NOT met")
            for name, met in result["targets"].items()
        ),
    ]
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        prog="python -m bench.rag_turn", description=__doc__.split("\n")[0]
    )
    ap.add_argument(
        "--scale", type=int, help="chunks (default: the 100,000 index if loaded, else 10,000)"
    )
    ap.add_argument("--data-dir", type=Path, help="default .cache/bench/search-N")
    ap.add_argument("--questions", type=int, default=100)
    ap.add_argument("--rate", type=float, default=200.0, help="mock tokens/s")
    ap.add_argument("--json", type=Path, help="write the results here")
    return ap.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    return bench_main(parse_args, run, render, argv)


if __name__ == "__main__":
    run_script(main)
