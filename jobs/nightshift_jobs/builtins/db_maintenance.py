"""db-maintenance: VACUUM (ANALYZE), ANALYZE and REINDEX CONCURRENTLY, table by table.

Runs in autocommit (VACUUM and REINDEX CONCURRENTLY refuse transactions) and only uses commands that
do not block application reads or writes; VACUUM FULL is deliberately not offered. A REINDEX
CONCURRENTLY killed midway leaves invalid `_ccnew` indexes: the next run drops them first.
"""

from __future__ import annotations

from psycopg import sql
from pydantic import Field

from nightshift_jobs import db
from nightshift_jobs.builtins._tables import resolve
from nightshift_jobs.params import DbParams
from nightshift_jobs.registry import job
from nightshift_jobs.runtime import Counts, DataError, JobContext


class DbMaintenanceParams(DbParams):
    tables: list[str] | None = Field(default=None, description="default: every user table")
    schemas: list[str] | None = Field(default=None, description="limit 'every table' to these schemas")
    vacuum: bool = True
    analyze: bool = True
    reindex: bool = False


def _drop_leftover_indexes(ctx: JobContext, conn: db.Conn, schema: str, table: str) -> int:
    rows = conn.execute(
        "SELECT n.nspname, i.relname FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid"
        " JOIN pg_namespace n ON n.oid = i.relnamespace"
        " WHERE x.indrelid = %s::regclass AND NOT x.indisvalid AND i.relname ~ '_cc(new|old)[0-9]*$'",
        [db.qualified(schema, table).as_string(conn)],
    ).fetchall()
    for nsp, name in rows:
        conn.execute(sql.SQL("DROP INDEX CONCURRENTLY IF EXISTS {}").format(sql.Identifier(nsp, name)))
        ctx.log("dropped leftover invalid index", step="reindex", index=f"{nsp}.{name}")
    return len(rows)


def _size(conn: db.Conn, rel: str) -> int:
    row = conn.execute("SELECT pg_total_relation_size(%s::regclass)", [rel]).fetchone()
    return int(row[0]) if row and row[0] is not None else 0


@job("db-maintenance", params=DbMaintenanceParams)
def run(ctx: JobContext, p: DbMaintenanceParams) -> Counts:
    if not (p.vacuum or p.analyze or p.reindex):
        raise DataError("nothing to do: set at least one of vacuum, analyze, reindex")
    if p.vacuum and p.analyze:
        command = sql.SQL("VACUUM (ANALYZE) {}")
    elif p.vacuum:
        command = sql.SQL("VACUUM {}")
    elif p.analyze:
        command = sql.SQL("ANALYZE {}")
    else:
        command = None
    ctx.counts.update(tables=0, tables_vacuumed=0, tables_analyzed=0, tables_reindexed=0)
    with db.connect(ctx, p, autocommit=True) as conn:
        targets = resolve(conn, p.tables, p.schemas)
        ctx.counts["tables"] = len(targets)
        if ctx.dry_run:
            ctx.message = f"would maintain {len(targets)} tables: " + ", ".join(f"{s}.{t}" for s, t in targets)
            return ctx.counts
        bytes_before = bytes_after = 0
        for schema, table in targets:
            ctx.checkpoint()
            rel = db.qualified(schema, table)
            rel_text = rel.as_string(conn)
            size = _size(conn, rel_text)
            bytes_before += size
            if command is not None:
                with ctx.step("vacuum/analyze", table=rel_text):
                    conn.execute(command.format(rel))
                ctx.add("tables_vacuumed", int(p.vacuum))
                ctx.add("tables_analyzed", int(p.analyze))
            if p.reindex:
                ctx.add("invalid_indexes_dropped", _drop_leftover_indexes(ctx, conn, schema, table))
                with ctx.step("reindex", table=rel_text):
                    conn.execute(sql.SQL("REINDEX TABLE CONCURRENTLY {}").format(rel))
                ctx.add("tables_reindexed")
            bytes_after += _size(conn, rel_text)
    ctx.counts["bytes_before"] = bytes_before
    ctx.counts["bytes_after"] = bytes_after
    done = [w for w, on in (("vacuum", p.vacuum), ("analyze", p.analyze), ("reindex", p.reindex)) if on]
    ctx.message = f"{'+'.join(done)} on {len(targets)} tables; size {bytes_before} -> {bytes_after} bytes"
    return ctx.counts
