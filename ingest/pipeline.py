"""From a file on disk to indexed chunks: fingerprint, parse, chunk, embed, write.

Every entry point takes a per-document advisory lock, so two workers never process one document at
once, and is idempotent: running it again on an unchanged file does nothing.

A file is opened once, from its folder through no symlink (ingest.confine), and only that open
file is read afterwards (parsers get a private copy of it): a symlink out of the folder is recorded
as skipped, with the reason, and never followed, however the file was swapped and when. What one
file may cost is bounded (ingest.budget): its text and its chunks before anything is embedded, and
its time. A delete wins over this work (retrieval.guard): every write is refused once the document
was deleted after the work began.

One document's work is a generator of steps (`ingest_steps`): it asks for its private copy to be
parsed and its chunk texts to be embedded, and does everything else itself (locks, generation
checks, budgets, the transactional write). `ingest_path` runs those steps one after the other;
`ingest.batch` runs many documents' steps at once, embedding their chunks together.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
from collections.abc import Callable, Generator, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import psycopg

from core.embedder import Embedder
from core.types import Chunk, Document
from retrieval import documents, guard, index

from .attachments import drop_attachments, index_attachments
from .budget import (
    DEFAULT_MAX_CHUNKS,
    Deadline,
    OutOfTime,
    embed_within,
    max_chars,
    too_many_chunks,
    too_much_text,
)
from .chunking import TooManyChunks, chunk_elements
from .confine import NotRegular, SymlinkRefused, fd_sha256, open_confined, opened, private_copy
from .parse import Parsed, ParseError, parse_file

log = logging.getLogger(__name__)

SETTLED = ("indexed", "failed", "needs_ocr")
Parser = Callable[[Path], Parsed]
# how a skipped symlink's reason names the folder it points out of, by the document's source
_FOLDER = {"watch": "the watched folder", "upload": "the uploads folder"}


@dataclass(frozen=True)
class IngestOptions:
    chunk_size: int = 256
    chunk_overlap: int = 32
    max_file_bytes: int = 200 * 1024 * 1024
    collection: str = "default"
    source: str = "watch"
    # the folders files are read from through no symlink (watched roots, the uploads folder); a
    # file in none of them is read from its own folder, again through no symlink
    roots: Sequence[Path] = ()
    max_chunks: int | None = DEFAULT_MAX_CHUNKS  # MAX_FILE_CHUNKS; None: no budget
    timeout_s: float | None = None  # FILE_TIMEOUT_S: the whole file's wall-clock budget
    scratch_dir: Path | None = None  # where private copies of files being parsed go


@dataclass(frozen=True)
class IngestResult:
    path: str
    # indexed | unchanged | moved | copied | failed | needs_ocr | deleted | missing | skipped
    # (a symlink to a file inside its folder: that file is indexed under its own name)
    # | superseded (the document was deleted, or changed, since this work was queued or began)
    status: str
    chunks: int = 0
    error: str | None = None


@dataclass(frozen=True)
class ParseStep:
    """A step asking for the document's private copy at `path` to be parsed: the reply is its
    Parsed, or a ParseError thrown in. `deadline` is the document's (a batch extends it by the
    time the document waits on others)."""

    path: Path
    deadline: Deadline


@dataclass(frozen=True)
class EmbedStep:
    """A step asking for the document's chunk texts to be embedded, a slice at a time while its
    deadline holds: the reply is one vector per text, or OutOfTime thrown in."""

    texts: list[str]
    deadline: Deadline


Step = ParseStep | EmbedStep
Steps = Generator[Step, Any, IngestResult]


class LockBusy(Exception):
    """Another session holds the document's lock (only when asked not to wait for it)."""


def doc_key(path: Path | str) -> str:
    """How a document's path is stored: absolute and normalised, symlinks left as they are."""
    return os.path.abspath(path)


def _lock_id(key: str) -> int:
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big") >> 1


@contextlib.contextmanager
def document_locks(conn: psycopg.Connection, *keys: str, wait: bool = True) -> Iterator[None]:
    """Session-level advisory locks on documents, taken in a fixed order (no deadlocks).
    `wait=False` takes none and raises LockBusy when another session holds one of them."""
    ids = sorted({_lock_id(k) for k in keys})
    taken: list[int] = []
    for i in ids:
        if wait:
            conn.execute("SELECT pg_advisory_lock(%s)", (i,))
        else:
            row = conn.execute("SELECT pg_try_advisory_lock(%s)", (i,)).fetchone()
            if not (row and row[0]):
                for j in reversed(taken):
                    conn.execute("SELECT pg_advisory_unlock(%s)", (j,))
                conn.commit()
                raise LockBusy(", ".join(keys))
        taken.append(i)
    conn.commit()
    try:
        yield
    finally:
        if not conn.closed and not conn.broken:
            conn.rollback()
            for i in reversed(ids):
                conn.execute("SELECT pg_advisory_unlock(%s)", (i,))
            conn.commit()


