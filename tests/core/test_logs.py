"""Log lines, text and JSON, and the request id they carry: from an API request (its
X-Request-Id header) and from a Celery task that request queued, in a real worker process."""

from __future__ import annotations

import contextvars
import io
import json
import logging
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from core.embedded import EmbeddedRedis
from core.logs import JsonFormatter, TextFormatter, current_request_id, request_id_var
from core.settings import get_settings
from tests.factories import HashEmbedder
from tests.mock_llm import MockLLM, serve
from tests.workers.conftest import spawn_worker, stop_workers
from workers.celery_app import INTERACTIVE_QUEUE, TASK_INGEST, create_celery


@pytest.fixture
def captured() -> Iterator[tuple[logging.Logger, io.StringIO]]:
    """A logger whose lines, formatted as JSON, land in a buffer."""
    buffer = io.StringIO()
    handler = logging.StreamHandler(buffer)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("hearth-test-logs")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    yield logger, buffer
    logger.removeHandler(handler)


def lines(buffer: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in buffer.getvalue().splitlines()]


def test_json_lines_parse_and_carry_the_request_id(
    captured: tuple[logging.Logger, io.StringIO],
) -> None:
    logger, buffer = captured

    def in_request() -> None:
        request_id_var.set("req-1")
        logger.info("answered %d passages", 3)
        try:
            raise ValueError("bad\nthing")
        except ValueError:
            logger.exception("failed: %s", 'quote " and newline \n inside')

    contextvars.copy_context().run(in_request)
    logger.warning("outside any request")
    first, failed, outside = lines(buffer)
    assert first["message"] == "answered 3 passages" and first["level"] == "INFO"
    assert first["logger"] == "hearth-test-logs" and first["request_id"] == "req-1"
    assert re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+00:00$", str(first["ts"]))
    assert "exc_info" not in first
    assert failed["message"] == 'failed: quote " and newline \n inside'
    assert "ValueError: bad" in str(failed["exc_info"]) and failed["level"] == "ERROR"
    assert outside["request_id"] is None and current_request_id() is None


def test_text_lines_name_the_request_only_inside_one() -> None:
    fmt = TextFormatter()
    record = logging.LogRecord("api.chat", logging.INFO, __file__, 1, "hello", None, None)
    assert fmt.format(record).endswith(" INFO api.chat: hello")
    ctx = contextvars.copy_context()
    ctx.run(request_id_var.set, "abc")
    assert ctx.run(fmt.format, record).endswith(" INFO api.chat [abc]: hello")


def test_setup_logging_json_writes_one_object_per_line(env_without_hearth: dict[str, str]) -> None:
    code = (
        "import logging\n"
        "from core.logs import setup_logging, request_id_var\n"
        "setup_logging(fmt='json')\n"
        "request_id_var.set('r-9')\n"
        "logging.getLogger('api.x').info('two\\nlines')\n"
        "logging.getLogger('api.x').debug('not at INFO')\n"
        "logging.getLogger('httpx').info('HTTP Request: POST http://llm/v1/chat/completions')\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env=env_without_hearth,
        cwd=Path(__file__).resolve().parents[2],
    )
    [line] = out.stderr.splitlines()
    record = json.loads(line)
    assert record["message"] == "two\nlines" and record["request_id"] == "r-9"
    assert record["logger"] == "api.x" and record["level"] == "INFO"


def test_api_log_lines_carry_the_id_the_response_returned(pg_url: str) -> None:
    buffer = io.StringIO()
    handler = logging.StreamHandler(buffer)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("api.routes.health")  # logs why /ready says no
    logger.addHandler(handler)
    try:
        with serve(MockLLM(status=503)) as mock:
            settings = get_settings(database_url=pg_url, llm_base_url=mock.url, llm_model="mock")
            with TestClient(create_app(settings, embedder=HashEmbedder())) as c:
                made = c.get("/ready")
                given = c.get("/ready", headers={"X-Request-Id": "probe-7.a:b"})
                forged = c.get("/ready", headers={"X-Request-Id": 'x" "level": "ERROR'})
                other = c.get("/health")
    finally:
        logger.removeHandler(handler)
    assert {r.status_code for r in (made, given, forged)} == {503}
    rid = made.headers["X-Request-Id"]
    assert re.fullmatch(r"[0-9a-f]{32}", rid)
    assert given.headers["X-Request-Id"] == "probe-7.a:b"
    replaced = forged.headers["X-Request-Id"]  # not a plain token: a new id instead
    assert re.fullmatch(r"[0-9a-f]{32}", replaced) and replaced != rid
    assert re.fullmatch(r"[0-9a-f]{32}", other.headers["X-Request-Id"])
    logged = [line for line in lines(buffer) if line["logger"] == "api.routes.health"]
    assert [line["request_id"] for line in logged] == [rid, "probe-7.a:b", replaced]
    assert all("llm" in str(line["message"]) for line in logged)


@pytest.mark.slow
def test_a_worker_logs_the_request_id_its_task_was_sent_with(
    pg_url: str, tmp_path: Path, env_without_hearth: dict[str, str]
) -> None:
    redis = EmbeddedRedis(tmp_path / "redis")
    url = redis.start()
    log = tmp_path / "worker.log"
    (tmp_path / "w").mkdir()
    note = tmp_path / "w" / "note.md"
    note.write_text("# Note\n\nThe spare key is under the blue flowerpot.\n")
    env = {
        **env_without_hearth,
        "DATABASE_URL": pg_url,
        "REDIS_URL": url,
        "HEARTH_DATA_DIR": str(tmp_path / "data"),
        "HEARTH_WATCH_DIR": str(tmp_path / "w"),
        "LLM_BASE_URL": "http://127.0.0.1:9/v1",
        "LOG_FORMAT": "json",
    }
    worker = spawn_worker(env, log)
    try:
        app = create_celery(get_settings(redis_url=url))
        app.send_task(
            TASK_INGEST,
            args=[str(note), None, "cli"],
            queue=INTERACTIVE_QUEUE,
            headers={"request_id": "upload-1234"},
        )
        app.send_task(TASK_INGEST, args=[str(tmp_path / "w" / "gone.md")], queue=INTERACTIVE_QUEUE)
        app.close()
        deadline = time.monotonic() + 180
        while True:
            records = [
                json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")
            ]
            done = [r for r in records if "succeeded" in str(r["message"])]
            if len(done) == 2:
                break
            assert worker.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.3)
    finally:
        stop_workers([worker])
        redis.stop()
    indexed = [r for r in records if str(r["message"]).startswith("indexed ")]
    assert indexed and {r["request_id"] for r in indexed} == {"upload-1234"}
    # celery's own "Task … succeeded" line is written while the task's id is set, or none
    assert sorted(str(r["request_id"]) for r in done) == ["None", "upload-1234"]
