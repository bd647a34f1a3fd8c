"""Scale benchmark of the operator: `make bench` (or `NIGHTSHIFT_BIN_DIR=... python -m tests.bench`).

It starts its own control plane (KWOK completes the runs' pods), its own operator, and measures the
same things at a small baseline size and at a 20x larger size in one run, then prints the ratios
scale/baseline. It never asserts timings; see docs/benchmarks.md.
"""
