"""One `hearth up` per data dir, and every process that belongs to one: finding them (what a dead
supervisor left behind too) and stopping them in order, in bounded time, saying what it waits for.

A process belongs to the instance on DATA_DIR when INSTANCE_ENV=DATA_DIR is in its environment
(/proc/PID/environ): `hearth up` sets it in its own environment before it starts anything, so its
children, their children and the Postgres that pg_ctl daemonizes all carry it. The pid files in
the data dir (Postgres's postmaster.pid, Redis's redis.pid) are read as well, and count only when
the process they name carries the mark, so a stale file never names someone else's process.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import signal
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from core.lifeline import CHILD_GRACE_S, INSTANCE_ENV

LOCK_NAME = "hearth-up.lock"
INFRA_GRACE_S = 4.0  # then Redis (SIGTERM) and Postgres (SIGINT: fast shutdown), the same way

Say = Callable[[str], None]


def say(text: str) -> None:
    """One line on stderr; a closed terminal (SIGHUP) must not stop a shutdown."""
    with contextlib.suppress(OSError, ValueError):
        print(f"hearth: {text}", file=sys.stderr, flush=True)


# one instance per data dir ---------------------------------------------------------------------


class AlreadyRunning(Exception):
    def __init__(self, data_dir: Path, pid: int | None, port: int | None) -> None:
        self.pid, self.port = pid, port
        who = f"pid {pid}" if pid else "pid unknown"
        where = f", port {port}" if port else ""
        super().__init__(
            f"`hearth up` is already running on {data_dir} ({who}{where}); stop it first"
        )


@dataclass
class InstanceLock:
    """An exclusive flock on DATA_DIR/hearth-up.lock, held for the life of `hearth up` (the kernel
    drops it however the process dies). The file says who holds it: {"pid", "port"}."""

    path: Path
    fd: int
    previous: dict[str, object]  # what the file said before: the last holder, perhaps dead

    @classmethod
    def acquire(cls, data_dir: Path, port: int) -> InstanceLock:
        path = data_dir / LOCK_NAME
        # O_CLOEXEC: no child inherits the lock, so it is free the moment the supervisor is gone
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise
            holder = _read_holder(path)
            raise AlreadyRunning(
                data_dir, _int(holder.get("pid")), _int(holder.get("port"))
            ) from None
        previous = _read_holder(path)
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps({"pid": os.getpid(), "port": port}).encode(), 0)
        return cls(path, fd, previous)

    def release(self) -> None:
        with contextlib.suppress(OSError):
            os.ftruncate(self.fd, 0)
        with contextlib.suppress(OSError):
            os.close(self.fd)


def _read_holder(path: Path, attempts: int = 20) -> dict[str, object]:
    """The holder's record; it is written right after the lock is taken, so wait a moment."""
    for _ in range(attempts):
        with contextlib.suppress(OSError, ValueError):
            data = json.loads(path.read_text() or "null")
            if isinstance(data, dict):
                return data
        time.sleep(0.05)
    return {}


def _int(value: object) -> int | None:
    return value if isinstance(value, int) else None


# the processes of an instance ------------------------------------------------------------------


@dataclass(frozen=True)
class Proc:
    pid: int
    start: int  # start time in clock ticks: (pid, start) names one process, even after pid reuse
    comm: str
    cmdline: str

    @property
    def kind(self) -> str:
        """postgres and redis are stopped last, after everything that writes to them."""
        if self.comm == "postgres":
            return "postgres"
        if self.comm.startswith("redis-server"):
            return "redis"
        return "process"

    def describe(self) -> str:
        return f"{self.cmdline[:80] or self.comm} (pid {self.pid})"


def _read(path: str) -> bytes:
    try:
        with open(path, "rb") as fh:
            return fh.read()
    except OSError:
        return b""


def _proc(pid: int) -> Proc | None:
    """The live (not zombie) process `pid`, or None."""
    stat = _read(f"/proc/{pid}/stat").decode(errors="replace")
    if not stat:
        return None
    fields = stat[stat.rfind(")") + 2 :].split()
    if len(fields) < 20 or fields[0] in ("Z", "X"):
        return None
    cmdline = _read(f"/proc/{pid}/cmdline").replace(b"\0", b" ").decode(errors="replace")
    return Proc(pid, int(fields[19]), stat[stat.find("(") + 1 : stat.rfind(")")], cmdline.strip())


