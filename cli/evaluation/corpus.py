"""Indexing a BEIR corpus the way Hearth indexes files: each record (title + text) becomes a
Document, chunked by the real chunker, embedded by the (cached) embedder and written by
retrieval.index, one transaction per document."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Iterator
from typing import TypeVar

import psycopg

from core.embedder import Embedder
from core.types import Document
from ingest.chunking import chunk_elements
from ingest.parse import Element
from retrieval import documents, index

from .beir import BeirDoc, Dataset

COLLECTION = "beir"
T = TypeVar("T")


def doc_path(dataset: str, doc_id: str) -> str:
    return f"/beir/{dataset}/{doc_id}"


def _hash(doc: BeirDoc) -> str:
    return hashlib.sha256(f"{doc.title}\0{doc.text}".encode()).hexdigest()


def to_document(
    dataset: str, doc: BeirDoc, embedder: Embedder, chunk_size: int, overlap: int
) -> Document:
    """The record as a Document: the abstract is the body, the title the chunks' context (so
    both are embedded and both are in the tsvector, as BEIR's title + text)."""
    body = doc.text.strip() or doc.title.strip() or doc.id
    chunks = chunk_elements(
        [Element(text=body, kind="text")],
        title=doc.title.strip() or None,
        count_tokens=embedder.count_tokens,
        chunk_size=chunk_size,
        overlap=overlap,
    )
    return Document(
        path=doc_path(dataset, doc.id),
        content_hash=_hash(doc),
        size=len(body),
        mtime=0.0,
        mime="text/plain",
        title=doc.title or None,
        collection=COLLECTION,
        source="cli",
        chunks=chunks,
    )


def _batches(items: Iterable[T], size: int) -> Iterator[list[T]]:
    batch: list[T] = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def index_dataset(
    conn: psycopg.Connection,
    data: Dataset,
    embedder: Embedder,
    *,
    chunk_size: int,
    overlap: int,
    progress: Callable[[int, int], None] | None = None,
) -> dict[int, str]:
    """Bring the index in line with the corpus (unchanged records are skipped); return the map
    from Hearth document id to BEIR doc id."""
    prefix = doc_path(data.name, "")
    have = {d.path: d.content_hash for d in _indexed_under(conn, prefix)}
    todo = [d for d in data.corpus.values() if have.get(doc_path(data.name, d.id)) != _hash(d)]
    done = len(data.corpus) - len(todo)
    for batch in _batches(todo, 64):
        docs = [to_document(data.name, d, embedder, chunk_size, overlap) for d in batch]
        vectors = embedder.embed([c.embed_text for doc in docs for c in doc.chunks])
        start = 0
        for doc in docs:
            index.replace_chunks(conn, doc, vectors[start : start + len(doc.chunks)])
            start += len(doc.chunks)
        conn.commit()
        done += len(batch)
        if progress:
            progress(done, len(data.corpus))
    ids = {d.id: d.path[len(prefix) :] for d in _indexed_under(conn, prefix)}
    return {i: d for i, d in ids.items() if d in data.corpus}


def _indexed_under(conn: psycopg.Connection, prefix: str) -> list[documents.DocumentRow]:
    return [d for d in documents.under(conn, prefix) if d.status == "indexed"]
