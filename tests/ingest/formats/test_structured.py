"""JSON and XML become "path: value" lines, one element per record, safely and in bounded size."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ingest.formats import structured
from ingest.parse import Element, ParseError, parse_file


def test_json_flattens_to_path_lines_grouped_by_record(tmp_path: Path) -> None:
    data = {
        "name": "hearth",
        "version": 2,
        "deps": {"a": [1, 2.5, {"x": None, "ok": True}], "b": "two\nlines"},
        "users": [{"id": 1, "name": "Ann"}, {"id": 2, "name": "Bø"}],
        "empty": {},
    }
    (tmp_path / "conf.json").write_text(json.dumps(data))
    parsed = parse_file(tmp_path / "conf.json")
    assert parsed.title == "conf"
    assert parsed.mime == "application/json"
    assert parsed.elements == [
        Element("name: hearth\nversion: 2", "text"),
        Element(
            "deps.a[0]: 1\ndeps.a[1]: 2.5\ndeps.a[2].x: null\ndeps.a[2].ok: true\n"
            "deps.b: two\nlines",
            "text",
        ),
        Element("users[0].id: 1\nusers[0].name: Ann\nusers[1].id: 2\nusers[1].name: Bø", "text"),
        Element("empty: {}", "text"),
    ]


def test_json_top_level_array_and_scalar(tmp_path: Path) -> None:
    (tmp_path / "rows.json").write_text('[{"a": 1}, {"a": 2}, 3, "four"]')
    assert [e.text for e in parse_file(tmp_path / "rows.json").elements] == [
        "[0].a: 1",
        "[1].a: 2",
        "[2]: 3\n[3]: four",
    ]
    (tmp_path / "one.json").write_text('"just a string"')
    assert [e.text for e in parse_file(tmp_path / "one.json").elements] == ["just a string"]


@pytest.mark.parametrize("content", ["{}", "[]", "null", '""', "  \n"])
def test_json_without_values_is_empty(tmp_path: Path, content: str) -> None:
    (tmp_path / "e.json").write_text(content)
    with pytest.raises(ParseError, match="empty document"):
        parse_file(tmp_path / "e.json")


def test_json_big_arrays_and_deep_nesting_stay_bounded(tmp_path: Path) -> None:
    (tmp_path / "big.json").write_text(json.dumps({"values": list(range(100_000))}))
    elements = parse_file(tmp_path / "big.json").elements
    assert all(len(e.text.splitlines()) <= structured.MAX_LINES for e in elements)
    assert all(len(e.text) <= structured.MAX_CHARS for e in elements)
    assert elements[-1].text.endswith("values[99999]: 99999")
    assert sum(len(e.text.splitlines()) for e in elements) == 100_000

    (tmp_path / "nested.json").write_text("[" * 500 + "1" + "]" * 500)
    assert parse_file(tmp_path / "nested.json").elements[0].text.endswith("[0]: 1")
    (tmp_path / "deeper.json").write_text('{"a":' * 100_000 + "1" + "}" * 100_000)
    with pytest.raises(ParseError, match=r"^JSON nested too deeply to read$"):
        parse_file(tmp_path / "deeper.json")


def test_json_in_utf16(tmp_path: Path) -> None:
    (tmp_path / "u.json").write_text('{"stadt": "Köln"}', encoding="utf-16")
    assert parse_file(tmp_path / "u.json").elements == [Element("stadt: Köln", "text")]


XML = """<?xml version="1.0" encoding="utf-8"?>
<!-- a catalogue -->
<catalog xmlns="urn:books" xmlns:x="urn:extra">
  <book id="b1" x:lang="en">
    <title>Dune</title>
    <author>Frank Herbert</author>
  </book>
  <book id="b2">
    <title>Emma</title>
    <blurb>A <b>clever</b> novel by <a href="https://example.org/austen">Austen</a>.</blurb>
  </book>
</catalog>
"""


def test_xml_text_with_element_names_one_element_per_record(tmp_path: Path) -> None:
    (tmp_path / "books.xml").write_text(XML)
    parsed = parse_file(tmp_path / "books.xml")
    assert parsed.mime == "application/xml"
    assert [e.text for e in parsed.elements] == [
        "book/@id: b1\nbook/@lang: en\nbook/title: Dune\nbook/author: Frank Herbert",
        "book/@id: b2\nbook/title: Emma\nbook/blurb/a/@href: https://example.org/austen\n"
        "book/blurb: A clever novel by Austen.",
    ]


def test_xml_root_text(tmp_path: Path) -> None:
    (tmp_path / "note.xml").write_text("<note>Buy milk</note>")
    assert [e.text for e in parse_file(tmp_path / "note.xml").elements] == ["note: Buy milk"]


def test_xml_external_entities_are_never_read(tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("TOP-SECRET")
    (tmp_path / "xxe.xml").write_text(
        f'<?xml version="1.0"?><!DOCTYPE r [<!ENTITY s SYSTEM "file://{secret}">]>'
        "<r><p>before &s; after</p></r>"
    )
    parsed = parse_file(tmp_path / "xxe.xml")
    assert parsed.elements == [Element("p: before after", "text")]


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        ("<a><b></a>", "not valid XML: Opening and ending tag mismatch"),
        ("<a>" * 300 + "</a>" * 300, "XML nested too deeply"),
        ("\x00\x01binary", "not valid XML"),
        ("<a>  </a>", "empty document"),
    ],
)
def test_bad_xml(tmp_path: Path, content: str, reason: str) -> None:
    (tmp_path / "bad.xml").write_text(content)
    with pytest.raises(ParseError, match=reason):
        parse_file(tmp_path / "bad.xml")
