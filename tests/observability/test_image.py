"""Static checks of the Dockerfile (no Docker engine here): multi-stage, non-root, and the default CMD
is the operator command the chart uses."""

from __future__ import annotations

import json
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = (ROOT / "Dockerfile").read_text()


def _instructions() -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", DOCKERFILE)
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def test_multi_stage_from_python_311_slim() -> None:
    froms = [rest for word, rest in _instructions() if word == "FROM"]
    assert len(froms) == 2
    assert "ARG PYTHON_IMAGE=python:3.11-slim" in DOCKERFILE
    assert froms[0] == "${PYTHON_IMAGE} AS builder"
    assert froms[1] == "${PYTHON_IMAGE}"
    assert "pip wheel --wheel-dir /wheels ." in DOCKERFILE
    assert "pip install --no-index --find-links=/wheels nightshift" in DOCKERFILE


def test_runs_as_numeric_non_root_user() -> None:
    users = [rest for word, rest in _instructions() if word == "USER"]
    assert users == ["${UID}:${UID}"]
    assert "ARG UID=10001" in DOCKERFILE


def test_default_cmd_is_the_operator() -> None:
    (cmd,) = [rest for word, rest in _instructions() if word == "CMD"]
    assert json.loads(cmd) == ["python", "-m", "nightshift"]


def test_dockerignore_is_an_allowlist() -> None:
    lines = [ln.strip() for ln in (ROOT / ".dockerignore").read_text().splitlines() if ln.strip()]
    lines = [ln for ln in lines if not ln.startswith("#")]
    assert lines[0] == "*"
    assert {"!pyproject.toml", "!operator/", "!jobs/"} <= set(lines)
