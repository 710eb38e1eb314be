from __future__ import annotations

from pathlib import Path

import pytest

from core.settings import SettingsError, get_settings


def test_defaults_are_embedded_and_derived_from_the_data_dir(tmp_path: Path) -> None:
    s = get_settings()
    assert s.database_url is None and s.redis_url is None and s.llm_base_url is None
    assert s.watch_dir == s.hearth_data_dir / "documents"
    assert s.local_model_dir == s.hearth_data_dir / "models" / "smollm2"
    assert s.llm_base_urls == [f"http://127.0.0.1:{s.llm_local_port}/v1"]


def test_environment_variables_are_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHUNK_SIZE", "300")
    monkeypatch.setenv("LLM_BASE_URL", "http://a:8000/v1/, http://b:8000/v1")
    s = get_settings()
    assert s.chunk_size == 300
    assert s.llm_base_urls == ["http://a:8000/v1", "http://b:8000/v1"]


@pytest.mark.parametrize(
    ("name", "value", "needle"),
    [
        ("HEARTH_PORT", "99999", "HEARTH_PORT"),
        ("CHUNK_SIZE", "lots", "CHUNK_SIZE"),
        ("DATABASE_URL", "mysql://x", "DATABASE_URL"),
        ("REDIS_URL", "http://x", "REDIS_URL"),
        ("LLM_BASE_URL", "ftp://x", "LLM_BASE_URL"),
        ("CHUNK_OVERLAP", "9999", "CHUNK_OVERLAP"),
    ],
)
def test_bad_values_fail_fast_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str, needle: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError) as err:
        get_settings()
    assert needle in str(err.value)
    assert "\n" not in str(err.value)


def test_production_requires_an_external_database(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HEARTH_ENV", "production")
    with pytest.raises(SettingsError, match="DATABASE_URL"):
        get_settings()


def test_cli_reports_a_bad_setting_in_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from cli.main import main

    monkeypatch.setenv("TOP_K", "0")
    assert main(["status"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("hearth: invalid setting TOP_K")
    assert len(err.splitlines()) == 1


def test_several_watched_folders_map_to_collections(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("HEARTH_WATCH_DIR", f"{tmp_path}/family=family, {tmp_path}/mine")
    roots = get_settings().watch_roots
    assert [(r.path, r.collection) for r in roots] == [
        (tmp_path / "family", "family"),
        (tmp_path / "mine", "default"),
    ]
    assert get_settings().watch_dir == tmp_path / "family"


@pytest.mark.parametrize("value", ["/a,/a/b", "/x=bad name", " , "])
def test_bad_watched_folders_are_refused(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("HEARTH_WATCH_DIR", value)
    with pytest.raises(SettingsError, match="HEARTH_WATCH_DIR"):
        get_settings()
