"""A throwaway real Prometheus server for tests: generated config, temp storage, loopback port.

Tests run Debian's Prometheus (`apt-get install prometheus`, binary /usr/bin/prometheus). Each
instance listens on its own free loopback port with its own TSDB in a temp dir, so it never touches
a Prometheus the distribution may have started as a service (port 9090). It scrapes the given
targets every second with job label "nightshift" and `honor_labels: true` (as the chart's
ServiceMonitor does), optionally loads rule files, and dies with the test process (PDEATHSIG).

    with PrometheusServer([f"127.0.0.1:{metrics_port}"], rule_files=[ALERTS]) as prom:
        prom.wait_for_target_up()
        prom.query("max(nightshift_is_leader)")
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

import yaml

from tests.support.procs import die_with_parent, free_port, wait_http_ok

T = TypeVar("T")


class PrometheusNotInstalled(RuntimeError):
    pass


def find_binary() -> Path:
    """`prometheus` on PATH, else Debian's /usr/bin/prometheus."""
    found = shutil.which("prometheus") or ("/usr/bin/prometheus" if Path("/usr/bin/prometheus").exists() else None)
    if not found:
        raise PrometheusNotInstalled("no prometheus binary on PATH; install it with `apt-get install prometheus`")
    return Path(found)


class PrometheusServer:
    """`with PrometheusServer(["127.0.0.1:9100"]) as prom: prom.query("up")`."""

    def __init__(
        self,
        targets: Sequence[str],
        *,
        job: str = "nightshift",
        scrape_interval: str = "1s",
        rule_files: Sequence[Path] = (),
        binary: Path | None = None,
        startup_timeout: float = 60,
    ) -> None:
        self.binary = binary or find_binary()
        self.targets = list(targets)
        self.job = job
        self.scrape_interval = scrape_interval
        self.rule_files = [Path(p).resolve() for p in rule_files]
        self.startup_timeout = startup_timeout
        self.host = "127.0.0.1"
        self.port = 0
        self.tmpdir: Path | None = None
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        assert self.port, "server not started"
        return f"http://{self.host}:{self.port}"

    @property
    def log_file(self) -> Path:
        assert self.tmpdir is not None, "server not started"
        return self.tmpdir / "prometheus.log"

    def config(self) -> dict[str, Any]:
        return {
            "global": {"scrape_interval": self.scrape_interval, "evaluation_interval": self.scrape_interval},
            "rule_files": [str(p) for p in self.rule_files],
            "scrape_configs": [
                {
                    "job_name": self.job,
                    "scrape_interval": self.scrape_interval,
                    "scrape_timeout": self.scrape_interval,
                    "honor_labels": True,
                    "metrics_path": "/metrics",
                    "static_configs": [{"targets": self.targets}],
                }
            ],
        }

    # -- lifecycle -------------------------------------------------------------------------------

    def start(self) -> None:
        self.tmpdir = Path(tempfile.mkdtemp(prefix="nightshift-prometheus-"))
        config = self.tmpdir / "prometheus.yml"
        config.write_text(yaml.safe_dump(self.config(), sort_keys=False))
        for attempt in range(3):  # the free port may be taken between probing and binding
            self.port = free_port()
            log = open(self.log_file, "ab")
            self.proc = subprocess.Popen(
                [
                    str(self.binary),
                    f"--config.file={config}",
                    f"--storage.tsdb.path={self.tmpdir / 'data'}",
                    f"--web.listen-address={self.host}:{self.port}",
                    "--storage.tsdb.retention.time=1d",
                    "--log.level=warn",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=self.tmpdir,
                preexec_fn=die_with_parent,
            )
            log.close()
            try:
                self._wait_ready()
                return
            except (RuntimeError, TimeoutError):
                if attempt == 2 or "address already in use" not in self.log_file.read_text():
                    self.stop()
                    raise
                self._stop_process()

    def _wait_ready(self) -> None:
        def alive() -> None:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"prometheus exited with {self.proc.returncode}: {self.log_file.read_text()[-3000:]}"
                )

        wait_http_ok(
            f"{self.url}/-/ready",
            alive=alive,
            timeout=self.startup_timeout,
            what="prometheus",
            log=self.log_file,
            interval=0.2,
        )

    def _stop_process(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def stop(self) -> None:
        self._stop_process()
        if self.tmpdir is not None:
            shutil.rmtree(self.tmpdir, ignore_errors=True)
            self.tmpdir = None

    def __enter__(self) -> PrometheusServer:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # -- HTTP API --------------------------------------------------------------------------------

    def api(self, path: str, **params: str | Sequence[str]) -> dict[str, Any]:
        """GET /api/v1/<path>; the decoded JSON body, also for 4xx/5xx answers (status "error")."""
        query = urllib.parse.urlencode(params, doseq=True)
        url = f"{self.url}/api/v1/{path}" + (f"?{query}" if query else "")
        try:
            with urllib.request.urlopen(url, timeout=30) as r:
                body = r.read()
        except urllib.error.HTTPError as e:
            body = e.read()
        data: dict[str, Any] = json.loads(body)
        return data

    def query(self, expr: str, time_: float | None = None) -> dict[str, Any]:
        """An instant query; the whole answer ({"status": ..., "data": ..., "error": ...})."""
        params: dict[str, str] = {"query": expr}
        if time_ is not None:
            params["time"] = f"{time_:.3f}"
        return self.api("query", **params)

    def vector(self, expr: str) -> list[tuple[dict[str, str], float]]:
        """An instant query that must succeed: [(labels, value), ...] of its vector (or scalar) result."""
        answer = self.query(expr)
        if answer.get("status") != "success":
            raise AssertionError(f"query {expr!r} failed: {answer.get('errorType')}: {answer.get('error')}")
        data = answer["data"]
        if data["resultType"] in ("scalar", "string"):
            return [({}, float(data["result"][1]))]
        if data["resultType"] == "matrix":
            return [(s["metric"], float(s["values"][-1][1])) for s in data["result"]]
        return [(s["metric"], float(s["value"][1])) for s in data["result"]]

    def active_targets(self) -> list[dict[str, Any]]:
        answer = self.api("targets", state="active")
        targets: list[dict[str, Any]] = answer.get("data", {}).get("activeTargets", [])
        return targets

    def wait_until(
        self, predicate: Callable[[], T | None], timeout: float = 60, interval: float = 0.5, what: str = "condition"
    ) -> T:
        deadline = time.monotonic() + timeout
        last: T | None = None
        while time.monotonic() < deadline:
            if self.proc is None or self.proc.poll() is not None:
                raise RuntimeError(f"prometheus is not running; see {self.tmpdir}")
            last = predicate()
            if last:
                return last
            time.sleep(interval)
        raise AssertionError(f"timed out after {timeout}s waiting for {what}; last value: {last!r}")

    def wait_for_target_up(self, timeout: float = 60) -> list[dict[str, Any]]:
        """Every configured target scraped successfully at least once."""

        def all_up() -> list[dict[str, Any]] | None:
            targets = [t for t in self.active_targets() if t.get("labels", {}).get("job") == self.job]
            ok = len(targets) == len(self.targets) and all(t.get("health") == "up" for t in targets)
            return targets if ok else None

        return self.wait_until(all_up, timeout=timeout, what=f"targets {self.targets} up")
