from __future__ import annotations

import pytest

from retrieval.fusion import rrf, score_fusion


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


def test_score_fusion_normalises_each_list_then_sums() -> None:
    fused = dict(
        score_fusion({"dense": [("a", 0.9), ("b", 0.5), ("c", 0.1)], "lexical": [("c", 30.0)]})
    )
    assert fused["a"] == pytest.approx(1.0)
    assert fused["b"] == pytest.approx(0.5)
    assert fused["c"] == pytest.approx(0.0 + 1.0)  # bottom of dense, the only lexical hit


def test_score_fusion_is_blind_to_each_legs_scale() -> None:
    small = score_fusion({"dense": [("a", 0.3), ("b", 0.2)], "lexical": [("b", 9.0), ("a", 1.0)]})
    big = score_fusion({"dense": [("a", 30), ("b", 20)], "lexical": [("b", 0.9), ("a", 0.1)]})
    assert [(i, round(s, 9)) for i, s in small] == [(i, round(s, 9)) for i, s in big]


def test_score_fusion_weights_and_degenerate_lists() -> None:
    rankings = {"dense": [("d", 0.5), ("x", 0.4)], "lexical": [("l", 7.0), ("x", 6.0)]}
    assert score_fusion(rankings, weights={"dense": 2.0, "lexical": 1.0})[0][0] == "d"
    assert score_fusion(rankings, weights={"dense": 1.0, "lexical": 2.0})[0][0] == "l"
    assert score_fusion({"dense": [("only", 0.3)], "lexical": []}) == [("only", 1.0)]
    assert score_fusion({}) == []
