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

log = logging.getLogger(__name__)

# what a chat template adds around each message (`<|im_start|>role\n … <|im_end|>\n`, or the
# Llama/Mistral equivalents): generous, so an unknown template still fits
MESSAGE_OVERHEAD = 8
# the assistant header the template appends for generation, plus slack for templates that add
# a default system line
REPLY_OVERHEAD = 24


# a word; spaces before a word (which BPE merges into it); other spaces; ASCII; anything else
_PIECES = re.compile(r"([A-Za-z]+)|(\s+(?=[A-Za-z]))|(\s+)|([\x00-\x7f])|(.)", re.DOTALL)


def estimate(text: str) -> int:
    """An upper estimate of the tokens of `text` in an unknown BPE tokenizer: a token per 4
    letters of a word (English words are mostly one), per digit, per punctuation mark, per run
    of spaces not followed by a word, and per UTF-8 byte of anything else (a byte-level BPE
    never needs more), so numbers, code, Chinese and emoji are not undercounted."""
    n = 1
    for letters, lead, space, ascii_char, other in _PIECES.findall(text):
        if letters:
            n += (len(letters) + 3) // 4
        elif lead:
            n += "\n" in lead
        elif space or ascii_char:
            n += 1
        else:
            n += len(other.encode("utf-8", "surrogatepass"))
    return n


class TokenCounter:
    """`count(text)` in the served model's tokens; `exact` says whether it is the real tokenizer."""

    def __init__(self, tokenizer: Tokenizer | None = None) -> None:
        self._tok = tokenizer
        self.exact = tokenizer is not None

    def count(self, text: str) -> int:
        if self._tok is None:
            return estimate(text)
        return len(self._tok.encode(text, add_special_tokens=False).ids)

    def messages(self, messages: Sequence[dict[str, str]]) -> int:
        """Tokens a chat request of `messages` takes before the answer starts."""
        return REPLY_OVERHEAD + sum(MESSAGE_OVERHEAD + self.count(m["content"]) for m in messages)


@lru_cache(maxsize=4)
def load_counter(tokenizer_file: Path | None) -> TokenCounter:
    if tokenizer_file is None:
        return TokenCounter()
    try:
        return TokenCounter(Tokenizer.from_file(str(tokenizer_file)))
    except Exception as exc:  # a broken file must not stop chat: fall back to the estimate
        log.warning("cannot load %s (%s); estimating token counts", tokenizer_file, exc)
        return TokenCounter()
