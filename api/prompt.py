"""Building the grounded prompt: numbered passages, history, question, within the context window.

The static prefix (instructions, then passages) comes first so vLLM's prefix cache is hit when a
conversation continues over the same passages.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from core.types import Passage

DEFAULT_SYSTEM_PROMPT = (
    "You are Hearth, an assistant that answers questions from the user's own documents. "
    "Use only the numbered passages below. After each fact you use, cite its passage number in "
    "square brackets, like [1]. If the passages do not contain the answer, say that the "
    "documents do not cover it. Never invent facts or passage numbers."
)


def estimate_tokens(text: str) -> int:
    """A conservative token estimate (about 3 characters a token) when no tokenizer is at hand."""
    return len(text) // 3 + 4


def format_passage(i: int, p: Passage) -> str:
    where = [p.title or p.path.rsplit("/", 1)[-1]]
    if p.page:
        where.append(f"page {p.page}")
    if p.heading_path:
        where.append(" > ".join(p.heading_path))
    return f"[{i}] ({', '.join(where)})\n{p.text.strip()}"


class PromptTooLong(ValueError):
    """Even with no history and no passages the request would not fit the context window."""


@dataclass(frozen=True)
class Prompt:
    messages: list[dict[str, str]]
    passages: list[Passage]  # in marker order: passages[0] is [1]
    history_dropped: int


def build_prompt(
    question: str,
    passages: Sequence[Passage],
    history: Sequence[tuple[str, str]],
    *,
    context_tokens: int,
    max_answer_tokens: int,
    system_prompt: str = DEFAULT_SYSTEM_PROMPT,
) -> Prompt:
    """Fit instructions + passages + history + question + answer into `context_tokens`.

    Oldest history goes first, but the last exchange is kept (follow-ups need it) until only the
    best passage is left; then the rest of the history, then that passage.
    """
    kept = list(passages)
    turns = list(history)
    budget = context_tokens - max_answer_tokens - 16

    def size() -> int:
        body = system_prompt + "".join(format_passage(i, p) for i, p in enumerate(kept, 1))
        return (
            estimate_tokens(body)
            + estimate_tokens(question)
            + sum(estimate_tokens(t) for _, t in turns)
            + 8 * (len(turns) + 2)
        )

    dropped = 0
    # oldest history first (down to the last exchange), then the lowest-ranked passages (down to
    # the best one), then the rest of the history, then the last passage
    for keep_turns, keep_passages in ((2, 1), (0, 1), (0, 0)):
        while size() > budget and len(turns) > keep_turns:
            turns.pop(0)
            dropped += 1
        while size() > budget and len(kept) > keep_passages:
            kept.pop()
    if size() > budget:
        raise PromptTooLong(
            f"the question is too long for the model's context window ({context_tokens} tokens, "
            f"{max_answer_tokens} of them kept for the answer)"
        )
    system = system_prompt
    if kept:
        system += "\n\nPassages:\n\n" + "\n\n".join(
            format_passage(i, p) for i, p in enumerate(kept, 1)
        )
    else:
        system += "\n\nPassages: (none were found for this question)"
    messages = [{"role": "system", "content": system}]
    messages += [{"role": r, "content": t} for r, t in turns]
    messages.append({"role": "user", "content": question})
    return Prompt(messages, kept, dropped)
