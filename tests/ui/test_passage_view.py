"""Pure logic of the passage page (api/ui/passage.py) and of the citation URL that leads to it
(api.client_shapes.passage_url)."""

from __future__ import annotations

from api.client_shapes import base_url, passage_url
from api.ui.passage import parse_span, segments
from core.settings import get_settings
from retrieval.context import ContextChunk
from tests.api.test_citations import passage

DOC = "Alpha beta gamma. Delta epsilon zeta. Eta theta iota."


def chunk(i: int, start: int, end: int) -> ContextChunk:
    return ContextChunk(100 + i, i, DOC[start:end], (), None, start, end)


def test_overlapping_chunks_read_once_and_the_marked_one_keeps_its_whole_text() -> None:
    # chunks share a sentence with their neighbours (the chunker's overlap)
    chunks = [chunk(0, 0, 38), chunk(1, 18, 53)]
    plain = segments(chunks, marked=set())
    assert "".join(p["text"] for p in plain) == DOC
    marked = segments(chunks, marked={101})
    assert marked[1]["text"] == DOC[18:53] and marked[1]["highlight"]
    assert "".join(p["text"] for p in marked) == DOC  # the overlap left the unmarked one
    first_marked = segments(chunks, marked={100})
    assert first_marked[0]["text"] == DOC[0:38] and "".join(p["text"] for p in first_marked) == DOC
    # a gap between chunks (or a missing ordinal) is a break, not a join
    gap = segments([chunk(0, 0, 17), chunk(1, 18, 36)], marked=set())
    assert [p["continues"] for p in gap] == [False, False]


def test_spans() -> None:
    assert parse_span("10-20") == (10, 20)
    for bad in (None, "", "20-10", "5-5", "-1-3", "1-2-3", "a-b", "1-99999999999", " 1-2"):
        assert parse_span(bad) is None, bad


def test_a_citation_url_per_passage_by_link_setting() -> None:
    p = passage(7, page=3, document_id=2, char_start=40, char_end=90)
    ui, files = get_settings(), get_settings(citation_link="file")
    assert passage_url(ui, "http://h", p) == "http://h/ui/passages/7?span=40-90"
    assert passage_url(files, "http://h", p) == "http://h/v1/files/file-2/content#page=3&chunk=7"
    public = get_settings(public_url="https://hearth.example/")
    assert base_url(public, "http://127.0.0.1:8000/") == "https://hearth.example"
    assert base_url(files, "http://127.0.0.1:8000/") == "http://127.0.0.1:8000"
