"""Changing the embedding model with `retrieval.reembed` on the real PostgreSQL: search answers
before, during and after the switch, chunks written meanwhile get new vectors, the old column
goes, and an interrupted reindex resumes where it stopped."""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from urllib.parse import urlsplit, urlunsplit

import numpy as np
import psycopg
import pytest
from pgvector.psycopg import register_vector_async

from core.db import connect
from core.embedder import Embedder
from core.migrate import migrate
from retrieval import index, reembed
from retrieval.search import SearchParams, search
from tests.factories import HashEmbedder, make_document

OLD = HashEmbedder(64, name="hash-a")
NEW = HashEmbedder(48, name="hash-b")
TARGET = "/docs/boiler.md"
QUERY = "boiler error code pressure sensor"
FRUIT = ("plum", "quince", "apricot", "damson", "rhubarb", "gooseberry", "medlar", "sloe")


@contextlib.contextmanager
def scratch_database(pg_url: str, name: str, model: str, dim: int) -> Iterator[str]:
    """A database of its own (the session's is shared), migrated and pinned to `model`."""
    with psycopg.connect(pg_url, autocommit=True) as admin:
        admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        admin.execute(f"CREATE DATABASE {name}")
    url = urlunsplit(urlsplit(pg_url)._replace(path=f"/{name}"))  # a URL, as DATABASE_URL is
    try:
        migrate(url, embed_model=model, embed_dim=dim)
        yield url
    finally:
        with psycopg.connect(pg_url, autocommit=True) as admin:
            admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def put(conn: psycopg.Connection, emb: Embedder, path: str, texts: Sequence[str]) -> None:
    doc = make_document(path, texts)
    index.replace_chunks(conn, doc, emb.embed([c.embed_text for c in doc.chunks]), model=emb.name)
    conn.commit()


def fill_corpus(url: str, emb: Embedder, filler: int = 20) -> None:
    with connect(url) as conn:
        put(conn, emb, TARGET, ["The boiler error code E-4471 means the pressure sensor failed."])
        for i in range(filler):
            f = FRUIT[i % len(FRUIT)]
            put(conn, emb, f"/docs/jam-{i}.md", [f"Jar {i} of {f} jam.", f"Stir the {f} slowly."])


@pytest.fixture
def old_index(pg_url: str) -> Iterator[str]:
    with scratch_database(pg_url, "hearth_reembed", OLD.name, OLD.dim) as url:
        fill_corpus(url, OLD)
        yield url


