"""The ingest pipeline against the real database (fake embedder: this is about bookkeeping)."""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

import psycopg
import pytest

from ingest.parse import Parsed, parse_file
from ingest.pipeline import IngestOptions, ingest_path
from retrieval import documents
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
    doc = documents.by_path(db, str(f.resolve()))
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
    doc = documents.by_path(db, str(f.resolve()))
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
    doc = documents.by_path(db, str(f.resolve()))
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


def doc_ids(db: psycopg.Connection) -> dict[str, tuple[int, str]]:
    rows = db.execute("SELECT path, id, status FROM documents").fetchall()
    return {Path(p).name: (i, s) for p, i, s in rows}


def test_renamed_file_keeps_its_document_and_embeddings(
    db: psycopg.Connection, tmp_path: Path
) -> None:
    from ingest.pipeline import move_path

    f = write(tmp_path / "before.md", "# Title\n\nSome durable content about lighthouses.\n")
    emb = CountingEmbedder()
    ingest_path(db, emb, f, OPTS)
    old_id = doc_ids(db)["before.md"][0]
    dest = tmp_path / "sub" / "after.md"
    dest.parent.mkdir()
    f.rename(dest)
    result = move_path(db, emb, f, dest, OPTS)
    assert result.status == "moved"
    assert emb.calls == 1  # nothing re-embedded
    assert doc_ids(db) == {"after.md": (old_id, "indexed")}
    assert any("lighthouses" in t for t in chunk_texts(db, dest))


def test_move_reported_as_delete_plus_create_is_still_a_move(
    db: psycopg.Connection, tmp_path: Path
) -> None:
    f = write(tmp_path / "one.txt", "Granite countertops need sealing yearly.")
    emb = CountingEmbedder()
    ingest_path(db, emb, f, OPTS)
    dest = tmp_path / "two.txt"
    f.rename(dest)
    assert ingest_path(db, emb, dest, OPTS).status == "moved"  # the create arrives first
    assert ingest_path(db, emb, f, OPTS).status == "missing"  # then the delete: nothing to do
    assert emb.calls == 1
    assert [s for _, s in doc_ids(db).values()] == ["indexed"]


def test_a_copy_reuses_embeddings_and_both_stay_searchable(
    db: psycopg.Connection, tmp_path: Path
) -> None:
    import shutil

    f = write(tmp_path / "orig.txt", "Copper pipes were replaced in 2021.")
    emb = CountingEmbedder()
    ingest_path(db, emb, f, OPTS)
    copy = tmp_path / "copy.txt"
    shutil.copy(f, copy)
    assert ingest_path(db, emb, copy, OPTS).status == "copied"
    assert emb.calls == 1
    assert chunk_texts(db, copy) == chunk_texts(db, f) == ["Copper pipes were replaced in 2021."]
    f.unlink()
    ingest_path(db, emb, f, OPTS)
    assert chunk_texts(db, copy) == ["Copper pipes were replaced in 2021."]


def test_move_with_changed_content_is_a_delete_and_a_new_document(
    db: psycopg.Connection, tmp_path: Path
) -> None:
    from ingest.pipeline import move_path

    f = write(tmp_path / "a.txt", "Version one of the plan.")
    emb = CountingEmbedder()
    ingest_path(db, emb, f, OPTS)
    dest = tmp_path / "b.txt"
    f.rename(dest)
    dest.write_text("Version two of the plan, rewritten.")
    assert move_path(db, emb, f, dest, OPTS).status == "indexed"
    ids = doc_ids(db)
    assert ids["a.txt"][1] == "deleted" and ids["b.txt"][1] == "indexed"
    assert chunk_texts(db, dest) == ["Version two of the plan, rewritten."]


def test_two_workers_never_process_one_document_at_once(
    pg_url: str, db: psycopg.Connection, tmp_path: Path
) -> None:
    """The second caller waits for the first one's lock, then finds nothing left to do."""
    import threading

    from core.db import connect

    f = write(tmp_path / "shared.md", "# Shared\n\n" + "Lots of words here. " * 200)
    embedders = [CountingEmbedder(), CountingEmbedder()]
    results: list[str] = []

    def run(i: int) -> None:
        with connect(pg_url) as conn:
            results.append(ingest_path(conn, embedders[i], f, OPTS).status)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sorted(results) == ["indexed", "unchanged"]
    assert sum(e.calls for e in embedders) == 1


def test_email_attachments_are_documents_that_follow_their_email(
    db: psycopg.Connection, tmp_path: Path
) -> None:
    from email.message import EmailMessage

    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = "a@example.com", "b@example.com", "Boiler service"
    msg.set_content("The service report is attached.")
    msg.add_attachment(
        b"The boiler was serviced on 4 May; next visit in a year.\n",
        maintype="text",
        subtype="plain",
        filename="report.txt",
    )
    msg.add_attachment(
        b"not really a pdf", maintype="application", subtype="pdf", filename="broken.pdf"
    )
    mail = tmp_path / "service.eml"
    mail.write_bytes(bytes(msg))
    emb = CountingEmbedder()
    assert ingest_path(db, emb, mail, OPTS).status == "indexed"
    rows = dict(db.execute("SELECT path, status FROM documents").fetchall())
    assert rows[f"{mail}#report.txt"] == "indexed"
    assert rows[f"{mail}#broken.pdf"] == "failed"
    assert any("serviced on 4 May" in t for t in chunk_texts(db, Path(f"{mail}#report.txt")))

    # a rescan of the folder does not mistake attachments for vanished files
    from core.settings import WatchRoot
    from ingest.sync import reconcile

    plan = reconcile(db, [WatchRoot(tmp_path, "default")])
    assert plan.to_delete == [] and plan.unchanged == 1

    mail.unlink()
    ingest_path(db, emb, mail, OPTS)
    left = db.execute(
        "SELECT count(*) FROM documents WHERE path LIKE %s", (f"{mail}#%",)
    ).fetchone()
    assert left == (0,)
    assert chunk_texts(db, Path(f"{mail}#report.txt")) == []


