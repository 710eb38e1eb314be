"""JSON and XML as "path: value" lines, so every value is searchable next to the names that say
what it is. Lines are grouped per top-level entry (a record) into text elements of bounded size.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from .base import Element, ParseError, short_reason
from .text import read_text

MAX_LINES = 40  # per element; the chunker packs small elements, so records stay whole when they fit
MAX_CHARS = 2000

Line = tuple[object, str]  # (group key: the top-level entry it belongs to, "path: value")


def parse_json(path: Path) -> list[Element]:
    text = read_text(path)
    if not text.strip():
        return []
    try:
        data = json.loads(text)
    except RecursionError as exc:
        raise ParseError("JSON nested too deeply to read") from exc
    except ValueError as exc:
        raise ParseError(f"not valid JSON: {short_reason(exc)}") from exc
    if data in (None, "", [], {}):
        return []
    return group(_json_lines(data))


def _json_lines(data: Any) -> Iterator[Line]:
    """Depth-first, in document order, without recursion (nesting depth is the file's choice)."""
    stack: list[tuple[str, Any, object]] = [("", data, None)]
    while stack:
        prefix, value, key = stack.pop()
        if isinstance(value, dict) and value:
            items = [(f"{prefix}.{k}" if prefix else str(k), v) for k, v in value.items()]
        elif isinstance(value, list) and value:
            items = [(f"{prefix}[{i}]", v) for i, v in enumerate(value)]
        else:
            scalar = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
            yield key, f"{prefix}: {scalar}" if prefix else scalar
            continue
        for p, v in reversed(items):
            # at the top level each container is a record, and a run of scalars shares one
            record = (p if v and isinstance(v, dict | list) else "") if key is None else key
            stack.append((p, v, record))


def parse_xml(path: Path) -> list[Element]:
    from lxml import etree

    # no DTD, no entity expansion, no network: XXE and "billion laughs" files stay inert (an entity
    # reference adds no text; resolving internal ones would make every XHTML &nbsp; an error)
    events = etree.iterparse(
        str(path),
        events=("start", "end"),
        resolve_entities=False,
        load_dtd=False,
        no_network=True,
        remove_comments=True,
        remove_pis=True,
        huge_tree=False,
    )
    try:
        return group(_xml_lines(events))
    except etree.XMLSyntaxError as exc:
        msg = str(getattr(exc, "msg", "") or exc)
        if "Excessive depth" in msg:
            raise ParseError("XML nested too deeply to read (over 256 levels)") from exc
        if "amplification" in msg:
            raise ParseError("refused: XML entity expansion bomb") from exc
        msg = re.sub(r", line \d+, column \d+.*$", "", msg)
        raise ParseError(f"not valid XML: {msg[:200]} (line {exc.lineno})") from exc


def _xml_lines(events: Iterable[tuple[str, Any]]) -> Iterator[Line]:
    """Each element's text and attributes under its path from the root, whose children are the
    records. Mixed content (``<p>Some <b>bold</b> text</p>``) stays one line, in reading order."""
    from lxml import etree

    names: list[str] = []
    starts: list[int] = []  # where each open element's lines begin in `pending`
    pending: list[tuple[str, bool]] = []  # (line, is an attribute) of the current record
    record = 0
    for event, el in events:
        if event == "start":
            names.append(etree.QName(el).localname)
            starts.append(len(pending))
            path = "/".join(names[1:]) or names[0]
            for attr, value in el.attrib.items():
                if value.strip():
                    pending.append(
                        (f"{path}/@{etree.QName(attr).localname}: {value.strip()}", True)
                    )
            continue
        path = "/".join(names[1:]) or names[0]
        start = starts.pop()
        mixed = bool(el.text and el.text.strip() and len(el)) or any(
            child.tail and child.tail.strip() for child in el
        )
        text = " ".join((_full_text(el) if mixed else el.text or "").split())
        if mixed:  # its descendants' text lines are part of this one
            pending[start:] = [p for p in pending[start:] if p[1]]
        if text:
            pending.append((f"{path}: {text}", False))
        names.pop()
        if len(names) <= 1:  # a record (or the root) is complete
            yield from ((record, line) for line, _ in pending)
            pending.clear()
            el.clear(keep_tail=True)  # keeps memory flat over many records
            record += 1


def _full_text(el: Any) -> str:
    """Text and tails in document order; entity references (left unexpanded) add nothing."""
    parts: list[str] = []
    stack: list[tuple[Any, bool]] = [(el, False)]
    while stack:
        node, tail = stack.pop()
        if tail:
            parts.append(node.tail or "")
            continue
        if isinstance(node.tag, str):
            parts.append(node.text or "")
        if node is not el:
            stack.append((node, True))
        stack.extend((child, False) for child in reversed(node))
    return "".join(parts)


def group(lines: Iterable[Line]) -> list[Element]:
    """Consecutive lines of one record form an element, split when it grows past the limits."""
    out: list[Element] = []
    current: list[str] = []
    size = 0
    last: object = object()
    for key, line in lines:
        if current and (key != last or len(current) >= MAX_LINES or size + len(line) > MAX_CHARS):
            out.append(Element("\n".join(current), "text"))
            current, size = [], 0
        current.append(line)
        size += len(line) + 1
        last = key
    if current:
        out.append(Element("\n".join(current), "text"))
    return [e for e in out if e.text.strip()]
