"""Parsing without what Hearth throws away (ingest.formats.lean): the same elements as with
unstructured's language detection and narrative-text checks, and neither of them run."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from ingest import parse as parse_mod
from ingest.formats import lean, mail
from ingest.parse import Parsed, parse_file

from .msgfile import write_msg

# paragraphs unstructured tells apart: narrative, verbless, capitals, numbers, an address, an
# e-mail address, a one-letter line, a bullet written out, a number list written out
PARAGRAPHS = [
    "The committee reviewed the budget and approved the new heating system for the hall.",
    "Annual maintenance schedule",
    "PLEASE READ BEFORE THE MEETING",
    "2024",
    "Springfield, IL 62704",
    "facilities@example.com",
    "x",
    "• bring your own cup",
    "1. Arrive early",
    "Short note: the boiler was serviced in March; it runs well, said the engineer.",
    "Costs 12 345 678 90 %% // 55",
]


def _markdown(tag: str) -> str:
    body = "\n\n".join(PARAGRAPHS)
    return f"# Hall {tag}\n\n{body}\n\n## Notes\n\n- first item\n- second item\n\n{body}\n"


def _html(tag: str) -> str:
    body = "".join(f"<p>{p}</p>" for p in PARAGRAPHS)
    return (
        f"<html><body><h1>Hall {tag}</h1>{body}<h2>Notes</h2><ul><li>first item</li>"
        f"<li>second item</li></ul><div>{PARAGRAPHS[1]}</div><table><tr><th>a</th><th>b</th>"
        f"</tr><tr><td>1</td><td>2</td></tr></table></body></html>"
    )


def _docx(path: Path, tag: str) -> None:
    import docx

    doc = docx.Document()
    doc.add_heading(f"Hall {tag}", 1)
    for p in PARAGRAPHS:
        doc.add_paragraph(p)
    doc.add_heading("Notes", 2)
    doc.add_paragraph("first item", style="List Bullet")
    doc.save(str(path))


def _pandoc(path: Path, tag: str) -> None:
    import pypandoc

    pypandoc.convert_text(_markdown(tag), path.suffix[1:], format="md", outputfile=str(path))


def _pptx(path: Path, tag: str) -> None:
    import pptx

    deck = pptx.Presentation()
    slide = deck.slides.add_slide(deck.slide_layouts[1])
    slide.shapes.title.text = f"Hall {tag}"
    slide.placeholders[1].text = "\n".join(PARAGRAPHS)
    deck.save(str(path))


def _pdf(path: Path, tag: str) -> None:
    from reportlab.pdfgen import canvas

    c = canvas.Canvas(str(path))
    y = 750
    for line in [f"Hall {tag}", *PARAGRAPHS]:
        c.drawString(72, y, line)
        y -= 40
    c.showPage()
    c.save()


def _xlsx(path: Path, tag: str) -> None:
    import openpyxl

    book = openpyxl.Workbook()
    for row in ([f"Hall {tag}"], *([p] for p in PARAGRAPHS)):
        book.active.append(row)
    book.save(str(path))


def _eml(path: Path, tag: str) -> None:
    from email.message import EmailMessage

    msg = EmailMessage()
    msg["From"] = "alice@example.com"
    msg["Subject"] = f"Hall {tag}"
    msg.set_content("\n\n".join(PARAGRAPHS))
    msg.add_alternative(_html(tag), subtype="html")
    path.write_bytes(bytes(msg))


def _msg(path: Path, tag: str) -> None:
    import datetime as dt

    write_msg(
        path,
        subject=f"Hall {tag}",
        body="\n\n".join(PARAGRAPHS),
        sender=("Alice", "alice@example.com"),
        to=[("Bob", "bob@example.com")],
        sent=dt.datetime(2026, 3, 3, 9, 30, tzinfo=dt.UTC),
        attachments=[],
    )


MAKERS: dict[str, Callable[[Path, str], object]] = {
    ".md": lambda p, t: p.write_text(_markdown(t)),
    ".html": lambda p, t: p.write_text(_html(t)),
    ".csv": lambda p, t: p.write_text(f"name,note\n{t},{PARAGRAPHS[0]}\nb,{PARAGRAPHS[1]}\n"),
    ".docx": _docx,
    ".odt": _pandoc,
    ".epub": _pandoc,
    ".rtf": lambda p, t: p.write_text(
        r"{\rtf1\ansi{\fonttbl\f0 Helvetica;}\f0\pard "
        + r"\par ".join([f"Hall {t}", *PARAGRAPHS])
        + r"\par}"
    ),
    ".pptx": _pptx,
    ".pdf": _pdf,
    ".xlsx": _xlsx,
    ".eml": _eml,
    ".msg": _msg,
}
# where the narrative check is skipped: nothing of spaCy's may run there
NO_SPACY = {".md", ".html", ".csv", ".docx", ".odt", ".epub", ".rtf", ".eml"}


def make(folder: Path, suffix: str) -> Path:
    path = folder / f"hall-{uuid.uuid4().hex[:8]}{suffix}"
    MAKERS[suffix](path, uuid.uuid4().hex[:8])
    return path


def parse_afresh(path: Path) -> Parsed:
    """parse_file with unstructured's caches of spaCy's results emptied first (the same
    paragraphs are in every file: a cached answer would hide whether spaCy runs)."""
    from unstructured.nlp import tokenize

    for cached in (tokenize._process_cached, tokenize._tokenize_for_cache, tokenize.pos_tag):
        cached.cache_clear()
    tokenize.word_tokenize.cache_clear()
    return parse_file(path)


@pytest.fixture
def unstructured_in_full(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """parse_file as it was: unstructured's own narrative checks, and the language detected."""
    import importlib

    from unstructured.partition import text_type

    check = text_type.is_possible_narrative_text
    for name in (*lean.NARRATIVE_CHECKS, *lean.TITLE_AFTER):
        monkeypatch.setattr(importlib.import_module(name), "is_possible_narrative_text", check)
    for module in (parse_mod, mail):
        monkeypatch.setattr(module, "skip_narrative_checks", lambda: None)
        monkeypatch.setattr(module, "NO_LANGUAGE", None)  # None: detect the language
    yield


