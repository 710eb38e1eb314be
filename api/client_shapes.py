"""Citations in the shapes chat clients persist, chosen per client.

Beside Hearth's own `sources` field, an answer can carry its citations as:
- `footer`: a readable "Sources:" list appended to the text (clients that show nothing else);
- OpenAI `url_citation` annotations (`message.annotations`, streamed as `delta.annotations`),
  plus a top-level `citations` list of URLs by marker number (the Perplexity/xAI shape that
  LobeChat turns into citation chips);
- Open WebUI's source events: stream chunks carrying `"event": {"type": "source", ...}`, which
  Open WebUI emits to the browser and saves on the message (backend/open_webui/utils/middleware.py,
  process_chat_response -> stream_body_handler: `if "event" in data ...: await
  event_emitter(data.get("event", {}))`).

A style names which of these an answer gets (CITATION_STYLE, or per request X-Hearth-Citations);
`auto` recognises Open WebUI by its forwarded-user headers or its built-in tool names, and gives
every other client the footer.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal
from urllib.parse import quote

from core.settings import Settings
from core.types import Citation, Passage

from .answercheck import drop_marked
from .schemas import ChatRequest

Style = Literal["auto", "footer", "annotations", "openwebui", "none"]
STYLES: tuple[str, ...] = ("auto", "footer", "annotations", "openwebui", "none")

# tools that Open WebUI 0.6+/0.12 adds to every chat when native tool calling is on
# (middleware.py get_citation_source_from_tool_result names them)
_OPENWEBUI_TOOLS = frozenset({"query_knowledge_files", "view_knowledge_file"})


def detect_client(headers: Mapping[str, str], body: ChatRequest) -> str | None:
    """ "openwebui" when the request comes from Open WebUI, else None (unknown client)."""
    if any(k.lower().startswith("x-openwebui-") for k in headers):
        return "openwebui"  # ENABLE_FORWARD_USER_INFO_HEADERS (routers/openai.py)
    tools = (body.model_extra or {}).get("tools")
    if isinstance(tools, list):
        names = {
            (t.get("function") or {}).get("name")
            for t in tools
            if isinstance(t, dict) and isinstance(t.get("function"), dict)
        }
        if names & _OPENWEBUI_TOOLS:
            return "openwebui"
    return None


@dataclass(frozen=True)
class Shape:
    """What an answer carries besides `sources`."""

    footer: bool
    annotations: bool  # message/delta annotations and the top-level `citations` list
    events: bool  # Open WebUI source events (streams only)
    # a non-streamed answer to Open WebUI: its browser sets `message.sources` from the response's
    # top-level `sources` and saves it, so that field takes Open WebUI's shape (Hearth's own
    # list moves to `hearth_sources`)
    openwebui_sources: bool = False


def resolve(style: str, client: str | None, *, stream: bool, footer_allowed: bool) -> Shape:
    """The shape for a style; `footer_allowed` False (SOURCES_FOOTER=false, sources_footer:
    false, X-Hearth-Footer: off) removes the footer whatever the style."""
    if style == "auto":
        style = "openwebui" if client == "openwebui" else "footer"
    if style == "none":
        return Shape(False, False, False)
    if style == "openwebui":
        if stream:  # Open WebUI turns url_citation annotations into sources too: events only
            return Shape(False, False, True)
        # middleware.py process_chat_response, non-streamed: event_emitter({"type":
        # "chat:completion", "data": response_data}); the browser's chatCompletionEventHandler
        # then does `if (sources) message.sources = sources`
        return Shape(False, False, False, openwebui_sources=True)
    if style == "annotations":
        return Shape(False, True, False)
    return Shape(footer_allowed, True, False)


def display_path(settings: Settings, path: str) -> str:
    """A document's path as people may see it: relative to its watched folder, an upload's
    file name; never an absolute server path."""
    p = Path(path)
    for root in settings.watch_roots:
        for base in {root.path, root.path.resolve()}:
            if p.is_relative_to(base) and p != base:
                return p.relative_to(base).as_posix()
    return p.name or "document"


def base_url(settings: Settings, request_base: str) -> str:
    """The base URL citations point under: PUBLIC_URL, else the request's."""
    return (settings.public_url or request_base).rstrip("/")


def passage_url(settings: Settings, base: str, p: Passage) -> str:
    """The passage's own URL under `base` (distinct per passage), by what citations open
    (CITATION_LINK). `ui`: its page in Hearth's own UI, /ui/passages/{chunk id}, with its
    character span (a person in a browser signs in there; the page marks every chunk a merged
    passage joined); `file`: the file's download (for a token holder), its fragment naming the
    page (which PDF viewers open) and the chunk."""
    if settings.citation_link == "file":
        frag = f"page={p.page}&chunk={p.chunk_id}" if p.page else f"chunk={p.chunk_id}"
        return f"{base}/v1/files/file-{p.document_id}/content#{quote(frag, safe='=&')}"
    return f"{base}/ui/passages/{p.chunk_id}?span={p.char_start}-{p.char_end}"


def label(settings: Settings, p: Passage) -> str:
    name = p.title or display_path(settings, p.path)
    return f"{name}, page {p.page}" if p.page else name


