"""backup: pg_dump (custom format) to a directory, checksum, verify by restoring, prune old backups.

The dump and the row counts it is verified against come from one exported snapshot, so the
comparison is exact even while the application writes. A backup is written under `.partial-*` and
renamed into place only when complete (and verified), so a killed run never leaves something that
looks like a good backup; the next run removes stale partials.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import re
import secrets
import shutil
import subprocess
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql
from pydantic import Field

from nightshift_jobs import db
from nightshift_jobs.builtins._tables import resolve
from nightshift_jobs.params import DbParams, Identifier
from nightshift_jobs.registry import job
from nightshift_jobs.runtime import ConfigError, Counts, JobContext, JobError, Terminated

_STAMP = "%Y%m%dT%H%M%SZ"
_SCRATCH_PREFIX = "nightshift_verify_"
_DUMP = "dump.pgdump"


class BackupParams(DbParams):
    directory: str = Field(min_length=1, description="where backups go, e.g. a mounted volume")
    tables: list[str] | None = Field(default=None, description="default: the whole database")
    schemas: list[str] | None = None
    keep_days: int = Field(default=30, ge=1)
    verify: bool = True
    prefix: Identifier | None = Field(default=None, description="backup name prefix; default database name")
    bin_dir: str | None = Field(default=None, description="directory holding pg_dump and pg_restore")


def find_tool(name: str, bin_dir: str | None = None) -> str:
    """pg_dump/pg_restore: bin_dir, else the newest /usr/lib/postgresql/*/bin, else PATH."""
    candidates: list[str] = []
    if bin_dir:
        candidates.append(os.path.join(bin_dir, name))
    versions = sorted(
        glob.glob(f"/usr/lib/postgresql/*/bin/{name}"),
        key=lambda path: int(m.group(1)) if (m := re.search(r"/(\d+)/bin/", path)) else 0,
        reverse=True,
    )
    candidates.extend(versions)
    found = shutil.which(name)
    if found:
        candidates.append(found)
    for path in candidates:
        if os.access(path, os.X_OK):
            return path
    raise ConfigError(f"{name} not found (install postgresql-client or set binDir)")


def _run_tool(ctx: JobContext, args: list[str], step: str) -> None:
    """Run pg_dump/pg_restore; on SIGTERM stop it and exit 75 rather than outlive the grace period."""
    with ctx.step(step), subprocess.Popen(args, stderr=subprocess.PIPE, text=True) as proc:
        while True:
            try:
                proc.wait(timeout=0.5)
                break
            except subprocess.TimeoutExpired:
                if ctx.stop_requested:
                    proc.terminate()
                    proc.wait()
                    raise Terminated() from None
        err = proc.stderr.read() if proc.stderr else ""
        if proc.returncode != 0:
            raise JobError(f"{os.path.basename(args[0])} exited {proc.returncode}: {err.strip()[-1500:]}")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _count_rows(conn: db.Conn, tables: list[tuple[str, str]]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for schema, table in tables:
        row = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(schema, table))).fetchone()
        counts[f"{schema}.{table}"] = int(row[0]) if row else 0
    return counts


def _table_arg(schema: str, table: str) -> str:
    """pg_dump pattern with both parts double-quoted: exact match, no case folding, no wildcards."""
    return ".".join('"' + part.replace('"', '""') + '"' for part in (schema, table))


def _prune(ctx: JobContext, root: Path, prefix: str, keep: timedelta, current: str) -> int:
    """Delete finished backups older than keepDays (by the time in their name) and day-old partials."""
    now = datetime.now(UTC)
    pattern = re.compile(rf"^(\.partial-)?{re.escape(prefix)}-(\d{{8}}T\d{{6}}Z)(-\d+)?$")
    pruned = 0
    for entry in sorted(root.iterdir()):
        match = pattern.match(entry.name)
        if not match or entry.name == current or not entry.is_dir():
            continue
        taken = datetime.strptime(match.group(2), _STAMP).replace(tzinfo=UTC)
        limit = timedelta(days=1) if match.group(1) else keep
        if now - taken > limit:
            if not ctx.dry_run:
                shutil.rmtree(entry, ignore_errors=True)
            ctx.log("pruned old backup", step="prune", path=str(entry), dry_run=ctx.dry_run or None)
            pruned += int(not match.group(1))
    return pruned


