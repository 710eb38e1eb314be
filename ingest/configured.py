"""The ingestion as the settings configure it: its options and its parser process, read from
`Settings` in one place for every process that ingests (the workers, `hearth ingest --wait`)."""

from __future__ import annotations

from core.settings import DEFAULT_COLLECTION, Settings

from .budget import max_chars
from .isolate import ParserProcess
from .pipeline import IngestOptions


def options(
    settings: Settings, *, collection: str = DEFAULT_COLLECTION, source: str = "watch"
) -> IngestOptions:
    """Options for files filed under `collection` by `source`. Files are read through no symlink
    from the watched folders and the uploads folder; private copies go to the data dir."""
    s = settings
    return IngestOptions(
        chunk_size=s.chunk_size,
        chunk_overlap=s.chunk_overlap,
        max_file_bytes=s.max_file_bytes,
        collection=collection,
        source=source,
        roots=(*(r.path.resolve() for r in s.watch_roots), s.uploads_dir.resolve()),
        max_chunks=s.max_file_chunks,
        timeout_s=s.file_timeout_s,
        scratch_dir=s.hearth_data_dir / "tmp",
    )


def parser(settings: Settings) -> ParserProcess:
    """Parsing in a child process: a file that hangs or explodes fails alone, and one whose text
    is over the chunk budget is refused there (the text never reaches the caller)."""
    s = settings
    return ParserProcess(
        timeout_s=s.parse_timeout_s,
        memory_mb=s.parse_memory_mb,
        max_chars=max_chars(s.max_file_chunks, s.chunk_size),
        max_chunks=s.max_file_chunks,
    )
