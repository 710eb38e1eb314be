"""Counting prompt tokens the way the served model does, so a request always fits its window.

With the model's `tokenizer.json` (the local model's, or LLM_TOKENIZER) counts are exact; for a
remote backend whose tokenizer Hearth does not have, a conservative estimate keeps requests
inside the window at the cost of fewer passages (`estimate`). Set LLM_TOKENIZER for exact counts.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path

from tokenizers import Tokenizer
from tokenizers.models import BPE

log = logging.getLogger(__name__)

# what a chat template adds around each message (`<|im_start|>role\n … <|im_end|>\n`, or the
# Llama/Mistral equivalents): generous, so an unknown template still fits
MESSAGE_OVERHEAD = 8
# the assistant header the template appends for generation, plus slack for templates that add
# a default system line
REPLY_OVERHEAD = 24


# a word; spaces before a word (which BPE merges into it); other spaces; ASCII; anything else
_PIECES = re.compile(r"([A-Za-z]+)|(\s+(?=[A-Za-z]))|(\s+)|([\x00-\x7f])|(.)", re.DOTALL)
_SPACES_PER_TOKEN = 16  # tokenizers merge runs of spaces, but into tokens of bounded length
# the most characters the estimate ever lets one token cover: a 4-letter word and the 15 spaces
# before it
ESTIMATE_CHARS_PER_TOKEN = 20
_SLICE = 1 << 16  # the estimate works through long texts slice by slice (see `estimate`)


def estimate(text: str) -> int:
    """An upper estimate of the tokens of `text` in an unknown BPE tokenizer: a token per 4
    letters of a word (English words are mostly one), per digit, per punctuation mark, per 16
    spaces, and per UTF-8 byte of anything else (a byte-level BPE never needs more), so numbers,
    code, Chinese and emoji are not undercounted. A text is taken in slices, so the interpreter
    can switch threads between them (a regex scan holds the GIL until it ends); a word or a run
    of spaces cut by a slice's end counts at most once more."""
    n = 1
    for at in range(0, len(text), _SLICE):
        for letters, lead, space, ascii_char, other in _PIECES.findall(text, at, at + _SLICE):
            if letters:
                n += (len(letters) + 3) // 4
            elif lead:
                n += ("\n" in lead) + len(lead) // _SPACES_PER_TOKEN
            elif space:
                n += (len(space) + _SPACES_PER_TOKEN - 1) // _SPACES_PER_TOKEN
            elif ascii_char:
                n += 1
            else:
                n += len(other.encode("utf-8", "surrogatepass"))
    return n


class TokenCounter:
    """`count(text)` in the served model's tokens; `exact` says whether it is the real tokenizer.

    `max_chars_per_token` bounds how many characters one token can cover (None: no bound is
    known), so a text longer than `max_chars(tokens)` is known not to fit without counting it.
    """

    def __init__(self, tokenizer: Tokenizer | None = None) -> None:
        self._tok = tokenizer
        self.exact = tokenizer is not None
        self.max_chars_per_token = (
            ESTIMATE_CHARS_PER_TOKEN if tokenizer is None else longest_token(tokenizer)
        )

    def count(self, text: str) -> int:
        if self._tok is None:
            return estimate(text)
        # encode_batch lets go of the GIL while it works (encode does not), so a long count
        # on a worker thread leaves the event loop running
        return len(self._tok.encode_batch([text], add_special_tokens=False)[0].ids)

    def messages(self, messages: Sequence[dict[str, str]]) -> int:
        """Tokens a chat request of `messages` takes before the answer starts."""
        return REPLY_OVERHEAD + sum(MESSAGE_OVERHEAD + self.count(m["content"]) for m in messages)

    def max_chars(self, tokens: int) -> int | None:
        """The longest text that could take at most `tokens` tokens; None when unknown."""
        if self.max_chars_per_token is None:
            return None
        return max(tokens, 0) * self.max_chars_per_token


def longest_token(tokenizer: Tokenizer) -> int | None:
    """The most characters one token of `tokenizer` can stand for: its longest vocabulary entry,
    for BPE models (byte-level or with byte fallback, as LLM tokenizers are). None for models
    that can fold a run of unknown characters of any length into one token."""
    model = tokenizer.model
    if not isinstance(model, BPE):
        return None
    if model.unk_token is not None and model.fuse_unk and not model.byte_fallback:
        return None
    vocab = tokenizer.get_vocab(with_added_tokens=True)
    return max((len(t) for t in vocab), default=1) or 1


@lru_cache(maxsize=4)
def load_counter(tokenizer_file: Path | None) -> TokenCounter:
    if tokenizer_file is None:
        return TokenCounter()
    try:
        return TokenCounter(Tokenizer.from_file(str(tokenizer_file)))
    except Exception as exc:  # a broken file must not stop chat: fall back to the estimate
        log.warning("cannot load %s (%s); estimating token counts", tokenizer_file, exc)
        return TokenCounter()
