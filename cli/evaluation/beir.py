"""Reading a BEIR-format dataset folder (corpus.jsonl, queries*.jsonl, qrels), and the small
`--quick` subset of it."""

from __future__ import annotations

import csv
import json
import random
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class BeirDoc:
    id: str
    title: str
    text: str


@dataclass
class Dataset:
    name: str
    corpus: dict[str, BeirDoc]
    queries: dict[str, str]
    qrels: dict[str, dict[str, int]]  # only queries that have a relevant document


def _qrels_file(root: Path, split: str) -> Path:
    for candidate in (root / "qrels" / f"{split}.tsv", root / f"qrels_{split}.tsv"):
        if candidate.is_file():
            return candidate
    found = sorted(root.glob("qrels*.tsv")) + sorted(root.glob("qrels/*.tsv"))
    if not found:
        raise FileNotFoundError(f"no qrels file in {root} (qrels/{split}.tsv or qrels_{split}.tsv)")
    return found[0]


def _queries_file(root: Path, split: str) -> Path:
    for candidate in (root / f"queries_{split}.jsonl", root / "queries.jsonl"):
        if candidate.is_file():
            return candidate
    found = sorted(root.glob("queries*.jsonl"))
    if not found:
        raise FileNotFoundError(f"no queries*.jsonl in {root}")
    return found[0]


def load(root: Path, split: str = "test") -> Dataset:
    """The corpus, and the queries of `split` that have at least one relevant document."""
    corpus: dict[str, BeirDoc] = {}
    with (root / "corpus.jsonl").open(encoding="utf-8") as f:
        for line in f:
            if line.strip():
                row = json.loads(line)
                doc_id = str(row["_id"])
                corpus[doc_id] = BeirDoc(doc_id, row.get("title") or "", row.get("text") or "")
    qrels: dict[str, dict[str, int]] = {}
    with _qrels_file(root, split).open(encoding="utf-8", newline="") as f:
        for row in csv.reader(f, delimiter="\t"):
            if len(row) < 3 or not row[2].strip().lstrip("-").isdigit():
                continue  # the header
            grade = int(row[2])
            if grade > 0 and row[1] in corpus:
                qrels.setdefault(row[0], {})[row[1]] = grade
    queries: dict[str, str] = {}
    with _queries_file(root, split).open(encoding="utf-8") as f:
        for line in f:
            if line.strip():
                row = json.loads(line)
                if str(row["_id"]) in qrels:
                    queries[str(row["_id"])] = row["text"]
    qrels = {q: rel for q, rel in qrels.items() if q in queries}
    return Dataset(root.resolve().name, corpus, queries, qrels)


def subset(data: Dataset, *, docs: int = 300, max_queries: int | None = None, seed: int = 0):
    """A small dataset for quick runs: some queries, all their relevant documents, and random
    other documents up to `docs`; queries keep only relevant documents that are included."""
    rng = random.Random(seed)
    qids = sorted(data.qrels)
    rng.shuffle(qids)
    chosen: list[str] = []
    keep: set[str] = set()
    for qid in qids:
        rel = set(data.qrels[qid])
        if len(keep | rel) > docs // 3 or (max_queries and len(chosen) >= max_queries):
            break
        chosen.append(qid)
        keep |= rel
    others = sorted(set(data.corpus) - keep)
    keep |= set(rng.sample(others, min(len(others), max(docs - len(keep), 0))))
    return Dataset(
        data.name + "-quick",
        {d: data.corpus[d] for d in sorted(keep)},
        {q: data.queries[q] for q in chosen},
        {q: data.qrels[q] for q in chosen},
    )


def limit_queries(data: Dataset, n: int) -> Dataset:
    """The first `n` queries (in id order), the whole corpus."""
    qids = sorted(data.qrels)[:n]
    return Dataset(
        data.name, data.corpus, {q: data.queries[q] for q in qids}, {q: data.qrels[q] for q in qids}
    )
