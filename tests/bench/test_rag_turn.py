"""What the RAG-turn benchmark's result must hold: a grounded turn timed through HTTP to the
backend's door, and each stage in-process; the breakdown adds up (checked on the real run of
`hearth bench all --quick` in test_all_quick; no timing assertions)."""

from __future__ import annotations

from typing import Any

import pytest

from bench.rag_turn import API_STAGES, STAGES


def check_rag(result: dict[str, Any], chunks: int, questions: int) -> None:
    assert result["meta"]["chunks"] == chunks
    for kind in ("first", "follow_up"):
        http = result["http"][kind]
        assert http["to_backend_ms"]["n"] == http["ttft_ms"]["n"] == questions
        assert 0 < http["to_backend_ms"]["p50"] <= http["ttft_ms"]["p50"]
    api = result["api_stages"]  # the API's own Server-Timing, every question embedded
    assert api["questions"] == questions
    assert set(api["stages_ms"]) == set(API_STAGES)
    assert all(row["n"] == questions for row in api["stages_ms"].values())
    assert api["stages_ms"]["embed"]["p50"] > 0
    stages = result["stages"]
    assert set(stages["stages_ms"]) == set(STAGES)
    assert all(stages["stages_ms"][s]["n"] == questions for s in STAGES)
    assert sum(stages["share_of_p50_sum"].values()) == pytest.approx(1.0)
    assert stages["passages_in_prompt_p50"] > 0
    assert "outside_stages_p50_ms" in result
    assert set(result["targets"]) == {"request_to_backend_p50_le_40ms_no_rewrite"}


RAG_PRINTS = ("query embedding", "request -> backend", "inside the API (Server-Timing")
