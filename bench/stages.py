"""Timing stages: the ingest pipeline's from outside (wrapped callables add up seconds per stage),
and the API's from its own Server-Timing headers (api.timing)."""

from __future__ import annotations

import contextlib
import functools
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, TypeVar

import numpy as np

from .harness import summary

STAGES = ("parse", "chunk", "embed", "write", "other")
F = TypeVar("F", bound=Callable[..., Any])


class Stages:
    """Seconds spent per pipeline stage, accumulated by wrapped callables."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = dict.fromkeys(STAGES, 0.0)

    @contextlib.contextmanager
    def timed(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] += time.perf_counter() - start

    def wrap(self, name: str, fn: F) -> F:
        @functools.wraps(fn)
        def inner(*args: Any, **kwargs: Any) -> Any:
            with self.timed(name):
                return fn(*args, **kwargs)

        return inner  # type: ignore[return-value]


class TimedEmbedder:
    """The real embedder, with `embed` timed and its inputs kept (they make the floor)."""

    def __init__(self, inner: Any, stages: Stages) -> None:
        self.inner, self.stages = inner, stages
        self.name, self.dim = inner.name, inner.dim
        self.calls: list[list[str]] = []

    def count_tokens(self, text: str) -> int:
        return int(self.inner.count_tokens(text))  # inside chunk_elements: the chunk stage

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        self.calls.append(list(texts))
        with self.stages.timed("embed"):
            return np.asarray(self.inner.embed(texts))


@contextlib.contextmanager
def instrumented(stages: Stages) -> Iterator[None]:
    """Time chunking and writing where the pipeline looks them up (module attributes)."""
    import ingest.pipeline as pipeline
    from retrieval import index

    saved = pipeline.chunk_elements, index.replace_chunks
    setattr(pipeline, "chunk_elements", stages.wrap("chunk", saved[0]))  # noqa: B010
    setattr(index, "replace_chunks", stages.wrap("write", saved[1]))  # noqa: B010
    try:
        yield
    finally:
        setattr(pipeline, "chunk_elements", saved[0])  # noqa: B010
        setattr(index, "replace_chunks", saved[1])  # noqa: B010


def server_timing(header: str) -> dict[str, float]:
    """`auth;dur=0.8, embed;dur=12.1` -> {"auth": 0.0008, "embed": 0.0121} (seconds)."""
    out: dict[str, float] = {}
    for item in header.split(","):
        name, _, params = item.strip().partition(";")
        for param in params.split(";"):
            key, _, value = param.strip().partition("=")
            if key == "dur" and name:
                out[name] = float(value) / 1000
    return out


def stage_summary(
    seen: Sequence[dict[str, float]], order: Iterable[str] = ()
) -> dict[str, dict[str, float]]:
    """Per stage, ms (bench.harness.summary), the `order` ones first; a stage a request skipped
    (embed, on a cached vector) counts as 0 there."""
    names = [n for n in order if any(n in s for s in seen)]
    names += sorted({n for s in seen for n in s} - set(names))
    return {n: summary([s.get(n, 0.0) for s in seen]) for n in names}
