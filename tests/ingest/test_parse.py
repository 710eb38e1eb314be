"""parse_file on every supported format, on bad files, and with the network cut off."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from core.offline import OFFLINE_ENV
from ingest import parse as parse_mod
from ingest.parse import SUPPORTED_SUFFIXES, Element, ParseError, parse_file

REPO = Path(__file__).resolve().parents[2]

MARKDOWN = """# Guide

Intro paragraph about the guide.

## Install

Run the installer and wait for it.

- first step
- second step

| name | qty |
|------|-----|
| apple | 3 |
| pear | 4 |
"""

HTML = """<html><head><title>ignored</title></head><body>
<h1>Guide</h1><p>Intro paragraph about the guide.</p>
<h2>Install</h2><p>Run the installer and wait for it.</p>
<ul><li>first step</li><li>second step</li></ul>
<table><tr><th>name</th><th>qty</th></tr><tr><td>apple</td><td>3</td></tr>
<tr><td>pear</td><td>4</td></tr></table>
</body></html>"""


def make_pdf(path: Path, pages: list[list[str]], heading: str | None = None) -> Path:
    from reportlab.pdfgen import canvas

    c = canvas.Canvas(str(path))
    for n, lines in enumerate(pages):
        y = 750
        if heading and n == 0:
            c.setFont("Helvetica-Bold", 20)
            c.drawString(72, y, heading)
            y -= 50
        c.setFont("Helvetica", 11)
        for line in lines:
            c.drawString(72, y, line)
            y -= 20
        c.showPage()
    c.save()
    return path


def make_docx(path: Path) -> Path:
    import docx

    doc = docx.Document()
    doc.add_heading("Guide", 1)
    doc.add_paragraph("Intro paragraph about the guide.")
    doc.add_heading("Install", 2)
    doc.add_paragraph("Run the installer and wait for it.")
    doc.add_paragraph("first step", style="List Bullet")
    doc.add_paragraph("second step", style="List Bullet")
    table = doc.add_table(rows=3, cols=2)
    for r, row in enumerate([("name", "qty"), ("apple", "3"), ("pear", "4")]):
        for col, value in enumerate(row):
            table.cell(r, col).text = value
    doc.save(str(path))
    return path


def make_structured(tmp_path: Path, suffix: str) -> Path:
    path = tmp_path / f"guide{suffix}"
    if suffix == ".md":
        path.write_text(MARKDOWN)
    elif suffix == ".html":
        path.write_text(HTML)
    elif suffix == ".docx":
        make_docx(path)
    else:  # odt, epub: pandoc (bundled with pypandoc-binary) converts the Markdown
        import pypandoc

        fmt = suffix[1:]
        pypandoc.convert_text(
            MARKDOWN, fmt, format="md", outputfile=str(path), extra_args=["--metadata=title:Book"]
        )
    return path


def texts(elements: list[Element], kind: str) -> list[str]:
    return [e.text for e in elements if e.kind == kind]


@pytest.mark.parametrize("suffix", [".md", ".html", ".docx", ".odt", ".epub"])
def test_structured_formats_keep_headings_lists_and_table_rows(tmp_path: Path, suffix: str) -> None:
    parsed = parse_file(make_structured(tmp_path, suffix))
    assert parsed.title == "Guide"
    assert not parsed.needs_ocr
    titles = [(e.text, e.level) for e in parsed.elements if e.kind == "title"]
    assert titles == [("Guide", 1), ("Install", 2)]
    assert "Intro paragraph about the guide." in texts(parsed.elements, "text")
    assert texts(parsed.elements, "list") == ["first step", "second step"]
    assert texts(parsed.elements, "table") == ["name | qty\napple | 3\npear | 4"]


def test_plain_text_splits_on_blank_lines(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("First line\nsecond line.\n\nSHORT\n\n  \n\nLast paragraph.\n")
    parsed = parse_file(path)
    assert parsed.title == "notes"
    assert parsed.mime == "text/plain"
    assert parsed.elements == [
        Element("First line\nsecond line.", "text"),
        Element("SHORT", "text"),
        Element("Last paragraph.", "text"),
    ]


def test_legacy_encoded_text_is_decoded(tmp_path: Path) -> None:
    (tmp_path / "old.txt").write_bytes("Café au lait, naïve résumé à la carte.".encode("cp1252"))
    assert parse_file(tmp_path / "old.txt").elements[0].text.startswith("Café au lait, naïve")


def test_pdf_pages_are_numbered_from_one(tmp_path: Path) -> None:
    pages = [[f"This is body text on page {n} of the report."] for n in (1, 2, 3)]
    parsed = parse_file(make_pdf(tmp_path / "report.pdf", pages, heading="Annual Report"))
    assert parsed.title == "Annual Report"
    assert parsed.mime == "application/pdf"
    body = {e.text: e.page for e in parsed.elements if e.kind == "text"}
    assert body == {f"This is body text on page {n} of the report.": n for n in (1, 2, 3)}


def test_pptx_slides_are_pages_with_titles(tmp_path: Path) -> None:
    import pptx

    deck = pptx.Presentation()
    for name in ("Roadmap", "Budget"):
        slide = deck.slides.add_slide(deck.slide_layouts[1])
        slide.shapes.title.text = name
        slide.placeholders[1].text = f"{name} details for everyone"
    deck.save(str(tmp_path / "deck.pptx"))
    parsed = parse_file(tmp_path / "deck.pptx")
    assert [(e.text, e.kind, e.level, e.page) for e in parsed.elements] == [
        ("Roadmap", "title", 1, 1),
        ("Roadmap details for everyone", "text", None, 1),
        ("Budget", "title", 1, 2),
        ("Budget details for everyone", "text", None, 2),
    ]
    assert parsed.title == "Roadmap"


def test_spreadsheets_become_tables(tmp_path: Path) -> None:
    import openpyxl

    book = openpyxl.Workbook()
    sheet = book.active
    for row in (["name", "qty"], ["apple", 3], ["pear", 4]):
        sheet.append(row)
    book.save(str(tmp_path / "stock.xlsx"))
    (tmp_path / "stock.csv").write_text("name,qty\napple,3\npear,4\n")
    for suffix in (".xlsx", ".csv"):
        parsed = parse_file(tmp_path / f"stock{suffix}")
        assert texts(parsed.elements, "table") == ["name | qty\napple | 3\npear | 4"], suffix
        assert parsed.title == "stock"


def test_rtf(tmp_path: Path) -> None:
    path = tmp_path / "memo.rtf"
    path.write_text(
        r"{\rtf1\ansi{\fonttbl\f0 Helvetica;}\f0\pard Hello RTF world.\par Bye now.\par}"
    )
    assert texts(parse_file(path).elements, "text") == ["Hello RTF world.", "Bye now."]


def test_supported_suffixes() -> None:
    assert {".md", ".txt", ".html", ".pdf", ".docx", ".pptx", ".xlsx", ".csv"} <= SUPPORTED_SUFFIXES
    assert all(s == s.lower() and s.startswith(".") for s in SUPPORTED_SUFFIXES)


def test_image_only_pdf_needs_ocr(tmp_path: Path) -> None:
    from reportlab.pdfgen import canvas

    c = canvas.Canvas(str(tmp_path / "scan.pdf"))
    c.rect(100, 100, 200, 200, fill=1)
    c.circle(300, 500, 50)
    c.showPage()
    c.save()
    parsed = parse_file(tmp_path / "scan.pdf")
    assert parsed.needs_ocr and parsed.elements == []


def test_pdf_with_empty_user_password_is_read(tmp_path: Path) -> None:
    from pypdf import PdfWriter

    writer = PdfWriter(clone_from=make_pdf(tmp_path / "a.pdf", [["Readable without a password."]]))
    writer.encrypt(user_password="", owner_password="owner")
    writer.write(tmp_path / "locked.pdf")
    parsed = parse_file(tmp_path / "locked.pdf")
    assert [e.text for e in parsed.elements] == ["Readable without a password."]


def _bad_file(tmp_path: Path, case: str) -> Path:
    if case == "encrypted.pdf":
        from pypdf import PdfWriter

        writer = PdfWriter(clone_from=make_pdf(tmp_path / "plain.pdf", [["Top secret text."]]))
        writer.encrypt(user_password="secret", owner_password="owner")
        writer.write(tmp_path / case)
    elif case == "truncated.pdf":
        data = make_pdf(tmp_path / "whole.pdf", [["Some text here."]] * 3).read_bytes()
        (tmp_path / case).write_bytes(data[: len(data) // 3])
    elif case == "nodoc.docx":
        with zipfile.ZipFile(tmp_path / case, "w") as zf:
            zf.writestr("hello.txt", "hi")
    elif case == "legacy.docx":
        (tmp_path / case).write_bytes(b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + os.urandom(2048))
    elif case == "blank.docx":
        import docx

        docx.Document().save(str(tmp_path / case))
    elif case.startswith("random"):
        (tmp_path / case).write_bytes(b"\x00\x01" + os.urandom(4096))
    elif case.startswith("empty"):
        (tmp_path / case).write_bytes(b"")
    elif case == "spaces.md":
        (tmp_path / case).write_text(" \n\n\t\n")
    elif case == "header-only.pdf":
        (tmp_path / case).write_bytes(b"%PDF-1.4\n" + os.urandom(1024))
    else:
        (tmp_path / case).write_text("whatever")
    return tmp_path / case


@pytest.mark.parametrize(
    ("case", "keyword"),
    [
        ("empty.md", "empty file"),
        ("empty.pdf", "empty file"),
        ("empty.docx", "empty file"),
        ("spaces.md", "empty"),
        ("blank.docx", "empty"),
        ("random.pdf", "not a valid PDF"),
        ("header-only.pdf", "corrupt PDF"),
        ("truncated.pdf", "corrupt PDF"),
        ("encrypted.pdf", "encrypted PDF: needs a password"),
        ("random.docx", "not a valid DOCX"),
        ("random.pptx", "not a valid PPTX"),
        ("random.xlsx", "not a valid XLSX"),
        ("random.epub", "not a valid EPUB"),
        ("random.rtf", "not a valid RTF"),
        ("random.md", "not a text file"),
        ("random.txt", "not a text file"),
        ("nodoc.docx", "not a valid DOCX"),
        ("legacy.docx", "password-protected"),
        ("drawing.xyz", "unsupported file type: .xyz"),
        ("README", "unsupported file type"),
    ],
)
def test_bad_files_raise_parse_error_with_reason(tmp_path: Path, case: str, keyword: str) -> None:
    with pytest.raises(ParseError) as info:
        parse_file(_bad_file(tmp_path, case))
    assert keyword in str(info.value)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ParseError, match="cannot read"):
        parse_file(tmp_path / "gone.md")


def test_unexpected_errors_are_wrapped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(*args: object, **kwargs: object) -> list[object]:
        raise KeyError("word/styles.xml")

    monkeypatch.setattr(parse_mod, "_partition", boom)
    with pytest.raises(ParseError, match=r"could not parse DOCX: .*styles\.xml") as info:
        parse_file(make_docx(tmp_path / "a.docx"))
    assert isinstance(info.value.__cause__, KeyError)


GUARD = r"""
import ipaddress, json, socket, sys
from pathlib import Path