def ingest_path(
    conn: psycopg.Connection,
    embedder: Embedder,
    path: Path,
    opts: IngestOptions,
    parser: Parser = parse_file,
    *,
    generation: int | None = None,
) -> IngestResult:
    """Bring the index in line with the file at `path` (which may have been deleted).

    Bad files end `failed` (or `needs_ocr`) with a reason; they never raise. `generation` is the
    document's when this work was asked for (a re-index): if the document was deleted since,
    nothing is done.
    """
    return run_steps(
        ingest_steps(conn, embedder, path, opts, parser, generation=generation), embedder, parser
    )


def ingest_steps(
    conn: psycopg.Connection,
    embedder: Embedder,
    path: Path,
    opts: IngestOptions,
    parser: Parser = parse_file,
    *,
    generation: int | None = None,
    wait: bool = True,
    isolate: bool = False,
) -> Steps:
    """`ingest_path` as steps, under the document's lock (`wait=False`: LockBusy at the first step
    when another session holds it, before anything is done). `parser` parses attachments only;
    the document itself is parsed by whoever runs the steps. `isolate`: an unexpected error marks
    this document failed with it instead of raising (database errors and a model switch still
    raise: they are no one document's fault)."""
    key = doc_key(path)
    with document_locks(conn, key, wait=wait):
        return (
            yield from _ingest_locked(conn, embedder, Path(key), opts, parser, generation, isolate)
        )


def run_steps(steps: Steps, embedder: Embedder, parser: Parser) -> IngestResult:
    """Run one document's steps in order: each parse and embedding when it is asked for."""
    reply: Any = None
    error: Exception | None = None
    while True:
        try:
            step = steps.send(reply) if error is None else steps.throw(error)
        except StopIteration as done:
            result: IngestResult = done.value
            return result
        reply, error = None, None
        try:
            if isinstance(step, ParseStep):
                reply = parser(step.path)
            else:
                reply = embed_within(embedder, step.texts, step.deadline)
        except Exception as exc:  # thrown into the steps: they handle it, or it goes on up
            error = exc


def move_path(
    conn: psycopg.Connection,
    embedder: Embedder,
    src: Path,
    dest: Path,
    opts: IngestOptions,
    parser: Parser = parse_file,
) -> IngestResult:
    """A file was renamed or moved: keep its document (and embeddings) when the content is the
    same; otherwise treat it as a deletion and a new file."""
    old, new = doc_key(src), doc_key(dest)
    with document_locks(conn, old, new):
        doc = documents.by_path(conn, old)
        seen = guard.read(conn, old)
        conn.commit()
        target = Path(new)
        if doc and doc.status == "indexed" and not os.path.lexists(old):
            try:
                with opened(target, confinement(target, opts)) as fd:
                    st = os.fstat(fd)
                    same = st.st_size == doc.size and fd_sha256(fd) == doc.content_hash
            except OSError:  # not there, or a symlink: handled below like any other path
                same = False
            if same:
                try:
                    return _moved(conn, seen, doc, new, st, opts)
                except guard.Superseded:
                    conn.rollback()
        run_steps(_ingest_locked(conn, embedder, Path(old), opts, parser), embedder, parser)
        return run_steps(_ingest_locked(conn, embedder, target, opts, parser), embedder, parser)


def _moved(
    conn: psycopg.Connection,
    seen: guard.Generation,
    doc: documents.DocumentRow,
    new: str,
    st: os.stat_result,
    opts: IngestOptions,
) -> IngestResult:
    """Give `doc` the path `new` (its chunks and embeddings stay) and commit, unless the row
    `seen` was deleted since (guard.Superseded, nothing written)."""
    with guard.write(conn, seen):
        documents.rename(
            conn, doc.id, new, collection=opts.collection, size=st.st_size, mtime=st.st_mtime
        )
    conn.commit()
    return IngestResult(new, "moved", doc.chunk_count)


def confinement(path: Path, opts: IngestOptions) -> Path:
    """The folder `path` is read from through no symlink: the first of `opts.roots` holding it,
    else its own folder."""
    for root in opts.roots:
        if path.is_relative_to(root) and path != root:
            return root
    return path.parent


