"""ttl-cleanup and archive on real tables: counts, idempotent re-runs, quoting, crash safety."""

from __future__ import annotations

import os
import signal
import time

import psycopg
import pytest
from _jobtest import RunJob, StartJob

pytestmark = pytest.mark.postgres

SCHEMA = "My Schema"  # mixed case and a space: identifiers must be quoted everywhere


def seed(dsn: str, table: str, old: int, new: int, schema: str = "public") -> None:
    with psycopg.connect(dsn) as conn:
        conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
        conn.execute(
            f'CREATE TABLE "{schema}"."{table}" (id bigint PRIMARY KEY, kind text, body text,'
            ' "Created At" timestamp NOT NULL)'
        )
        conn.execute(
            f'INSERT INTO "{schema}"."{table}"'
            " SELECT g, CASE WHEN g %% 2 = 0 THEN 'keep' ELSE 'chat' END,"
            " repeat('m', 100), CASE WHEN g <= %s THEN now() - interval '300 days' ELSE now() END"
            " FROM generate_series(1, %s) g",
            [old, old + new],
        )


def count(dsn: str, query: str) -> int:
    with psycopg.connect(dsn) as conn:
        row = conn.execute(query).fetchone()
    assert row is not None
    return int(row[0])


def ttl(dsn: str, **extra: object) -> dict[str, object]:
    return {
        "dsn": dsn,
        "schema": SCHEMA,
        "table": "Chat Memory",
        "timestampColumn": "Created At",
        "olderThan": "240d",
        "batchSize": 700,
        **extra,
    }


def test_ttl_cleanup_deletes_old_rows_once(run_job: RunJob, dsn: str) -> None:
    seed(dsn, "Chat Memory", old=5000, new=3000, schema=SCHEMA)
    dry = run_job("ttl-cleanup", ttl(dsn), "--dry-run")
    assert dry.code == 0 and dry.counts["rows_matching"] == 5000 and dry.counts["rows_deleted"] == 0
    assert dry.result["message"].startswith("dry run:")
    assert count(dsn, 'SELECT count(*) FROM "My Schema"."Chat Memory"') == 8000

    first = run_job("ttl-cleanup", ttl(dsn))
    assert first.code == 0, first.stderr
    assert first.counts["rows_deleted"] == 5000
    assert first.counts["batches"] == 8  # ceil(5000 / 700)
    assert first.counts["bytes_freed"] > 5000 * 100
    assert count(dsn, 'SELECT count(*) FROM "My Schema"."Chat Memory"') == 3000
    assert (
        count(
            dsn,
            """SELECT count(*) FROM "My Schema"."Chat Memory" WHERE "Created At" < now() - '1d'::interval""",
        )
        == 0
    )

    second = run_job("ttl-cleanup", ttl(dsn))
    assert second.code == 0 and second.counts["rows_deleted"] == 0
    assert count(dsn, 'SELECT count(*) FROM "My Schema"."Chat Memory"') == 3000


def test_ttl_cleanup_where_filter(run_job: RunJob, dsn: str) -> None:
    seed(dsn, "Chat Memory", old=1000, new=10, schema=SCHEMA)
    run = run_job("ttl-cleanup", ttl(dsn, where="kind = 'chat' AND body LIKE 'm%'"))
    assert run.code == 0 and run.counts["rows_deleted"] == 500
    assert count(dsn, """SELECT count(*) FROM "My Schema"."Chat Memory" WHERE kind = 'keep'""") == 505


def archive_params(dsn: str, batch: int = 500) -> dict[str, object]:
    return {
        "dsn": dsn,
        "table": "audit_log",
        "timestampColumn": "Created At",
        "olderThan": "90d",
        "batchSize": batch,
    }


def test_archive_moves_rows_and_creates_table(run_job: RunJob, dsn: str) -> None:
    seed(dsn, "audit_log", old=2000, new=500)
    run = run_job("archive", archive_params(dsn))
    assert run.code == 0, run.stderr
    assert run.counts["rows_archived"] == 2000 and run.counts["batches"] == 4
    assert count(dsn, "SELECT count(*) FROM audit_log") == 500
    assert count(dsn, "SELECT count(*) FROM audit_log_archive") == 2000
    assert count(dsn, "SELECT count(DISTINCT id) FROM audit_log_archive") == 2000
    again = run_job("archive", archive_params(dsn))
    assert again.code == 0 and again.counts["rows_archived"] == 0
    assert count(dsn, "SELECT count(*) FROM audit_log_archive") == 2000
    missing = run_job("archive", {**archive_params(dsn), "archiveTable": "nope", "createArchive": False})
    assert missing.code == 78 and "does not exist" in missing.result["message"]


def test_archive_survives_sigkill_mid_run(start_job: StartJob, run_job: RunJob, dsn: str) -> None:
    total_old, total_new = 200_000, 1000
    seed(dsn, "audit_log", old=total_old, new=total_new)
    proc = start_job("archive", archive_params(dsn, batch=1000))
    assert proc.stderr is not None
    moved_batches = 0
    for line in proc.stderr:
        moved_batches += '"batch moved"' in line
        if moved_batches >= 5:
            time.sleep(0.05)  # land inside a later batch, not on a boundary
            os.kill(proc.pid, signal.SIGKILL)
            break
    assert proc.wait(timeout=30) == -signal.SIGKILL
    # the killed session's server backend dies once it notices the client is gone
    deadline = time.time() + 30
    while time.time() < deadline and count(
        dsn, "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'nightshift/archive'"
    ):
        time.sleep(0.1)

    src = count(dsn, "SELECT count(*) FROM audit_log")
    arch = count(dsn, "SELECT count(*) FROM audit_log_archive")
    assert 0 < arch < total_old
    assert src + arch == total_old + total_new  # nothing lost, nothing doubled, mid-run
    assert count(dsn, "SELECT count(DISTINCT id) FROM audit_log_archive") == arch
    assert count(dsn, "SELECT count(*) FROM audit_log a JOIN audit_log_archive b USING (id)") == 0

    rerun = run_job("archive", archive_params(dsn, batch=5000))
    assert rerun.code == 0, rerun.stderr
    assert rerun.counts["rows_archived"] == total_old - arch
    assert count(dsn, "SELECT count(*) FROM audit_log") == total_new
    assert count(dsn, "SELECT count(*) FROM audit_log_archive") == total_old
    assert count(dsn, "SELECT count(DISTINCT id) FROM audit_log_archive") == total_old
    assert count(dsn, "SELECT min(id) FROM audit_log") == total_old + 1
