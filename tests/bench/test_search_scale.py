"""What the search benchmark's result must hold: recall against exact search, every latency row
at both concurrencies with its ratio to the floor (checked on the real run of `hearth bench all
--quick` in test_all_quick; no timing assertions: those are the figures, not a test)."""

from __future__ import annotations

from typing import Any

import pytest

from bench.search_scale import CONCURRENCY


def check_search(result: dict[str, Any], chunks: int, queries: int, recall_queries: int) -> None:
    assert result["meta"]["chunks"] == chunks and "SYNTHETIC" in result["meta"]["data"]
    assert result["load"]["chunks"] == chunks
    assert result["indexes"]["hnsw_vector"]["size_mb"] > 0
    rec = result["recall"]
    assert rec["queries"] == recall_queries
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
            assert row["n"] == queries and row["qps"] > 0
            assert row["p50"] <= row["p95"] <= row["p99"]
            assert {"p50/floor", "p95/floor", "p99/floor"} <= set(row)
    assert set(result["targets"]) >= {"dense_recall_at_10_ge_0.95", "http_over_floor_le_1.5"}


SEARCH_PRINTS = ("SYNTHETIC data", "POST /v1/search", "p50/floor")
