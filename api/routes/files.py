"""/v1/files in OpenAI's shape: upload a file for indexing, list and inspect documents (uploaded
and watched), download the original, delete an upload from the index and the disk."""

from __future__ import annotations

import asyncio
import logging
import mimetypes
import os
import re
import shutil
import uuid
from pathlib import Path
from typing import Any, Literal

from fastapi import APIRouter, Query, Request
from fastapi.responses import FileResponse
from python_multipart.multipart import parse_options_header

from core.settings import Settings, valid_collection
from retrieval import documents
from retrieval.documents import LIVE_STATUSES, PROBLEM_STATUSES, DocumentInfo

from ..auth import CurrentUser
from ..errors import APIError
from ..state import State
from ..store import access
from ..stored_file import OpenFileResponse, open_stored
from ..uploads import FORM_OVERHEAD, MultipartUpload, sanitize_filename

log = logging.getLogger(__name__)
router = APIRouter(prefix="/v1")

DEFAULT_PURPOSE = "assistants"
# the same rule as watched-folder collections; the name becomes a folder under uploads_dir
_FILE_ID = re.compile(r"file-([0-9]{1,18})")
# shown in the browser; anything else (HTML, SVG, ...) is a download, so an uploaded page can
# never run script on the API's origin
_INLINE_TYPES = frozenset(
    {"application/pdf", "text/plain", "text/markdown", "text/csv", "image/png", "image/jpeg"}
)


# OpenAI's file statuses, which clients poll (the SDK's `files.wait_for_processing` waits for
# "processed" or "error"); Hearth's own, finer one is `index_status`
OPENAI_STATUS = {
    "queued": "uploaded",
    "parsing": "uploaded",
    "embedding": "uploaded",
    "indexed": "processed",
}  # anything else (failed, needs_ocr) is "error"


def file_object(doc: DocumentInfo) -> dict[str, Any]:
    """A document as an OpenAI file object, plus Hearth's own fields."""
    return {
        "id": f"file-{doc.id}",
        "object": "file",
        "bytes": doc.size,
        "created_at": int(doc.created_at.timestamp()),
        "filename": Path(doc.path).name,
        "purpose": doc.purpose or DEFAULT_PURPOSE,
        "status": OPENAI_STATUS.get(doc.status, "error"),
        "status_details": doc.error if doc.status in PROBLEM_STATUSES else None,
        "index_status": doc.status,
        "collection": doc.collection,
        "chunk_count": doc.chunk_count,
        "source": doc.source,
    }


def _parse_id(file_id: str) -> int | None:
    match = _FILE_ID.fullmatch(file_id)
    return int(match.group(1)) if match else None


async def _find(state: State, user: CurrentUser, file_id: str) -> DocumentInfo:
    """The one file `file_id` names, or a 404.

    Only documents in collections `user` may read are found; the others answer 404 as if they
    did not exist.
    """
    doc_id = _parse_id(file_id)
    doc = None
    if doc_id is not None:
        async with state.pool.connection() as conn:
            doc = await documents.get_document(conn, doc_id, await access.readable(conn, user))
    if doc is None:
        raise APIError(404, f"No such File object: {file_id}", param="file_id", code="not_found")
    return doc


