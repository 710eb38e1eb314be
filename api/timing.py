"""Where a request's time goes, stage by stage, measured inside the API process: the
`Server-Timing` header of POST /v1/search and of non-streamed chat completions, and a debug log
line at the end of a streamed one.

Stages (milliseconds; a stage includes taking its pooled database connection):
  auth         the caller's token, session or proxy header checked (api.auth), rate limit
  access       the collections the caller may read (/v1/search; it runs while the query
               embeds, so `access` and `embed` overlap)
  open         a chat turn opened: readable collections, model, conversation (api.chat)
  embed        the query embedding as the request waited for it (queue for the embedding
               thread included); absent when the vector came from the cache
  embed-model  the same embedding inside the model alone (embed minus this: waiting)
  search       hybrid search: both legs' SQL, fusion, rerank
  ground       a chat turn grounded: rewrite, embed, search, prompt build (so it holds
               embed and search)
  answer       a non-streamed chat turn's backend call and answer checks, storing the turn
  total        from the authentication's start to the header (the JSON body is encoded after)

Only durations, under these fixed names, only on a successful response, and only to an admin:
the routes add the header after their work succeeded, every error is answered by api.errors
without it, and a user who is not an admin never gets it. A stage's duration measured inside the
server, free of the network's noise, depends on more than the caller's own documents (the dense
leg's HNSW walk passes over every collection's vectors and filters them), so it would be a
side channel on what others hold (tests/api/test_adversarial_bm25.py compares every byte a user
receives before and after another user's private writes). Admins, who operate the server and
can read its metrics, get it; so do the benchmarks, whose tokens are admins'.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator
from contextvars import ContextVar
from typing import Annotated

from fastapi import Depends, Request

from .auth import current_user
from .state import State
from .store.accounts import User

log = logging.getLogger(__name__)

HEADER = "Server-Timing"


class Timings:
    """Seconds per stage of one request; a stage timed twice adds up."""

    def __init__(self) -> None:
        self.started = time.perf_counter()
        self.seconds: dict[str, float] = {}

    def add(self, stage: str, seconds: float) -> None:
        self.seconds[stage] = self.seconds.get(stage, 0.0) + seconds

    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.add(name, time.perf_counter() - start)

    def header(self) -> str:
        """`auth;dur=0.8, embed;dur=12.1, ..., total;dur=45.6` (milliseconds)."""
        total = time.perf_counter() - self.started
        items = [*self.seconds.items(), ("total", total)]
        return ", ".join(f"{name};dur={seconds * 1000:.1f}" for name, seconds in items)


_current: ContextVar[Timings | None] = ContextVar("hearth_timings", default=None)


def current() -> Timings:
    """The timings of the request being served, or a throw-away one outside a timed request
    (`hearth search`, the evaluation): code that times a stage need not ask which."""
    return _current.get() or Timings()


async def timed_user(request: Request, state: State) -> User:
    """api.auth.current_user, timed: starts the request's timings (its first dependency)."""
    timings = Timings()
    _current.set(timings)  # the route and the tasks it starts see it (context is copied)
    with timings.stage("auth"):
        return await current_user(request, state)


TimedUser = Annotated[User, Depends(timed_user)]


def header_for(user: User) -> dict[str, str]:
    """The request's Server-Timing header for `user`: an admin's only (see the module's doc)."""
    if user.role != "admin":
        return {}
    return {HEADER: current().header()}


def log_stages(what: str) -> None:
    """A debug line with the request's stages: for a stream, whose header left before them."""
    timings = _current.get()
    if timings is not None and log.isEnabledFor(logging.DEBUG):
        log.debug("%s stages (ms): %s", what, timings.header())
