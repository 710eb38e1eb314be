"""What `unstructured` works out that Hearth throws away, and which costs most of a parse.

- The document's language (langdetect over all of its text, ~20 ms a file): Hearth keeps none.
  `languages=NO_LANGUAGE` is unstructured's own way to skip it. PDFs name English instead.
- NarrativeText or plain Text, in HTML (Markdown and e-mail bodies are parsed as HTML) and DOCX:
  a spaCy parse of each paragraph (~7 ms; 60-85% of those formats' time). Both become Hearth's
  "text" (ingest.formats.convert), and nothing else there hangs on the answer (headings come from
  tags and styles, list items are recognised before it), so in those two modules the check
  answers "no" at once (`skip_narrative_checks`). Plain text, PDF, PowerPoint and Excel keep it:
  there a paragraph found not to be narrative may be taken for a heading.

tests/ingest/test_parse.py parses every format both ways and compares what Hearth gets.
"""

from __future__ import annotations

import importlib
from typing import Any

NO_LANGUAGE = [""]
NARRATIVE_CHECKS = ("unstructured.partition.html.parser", "unstructured.partition.docx")


def _not_narrative(text: str, *args: Any, **kwargs: Any) -> bool:
    return False


def skip_narrative_checks() -> None:
    """Swap the narrative-text check in the modules of `NARRATIVE_CHECKS` (idempotent; a module
    without one, in some later unstructured, is left alone and the tests say so)."""
    for name in NARRATIVE_CHECKS:
        module = importlib.import_module(name)
        if hasattr(module, "is_possible_narrative_text"):
            setattr(module, "is_possible_narrative_text", _not_narrative)  # noqa: B010
