"""The command-line tools some tests drive (helm, promtool): found, or the test fails saying how to get them.

A test never skips because a tool is missing: that would hide a gap. `make test` builds helm into the
cache (hack/build-binaries.sh) and installs promtool (hack/ensure-tools.sh); `make unit` leaves out the
tests marked `tools`.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest


def promtool() -> str:
    found = shutil.which("promtool") or ("/usr/bin/promtool" if Path("/usr/bin/promtool").exists() else None)
    if found is None:
        pytest.fail("promtool is missing: `make test` installs it (Debian package `prometheus`, hack/ensure-tools.sh)")
    return found


def helm() -> Path:
    bin_dir = os.environ.get("NIGHTSHIFT_BIN_DIR")
    if not bin_dir:
        pytest.fail("NIGHTSHIFT_BIN_DIR (the directory holding helm) is not set: run the tests with `make test`")
    path = Path(bin_dir) / "helm"
    if not path.exists():
        pytest.fail(f"NIGHTSHIFT_BIN_DIR is set but {path} does not exist: `make binaries` builds it")
    return path
