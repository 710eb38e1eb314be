"""OpenAI compatibility against the real stack and the real CPU model: the openai SDK (stream with
usage, typed errors), LangChain's ChatOpenAI, model ids, stream chunks and the model list checked
against the SDK's types, a long conversation that must be fitted into the model's window,
follow-ups, and a client that disconnects aborting vLLM's request (vLLM's own /metrics say so)."""

from __future__ import annotations

import re
import time
from collections import defaultdict

import httpx
import openai
import pytest
from langchain_openai import ChatOpenAI
from openai.pagination import SyncPage
from openai.types import Model
from openai.types.chat import ChatCompletion, ChatCompletionChunk
from prometheus_client.parser import text_string_to_metric_families

from tests.api.test_chat_api import sse_events

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
    stack.wait_for_file("boiler.md")
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
    answer_tokens = 64  # room kept for the answer; generating more would only take longer
    with sdk(boiler) as client:
        for model in ("hearth", "smollm2"):
            resp = client.chat.completions.create(
                model=model,
                messages=[*history, {"role": "user", "content": QUESTION}],
                max_tokens=answer_tokens,
            )
            assert resp.choices[0].message.content
            assert resp.usage is not None
            assert resp.usage.prompt_tokens + answer_tokens <= 4096


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


def test_real_stream_chunks_and_the_model_list_validate(boiler: Stack) -> None:
    headers = {"Authorization": f"Bearer {boiler.token}"}
    with httpx.Client(base_url=boiler.api + "/v1", headers=headers, timeout=300) as http:
        models = SyncPage[Model].model_validate(http.get("/models").json())
        assert {m.id for m in models.data} >= {"hearth", "hearth:default", "smollm2"}
        r = http.post(
            "/chat/completions",
            json={
                "model": "hearth",
                "stream": True,
                "stream_options": {"include_usage": True},
                "max_tokens": 30,
                "messages": [{"role": "user", "content": QUESTION}],
            },
        )
    events = sse_events(r.text)
    assert r.status_code == 200 and events[-1] == "[DONE]"
    chunks = [ChatCompletionChunk.model_validate(e) for e in events[:-1]]
    final, usage = chunks[-2], chunks[-1]
    assert final.choices[0].finish_reason in ("stop", "length")
    assert isinstance((final.model_extra or {})["sources"], list)
    assert usage.choices == [] and usage.usage is not None and usage.usage.prompt_tokens > 0


def vllm_metrics(stack: Stack) -> dict[str, float]:
    """vLLM's own Prometheus metrics, summed over labels but `finished_reason`."""
    url = f"http://127.0.0.1:{stack.env['LLM_LOCAL_PORT']}/metrics"
    out: dict[str, float] = defaultdict(float)
    for family in text_string_to_metric_families(httpx.get(url, timeout=30).text):
        for sample in family.samples:
            reason = sample.labels.get("finished_reason")
            out[sample.name + (f"[{reason}]" if reason else "")] += sample.value
    return out


def finished_normally(metrics: dict[str, float]) -> float:
    return sum(metrics[f"vllm:request_success_total[{r}]"] for r in ("stop", "length"))


def test_a_client_that_disconnects_aborts_the_real_backend_request(boiler: Stack) -> None:
    """A long answer is started and the client goes away after its first tokens: vLLM stops
    generating it long before its max_tokens, and never finishes it (by a stop or by length).

    Judged by vLLM's counters rather than its `num_requests_running` gauge alone: on a loaded
    machine the gauge was once never seen above 0 in a minute's polling (CI rehearsal, three
    test workers), while the counters say how far the request got."""
    before = vllm_metrics(boiler)
    assert {f"vllm:request_success_total[{r}]" for r in ("stop", "length")} <= set(before)
    max_tokens = 2000
    body = {
        "model": "smollm2",
        "stream": True,
        "max_tokens": max_tokens,
        # greedy: sampled (vLLM's default temperature is 1) the model may stop after a few
        # numbers, and a finished request is no abandoned one
        "temperature": 0,
        "messages": [{"role": "user", "content": "Count from 1 to 1000, one number per line."}],
    }
    headers = {"Authorization": f"Bearer {boiler.token}"}
    with (
        httpx.Client(timeout=300) as http,
        http.stream("POST", boiler.api + "/v1/chat/completions", json=body, headers=headers) as r,
    ):
        assert r.status_code == 200
        got = 0
        for line in r.iter_lines():
            assert line != "data: [DONE]", "the answer ended before the client left"
            got += line.startswith("data: {") and '"content"' in line
            if got == 5:
                break
    # the client is gone: the request's generation must stop, well short of max_tokens
    generated = "vllm:generation_tokens_total"
    deadline = time.monotonic() + 120  # generating 2000 tokens on CPU takes far longer
    last = -1.0
    while True:
        after = vllm_metrics(boiler)
        if after["vllm:num_requests_running"] == 0 and after[generated] == last:
            break  # nothing running, and no token generated since the last look
        assert time.monotonic() < deadline, "vLLM still runs the abandoned request"
        last = after[generated]
        time.sleep(1.0)
    assert after[generated] - before[generated] < max_tokens / 2, (before[generated], after)
    assert finished_normally(after) == finished_normally(before), {
        k: v for k, v in after.items() if k.startswith("vllm:request_success")
    }
