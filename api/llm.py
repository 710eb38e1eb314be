"""The LLM client: OpenAI's chat-completions protocol over one shared httpx client.

Only the protocol vLLM serves is relied on, so any OpenAI-compatible backend works unchanged.
Several base URLs are used round-robin; a backend that refuses connections or answers 502/503 is
taken out of the rotation until a health probe (GET /models) finds it serving again.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx

log = logging.getLogger(__name__)


class LLMError(Exception):
    """The backend failed; `status` is what Hearth answers with (400, 502, 503 or 504)."""

    def __init__(self, status: int, message: str, code: str | None = "llm_backend_error") -> None:
        super().__init__(message)
        self.status, self.message, self.code = status, message, code


@dataclass
class Backend:
    url: str
    healthy: bool = True
    down_since: float | None = None
    max_model_len: int | None = None  # from GET /models, when the backend says (vLLM does)

    def mark_down(self, why: str) -> None:
        if self.healthy:
            log.warning("LLM backend %s taken out of rotation: %s", self.url, why)
        self.healthy, self.down_since = False, self.down_since or time.monotonic()

    def mark_up(self) -> None:
        if not self.healthy:
            log.info("LLM backend %s is back in rotation", self.url)
        self.healthy, self.down_since = True, None


class LLMClient:
    def __init__(
        self, http: httpx.AsyncClient, base_urls: list[str], model: str, api_key: str | None = None
    ) -> None:
        if not base_urls:
            raise ValueError("at least one LLM base URL is required")
        self.http = http
        self.backends = [Backend(u.rstrip("/")) for u in base_urls]
        self.model = model
        self._turn = 0  # round-robin position
        self._headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}

    # --- choosing a backend ------------------------------------------------------------------
    def _order(self) -> list[Backend]:
        """Healthy backends in round-robin order, then the ones out of rotation (a last resort:
        one may have come back since its last probe)."""
        healthy = [b for b in self.backends if b.healthy]
        down = [b for b in self.backends if not b.healthy]
        if healthy:
            k = self._turn % len(healthy)
            healthy = healthy[k:] + healthy[:k]
        self._turn += 1
        return healthy + down

    @property
    def max_model_len(self) -> int | None:
        """The smallest context window any backend reported (requests may go to any of them)."""
        known = [b.max_model_len for b in self.backends if b.max_model_len]
        return min(known) if known else None

    # --- health --------------------------------------------------------------------------------
    async def probe(self, backend: Backend) -> list[dict[str, Any]]:
        """GET /models on one backend; marks it up or down and records its context window."""
        try:
            resp = await self.http.get(backend.url + "/models", headers=self._headers, timeout=5)
            _raise_for_status(resp)
            data = list(resp.json().get("data", []))
        except (httpx.HTTPError, LLMError, ValueError) as exc:
            backend.mark_down(f"{type(exc).__name__}: {exc}")
            raise _as_llm_error(exc) from exc
        backend.mark_up()
        lens = [m.get("max_model_len") for m in data if m.get("id") == self.model] or [
            m.get("max_model_len") for m in data
        ]
        backend.max_model_len = next((int(x) for x in lens if isinstance(x, int) and x > 0), None)
        return data

    async def check_all(self) -> None:
        await asyncio.gather(*(self.probe(b) for b in self.backends), return_exceptions=True)

    async def run_health_checks(self, interval_s: float) -> None:
        """Probe every backend now and then every `interval_s` (run as a task by the app)."""
        while True:
            await self.check_all()
            await asyncio.sleep(interval_s)

    async def models(self) -> list[dict[str, Any]]:
        """The model list of the first backend that answers."""
        last: LLMError | None = None
        for backend in self._order():
            try:
                return await self.probe(backend)
            except LLMError as exc:
                last = exc
        assert last is not None
        raise last

    # --- requests ------------------------------------------------------------------------------
    def _body(
        self, messages: list[dict[str, str]], stream: bool, params: dict[str, Any]
    ) -> dict[str, Any]:
        body: dict[str, Any] = {"model": self.model, "messages": messages, "stream": stream}
        if stream:
            body["stream_options"] = {"include_usage": True}
        return {**body, **params}

    async def complete(self, messages: list[dict[str, str]], **params: Any) -> dict[str, Any]:
        body = self._body(messages, False, params)
        for backend, last in _with_last(self._order()):
            try:
                resp = await self.http.post(
                    backend.url + "/chat/completions", json=body, headers=self._headers
                )
            except httpx.ConnectError as exc:
                backend.mark_down(str(exc))
                if last:
                    raise _as_llm_error(exc) from exc
                continue  # nothing reached this backend: the next one may serve it
            except httpx.HTTPError as exc:
                raise _as_llm_error(exc) from exc
            if resp.status_code in _RETRY and not last:
                backend.mark_down(f"HTTP {resp.status_code}")
                continue  # refused before any work: the next backend may serve it
            _check_response(backend, resp)
            return dict(resp.json())
        raise AssertionError("unreachable")

    async def stream(
        self, messages: list[dict[str, str]], **params: Any
    ) -> AsyncIterator[dict[str, Any]]:
        """Yield the backend's `chat.completion.chunk` objects as they arrive. Closing this
        generator (the client went away) closes the backend connection, which makes vLLM abort
        the request.

        A backend that fails mid-answer (killed, reset, timed out, or its stream ends with
        neither a finish_reason nor `[DONE]`) raises LLMError after the chunks already yielded;
        only a request nothing was yielded for moves on to the next backend. One that fails
        after its finish_reason (before `[DONE]`) has given the whole answer: it just ends."""
        body = self._body(messages, True, params)
        sent = finished = False
        for backend, last in _with_last(self._order()):
            try:
                async with self.http.stream(
                    "POST", backend.url + "/chat/completions", json=body, headers=self._headers
                ) as resp:
                    if resp.status_code in _RETRY and not last:
                        backend.mark_down(f"HTTP {resp.status_code}")
                        continue
                    if resp.status_code >= 400:
                        await resp.aread()
                        _check_response(backend, resp)
                    done = False
                    async for line in resp.aiter_lines():
                        if done or not line.startswith("data:"):
                            continue
                        data = line[5:].strip()
                        if data == "[DONE]":
                            # read on to the end of the body (the backend ends it here): a
                            # response left unread closes its connection instead of keeping it
                            done = True
                            continue
                        chunk = _event(data)
                        finished = finished or any(
                            c.get("finish_reason") for c in chunk.get("choices") or []
                        )
                        sent = True
                        yield chunk
                    if not (done or finished):
                        raise LLMError(502, "the language model backend's stream ended mid-answer")
                    return
            except httpx.ConnectError as exc:
                backend.mark_down(str(exc))
                if last or sent:
                    raise _as_llm_error(exc) from exc
            except httpx.HTTPError as exc:
                if finished:
                    return
                raise _as_llm_error(exc) from exc


_RETRY = (502, 503)  # the backend did no work: another one may take the request


def _event(data: str) -> dict[str, Any]:
    """One streamed chunk; a broken one (e.g. the last line of a stream cut short) is a 502."""
    try:
        chunk = json.loads(data)
    except ValueError:
        chunk = None
    if not isinstance(chunk, dict):
        raise LLMError(502, f"the language model backend sent a broken event: {data[:100]!r}")
    return chunk


def _with_last(items: list[Backend]) -> list[tuple[Backend, bool]]:
    return [(b, i == len(items) - 1) for i, b in enumerate(items)]


def _as_llm_error(exc: Exception) -> LLMError:
    if isinstance(exc, LLMError):
        return exc
    if isinstance(exc, httpx.TimeoutException):
        return LLMError(504, "the language model backend timed out", "llm_timeout")
    if isinstance(exc, httpx.ConnectError):
        return LLMError(503, "the language model backend is not reachable", "llm_unavailable")
    return LLMError(502, f"the language model backend failed: {exc or type(exc).__name__}")


def _check_response(backend: Backend, resp: httpx.Response) -> None:
    if resp.status_code in _RETRY:
        backend.mark_down(f"HTTP {resp.status_code}")
    _raise_for_status(resp)


def _raise_for_status(resp: httpx.Response) -> None:
    if resp.status_code < 400:
        return
    try:
        detail = resp.json().get("error", {})
        message = detail.get("message") if isinstance(detail, dict) else str(detail)
    except (ValueError, AttributeError):
        message = resp.text[:300]
    message = message or f"HTTP {resp.status_code}"
    lowered = message.lower()
    if resp.status_code in (400, 413) and ("context" in lowered or "too long" in lowered):
        raise LLMError(
            400,
            f"the request does not fit the model's context window: {message}",
            "context_length_exceeded",
        )
    if resp.status_code in (400, 422):  # a parameter passed through was refused
        raise LLMError(400, f"the language model backend refused the request: {message}", None)
    if resp.status_code in (401, 403):
        raise LLMError(502, "the language model backend refused Hearth's API key (LLM_API_KEY)")
    if resp.status_code == 404:
        raise LLMError(502, f"the language model backend does not serve this model: {message}")
    if resp.status_code == 503:
        raise LLMError(503, f"the language model backend is unavailable: {message}", "llm_busy")
    raise LLMError(502, f"the language model backend answered {resp.status_code}: {message}")
