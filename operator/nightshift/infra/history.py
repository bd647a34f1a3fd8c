"""Execution history in PostgreSQL: every finished attempt as a row, runs as a view over them.

Writes never block reconciling: records go into a bounded in-memory buffer that one task flushes
with idempotent upserts (keyed by namespace and Job name, so a record written twice is one row).
While PostgreSQL is down the buffer holds records and the task retries with backoff; if the bound
is ever hit the oldest record is dropped and nightshift_history_dropped_total counts it.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import datetime as dt
import logging
from collections.abc import Iterable, Sequence
from dataclasses import asdict
from typing import Any

import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from nightshift.core.records import AttemptRecord
from nightshift.infra import metrics

__all__ = ["AttemptRecord", "HistoryWriter", "migrate", "read_history"]

log = logging.getLogger("nightshift.infra.history")

MIGRATIONS: list[str] = [
    """
    CREATE TABLE IF NOT EXISTS nightshift_attempts (
        namespace      text        NOT NULL,
        job_name       text        NOT NULL,
        backgroundjob  text        NOT NULL,
        run_id         text        NOT NULL,
        attempt        integer     NOT NULL,
        trigger        text        NOT NULL,
        scheduled_time timestamptz,
        started_at     timestamptz,
        finished_at    timestamptz,
        result         text        NOT NULL,
        exit_code      integer,
        reason         text,
        message        text,
        output         jsonb,
        recorded_at    timestamptz NOT NULL DEFAULT now(),
        PRIMARY KEY (namespace, job_name)
    );
    CREATE INDEX IF NOT EXISTS nightshift_attempts_by_job
        ON nightshift_attempts (namespace, backgroundjob, scheduled_time DESC);
    CREATE INDEX IF NOT EXISTS nightshift_attempts_by_finish ON nightshift_attempts (finished_at);
    """,
    """
    CREATE OR REPLACE VIEW nightshift_runs AS
    SELECT namespace, backgroundjob, run_id,
           min(trigger) AS trigger,
           min(scheduled_time) AS scheduled_time,
           min(started_at) AS started_at,
           max(finished_at) AS finished_at,
           count(*) AS attempts,
           (array_agg(result ORDER BY attempt DESC))[1] AS result,
           (array_agg(exit_code ORDER BY attempt DESC))[1] AS exit_code,
           (array_agg(reason ORDER BY attempt DESC))[1] AS reason
      FROM nightshift_attempts
     GROUP BY namespace, backgroundjob, run_id;
    """,
]
SCHEMA_LOCK = 0x6E696768  # advisory lock id: one migrator at a time


async def migrate(conn: psycopg.AsyncConnection[Any]) -> int:
    """Apply what is missing; safe to run from any number of operators at once."""
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(%s)", (SCHEMA_LOCK,))
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS nightshift_schema (version integer PRIMARY KEY, "
            "applied_at timestamptz NOT NULL DEFAULT now())"
        )
        cur = await conn.execute("SELECT coalesce(max(version), 0) FROM nightshift_schema")
        row = await cur.fetchone()
        current = int(row[0]) if row else 0
        for version, sql in enumerate(MIGRATIONS[current:], start=current + 1):
            await conn.execute(sql.encode())
            await conn.execute("INSERT INTO nightshift_schema (version) VALUES (%s)", (version,))
        return len(MIGRATIONS)


UPSERT = """
INSERT INTO nightshift_attempts (namespace, job_name, backgroundjob, run_id, attempt, trigger, scheduled_time,
    started_at, finished_at, result, exit_code, reason, message, output)
VALUES (%(namespace)s, %(job_name)s, %(backgroundjob)s, %(run_id)s, %(attempt)s, %(trigger)s, %(scheduled_time)s,
    %(started_at)s, %(finished_at)s, %(result)s, %(exit_code)s, %(reason)s, %(message)s, %(output)s)
ON CONFLICT (namespace, job_name) DO UPDATE SET
    result = EXCLUDED.result, finished_at = EXCLUDED.finished_at, started_at = EXCLUDED.started_at,
    exit_code = EXCLUDED.exit_code, reason = EXCLUDED.reason, message = EXCLUDED.message,
    output = EXCLUDED.output, recorded_at = now()
