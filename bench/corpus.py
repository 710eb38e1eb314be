"""A synthetic, reproducible corpus for benchmarks: prose-like text generated from a small
vocabulary and sentence templates, written as Markdown, plain text, HTML, PDF and DOCX.

It reads like household and office paperwork, but it is generated, not real documents: fine for
timing parsing, chunking and embedding, meaningless for judging retrieval quality.
"""

from __future__ import annotations

import html
import random
from collections import Counter
from pathlib import Path

KINDS = ("md", "txt", "html", "pdf", "docx")

_SUBJECTS = [
    "the landlord", "our accountant", "the insurance company", "the project team", "the council",
    "the school office", "my sister", "the plumber", "the bank", "the new manager", "the committee",
    "the supplier", "the pharmacy", "the tax office", "the installer", "the review board",
]  # fmt: skip
_VERBS = [
    "confirmed", "asked about", "postponed", "approved", "rejected", "summarised", "updated",
    "paid", "scheduled", "questioned", "reviewed", "signed", "cancelled", "estimated", "sent",
]  # fmt: skip
_OBJECTS = [
    "the annual budget", "the heating repair", "the March invoice", "the rental agreement",
    "the quarterly report", "the warranty claim", "the meeting notes", "the travel plan",
    "the pension statement", "the roof inspection", "the migration plan", "the school trip",
    "the grant application", "the server upgrade", "the deposit", "the medical referral",
]  # fmt: skip
_TAILS = [
    "before the end of the month", "after a long discussion", "without any further comment",
    "because the figures did not add up", "as agreed in the last meeting", "by email on Tuesday",
    "so that nothing is forgotten next year", "although the deadline had already passed",
    "with a note about the remaining costs", "pending a second opinion", "in the shared folder",
]  # fmt: skip
_HEADINGS = [
    "Background", "Costs", "Decisions", "Open questions", "Timeline", "Contacts", "Next steps",
    "Risks", "Summary", "Notes", "Appendix", "Maintenance", "Payments", "Documents to keep",
]  # fmt: skip


def sentence(rng: random.Random) -> str:
    s = f"{rng.choice(_SUBJECTS)} {rng.choice(_VERBS)} {rng.choice(_OBJECTS)} {rng.choice(_TAILS)}"
    if rng.random() < 0.4:
        s += f", and the total came to {rng.randint(12, 9800)} euros"
    if rng.random() < 0.2:
        s += f" (reference {rng.randint(1000, 99999)}-{rng.choice('ABCDEFGH')})"
    return s[0].upper() + s[1:] + "."


def paragraph(rng: random.Random) -> str:
    return " ".join(sentence(rng) for _ in range(rng.randint(3, 7)))


def sections(rng: random.Random, n_min: int = 3, n_max: int = 6) -> list[tuple[str, list[str]]]:
    """(heading, paragraphs) pairs: a document's outline with its prose."""
    heads = rng.sample(_HEADINGS, rng.randint(n_min, n_max))
    return [(h, [paragraph(rng) for _ in range(rng.randint(1, 4))]) for h in heads]


def _title(rng: random.Random, i: int) -> str:
    return f"{rng.choice(_OBJECTS).removeprefix('the ').capitalize()} {2020 + i % 6} #{i}"


def write_md(path: Path, rng: random.Random, i: int) -> None:
    out = [f"# {_title(rng, i)}", ""]
    for head, paras in sections(rng):
        out += [f"## {head}", ""]
        for p in paras:
            out += [p, ""]
        if rng.random() < 0.3:
            out += [f"- {sentence(rng)}" for _ in range(3)] + [""]
    path.write_text("\n".join(out))


def write_txt(path: Path, rng: random.Random, i: int) -> None:
    paras = [p for _, ps in sections(rng) for p in ps]
    path.write_text(_title(rng, i) + "\n\n" + "\n\n".join(paras) + "\n")


def write_html(path: Path, rng: random.Random, i: int) -> None:
    title = html.escape(_title(rng, i))
    body = [f"<h1>{title}</h1>"]
    for head, paras in sections(rng):
        body.append(f"<h2>{html.escape(head)}</h2>")
        body += [f"<p>{html.escape(p)}</p>" for p in paras]
        if rng.random() < 0.3:
            items = "".join(f"<li>{html.escape(sentence(rng))}</li>" for _ in range(3))
            body.append(f"<ul>{items}</ul>")
    path.write_text(
        f"<!doctype html><html><head><meta charset='utf-8'><title>{title}</title></head>"
        f"<body>{''.join(body)}</body></html>\n"
    )


def write_pdf(path: Path, rng: random.Random, i: int) -> None:
    from reportlab.lib.pagesizes import A4
    from reportlab.lib.styles import getSampleStyleSheet
    from reportlab.platypus import Paragraph, SimpleDocTemplate

    styles = getSampleStyleSheet()
    story = [Paragraph(html.escape(_title(rng, i)), styles["Title"])]
    for head, paras in sections(rng, 2, 4):
        story.append(Paragraph(html.escape(head), styles["Heading2"]))
        story += [Paragraph(html.escape(p), styles["BodyText"]) for p in paras]
    # invariant=1 fixes the creation date and ids, so the same seed gives the same bytes
    SimpleDocTemplate(str(path), pagesize=A4, invariant=1).build(story)


def write_docx(path: Path, rng: random.Random, i: int) -> None:
    import docx

    doc = docx.Document()
    doc.add_heading(_title(rng, i), level=1)
    for head, paras in sections(rng):
        doc.add_heading(head, level=2)
        for p in paras:
            doc.add_paragraph(p)
        if rng.random() < 0.25:
            table = doc.add_table(rows=3, cols=2)
            for r, row in enumerate(table.rows):
                row.cells[0].text = rng.choice(_OBJECTS)
                row.cells[1].text = f"{rng.randint(10, 5000)} EUR" if r else "amount"
    doc.save(str(path))


_WRITERS = {
    "md": write_md,
    "txt": write_txt,
    "html": write_html,
    "pdf": write_pdf,
    "docx": write_docx,
}


def make_corpus(folder: Path, n_files: int, seed: int = 7) -> list[Path]:
    """`n_files` distinct documents, the kinds taken in turn, in `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    paths = []
    for i in range(n_files):
        kind = KINDS[i % len(KINDS)]
        path = folder / f"doc-{i:04d}.{kind}"
        _WRITERS[kind](path, rng, i)
        paths.append(path)
    return paths


def describe(paths: list[Path]) -> dict[str, object]:
    return {
        "files": len(paths),
        "bytes": sum(p.stat().st_size for p in paths),
        "by_kind": dict(Counter(p.suffix[1:] for p in paths)),
        "text": "synthetic prose-like text (templates over a small vocabulary), not real documents",
    }


def make_small_files(folder: Path, n_files: int, per_folder: int = 100) -> list[Path]:
    """`n_files` small text files spread over sub-folders, as a big watched tree has them."""
    paths = []
    for i in range(n_files):
        sub = folder / f"dir-{i // per_folder:03d}"
        if i % per_folder == 0:
            sub.mkdir(parents=True, exist_ok=True)
        p = sub / f"note-{i:05d}.txt"
        p.write_text(f"Note {i}: remember the meter reading, {i * 37 % 1000} units.\n")
        paths.append(p)
    return paths
