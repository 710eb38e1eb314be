"""What parsing produces: a document's elements, its attachments, or a readable reason it failed."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Element:
    text: str
    kind: str  # "title" | "text" | "list" | "table"
    level: int | None = None  # heading depth for titles (1 = top)
    page: int | None = None


@dataclass(frozen=True)
class Attachment:
    """A file carried inside another (an email attachment), to be indexed as its own document."""

    name: str  # sanitised: a bare file name, never a path
    data: bytes


@dataclass
class Parsed:
    title: str | None
    mime: str | None
    elements: list[Element]
    needs_ocr: bool = False
    attachments: list[Attachment] = field(default_factory=list)


class ParseError(Exception):
    """A file Hearth cannot read; str() is the reason, fit to show a user."""


def short_reason(exc: BaseException, path: object = None) -> str:
    """The first line of an exception's message, without the file path, at most 200 characters."""
    msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if path is not None:
        msg = msg.replace(f"{path}: ", "")
    return msg[:200]
