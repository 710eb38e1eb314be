from __future__ import annotations

from api.citations import CitationChecker
from core.types import Passage


def passage(i: int, **kw: object) -> Passage:
    base = dict(
        chunk_id=i,
        document_id=i,
        path=f"/docs/f{i}.md",
        title=f"Doc {i}",
        text=f"text {i}",
        heading_path=("Intro",),
        page=None,
        char_start=0,
        char_end=6,
        score=1.0 / i,
    )
    base.update(kw)
    return Passage(**base)  # type: ignore[arg-type]


def test_valid_markers_kept_invented_ones_dropped() -> None:
    c = CitationChecker(3)
    assert c.check("A [1]. B [7]. C [0]. D [3].") == "A [1]. B . C . D [3]."
    assert c.cited == [1, 3]


def test_repeated_markers_cited_once_in_first_seen_order() -> None:
    c = CitationChecker(3)
    c.check("x [2] y [1] z [2][2]")
    assert c.cited == [2, 1]


def test_grouped_markers_are_split_and_filtered() -> None:
    c = CitationChecker(2)
    assert c.check("both [1, 2] and [2,9]") == "both [1][2] and [2]"
    assert c.cited == [1, 2]


def test_markers_split_across_stream_pieces() -> None:
    c = CitationChecker(12)
    pieces = ["The answer [", "1", "2] is here [", "3", "0] and [4", "]."]
    out = "".join(c.feed(p) for p in pieces) + c.finish()
    assert out == "The answer [12] is here  and [4]."
    assert c.cited == [12, 4]


def test_a_lone_bracket_at_the_end_is_flushed_not_lost() -> None:
    c = CitationChecker(1)
    assert c.feed("array[") == "array"
    assert c.finish() == "["
    assert c.check("see a[b]") == "see a[b]"


def test_citations_map_markers_to_the_given_passages() -> None:
    ps = [passage(1), passage(2)]
    c = CitationChecker(2)
    c.check("[2] then [1]")
    cits = c.citations(ps)
    assert [(x.index, x.passage.path) for x in cits] == [(2, "/docs/f2.md"), (1, "/docs/f1.md")]
    src = cits[0].as_source()
    assert src["index"] == 2 and src["path"] == "/docs/f2.md" and src["snippet"] == "text 2"


def test_attribution_cites_the_passage_that_supports_a_sentence() -> None:
    from api.citations import attribute, insert_markers

    ps = [
        passage(1, text="The cat Miso sleeps on the sofa."),
        passage(2, text="The rooftop solar array was installed in 2019 by Sunny Ltd."),
    ]
    answer = "The solar array was installed in 2019. It is lovely and I like it very much."
    marks = attribute(answer, ps)
    assert [n for _, n in marks] == [2]  # the second sentence is supported by nothing
    assert insert_markers(answer, marks).startswith("The solar array was installed in 2019. [2]")


def test_attribution_gives_nothing_for_unsupported_answers() -> None:
    from api.citations import attribute

    ps = [passage(1, text="Tomatoes need full sun.")]
    assert attribute("Paris is the capital of France and has many museums.", ps) == []
    assert attribute("Yes.", ps) == []
    assert attribute("Tomatoes need full sun.", []) == []
