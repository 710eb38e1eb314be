"""The grounded prompt and its context budget, counted with the served model's real tokenizer."""

from __future__ import annotations

import pytest
from transformers import AutoTokenizer

from api.prompt import PromptTooLong, build_prompt
from api.tokenizer import TokenCounter, load_counter
from tests.e2e.stack import llm_model_dir

from .test_citations import passage


@pytest.fixture(scope="module")
def counter() -> TokenCounter:
    c = load_counter(llm_model_dir() / "tokenizer.json")
    assert c.exact, "make test converts SmolLM2 into .cache/smollm2 (HEARTH_TEST_LLM_DIR)"
    return c


def template_tokens(messages: list[dict[str, str]]) -> int:
    """What vLLM really feeds the model: the chat template applied, generation prompt added."""
    tok = AutoTokenizer.from_pretrained(str(llm_model_dir()))
    return len(tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=True))


def test_passages_are_numbered_in_rank_order_after_the_instructions(
    counter: TokenCounter,
) -> None:
    p = build_prompt(
        "When?",
        [passage(1), passage(2)],
        [],
        counter=counter,
        context_tokens=4096,
        max_answer_tokens=256,
    )
    system = p.messages[0]["content"]
    assert p.messages[0]["role"] == "system"
    assert system.index("[1] (Doc 1") < system.index("[2] (Doc 2")
    assert "cite" in system.lower()
    assert p.messages[-1] == {"role": "user", "content": "When?"}


def test_best_last_gives_the_best_passage_next_to_the_question(counter: TokenCounter) -> None:
    ranked = [passage(1), passage(2), passage(3)]
    kw = {"counter": counter, "context_tokens": 4096, "max_answer_tokens": 256}
    p = build_prompt("When?", ranked, [], best_last=True, **kw)  # type: ignore[arg-type]
    system = p.messages[0]["content"]
    # numbered in the order given: [1] is the third-ranked, [3] the best, last before the question
    assert system.index("[1] (Doc 3") < system.index("[2] (Doc 2") < system.index("[3] (Doc 1")
    assert p.passages == ranked[::-1]  # marker n names p.passages[n - 1]


def test_history_sits_between_passages_and_question(counter: TokenCounter) -> None:
    p = build_prompt(
        "And then?",
        [passage(1)],
        [("user", "Hi"), ("assistant", "Hello")],
        counter=counter,
        context_tokens=4096,
        max_answer_tokens=256,
    )
    assert [m["role"] for m in p.messages] == ["system", "user", "assistant", "user"]


def test_the_static_prefix_is_the_same_across_turns(counter: TokenCounter) -> None:
    """System prompt, then passages, then history: a follow-up over the same passages starts
    with the same bytes, so vLLM's prefix cache is hit."""
    kw = {"counter": counter, "context_tokens": 4096, "max_answer_tokens": 256}
    first = build_prompt("What is X?", [passage(1), passage(2)], [], **kw)  # type: ignore[arg-type]
    second = build_prompt(
        "And Y?",
        [passage(1), passage(2)],
        [("user", "What is X?"), ("assistant", "X is 1 [1].")],
        **kw,  # type: ignore[arg-type]
    )
    assert second.messages[0] == first.messages[0]


@pytest.mark.parametrize("exact", [True, False])
def test_long_history_and_long_passages_fit_the_real_window(
    counter: TokenCounter, exact: bool
) -> None:
    """Oldest history goes first, then the lowest-ranked passages; what is sent, counted by the
    real chat template, fits the window with the answer's tokens to spare."""
    count = counter if exact else TokenCounter()  # the estimate used for unknown backends
    long = "The harvest festival moved to the old mill by the river. " * 60
    history = [(r, f"{i}: {long}") for i in range(10) for r in ("user", "assistant")]
    history += [("user", "recent question"), ("assistant", "recent answer")]
    passages = [passage(i, text=f"{i} {long}") for i in range(1, 6)]
    context, answer = 2048, 300
    p = build_prompt(
        "Where is it?",
        passages,
        history,
        counter=count,
        context_tokens=context,
        max_answer_tokens=answer,
    )
    assert template_tokens(p.messages) <= context - answer
    assert count.messages(p.messages) >= template_tokens(p.messages)  # never an undercount
    assert p.history_dropped == 20
    assert [m["content"] for m in p.messages[1:-1]] == ["recent question", "recent answer"]
    assert 1 <= len(p.passages) < 5
    assert p.passages[0].chunk_id == 1  # the best passage survives


def test_exact_counts_keep_more_than_the_estimate(counter: TokenCounter) -> None:
    text = "Plain English prose about gardens, tomatoes and watering schedules. " * 20
    passages = [passage(i, text=text) for i in range(1, 9)]
    kw = {"context_tokens": 1500, "max_answer_tokens": 200}
    exact = build_prompt("q", passages, [], counter=counter, **kw)  # type: ignore[arg-type]
    rough = build_prompt("q", passages, [], counter=TokenCounter(), **kw)  # type: ignore[arg-type]
    assert len(exact.passages) > len(rough.passages)


def test_a_question_that_cannot_fit_is_refused(counter: TokenCounter) -> None:
    with pytest.raises(PromptTooLong, match="context window"):
        build_prompt(
            "word " * 5000, [], [], counter=counter, context_tokens=1000, max_answer_tokens=100
        )


@pytest.mark.parametrize(
    "text",
    [
        "供暖系统的过滤器每六周清洗一次，压力低于一巴时请检查水泵。" * 20,
        "Der Wärmepumpenfilter muss alle sechs Wochen gereinigt werden – äöüß. " * 20,
        "🔥🏠💧 heat, home, water 🔥🏠💧 " * 30,
        "The harvest festival moved to the old mill by the river. " * 60,
        "def f(x):\n    return {'a': [1, 2, 3]}\n" * 30,
        "Error E-4471 at 12:45 on 2024-03-01: pressure 1.2 bar. " * 20,
    ],
)
def test_the_estimate_does_not_undercount_text_and_code(counter: TokenCounter, text: str) -> None:
    """Without the backend's tokenizer, prose in several scripts, emoji, code and numbers still
    fit. (Random identifiers such as hashes can still beat it: that is what LLM_TOKENIZER and
    the backend's own context-length error, answered as a 400, are for.)"""
    assert TokenCounter().count(text) >= counter.count(text)
