"""`make bench --quick` inside the test command: small sizes, its own control plane, and a failure only
when a count ratio regresses (reconciles per run with size, API requests per applied BackgroundJob
against the same writes made directly, refused requests, series per job), never on a time."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.bench import bench

pytestmark = pytest.mark.cluster


@pytest.mark.timeout(900)
def test_quick_bench_has_no_ratio_regression(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    if not os.environ.get("NIGHTSHIFT_BIN_DIR"):
        pytest.fail("NIGHTSHIFT_BIN_DIR is not set: `make test` sets it (hack/build-binaries.sh)")
    rc = bench.main(["--quick", "--out", str(tmp_path / "results.json")])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "operator / direct writes" in out