@pytest.mark.parametrize("suffix", sorted(MAKERS))
def test_the_same_elements_as_unstructured_in_full(
    tmp_path: Path, suffix: str, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> None:
    from unstructured.nlp import tokenize

    path = make(tmp_path, suffix)
    lean_parse = parse_afresh(path)
    request.getfixturevalue("unstructured_in_full")
    runs: list[str] = []
    pipeline = tokenize._run_pipeline

    def counted(text: str) -> object:
        runs.append(text)
        return pipeline(text)

    monkeypatch.setattr(tokenize, "_run_pipeline", counted)
    full = parse_afresh(path)
    assert lean_parse == full
    assert lean_parse.elements
    if suffix in NO_SPACY and suffix != ".csv":  # the checks did run in the full parse
        assert runs


@pytest.mark.parametrize("suffix", sorted(NO_SPACY))
def test_no_language_detection_and_no_spacy(
    tmp_path: Path, suffix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from unstructured.nlp import tokenize
    from unstructured.partition.common import lang

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("ran what Hearth throws away")

    parse_file(make(tmp_path, suffix))  # imports and first calls, with nothing refused
    monkeypatch.setattr(tokenize, "_run_pipeline", refuse)
    monkeypatch.setattr(lang, "detect_languages", refuse)
    assert parse_afresh(make(tmp_path, suffix)).elements


def test_pdf_body_lines_are_told_from_headings_without_spacy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Only a line that could be a heading (a dozen words at most) is looked at with spaCy."""
    from reportlab.pdfgen import canvas
    from unstructured.nlp import tokenize

    parse_afresh(make(tmp_path, ".pdf"))  # imports and first calls
    path = tmp_path / "body.pdf"
    c = canvas.Canvas(str(path))
    for n, y in enumerate(range(750, 450, -40)):
        c.drawString(
            72, y, f"Line {n} of the minutes says that the hall was full and the tea was hot."
        )
    c.showPage()
    c.save()
    looked_at: list[str] = []
    monkeypatch.setattr(tokenize, "_run_pipeline", lambda text: looked_at.append(text))
    parsed = parse_afresh(path)
    assert len(parsed.elements) == 8 and {e.kind for e in parsed.elements} == {"text"}
    assert looked_at == []
