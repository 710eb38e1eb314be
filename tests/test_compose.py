"""Rules for docker-compose.yml, the production shape of Hearth.

Each rule is a function that takes the parsed compose file and returns its violations, so the same
rule is run on the real file (expecting none) and on deliberately broken copies (expecting the
break to be named). The environment check ties the compose file to `core.settings.Settings`, so
the two cannot drift apart.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from core.settings import Settings

COMPOSE_FILE = Path(__file__).resolve().parents[1] / "docker-compose.yml"

HEARTH_SERVICES = frozenset({"migrate", "api", "worker", "beat", "watcher"})
EXPECTED_SERVICES = frozenset({"postgres", "redis", "vllm"}) | HEARTH_SERVICES
ONE_SHOT = frozenset({"migrate"})
REQUIRED_VARS = ("POSTGRES_PASSWORD", "LLM_API_KEY", "VLLM_MODEL", "HEARTH_DOCUMENTS")
DEPENDENCY_CONDITIONS = frozenset({"service_healthy", "service_completed_successfully"})
VLLM_IMAGE = "vllm/vllm-openai:"
# what a user must export; everything else has a default in the file
SAMPLE_ENV = {
    "POSTGRES_PASSWORD": "s3cret",
    "LLM_API_KEY": "sk-test",
    "VLLM_MODEL": "Qwen/Qwen2.5-7B-Instruct",
    "HEARTH_DOCUMENTS": "/srv/documents",
}

Compose = dict[str, Any]
Rule = Callable[[Compose], list[str]]


# --- compose variable interpolation -------------------------------------------------------------

_VARIABLE = re.compile(
    r"\$(?:(?P<escaped>\$)"
    r"|\{(?P<braced>[A-Za-z_]\w*)(?:(?P<op>:?[-?+])(?P<arg>[^}]*))?\}"
    r"|(?P<bare>[A-Za-z_]\w*))"
)


class MissingVariableError(LookupError):
    """A `${VAR:?message}` variable is unset: compose would refuse to start."""


def interpolate(value: str, env: Mapping[str, str]) -> str:
    """Substitute variables as compose does: `$$`, `${VAR}`, `:-`, `-`, `:?`, `?`, `:+`, `+`."""

    def substitute(match: re.Match[str]) -> str:
        if match["escaped"]:
            return "$"
        name = match["braced"] or match["bare"]
        op, arg = match["op"] or "", match["arg"] or ""
        current = env.get(name)
        missing = not current if op.startswith(":") else current is None
        if op.endswith("-"):
            return arg if missing else str(current)
        if op.endswith("?"):
            if missing:
                raise MissingVariableError(f"{name}: {arg}")
            return str(current)
        if op.endswith("+"):
            return "" if missing else arg
        return current or ""

    return _VARIABLE.sub(substitute, value)


def interpolate_all(node: Any, env: Mapping[str, str]) -> Any:
    if isinstance(node, str):
        return interpolate(node, env)
    if isinstance(node, list):
        return [interpolate_all(item, env) for item in node]
    if isinstance(node, dict):
        return {key: interpolate_all(value, env) for key, value in node.items()}
    return node


def variable_references(node: Any) -> list[tuple[str, str]]:
    """Every `(name, operator)` referenced anywhere in the file's values, `$$` escapes excluded."""
    if isinstance(node, str):
        found = []
        for match in _VARIABLE.finditer(node):
            if not match["escaped"]:
                found.append((match["braced"] or match["bare"], match["op"] or ""))
        return found
    if isinstance(node, list):
        return [ref for item in node for ref in variable_references(item)]
    if isinstance(node, dict):
        return [ref for value in node.values() for ref in variable_references(value)]
    return []


# --- helpers ------------------------------------------------------------------------------------


def _services(compose: Compose) -> dict[str, dict[str, Any]]:
    return compose.get("services") or {}


