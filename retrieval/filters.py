"""Search filters: which documents a search may return, rendered as a parameterised SQL condition
on `documents d` that both legs apply inside their own SQL (never to a top-k afterwards)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from psycopg.types.json import Jsonb


def _epoch(value: datetime | float | None) -> float | None:
    if value is None or isinstance(value, int | float):
        return value
    return value.timestamp()


def _suffix(value: str) -> str:
    value = value.strip().lower()
    return value if value.startswith(".") else "." + value


@dataclass(frozen=True)
class SearchFilter:
    """Every field narrows the search; an empty filter matches every live document.

    `collections` is what the caller asked for; `readable` is what the caller may read (access
    control sets it); both apply. A tuple of `()` matches nothing. `file_types` holds MIME types
    ("application/pdf", or a family such as "text/*") and file suffixes ("pdf", ".md").
    `metadata` matches documents whose metadata JSON contains it (jsonb `@>`).
    """

    collections: tuple[str, ...] | None = None
    readable: tuple[str, ...] | None = None
    path_prefixes: tuple[str, ...] = ()
    file_types: tuple[str, ...] = ()
    modified_after: datetime | float | None = None  # inclusive; a datetime or a Unix time
    modified_before: datetime | float | None = None  # exclusive
    metadata: Mapping[str, Any] = field(default_factory=dict)

    def restricted_to(self, readable: tuple[str, ...]) -> SearchFilter:
        """The same filter, further limited to the collections in `readable` (access control)."""
        if self.readable is not None:
            readable = tuple(c for c in readable if c in self.readable)
        return replace(self, readable=tuple(readable))

    def render_scope(self, alias: str, prefix: str = "f_") -> tuple[str, dict[str, Any]]:
        """(SQL condition on the `collection` of a statistics table under `alias`, its
        parameters): the collections a score may be computed from, which are those the caller
        may read (`readable`; every one when unrestricted). The other fields narrow what is
        returned, not what a score depends on. Uses the same parameter as `render`."""
        if self.readable is None:
            return "true", {}
        name = f"{prefix}readable"
        return f"{alias}.collection = ANY(%({name})s::text[])", {name: list(self.readable)}

    def render(self, alias: str = "d", prefix: str = "f_") -> tuple[str, dict[str, Any]]:
        """(SQL condition on the documents table under `alias`, its named parameters).

        The SQL is built only from fixed text; every value travels as a parameter.
        """
        where = [f"{alias}.status <> 'deleted'"]
        params: dict[str, Any] = {}

        def param(name: str, value: Any) -> str:
            params[prefix + name] = value
            return f"%({prefix}{name})s"

        for name, allowed in (("collections", self.collections), ("readable", self.readable)):
            if allowed is not None:
                where.append(f"{alias}.collection = ANY({param(name, list(allowed))}::text[])")
        if self.path_prefixes:
            where.append(
                f"EXISTS (SELECT 1 FROM unnest({param('prefixes', list(self.path_prefixes))}"
                f"::text[]) p WHERE starts_with({alias}.path, p))"
            )
        if self.file_types:
            mimes = [t.lower() for t in self.file_types if "/" in t]
            exact = [m for m in mimes if not m.endswith("/*")]
            families = [m.removesuffix("*") for m in mimes if m.endswith("/*")]
            suffixes = [_suffix(t) for t in self.file_types if "/" not in t]
            where.append(
                f"(lower({alias}.mime) = ANY({param('mimes', exact)}::text[])"
                f" OR EXISTS (SELECT 1 FROM unnest({param('families', families)}::text[]) m"
                f" WHERE starts_with(lower({alias}.mime), m))"
                f" OR EXISTS (SELECT 1 FROM unnest({param('suffixes', suffixes)}::text[]) s"
                f" WHERE right(lower({alias}.path), length(s)) = s))"
            )
        after, before = _epoch(self.modified_after), _epoch(self.modified_before)
        if after is not None:
            where.append(f"{alias}.mtime >= {param('after', after)}::float8")
        if before is not None:
            where.append(f"{alias}.mtime < {param('before', before)}::float8")
        if self.metadata:
            where.append(f"{alias}.metadata @> {param('metadata', Jsonb(dict(self.metadata)))}")
        return " AND ".join(where), params
