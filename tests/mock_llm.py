"""A scripted OpenAI-compatible backend on a real socket, for tests of the LLM client's edges
(round-robin, health, disconnects, rewrite prompts) that the real CPU model cannot stage on demand.

Every request is recorded; `reply` decides the answer text; a stream sends one word per
`delay_s`, and `cancelled` counts streams whose client went away before the end.

`python -m tests.mock_llm --port P` serves one in the foreground: a process of its own, which
fault tests kill mid-answer.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from tests.conftest import free_port


@dataclass
class MockLLM:
    model: str = "mock"
    max_model_len: int = 2048
    delay_s: float = 0.0
    complete_delay_s: float = 0.0  # a non-streamed answer waits this long before it is sent
    # a backend generating this many tokens (words) a second: a non-streamed answer takes its
    # words' worth of time (and reports them as its completion_tokens), a stream sends one word
    # per 1/tokens_per_s (instead of delay_s)
    tokens_per_s: float | None = None
    announce: bool = False  # print "request" on stdout when a chat request arrives
    status: int = 200  # anything else: every chat request fails with it
    error: str = "backend says no"
    reply: Callable[[list[dict[str, Any]]], str] = lambda messages: "A plain answer."
    requests: list[dict[str, Any]] = field(default_factory=list)
    cancelled: int = 0
    finished: int = 0
    peers: set[tuple[str, int]] = field(default_factory=set)  # client (host, port) per connection
    url: str = ""

    def app(self) -> Starlette:
        async def models(_: Request) -> Response:
            if self.status in (502, 503):
                return JSONResponse({"error": {"message": "down"}}, status_code=self.status)
            card = {"id": self.model, "object": "model", "max_model_len": self.max_model_len}
            return JSONResponse({"object": "list", "data": [card]})

        async def chat(request: Request) -> Response:
            body = await request.json()
            self.requests.append(body)
            if request.client is not None:
                self.peers.add((request.client.host, request.client.port))
            if self.announce:
                print("request", flush=True)
            if self.status != 200:
                err = {"message": self.error, "type": "x", "param": None, "code": None}
                return JSONResponse({"error": err}, status_code=self.status)
            text = self.reply(body["messages"])
            if body.get("stream"):
                return StreamingResponse(self._stream(text), media_type="text/event-stream")
            await asyncio.sleep(self.complete_delay_s)
            usage = {"prompt_tokens": 10, "completion_tokens": 3, "total_tokens": 13}
            if self.tokens_per_s:
                words = len(text.split(" "))
                await asyncio.sleep(words / self.tokens_per_s)
                usage = {
                    "prompt_tokens": 10,
                    "completion_tokens": words,
                    "total_tokens": words + 10,
                }
            return JSONResponse(
                {
                    "id": "x",
                    "object": "chat.completion",
                    "created": 0,
                    "model": self.model,
                    "choices": [
                        {
                            "index": 0,
                            "message": {"role": "assistant", "content": text},
                            "finish_reason": "stop",
                        }
                    ],
                    "usage": usage,
                }
            )

        return Starlette(
            routes=[
                Route("/v1/models", models),
                Route("/v1/chat/completions", chat, methods=["POST"]),
            ]
        )

    async def _stream(self, text: str) -> AsyncIterator[str]:
        # whole chunks, as vLLM sends them: plain chat relays them to the client as they are
        base = {"id": "chatcmpl-mock", "object": "chat.completion.chunk", "created": 0}
        base["model"] = self.model

        def event(delta: dict[str, str], finish: str | None = None) -> str:
            choice = {"index": 0, "delta": delta, "finish_reason": finish}
            return f"data: {json.dumps({**base, 'choices': [choice]})}\n\n"

        try:
            for word in text.split(" "):
                await asyncio.sleep(1 / self.tokens_per_s if self.tokens_per_s else self.delay_s)
                yield event({"content": word + " "})
            yield event({}, "stop")
            yield "data: [DONE]\n\n"
            self.finished += 1
        except (asyncio.CancelledError, GeneratorExit):
            self.cancelled += 1
            raise


@contextmanager
def serve(mock: MockLLM) -> Iterator[MockLLM]:
    """Run `mock` with uvicorn on a free port in a thread; `mock.url` is its /v1 base URL."""
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(mock.app(), host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline:
            raise RuntimeError("the mock LLM did not start")
        time.sleep(0.02)
    mock.url = f"http://127.0.0.1:{port}/v1"
    try:
        yield mock
    finally:
        server.should_exit = True
        thread.join(10)


def main(argv: list[str] | None = None) -> None:
    """Serve a MockLLM on 127.0.0.1:PORT until killed; it answers REPLY to every question."""
    p = argparse.ArgumentParser(prog="python -m tests.mock_llm")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--reply", default="A plain answer.")
    p.add_argument("--delay", type=float, default=0.0, help="seconds between streamed words")
    p.add_argument("--complete-delay", type=float, default=0.0, help="before a JSON answer")
    p.add_argument("--announce", action="store_true", help='print "request" for each chat')
    args = p.parse_args(argv)
    mock = MockLLM(
        delay_s=args.delay,
        complete_delay_s=args.complete_delay,
        announce=args.announce,
        reply=lambda _: args.reply,
    )
    uvicorn.run(mock.app(), host="127.0.0.1", port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
