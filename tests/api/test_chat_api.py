"""The chat API's edges on the real app, a real PostgreSQL and a scripted backend on a real
socket: model ids, relevance threshold, query rewrite, context budget, keep-alives, disconnects,
backend errors, and every response validated against the openai SDK's own types.

The answers of the real CPU model are tested end to end in tests/e2e; here the backend's
behaviour must be chosen per test.
"""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import httpx
import psycopg
import pytest
import uvicorn
from fastapi.testclient import TestClient
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from api.app import create_app
from api.chat import NOT_COVERED
from api.rewrite import REWRITE_INSTRUCTIONS
from api.store import accounts
from api.tokenizer import load_counter
from core.settings import get_settings
from retrieval import index
from tests.conftest import free_port
from tests.e2e.stack import llm_model_dir
from tests.factories import HashEmbedder, make_document
from tests.mock_llm import MockLLM, serve

EMB = HashEmbedder()
DOCS = (
    ("/w/boiler.md", "house", "The boiler error code E-4471 means the pressure sensor failed."),
    ("/w/garden.md", "house", "Tomatoes need full sun and watering every morning."),
    ("/w/report.md", "work", "The quarterly boiler report lists the office maintenance costs."),
)


@pytest.fixture
def token(db: psycopg.Connection) -> str:
    return seed(db)


def seed(db: psycopg.Connection) -> str:
    """Index DOCS and return an admin token (for the chat tests in other modules too)."""
    for path, collection, text in DOCS:
        doc = make_document(path, [text], title=path.rsplit("/", 1)[-1])
        doc.collection = collection
        index.replace_chunks(db, doc, EMB.embed([c.embed_text for c in doc.chunks]))
    token = accounts.issue_token(db, accounts.ensure_user(db, "ann", "admin"), "test")
    db.commit()
    return token


def client(pg_url: str, token: str | None, mock: MockLLM, **settings: Any) -> TestClient:
    """The app on `pg_url` and the scripted backend, speaking as `token` (None: anonymous)."""
    base: dict[str, Any] = {
        "database_url": pg_url,
        "llm_base_url": mock.url,
        "llm_model": "mock",
        "llm_tokenizer": llm_model_dir(),
        "relevance_threshold": 0.05,
    }
    s = get_settings(**{**base, **settings})
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return TestClient(create_app(s, embedder=EMB), headers=headers)


def ask(question: str, model: str = "hearth", **extra: Any) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": question}], **extra}


def sse_events(text: str) -> list[Any]:
    return [
        json.loads(line[6:]) if line[6:] != "[DONE]" else "[DONE]"
        for line in text.splitlines()
        if line.startswith("data: ")
    ]


def test_models_list_collections_and_the_backend_window(
    pg_url: str, token: str, mock: MockLLM
) -> None:
    with client(pg_url, token, mock) as c:
        c.post("/v1/chat/completions", json=ask("E-4471?"))  # the window is learnt by probing
        data = c.get("/v1/models").json()["data"]
        ids = [m["id"] for m in data]
        # the admin's: `default`, their personal collection, and those the documents are in
        assert ids == [
            "hearth",
            "hearth:default",
            "hearth:house",
            "hearth:user-ann",
            "hearth:work",
            "mock",
        ]
        assert {m["max_model_len"] for m in data} == {2048}
        assert c.get("/v1/models/hearth:work").json()["id"] == "hearth:work"
        r = c.get("/v1/models/hearth:nope")
        assert r.status_code == 404 and r.json()["error"]["code"] == "model_not_found"


def test_a_collection_model_retrieves_from_that_collection_only(
    pg_url: str, token: str, mock: MockLLM
) -> None:
    mock.reply = lambda messages: "The quarterly boiler report lists the office costs."
    with client(pg_url, token, mock) as c:
        for model, paths in (("hearth:work", {"/w/report.md"}), ("hearth:house", None)):
            body = c.post("/v1/chat/completions", json=ask("boiler report", model)).json()
            ChatCompletion.model_validate(body)
            given = mock.requests[-1]["messages"][0]["content"]
            if paths:
                assert "quarterly" in given and "E-4471" not in given
                assert {s["path"] for s in body["sources"]} == paths
            else:
                assert "quarterly" not in given and "E-4471" in given
        r = c.post("/v1/chat/completions", json=ask("boiler", "hearth:missing"))
        assert r.status_code == 404 and r.json()["error"]["param"] == "model"


