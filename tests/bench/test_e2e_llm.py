"""The end-to-end LLM benchmark: without vLLM it says so (an error by name, a note within `all`);
with it, the result holds every row (checked on the real run of `hearth bench all --quick` in
test_all_quick, 2 requests per target; no timing assertions)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from bench.e2e_llm import main


def test_a_missing_vllm_is_reported_not_measured(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "llm.json"
    argv = ["--model-dir", str(tmp_path / "no-model"), "--json", str(out)]
    assert main(argv) == 2  # asked for by name: an error
    assert main([*argv, "--if-available"]) == 0  # within `all`: said, not failed
    result = json.loads(out.read_text())
    assert result["available"] is False and result["levels"] == {}
    assert "no-model" in result["reason"] or "vLLM's Python" in result["reason"]
    captured = capsys.readouterr()
    assert "NOT RUN, the CPU vLLM is not available" in captured.out
    assert "CPU vLLM not available" in captured.err


def check_llm(result: dict[str, Any], requests: int, max_tokens: int) -> None:
    assert result["available"] is True
    assert result["meta"]["targets"] == ["direct", "hearth", "hearth_rag"]
    assert result["meta"]["rag_chunks"] >= 3 and result["meta"]["vllm_ready_s"] > 0
    assert set(result["levels"]) == {"1"}
    rows = result["levels"]["1"]
    assert list(rows) == ["direct", "hearth", "hearth_rag"]
    for name, row in rows.items():
        assert row["errors"] == 0, (name, row["first_error"])
        assert row["requests"] == row["ttft_ms"]["n"] == requests
        assert row["usage_reported"], name  # Hearth passes the backend's usage through
        assert 0 < row["completion_tokens"] <= requests * max_tokens
        assert row["tokens_per_s"] > 0 and row["ttft_ms"]["p50"] <= row["total_ms"]["p50"]
    # greedy, same messages: through Hearth the model writes exactly what it writes directly
    assert rows["hearth"]["completion_tokens"] == rows["direct"]["completion_tokens"]
    for name in ("hearth", "hearth_rag"):
        assert set(rows[name]["ttft_vs_direct"]) == {"p50", "p95"}
        assert rows[name]["tokens_per_s_vs_direct"] > 0
    assert "ttft_vs_direct" not in rows["direct"]


LLM_PRINTS = ("direct to vLLM", "Hearth (plain chat)", "Hearth RAG")
