"""Scripted OpenAI-compatible servers that speak like the real ones Hearth meets: vLLM, llama.cpp's
own server, llama-cpp-python's server, Ollama and LM Studio.

Each answers on a real socket (served with tests.mock_llm.serve) with the bodies recorded in
tests/fixtures/backends/ (see the README there for where each came from), and behaves as its
original does where Hearth depends on it:
- where it reports its context window (vLLM's /v1/models, llama.cpp's /props, Ollama's /api/show
  and /api/ps, LM Studio's /api/v0/models) or does not (llama-cpp-python);
- when it refuses a prompt as too long (a prompt of `n_ctx` tokens or more; max_tokens beyond the
  window is shortened, as all of them do), in its own words and status, and how a streamed refusal
  looks (llama-cpp-python: a 200 stream with no event at all);
- llama-cpp-python's one lock: /v1/models waits while an answer is generated, and any request
  waiting for it cuts that answer short (`[DONE]` without a finish_reason).

Tokens are counted the backend's way, unlike Hearth's estimate: a word or a punctuation mark is
one token (times `token_factor`), plus 4 per message and 3 for the reply header.
"""

from __future__ import annotations

import asyncio
import copy
import json
import math
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

FIXTURES = Path(__file__).parent / "fixtures" / "backends"
FLAVORS = ("vllm", "llama_cpp_server", "llama_cpp_python", "ollama", "lmstudio")


