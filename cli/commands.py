"""The `hearth` subcommands other than `up` and `llm`."""

from __future__ import annotations

import argparse
import os
import re
import sys
import threading
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from api.store import accounts
from core.db import connect
from core.embedded import command_database_url, running_redis_url
from core.logs import setup_logging
from core.migrate import IndexModelMismatch, migrate
from core.offline import go_offline
from core.settings import Settings
from retrieval import collections, documents


def add_parsers(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("migrate", help="apply database migrations")
    p.add_argument("--reembed", action="store_true")
    p.set_defaults(func=run_migrate)

    for name, func, text in (
        ("serve-api", run_api, "run the API server (uvicorn)"),
        ("beat", run_beat, "run Celery beat (scheduled rescans)"),
        ("watch", run_watch, "watch HEARTH_WATCH_DIR and queue changes"),
    ):
        sub.add_parser(name, help=text).set_defaults(func=func)

    p = sub.add_parser("worker", help="run a Celery ingestion worker")
    p.add_argument(
        "--queues",
        default="interactive,ingest",
        help="queues to consume, comma-separated (interactive: uploads and "
        "`hearth ingest`; ingest: the watcher and rescans)",
    )
    p.set_defaults(func=run_worker)

    p = sub.add_parser("status", help="summarise the index")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=run_status)

    p = sub.add_parser("ingest", help="index a file or folder")
    p.add_argument("path", type=Path)
    p.add_argument(
        "--wait",
        action="store_true",
        help="index here and now, with a progress bar, instead of queueing",
    )
    p.add_argument("--collection", default="default")
    p.set_defaults(func=run_ingest)

    tok = sub.add_parser("token", help="manage API tokens").add_subparsers(
        dest="action", required=True
    )
    p = tok.add_parser("create")
    p.add_argument("--user", default="admin")
    p.add_argument("--role", choices=("admin", "user"), default="user")
    p.add_argument("--description", default="")
    p.add_argument("--expires", help="lifetime such as 90d or 12h")
    p.add_argument(
        "--frontend",
        action="store_true",
        help="a multi-user front-end's token (Open WebUI): it may name the person each request"
        " is for (X-OpenWebUI-User-* headers), who then acts as a Hearth user of their own",
    )
    p.set_defaults(func=run_token_create)
    tok.add_parser("list").set_defaults(func=run_token_list)
    p = tok.add_parser("revoke")
    p.add_argument("id", type=int)
    p.set_defaults(func=run_token_revoke)


def migrate_index(db_url: str, settings: Settings, reembed: bool) -> list[str] | None:
    """Apply migrations pinned to EMBED_MODEL, and create `default` and every watched root's
    collection (owned by the admins) if missing; None (after saying why) if the index refuses
    the model."""
    from core.embedder import embedding_dim

    try:
        done = migrate(
            db_url,
            embed_model=settings.embed_model,
            embed_dim=embedding_dim(settings.embed_model),
            reembed=reembed,
        )
    except IndexModelMismatch as exc:
        print(f"hearth: {exc}", file=sys.stderr)
        return None
    with connect(db_url) as conn:
        collections.ensure(conn, collections.configured(settings))
        conn.commit()
    return done


def run_migrate(args: argparse.Namespace, settings: Settings) -> int:
    applied = migrate_index(command_database_url(settings), settings, args.reembed)
    if applied is None:
        return 2
    print("applied: " + (", ".join(applied) if applied else "nothing (up to date)"))
    return 0


HEALTHCHECK_S = 120  # an API process that does not answer uvicorn's ping this long is restarted


