"""Every bad file, parsed through a ParserProcess, fails with a reason a user can act on, and the
same child keeps parsing good files afterwards."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from ingest.isolate import ParserProcess
from ingest.parse import Element, ParseError

from .badfiles import BAD_FILES, write_bad_files
from .hooked_child import HOOKED
from .test_parse import MARKDOWN


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("bad")
    assert write_bad_files(folder) == BAD_FILES
    (folder / "good.md").write_text(MARKDOWN)
    return folder


@pytest.fixture(scope="module")
def parser() -> Iterator[ParserProcess]:
    with ParserProcess(child_module=HOOKED) as pp:
        yield pp


@pytest.mark.parametrize("name", sorted(name for name, word in BAD_FILES.items() if word))
def test_bad_file_fails_with_reason_and_the_parser_carries_on(
    corpus: Path, parser: ParserProcess, name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    if name.endswith(".sleep"):
        monkeypatch.setattr(parser, "timeout_s", 2)
    with pytest.raises(ParseError) as info:
        parser.parse(corpus / name)
    keyword = BAD_FILES[name]
    assert keyword is not None and keyword in str(info.value)
    monkeypatch.undo()
    good = parser.parse(corpus / "good.md")
    assert good.title == "Guide"
    assert Element("Intro paragraph about the guide.", "text") in good.elements


def test_utf16_text_parses(corpus: Path, parser: ParserProcess) -> None:
    assert [e.text for e in parser.parse(corpus / "utf16.txt").elements] == [
        "Grüße aus Köln.",
        "Zweiter Absatz.",
    ]
    parsed = parser.parse(corpus / "utf16-no-bom.md")
    assert [(e.text, e.kind) for e in parsed.elements] == [
        ("Titel", "title"),
        ("Grüße aus Köln.", "text"),
    ]


def test_bombs_are_refused_for_the_right_reason(corpus: Path, parser: ParserProcess) -> None:
    reasons = {name: str(_error(parser, corpus / name)) for name in BAD_FILES if "bomb" in name}
    reasons["crowded.docx"] = str(_error(parser, corpus / "crowded.docx"))
    assert "expands to 1.1 GiB, over the limit of 1 GiB" in reasons["bomb.docx"]
    assert "the limit is 100:1 above 10 MB" in reasons["bomb.xlsx"]
    assert "10,002 files inside, over the limit of 10,000" in reasons["crowded.docx"]


def test_the_corpus_is_cheap(corpus: Path) -> None:
    """A bomb here is a bomb by its declared sizes, not by the disk space it takes."""
    sizes = {p.name: p.stat().st_size for p in corpus.iterdir()}
    assert sizes["bomb.docx"] < 2 * 10**6 and sizes["bomb.xlsx"] < 10**6


def _error(parser: ParserProcess, path: Path) -> ParseError:
    with pytest.raises(ParseError) as info:
        parser.parse(path)
    return info.value