def test_an_image_is_marked_needs_ocr_with_a_reason(db: psycopg.Connection, tmp_path: Path) -> None:
    scan = tmp_path / "receipt.png"
    scan.write_bytes(b"\x89PNG\r\n\x1a\n" + os.urandom(200))
    result = ingest_path(db, CountingEmbedder(), scan, OPTS)
    assert result.status == "needs_ocr" and "OCR" in (result.error or "")
    fake = tmp_path / "fake.jpg"
    fake.write_text("just text")
    assert ingest_path(db, CountingEmbedder(), fake, OPTS).status == "failed"


# --- one file's budget (MAX_FILE_CHUNKS, FILE_TIMEOUT_S) -----------------------------------------


def test_text_over_the_budget_fails_before_anything_is_embedded(
    db: psycopg.Connection, tmp_path: Path
) -> None:
    opts = replace(OPTS, max_chunks=5)  # 5 chunks of 64 tokens: at most 2,560 characters
    long = write(tmp_path / "long.txt", "word " * 1000)
    many = write(
        tmp_path / "many.md", "".join(f"# Part {i}\n\nshort body {i}\n\n" for i in range(8))
    )
    fits = write(
        tmp_path / "fits.md", "".join(f"# Part {i}\n\nshort body {i}\n\n" for i in range(5))
    )
    emb = CountingEmbedder()
    r_long, r_many = ingest_path(db, emb, long, opts), ingest_path(db, emb, many, opts)
    assert emb.calls == 0
    assert r_long.status == "failed" and "4,999 characters" in (r_long.error or "")
    assert r_many.status == "failed" and "more than 5 chunks" in (r_many.error or "")
    for r in (r_long, r_many):
        assert "MAX_FILE_CHUNKS" in (r.error or "")
        doc = documents.by_path(db, r.path)
        assert doc is not None and doc.status == "failed" and doc.error == r.error
    assert ingest_path(db, emb, fits, opts).status == "indexed" and emb.calls == 1


def test_a_file_over_its_time_budget_fails_with_the_setting_named(
    db: psycopg.Connection, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    now = [1000.0]
    monkeypatch.setattr("ingest.budget.time.monotonic", lambda: now[0])

    def slow_parser(path: Path) -> Parsed:
        now[0] += 61  # parsing took a minute
        return parse_file(path)

    f = write(tmp_path / "slow.md", "# Slow\n\nIt took a while.\n")
    emb = CountingEmbedder()
    result = ingest_path(db, emb, f, replace(OPTS, timeout_s=60), slow_parser)
    assert result.status == "failed" and emb.calls == 0
    assert result.error == "indexing took longer than 60 s (FILE_TIMEOUT_S) and was stopped"
    # a failed file is tried again when it changes, with the budget of that time
    assert ingest_path(db, emb, f, replace(OPTS, timeout_s=120), slow_parser).status == "unchanged"
    f.write_text("# Slow\n\nChanged.\n")
    assert ingest_path(db, emb, f, replace(OPTS, timeout_s=120), slow_parser).status == "indexed"


def test_a_task_queued_for_a_generation_does_nothing_once_it_moved(
    db: psycopg.Connection, tmp_path: Path
) -> None:
    f = write(tmp_path / "a.txt", "Kept content.")
    emb = CountingEmbedder()
    ingest_path(db, emb, f, OPTS)
    gen = db.execute("SELECT generation FROM documents").fetchone()
    assert gen is not None
    f.write_text("Changed content.")
    assert ingest_path(db, emb, f, OPTS, generation=gen[0] + 1).status == "superseded"
    assert chunk_texts(db, f) == ["Kept content."]
    assert ingest_path(db, emb, f, OPTS, generation=gen[0]).status == "indexed"
    assert chunk_texts(db, f) == ["Changed content."]


def test_a_symlinked_upload_is_skipped_with_its_folder_named(
    db: psycopg.Connection, tmp_path: Path
) -> None:
    uploads, elsewhere = tmp_path / "uploads", tmp_path / "elsewhere.txt"
    (uploads / "user-ann" / "1a").mkdir(parents=True)
    elsewhere.write_text("Not for the index.")
    link = uploads / "user-ann" / "1a" / "notes.txt"
    os.symlink(elsewhere, link)
    opts = replace(OPTS, source="upload", roots=(uploads,))
    result = ingest_path(db, CountingEmbedder(), link, opts)
    assert result.status == "failed" and result.error == (
        "skipped: a symlink to a file outside the uploads folder;"
        " Hearth does not follow symlinks out of the uploads folder"
    )
    inner = uploads / "user-ann" / "1a" / "alias.txt"
    os.symlink(tmp_path / "uploads" / "user-ann" / "1a" / "real.txt", inner)
    assert ingest_path(db, CountingEmbedder(), inner, opts).status == "skipped"
    assert documents.by_path(db, str(inner)) is None
