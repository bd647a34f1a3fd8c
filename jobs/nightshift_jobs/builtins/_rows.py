"""Shared pieces of the row-moving jobs (ttl-cleanup, archive): age filter and batch selection."""

from __future__ import annotations

from datetime import datetime, timedelta

from psycopg import sql
from pydantic import Field

from nightshift_jobs.db import Conn, qualified
from nightshift_jobs.params import DbParams, Duration, Identifier


class AgedRowsParams(DbParams):
    """Which rows are "old": `timestampColumn < now() - olderThan`, optionally narrowed by `where`."""

    table: Identifier
    schema_: Identifier | None = Field(default=None, alias="schema")
    timestamp_column: Identifier
    older_than: Duration
    batch_size: int = Field(default=1000, ge=1, le=100_000)
    where: str | None = Field(
        default=None, description="extra SQL condition, trusted like the spec itself", min_length=1
    )


def cutoff(conn: Conn, older_than: timedelta) -> datetime:
    """Fix the cutoff once per run, from the database clock, so every batch uses the same boundary."""
    row = conn.execute("SELECT now() - %s::interval", [older_than]).fetchone()
    conn.commit()
    assert row is not None
    value = row[0]
    assert isinstance(value, datetime)
    return value


def condition(p: AgedRowsParams) -> sql.Composable:
    """`ts < %(cutoff)s [AND (where)]` with the column quoted."""
    cond: sql.Composable = sql.SQL("{} < %(cutoff)s").format(sql.Identifier(p.timestamp_column))
    if p.where:
        # `%` would be read as a placeholder: the statement is sent with parameters
        cond = sql.SQL("{} AND ({})").format(cond, sql.SQL(p.where.replace("%", "%%")))
    return cond


def batch_ctids(p: AgedRowsParams) -> sql.Composable:
    """Up to batchSize old rows, locked, skipping rows other sessions hold (no waiting on the app).

    `ctid = ANY(ARRAY(...))` plans as a TID scan, so each batch touches only its own rows.
    """
    return sql.SQL(
        "ctid = ANY(ARRAY(SELECT ctid FROM {rel} WHERE {cond} LIMIT %(limit)s FOR UPDATE SKIP LOCKED))"
    ).format(rel=qualified(p.schema_, p.table), cond=condition(p))
