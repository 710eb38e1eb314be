"""The soak run's load: one coroutine per kind of traffic (bench.soak runs them together), each
recording its requests' latencies and errors in a shared Recorder."""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections import defaultdict, deque
from collections.abc import Awaitable
from pathlib import Path
from typing import Any

import httpx

from . import corpus
from .harness import now, summary

KINDS = ("search", "chat", "upload", "write")
KEEP_UPLOADS = 5


class Recorder:
    """Requests per kind since the last sample: latencies, errors and the first error texts."""

    def __init__(self) -> None:
        self.seconds: dict[str, list[float]] = defaultdict(list)
        self.errors: dict[str, int] = defaultdict(int)
        self.examples: list[str] = []

    def record(self, kind: str, seconds: float, error: str | None = None) -> None:
        if error is None:
            self.seconds[kind].append(seconds)
            return
        self.errors[kind] += 1
        if len(self.examples) < 20:
            self.examples.append(f"{kind}: {error}"[:300])

    def take(self) -> dict[str, dict[str, Any]]:
        out = {}
        for kind in KINDS:
            ok = summary(self.seconds[kind])
            out[kind] = {
                "requests": ok["n"] + self.errors[kind],
                "errors": self.errors[kind],
                "p50_ms": round(ok.get("p50", 0.0), 1),
                "p95_ms": round(ok.get("p95", 0.0), 1),
            }
        self.seconds.clear()
        self.errors.clear()
        return out


async def timed(rec: Recorder, kind: str, call: Awaitable[httpx.Response]) -> httpx.Response | None:
    start = now()
    try:
        resp = await call
    except httpx.HTTPError as exc:
        rec.record(kind, now() - start, f"{type(exc).__name__}: {exc}")
        return None
    ok = resp.status_code < 300
    rec.record(kind, now() - start, None if ok else f"HTTP {resp.status_code}: {resp.text[:200]}")
    return resp if ok else None


async def pause(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)


def question(rng: random.Random) -> str:
    return corpus.sentence(rng).rstrip(".").split(",")[0] + "?"


async def searcher(http: httpx.AsyncClient, rec: Recorder, stop: asyncio.Event, gap: float) -> None:
    rng = random.Random(1)
    while not stop.is_set():
        await timed(rec, "search", http.post("/v1/search", json={"query": question(rng), "k": 5}))
        await pause(stop, gap)


async def chat_once(http: httpx.AsyncClient, body: dict[str, Any]) -> str | None:
    """None, or what went wrong; a streamed answer must end in [DONE] with no error event."""
    if not body["stream"]:
        resp = await http.post("/v1/chat/completions", json=body)
        if resp.status_code != 200:
            return f"HTTP {resp.status_code}: {resp.text[:200]}"
        return None if resp.json()["choices"][0]["message"]["content"] else "empty answer"
    async with http.stream("POST", "/v1/chat/completions", json=body) as resp:
        text = (await resp.aread()).decode(errors="replace")
    if resp.status_code != 200:
        return f"HTTP {resp.status_code}: {text[:200]}"
    if 'data: {"error"' in text:
        return "error event: " + text.split('data: {"error"', 1)[1][:200]
    return None if "data: [DONE]" in text else "stream ended without [DONE]"


async def chatter(http: httpx.AsyncClient, rec: Recorder, stop: asyncio.Event, gap: float) -> None:
    rng = random.Random(2)
    turn = 0
    while not stop.is_set():
        body = {
            "model": "hearth",
            "messages": [{"role": "user", "content": question(rng)}],
            "max_tokens": 24,
            "temperature": 0,
            "stream": turn % 2 == 1,
        }
        start = now()
        try:
            error = await chat_once(http, body)
        except httpx.HTTPError as exc:
            error = f"{type(exc).__name__}: {exc}"
        rec.record("chat", now() - start, error)
        turn += 1
        await pause(stop, gap)


async def uploader(http: httpx.AsyncClient, rec: Recorder, stop: asyncio.Event, gap: float) -> None:
    rng = random.Random(3)
    kept: deque[str] = deque()
    i = 0
    while not stop.is_set():
        i += 1
        text = f"Upload {i}\n\n" + corpus.paragraph(rng) + "\n\n" + corpus.paragraph(rng)
        files = {"file": (f"upload-{i}.txt", text.encode(), "text/plain")}
        resp = await timed(rec, "upload", http.post("/v1/files", files=files))
        if resp is not None:
            kept.append(resp.json()["id"])
        if len(kept) > KEEP_UPLOADS:
            await timed(rec, "upload", http.delete(f"/v1/files/{kept.popleft()}"))
        await pause(stop, gap)


def write_once(folder: Path, rng: random.Random, i: int, max_files: int) -> str:
    """Add, rewrite or delete one Markdown file; returns which."""
    present = sorted(folder.glob("soak-*.md"))
    if len(present) < max_files // 3 or (len(present) < max_files and rng.random() < 0.4):
        corpus.write_md(folder / f"soak-{i}.md", rng, i)
        return "add"
    victim = rng.choice(present)
    if rng.random() < 0.6:
        corpus.write_md(victim, rng, i)
        return "modify"
    victim.unlink()
    return "delete"


async def writer(folder: Path, rec: Recorder, stop: asyncio.Event, gap: float, cap: int) -> None:
    rng = random.Random(4)
    i = 1000
    while not stop.is_set():
        i += 1
        start = now()
        try:
            await asyncio.to_thread(write_once, folder, rng, i, cap)
            rec.record("write", now() - start)
        except OSError as exc:
            rec.record("write", now() - start, f"{type(exc).__name__}: {exc}")
        await pause(stop, gap)
