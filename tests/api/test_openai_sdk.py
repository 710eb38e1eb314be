"""The official openai client against the real app (TestClient transport, a real PostgreSQL, a
scripted backend on a real socket): every error status surfaces as the SDK's typed exception with
an OpenAI-shaped body, and every kind of response validates against the SDK's pydantic types.

AuthenticationError and NotFoundError against the real CPU model are in tests/e2e.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import openai
import psycopg
import pytest
from fastapi.testclient import TestClient
from openai.pagination import SyncCursorPage, SyncPage
from openai.types import CreateEmbeddingResponse, FileObject, Model
from openai.types.chat import ChatCompletion, ChatCompletionChunk, ChatCompletionMessageParam
from openai.types.shared import ErrorObject

from api.store import accounts
from tests.api.test_chat_api import ask, client, seed, sse_events
from tests.conftest import free_port
from tests.mock_llm import MockLLM

QUESTION: list[ChatCompletionMessageParam] = [{"role": "user", "content": "What does E-4471 mean?"}]


@pytest.fixture
def token(db: psycopg.Connection) -> str:
    return seed(db)


def sdk(c: TestClient, token: str) -> openai.OpenAI:
    """The SDK speaking to the app in `c`; no retries, so each status is seen once."""
    return openai.OpenAI(
        base_url="http://testserver/v1", api_key=token, http_client=c, max_retries=0
    )


def shaped(exc: openai.APIStatusError, status: int, code: str | None = None) -> ErrorObject:
    """The error's status and its body in OpenAI's error shape (as the SDK read it too)."""
    assert exc.status_code == status
    assert exc.response.headers["content-type"].startswith("application/json")
    err = ErrorObject.model_validate(exc.response.json()["error"])
    assert exc.code == err.code and exc.message.endswith(err.message)
    if code is not None:
        assert err.code == code
    return err


def test_rate_limited_is_a_rate_limit_error_with_retry_after(
    pg_url: str, token: str, mock: MockLLM
) -> None:
    with client(pg_url, token, mock, rate_limit_rps=0.001, rate_limit_burst=1) as c:
        api = sdk(c, token)
        api.models.list()
        with pytest.raises(openai.RateLimitError) as caught:
            api.chat.completions.create(model="mock", messages=QUESTION)
    err = shaped(caught.value, 429, "rate_limit_exceeded")
    assert err.type == "rate_limit_error"
    assert int(caught.value.response.headers["Retry-After"]) >= 1


def test_bad_requests_are_bad_request_errors(pg_url: str, token: str, mock: MockLLM) -> None:
    with client(pg_url, token, mock) as c:
        api = sdk(c, token)
        with pytest.raises(openai.BadRequestError) as caught:
            api.chat.completions.create(model="hearth", messages=QUESTION, n=2)
        assert shaped(caught.value, 400, "unsupported_value").param == "n"
        mock.status = 400
        mock.error = "This model's maximum context length is 2048 tokens. However, you asked 3000"
        for stream in (False, True):
            with pytest.raises(openai.BadRequestError) as caught:
                api.chat.completions.create(model="hearth", messages=QUESTION, stream=stream)
            assert "context window" in shaped(caught.value, 400, "context_length_exceeded").message


def test_admin_routes_are_permission_denied_to_a_user(
    db: psycopg.Connection, pg_url: str, token: str, mock: MockLLM
) -> None:
    user_token = accounts.issue_token(db, accounts.ensure_user(db, "bob"), "test")
    db.commit()
    with client(pg_url, token, mock) as c:
        api = sdk(c, user_token)
        assert api.models.list().data  # a valid token, an ordinary user
        with pytest.raises(openai.PermissionDeniedError) as caught:
            api.get("/admin/users", cast_to=object)
        assert shaped(caught.value, 403, "admin_only").type == "permission_error"
        assert sdk(c, token).get("/admin/users", cast_to=object)  # an admin may


def test_a_body_against_the_schema_is_unprocessable(pg_url: str, token: str, mock: MockLLM) -> None:
    with client(pg_url, token, mock) as c:
        api = sdk(c, token)
        for bad in ({"temperature": 7}, {"top_p": 0}, {"max_tokens": 0}):
            with pytest.raises(openai.UnprocessableEntityError) as caught:
                api.chat.completions.create(model="mock", messages=QUESTION, extra_body=bad)
            assert shaped(caught.value, 422, "invalid_request").param == next(iter(bad))
        with pytest.raises(openai.UnprocessableEntityError) as caught:
            api.chat.completions.create(model="mock", messages=[])
        assert shaped(caught.value, 422).param == "messages"
    assert mock.requests == []


def test_backend_down_and_failing_are_server_errors(pg_url: str, token: str, mock: MockLLM) -> None:
    dead = MockLLM(url=f"http://127.0.0.1:{free_port()}/v1")  # nothing listens there
    with client(pg_url, token, dead) as c:
        for stream in (False, True):
            with pytest.raises(openai.InternalServerError) as caught:
                sdk(c, token).chat.completions.create(
                    model="mock",
                    messages=QUESTION,
                    stream=stream,
                )
            assert shaped(caught.value, 503, "llm_unavailable").type == "api_error"
    with client(pg_url, token, mock) as c:
        for status, answered in ((503, 503), (500, 502), (404, 502)):
            mock.status = status
            with pytest.raises(openai.InternalServerError) as caught:
                sdk(c, token).chat.completions.create(model="hearth", messages=QUESTION)
            shaped(caught.value, answered)


def test_a_backend_that_times_out_is_a_504(pg_url: str, token: str, mock: MockLLM) -> None:
    """The backend is slower than its deadline (LLM_DEADLINE_MAX_S for a JSON answer,
    LLM_TIMEOUT_S before a stream's first token): Hearth answers 504 JSON (the SDK's own, longer
    timeout is not what fires)."""

    def slow(messages: list[dict[str, Any]]) -> str:
        time.sleep(1.0)  # blocks only the mock's own server thread
        return "Too late."

    mock.reply = slow
    with client(pg_url, token, mock, llm_timeout_s=0.2, llm_deadline_max_s=0.3) as c:
        api = sdk(c, token).with_options(timeout=60)
        with pytest.raises(openai.InternalServerError) as caught:
            api.chat.completions.create(model="mock", messages=QUESTION)
        shaped(caught.value, 504, "llm_timeout")
        mock.reply = lambda messages: "Too late as well."
        mock.delay_s = 1.0  # the stream opens, its first token comes after the timeout
        with pytest.raises(openai.InternalServerError) as caught:
            api.chat.completions.create(model="mock", messages=QUESTION, stream=True)
        shaped(caught.value, 504, "llm_timeout")


def test_a_json_body_over_max_request_mb_is_a_413(pg_url: str, token: str, mock: MockLLM) -> None:
    big: list[ChatCompletionMessageParam] = [{"role": "user", "content": "boiler " * 4000}]
    with client(pg_url, token, mock, max_request_mb=0.01) as c:
        with pytest.raises(openai.APIStatusError) as caught:
            sdk(c, token).chat.completions.create(model="mock", messages=big)
        shaped(caught.value, 413, "request_too_large")

        def chunked() -> Iterator[bytes]:  # no Content-Length: cut off while it arrives
            yield b'{"model": "mock", "messages": [{"role": "user", "content": "'
            yield b"boiler " * 4000
            yield b'"}]}'

        r = c.post(
            "/v1/chat/completions", content=chunked(), headers={"Content-Type": "application/json"}
        )
        assert r.status_code == 413
        assert ErrorObject.model_validate(r.json()["error"]).type == "invalid_request_error"
    assert mock.requests == []


# --- schema conformance ---------------------------------------------------------------------


def test_every_response_validates_against_the_sdk_types(
    pg_url: str, token: str, mock: MockLLM
) -> None:
    mock.reply = lambda messages: "The boiler error code E-4471 means the pressure sensor failed."
    with client(pg_url, token, mock) as c:
        listed = c.get("/v1/models").json()
        page = SyncPage[Model].model_validate(listed)
        assert [m.id for m in page.data] == [
            "hearth",
            "hearth:default",
            "hearth:house",
            "hearth:user-ann",
            "hearth:work",
            "mock",
        ]
        Model.model_validate(c.get("/v1/models/hearth:house").json())

        for model in ("hearth", "mock"):
            r = c.post("/v1/chat/completions", json=ask("What does E-4471 mean?", model))
            ChatCompletion.model_validate(r.json())
            streamed = c.post(
                "/v1/chat/completions",
                json=ask(
                    "What does E-4471 mean?",
                    model,
                    stream=True,
                    stream_options={"include_usage": True},
                ),
            )
            events = sse_events(streamed.text)
            assert events[-1] == "[DONE]"
            chunks = [ChatCompletionChunk.model_validate(e) for e in events[:-1]]
            final, usage = chunks[-2], chunks[-1]
            assert final.choices[0].finish_reason == "stop"
            assert ("sources" in (final.model_extra or {})) == (model == "hearth")
            assert usage.choices == [] and usage.usage is not None

        embedded = c.post("/v1/embeddings", json={"input": ["a b", "c"], "model": "hearth"})
        assert len(CreateEmbeddingResponse.model_validate(embedded.json()).data) == 2

        listing = c.get("/v1/files").json()
        assert SyncCursorPage[dict[str, Any]].model_validate(listing).has_more is False
        files = listing["data"]
        assert len(files) == 3
        for obj in [*files, c.get(f"/v1/files/{files[0]['id']}").json()]:
            parsed = FileObject.model_validate(obj)
            # OpenAI's three statuses; Hearth's finer one rides along as `index_status`
            assert parsed.status == {"indexed": "processed"}.get(obj["index_status"], "error")

        errors = [
            c.get("/v1/models", headers={"Authorization": "Bearer nope"}),
            c.get("/v1/models/nope"),
            c.post("/v1/chat/completions", json=ask("x", n=2)),
            c.post("/v1/chat/completions", json={"model": "mock"}),
            c.delete("/v1/files/file-999999"),
            c.post("/v1/embeddings", json={"input": "x", "model": "text-embedding-3-small"}),
        ]
        mock.status = 503
        errors.append(c.post("/v1/chat/completions", json=ask("What does E-4471 mean?")))
    assert [r.status_code for r in errors] == [401, 404, 400, 422, 404, 404, 503]
    for r in errors:
        assert set(r.json()) == {"error"}
        ErrorObject.model_validate(r.json()["error"])
