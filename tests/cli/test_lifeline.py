"""The pieces that keep `hearth up`'s children from outliving it, each with real processes: the
lifeline pipe, PR_SET_PDEATHSIG, the data-dir lock, and finding and stopping an instance's
processes by the mark in their environment. (tests/cli/test_up_lifecycle.py runs them together
in a real `hearth up`.)"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from cli.instance import AlreadyRunning, InstanceLock, instance_processes, stop_processes
from core.lifeline import INSTANCE_ENV, LIFELINE_ENV, Lifeline, die_with_parent

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="PR_SET_PDEATHSIG and /proc")


def _gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except OSError:
        return True


def _wait_until(cond: object, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not cond():  # type: ignore[operator]
        if time.monotonic() > deadline:
            pytest.fail(f"{what} did not happen within {timeout_s:.0f} s")
        time.sleep(0.05)


@pytest.fixture
def procs() -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for p in started:
        if p.poll() is None:
            p.kill()
        p.wait(10)
        if p.stdout is not None:
            p.stdout.close()


def _python(
    code: str, procs: list[subprocess.Popen[bytes]], **kwargs: object
) -> subprocess.Popen[bytes]:
    p = subprocess.Popen(  # type: ignore[call-overload]
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        **kwargs,
    )
    procs.append(p)
    return p  # type: ignore[no-any-return]


CHILD = """
    import signal, sys, time
    from core.lifeline import watch_lifeline
    {on_term}
    print("watching" if watch_lifeline(grace_s=1.0) else "no lifeline", flush=True)
    time.sleep(600)
