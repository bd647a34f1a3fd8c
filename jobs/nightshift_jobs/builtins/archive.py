"""archive: move old rows to an archive table, one atomic statement per batch.

`WITH moved AS (DELETE ... RETURNING *) INSERT INTO archive SELECT ... FROM moved` runs in one
transaction: a batch is either fully moved or not at all, so a run killed at any moment (even
SIGKILL) leaves no row lost and none doubled, and the next run carries on.
"""

from __future__ import annotations

from psycopg import sql
from pydantic import Field

from nightshift_jobs import db
from nightshift_jobs.builtins._rows import AgedRowsParams, batch_ctids, condition, cutoff
from nightshift_jobs.durations import format_duration
from nightshift_jobs.params import Identifier
from nightshift_jobs.registry import job
from nightshift_jobs.runtime import ConfigError, Counts, JobContext


class ArchiveParams(AgedRowsParams):
    archive_table: Identifier | None = Field(default=None, description="default: <table>_archive")
    archive_schema: Identifier | None = Field(default=None, description="default: the source schema")
    create_archive: bool = True


def _columns(conn: db.Conn, schema: str | None, table: str) -> list[str]:
    """Insertable columns of the source, in order (generated and dropped columns excluded)."""
    rel = db.qualified(schema, table).as_string(conn)
    rows = conn.execute(
        "SELECT attname FROM pg_attribute WHERE attrelid = %s::regclass AND attnum > 0"
        " AND NOT attisdropped AND attgenerated = '' ORDER BY attnum",
        [rel],
    ).fetchall()
    return [str(r[0]) for r in rows]


@job("archive", params=ArchiveParams)
def run(ctx: JobContext, p: ArchiveParams) -> Counts:
    src = db.qualified(p.schema_, p.table)
    arch_schema = p.archive_schema or p.schema_
    arch_name = p.archive_table or f"{p.table}_archive"
    arch = db.qualified(arch_schema, arch_name)
    with db.connect(ctx, p) as conn:
        if not db.relation_exists(conn, p.schema_, p.table):
            raise ConfigError(f"table {src.as_string(conn)} does not exist")
        if not db.relation_exists(conn, arch_schema, arch_name):
            if not p.create_archive:
                raise ConfigError(f"archive table {arch.as_string(conn)} does not exist (createArchive: false)")
            if not ctx.dry_run:
                # LIKE copies columns, types and NOT NULL, not keys or identity: the archive must
                # accept any row the source ever held.
                conn.execute(
                    sql.SQL("CREATE TABLE IF NOT EXISTS {} (LIKE {} INCLUDING COMMENTS INCLUDING STORAGE)").format(
                        arch, src
                    )
                )
                conn.commit()
                ctx.log("archive table created", step="create", table=arch.as_string(conn))
        cols = sql.SQL(", ").join(sql.Identifier(c) for c in _columns(conn, p.schema_, p.table))
        conn.commit()
        before = cutoff(conn, p.older_than)
        args: dict[str, object] = {"cutoff": before, "limit": p.batch_size}
        ctx.log("cutoff fixed", step="cutoff", cutoff=before.isoformat(), older_than=format_duration(p.older_than))
        if ctx.dry_run:
            row = conn.execute(sql.SQL("SELECT count(*) FROM {} WHERE {}").format(src, condition(p)), args).fetchone()
            ctx.counts.update(rows_archived=0, rows_matching=int(row[0]) if row else 0)
            ctx.message = f"{ctx.counts['rows_matching']} rows would be moved to {arch_name}"
            return ctx.counts
        move = sql.SQL(
            "WITH moved AS (DELETE FROM {src} AS t WHERE {ctids} RETURNING t.*) "
            "INSERT INTO {arch} ({cols}) SELECT {cols} FROM moved"
        ).format(src=src, ctids=batch_ctids(p), arch=arch, cols=cols)
        ctx.counts.update(rows_archived=0, batches=0)
        while True:
            ctx.checkpoint()
            with ctx.step("move batch", batch=ctx.counts["batches"] + 1):
                cur = conn.execute(move, args)
                moved = cur.rowcount
                conn.commit()
            if moved <= 0:
                break
            ctx.add("batches")
            ctx.add("rows_archived", moved)
            ctx.log("batch moved", step="move", counts=dict(ctx.counts))
    ctx.message = (
        f"moved {ctx.counts['rows_archived']} rows older than {format_duration(p.older_than)} "
        f"from {p.table} to {arch_name}"
    )
    return ctx.counts
