"""Many files at once (ingest.batch) against the real database: shared embedding calls, and every
per-document guarantee of ingest_path kept."""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
import psycopg
import pytest

from core.db import connect
from ingest.batch import ingest_paths
from ingest.parse import Parsed, ParseError, parse_file
from ingest.pipeline import IngestOptions, IngestResult, _lock_id, doc_key, ingest_path
from retrieval import documents
from tests.factories import HashEmbedder

OPTS = IngestOptions(chunk_size=64, chunk_overlap=8)


class CountingEmbedder(HashEmbedder):
    """The fake embedder, keeping each call's texts; `poison` in a text makes a call fail."""

    def __init__(self, poison: str | None = None) -> None:
        super().__init__(384)
        self.calls: list[list[str]] = []
        self.poison = poison

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        self.calls.append(list(texts))
        if self.poison and any(self.poison in t for t in texts):
            raise RuntimeError("the embedder choked")
        return super().embed(texts)


class CallsKept:
    """The real embedder, with the texts of each call kept."""

    def __init__(self, inner: object) -> None:
        self.inner = inner
        self.name, self.dim = inner.name, inner.dim  # type: ignore[attr-defined]
        self.calls: list[list[str]] = []

    def count_tokens(self, text: str) -> int:
        return int(self.inner.count_tokens(text))  # type: ignore[attr-defined]

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        self.calls.append(list(texts))
        return np.asarray(self.inner.embed(texts))  # type: ignore[attr-defined]


def prose(n: int, word: str) -> str:
    return f"# {word.title()}\n\n" + " ".join(
        f"The {word} report number {i} was filed by the committee in spring." for i in range(n)
    )


def corpus(folder: Path) -> list[Path]:
    folder.mkdir(exist_ok=True)
    files = []
    for i, (n, word) in enumerate([(3, "garden"), (40, "budget"), (1, "roof"), (12, "school")]):
        files.append(folder / f"doc{i}.md")
        files[-1].write_text(prose(n, word))
    return files


def rows(db: psycopg.Connection) -> dict[str, list[tuple[object, ...]]]:
    """Every document's chunks as stored: text, position, heading, and the embedding."""
    out: dict[str, list[tuple[object, ...]]] = {}
    for path, *chunk in db.execute(
        "SELECT d.path, c.ordinal, c.text, c.heading_path, c.page, c.char_start, c.char_end,"
        " c.embedding::real[] FROM chunks c JOIN documents d ON d.id = c.document_id"
        " WHERE d.status = 'indexed' ORDER BY d.path, c.ordinal"
    ).fetchall():
        out.setdefault(path, []).append(tuple(chunk))
    db.commit()
    return out


def statuses(db: psycopg.Connection) -> dict[str, tuple[str, str | None]]:
    found = db.execute("SELECT path, status, error FROM documents").fetchall()
    db.commit()
    return {Path(p).name: (s, e) for p, s, e in found}


def test_a_batch_gives_the_chunks_and_embeddings_of_one_by_one_in_fewer_calls(
    db: psycopg.Connection, tmp_path: Path, embedder: object
) -> None:
    """The real packaged embedder: chunk texts of several documents share calls, and what each
    document gets is what it gets alone (to float rounding: batches pad differently)."""
    files = corpus(tmp_path / "docs")
    alone = CallsKept(embedder)
    for f in files:
        assert ingest_path(db, alone, f, OPTS).status == "indexed"
    one_by_one = rows(db)
    db.execute("TRUNCATE documents, chunks RESTART IDENTITY CASCADE")
    db.commit()

    together = CallsKept(embedder)
    results = ingest_paths(db, together, [(f, OPTS) for f in files], batch_texts=1000)
    assert [r.status for r in results] == ["indexed"] * len(files)
    assert [r.path for r in results] == [doc_key(f) for f in files]
    batched = rows(db)

    assert len(together.calls) < len(alone.calls) == len(files)
    assert sorted(t for c in together.calls for t in c) == sorted(t for c in alone.calls for t in c)
    assert batched.keys() == one_by_one.keys() and len(batched) == len(files)
    for path, chunks in one_by_one.items():
        assert [c[:-1] for c in batched[path]] == [c[:-1] for c in chunks]  # texts, places
        got = np.array([c[-1] for c in batched[path]], dtype=np.float32)
        want = np.array([c[-1] for c in chunks], dtype=np.float32)
        np.testing.assert_allclose(got, want, atol=2e-5)