def run_api(args: argparse.Namespace, settings: Settings) -> int:
    import uvicorn

    from api.app import create_app

    setup_logging(fmt=settings.log_format)
    go_offline()
    url = command_database_url(settings)
    workers = settings.api_workers or os.cpu_count() or 1
    options: dict[str, Any] = dict(
        host=settings.hearth_host,
        port=settings.hearth_port,
        log_level="info",
        # JSON: uvicorn's own loggers (the access log too) write through the root handler
        log_config=None if settings.log_format == "json" else uvicorn.config.LOGGING_CONFIG,
    )
    if workers == 1:
        from cli.serve import share_cores

        share_cores(settings)  # as each of several processes does (cli.serve.create)
        uvicorn.run(create_app(settings.model_copy(update={"database_url": url})), **options)
        return 0
    if not settings.redis_url:
        print(
            f"hearth: {workers} API processes without Redis: rate and stream limits count in "
            "each process (set REDIS_URL, or API_WORKERS=1)",
            file=sys.stderr,
        )
    # each process builds its app from the environment (cli/serve.py), this database included
    os.environ["DATABASE_URL"] = url
    # uvicorn restarts a process that does not answer its health check in time: a process still
    # loading its embedder on a busy machine is slow, not hung
    uvicorn.run(
        "cli.serve:create",
        factory=True,
        workers=workers,
        timeout_worker_healthcheck=HEALTHCHECK_S,
        **options,
    )
    return 0


def _celery(settings: Settings):
    from workers.celery_app import create_celery

    url = running_redis_url(settings)
    if not url:
        print(
            "hearth: no REDIS_URL and no embedded Redis running; start `hearth up`", file=sys.stderr
        )
        raise SystemExit(2)
    return create_celery(settings, url)


def run_worker(args: argparse.Namespace, settings: Settings) -> int:
    go_offline()
    # idle OpenMP threads sleep rather than spin (read when torch is first imported, in the pool's
    # children): a spinning embedder takes the cores from the API and PostgreSQL it shares them
    # with (core.embedder.limit_threads); OMP_WAIT_POLICY, when set, is left as it is
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    os.environ["DATABASE_URL"] = command_database_url(
        settings
    )  # the task processes read it from Settings
    app = _celery(settings)
    app.worker_main(
        [
            "worker",
            "--loglevel=INFO",
            "-Q",
            args.queues,
            "-n",
            f"hearth-{args.queues.replace(',', '-')}@%h",
            f"--concurrency={settings.worker_concurrency}",
            "--without-gossip",
            "--without-mingle",
        ]
    )
    return 0


def run_beat(args: argparse.Namespace, settings: Settings) -> int:
    app = _celery(settings)
    schedule = settings.hearth_data_dir / "celerybeat-schedule"
    settings.hearth_data_dir.mkdir(parents=True, exist_ok=True)
    app.start(["beat", "--loglevel=INFO", "-s", str(schedule)])
    return 0


def run_watch(args: argparse.Namespace, settings: Settings) -> int:
    import signal

    from workers.celery_app import TASK_INGEST, TASK_MOVE, TASK_RESCAN
    from workers.watcher import Callbacks, watch

    setup_logging(fmt=settings.log_format)
    app = _celery(settings)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    callbacks = Callbacks(
        sync=lambda path, coll: app.send_task(TASK_INGEST, args=[path, coll]),
        move=lambda src, dest, coll: app.send_task(TASK_MOVE, args=[src, dest, coll]),
        rescan=lambda: app.send_task(TASK_RESCAN),
    )
    callbacks.rescan()  # catch up with whatever changed while nobody was watching
    watch(settings.watch_roots, callbacks, settings.watch_debounce_s, stop)
    return 0


def run_ingest(args: argparse.Namespace, settings: Settings) -> int:
    from ingest import configured
    from ingest.pipeline import ingest_path
    from ingest.sync import walk

    root = Path(os.path.abspath(args.path))
    if not root.exists():
        print(f"hearth: {root} does not exist", file=sys.stderr)
        return 2
    files = [root] if root.is_file() else list(walk(root))
    if not args.wait:
        from workers.celery_app import INTERACTIVE_QUEUE, TASK_INGEST

        app = _celery(settings)
        for f in files:
            app.send_task(
                TASK_INGEST,
                args=[str(f), *_origin(f, settings, args.collection)],
                queue=INTERACTIVE_QUEUE,
            )
        print(f"queued {len(files)} file(s); `hearth status` shows progress")
        return 0
    go_offline()
    from rich.progress import Progress

    from core.embedder import embedder_for

    embedder = embedder_for(settings)
    failures: list[tuple[str, str]] = []
    chunks = 0
    parser = configured.parser(settings)
    with connect(command_database_url(settings)) as conn, Progress() as bar, parser:
        task = bar.add_task("indexing", total=len(files))
        for f in files:
            collection, source = _origin(f, settings, args.collection)
            opts = configured.options(settings, collection=collection, source=source)
            result = ingest_path(conn, embedder, f, opts, parser.parse)
            chunks += result.chunks
            if result.error:
                failures.append((result.path, result.error))
            bar.update(task, advance=1, description=f"indexing ({chunks} chunks)")
    print(
        f"{len(files) - len(failures)} file(s) indexed or unchanged, {chunks} chunks, "
        f"{len(failures)} failed"
    )
    if failures:
        from rich.console import Console
        from rich.table import Table

        table = Table("file", "why it failed", title="Failures", title_justify="left")
        for path, reason in failures:
            table.add_row(path, reason)
        Console().print(table)
    return 1 if failures else 0


