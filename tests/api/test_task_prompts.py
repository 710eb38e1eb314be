"""Client meta-requests (Open WebUI's title/tags/follow-up tasks, JSON response formats) are
plain chat on the real app: no retrieval, no relevance gate, no citations, no footer, no stored
conversation, a small answer budget.
"""

from __future__ import annotations

import json
from typing import Any

import psycopg
import pytest

from tests.api.test_chat_api import client, seed, sse_events
from tests.mock_llm import MockLLM

# Open WebUI's DEFAULT_TITLE_GENERATION_PROMPT_TEMPLATE (backend/open_webui/config.py), filled in
TITLE_TASK = """### Task:
Generate a concise, 3-5 word title with an emoji summarizing the chat history.
### Guidelines:
- The title should clearly represent the main theme or subject of the conversation.
### Output:
JSON format: { "title": "your concise title here" }
### Chat History:
<chat_history>
USER: What does E-4471 mean?
ASSISTANT: The boiler error code E-4471 means the pressure sensor failed [1].

Sources:
[1] boiler.md (/root/.local/share/hearth/documents/boiler.md)
</chat_history>"""
TAGS_TASK = """### Task:
Generate 1-3 broad tags categorizing the main themes of the chat history, along with 1-3 \
more specific subtopic tags.

### Output:
JSON format: { "tags": ["tag1", "tag2", "tag3"] }

### Chat History:
<chat_history>
USER: What does E-4471 mean?
</chat_history>"""
TITLE_JSON = '{ "title": "🔧 Boiler Error E-4471" }'


@pytest.fixture
def token(db: psycopg.Connection) -> str:
    return seed(db)


def conversations(db: psycopg.Connection) -> int:
    row = db.execute("SELECT count(*) FROM conversations").fetchone()
    assert row is not None
    return int(row[0])


def test_a_title_task_is_plain_chat_with_a_small_budget(
    pg_url: str, token: str, db: psycopg.Connection, mock: MockLLM
) -> None:
    mock.reply = lambda messages: TITLE_JSON
    # a gate no passage passes: a question would get the canned "not covered" answer
    with client(pg_url, token, mock, relevance_threshold=0.99) as c:
        r = c.post(
            "/v1/chat/completions",
            json={
                "model": "hearth",
                "messages": [{"role": "user", "content": TITLE_TASK}],
                "max_tokens": 1000,
                "stream": False,
            },
        )
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["choices"][0]["message"]["content"] == TITLE_JSON  # no footer, no markers
        assert not body.get("sources") and not body.get("citations")
        assert not body["choices"][0]["message"].get("annotations")
        assert "X-Conversation-Id" not in r.headers
        sent = mock.requests[-1]
        assert sent["max_tokens"] == 256
        prompt = json.dumps(sent["messages"])
        assert "Passages" not in prompt and "pressure sensor failed." not in prompt.split("USER")[0]
        assert sent["messages"][-1]["content"] == TITLE_TASK

        # a smaller budget asked for is kept; the stream carries no sources either
        mock.reply = lambda messages: '{ "tags": ["Home"] }'
        r = c.post(
            "/v1/chat/completions",
            json={
                "model": "hearth",
                "messages": [{"role": "user", "content": TAGS_TASK}],
                "max_tokens": 40,
                "stream": True,
            },
        )
        events = sse_events(r.text)
        assert mock.requests[-1]["max_tokens"] == 40
        text = "".join(e["choices"][0]["delta"].get("content") or "" for e in events[:-1])
        assert text.strip() == '{ "tags": ["Home"] }'
        assert not any("sources" in e or "event" in e for e in events[:-1])
    assert conversations(db) == 0


def test_a_json_response_format_is_plain_chat(
    pg_url: str, token: str, db: psycopg.Connection, mock: MockLLM
) -> None:
    mock.reply = lambda messages: '{"answer": "yes"}'
    with client(pg_url, token, mock) as c:
        for fmt in (
            {"type": "json_object"},
            {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object"}}},
        ):
            r = c.post(
                "/v1/chat/completions",
                json={
                    "model": "hearth",
                    "messages": [{"role": "user", "content": "What does E-4471 mean? As JSON."}],
                    "response_format": fmt,
                },
            )
            body = r.json()
            assert body["choices"][0]["message"]["content"] == '{"answer": "yes"}'
            assert not body.get("sources")
            sent = mock.requests[-1]
            assert sent["response_format"] == fmt and sent["max_tokens"] == 256
            assert "Passages" not in json.dumps(sent["messages"])
        # an ordinary question still gets passages, citations and a conversation
        r = c.post(
            "/v1/chat/completions",
            json={"model": "hearth", "messages": [{"role": "user", "content": "E-4471?"}]},
        )
        assert "Passages" in json.dumps(mock.requests[-1]["messages"])
        assert r.headers["X-Conversation-Id"]
    assert conversations(db) == 1


@pytest.mark.parametrize(
    ("task", "reply", "wanted"),
    [
        # the CPU model's own answers to Open WebUI 0.12.4's title and tags tasks (e2e run)
        (TITLE_TASK, "### Task:\nGenerate a concise title summarizing", {"title": "E-4471"}),
        (TITLE_TASK, 'JSON formatted: { "explanation": "Error 444', {"title": "E-4471"}),
        # the template's own placeholder, echoed as JSON
        (TITLE_TASK, '{ "title": "your concise title here" }', {"title": "E-4471"}),
        (TAGS_TASK, "[Jarkettuser]: Shizou_insolence", {"tags": []}),
        (TAGS_TASK, '{"tags": "Home"}', {"tags": []}),  # not the list Open WebUI reads
    ],
)
def test_a_task_answer_not_in_its_json_shape_is_made_so(
    pg_url: str, token: str, mock: MockLLM, task: str, reply: str, wanted: dict[str, Any]
) -> None:
    """Open WebUI reads `json.loads(text[find("{"):rfind("}") + 1])[key]`; when the model's
    answer holds no such JSON, the chat would be titled with the whole question and lose its
    tags: Hearth answers in the shape asked, a title from the first question's words."""
    mock.reply = lambda messages: reply
    with client(pg_url, token, mock) as c:
        r = c.post(
            "/v1/chat/completions",
            json={"model": "hearth", "messages": [{"role": "user", "content": task}]},
        )
    assert r.status_code == 200, r.text
    content = r.json()["choices"][0]["message"]["content"]
    assert json.loads(content[content.find("{") : content.rfind("}") + 1]) == wanted


def test_a_task_answer_in_its_json_shape_is_kept(pg_url: str, token: str, mock: MockLLM) -> None:
    mock.reply = lambda messages: 'Sure! { "title": "Boiler Trouble" } Hope it helps.'
    with client(pg_url, token, mock) as c:
        r = c.post(
            "/v1/chat/completions",
            json={"model": "hearth", "messages": [{"role": "user", "content": TITLE_TASK}]},
        )
    content = r.json()["choices"][0]["message"]["content"]
    assert content == 'Sure! { "title": "Boiler Trouble" } Hope it helps.'
