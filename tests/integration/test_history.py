"""Execution history in a real PostgreSQL: rows after runs, retention, and no loss across an outage."""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Any

import psycopg
import pytest

from nightshift.infra.history import AttemptRecord, HistoryWriter, migrate
from tests.conftest import Kubectl, Operator, accounted, bgj, script_job, wait_for
from tests.support.postgres import PostgresServer

pytestmark = [pytest.mark.cluster, pytest.mark.postgres]


def rows(
    dsn: str, ns: str, sql: str = "SELECT * FROM nightshift_attempts", order: str = "backgroundjob, attempt"
) -> list[dict[str, Any]]:
    with psycopg.connect(dsn, row_factory=psycopg.rows.dict_row) as conn:
        try:
            return conn.execute(f"{sql} WHERE namespace = %s ORDER BY {order}", (ns,)).fetchall()
        except psycopg.errors.UndefinedTable:
            return []


def result(kubectl: Kubectl, name: str, ns: str) -> str | None:
    return kubectl.json("get", "bgj", name, "-n", ns).get("status", {}).get("lastRun", {}).get("result")  # type: ignore[no-any-return]


def test_rows_after_runs(kubectl: Kubectl, running_operator: Operator, namespace: str) -> None:
    retry = {"limit": 1, "backoff": {"initial": "1s", "jitter": 0}}
    out = "import json,os; open(os.environ['NIGHTSHIFT_TERMINATION_LOG'],'w').write(json.dumps({'result':'succeeded','message':'m','counts':{'rows':3}}))"
    kubectl.apply(bgj("good", namespace, {"job": script_job(out)}, annotations={"nightshift.dev/run-now": "1"}))
    kubectl.apply(
        bgj(
            "flaky",
            namespace,
            {"retry": retry, "job": script_job("import sys; sys.exit(75)")},
            annotations={"nightshift.dev/run-now": "1"},
        )
    )
    dsn = running_operator.history_dsn
    got = wait_for(lambda: len(rows(dsn, namespace)) == 3 and rows(dsn, namespace), timeout=90, what="3 attempt rows")
    by_job = {(r["backgroundjob"], r["attempt"]): r for r in got}
    good = by_job[("good", 1)]
    assert good["result"] == "Succeeded" and good["exit_code"] == 0 and good["output"]["counts"] == {"rows": 3}
    assert good["started_at"] and good["finished_at"] and good["trigger"] == "manual"
    assert by_job[("flaky", 1)]["result"] == "Failed" and by_job[("flaky", 1)]["exit_code"] == 75
    assert by_job[("flaky", 2)]["result"] == "Failed" and by_job[("flaky", 2)]["reason"].startswith("RetriesExhausted")
    runs = rows(dsn, namespace, "SELECT * FROM nightshift_runs", "backgroundjob")
    assert {(r["backgroundjob"], r["attempts"], r["result"]) for r in runs} == {
        ("good", 1, "Succeeded"),
        ("flaky", 2, "Failed"),
    }
    from tests.integration.test_cli import cli

    env_dsn = cli(running_operator, "-n", namespace, "-o", "json", "history", "flaky", "--dsn", dsn)
    assert env_dsn.returncode == 0, env_dsn.stderr
    assert [(h["attempt"], h["result"]) for h in __import__("json").loads(env_dsn.stdout)] == [
        (2, "Failed"),
        (1, "Failed"),
    ]
    # A crash between the ledger's history write and its mark (before the metric): the restarted
    # operator finds no mark, counts the run again (event refused by name, rows upserted) and marks
    # it; still one row per attempt, checked after the mark is back.
    good_job = kubectl.json("get", "jobs", "-n", namespace, "-l", "nightshift.dev/backgroundjob=good")["items"][0]
    running_operator.stop(kill=True)
    kubectl("annotate", "job", good_job["metadata"]["name"], "-n", namespace, "nightshift.dev/counted-")
    running_operator.start()
    wait_for(
        lambda: (
            kubectl.json("get", "job", good_job["metadata"]["name"], "-n", namespace)["metadata"]["annotations"].get(
                "nightshift.dev/counted"
            )
            == "Succeeded"
        ),
        timeout=30,
        what="the run counted again and marked",
    )
    assert len(rows(dsn, namespace)) == 3
    accounted(running_operator, namespace)


def test_rows_written_after_an_outage(
    kubectl: Kubectl, running_operator: Operator, postgres: PostgresServer, namespace: str
) -> None:
    dsn = running_operator.history_dsn
    postgres.pause()
    try:
        for i in range(3):
            kubectl.apply(
                bgj(
                    f"during-outage-{i}",
                    namespace,
                    {"job": script_job("print(1)")},
                    annotations={"nightshift.dev/run-now": "1"},
                )
            )
        for i in range(3):
            wait_for(
                lambda i=i: result(kubectl, f"during-outage-{i}", namespace) == "Succeeded",
                timeout=60,
                what="runs succeed while the history database is down",
            )
    finally:
        postgres.resume()
    got = wait_for(
        lambda: len(rows(dsn, namespace)) == 3 and rows(dsn, namespace),
        timeout=90,
        what="buffered rows after the database came back",
    )
    assert {r["backgroundjob"] for r in got} == {f"during-outage-{i}" for i in range(3)}
    accounted(running_operator, namespace)


def test_retention_prunes_old_rows_and_migrations_are_idempotent(postgres: PostgresServer) -> None:
    dsn = postgres.create_database("history_retention")
    now = dt.datetime.now(dt.UTC)

    def rec(name: str, age_days: int) -> AttemptRecord:
        t = now - dt.timedelta(days=age_days)
        return AttemptRecord("ns", name, "job", name, 1, "schedule", t, t, t, "Succeeded", 0, None, None, None)

    async def scenario() -> tuple[int, int, int]:
        async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
            await migrate(conn)
            await migrate(conn)  # a second operator, or a restart: nothing applied twice
            writer = HistoryWriter(dsn, retention_days=30)
            for name, age in (("old-1", 45), ("old-2", 31), ("new", 2)):
                writer.record(rec(name, age))
            await writer.flush(conn)
            pruned = await writer.prune(conn)
            cur = await conn.execute("SELECT count(*) FROM nightshift_attempts")
            left = (await cur.fetchone() or [0])[0]
            cur = await conn.execute("SELECT count(*) FROM nightshift_schema")
            versions = (await cur.fetchone() or [0])[0]
            return pruned, left, versions

    pruned, left, versions = asyncio.run(scenario())
    assert (pruned, left) == (2, 1)
    assert versions == 2
