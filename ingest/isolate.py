"""Parsing in a separate, persistent child process, so a file that hangs the parser, crashes it or
eats all memory costs that file an error instead of stalling or killing the worker.

Celery's prefork children are daemonic and may not use `multiprocessing`, so the child is a plain
``python -m ingest.isolate`` speaking line-delimited JSON over its stdin/stdout: a request
``{"path": "/abs/file"}`` (with ``"max_chars"`` and ``"max_chunks"`` when the text is budgeted)
gets one reply, ``{"parsed": {...}}`` or ``{"error": reason}`` (with ``"restart": true`` when the
child should not be trusted with another file).
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import logging
import os
import select
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any, NoReturn

from core.offline import OFFLINE_ENV, go_offline

from .budget import too_much_text
from .parse import Attachment, Element, Parsed, ParseError, parse_file

log = logging.getLogger(__name__)

CHILD_MODULE = "ingest.isolate"
_ROOT = Path(__file__).resolve().parent.parent  # holds the `ingest` package: the child's cwd
_READ_BYTES = 1 << 20


class ParserProcess:
    """`parse_file` in a child process that is started on first use and reused for every file
    (spaCy and friends load once); after a timeout, a crash or running out of memory the child is
    killed and the next file gets a fresh one.

    `memory_mb` caps the child's address space (RLIMIT_AS, so it counts virtual memory; None for no
    cap). `max_chars` (with the `max_chunks` it derives from, for the reason) refuses a file whose
    text is longer, in the child: the text never reaches this process. `child_module` names the
    module the child runs; it must call `serve()` (tests use one that adds files which misbehave
    on purpose). One parse runs at a time; threads may share one.
    """

    def __init__(
        self,
        timeout_s: float = 300,
        memory_mb: int | None = 4096,
        *,
        max_chars: int | None = None,
        max_chunks: int | None = None,
        child_module: str = CHILD_MODULE,
    ) -> None:
        if timeout_s <= 0:
            raise ValueError("timeout_s must be positive")
        if memory_mb is not None and memory_mb < 64:
            raise ValueError("memory_mb must be at least 64 (or None for no limit)")
        self.timeout_s = timeout_s
        self.memory_mb = memory_mb
        self.budget = {"max_chars": max_chars, "max_chunks": max_chunks} if max_chars else {}
        self.child_module = child_module
        self._proc: subprocess.Popen[bytes] | None = None
        self._buf = bytearray()
        self._lock = threading.Lock()

    @property
    def pid(self) -> int | None:
        """The running child's process id, if one is running."""
        proc = self._proc
        return proc.pid if proc is not None and proc.poll() is None else None

    def parse(self, path: Path) -> Parsed:
        """Parse `path` in the child; raises ParseError (only) with a reason fit to show a user."""
        request = json.dumps({"path": str(Path(path).absolute()), **self.budget}).encode() + b"\n"
        with self._lock:
            proc = self._running()
            assert proc.stdin is not None
            try:
                proc.stdin.write(request)
                proc.stdin.flush()
            except OSError:  # it died just now; the reply read below reports how
                pass
            line = self._read_line(proc, time.monotonic() + self.timeout_s)
            try:
                reply = json.loads(line)
                if "parsed" in reply:
                    return decode(reply["parsed"])
                reason = str(reply["error"])
            except (ValueError, KeyError, TypeError) as exc:
                self._stop(kill=True)
                raise ParseError("the parser sent an unreadable reply") from exc
            if reply.get("restart"):
                self._stop()
            raise ParseError(reason)

    def close(self) -> None:
        """Stop the child (it exits when its stdin closes); idempotent."""
        with self._lock:
            self._stop()

    def __enter__(self) -> ParserProcess:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _running(self) -> subprocess.Popen[bytes]:
        if self._proc is not None and self._proc.poll() is not None:
            log.warning(
                "parser child %d had exited (%s); restarting", self._proc.pid, self._proc.returncode
            )
            self._stop()
        if self._proc is None:
            env = dict(os.environ)
            # RLIMIT_AS counts address space, and glibc reserves 64 MB of it per thread arena
            env.setdefault("MALLOC_ARENA_MAX", "2")
            env.update(OFFLINE_ENV)
            argv = [sys.executable, "-m", self.child_module]
            if self.memory_mb is not None:
                argv += ["--memory-mb", str(self.memory_mb)]
            self._proc = subprocess.Popen(
                argv,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=None,  # inherited: the child's logs join ours and can never block it
                cwd=_ROOT,
                env=env,
                start_new_session=True,  # a Ctrl-C meant for the worker is not the child's
            )
            self._buf.clear()
        return self._proc

    def _read_line(self, proc: subprocess.Popen[bytes], deadline: float) -> bytes:
        assert proc.stdout is not None
        fd = proc.stdout.fileno()
        poller = select.poll()
        poller.register(fd, select.POLLIN)
        scanned = 0
        while (end := self._buf.find(b"\n", scanned)) < 0:
            scanned = len(self._buf)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                self._stop(kill=True)
                raise ParseError(f"parsing took longer than {self.timeout_s:g} s and was stopped")
            if not poller.poll(max(1, int(remaining * 1000))):
                continue
            chunk = os.read(fd, _READ_BYTES)
            if not chunk:  # stdout closed: the child is gone or going; wait for its exit code
                code = self._stop()
                hint = ", killed: perhaps the system ran out of memory" if code == -9 else ""
                raise ParseError(f"the parser crashed (exit code {code}{hint})")
            self._buf += chunk
        line = bytes(self._buf[:end])
        del self._buf[: end + 1]
        return line

    def _stop(self, *, kill: bool = False) -> int | None:
        """End the child: kill it, or close its stdin and give it a moment to exit."""
        proc, self._proc = self._proc, None
        self._buf.clear()
        if proc is None:
            return None
        if kill:
            proc.kill()
        if proc.stdin is not None:
            with contextlib.suppress(OSError):
                proc.stdin.close()
        try:
            code = proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            code = proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()
        return code


