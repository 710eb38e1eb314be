"""The load generator's side of a streamed chat completion: httpx, one request, timed."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any, TypeVar

import httpx

from .harness import Child, now
from .mock_llm import TOKEN

T = TypeVar("T")


@dataclass(frozen=True)
class Target:
    name: str
    url: str  # .../chat/completions
    model: str
    headers: dict[str, str]
    server: Child | None = None  # whose CPU time is counted (the mock's, for direct)


@dataclass
class StreamResult:
    ok: bool
    ttft: float = 0.0
    seconds: float = 0.0
    tokens: float = 0.0
    decode_s: float = 0.0
    error: str | None = None
    usage_tokens: int | None = None  # completion_tokens of the final usage chunk, when asked for


# a content delta with text (a role chunk's "content": "" does not match); no JSON parsing per
# token, so the load generator keeps up with 64 streams on a small machine
_CONTENT = re.compile(rb'"content":\s*"((?:[^"\\]|\\.)+)"')
_USAGE = re.compile(rb'"completion_tokens":\s*(\d+)')


async def stream_chat(client: httpx.AsyncClient, target: Target, body: dict[str, Any]) -> Any:
    """One streamed chat completion: time to the first content-bearing chunk, tokens, total."""
    start = now()
    first = last = 0.0
    chars = 0
    usage: int | None = None
    async with client.stream(
        "POST", target.url, json={**body, "model": target.model}, headers=target.headers
    ) as resp:
        if resp.status_code != 200:
            await resp.aread()
            return StreamResult(False, error=f"HTTP {resp.status_code}: {resp.text[:200]}")
        buf = b""
        async for raw in resp.aiter_raw():
            buf += raw.replace(b"\r\n", b"\n")
            cut = buf.rfind(b"\n\n")  # complete events only: a read may end mid-event
            if cut < 0:
                continue
            events, buf = buf[:cut], buf[cut + 2 :]
            n = sum(len(m.group(1)) for m in _CONTENT.finditer(events))
            if n:
                last = now()
                first = first or last
                chars += n
            for m in _USAGE.finditer(events):
                usage = int(m.group(1))
    end = now()
    if not chars:
        return StreamResult(False, error="no content in the stream")
    return StreamResult(
        True, first - start, end - start, chars / len(TOKEN), last - first, usage_tokens=usage
    )


def run_async(coro: Coroutine[Any, Any, T]) -> T:
    """uvloop when installed (uvicorn[standard] brings it): the client's own overhead stays
    small next to what it measures."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    return uvloop.run(coro)
