from __future__ import annotations

import pytest

from api.prompt import PromptTooLong, build_prompt, estimate_tokens

from .test_citations import passage


def test_passages_are_numbered_in_rank_order_after_the_instructions() -> None:
    p = build_prompt(
        "When?", [passage(1), passage(2)], [], context_tokens=4096, max_answer_tokens=256
    )
    system = p.messages[0]["content"]
    assert p.messages[0]["role"] == "system"
    assert system.index("[1] (Doc 1") < system.index("[2] (Doc 2")
    assert "cite" in system.lower()
    assert p.messages[-1] == {"role": "user", "content": "When?"}


def test_history_sits_between_passages_and_question() -> None:
    p = build_prompt(
        "And then?",
        [passage(1)],
        [("user", "Hi"), ("assistant", "Hello")],
        context_tokens=4096,
        max_answer_tokens=256,
    )
    assert [m["role"] for m in p.messages] == ["system", "user", "assistant", "user"]


def test_oldest_history_goes_first_then_lowest_passages() -> None:
    long = "word " * 600
    history = [("user", long), ("assistant", long), ("user", "recent"), ("assistant", "ok")]
    passages = [passage(i, text=long) for i in range(1, 4)]
    p = build_prompt("q", passages, history, context_tokens=2000, max_answer_tokens=200)
    total = sum(estimate_tokens(m["content"]) for m in p.messages)
    assert total <= 2000 - 200
    assert p.history_dropped >= 2
    assert [m["content"] for m in p.messages[1:-1]] == ["recent", "ok"]
    assert 1 <= len(p.passages) < 3
    assert p.passages[0].chunk_id == 1  # the best passage survives


def test_a_question_that_cannot_fit_is_refused() -> None:
    with pytest.raises(PromptTooLong):
        build_prompt("x " * 5000, [], [], context_tokens=1000, max_answer_tokens=100)
