"""db-maintenance, refresh-views and sql on a real database."""

from __future__ import annotations

import psycopg
import pytest
from _jobtest import RunJob

pytestmark = pytest.mark.postgres


def q(dsn: str, query: str) -> list[tuple[object, ...]]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        cur = conn.execute(query)
        return list(cur.fetchall()) if cur.description else []


def test_db_maintenance_vacuum_analyze_reindex(run_job: RunJob, dsn: str) -> None:
    q(dsn, "CREATE TABLE notes (id int PRIMARY KEY, val int)")
    q(dsn, "INSERT INTO notes SELECT g, g % 10 FROM generate_series(1, 20000) g")
    q(dsn, "DELETE FROM notes WHERE id > 10000")
    q(dsn, 'CREATE TABLE "Other" (id int)')
    # a REINDEX/CREATE INDEX CONCURRENTLY that died leaves an invalid index behind
    with pytest.raises(psycopg.errors.UniqueViolation):
        q(dsn, "CREATE UNIQUE INDEX CONCURRENTLY notes_val_ccnew ON notes (val)")
    pkey_before = q(dsn, "SELECT relfilenode FROM pg_class WHERE relname = 'notes_pkey'")

    run = run_job("db-maintenance", {"dsn": dsn, "tables": ["notes"], "reindex": True})
    assert run.code == 0, run.stderr
    assert run.counts["tables"] == 1
    assert run.counts["tables_vacuumed"] == run.counts["tables_analyzed"] == run.counts["tables_reindexed"] == 1
    assert run.counts["invalid_indexes_dropped"] == 1
    assert q(dsn, "SELECT count(*) FROM pg_class WHERE relname = 'notes_val_ccnew'") == [(0,)]
    assert q(dsn, "SELECT relfilenode FROM pg_class WHERE relname = 'notes_pkey'") != pkey_before
    stats = q(
        dsn,
        "SELECT last_vacuum IS NOT NULL, last_analyze IS NOT NULL FROM pg_stat_user_tables WHERE relname = 'notes'",
    )
    assert stats == [(True, True)]

    everything = run_job("db-maintenance", {"dsn": dsn, "vacuum": False})
    assert everything.code == 0 and everything.counts["tables"] == 2 and everything.counts["tables_vacuumed"] == 0
    assert everything.counts["tables_analyzed"] == 2
    assert run_job("db-maintenance", {"dsn": dsn, "tables": ["missing"]}).code == 78
    nothing = run_job("db-maintenance", {"dsn": dsn, "vacuum": False, "analyze": False})
    assert nothing.code == 65 and "nothing to do" in nothing.result["message"]


def test_refresh_views_concurrently_where_possible(run_job: RunJob, dsn: str) -> None:
    q(dsn, "CREATE TABLE attendance (student int, present bool)")
    q(dsn, "INSERT INTO attendance SELECT g % 50, g % 3 <> 0 FROM generate_series(1, 3000) g")
    view = "SELECT student, avg(present::int)::numeric(5,4) AS rate, count(*) AS n FROM attendance GROUP BY student"
    q(dsn, f"CREATE MATERIALIZED VIEW class_stats AS {view}")
    q(dsn, "CREATE UNIQUE INDEX ON class_stats (student)")
    q(dsn, f"CREATE MATERIALIZED VIEW plain_stats AS {view}")
    q(dsn, f"CREATE MATERIALIZED VIEW cold_stats AS {view} WITH NO DATA")
    q(dsn, "CREATE UNIQUE INDEX ON cold_stats (student)")
    q(dsn, "INSERT INTO attendance SELECT 999, true FROM generate_series(1, 10)")

    run = run_job("refresh-views", {"dsn": dsn})
    assert run.code == 0, run.stderr
    assert run.counts == {"views": 3, "views_refreshed": 3, "refreshed_concurrently": 1}
    for name in ("class_stats", "plain_stats", "cold_stats"):
        assert q(dsn, f"SELECT n FROM {name} WHERE student = 999") == [(10,)]
    refreshed = {log["view"]: log["concurrently"] for log in run.logs if log.get("step") == "refresh"}
    assert refreshed == {"public.class_stats": True, "public.plain_stats": False, "public.cold_stats": False}

    again = run_job("refresh-views", {"dsn": dsn, "views": ["class_stats", "cold_stats"]})
    assert again.code == 0 and again.counts["refreshed_concurrently"] == 2  # cold_stats is populated now
    assert run_job("refresh-views", {"dsn": dsn, "views": ["nope"]}).code == 78


def test_sql_statement_with_args(run_job: RunJob, dsn: str) -> None:
    q(dsn, "CREATE TABLE api_quota (provider text PRIMARY KEY, used int, plan text)")
    q(dsn, "INSERT INTO api_quota VALUES ('openai', 90, 'pro'), ('gemini', 15, 'pro'), ('local', 0, 'free')")
    params = {
        "dsn": dsn,
        "statement": "UPDATE api_quota SET used = 0 WHERE used <> 0 AND plan = %(plan)s",
        "args": {"plan": "pro"},
    }
    dry = run_job("sql", params, "--dry-run")
    assert dry.code == 0 and dry.counts["rows_affected"] == 2
    assert q(dsn, "SELECT sum(used) FROM api_quota") == [(105,)]
    run = run_job("sql", params)
    assert run.code == 0 and run.counts["rows_affected"] == 2 and "UPDATE 2" in run.result["message"]
    assert q(dsn, "SELECT sum(used) FROM api_quota") == [(0,)]
    assert run_job("sql", params).counts["rows_affected"] == 0
    select = run_job("sql", {"dsn": dsn, "statement": "SELECT * FROM api_quota WHERE provider = %s", "args": ["local"]})
    assert select.code == 0 and select.counts["rows_returned"] == 1


def test_sql_errors_map_to_exit_codes(run_job: RunJob, dsn: str) -> None:
    syntax = run_job("sql", {"dsn": dsn, "statement": "UPDATE SET nothing"})
    assert syntax.code == 65 and "SyntaxError" in syntax.result["message"]
    missing = run_job("sql", {"dsn": dsn, "statement": "DELETE FROM no_such_table"})
    assert missing.code == 78 and "no_such_table" in missing.result["message"]
    slow = run_job("sql", {"dsn": dsn, "statement": "SELECT pg_sleep(5)", "statementTimeout": "200ms"})
    assert slow.code == 75 and "statement timeout" in slow.result["message"]
    args = run_job("sql", {"dsn": dsn, "statement": "SELECT 1", "args": [1]})
    assert args.code == 65
    q(dsn, "CREATE TABLE locked (id int)")
    with psycopg.connect(dsn) as holder:
        holder.execute("LOCK TABLE locked IN ACCESS EXCLUSIVE MODE")
        waited = run_job("sql", {"dsn": dsn, "statement": "INSERT INTO locked VALUES (1)", "lockTimeout": "300ms"})
    assert waited.code == 75 and "lock timeout" in waited.result["message"]
