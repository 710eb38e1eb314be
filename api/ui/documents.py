"""The UI's documents view: a document as the view shows it (when it was last indexed, besides
what the Files API says). The rows come from retrieval.documents, in the collections the caller
may read (`readable`, from api.store.access)."""

from __future__ import annotations

from datetime import datetime
from pathlib import PurePath
from typing import Any

from retrieval.documents import PROBLEM_STATUSES, DocumentInfo


def _epoch(value: datetime | None) -> int | None:
    return int(value.timestamp()) if value is not None else None


def view(doc: DocumentInfo) -> dict[str, Any]:
    return {
        "id": doc.id,
        "file_id": f"file-{doc.id}",
        "filename": PurePath(doc.path).name,
        "path": doc.path,
        "title": doc.title,
        "source": doc.source,
        "collection": doc.collection,
        "status": doc.status,
        "error": doc.error if doc.status in PROBLEM_STATUSES else None,
        "bytes": doc.size,
        "mime": doc.mime,
        "chunk_count": doc.chunk_count,
        "created_at": _epoch(doc.created_at),
        "updated_at": _epoch(doc.updated_at),
        "indexed_at": _epoch(doc.indexed_at),
    }
