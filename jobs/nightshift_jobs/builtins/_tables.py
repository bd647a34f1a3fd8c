"""Resolving "listed tables or all of them" the same way for maintenance and backup."""

from __future__ import annotations

from nightshift_jobs.db import Conn
from nightshift_jobs.runtime import ConfigError


def split_name(name: str, default_schema: str | None) -> tuple[str | None, str]:
    """`schema.table` or `table`; a dot inside a name needs the schema form."""
    schema, dot, table = name.partition(".")
    return (schema, table) if dot else (default_schema, name)


def user_tables(conn: Conn, schemas: list[str] | None, kinds: str = "rp") -> list[tuple[str, str]]:
    """(schema, table) of ordinary/partitioned tables outside system schemas, sorted."""
    rows = conn.execute(
        "SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE c.relkind = ANY(%s) AND n.nspname NOT IN ('pg_catalog', 'information_schema')"
        " AND n.nspname NOT LIKE 'pg\\_%%' AND (%s::text[] IS NULL OR n.nspname = ANY(%s::text[]))"
        " ORDER BY 1, 2",
        [list(kinds), schemas, schemas],
    ).fetchall()
    return [(str(r[0]), str(r[1])) for r in rows]


def resolve(conn: Conn, names: list[str] | None, schemas: list[str] | None) -> list[tuple[str, str]]:
    """Listed tables (each must exist: a typo is a config error, exit 78) or all user tables."""
    if not names:
        return user_tables(conn, schemas)
    out: list[tuple[str, str]] = []
    for name in names:
        schema, table = split_name(name, None)
        row = conn.execute(
            "SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE c.relname = %s AND c.relkind IN ('r', 'p', 'm')"
            " AND (CASE WHEN %s::text IS NULL THEN pg_table_is_visible(c.oid) ELSE n.nspname = %s END)",
            [table, schema, schema],
        ).fetchone()
        if row is None:
            raise ConfigError(f"table {name!r} does not exist")
        out.append((str(row[0]), str(row[1])))
    return out