"""


class HistoryWriter:
    def __init__(self, dsn: str, *, retention_days: int = 30, buffer: int = 10000) -> None:
        self.dsn = dsn
        self.retention = dt.timedelta(days=retention_days)
        self.buffer: collections.deque[AttemptRecord] = collections.deque()
        self.bound = buffer
        self.written: set[tuple[str, str, str]] = set()
        self.durable: set[tuple[str, str, str]] = set()  # rows the database has taken (this process)
        self._flushed = asyncio.Condition()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.flushed = 0
        self.connected = False

    def record(self, rec: AttemptRecord) -> None:
        """Non-blocking; the same (job, result) is queued once per process."""
        key = _key(rec)
        if key in self.written:
            return
        if len(self.written) > 100_000:  # forgetting only costs an idempotent upsert again
            self.written.clear()
        self.written.add(key)
        if len(self.buffer) >= self.bound:
            self.buffer.popleft()
            metrics.history_dropped()
        self.buffer.append(rec)
        self._wake.set()

    def has(self, recs: Iterable[AttemptRecord]) -> bool:
        """Whether the database has taken all of these rows."""
        return all(_key(r) in self.durable for r in recs)

    async def wait_durable(self, recs: Sequence[AttemptRecord], timeout: float) -> bool:
        """Wait (at most `timeout`) until the database has these rows; at once False while it is down.

        The ledger marks a run counted only after this, or with the history-pending mark: a mark
        written while the rows sat in this process's buffer lost them to a SIGKILL (the churn test
        found runs counted with no history row)."""
        if self.has(recs):
            return True
        if not self.connected:
            return False
        try:
            async with self._flushed:
                await asyncio.wait_for(self._flushed.wait_for(lambda: self.has(recs)), timeout)
        except TimeoutError:
            return False
        return True

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        backoff = 1.0
        last_prune = 0.0
        loop = asyncio.get_running_loop()
        while True:
            try:
                async with await psycopg.AsyncConnection.connect(self.dsn, autocommit=True, connect_timeout=5) as conn:
                    await migrate(conn)
                    self.connected = True
                    backoff = 1.0
                    while True:
                        await self.flush(conn)
                        if loop.time() - last_prune > 3600:
                            await self.prune(conn)
                            last_prune = loop.time()
                        self._wake.clear()
                        try:
                            await asyncio.wait_for(self._wake.wait(), timeout=30)
                        except TimeoutError:
                            pass
            except (psycopg.Error, OSError) as e:
                self.connected = False
                log.warning("history database unavailable (%s); %d records buffered", e, len(self.buffer))
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 30)

    async def flush(self, conn: psycopg.AsyncConnection[Any]) -> None:
        while self.buffer:
            batch = list(self.buffer)[:500]
            async with conn.cursor() as cur:
                await cur.executemany(UPSERT, [_params(r) for r in batch])
            for _ in batch:  # only what reached the database leaves the buffer
                self.buffer.popleft()
            self.flushed += len(batch)
            if len(self.durable) > 100_000:  # forgetting only costs a history-pending mark and a re-offer
                self.durable.clear()
            self.durable.update(_key(r) for r in batch)
            async with self._flushed:
                self._flushed.notify_all()

    async def prune(self, conn: psycopg.AsyncConnection[Any]) -> int:
        cur = await conn.execute(
            "DELETE FROM nightshift_attempts WHERE finished_at < now() - %s::interval",
            (f"{int(self.retention.total_seconds())} seconds",),
        )
        return cur.rowcount


def _key(r: AttemptRecord) -> tuple[str, str, str]:
    return (r.namespace, r.job_name, r.result)


def _params(r: AttemptRecord) -> dict[str, Any]:
    p = asdict(r)
    p["output"] = Jsonb(r.output) if r.output is not None else None
    return p


async def read_history(dsn: str, namespace: str, name: str, limit: int) -> list[dict[str, Any]]:
    async with await psycopg.AsyncConnection.connect(dsn, row_factory=dict_row) as conn:
        cur = await conn.execute(
            "SELECT run_id AS run, attempt, trigger, scheduled_time AS scheduled, started_at AS started, "
            'finished_at AS finished, result, exit_code AS "exitCode", reason FROM nightshift_attempts '
            "WHERE namespace = %s AND backgroundjob = %s ORDER BY coalesce(scheduled_time, finished_at) DESC, attempt DESC "
            "LIMIT %s",
            (namespace, name, limit),
        )
        return [dict(r) for r in await cur.fetchall()]
