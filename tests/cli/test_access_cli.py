"""`hearth token`, `hearth user`, `hearth collection` and `hearth logs` as real processes against
the real database: a token is shown once and stored as its SHA-256 only, its expiry is where
`--expires` puts it, revoking it (or disabling its user) fails the next authentication, and grants
made on the command line are what the API enforces."""

from __future__ import annotations

import asyncio
import hashlib
import json
import subprocess
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest

from api.store import access, accounts
from cli import commands
from cli.main import parse_args
from core.settings import get_settings
from tests.conftest import run_hearth

Hearth = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture
def hearth(
    db: psycopg.Connection, pg_url: str, tmp_path: Path, env_without_hearth: dict[str, str]
) -> Hearth:
    """`hearth ARGS...` in a child process on the test database (emptied by `db`)."""
    db.execute("TRUNCATE collections, collection_grants, user_groups, request_log CASCADE")
    db.commit()
    env = {**env_without_hearth, "DATABASE_URL": pg_url, "HEARTH_DATA_DIR": str(tmp_path / "d")}

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return run_hearth(env, *args)

    return run


def authenticate(pg_url: str, token: str) -> accounts.User | None:
    """What the API's auth dependency decides for this bearer token, now."""

    async def check() -> accounts.User | None:
        async with await psycopg.AsyncConnection.connect(pg_url, autocommit=True) as conn:
            return await accounts.authenticate(conn, token)

    return asyncio.run(check())


def readable(pg_url: str, name: str) -> tuple[str, ...]:
    """The collections the API lets user `name` read (the same SQL that filters retrieval)."""

    async def check() -> tuple[str, ...]:
        async with await psycopg.AsyncConnection.connect(pg_url, autocommit=True) as conn:
            cur = await conn.execute("SELECT id, name, role FROM users WHERE name = %s", (name,))
            row = await cur.fetchone()
            assert row is not None
            return await access.readable(conn, accounts.User(*row))

    return asyncio.run(check())


def ok(out: subprocess.CompletedProcess[str]) -> str:
    assert out.returncode == 0, out.stdout + out.stderr
    return out.stdout


def test_token_create_list_revoke(hearth: Hearth, db: psycopg.Connection, pg_url: str) -> None:
    before = datetime.now(UTC)
    out = hearth("token", "create", "--user", "ann", "--description", "phone", "--expires", "90d")
    after = datetime.now(UTC)
    token = ok(out).strip()
    assert token.startswith("hearth_") and "\n" not in token
    assert (out.stdout + out.stderr).count(token) == 1  # printed once, and only the token
    assert "shown once" in out.stderr

    rows = db.execute(
        "SELECT t.id, t.token_hash, t.prefix, t.description, t.expires_at, t.revoked_at,"
        " u.name, u.role FROM tokens t JOIN users u ON u.id = t.user_id"
    ).fetchall()
    assert len(rows) == 1
    token_id, digest, prefix, description, expires_at, revoked_at, user, role = rows[0]
    assert digest == hashlib.sha256(token.encode()).hexdigest()
    secret = token.removeprefix("hearth_")
    assert secret not in str(rows) and secret[:16] not in str(rows)  # nothing but the digest
    assert (description, revoked_at, user, role) == ("phone", None, "ann", "user")
    assert before + timedelta(days=90) <= expires_at <= after + timedelta(days=90)
    assert token.startswith(prefix)

    me = authenticate(pg_url, token)
    assert me is not None and (me.name, me.token_id) == ("ann", token_id)

    listed = ok(hearth("token", "list"))
    line = next(x for x in listed.splitlines() if x.split()[0] == str(token_id))
    assert "ann" in line and "active" in line and "phone" in line and prefix in line
    assert "last used 20" in line  # the authentication above is recorded
    assert token not in listed and secret[len(prefix) :] not in listed

    assert ok(hearth("token", "revoke", str(token_id))).strip() == "revoked"
    assert authenticate(pg_url, token) is None  # the very next request
    assert "revoked" in ok(hearth("token", "list"))
    again = hearth("token", "revoke", str(token_id))
    assert again.returncode == 1 and "no active token" in again.stdout


def test_a_token_without_expires_never_expires_and_an_old_one_is_listed_expired(
    hearth: Hearth, db: psycopg.Connection, pg_url: str
) -> None:
    token = ok(hearth("token", "create", "--user", "bob", "--role", "admin")).strip()
    row = db.execute("SELECT expires_at FROM tokens").fetchone()
    assert row == (None,)
    me = authenticate(pg_url, token)
    assert me is not None and me.role == "admin"
    db.execute("UPDATE tokens SET expires_at = now() - interval '1 minute'")
    db.commit()
    assert authenticate(pg_url, token) is None
    assert " expired " in ok(hearth("token", "list"))


