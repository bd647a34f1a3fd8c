"""Shared fixtures: one real control plane per test session, a fresh namespace per test."""

from __future__ import annotations

import json
import os
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support import invariants, least_privilege
from tests.support.cluster import ControlPlane
from tests.support.operatorproc import OperatorProcess, install_crds
from tests.support.postgres import PostgresServer


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
    workdir = tmp_path_factory.mktemp("cluster")
    cp = ControlPlane(
        workdir,
        bin_dir=Path(bin_dir) if bin_dir else None,
        quiet=True,
        apiserver_args=least_privilege.audit_args(workdir / "audit"),  # the operator's requests, for R4
    )
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
def namespace(kubectl: Kubectl, request: pytest.FixtureRequest) -> Iterator[str]:
    name = f"t-{uuid.uuid4().hex[:8]}"
    kubectl("create", "namespace", name)
    if "running_operator" in request.fixturenames:
        # Every pod the operator makes must pass PodSecurity `restricted`, enforced by the real
        # admission plugin (tests that make plain pods of their own use the operator-less namespaces).
        kubectl("label", "namespace", name, "pod-security.kubernetes.io/enforce=restricted")
    yield name
    kubectl("delete", "namespace", name, "--wait=false", check=False)


REPO = Path(__file__).resolve().parents[1]


Operator = OperatorProcess  # the name the tests and the bench use


@pytest.fixture(scope="session")
def operator(
    cluster: ControlPlane, kubectl: Kubectl, postgres: PostgresServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Operator]:
    install_crds(cluster)
    # The chart's ServiceAccount and RBAC, as in a pod: a grant the chart lacks fails the test that needs it.
    identity = least_privilege.chart_identity(cluster, tmp_path_factory.mktemp("serviceaccount"))
    op = OperatorProcess(
        cluster,
        tmp_path_factory.mktemp("operator"),
        history_dsn=postgres.create_database("nightshift_history"),
        env=identity.env,
    )
    op.start()
    yield op
    op.stop()


@pytest.fixture
def running_operator(operator: Operator) -> Operator:
    """The session's operator, started again if a test stopped it."""
    if operator.proc is None or operator.proc.poll() is not None:
        operator.start()
    return operator


def accounted(operator: Operator, namespace: str, *, timeout: float = 30) -> invariants.Evidence:
    """The invariant checker (tests/support/invariants.py) on one test's namespace, history included;
    runs_total is checked for the jobs this operator process saw from their creation."""
    return invariants.assert_accounted(
        operator.cluster,
        namespace,
        history_dsn=operator.history_dsn or None,
        metrics=operator.metrics if operator.proc is not None else None,
        metrics_since=operator.started_at,
        timeout=timeout,
    )


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


RAN: set[str] = set()  # test modules that ran (on the xdist controller: every worker's reports arrive here)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Within a session (or an xdist worker), the least-privilege test reads the audit log last."""
    last = [i for i in items if "test_zz_least_privilege" in i.nodeid]
    items[:] = [i for i in items if i not in last] + last


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.when == "call":
        RAN.add(report.nodeid.split("::")[0].rsplit("/", 1)[-1])


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """R4 over the whole suite: every grant of the chart used by some worker's operator, or justified.

    Runs once, where every test's report arrived (the xdist controller, or the only process), after
    all workers are done, over every session's audit log under the base temporary directory."""
    if hasattr(session.config, "workerinput"):
        return  # an xdist worker: the controller judges the whole
    ran = RAN
    wanted = {p.name for d in ("integration", "observability") for p in (REPO / "tests" / d).glob("test_*.py")}
    if not wanted <= ran:
        return  # a part of the suite: grants unused by it say nothing
    base = session.config._tmp_path_factory.getbasetemp()  # type: ignore[attr-defined]
    logs = sorted(Path(base).glob("**/audit/audit.log"))
    seen: set[least_privilege.Grant] = set()
    for log in logs:
        seen |= least_privilege.used(log)[0]
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    unused = least_privilege.unused_grants(least_privilege.chart_rbac_from_template(), seen) if logs else None
    if unused is None or unused:
        why = "no audit log" if unused is None else sorted(unused)
        if reporter is not None:
            reporter.write_line(
                f"least privilege: granted by the chart, used by no request of the whole suite and not "
                f"justified with '# unexercised:' in rbac.yaml: {why}",
                red=True,
            )
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
    elif reporter is not None:
        reporter.write_line(f"least privilege: every grant of the chart used or justified ({len(seen)} used)")