def test_a_bad_document_in_a_batch_fails_with_its_reason_and_the_others_index(
    db: psycopg.Connection, tmp_path: Path
) -> None:
    good = corpus(tmp_path / "docs")
    broken = tmp_path / "docs" / "broken.pdf"
    broken.write_bytes(os.urandom(2048))
    big = tmp_path / "docs" / "big.txt"
    big.write_text("word " * 1000)  # over a 5-chunk budget
    empty = tmp_path / "docs" / "empty.txt"
    empty.write_text("   \n")
    exploding = tmp_path / "docs" / "explodes.txt"
    exploding.write_text("The parser trips over this one.")
    choking = tmp_path / "docs" / "chokes.txt"
    choking.write_text("The embedder chokes on POISON.")
    gone = tmp_path / "docs" / "never-there.txt"

    def parser(path: Path) -> Parsed:
        if path.read_bytes().startswith(b"The parser trips"):
            raise ValueError("a parser bug")
        return parse_file(path)

    emb = CountingEmbedder(poison="POISON")
    files = [good[0], broken, good[1], big, empty, exploding, good[2], choking, gone, good[3]]
    small = {big: replace(OPTS, max_chunks=5)}
    results = ingest_paths(
        db, emb, [(f, small.get(f, OPTS)) for f in files], parser, batch_texts=1000
    )
    by_name = {Path(r.path).name: r for r in results}
    assert [by_name[f.name].status for f in good] == ["indexed"] * 4
    assert by_name["broken.pdf"].status == "failed" and by_name["broken.pdf"].error
    assert "MAX_FILE_CHUNKS" in (by_name["big.txt"].error or "")
    assert "no text found" in (by_name["empty.txt"].error or "")
    assert by_name["explodes.txt"].error == "indexing failed: ValueError: a parser bug"
    assert by_name["chokes.txt"].error == "indexing failed: RuntimeError: the embedder choked"
    assert by_name["never-there.txt"].status == "missing"

    recorded = statuses(db)
    for f in good:
        assert recorded[f.name] == ("indexed", None)
    for name in ("broken.pdf", "big.txt", "empty.txt", "explodes.txt", "chokes.txt"):
        assert recorded[name] == ("failed", by_name[name].error)
    stored = rows(db)
    assert len(stored) == 4 and all(doc_key(f) in stored for f in good)
    assert not any("POISON" in c[1] for chunks in stored.values() for c in chunks)  # type: ignore[operator]


