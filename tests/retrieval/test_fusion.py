from __future__ import annotations

import pytest

from retrieval.fusion import rrf


def test_rrf_sums_reciprocal_ranks() -> None:
    fused = dict(rrf({"dense": ["a", "b", "c"], "lexical": ["c", "a"]}, k=60))
    assert fused["a"] == pytest.approx(1 / 61 + 1 / 62)
    assert fused["c"] == pytest.approx(1 / 63 + 1 / 61)
    assert fused["b"] == pytest.approx(1 / 62)


def test_rrf_orders_best_first_and_item_in_both_lists_wins() -> None:
    order = [item for item, _ in rrf({"dense": ["x", "y"], "lexical": ["z", "y"]}, k=1)]
    assert order[0] == "y"
    assert set(order) == {"x", "y", "z"}


def test_rrf_weights_shift_the_balance() -> None:
    rankings = {"dense": ["d"], "lexical": ["l"]}
    assert rrf(rankings, weights={"dense": 2.0, "lexical": 1.0})[0][0] == "d"
    assert rrf(rankings, weights={"dense": 1.0, "lexical": 2.0})[0][0] == "l"


def test_rrf_ties_are_deterministic_in_first_seen_order() -> None:
    assert [i for i, _ in rrf({"a": ["p"], "b": ["q"]})] == ["p", "q"]
    assert rrf({}) == []
