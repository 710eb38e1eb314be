"""`hearth serve-api` with API_WORKERS=2: two processes answer on one port, and the per-token
stream limit, counted in Redis, holds across them (a second stream is refused by the other
process while the first one streams). The process that holds a connection is found from the
operating system's socket table (psutil), not from anything the API says."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import httpx
import psutil
import psycopg
import pytest

from api.store import accounts
from core.embedded import EmbeddedRedis
from tests.conftest import free_port
from tests.mock_llm import MockLLM, serve

REPO = Path(__file__).resolve().parents[2]
DEADLINE_S = 240
pytestmark = pytest.mark.slow  # two API processes, each with the real embedder


@pytest.fixture
def api(
    pg_url: str, env_without_hearth: dict[str, str], tmp_path: Path
) -> Iterator[tuple[str, subprocess.Popen[bytes], MockLLM]]:
    with ExitStack() as stack:
        redis = EmbeddedRedis(tmp_path / "redis")
        redis_url = redis.start()
        stack.callback(redis.stop)
        # each word a while apart: a stream stays open until the test has looked at it
        mock = stack.enter_context(serve(MockLLM(delay_s=0.2, reply=lambda _: "word " * 300)))
        port = free_port()
        env = {
            **env_without_hearth,
            "PYTHONPATH": str(REPO),
            "API_WORKERS": "2",
            "DATABASE_URL": pg_url,
            "REDIS_URL": redis_url,
            "LLM_BASE_URL": mock.url,
            "LLM_MODEL": "mock",
            "HEARTH_PORT": str(port),
            "HEARTH_DATA_DIR": str(tmp_path / "data"),
            "MAX_STREAMS_PER_TOKEN": "1",
            "RATE_LIMIT_RPS": "0",
        }
        log = (tmp_path / "api.log").open("wb")
        stack.callback(log.close)
        proc = subprocess.Popen(
            [sys.executable, "-m", "cli.main", "serve-api"],
            env=env,
            cwd=REPO,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

        def stop() -> None:
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, 9)
                proc.wait(10)

        stack.callback(stop)
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + DEADLINE_S
        while True:
            assert proc.poll() is None, (tmp_path / "api.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "the API did not start in time"
            try:
                if httpx.get(base + "/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        yield base, proc, mock


def serving_process(proc: subprocess.Popen[bytes], api_port: int, client_port: int) -> int:
    """The pid of the API process that holds the connection from `client_port`."""
    ports = (api_port, client_port)
    for child in psutil.Process(proc.pid).children(recursive=True):
        try:
            conns = child.net_connections(kind="tcp")
        except psutil.NoSuchProcess:
            continue
        for conn in conns:
            if conn.laddr and conn.raddr and (conn.laddr.port, conn.raddr.port) == ports:
                return child.pid
    raise AssertionError(f"no API process holds the connection from port {client_port}")


@contextmanager
def streaming(c: httpx.Client, body: dict[str, object], deadline: float) -> Iterator[int]:
    """A stream opened on `c`'s connection (once the token's earlier stream, just closed, has
    given its slot back); yields the client's port while the answer streams."""
    while True:
        with c.stream("POST", "/v1/chat/completions", json=body) as r:
            if r.status_code == 429 and time.monotonic() < deadline:
                r.read()
                time.sleep(0.05)
                continue
            assert r.status_code == 200, r.read()
            port = r.extensions["network_stream"].get_extra_info("client_addr")[1]
            chunks = r.iter_raw()  # kept: a dropped iterator closes the response
            next(chunks)  # the answer is streaming on this connection
            yield port
            return


def test_two_processes_answer_and_the_stream_limit_holds_across_them(
    api: tuple[str, subprocess.Popen[bytes], MockLLM], db: psycopg.Connection
) -> None:
    base, proc, _ = api
    api_port = int(base.rsplit(":", 1)[1])
    token = accounts.issue_token(db, accounts.ensure_user(db, "ann", "admin"), "test")
    db.commit()
    headers = {"Authorization": f"Bearer {token}"}
    body = {"model": "mock", "stream": True, "messages": [{"role": "user", "content": "Talk."}]}
    # one client per connection: keep-alive keeps each on the process that accepted it
    by_process: dict[int, httpx.Client] = {}
    deadline = time.monotonic() + DEADLINE_S
    with ExitStack() as stack:
        while len(by_process) < 2:
            assert time.monotonic() < deadline, f"only processes {list(by_process)} answered"
            c = stack.enter_context(httpx.Client(base_url=base, headers=headers, timeout=60))
            with streaming(c, body, deadline) as client_port:
                by_process.setdefault(serving_process(proc, api_port, client_port), c)
        # the slot of each stream above went back when it closed; now one streams on the first
        # process, and the second refuses another stream for the same token
        first, second = by_process.values()
        with streaming(first, body, deadline):
            refused = second.post("/v1/chat/completions", json=body)
            assert refused.status_code == 429, refused.text
            assert refused.json()["error"]["code"] == "too_many_streams"
        ok = second.post("/v1/chat/completions", json={**body, "stream": False})
        assert ok.status_code == 200, ok.text