def footer(settings: Settings, citations: Sequence[Citation]) -> str:
    """A readable "Sources" list in marker order, with display paths."""
    if not citations:
        return ""
    lines = ["", "", "Sources:"]
    for c in sorted(citations, key=lambda c: c.index):
        p = c.passage
        where = [p.title or display_path(settings, p.path)]
        if p.page:
            where.append(f"page {p.page}")
        if p.heading_path:
            where.append("§ " + " > ".join(p.heading_path))
        lines.append(f"[{c.index}] " + ", ".join(where) + f" ({display_path(settings, p.path)})")
    return "\n".join(lines)


def url_annotations(
    settings: Settings,
    base: str,
    text: str,
    citations: Sequence[Citation],
    passages: Sequence[Passage] | None = None,
) -> list[dict[str, Any]]:
    """One url_citation per cited passage, spanning its first `[n]` marker in `text` (the end
    of the text when the marker is not there). Given the turn's `passages`, one per passage
    1..the highest cited, in number order, as the other lists (`_by_number`): LobeChat shows
    annotations as its citation list and links the text's `[n]` to the n-th entry
    (@lobehub/ui Markdown transformCitations), so with a gap ([2] cited, [1] not) `[2]` must
    still be the second entry; the uncited one holds its place with an empty span at the end."""
    cited = {c.index for c in citations}
    if passages is None:
        numbered = [(c.index, c.passage) for c in sorted(citations, key=lambda c: c.index)]
    else:
        numbered = list(enumerate(_by_number(passages, citations), start=1))
    out = []
    for n, p in numbered:
        marker = f"[{n}]"
        start = text.find(marker) if n in cited else -1
        start, end = (start, start + len(marker)) if start >= 0 else (len(text), len(text))
        out.append(
            {
                "type": "url_citation",
                "url_citation": {
                    "url": passage_url(settings, base, p),
                    "title": label(settings, p),
                    "start_index": start,
                    "end_index": end,
                },
            }
        )
    return out


def _by_number(passages: Sequence[Passage], citations: Sequence[Citation]) -> list[Passage]:
    """Passages 1..the highest cited number: clients number their sources by position, so the
    text's `[n]` must be the n-th entry (a lower uncited one holds its place)."""
    top = max((c.index for c in citations), default=0)
    return list(passages[:top])


def url_list(
    settings: Settings, base: str, passages: Sequence[Passage], citations: Sequence[Citation]
) -> list[str]:
    """The top-level `citations` list (Perplexity/xAI shape, read by LobeChat)."""
    return [passage_url(settings, base, p) for p in _by_number(passages, citations)]


def source_events(
    settings: Settings, base: str, passages: Sequence[Passage], citations: Sequence[Citation]
) -> list[dict[str, Any]]:
    """Open WebUI `source` events, one per passage 1..highest cited, in number order. Open WebUI
    groups a source's documents by `metadata[i].source`, so each passage's URL is distinct."""
    events = []
    for p in _by_number(passages, citations):
        url = passage_url(settings, base, p)
        name = label(settings, p)
        meta: dict[str, Any] = {"source": url, "name": name, "file_id": f"file-{p.document_id}"}
        if p.page:
            meta["page"] = p.page - 1  # Open WebUI shows page + 1 (0-based, as its loaders)
        events.append(
            {
                "type": "source",
                "data": {
                    "source": {"id": url, "name": name, "url": url},
                    "document": [p.text],
                    "metadata": [meta],
                },
            }
        )
    return events


# --- history hygiene: Hearth's own additions in an earlier answer a client sends back ---------

_FOOTER_LINE = re.compile(r"\[\d{1,3}\] ")
_MARKERS = re.compile(r"\s?\[\d{1,3}(?:\s*,\s*\d{1,3})*\]")


def _strip_footer(text: str) -> str:
    """`text` without a trailing "Sources:" list (a line of its own, then only `[n] ...`
    lines). By search from the end, not a regex over the text: a client's text is any size."""
    at = text.rfind("Sources:")
    if at < 0 or (at > 0 and text[at - 1] != "\n"):
        return text
    head, _, rest = text[at + len("Sources:") :].partition("\n")
    lines = [ln.strip() for ln in rest.splitlines() if ln.strip()]
    if head.strip() or not lines or not all(_FOOTER_LINE.match(ln) for ln in lines):
        return text
    return text[:at]


def _strip_details(text: str) -> str:
    """`text` without `<details ...>...</details>` blocks, in one pass."""
    out, pos = [], 0
    while (start := text.find("<details", pos)) >= 0:
        end = text.find("</details>", start)
        if end < 0:
            break
        out.append(text[pos:start])
        pos = end + len("</details>")
    out.append(text[pos:])
    return "".join(out)


def clean_answer(text: str) -> str:
    """An earlier assistant answer without Hearth's footer, its `[n]` markers and collapsed
    blocks a client folded into it: the plain prose, for the rewrite and the prompt."""
    text = drop_marked(_strip_details(_strip_footer(text)))
    return _MARKERS.sub("", text).strip()