def test_plain_chat_passes_the_client_messages_without_retrieval(
    pg_url: str, token: str, mock: MockLLM
) -> None:
    with client(pg_url, token, mock) as c:
        msgs = [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": [{"type": "text", "text": "E-4471?"}]},
        ]
        body = c.post(
            "/v1/chat/completions", json={"model": "mock", "messages": msgs, "logit_bias": {}}
        ).json()
        ChatCompletion.model_validate(body)
        assert "sources" not in body
        assert mock.requests[-1]["messages"] == [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "E-4471?"},
        ]


def test_nothing_relevant_is_said_plainly_without_asking_the_model(
    pg_url: str, token: str, mock: MockLLM
) -> None:
    with client(pg_url, token, mock, relevance_threshold=0.9) as c:
        body = c.post("/v1/chat/completions", json=ask("Who won the 1954 World Cup?")).json()
        assert body["choices"][0]["message"]["content"] == NOT_COVERED
        assert body["sources"] == []
        stream = c.post("/v1/chat/completions", json=ask("Who won it?", stream=True)).text
        assert NOT_COVERED in stream and stream.rstrip().endswith("data: [DONE]")
    assert mock.requests == []


def test_a_follow_up_is_rewritten_before_retrieval(pg_url: str, token: str, mock: MockLLM) -> None:
    def reply(messages: list[dict[str, Any]]) -> str:
        if messages[0]["content"] == REWRITE_INSTRUCTIONS:
            return "Search query: tomatoes watering schedule\n(extra words)"
        return "Tomatoes need watering every morning."

    mock.reply = reply
    with client(pg_url, token, mock) as c:
        first = c.post("/v1/chat/completions", json=ask("How do I grow tomatoes?"))
        cid = first.headers["X-Conversation-Id"]
        assert first.json()["search_query"] == "How do I grow tomatoes?"  # no history: as asked
        body = c.post(
            "/v1/chat/completions",
            json=ask("And how often should I water them?"),
            headers={"X-Conversation-Id": cid},
        ).json()
        assert body["search_query"] == "tomatoes watering schedule"
        rewrite, answer = mock.requests[-2:]
        assert rewrite["max_tokens"] <= 64 and "How do I grow tomatoes?" in str(rewrite)
        assert answer["messages"][-1]["content"] == "And how often should I water them?"
        assert body["sources"][0]["path"] == "/w/garden.md"
    with client(pg_url, token, mock, query_rewrite=False) as c:
        body = c.post(
            "/v1/chat/completions",
            json=ask("And how often should I water them?"),
            headers={"X-Conversation-Id": cid},
        ).json()
        assert body["search_query"] == "And how often should I water them?"


def test_a_long_conversation_is_trimmed_to_the_backend_window(
    pg_url: str, token: str, mock: MockLLM
) -> None:
    """The backend reports 2048 tokens; 30 long turns and 300 answer tokens must fit."""
    long = "The pressure sensor of the boiler reads the water pressure every minute. " * 30
    history = [
        {"role": r, "content": f"{i} {long}"} for i in range(15) for r in ("user", "assistant")
    ]
    with client(pg_url, token, mock, query_rewrite=False) as c:
        c.get("/v1/models")
        for model in ("hearth", "mock"):
            msgs = [*history, {"role": "user", "content": "What does E-4471 mean?"}]
            r = c.post(
                "/v1/chat/completions", json={"model": model, "messages": msgs, "max_tokens": 300}
            )
            assert r.status_code == 200, r.text
            sent = mock.requests[-1]["messages"]
            counter = load_counter(llm_model_dir() / "tokenizer.json")
            assert counter.messages(sent) + 300 <= 2048
            assert sent[-1]["content"] == "What does E-4471 mean?"
            assert len(sent) < len(msgs)
        r = c.post("/v1/chat/completions", json=ask("x " * 3000, max_tokens=300))
        assert r.status_code == 400
        assert r.json()["error"]["code"] == "context_length_exceeded"


