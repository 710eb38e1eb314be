"""What the search benchmark's result must hold: recall against exact search, every latency row
at both concurrencies with its ratio to the floor (checked on the real run of `hearth bench all
--quick` in test_all_quick; no timing assertions: those are the figures, not a test)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from bench.search_scale import CONCURRENCY, main


def check_search(
    result: dict[str, Any], chunks: int, queries: int, recall_queries: int, halfvec: bool = True
) -> None:
    assert result["meta"]["chunks"] == chunks and "SYNTHETIC" in result["meta"]["data"]
    assert result["load"]["chunks"] == chunks
    assert result["indexes"]["hnsw_vector"]["size_mb"] > 0
    assert result["indexes"]["postings"]["size_mb"] > 0
    lex = result["lexical"]
    assert lex["postings"] > chunks and 0 < lex["overlap_at_10"] <= 1
    assert lex["queries"] == recall_queries
    rec = result["recall"]
    assert rec["queries"] == recall_queries
    for key in ("hearth_dense_leg", "vector_ef40", "vector_ef100"):
        assert 0 < rec[key] <= 1
    assert set(rec["floor_by_ef"]) == set(rec["vector_by_ef"]) >= {"40", "100"}
    assert all(row["n"] == queries for row in rec["floor_by_ef"].values())
    if halfvec:
        assert 0 < result["halfvec"]["recall"] <= 1
        assert result["halfvec"]["index"]["size_mb"] > 0

    assert set(result["latency"]) == {str(c) for c in CONCURRENCY}
    for rows in result["latency"].values():
        assert set(rows) == {
            "floor",
            "dense_leg",
            "lexical_leg",
            "lexical_exact",
            "hybrid_sql",
            "search",
            "embed",
            "http",
        } | ({"floor_halfvec"} if halfvec else set())
        assert rows["floor"]["p50/floor"] == pytest.approx(1.0)
        # where /v1/search's time went inside the API, from every measured response's header;
        # each text asked once, so every request embedded its query
        server = rows["http"]["server"]
        assert set(server) == {
            "auth",
            "access",
            "embed",
            "embed-model",
            "search",
            "total",
            "outside",
        }
        assert all(s["n"] == queries for s in server.values())
        assert server["embed"]["p50"] > 0 and server["embed-model"]["p50"] > 0
        for row in rows.values():
            assert row["n"] == queries and row["qps"] > 0
            assert row["p50"] <= row["p95"] <= row["p99"]
            assert {"p50/floor", "p95/floor", "p99/floor"} <= set(row)
    assert set(result["targets"]) >= {
        "dense_recall_at_10_ge_0.95",
        "http_over_floor_le_1.5",
        "lexical_p95_le_20ms_one_client",
        "http_p95_over_floor_le_1.5",
    }


SEARCH_PRINTS = (
    "SYNTHETIC data",
    "POST /v1/search",
    "p50/floor",
    "BM25 leg, exact plan",
    "POST /v1/search inside the API (Server-Timing",
    "outside",
)


@pytest.mark.slow  # a whole benchmark run (~20 s): not for the edit-test loop
def test_a_tiny_run_loads_by_copy_and_reports_every_row(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The benchmark end to end at 1,500 chunks: COPY load, indexes, both BM25 plans, the real
    `hearth serve-api` (the figures are printed, never asserted)."""
    out = tmp_path / "search.json"
    argv = ["--scale", "1500", "--queries", "4", "--recall-queries", "5", "--no-halfvec"]
    assert main([*argv, "--data-dir", str(tmp_path / "ds"), "--json", str(out)]) == 0
    check_search(json.loads(out.read_text()), 1500, 4, 5, halfvec=False)
    printed = capsys.readouterr().out
    for text in SEARCH_PRINTS:
        assert text in printed