def encode(parsed: Parsed) -> dict[str, Any]:
    """A Parsed as JSON-able data; `decode` gives back an equal one."""
    return {
        "title": parsed.title,
        "mime": parsed.mime,
        "needs_ocr": parsed.needs_ocr,
        "elements": [[e.text, e.kind, e.level, e.page] for e in parsed.elements],
        "attachments": [
            {"name": a.name, "data": base64.b64encode(a.data).decode("ascii")}
            for a in parsed.attachments
        ],
    }


def decode(data: dict[str, Any]) -> Parsed:
    return Parsed(
        title=data["title"],
        mime=data["mime"],
        needs_ocr=data["needs_ocr"],
        elements=[Element(text, kind, level, page) for text, kind, level, page in data["elements"]],
        attachments=[
            Attachment(a["name"], base64.b64decode(a["data"])) for a in data["attachments"]
        ],
    )


def serve(parse: Callable[[Path], Parsed] = parse_file) -> NoReturn:
    """The child's side: answer requests on stdin until it closes, then exit the process (skipping
    interpreter teardown, which takes seconds once unstructured is loaded). Only replies go to
    stdout."""
    parser = argparse.ArgumentParser(prog=f"python -m {CHILD_MODULE}")
    parser.add_argument("--memory-mb", type=int, default=None)
    memory_mb = parser.parse_args().memory_mb

    # the protocol gets private copies of stdin/stdout; fd 1 becomes stderr, so a stray print (or
    # a C library writing to stdout) cannot corrupt a reply, and fd 0 is empty
    requests = os.fdopen(os.dup(0), "rb")
    replies = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    sys.stdout = sys.stderr
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)

    if memory_mb is not None:
        import resource

        _, hard = resource.getrlimit(resource.RLIMIT_AS)
        limit = memory_mb * 2**20
        if hard != resource.RLIM_INFINITY:
            limit = min(limit, hard)
        resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
    go_offline()  # before anything imports unstructured
    _exit_with_parent()

    for line in requests:
        reply = _answer(line, parse, memory_mb)
        try:
            data = json.dumps(reply).encode("ascii") + b"\n"  # ASCII: lone surrogates survive too
        except MemoryError:
            data = json.dumps(_out_of_memory(memory_mb)).encode("ascii") + b"\n"
        replies.write(data)
        replies.flush()
        if reply.get("restart"):
            break
    sys.stderr.flush()
    os._exit(0)


def _answer(line: bytes, parse: Callable[[Path], Parsed], memory_mb: int | None) -> dict[str, Any]:
    out_of_memory = False
    try:
        request = json.loads(line)
        parsed = parse(Path(request["path"]))
        limit = request.get("max_chars")
        if limit:
            chars = sum(len(e.text) for e in parsed.elements)
            if chars > limit:  # the child restarts: its memory goes back to the system
                reason = too_much_text(chars, int(request.get("max_chunks") or 0), int(limit))
                return {"error": reason, "restart": True}
        return {"parsed": encode(parsed)}
    except ParseError as exc:
        return {"error": str(exc)}
    except MemoryError:
        out_of_memory = True  # answered outside this block, once the traceback's memory is freed
    except Exception as exc:
        log.exception("parser failed on %r", line[:300])
        return {"error": f"the parser failed: {type(exc).__name__}: {exc}"[:300], "restart": True}
    assert out_of_memory
    return _out_of_memory(memory_mb)


def _out_of_memory(memory_mb: int | None) -> dict[str, Any]:
    limit = f" (limit {memory_mb} MB)" if memory_mb is not None else ""
    return {"error": f"the parser ran out of memory{limit}", "restart": True}


def _exit_with_parent() -> None:
    """Exit if the parent dies, even mid-parse (closed stdin is only seen between files)."""
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1)
        os._exit(1)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


if __name__ == "__main__":
    serve()