def test_stream_chunks_validate_and_carry_sources_and_usage(
    pg_url: str, token: str, mock: MockLLM
) -> None:
    mock.reply = lambda messages: "The boiler error code E-4471 means the pressure sensor failed."
    with client(pg_url, token, mock) as c:
        r = c.post(
            "/v1/chat/completions",
            json=ask("What does E-4471 mean?", stream=True, stream_options={"include_usage": True}),
        )
        assert r.headers["content-type"].startswith("text/event-stream")
        events = sse_events(r.text)
        assert events[-1] == "[DONE]"
        chunks = [ChatCompletionChunk.model_validate(e) for e in events[:-1]]
        assert chunks[-1].usage is not None and chunks[-1].choices == []
        final = events[-2 - 1]
        assert final["choices"][0]["finish_reason"] == "stop"
        assert final["sources"][0]["path"] == "/w/boiler.md"
        text = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
        assert "E-4471" in text and "Sources" in text and "[1]" in text
        quiet = c.post(
            "/v1/chat/completions", json=ask("What does E-4471 mean?", sources_footer=False)
        ).json()
        assert "Sources" not in quiet["choices"][0]["message"]["content"]
        assert quiet["sources"]


def test_long_grounding_sends_keepalives_then_the_answer(
    pg_url: str, token: str, mock: MockLLM
) -> None:
    mock.delay_s = 0.6  # the first token comes after several keep-alive periods
    with client(pg_url, token, mock, stream_keepalive_s=0.1) as c:
        question = ask("What does E-4471 mean?", stream=True)
        text = c.post("/v1/chat/completions", json=question).text
        assert text.startswith(": keep-alive\n\n")
        events = sse_events(text)
        said = "".join(e["choices"][0]["delta"].get("content") or "" for e in events[:-1])
        assert said.startswith("A plain answer.") and events[-1] == "[DONE]"
    mock.status, mock.delay_s = 503, 0
    # a failure before the first keep-alive is due (a long period here, so a loaded machine
    # cannot send one first) is still a JSON error with its status
    with client(pg_url, token, mock, stream_keepalive_s=30) as c:
        late = c.post("/v1/chat/completions", json=question)
        assert late.status_code == 503
        assert late.json()["error"]["type"] == "api_error"


def test_backend_errors_map_to_openai_errors(pg_url: str, token: str, mock: MockLLM) -> None:
    with client(pg_url, token, mock) as c:
        for status, code, expected in ((400, 400, None), (503, 503, "llm_busy"), (500, 502, None)):
            mock.status = status
            r = c.post("/v1/chat/completions", json=ask("What does E-4471 mean?"))
            assert r.status_code == code and r.json()["error"]["message"]
            if expected:
                assert r.json()["error"]["code"] == expected
        r = c.post("/v1/chat/completions", json=ask("E-4471?", n=2))
        assert r.status_code == 400 and r.json()["error"]["param"] == "n"


def test_context_length_error_from_the_backend_is_explained(
    pg_url: str, token: str, mock: MockLLM
) -> None:
    """Should a backend still refuse for length (a tokenizer unlike the configured one), the
    client gets a 400 that says so, in OpenAI's words."""
    mock.status = 400
    mock.error = "This model's maximum context length is 2048 tokens. However, you requested 2100"
    with client(pg_url, token, mock) as c:
        for stream in (False, True):
            r = c.post("/v1/chat/completions", json=ask("What does E-4471 mean?", stream=stream))
            err = r.json()["error"]
            assert r.status_code == 400 and err["code"] == "context_length_exceeded"
            assert "context window" in err["message"] and "2048" in err["message"]


