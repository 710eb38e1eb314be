"""Fixtures the API tests share: a real (embedded) Redis as the Celery broker the app queues
uploads and ingestion on, one per test module, and a client to it emptied for each test; a
scripted LLM backend on a real socket (a module wanting another script defines its own `mock`)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis

from core.embedded import EmbeddedRedis
from tests.mock_llm import MockLLM, serve


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedRedis]:
    server = EmbeddedRedis(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def queue(broker: EmbeddedRedis) -> Iterator[redis.Redis]:
    """A client to `broker` whose queues hold only this test's messages."""
    client = redis.Redis(unix_socket_path=str(broker.socket))
    client.flushdb()
    yield client
    client.close()


@pytest.fixture
def mock() -> Iterator[MockLLM]:
    with serve(MockLLM()) as m:
        yield m
