"""/v1/files on the real app: a real PostgreSQL, a real (embedded) Redis as the Celery broker, no
worker. Uploads are checked on disk, in the database and in the queue; plus the filename sanitiser
and `hearth ls`."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
import redis
from fastapi.testclient import TestClient

from api.app import create_app
from api.store import accounts
from api.uploads import MAX_NAME_BYTES, sanitize_filename
from cli.main import main
from core.embedded import EmbeddedRedis
from core.settings import get_settings
from retrieval import documents, index
from tests.factories import HashEmbedder, make_document

LIMIT = 4096  # bytes: MAX_FILE_MB for these tests
NOTES = b"# Boiler\n\nThe boiler was serviced in March 2024.\n"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("notes.md", "notes.md"),
        ("../../etc/passwd", "passwd"),
        ("/etc/passwd", "passwd"),
        ("C:\\Users\\me\\report.pdf", "report.pdf"),
        ("..\\..\\boot.ini", "boot.ini"),
        ("\\\\server\\share\\plan.docx", "plan.docx"),
        ("a\x00b.txt", "ab.txt"),
        ("line\nbreak\r\t.md", "linebreak.md"),
        ("evil\u202egpj.exe", "evilgpj.exe"),  # right-to-left override
        (".bashrc", "bashrc"),
        ("..hidden.md", "hidden.md"),
        ("notes.md. . ", "notes.md"),
        ('a<b>:c|d?e*"f.md', "a_b__c_d_e__f.md"),
        ("  many   spaces .md", "many spaces .md"),
        ("Prüfbericht Küche – 2024.pdf", "Prüfbericht Küche – 2024.pdf"),
        ("日本語の文書.md", "日本語の文書.md"),
        ("Cafe\u0301.md", "Café.md"),  # NFD in, NFC out
        ("🏠 house.md", "🏠 house.md"),
        ("", "upload"),
        ("..", "upload"),
        ("...", "upload"),
        ("dir/", "upload"),
        ("\x00\x01", "upload"),
    ],
)
def test_sanitize_filename(raw: str, expected: str) -> None:
    assert sanitize_filename(raw) == expected


@pytest.mark.parametrize(
    "raw", ["x" * 1000 + ".pdf", "ü" * 300 + ".md", "日" * 200, "a." + "b" * 400, "ü" * 99 + "é"]
)
def test_long_names_are_capped_on_a_character_boundary(raw: str) -> None:
    name = sanitize_filename(raw)
    assert 0 < len(name.encode()) <= MAX_NAME_BYTES
    assert name.encode().decode() == name
    if raw.endswith((".pdf", ".md")):
        assert name.endswith(raw[raw.rindex(".") :])


@pytest.mark.parametrize(
    "raw", ["../" * 50 + "x", "/../../..", "..\\..\\", "./.", "a/../../b", "\x00/..", "~/.ssh/id"]
)
def test_a_sanitised_name_stays_in_its_folder(raw: str, tmp_path: Path) -> None:
    name = sanitize_filename(raw)
    assert not name.startswith(".") and "/" not in name and "\\" not in name
    assert (tmp_path / name).resolve().parent == tmp_path.resolve()


# --- the app ------------------------------------------------------------------------------


def queued_tasks(client: redis.Redis, queue: str = "interactive") -> list[tuple[str, list]]:  # type: ignore[type-arg]
    """(task name, args) of the messages waiting in a Celery queue, oldest first."""
    out = []
    for raw in reversed(client.lrange(queue, 0, -1)):  # type: ignore[union-attr]
        msg = json.loads(raw)
        args, _kwargs, _embed = json.loads(base64.b64decode(msg["body"]))
        out.append((msg["headers"]["task"], args))
    return out


@pytest.fixture
def env(db: psycopg.Connection, pg_url: str, broker: EmbeddedRedis, tmp_path: Path):  # type: ignore[no-untyped-def]
    settings = get_settings(
        database_url=pg_url,
        redis_url=broker.url,
        max_file_mb=LIMIT / 2**20,
        hearth_watch_dir=str(tmp_path / "watched"),
    )
    token = accounts.issue_token(db, accounts.ensure_user(db, "ann", "admin"))
    db.commit()
    return settings, {"Authorization": f"Bearer {token}"}


@pytest.fixture
def client(env, queue: redis.Redis) -> Iterator[TestClient]:  # type: ignore[no-untyped-def]
    settings, headers = env
    with TestClient(create_app(settings, embedder=HashEmbedder()), headers=headers) as c:
        yield c


def upload(client: TestClient, name: str, content: bytes = NOTES, **fields: str):  # type: ignore[no-untyped-def]
    return client.post("/v1/files", files={"file": (name, content, "text/markdown")}, data=fields)


def stored_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file()) if root.exists() else []


def test_upload_is_stored_recorded_and_queued(client: TestClient, env, queue) -> None:  # type: ignore[no-untyped-def]
    settings, _ = env
    r = upload(client, "boiler.md", purpose="user_data")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["id"].startswith("file-") and body["object"] == "file"
    assert body["bytes"] == len(NOTES) and isinstance(body["created_at"], int)
    assert (body["filename"], body["purpose"], body["status"], body["index_status"]) == (
        "boiler.md",
        "user_data",
        "uploaded",  # OpenAI's word for it; Hearth's own is index_status
        "queued",
    )
    assert (body["collection"], body["chunk_count"], body["status_details"]) == ("default", 0, None)

    [path] = stored_files(settings.uploads_dir)
    root = settings.uploads_dir.resolve()
    assert path.read_bytes() == NOTES
    assert path.parent.parent == root / "default" and path.name == "boiler.md"
    assert queued_tasks(queue) == [("hearth.ingest_file", [str(path), "default", "upload"])]
    assert client.get(f"/v1/files/{body['id']}").json() == body


def test_collection_field_picks_the_folder(client: TestClient, env, queue) -> None:  # type: ignore[no-untyped-def]
    settings, _ = env
    body = upload(client, "recipe.md", collection="family").json()
    assert body["collection"] == "family" and body["purpose"] == "assistants"
    [path] = stored_files(settings.uploads_dir)
    assert path.parent.parent.name == "family"
    assert queued_tasks(queue)[0][1][1:] == ["family", "upload"]


@pytest.mark.parametrize("name", ["../../../evil.md", "/etc/cron.d/evil.md", "..\\..\\evil.md"])
def test_traversal_names_land_inside_uploads_dir(client: TestClient, env, name: str) -> None:  # type: ignore[no-untyped-def]
    settings, _ = env
    assert upload(client, name).json()["filename"] == "evil.md"
    data_dir = settings.hearth_data_dir
    assert [p.relative_to(data_dir).parts[0] for p in stored_files(data_dir)] == ["uploads"]


@pytest.mark.parametrize("collection", ["../x", ".hidden", "a/b", "x" * 65])
def test_bad_collection_names_are_refused(client: TestClient, env, queue, collection: str) -> None:  # type: ignore[no-untyped-def]
    settings, _ = env
    r = upload(client, "a.md", collection=collection)
    assert r.status_code == 400 and r.json()["error"]["param"] == "collection"
    assert stored_files(settings.uploads_dir) == [] and queued_tasks(queue) == []


def test_too_large_is_413_mid_stream_and_leaves_nothing(client: TestClient, env, queue) -> None:  # type: ignore[no-untyped-def]
    settings, _ = env
    r = upload(client, "big.md", b"x" * (LIMIT + 1))
    assert r.status_code == 413, r.text
    err = r.json()["error"]
    assert err["type"] == "invalid_request_error" and err["code"] == "file_too_large"
    assert "4096 bytes" in err["message"]
    assert stored_files(settings.uploads_dir) == [] and queued_tasks(queue) == []
    assert client.get("/v1/files").json()["data"] == []
    assert upload(client, "fits.md", b"x" * LIMIT).status_code == 200


def test_too_large_by_content_length_is_413_before_reading(client: TestClient, env) -> None:  # type: ignore[no-untyped-def]
    settings, _ = env
    r = upload(client, "huge.md", b"x" * (LIMIT + 1024 * 1024))
    assert r.status_code == 413
    assert stored_files(settings.uploads_dir) == []


def test_malformed_uploads_are_400(client: TestClient) -> None:
    r = client.post("/v1/files", data={"purpose": "assistants"})
    assert r.status_code == 400
    r = client.post("/v1/files", files={"purpose": (None, "x")})
    assert r.status_code == 400 and r.json()["error"]["param"] == "file"
    two = [("file", ("a.md", b"a")), ("file", ("b.md", b"b"))]
    assert client.post("/v1/files", files=two).status_code == 400
    assert client.post("/v1/files", files={"doc": ("a.md", b"a")}).status_code == 400


def test_every_route_needs_a_token(client: TestClient) -> None:
    anon = {"Authorization": ""}
    for method, url in [
        ("POST", "/v1/files"),
        ("GET", "/v1/files"),
        ("GET", "/v1/files/file-1"),
        ("GET", "/v1/files/file-1/content"),
        ("DELETE", "/v1/files/file-1"),
    ]:
        r = client.request(method, url, headers=anon)
        assert r.status_code == 401, (method, url)
        assert r.json()["error"]["type"] == "authentication_error"


@pytest.mark.parametrize("file_id", ["file-999999", "file-abc", "42", "file-", "file-1x"])
def test_unknown_or_malformed_ids_are_404(client: TestClient, file_id: str) -> None:
    for method, suffix in [("GET", ""), ("GET", "/content"), ("DELETE", "")]:
        r = client.request(method, f"/v1/files/{file_id}{suffix}")
        assert r.status_code == 404, (method, suffix)
        assert r.json()["error"]["type"] == "not_found_error"


def index_file(db: psycopg.Connection, path: Path, text: str) -> int:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    doc = make_document(str(path), [text])
    doc_id = index.replace_chunks(db, doc, HashEmbedder().embed([text]))
    db.commit()
    return doc_id


def test_list_shows_watched_and_uploaded_and_pages(client: TestClient, env, db) -> None:  # type: ignore[no-untyped-def]
    settings, _ = env
    watched = index_file(db, settings.watch_dir / "pump.md", "heat pump filter")
    ids = [
        upload(client, f"n{i}.md", collection="c2" if i else "default").json()["id"]
        for i in range(3)
    ]
    listing = client.get("/v1/files").json()
    assert listing["object"] == "list" and listing["has_more"] is False
    assert [f["id"] for f in listing["data"]] == [*reversed(ids), f"file-{watched}"]
    assert (
        listing["data"][-1]["source"] == "watch"
        and listing["data"][-1]["index_status"] == "indexed"
    )

    page = client.get("/v1/files", params={"limit": 2}).json()
    assert page["has_more"] is True and page["last_id"] == ids[1]
    rest = client.get("/v1/files", params={"limit": 2, "after": page["last_id"]}).json()
    assert [f["id"] for f in rest["data"]] == [ids[0], f"file-{watched}"]
    assert rest["has_more"] is False
    asc = client.get("/v1/files", params={"order": "asc"}).json()
    assert asc["first_id"] == f"file-{watched}"

    assert len(client.get("/v1/files", params={"collection": "c2"}).json()["data"]) == 2
    indexed = client.get("/v1/files", params={"status": "indexed"}).json()["data"]
    assert [f["id"] for f in indexed] == [f"file-{watched}"]
    assert client.get("/v1/files", params={"status": "nope"}).status_code == 400
    assert client.get("/v1/files", params={"after": "xyz"}).status_code == 400
    assert client.get("/v1/files", params={"limit": 1001}).status_code == 422


def test_content_is_the_original_bytes(client: TestClient) -> None:
    file_id = upload(client, "Küche notes.md").json()["id"]
    r = client.get(f"/v1/files/{file_id}/content")
    assert r.status_code == 200 and r.content == NOTES
    assert r.headers["content-type"].startswith("text/markdown")
    assert r.headers["content-disposition"].startswith("inline;")
    assert r.headers["x-content-type-options"] == "nosniff"
    page = client.post("/v1/files", files={"file": ("page.html", b"<script>x</script>")})
    r = client.get(f"/v1/files/{page.json()['id']}/content")
    assert r.headers["content-disposition"].startswith("attachment;")


def test_deleting_an_upload_removes_file_folder_and_entry(client: TestClient, env, queue) -> None:  # type: ignore[no-untyped-def]
    settings, _ = env
    file_id = upload(client, "temp.md").json()["id"]
    [path] = stored_files(settings.uploads_dir)
    r = client.delete(f"/v1/files/{file_id}")
    assert r.status_code == 200 and r.json() == {"id": file_id, "object": "file", "deleted": True}
    assert not path.parent.exists() and path.parent.parent.exists()
    assert client.get(f"/v1/files/{file_id}").status_code == 404
    assert client.get("/v1/files").json()["data"] == []
    assert client.delete(f"/v1/files/{file_id}").status_code == 404
    # a follow-up task makes sure a worker that was mid-way cannot bring it back
    assert [args for _, args in queued_tasks(queue)] == [[str(path), "default", "upload"]] * 2


def test_deleting_a_watched_file_is_409(client: TestClient, env, db) -> None:  # type: ignore[no-untyped-def]
    settings, _ = env
    doc_id = index_file(db, settings.watch_dir / "sub" / "pump.md", "heat pump filter")
    r = client.delete(f"/v1/files/file-{doc_id}")
    assert r.status_code == 409
    err = r.json()["error"]
    assert err["code"] == "file_in_watched_folder"
    assert "watched folder" in err["message"] and "pump.md" in err["message"]
    obj = client.get(f"/v1/files/file-{doc_id}").json()
    assert (obj["status"], obj["index_status"]) == ("processed", "indexed")


def test_deleting_a_file_indexed_from_elsewhere_keeps_it_on_disk(
    client: TestClient, db: psycopg.Connection, tmp_path: Path
) -> None:
    path = tmp_path / "elsewhere" / "manual.md"
    doc_id = index_file(db, path, "washing machine manual")
    assert client.delete(f"/v1/files/file-{doc_id}").json()["deleted"] is True
    assert path.exists()
    assert client.get(f"/v1/files/file-{doc_id}").status_code == 404


def test_unreachable_queue_is_503_and_stores_nothing(env, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    settings, headers = env
    settings = settings.model_copy(update={"redis_url": f"redis+socket://{tmp_path}/none.sock"})
    with TestClient(create_app(settings, embedder=HashEmbedder()), headers=headers) as c:
        r = upload(c, "a.md")
        assert r.status_code == 503, r.text
        assert c.get("/v1/files").json()["data"] == []
    assert stored_files(settings.uploads_dir) == []


def test_hearth_ls(env, db, capsys: pytest.CaptureFixture[str], monkeypatch) -> None:  # type: ignore[no-untyped-def]
    settings, _ = env
    monkeypatch.setenv("DATABASE_URL", settings.database_url)
    good = index_file(db, settings.watch_dir / "pump.md", "heat pump filter")
    documents.record_failure(db, "/w/scan.pdf", "needs_ocr", "no text layer")
    db.commit()

    assert main(["ls"]) == 0
    out = capsys.readouterr().out
    assert "indexed" in out and "pump.md" in out and "! no text layer" in out

    assert main(["ls", "--failed", "--json"]) == 0
    [row] = json.loads(capsys.readouterr().out)
    assert (row["path"], row["status"], row["error"]) == (
        "/w/scan.pdf",
        "needs_ocr",
        "no text layer",
    )

    assert main(["ls", "--collection", "nope", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == []
    assert main(["ls", "--json"]) == 0
    assert {r["id"] for r in json.loads(capsys.readouterr().out)} >= {f"file-{good}"}


def test_the_openai_sdk_speaks_to_it(client: TestClient, env) -> None:  # type: ignore[no-untyped-def]
    import openai

    _, headers = env
    token = headers["Authorization"].removeprefix("Bearer ")
    sdk = openai.OpenAI(base_url="http://testserver/v1", api_key=token, http_client=client)
    created = sdk.files.create(file=("boiler.md", NOTES), purpose="assistants")
    assert created.id.startswith("file-") and created.filename == "boiler.md"
    assert sdk.files.retrieve(created.id).bytes == len(NOTES)
    assert [f.id for f in sdk.files.list()] == [created.id]
    assert sdk.files.content(created.id).content == NOTES
    assert sdk.files.delete(created.id).deleted is True
    with pytest.raises(openai.NotFoundError):
        sdk.files.retrieve(created.id)
