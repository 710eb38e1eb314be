"""ParserProcess: results round-trip exactly, and a hang, a crash or a memory hog costs one file
an error and the child a restart, never the caller."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from core.offline import OFFLINE_ENV
from ingest.isolate import ParserProcess, decode, encode
from ingest.parse import Attachment, Element, Parsed, ParseError, parse_file

from .hooked_child import HOOKED
from .test_parse import MARKDOWN, make_pdf

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def hooked() -> Iterator[ParserProcess]:
    with ParserProcess(timeout_s=60, child_module=HOOKED) as pp:
        yield pp


def hook(tmp_path: Path, name: str, content: str = "") -> Path:
    path = tmp_path / name
    path.write_text(content)
    return path


def test_encoding_round_trips_exactly() -> None:
    parsed = Parsed(
        title="Ünïcödé — 文書 🚀 \u202eRTL",
        mime="text/markdown",
        elements=[
            Element("Überschrift", "title", level=1, page=1),
            Element("a | b\n1 | 2\n\nπ | ∑", "table", page=2),
            Element("line\r\nbreak\ttab \x00 nul, lone surrogate \ud800 and \\n literal", "text"),
            Element("item", "list", level=None, page=None),
        ],
        needs_ocr=True,
        attachments=[Attachment("bericht (2).pdf", bytes(range(256)) * 3), Attachment("e", b"")],
    )
    wire = json.dumps(encode(parsed))
    assert wire.isascii() and "\n" not in wire  # one protocol line, whatever the content
    assert decode(json.loads(wire)) == parsed


def test_child_results_equal_in_process_results(tmp_path: Path) -> None:
    from .formats.test_mail import make_eml

    files = [tmp_path / "guide.md", tmp_path / "report.pdf", make_eml(tmp_path / "mail.eml")]
    files[0].write_text(MARKDOWN)
    pages = [[f"Page {n} body text, naïve café ✓."] for n in range(1, 4)]
    make_pdf(files[1], pages, heading="Annual Report")
    with ParserProcess() as pp:
        for path in files:
            assert pp.parse(path) == parse_file(path), path.name
        assert pp.parse(tmp_path / "guide.md").elements[-1].kind == "table"


def test_relative_paths_are_resolved_in_the_parent(
    tmp_path: Path, hooked: ParserProcess, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "notes.txt").write_text("Hello from a relative path.")
    monkeypatch.chdir(tmp_path)
    assert hooked.parse(Path("notes.txt")).elements == [
        Element("Hello from a relative path.", "text")
    ]


def test_timeout_stops_the_child_and_the_next_file_gets_a_new_one(tmp_path: Path) -> None:
    with ParserProcess(timeout_s=1.5, child_module=HOOKED) as pp:
        pp.parse(hook(tmp_path, "a.limits"))
        first = pp.pid
        started = time.monotonic()
        with pytest.raises(ParseError, match=r"^parsing took longer than 1\.5 s and was stopped$"):
            pp.parse(hook(tmp_path, "b.sleep", "600"))
        assert time.monotonic() - started < 10
        assert pp.pid is None
        assert pp.parse(hook(tmp_path, "c.limits")).title == "4096"
        assert pp.pid not in (None, first)


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("b.segv", "the parser crashed (exit code -11)"),
        (
            "b.kill",
            "the parser crashed (exit code -9, killed: perhaps the system ran out of memory)",
        ),
        ("b.exit", "the parser crashed (exit code 3)"),
    ],
)
def test_crash_is_reported_with_its_exit_code(
    tmp_path: Path, hooked: ParserProcess, name: str, reason: str
) -> None:
    hooked.parse(hook(tmp_path, "a.limits"))
    with pytest.raises(ParseError) as info:
        hooked.parse(hook(tmp_path, name, "3"))
    assert str(info.value) == reason
    assert hooked.parse(hook(tmp_path, "c.limits")).title == "4096"


def test_a_child_that_died_between_files_is_replaced_silently(
    tmp_path: Path, hooked: ParserProcess
) -> None:
    hooked.parse(hook(tmp_path, "a.limits"))
    pid = hooked.pid
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while hooked.pid is not None and time.monotonic() < deadline:  # until it can be reaped
        time.sleep(0.05)
    assert hooked.parse(hook(tmp_path, "b.limits")).title == "4096"
    assert hooked.pid != pid


def test_memory_cap_turns_a_hog_into_an_error(tmp_path: Path) -> None:
    with ParserProcess(memory_mb=1024, child_module=HOOKED) as pp:
        assert pp.parse(hook(tmp_path, "a.limits")).title == "1024"
        assert pp.parse(hook(tmp_path, "small.hog", "100")).title == str(100 * 2**20)
        with pytest.raises(ParseError, match=r"^the parser ran out of memory \(limit 1024 MB\)$"):
            pp.parse(hook(tmp_path, "big.hog", "2048"))
        assert pp.parse(hook(tmp_path, "b.limits")).title == "1024"


def test_no_memory_cap(tmp_path: Path) -> None:
    with ParserProcess(memory_mb=None, child_module=HOOKED) as pp:
        assert pp.parse(hook(tmp_path, "a.limits")).title == "none"


def test_stray_output_in_the_child_cannot_corrupt_replies(
    tmp_path: Path, hooked: ParserProcess, capfd: pytest.CaptureFixture[str]
) -> None:
    path = hook(tmp_path, "guide.noisy.md", MARKDOWN)
    for _ in range(2):
        assert hooked.parse(path).title == "Guide"
    err = capfd.readouterr().err
    for line in ("a stray print", "original sys.stdout", "a raw write to fd 1", "a log line"):
        assert line in err


def test_child_is_offline_even_if_the_parent_is_not(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in OFFLINE_ENV:
        monkeypatch.delenv(name, raising=False)
    with ParserProcess(child_module=HOOKED) as pp:
        env = json.loads(pp.parse(hook(tmp_path, "a.limits")).elements[0].text)
    assert env == OFFLINE_ENV


def test_parse_errors_pass_through_and_keep_the_child(
    tmp_path: Path, hooked: ParserProcess
) -> None:
    hooked.parse(hook(tmp_path, "a.limits"))
    pid = hooked.pid
    with pytest.raises(ParseError, match=r"^unsupported file type: \.xyz$"):
        hooked.parse(hook(tmp_path, "drawing.xyz", "x"))
    with pytest.raises(ParseError, match=r"^cannot read file"):
        hooked.parse(tmp_path / "missing.md")
    assert hooked.pid == pid


def test_threads_share_one_child(tmp_path: Path, hooked: ParserProcess) -> None:
    paths = [hook(tmp_path, f"{n}.limits") for n in range(8)]
    results: list[str | None] = []
    threads = [
        threading.Thread(target=lambda p=p: results.append(hooked.parse(p).title)) for p in paths
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == ["4096"] * 8


def test_close_is_idempotent_and_the_child_starts_lazily(tmp_path: Path) -> None:
    pp = ParserProcess(child_module=HOOKED)
    assert pp.pid is None
    pp.parse(hook(tmp_path, "a.limits"))
    pid = pp.pid
    assert pid is not None
    pp.close()
    pp.close()
    assert pp.pid is None
    _wait_gone(pid)


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="timeout_s"):
        ParserProcess(timeout_s=0)
    with pytest.raises(ValueError, match="memory_mb"):
        ParserProcess(memory_mb=10)


ORPHAN = """
import sys, threading, time
from pathlib import Path
from ingest.isolate import ParserProcess
pp = ParserProcess(child_module="tests.ingest.hooked_child")
threading.Thread(target=pp.parse, args=[Path(sys.argv[1])], daemon=True).start()
while pp.pid is None:
    time.sleep(0.05)
