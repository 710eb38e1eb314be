"""The passage page, where a citation leads a browser (api/routes/passages.py), on the real app and
a real PostgreSQL: the owner sees the passage marked within its document with a display path and
a download that works with the session cookie; anyone else gets the very 404 a missing passage
gets; signed out, the page is the sign-in; no byte of the page data carries a server path; and
the chat's citation URLs in every shape lead to it (CITATION_LINK=file: to the download)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from api.store import accounts
from core.settings import get_settings
from retrieval import index
from tests.api.test_chat_api import sse_events
from tests.conftest import free_port
from tests.factories import HashEmbedder, make_document
from tests.mock_llm import MockLLM, serve

UI = {"X-Hearth-UI": "1"}
EMB = HashEmbedder()
TEXTS = [
    "Alarm notes, kept by Ann.",
    "The alarm panel is behind the coat rack in the hall.",
    "The household alarm code is Quebec-5521; change it every spring.",
    "The installer's number is on the panel's inside cover.",
    "Batteries of the door sensors last about two years.",
]


@dataclass
class World:
    client: TestClient
    tokens: dict[str, str]
    chunk_ids: list[int]  # of ann's document, in order
    doc_id: int
    root: Path  # the watched folder
    db: psycopg.Connection

    def as_(self, name: str | None) -> TestClient:
        """The client signed in (by session cookie, as the page is) as `name`; None: signed
        out."""
        self.client.cookies.clear()
        if name is not None:
            r = self.client.post("/ui/session", json={"token": self.tokens[name]}, headers=UI)
            assert r.status_code == 200, r.text
        return self.client

    def context(self, chunk: int | str, name: str | None, **params: Any) -> httpx.Response:
        return self.as_(name).get(f"/ui/passages/{chunk}/context", headers=UI, params=params)


def index_doc(db: psycopg.Connection, path: Path, texts: list[str], collection: str) -> int:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n\n".join(texts))
    doc = make_document(str(path), texts, title="Alarm notes")
    doc.collection = collection
    doc_id = index.replace_chunks(db, doc, EMB.embed([c.embed_text for c in doc.chunks]))
    db.commit()
    return doc_id


def chunk_ids(db: psycopg.Connection, doc_id: int) -> list[int]:
    rows = db.execute(
        "SELECT id FROM chunks WHERE document_id = %s ORDER BY ordinal", (doc_id,)
    ).fetchall()
    db.commit()
    return [r[0] for r in rows]


@pytest.fixture
def world(db: psycopg.Connection, pg_url: str, tmp_path: Path) -> Iterator[World]:
    tokens = {}
    for name in ("ann", "bob"):
        tokens[name] = accounts.issue_token(db, accounts.ensure_user(db, name, "user"), "t")
    db.commit()
    root = tmp_path / "watched"
    doc_id = index_doc(db, root / "house" / "alarm.md", TEXTS, "user-ann")
    settings = get_settings(
        database_url=pg_url,
        hearth_data_dir=tmp_path / "data",
        hearth_watch_dir=str(root),
        llm_base_url=f"http://127.0.0.1:{free_port()}/v1",  # nobody listens
        rate_limit_rps=0,
    )
    with TestClient(create_app(settings, embedder=EMB)) as client:
        yield World(client, tokens, chunk_ids(db, doc_id), doc_id, root, db)


def test_the_owner_sees_the_passage_marked_among_its_neighbours(world: World) -> None:
    cited = world.chunk_ids[2]
    r = world.context(cited, "ann")
    assert r.status_code == 200, r.text
    data = r.json()
    assert data["id"] == cited
    assert data["text"] == TEXTS[2]
    assert [p["text"] for p in data["context"]] == TEXTS  # two neighbours on each side
    assert [p["highlight"] for p in data["context"]] == [False, False, True, False, False]
    doc = data["document"]
    assert doc["path"] == "house/alarm.md" and doc["title"] == "Alarm notes"
    assert doc["id"] == f"file-{world.doc_id}" and doc["collection"] == "user-ann"
    assert (data["more_before"], data["more_after"]) == (False, False)
    # the download link works with the same session cookie (a browser's click), no token
    got = world.client.get(doc["download_url"])
    assert got.status_code == 200 and got.text == "\n\n".join(TEXTS)


def test_a_merged_passage_is_marked_whole_and_a_bad_span_changes_nothing(world: World) -> None:
    ids = world.chunk_ids
    doc = make_document("x", TEXTS)
    c2, c3 = doc.chunks[2], doc.chunks[3]
    merged = world.context(ids[2], "ann", span=f"{c2.char_start}-{c3.char_end}").json()
    assert [p["highlight"] for p in merged["context"]] == [False, False, True, True, False]
    assert merged["text"] == TEXTS[2] + "\n\n" + TEXTS[3]
    # a span that leaves out the cited chunk, one reaching over the whole document, nonsense
    whole = f"0-{doc.chunks[-1].char_end}"
    for span in (f"{c3.char_start}-{c3.char_end}", "junk", "9-3", "1-99999999999"):
        data = world.context(ids[2], "ann", span=span).json()
        assert [p["highlight"] for p in data["context"]] == [False, False, True, False, False]
    # a merged passage is at most three chunks, the cited one among them
    data = world.context(ids[2], "ann", span=whole).json()
    assert sum(p["highlight"] for p in data["context"]) == 3
    assert data["context"][2]["highlight"]


def _answer(r: httpx.Response) -> tuple[int, bytes, dict[str, str]]:
    headers = {k: v for k, v in r.headers.items() if k.lower() != "x-request-id"}
    return r.status_code, r.content, headers


def test_someone_elses_passage_is_the_same_404_as_a_missing_one(world: World) -> None:
    """Before (no passage page): every id was the router's 404, the owner's too."""
    cited = world.chunk_ids[2]
    assert world.context(cited, "ann").status_code == 200
    bobs = world.context(cited, "bob")
    assert bobs.status_code == 404
    assert bobs.json()["error"]["code"] == "not_found"
    assert "Quebec" not in bobs.text and "alarm" not in bobs.text.lower()
    never = world.context(max(world.chunk_ids) + 1000, "bob")
    assert never.status_code == 404
    # the same headers but the length (the message names the id asked for)
    same = {k: v for k, v in _answer(bobs)[2].items() if k != "content-length"}
    assert same == {k: v for k, v in _answer(never)[2].items() if k != "content-length"}
    assert bobs.json()["error"]["message"] == f"No such passage: {cited}"
    # the same id once it is gone: byte for byte what bob was told while it existed
    world.db.execute("DELETE FROM documents WHERE id = %s", (world.doc_id,))
    world.db.commit()
    assert _answer(world.context(cited, "ann")) == _answer(bobs)
    assert _answer(world.context(cited, "bob")) == _answer(bobs)
    # and a deleted document's passages are gone for its owner too, as in search
    other = index_doc(world.db, world.root / "b.md", TEXTS[:2], "user-ann")
    world.db.execute("UPDATE documents SET status = 'deleted' WHERE id = %s", (other,))
    world.db.commit()
    assert world.context(chunk_ids(world.db, other)[0], "ann").status_code == 404


def test_signed_out_the_page_is_the_sign_in_and_the_data_is_refused(world: World) -> None:
    cited = world.chunk_ids[2]
    client = world.as_(None)
    page = client.get(f"/ui/passages/{cited}")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert 'id="signin"' in page.text and "/ui/static/signin.js" in page.text
    assert "Quebec" not in page.text
    assert "script-src 'self'" in page.headers["content-security-policy"]
    # the page is one and the same for every id: it tells nothing about any passage
    assert client.get(f"/ui/passages/{max(world.chunk_ids) + 1000}").content == page.content
    r = world.context(cited, None)
    assert r.status_code == 401 and r.json()["error"]["code"] == "missing_api_key"
    # signed in, but a request that is not the page's own (no UI header) is refused
    world.as_("ann")
    assert client.get(f"/ui/passages/{cited}/context").status_code == 403
    # ids that are no chunk id: a 404, never a 500
    for bad in ("abc", "99999999999999999999", "-1", "1.5", "9223372036854775808"):
        assert client.get(f"/ui/passages/{bad}").status_code == 404, bad
        r = client.get(f"/ui/passages/{bad}/context", headers=UI)
        assert r.status_code == 404 and r.json()["error"]["code"] == "not_found", bad


def test_no_byte_of_the_page_data_is_a_server_path(world: World, tmp_path: Path) -> None:
    uploads = tmp_path / "data" / "uploads" / "user-ann" / "x1" / "scan notes.md"
    up = index_doc(world.db, uploads, TEXTS[:3], "user-ann")
    for chunk in world.chunk_ids[:2] + chunk_ids(world.db, up)[:2]:
        r = world.context(chunk, "ann")
        assert r.status_code == 200
        for secret in (str(tmp_path), str(tmp_path.resolve()), "/watched/", "/uploads/"):
            assert secret.encode() not in r.content, secret
    assert world.context(chunk_ids(world.db, up)[0], "ann").json()["document"]["path"] == (
        "scan notes.md"
    )


ANSWER = "The household alarm code is Quebec-5521 [1]."


@pytest.mark.parametrize("link", ["ui", "file"])
def test_citation_urls_lead_to_the_passage_page_in_every_shape(
    db: psycopg.Connection, pg_url: str, tmp_path: Path, link: str
) -> None:
    """Annotations and the `citations` list, Open WebUI's source events (streamed) and its
    `sources` (not streamed): each URL names its own passage and, by default, opens the page
    that shows it; CITATION_LINK=file keeps the download."""
    token = accounts.issue_token(db, accounts.ensure_user(db, "ann", "user"), "t")
    db.commit()
    doc_id = index_doc(db, tmp_path / "w" / "alarm.md", TEXTS, "user-ann")
    ids = chunk_ids(db, doc_id)
    with serve(MockLLM()) as mock:
        mock.reply = lambda messages: ANSWER
        s = get_settings(
            database_url=pg_url,
            hearth_data_dir=tmp_path / "data",
            hearth_watch_dir=str(tmp_path / "w"),
            llm_base_url=mock.url,
            llm_model="mock",
            relevance_threshold=0,
            rate_limit_rps=0,
            public_url="https://hearth.example/",
            **({} if link == "ui" else {"citation_link": "file"}),
        )
        auth = {"Authorization": f"Bearer {token}"}
        with TestClient(create_app(s, embedder=EMB), headers=auth) as c:
            ask = {"model": "hearth", "messages": [{"role": "user", "content": "alarm code?"}]}
            plain = c.post(
                "/v1/chat/completions", json=ask, headers={"X-Hearth-Citations": "annotations"}
            ).json()
            streamed = c.post(
                "/v1/chat/completions",
                json={**ask, "stream": True},
                headers={"X-Hearth-Citations": "openwebui"},
            )
            owui = c.post(
                "/v1/chat/completions", json=ask, headers={"X-Hearth-Citations": "openwebui"}
            ).json()
    urls = {
        "annotations": [
            a["url_citation"]["url"] for a in plain["choices"][0]["message"]["annotations"]
        ],
        "citations": plain["citations"],
        "events": [
            e["event"]["data"]["source"]["id"]
            for e in sse_events(streamed.text)[:-1]
            if "event" in e
        ],
        "openwebui sources": [src["source"]["id"] for src in owui["sources"]],
    }
    for shape, got in urls.items():
        assert got, shape
        assert len(set(got)) == len(got), shape  # one URL per passage
        for url in got:
            if link == "ui":
                assert url.startswith("https://hearth.example/ui/passages/"), (shape, url)
                chunk = int(url.rsplit("/", 1)[1].split("?")[0])
                assert chunk in ids
            else:
                assert url.startswith(f"https://hearth.example/v1/files/file-{doc_id}/content#")