BAD_EXPIRES = ["90", "d", "90days", "-5d", "1.5d", "0d", "²d", "99999999d", "90 d", "90D"]


@pytest.mark.parametrize("value", BAD_EXPIRES)
def test_bad_expires_is_refused_before_the_database_is_opened(
    value: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def no_database(*args: object, **kwargs: object) -> None:
        raise AssertionError("the database was opened for a refused --expires")

    monkeypatch.setattr(commands, "connect", no_database)
    argv = ["token", "create", "--user", "ann", "--expires", value]
    with pytest.raises(SystemExit) as exc:
        commands.run_token_create(parse_args(argv), get_settings())
    # ours names the forms a lifetime takes; argparse's ("-5d" looks like an option) exits 2
    said = str(exc.value) if exc.value.code != 2 else capsys.readouterr().err
    assert "--expires" in said and (
        "must look like" in said
        or "must be more" in said
        or (exc.value.code == 2 and "expected one argument" in said)
    )


@pytest.mark.parametrize("value", ["90", "99999999d"])  # not a lifetime; too long a one
def test_bad_expires_is_a_clear_error_and_issues_nothing(
    hearth: Hearth, db: psycopg.Connection, value: str
) -> None:
    out = hearth("token", "create", "--user", "ann", "--expires", value)
    assert out.returncode != 0
    assert "--expires" in out.stderr and "Traceback" not in out.stderr
    assert "hearth_" not in out.stdout
    assert db.execute("SELECT count(*) FROM tokens").fetchone() == (0,)


def test_users_groups_and_disabling(hearth: Hearth, db: psycopg.Connection, pg_url: str) -> None:
    assert "user ann (user)" in ok(hearth("user", "create", "ann", "--group", "family"))
    assert "user root (admin)" in ok(hearth("user", "create", "root", "--role", "admin"))
    assert ok(hearth("user", "join", "ann", "friends")).strip() == "ann joined friends"
    assert ok(hearth("user", "leave", "ann", "family")).strip() == "ann left family"
    assert ok(hearth("user", "leave", "ann", "family")).strip() == "ann was not in family"
    token = accounts.issue_token(db, accounts.ensure_user(db, "ann"), "t")
    db.commit()
    lines = {x.split()[1]: x.split() for x in ok(hearth("user", "list")).splitlines()}
    assert lines["ann"][2:] == ["user", "active", "groups", "friends"]
    assert lines["root"][2:] == ["admin", "active", "groups", "-"]

    assert ok(hearth("user", "disable", "ann")).strip() == "ann disabled"
    assert authenticate(pg_url, token) is None  # a disabled user's tokens stop working at once
    assert "disabled" in ok(hearth("user", "list"))
    assert ok(hearth("user", "enable", "ann")).strip() == "ann enabled"
    assert authenticate(pg_url, token) is not None
    for args in (("user", "disable", "nobody"), ("user", "join", "nobody", "family")):
        out = hearth(*args)
        assert out.returncode == 1 and "no user named 'nobody'" in out.stdout


def test_collection_owners_and_grants_are_what_the_api_enforces(
    hearth: Hearth, db: psycopg.Connection, pg_url: str
) -> None:
    for name in ("ann", "bob"):
        accounts.ensure_user(db, name)
    access.add_to_group(db, "bob", "family")
    db.commit()
    assert "owned by ann" in ok(hearth("collection", "create", "ann-notes", "--owner", "ann"))
    assert "ann-notes" in readable(pg_url, "ann") and "ann-notes" not in readable(pg_url, "bob")

    assert "user bob may read ann-notes" in ok(
        hearth("collection", "grant", "ann-notes", "--user", "bob")
    )
    assert "ann-notes" in readable(pg_url, "bob")
    line = next(x for x in ok(hearth("collection", "list")).splitlines() if "ann-notes" in x)
    assert "owner ann" in line and "readers bob" in line
    assert "may no longer read" in ok(hearth("collection", "revoke", "ann-notes", "--user", "bob"))
    assert "ann-notes" not in readable(pg_url, "bob")
    assert "had no grant" in ok(hearth("collection", "revoke", "ann-notes", "--user", "bob"))

    ok(hearth("collection", "grant", "ann-notes", "--group", "family"))
    assert "ann-notes" in readable(pg_url, "bob")
    ok(hearth("collection", "revoke", "ann-notes", "--group", "family"))
    assert "ann-notes" not in readable(pg_url, "bob")

    for args, error in (
        (("grant", "nope", "--user", "bob"), "no collection named 'nope'"),
        (("grant", "ann-notes", "--user", "nobody"), "no user named 'nobody'"),
        (("create", "bad name!"), "not a valid collection name"),
    ):
        out = hearth("collection", *args)
        assert out.returncode == 1 and error in out.stdout, args
    both = hearth("collection", "grant", "ann-notes", "--user", "bob", "--group", "family")
    assert both.returncode == 2 and "not allowed with" in both.stderr


def test_collections_are_created_explicitly_and_handed_over_explicitly(
    hearth: Hearth,
    db: psycopg.Connection,
    pg_url: str,
    tmp_path: Path,
    env_without_hearth: dict[str, str],
) -> None:
    """`collection create` on an existing collection never changes its owner (before: it did,
    silently); `collection owner` is the one way to hand it over. `hearth migrate` creates
    `default` and the watched roots' collections, owned by the admins."""
    env = {
        **env_without_hearth,
        "DATABASE_URL": pg_url,
        "HEARTH_DATA_DIR": str(tmp_path / "d"),
        "HEARTH_WATCH_DIR": f"{tmp_path / 'docs'},{tmp_path / 'fam'}=family",
    }
    ok(run_hearth(env, "migrate"))
    owners = dict(db.execute("SELECT name, owner_id FROM collections").fetchall())
    db.commit()
    assert owners == {"default": None, "family": None}
    assert "personal collection user-carol" in ok(hearth("user", "create", "carol"))
    accounts.ensure_user(db, "mallory")
    db.commit()
    assert "family exists, owned by admins" in ok(hearth("collection", "create", "family"))
    out = hearth("collection", "create", "family", "--owner", "mallory")
    assert out.returncode == 1
    assert "owned by the admins" in out.stdout
    assert "hearth collection owner family mallory" in out.stdout
    assert "family" not in readable(pg_url, "mallory")
    assert "now owned by carol" in ok(hearth("collection", "owner", "family", "carol"))
    assert "family" in readable(pg_url, "carol")
    assert "now owned by admins" in ok(hearth("collection", "owner", "family", "--admins"))
    assert "family" not in readable(pg_url, "carol")
    for args, error in (
        (("owner", "user-carol", "mallory"), "personal collection"),
        (("owner", "nope", "carol"), "no collection named 'nope'"),
        (("owner", "family", "nobody"), "no user named 'nobody'"),
        (("create", "user-dave"), "personal collections"),
    ):
        out = hearth("collection", *args)
        assert out.returncode == 1 and error in out.stdout, args
    line = next(x for x in ok(hearth("collection", "list")).splitlines() if "user-carol" in x)
    assert "owner carol" in line and "(personal)" in line


def test_logs_show_the_most_recent_requests(hearth: Hearth, db: psycopg.Connection) -> None:
    ann = accounts.ensure_user(db, "ann")
    for i, (route, status) in enumerate(
        (("/v1/models", 200), ("/v1/search", 200), ("/v1/chat/completions", 502))
    ):
        db.execute(
            "INSERT INTO request_log (at, user_id, method, route, model, status, latency_ms,"
            " prompt_tokens, completion_tokens) VALUES"
            " (now() - make_interval(mins => %s), %s, 'POST', %s, 'smollm2', %s, 12.5, 7, 3)",
            (10 - i, ann.id, route, status),
        )
    db.commit()
    lines = ok(hearth("logs", "-n", "2")).splitlines()
    assert len(lines) == 2  # the two most recent, oldest first
    assert "/v1/search" in lines[0] and "/v1/chat/completions" in lines[1]
    assert " 502 " in lines[1] and "ann" in lines[1] and "7+3 tok" in lines[1]
    rows = json.loads(ok(hearth("logs", "--json")))
    assert [r["route"] for r in rows] == ["/v1/chat/completions", "/v1/search", "/v1/models"]
    assert rows[0]["user"] == "ann" and rows[0]["prompt"] is None


def test_token_create_frontend_marks_a_front_end_token(
    hearth: Hearth, db: psycopg.Connection, pg_url: str
) -> None:
    plain = ok(hearth("token", "create", "--user", "owui")).strip()
    front = ok(hearth("token", "create", "--user", "owui", "--frontend")).strip()
    rows = db.execute("SELECT frontend FROM tokens ORDER BY id").fetchall()
    assert rows == [(False,), (True,)]
    me, it = authenticate(pg_url, plain), authenticate(pg_url, front)
    assert me is not None and it is not None and (me.frontend, it.frontend) == (False, True)
    listed = ok(hearth("token", "list")).splitlines()
    assert [" frontend " in line for line in listed] == [False, True]
