"""ttl-cleanup: delete rows older than an age, in small committed batches.

Each batch is its own short transaction, so locks are held only for one batch and a crash loses at
most the batch in flight (which rolls back); re-running simply continues where the last run stopped.
"""

from __future__ import annotations

from psycopg import sql

from nightshift_jobs import db
from nightshift_jobs.builtins._rows import AgedRowsParams, batch_ctids, condition, cutoff
from nightshift_jobs.durations import format_duration
from nightshift_jobs.registry import job
from nightshift_jobs.runtime import ConfigError, Counts, JobContext


class TtlCleanupParams(AgedRowsParams):
    pass


@job("ttl-cleanup", params=TtlCleanupParams)
def run(ctx: JobContext, p: TtlCleanupParams) -> Counts:
    rel = db.qualified(p.schema_, p.table)
    with db.connect(ctx, p) as conn:
        if not db.relation_exists(conn, p.schema_, p.table):
            raise ConfigError(f"table {rel.as_string(conn)} does not exist")
        before = cutoff(conn, p.older_than)
        args: dict[str, object] = {"cutoff": before, "limit": p.batch_size}
        ctx.log("cutoff fixed", step="cutoff", cutoff=before.isoformat(), older_than=format_duration(p.older_than))
        if ctx.dry_run:
            count_q = sql.SQL("SELECT count(*), coalesce(sum(pg_column_size(t.*)), 0) FROM {} AS t WHERE {}")
            row = conn.execute(count_q.format(rel, condition(p)), args).fetchone()
            assert row is not None
            ctx.counts.update(rows_deleted=0, rows_matching=int(row[0]), bytes_freed=int(row[1]))
            ctx.message = f"{row[0]} rows older than {format_duration(p.older_than)} would be deleted"
            return ctx.counts
        delete = sql.SQL(
            "WITH d AS (DELETE FROM {rel} AS t WHERE {ctids} RETURNING pg_column_size(t.*) AS size) "
            "SELECT count(*), coalesce(sum(size), 0) FROM d"
        ).format(rel=rel, ctids=batch_ctids(p))
        ctx.counts.update(rows_deleted=0, bytes_freed=0, batches=0)
        while True:
            ctx.checkpoint()
            with ctx.step("delete batch", batch=ctx.counts["batches"] + 1):
                row = conn.execute(delete, args).fetchone()
                conn.commit()
            deleted, size = (int(row[0]), int(row[1])) if row else (0, 0)
            if deleted == 0:
                break
            ctx.add("batches")
            ctx.add("rows_deleted", deleted)
            ctx.add("bytes_freed", size)
            ctx.log("batch deleted", step="delete", counts=dict(ctx.counts))
    ctx.message = (
        f"deleted {ctx.counts['rows_deleted']} rows older than {format_duration(p.older_than)} "
        f"from {p.table} (~{ctx.counts['bytes_freed']} bytes of row data)"
    )
    return ctx.counts
