"""The operator as its own process against the test control plane (test and demo tooling).

Tests kill and restart it; `make run` and `make bench` run it the same way, with the real
entrypoint (`nightshift-operator`), the validating webhook on a cert signed by the cluster's CA,
and metrics and health on loopback ports.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
import urllib.request
from pathlib import Path

from tests.support.cluster import REPO_ROOT, ControlPlane, issue_serving_cert
from tests.support.procs import die_with_parent, free_port, wait_http_ok


def install_crds(cp: ControlPlane) -> None:
    """The generated CRDs and the four PriorityClasses job pods name."""
    cp.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(REPO_ROOT / "crds"))
    for name in ("backgroundjobs", "backgroundjobqueues"):
        cp.kubectl("wait", "--for=condition=Established", f"crd/{name}.nightshift.dev", "--timeout=60s")
    for i, prio in enumerate(("low", "medium", "high", "critical")):
        body = {
            "apiVersion": "scheduling.k8s.io/v1",
            "kind": "PriorityClass",
            "metadata": {"name": f"nightshift-{prio}"},
            "value": 1000 * (i + 1),
        }
        cp.kubectl("apply", "-f", "-", input=json.dumps(body))


class OperatorProcess:
    def __init__(
        self,
        cluster: ControlPlane,
        workdir: Path,
        *,
        history_dsn: str = "",
        jobs_image: str = "nightshift:test",
        webhook: bool = True,
        env: dict[str, str] | None = None,
    ) -> None:
        self.cluster = cluster
        self.env = dict(env or {})  # kept across restarts, e.g. the chart's ServiceAccount identity
        self.webhook = webhook  # one webhook configuration per cluster: a second operator serves none
        self.workdir = workdir
        self.history_dsn = history_dsn
        self.jobs_image = jobs_image
        self.metrics_port = free_port()
        self.health_port = free_port()
        self.webhook_port = free_port()
        self.webhook_cert, self.webhook_key = issue_serving_cert(cluster.workdir / "pki", workdir / "webhook")
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self.started_at: dt.datetime | None = None  # this process's start: its counters begin here

    @property
    def log(self) -> Path:
        return self.workdir / f"operator-{self.starts}.log"

    def environment(self, **extra: str) -> dict[str, str]:
        env = {
            **os.environ,
            "KUBECONFIG": str(self.cluster.kubeconfig),
            "NIGHTSHIFT_JOBS_IMAGE": self.jobs_image,
            "NIGHTSHIFT_METRICS_PORT": str(self.metrics_port),
            "NIGHTSHIFT_HEALTH_PORT": str(self.health_port),
            "NIGHTSHIFT_LISTEN_ADDRESS": "127.0.0.1",
            "NIGHTSHIFT_GATE_INTERVAL_SECONDS": "1",
            "NIGHTSHIFT_LOG_JSON": "false",
            "NIGHTSHIFT_HISTORY_DSN": self.history_dsn,
            "NIGHTSHIFT_WEBHOOK_PORT": str(self.webhook_port),
            "NIGHTSHIFT_WEBHOOK_HOST": "127.0.0.1",
            "NIGHTSHIFT_WEBHOOK_CERTFILE": str(self.webhook_cert),
            "NIGHTSHIFT_WEBHOOK_KEYFILE": str(self.webhook_key),
            "NIGHTSHIFT_WEBHOOK_CAFILE": str(self.cluster.workdir / "pki" / "ca.crt"),
            **self.env,
            **extra,
        }
        if not self.webhook:
            env = {k: v for k, v in env.items() if not k.startswith("NIGHTSHIFT_WEBHOOK_")}
        return env

    def start(self, timeout: float = 60, **env: str) -> None:
        """Start and wait until the operator is ready: its indexes are bound and every job had a pass.

        kopf's /healthz answers before either, so a test asserting that nothing happened after a
        restart would learn nothing from it.
        """
        self.starts += 1
        self.started_at = dt.datetime.now(dt.UTC)
        self.workdir.mkdir(parents=True, exist_ok=True)
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(
                [str(Path(sys.executable).parent / "nightshift-operator")],
                env=self.environment(**env),
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=REPO_ROOT,
                preexec_fn=die_with_parent,
            )
        wait_http_ok(
            f"http://127.0.0.1:{self.metrics_port}/readyz",
            alive=self._alive,
            timeout=timeout,
            what="operator readiness (indexes bound, every BackgroundJob passed once)",
            log=self.log,
        )

    def _alive(self) -> None:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise RuntimeError(f"operator exited ({self.proc.returncode}): {self.log.read_text()[-3000:]}")

    def stop(self, kill: bool = False) -> None:
        if self.proc and self.proc.poll() is None:
            if kill:
                self.proc.kill()
            else:
                self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def restart(self, kill: bool = False) -> None:
        self.stop(kill=kill)
        self.start()

    def metrics(self) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5) as r:
            text: str = r.read().decode()
            return text
