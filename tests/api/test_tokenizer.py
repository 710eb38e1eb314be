"""The token counter's length bound: a text longer than `max_chars(n)` can never take n tokens or
fewer, so the chat API may refuse it (or drop it from the history) without counting it. Checked
as a property on any text, for the estimate and for a real byte-level BPE tokenizer (the kind
LLMs use), and the bound of tokenizers that can fold any run into one token is unknown."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from api.tokenizer import ESTIMATE_CHARS_PER_TOKEN, TokenCounter, estimate, longest_token

CORPUS = [
    "The boiler error code E-4471 means the pressure sensor failed.",
    "Tomatoes need full sun and watering every morning.",
    "def f(x):\n        return {'a': [1, 2, 3]}\n" + " " * 40 + "#" * 30,
    "供暖系统的过滤器每六周清洗一次。🔥🏠💧",
] * 20

TEXT = st.text(
    alphabet=st.characters(blacklist_categories=["Cs"]),  # no lone surrogates reach a count
    max_size=400,
) | st.builds(
    lambda parts: "".join(parts),
    st.lists(st.sampled_from([" ", "  " * 20, "\n", "word", "a", "E-4471", "🔥", "#" * 16])),
)


@pytest.fixture(scope="module")
def bpe() -> Tokenizer:
    """A small byte-level BPE trained here: SmolLM2's and Llama 3's kind of tokenizer."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=600,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(CORPUS, trainer)
    return tok


@settings(max_examples=300, deadline=None)
@given(text=TEXT)
def test_no_estimated_token_covers_more_than_the_bound(text: str) -> None:
    assert len(text) <= ESTIMATE_CHARS_PER_TOKEN * estimate(text)
    assert TokenCounter().max_chars(estimate(text)) >= len(text)


def test_a_run_of_spaces_is_no_longer_one_token() -> None:
    """It was: ten megabytes of spaces counted as a single token."""
    assert estimate(" " * 1600) >= 100
    assert estimate("a" + " " * 1600 + "b") >= 100


def test_the_bound_of_a_byte_level_bpe_is_its_longest_token(bpe: Tokenizer) -> None:
    longest = longest_token(bpe)
    assert longest == max(len(t) for t in bpe.get_vocab(with_added_tokens=True))
    counter = TokenCounter(bpe)
    assert counter.max_chars_per_token == longest

    @settings(max_examples=200, deadline=None)
    @given(text=TEXT)
    def holds(text: str) -> None:
        assert len(text) <= counter.max_chars(counter.count(text))  # type: ignore[operator]

    holds()


def test_a_tokenizer_that_folds_runs_into_one_token_has_no_bound() -> None:
    """WordPiece turns a long unknown word into one [UNK], whatever its length."""
    tok = Tokenizer(models.WordPiece({"[UNK]": 0, "a": 1}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    assert TokenCounter(tok).count("x" * 10_000) == 1
    assert longest_token(tok) is None and TokenCounter(tok).max_chars(10) is None
