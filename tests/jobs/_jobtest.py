"""Helpers shared by the job tests (plain module, not conftest, so imports stay unambiguous)."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]


def job_env(tmp_path: Path, params: dict[str, Any] | None = None, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NIGHTSHIFT_", "PG", "DATABASE_URL"))}
    env.update(
        PYTHONPATH=os.pathsep.join([str(REPO / "jobs"), str(REPO / "operator")]),
        NIGHTSHIFT_TERMINATION_LOG=str(tmp_path / "termination-log"),
        NIGHTSHIFT_RUN_ID="run-123",
        NIGHTSHIFT_ATTEMPT="1",
        NIGHTSHIFT_BACKGROUNDJOB="test",
        NIGHTSHIFT_NAMESPACE="tests",
    )
    if params is not None:
        env["NIGHTSHIFT_PARAMS"] = json.dumps(params)
    env.update(extra)
    return env


@dataclass
class JobRun:
    code: int
    result: dict[str, Any]
    logs: list[dict[str, Any]]
    stderr: str

    @property
    def counts(self) -> dict[str, int]:
        return dict(self.result.get("counts", {}))


def parse_logs(stderr: str) -> list[dict[str, Any]]:
    """Every stderr line must be one JSON object: that is part of the contract."""
    return [json.loads(line) for line in stderr.splitlines() if line.strip()]


def read_result(tmp_path: Path) -> dict[str, Any]:
    path = tmp_path / "termination-log"
    return json.loads(path.read_text()) if path.exists() else {}


RunJob = Callable[..., JobRun]
StartJob = Callable[..., "subprocess.Popen[str]"]
