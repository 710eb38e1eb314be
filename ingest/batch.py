"""Ingesting many files at once: their chunks embedded together in full batches, and the next
files parsed while a batch embeds.

Each document runs its own steps (`ingest.pipeline.ingest_steps`): its lock, generation checks,
budgets and transactional write are its own, so one bad file is marked failed with its reason and
the others index, and what each document gets written is what `ingest_path` would write. This
module only decides when the steps run: parses go to one background thread (the parser is a child
process, so parsing really runs beside the embedding), and chunk texts wait until enough of them,
from consecutive documents, fill one embedding call.

A document's time budget (FILE_TIMEOUT_S) counts its own work: the time it waits on other
documents' parses (queued behind them in the parser) and for a batch to fill is given back to it;
a shared embedding call counts whole for every document in it.

A document another session holds is left for the end of the batch, when this one holds no other
lock, and then waited for; so a batch never waits for a lock while holding one.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import psycopg

from core.embedder import Embedder

from .budget import EMBED_SLICE, Deadline, OutOfTime, embed_within
from .parse import parse_file
from .pipeline import (
    EmbedStep,
    IngestOptions,
    IngestResult,
    LockBusy,
    Parser,
    ParseStep,
    Step,
    Steps,
    doc_key,
    ingest_steps,
)

log = logging.getLogger(__name__)

# chunk texts gathered from consecutive documents before they are embedded in one call
BATCH_TEXTS = 256
# fewer texts are embedded already when the next parse is not done (the embedder would idle);
# half a call: calls of 32-60 texts ran at ~0.8 of one full call's speed (batches cut short,
# lengths mixed in them), and parsing is now a fraction of embedding (`python -m bench.ingest`)
MIN_TEXTS = 128
PARSE_AHEAD = 4  # documents begun (locked, copied, handed to the parser) ahead of the embedding


@dataclass
class _Doc:
    """One document's steps and what it waits for."""

    slot: int
    key: str
    steps: Steps
    deadline: Deadline | None = None
    since: float = 0.0  # when it began waiting (for its parse, or for an embedding call)
    parse: Future[tuple[Any, float, float]] | None = None  # (Parsed, started, ended)
    embed: EmbedStep | None = None
    vectors: list[np.ndarray] = field(default_factory=list)

    def waited(self, seconds: float) -> None:
        if self.deadline is not None:
            self.deadline.extend(seconds)


def ingest_paths(
    conn: psycopg.Connection,
    embedder: Embedder,
    items: Sequence[tuple[Path, IngestOptions]],
    parser: Parser = parse_file,
    *,
    batch_texts: int = BATCH_TEXTS,
    ahead: int = PARSE_AHEAD,
    on_result: Callable[[IngestResult], None] | None = None,
) -> list[IngestResult]:
    """`ingest_path` for every (path, options) in `items`, one result each in their order, with
    documents' chunks embedded together. Database errors and an index model switch end the batch
    (its finished documents stay written; a rerun finds them unchanged)."""
    run = _Batch(conn, embedder, parser, batch_texts, ahead, on_result)
    return run.all(items)


