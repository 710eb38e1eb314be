"""End to end: files uploaded through /v1/files are indexed by the stack's real worker, found by
search, downloaded, and deleted again; watched files cannot be deleted through the API.

Shares the session stack with test_stack.py, so it leaves no documents behind (that module counts
them)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from .stack import Stack

pytestmark = pytest.mark.slow

GREENHOUSE_MD = b"""# Greenhouse

## Irrigation

The greenhouse drip irrigation runs at 06:40 every morning from the rain barrel.
The barrel holds 310 litres and is topped up by the gutter of the shed.
"""


@pytest.fixture(scope="module")
def api(stack: Stack) -> Iterator[httpx.Client]:
    """An authenticated client; at the end, every document this module made is purged."""
    headers = {"Authorization": f"Bearer {stack.token}"}
    before = [i for (i,) in stack.query("SELECT id FROM documents")]
    with httpx.Client(base_url=stack.api + "/v1", headers=headers, timeout=120) as client:
        yield client
    stack.query("DELETE FROM documents WHERE id <> ALL(%s) RETURNING id", before)


def all_files(client: httpx.Client) -> list[dict[str, Any]]:
    r = client.get("/files", params={"limit": 1000})
    assert r.status_code == 200, r.text
    return list(r.json()["data"])


def wait_for(client: httpx.Client, file_id: str, timeout_s: float = 300) -> dict[str, Any]:
    """Poll the file until ingestion settles."""
    deadline = time.monotonic() + timeout_s
    while True:
        body = client.get(f"/files/{file_id}").json()
        # OpenAI's settled statuses, which the SDK's files.wait_for_processing polls for too
        if body["status"] in ("processed", "error") or time.monotonic() > deadline:
            return dict(body)
        time.sleep(0.5)


def test_upload_index_search_download_delete(api: httpx.Client, stack: Stack) -> None:
    r = api.post(
        "/files",
        files={"file": ("greenhouse.md", GREENHOUSE_MD, "text/markdown")},
        data={"purpose": "assistants"},
    )
    assert r.status_code == 200, r.text
    file_id = r.json()["id"]
    assert (r.json()["status"], r.json()["index_status"]) == ("uploaded", "queued")
    assert r.json()["filename"] == "greenhouse.md"

    done = wait_for(api, file_id)
    assert (done["status"], done["index_status"]) == ("processed", "indexed"), done
    assert done["chunk_count"] >= 1 and done["bytes"] == len(GREENHOUSE_MD)
    assert done["collection"] == "default" and done["source"] == "upload"

    found = stack.hearth("search", "greenhouse drip irrigation rain barrel", "-k", "3")
    assert found.returncode == 0, found.stderr
    assert "greenhouse.md" in found.stdout and "06:40" in found.stdout

    listed = stack.hearth("ls", "--json")
    assert listed.returncode == 0, listed.stderr
    row = next(d for d in json.loads(listed.stdout) if d["id"] == file_id)
    assert row["status"] == "indexed" and row["path"].endswith("/greenhouse.md")

    content = api.get(f"/files/{file_id}/content")
    assert content.status_code == 200 and content.content == GREENHOUSE_MD
    assert content.headers["content-type"].startswith("text/markdown")

    gone = api.delete(f"/files/{file_id}")
    assert gone.json() == {"id": file_id, "object": "file", "deleted": True}
    assert api.get(f"/files/{file_id}").status_code == 404
    assert file_id not in {f["id"] for f in all_files(api)}
    assert not Path(row["path"]).exists()
    again = stack.hearth("search", "greenhouse drip irrigation rain barrel", "-k", "10")
    assert again.returncode == 0, again.stderr
    assert "greenhouse.md" not in again.stdout


def test_traversal_name_is_stored_inside_uploads(api: httpx.Client, stack: Stack) -> None:
    r = api.post("/files", files={"file": ("../../../../tmp/escape.md", b"# Escape\n\nNo way.\n")})
    assert r.status_code == 200, r.text
    assert r.json()["filename"] == "escape.md"
    stored = list((stack.data_dir / "uploads").rglob("escape.md"))
    assert len(stored) == 1
    assert api.delete(f"/files/{r.json()['id']}").status_code == 200
    assert not stored[0].exists()


def test_auth_and_unknown_ids(api: httpx.Client, stack: Stack) -> None:
    anon = httpx.get(stack.api + "/v1/files", timeout=30)
    assert anon.status_code == 401 and anon.json()["error"]["type"] == "authentication_error"
    for path in ("/files/file-987654", "/files/nonsense", "/files/file-987654/content"):
        r = api.get(path)
        assert r.status_code == 404 and r.json()["error"]["type"] == "not_found_error"


def test_a_watched_file_cannot_be_deleted_through_the_api(api: httpx.Client, stack: Stack) -> None:
    stack.watch_dir.mkdir(parents=True, exist_ok=True)
    path = stack.watch_dir / "shed-notes.md"
    path.write_text("# Shed\n\nThe shed key hangs on the hook behind the door.\n")
    deadline = time.monotonic() + 300
    while not (mine := [f for f in all_files(api) if f["filename"] == "shed-notes.md"]):
        assert time.monotonic() < deadline, "the watcher never picked up shed-notes.md"
        time.sleep(0.5)
    file_id = mine[0]["id"]
    assert wait_for(api, file_id)["index_status"] == "indexed"

    r = api.delete(f"/files/{file_id}")
    assert r.status_code == 409, r.text
    assert "watched folder" in r.json()["error"]["message"]
    assert api.get(f"/files/{file_id}").json()["index_status"] == "indexed"

    path.unlink()  # the way to delete it: the watcher drops it from the index
    deadline = time.monotonic() + 120
    while api.get(f"/files/{file_id}").status_code != 404:
        assert time.monotonic() < deadline, "deleting from the watched folder did not drop it"
        time.sleep(0.5)