def _verify(
    ctx: JobContext,
    p: BackupParams,
    admin: db.Conn,
    dump: Path,
    tables: list[tuple[str, str]],
    expected: dict[str, int],
) -> None:
    """Restore into a scratch database on the same server and compare row counts table by table."""
    _drop_stale_scratch(ctx, admin)
    scratch = f"{_SCRATCH_PREFIX}{int(time.time())}_{secrets.token_hex(4)}"
    admin.execute(sql.SQL("CREATE DATABASE {} TEMPLATE template0").format(sql.Identifier(scratch)))
    try:
        scratch_dsn = psycopg.conninfo.make_conninfo(db.resolve_dsn(p.dsn), dbname=scratch)
        if p.tables:  # a table-only dump does not carry CREATE SCHEMA
            with db.connect(ctx, p, autocommit=True, dbname=scratch) as conn:
                for schema in sorted({s for s, _ in tables}):
                    conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema)))
        restore = find_tool("pg_restore", p.bin_dir)
        _run_tool(ctx, [restore, "--no-owner", "--no-privileges", f"--dbname={scratch_dsn}", str(dump)], "restore")
        with db.connect(ctx, p, dbname=scratch) as conn:
            restored = _count_rows(conn, tables)
        diffs = [f"{t}: {n} != {restored.get(t)}" for t, n in expected.items() if restored.get(t) != n]
        if diffs:
            raise JobError("backup verification failed, row counts differ: " + "; ".join(diffs[:20]))
        ctx.log("backup verified", step="verify", tables=len(expected))
    finally:
        admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(scratch)))


def _drop_stale_scratch(ctx: JobContext, admin: db.Conn) -> None:
    """Scratch databases left by a killed verification are dropped once they are a day old."""
    rows = admin.execute("SELECT datname FROM pg_database WHERE datname LIKE %s", [_SCRATCH_PREFIX + "%"]).fetchall()
    for (name,) in rows:
        match = re.match(rf"^{_SCRATCH_PREFIX}(\d+)_[0-9a-f]+$", str(name))
        if match and time.time() - int(match.group(1)) > 86400:
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(str(name))))
            ctx.log("dropped stale scratch database", step="verify", database=str(name))


@job("backup", params=BackupParams)
def run(ctx: JobContext, p: BackupParams) -> Counts:
    root = Path(p.directory)
    pg_dump = find_tool("pg_dump", p.bin_dir)
    with db.connect(ctx, p, autocommit=True) as admin:
        row = admin.execute("SELECT current_database()").fetchone()
        dbname = str(row[0]) if row else "db"
        prefix = p.prefix or dbname
        name = f"{prefix}-{datetime.now(UTC).strftime(_STAMP)}"
        for n in range(1, 100):  # two runs within one second get distinct names
            if not (root / name).exists() and not (root / f".partial-{name}").exists():
                break
            name = f"{prefix}-{datetime.now(UTC).strftime(_STAMP)}-{n}"
        if ctx.dry_run:
            with db.connect(ctx, p) as conn:
                tables = resolve(conn, p.tables, p.schemas)
            pruned = _prune(ctx, root, prefix, timedelta(days=p.keep_days), name) if root.is_dir() else 0
            ctx.message = f"would back up {len(tables)} tables of {dbname} to {root / name}; prune {pruned}"
            return {"tables": len(tables), "backups_pruned": pruned}
        try:
            root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"backup directory {root} is not usable: {exc}") from None
        partial = root / f".partial-{name}"
        partial.mkdir()
        dump = partial / _DUMP
        with db.connect(ctx, p) as snap_conn:
            snap_conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
            snap_conn.read_only = True
            snap_row = snap_conn.execute("SELECT pg_export_snapshot()").fetchone()
            assert snap_row is not None
            tables = resolve(snap_conn, p.tables, p.schemas)
            expected = _count_rows(snap_conn, tables)
            args = [pg_dump, "--format=custom", f"--snapshot={snap_row[0]}", f"--file={dump}"]
            if db.resolve_dsn(p.dsn):
                args.append(f"--dbname={db.resolve_dsn(p.dsn)}")
            if p.tables:
                args.extend(f"--table={_table_arg(s, t)}" for s, t in tables)
            _run_tool(ctx, args, "dump")
            snap_conn.rollback()
        checksum = _sha256(dump)
        (partial / f"{_DUMP}.sha256").write_text(f"{checksum}  {_DUMP}\n")
        manifest: dict[str, Any] = {
            "database": dbname,
            "created": datetime.now(UTC).isoformat(),
            "runId": ctx.run.run_id,
            "format": "custom",
            "sha256": checksum,
            "bytes": dump.stat().st_size,
            "rowCounts": expected,
        }
        (partial / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
        ctx.checkpoint()
        if p.verify:
            _verify(ctx, p, admin, dump, tables, expected)
        final = root / name
        partial.rename(final)
        ctx.log("backup written", step="dump", path=str(final), bytes=manifest["bytes"], sha256=checksum)
        pruned = _prune(ctx, root, prefix, timedelta(days=p.keep_days), name)
    counts = {
        "tables": len(tables),
        "rows": sum(expected.values()),
        "bytes": int(manifest["bytes"]),
        "verified": int(p.verify),
        "backups_pruned": pruned,
    }
    ctx.message = f"backup {final} ({counts['bytes']} bytes, {counts['rows']} rows in {len(tables)} tables)" + (
        ", verified by restore" if p.verify else ""
    )
    return counts
