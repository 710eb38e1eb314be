"""The access model under attack (issue 13, items 1, 2 and 5): the real app on the real PostgreSQL
with a real (embedded) Redis as the upload queue, several users, each trying to reach what is not
theirs. Collections exist only when created explicitly; nobody takes a name first, a race for a
new name has one winner, and a collection one cannot read answers exactly like one that does not
exist."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from api.store import accounts
from core.embedded import EmbeddedRedis
from core.settings import get_settings
from retrieval import index
from tests.factories import HashEmbedder, make_document

EMB = HashEmbedder()
SECRET = "Household alarm code Quebec-5521 is in the hall cupboard."
MARKER = "Quebec-5521"


class As:
    """One TestClient speaking as one user."""

    def __init__(self, client: TestClient, token: str) -> None:
        self.client, self.auth = client, {"Authorization": f"Bearer {token}"}

    def get(self, url: str, **kw: Any) -> Any:
        return self.client.get(url, headers=self.auth, **kw)

    def post(self, url: str, **kw: Any) -> Any:
        return self.client.post(url, headers=self.auth, **kw)

    def patch(self, url: str, **kw: Any) -> Any:
        return self.client.patch(url, headers=self.auth, **kw)

    def upload(self, collection: str | None, content: bytes = b"notes", name: str = "n.txt") -> Any:
        data = {"collection": collection} if collection is not None else {}
        return self.post("/v1/files", files={"file": (name, content, "text/plain")}, data=data)


Users = Callable[..., dict[str, As]]


@pytest.fixture
def app(
    db: psycopg.Connection, pg_url: str, broker: EmbeddedRedis, tmp_path: Path
) -> Iterator[Users]:
    """`app(**settings)` starts the app (a fresh install: no collection rows yet, a watched
    root `family` that is still empty) and returns one client per user: root (admin), ann, bob,
    mallory. Users are created before the app starts, as `hearth user create` would."""
    stack: list[TestClient] = []

    def start(**extra: Any) -> dict[str, As]:
        tokens = {}
        for name, role in (
            ("root", "admin"),
            ("ann", "user"),
            ("bob", "user"),
            ("mallory", "user"),
        ):
            user = accounts.ensure_user(db, name, role)
            tokens[name] = accounts.issue_token(db, user, "test")
        db.commit()
        (tmp_path / "docs").mkdir(exist_ok=True)
        (tmp_path / "family").mkdir(exist_ok=True)
        s = get_settings(
            database_url=pg_url,
            redis_url=broker.url,
            hearth_data_dir=tmp_path / "data",
            hearth_watch_dir=f"{tmp_path / 'docs'},{tmp_path / 'family'}=family",
            llm_base_url="http://127.0.0.1:9/v1",
            rate_limit_rps=0,
            **extra,
        )
        client = TestClient(create_app(s, embedder=EMB))
        client.__enter__()
        stack.append(client)
        return {name: As(client, token) for name, token in tokens.items()}

    yield start
    for client in stack:
        client.__exit__(None, None, None)


def owner_of(db: psycopg.Connection, collection: str) -> tuple[bool, str | None]:
    """(exists, owner name) of a collection row."""
    row = db.execute(
        "SELECT u.name FROM collections c LEFT JOIN users u ON u.id = c.owner_id WHERE c.name = %s",
        (collection,),
    ).fetchone()
    db.commit()
    return (row is not None, row[0] if row else None)


def index_secret(db: psycopg.Connection, collection: str, path: str) -> int:
    """What the folder worker does when a file lands in a watched root."""
    doc = make_document(path, [SECRET], title="alarm")
    doc.collection = collection
    doc_id = index.replace_chunks(db, doc, EMB.embed([c.embed_text for c in doc.chunks]))
    db.commit()
    return doc_id


def sees_secret(c: As, doc_id: int) -> bool:
    listed = c.get("/v1/files").json()["data"]
    retrieved = c.get(f"/v1/files/file-{doc_id}")
    found = c.post("/v1/search", json={"query": "alarm code hall cupboard", "k": 10})
    return (
        any(f["id"] == f"file-{doc_id}" for f in listed)
        or retrieved.status_code != 404
        or MARKER in found.text
    )


# --- 1. squatting ------------------------------------------------------------------------


@pytest.mark.parametrize("collection", ["default", "family"])
def test_nobody_squats_the_household_collections_on_a_fresh_install(
    app: Users, db: psycopg.Connection, collection: str
) -> None:
    """Before: mallory's upload to `default` (or the empty watched root `family`) answered 200
    and made her its owner, so she read what the watcher indexed there later."""
    users = app()
    assert owner_of(db, collection) == (True, None)  # created before the first request
    r = users["mallory"].upload(collection)
    assert r.status_code == 404, r.text
    assert r.json()["error"]["code"] == "collection_not_found"
    assert owner_of(db, collection) == (True, None)
    doc_id = index_secret(db, collection, f"/w/{collection}/alarm.md")
    assert not sees_secret(users["mallory"], doc_id)
    assert sees_secret(users["root"], doc_id)  # the check can see a leak
    # an admin's write (the CLI, the admin API) leaves it the admins'
    assert users["root"].upload(collection).status_code == 200
    assert owner_of(db, collection) == (True, None)


def test_a_users_personal_collection_exists_with_the_user_and_cannot_be_taken(
    app: Users, db: psycopg.Connection
) -> None:
    """Before: mallory uploaded to `user-bob` first (200), became its owner, and bob's own
    uploads (to his default collection) answered 403 from then on."""
    users = app()
    assert owner_of(db, "user-bob") == (True, "bob")
    r = users["mallory"].upload("user-bob", b"mallory's")
    assert r.status_code == 404 and r.json()["error"]["code"] == "collection_not_found"
    mine = users["bob"].upload(None, b"bob's own")
    assert mine.status_code == 200, mine.text
    assert mine.json()["collection"] == "user-bob"
    assert owner_of(db, "user-bob") == (True, "bob")
    # a user created after the app started (admin API) and one an SSO proxy vouches for
    created = users["root"].post("/v1/admin/users", json={"name": "carol"})
    assert created.status_code == 200, created.text
    assert owner_of(db, "user-carol") == (True, "carol")
    assert users["mallory"].upload("user-carol").status_code == 404


def test_a_user_first_seen_through_the_sso_proxy_gets_a_personal_collection(
    app: Users, db: psycopg.Connection
) -> None:
    users = app(trusted_proxies="testclient")
    client = users["root"].client
    before = users["mallory"].upload("user-dave")
    assert before.status_code == 404
    r = client.post(
        "/v1/files",
        headers={"X-Forwarded-User": "dave"},
        files={"file": ("d.txt", b"dave's", "text/plain")},
    )
    assert r.status_code == 200, r.text
    assert r.json()["collection"] == "user-dave"
    assert owner_of(db, "user-dave") == (True, "dave")


def test_names_a_personal_collection_would_take_are_reserved_even_when_users_create(
    app: Users, db: psycopg.Connection
) -> None:
    """With COLLECTION_CREATORS=users, a user may create shared collections, but not a name of
    the `user-` kind: the user it would name may not exist yet."""
    users = app(collection_creators="users")
    r = users["mallory"].upload("user-erin")
    assert r.status_code == 404 and r.json()["error"]["code"] == "collection_not_found"
    assert owner_of(db, "user-erin") == (False, None)
    users["root"].post("/v1/admin/users", json={"name": "erin"})
    assert owner_of(db, "user-erin") == (True, "erin")


def test_creating_an_existing_collection_never_changes_its_owner(
    app: Users, db: psycopg.Connection
) -> None:
    """Before: `POST /v1/admin/collections` (and `hearth collection create X --owner Y`) on an
    existing X silently handed it to Y."""
    users = app()
    root = users["root"]
    r = root.post("/v1/admin/collections", json={"name": "family", "owner": "mallory"})
    assert r.status_code == 409 and r.json()["error"]["code"] == "collection_exists"
    assert owner_of(db, "family") == (True, None)
    # the same request again on a collection as it is: no change, no error
    assert root.post("/v1/admin/collections", json={"name": "family"}).status_code == 200
    # a transfer is its own, explicit request
    r = root.patch("/v1/admin/collections/family", json={"owner": "ann"})
    assert r.status_code == 200 and r.json()["owner"] == "ann"
    assert owner_of(db, "family") == (True, "ann")
    assert root.patch("/v1/admin/collections/family", json={"owner": None}).json()["owner"] is None
    assert owner_of(db, "family") == (True, None)
    r = root.patch("/v1/admin/collections/nope", json={"owner": "ann"})
    assert r.status_code == 404
    r = root.patch("/v1/admin/collections/user-bob", json={"owner": "ann"})
    assert r.status_code == 409 and r.json()["error"]["code"] == "personal_collection"
    assert (
        users["ann"].patch("/v1/admin/collections/family", json={"owner": "ann"}).status_code == 403
    )


# --- 2. the claim race --------------------------------------------------------------------


def test_two_users_racing_for_a_new_name_have_one_winner_and_no_stray_file(
    app: Users, db: psycopg.Connection
) -> None:
    """Before: in 4 of 6 tries both uploads answered 200 and the loser's private file landed in
    the winner's collection."""
    users = app(collection_creators="users")
    ann, bob = users["ann"], users["bob"]
    for attempt in range(8):
        name = f"race-{attempt}"
        gate = threading.Barrier(2)
        answers: dict[str, Any] = {}

        def go(
            who: str, c: As, name: str, gate: threading.Barrier, answers: dict[str, Any]
        ) -> None:
            gate.wait()
            answers[who] = c.upload(name, f"{who}'s private note in {name}".encode())

        threads = [
            threading.Thread(target=go, args=(w, c, name, gate, answers))
            for w, c in (("ann", ann), ("bob", bob))
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        codes = sorted(r.status_code for r in answers.values())
        assert codes == [200, 404], (attempt, {w: r.text for w, r in answers.items()})
        winner = next(w for w, r in answers.items() if r.status_code == 200)
        loser = "bob" if winner == "ann" else "ann"
        assert owner_of(db, name) == (True, winner)
        files = db.execute(
            "SELECT count(*) FROM documents WHERE collection = %s", (name,)
        ).fetchone()
        db.commit()
        assert files is not None and files[0] == 1  # only the winner's upload
        assert answers[loser].json()["error"]["code"] == "collection_not_found"


# --- 5. the existence oracle ---------------------------------------------------------------


def _shape(r: Any, name: str) -> tuple[int, Any]:
    body = r.json()
    body["error"]["message"] = body["error"]["message"].replace(name, "NAME")
    return r.status_code, body


def test_an_unreadable_collection_answers_exactly_like_a_missing_one(
    app: Users, db: psycopg.Connection
) -> None:
    """Before: an existing unreadable collection answered 403 `collection_forbidden`, a new name
    200, so anyone could list the collection names of the household."""
    users = app()
    mallory = users["mallory"]
    unreadable = mallory.upload("user-ann")
    missing = mallory.upload("no-such-thing")
    assert _shape(unreadable, "user-ann") == _shape(missing, "no-such-thing")
    assert unreadable.status_code == 404
    assert set(unreadable.headers) == set(missing.headers)
    assert owner_of(db, "no-such-thing") == (False, None)  # and nothing was created
    # a collection she may read but not write: that she may know, and is told
    users["root"].post("/v1/admin/collections/family/grants", json={"group": "everyone"})
    r = mallory.upload("family")
    assert r.status_code == 403 and r.json()["error"]["code"] == "collection_forbidden"


def test_the_same_holds_when_users_may_create_collections(
    app: Users, db: psycopg.Connection
) -> None:
    """With COLLECTION_CREATORS=users a new name is hers (200); a taken one she cannot read
    answers as a missing name would to someone who may not create: 404, nothing more."""
    users = app(collection_creators="users")
    mallory = users["mallory"]
    assert mallory.upload("mallorys-own").status_code == 200
    assert owner_of(db, "mallorys-own") == (True, "mallory")
    taken = mallory.upload("user-ann")
    assert taken.status_code == 404 and taken.json()["error"]["code"] == "collection_not_found"
    assert owner_of(db, "user-ann") == (True, "ann")


def test_a_worker_write_to_an_unknown_collection_creates_no_row_for_an_upload(
    app: Users, db: psycopg.Connection
) -> None:
    """Collection rows come from explicit creation and trusted configuration only: a worker
    indexing an upload never creates its collection (that upload could not have been accepted);
    a watched root's or the command line's file may (ownerless: the admins')."""
    app()
    doc = make_document("/u/x.md", ["upload text"])
    doc.collection, doc.source = "ghost", "upload"
    with pytest.raises(psycopg.errors.ForeignKeyViolation):
        index.replace_chunks(db, doc, EMB.embed([c.embed_text for c in doc.chunks]))
    db.rollback()
    assert owner_of(db, "ghost") == (False, None)
    doc.source = "cli"
    index.replace_chunks(db, doc, EMB.embed([c.embed_text for c in doc.chunks]))
    db.commit()
    assert owner_of(db, "ghost") == (True, None)
