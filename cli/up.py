"""`hearth up`: the whole service on one machine, embedded defaults where nothing is configured."""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

import httpx

from api.store.accounts import ensure_user, issue_token, user_count
from core.db import connect
from core.embedded import EmbeddedPostgres, EmbeddedRedis, database_url, redis_socket
from core.lifeline import CHILD_GRACE_S, INSTANCE_ENV, Lifeline, die_with_parent
from core.logs import setup_logging
from core.offline import go_offline
from core.settings import Settings

from .commands import migrate_index
from .instance import (
    INFRA_GRACE_S,
    AlreadyRunning,
    InstanceLock,
    instance_processes,
    say,
    stop_processes,
)

if TYPE_CHECKING:
    from .llm_server import LocalLLMServer

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


class SupervisorError(RuntimeError):
    """A child that keeps dying: `hearth up` gives up (and says so in one line)."""


class Supervisor:
    """Runs each child in its own session, restarts one that dies, stops them all in order.

    Every child gets PR_SET_PDEATHSIG and the read end of the lifeline (core/lifeline.py), and
    a watchdog (cli/reaper.py) waits on the lifeline for the supervisor's death, so no child
    outlives it however it dies."""

    def __init__(self, env: dict[str, str], data_dir: Path) -> None:
        self.lifeline = Lifeline()
        self.env = {**env, **self.lifeline.child_env()}
        self.data_dir = data_dir
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.restarts: dict[str, list[float]] = {}
        self.reaper: subprocess.Popen[bytes] | None = None

    def start_reaper(self) -> None:
        argv = [sys.executable, "-m", "cli.reaper", str(self.data_dir)]
        argv += [str(self.lifeline.read_fd), str(os.getpid())]
        self.reaper = subprocess.Popen(
            argv, env=self.env, pass_fds=self.lifeline.pass_fds, start_new_session=True
        )

    def start(self, name: str) -> None:
        argv = [sys.executable, "-m", "cli.main", *CHILDREN[name]]
        self.procs[name] = subprocess.Popen(
            argv,
            env=self.env,
            start_new_session=True,
            pass_fds=self.lifeline.pass_fds,
            preexec_fn=die_with_parent(),
        )

    def poll(self) -> None:
        if self.reaper is not None and self.reaper.poll() is not None:
            say(f"the watchdog exited with code {self.reaper.returncode}; restarting it")
            self.start_reaper()
        for name, proc in list(self.procs.items()):
            code = proc.poll()
            if code is None:
                continue
            recent = [t for t in self.restarts.get(name, []) if time.monotonic() - t < 60]
            if len(recent) >= 5:
                raise SupervisorError(f"{name} keeps dying (exit code {code}); giving up")
            say(f"{name} exited with code {code}; restarting")
            self.restarts[name] = [*recent, time.monotonic()]
            time.sleep(min(2 ** len(recent), 10))
            self.start(name)

    def terminate(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)

    def stop(self, grace_s: float = CHILD_GRACE_S) -> None:
        """SIGTERM every child, wait up to `grace_s` (naming what it waits for), then SIGKILL."""
        self.terminate()
        deadline = time.monotonic() + grace_s
        next_note = time.monotonic() + 2.0
        running = dict(self.procs)
        while True:
            running = {n: p for n, p in running.items() if p.poll() is None}
            now = time.monotonic()
            if not running or now >= deadline:
                break
            if now >= next_note:
                names = ", ".join(f"{n} (pid {p.pid})" for n, p in running.items())
                say(f"waiting for {names} ({deadline - now:.0f} s left)")
                next_note = now + 2.0
            time.sleep(0.05)
        for name, proc in running.items():
            say(f"{name} (pid {proc.pid}) did not stop within {grace_s:.0f} s; killing it")
            proc.kill()
            proc.wait()

    def stop_reaper(self) -> None:
        """The last step of a clean stop: nothing is left for the watchdog to do."""
        if self.reaper is not None and self.reaper.poll() is None:
            self.reaper.kill()
            self.reaper.wait()
        for fd in (self.lifeline.read_fd, self.lifeline.write_fd):
            with contextlib.suppress(OSError):
                os.close(fd)


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


class _Stopped(BaseException):
    """A stop signal during start-up: unwinds whatever is starting into the `finally` below."""


class _StopSignals:
    """SIGINT, SIGTERM and SIGHUP (the terminal closed) all stop `hearth up` cleanly. While it
    starts, a stop signal unwinds the start-up at once (_Stopped); once it is up, or stopping,
    the signal only sets `event`, so a second Ctrl-C never cuts a shutdown short."""

    def __init__(self) -> None:
        self.event = threading.Event()
        self.starting = True
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, self._handle)

    def _handle(self, signum: int, _frame: object) -> None:
        if self.event.is_set():
            return
        self.event.set()
        if self.starting:
            raise _Stopped(signum)


def _port_in_use(host: str, port: int) -> str | None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            return exc.strerror or str(exc)
    return None