def test_a_document_out_of_time_in_a_batch_fails_alone(
    db: psycopg.Connection, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    now = [1000.0]
    monkeypatch.setattr("ingest.budget.time.monotonic", lambda: now[0])
    files = corpus(tmp_path / "docs")
    slow = files[1]

    def parser(path: Path) -> Parsed:
        if path.read_bytes() == slow.read_bytes():
            now[0] += 61  # this parse took a minute: only its own budget began before it
        return parse_file(path)

    opts = replace(OPTS, timeout_s=60)
    emb = CountingEmbedder()
    results = ingest_paths(db, emb, [(f, opts) for f in files], parser, ahead=1, batch_texts=1)
    assert [r.status for r in results] == ["indexed", "failed", "indexed", "indexed"]
    assert results[1].error == "indexing took longer than 60 s (FILE_TIMEOUT_S) and was stopped"
    assert not any("budget report" in t for c in emb.calls for t in c)


def test_a_document_out_of_time_between_shared_calls_keeps_its_reason_when_the_next_chokes(
    db: psycopg.Connection, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A long document runs out of time during the first shared call; the next call, with
    another document's texts, fails: each still ends with its own reason, none is left out."""
    now = [1000.0]
    monkeypatch.setattr("ingest.budget.time.monotonic", lambda: now[0])
    monkeypatch.setattr("ingest.batch.MIN_TEXTS", 10_000)  # both documents in one embedding
    folder = tmp_path / "docs"
    folder.mkdir()
    long, choking = folder / "long.md", folder / "chokes.txt"
    long.write_text(prose(1200, "archive"))  # some 300 chunks: more than one call's 256
    choking.write_text("The embedder chokes on POISON.")

    class SlowFirstCall(CountingEmbedder):
        def embed(self, texts: Sequence[str]) -> np.ndarray:
            if not self.calls:
                now[0] += 61  # the first call takes a minute
            return super().embed(texts)

    emb = SlowFirstCall(poison="POISON")
    items = [(long, replace(OPTS, timeout_s=60)), (choking, OPTS)]
    results = ingest_paths(db, emb, items, batch_texts=1000)
    assert len(emb.calls[0]) == 256 and "POISON" in emb.calls[1][-1]
    assert [(r.status, r.error) for r in results] == [
        ("failed", "indexing took longer than 60 s (FILE_TIMEOUT_S) and was stopped"),
        ("failed", "indexing failed: RuntimeError: the embedder choked"),
    ]
    assert statuses(db)["long.md"][0] == "failed"


def test_a_delete_during_a_batch_wins_over_the_documents_waiting_to_be_written(
    db: psycopg.Connection, pg_url: str, tmp_path: Path
) -> None:
    files = corpus(tmp_path / "docs")
    victim, trigger = files[0], files[2]

    def parser(path: Path) -> Parsed:
        if path.read_bytes() == trigger.read_bytes():  # the victim is parsed and waits to embed
            with connect(pg_url) as other:
                assert documents.mark_deleted(other, doc_key(victim))
                other.commit()
        return parse_file(path)

    results = ingest_paths(db, CountingEmbedder(), [(f, OPTS) for f in files], parser, ahead=1)
    assert [r.status for r in results] == ["superseded", "indexed", "indexed", "indexed"]
    assert statuses(db)[victim.name][0] == "deleted"
    assert doc_key(victim) not in rows(db)


def test_a_document_another_worker_holds_is_done_last_and_waited_for(
    db: psycopg.Connection, pg_url: str, tmp_path: Path
) -> None:
    """The batch does not wait for a lock while it holds others: the held document is left for
    the end, when the batch holds nothing, and then waited for."""
    files = corpus(tmp_path / "docs")
    held = files[1]
    db.execute("SET lock_timeout = '60s'")  # waiting for it while holding others fails, not hangs
    db.commit()
    other = connect(pg_url)
    other.execute("SELECT pg_advisory_lock(%s)", (_lock_id(doc_key(held)),))
    other.commit()
    order: list[str] = []
    released = threading.Event()

    def on_result(result: IngestResult) -> None:
        order.append(Path(result.path).name)
        if len(order) == len(files) - 1:  # everything else is done: the other worker lets go
            other.execute("SELECT pg_advisory_unlock(%s)", (_lock_id(doc_key(held)),))
            other.commit()
            released.set()

    try:
        results = ingest_paths(
            db, CountingEmbedder(), [(f, OPTS) for f in files], on_result=on_result
        )
    finally:
        other.close()
    assert released.is_set() and order[-1] == held.name
    assert [r.status for r in results] == ["indexed"] * len(files)


def test_the_same_path_twice_in_a_batch_is_indexed_once(
    db: psycopg.Connection, tmp_path: Path
) -> None:
    files = corpus(tmp_path / "docs")
    emb = CountingEmbedder()
    results = ingest_paths(db, emb, [(files[0], OPTS), (files[1], OPTS), (files[0], OPTS)])
    assert [r.status for r in results] == ["indexed", "indexed", "unchanged"]
    stored = rows(db)
    assert sum(len(c) for c in emb.calls) == sum(len(chunks) for chunks in stored.values())
    assert len(stored) == 2


def test_a_parse_error_is_the_documents_reason_in_a_batch(
    db: psycopg.Connection, tmp_path: Path
) -> None:
    files = corpus(tmp_path / "docs")

    def parser(path: Path) -> Parsed:
        if path.read_bytes() == files[3].read_bytes():
            raise ParseError("the parser crashed (exit code -9, killed)")
        return parse_file(path)

    results = ingest_paths(db, CountingEmbedder(), [(f, OPTS) for f in files], parser)
    assert [r.status for r in results] == ["indexed", "indexed", "indexed", "failed"]
    assert statuses(db)["doc3.md"] == ("failed", "the parser crashed (exit code -9, killed)")