def _environment(service: Mapping[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {str(key): "" if value is None else str(value) for key, value in env.items()}


def _mounts(service: Mapping[str, Any]) -> list[tuple[str, str, bool]]:
    """`(source, target, read_only)` of an interpolated service's volumes."""
    mounts = []
    for volume in service.get("volumes") or []:
        if isinstance(volume, dict):
            source, target = str(volume.get("source", "")), str(volume["target"])
            mounts.append((source, target, bool(volume.get("read_only"))))
        else:
            source, target, *mode = volume.split(":")
            mounts.append((source, target, "ro" in (mode[0].split(",") if mode else [])))
    return mounts


def _published_targets(service: Mapping[str, Any]) -> list[str]:
    """Container ports of an interpolated service's `ports`."""
    targets = []
    for port in service.get("ports") or []:
        if isinstance(port, dict):
            targets.append(str(port["target"]))
        else:
            targets.append(str(port).rsplit(":", 1)[-1].split("/")[0])
    return targets


def _long_running(compose: Compose) -> list[str]:
    return [name for name in _services(compose) if name not in ONE_SHOT]


def hearth_services(compose: Compose) -> list[str]:
    """Services built from this repository: they run Hearth and read its settings."""
    return [name for name, service in _services(compose).items() if "build" in service]


def _is_vllm(service: Mapping[str, Any]) -> bool:
    return str(service.get("image", "")).startswith(VLLM_IMAGE)


# --- rules --------------------------------------------------------------------------------------


def missing_services(compose: Compose) -> list[str]:
    return [
        f"{name}: service missing" for name in sorted(EXPECTED_SERVICES - set(_services(compose)))
    ]


def health_violations(compose: Compose) -> list[str]:
    """Long-running services carry a health check and restart unless stopped; one-shots do not."""
    found = []
    for name, service in _services(compose).items():
        if name in ONE_SHOT:
            if service.get("restart", "no") != "no":
                found.append(f"{name}: a one-shot service must not restart")
            continue
        check = service.get("healthcheck") or {}
        test = check.get("test")
        # an unquoted ": " inside a YAML list item turns the command into a mapping
        is_command = isinstance(test, str) or all(isinstance(part, str) for part in test or [])
        if check.get("disable") or not test or test in ("NONE", ["NONE"]):
            found.append(f"{name}: long-running service has no healthcheck")
        elif not is_command:
            found.append(f"{name}: healthcheck test is not a command: {test!r}")
        if service.get("restart") != "unless-stopped":
            found.append(f"{name}: restart is {service.get('restart')!r}, not unless-stopped")
    return found


def dependency_violations(compose: Compose) -> list[str]:
    """Every dependency waits for health (or, for a one-shot, successful completion)."""
    services = _services(compose)
    found = []
    for name, service in services.items():
        depends_on = service.get("depends_on") or {}
        if isinstance(depends_on, list):
            found.append(f"{name}: depends_on is a list, so it waits for nothing")
            continue
        for target, spec in depends_on.items():
            condition = (spec or {}).get("condition")
            if target not in services:
                found.append(f"{name}: depends on unknown service {target}")
            elif condition not in DEPENDENCY_CONDITIONS:
                found.append(f"{name}: depends on {target} with condition {condition!r}")
            elif condition == "service_healthy" and not services[target].get("healthcheck"):
                found.append(f"{name}: waits for {target} to be healthy, but it has no healthcheck")
            elif condition == "service_completed_successfully" and target not in ONE_SHOT:
                found.append(f"{name}: waits for long-running {target} to complete")
    return found


def vllm_violations(compose: Compose) -> list[str]:
    """vLLM stays on the compose network and reserves the GPU."""
    found = []
    vllm_services = {n: s for n, s in _services(compose).items() if _is_vllm(s)}
    if not vllm_services:
        found.append(f"vllm: no service runs {VLLM_IMAGE}<tag>")
    for name, service in vllm_services.items():
        if service.get("ports"):
            found.append(f"{name}: publishes ports on the host")
        if service.get("network_mode") == "host":
            found.append(f"{name}: uses the host network")
        if not service.get("expose"):
            found.append(f"{name}: exposes no port to the compose network")
        reservations = (service.get("deploy") or {}).get("resources", {}).get("reservations", {})
        devices = reservations.get("devices") or []
        if not any(
            d.get("driver") == "nvidia" and "gpu" in (d.get("capabilities") or []) for d in devices
        ):
            found.append(f"{name}: no nvidia GPU device reservation")
    return found


def api_violations(compose: Compose) -> list[str]:
    """The API is published on the host, on the port Hearth listens on inside the container."""
    api = interpolate_all(_services(compose).get("api") or {}, SAMPLE_ENV)
    listen = _environment(api).get("HEARTH_PORT", "8000")
    targets = _published_targets(api)
    if not targets:
        return ["api: publishes no port"]
    if listen not in targets:
        return [f"api: publishes {targets}, but HEARTH_PORT inside the container is {listen}"]
    return []


def scaling_violations(compose: Compose) -> list[str]:
    """`--scale worker=N` needs containers that do not claim a name, hostname or host port."""
    worker = _services(compose).get("worker") or {}
    return [
        f"worker: sets {key}, so it cannot be scaled"
        for key in ("container_name", "hostname", "ports")
        if worker.get(key)
    ]


def secret_violations(compose: Compose) -> list[str]:
    """Required variables are only ever referenced as `${VAR:?message}`."""
    references = variable_references(compose)
    found = []
    for name in REQUIRED_VARS:
        ops = [op for ref, op in references if ref == name]
        if not ops:
            found.append(f"{name}: never referenced")
        found += [
            f"{name}: referenced as ${{{name}{op}...}}, not ${{{name}:?...}}"
            for op in ops
            if op != ":?"
        ]
    return found


def default_violations(compose: Compose) -> list[str]:
    """Any other variable has a default, so an unset one never turns silently into ''."""
    return sorted(
        {
            f"{name}: referenced without a default"
            for name, op in variable_references(compose)
            if name not in REQUIRED_VARS and op not in (":-", "-")
        }
    )


def url_violations(compose: Compose) -> list[str]:
    """Hearth's services reach postgres, redis and vllm by their compose service names."""
    services = _services(compose)
    found = []
    for name in hearth_services(compose):
        env = _environment(interpolate_all(services[name], SAMPLE_ENV))
        for var, host in (("DATABASE_URL", "postgres"), ("REDIS_URL", "redis")):
            url = urlsplit(env.get(var, ""))
            if url.hostname != host or host not in services:
                found.append(f"{name}: {var} points at {url.hostname!r}, not the {host} service")
        base_urls = [u.strip() for u in env.get("LLM_BASE_URL", "").split(",") if u.strip()]
        if not base_urls:
            found.append(f"{name}: LLM_BASE_URL is not set")
        for base_url in base_urls:
            url = urlsplit(base_url)
            target = services.get(url.hostname or "")
            if target is None or not _is_vllm(target):
                found.append(f"{name}: LLM_BASE_URL {base_url} is not a vllm service")
            elif str(url.port or 80) not in [str(p) for p in target.get("expose") or []]:
                found.append(f"{name}: LLM_BASE_URL {base_url} uses a port vllm does not expose")
            elif not url.path.rstrip("/").endswith("/v1"):
                found.append(f"{name}: LLM_BASE_URL {base_url} does not end in /v1")
    return found


def settings_violations(compose: Compose) -> list[str]:
    """Every variable compose sets for a Hearth service is a field of `Settings`."""
    fields = set(Settings.model_fields)
    return [
        f"{name}: {var} is not a field of core.settings.Settings"
        for name in hearth_services(compose)
        for var in _environment(_services(compose)[name])
        if var.lower() not in fields
    ]


def documents_violations(compose: Compose) -> list[str]:
    """Watcher and worker see the watched folder read-only at the same path, HEARTH_WATCH_DIR."""
    services = _services(compose)
    found = []
    for name in ("watcher", "worker"):
        service = interpolate_all(services.get(name) or {}, SAMPLE_ENV)
        watch_dir = _environment(service).get("HEARTH_WATCH_DIR")
        mounts = [m for m in _mounts(service) if m[1] == watch_dir]
        if not mounts:
            found.append(f"{name}: nothing mounted at HEARTH_WATCH_DIR {watch_dir!r}")
            continue
        source, _, read_only = mounts[0]
        if source != SAMPLE_ENV["HEARTH_DOCUMENTS"]:
            found.append(
                f"{name}: HEARTH_WATCH_DIR is mounted from {source!r}, not HEARTH_DOCUMENTS"
            )
        if not read_only:
            found.append(f"{name}: the watched folder is mounted read-write")
    return found


RULES: list[Rule] = [
    missing_services,
    health_violations,
    dependency_violations,
    vllm_violations,
    api_violations,
    scaling_violations,
    secret_violations,
    default_violations,
    url_violations,
    settings_violations,
    documents_violations,
]


# --- the real file ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def compose_text() -> str:
    return COMPOSE_FILE.read_text(encoding="utf-8")


@pytest.fixture
def compose(compose_text: str) -> Compose:
    """A fresh, unshared copy: YAML merge keys share nested objects between services."""
    return json.loads(json.dumps(yaml.safe_load(compose_text)))


@pytest.mark.parametrize("rule", RULES, ids=lambda rule: rule.__name__)
def test_compose_file_follows_rule(compose: Compose, rule: Rule) -> None:
    assert rule(compose) == []


def test_hearth_services_are_the_ones_built_from_this_repo(compose: Compose) -> None:
    assert set(hearth_services(compose)) == HEARTH_SERVICES


def test_hearth_services_share_the_x_hearth_block(compose: Compose) -> None:
    shared = compose["x-hearth"]
    for name in HEARTH_SERVICES:
        service = compose["services"][name]
        assert service["image"] == shared["image"], name
        assert _environment(service).items() >= _environment(shared).items(), name


def test_hearth_environment_is_valid_settings(compose: Compose) -> None:
    """The values, not only the names, pass Settings' validators (a production config)."""
    for name in hearth_services(compose):
        env = _environment(interpolate_all(compose["services"][name], SAMPLE_ENV))
        settings = Settings(_env_file=None, **{k.lower(): v for k, v in env.items()})  # type: ignore[call-arg]
        assert settings.hearth_env == "production", name
        assert settings.database_url and settings.redis_url and settings.llm_base_url, name


@pytest.mark.parametrize("variable", REQUIRED_VARS)
def test_compose_refuses_to_start_without_required_variable(
    compose: Compose, variable: str
) -> None:
    env = {key: value for key, value in SAMPLE_ENV.items() if key != variable}
    with pytest.raises(MissingVariableError, match=variable):
        interpolate_all(compose, env)


# --- the rules catch what they claim to ---------------------------------------------------------

DROP = object()
Mutation = Callable[[Compose], None]


def _edit(service: str, **changes: Any) -> Mutation:
    """Set (or, with DROP, remove) top-level keys of one service."""

    def mutate(compose: Compose) -> None:
        target = compose["services"][service]
        for key, value in changes.items():
            if value is DROP:
                target.pop(key, None)
            else:
                target[key] = value

    return mutate


def _env(service: str, var: str, value: str) -> Mutation:
    return lambda compose: compose["services"][service]["environment"].update({var: value})


def _dep(service: str, target: str, spec: dict[str, str]) -> Mutation:
    return lambda compose: compose["services"][service]["depends_on"].update({target: spec})


def _drop_service(name: str) -> Mutation:
    def mutate(compose: Compose) -> None:
        del compose["services"][name]

    return mutate


_CPU_ONLY = {"resources": {"reservations": {"devices": [{"driver": "nvidia", "capabilities": []}]}}}
_DB_ON_LOCALHOST = "postgresql://hearth:pw@localhost:5432/hearth"

BREAKS: dict[Rule, list[tuple[Mutation, str]]] = {
    missing_services: [(_drop_service("beat"), "beat: service missing")],
    health_violations: [
        (_edit("watcher", healthcheck=DROP), "watcher: long-running service has no healthcheck"),
        (_edit("redis", healthcheck={"disable": True}), "redis: long-running service has no"),
        (_edit("api", restart=DROP), "api: restart is None"),
        (_edit("beat", healthcheck={"test": ["CMD", {"x": "y"}]}), "beat: healthcheck test is"),
        (_edit("migrate", restart="unless-stopped"), "migrate: a one-shot service"),
    ],
    dependency_violations: [
        (_edit("worker", depends_on=["postgres", "redis"]), "worker: depends_on is a list"),
        (_dep("api", "vllm", {}), "api: depends on vllm with condition None"),
        (_dep("api", "redis", {"condition": "service_started"}), "api: depends on redis with"),
        (_edit("postgres", healthcheck=DROP), "waits for postgres to be healthy, but it has no"),
        (
            _dep("beat", "redis", {"condition": "service_completed_successfully"}),
            "beat: waits for long-running redis to complete",
        ),
    ],
    vllm_violations: [
        (_edit("vllm", ports=["8000:8000"]), "vllm: publishes ports on the host"),
        (_edit("vllm", deploy=DROP), "vllm: no nvidia GPU device reservation"),
        (_edit("vllm", deploy=_CPU_ONLY), "vllm: no nvidia GPU device reservation"),
        (_edit("vllm", image="ollama/ollama:0.5.7"), "vllm: no service runs vllm/vllm-openai"),
    ],
    api_violations: [
        (_edit("api", ports=DROP), "api: publishes no port"),
        (_edit("api", ports=["8000:9000"]), "but HEARTH_PORT inside the container is 8000"),
    ],
    scaling_violations: [
        (_edit("worker", container_name="hearth-worker"), "worker: sets container_name"),
        (_edit("worker", ports=["5555:5555"]), "worker: sets ports"),
    ],
    secret_violations: [
        (
            _env("postgres", "POSTGRES_PASSWORD", "${POSTGRES_PASSWORD:-postgres}"),
            "POSTGRES_PASSWORD: referenced as ${POSTGRES_PASSWORD:-...}",
        ),
        (
            _env("vllm", "VLLM_API_KEY", "${LLM_API_KEY}"),
            "LLM_API_KEY: referenced as ${LLM_API_KEY",
        ),
        (_edit("vllm", command=["--model", "org/model"]), "VLLM_MODEL: never referenced"),
    ],
    default_violations: [
        (_env("api", "TOP_K", "${TOP_K}"), "TOP_K: referenced without a default"),
    ],
    url_violations: [
        (_env("worker", "DATABASE_URL", _DB_ON_LOCALHOST), "worker: DATABASE_URL points at"),
        (_env("beat", "REDIS_URL", "redis://127.0.0.1:6379/0"), "beat: REDIS_URL points at"),
        (
            _env("api", "LLM_BASE_URL", "http://vllm:8000/v1,http://gpu-box:8000/v1"),
            "api: LLM_BASE_URL http://gpu-box:8000/v1 is not a vllm service",
        ),
        (_env("api", "LLM_BASE_URL", "http://vllm:8001/v1"), "a port vllm does not expose"),
        (_env("api", "LLM_BASE_URL", "http://vllm:8000"), "does not end in /v1"),
    ],
    settings_violations: [
        (_env("watcher", "HEARTH_WATCH_FOLDER", "/x"), "watcher: HEARTH_WATCH_FOLDER is not a"),
    ],
    documents_violations: [
        (_edit("worker", volumes=["hearth-data:/data"]), "worker: nothing mounted at"),
        (
            _edit("watcher", volumes=["${HEARTH_DOCUMENTS:?}:/documents"]),
            "watcher: the watched folder is mounted read-write",
        ),
        (_edit("worker", volumes=["/elsewhere:/documents:ro"]), "worker: HEARTH_WATCH_DIR is"),
    ],
}
_CASES = [(rule, mutate, expected) for rule, cases in BREAKS.items() for mutate, expected in cases]


def test_every_rule_has_a_broken_copy() -> None:
    assert set(BREAKS) == set(RULES)


@pytest.mark.parametrize(("rule", "mutate", "expected"), _CASES, ids=[c[2] for c in _CASES])
def test_rule_catches_broken_copy(
    compose: Compose, rule: Rule, mutate: Mutation, expected: str
) -> None:
    assert rule(compose) == []
    mutate(compose)
    violations = rule(compose)
    assert any(expected in v for v in violations), violations


def test_interpolate_follows_compose_semantics() -> None:
    env = {"SET": "x", "EMPTY": ""}
    assert interpolate("$$SET ${SET} $SET", env) == "$SET x x"
    assert interpolate("${EMPTY:-d} ${EMPTY-d} ${UNSET-d}", env) == "d  d"
    assert interpolate("${SET:+alt} ${EMPTY:+alt}", env) == "alt "
    assert interpolate("${EMPTY?ok}", env) == ""
    with pytest.raises(MissingVariableError, match="EMPTY: needed"):
        interpolate("${EMPTY:?needed}", env)