"""


def _watching_child(
    on_term: str, procs: list[subprocess.Popen[bytes]]
) -> tuple[subprocess.Popen[bytes], Lifeline]:
    """A CHILD handling SIGTERM with `on_term`, watching its lifeline (it said so)."""
    line = Lifeline()
    child = _python(
        CHILD.format(on_term=on_term),
        procs,
        env={**os.environ, **line.child_env()},
        pass_fds=line.pass_fds,
    )
    assert child.stdout is not None
    assert child.stdout.readline() == b"watching\n"
    return child, line


def test_a_child_stops_when_its_supervisor_is_gone(procs: list) -> None:  # type: ignore[type-arg]
    """EOF on the lifeline (the write end's only holder closed it, as a dead supervisor does):
    the child gets SIGTERM and stops cleanly through its own handler."""
    on_term = (
        "signal.signal(signal.SIGTERM, lambda *_: (print('clean stop', flush=True), sys.exit(0)))"
    )
    child, line = _watching_child(on_term, procs)
    assert child.stdout is not None
    os.close(line.write_fd)
    assert child.wait(30) == 0
    assert child.stdout.read() == b"clean stop\n"
    os.close(line.read_fd)


def test_a_child_that_ignores_sigterm_is_ended_after_the_grace(procs: list) -> None:  # type: ignore[type-arg]
    child, line = _watching_child("signal.signal(signal.SIGTERM, signal.SIG_IGN)", procs)
    os.close(line.write_fd)
    assert child.wait(30) == 1  # the hard exit after grace_s
    os.close(line.read_fd)


def test_no_lifeline_no_watching(procs: list) -> None:  # type: ignore[type-arg]
    """A `hearth` command run by hand has none; a bogus fd number is not taken for one."""
    for env in ({}, {LIFELINE_ENV: "0"}, {LIFELINE_ENV: "x"}):
        child = _python(
            CHILD.format(on_term=""),
            procs,
            env={**{k: v for k, v in os.environ.items() if k != LIFELINE_ENV}, **env},
            stdin=subprocess.DEVNULL,
        )
        assert child.stdout is not None
        assert child.stdout.readline() == b"no lifeline\n"
        child.kill()


def test_die_with_parent_reaches_a_child_when_its_parent_is_killed(procs: list) -> None:  # type: ignore[type-arg]
    """kill -9 of the parent: the child it started with die_with_parent() gets the signal."""
    parent = _python(
        """
        import subprocess, sys
        from core.lifeline import die_with_parent
        child = subprocess.Popen(
            ["sleep", "600"], preexec_fn=die_with_parent(), start_new_session=True
        )
        print(child.pid, flush=True)
        child.wait()
        """,
        procs,
    )
    assert parent.stdout is not None
    grandchild = int(parent.stdout.readline())
    assert not _gone(grandchild)
    parent.send_signal(signal.SIGKILL)
    parent.wait(10)
    _wait_until(lambda: _gone(grandchild), 10, "the child's death with its parent")


def test_die_with_parent_is_a_callable_on_linux() -> None:
    assert callable(die_with_parent())


def test_one_lock_per_data_dir(tmp_path: Path) -> None:
    """flock locks per open file, so a second acquire in this very process is refused as a
    second `hearth up` would be, naming the holder; once released, it is free again."""
    first = InstanceLock.acquire(tmp_path, 8123)
    with pytest.raises(AlreadyRunning) as refused:
        InstanceLock.acquire(tmp_path, 9999)
    assert refused.value.pid == os.getpid() and refused.value.port == 8123
    assert f"pid {os.getpid()}, port 8123" in str(refused.value)
    first.release()
    again = InstanceLock.acquire(tmp_path, 8124)
    assert again.previous == {}  # released cleanly: the record was cleared
    again.release()


def test_the_lock_dies_with_its_holder(tmp_path: Path, procs: list) -> None:  # type: ignore[type-arg]
    """kill -9 of the holder frees the lock, and the next one learns the dead holder's pid."""
    holder = _python(
        f"""
        import time
        from pathlib import Path
        from cli.instance import InstanceLock
        InstanceLock.acquire(Path({str(tmp_path)!r}), 8123)
        print("locked", flush=True)
        time.sleep(600)
        """,
        procs,
    )
    assert holder.stdout is not None
    assert holder.stdout.readline() == b"locked\n"
    with pytest.raises(AlreadyRunning, match=f"pid {holder.pid}, port 8123"):
        InstanceLock.acquire(tmp_path, 8123)
    holder.kill()
    holder.wait(10)
    lock = InstanceLock.acquire(tmp_path, 8123)
    assert lock.previous == {"pid": holder.pid, "port": 8123}
    lock.release()


def test_instance_processes_are_the_marked_ones_and_stop_in_bounded_time(
    tmp_path: Path,
    procs: list,  # type: ignore[type-arg]
) -> None:
    """Only processes carrying the data dir's mark count (a grandchild too); one that ignores
    SIGTERM is killed after the grace period, and the waiting is said."""
    mark = {INSTANCE_ENV: str(tmp_path.resolve())}
    other = {INSTANCE_ENV: str((tmp_path / "elsewhere").resolve())}
    polite = _python("import time; time.sleep(600)", procs, env={**os.environ, **mark})
    stubborn = _python(
        """
        import signal, subprocess, time
        subprocess.Popen(["sleep", "600"], start_new_session=True)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        time.sleep(600)
        """,
        procs,
        env={**os.environ, **mark},
    )
    stranger = _python("import time; time.sleep(600)", procs, env={**os.environ, **other})

    def found() -> set[int]:
        return {p.pid for p in instance_processes(tmp_path)}

    _wait_until(lambda: len(found()) == 3, 10, "three marked processes")  # + the grandchild
    assert polite.pid in found() and stubborn.pid in found()
    assert stranger.pid not in found()

    said: list[str] = []
    killed = stop_processes(instance_processes(tmp_path), said.append, child_grace_s=2.5)
    assert [p.pid for p in killed] == [stubborn.pid]
    assert polite.wait(10) == -signal.SIGTERM
    assert stubborn.wait(10) == -signal.SIGKILL
    assert found() == set()
    assert any("waiting for processes" in s and str(stubborn.pid) in s for s in said), said
    assert any("killing it" in s for s in said), said
    assert stranger.poll() is None
