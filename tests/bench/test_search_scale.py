"""The search benchmark runs end to end at a small scale and reports what it promises: recall
against exact search, every latency row at both concurrencies with its ratio to the floor (no
timing assertions: those are the figures, not a test)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.search_scale import CONCURRENCY, main


@pytest.mark.slow
def test_small_search_bench_writes_sane_results(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "search.json"
    argv = ["--scale", "2000", "--queries", "20", "--recall-queries", "10"]
    assert main([*argv, "--data-dir", str(tmp_path / "ds"), "--json", str(out)]) == 0
    result = json.loads(out.read_text())

    assert result["meta"]["chunks"] == 2000 and "SYNTHETIC" in result["meta"]["data"]
    assert result["load"]["chunks"] == 2000
    assert result["indexes"]["hnsw_vector"]["size_mb"] > 0
    rec = result["recall"]
    assert rec["queries"] == 10
    for key in ("hearth_dense_leg", "vector_ef40", "vector_ef100"):
        assert 0 < rec[key] <= 1
    assert 0 < result["halfvec"]["recall"] <= 1 and result["halfvec"]["index"]["size_mb"] > 0

    assert set(result["latency"]) == {str(c) for c in CONCURRENCY}
    for rows in result["latency"].values():
        assert set(rows) == {
            "floor",
            "dense_leg",
            "lexical_leg",
            "hybrid_sql",
            "search",
            "embed",
            "http",
            "floor_halfvec",
        }
        assert rows["floor"]["p50/floor"] == pytest.approx(1.0)
        for row in rows.values():
            assert row["n"] == 20 and row["qps"] > 0
            assert row["p50"] <= row["p95"] <= row["p99"]
            assert {"p50/floor", "p95/floor", "p99/floor"} <= set(row)
    assert set(result["targets"]) >= {"dense_recall_at_10_ge_0.95", "http_over_floor_le_1.5"}

    printed = capsys.readouterr().out
    assert "SYNTHETIC data" in printed and "POST /v1/search" in printed and "p50/floor" in printed
