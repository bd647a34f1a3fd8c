"""sql: one parameterised statement in one transaction, bounded by statement_timeout.

For the team-specific SQL that does not deserve an image (e.g. a monthly quota reset). Values go in
`args` (psycopg placeholders %s or %(name)s), never into the statement text. A dry run executes the
statement and rolls it back, so it reports the real row count without changing anything.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from psycopg import sql
from pydantic import Field

from nightshift_jobs import db
from nightshift_jobs.params import DbParams, Duration
from nightshift_jobs.registry import job
from nightshift_jobs.runtime import Counts, JobContext


class SqlParams(DbParams):
    statement: str = Field(min_length=1)
    args: dict[str, Any] | list[Any] | None = None
    statement_timeout: Duration = timedelta(minutes=5)


@job("sql", params=SqlParams)
def run(ctx: JobContext, p: SqlParams) -> Counts:
    with db.connect(ctx, p) as conn:
        timeout_ms = int(p.statement_timeout.total_seconds() * 1000)
        conn.execute("SELECT set_config('statement_timeout', %s, true)", [f"{timeout_ms}ms"])
        with ctx.step("statement"):
            cur = conn.execute(sql.SQL(p.statement), p.args)
            rows_returned = len(cur.fetchall()) if cur.description else 0
        affected = max(cur.rowcount, 0)
        if ctx.dry_run:
            conn.rollback()
        else:
            conn.commit()
    ctx.message = f"{cur.statusmessage or 'done'}: {affected} rows"
    return {"rows_affected": affected, "rows_returned": rows_returned}
