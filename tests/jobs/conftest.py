"""Fixtures for the job tests: one real PostgreSQL per session, a fresh database per test, and a
runner that starts `python -m nightshift_jobs` as a real subprocess and reads back its contract
(exit code, termination-log result, JSON log lines)."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from _jobtest import JobRun, RunJob, job_env, parse_logs, read_result
from tests.support.postgres import PostgresServer


@pytest.fixture
def dsn(postgres: PostgresServer, request: pytest.FixtureRequest) -> str:
    """A database of its own for each test, named after the test."""
    name = re.sub(r"[^a-z0-9_]", "_", request.node.name.lower())[:50]
    return postgres.create_database(f"t_{name}")


@pytest.fixture
def run_job(tmp_path: Path) -> RunJob:
    """run_job("ttl-cleanup", {"table": ...}, "--dry-run", env={...}) -> JobRun."""

    def run(name: str, params: dict[str, Any] | None = None, *args: str, timeout: float = 120, **env: str) -> JobRun:
        (tmp_path / "termination-log").unlink(missing_ok=True)
        proc = subprocess.run(
            [sys.executable, "-m", "nightshift_jobs", name, *args],
            env=job_env(tmp_path, params, **env),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        return JobRun(proc.returncode, read_result(tmp_path), parse_logs(proc.stderr), proc.stderr)

    return run


@pytest.fixture
def start_job(tmp_path: Path) -> Callable[..., subprocess.Popen[str]]:
    """Start a job without waiting (for SIGTERM/SIGKILL tests); stderr is a pipe of JSON lines."""

    def start(name: str, params: dict[str, Any], *args: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [sys.executable, "-m", "nightshift_jobs", name, *args],
            env=job_env(tmp_path, params),
            stderr=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            text=True,
        )

    return start