class Gate:
    """The reindex embeds a batch only once the searcher has searched since the batch before:
    searches and batches interleave, however fast either side runs."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self.searches = 0
        self.open = False  # after the searcher stops: nothing to wait for

    def searched(self) -> None:
        with self._cond:
            self.searches += 1
            self._cond.notify_all()

    def wait_for_search(self) -> None:
        with self._cond:
            seen = self.searches
            assert self._cond.wait_for(lambda: self.searches > seen or self.open, timeout=60)


@dataclass
class GatedEmbedder:
    inner: Embedder
    gate: Gate | None = None
    hook: Callable[[int], None] | None = None  # called with the call's number, before embedding
    calls: int = 0
    texts: int = 0

    @property
    def name(self) -> str:
        return self.inner.name

    @property
    def dim(self) -> int:
        return self.inner.dim

    def count_tokens(self, text: str) -> int:
        return self.inner.count_tokens(text)

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        if self.gate is not None:
            self.gate.wait_for_search()
        self.calls += 1
        if self.hook is not None:
            self.hook(self.calls)
        self.texts += len(texts)
        return self.inner.embed(texts)


@dataclass
class Searches:
    """What each search saw: the phase, the model its query was embedded with, the top path."""

    seen: list[tuple[str, str, str | None]] = field(default_factory=list)
    retried: int = 0

    def phases(self) -> set[str]:
        return {phase for phase, _, _ in self.seen}


async def search_once(
    conn: psycopg.AsyncConnection,
    mode: str,
    out: Searches,
    models: tuple[Embedder, Embedder] = (OLD, NEW),
) -> None:
    """As the API does: embed with the index's model; if the index switched to another
    dimension between that look and the search, embed again with the new model."""
    by_name = {m.name: m for m in models}
    params = SearchParams(limit=3, mode=mode)  # type: ignore[arg-type]
    meta = await reembed.index_meta_async(conn)
    try:
        found = await search(conn, QUERY, by_name[meta["embed_model"]].embed([QUERY])[0], params)
    except psycopg.errors.DataException as exc:
        assert "dimensions" in str(exc)
        out.retried += 1
        meta = await reembed.index_meta_async(conn)
        found = await search(conn, QUERY, by_name[meta["embed_model"]].embed([QUERY])[0], params)
    phase = (
        "during"
        if "next_embed_model" in meta
        else "before"
        if meta["embed_model"] == models[0].name
        else "after"
    )
    out.seen.append((phase, meta["embed_model"], found[0].path if found else None))


async def keep_searching(
    url: str,
    start: Callable[[], None],
    done: Callable[[], bool],
    out: Searches,
    gate: Gate | None = None,
    models: tuple[Embedder, Embedder] = (OLD, NEW),
) -> None:
    """Search before `start` (the reindex), all the while it runs, and after it is done."""
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        await register_vector_async(conn)
        for mode in ("dense", "hybrid"):
            await search_once(conn, mode, out, models)
        start()
        while not done():
            await search_once(conn, ("dense", "hybrid")[len(out.seen) % 2], out, models)
            if gate is not None:
                gate.searched()
            await asyncio.sleep(0)
        for mode in ("dense", "hybrid"):
            await search_once(conn, mode, out, models)


def reindex_in_thread(
    url: str,
    emb: Embedder,
    batch: int,
    on_progress: Callable[[str, reembed.Progress], None] | None = None,
) -> tuple[threading.Thread, threading.Event, list[BaseException]]:
    done, errors = threading.Event(), []

    def job() -> None:
        try:
            with connect(url, autocommit=True) as conn:
                reembed.run(conn, emb, batch=batch, on_progress=on_progress)
        except BaseException as exc:
            errors.append(exc)
        finally:
            done.set()

    return threading.Thread(target=job, daemon=True), done, errors


def vector_column(conn: psycopg.Connection) -> list[tuple[str, str, bool]]:
    return conn.execute(
        "SELECT attname, format_type(atttypid, atttypmod), attnotnull FROM pg_attribute"
        " WHERE attrelid = 'chunks'::regclass AND NOT attisdropped"
        " AND format_type(atttypid, atttypmod) LIKE 'vector%' ORDER BY attnum"
    ).fetchall()


def stored_vectors(conn: psycopg.Connection, path_like: str) -> list[tuple[str, np.ndarray]]:
    rows = conn.execute(
        "SELECT c.context, c.text, c.embedding FROM chunks c JOIN documents d"
        " ON d.id = c.document_id WHERE d.path LIKE %s ORDER BY c.id",
        (path_like,),
    ).fetchall()
    return [
        (f"{ctx}\n{text}" if ctx else text, np.asarray(vec.to_numpy())) for ctx, text, vec in rows
    ]


def assert_switched(conn: psycopg.Connection) -> None:
    meta = reembed.index_meta(conn)
    assert meta["embed_model"] == NEW.name and meta["embed_dim"] == str(NEW.dim)
    assert json.loads(meta["retired_embed_models"]) == [OLD.name]
    assert "next_embed_model" not in meta and "next_embed_dim" not in meta
    assert vector_column(conn) == [("embedding", f"vector({NEW.dim})", True)]
    (indexdef,) = conn.execute(
        "SELECT pg_get_indexdef(i.indexrelid) FROM pg_index i JOIN pg_class c"
        " ON c.oid = i.indexrelid WHERE c.relname = 'chunks_embedding_hnsw' AND i.indisvalid"
    ).fetchone() or ("",)
    assert "hnsw (embedding vector_cosine_ops)" in indexdef
    assert reembed.pending(conn) is None
    every = stored_vectors(conn, "%")
    assert len(every) == conn.execute("SELECT count(*) FROM chunks").fetchone()[0] > 0
    for text, vec in every:  # every chunk, however it got there, holds the new model's vector
        np.testing.assert_allclose(vec, NEW.embed([text])[0], atol=1e-6)


def test_search_answers_throughout_and_chunks_written_meanwhile_are_re_embedded(
    old_index: str,
) -> None:
    gate = Gate()
    writer = connect(old_index)

    def write_during_pass(call: int) -> None:
        if call == 2:  # in the middle of the first pass, a worker still on the old model
            put(writer, OLD, "/docs/during-pass.md", ["Pickled walnuts keep for a year."])

    def write_at(stage: str, _p: reembed.Progress) -> None:
        if stage in ("index", "switch"):  # before the HNSW build; after the last pass
            put(writer, OLD, f"/docs/at-{stage}.md", [f"A {stage} note about marmalade."])

    emb = GatedEmbedder(NEW, gate, write_during_pass)
    thread, done, errors = reindex_in_thread(old_index, emb, batch=4, on_progress=write_at)
    out = Searches()
    try:
        asyncio.run(keep_searching(old_index, thread.start, done.is_set, out, gate))
    finally:
        gate.open = True
        thread.join(timeout=120)
    assert not errors, errors
    assert emb.calls >= 12  # 41 chunks in batches of 4, plus the stragglers
    assert out.phases() == {"before", "during", "after"}
    assert [s for s in out.seen if s[2] != TARGET] == []  # no empty result, no wrong answer
    assert {model for phase, model, _ in out.seen if phase != "after"} == {OLD.name}
    assert {model for phase, model, _ in out.seen if phase == "after"} == {NEW.name}
    assert sum(phase == "during" for phase, _, _ in out.seen) >= emb.calls - 1
    assert out.retried <= 1

    with connect(old_index) as conn:
        assert_switched(conn)
        for path in ("/docs/during-pass.md", "/docs/at-index.md", "/docs/at-switch.md"):
            assert stored_vectors(conn, path), path  # written mid-reindex, re-embedded above
    with pytest.raises(index.IndexModelChanged, match="hash-b"):
        put(writer, OLD, "/docs/stale.md", ["A worker that missed the switch."])
    writer.rollback()
    put(writer, NEW, "/docs/fresh.md", ["Written with the new model."])
    writer.close()


class Interrupted(Exception):
    pass


def test_an_interrupted_reindex_resumes_where_it_stopped(old_index: str) -> None:
    def stop_on_third(call: int) -> None:
        if call == 3:
            raise Interrupted

    with connect(old_index, autocommit=True) as conn:
        with pytest.raises(Interrupted):
            reembed.run(conn, GatedEmbedder(NEW, hook=stop_on_third), batch=5)
        stopped = reembed.pending(conn)
        assert stopped is not None and stopped.model == NEW.name and stopped.dim == NEW.dim
        assert stopped.done == 10 and stopped.missing == stopped.total - 10 > 0
        out = Searches()
        asyncio.run(_search_twice(old_index, out))  # still served by the old vectors
        assert out.seen == [("during", OLD.name, TARGET)] * 2

        resumed = GatedEmbedder(NEW)
        final = reembed.run(conn, resumed, batch=5)
        assert final.missing == 0 and final.model == NEW.name
        assert resumed.texts == stopped.missing  # nothing embedded twice
        assert_switched(conn)


async def _search_twice(url: str, out: Searches) -> None:
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        await register_vector_async(conn)
        for mode in ("dense", "hybrid"):
            await search_once(conn, mode, out)


def test_abort_drops_the_shadow_and_another_model_waits_for_it(old_index: str) -> None:
    with connect(old_index, autocommit=True) as conn:
        with pytest.raises(reembed.ReindexError, match="already uses"):
            reembed.begin(conn, OLD.name, OLD.dim)
        started = reembed.begin(conn, NEW.name, NEW.dim)
        assert started.missing == started.total == 41
        assert reembed.fill_batch(conn, NEW, NEW.dim, after=0, batch=7) is not None
        with pytest.raises(reembed.ReindexError, match="--abort"):
            reembed.begin(conn, "hash-c", 32)
        again = reembed.begin(conn, NEW.name, NEW.dim)  # the same model: carries on
        assert again.done == 7
        assert reembed.abort(conn) is True
        assert reembed.pending(conn) is None and reembed.abort(conn) is False
        assert vector_column(conn) == [("embedding", f"vector({OLD.dim})", True)]
        assert "next_embed_model" not in reembed.index_meta(conn)
        reembed.begin(conn, NEW.name, NEW.dim)
    # the offline rebuild (`hearth migrate --reembed`) drops an unfinished reindex as well
    migrate(old_index, embed_model="hash-z", embed_dim=16, reembed=True)
    with connect(old_index) as conn:
        assert vector_column(conn) == [("embedding", "vector(16)", True)]
        assert reembed.pending(conn) is None


def test_which_model_a_running_process_follows() -> None:
    meta = {"embed_model": "b", "retired_embed_models": '["a"]'}
    assert reembed.model_to_follow(meta, seen="a", loaded="a") == "b"  # switched under it
    assert reembed.model_to_follow(meta, seen=None, loaded="a") == "b"  # started stale
    assert reembed.model_to_follow(meta, seen="b", loaded="b") is None
    # a process given another embedder on purpose (tests, eval) keeps it until a switch
    assert reembed.model_to_follow(meta, seen=None, loaded="fake") is None
    assert reembed.model_to_follow(meta, seen="b", loaded="fake") is None
    assert reembed.model_to_follow({**meta, "embed_model": "c"}, seen="b", loaded="fake") == "c"
