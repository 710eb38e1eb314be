"""The ingest pipeline against the real database (fake embedder: this is about bookkeeping)."""

from __future__ import annotations

import os
from pathlib import Path

import psycopg

from ingest.pipeline import IngestOptions, ingest_path
from retrieval import index
from tests.factories import HashEmbedder

OPTS = IngestOptions(chunk_size=64, chunk_overlap=8)


class CountingEmbedder(HashEmbedder):
    def __init__(self) -> None:
        super().__init__(384)
        self.calls = 0

    def embed(self, texts):  # type: ignore[no-untyped-def]
        self.calls += 1
        return super().embed(texts)


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def chunk_texts(db: psycopg.Connection, path: Path) -> list[str]:
    rows = db.execute(
        "SELECT c.text FROM chunks c JOIN documents d ON d.id = c.document_id"
        " WHERE d.path = %s ORDER BY c.ordinal",
        (str(path.resolve()),),
    ).fetchall()
    return [r[0] for r in rows]


def test_new_file_is_indexed_with_its_chunks(db: psycopg.Connection, tmp_path: Path) -> None:
    f = write(tmp_path / "notes.md", "# Garden\n\nThe tomatoes were planted in April.\n")
    emb = CountingEmbedder()
    result = ingest_path(db, emb, f, OPTS)
    assert result.status == "indexed" and result.chunks >= 1
    doc = index.get_document(db, str(f.resolve()))
    assert doc is not None and doc.status == "indexed" and doc.chunk_count == result.chunks
    assert any("tomatoes" in t for t in chunk_texts(db, f))


def test_unchanged_file_is_skipped_without_hashing_or_embedding(
    db: psycopg.Connection, tmp_path: Path
) -> None:
    f = write(tmp_path / "a.txt", "Alpha beta gamma.")
    emb = CountingEmbedder()
    ingest_path(db, emb, f, OPTS)
    assert ingest_path(db, emb, f, OPTS).status == "unchanged"
    assert emb.calls == 1


def test_touched_but_identical_file_is_not_reembedded(
    db: psycopg.Connection, tmp_path: Path
) -> None:
    f = write(tmp_path / "a.txt", "Alpha beta gamma.")
    emb = CountingEmbedder()
    ingest_path(db, emb, f, OPTS)
    os.utime(f, (1_000_000, 1_000_000))  # new mtime, same bytes: the hash decides
    assert ingest_path(db, emb, f, OPTS).status == "unchanged"
    assert emb.calls == 1
    doc = index.get_document(db, str(f.resolve()))
    assert doc is not None and doc.mtime == 1_000_000


def test_modified_file_replaces_its_chunks(db: psycopg.Connection, tmp_path: Path) -> None:
    f = write(tmp_path / "a.txt", "The old text about apples.")
    emb = CountingEmbedder()
    ingest_path(db, emb, f, OPTS)
    write(f, "The new text about pears, which is longer than before.")
    os.utime(f, (2_000_000, 2_000_000))
    assert ingest_path(db, emb, f, OPTS).status == "indexed"
    texts = chunk_texts(db, f)
    assert texts and all("apples" not in t for t in texts)
    assert any("pears" in t for t in texts)


def test_deleted_file_leaves_the_index(db: psycopg.Connection, tmp_path: Path) -> None:
    f = write(tmp_path / "a.txt", "Ephemeral content.")
    emb = CountingEmbedder()
    ingest_path(db, emb, f, OPTS)
    f.unlink()
    assert ingest_path(db, emb, f, OPTS).status == "deleted"
    assert chunk_texts(db, f) == []
    doc = index.get_document(db, str(f.resolve()))
    assert doc is not None and doc.status == "deleted"


def test_bad_and_oversized_files_fail_with_a_reason_and_others_survive(
    db: psycopg.Connection, tmp_path: Path
) -> None:
    good = write(tmp_path / "good.txt", "Survivor text.")
    bad = tmp_path / "broken.pdf"
    bad.write_bytes(os.urandom(2048))
    big = write(tmp_path / "big.txt", "x" * 5000)
    emb = CountingEmbedder()
    ingest_path(db, emb, good, OPTS)
    r_bad = ingest_path(db, emb, bad, OPTS)
    r_big = ingest_path(db, emb, big, IngestOptions(max_file_bytes=1000))
    assert r_bad.status == "failed" and r_bad.error
    assert r_big.status == "failed" and "too large" in (r_big.error or "")
    assert chunk_texts(db, good) == ["Survivor text."]
