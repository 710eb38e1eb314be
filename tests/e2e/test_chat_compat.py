"""OpenAI compatibility against the real stack and the real CPU model: the openai SDK (stream with
usage, typed errors), LangChain's ChatOpenAI, model ids, a long conversation that must be fitted
into the model's window, and follow-ups. (That a disconnect closes the backend stream is tested
with a scripted backend in tests/api/test_chat_api.py.)"""

from __future__ import annotations

import re
import time

import httpx
import openai
import pytest
from langchain_openai import ChatOpenAI
from openai.types.chat import ChatCompletion

from .stack import Stack

pytestmark = pytest.mark.slow

BOILER = """# Boiler notes

The boiler in the cellar shows error code E-4471 when the water pressure falls below one bar.
To fix E-4471, open the blue filling valve until the gauge reads 1.5 bar.
"""


@pytest.fixture(scope="module")
def boiler(stack: Stack) -> Stack:
    stack.watch_dir.mkdir(parents=True, exist_ok=True)
    (stack.watch_dir / "boiler.md").write_text(BOILER)
    deadline = time.monotonic() + 300
    while not stack.query(
        "SELECT 1 FROM documents WHERE path LIKE '%%boiler.md' AND status = 'indexed'"
    ):
        assert time.monotonic() < deadline, stack.status()
        time.sleep(1)
    return stack


def sdk(stack: Stack) -> openai.OpenAI:
    return openai.OpenAI(
        base_url=stack.api + "/v1", api_key=stack.token or "", max_retries=0, timeout=300
    )


QUESTION = "What does boiler error code E-4471 mean?"


def test_sdk_stream_with_usage_ends_with_sources(boiler: Stack) -> None:
    with sdk(boiler) as client:
        stream = client.chat.completions.create(
            model="hearth",
            messages=[{"role": "user", "content": QUESTION}],
            stream=True,
            stream_options={"include_usage": True},
            max_tokens=60,
            temperature=0,
        )
        chunks = list(stream)
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0
    assert chunks[-1].choices == []
    final = chunks[-2]
    assert final.choices[0].finish_reason in ("stop", "length")
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text.strip()
    sources = (final.model_extra or {})["sources"]
    assert all(s["path"].endswith(".md") or s["path"].endswith(".pdf") for s in sources)
    cited = {int(n) for n in re.findall(r"\[(\d+)\]", text)}
    assert cited == {s["index"] for s in sources}  # every marker names a listed source


def test_every_model_id_answers_and_validates(boiler: Stack) -> None:
    headers = {"Authorization": f"Bearer {boiler.token}"}
    with httpx.Client(base_url=boiler.api + "/v1", headers=headers, timeout=300) as http:
        ids = [m["id"] for m in http.get("/models").json()["data"]]
        assert {"hearth", "hearth:default", "smollm2"} <= set(ids)
        for model in ("hearth", "hearth:default", "smollm2"):
            body = {
                "model": model,
                "messages": [{"role": "user", "content": QUESTION}],
                "max_tokens": 40,
                "some_future_field": {"ignored": True},
            }
            r = http.post("/chat/completions", json=body)
            assert r.status_code == 200, r.text
            completion = ChatCompletion.model_validate(r.json())
            assert completion.model == model and completion.choices[0].message.content
            assert ("sources" in r.json()) == model.startswith("hearth")


def test_langchain_chat_openai_invoke_and_stream(boiler: Stack) -> None:
    llm = ChatOpenAI(
        base_url=boiler.api + "/v1",
        api_key=boiler.token,  # type: ignore[arg-type]
        model="hearth",
        max_tokens=40,  # type: ignore[call-arg]
        max_retries=0,
        timeout=300,
    )
    answer = llm.invoke(QUESTION)
    assert isinstance(answer.content, str) and answer.content.strip()
    pieces = [c.content for c in llm.stream(QUESTION)]
    assert len(pieces) > 3 and "".join(str(p) for p in pieces).strip()


def test_a_long_conversation_fits_the_real_window(boiler: Stack) -> None:
    """vLLM serves a 4096-token window and refuses anything longer with a 400: thirty long
    turns of history must be trimmed by Hearth, not sent."""
    long = "We talked about the garden, the roses and the apple trees for a long while. " * 40
    history = [
        {"role": role, "content": f"{i}: {long}"}
        for i in range(15)
        for role in ("user", "assistant")
    ]
    with sdk(boiler) as client:
        for model in ("hearth", "smollm2"):
            resp = client.chat.completions.create(
                model=model,
                messages=[*history, {"role": "user", "content": QUESTION}],
                max_tokens=200,
            )
            assert resp.choices[0].message.content
            assert resp.usage is not None and resp.usage.prompt_tokens + 200 <= 4096


def test_a_follow_up_gets_a_standalone_search_query(boiler: Stack) -> None:
    headers = {"Authorization": f"Bearer {boiler.token}"}
    with httpx.Client(base_url=boiler.api + "/v1", headers=headers, timeout=300) as http:
        first = http.post(
            "/chat/completions",
            json={
                "model": "hearth",
                "max_tokens": 40,
                "messages": [{"role": "user", "content": QUESTION}],
            },
        )
        assert first.status_code == 200, first.text
        cid = first.headers["X-Conversation-Id"]
        follow = "And how do I fix it?"
        resp = http.post(
            "/chat/completions",
            headers={"X-Conversation-Id": cid},
            json={
                "model": "hearth",
                "max_tokens": 40,
                "messages": [{"role": "user", "content": follow}],
            },
        )
        assert resp.status_code == 200, resp.text
        r = resp.json()
        assert r["search_query"] and r["search_query"] != follow
        stored = http.get(f"/conversations/{cid}").json()
        assert [m["role"] for m in stored["messages"]] == ["user", "assistant"] * 2
