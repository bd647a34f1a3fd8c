"""PostgreSQL connections and error classification for the built-in jobs.

Every session gets a lock_timeout so a job never queues behind (or in front of) application traffic
for long: waiting too long is a temporary failure (exit 75) and the operator retries later.
"""

from __future__ import annotations

import os
from typing import Any

import psycopg
from psycopg import errors, sql

from nightshift_jobs.params import DbParams
from nightshift_jobs.runtime import ExitCode, JobContext

Conn = psycopg.Connection[tuple[Any, ...]]


def resolve_dsn(dsn: str | None) -> str:
    """Param `dsn`, else DATABASE_URL, else "" so libpq falls back to PGHOST/PGUSER/... variables."""
    return dsn or os.environ.get("DATABASE_URL") or ""


def connect(ctx: JobContext, p: DbParams, *, autocommit: bool = False, dbname: str | None = None) -> Conn:
    """Open a session with lock_timeout, UTC time zone and an application_name naming the job."""
    conninfo = resolve_dsn(p.dsn)
    if dbname is not None:
        conninfo = psycopg.conninfo.make_conninfo(conninfo, dbname=dbname)
    conn: Conn = psycopg.connect(
        conninfo,
        autocommit=autocommit,
        connect_timeout=max(1, int(p.connect_timeout.total_seconds())),
        application_name=f"nightshift/{ctx.job}"[:63],
    )
    lock_ms = int(p.lock_timeout.total_seconds() * 1000)
    conn.execute("SELECT set_config('lock_timeout', %s, false)", [f"{lock_ms}ms"])
    conn.execute("SET TIME ZONE 'UTC'")
    if not autocommit:
        conn.commit()
    return conn


def qualified(schema: str | None, name: str) -> sql.Composable:
    """A quoted, optionally schema-qualified relation name."""
    return sql.Identifier(schema, name) if schema else sql.Identifier(name)


def relation_exists(conn: Conn, schema: str | None, name: str) -> bool:
    """to_regclass on the quoted name: NULL instead of an error when the relation is missing."""
    text = qualified(schema, name).as_string(conn)
    row = conn.execute("SELECT to_regclass(%s) IS NOT NULL", [text]).fetchone()
    return bool(row and row[0])


def classify_error(exc: Exception) -> tuple[int, str]:
    """Exit code for a psycopg error: what a retry could fix (75) versus what it never will (65/78)."""
    text = f"{type(exc).__name__}: {str(exc).strip()}"
    sqlstate = getattr(exc, "sqlstate", None) or ""
    if isinstance(exc, errors.SyntaxError | errors.DataException | errors.IntegrityConstraintViolation):
        return ExitCode.DATA, text
    if sqlstate.startswith("42"):
        # class 42 besides plain syntax: undefined table/column, insufficient privilege...
        # the spec and the database disagree, which a retry will not fix
        return ExitCode.CONFIG, text
    if isinstance(exc, psycopg.ProgrammingError):
        # e.g. a statement whose placeholders do not match `args`
        return ExitCode.DATA, text
    if isinstance(exc, psycopg.OperationalError):
        # connection refused, lock/statement timeout, deadlock, serialization failure, admin shutdown
        return ExitCode.TEMPORARY, text
    return ExitCode.FAILURE, text
