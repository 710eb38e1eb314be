"""The LLM client: OpenAI's chat-completions protocol over one shared httpx client.

Only the protocol vLLM serves is relied on, so any OpenAI-compatible backend works unchanged.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx


class LLMError(Exception):
    """The backend failed; `status` is what Hearth answers with (400, 502, 503 or 504)."""

    def __init__(self, status: int, message: str, code: str = "llm_backend_error") -> None:
        super().__init__(message)
        self.status, self.message, self.code = status, message, code


class LLMClient:
    def __init__(
        self, http: httpx.AsyncClient, base_urls: list[str], model: str, api_key: str | None = None
    ) -> None:
        if not base_urls:
            raise ValueError("at least one LLM base URL is required")
        self.http = http
        self.base_urls = base_urls
        self.model = model
        self._next = itertools.cycle(range(len(base_urls)))
        self._headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}

    def _url(self, path: str) -> str:
        return self.base_urls[next(self._next)] + path

    async def models(self) -> list[dict[str, Any]]:
        try:
            resp = await self.http.get(self._url("/models"), headers=self._headers, timeout=5)
        except httpx.HTTPError as exc:
            raise _transport_error(exc) from exc
        _raise_for_status(resp)
        return list(resp.json().get("data", []))

    async def complete(self, messages: list[dict[str, str]], **params: Any) -> dict[str, Any]:
        body = {"model": self.model, "messages": messages, "stream": False, **params}
        try:
            resp = await self.http.post(
                self._url("/chat/completions"), json=body, headers=self._headers
            )
        except httpx.HTTPError as exc:
            raise _transport_error(exc) from exc
        _raise_for_status(resp)
        return dict(resp.json())

    async def stream(
        self, messages: list[dict[str, str]], **params: Any
    ) -> AsyncIterator[dict[str, Any]]:
        """Yield the backend's `chat.completion.chunk` objects as they arrive."""
        body = {
            "model": self.model,
            "messages": messages,
            "stream": True,
            "stream_options": {"include_usage": True},
            **params,
        }
        try:
            async with self.http.stream(
                "POST", self._url("/chat/completions"), json=body, headers=self._headers
            ) as resp:
                if resp.status_code >= 400:
                    await resp.aread()
                    _raise_for_status(resp)
                async for line in resp.aiter_lines():
                    if not line.startswith("data:"):
                        continue
                    data = line[5:].strip()
                    if data == "[DONE]":
                        return
                    yield json.loads(data)
        except httpx.HTTPError as exc:
            raise _transport_error(exc) from exc


def _transport_error(exc: httpx.HTTPError) -> LLMError:
    if isinstance(exc, httpx.TimeoutException):
        return LLMError(504, "the language model backend timed out", "llm_timeout")
    if isinstance(exc, httpx.ConnectError):
        return LLMError(503, "the language model backend is not reachable", "llm_unavailable")
    return LLMError(502, f"the language model backend failed: {exc}")


def _raise_for_status(resp: httpx.Response) -> None:
    if resp.status_code < 400:
        return
    try:
        detail = resp.json().get("error", {})
        message = detail.get("message") if isinstance(detail, dict) else str(detail)
    except (ValueError, AttributeError):
        message = resp.text[:300]
    message = message or f"HTTP {resp.status_code}"
    if resp.status_code == 400 and "context" in message.lower():
        raise LLMError(
            400,
            f"the request does not fit the model's context window: {message}",
            "context_length_exceeded",
        )
    if resp.status_code in (401, 403):
        raise LLMError(502, "the language model backend refused Hearth's API key (LLM_API_KEY)")
    if resp.status_code == 404:
        raise LLMError(502, f"the language model backend does not serve this model: {message}")
    raise LLMError(502, f"the language model backend answered {resp.status_code}: {message}")
