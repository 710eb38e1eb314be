"""Children that die with `hearth up`, however it dies (SIGHUP, SIGTERM, SIGINT, SIGKILL, OOM).

Three layers, because no one of them covers every child:
- `die_with_parent`: a `preexec_fn` setting PR_SET_PDEATHSIG (Linux), so a direct child gets a
  signal the moment the supervisor's main thread is gone. It does not reach a daemon that forks
  away (pg_ctl's postmaster) or a grandchild (vLLM's engine, a worker's parser).
- The lifeline: a pipe whose only write end the supervisor holds. Every Hearth child gets the
  read end (HEARTH_LIFELINE_FD) and watches it in a thread (`watch_lifeline`): EOF means the
  supervisor is gone, whatever killed it; the child stops as on SIGTERM and exits hard after a
  grace period. The watchdog (cli/reaper.py) reads it too, and stops everything else.
- INSTANCE_ENV in the environment of everything `hearth up` starts (inherited by grandchildren
  and by the Postgres that pg_ctl daemonizes), which is how cli/instance.py finds them all.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import stat
import sys
import threading
import time
from collections.abc import Callable

LIFELINE_ENV = "HEARTH_LIFELINE_FD"
INSTANCE_ENV = "HEARTH_UP_INSTANCE"  # the resolved data dir of the `hearth up` a process serves
CHILD_GRACE_S = 5.0  # a child that has not stopped this long after its supervisor died is killed

_PR_SET_PDEATHSIG = 1


def _prctl() -> Callable[..., int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None


def die_with_parent(sig: int = signal.SIGTERM) -> Callable[[], None] | None:
    """A Popen `preexec_fn`: the child gets `sig` when the thread that started it exits (so call
    Popen from the main thread). None where the kernel has no such thing (not Linux)."""
    prctl = _prctl()  # looked up here: nothing but the syscall may run between fork and exec
    if prctl is None:
        return None
    parent = os.getpid()

    def preexec() -> None:
        prctl(_PR_SET_PDEATHSIG, sig, 0, 0, 0)
        if os.getppid() != parent:  # the parent died before prctl: no signal would ever come
            os._exit(1)

    return preexec


class Lifeline:
    """The supervisor's pipe. Both ends are opened non-inheritable, so a child holds the read end
    only when given `pass_fds` and the write end never: its EOF is the supervisor's death."""

    def __init__(self) -> None:
        self.read_fd, self.write_fd = os.pipe()

    def child_env(self) -> dict[str, str]:
        return {LIFELINE_ENV: str(self.read_fd)}

    @property
    def pass_fds(self) -> tuple[int, ...]:
        return (self.read_fd,)


def _lifeline_fd() -> int | None:
    raw = os.environ.pop(LIFELINE_ENV, None)  # not for grandchildren: they never get the fd
    if raw is None or not raw.isdigit():
        return None
    fd = int(raw)
    try:
        return fd if stat.S_ISFIFO(os.fstat(fd).st_mode) else None
    except OSError:
        return None


def wait_for_eof(fd: int) -> None:
    """Block until every write end of the pipe `fd` is closed."""
    while True:
        try:
            if not os.read(fd, 64):
                return
        except InterruptedError:
            continue
        except OSError:
            return


def watch_lifeline(grace_s: float = CHILD_GRACE_S) -> bool:
    """In a child of `hearth up`: when the supervisor is gone, SIGTERM this process (each command
    stops cleanly on it), and exit hard if it is still here `grace_s` later. False when this
    process was not started with a lifeline."""
    fd = _lifeline_fd()
    if fd is None:
        return False

    def run() -> None:
        wait_for_eof(fd)
        with contextlib.suppress(OSError):
            print(
                f"hearth: pid {os.getpid()}: the supervisor is gone; stopping",
                file=sys.stderr,
                flush=True,
            )
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(grace_s)
        os._exit(1)

    threading.Thread(target=run, name="hearth-lifeline", daemon=True).start()
    return True
