"""Shared fixtures: one real control plane per test session, a fresh namespace per test."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from nightshift.testing.cluster import ControlPlane, issue_serving_cert
from nightshift.testing.postgres import PostgresServer
from nightshift.testing.procs import free_port


class Kubectl:
    """kubectl against the test cluster: the same tool users drive nightshift with."""

    def __init__(self, cp: ControlPlane) -> None:
        self.cp = cp

    def __call__(self, *args: str, input: str | None = None, check: bool = True) -> str:
        return self.cp.kubectl(*args, input=input, check=check)

    def json(self, *args: str) -> Any:
        return json.loads(self.cp.kubectl(*args, "-o", "json"))

    def apply(self, obj: dict[str, Any] | str, *extra: str) -> str:
        text = obj if isinstance(obj, str) else json.dumps(obj)
        return self.cp.kubectl("apply", "-f", "-", *extra, input=text)

    def run(self, *args: str, input: str | None = None) -> subprocess.CompletedProcess[str]:
        assert self.cp.bin_dir is not None
        return subprocess.run(
            [str(self.cp.bin_dir / "kubectl"), f"--kubeconfig={self.cp.kubeconfig}", *args],
            input=input,
            capture_output=True,
            text=True,
            check=False,
        )


def wait_for(predicate: Callable[[], Any], timeout: float = 60, interval: float = 0.5, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}; last value: {last!r}")


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    bin_dir = os.environ.get("NIGHTSHIFT_BIN_DIR")
    cp = ControlPlane(tmp_path_factory.mktemp("cluster"), bin_dir=Path(bin_dir) if bin_dir else None, quiet=True)
    with cp:
        yield cp


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """One real PostgreSQL for the session (Debian's package, started by the test setup)."""
    with PostgresServer() as server:
        yield server


@pytest.fixture(scope="session")
def kubectl(cluster: ControlPlane) -> Kubectl:
    return Kubectl(cluster)


@pytest.fixture
def namespace(kubectl: Kubectl) -> Iterator[str]:
    name = f"t-{uuid.uuid4().hex[:8]}"
    kubectl("create", "namespace", name)
    yield name
    kubectl("delete", "namespace", name, "--wait=false", check=False)


REPO = Path(__file__).resolve().parents[1]


class Operator:
    """The operator as its own process (`kopf run`), so tests can kill and restart it."""

    def __init__(self, cluster: ControlPlane, workdir: Path) -> None:

        self.cluster = cluster
        self.workdir = workdir
        self.metrics_port = free_port()
        self.health_port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self.history_dsn = ""
        self.webhook_port = free_port()
        self.webhook_cert, self.webhook_key = issue_serving_cert(cluster.workdir / "pki", workdir / "webhook")

    @property
    def log(self) -> Path:
        return self.workdir / f"operator-{self.starts}.log"

    def start(self, **env: str) -> None:
        self.starts += 1
        environ = {
            **os.environ,
            "KUBECONFIG": str(self.cluster.kubeconfig),
            "NIGHTSHIFT_JOBS_IMAGE": "nightshift:test",
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
            **env,
        }
        out = open(self.log, "wb")
        self.proc = subprocess.Popen(
            [str(Path(sys.executable).parent / "nightshift-operator")],
            env=environ,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=REPO,
        )
        out.close()
        import urllib.request

        def healthy() -> bool:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"operator exited: {self.log.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.health_port}/healthz", timeout=2) as r:
                    return r.status == 200
            except OSError:
                return False

        wait_for(healthy, timeout=60, what="operator liveness")

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
        import urllib.request

        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5) as r:
            return r.read().decode()


def install_crds(kubectl: Kubectl) -> None:
    kubectl("apply", "--server-side", "--force-conflicts", "-f", str(REPO / "crds"))
    for name in ("backgroundjobs", "backgroundjobqueues"):
        kubectl("wait", "--for=condition=Established", f"crd/{name}.nightshift.dev", "--timeout=30s")
    for i, prio in enumerate(("low", "medium", "high", "critical")):
        kubectl.apply(
            {
                "apiVersion": "scheduling.k8s.io/v1",
                "kind": "PriorityClass",
                "metadata": {"name": f"nightshift-{prio}"},
                "value": 1000 * (i + 1),
            }
        )


@pytest.fixture(scope="session")
def operator(
    cluster: ControlPlane, kubectl: Kubectl, postgres: PostgresServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Operator]:
    install_crds(kubectl)
    op = Operator(cluster, tmp_path_factory.mktemp("operator"))
    op.history_dsn = postgres.create_database("nightshift_history")
    op.start()
    yield op
    op.stop()


@pytest.fixture
def running_operator(operator: Operator) -> Operator:
    """The session's operator, started again if a test stopped it."""
    if operator.proc is None or operator.proc.poll() is not None:
        operator.start()
    return operator


def bgj(name: str, namespace: str, spec: dict[str, Any], **metadata: Any) -> dict[str, Any]:
    return {
        "apiVersion": "nightshift.dev/v1alpha1",
        "kind": "BackgroundJob",
        "metadata": {"name": name, "namespace": namespace, **metadata},
        "spec": spec,
    }


def script_job(code: str) -> dict[str, Any]:
    """A custom job whose command runs Python code on the local node."""
    return {"image": "nightshift:test", "command": ["python", "-c", code]}


def condition_of(obj: dict[str, Any], type_: str) -> dict[str, Any] | None:
    return next((c for c in obj.get("status", {}).get("conditions", []) if c["type"] == type_), None)
