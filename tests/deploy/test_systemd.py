"""Rules for deploy/systemd: every unit restarts on failure, reads /etc/hearth/hearth.env, runs as
`hearth` with the hardening we promise, and runs a `hearth` command that exists. Where
systemd-analyze is installed, systemd itself verifies the units and scores their exposure."""

from __future__ import annotations

import contextlib
import io
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from cli.main import build_parser
from core.settings import Settings
from workers.celery_app import INGEST_QUEUE, INTERACTIVE_QUEUE

SYSTEMD_DIR = Path(__file__).resolve().parents[2] / "deploy" / "systemd"
ENV_EXAMPLE = SYSTEMD_DIR / "hearth.env.example"
ENV_FILE = "/etc/hearth/hearth.env"
HEARTH_BIN = "/opt/hearth/bin/hearth"
HEARTH_UNITS = (
    "hearth-api.service",
    "hearth-worker@.service",
    "hearth-beat.service",
    "hearth-watcher.service",
)
SERVICES = (*HEARTH_UNITS, "vllm.service")
DATA_DIRS = {name: "/var/lib/hearth" for name in HEARTH_UNITS} | {"vllm.service": "/var/lib/vllm"}
QUEUES = (INGEST_QUEUE, INTERACTIVE_QUEUE)
HARDENING = {
    "NoNewPrivileges": {"yes", "true"},
    "ProtectSystem": {"strict"},
    "ProtectHome": {"yes", "true", "read-only", "tmpfs"},
    "PrivateTmp": {"yes", "true"},
    "ProtectKernelTunables": {"yes", "true"},
    "ProtectKernelModules": {"yes", "true"},
    "ProtectControlGroups": {"yes", "true"},
    "RestrictSUIDSGID": {"yes", "true"},
    "LockPersonality": {"yes", "true"},
    "CapabilityBoundingSet": {""},
}

Unit = dict[str, dict[str, list[str]]]


def parse_unit(text: str) -> Unit:
    """`{section: {key: [values...]}}`: systemd keys may repeat (Environment=, Wants=, ...)."""
    unit: Unit = {}
    section: dict[str, list[str]] | None = None
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            section = unit.setdefault(line[1:-1], {})
            continue
        key, sep, value = line.partition("=")
        if section is None or not sep or not re.fullmatch(r"[A-Za-z][A-Za-z0-9]*", key.strip()):
            raise ValueError(f"line {number}: not a `Key=value` inside a section: {raw!r}")
        section.setdefault(key.strip(), []).append(value.strip())
    return unit


def _get(unit: Unit, section: str, key: str) -> list[str]:
    return unit.get(section, {}).get(key, [])


def _words(unit: Unit, section: str, key: str) -> list[str]:
    return [word for value in _get(unit, section, key) for word in value.split()]


def _environment(unit: Unit) -> dict[str, str]:
    env: dict[str, str] = {}
    for value in _get(unit, "Service", "Environment"):
        for item in shlex.split(value):
            name, _, val = item.partition("=")
            env[name] = val
    return env


def load_units() -> dict[str, Unit]:
    return {
        path.name: parse_unit(path.read_text(encoding="utf-8"))
        for path in sorted(SYSTEMD_DIR.iterdir())
        if path.suffix in (".service", ".target")
    }


# --- rules --------------------------------------------------------------------------------------

Units = dict[str, Unit]
Rule = Callable[[Units], list[str]]


def service_violations(units: Units) -> list[str]:
    """Restart on failure after a pause, the shared environment file, user hearth."""
    found = []
    for name in SERVICES:
        unit = units.get(name)
        if unit is None:
            found.append(f"{name}: missing")
            continue
        service = unit.get("Service", {})
        if not _get(unit, "Unit", "Description"):
            found.append(f"{name}: no Description")
        if service.get("Restart") != ["on-failure"]:
            found.append(f"{name}: Restart is {service.get('Restart')}, not on-failure")
        if not re.fullmatch(r"\d+(ms|s|min)?", (service.get("RestartSec") or [""])[-1]):
            found.append(f"{name}: no RestartSec")
        if ENV_FILE not in service.get("EnvironmentFile", []):
            found.append(f"{name}: does not read EnvironmentFile={ENV_FILE}")
        if service.get("User") != ["hearth"]:
            found.append(f"{name}: User is {service.get('User')}, not hearth")
        if _get(unit, "Install", "WantedBy") != ["hearth.target"]:
            found.append(f"{name}: not WantedBy=hearth.target")
    return found