time.sleep(0.5)  # the request is on its way
print(pp.pid, flush=True)
"""


def test_child_exits_when_its_parent_dies_mid_parse(tmp_path: Path) -> None:
    slow = hook(tmp_path, "slow.sleep", "600")
    out = subprocess.run(
        [sys.executable, "-c", ORPHAN, str(slow)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    _wait_gone(int(out.stdout.split()[-1]))


def _wait_gone(pid: int, seconds: float = 10) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (FileNotFoundError, ProcessLookupError):
            return
        if state in ("Z", "X"):
            return
        time.sleep(0.1)
    raise AssertionError(f"process {pid} is still running")


def test_text_over_the_budget_is_refused_in_the_child_which_restarts(tmp_path: Path) -> None:
    big = tmp_path / "big.txt"
    big.write_text("\n\n".join(f"Paragraph {i} of many words here." for i in range(20_000)))
    small = tmp_path / "small.txt"
    small.write_text("Just a line.")
    with ParserProcess(max_chars=10_000, max_chunks=5) as pp:
        assert pp.parse(small).elements == [Element("Just a line.", "text")]
        first = pp.pid
        with pytest.raises(ParseError, match=r"^too much text: [\d,]+ characters, more than 5"):
            pp.parse(big)
        assert pp.pid is None  # its memory went back with it
        assert pp.parse(small).elements == [Element("Just a line.", "text")]
        assert pp.pid not in (None, first)
    with ParserProcess() as unbudgeted:
        assert len(unbudgeted.parse(big).elements) == 20_000
