"""api.stored_file: a document's file is served from the descriptor opened through no symlink,
with what FileResponse gives (length, ranges, HEAD), and the descriptor is closed afterwards."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from api.stored_file import OpenFileResponse, folder_of, open_stored
from core.settings import Settings, get_settings


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return get_settings(hearth_watch_dir=f"{tmp_path / 'w'},{tmp_path / 'family'}=family")


@pytest.fixture
def client(tmp_path: Path, settings: Settings) -> Iterator[TestClient]:
    app = FastAPI()

    @app.api_route("/f/{name}", methods=["GET", "HEAD"])
    def serve(name: str) -> OpenFileResponse:
        fd = open_stored(settings, tmp_path / "w" / name, "watch")
        assert fd is not None
        return OpenFileResponse(fd, media_type="text/plain", filename=name)

    with TestClient(app) as c:
        yield c


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_the_open_file_is_served_whole_in_ranges_and_by_head(
    tmp_path: Path, client: TestClient
) -> None:
    (tmp_path / "w").mkdir()
    data = bytes(range(256)) * 40
    (tmp_path / "w" / "a.bin").write_bytes(data)
    before = open_fds()
    r = client.get("/f/a.bin")
    assert r.status_code == 200 and r.content == data
    assert r.headers["content-length"] == str(len(data))
    assert r.headers["content-disposition"] == 'attachment; filename="a.bin"'
    r = client.get("/f/a.bin", headers={"Range": "bytes=100-199"})
    assert r.status_code == 206 and r.content == data[100:200]
    r = client.head("/f/a.bin")
    assert r.status_code == 200 and r.content == b""
    assert open_fds() == before  # every descriptor was closed


def test_the_folder_a_document_is_read_from(tmp_path: Path, settings: Settings) -> None:
    w, family = (tmp_path / "w").resolve(), (tmp_path / "family").resolve()
    assert folder_of(settings, w / "a" / "b.md", "watch") == w
    assert folder_of(settings, family / "c.md", "watch") == family
    uploads = settings.uploads_dir.resolve()
    assert folder_of(settings, uploads / "user-ann" / "1" / "x.md", "upload") == uploads
    # an upload's path outside the uploads folder is not served from anywhere else
    assert folder_of(settings, w / "x.md", "upload") == uploads
    assert open_stored(settings, w / "x.md", "upload") is None
    assert folder_of(settings, tmp_path / "elsewhere" / "d.md", "cli") == tmp_path / "elsewhere"
