"""The answer check in the chat turn (ANSWER_CHECK), and grounded sampling (ANSWER_TEMPERATURE),
on the real app, a real PostgreSQL and a scripted backend on a real socket: an unsupported sentence
is marked or withheld in plain and streamed answers alike, and an answer that nothing supports
becomes the "not covered" answer."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from api.answercheck import NOT_FOUND_MARK
from api.chat import NOT_COVERED
from tests.api.test_chat_api import ask, client, seed, sse_events
from tests.mock_llm import MockLLM


@pytest.fixture
def token(db: psycopg.Connection) -> str:
    return seed(db)


SUPPORTED = "The boiler error code E-4471 means the pressure sensor failed [1]."
INVENTED = "It was fitted by Siemens in 1987 [1]."
QUESTION = "What does E-4471 mean?"


def answer(c: Any, stream: bool) -> tuple[str, list[dict[str, Any]], int]:
    """The answer's text, its sources and how many content chunks carried it."""
    r = c.post("/v1/chat/completions", json=ask(QUESTION, stream=stream, sources_footer=False))
    assert r.status_code == 200, r.text
    if not stream:
        ChatCompletion.model_validate(r.json())
        return r.json()["choices"][0]["message"]["content"], r.json()["sources"], 1
    events = sse_events(r.text)
    assert events[-1] == "[DONE]"
    chunks = [ChatCompletionChunk.model_validate(e) for e in events[:-1]]
    pieces = [ch.choices[0].delta.content or "" for ch in chunks if ch.choices]
    pieces = [p for p in pieces if p]
    # the scripted backend streams each word with a space after it
    return "".join(pieces).rstrip(), events[-2]["sources"], len(pieces)


@pytest.mark.parametrize("stream", [False, True])
def test_an_unsupported_sentence_is_marked(
    pg_url: str, token: str, mock: MockLLM, stream: bool
) -> None:
    mock.reply = lambda messages: f"{SUPPORTED} {INVENTED}"
    with client(pg_url, token, mock, answer_check="mark") as c:
        text, sources, _ = answer(c, stream)
    assert text == f"{SUPPORTED} It was fitted by Siemens in 1987 {NOT_FOUND_MARK}."
    assert [s["path"] for s in sources] == ["/w/boiler.md"]


@pytest.mark.parametrize("stream", [False, True])
def test_an_unsupported_sentence_is_withheld(
    pg_url: str, token: str, mock: MockLLM, stream: bool
) -> None:
    mock.reply = lambda messages: f"{INVENTED} {SUPPORTED} {INVENTED}"
    with client(pg_url, token, mock, answer_check="withhold") as c:
        text, sources, _ = answer(c, stream)
    assert text.strip() == SUPPORTED
    assert "Siemens" not in text and sources


@pytest.mark.parametrize("check", ["mark", "withhold"])
@pytest.mark.parametrize("stream", [False, True])
def test_an_answer_nothing_supports_becomes_not_covered(
    pg_url: str, token: str, mock: MockLLM, stream: bool, check: str
) -> None:
    mock.reply = lambda messages: f"{INVENTED} The warranty runs until 2031."
    with client(pg_url, token, mock, answer_check=check) as c:
        text, sources, _ = answer(c, stream)
        assert text == NOT_COVERED and sources == []
        stored = c.get("/v1/conversations").json()["data"][0]
        turns = c.get(f"/v1/conversations/{stored['id']}").json()["messages"]
        assert turns[-1]["content"] == NOT_COVERED


def test_a_stream_goes_out_sentence_by_sentence(pg_url: str, token: str, mock: MockLLM) -> None:
    """Each checked sentence goes out when it is complete, not with the whole answer. The words
    come as a model sends them, over time (~0.25 s a sentence): what arrives together in one
    read may go out together (the relay batches it)."""
    mock.reply = lambda messages: " ".join([SUPPORTED] * 3)
    mock.tokens_per_s = 50
    with client(pg_url, token, mock, answer_check="mark") as c:
        text, _, pieces = answer(c, stream=True)
    assert text == " ".join([SUPPORTED] * 3)
    assert pieces >= 3


@pytest.mark.parametrize("stream", [False, True])
def test_off_passes_the_answer_as_the_model_gave_it(
    pg_url: str, token: str, mock: MockLLM, stream: bool
) -> None:
    mock.reply = lambda messages: f"{SUPPORTED} {INVENTED}"
    with client(pg_url, token, mock, answer_check="off") as c:
        text, _, _ = answer(c, stream)
    assert text == f"{SUPPORTED} {INVENTED}"


def test_grounded_answers_are_greedy_unless_the_request_says(
    pg_url: str, token: str, mock: MockLLM
) -> None:
    with client(pg_url, token, mock) as c:
        c.post("/v1/chat/completions", json=ask(QUESTION))
        assert mock.requests[-1]["temperature"] == 0
        c.post("/v1/chat/completions", json=ask(QUESTION, temperature=0.7))
        assert mock.requests[-1]["temperature"] == 0.7
        c.post("/v1/chat/completions", json=ask(QUESTION, model="mock"))  # plain chat
        assert "temperature" not in mock.requests[-1]
    with client(pg_url, token, mock, answer_temperature="backend") as c:
        c.post("/v1/chat/completions", json=ask(QUESTION))
        assert "temperature" not in mock.requests[-1]
