"""What each kind of OpenAI-compatible server says about itself, read the way it says it.

The chat protocol is common to them; the context window is not. vLLM reports it in its model
list (`max_model_len`), llama.cpp's server in `GET /props` (`default_generation_settings.n_ctx`,
the context of one slot) and, in recent releases, in its model list (`meta.n_ctx`), Ollama in
`GET /api/ps` for a loaded model (`context_length`) and in `POST /api/show` when the model's
Modelfile sets `num_ctx`, LM Studio in `GET /api/v0/models` (`loaded_context_length`).
llama-cpp-python's server reports none: its window is learnt from its first refusal.
Ollama's `model_info.<arch>.context_length` and LM Studio's `max_context_length` are the length
the model was trained for, not the one it is served with: only an upper bound.

Their refusals for length differ too; `parse_overflow` reads the limit and the prompt's size
(in the backend's tokens) from each. tests/fixtures/backends/ holds their bodies.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import httpx


@dataclass(frozen=True)
class Window:
    tokens: int
    exact: bool  # the window as served; False: an upper bound (what the model was trained for)
    source: str  # where it was read, for logs


def _positive(x: Any) -> int | None:
    return x if isinstance(x, int) and not isinstance(x, bool) and x > 0 else None


def _card(data: list[dict[str, Any]], model: str) -> dict[str, Any] | None:
    cards = [m for m in data if isinstance(m, dict)]
    named = [m for m in cards if m.get("id") in (model, f"{model}:latest")]
    return next(iter(named or cards), None)


def from_model_list(data: list[dict[str, Any]], model: str) -> Window | None:
    """vLLM's `max_model_len`; llama.cpp's `meta.n_ctx` (its `meta.n_ctx_train` is a bound)."""
    card = _card(data, model)
    if card is None:
        return None
    if n := _positive(card.get("max_model_len")):
        return Window(n, True, "GET /v1/models max_model_len")
    meta = card.get("meta")
    meta = meta if isinstance(meta, dict) else {}
    if n := _positive(meta.get("n_ctx")):
        return Window(n, True, "GET /v1/models meta.n_ctx")
    if n := _positive(meta.get("n_ctx_train")):
        return Window(n, False, "GET /v1/models meta.n_ctx_train")
    return None


def root_of(base_url: str) -> str:
    """The server's root: the OpenAI base URL without its trailing /v1."""
    return base_url[:-3] if base_url.endswith("/v1") else base_url


async def _llama_cpp(http: httpx.AsyncClient, root: str, model: str, **kw: Any) -> Window | None:
    resp = await http.get(root + "/props", **kw)
    if resp.status_code != 200:
        return None
    settings = resp.json().get("default_generation_settings") or {}
    n = _positive(settings.get("n_ctx"))
    return Window(n, True, "llama.cpp GET /props n_ctx") if n else None


_NUM_CTX = re.compile(r"^num_ctx\s+(\d+)\s*$", re.MULTILINE)


async def _ollama(http: httpx.AsyncClient, root: str, model: str, **kw: Any) -> Window | None:
    resp = await http.get(root + "/api/ps", **kw)
    if resp.status_code != 200:
        return None
    for m in resp.json().get("models") or []:
        named = model in (m.get("name"), m.get("model")) or f"{model}:latest" == m.get("name")
        if named and (n := _positive(m.get("context_length"))):
            return Window(n, True, "Ollama GET /api/ps context_length")
    resp = await http.post(root + "/api/show", json={"model": model, "name": model}, **kw)
    if resp.status_code != 200:
        return None
    shown = resp.json()
    if found := _NUM_CTX.search(str(shown.get("parameters") or "")):
        return Window(int(found.group(1)), True, "Ollama POST /api/show num_ctx")
    info = shown.get("model_info") or {}
    arch = info.get("general.architecture")
    trained = _positive(info.get(f"{arch}.context_length")) or next(
        (_positive(v) for k, v in info.items() if k.endswith(".context_length")), None
    )
    return Window(trained, False, "Ollama POST /api/show model_info") if trained else None


async def _lmstudio(http: httpx.AsyncClient, root: str, model: str, **kw: Any) -> Window | None:
    resp = await http.get(root + "/api/v0/models", **kw)
    if resp.status_code != 200:
        return None
    card = _card(list(resp.json().get("data") or []), model)
    if card is None:
        return None
    if n := _positive(card.get("loaded_context_length")):
        return Window(n, True, "LM Studio GET /api/v0/models loaded_context_length")
    if n := _positive(card.get("max_context_length")):
        return Window(n, False, "LM Studio GET /api/v0/models max_context_length")
    return None


