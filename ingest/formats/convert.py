"""From `unstructured` elements to Hearth's: kinds, heading levels, pages, tables as rows."""

from __future__ import annotations

from typing import Any

from .base import Element

_DROP = frozenset({"Header", "Footer", "PageNumber", "PageBreak"})
_KIND = {"Title": "title", "ListItem": "list", "Table": "table"}


def convert(raw: list[Any], *, pptx: bool = False, headings: bool = True) -> list[Element]:
    """Map unstructured elements to ours, dropping furniture (headers, footers, page numbers).

    `headings=False` makes every would-be title plain text, for bodies (email) where unstructured's
    guess that a short line is a heading is usually wrong ("Thanks," / "Alice").
    """
    out: list[Element] = []
    for el in raw:
        category = getattr(el, "category", "")
        if category in _DROP:
            continue
        kind = _KIND.get(category, "text")
        meta = el.metadata
        depth = getattr(meta, "category_depth", None)
        text = table_text(el) if kind == "table" else (el.text or "").strip()
        if not text:
            continue
        level = None
        if kind == "title":
            if not headings or (pptx and depth):
                # in slides only the title shape is a heading; short body lines merely look like one
                kind = "text"
            else:
                level = depth + 1 if isinstance(depth, int) and depth >= 0 else 1
        out.append(Element(text=text, kind=kind, level=level, page=meta.page_number))
    return out


def table_text(el: Any) -> str:
    """One line per row, cells joined by " | " (unstructured's own text loses the rows)."""
    html = getattr(el.metadata, "text_as_html", None)
    if html:
        from lxml import html as lxml_html

        try:
            root = lxml_html.fromstring(html)
        except Exception:
            root = None
        if root is not None:
            rows = [
                " | ".join(" ".join(cell.text_content().split()) for cell in tr.xpath("./th|./td"))
                for tr in root.iter("tr")
            ]
            rows = [r for r in rows if r.strip(" |")]
            if rows:
                return "\n".join(rows)
    return (el.text or "").strip()
