"""A chat turn and the backend's context window: the answer's share of the window, and the one
retry after a backend refuses a prompt as too long all the same.

The window is what the backend says (api.backends), else LLM_MAX_MODEL_LEN. A client that names
no max_tokens gets LLM_MAX_TOKENS for the answer, but never more than a quarter of the window, so
a small window (llama.cpp's `--n_ctx 512`) still leaves room for the question and its passages.

A refusal names the backend's limit and, mostly, the prompt's size in its tokens: the limit is
remembered for that backend, the size shows how far Hearth's count falls short of the
backend's, and the turn is grounded again into the smaller window (fewer passages) for one more
try. A refusal that names no limit (Ollama's) makes Hearth ask the backend for its window again
(Ollama says it once the model is loaded) or, failing that, try once with a quarter less.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, TypeVar

from .llm import ContextOverflow
from .tokenizer import load_counter

if TYPE_CHECKING:
    from .chat import Services, Turn

log = logging.getLogger(__name__)
T = TypeVar("T")


def answer_budget(asked: int | None, default: int, window: int) -> int:
    """max_tokens for the answer: what the client asked for, else `default` up to a quarter of
    the window."""
    return asked if asked else max(1, min(default, window // 4))


async def retry_on_overflow(
    state: Services,
    turn: Turn,
    call: Callable[[], Awaitable[T]],
    reground: Callable[[], Awaitable[None]],
) -> T:
    """`call()`; when the backend refuses the prompt as too long, learn what it said, fit the
    turn into a smaller window with `reground()`, and `call()` once more."""
    try:
        return await call()
    except ContextOverflow as exc:
        smaller = await _smaller_window(state, turn, exc)
        if smaller is None:
            raise
        log.info(
            "%s refused a prompt of %s of its tokens (limit %s); trying once with a window of %d",
            exc.backend.url,
            exc.prompt_tokens or "?",
            exc.limit or "?",
            smaller,
        )
        turn.window = smaller
        await reground()
        return await call()


async def _smaller_window(state: Services, turn: Turn, exc: ContextOverflow) -> int | None:
    used = turn.window or state.settings.llm_max_model_len
    ratio = None
    if exc.prompt_tokens:
        counter = load_counter(state.settings.tokenizer_file)
        counted = await asyncio.to_thread(counter.messages, turn.messages)
        if counted and exc.prompt_tokens > counted:
            ratio = exc.prompt_tokens / counted  # Hearth counted low
        elif counted and exc.exact:
            # Hearth counted high (its estimate does, without the model's tokenizer): more fits
            # than it thought; a tenth is kept in hand for prompts unlike this one
            ratio = min(1.0, 1.1 * exc.prompt_tokens / counted)
    state.llm.learn(exc.backend, exc.limit, ratio)
    if exc.limit is None:
        await state.llm.rediscover(exc.backend)
    window = state.llm.window()
    if window is None or window >= used:
        window = used * 3 // 4  # nothing better to go on: once, a quarter less
    return window if window > 0 else None