def fixture(flavor: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((FIXTURES / f"{flavor}.json").read_text())
    return data


_WORD = re.compile(r"\w+|[^\w\s]")


class _EmptyStreamThenCrash(Response):
    """llama-cpp-python's streamed refusal: its ValueError is raised inside the event publisher
    after the 200 and the SSE headers went out; the stream ends with no event, and then the
    server (uvicorn, for the exception) closes the connection. (The real one closes it while a
    request the client sent next on it is being read; `make test-backends` meets that race.)"""

    def __init__(self, recorded: dict[str, Any]) -> None:
        super().__init__(recorded["body_text"], recorded["status"], media_type="text/event-stream")

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await super().__call__(scope, receive, send)
        raise ValueError("Requested tokens exceed context window (scripted llama-cpp-python)")


@dataclass
class Scripted:
    """One backend of kind `flavor` serving a model with a context window of `n_ctx` tokens."""

    flavor: str
    n_ctx: int = 512
    model: str = "smollm2"
    reply: str = "The boiler error code E-4471 means the pressure sensor failed."
    delay_s: float = 0.0  # between streamed words
    complete_delay_s: float = 0.0  # a non-streamed answer takes this long (holding its lock)
    token_factor: float = 1.0
    older: bool = False  # llama.cpp: a /v1/models without meta.n_ctx (releases before it)
    num_ctx_in_modelfile: bool = True  # Ollama: the model's Modelfile sets num_ctx
    loaded: bool = True  # Ollama / LM Studio: the model is loaded (so /api/ps etc. show it)
    fail_mid_stream: bool = False  # llama.cpp: an error event after the first word
    models_delay_s: float = 0.0  # GET /v1/models answers this late (a frozen backend)
    hits: list[str] = field(default_factory=list)  # "GET /props", ... in order
    requests: list[dict[str, Any]] = field(default_factory=list)  # chat bodies
    refused: int = 0  # chat requests refused as too long
    answered: int = 0
    url: str = ""

    def __post_init__(self) -> None:
        assert self.flavor in FLAVORS, self.flavor
        self.fx = fixture(self.flavor)
        self._lock: asyncio.Lock | None = None
        self.waiting = 0  # requests waiting for llama-cpp-python's lock
        self.interrupted = 0  # answers llama-cpp-python cut short for one of them

    # --- counting like the backend -----------------------------------------------------------
    def prompt_tokens(self, messages: list[dict[str, Any]]) -> int:
        words = sum(4 + len(_WORD.findall(str(m.get("content") or ""))) for m in messages)
        return math.ceil(self.token_factor * (words + 3))

    # --- the app -----------------------------------------------------------------------------
    def app(self) -> Starlette:
        routes = [
            Route("/v1/models", self._models),
            Route("/v1/chat/completions", self._chat, methods=["POST"]),
        ]
        if self.flavor == "llama_cpp_server":
            routes.append(Route("/props", self._props))
        if self.flavor == "ollama":
            routes += [
                Route("/api/show", self._ollama_show, methods=["POST"]),
                Route("/api/ps", self._ollama_ps),
            ]
        if self.flavor == "lmstudio":
            routes.append(Route("/api/v0/models", self._lmstudio_models))
        routes.append(Route("/{path:path}", self._not_found, methods=["GET", "POST"]))
        return Starlette(routes=routes)

    def _hit(self, request: Request) -> None:
        self.hits.append(f"{request.method} {request.url.path}")

    def lock(self) -> asyncio.Lock:
        if self._lock is None:
            self._lock = asyncio.Lock()
        return self._lock

    async def acquire(self) -> None:
        """llama-cpp-python's lock; a request waiting for it interrupts the answer being
        streamed (its server's default, interrupt_requests=True)."""
        self.waiting += 1
        try:
            await self.lock().acquire()
        finally:
            self.waiting -= 1

    async def _not_found(self, request: Request) -> Response:
        self._hit(request)
        if self.flavor == "ollama":
            return Response("404 page not found", status_code=404, media_type="text/plain")
        return JSONResponse({"detail": "Not Found"}, status_code=404)

    async def _models(self, request: Request) -> Response:
        self._hit(request)
        until = asyncio.get_running_loop().time() + self.models_delay_s
        while asyncio.get_running_loop().time() < until:  # a frozen backend, until the client goes
            if await request.is_disconnected():
                return Response(status_code=499)
            await asyncio.sleep(0.05)
        body = copy.deepcopy(self.fx["models_older" if self.older else "models"]["body"])
        card = body["data"][0]
        if self.flavor == "vllm":
            card.update(id=self.model, max_model_len=self.n_ctx)
        elif self.flavor == "llama_cpp_server":
            card["id"] = self.model
            if "n_ctx" in card["meta"]:
                card["meta"]["n_ctx"] = self.n_ctx
        elif self.flavor == "llama_cpp_python":
            card["id"] = self.model
            await self.acquire()  # every route of llama-cpp-python's server takes it
            self.lock().release()
            return JSONResponse(body)
        else:
            card["id"] = f"{self.model}:latest" if self.flavor == "ollama" else self.model
        return JSONResponse(body)

    async def _props(self, request: Request) -> Response:
        self._hit(request)
        body = copy.deepcopy(self.fx["props"]["body"])
        body["default_generation_settings"]["n_ctx"] = self.n_ctx
        body["model_alias"] = self.model
        return JSONResponse(body)

    async def _ollama_show(self, request: Request) -> Response:
        self._hit(request)
        asked = (await request.json()).get("model")
        if asked not in (self.model, f"{self.model}:latest"):
            return JSONResponse({"error": f"model '{asked}' not found"}, status_code=404)
        body = copy.deepcopy(
            self.fx["show" if self.num_ctx_in_modelfile else "show_without_num_ctx"]
        )
        body = body["body"]
        if self.num_ctx_in_modelfile:
            body["parameters"] = body["parameters"].replace("512", str(self.n_ctx))
        return JSONResponse(body)

    async def _ollama_ps(self, request: Request) -> Response:
        self._hit(request)
        if not self.loaded:
            return JSONResponse(self.fx["ps_empty"]["body"])
        body = copy.deepcopy(self.fx["ps"]["body"])
        body["models"][0].update(
            name=f"{self.model}:latest", model=f"{self.model}:latest", context_length=self.n_ctx
        )
        return JSONResponse(body)

    async def _lmstudio_models(self, request: Request) -> Response:
        self._hit(request)
        body = copy.deepcopy(self.fx["v0_models" if self.loaded else "v0_models_not_loaded"])
        body = body["body"]
        body["data"][0]["id"] = self.model
        if self.loaded:
            body["data"][0]["loaded_context_length"] = self.n_ctx
        return JSONResponse(body)

    # --- chat ----------------------------------------------------------------------------------
    async def _chat(self, request: Request) -> Response:
        self._hit(request)
        body = await request.json()
        self.requests.append(body)
        stream = bool(body.get("stream"))
        n_prompt = self.prompt_tokens(body["messages"])
        max_tokens = int(body.get("max_tokens") or 16)
        if self.flavor == "llama_cpp_python":
            await self.acquire()
        try:
            if n_prompt >= self.n_ctx:
                self.refused += 1
                if self.flavor in ("ollama", "lmstudio"):
                    self.loaded = True  # the request loaded the model before it was refused
                return self._refusal(n_prompt, max_tokens, stream)
            text = self.reply
            if stream:
                held = self.flavor == "llama_cpp_python"
                return StreamingResponse(
                    self._stream(text, body, n_prompt, held), media_type="text/event-stream"
                )
            await asyncio.sleep(self.complete_delay_s)  # generating, silent until done
            self.answered += 1
            if self.flavor in ("ollama", "lmstudio"):
                self.loaded = True
            return JSONResponse(self._completion(text, n_prompt))
        finally:
            # a streamed answer releases it when its stream ends
            if self.flavor == "llama_cpp_python" and (not stream or n_prompt >= self.n_ctx):
                self.lock().release()

    def _refusal(self, n_prompt: int, max_tokens: int, stream: bool) -> Response:
        fx = self.fx
        if self.flavor == "llama_cpp_python" and stream:
            return _EmptyStreamThenCrash(fx["stream_context_error"])
        body = copy.deepcopy(fx["context_error"]["body"])
        template = fx.get("context_error_template")
        if self.flavor == "vllm":  # its tokenizer stops at the window + 1: "at least" that many
            n_prompt = self.n_ctx + 1
        values = dict(
            n_ctx=self.n_ctx, n_prompt=n_prompt, max_tokens=max_tokens, total=n_prompt + max_tokens
        )
        if self.flavor == "lmstudio":
            body["error"] = template.format(**values)
        elif template:
            body["error"]["message"] = template.format(**values)
        if self.flavor == "llama_cpp_server":
            body["error"].update(n_prompt_tokens=n_prompt, n_ctx=self.n_ctx)
        return JSONResponse(body, status_code=fx["context_error"]["status"])

    def _completion(self, text: str, n_prompt: int) -> dict[str, Any]:
        n = len(text.split())
        return {
            "id": "chatcmpl-scripted",
            "object": "chat.completion",
            "created": 1765000000,
            "model": self.model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": text},
                    "finish_reason": "stop",
                    "logprobs": None,
                }
            ],
            "usage": {
                "prompt_tokens": n_prompt,
                "completion_tokens": n,
                "total_tokens": n_prompt + n,
            },
        }

    async def _stream(
        self, text: str, body: dict[str, Any], n_prompt: int, held: bool
    ) -> AsyncIterator[str]:
        base = {"id": "chatcmpl-scripted", "object": "chat.completion.chunk", "created": 1765000000}
        base["model"] = self.model

        def chunk(delta: dict[str, Any], finish: str | None = None) -> str:
            choice = {"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}
            return f"data: {json.dumps({**base, 'choices': [choice]})}\n\n"

        try:
            yield chunk({"role": "assistant", "content": ""})
            words = text.split(" ")
            for i, word in enumerate(words):
                await asyncio.sleep(self.delay_s)
                yield chunk({"content": word if i == 0 else " " + word})
                if held and self.waiting:  # llama_cpp/server/app.py get_event_publisher
                    self.interrupted += 1
                    yield "data: [DONE]\n\n"
                    return
                if self.fail_mid_stream:
                    yield self.fx["stream_error_event"]
                    return  # llama.cpp ends the stream after its error event, without [DONE]
            yield chunk({}, "stop")
            if (body.get("stream_options") or {}).get("include_usage"):
                n = len(words)
                usage = {"prompt_tokens": n_prompt, "completion_tokens": n}
                usage["total_tokens"] = n_prompt + n
                yield f"data: {json.dumps({**base, 'choices': [], 'usage': usage})}\n\n"
            yield "data: [DONE]\n\n"
            self.answered += 1
            if self.flavor in ("ollama", "lmstudio"):
                self.loaded = True
        finally:
            if held:
                self.lock().release()
