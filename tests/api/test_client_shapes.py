"""Citations in the shapes chat clients persist, on the real app (a real PostgreSQL, a scripted
backend on a real socket): Open WebUI's source events, OpenAI url_citation annotations as the
openai SDK parses them, LobeChat's grounding list, and the readable footer; and history hygiene
(an earlier answer's footer never reaches the rewrite or the prompt).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import openai
import psycopg
import pytest
from openai.types.chat import ChatCompletion, ChatCompletionChunk
from openai.types.chat.chat_completion_message import Annotation

from api.rewrite import REWRITE_INSTRUCTIONS
from api.store import accounts
from retrieval import index
from tests.api.test_chat_api import EMB, client, seed, sse_events
from tests.factories import make_document
from tests.mock_llm import MockLLM

ANSWER = "The boiler error code E-4471 means the pressure sensor failed [1]."
FOOTED = (
    "The boiler error code E-4471 means the pressure sensor failed [1]."
    "\n\nSources:\n[1] boiler.md (/root/.local/share/hearth/documents/boiler.md)"
)

# what Open WebUI 0.12 sends to an OpenAI connection for a chat (routers/openai.py
# get_headers_and_cookies: Content-Type and Authorization; aiohttp's own User-Agent), with the
# tools of native function calling, no conversation id, and the whole history
OPENWEBUI_HEADERS = {
    "User-Agent": "Python/3.11 aiohttp/3.12.15",
    "Content-Type": "application/json",
}
OPENWEBUI_TOOLS = [
    {"type": "function", "function": {"name": n, "description": n, "parameters": {}}}
    for n in ("search_web", "query_knowledge_files", "view_knowledge_file", "get_current_timestamp")
]


@pytest.fixture
def token(db: psycopg.Connection) -> str:
    return seed(db)


def openwebui_events(body: str) -> list[dict[str, Any]]:
    """The events Open WebUI takes from a stream, read as its parser reads them:
    backend/open_webui/utils/middleware.py (process_chat_response, stream_body_handler):
    each `data:` line is json.loads'ed; `if "event" in data ...: await
    event_emitter(data.get("event", {}))`; then `delta.annotations` of type url_citation become
    `{"type": "source", "data": {"source": {"name": title, "url": url}, "document": [title],
    "metadata": [{"source": url, "name": title}]}}` too."""
    emitted: list[dict[str, Any]] = []
    for line in body.splitlines():
        if not line.startswith("data:"):
            continue
        data = line[len("data:") :].strip()
        if data == "[DONE]":
            continue
        chunk = json.loads(data)
        if "event" in chunk:
            emitted.append(chunk.get("event", {}))
        choices = chunk.get("choices", [])
        if not choices:
            continue
        for a in choices[0].get("delta", {}).get("annotations") or []:
            if a.get("type") == "url_citation" and "url_citation" in a:
                u = a["url_citation"]
                emitted.append({"type": "source", "data": {"source": {"name": u.get("title")}}})
    return emitted


def streamed_text(events: list[Any]) -> str:
    return "".join(
        (e["choices"][0]["delta"].get("content") or "") for e in events[:-1] if e.get("choices")
    )


def test_openwebui_stream_carries_source_events_and_no_footer(
    pg_url: str, token: str, mock: MockLLM
) -> None:
    mock.reply = lambda messages: ANSWER
    body = {
        "model": "hearth",
        "stream": True,
        "tools": OPENWEBUI_TOOLS,
        "messages": [
            {"role": "user", "content": "What does E-4471 mean?"},
            {"role": "assistant", "content": FOOTED},
            {"role": "user", "content": "What does E-4471 mean exactly?"},
        ],
    }
    with client(pg_url, token, mock) as c:
        r = c.post("/v1/chat/completions", json=body, headers=OPENWEBUI_HEADERS)
    assert r.status_code == 200, r.text
    events = sse_events(r.text)
    for e in events[:-1]:
        ChatCompletionChunk.model_validate(e)
    emitted = openwebui_events(r.text)
    assert emitted, "no source event"
    assert all(e["type"] == "source" for e in emitted)
    first = emitted[0]["data"]
    # the shape Open WebUI's Citations component and its chat store read
    assert isinstance(first["source"]["name"], str) and first["source"]["name"]
    assert first["source"]["id"].startswith("http://testserver/ui/passages/")
    assert first["document"] == ["The boiler error code E-4471 means the pressure sensor failed."]
    assert first["metadata"][0]["source"] == first["source"]["id"]
    assert first["metadata"][0]["name"] == first["source"]["name"]
    assert len(emitted) == 1  # events only: no annotation that Open WebUI would count twice
    text = streamed_text(events)
    assert "E-4471" in text and "[1]" in text
    assert "Sources:" not in text
    # the earlier answer's footer reached neither the prompt nor (absolute path) anything
    sent = json.dumps(mock.requests)
    assert "Sources:" not in sent and "/root/.local" not in sent


def test_the_sdk_parses_annotations_streamed_and_not(
    pg_url: str, token: str, mock: MockLLM
) -> None:
    mock.reply = lambda messages: ANSWER
    with client(pg_url, token, mock, public_url="https://hearth.example/") as c:
        sdk = openai.OpenAI(
            base_url="http://testserver/v1", api_key=token, http_client=c, max_retries=0
        )
        done = sdk.chat.completions.create(
            model="hearth", messages=[{"role": "user", "content": "What does E-4471 mean?"}]
        )
        ChatCompletion.model_validate(done.model_dump())
        msg = done.choices[0].message
        assert msg.annotations, "no annotations"
        a = msg.annotations[0]
        assert a.type == "url_citation"
        cit = a.url_citation
        source = (done.model_extra or {})["sources"][0]
        assert cit.url.startswith(f"https://hearth.example/ui/passages/{source['chunk_id']}?")
        assert msg.content is not None
        assert msg.content[cit.start_index : cit.end_index] == "[1]"
        assert cit.title == "boiler.md"
        assert (done.model_extra or {})["citations"] == [cit.url]

        stream = sdk.chat.completions.create(
            model="hearth",
            messages=[{"role": "user", "content": "What does E-4471 mean?"}],
            stream=True,
        )
        found: list[Annotation] = []
        text = ""
        for chunk in stream:
            if not chunk.choices:
                continue
            delta = chunk.choices[0].delta
            text += delta.content or ""
            # the SDK's ChoiceDelta (openai 1.x/2.x) has no `annotations` field yet: it keeps
            # unknown fields as extras, which validate as the message's Annotation type
            for raw in (delta.model_extra or {}).get("annotations") or []:
                found.append(Annotation.model_validate(raw))
        assert [f.url_citation.url for f in found] == [cit.url]
        span = found[0].url_citation
        assert text[span.start_index : span.end_index] == "[1]"


def test_lobechat_by_protocol_gets_a_grounding_list_and_no_footer(
    pg_url: str, token: str, mock: MockLLM
) -> None:
    """LobeChat's OpenAI runtime (src/libs/model-runtime/utils/streams/openai.ts,
    transformOpenAIStream) turns a finish chunk's top-level `citations` (xAI's shape: URL
    strings) into a `grounding` part with its citation chips, numbered by position."""
    mock.reply = lambda messages: "E-4471 means the pressure sensor failed [1]. Water daily [2]."
    lobe = {"User-Agent": "OpenAI/JS 4.96.0", "X-Stainless-Lang": "js"}
    with client(pg_url, token, mock, citation_style="annotations") as c:
        r = c.post(
            "/v1/chat/completions",
            json={
                "model": "hearth",
                "stream": True,
                "stream_options": {"include_usage": True},
                "messages": [{"role": "user", "content": "E-4471 and tomatoes?"}],
            },
            headers=lobe,
        )
    events = sse_events(r.text)
    finish = next(e for e in events[:-1] if e.get("choices") and e["choices"][0]["finish_reason"])
    assert "usage" not in finish or not finish["usage"]  # else LobeChat reads usage, not these
    urls = finish["citations"]
    assert all(isinstance(u, str) and u.startswith("http://testserver/ui/passages/") for u in urls)
    by_number = {s["index"]: s for s in finish["sources"]}
    assert len(urls) == max(by_number)
    for n, s in by_number.items():
        assert f"/ui/passages/{s['chunk_id']}?" in urls[n - 1]
    assert "Sources:" not in streamed_text(events)


def test_footer_paths_are_relative_and_in_number_order(
    pg_url: str, db: psycopg.Connection, mock: MockLLM, tmp_path: Path
) -> None:
    root = tmp_path / "docs"
    for rel, text in (
        ("house/boiler.md", "The boiler error code E-4471 means the pressure sensor failed."),
        ("garden/tomato.md", "Tomatoes need full sun and watering every morning."),
    ):
        doc = make_document(str(root / rel), [text], title="")
        index.replace_chunks(db, doc, EMB.embed([c.embed_text for c in doc.chunks]))
    token = accounts.issue_token(db, accounts.ensure_user(db, "bo", "admin"), "t")
    db.commit()
    mock.reply = lambda messages: "Tomatoes want sun [2]. E-4471 is the sensor [1]."
    with client(pg_url, token, mock, hearth_watch_dir=str(root)) as c:
        r = c.post(
            "/v1/chat/completions",
            json={
                "model": "hearth",
                "messages": [{"role": "user", "content": "E-4471 boiler and tomatoes sun?"}],
            },
        )
    text = r.json()["choices"][0]["message"]["content"]
    footer = text[text.index("Sources:") :]
    lines = footer.splitlines()[1:]
    assert [ln[:3] for ln in lines] == ["[1]", "[2]"]
    assert str(tmp_path) not in footer and "(/" not in footer
    assert {ln.rsplit("(", 1)[1] for ln in lines} == {"house/boiler.md)", "garden/tomato.md)"}


def test_a_follow_up_is_rewritten_from_the_clean_text(
    pg_url: str, token: str, mock: MockLLM
) -> None:
    asked: list[str] = []

    def reply(messages: list[dict[str, Any]]) -> str:
        if messages[0]["content"] == REWRITE_INSTRUCTIONS:
            asked.append(messages[1]["content"])
            return mock_rewrite
        return ANSWER

    mock.reply = reply
    history = [
        {"role": "user", "content": "What does E-4471 mean?"},
        {"role": "assistant", "content": FOOTED},
        {"role": "user", "content": "and how do I fix it?"},
    ]
    mock_rewrite = "How to fix the boiler error E-4471"
    with client(pg_url, token, mock) as c:
        r = c.post("/v1/chat/completions", json={"model": "hearth", "messages": history})
        assert r.json()["search_query"] == mock_rewrite
        # a rewrite that merely repeats the earlier answer is not searched: as when the rewrite
        # fails, the previous question and this one are (the follow-up alone names nothing)
        mock_rewrite = "The boiler error code E-4471 means the pressure sensor failed."
        r = c.post("/v1/chat/completions", json={"model": "hearth", "messages": history})
        assert r.json()["search_query"] == "What does E-4471 mean? and how do I fix it?"
    assert len(asked) == 2
    for prompt in asked:
        assert "Sources:" not in prompt and "/root/.local" not in prompt and "[1]" not in prompt
        assert "E-4471 means the pressure sensor failed" in prompt


def test_styles_by_header_and_a_bad_one_is_a_400(pg_url: str, token: str, mock: MockLLM) -> None:
    mock.reply = lambda messages: ANSWER
    question = {"model": "hearth", "messages": [{"role": "user", "content": "E-4471?"}]}
    with client(pg_url, token, mock) as c:
        bad = c.post("/v1/chat/completions", json=question, headers={"X-Hearth-Citations": "<x>"})
        assert bad.status_code == 400
        assert bad.json()["error"]["param"] == "X-Hearth-Citations"
        none = c.post("/v1/chat/completions", json=question, headers={"X-Hearth-Citations": "none"})
        body = none.json()
        assert body["sources"] and "citations" not in body
        assert "annotations" not in body["choices"][0]["message"]
        assert "Sources:" not in body["choices"][0]["message"]["content"]
        # Open WebUI forced on an unrecognised client: events, no footer, no annotations
        forced = c.post(
            "/v1/chat/completions",
            json={**question, "stream": True},
            headers={"X-Hearth-Citations": "openwebui"},
        )
        assert [e["type"] for e in openwebui_events(forced.text)] == ["source"]
        assert "Sources:" not in streamed_text(sse_events(forced.text))


def test_openwebui_unstreamed_gets_sources_in_its_own_shape(
    pg_url: str, token: str, mock: MockLLM
) -> None:
    """Open WebUI's non-streamed path (middleware.py process_chat_response) emits the whole
    response as a chat:completion event; its browser (Chat.svelte chatCompletionEventHandler)
    does `if (sources) message.sources = sources` and saves the chat: `sources` must be in its
    shape there, or the message's citations break."""
    mock.reply = lambda messages: ANSWER
    body = {
        "model": "hearth",
        "stream": False,
        "tools": OPENWEBUI_TOOLS,
        "messages": [{"role": "user", "content": "What does E-4471 mean?"}],
    }
    with client(pg_url, token, mock) as c:
        r = c.post("/v1/chat/completions", json=body, headers=OPENWEBUI_HEADERS)
    out = r.json()
    assert "Sources:" not in out["choices"][0]["message"]["content"]
    src = out["sources"][0]
    assert set(src) == {"source", "document", "metadata"}
    assert src["metadata"][0]["source"].startswith("http://testserver/ui/passages/")
    assert out["hearth_sources"][0]["index"] == 1
