"""Building the grounded prompt: numbered passages, history, question, within the context window.

The static prefix (instructions, then passages) comes first so vLLM's prefix cache is hit when a
conversation continues over the same passages.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from core.types import Passage

from .tokenizer import MESSAGE_OVERHEAD, REPLY_OVERHEAD, TokenCounter

DEFAULT_SYSTEM_PROMPT = (
    "You are Hearth, an assistant that answers questions from the user's own documents. "
    "Use only the numbered passages below. After each fact you use, cite its passage number in "
    "square brackets, like [1]. If the passages do not contain the answer, say that the "
    "documents do not cover it. Never invent facts or passage numbers."
)


def format_passage(i: int, p: Passage) -> str:
    where = [p.title or p.path.rsplit("/", 1)[-1]]
    if p.page:
        where.append(f"page {p.page}")
    if p.heading_path:
        where.append(" > ".join(p.heading_path))
    return f"[{i}] ({', '.join(where)})\n{p.text.strip()}"


_PASSAGES_HEADER = "\n\nPassages:\n\n"
_NO_PASSAGES = "\n\nPassages: (none were found for this question)"


class PromptTooLong(ValueError):
    """Even with no history and no passages the request would not fit the context window."""


def check_length(
    counter: TokenCounter, context_tokens: int, max_answer_tokens: int, *texts: str
) -> None:
    """Raise PromptTooLong, without counting a token, when `texts` (what every prompt must hold:
    the question, the system prompt) are longer than any text that could fit the window."""
    most = counter.max_chars(context_tokens - max_answer_tokens)
    if most is not None and sum(len(t) for t in texts) > most:
        raise PromptTooLong(
            f"the messages are too long for the model's context window ({context_tokens} "
            f"tokens, {max_answer_tokens} of them kept for the answer); shorten them or lower "
            "max_tokens"
        )


def may_fit(
    history: Sequence[tuple[str, str]], counter: TokenCounter, budget_tokens: int
) -> Sequence[tuple[str, str]]:
    """The most recent turns of `history` that could fit `budget_tokens` at all, judged by
    length alone; older ones would be dropped anyway, so they are never counted."""
    most = counter.max_chars(budget_tokens)
    if most is None:
        return history
    used, first = 0, len(history)
    while first > 0 and used + len(history[first - 1][1]) <= most:
        first -= 1
        used += len(history[first][1])
    return history[first:]


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
    counter: TokenCounter,
    context_tokens: int,
    max_answer_tokens: int,
    system_prompt: str = DEFAULT_SYSTEM_PROMPT,
    best_last: bool = False,
) -> Prompt:
    """Fit instructions + passages + history + question + answer into `context_tokens`.

    Oldest history goes first, but the last exchange is kept (follow-ups need it) until only the
    best passage is left; then the rest of the history, then that passage. `best_last`: the kept
    passages are numbered and given worst first, so the best one is nearest the question.
    """
    budget = context_tokens - max_answer_tokens
    check_length(counter, context_tokens, max_answer_tokens, question, system_prompt)
    kept = may_fit(history, counter, budget)
    dropped, history = len(history) - len(kept), kept
    blocks = [format_passage(i, p) for i, p in enumerate(passages, 1)]
    # a passage's cost does not depend on what else is kept: count each once
    block_cost = [counter.count(b) + 2 for b in blocks]
    turn_cost = [counter.count(t) + MESSAGE_OVERHEAD for _, t in history]
    fixed = (
        REPLY_OVERHEAD
        + 2 * MESSAGE_OVERHEAD
        + counter.count(system_prompt + _PASSAGES_HEADER + _NO_PASSAGES)
        + counter.count(question)
    )
    n_passages, first_turn = len(blocks), 0

    def size() -> int:
        return fixed + sum(block_cost[:n_passages]) + sum(turn_cost[first_turn:])

    # oldest history first (down to the last exchange), then the lowest-ranked passages (down to
    # the best one), then the rest of the history, then the last passage
    for keep_turns, keep_passages in ((2, 1), (0, 1), (0, 0)):
        while size() > budget and len(history) - first_turn > keep_turns:
            first_turn += 1
        while size() > budget and n_passages > keep_passages:
            n_passages -= 1
    if size() > budget:
        raise PromptTooLong(
            f"the question is too long for the model's context window ({context_tokens} tokens, "
            f"{max_answer_tokens} of them kept for the answer); shorten it or lower max_tokens"
        )
    system = system_prompt
    kept_passages = list(passages[:n_passages])
    if best_last and n_passages > 1:
        kept_passages.reverse()
        blocks = [format_passage(i, p) for i, p in enumerate(kept_passages, 1)]
    if n_passages:
        system += _PASSAGES_HEADER + "\n\n".join(blocks[:n_passages])
    else:
        system += _NO_PASSAGES
    messages = [{"role": "system", "content": system}]
    messages += [{"role": r, "content": t} for r, t in history[first_turn:]]
    messages.append({"role": "user", "content": question})
    return Prompt(messages, kept_passages, dropped + first_turn)


def plain_prompt(
    system: str,
    history: Sequence[tuple[str, str]],
    question: str,
    *,
    counter: TokenCounter,
    context_tokens: int,
    max_answer_tokens: int,
) -> list[dict[str, str]]:
    """Plain chat (no retrieval): the client's own messages, oldest turns dropped to fit."""
    head = [{"role": "system", "content": system}] if system else []
    tail = [{"role": "user", "content": question}]
    budget = context_tokens - max_answer_tokens
    check_length(counter, context_tokens, max_answer_tokens, question, system)
    history = may_fit(history, counter, budget)
    turns = [{"role": r, "content": t} for r, t in history]
    costs = [counter.count(t) + MESSAGE_OVERHEAD for _, t in history]
    used = counter.messages(head + tail) + sum(costs)
    first = 0
    while used > budget and first < len(turns):
        used -= costs[first]
        first += 1
    if used > budget:
        raise PromptTooLong(
            f"the messages are too long for the model's context window ({context_tokens} "
            f"tokens, {max_answer_tokens} of them kept for the answer); shorten them or lower "
            "max_tokens"
        )
    return head + turns[first:] + tail
