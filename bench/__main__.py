"""`python -m bench` (and `hearth bench`): the benchmark suite's command line (bench/cli.py)."""

import sys

from .cli import main

sys.exit(main())
