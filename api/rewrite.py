"""Follow-up questions ("what about the second one?") rewritten into stand-alone search queries.

One short, greedy LLM call over the last few turns. Whatever goes wrong (backend down, slow,
an answer instead of a query), the fallback is the previous question joined to this one, which
is what the follow-up usually leans on.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Sequence
from difflib import SequenceMatcher

from .llm import LLMClient, LLMError
from .textguard import clean_text

log = logging.getLogger(__name__)

REWRITE_TURNS = 4  # the last two exchanges are enough context for a follow-up
TURN_CHARS = 600
MAX_QUERY_CHARS = 300

REWRITE_INSTRUCTIONS = (
    "Rewrite the user's last question as one stand-alone search query that can be understood "
    "without the conversation: replace pronouns and references with what they refer to. "
    "Reply with the query only, on one line, without answering it."
)
_REFUSAL = re.compile(r"^(i'?m sorry|sorry|i cannot|i can't|as an ai)", re.IGNORECASE)


def rewrite_messages(history: Sequence[tuple[str, str]], question: str) -> list[dict[str, str]]:
    recent = history[-REWRITE_TURNS:]
    convo = "\n".join(f"{role}: {text[:TURN_CHARS]}" for role, text in recent)
    return [
        {"role": "system", "content": REWRITE_INSTRUCTIONS},
        {
            "role": "user",
            "content": f"Conversation:\n{convo}\n\nLast question: {question}\n\nSearch query:",
        },
    ]


def clean_query(text: str) -> str | None:
    """The query in a model's reply, or None when the reply is not one."""
    line = next((ln.strip() for ln in text.strip().splitlines() if ln.strip()), "")
    line = re.sub(r"^(search query|query)\s*:\s*", "", line, flags=re.IGNORECASE)
    line = clean_text(line, "").strip().strip("\"'`").strip()
    if len(line) < 3 or len(line) > MAX_QUERY_CHARS or _REFUSAL.match(line):
        return None
    return line


def echoes_answer(query: str, history: Sequence[tuple[str, str]]) -> bool:
    """Whether `query` is mostly a copy of an earlier answer rather than a question: small
    models asked to rewrite sometimes repeat the last answer, which then gets searched."""
    q = " ".join(query.lower().split())
    if len(q) < 24:
        return False
    for role, text in history[-REWRITE_TURNS:]:  # what the rewrite was shown, no more
        if role != "assistant":
            continue
        a = " ".join(text[:TURN_CHARS].lower().split())
        match = SequenceMatcher(None, q, a, autojunk=False).find_longest_match(0, len(q), 0, len(a))
        if match.size >= 0.7 * len(q):
            return True
    return False


def fallback_query(history: Sequence[tuple[str, str]], question: str) -> str:
    previous = next((text for role, text in reversed(history) if role == "user"), "")
    return f"{previous[:TURN_CHARS]} {question}".strip()


async def rewrite_query(
    llm: LLMClient,
    history: Sequence[tuple[str, str]],
    question: str,
    timeout_s: float = 15.0,
) -> tuple[str, str]:
    """(query, how): `how` is "none" without history, else "llm" or "fallback"."""
    if not any(role == "user" for role, _ in history):
        return question, "none"
    try:
        async with asyncio.timeout(timeout_s):
            resp = await llm.complete(
                rewrite_messages(history, question), max_tokens=48, temperature=0
            )
        content = ((resp.get("choices") or [{}])[0].get("message") or {}).get("content") or ""
        query = clean_query(content)
    except (LLMError, TimeoutError) as exc:
        log.info("query rewrite failed (%s); using the fallback", exc)
        query = None
    if query is None:
        return fallback_query(history, question), "fallback"
    if echoes_answer(query, history):
        log.info("query rewrite repeated an earlier answer; using the fallback")
        return fallback_query(history, question), "echo"
    return query, "llm"
