"""`python -m tests.bench`: see tests/bench/bench.py and docs/benchmarks.md."""

import sys

from tests.bench.bench import main

sys.exit(main())
