"""Soak: the real stack (`hearth up` on embedded defaults, the CPU vLLM) under moderate mixed load
for a long while, sampled every minute, to show memory stays flat and errors do not grow.

    python -m bench.soak [--minutes 20] [--sample-s 60] [--json OUT] [--workdir DIR]
    hearth bench soak --minutes N

The load, all through the public interfaces with one admin token:
  write   a file in the watched folder added, rewritten or deleted every --write-s seconds
          (at most --max-files at a time), which the watcher and the bulk worker index
  search  POST /v1/search, one at a time, --search-pause s apart
  chat    POST /v1/chat/completions through the real CPU model, one at a time, short answers,
          streamed and not streamed in turn
  upload  POST /v1/files every --upload-s seconds (the interactive worker indexes it), and
          DELETE /v1/files of the oldest once more than a few are kept

Every --sample-s seconds: RSS of each part of the stack (bench.procs), requests, errors and
p50/p95 per kind in that interval, and documents by status. At the end: a table per sample and
a verdict (bench.soak_report); the JSON goes to .cache/bench/results/soak.json unless --json.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import shutil
import sys
import tempfile
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx

from . import corpus
from .harness import REPO, machine, now, say, write_json
from .procs import hearth_rss
from .soak_load import Recorder, chat_once, chatter, searcher, uploader, writer
from .soak_report import render, verdict
from .stack import UpStack, running

RESULTS = REPO / ".cache" / "bench" / "results" / "soak.json"
SEED_FILES = 6


class Probe:
    """Reads the stack's own database (documents by status) and its processes' memory."""

    def __init__(self, stack: UpStack) -> None:
        import psycopg

        from core.embedded import EmbeddedPostgres

        self.stack = stack
        self._pg = EmbeddedPostgres(stack.pg_dir)  # attaches to the running server
        self.conn = psycopg.connect(self._pg.start(), autocommit=True)

    def documents(self) -> dict[str, int]:
        rows = self.conn.execute("SELECT status, count(*) FROM documents GROUP BY status")
        return {status: int(n) for status, n in rows.fetchall()}

    def sample(self, t0: float, requests: dict[str, Any]) -> dict[str, Any]:
        import os

        return {
            "t_s": round(now() - t0, 1),
            "rss_mb": hearth_rss(self.stack.child.proc.pid, self.stack.pg_dir),
            "requests": requests,
            "documents": self.documents(),
            "load_average": os.getloadavg()[0],
        }

    def close(self) -> None:
        self.conn.close()
        self._pg.stop()


async def settle(probe: Probe, count: int, timeout_s: float = 600) -> None:
    deadline = now() + timeout_s
    while now() < deadline:
        docs = await asyncio.to_thread(probe.documents)
        if docs.get("indexed", 0) + docs.get("failed", 0) >= count:
            return
        await asyncio.sleep(1)
    raise RuntimeError(f"the seed files were not indexed in {timeout_s:.0f} s: {docs}")


async def warm_up(stack: UpStack, http: httpx.AsyncClient, probe: Probe) -> None:
    """Both workers, the embedder and the model busy once before the clock starts: seed files
    in the watched folder, one upload, one chat."""
    rng = random.Random(0)
    for i in range(SEED_FILES):
        corpus.write_md(stack.watch_dir / f"soak-{i}.md", rng, i)
    files = {"file": ("warm-up.txt", corpus.paragraph(rng).encode(), "text/plain")}
    (await http.post("/v1/files", files=files)).raise_for_status()
    await settle(probe, SEED_FILES + 1)
    hello = [{"role": "user", "content": "Hello?"}]
    body = {"model": "hearth", "max_tokens": 8, "stream": False, "messages": hello}
    if error := await chat_once(http, body):
        raise RuntimeError(f"the warm-up chat failed: {error}")


async def soak(stack: UpStack, args: argparse.Namespace) -> dict[str, Any]:
    probe = await asyncio.to_thread(Probe, stack)
    rec, stop = Recorder(), asyncio.Event()
    headers = {"Authorization": f"Bearer {stack.token}"}
    http = httpx.AsyncClient(base_url=stack.api, headers=headers, timeout=300)
    samples: list[dict[str, Any]] = []
    try:
        await warm_up(stack, http, probe)
        say(f"warm; {args.minutes} min of load, a sample every {args.sample_s:.0f} s")
        # the first sample is the settled state before any load (taken after the tasks start,
        # it raced their first upload: {"indexed": 7, "queued": 1})
        t0 = now()
        samples.append(await asyncio.to_thread(probe.sample, t0, rec.take()))
        tasks = [
            asyncio.create_task(searcher(http, rec, stop, args.search_pause)),
            asyncio.create_task(chatter(http, rec, stop, args.chat_pause)),
            asyncio.create_task(uploader(http, rec, stop, args.upload_s)),
            asyncio.create_task(writer(stack.watch_dir, rec, stop, args.write_s, args.max_files)),
        ]
        end = t0 + args.minutes * 60
        while (due := t0 + len(samples) * args.sample_s) <= end + 1e-6:
            await asyncio.sleep(max(0.0, due - now()))
            if stack.child.proc.poll() is not None:
                raise RuntimeError(f"hearth up exited ({stack.child.proc.returncode})")
            samples.append(await asyncio.to_thread(probe.sample, t0, rec.take()))
            say(_progress(samples[-1]))
        stop.set()
        _, pending = await asyncio.wait(tasks, timeout=300)
        for t in pending:
            t.cancel()
        for t in tasks:
            if t.done() and not t.cancelled() and t.exception():
                raise t.exception()  # type: ignore[misc]
    finally:
        stop.set()
        await http.aclose()
        await asyncio.to_thread(probe.close)
    log = stack.child.tail(100_000_000).split("Hearth is up.", 1)[-1]
    return {
        "meta": {
            **machine(),
            **{k: v for k, v in vars(args).items() if k not in ("json", "workdir")},
        },
        "samples": samples,
        "error_examples": rec.examples,
        "restarts": log.count("; restarting"),
        "log_tracebacks": log.count("Traceback (most recent call last)"),
        "log_exceptions": exceptions(log),
        "verdict": verdict(samples),
    }


def exceptions(log: str, top: int = 8) -> dict[str, int]:
    """The exception line ending each traceback in the stack's log, counted."""
    seen: Counter[str] = Counter()
    lines = log.splitlines()
    for i, line in enumerate(lines):
        if line.startswith("Traceback (most recent call last)"):
            end = next((x for x in lines[i + 1 :] if x and not x[0].isspace()), "?")
            seen[end[:200]] += 1
    return dict(seen.most_common(top))


