"""Client meta-requests: a front-end asking the model for a chat's title, tags, follow-up
questions, search queries or an autocompletion. They are not questions to the documents, so
they are answered as plain chat (no retrieval, relevance gate, citations or footer), are not
stored as conversations, and get a small answer budget.

Recognised by Open WebUI's task templates (backend/open_webui/config.py
DEFAULT_{TITLE,TAGS,FOLLOW_UP,QUERY,AUTOCOMPLETE,IMAGE_PROMPT}_GENERATION_PROMPT_TEMPLATE all
start with "### Task:"; its tool-calling and emoji templates start as below), and by a
`response_format` asking for JSON. Its RAG template starts with "### Task:" too, but is a real
question with Open WebUI's own retrieved `<context>` (DEFAULT_RAG_TEMPLATE): not a task.
"""

from __future__ import annotations

from .schemas import ChatRequest

TASK_MAX_TOKENS = 256

_OPENERS = (
    "### task:",
    "available tools:",  # DEFAULT_TOOLS_FUNCTION_CALLING_PROMPT_TEMPLATE
    "your task is to reflect the speaker's likely facial expression",  # emoji
)


def is_task(req: ChatRequest) -> bool:
    fmt = (req.response_format or {}).get("type")
    if fmt in ("json_object", "json_schema"):
        return True
    last_user = next((m for m in reversed(req.messages) if m.role == "user"), None)
    text = (last_user.text() if last_user else "").lstrip()
    return text[:80].lower().startswith(_OPENERS) and "<context>" not in text


def task_budget(asked: int | None, default: int = TASK_MAX_TOKENS) -> int:
    """What a task may spend on its answer: what the client asked, at most TASK_MAX_TOKENS and
    at most `default` (LLM_MAX_TOKENS: a server told to answer briefly, as on a slow CPU
    backend, keeps a front-end's titles and tags brief too)."""
    cap = min(TASK_MAX_TOKENS, default)
    return min(asked, cap) if asked else cap
