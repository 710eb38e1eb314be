"""Fusing ranked lists: reciprocal rank fusion (weight / (k + rank)) and normalised score fusion
(min-max scaled scores, weighted and summed)."""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import TypeVar

K = TypeVar("K", bound=Hashable)


def _ordered(scores: dict[K, float]) -> list[tuple[K, float]]:
    # ties keep the order in which items were first seen, so the result is deterministic
    order = {item: i for i, item in enumerate(scores)}
    return sorted(scores.items(), key=lambda kv: (-kv[1], order[kv[0]]))


def rrf(
    rankings: Mapping[str, Sequence[K]],
    *,
    k: int = 60,
    weights: Mapping[str, float] | None = None,
) -> list[tuple[K, float]]:
    """Fuse named rankings (best first, rank 1 = first) into one list of (item, score), best first.

    Ties keep the order in which items were first seen, so the result is deterministic.
    """
    scores: dict[K, float] = {}
    for name, ranking in rankings.items():
        w = 1.0 if weights is None else weights.get(name, 1.0)
        for rank, item in enumerate(ranking, start=1):
            scores[item] = scores.get(item, 0.0) + w / (k + rank)
    return _ordered(scores)


def score_fusion(
    scored: Mapping[str, Sequence[tuple[K, float]]],
    *,
    weights: Mapping[str, float] | None = None,
) -> list[tuple[K, float]]:
    """Fuse named lists of (item, raw score) by min-max normalising each list to [0, 1] and
    summing the weighted results; an item missing from a list gets 0 from it.

    A list whose scores are all equal contributes its full weight to each of its items.
    """
    scores: dict[K, float] = {}
    for name, items in scored.items():
        if not items:
            continue
        w = 1.0 if weights is None else weights.get(name, 1.0)
        values = [s for _, s in items]
        lo, hi = min(values), max(values)
        for item, s in items:
            norm = (s - lo) / (hi - lo) if hi > lo else 1.0
            scores[item] = scores.get(item, 0.0) + w * norm
    return _ordered(scores)