def _progress(s: dict[str, Any]) -> str:
    total = sum(p["rss_mb"] for p in s["rss_mb"].values())
    reqs = ", ".join(f"{k} {v['requests']}/{v['errors']}" for k, v in s["requests"].items())
    return f"t={s['t_s'] / 60:.1f} min: RSS {total:.0f} MB; requests/errors {reqs}"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__.split("\n")[0])
    ap.add_argument("--minutes", type=float, default=20.0, help="load duration after warm-up")
    ap.add_argument("--sample-s", type=float, default=60.0, help="seconds between samples")
    ap.add_argument("--search-pause", type=float, default=1.0)
    ap.add_argument("--chat-pause", type=float, default=2.0)
    ap.add_argument("--upload-s", type=float, default=10.0)
    ap.add_argument("--write-s", type=float, default=3.0)
    ap.add_argument("--max-files", type=int, default=24)
    ap.add_argument("--workdir", type=Path, help="default: a fresh temporary folder")
    ap.add_argument("--json", type=Path, default=RESULTS)
    return ap.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="hearth-soak-") as tmp:
        workdir = args.workdir or Path(tmp)
        try:
            with running(workdir / "data") as stack:
                result = asyncio.run(soak(stack, args))
        finally:
            log = workdir / "hearth-up.log"
            if args.json and log.exists():  # the stack's own log, kept beside the results
                args.json.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(log, args.json.with_suffix(".log"))
    print(render(result))
    write_json(args.json, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
