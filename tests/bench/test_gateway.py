"""The gateway benchmark streams through Hearth and directly to the mock, in one run, and
computes the added TTFT and the throughput ratio (no timing assertions)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.gateway import main


@pytest.mark.slow
def test_small_gateway_bench_writes_sane_results(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "gateway.json"
    argv = ["--concurrency", "1,4", "--requests", "8", "--tokens", "5", "--rate", "500"]
    assert main([*argv, "--no-litellm", "--json", str(out)]) == 0
    result = json.loads(out.read_text())

    assert result["meta"]["targets"] == ["direct", "hearth"]
    assert "left out" in result["meta"]["litellm"]
    assert set(result["levels"]) == {"1", "4"}
    for c, rows in result["levels"].items():
        assert set(rows) == {"direct", "hearth"}
        for row in rows.values():
            assert row["errors"] == 0, row["first_error"]
            assert row["requests"] == max(8, 5 * int(c))
            assert row["tokens"] == 5 * row["requests"]  # every token arrived, through Hearth too
            assert row["ttft_ms"]["n"] == row["requests"] and row["tokens_per_s"] > 0
        hearth = rows["hearth"]
        assert set(hearth["added_ttft_ms"]) == {"p50", "p95", "p99"}
        assert hearth["throughput_vs_direct"] > 0
        assert "added_ttft_ms" not in rows["direct"]
    assert result["targets"]["lower_overhead_than_litellm"] is None

    printed = capsys.readouterr().out
    assert "Hearth (plain chat)" in printed and "direct to the mock" in printed
    assert "lower_overhead_than_litellm not measured" in printed
