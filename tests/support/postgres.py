"""A throwaway real PostgreSQL server for tests: initdb into a temp dir, start, stop, delete.

Tests run against Debian's PostgreSQL (no mocks). PostgreSQL refuses to run as root, so when the
tests run as root the server runs as the `postgres` OS user via runuser; it listens on a free
loopback port with trust auth and keeps its unix socket inside its own temp dir.
"""

from __future__ import annotations

import glob
import os
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType
from urllib.parse import quote

from tests.support.procs import free_port


class PostgresNotInstalled(RuntimeError):
    pass


def find_bin_dir() -> Path:
    """Newest /usr/lib/postgresql/<major>/bin holding initdb and pg_ctl."""
    dirs = [Path(p).parent for p in glob.glob("/usr/lib/postgresql/*/bin/pg_ctl")]
    dirs = [d for d in dirs if (d / "initdb").exists() and (d / "postgres").exists()]
    if not dirs:
        raise PostgresNotInstalled(
            "no PostgreSQL server binaries under /usr/lib/postgresql/*/bin; "
            "install them with `apt-get install postgresql`"
        )
    return max(dirs, key=lambda d: int(re.sub(r"\D", "", d.parent.name) or 0))


class PostgresServer:
    """`with PostgresServer() as pg: psycopg.connect(pg.dsn)`; `pg.create_database("x")` gives a DSN."""

    def __init__(self, *, bin_dir: Path | None = None, os_user: str = "postgres") -> None:
        self.bin_dir = bin_dir or find_bin_dir()
        self.os_user = os_user
        self.superuser = "postgres"
        self.host = "127.0.0.1"
        self.port = 0
        self.tmpdir: Path | None = None
        self._started = False

    @property
    def dsn(self) -> str:
        """DSN of the `postgres` maintenance database."""
        return self.dsn_for("postgres")

    def dsn_for(self, dbname: str) -> str:
        return f"postgresql://{self.superuser}@{self.host}:{self.port}/{quote(dbname, safe='')}"

    @property
    def data_dir(self) -> Path:
        assert self.tmpdir is not None, "server not started"
        return self.tmpdir / "data"

    @property
    def log_file(self) -> Path:
        assert self.tmpdir is not None, "server not started"
        return self.tmpdir / "postgres.log"

    def _cmd(self, *args: str) -> list[str]:
        if os.geteuid() == 0:
            return ["runuser", "-u", self.os_user, "--", *args]
        return list(args)

    def _run(self, *args: str) -> None:
        proc = subprocess.run(self._cmd(*args), capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            log = self.log_file.read_text(errors="replace")[-2000:] if self.log_file.exists() else ""
            raise RuntimeError(f"{' '.join(args)} failed ({proc.returncode}): {proc.stderr.strip()}\n{log}")

    def start(self) -> PostgresServer:
        """initdb + pg_ctl start on a free port; retries on a port race."""
        if self._started:
            return self
        self.tmpdir = Path(tempfile.mkdtemp(prefix="nightshift-pg-"))
        if os.geteuid() == 0:
            shutil.chown(self.tmpdir, user=self.os_user)
        self._run(
            str(self.bin_dir / "initdb"),
            "-D", str(self.data_dir),
            "-U", self.superuser,
            "--auth=trust",
            "--encoding=UTF8",
            "--no-locale",
            "--no-sync",
        )  # fmt: skip
        last_error: Exception | None = None
        for _ in range(3):
            self.port = free_port()
            options = (
                f"-p {self.port} -k {self.tmpdir} -c listen_addresses={self.host}"
                " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
                " -c max_connections=100"
            )
            try:
                self._run(
                    str(self.bin_dir / "pg_ctl"),
                    "-D", str(self.data_dir),
                    "-l", str(self.log_file),
                    "-o", options,
                    "-w", "-t", "60",
                    "start",
                )  # fmt: skip
            except RuntimeError as exc:
                last_error = exc
                continue
            self._started = True
            return self
        self.stop()
        raise RuntimeError(f"PostgreSQL did not start: {last_error}")

    def pause(self) -> None:
        """Stop the server but keep its data and port, to simulate an outage."""
        self._run(str(self.bin_dir / "pg_ctl"), "-D", str(self.data_dir), "-m", "fast", "-w", "stop")

    def resume(self) -> None:
        options = f"-p {self.port} -k {self.tmpdir} -c listen_addresses={self.host} -c fsync=off"
        self._run(
            str(self.bin_dir / "pg_ctl"),
            "-D",
            str(self.data_dir),
            "-l",
            str(self.log_file),
            "-o",
            options,
            "-w",
            "-t",
            "60",
            "start",
        )

    def allow(self, cidr: str) -> None:
        """Trust connections from `cidr` too (e.g. a pod network reaching a server on the node's
        address); the server reloads its pg_hba.conf."""
        with (self.data_dir / "pg_hba.conf").open("a") as f:
            f.write(f"host all all {cidr} trust\n")
        self._run(str(self.bin_dir / "pg_ctl"), "-D", str(self.data_dir), "reload")

    def create_database(self, name: str) -> str:
        """CREATE DATABASE name (dropping an old one of that name) and return its DSN."""
        import psycopg
        from psycopg import sql

        with psycopg.connect(self.dsn, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return self.dsn_for(name)

    def stop(self) -> None:
        """Fast shutdown and remove the data directory; safe to call twice."""
        if self._started and self.tmpdir is not None:
            try:
                self._run(str(self.bin_dir / "pg_ctl"), "-D", str(self.data_dir), "-m", "immediate", "-w", "stop")
            except RuntimeError:
                time.sleep(0.5)
        self._started = False
        if self.tmpdir is not None:
            shutil.rmtree(self.tmpdir, ignore_errors=True)
            self.tmpdir = None

    def __enter__(self) -> PostgresServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