@router.post(
    "/files",
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "multipart/form-data": {
                    "schema": {
                        "type": "object",
                        "required": ["file"],
                        "properties": {
                            "file": {"type": "string", "format": "binary"},
                            "purpose": {"type": "string", "default": DEFAULT_PURPOSE},
                            "collection": {
                                "type": "string",
                                "description": "default: `default` for admins, else the"
                                " uploader's personal collection (`user-<name>`)",
                            },
                        },
                    }
                }
            },
        }
    },
)
async def upload_file(request: Request, state: State, user: CurrentUser) -> dict[str, Any]:
    """Store the upload under uploads_dir, queue it for indexing, answer with its file object.

    The body is streamed to disk and cut off (413) as soon as it passes MAX_FILE_MB.
    A collection is written to by its owner or an admin. A name that does not exist, or that
    the uploader cannot read, is the same 404; a new name is created (as the uploader's) only
    when they may create collections (admins; users too with COLLECTION_CREATORS=users).
    Without a name, uploads go to the uploader's personal collection (admins': `default`).
    """
    settings = state.settings
    if state.celery is None:
        raise APIError(503, "Uploads need the ingestion queue; REDIS_URL is not set.")
    ctype, params = parse_options_header(request.headers.get("content-type"))
    if ctype != b"multipart/form-data" or b"boundary" not in params:
        raise APIError(400, "Send the file as multipart/form-data in a field named 'file'.")
    limit = settings.max_file_bytes
    length = request.headers.get("content-length", "")
    if length.isdigit() and int(length) > limit + FORM_OVERHEAD:
        raise too_large(limit)

    root = await asyncio.to_thread(_uploads_root, settings)
    upload = MultipartUpload(root / ".incoming" / f"{uuid.uuid4().hex}.part", limit)
    try:
        await upload.receive(request.stream(), params[b"boundary"], too_large(limit))
        if upload.filename is None:
            raise APIError(400, "No file: send it in a multipart field named 'file'.", param="file")
        wanted = upload.fields.get("collection", "").strip() or None
        if wanted is not None and not valid_collection(wanted):
            raise APIError(
                400,
                "A collection name is 1-64 letters, digits, '_', '.' or '-', starting with a"
                " letter or digit.",
                param="collection",
            )
        async with state.pool.connection() as conn:
            collection, verdict = await access.upload_target(
                conn, user, wanted, settings.collection_creators == "users"
            )
        if verdict == "missing":  # or unreadable: the same answer, so names do not leak
            raise APIError(
                404,
                f"There is no collection '{collection}' that you can read.",
                param="collection",
                code="collection_not_found",
            )
        if verdict == "forbidden":
            raise APIError(
                403,
                f"You may read but not add files to the collection '{collection}'.",
                param="collection",
                code="collection_forbidden",
            )
        purpose = upload.fields.get("purpose", "").strip() or DEFAULT_PURPOSE
        name = sanitize_filename(upload.filename)
        dest = await asyncio.to_thread(_store, upload.tmp, root, collection, name)
    finally:
        upload.tmp.unlink(missing_ok=True)

    path = str(dest)
    try:
        async with state.pool.connection() as conn:
            doc = await documents.create_upload(
                conn, path, collection=collection, size=upload.size, purpose=purpose
            )
    except BaseException:
        await asyncio.to_thread(shutil.rmtree, dest.parent, True)
        raise
    try:
        await state.queue_ingest(path, collection, "upload")
    except Exception:
        log.exception("could not queue upload %s", path)
        async with state.pool.connection() as conn:
            await documents.discard(conn, doc.id)
        await asyncio.to_thread(shutil.rmtree, dest.parent, True)
        raise APIError(
            503, "The ingestion queue is unreachable; nothing was stored. Try again later."
        ) from None
    return file_object(doc)


def too_large(limit: int) -> APIError:
    size = f"{limit / 2**20:g} MB" if limit >= 2**20 else f"{limit} bytes"
    return APIError(
        413,
        f"File too large: the limit is {size} (MAX_FILE_MB).",
        param="file",
        code="file_too_large",
    )


def _uploads_root(settings: Settings) -> Path:
    root = settings.uploads_dir
    root.mkdir(parents=True, exist_ok=True)
    return root.resolve()  # stored paths are canonical, as the workers key documents


def _store(tmp: Path, root: Path, collection: str, name: str) -> Path:
    """Move the received file to <root>/<collection>/<random id>/<name>."""
    folder = root / collection / uuid.uuid4().hex
    dest = folder / name
    if dest.parent != folder or not folder.is_relative_to(root):  # sanitize_filename's promise
        raise ValueError(f"unsafe upload path {dest}")
    folder.mkdir(parents=True)
    os.replace(tmp, dest)
    return dest


