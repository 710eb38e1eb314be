"""`hearth user`, `hearth collection` and `hearth logs`: users and groups, collection owners and
grants, and the request log, from the command line (the admin API does the same over HTTP)."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable

import psycopg

from api.store import access, accounts
from core.db import connect
from core.embedded import command_database_url
from core.settings import Settings
from workers import requestlog


def add_parsers(sub: argparse._SubParsersAction) -> None:
    users = sub.add_parser("user", help="manage users and their groups").add_subparsers(
        dest="action", required=True
    )
    p = users.add_parser("create")
    p.add_argument("name")
    p.add_argument("--role", choices=("admin", "user"), default="user")
    p.add_argument("--group", action="append", default=[], help="a group to join (repeatable)")
    p.set_defaults(func=_user_create)
    users.add_parser("list").set_defaults(func=_user_list)
    for action, disabled in (("disable", True), ("enable", False)):
        p = users.add_parser(action)
        p.add_argument("name")
        p.set_defaults(func=_user_disable, disabled=disabled)
    for action in ("join", "leave"):
        p = users.add_parser(action, help=f"{action} a group")
        p.add_argument("name")
        p.add_argument("group")
        p.set_defaults(func=_user_group)

    cols = sub.add_parser("collection", help="collection owners and read grants").add_subparsers(
        dest="action", required=True
    )
    cols.add_parser("list").set_defaults(func=_collection_list)
    p = cols.add_parser("create", help="create a collection (an existing one is left as it is)")
    p.add_argument("name")
    p.add_argument("--owner", help="a user name; unset: admins own it")
    p.set_defaults(func=_collection_create)
    p = cols.add_parser("owner", help="hand a collection over to another owner")
    p.add_argument("name")
    to = p.add_mutually_exclusive_group(required=True)
    to.add_argument("user", nargs="?", help="the new owner")
    to.add_argument("--admins", action="store_true", help="owned by nobody: the admins")
    p.set_defaults(func=_collection_owner)
    for action in ("grant", "revoke"):
        p = cols.add_parser(action, help=f"{action} read access")
        p.add_argument("name")
        who = p.add_mutually_exclusive_group(required=True)
        who.add_argument("--user")
        who.add_argument("--group", help=f"a group; '{access.EVERYONE}' is every user")
        p.set_defaults(func=_collection_grant, action_name=action)

    p = sub.add_parser("logs", help="the most recent API requests")
    p.add_argument("-n", "--limit", type=int, default=30)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_logs)


def _with_db(settings: Settings, fn: Callable[[psycopg.Connection], object]) -> int:
    try:
        with connect(command_database_url(settings)) as conn:
            fn(conn)
            conn.commit()
    except (access.AccessError, access.AccessConflict) as exc:
        print(f"hearth: {exc}")
        return 1
    return 0


def _user_create(args: argparse.Namespace, settings: Settings) -> int:
    def work(conn: psycopg.Connection) -> None:
        user = accounts.ensure_user(conn, args.name, args.role)
        for group in args.group:
            access.add_to_group(conn, args.name, group)
        personal = access.personal_collection_of(conn, user.name)
        print(
            f"user {user.name} ({user.role}), personal collection {personal};"
            f" issue a token: hearth token create --user {user.name}"
        )

    return _with_db(settings, work)


def _user_list(args: argparse.Namespace, settings: Settings) -> int:
    def work(conn: psycopg.Connection) -> None:
        for u in accounts.list_users(conn):
            state = "disabled" if u["disabled"] else "active"
            groups = ",".join(u["groups"]) or "-"  # type: ignore[arg-type]
            print(f"{u['id']:>4} {u['name']:<16} {u['role']:<6} {state:<8} groups {groups}")

    return _with_db(settings, work)


def _user_disable(args: argparse.Namespace, settings: Settings) -> int:
    def work(conn: psycopg.Connection) -> None:
        if not accounts.set_disabled(conn, args.name, args.disabled):
            raise access.AccessError(f"no user named {args.name!r}")
        print(f"{args.name} {'disabled' if args.disabled else 'enabled'}")

    return _with_db(settings, work)


def _user_group(args: argparse.Namespace, settings: Settings) -> int:
    def work(conn: psycopg.Connection) -> None:
        if args.action == "join":
            access.add_to_group(conn, args.name, args.group)
            print(f"{args.name} joined {args.group}")
        elif access.remove_from_group(conn, args.name, args.group):
            print(f"{args.name} left {args.group}")
        else:
            print(f"{args.name} was not in {args.group}")

    return _with_db(settings, work)


def _collection_list(args: argparse.Namespace, settings: Settings) -> int:
    def work(conn: psycopg.Connection) -> None:
        for c in access.list_collections(conn):
            readers = ", ".join(c.readers) or "-"
            owner = c.owner or "(admins)"
            kind = " (personal)" if c.personal else ""
            print(f"{c.name:<24} owner {owner:<12} {c.documents:>6} docs  readers {readers}{kind}")

    return _with_db(settings, work)


def _collection_create(args: argparse.Namespace, settings: Settings) -> int:
    def work(conn: psycopg.Connection) -> None:
        created = access.create_collection(conn, args.name, args.owner)
        state = "created" if created else "exists"
        print(f"collection {args.name} {state}, owned by {args.owner or 'admins'}")

    return _with_db(settings, work)


def _collection_owner(args: argparse.Namespace, settings: Settings) -> int:
    def work(conn: psycopg.Connection) -> None:
        owner = None if args.admins else args.user
        access.set_owner(conn, args.name, owner)
        print(f"collection {args.name} now owned by {owner or 'admins'}")

    return _with_db(settings, work)


def _collection_grant(args: argparse.Namespace, settings: Settings) -> int:
    def work(conn: psycopg.Connection) -> None:
        who = f"user {args.user}" if args.user else f"group {args.group}"
        if args.action_name == "grant":
            access.grant(conn, args.name, user=args.user, group=args.group)
            print(f"{who} may read {args.name}")
        elif access.revoke(conn, args.name, user=args.user, group=args.group):
            print(f"{who} may no longer read {args.name}")
        else:
            print(f"{who} had no grant on {args.name}")

    return _with_db(settings, work)


def _logs(args: argparse.Namespace, settings: Settings) -> int:
    def work(conn: psycopg.Connection) -> None:
        rows = requestlog.recent(conn, args.limit)
        if args.json:
            print(json.dumps(rows, indent=2))
            return
        for r in reversed(rows):
            tokens = f"{r['prompt_tokens'] or 0}+{r['completion_tokens'] or 0} tok"
            print(
                f"{r['at']} {r['user'] or '-':<12} {r['method']:<6} {r['route']:<28}"
                f" {r['status']} {r['latency_ms']:>8.1f} ms  {r['model'] or ''} {tokens}"
            )

    return _with_db(settings, work)
