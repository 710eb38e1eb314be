"""LobeChat's request shape (by protocol: tests/fixtures/lobechat/chat-request.json, derived from
its source) through the real app (a real PostgreSQL, a scripted backend on a real socket), its
stream read the way LobeChat reads it.

What LobeChat does with a stream, from its source (github lobehub/lobe-chat):
- packages/model-runtime/src/core/streams/openai/openai.ts, transformOpenAIStream: a chunk
  without choices is usage or ignored; on the chunk with a finish_reason, a non-empty
  `delta.content` is text (and then nothing else of that chunk is read), else `delta.annotations`
  become a `grounding` part `{citations: [{title: url_citation.title, url: url_citation.url}]}`,
  else (after `usage`) a top-level `citations` list of URL strings becomes one with title = url;
  on a content chunk without a finish_reason, a top-level `citations` list (Perplexity's) is read
  once.
- src/features/Conversation/Messages/Assistant/useMarkdown.tsx passes `search.citations` to
  @lobehub/ui's Markdown, whose transformCitations(content, citations.length) (src/Markdown/
  utils.ts) turns `[n]` for n <= the list's length into a link to the n-th citation: numbering
  is by position. Footnotes are shown only when every citation's title differs from its URL.
- SearchGrounding.tsx draws each chip from `new URL(item.url).host`: a URL must be absolute.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import psycopg
import pytest
from openai.types.chat import ChatCompletionChunk

from tests.api.test_chat_api import client, seed, sse_events
from tests.mock_llm import MockLLM

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "lobechat" / "chat-request.json"
MARKER = re.compile(r"\[(\d+)\]")


@pytest.fixture
def token(db: psycopg.Connection) -> str:
    return seed(db)


def lobechat_reads(body: str) -> tuple[str, list[dict[str, str]] | None]:
    """The message text and the grounding citations LobeChat keeps from an SSE body (a Python
    reading of transformOpenAIStream's branches that matter here; the last grounding wins, as
    the store overwrites `search`)."""
    text, grounding, returned = "", None, False
    for line in body.splitlines():
        if not line.startswith("data:") or line[5:].strip() == "[DONE]":
            continue
        chunk = json.loads(line[5:])
        choices = chunk.get("choices")
        if not isinstance(choices, list) or not choices:
            continue  # usage, or ignored data
        item = choices[0]
        delta = item.get("delta") or {}
        content = delta.get("content")
        if item.get("finish_reason"):
            if isinstance(content, str) and content:
                text += content
            elif delta.get("annotations"):
                grounding = [
                    {"title": a["url_citation"]["title"], "url": a["url_citation"]["url"]}
                    for a in delta["annotations"]
                ]
            elif chunk.get("usage"):
                pass
            elif chunk.get("citations"):
                grounding = [{"title": u, "url": u} for u in chunk["citations"]]
            continue
        if isinstance(content, str):
            if not returned and chunk.get("citations"):
                returned = True
                grounding = [
                    {"title": c, "url": c}
                    if isinstance(c, str)
                    else {"title": c["title"], "url": c.get("url") or c.get("link")}
                    for c in chunk["citations"]
                ]
            text += content
    return text, grounding


def lobechat_request() -> tuple[dict[str, str], dict[str, Any]]:
    recorded = json.loads(FIXTURE.read_text())
    return recorded["headers"], recorded["body"]


@pytest.mark.parametrize(
    "reply",
    [
        "E-4471 means the pressure sensor failed [1]. Water the tomatoes every morning [2].",
        # a gap: the model cites only a later passage; LobeChat numbers by position
        "Water the tomatoes every morning [2].",
    ],
)
def test_lobechat_stream_carries_citations_it_renders(
    pg_url: str, token: str, mock: MockLLM, reply: str
) -> None:
    mock.reply = lambda messages: reply
    headers, body = lobechat_request()
    with client(pg_url, token, mock, citation_style="annotations") as c:
        r = c.post("/v1/chat/completions", json=body, headers=headers)
    assert r.status_code == 200, r.text
    events = sse_events(r.text)
    for e in events[:-1]:
        ChatCompletionChunk.model_validate(e)
    assert events[-1] == "[DONE]"
    # stream_options.include_usage: the usage comes in its own chunk without choices, so the
    # finish chunk is read for its citations, not as usage
    assert any(not e["choices"] and e.get("usage") for e in events[:-1]), "no usage chunk"
    finish = next(e for e in events[:-1] if e["choices"] and e["choices"][0]["finish_reason"])
    sources = {s["index"]: s for s in finish["sources"]}

    text, grounding = lobechat_reads(r.text)
    assert "Sources:" not in text
    assert grounding, "LobeChat would show no sources"
    for g in grounding:
        assert re.match(r"https?://[^/\s]+/", g["url"]), g  # new URL(url).host
        assert g["title"] != g["url"], g  # else LobeChat hides its footnotes
    markers = [int(n) for n in MARKER.findall(text)]
    assert markers, text
    for n in markers:  # each [n] links to the n-th citation, which is passage n
        assert n <= len(grounding), (n, grounding)
        assert grounding[n - 1]["title"] == sources[n]["title"], (n, grounding)
    # the earlier answer's footer and markers (LobeChat sends the history back) reached no prompt
    sent = json.dumps(mock.requests)
    assert "Sources:" not in sent and "(house/boiler.md)" not in sent


def test_lobechat_unconfigured_gets_the_footer_beside_its_chips(
    pg_url: str, token: str, mock: MockLLM
) -> None:
    """Nothing in LobeChat's request names it (openai-node's User-Agent and X-Stainless-*
    headers are every openai-node app's), so under CITATION_STYLE=auto it is an unknown client:
    the readable footer, and the annotations it shows as chips as well."""
    mock.reply = lambda messages: "Water the tomatoes every morning [1]."
    headers, body = lobechat_request()
    with client(pg_url, token, mock) as c:
        r = c.post("/v1/chat/completions", json=body, headers=headers)
    text, grounding = lobechat_reads(r.text)
    assert "Sources:" in text
    assert grounding and grounding[0]["title"] != grounding[0]["url"]


# LobeChat's topic title chain (packages/prompts/src/chains/summaryTitle.ts, chainSummaryTitle),
# sent streamed to the chat's own model when a topic is made
LOBECHAT_TITLE_SYSTEM = """You are a professional conversation summarizer. Generate a concise \
title that captures the essence of the conversation.

