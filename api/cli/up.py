"""`hearth up`: the whole service on one machine, embedded defaults where nothing is configured."""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx

from core.db import connect
from core.logs import setup_logging
from core.offline import go_offline
from core.settings import Settings

from ..store.accounts import ensure_user, issue_token, user_count
from .commands import migrate_index
from .embedded import EmbeddedRedis, database_url, redis_socket

# name -> `hearth` command line of a supervised child process. Two workers: one for bulk work
# (watcher, rescans) and one that only takes interactive work (uploads, `hearth ingest`), so a
# big import never makes a person wait behind it.
CHILDREN = {
    "api": ["serve-api"],
    "worker": ["worker", "--queues", "ingest"],
    "worker-interactive": ["worker", "--queues", "interactive"],
    "beat": ["beat"],
    "watcher": ["watch"],
}


def add_parsers(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("up", help="start Hearth: database, queue, LLM, API, worker, beat, watcher")
    p.add_argument(
        "--reembed",
        action="store_true",
        help="rebuild the index if EMBED_MODEL differs from the one it was built with",
    )
    p.set_defaults(func=run_up)


class Supervisor:
    """Runs each child in its own session, restarts one that dies, stops them all in order."""

    def __init__(self, env: dict[str, str]) -> None:
        self.env = env
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.restarts: dict[str, list[float]] = {}

    def start(self, name: str) -> None:
        argv = [sys.executable, "-m", "api.cli.main", *CHILDREN[name]]
        self.procs[name] = subprocess.Popen(argv, env=self.env, start_new_session=True)

    def poll(self) -> None:
        for name, proc in list(self.procs.items()):
            code = proc.poll()
            if code is None:
                continue
            recent = [t for t in self.restarts.get(name, []) if time.monotonic() - t < 60]
            if len(recent) >= 5:
                raise RuntimeError(f"{name} keeps dying (exit code {code}); giving up")
            print(f"hearth: {name} exited with code {code}; restarting", file=sys.stderr)
            self.restarts[name] = [*recent, time.monotonic()]
            time.sleep(min(2 ** len(recent), 10))
            self.start(name)

    def stop(self, timeout_s: float = 20.0) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        for proc in self.procs.values():
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def bootstrap_admin(db_url: str) -> str | None:
    """On first start, create the admin user and return a token for it (shown once)."""
    with connect(db_url) as conn:
        if user_count(conn):
            return None
        admin = ensure_user(conn, "admin", "admin")
        token = issue_token(conn, admin, "created by the first `hearth up`")
        conn.commit()
        return token


def _wait_http(url: str, stop: threading.Event, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while not stop.is_set() and time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return True
        except httpx.HTTPError:
            pass
        stop.wait(0.5)
    return False


def run_up(args: argparse.Namespace, settings: Settings) -> int:
    from .llm_convert import prepare_model
    from .llm_server import from_settings

    setup_logging(fmt=settings.log_format)
    go_offline()
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    settings.hearth_data_dir.mkdir(parents=True, exist_ok=True)
    settings.watch_dir.mkdir(parents=True, exist_ok=True)

    llm = pg = redis = None
    supervisor: Supervisor | None = None
    try:
        env = dict(os.environ)
        if not settings.llm_base_url:
            print(f"hearth: preparing the local model in {settings.local_model_dir}", flush=True)
            prepare_model(settings.local_model_dir)
            llm = from_settings(settings)
            llm.start()
            env["LLM_BASE_URL"] = llm.base_url
        db_url, pg = database_url(settings)
        env["DATABASE_URL"] = db_url
        if settings.redis_url:
            env["REDIS_URL"] = settings.redis_url
        else:
            redis = EmbeddedRedis(redis_socket(settings).parent)
            env["REDIS_URL"] = redis.start()
        applied = migrate_index(db_url, settings, args.reembed)
        if applied is None:
            return 2
        if applied:
            print(f"hearth: applied migrations {', '.join(applied)}", flush=True)
        token = bootstrap_admin(db_url)

        supervisor = Supervisor(env)
        for name in CHILDREN:
            supervisor.start(name)
        if llm is not None:
            llm.wait_ready(timeout_s=900)
        api = f"http://{settings.hearth_host}:{settings.hearth_port}"
        if not _wait_http(api + "/ready", stop, 300):
            if stop.is_set():
                return 0
            raise RuntimeError(f"the API did not become ready at {api}/ready")
        _banner(settings, api, token)
        while not stop.wait(1.0):
            supervisor.poll()
        return 0
    finally:
        print("hearth: stopping", flush=True)
        if supervisor:
            supervisor.stop()
        for part in (llm, redis, pg):
            if part is not None:
                part.stop()


def _banner(settings: Settings, api: str, token: str | None) -> None:
    lines = [
        "Hearth is up.",
        f"  Chat UI:                 {api}/",
        f"  API (OpenAI-compatible): {api}/v1",
        f"  Watched folder:          {Path(settings.watch_dir).resolve()}",
        f"  Data:                    {Path(settings.hearth_data_dir).resolve()}",
    ]
    if token:
        lines += ["", f"  Admin token (shown once, stored only as a hash): {token}"]
    print("\n".join(lines), flush=True)
