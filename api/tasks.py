"""Client meta-requests: a front-end asking the model for a chat's title, tags, follow-up
questions, search queries or an autocompletion. They are not questions to the documents, so
they are answered as plain chat (no retrieval, relevance gate, citations or footer), are not
stored as conversations, and get a small answer budget.

Recognised by Open WebUI's task templates (backend/open_webui/config.py
DEFAULT_{TITLE,TAGS,FOLLOW_UP,QUERY,AUTOCOMPLETE,IMAGE_PROMPT}_GENERATION_PROMPT_TEMPLATE all
start with "### Task:"; its tool-calling and emoji templates start as below), by a
`response_format` asking for JSON, and by LobeChat's title chain (its system prompt). Open
WebUI's RAG template starts with "### Task:" too, but is a real question with Open WebUI's own
retrieved `<context>` (DEFAULT_RAG_TEMPLATE): not a task.
"""

from __future__ import annotations

import json
import re

from .schemas import ChatRequest

TASK_MAX_TOKENS = 256

_OPENERS = (
    "### task:",
    "available tools:",  # DEFAULT_TOOLS_FUNCTION_CALLING_PROMPT_TEMPLATE
    "your task is to reflect the speaker's likely facial expression",  # emoji
)


# system prompts of a front-end's own chains, sent as chat requests to the chat model:
# LobeChat's topic title (packages/prompts/src/chains/summaryTitle.ts, chainSummaryTitle; a
# streamed request whose user message is the conversation as "role: content" lines)
_SYSTEM_OPENERS = ("you are a professional conversation summarizer",)


def is_task(req: ChatRequest) -> bool:
    fmt = (req.response_format or {}).get("type")
    if fmt in ("json_object", "json_schema"):
        return True
    system = next((m for m in req.messages if m.role in ("system", "developer")), None)
    if system is not None and system.text().lstrip()[:80].lower().startswith(_SYSTEM_OPENERS):
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


# --- a task's answer in the shape its template asked for -----------------------------------

# Open WebUI's templates end with `### Output:\nJSON format: { "title": ... }` (or "tags",
# "follow_ups", "queries"); it reads the answer as `json.loads(text[text.find("{") :
# text.rfind("}") + 1])` and takes that key (utils/middleware.py, routers/tasks.py)
_ASKED_KEY = re.compile(r'JSON format:\s*\{\s*"(\w{1,40})"')
_FIRST_QUESTION = re.compile(r"<chat_history>\s*USER:\s*([^\n]{1,500})")
_FILLER_WORDS = """what whats does do did is are was were the a an how why when where who which
can could should would will i me my we our you your it its this that these those of to in on for
about please tell explain mean means meaning"""
_FILLER = frozenset(_FILLER_WORDS.split())
TITLE_WORDS = 5


def asked_key(req: ChatRequest) -> str | None:
    """The JSON key a task's template asks its answer for (None: not a JSON template)."""
    last_user = next((m for m in reversed(req.messages) if m.role == "user"), None)
    found = _ASKED_KEY.search(last_user.text()) if last_user else None
    return found[1] if found else None


def _answered(text: str, key: str, template: str) -> bool:
    """Whether `text` holds what the client will parse out of it: an object with `key` (a
    title not copied from the template's own placeholder or examples)."""
    start, end = text.find("{"), text.rfind("}")
    try:
        value = json.loads(text[start : end + 1]) if 0 <= start < end else None
    except ValueError:
        return False
    if not isinstance(value, dict) or key not in value:
        return False
    if key == "title":
        title = value["title"]
        if not isinstance(title, str) or not title.strip() or len(title) > 80:
            return False
        return f'"{title.strip().lower()}"' not in template.lower()
    return isinstance(value[key], list)


def fallback_title(req: ChatRequest) -> str:
    """A title from the chat's first question: its words without question words and fillers,
    the first TITLE_WORDS of them ("What does boiler error code E-4471 mean?" -> "Boiler Error
    Code E-4471"); the question's first words when nothing else is left."""
    last_user = next((m for m in reversed(req.messages) if m.role == "user"), None)
    found = _FIRST_QUESTION.search(last_user.text()) if last_user else None
    words = [w.strip("?!.,;:\"'()*`") for w in (found[1] if found else "").split()]
    words = [w for w in words if w]
    kept = [w for w in words if w.lower() not in _FILLER] or words
    return " ".join(w[:1].upper() + w[1:] for w in kept[:TITLE_WORDS])


def task_answer(req: ChatRequest, text: str) -> str:
    """`text`, when it holds the JSON the task's template asked for; else Hearth's own answer
    in that shape: a small model often echoes the template or rambles (the CPU model gave
    neither a title nor JSON in Open WebUI's e2e test), and Open WebUI then titles the chat
    with the whole question and drops tags and follow-ups. A title is made from the first
    question's words, tags and other lists are left empty."""
    key = asked_key(req)
    last_user = next((m for m in reversed(req.messages) if m.role == "user"), None)
    template = (last_user.text() if last_user else "").split("<chat_history>")[0]
    if key is None or _answered(text, key, template):
        return text
    if key == "title":
        title = fallback_title(req)
        return json.dumps({"title": title}) if title else text
    return json.dumps({key: []})
