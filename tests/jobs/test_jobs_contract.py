"""The process contract, checked on real subprocesses: exit codes, termination log, logs, SIGTERM."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import psycopg
import pytest
from _jobtest import RunJob, StartJob, parse_logs, read_result

pytestmark = pytest.mark.postgres


def make_events(dsn: str, rows: int, old_fraction: float = 1.0) -> None:
    old = int(rows * old_fraction)
    with psycopg.connect(dsn) as conn:
        conn.execute("CREATE TABLE events (id bigserial PRIMARY KEY, payload text, created_at timestamptz)")
        conn.execute(
            "INSERT INTO events (payload, created_at) SELECT repeat('x', 50),"
            " CASE WHEN g <= %s THEN now() - interval '300 days' ELSE now() END"
            " FROM generate_series(1, %s) g",
            [old, rows],
        )


TTL = {"table": "events", "timestampColumn": "created_at", "olderThan": "240d", "batchSize": 100}


def test_unknown_job_exits_64_with_result(run_job: RunJob) -> None:
    run = run_job("no-such-job", {})
    assert run.code == 64
    assert run.result["result"] == "failed" and run.result["exitCode"] == 64
    assert "unknown job 'no-such-job'" in run.result["message"] and "ttl-cleanup" in run.result["message"]
    assert "unknown job" in run.stderr


def test_bad_flag_exits_64(run_job: RunJob) -> None:
    run = run_job("ttl-cleanup", TTL, "--frobnicate")
    assert run.code == 64
    assert "--frobnicate" in run.result["message"]


def test_unknown_param_exits_64_and_invalid_value_65(run_job: RunJob, dsn: str) -> None:
    run = run_job("ttl-cleanup", {**TTL, "dsn": dsn, "olderThen": "1d"})
    assert run.code == 64
    assert "unknown parameter 'olderThen'" in run.result["message"]
    run = run_job("ttl-cleanup", {**TTL, "dsn": dsn}, "--param", "olderThan=240x")
    assert run.code == 65
    assert "invalid parameter 'olderThan'" in run.result["message"] and "240x" in run.result["message"]
    assert any("240x" in (log.get("message") or "") for log in run.logs)


def test_database_unreachable_exits_75(run_job: RunJob) -> None:
    run = run_job("ttl-cleanup", {**TTL, "dsn": "postgresql://postgres@127.0.0.1:1/x", "connectTimeout": "2s"})
    assert run.code == 75
    assert run.result["result"] == "failed"


def test_database_url_env_and_missing_table_is_config_error(run_job: RunJob, dsn: str) -> None:
    run = run_job("ttl-cleanup", TTL, DATABASE_URL=dsn)
    assert run.code == 78
    assert "does not exist" in run.result["message"]


def test_success_result_and_json_logs(run_job: RunJob, dsn: str) -> None:
    make_events(dsn, 250)
    run = run_job("ttl-cleanup", TTL, "--param", f"dsn={dsn}")
    assert run.code == 0, run.stderr
    assert set(run.result) == {"result", "job", "exitCode", "message", "counts", "durationMs"}
    assert run.result["result"] == "succeeded" and run.result["job"] == "ttl-cleanup"
    assert run.counts["rows_deleted"] == 250 and run.counts["batches"] == 3
    assert all(log["run_id"] == "run-123" and log["job"] == "ttl-cleanup" and log["attempt"] == 1 for log in run.logs)
    steps = [log for log in run.logs if log.get("step") == "delete batch"]
    assert steps and all("duration_ms" in log for log in steps)
    started = next(log for log in run.logs if log["msg"] == "job started")
    assert started["params"]["dsn"] == "***"


def test_unwritable_termination_log_is_skipped(run_job: RunJob, tmp_path: Path) -> None:
    run = run_job("no-such-job", {}, NIGHTSHIFT_TERMINATION_LOG="/nonexistent-dir/termination-log")
    assert run.code == 64
    assert any(log["msg"] == "termination log not written" for log in run.logs)


def test_sigterm_finishes_batch_then_exits_75(start_job: StartJob, dsn: str, tmp_path: Path) -> None:
    make_events(dsn, 100_000)
    proc = start_job("ttl-cleanup", {**TTL, "dsn": dsn})
    assert proc.stderr is not None
    lines: list[str] = []
    for line in proc.stderr:
        lines.append(line)
        if sum('"batch deleted"' in seen for seen in lines) >= 3:
            os.kill(proc.pid, signal.SIGTERM)
            break
    rest = proc.stderr.read()
    assert proc.wait(timeout=60) == 75
    result = read_result(tmp_path)
    assert result["exitCode"] == 75 and result["message"] == "terminated"
    parse_logs("".join(lines) + rest)  # every line JSON, including the stop notice
    assert "stop requested" in rest or any("stop requested" in line for line in lines)
    with psycopg.connect(dsn) as conn:
        left = conn.execute("SELECT count(*) FROM events").fetchone()
    deleted = result["counts"]["rows_deleted"]
    assert 0 < deleted < 100_000
    assert left == (100_000 - deleted,)  # the counts are exactly what was committed