def test_a_dead_backend_is_skipped_and_probed_back(pg_url: str, token: str) -> None:
    dead = f"http://127.0.0.1:{free_port()}/v1"
    with serve(MockLLM()) as live, serve(MockLLM()) as other:
        urls = f"{dead},{live.url},{other.url}"
        s = get_settings(
            database_url=pg_url, llm_base_url=urls, llm_model="mock", llm_health_interval_s=0.2
        )
        with TestClient(
            create_app(s, embedder=EMB), headers={"Authorization": f"Bearer {token}"}
        ) as c:
            for _ in range(6):
                r = c.post("/v1/chat/completions", json=ask("x", "mock"))
                assert r.status_code == 200, r.text
            assert len(live.requests) == 3 and len(other.requests) == 3  # round-robin
            backends = c.app.state.hearth.llm.backends  # type: ignore[attr-defined]
            assert [b.healthy for b in backends] == [False, True, True]
            other.status = 503  # now down: out of rotation, its requests retried elsewhere
            for _ in range(4):
                assert c.post("/v1/chat/completions", json=ask("x", "mock")).status_code == 200
            assert not backends[2].healthy
            other.status = 200
            deadline = time.monotonic() + 10
            while not backends[2].healthy and time.monotonic() < deadline:
                time.sleep(0.1)
            assert backends[2].healthy  # the health probe put it back


def test_a_client_that_disconnects_cancels_the_backend_stream(
    pg_url: str, token: str, mock: MockLLM
) -> None:
    mock.delay_s = 0.2
    mock.reply = lambda messages: " ".join(["word"] * 100)
    s = get_settings(database_url=pg_url, llm_base_url=mock.url, llm_model="mock")
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(create_app(s, embedder=EMB), port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        while not server.started:
            time.sleep(0.05)
        with (
            httpx.Client(timeout=30) as http,
            http.stream(
                "POST",
                f"http://127.0.0.1:{port}/v1/chat/completions",
                json=ask("say words", "mock", stream=True),
                headers={"Authorization": f"Bearer {token}"},
            ) as r,
        ):
            got = 0
            for line in r.iter_lines():
                got += "word" in line
                if got == 3:
                    break
        deadline = time.monotonic() + 10
        while mock.cancelled == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert mock.cancelled == 1 and mock.finished == 0
    finally:
        server.should_exit = True
        thread.join(10)


def test_sampling_parameters_reach_the_backend_unchanged(
    pg_url: str, token: str, mock: MockLLM
) -> None:
    given = {
        "temperature": 0.3,
        "top_p": 0.9,
        "stop": ["\n\n", "END"],
        "seed": 42,
        "response_format": {"type": "json_object"},
        "user": "ann@phone",
    }
    with client(pg_url, token, mock) as c:
        for model in ("hearth", "mock"):
            for budget in ({"max_tokens": 77}, {"max_completion_tokens": 77}):
                body = ask(
                    "What does E-4471 mean?", model, n=1, logit_bias={"42": 1}, future={"x": 1}
                )
                r = c.post("/v1/chat/completions", json={**body, **given, **budget})
                assert r.status_code == 200, r.text
                sent = mock.requests[-1]
                assert {k: sent.get(k) for k in given} == given, model
                assert sent["max_tokens"] == 77  # the one the context budget was made for
                assert not {"n", "logit_bias", "future", "max_completion_tokens"} & set(sent)


def test_metadata_conversation_id_continues_a_thread_like_the_header(
    pg_url: str, token: str, mock: MockLLM
) -> None:
    mock.reply = lambda messages: f"Answer {len(messages)}."
    with client(pg_url, token, mock) as c:
        sent = []
        for how in ("header", "metadata"):
            cid = c.post("/v1/chat/completions", json=ask("First?", "mock")).headers[
                "X-Conversation-Id"
            ]
            follow = ask("And then?", "mock")
            if how == "header":
                r = c.post("/v1/chat/completions", json=follow, headers={"X-Conversation-Id": cid})
            else:
                r = c.post(
                    "/v1/chat/completions", json={**follow, "metadata": {"conversation_id": cid}}
                )
            assert r.headers["X-Conversation-Id"] == cid and r.json()["conversation_id"] == cid
            sent.append(mock.requests[-1]["messages"])
            stored = c.get(f"/v1/conversations/{cid}").json()["messages"]
            assert [m["content"] for m in stored] == [
                "First?",
                "Answer 1.",
                "And then?",
                "Answer 3.",
            ]
        assert sent[0] == sent[1]
        assert [m["content"] for m in sent[1]] == ["First?", "Answer 1.", "And then?"]
