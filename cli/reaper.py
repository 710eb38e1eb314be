"""The watchdog `hearth up` starts first: `python -m cli.reaper DATA_DIR FD SUPERVISOR_PID`.

It sits in a session of its own (a closed terminal's SIGHUP is not for it), blocked on the read
end FD of the supervisor's lifeline. When the supervisor stops cleanly it ends the watchdog itself;
when it dies any other way (kill -9, the OOM killer) the pipe's EOF wakes the watchdog, which stops
every process of the instance in order (cli/instance.py): Postgres daemonized by pg_ctl,
vLLM's engine processes, a worker's parser child, whatever PR_SET_PDEATHSIG did not reach.
Standard library only, so it starts in a blink and cannot fail to import.
"""

from __future__ import annotations

import signal
import sys
from pathlib import Path

from core.lifeline import wait_for_eof

from .instance import instance_processes, say, stop_processes


def main(argv: list[str]) -> int:
    if len(argv) != 3:
        print("usage: python -m cli.reaper DATA_DIR FD SUPERVISOR_PID", file=sys.stderr)
        return 2
    data_dir, fd, supervisor = Path(argv[0]), int(argv[1]), argv[2]
    for sig in (signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)
    wait_for_eof(fd)
    procs = instance_processes(data_dir)
    if procs:
        say(
            f"`hearth up` (pid {supervisor}) is gone; stopping the {len(procs)} process(es) "
            f"it left on {data_dir}"
        )
        stop_processes(procs)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