def _ingest_locked(
    conn: psycopg.Connection,
    embedder: Embedder,
    path: Path,
    opts: IngestOptions,
    parser: Parser,
    expect: int | None = None,
    isolate: bool = False,
) -> Steps:
    key = str(path)
    seen = guard.read(conn, key)
    conn.commit()
    if expect is not None and (seen.value != expect or seen.deleted):
        log.info("%s was deleted or replaced since this task was queued: nothing to do", key)
        return IngestResult(key, "superseded")
    if seen.deleted and opts.source == "upload":
        # an upload's path is never used again: work queued before its deletion has none to do
        return IngestResult(key, "deleted")
    try:
        try:
            fd = open_confined(path, confinement(path, opts))
        except SymlinkRefused as exc:
            return _symlink(conn, key, exc, opts, seen)
        except (FileNotFoundError, NotADirectoryError, NotRegular):
            return _gone(conn, key)
        except OSError as exc:
            return _record(conn, seen, opts, key, f"cannot read file: {exc.strerror or exc}")
        try:
            return (yield from _ingest_open(conn, embedder, path, fd, opts, parser, seen))
        finally:
            os.close(fd)
    except guard.Superseded as exc:
        conn.rollback()
        log.info("%s", exc)
        return IngestResult(key, "superseded")
    except Exception as exc:
        if not isolate or isinstance(exc, psycopg.Error | index.IndexModelChanged):
            raise
        conn.rollback()
        log.exception("indexing %s failed", key)
        try:
            return _record(conn, seen, opts, key, f"indexing failed: {type(exc).__name__}: {exc}")
        except guard.Superseded:
            conn.rollback()
            return IngestResult(key, "superseded")


def _gone(conn: psycopg.Connection, key: str) -> IngestResult:
    """No regular file at `key` (reached through no symlink): it leaves the index."""
    gone = documents.mark_deleted(conn, key)
    conn.commit()
    drop_attachments(conn, key)
    return IngestResult(key, "deleted" if gone else "missing")


def _symlink(
    conn: psycopg.Connection,
    key: str,
    exc: SymlinkRefused,
    opts: IngestOptions,
    seen: guard.Generation,
) -> IngestResult:
    """A symlink is never followed. One to a place inside the folder adds nothing (what it points
    to is read under its own name) and neither does a path through a symlinked folder; one out of
    the folder is recorded as skipped, with the reason, so people can see why it is not there."""
    if not exc.final or not exc.outside:
        result = _gone(conn, key)
        return result if not exc.final else IngestResult(key, "skipped")
    where = _FOLDER.get(opts.source, "its folder")
    what = "folder" if exc.to_folder else "file"
    reason = (
        f"skipped: a symlink to a {what} outside {where};"
        f" Hearth does not follow symlinks out of {where}"
    )
    try:
        st: os.stat_result | None = os.lstat(key)
    except OSError:
        st = None
    return _record(conn, seen, opts, key, reason, st=st)


def _record(
    conn: psycopg.Connection,
    seen: guard.Generation,
    opts: IngestOptions,
    key: str,
    reason: str,
    status: str = "failed",
    *,
    st: os.stat_result | None = None,
    digest: str | None = None,
) -> IngestResult:
    """Mark the document failed (or needs_ocr) with its reason, unless it was deleted since."""
    with guard.write(conn, seen):
        documents.record_failure(
            conn,
            key,
            status,
            reason,
            collection=opts.collection,
            source=opts.source,
            size=st.st_size if st else None,
            mtime=st.st_mtime if st else None,
            content_hash=digest,
        )
    conn.commit()
    log.warning("%s: %s", key, reason)
    return IngestResult(key, status, error=reason)


