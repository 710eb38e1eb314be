"""Reconciling watched folders with the index (real database, no parsing needed)."""

from __future__ import annotations

import os
from pathlib import Path

import psycopg

from core.settings import WatchRoot
from ingest.hashing import file_sha256
from ingest.sync import IgnoreRules, reconcile, root_for, walk
from retrieval import documents


def indexed(db: psycopg.Connection, path: Path, collection: str = "default") -> None:
    st = path.stat()
    documents.set_status(
        db,
        str(path),
        "indexed",
        collection=collection,
        size=st.st_size,
        mtime=st.st_mtime,
        content_hash=file_sha256(path),
    )
    db.commit()


def test_walk_skips_hidden_temp_and_hearthignored_files(tmp_path: Path) -> None:
    for name in (
        "a.md",
        "sub/b.txt",
        ".git/config",
        "sub/.cache/x",
        "~$lock.docx",
        "c.md.swp",
        "notes.part",
        "logs/today.log",
        "keep.log",
        "private/secret.md",
    ):
        p = tmp_path / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text("x")
    (tmp_path / ".hearthignore").write_text("*.log\n!keep.log\nprivate/\n")
    found = sorted(str(p.relative_to(tmp_path)) for p in walk(tmp_path, IgnoreRules(tmp_path)))
    assert found == ["a.md", "keep.log", "sub/b.txt"]


def test_walk_survives_a_symlink_loop(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "f.txt").write_text("x")
    os.symlink(tmp_path, tmp_path / "d" / "loop")
    assert [p.name for p in walk(tmp_path)] == ["f.txt"]


def test_unchanged_tree_plans_nothing(db: psycopg.Connection, tmp_path: Path) -> None:
    for i in range(50):
        f = tmp_path / f"f{i}.txt"
        f.write_text(f"file {i}")
        indexed(db, f)
    plan = reconcile(db, [WatchRoot(tmp_path, "default")])
    assert (plan.to_ingest, plan.to_delete, plan.moves, plan.unchanged) == ([], [], [], 50)


def test_new_changed_vanished_and_moved_files(db: psycopg.Connection, tmp_path: Path) -> None:
    root = WatchRoot(tmp_path, "default")
    same, changed, gone, moved = (
        tmp_path / n for n in ("same.txt", "changed.txt", "gone.txt", "moved.txt")
    )
    for f in (same, changed, gone, moved):
        f.write_text(f"content of {f.name}")
        indexed(db, f)
    changed.write_text("new content, different size")
    gone.unlink()
    (tmp_path / "sub").mkdir()
    moved.rename(tmp_path / "sub" / "moved.txt")
    (tmp_path / "brand-new.txt").write_text("hello")
    plan = reconcile(db, [root])
    assert sorted(p.name for p, _ in plan.to_ingest) == ["brand-new.txt", "changed.txt"]
    assert plan.to_delete == [str(gone)]
    assert plan.moves == [(str(moved), tmp_path / "sub" / "moved.txt", "default")]
    assert plan.unchanged == 1


def test_a_file_in_a_root_for_another_collection_is_reingested(
    db: psycopg.Connection, tmp_path: Path
) -> None:
    f = tmp_path / "x.txt"
    f.write_text("x")
    indexed(db, f, collection="old")
    plan = reconcile(db, [WatchRoot(tmp_path, "family")])
    assert plan.to_ingest == [(f, "family")]


def test_root_for_picks_the_containing_root(tmp_path: Path) -> None:
    roots = [WatchRoot(tmp_path / "a", "one"), WatchRoot(tmp_path / "b", "two")]
    assert root_for(tmp_path / "b" / "x" / "y.md", roots) == roots[1]
    assert root_for(tmp_path / "c.md", roots) is None


def test_walk_lists_symlinks_out_of_the_root_and_never_follows_one(tmp_path: Path) -> None:
    root, out = tmp_path / "root", tmp_path / "out"
    (root / "sub").mkdir(parents=True)
    (out / "dir").mkdir(parents=True)
    (out / "dir" / "x.txt").write_text("x")
    (out / "secret.txt").write_text("s")
    (root / "sub" / "real.md").write_text("r")
    os.symlink(out / "secret.txt", root / "file-out.txt")
    os.symlink(out / "dir", root / "dir-out", target_is_directory=True)
    os.symlink(out / "missing.txt", root / "dangling.txt")
    os.symlink(root / "sub" / "real.md", root / "alias.md")
    os.symlink(root / "sub", root / "sub-alias", target_is_directory=True)
    os.symlink(out / "secret.txt", root / ".hidden-out.txt")  # ignored like any hidden name
    os.mkfifo(root / "pipe.txt")
    found = sorted(str(p.relative_to(root)) for p in walk(root))
    assert found == ["dangling.txt", "dir-out", "file-out.txt", "sub/real.md"]


def test_hearthignore_is_not_read_through_a_symlink(tmp_path: Path) -> None:
    rules, root = tmp_path / "rules.txt", tmp_path / "root"
    root.mkdir()
    rules.write_text("*.md\n")
    os.symlink(rules, root / ".hearthignore")
    (root / "a.md").write_text("a")
    assert [p.name for p in walk(root)] == ["a.md"]
    (root / ".hearthignore").unlink()
    (root / ".hearthignore").write_text("*.md\n")
    assert [p.name for p in walk(root)] == []


def test_reconcile_queues_a_symlink_once_and_then_leaves_it(
    db: psycopg.Connection, tmp_path: Path
) -> None:
    root, out = tmp_path / "root", tmp_path / "secret.txt"
    root.mkdir()
    out.write_text("not for the index")
    link = root / "link.txt"
    os.symlink(out, link)
    plan = reconcile(db, [WatchRoot(root, "default")])
    assert plan.to_ingest == [(link, "default")] and plan.moves == []
    st = link.lstat()  # what the worker records for it: the link's own size and time
    documents.record_failure(db, str(link), "failed", "skipped", size=st.st_size, mtime=st.st_mtime)
    db.commit()
    plan = reconcile(db, [WatchRoot(root, "default")])
    assert (plan.to_ingest, plan.unchanged) == ([], 1)
    link.unlink()
    os.symlink(root / "elsewhere-inside.txt", link)  # now pointing inside: no longer listed
    assert reconcile(db, [WatchRoot(root, "default")]).to_delete == [str(link)]
