"""The RAG-turn benchmark times a grounded turn through HTTP to the backend's door, and each
stage in-process; the breakdown adds up (no timing assertions)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.rag_turn import STAGES, main


@pytest.mark.slow
def test_small_rag_turn_bench_writes_sane_results(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "rag.json"
    data_dir = tmp_path / "ds"
    argv = ["--scale", "1500", "--data-dir", str(data_dir), "--questions", "6"]
    assert main([*argv, "--json", str(out)]) == 0
    result = json.loads(out.read_text())

    assert result["meta"]["chunks"] == 1500 and result["meta"]["dataset_dir"] == str(data_dir)
    for kind in ("first", "follow_up"):
        http = result["http"][kind]
        assert http["to_backend_ms"]["n"] == http["ttft_ms"]["n"] == 6
        assert 0 < http["to_backend_ms"]["p50"] <= http["ttft_ms"]["p50"]
    stages = result["stages"]
    assert set(stages["stages_ms"]) == set(STAGES)
    assert all(stages["stages_ms"][s]["n"] == 6 for s in STAGES)
    assert sum(stages["share_of_p50_sum"].values()) == pytest.approx(1.0)
    assert stages["passages_in_prompt_p50"] > 0
    assert "outside_stages_p50_ms" in result
    assert set(result["targets"]) == {"request_to_backend_p50_le_40ms_no_rewrite"}

    printed = capsys.readouterr().out
    assert "query embedding" in printed and "request -> backend" in printed

    # a second run finds the same index and reuses it
    assert main(["--data-dir", str(data_dir), "--questions", "2", "--json", str(out)]) == 0
    assert json.loads(out.read_text())["meta"]["chunks"] == 1500
