"""Answer quality on the real CPU LLM: does a grounded answer cite the right file, carry the fact,
and refuse what the documents do not say? On a household library of our own (bench.answers_set).

    python -m bench.answers [--compare] [--config NAME:KEY=VALUE,...]... [--stream]
                            [--max-tokens 128] [--model-dir DIR] [--if-available] [--json OUT]

The library goes through Hearth's real pipeline (parsing, chunking, the packaged MiniLM) into an
embedded PostgreSQL; vLLM's CPU build serves SmolLM2 (cli.llm_server.LocalLLMServer); one
`hearth serve-api` per configuration runs in front of it (each with its own environment), and every
question goes to each of them through /v1/chat/completions (model `hearth`, a new conversation,
the servers taking turns per question so machine load falls on all alike).

Per configuration: cited-right-file (the answer's `sources` name the file that answers it),
fact-in-answer (every fact group of the question appears in the text), false refusals on
answerable questions, refusals on the unanswerable ones, p50 answer time. Before any LLM call, the
retrieval side alone: the best dense similarity per question (what RELEVANCE_THRESHOLD is compared
with) for answerable and unanswerable questions, and the threshold that would separate them.

`--compare` runs `before` (the defaults before issue 14 item 6: the backend's sampling, the old
prompt, no answer check) against `now` (today's defaults) in the same run; `--config` adds or
replaces configurations (repeatable; `now:` with nothing after it is today's defaults).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import statistics
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx

from .answers_set import QUESTIONS, Question, write_library
from .e2e_llm import SERVED, default_model_dir, unavailable
from .harness import (
    EMBED_MODEL,
    REPO,
    bench_main,
    embedded_database,
    free_port,
    machine,
    make_token,
    now,
    run_script,
    say,
    start_hearth,
    table,
    write_json,
)

# the instructions Hearth gave the model before issue 14 item 6
LEGACY_PROMPT = (
    "You are Hearth, an assistant that answers questions from the user's own documents. "
    "Use only the numbered passages below. After each fact you use, cite its passage number in "
    "square brackets, like [1]. If the passages do not contain the answer, say that the "
    "documents do not cover it. Never invent facts or passage numbers."
)
BEFORE = {
    "ANSWER_TEMPERATURE": "backend",
    "ANSWER_CHECK": "off",
    "PASSAGE_ORDER": "best_first",
    "RELEVANCE_THRESHOLD": "0.15",
    "SYSTEM_PROMPT": LEGACY_PROMPT,
}
# what counts as the model declining, besides Hearth's own "not covered" answer
_REFUSAL = re.compile(
    r"could not find|couldn't find|can't find|cannot find|do(?:es)? not cover|don't cover|"
    r"not covered|no information|not mentioned|do(?:es)? not (?:contain|say|mention|include)|"
    r"don't (?:contain|say|mention|know)|do not know|not (?:in|found in) (?:the|your) "
    r"(?:passages|documents)|will not guess|unable to (?:find|answer)",
    re.IGNORECASE,
)


def is_refusal(text: str) -> bool:
    return bool(_REFUSAL.search(text))


def has_facts(text: str, facts: Sequence[Sequence[str]]) -> bool:
    flat = " ".join(text.lower().split())
    return bool(facts) and all(any(f.lower() in flat for f in group) for group in facts)


def parse_config(spec: str) -> tuple[str, dict[str, str]]:
    """`name:KEY=VALUE,KEY=VALUE` (a comma before the next `KEY=` separates; `before` starts
    from the old defaults)."""
    name, _, rest = spec.partition(":")
    env = dict(BEFORE) if name == "before" else {}
    for pair in filter(None, (p.strip() for p in re.split(r",(?=\s*[A-Z_]+=)", rest))):
        key, sep, value = pair.partition("=")
        if not sep:
            raise SystemExit(f"--config {spec!r}: {pair!r} is not KEY=VALUE")
        env[key.strip().upper()] = value
    return name, env


def ingest_library(url: str, folder: Path) -> dict[str, int]:
    """The library through Hearth's own pipeline; chunks per file."""
    from core.db import connect
    from core.embedder import load_embedder
    from ingest.pipeline import IngestOptions, ingest_path

    embedder = load_embedder(EMBED_MODEL)
    out = {}
    with connect(url) as conn:
        for path in write_library(folder):
            result = ingest_path(conn, embedder, path, IngestOptions(roots=(folder,)))
            if result.status != "indexed":
                raise RuntimeError(f"{path.name}: {result.status} {result.error}")
            out[path.name] = result.chunks
    return out