def hardening_violations(units: Units) -> list[str]:
    found = []
    for name in SERVICES:
        service = units.get(name, {}).get("Service", {})
        for key, allowed in HARDENING.items():
            values = service.get(key)
            if not values or values[-1] not in allowed:
                found.append(f"{name}: {key} is {values}, not one of {sorted(allowed)}")
        data_dir = DATA_DIRS[name]
        if data_dir not in _words(units.get(name, {}), "Service", "ReadWritePaths"):
            found.append(f"{name}: {data_dir} is not in ReadWritePaths")
        env = _environment(units.get(name, {}))
        if name in HEARTH_UNITS and env.get("HEARTH_DATA_DIR") != data_dir:
            found.append(f"{name}: HEARTH_DATA_DIR default is not {data_dir}")
    return found


def command_violations(units: Units) -> list[str]:
    """Each Hearth unit runs `hearth <subcommand>` that the CLI accepts, for every queue."""
    expected = {
        "hearth-api.service": "serve-api",
        "hearth-worker@.service": "worker",
        "hearth-beat.service": "beat",
        "hearth-watcher.service": "watch",
    }
    parser = build_parser()
    found = []
    for name, command in expected.items():
        unit = units.get(name, {})
        starts = _get(unit, "Service", "ExecStart")
        if len(starts) != 1:
            found.append(f"{name}: {len(starts)} ExecStart lines")
            continue
        for argv in [shlex.split(s) for s in [*starts, *_get(unit, "Service", "ExecStartPre")]]:
            if argv[0] != HEARTH_BIN:
                found.append(f"{name}: runs {argv[0]}, not {HEARTH_BIN}")
        argv = shlex.split(starts[0])[1:]
        if argv[:1] != [command]:
            found.append(f"{name}: runs `hearth {' '.join(argv)}`, not `hearth {command}`")
        instances = QUEUES if "%i" in starts[0] else ("",)
        if name.endswith("@.service") and instances == ("",):
            found.append(f"{name}: a template whose ExecStart ignores the instance (%i)")
        for instance in instances:
            try:
                with contextlib.redirect_stderr(io.StringIO()):
                    parser.parse_args([a.replace("%i", instance) for a in argv])
            except SystemExit:
                found.append(f"{name}: `hearth {' '.join(argv)}` is not a valid command")
    if not any(
        "migrate" in s for s in _get(units.get("hearth-api.service", {}), "Service", "ExecStartPre")
    ):
        found.append("hearth-api.service: does not run `hearth migrate` before starting")
    return found


def target_violations(units: Units) -> list[str]:
    """hearth.target starts one whole machine: the API, beat, watcher and a worker per queue."""
    target = units.get("hearth.target", {})
    wants = set(_words(target, "Unit", "Wants"))
    expected = {"hearth-api.service", "hearth-beat.service", "hearth-watcher.service"} | {
        f"hearth-worker@{queue}.service" for queue in QUEUES
    }
    found = [f"hearth.target: does not want {unit}" for unit in sorted(expected - wants)]
    if _get(target, "Install", "WantedBy") != ["multi-user.target"]:
        found.append("hearth.target: not WantedBy=multi-user.target")
    for name in HEARTH_UNITS:
        if "hearth.target" not in _words(units.get(name, {}), "Unit", "PartOf"):
            found.append(f"{name}: not PartOf=hearth.target")
    return found


RULES: list[Rule] = [
    service_violations,
    hardening_violations,
    command_violations,
    target_violations,
]


@pytest.fixture
def units() -> Units:
    return load_units()


@pytest.mark.parametrize("rule", RULES, ids=lambda rule: rule.__name__)
def test_units_follow_rule(units: Units, rule: Rule) -> None:
    assert rule(units) == []


