"""What `unstructured` works out that Hearth throws away, and which costs most of a parse.

- The document's language (langdetect over all of its text, ~20 ms a file): Hearth keeps none.
  `languages=NO_LANGUAGE` is unstructured's own way to skip it. PDFs name English instead.
- NarrativeText or plain Text, in HTML (Markdown and e-mail bodies are parsed as HTML) and DOCX:
  a spaCy parse of each paragraph (~7 ms; 60-85% of those formats' time). Both become Hearth's
  "text" (ingest.formats.convert), and nothing else there hangs on the answer (headings come from
  tags and styles, list items are recognised before it), so in those two modules the check
  answers "no" at once (`skip_narrative_checks`). In plain text (PDF pages, plain e-mail bodies),
  PowerPoint and Excel a paragraph found not narrative may be taken for a heading, so there the
  answer matters, but only for text that could be one: the heading check, which turns away
  anything over a dozen words without spaCy, is asked first, and the narrative check only when
  it says yes (anything else stays body text either way).

tests/ingest/formats/test_lean.py parses every format both ways and compares what Hearth gets.
"""

from __future__ import annotations

import sys
from typing import Any

NO_LANGUAGE = [""]
# where "narrative or not" decides nothing Hearth keeps
NARRATIVE_CHECKS = ("unstructured.partition.html.parser", "unstructured.partition.docx")
# where "not narrative" is followed by the heading check (narrative, else title, else text)
TITLE_AFTER = (
    "unstructured.partition.text",
    "unstructured.partition.pptx",
    "unstructured.partition.xlsx",
)


def _not_narrative(text: str, *args: Any, **kwargs: Any) -> bool:
    return False


def _narrative_unless_a_title(text: str, *args: Any, **kwargs: Any) -> bool:
    from unstructured.partition import text_type

    if not text_type.is_possible_title(text):
        return True  # body text whatever the answer: NarrativeText or Text, both Hearth's text
    return bool(text_type.is_possible_narrative_text(text, *args, **kwargs))


def skip_narrative_checks() -> None:
    """Swap the narrative-text check in those modules of `NARRATIVE_CHECKS` and `TITLE_AFTER`
    that are imported: call it after importing a partitioner, before calling it (nothing is
    imported here: Excel's module alone brings pandas). Idempotent; a module without the check,
    in some later unstructured, is left alone and the tests say so."""
    for names, check in (
        (NARRATIVE_CHECKS, _not_narrative),
        (TITLE_AFTER, _narrative_unless_a_title),
    ):
        for name in names:
            module = sys.modules.get(name)
            if module is not None and hasattr(module, "is_possible_narrative_text"):
                setattr(module, "is_possible_narrative_text", check)  # noqa: B010
