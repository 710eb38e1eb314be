"""Retrieval benchmark on a BEIR dataset: `python -m bench.retrieval --dataset DIR [--quick]
[--limit-queries N] [--json OUT]`. The same code as `hearth eval` (cli.evaluation)."""

from __future__ import annotations

import sys

from cli.evaluation.cli import main

if __name__ == "__main__":
    sys.exit(main())