class _Batch:
    def __init__(
        self,
        conn: psycopg.Connection,
        embedder: Embedder,
        parser: Parser,
        batch_texts: int,
        ahead: int,
        on_result: Callable[[IngestResult], None] | None,
    ) -> None:
        self.conn, self.embedder, self.parser = conn, embedder, parser
        self.batch_texts, self.ahead = max(1, batch_texts), max(1, ahead)
        self.on_result = on_result
        self.parsing: deque[_Doc] = deque()  # in the order they were begun
        self.waiting: list[_Doc] = []  # with chunk texts to embed
        self.results: list[IngestResult | None] = []
        self.pool = ThreadPoolExecutor(1, thread_name_prefix="hearth-parse")

    def all(self, items: Sequence[tuple[Path, IngestOptions]]) -> list[IngestResult]:
        self.results = [None] * len(items)
        todo = deque(enumerate(items))
        later: deque[tuple[int, tuple[Path, IngestOptions]]] = deque()
        try:
            while todo or later or self.parsing or self.waiting:
                while len(self.parsing) < self.ahead and (todo or (later and not self._held())):
                    if todo:
                        slot, (path, opts) = todo.popleft()
                        if not self._begin(slot, path, opts, wait=not self._held()):
                            later.append((slot, (path, opts)))
                    else:
                        slot, (path, opts) = later.popleft()
                        self._begin(slot, path, opts, wait=True)
                # more to begin now: none while this batch holds locks and only `later` is left
                if self._should_embed(more=bool(todo) or (bool(later) and not self._held())):
                    self._embed()
                elif self.parsing:
                    self._parsed(self.parsing.popleft())
        finally:
            self._abandon()
        done = [r for r in self.results if r is not None]
        assert len(done) == len(items)
        return done

    def _held(self) -> bool:
        """Whether this batch holds any document's lock (it then never waits for another)."""
        return bool(self.parsing or self.waiting)

    def _begin(self, slot: int, path: Path, opts: IngestOptions, *, wait: bool) -> bool:
        """Start a document's steps; False when its lock is taken elsewhere (or by this batch:
        the same path twice) and it was not started."""
        key = doc_key(path)
        if any(d.key == key for d in (*self.parsing, *self.waiting)):
            return False
        steps = ingest_steps(
            self.conn, self.embedder, path, opts, self.parser, wait=wait, isolate=True
        )
        doc = _Doc(slot, key, steps)
        try:
            step = steps.send(None)
        except LockBusy:
            return False
        except StopIteration as stop:
            self._finish(doc, stop.value)
            return True
        self._next(doc, step)
        return True

    def _next(self, doc: _Doc, step: Step) -> None:
        doc.deadline, doc.since = step.deadline, time.monotonic()
        if isinstance(step, ParseStep):
            doc.parse = self.pool.submit(_timed, self.parser, step.path)
            self.parsing.append(doc)
        else:
            doc.embed, doc.vectors = step, []
            self.waiting.append(doc)

    def _advance(self, doc: _Doc, reply: Any = None, error: BaseException | None = None) -> None:
        """Hand a document its step's outcome and take its next step (or its result)."""
        try:
            step = doc.steps.throw(error) if error is not None else doc.steps.send(reply)
        except StopIteration as stop:
            self._finish(doc, stop.value)
            return
        self._next(doc, step)

    def _finish(self, doc: _Doc, result: IngestResult) -> None:
        self.results[doc.slot] = result
        if self.on_result is not None:
            self.on_result(result)

    def _parsed(self, doc: _Doc) -> None:
        assert doc.parse is not None
        future, doc.parse = doc.parse, None
        try:
            parsed, started, ended = future.result()
        except _Failed as failed:
            doc.waited(failed.started - doc.since + time.monotonic() - failed.ended)
            self._advance(doc, error=failed.error)
        else:
            doc.waited(started - doc.since + time.monotonic() - ended)
            self._advance(doc, parsed)

    def _texts(self) -> int:
        return sum(len(d.embed.texts) for d in self.waiting if d.embed is not None)

    def _should_embed(self, *, more: bool) -> bool:
        """Embed what waits when it fills a batch, when nothing else is left to wait for, or when
        enough waits and the next parse is still under way (the embedder would idle)."""
        if not self.waiting:
            return False
        texts = self._texts()
        if texts >= self.batch_texts or not (self.parsing or more):
            return True
        if not self.parsing:
            return False  # documents to begin first: their parses then run beside this embedding
        parse = self.parsing[0].parse
        return texts >= MIN_TEXTS and parse is not None and not parse.done()

    def _embed(self) -> None:
        """Embed every waiting document's texts in shared calls of up to EMBED_SLICE texts,
        checking each document's deadline before every call as `embed_within` does; a document
        out of time gets OutOfTime and its remaining texts are not embedded."""
        docs, self.waiting = self.waiting, []
        now = time.monotonic()
        for d in docs:
            d.waited(now - d.since)
        late: dict[int, OutOfTime] = {}
        pending = [(d, t) for d in docs if d.embed is not None for t in d.embed.texts]
        try:
            while pending:
                for d in {id(d): d for d, _ in pending}.values():
                    try:
                        assert d.embed is not None
                        d.embed.deadline.check()
                    except OutOfTime as exc:
                        late[id(d)] = exc
                pending = [(d, t) for d, t in pending if id(d) not in late]
                part, pending = pending[:EMBED_SLICE], pending[EMBED_SLICE:]
                if not part:
                    break
                vectors = np.asarray(self.embedder.embed([t for _, t in part]))
                for (d, _), v in zip(part, vectors, strict=True):
                    d.vectors.append(v)
        except Exception:
            # one document's texts broke the shared call: embed each alone, so only its own
            # steps hear of it
            log.exception("a shared embedding call failed; embedding its documents one by one")
            for d in docs:
                if id(d) in late:  # out of time before the call that failed: that is its end
                    self._advance(d, error=late[id(d)])
                else:
                    self._embed_alone(d)
            return
        for d in docs:
            if id(d) in late:
                self._advance(d, error=late[id(d)])
            else:
                self._advance(d, np.stack(d.vectors))

    def _embed_alone(self, doc: _Doc) -> None:
        assert doc.embed is not None
        try:
            vectors = embed_within(self.embedder, doc.embed.texts, doc.embed.deadline)
        except Exception as exc:
            self._advance(doc, error=exc)
        else:
            self._advance(doc, vectors)

    def _abandon(self) -> None:
        """After an error that ends the batch: parses finish or are cancelled (before their
        private copies go), then every unfinished document's steps close (locks released)."""
        self.pool.shutdown(wait=True, cancel_futures=True)
        for d in (*self.parsing, *self.waiting):
            try:
                d.steps.close()
            except Exception:  # the error that ended the batch is the one to report
                log.exception("closing the work on %s", d.key)
        self.parsing.clear()
        self.waiting.clear()


class _Failed(Exception):
    """A parse's error, with when the parse ran."""

    def __init__(self, error: Exception, started: float, ended: float) -> None:
        super().__init__(str(error))
        self.error, self.started, self.ended = error, started, ended


def _timed(parser: Parser, path: Path) -> tuple[Any, float, float]:
    """`parser(path)` with when it started and ended (in the parse thread)."""
    started = time.monotonic()
    try:
        parsed = parser(path)
    except Exception as exc:
        raise _Failed(exc, started, time.monotonic()) from exc
    return parsed, started, time.monotonic()
