"""backup: dump, checksum, verify-by-restore, prune; then restore it ourselves and compare."""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path

import psycopg
import pytest
from _jobtest import RunJob
from tests.support.postgres import PostgresServer

pytestmark = pytest.mark.postgres


def counts(dsn: str) -> dict[str, int]:
    out: dict[str, int] = {}
    with psycopg.connect(dsn) as conn:
        for table in ("public.profiles", "public.chat_conversations", "ai.study_chat_memory"):
            row = conn.execute(f"SELECT count(*) FROM {table}").fetchone()
            out[table] = int(row[0]) if row else -1
    return out


def seed(dsn: str) -> None:
    with psycopg.connect(dsn) as conn:
        conn.execute("CREATE TABLE profiles (id serial PRIMARY KEY, name text)")
        conn.execute("INSERT INTO profiles (name) SELECT 'student ' || g FROM generate_series(1, 1500) g")
        conn.execute("CREATE TABLE chat_conversations (id bigint PRIMARY KEY, profile int REFERENCES profiles)")
        conn.execute("INSERT INTO chat_conversations SELECT g, 1 + g % 1500 FROM generate_series(1, 4000) g")
        conn.execute("CREATE SCHEMA ai")
        conn.execute("CREATE TABLE ai.study_chat_memory (id bigint, memory jsonb)")
        conn.execute(
            "INSERT INTO ai.study_chat_memory SELECT g, jsonb_build_object('n', g) FROM generate_series(1, 2500) g"
        )


def test_backup_verify_restore_and_prune(run_job: RunJob, dsn: str, postgres: PostgresServer, tmp_path: Path) -> None:
    seed(dsn)
    root = tmp_path / "backups"
    root.mkdir()
    prefix = dsn.rsplit("/", 1)[1]
    (root / f"{prefix}-20200101T000000Z").mkdir()  # an expired backup
    (root / f".partial-{prefix}-20200102T000000Z").mkdir()  # a crashed run's leftovers
    (root / "unrelated").mkdir()

    run = run_job("backup", {"dsn": dsn, "directory": str(root), "keepDays": 7, "binDir": str(postgres.bin_dir)})
    assert run.code == 0, run.stderr
    assert run.counts["tables"] == 3 and run.counts["rows"] == 1500 + 4000 + 2500
    assert run.counts["verified"] == 1 and run.counts["backups_pruned"] == 1
    backups = sorted(p.name for p in root.iterdir())
    assert len(backups) == 2 and "unrelated" in backups  # expired and partial are gone
    backup = root / next(b for b in backups if b.startswith(prefix))
    dump = backup / "dump.pgdump"
    digest, name = (backup / "dump.pgdump.sha256").read_text().split()
    assert name == "dump.pgdump" and digest == hashlib.sha256(dump.read_bytes()).hexdigest()
    with psycopg.connect(postgres.dsn) as conn:  # the scratch database was dropped
        assert conn.execute("SELECT count(*) FROM pg_database WHERE datname LIKE 'nightshift_verify_%'").fetchone() == (
            0,
        )

    restored = postgres.create_database("restored_copy")
    subprocess.run([str(postgres.bin_dir / "pg_restore"), "--no-owner", f"--dbname={restored}", str(dump)], check=True)
    assert (
        counts(restored)
        == counts(dsn)
        == {
            "public.profiles": 1500,
            "public.chat_conversations": 4000,
            "ai.study_chat_memory": 2500,
        }
    )

    again = run_job("backup", {"dsn": dsn, "directory": str(root), "keepDays": 7})
    assert again.code == 0 and again.counts["backups_pruned"] == 0
    assert len([p for p in root.iterdir() if p.name.startswith(prefix)]) == 2


def test_backup_listed_tables_only(run_job: RunJob, dsn: str, tmp_path: Path) -> None:
    seed(dsn)
    params = {"dsn": dsn, "directory": str(tmp_path), "tables": ["ai.study_chat_memory", "profiles"]}
    run = run_job("backup", params)
    assert run.code == 0, run.stderr
    assert run.counts["tables"] == 2 and run.counts["rows"] == 2500 + 1500
    missing = run_job("backup", {**params, "tables": ["nope"]})
    assert missing.code == 78
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".partial-") and any(p.iterdir())]