def _origin(path: Path, settings: Settings, collection: str) -> tuple[str, str]:
    """A file inside a watched folder belongs to that folder's collection; any other file is
    indexed from the command line into `collection` (and never deleted from disk by Hearth)."""
    from ingest.sync import root_for

    root = root_for(path, [replace(r, path=r.path.resolve()) for r in settings.watch_roots])
    return (root.collection, "watch") if root else (collection, "cli")


def run_status(args: argparse.Namespace, settings: Settings) -> int:
    with connect(command_database_url(settings)) as conn:
        rows = documents.status_summary(conn)
        failed = documents.recent_problems(conn, 20)
    if args.json:
        import json

        print(
            json.dumps(
                {
                    "documents": {s: {"count": c, "chunks": int(k)} for s, c, k in rows},
                    "problems": [{"path": p, "error": e} for p, e in failed],
                }
            )
        )
        return 0
    print(f"data dir: {settings.hearth_data_dir}\nwatching: {settings.watch_dir}")
    if not rows:
        print("no documents yet")
    for status, count, chunks in rows:
        print(f"  {status:<10} {count:>6} documents {chunks:>8} chunks")
    for path, error in failed:
        print(f"  ! {path}: {error}")
    return 0


_LIFETIME = re.compile(r"([0-9]+)([dhm])")
MAX_LIFETIME = timedelta(days=36500)  # as the admin API's expires_in_days


def _parse_lifetime(text: str) -> timedelta:
    """`90d`, `12h` or `30m`: more than nothing, at most MAX_LIFETIME (SystemExit otherwise)."""
    units = {"d": "days", "h": "hours", "m": "minutes"}
    match = _LIFETIME.fullmatch(text)
    if not match:
        raise SystemExit(f"hearth: --expires must look like 90d, 12h or 30m, not {text!r}")
    amount = int(match[1])
    if not 0 < amount <= MAX_LIFETIME / timedelta(**{units[match[2]]: 1}):
        raise SystemExit(f"hearth: --expires must be more than 0 and at most 36500d, not {text!r}")
    return timedelta(**{units[match[2]]: amount})


def run_token_create(args: argparse.Namespace, settings: Settings) -> int:
    expires = datetime.now(UTC) + _parse_lifetime(args.expires) if args.expires else None
    with connect(command_database_url(settings)) as conn:
        user = accounts.ensure_user(conn, args.user, args.role)
        token = accounts.issue_token(conn, user, args.description, expires, frontend=args.frontend)
        conn.commit()
    print(token)
    kind = "a front-end token " if args.frontend else ""
    print(f"({kind}for user {user.name}; shown once, stored only as a hash)", file=sys.stderr)
    return 0


def run_token_list(args: argparse.Namespace, settings: Settings) -> int:
    with connect(command_database_url(settings)) as conn:
        tokens = accounts.list_tokens(conn)
    for t in tokens:
        state = (
            "revoked"
            if t.revoked_at
            else ("expired" if t.expires_at and t.expires_at < datetime.now(UTC) else "active")
        )
        used = t.last_used_at.isoformat(timespec="seconds") if t.last_used_at else "never"
        kind = " frontend" if t.frontend else ""
        print(
            f"{t.id:>4} {t.prefix}…  {t.user:<12} {state:<8}{kind} last used {used}"
            f"  {t.description}"
        )
    return 0


def run_token_revoke(args: argparse.Namespace, settings: Settings) -> int:
    with connect(command_database_url(settings)) as conn:
        ok = accounts.revoke_token(conn, args.id)
        conn.commit()
    print("revoked" if ok else f"no active token with id {args.id}")
    return 0 if ok else 1