def alive(p: Proc) -> bool:
    now = _proc(p.pid)
    return now is not None and now.start == p.start


def _marked(pid: int, mark: bytes) -> bool:
    return mark in _read(f"/proc/{pid}/environ").split(b"\0")


def instance_processes(data_dir: Path, exclude: Iterable[int] = ()) -> list[Proc]:
    """Live processes of the `hearth up` on `data_dir` (this process and `exclude` left out)."""
    if not os.path.isdir("/proc"):
        return []
    mark = f"{INSTANCE_ENV}={data_dir.resolve()}".encode()
    skip = {os.getpid(), *exclude}
    found: dict[int, Proc] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) not in skip and _marked(int(entry), mark):
            p = _proc(int(entry))
            if p is not None:
                found[p.pid] = p
    for pid in _pid_file_pids(data_dir):  # normally found already; checked, never trusted
        if pid not in skip and pid not in found and _marked(pid, mark):
            p = _proc(pid)
            if p is not None:
                found[pid] = p
    return sorted(found.values(), key=lambda p: p.pid)


def _pid_file_pids(data_dir: Path) -> list[int]:
    pids = []
    for path in (data_dir / "postgres" / "postmaster.pid", data_dir / "redis" / "redis.pid"):
        first = _read(str(path)).split(b"\n", 1)[0].strip()
        if first.isdigit():
            pids.append(int(first))
    return pids


# stopping them -------------------------------------------------------------------------------


def _signal(p: Proc, sig: int) -> None:
    if alive(p):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(p.pid, sig)


def _wait(procs: list[Proc], timeout_s: float, what: str, tell: Say) -> list[Proc]:
    """Wait up to `timeout_s` for `procs` to exit, naming what is still running every 2 s;
    what is left at the end."""
    deadline = time.monotonic() + timeout_s
    next_note = time.monotonic() + 2.0
    while True:
        left = [p for p in procs if alive(p)]
        now = time.monotonic()
        if not left or now >= deadline:
            return left
        if now >= next_note:
            names = ", ".join(p.describe() for p in left[:6])
            tell(f"waiting for {what} ({deadline - now:.0f} s left): {names}")
            next_note = now + 2.0
        time.sleep(0.05)


def stop_processes(
    procs: Iterable[Proc],
    tell: Say = say,
    child_grace_s: float = CHILD_GRACE_S,
    infra_grace_s: float = INFRA_GRACE_S,
) -> list[Proc]:
    """Stop `procs` in order and in bounded time: first everything but Postgres and Redis
    (SIGTERM, then SIGKILL after `child_grace_s`), then Redis (SIGTERM) and Postgres (SIGINT to
    the postmaster: fast shutdown), SIGKILL after `infra_grace_s`. Returns what had to be
    killed."""
    procs = [p for p in procs if alive(p)]
    killed: list[Proc] = []
    postmasters = {p.pid for p in procs if p.kind == "postgres" and _is_postmaster(p, procs)}
    first = [p for p in procs if p.kind == "process"]
    last = [p for p in procs if p.kind != "process"]
    for group, grace, what in ((first, child_grace_s, "processes"), (last, infra_grace_s, "")):
        if not group:
            continue
        for p in group:
            if p.kind == "postgres":
                if p.pid in postmasters:  # its backends follow it
                    _signal(p, signal.SIGINT)
            else:
                _signal(p, signal.SIGTERM)
        label = what or "Redis and Postgres"
        left = _wait(group, grace, label, tell)
        for p in left:
            tell(f"{p.describe()} did not stop within {grace:.0f} s; killing it")
            _signal(p, signal.SIGKILL)
        killed += left
        _wait(left, 5.0, label, tell)
    return killed


def _is_postmaster(p: Proc, procs: list[Proc]) -> bool:
    ppid = _read(f"/proc/{p.pid}/stat").decode(errors="replace")
    fields = ppid[ppid.rfind(")") + 2 :].split()
    parent = int(fields[1]) if len(fields) > 1 else 0
    return not any(q.pid == parent and q.kind == "postgres" for q in procs)