attempts = []


def remote(host):
    host = host.decode() if isinstance(host, bytes) else host
    if host in (None, "localhost"):
        return False
    try:
        return not ipaddress.ip_address(str(host).split("%")[0]).is_loopback
    except ValueError:
        return True


def guarded(real, host_of):
    def wrapper(*args, **kwargs):
        host = host_of(*args)
        if remote(host):
            attempts.append(f"{real.__name__} {host!r}")
            raise OSError("network disabled by test")
        return real(*args, **kwargs)

    return wrapper


def sock_host(sock, address, *_):
    return address[0] if isinstance(address, tuple) else None  # AF_UNIX paths are local


socket.socket.connect = guarded(socket.socket.connect, sock_host)
socket.socket.connect_ex = guarded(socket.socket.connect_ex, sock_host)
socket.create_connection = guarded(socket.create_connection, lambda address, *_: address[0])
socket.getaddrinfo = guarded(socket.getaddrinfo, lambda host, *_: host)

from ingest.parse import parse_file

parsed = {Path(p).suffix: len(parse_file(Path(p)).elements) for p in sys.argv[1:]}
during_parse = list(attempts)
try:
    socket.create_connection(("192.0.2.1", 9), timeout=1)
except OSError:
    pass
print(json.dumps({"parsed": parsed, "attempts": during_parse, "guarded": len(attempts) > 0}))
"""


def test_parsing_opens_no_network_connection(tmp_path: Path) -> None:
    """Every kind of parser in one child (each child imports unstructured: ~4 s of CPU)."""
    from .formats.test_mail import make_eml, make_msg  # that module imports this one

    files = [make_structured(tmp_path, s) for s in (".md", ".html", ".docx")]
    files.append(make_pdf(tmp_path / "report.pdf", [["Offline text on page one."]], "Report"))
    files += [make_eml(tmp_path / "a.eml"), make_msg(tmp_path / "b.msg")]
    # without go_offline's variables, so the child proves parse_file sets them itself
    env = {k: v for k, v in os.environ.items() if k not in OFFLINE_ENV}
    env["PYTHONPATH"] = str(REPO)
    proc = subprocess.run(
        [sys.executable, "-c", GUARD, *map(str, files)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["attempts"] == []
    assert report["guarded"], "the guard itself did not trip on a non-loopback address"
    assert set(report["parsed"]) == {".md", ".html", ".docx", ".pdf", ".eml", ".msg"}
    assert all(n > 0 for n in report["parsed"].values()), report
    assert report["parsed"][".eml"] == report["parsed"][".msg"] == 6, report