async def discover(
    http: httpx.AsyncClient,
    base_url: str,
    model: str,
    listed: list[dict[str, Any]],
    *,
    headers: dict[str, str],
    timeout: float,
) -> Window | None:
    """The backend's context window: from its model list `listed`, else from the endpoints of
    llama.cpp, Ollama and LM Studio in turn (a 404 from the others is cheap). An exact window
    wins; else the tightest bound; None when the backend says nothing (llama-cpp-python)."""
    found = from_model_list(listed, model)
    if found and found.exact:
        return found
    best = found
    root = root_of(base_url)
    for ask in (_llama_cpp, _ollama, _lmstudio):
        try:
            window = await ask(http, root, model, headers=headers, timeout=timeout)
        except (httpx.HTTPError, ValueError, AttributeError, TypeError):
            window = None
        if window and window.exact:
            return window
        if window and (best is None or window.tokens < best.tokens):
            best = window
    return best


@dataclass(frozen=True)
class Overflow:
    """A refusal for length: the backend's window and the prompt's size in its tokens, when it
    said them."""

    limit: int | None
    prompt_tokens: int | None
    exact: bool = True  # False: the size is a lower bound (vLLM counts to the limit + 1 only)


# (limit, prompt) patterns, each from a backend's own source or words (see the fixtures)
_LIMITS = (
    # vLLM, llama-cpp-python, OpenAI: "This model's maximum context length is 512 tokens"
    re.compile(r"maximum context length is (\d+)"),
    # llama.cpp: "exceeds the available context size (512 tokens)", "larger than the max context
    # size (512 tokens)"
    re.compile(r"context size \((\d+) tokens\)"),
    # LM Studio: "(n_keep: 600>= n_ctx: 512)", "loaded with context length of only 512 tokens"
    re.compile(r"n_ctx:\s*(\d+)"),
    re.compile(r"context length of only (\d+)"),
    # vLLM: "longer than the maximum model length of 512"
    re.compile(r"maximum model length of (\d+)"),
)
_PROMPTS = (
    re.compile(r"\((\d+) in the messages"),  # llama-cpp-python, older vLLM
    re.compile(r"prompt contains (?:at least )?(\d+) input tokens"),  # vLLM
    re.compile(r"request has (\d+) input tokens"),  # vLLM 0.10-0.11
    re.compile(r"^request \((\d+) tokens\)"),  # llama.cpp
    re.compile(r"^input \((\d+) tokens\)"),  # llama.cpp
    re.compile(r"n_keep:\s*(\d+)"),  # LM Studio
    re.compile(r"keep the first (\d+) tokens"),  # LM Studio, older
    re.compile(r"prompt \(length (\d+)\)"),  # vLLM
)
_SAYS_TOO_LONG = re.compile(
    r"context length|context window|context size|maximum model length|too long|"
    r"exceeds? (?:the )?(?:available )?context|longer than the context|"
    r"tokens to keep from the initial prompt|reduce the length",
    re.IGNORECASE,
)


def error_fields(body: Any) -> tuple[str, dict[str, Any]]:
    """The message of an error body and its fields, whatever its shape: OpenAI's
    {"error": {"message": ...}}, LM Studio's and Ollama's {"error": "..."}, or older vLLM's
    top-level {"object": "error", "message": ...}."""
    if not isinstance(body, dict):
        return (str(body) if body else ""), {}
    err = body.get("error")
    if isinstance(err, dict):
        return str(err.get("message") or ""), err
    if isinstance(err, str):
        return err, {}
    if body.get("object") == "error" or "message" in body:
        return str(body.get("message") or ""), body
    return "", {}


def parse_overflow(status: int, body: Any) -> Overflow | None:
    """Is this error a refusal for length? With the numbers it names, when it names any."""
    if status not in (400, 413, 422):
        return None
    message, fields = error_fields(body)
    marked = fields.get("code") == "context_length_exceeded" or fields.get("type") in (
        "exceed_context_size_error",
        "context_length_exceeded",
    )
    if not (marked or _SAYS_TOO_LONG.search(message)):
        return None
    limit = _positive(fields.get("n_ctx")) or _first(_LIMITS, message)
    prompt = _positive(fields.get("n_prompt_tokens")) or _first(_PROMPTS, message)
    return Overflow(limit, prompt, "at least" not in message)


def _first(patterns: tuple[re.Pattern[str], ...], text: str) -> int | None:
    for pattern in patterns:
        if found := pattern.search(text):
            return int(found.group(1))
    return None