def _ingest_open(
    conn: psycopg.Connection,
    embedder: Embedder,
    path: Path,
    fd: int,
    opts: IngestOptions,
    parser: Parser,
    seen: guard.Generation,
) -> Steps:
    """Index the open file `fd` (the regular file at `path`); reads nothing through the path."""
    key = str(path)
    st = os.fstat(fd)
    existing = documents.by_path(conn, key)
    conn.commit()
    if (
        existing
        and existing.status in SETTLED
        and existing.size == st.st_size
        and existing.mtime == st.st_mtime
        and existing.collection == opts.collection
    ):
        return IngestResult(key, "unchanged", existing.chunk_count)

    digest: str | None = None
    deadline = Deadline.start(opts.timeout_s)

    def fail(reason: str, status: str = "failed") -> IngestResult:
        return _record(conn, seen, opts, key, reason, status, st=st, digest=digest)

    if st.st_size > opts.max_file_bytes:
        return fail(
            f"file too large: {st.st_size / 2**20:.1f} MB is over the "
            f"{opts.max_file_bytes / 2**20:.0f} MB limit (MAX_FILE_MB)"
        )
    with private_copy(fd, path.name, opts.scratch_dir) as (copy, hashed):
        digest = hashed
        if existing and existing.content_hash == digest and existing.status == "indexed":
            with guard.write(conn, seen):
                documents.touch(conn, key, st.st_size, st.st_mtime, collection=opts.collection)
            conn.commit()
            return IngestResult(key, "unchanged", existing.chunk_count)
        if existing is None or existing.status == "deleted":
            reused = _reuse_same_content(conn, key, digest, st, opts, seen)
            if reused:
                return reused

        with guard.write(conn, seen):
            documents.set_status(
                conn, key, "parsing", collection=opts.collection, source=opts.source
            )
        conn.commit()
        try:
            parsed: Parsed = yield ParseStep(copy, deadline)
        except ParseError as exc:
            return fail(str(exc))
    if parsed.needs_ocr:
        return fail("no text layer (scanned or image-only); OCR is not enabled", "needs_ocr")
    try:
        chunks, vectors = yield from _chunk_and_embed(
            conn, embedder, key, parsed, opts, seen, deadline
        )
    except (TooMuchText, OutOfTime) as exc:
        return fail(str(exc))
    if not chunks:
        return fail("no text found in the file")
    doc = Document(
        path=key,
        content_hash=digest,
        size=st.st_size,
        mtime=st.st_mtime,
        mime=parsed.mime,
        title=parsed.title,
        collection=opts.collection,
        source=opts.source,
        chunks=chunks,
    )
    with guard.write(conn, seen):
        index.replace_chunks(conn, doc, vectors, model=embedder.name)
    conn.commit()
    log.info("indexed %s: %d chunks", key, len(chunks))
    if parsed.attachments or existing is not None:
        index_attachments(
            conn,
            embedder,
            key,
            parsed.attachments,
            collection=opts.collection,
            source=opts.source,
            chunk_size=opts.chunk_size,
            overlap=opts.chunk_overlap,
            parser=parser,
            max_chunks=None if opts.max_chunks is None else opts.max_chunks - len(chunks),
            deadline=deadline,
            guarded=lambda: guard.write(conn, seen),
        )
    return IngestResult(key, "indexed", len(chunks))


class TooMuchText(Exception):
    """The file's text is over its budget (MAX_FILE_CHUNKS)."""


def _chunk_and_embed(
    conn: psycopg.Connection,
    embedder: Embedder,
    key: str,
    parsed: Parsed,
    opts: IngestOptions,
    seen: guard.Generation,
    deadline: Deadline,
) -> Generator[Step, Any, tuple[list[Chunk], np.ndarray]]:
    """Chunk within the chunk budget, then embed in slices within the time budget; raises
    TooMuchText or OutOfTime before anything is embedded past either."""
    if opts.max_chunks is not None:
        limit = max_chars(opts.max_chunks, opts.chunk_size)
        chars = sum(len(e.text) for e in parsed.elements)
        if chars > limit:
            raise TooMuchText(too_much_text(chars, opts.max_chunks, limit))
    deadline.check()
    try:
        chunks = chunk_elements(
            parsed.elements,
            title=parsed.title,
            count_tokens=embedder.count_tokens,
            chunk_size=opts.chunk_size,
            overlap=opts.chunk_overlap,
            max_chunks=opts.max_chunks,
        )
    except TooManyChunks as exc:
        raise TooMuchText(too_many_chunks(exc.limit)) from None
    if not chunks:
        return [], np.zeros((0, embedder.dim), dtype=np.float32)
    deadline.check()
    with guard.write(conn, seen):
        documents.set_status(conn, key, "embedding", collection=opts.collection, source=opts.source)
    conn.commit()
    vectors: np.ndarray = yield EmbedStep([c.embed_text for c in chunks], deadline)
    return chunks, vectors


def _reuse_same_content(
    conn: psycopg.Connection,
    key: str,
    digest: str,
    st: os.stat_result,
    opts: IngestOptions,
    seen: guard.Generation,
) -> IngestResult | None:
    """A new path whose bytes are already indexed: a move (the old path is gone) keeps the
    document; a copy gets the chunks and embeddings copied. Nothing is parsed or embedded."""
    twin = documents.find_by_hash(conn, digest, exclude_path=key)
    conn.commit()
    if twin is None:
        return None
    if not os.path.lexists(twin.path):
        with document_locks(conn, twin.path):
            return _moved(conn, seen, twin, key, st, opts)
    with guard.write(conn, seen):
        documents.copy_document(
            conn,
            twin.id,
            key,
            collection=opts.collection,
            source=opts.source,
            size=st.st_size,
            mtime=st.st_mtime,
        )
    conn.commit()
    return IngestResult(key, "copied", twin.chunk_count)
