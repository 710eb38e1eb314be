"""What the gateway benchmark's result must hold: streams through Hearth and directly to the
mock (and LiteLLM when it is installed) in one run, the added TTFT and the throughput ratio
(checked on the real run of `hearth bench all --quick` in test_all_quick; no timing assertions)."""

from __future__ import annotations

from typing import Any


def check_gateway(
    result: dict[str, Any], levels: tuple[int, ...], requests: int, tokens: int
) -> None:
    targets = result["meta"]["targets"]
    assert targets[:2] == ["direct", "hearth"] and set(targets) <= {"direct", "hearth", "litellm"}
    if "litellm" not in targets:
        assert "not installed" in result["meta"]["litellm"]  # says how to install it
        assert result["targets"]["lower_overhead_than_litellm"] is None
    else:
        assert isinstance(result["targets"]["lower_overhead_than_litellm"], bool)
    assert set(result["levels"]) == {str(c) for c in levels}
    for c, rows in result["levels"].items():
        assert list(rows) == targets
        for row in rows.values():
            assert row["errors"] == 0, row["first_error"]
            assert row["requests"] == max(requests, 5 * int(c))
            assert row["tokens"] == tokens * row["requests"]  # every token arrived, via Hearth too
            assert row["ttft_ms"]["n"] == row["requests"] and row["tokens_per_s"] > 0
        for name in targets[1:]:
            assert set(rows[name]["added_ttft_ms"]) == {"p50", "p95", "p99"}
            assert rows[name]["throughput_vs_direct"] > 0
        assert "added_ttft_ms" not in rows["direct"]


GATEWAY_PRINTS = ("Hearth (plain chat)", "direct to the mock", "lower_overhead_than_litellm")
