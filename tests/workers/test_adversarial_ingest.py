"""Issue 13, the ingestion side, tried as an attacker would: someone who can write into a watched
folder (symlinks out of it, files swapped for symlinks between scan and open), someone who deletes
a document while work for it is queued or running, and someone who drops one enormous file.

Real PostgreSQL, real Redis, real worker processes with the packaged embedder where a user's path
is exercised; the task bodies are also called as functions on the real database.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import psutil
import psycopg
import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from api.store import accounts
from core.embedder import Embedder
from core.settings import Settings, WatchRoot, get_settings
from ingest.parse import Parsed, parse_file
from ingest.pipeline import IngestOptions, ingest_path
from retrieval import documents
from tests.conftest import run_hearth
from tests.factories import HashEmbedder
from tests.workers.conftest import WorkerFactory
from workers import tasks
from workers.celery_app import (
    INTERACTIVE_QUEUE,
    TASK_INGEST,
    TASK_MOVE,
    TASK_RESCAN,
    create_celery,
)
from workers.watcher import Callbacks, watch

T = TypeVar("T")

# markers no other text can spell: a chunk holding one was read from where it must not be
OUTSIDE = "Quokka-7731 is the alarm code written in a file outside the watched folder."
BOB = "Bob's private upload says the spare key hides under the Wombat-5519 gnome."
INNER = "A folder outside the watched one holds the Numbat-2286 passphrase."
MARKERS = ("Quokka-7731", "Wombat-5519", "Numbat-2286")
SETTLED = ("indexed", "failed", "needs_ocr", "deleted")


def wait_until(check: Callable[[], T | None], what: str, timeout_s: float = 300) -> T:
    """Poll `check` until it returns something truthy; fail loudly at the deadline."""
    deadline = time.monotonic() + timeout_s
    while True:
        found = check()
        if found:
            return found
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        time.sleep(0.1)


def row(db: psycopg.Connection, path: str | Path) -> tuple[str, str | None, int] | None:
    """(status, error, chunk_count) of the document at `path` (not resolved: a symlink's own)."""
    found = db.execute(
        "SELECT status, error, chunk_count FROM documents WHERE path = %s",
        (os.path.abspath(path),),
    ).fetchone()
    db.commit()
    return (str(found[0]), found[1], int(found[2])) if found else None


def leaked(db: psycopg.Connection, markers: Sequence[str] = MARKERS) -> list[tuple[str, str]]:
    """(document path, marker) for every chunk that holds a marker."""
    out = []
    for marker in markers:
        rows = db.execute(
            "SELECT d.path FROM chunks c JOIN documents d ON d.id = c.document_id"
            " WHERE c.text LIKE %s",
            (f"%{marker}%",),
        ).fetchall()
        out += [(r[0], marker) for r in rows]
    db.commit()
    return out


def settled(db: psycopg.Connection, *paths: str | Path) -> bool:
    return all((r := row(db, p)) is not None and r[0] in SETTLED for p in paths)


@pytest.fixture
def outside(tmp_path: Path) -> dict[str, Path]:
    """Files the Hearth process can read that no watched folder holds: a file elsewhere, a folder
    elsewhere, and another user's upload in the data dir."""
    out = tmp_path / "elsewhere"
    (out / "dir").mkdir(parents=True)
    (out / "secret.txt").write_text(OUTSIDE + "\n")
    (out / "dir" / "inner.txt").write_text(INNER + "\n")
    upload = tmp_path / "data" / "uploads" / "user-bob" / "0f3c" / "bob.md"
    upload.parent.mkdir(parents=True)
    upload.write_text(f"# Bob\n\n{BOB}\n")
    return {"secret": out / "secret.txt", "dir": out / "dir", "upload": upload}


# --- 3. symlinks in a watched folder ----------------------------------------------------------


def plant_links(watched: Path, outside: dict[str, Path]) -> dict[str, Path]:
    """Every kind of symlink a writer of the watched folder can make."""
    (watched / "good.md").write_text("# Pantry\n\nThe flour is on the top shelf.\n")
    links = {
        "secret": watched / "notes.txt",  # -> a file elsewhere
        "upload": watched / "bob.md",  # -> another user's upload
        "dir": watched / "linked",  # -> a folder elsewhere
        "alias": watched / "alias.md",  # -> good.md, inside the root
        "loop": watched / "loop.md",  # -> itself
        "dangling": watched / "gone.txt",  # -> nothing
    }
    os.symlink(outside["secret"], links["secret"])
    os.symlink(outside["upload"], links["upload"])
    os.symlink(outside["dir"], links["dir"], target_is_directory=True)
    os.symlink("good.md", links["alias"])
    os.symlink("loop.md", links["loop"])
    os.symlink(watched.parent / "nothing-here.txt", links["dangling"])
    return links


@pytest.mark.slow
def test_rescan_by_a_real_worker_follows_no_symlink_out_of_the_watched_folder(
    db: psycopg.Connection,
    worker_env: dict[str, str],
    start_worker: WorkerFactory,
    outside: dict[str, Path],
) -> None:
    watched = Path(worker_env["HEARTH_WATCH_DIR"])
    links = plant_links(watched, outside)
    start_worker()
    create_celery(get_settings(), worker_env["REDIS_URL"]).send_task(TASK_RESCAN)
    wait_until(
        lambda: settled(db, watched / "good.md", links["secret"], links["upload"]),
        "the rescan's files to settle",
    )
    assert leaked(db) == []
    wait_until(lambda: settled(db, links["dir"]), "the symlinked folder's row")
    for name in ("secret", "upload", "dir"):
        status, error, chunks = row(db, links[name]) or ("", None, 0)
        assert status == "failed" and chunks == 0, (name, status, error)
        assert "symlink" in (error or "") and "outside the watched folder" in (error or "")
    # inside the root: the target is indexed once, under its own name; the link adds nothing
    assert row(db, links["alias"]) is None and row(db, links["loop"]) is None
    assert row(db, watched / "linked" / "inner.txt") is None
    good = db.execute("SELECT count(*) FROM documents WHERE status = 'indexed'").fetchone()
    assert good == (1,)


@pytest.mark.slow
def test_the_watcher_and_a_real_worker_do_not_follow_a_new_or_swapped_in_symlink(
    db: psycopg.Connection,
    worker_env: dict[str, str],
    start_worker: WorkerFactory,
    outside: dict[str, Path],
) -> None:
    watched = Path(worker_env["HEARTH_WATCH_DIR"])
    app = create_celery(get_settings(), worker_env["REDIS_URL"])
    probe, live = watched / "probe.txt", threading.Event()

    def sync(path: str, coll: str) -> None:
        if path == str(probe):
            live.set()  # the watcher sees events: not queued
        else:
            app.send_task(TASK_INGEST, args=[path, coll])

    callbacks = Callbacks(
        sync=sync,
        move=lambda src, dest, coll: app.send_task(TASK_MOVE, args=[src, dest, coll]),
        rescan=lambda: None,
    )
    stop = threading.Event()
    watcher = threading.Thread(
        target=watch, args=([WatchRoot(watched, "default")], callbacks, 0.2, stop), daemon=True
    )
    start_worker()
    watcher.start()
    try:

        def watching() -> bool:
            probe.write_text(str(time.monotonic()))
            return live.wait(1)

        wait_until(watching, "the watcher to see a file written")
        victim = watched / "plan.md"
        victim.write_text("# Plan\n\nPaint the fence in May.\n")
        wait_until(lambda: (row(db, victim) or ("",))[0] == "indexed", "plan.md indexed")

        before = db.execute("SELECT now()").fetchone()[0]  # type: ignore[index]
        db.commit()
        new_link = watched / "minutes.txt"
        os.symlink(outside["secret"], new_link)
        staged = watched / ".swap"  # hidden: ignored; its rename over plan.md is the event
        os.symlink(outside["upload"], staged)
        os.replace(staged, victim)

        def victim_processed() -> bool:
            found = db.execute(
                "SELECT updated_at > %s AND status = ANY(%s) FROM documents WHERE path = %s",
                (before, list(SETTLED), str(victim)),
            ).fetchone()
            db.commit()
            return bool(found and found[0])

        wait_until(
            lambda: settled(db, new_link) and victim_processed(),
            "the new symlink and the swapped file to settle",
        )
        assert leaked(db) == []
        for path in (new_link, victim):
            status, error, _ = row(db, path) or ("", None, 0)
            assert status == "failed" and "symlink" in (error or ""), (path.name, status, error)
    finally:
        stop.set()
        watcher.join(10)


@pytest.fixture
def task_context(
    pg_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, embedder: Embedder
) -> Iterator[tasks._Context]:
    """The worker's per-process context in this process, on the test database, with the packaged
    embedder the session already loaded: the task bodies run here as plain functions."""
    watched = tmp_path / "w"
    watched.mkdir(exist_ok=True)
    monkeypatch.setenv("DATABASE_URL", pg_url)
    monkeypatch.setenv("HEARTH_WATCH_DIR", str(watched))
    tasks.context.cache_clear()
    ctx = tasks.context()
    ctx._embedder = embedder
    yield ctx
    if "parser" in ctx.__dict__:
        ctx.parser.close()
    ctx.conn.close()
    tasks.context.cache_clear()


def test_the_task_checks_at_open_time_a_file_that_became_a_symlink_after_the_scan(
    db: psycopg.Connection, task_context: tasks._Context, outside: dict[str, Path]
) -> None:
    watched = task_context.settings.watch_roots[0].path
    f = watched / "list.txt"
    f.write_text("Milk, eggs, bread.\n")
    assert tasks.ingest_file.run(str(f), "default")["status"] == "indexed"
    # between the scan that queued the next task and the task opening the file, it is swapped
    f.unlink()
    os.symlink(outside["secret"], f)
    result = tasks.ingest_file.run(str(f), "default")
    assert leaked(db) == [], result
    status, error, chunks = row(db, f) or ("", None, 0)
    assert status == "failed" and chunks == 0 and "symlink" in (error or "")

    # a path through a symlinked folder (a stale event, a forged task) is not read either
    os.symlink(outside["dir"], watched / "linked", target_is_directory=True)
    through = watched / "linked" / "inner.txt"
    result = tasks.ingest_file.run(str(through), "default")
    assert leaked(db) == [] and (row(db, through) or ("missing",))[0] != "indexed", result


def test_a_file_swapped_for_a_symlink_while_it_is_parsed_is_not_read_through_it(
    db: psycopg.Connection, tmp_path: Path, outside: dict[str, Path]
) -> None:
    watched = tmp_path / "w"
    watched.mkdir()
    f = watched / "letter.txt"
    f.write_text("Dear neighbour, the hedge will be trimmed on Saturday.\n")

    def swapping_parser(path: Path) -> Parsed:
        staged = watched / ".staged"
        os.symlink(outside["secret"], staged)
        os.replace(staged, f)  # the attacker wins the race: f is a symlink from here on
        return parse_file(path)

    opts = IngestOptions(chunk_size=64, chunk_overlap=8, collection="default")
    result = ingest_path(db, HashEmbedder(), f, opts, swapping_parser)
    assert leaked(db) == [], result
    texts = db.execute("SELECT text FROM chunks").fetchall()
    assert all("Quokka" not in t for (t,) in texts)


def test_hearth_ls_shows_a_skipped_symlink_and_why(
    db: psycopg.Connection,
    pg_url: str,
    tmp_path: Path,
    outside: dict[str, Path],
    env_without_hearth: dict[str, str],
) -> None:
    watched = tmp_path / "w"
    watched.mkdir()
    link = watched / "passwords.txt"
    os.symlink(outside["secret"], link)
    opts = IngestOptions(chunk_size=64, chunk_overlap=8, collection="default")
    ingest_path(db, HashEmbedder(), link, opts)
    env = {**env_without_hearth, "DATABASE_URL": pg_url, "HEARTH_WATCH_DIR": str(watched)}
    out = run_hearth(env, "ls")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    at = next(i for i, line in enumerate(lines) if line.endswith(str(link)))
    assert lines[at].startswith("failed"), out.stdout
    assert "symlink" in lines[at + 1] and "outside the watched folder" in lines[at + 1]
    assert leaked(db) == []


@pytest.fixture
def api(
    db: psycopg.Connection, pg_url: str, tmp_path: Path, embedder: Embedder
) -> Iterator[tuple[TestClient, Settings]]:
    """The real app as an admin, watching tmp/w, with no ingestion queue."""
    settings = get_settings(
        database_url=pg_url,
        hearth_watch_dir=str(tmp_path / "w"),
        llm_base_url="http://127.0.0.1:9/v1",
        rate_limit_rps=0,
    )
    token = accounts.issue_token(db, accounts.ensure_user(db, "ann", "admin"), "test")
    db.commit()
    with TestClient(create_app(settings, embedder=embedder)) as client:
        client.headers["Authorization"] = f"Bearer {token}"
        yield client, settings


def doc_id(db: psycopg.Connection, path: str | Path) -> int:
    found = db.execute(
        "SELECT id FROM documents WHERE path = %s", (os.path.abspath(path),)
    ).fetchone()
    db.commit()
    assert found is not None, path
    return int(found[0])


def test_file_content_serves_nothing_through_a_symlink(
    db: psycopg.Connection, api: tuple[TestClient, Settings], outside: dict[str, Path]
) -> None:
    client, settings = api
    watched = settings.watch_roots[0].path
    watched.mkdir(parents=True, exist_ok=True)
    upload = settings.uploads_dir / "default" / "9a1b" / "receipt.txt"
    upload.parent.mkdir(parents=True)
    nested = watched / "sub" / "deep.txt"
    nested.parent.mkdir()
    files = {
        "watched": (watched / "manual.txt", "watch"),
        "upload": (upload, "upload"),
        "nested": (nested, "watch"),
    }
    for name, (path, source) in files.items():
        path.write_text(f"The warranty of the {name} appliance runs until 2031.\n")
        opts = IngestOptions(chunk_size=64, chunk_overlap=8, collection="default", source=source)
        assert ingest_path(db, HashEmbedder(), path, opts).status == "indexed"
    ids = {name: doc_id(db, path) for name, (path, _) in files.items()}
    assert client.get(f"/v1/files/file-{ids['watched']}/content").status_code == 200

    # after indexing, each is swapped for a symlink (the folder of the nested one, too)
    for name in ("watched", "upload"):
        path = files[name][0]
        path.unlink()
        os.symlink(outside["secret"], path)
    (watched / "sub" / "deep.txt").unlink()
    (watched / "sub").rmdir()
    os.symlink(outside["dir"], watched / "sub", target_is_directory=True)
    (outside["dir"] / "deep.txt").write_text(OUTSIDE)
    for name, i in ids.items():
        r = client.get(f"/v1/files/file-{i}/content")
        assert "Quokka" not in r.text, (name, r.status_code)
        assert r.status_code == 404, (name, r.status_code)
        assert r.json()["error"]["code"] == "not_found"


# --- 6. a delete wins over queued and running work ------------------------------------------


@pytest.fixture
def api_with_queue(
    db: psycopg.Connection, worker_env: dict[str, str], embedder: Embedder
) -> Iterator[TestClient]:
    """The real app as an admin, with the workers' Redis as its ingestion queue."""
    settings = get_settings(
        database_url=worker_env["DATABASE_URL"],
        redis_url=worker_env["REDIS_URL"],
        hearth_watch_dir=worker_env["HEARTH_WATCH_DIR"],
        llm_base_url=worker_env["LLM_BASE_URL"],
        rate_limit_rps=0,
    )
    token = accounts.issue_token(db, accounts.ensure_user(db, "ann", "admin"), "test")
    db.commit()
    with TestClient(create_app(settings, embedder=embedder)) as client:
        client.headers["Authorization"] = f"Bearer {token}"
        yield client


def paragraphs(n: int, marker: str) -> str:
    """`n` distinct paragraphs of ~120 words, the first holding `marker`."""
    words = [
        "the",
        "boiler",
        "pump",
        "filter",
        "valve",
        "pressure",
        "gauge",
        "service",
        "annual",
        "winter",
        "check",
    ]
    out = [marker]
    for i in range(n):
        out.append(f"Section {i}. " + " ".join(words[(i + j) % len(words)] for j in range(120)))
    return "\n\n".join(out) + "\n"


def drain(db: psycopg.Connection, worker_env: dict[str, str], tmp_path: Path, name: str) -> None:
    """Queue a small file behind everything on the interactive queue and wait until it is indexed:
    the single worker has then run every task queued before it."""
    sentinel = tmp_path / "elsewhere-sentinel" / f"{name}.md"
    sentinel.parent.mkdir(exist_ok=True)
    sentinel.write_text(f"# {name}\n\nA sentinel file, queued last.\n")
    create_celery(get_settings(), worker_env["REDIS_URL"]).send_task(
        TASK_INGEST, args=[str(sentinel), "default", "cli"], queue=INTERACTIVE_QUEUE
    )
    wait_until(lambda: (row(db, sentinel) or ("",))[0] == "indexed", f"sentinel {name}", 300)


@pytest.mark.slow
def test_reindex_then_delete_stays_deleted_through_a_real_worker(
    db: psycopg.Connection,
    worker_env: dict[str, str],
    start_worker: WorkerFactory,
    api_with_queue: TestClient,
    embedder: Embedder,
    tmp_path: Path,
) -> None:
    client = api_with_queue
    f = tmp_path / "elsewhere" / "tax.md"  # indexed with `hearth ingest`: stays on disk
    f.parent.mkdir(exist_ok=True)
    f.write_text("# Tax\n\nThe Dingo-6604 reference number is for the 2025 return.\n")
    opts = IngestOptions(collection="default", source="cli")
    assert ingest_path(db, embedder, f, opts).status == "indexed"
    i = doc_id(db, f)

    r = client.post(f"/ui/documents/{i}/reindex")
    assert r.status_code == 200, r.text
    r = client.delete(f"/v1/files/file-{i}")
    assert r.status_code == 200, r.text
    start_worker()  # the re-index task was queued before the delete; it runs only now
    drain(db, worker_env, tmp_path, "after-reindex")
    assert row(db, f) == ("deleted", None, 0)
    assert leaked(db, ["Dingo-6604"]) == []
    assert client.get(f"/v1/files/file-{i}").status_code == 404


@pytest.mark.slow
def test_a_delete_while_a_real_worker_embeds_the_document_wins(
    db: psycopg.Connection,
    worker_env: dict[str, str],
    start_worker: WorkerFactory,
    api_with_queue: TestClient,
    tmp_path: Path,
) -> None:
    client = api_with_queue
    f = tmp_path / "elsewhere" / "handbook.md"
    f.parent.mkdir(exist_ok=True)
    f.write_text(paragraphs(250, "The Kakapo-3310 code opens the shed."))  # embedding takes a while
    start_worker()
    create_celery(get_settings(), worker_env["REDIS_URL"]).send_task(
        TASK_INGEST, args=[str(f), "default", "cli"], queue=INTERACTIVE_QUEUE
    )
    wait_until(lambda: (row(db, f) or ("",))[0] == "embedding", "handbook.md embedding", 300)
    r = client.delete(f"/v1/files/file-{doc_id(db, f)}")
    assert r.status_code == 200, r.text
    drain(db, worker_env, tmp_path, "after-delete")
    assert row(db, f) == ("deleted", None, 0)
    assert leaked(db, ["Kakapo-3310"]) == []


class DeletingEmbedder:
    """The real embedder, except that the document is deleted through the API's own code while
    its chunks are being embedded (the user pressed Delete at that moment)."""

    def __init__(self, inner: Embedder, pg_url: str, path: Path) -> None:
        self.inner, self.pg_url, self.path = inner, pg_url, str(path)
        self.name, self.dim = inner.name, inner.dim
        self.deleted: bool | None = None

    def count_tokens(self, text: str) -> int:
        return self.inner.count_tokens(text)

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        if self.deleted is None:
            self.deleted = asyncio.run(self._delete())
        return self.inner.embed(texts)

    async def _delete(self) -> bool:
        async with await psycopg.AsyncConnection.connect(self.pg_url, autocommit=True) as conn:
            cur = await conn.execute("SELECT id FROM documents WHERE path = %s", (self.path,))
            found = await cur.fetchone()
            assert found is not None
            return await documents.delete_document(conn, int(found[0]), self.path)


def test_an_upload_deleted_while_its_task_embeds_is_not_written_back(
    db: psycopg.Connection, task_context: tasks._Context, pg_url: str, tmp_path: Path
) -> None:
    accounts.ensure_user(db, "bob")  # an upload goes to its uploader's personal collection
    db.commit()
    f = task_context.settings.uploads_dir / "user-bob" / "77aa" / "diary.md"
    f.parent.mkdir(parents=True)
    f.write_text("# Diary\n\nThe Bilby-4420 entry is private.\n")
    deleting = DeletingEmbedder(task_context.embedder, pg_url, f)
    task_context._embedder = deleting  # type: ignore[assignment]
    result = tasks.ingest_file.run(str(f), "user-bob", "upload")
    assert deleting.deleted is True
    # no clean-up task has run: the write itself must have refused the deleted document
    assert row(db, f) == ("deleted", None, 0), result
    assert leaked(db, ["Bilby-4420"]) == []


def test_a_queued_reindex_of_a_deleted_document_does_nothing_and_a_recreated_file_indexes(
    db: psycopg.Connection, task_context: tasks._Context, api: tuple[TestClient, Settings]
) -> None:
    """The task body as a function, with the arguments the API really queued."""
    client, _ = api
    sent: list[tuple[str, list[Any], dict[str, Any]]] = []

    class Recording:
        def send_task(self, name: str, args: list[Any], **kw: Any) -> None:
            sent.append((name, args, kw.get("kwargs") or {}))

        def close(self) -> None:
            pass

    client.app.state.hearth.celery = Recording()  # type: ignore[attr-defined]
    elsewhere = task_context.settings.hearth_data_dir.parent / "elsewhere"
    elsewhere.mkdir(exist_ok=True)
    f = elsewhere / "will.md"
    f.write_text("# Will\n\nThe Quoll-8138 clause names the executor.\n")
    assert tasks.ingest_file.run(str(f), "default", "cli")["status"] == "indexed"
    i = doc_id(db, f)
    assert client.post(f"/ui/documents/{i}/reindex").status_code == 200
    assert client.delete(f"/v1/files/file-{i}").status_code == 200
    ((name, args, kwargs),) = sent
    assert name == TASK_INGEST
    tasks.ingest_file.run(*args, **kwargs)  # what the worker does with the queued task
    assert row(db, f) == ("deleted", None, 0)
    assert leaked(db, ["Quoll-8138"]) == []
    # an explicit `hearth ingest` of the path later is a fresh add: it indexes again
    assert tasks.ingest_file.run(str(f), "default", "cli")["status"] == "indexed"

    # a watched file: a re-index is queued, the file is deleted and re-created (the watcher's
    # tasks), then the stale re-index runs: the re-created file stays indexed, once
    watched = task_context.settings.watch_roots[0].path
    w = watched / "rota.md"
    w.write_text("# Rota\n\nBins go out on Tuesday.\n")
    assert tasks.ingest_file.run(str(w), "default")["status"] == "indexed"
    sent.clear()
    assert client.post(f"/ui/documents/{doc_id(db, w)}/reindex").status_code == 200
    w.unlink()
    assert tasks.ingest_file.run(str(w), "default")["status"] == "deleted"
    w.write_text("# Rota\n\nBins go out on Wednesday now.\n")
    assert tasks.ingest_file.run(str(w), "default")["status"] == "indexed"
    ((_, args, kwargs),) = sent
    tasks.ingest_file.run(*args, **kwargs)
    assert row(db, w) == ("indexed", None, 1)
    (text,) = db.execute(
        "SELECT c.text FROM chunks c JOIN documents d ON d.id = c.document_id WHERE d.path = %s",
        (str(w),),
    ).fetchone() or ("",)
    assert "Wednesday" in text and "Tuesday" not in text


# --- 8. one enormous file ------------------------------------------------------------------


def write_huge_text(path: Path, megabytes: int) -> None:
    """`megabytes` MB of plain text in paragraphs, written in slices (never held whole)."""
    words = [
        "the",
        "quick",
        "brown",
        "fox",
        "jumps",
        "over",
        "a",
        "lazy",
        "dog",
        "while",
        "kettles",
        "boil",
        "and",
        "clocks",
        "tick",
    ]
    block = "\n\n".join(
        f"Paragraph {n}: " + " ".join(words[(n + k) % len(words)] for k in range(150))
        for n in range(1000)
    )
    with path.open("w") as fh:
        written = 0
        while written < megabytes * 2**20:
            written += fh.write(block + "\n\n")


def tree_peak_rss_mb(pid: int) -> dict[int, float]:
    """Peak resident memory (VmHWM) of a process and its descendants, in MB."""
    out = {}
    for p in [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]:
        try:
            for line in Path(f"/proc/{p.pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    out[p.pid] = int(line.split()[1]) / 1024
        except (OSError, psutil.Error):
            pass
    return out


@pytest.mark.slow
def test_a_huge_text_file_fails_on_its_budget_and_the_next_users_file_is_indexed(
    db: psycopg.Connection,
    worker_env: dict[str, str],
    start_worker: WorkerFactory,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    watched = Path(worker_env["HEARTH_WATCH_DIR"])
    big = watched / "dump.txt"
    write_huge_text(big, 30)
    worker = start_worker()
    accounts.ensure_user(db, "bob")  # another user, with a personal collection of their own
    db.commit()
    other = tmp_path / "data" / "uploads" / "user-bob" / "51de" / "recipe.md"
    other.parent.mkdir(parents=True)
    other.write_text("# Soup\n\nSimmer the lentils for forty minutes.\n")
    app = create_celery(get_settings(), worker_env["REDIS_URL"])
    app.send_task(TASK_INGEST, args=[str(big), "default"])
    app.send_task(TASK_INGEST, args=[str(other), "user-bob", "upload"])  # queued behind it
    wait_until(lambda: (row(db, other) or ("",))[0] == "indexed", "bob's file indexed", 300)
    status, error, chunks = row(db, big) or ("", None, 0)
    assert status == "failed" and chunks == 0, (status, error)
    assert "MAX_FILE_CHUNKS" in (error or "")
    with capsys.disabled():
        print(f"\nworker tree peak RSS (MB): {tree_peak_rss_mb(worker.pid)}")