def run_up(args: argparse.Namespace, settings: Settings) -> int:
    signals = _StopSignals()
    try:
        settings.hearth_data_dir.mkdir(parents=True, exist_ok=True)
        data_dir = settings.hearth_data_dir.resolve()
        try:
            lock = InstanceLock.acquire(data_dir, settings.hearth_port)
        except AlreadyRunning as exc:
            say(str(exc))
            return 1
        try:
            return _run_locked(args, settings, data_dir, lock, signals)
        finally:
            lock.release()
    except _Stopped:
        return 0


def _run_locked(
    args: argparse.Namespace,
    settings: Settings,
    data_dir: Path,
    lock: InstanceLock,
    signals: _StopSignals,
) -> int:
    from .llm_convert import LLMServerError, prepare_model
    from .llm_server import from_settings

    setup_logging(fmt=settings.log_format)
    go_offline()
    left = instance_processes(data_dir)
    if left:
        last = lock.previous.get("pid")
        who = f" (pid {last})" if isinstance(last, int) else ""
        say(
            f"the last `hearth up`{who} on {data_dir} did not stop cleanly; stopping the "
            f"{len(left)} process(es) it left"
        )
        stop_processes(left)
    busy = _port_in_use(settings.hearth_host, settings.hearth_port)
    if busy:
        say(
            f"port {settings.hearth_port} on {settings.hearth_host} is in use ({busy}); "
            "set HEARTH_PORT to another"
        )
        return 1
    # everything started from here on carries the mark, grandchildren and daemons included
    os.environ[INSTANCE_ENV] = str(data_dir)
    settings.watch_dir.mkdir(parents=True, exist_ok=True)

    llm = pg = redis = None
    env = dict(os.environ)
    supervisor = Supervisor(env, data_dir)
    try:
        supervisor.start_reaper()
        if not settings.llm_base_url:
            print(f"hearth: preparing the local model in {settings.local_model_dir}", flush=True)
            prepare_model(settings.local_model_dir)
            llm = from_settings(settings, die_with_parent=True)
            llm.start()
            supervisor.env["LLM_BASE_URL"] = llm.base_url
        db_url, pg = database_url(settings)
        supervisor.env["DATABASE_URL"] = db_url
        if settings.redis_url:
            supervisor.env["REDIS_URL"] = settings.redis_url
        else:
            redis = EmbeddedRedis(redis_socket(settings).parent, supervised=True)
            supervisor.env["REDIS_URL"] = redis.start()
        applied = migrate_index(db_url, settings, args.reembed)
        if applied is None:
            return 2
        if applied:
            print(f"hearth: applied migrations {', '.join(applied)}", flush=True)
        token = bootstrap_admin(db_url)

        for name in CHILDREN:
            supervisor.start(name)
        if llm is not None:
            llm.wait_ready(timeout_s=900)
        api = f"http://{settings.hearth_host}:{settings.hearth_port}"
        if not _wait_http(api + "/ready", signals.event, 300):
            say(f"the API did not become ready at {api}/ready; see the lines above")
            return 1
        signals.starting = False
        _banner(settings, api, token)
        while not signals.event.wait(1.0):
            supervisor.poll()
        return 0
    except (LLMServerError, SupervisorError, TimeoutError) as exc:
        say(str(exc))
        return 1
    finally:
        signals.starting = False
        _shutdown(supervisor, llm, redis, pg, data_dir)


def _shutdown(
    supervisor: Supervisor,
    llm: LocalLLMServer | None,
    redis: EmbeddedRedis | None,
    pg: EmbeddedPostgres | None,
    data_dir: Path,
) -> None:
    """Children and vLLM first (SIGTERM together, SIGKILL after the grace period), then Redis and
    Postgres, then anything of the instance still alive; each wait is bounded and named."""
    began = time.monotonic()
    say("stopping")
    if llm is not None:
        llm.terminate()
    supervisor.stop()
    if llm is not None:
        llm.stop(timeout_s=CHILD_GRACE_S)
    if redis is not None:
        redis.stop(timeout_s=INFRA_GRACE_S)
    keep: set[int] = set()
    if pg is not None:
        others = pg.other_holders()
        if others:  # a `hearth` command still using it: the last one to let go stops it
            say(f"Postgres stays up for pid(s) {', '.join(map(str, others))} still using it")
            keep = {p.pid for p in instance_processes(data_dir) if p.kind == "postgres"}
        else:
            # pg_ctl's fast shutdown, waiting at most this long before pgserver kills it
            os.environ["PGCTLTIMEOUT"] = str(int(INFRA_GRACE_S))
            say("stopping Postgres")
        pg.stop()
    reaper = {supervisor.reaper.pid} if supervisor.reaper is not None else set()
    left = instance_processes(data_dir, exclude=keep | reaper)
    if left:
        say(
            f"stopping {len(left)} process(es) still running: "
            + "; ".join(p.describe() for p in left[:6])
        )
        stop_processes(left, child_grace_s=2.0, infra_grace_s=2.0)
    supervisor.stop_reaper()
    say(f"stopped in {time.monotonic() - began:.1f} s")


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
