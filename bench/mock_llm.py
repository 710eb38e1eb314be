"""A streaming OpenAI-compatible backend with a fixed token rate, for measuring what sits in
front of it. Raw asyncio HTTP/1.1 (keep-alive, chunked SSE), pre-encoded chunks: cheap enough
that the gateways measured, not the mock, are the bottleneck.

    python -m bench.mock_llm --port 8009 [--model mock] [--rate 200] [--tokens 50] [--prefill-ms 0]

GET /v1/models, POST /v1/chat/completions (streamed or not). Each answer is `min(max_tokens,
--tokens)` tokens " tok", the first `--prefill-ms` after the request, then one every 1/rate s.
GET /bench/log returns (and clears) the arrival time (CLOCK_MONOTONIC) of each chat request;
GET /bench/stats the number of connections accepted so far.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

TOKEN = " tok"


def _now() -> float:
    return time.clock_gettime(time.CLOCK_MONOTONIC)


@dataclass
class Mock:
    model: str = "mock"
    rate: float = 200.0
    tokens: int = 50
    prefill_s: float = 0.0
    log: list[dict[str, Any]] = field(default_factory=list)
    connections: int = 0  # accepted so far: a gateway that keeps connections alive opens few

    def __post_init__(self) -> None:
        base = {"id": "chatcmpl-mock", "object": "chat.completion.chunk", "created": 0}
        base["model"] = self.model

        def event(delta: dict[str, Any], finish: str | None = None, **extra: Any) -> bytes:
            choice = {"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}
            return _chunk(b"data: " + _json({**base, "choices": [choice], **extra}) + b"\n\n")

        self.first = event({"role": "assistant", "content": ""})
        self.token = event({"content": TOKEN})
        self.stop = event({}, "stop")
        self.done = _chunk(b"data: [DONE]\n\n") + b"0\r\n\r\n"
        self.usage_base = base
        self.models = _json(
            {
                "object": "list",
                "data": [
                    {
                        "id": self.model,
                        "object": "model",
                        "owned_by": "bench",
                        "created": 0,
                        "max_model_len": 4096,
                    }
                ],
            }
        )

    def n_tokens(self, body: dict[str, Any]) -> int:
        limit = body.get("max_completion_tokens") or body.get("max_tokens") or self.tokens
        return max(1, min(int(limit), self.tokens))

    async def stream(self, writer: asyncio.StreamWriter, body: dict[str, Any]) -> None:
        n, loop = self.n_tokens(body), asyncio.get_running_loop()
        writer.write(
            b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\n"
            b"transfer-encoding: chunked\r\n\r\n" + self.first
        )
        start = loop.time() + self.prefill_s
        for i in range(n):
            delay = start + i / self.rate - loop.time()  # a fixed schedule: lag never adds up
            if delay > 0:
                await asyncio.sleep(delay)
            writer.write(self.token)
            await writer.drain()
        tail = self.stop
        if (body.get("stream_options") or {}).get("include_usage"):
            usage = {"prompt_tokens": 10, "completion_tokens": n, "total_tokens": 10 + n}
            tail += _chunk(
                b"data: " + _json({**self.usage_base, "choices": [], "usage": usage}) + b"\n\n"
            )
        writer.write(tail + self.done)
        await writer.drain()

    async def complete(self, body: dict[str, Any]) -> bytes:
        n = self.n_tokens(body)
        await asyncio.sleep(self.prefill_s + n / self.rate)
        return _json(
            {
                "id": "chatcmpl-mock",
                "object": "chat.completion",
                "created": 0,
                "model": self.model,
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": TOKEN * n},
                        "finish_reason": "stop",
                    }
                ],
                "usage": {"prompt_tokens": 10, "completion_tokens": n, "total_tokens": 10 + n},
            }
        )

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while await self._one(reader, writer):
                pass
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    async def _one(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        line = await reader.readline()
        if not line.strip():
            return False
        method, path = line.decode("latin-1").split(" ", 2)[:2]
        headers: dict[str, str] = {}
        while (h := await reader.readline()) not in (b"\r\n", b"\n", b""):
            k, _, v = h.decode("latin-1").partition(":")
            headers[k.strip().lower()] = v.strip()
        raw = await _read_body(reader, headers)
        keep = headers.get("connection", "").lower() != "close"
        path = path.split("?", 1)[0]
        if method == "GET" and path.endswith("/models"):
            _respond(writer, 200, self.models)
        elif method == "GET" and path == "/bench/log":
            _respond(writer, 200, _json(self.log))
            self.log = []
        elif method == "GET" and path == "/bench/stats":
            _respond(writer, 200, _json({"connections": self.connections}))
        elif method == "POST" and path.endswith("/chat/completions"):
            body = json.loads(raw or b"{}")
            stream = bool(body.get("stream"))
            self.log.append(
                {"t": _now(), "stream": stream, "messages": len(body.get("messages") or [])}
            )
            if stream:
                await self.stream(writer, body)
            else:
                _respond(writer, 200, await self.complete(body))
        else:
            _respond(writer, 404, _json({"error": {"message": f"no route {method} {path}"}}))
        await writer.drain()
        return keep


def _json(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


def _chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


def _respond(writer: asyncio.StreamWriter, status: int, body: bytes) -> None:
    reason = b"OK" if status == 200 else b"Not Found"
    writer.write(
        b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s"
        % (status, reason, len(body), body)
    )


async def _read_body(reader: asyncio.StreamReader, headers: dict[str, str]) -> bytes:
    if "chunked" in headers.get("transfer-encoding", "").lower():
        parts = []
        while size := int((await reader.readline()).split(b";")[0].strip() or b"0", 16):
            parts.append(await reader.readexactly(size))
            await reader.readline()
        while (await reader.readline()) not in (b"\r\n", b"\n", b""):
            pass  # trailers
        return b"".join(parts)
    return await reader.readexactly(int(headers.get("content-length") or 0))


async def serve(mock: Mock, host: str, port: int) -> None:
    server = await asyncio.start_server(mock.handle, host, port, backlog=1024)
    async with server:
        await server.serve_forever()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m bench.mock_llm", description=__doc__.split("\n")[0]
    )
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--model", default="mock")
    ap.add_argument("--rate", type=float, default=200.0, help="tokens/s per stream")
    ap.add_argument("--tokens", type=int, default=50, help="tokens per answer (at most)")
    ap.add_argument("--prefill-ms", type=float, default=0.0, help="delay before the first token")
    args = ap.parse_args(argv)
    mock = Mock(args.model, args.rate, args.tokens, args.prefill_ms / 1000)
    run: Callable[[Coroutine[Any, Any, None]], None] = asyncio.run
    with contextlib.suppress(ImportError):
        import uvloop

        run = uvloop.run
    with contextlib.suppress(KeyboardInterrupt):
        run(serve(mock, args.host, args.port))
    return 0


if __name__ == "__main__":
    import signal
    import sys

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    sys.exit(main())
