"""Passage refinement: adjacent chunks merge, near-duplicates go, each document is capped."""

from __future__ import annotations

from core.types import Passage
from retrieval.passages import RefineOptions, jaccard, join_spans, refine, shingles

DOC = "Alpha beta gamma delta. Epsilon zeta eta theta. Iota kappa lambda mu. Nu xi omicron pi."


def chunk(doc_id: int, start: int, end: int, score: float = 1.0, cid: int = 0) -> Passage:
    return Passage(
        chunk_id=cid or doc_id * 100 + start,
        document_id=doc_id,
        path=f"/d/{doc_id}.md",
        title=None,
        text=DOC[start:end],
        heading_path=(),
        page=1,
        char_start=start,
        char_end=end,
        score=score,
    )


def test_join_cuts_an_overlap_at_the_offsets() -> None:
    merged = join_spans(chunk(1, 0, 30), chunk(1, 24, 50))
    assert merged.text == DOC[0:50]
    assert (merged.char_start, merged.char_end) == (0, 50)


def test_join_puts_a_paragraph_break_in_a_gap() -> None:
    merged = join_spans(chunk(1, 0, 23), chunk(1, 24, 47))
    assert merged.text == DOC[0:23] + "\n\n" + DOC[24:47]


def test_adjacent_chunks_of_one_document_merge_at_the_better_rank() -> None:
    ranked = [
        (chunk(1, 24, 47, 0.9), 1),
        (chunk(2, 0, 23, 0.8), 0),
        (chunk(1, 0, 23, 0.7), 0),  # before the best one: prepended
        (chunk(1, 48, 70, 0.6), 2),  # after it: appended
    ]
    out = refine(ranked, RefineOptions(limit=5, max_per_document=5))
    assert [p.document_id for p in out] == [1, 2]
    assert out[0].text == DOC[0:23] + "\n\n" + DOC[24:47] + "\n\n" + DOC[48:70]
    assert out[0].score == 0.9 and out[0].chunk_id == 124
    assert (out[0].char_start, out[0].char_end) == (0, 70)


def test_no_merge_when_switched_off_or_not_neighbours() -> None:
    ranked = [(chunk(1, 0, 23), 0), (chunk(1, 48, 70), 2), (chunk(1, 24, 47), 1)]
    opts = RefineOptions(limit=5, max_per_document=5, merge_adjacent=False)
    assert len(refine(ranked, opts)) == 3
    merged = refine(ranked[:2], RefineOptions(limit=5, max_per_document=5))
    assert len(merged) == 2  # ordinals 0 and 2 are not neighbours


def test_near_duplicates_are_dropped_and_the_first_is_kept() -> None:
    text = "The heat pump filter must be cleaned every six weeks during the heating season."
    a = Passage(1, 1, "/a.md", None, text, (), None, 0, len(text), 0.9)
    b = Passage(2, 2, "/copy-of-a.md", None, text + " ", (), None, 0, len(text), 0.8)
    c = Passage(3, 3, "/c.md", None, "Solar panels were installed in 2021.", (), None, 0, 9, 0.7)
    out = refine([(a, 0), (b, 0), (c, 0)], RefineOptions(limit=5))
    assert [p.path for p in out] == ["/a.md", "/c.md"]
    assert jaccard(shingles(text), shingles(text.upper())) == 1.0
    loose = RefineOptions(limit=5, dedup_threshold=1.0)
    assert len(refine([(a, 0), (c, 0)], loose)) == 2


def test_passages_per_document_are_capped_and_others_fill_the_limit() -> None:
    long_doc = [(chunk(1, i * 12, i * 12 + 11), i * 2) for i in range(6)]  # never neighbours
    ranked = [*long_doc, (chunk(2, 0, 23), 0), (chunk(3, 24, 47), 0)]
    out = refine(ranked, RefineOptions(limit=4, max_per_document=2))
    assert [p.document_id for p in out] == [1, 1, 2, 3]
    uncapped = refine(ranked, RefineOptions(limit=4, max_per_document=0))
    assert [p.document_id for p in uncapped] == [1, 1, 1, 1]