@router.get("/files")
async def list_files(
    state: State,
    user: CurrentUser,
    collection: str | None = None,
    status: str | None = None,
    limit: int = Query(default=100, ge=1, le=1000),
    after: str | None = None,
    order: Literal["asc", "desc"] = "desc",
) -> dict[str, Any]:
    """Every document, watched or uploaded (deleted ones excluded), newest first by default.

    Only documents in collections `user` may read are listed.
    """
    if status is not None and status not in LIVE_STATUSES:  # Hearth's index_status values
        raise APIError(400, f"status must be one of {', '.join(LIVE_STATUSES)}.", param="status")
    after_id = None
    if after is not None:
        after_id = _parse_id(after)
        if after_id is None:
            raise APIError(400, f"after must be a file id such as file-42, not {after!r}.")
    async with state.pool.connection() as conn:
        docs = await documents.list_documents(
            conn,
            readable=await access.readable(conn, user),
            collection=collection,
            statuses=(status,) if status else LIVE_STATUSES,
            after_id=after_id,
            limit=limit + 1,
            descending=order == "desc",
        )
    data = [file_object(d) for d in docs[:limit]]
    return {
        "object": "list",
        "data": data,
        "first_id": data[0]["id"] if data else None,
        "last_id": data[-1]["id"] if data else None,
        "has_more": len(docs) > limit,
    }


@router.get("/files/{file_id}")
async def retrieve_file(file_id: str, state: State, user: CurrentUser) -> dict[str, Any]:
    return file_object(await _find(state, user, file_id))


@router.get("/files/{file_id}/content", response_model=None)
async def file_content(file_id: str, state: State, user: CurrentUser) -> FileResponse:
    """The original file, as stored (uploads) or as it is now in the watched folder; never
    through a symlink (api.stored_file): one that replaced the file is a 404 like a gone file."""
    doc = await _find(state, user, file_id)
    path = Path(doc.path)
    fd = await asyncio.to_thread(open_stored, state.settings, path, doc.source)
    if fd is None:
        raise APIError(404, f"The content of {file_id} is no longer on disk.", code="not_found")
    media = doc.mime or mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    inline = media in _INLINE_TYPES
    return OpenFileResponse(
        fd,
        media_type=media,
        filename=path.name,
        content_disposition_type="inline" if inline else "attachment",
        headers={"X-Content-Type-Options": "nosniff"},
    )


@router.delete("/files/{file_id}")
async def delete_file(file_id: str, state: State, user: CurrentUser) -> dict[str, Any]:
    """Remove a file from the index; an upload's stored copy goes too. A watched file must be
    deleted from its folder instead, or the next rescan would index it again."""
    doc = await _find(state, user, file_id)
    async with state.pool.connection() as conn:
        if not await access.may_write(conn, user, doc.collection):
            raise APIError(
                403,
                f"You may read but not delete files of the collection '{doc.collection}'.",
                param="file_id",
                code="collection_forbidden",
            )
    path = Path(doc.path)
    if doc.source != "upload" and (watched := _watched_root(state.settings, path)) is not None:
        raise APIError(
            409,
            f"{file_id} is a file in the watched folder {watched};"
            " deleting it here would be undone by the next rescan. Delete (or move) the file"
            f" {path} from the watched folder instead, and Hearth drops it from the index.",
            param="file_id",
            code="file_in_watched_folder",
        )
    # the index first: once the row is 'deleted', no worker mistakes the vanishing upload for
    # a moved document
    async with state.pool.connection() as conn:
        deleted = await documents.delete_document(conn, doc.id, doc.path)
    if not deleted:
        raise APIError(404, f"No such File object: {file_id}", param="file_id", code="not_found")
    if doc.source == "upload":
        root = await asyncio.to_thread(_uploads_root, state.settings)
        await asyncio.to_thread(_remove_upload, path, root)
        # a worker that was indexing this upload meanwhile may write it back; a second task
        # (which waits for the first) finds the file gone and removes it for good
        if state.celery is not None:
            try:
                await state.queue_ingest(doc.path, doc.collection, "upload")
            except Exception:
                log.warning("could not queue the clean-up of %s", doc.path, exc_info=True)
    return {"id": f"file-{doc.id}", "object": "file", "deleted": True}


def _remove_upload(path: Path, root: Path) -> None:
    """Delete the stored upload and its folder (<root>/<collection>/<id>/); nothing outside."""
    folder = path.parent
    if folder.is_relative_to(root) and len(folder.relative_to(root).parts) == 2:
        if folder.exists():
            shutil.rmtree(folder)
    else:  # stored under another uploads_dir: remove only the file itself
        path.unlink(missing_ok=True)


def _watched_root(settings: Settings, path: Path) -> Path | None:
    for root in settings.watch_roots:
        for base in {root.path, root.path.resolve()}:
            if path.is_relative_to(base):
                return base
    return None