async def retrieval_side(url: str) -> list[dict[str, Any]]:
    """Per question: the best dense similarity of what search returns, and whether the file that
    answers it is among the passages, with today's search settings."""
    from core.db import async_pool
    from core.embedder import load_embedder
    from core.settings import Settings
    from retrieval.search import SearchParams, search

    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    embedder = load_embedder(EMBED_MODEL)
    pool = async_pool(url)
    await pool.open(wait=True)
    rows = []
    try:
        for q in QUESTIONS:
            vector = (await asyncio.to_thread(embedder.embed, [q.text]))[0]
            async with pool.connection() as conn:
                found = await search(conn, q.text, vector, SearchParams.from_settings(settings))
            sims = [p.similarity for p in found if p.similarity is not None]
            files = [Path(p.path).name for p in found]
            rows.append(
                {
                    "question": q.text,
                    "answerable": q.file is not None,
                    "best_similarity": max(sims) if sims else None,
                    "file_found": q.file in files if q.file else None,
                    "file_first": bool(files) and files[0] == q.file,
                }
            )
    finally:
        await pool.close()
    return rows


def calibrate(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The similarities of both classes and the threshold that gets most questions right (kept
    when answerable, gated when not), ties to the lowest (fewer false refusals)."""
    yes = sorted(r["best_similarity"] for r in rows if r["answerable"] and r["best_similarity"])
    no = sorted(r["best_similarity"] for r in rows if not r["answerable"] and r["best_similarity"])
    if not yes:
        return {}
    candidates = sorted({0.0, *yes, *(s + 1e-4 for s in no)})

    def right(t: float) -> int:
        return sum(s >= t for s in yes) + sum(s < t for s in no)

    best = max(candidates, key=lambda t: (right(t), -t))
    return {
        "answerable": {"n": len(yes), "min": yes[0], "median": statistics.median(yes)},
        "unanswerable": {
            "n": len(no),
            "max": no[-1] if no else None,
            "median": statistics.median(no) if no else None,
        },
        "best_threshold": round(best, 4),
        "best_right": right(best),
        "separable": not no or no[-1] < yes[0],
        "file_found": sum(bool(r["file_found"]) for r in rows if r["answerable"]),
        "file_first": sum(bool(r["file_first"]) for r in rows if r["answerable"]),
    }


async def ask(
    client: httpx.AsyncClient, base: str, headers: dict[str, str], q: Question, args: Any
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": "hearth",
        "messages": [{"role": "user", "content": q.text}],
        "max_tokens": args.max_tokens,
        "stream": args.stream,
    }
    start = now()
    text, error = "", None
    sources: list[dict[str, Any]] = []
    try:
        if args.stream:
            async with client.stream(
                "POST", base + "/v1/chat/completions", json=body, headers=headers
            ) as resp:
                if resp.status_code != 200:
                    await resp.aread()
                    error = f"HTTP {resp.status_code}: {resp.text[:200]}"
                async for line in resp.aiter_lines():
                    if not line.startswith("data: ") or line == "data: [DONE]":
                        continue
                    event = json.loads(line[6:])
                    if "error" in event:
                        error = str(event["error"])
                    for choice in event.get("choices") or []:
                        text += (choice.get("delta") or {}).get("content") or ""
                    sources = event.get("sources", sources)
        else:
            resp = await client.post(base + "/v1/chat/completions", json=body, headers=headers)
            if resp.status_code != 200:
                error = f"HTTP {resp.status_code}: {resp.text[:200]}"
            else:
                data = resp.json()
                text = data["choices"][0]["message"]["content"] or ""
                sources = data.get("sources") or []
    except httpx.HTTPError as exc:
        error = f"{type(exc).__name__}: {exc}"
    seconds = now() - start
    files = [Path(s.get("path") or "").name for s in sources]
    refused = is_refusal(text)
    return {
        "question": q.text,
        "answerable": q.file is not None,
        "answer": text,
        "cited": files,
        "right_file": q.file in files if q.file else None,
        "fact": has_facts(text, q.facts) if q.file else None,
        "refused": refused,
        "seconds": seconds,
        "error": error,
    }


def score(answers: Sequence[dict[str, Any]]) -> dict[str, Any]:
    yes = [a for a in answers if a["answerable"]]
    no = [a for a in answers if not a["answerable"]]

    def rate(rows: Sequence[dict[str, Any]], key: str) -> dict[str, Any]:
        k = sum(bool(r[key]) for r in rows)
        return {"k": k, "n": len(rows), "rate": k / len(rows) if rows else 0.0}

    both = [{**a, "both": a["right_file"] and a["fact"]} for a in yes]
    secs = [a["seconds"] for a in answers if not a["error"]]
    return {
        "cited_right_file": rate(yes, "right_file"),
        "fact_in_answer": rate(yes, "fact"),
        "right_file_and_fact": rate(both, "both"),
        "false_refusal": rate(yes, "refused"),
        "refused_unanswerable": rate(no, "refused"),
        "errors": sum(bool(a["error"]) for a in answers),
        "p50_answer_s": statistics.median(secs) if secs else None,
    }


async def ask_all(
    servers: dict[str, str], headers: dict[str, str], args: Any
) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {name: [] for name in servers}
    names = list(servers)
    questions = QUESTIONS[: args.only] if args.only else QUESTIONS
    async with httpx.AsyncClient(timeout=900, trust_env=False) as client:
        for i, q in enumerate(questions):
            for name in [*names[i % len(names) :], *names[: i % len(names)]]:
                out[name].append(await ask(client, servers[name], headers, q, args))
            say(f"{i + 1}/{len(questions)} asked")
            if args.json:  # a long run leaves its answers so far behind if it is stopped
                partial = {name: score(rows) for name, rows in out.items()}
                write_json(args.json.with_suffix(".partial.json"), {"scores": partial, **out})
    return out


def configurations(args: argparse.Namespace) -> dict[str, dict[str, str]]:
    configs: dict[str, dict[str, str]] = {}
    if args.compare:
        configs = {"before": dict(BEFORE), "now": {}}
    for spec in args.config or []:
        name, env = parse_config(spec)
        configs[name] = env
    return configs or {"now": {}}


def run(args: argparse.Namespace) -> dict[str, Any]:
    from cli.llm_server import LocalLLMServer
    from core.settings import Settings

    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    python = settings.vllm_python_path
    configs = configurations(args)
    meta: dict[str, Any] = {
        **machine(),
        "model_dir": str(args.model_dir),
        "max_tokens": args.max_tokens,
        "stream": args.stream,
        "configs": configs,
    }
    reason = unavailable(args.model_dir, python)
    if reason:
        return {"meta": meta, "available": False, "reason": reason}
    with tempfile.TemporaryDirectory(prefix="hearth-bench-answers-") as tmp_name:
        tmp = Path(tmp_name)
        with embedded_database(tmp / "pg") as url:
            say("ingesting the household library (MiniLM)")
            meta["chunks"] = ingest_library(url, tmp / "library")
            retrieval = asyncio.run(retrieval_side(url))
            server = LocalLLMServer(
                args.model_dir,
                python=python,
                port=free_port(),
                cache_dir=REPO / ".cache" / "bench" / "vllm-cache",
                log_path=tmp / "vllm.log",
                served_model_name=SERVED,
                max_model_len=settings.llm_max_model_len,
            )
            say(f"starting vLLM (CPU) on {args.model_dir}")
            with server:
                servers, children = {}, []
                try:
                    for name, env in configs.items():
                        say(f"starting hearth serve-api ({name}: {env or 'defaults'})")
                        child, base = start_hearth(
                            tmp / name,
                            url,
                            server.base_url,
                            SERVED,
                            LLM_LOCAL_MODEL_DIR=str(args.model_dir),
                            **{"API_WORKERS": "1", **env},  # one model per server is plenty
                        )
                        children.append(child)
                        servers[name] = base
                    headers = {
                        "Authorization": f"Bearer {make_token(url)}",
                        "X-Hearth-Footer": "off",
                    }
                    answers = asyncio.run(ask_all(servers, headers, args))
                finally:
                    for child in children:
                        child.stop()
    return {
        "meta": meta,
        "available": True,
        "retrieval": {"questions": retrieval, "calibration": calibrate(retrieval)},
        "scores": {name: score(rows) for name, rows in answers.items()},
        "answers": answers,
    }


def _pct(r: dict[str, Any]) -> str:
    return f"{r['k']}/{r['n']} ({r['rate']:.0%})"


def render(result: dict[str, Any]) -> str:
    m = result["meta"]
    if not result["available"]:
        return f"Hearth answer-quality benchmark: NOT RUN, no CPU vLLM: {result['reason']}"
    c = result["retrieval"]["calibration"]
    yes, no = c["answerable"], c["unanswerable"]
    lines = [
        f"Hearth answer-quality benchmark: SmolLM2-135M on vLLM's CPU build, household library of"
        f" {len(m['chunks'])} files ({sum(m['chunks'].values())} chunks), {yes['n']} answerable"
        f" and {no['n']} unanswerable questions, max_tokens {m['max_tokens']},"
        f" {'streamed' if m['stream'] else 'not streamed'}; {m['cpus']} CPUs",
        f"retrieval: the answering file among the passages for {c['file_found']}/{yes['n']}"
        f" (first for {c['file_first']}); best similarity answerable min {yes['min']:.3f}"
        f" median {yes['median']:.3f}, unanswerable max {no['max'] or 0:.3f}"
        f" median {no['median'] or 0:.3f}; best threshold {c['best_threshold']:.3f}"
        f" ({c['best_right']}/{yes['n'] + no['n']} right, separable: {c['separable']})",
    ]
    header = ["configuration", "right file", "fact", "file+fact", "false refusal"]
    header += ["refused (unanswerable)", "p50 s", "errors"]
    rows = []
    for name, s in result["scores"].items():
        rows.append(
            [
                name,
                _pct(s["cited_right_file"]),
                _pct(s["fact_in_answer"]),
                _pct(s["right_file_and_fact"]),
                _pct(s["false_refusal"]),
                _pct(s["refused_unanswerable"]),
                f"{s['p50_answer_s']:.1f}" if s["p50_answer_s"] is not None else "-",
                str(s["errors"]),
            ]
        )
    lines += table(header, rows, first=14)
    for name, env in m["configs"].items():
        shown = {k: (v if len(v) < 40 else v[:37] + "...") for k, v in env.items()}
        lines.append(f"  {name}: {shown or 'the defaults'}")
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="hearth bench answers", description=__doc__.split("\n")[0])
    ap.add_argument("--compare", action="store_true", help="`before` against today's defaults")
    ap.add_argument("--config", action="append", help="NAME:KEY=VALUE,... (repeatable)")
    ap.add_argument("--stream", action="store_true", help="ask streamed (default: not)")
    ap.add_argument("--max-tokens", type=int, default=128, help="answer budget (default 128)")
    ap.add_argument("--only", type=int, help="the first N questions (a smoke run)")
    ap.add_argument("--model-dir", type=Path, default=default_model_dir())
    ap.add_argument("--if-available", action="store_true", help="no CPU vLLM: say so, exit 0")
    ap.add_argument("--json", type=Path, help="write the results (and every answer) here")
    return ap.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    return bench_main(parse_args, run, render, argv)


if __name__ == "__main__":
    run_script(main)
