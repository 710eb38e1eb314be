"""A parser child for tests: the real `ingest.isolate.serve` loop around `parse_file`, plus files
that misbehave on purpose, chosen by their last suffix. Production code knows nothing of these:
tests start it with `ParserProcess(child_module=HOOKED)`.

  x.sleep     sleeps for the number of seconds the file holds
  x.segv      kills the child with SIGSEGV, as a crashing C extension would
  x.kill      kills the child with SIGKILL, as the kernel's OOM killer would
  x.exit      exits the child with the code the file holds
  x.hog       allocates as many MB as the file holds, all at once
  x.limits    answers with the child's RLIMIT_AS (in MB) as title and its offline variables
  x.noisy.md  prints to stdout through Python, the raw fd and logging, then parses x.noisy.md
"""

from __future__ import annotations

import json
import logging
import os
import resource
import signal
import sys
import time
from pathlib import Path

from core.offline import OFFLINE_ENV
from ingest.isolate import serve
from ingest.parse import Element, Parsed, parse_file

HOOKED = "tests.ingest.hooked_child"


def misbehave(path: Path) -> Parsed:
    hook = path.suffix
    if hook == ".sleep":
        time.sleep(float(path.read_text()))
    elif hook in (".segv", ".kill"):
        os.kill(os.getpid(), signal.SIGSEGV if hook == ".segv" else signal.SIGKILL)
    elif hook == ".exit":
        os._exit(int(path.read_text()))
    elif hook == ".hog":
        hog = bytearray(int(path.read_text()) * 2**20)
        return Parsed(title=str(len(hog)), mime=None, elements=[])
    elif hook == ".limits":
        soft = resource.getrlimit(resource.RLIMIT_AS)[0]
        offline = {k: os.environ.get(k) for k in OFFLINE_ENV}
        limit = "none" if soft == resource.RLIM_INFINITY else str(soft // 2**20)
        return Parsed(title=limit, mime=None, elements=[Element(json.dumps(offline), "text")])
    elif ".noisy" in path.suffixes:
        print("a stray print")
        sys.__stdout__.write("a write to the original sys.stdout\n")  # type: ignore[union-attr]
        sys.__stdout__.flush()  # type: ignore[union-attr]
        os.write(1, b"a raw write to fd 1\n")
        logging.getLogger("noisy").warning("a log line")
    return parse_file(path)


if __name__ == "__main__":
    serve(misbehave)
