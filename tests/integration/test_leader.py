"""Leader election on the real control plane: one replica acts, a standby takes over."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import Kubectl, Operator, bgj, script_job, wait_for
from tests.support.cluster import ControlPlane
from tests.support.operatorproc import OperatorProcess

pytestmark = pytest.mark.cluster


def gauge(op: OperatorProcess, name: str, **labels: str) -> float:
    for family in text_string_to_metric_families(op.metrics()):
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return float(s.value)
    return 0.0


def holder(kubectl: Kubectl, ns: str) -> str | None:
    result = kubectl.run("get", "lease", "nightshift-test", "-n", ns, "-o", "jsonpath={.spec.holderIdentity}")
    return result.stdout.strip() or None if result.returncode == 0 else None


def succeeded_runs(kubectl: Kubectl, ns: str) -> int:
    items = kubectl.json("get", "jobs", "-n", ns)["items"]
    return sum(1 for j in items if any(c["type"] == "Complete" for c in j.get("status", {}).get("conditions") or []))


def test_one_leader_acts_and_a_standby_takes_over(
    kubectl: Kubectl, cluster: ControlPlane, operator: Operator, namespace: str, tmp_path: Path
) -> None:
    operator.stop()  # the session's operator does not elect; later tests start it again
    env = {
        "NIGHTSHIFT_LEADER_ELECTION_LEASE": "nightshift-test",
        "NIGHTSHIFT_POD_NAMESPACE": namespace,
        "NIGHTSHIFT_LEASE_DURATION_SECONDS": "4",
    }
    a = OperatorProcess(cluster, tmp_path / "a", webhook=False)
    b = OperatorProcess(cluster, tmp_path / "b", webhook=False)
    reconciles = "nightshift_reconcile_duration_seconds_count"
    try:
        a.start(NIGHTSHIFT_POD_NAME="op-a", **env)
        wait_for(lambda: holder(kubectl, namespace) == "op-a", timeout=20, what="op-a leads")
        b.start(NIGHTSHIFT_POD_NAME="op-b", **env)
        wait_for(lambda: gauge(a, "nightshift_is_leader") == 1, what="op-a reports leading")
        assert gauge(b, "nightshift_is_leader") == 0

        spec: dict[str, Any] = {"job": script_job("print('ok')")}
        kubectl.apply(bgj("report", namespace, spec, annotations={"nightshift.dev/run-now": "1"}))
        wait_for(lambda: succeeded_runs(kubectl, namespace) == 1, timeout=60, what="a run under op-a")
        assert gauge(b, reconciles, kind="backgroundjob") == 0  # the standby watched but did not act
        assert gauge(b, reconciles, kind="gate") == 0

        a.stop(kill=True)  # no release: op-b must wait for the lease to expire by its own clock
        wait_for(lambda: holder(kubectl, namespace) == "op-b", timeout=30, what="op-b takes over")
        wait_for(lambda: gauge(b, "nightshift_is_leader") == 1, what="op-b reports leading")
        kubectl("annotate", "--overwrite", "bgj", "report", "-n", namespace, "nightshift.dev/run-now=2")
        wait_for(lambda: succeeded_runs(kubectl, namespace) == 2, timeout=60, what="a run under op-b")

        a.start(NIGHTSHIFT_POD_NAME="op-a", **env)
        b.stop()  # a clean stop releases the lease: op-a takes it at its next retry, not after expiry
        wait_for(lambda: holder(kubectl, namespace) == "op-a", timeout=5, what="op-a takes the released lease")
        kubectl("annotate", "--overwrite", "bgj", "report", "-n", namespace, "nightshift.dev/run-now=3")
        wait_for(lambda: succeeded_runs(kubectl, namespace) == 3, timeout=60, what="a run under op-a again")
        assert len(kubectl.json("get", "jobs", "-n", namespace)["items"]) == 3  # nothing doubled

        patch = '{"spec": {"holderIdentity": "intruder"}}'
        kubectl("patch", "lease", "nightshift-test", "-n", namespace, "--type=merge", "-p", patch)
        proc = a.proc
        assert proc is not None
        wait_for(lambda: proc.poll() is not None, timeout=20, what="op-a stops once its lease is taken")
        assert "lease taken by intruder" in a.log.read_text()
    finally:
        a.stop()
        b.stop()
