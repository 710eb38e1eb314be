"""The benchmark's index is Hearth's schema, filled by COPY, indexed after the load, reusable."""

from __future__ import annotations

from pathlib import Path

import psycopg
import pytest

from bench.dataset import HALFVEC, HNSW, build_halfvec, drop_halfvec, open_dataset


@pytest.mark.slow
def test_load_builds_hearths_indexes_and_is_reused(tmp_path: Path) -> None:
    data_dir = tmp_path / "ds"
    with open_dataset(800, data_dir=data_dir) as (url, corpus, meta):
        assert not meta["reused"] and meta["chunks"] == 800
        assert meta["load"]["documents"] == corpus.n_docs and meta["load"]["chunks_per_s_copy"] > 0
        assert {"gin", "hnsw_vector"} <= set(meta["indexes"])
        assert meta["indexes"]["hnsw_vector"]["size_mb"] > 0
        assert "SYNTHETIC" in meta["data"]
        with psycopg.connect(url) as conn:
            assert conn.execute("SELECT count(*) FROM chunks").fetchone() == (800,)
            # BM25 statistics kept by the triggers, as for any other write
            assert conn.execute("SELECT n FROM bm25_stats").fetchone() == (800,)
            names = {r[0] for r in conn.execute("SELECT indexname FROM pg_indexes")}
            assert {HNSW, "chunks_tsv"} <= names
            half = build_halfvec(conn, 800)
            assert half["size_mb"] > 0 and half["seconds"] > 0
            assert HALFVEC in {r[0] for r in conn.execute("SELECT indexname FROM pg_indexes")}
            drop_halfvec(conn)
    with open_dataset(800, data_dir=data_dir) as (_, _, meta):
        assert meta["reused"] and meta["load"]["documents"] == corpus.n_docs


def test_a_folder_that_is_not_a_dataset_is_never_deleted(tmp_path: Path) -> None:
    (tmp_path / "precious.txt").write_text("keep me")
    with (
        pytest.raises(RuntimeError, match="not a benchmark dataset"),
        open_dataset(10, data_dir=tmp_path, reuse=False),
    ):
        pass
    assert (tmp_path / "precious.txt").exists()