Rules:
- Output ONLY the title text, no explanations or additional context
- Maximum 10 words
- Maximum 50 characters
- No punctuation marks
- Use the language specified by the locale code: en-US
- The title should accurately reflect the main topic of the conversation
- Keep it short and to the point"""


def test_lobechat_title_chain_is_plain_chat(pg_url: str, token: str, mock: MockLLM) -> None:
    """Not a question to the documents: no search, sources, footer or stored conversation."""
    mock.reply = lambda messages: "Boiler Error Code Meaning"
    headers, body = lobechat_request()
    history = "user: What does the boiler error E-4471 mean?\nassistant: The sensor failed [1]."
    body["messages"] = [
        {"role": "system", "content": LOBECHAT_TITLE_SYSTEM},
        {"role": "user", "content": history},
    ]
    with client(pg_url, token, mock) as c:
        r = c.post("/v1/chat/completions", json=body, headers=headers)
    assert r.status_code == 200, r.text
    text, grounding = lobechat_reads(r.text)
    assert text.strip() == "Boiler Error Code Meaning"
    assert grounding is None and "Sources:" not in text
    finish = next(
        e for e in sse_events(r.text)[:-1] if e["choices"] and e["choices"][0]["finish_reason"]
    )
    assert "sources" not in finish and "conversation_id" not in finish
    prompt = json.dumps(mock.requests[-1]["messages"])
    assert "E-4471 means the pressure sensor failed" not in prompt  # no passage was given