def test_every_unit_file_is_checked(units: Units) -> None:
    assert set(units) == {*SERVICES, "hearth.target"}


def _drop(unit: str, section: str, key: str) -> Callable[[Units], None]:
    def mutate(units: Units) -> None:
        del units[unit][section][key]

    return mutate


def _set(unit: str, section: str, key: str, *values: str) -> Callable[[Units], None]:
    return lambda units: units[unit][section].update({key: list(values)})


BREAKS: list[tuple[Rule, Callable[[Units], None], str]] = [
    (service_violations, _set("hearth-api.service", "Service", "Restart", "always"), "not on-fa"),
    (service_violations, _drop("hearth-beat.service", "Service", "RestartSec"), "no RestartSec"),
    (service_violations, _drop("vllm.service", "Service", "EnvironmentFile"), "does not read"),
    (service_violations, _set("hearth-watcher.service", "Service", "User", "root"), "not hearth"),
    (hardening_violations, _drop("vllm.service", "Service", "NoNewPrivileges"), "NoNewPriv"),
    (hardening_violations, _set("hearth-api.service", "Service", "ProtectSystem", "full"), "Prot"),
    (
        hardening_violations,
        _set("hearth-worker@.service", "Service", "ReadWritePaths", "/srv"),
        "/var/lib/hearth is not in ReadWritePaths",
    ),
    (
        command_violations,
        _set(
            "hearth-worker@.service", "Service", "ExecStart", f"{HEARTH_BIN} worker --queue-name %i"
        ),
        "is not a valid command",
    ),
    (
        command_violations,
        _set("hearth-worker@.service", "Service", "ExecStart", f"{HEARTH_BIN} worker"),
        "ignores the instance",
    ),
    (
        command_violations,
        _set("hearth-beat.service", "Service", "ExecStart", f"{HEARTH_BIN} watch"),
        "not `hearth beat`",
    ),
    (command_violations, _drop("hearth-api.service", "Service", "ExecStartPre"), "migrate"),
    (target_violations, _set("hearth.target", "Unit", "Wants", "hearth-api.service"), "beat"),
    (target_violations, _drop("hearth-beat.service", "Unit", "PartOf"), "not PartOf"),
]


def test_every_rule_has_a_broken_copy() -> None:
    assert {rule for rule, *_ in BREAKS} == set(RULES)


@pytest.mark.parametrize(("rule", "mutate", "expected"), BREAKS, ids=[b[2] for b in BREAKS])
def test_rule_catches_broken_copy(
    units: Units, rule: Rule, mutate: Callable[[Units], None], expected: str
) -> None:
    assert rule(units) == []
    mutate(units)
    assert any(expected in v for v in rule(units)), rule(units)


def test_parser_keeps_repeated_keys_and_rejects_junk() -> None:
    unit = parse_unit("[Unit]\nWants=a\nWants=b\n# c=d\n[Service]\nCapabilityBoundingSet=\n")
    assert unit == {"Unit": {"Wants": ["a", "b"]}, "Service": {"CapabilityBoundingSet": [""]}}
    with pytest.raises(ValueError, match="line 1"):
        parse_unit("Wants=a\n")


# --- the environment file -----------------------------------------------------------------------


def _env_example() -> dict[str, str]:
    entries = {}
    for line in ENV_EXAMPLE.read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.startswith("#"):
            name, _, value = line.partition("=")
            entries[name.strip()] = value
    return entries


def test_env_example_names_only_settings_or_variables_a_unit_reads(units: Units) -> None:
    read_by_units = {
        name
        for unit in units.values()
        for value in _get(unit, "Service", "ExecStart")
        for name in re.findall(r"\$\$?\{?([A-Z][A-Z0-9_]*)", value)
    }
    fields = {name.upper() for name in Settings.model_fields}
    assert sorted(set(_env_example()) - fields - read_by_units) == []
    assert {"LLM_SERVE_MODEL", "LLM_API_KEY", "LLM_MODEL"} <= read_by_units


