"""Chat through the real app (real PostgreSQL, a real socket) with backends as they are: the
scripted vLLM, llama.cpp server, llama-cpp-python, Ollama and LM Studio of
tests/scripted_backends.py, each serving a 512-token window while Hearth is left at its default
LLM_MAX_MODEL_LEN (4096), with enough retrieved text to overflow 512.

The issue this answers (18): llama-cpp-python with `--n_ctx 512` answered a one-line question with
a 400 "reduce the length of the messages" (plain) or a 502 "stream ended mid-answer" (streamed),
and its busy single slot made Hearth take it out of rotation mid-answer.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import psycopg
import pytest
from fastapi.testclient import TestClient
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from api.app import create_app
from api.store import accounts
from core.settings import get_settings
from retrieval import index
from tests.conftest import serve_app
from tests.factories import HashEmbedder, make_document
from tests.mock_llm import serve
from tests.scripted_backends import Scripted

EMB = HashEmbedder()
QUESTION = "What does the boiler error code E-4471 mean?"
# five different passages of ~90 words about the boiler: together more than 512 tokens
TOPICS = ("pressure sensor", "circulation pump", "expansion vessel", "flue gas fan", "gas valve")


def passage(i: int) -> str:
    part = TOPICS[i]
    return (
        f"Boiler manual, part {i + 1}: the {part}. The boiler error code E-4471 means the pressure "
        f"sensor failed; this part explains how the {part} relates to it. "
        + " ".join(
            f"Step {n}: check the {part} of the boiler for fault {i * 10 + n}, note the reading "
            f"of the {part} in the service log, and compare it with the value on page {n + 3}."
            for n in range(1, 3)
        )
    )


@pytest.fixture
def token(db: psycopg.Connection) -> str:
    for i in range(5):
        doc = make_document(f"/w/boiler-{i}.md", [passage(i)], title=f"boiler-{i}.md")
        index.replace_chunks(db, doc, EMB.embed([c.embed_text for c in doc.chunks]))
    token = accounts.issue_token(db, accounts.ensure_user(db, "ann", "admin"), "test")
    db.commit()
    return token


def settings(pg_url: str, backend: Scripted, **extra: Any) -> Any:
    base: dict[str, Any] = {
        "database_url": pg_url,
        "llm_base_url": backend.url,
        "llm_model": backend.model,
        "relevance_threshold": 0.05,
        "query_rewrite": False,
    }
    return get_settings(**{**base, **extra})


def app_client(pg_url: str, token: str, backend: Scripted, **extra: Any) -> TestClient:
    app = create_app(settings(pg_url, backend, **extra), embedder=EMB)
    return TestClient(app, headers={"Authorization": f"Bearer {token}"})


def ask(stream: bool = False) -> dict[str, Any]:
    return {
        "model": "hearth",
        "messages": [{"role": "user", "content": QUESTION}],
        "stream": stream,
    }


def events_of(text: str) -> list[Any]:
    return [
        json.loads(line[6:]) if line[6:] != "[DONE]" else "[DONE]"
        for line in text.splitlines()
        if line.startswith("data: ")
    ]


def streamed_text(events: list[Any]) -> str:
    return "".join(
        (c.get("delta") or {}).get("content") or ""
        for e in events
        if isinstance(e, dict)
        for c in e.get("choices") or []
    )


def check_answer(r: httpx.Response, stream: bool) -> None:
    assert r.status_code == 200, r.text
    if not stream:
        body = ChatCompletion.model_validate(r.json())
        assert "E-4471" in (body.choices[0].message.content or "")
        assert r.json()["sources"], r.json()
        return
    events = events_of(r.text)
    assert events[-1] == "[DONE]", r.text
    errors = [e for e in events if isinstance(e, dict) and "error" in e]
    assert not errors, errors
    for e in events[:-1]:
        ChatCompletionChunk.model_validate(e)
    assert "E-4471" in streamed_text(events)
    assert any(e.get("sources") for e in events if isinstance(e, dict))


@pytest.mark.parametrize("first", ["plain", "streamed"])
def test_llama_cpp_python_with_a_small_window_answers_after_one_retry(
    pg_url: str, token: str, first: str
) -> None:
    """It reports no window: Hearth assumes 4096, is refused once, reads 512 from the refusal
    (for a streamed request, by asking again without streaming), fits fewer passages, answers,
    and remembers 512 for that backend: the next request, of either kind, is not refused."""
    with (
        serve(Scripted("llama_cpp_python", n_ctx=512)) as backend,  # type: ignore[arg-type]
        app_client(pg_url, token, backend) as c,
    ):
        first_stream = first == "streamed"
        check_answer(c.post("/v1/chat/completions", json=ask(first_stream)), first_stream)
        # refused once; a streamed refusal is an empty stream, so Hearth asks again, unstreamed
        assert backend.refused == (2 if first_stream else 1), backend.hits
        refused = backend.refused
        check_answer(c.post("/v1/chat/completions", json=ask(not first_stream)), not first_stream)
        assert backend.refused == refused, backend.hits
        windows = {m["max_model_len"] for m in c.get("/v1/models").json()["data"]}
        assert windows == {512}


def test_a_refusal_that_shows_hearth_counts_high_lets_more_passages_in(
    pg_url: str, token: str
) -> None:
    """Without the model's tokenizer Hearth estimates high. llama-cpp-python names the prompt's
    real size when it refuses: fitted by the limit alone, no passage would be left in a
    256-token window; scaled by how much Hearth over-counted, the best one still fits."""
    frugal = Scripted("llama_cpp_python", n_ctx=256, token_factor=0.5)
    with serve(frugal) as backend, app_client(pg_url, token, backend) as c:  # type: ignore[arg-type]
        for stream in (False, True):
            check_answer(c.post("/v1/chat/completions", json=ask(stream)), stream)
        assert backend.refused == 1, backend.hits


@pytest.mark.parametrize("flavor", ["vllm", "llama_cpp_server", "ollama", "lmstudio"])
def test_a_window_the_backend_reports_is_used_before_any_refusal(
    pg_url: str, token: str, flavor: str
) -> None:
    with (
        serve(Scripted(flavor, n_ctx=512)) as backend,  # type: ignore[arg-type]
        app_client(pg_url, token, backend) as c,
    ):
        for stream in (False, True):
            check_answer(c.post("/v1/chat/completions", json=ask(stream)), stream)
        assert backend.refused == 0, backend.hits
        assert {m["max_model_len"] for m in c.get("/v1/models").json()["data"]} == {512}


def test_a_refusal_that_names_no_limit_is_answered_after_asking_the_backend_again(
    pg_url: str, token: str
) -> None:
    """Ollama without num_ctx in its Modelfile and the model not yet loaded says nothing of the
    window it will serve; its refusal names no numbers either. By then the model is loaded, and
    /api/ps says its window."""
    quiet = Scripted("ollama", n_ctx=512, num_ctx_in_modelfile=False, loaded=False)
    with serve(quiet) as backend, app_client(pg_url, token, backend) as c:  # type: ignore[arg-type]
        check_answer(c.post("/v1/chat/completions", json=ask(False)), False)
        assert backend.refused == 1, backend.hits
        check_answer(c.post("/v1/chat/completions", json=ask(True)), True)
        assert backend.refused == 1, backend.hits


def test_a_backend_error_mid_stream_reaches_the_client_in_its_words(
    pg_url: str, token: str
) -> None:
    failing = Scripted("llama_cpp_server", n_ctx=4096, fail_mid_stream=True)
    with serve(failing) as backend, app_client(pg_url, token, backend) as c:  # type: ignore[arg-type]
        r = c.post("/v1/chat/completions", json=ask(True))
    events = events_of(r.text)
    errors = [e["error"] for e in events if isinstance(e, dict) and "error" in e]
    assert len(errors) == 1 and "Compute error." in errors[0]["message"], errors
    assert events[-1] == "[DONE]"
    assert streamed_text(events).startswith("The")  # what was said before it is kept


@contextmanager
def api(app_settings: Any) -> Iterator[str]:
    """The real app on a real socket, so that a stream and /ready run at the same time."""
    with serve_app(create_app(app_settings, embedder=EMB)) as url:
        yield url


def test_a_busy_single_slot_backend_stays_ready_and_in_rotation(
    pg_url: str, token: str, caplog: pytest.LogCaptureFixture
) -> None:
    """llama-cpp-python answers nothing else while it generates. During a long answer /ready
    stays 200 and the health probes (every 0.3 s here) do not take the backend out."""
    reply = "The boiler error code E-4471 means " + " ".join(f"w{i}" for i in range(40))
    slow = Scripted("llama_cpp_python", n_ctx=4096, reply=reply, delay_s=0.2)
    caplog.set_level(logging.INFO, logger="api.llm")
    # the words are filler no passage holds: the answer check would (rightly) refuse them
    busy = {"llm_health_interval_s": 0.3, "answer_check": "off"}
    with serve(slow) as backend, api(settings(pg_url, backend, **busy)) as url:  # type: ignore[arg-type]
        headers = {"Authorization": f"Bearer {token}"}
        answer: dict[str, httpx.Response] = {}

        def chat() -> None:
            answer["r"] = httpx.post(
                url + "/v1/chat/completions", json=ask(True), headers=headers, timeout=60
            )

        worker = threading.Thread(target=chat)
        worker.start()
        deadline = time.monotonic() + 30
        while not backend.requests:
            assert time.monotonic() < deadline, "the chat never reached the backend"
            time.sleep(0.02)
        ready = httpx.get(url + "/ready", timeout=30)
        worker.join(60)
    assert ready.status_code == 200, ready.text
    events = events_of(answer["r"].text)
    assert events[-1] == "[DONE]" and streamed_text(events).startswith(reply), answer["r"].text
    assert "taken out of rotation" not in caplog.text, caplog.text


def test_an_app_that_never_chats_never_asks_the_backend_anything(pg_url: str, token: str) -> None:
    """`hearth eval` runs the app for search only: no probe, so no 'taken out of rotation'."""
    with serve(Scripted("vllm")) as backend:  # type: ignore[arg-type]
        with app_client(pg_url, token, backend, llm_health_interval_s=0.05) as c:
            assert c.get("/health").status_code == 200
            for _ in range(3):
                r = c.post("/v1/search", json={"query": "boiler pressure sensor"})
                assert r.status_code == 200, r.text
        assert backend.hits == []