def test_env_example_is_a_valid_production_config_once_secrets_are_filled(units: Units) -> None:
    entries = _env_example()
    assert entries["DATABASE_URL"] == "" and entries["LLM_API_KEY"] == ""
    entries |= {"DATABASE_URL": "postgresql://hearth:pw@db:5432/hearth", "LLM_API_KEY": "k"}
    values = {k.lower(): v for k, v in entries.items() if k.lower() in Settings.model_fields}
    settings = Settings.model_validate(values)
    assert settings.hearth_env == "production"
    assert str(settings.hearth_data_dir) == DATA_DIRS["hearth-api.service"]
    # the API behind nginx listens on the loopback only, on the port the nginx site proxies to
    assert (settings.hearth_host, settings.hearth_port) == ("127.0.0.1", 8000)
    # vllm.service serves where LLM_BASE_URL points
    serve = f"http://{entries['LLM_SERVE_HOST']}:{entries['LLM_SERVE_PORT']}/v1"
    assert settings.llm_base_urls == [serve]


# --- systemd's own verdict ----------------------------------------------------------------------

SYSTEMD_ANALYZE = shutil.which("systemd-analyze")
needs_systemd = pytest.mark.skipif(SYSTEMD_ANALYZE is None, reason="systemd-analyze not installed")


def _installable_copy(tmp_path: Path, broken: tuple[str, str, str] | None = None) -> Path:
    """The units with the `hearth` binary pointed at this venv's, so systemd can check it runs."""
    hearth = Path(sys.executable).with_name("hearth")
    assert hearth.exists()
    out = tmp_path / "units"
    out.mkdir()
    for path in SYSTEMD_DIR.iterdir():
        text = path.read_text(encoding="utf-8").replace(HEARTH_BIN, str(hearth))
        if broken and broken[0] == path.name:
            assert broken[1] in text
            text = text.replace(broken[1], broken[2])
        (out / path.name).write_text(text, encoding="utf-8")
    return out


def _verify(directory: Path) -> subprocess.CompletedProcess[str]:
    names = [
        "hearth.target",
        "hearth-api.service",
        *(f"hearth-worker@{queue}.service" for queue in QUEUES),
        "hearth-beat.service",
        "hearth-watcher.service",
        "vllm.service",
    ]
    assert SYSTEMD_ANALYZE is not None
    return subprocess.run(
        [SYSTEMD_ANALYZE, "verify", "--man=no", *(f"./{name}" for name in names)],
        cwd=directory,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@needs_systemd
def test_systemd_analyze_verify_accepts_the_units(tmp_path: Path) -> None:
    result = _verify(_installable_copy(tmp_path))
    assert (result.returncode, result.stdout + result.stderr) == (0, "")


@needs_systemd
@pytest.mark.parametrize(
    "broken",
    [
        ("hearth-beat.service", "Restart=on-failure", "Restart=sometimes"),
        ("hearth-api.service", "ProtectSystem=strict", "ProtectSytem=strict"),
    ],
    ids=["bad value", "misspelt key"],
)
def test_systemd_analyze_verify_rejects_a_broken_unit(
    tmp_path: Path, broken: tuple[str, str, str]
) -> None:
    result = _verify(_installable_copy(tmp_path, broken))
    assert broken[0] in result.stdout + result.stderr


@needs_systemd
@pytest.mark.parametrize(
    ("unit", "limit"), [(n, 2.0) for n in HEARTH_UNITS] + [("vllm.service", 4.0)]
)
def test_exposure_score(tmp_path: Path, unit: str, limit: float) -> None:
    """systemd's own security review (0 = locked down, 10 = exposed) rates every unit OK."""
    directory = _installable_copy(tmp_path)
    name = unit.replace("@.", f"@{INGEST_QUEUE}.")
    assert SYSTEMD_ANALYZE is not None
    result = subprocess.run(
        [SYSTEMD_ANALYZE, "security", "--offline=true", "--no-pager", f"./{name}"],
        cwd=directory,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    score = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", result.stdout)
    assert score, result.stdout + result.stderr
    assert float(score.group(1)) <= limit
