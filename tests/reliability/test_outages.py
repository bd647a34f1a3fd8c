"""R2, outages: the API server stopped for 30 s, etcd restarted, PostgreSQL down for 60 s, the
leader frozen past its lease while a standby takes over. The operator must recover by itself (the
same process, no restart by the test), lose no history row (or count the loss in
nightshift_history_dropped_total), and the invariant checker must pass.

Part of the test command (each waits out its outage: about three minutes in all). Pods go to the
KWOK node.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Kubectl, Operator, accounted, bgj, wait_for
from tests.reliability.churn import Churn, _job, _request, holder
from tests.support import invariants
from tests.support.operatorproc import OperatorProcess
from tests.support.postgres import PostgresServer

pytestmark = [pytest.mark.cluster, pytest.mark.postgres]


def _requests(kubectl: Kubectl, ns: str, job: str, prefix: str, n: int) -> list[str]:
    names = [f"{prefix}-{i}" for i in range(n)]
    items = [_request(ns, name, job) for name in names]
    kubectl.cp.kubectl("apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List", "items": items}))
    return names


def _ended(kubectl: Kubectl, ns: str, names: list[str]) -> bool:
    items = {r["metadata"]["name"]: r for r in kubectl.json("get", "backgroundjobruns", "-n", ns)["items"]}
    return all((items.get(n, {}).get("status") or {}).get("phase") == "Succeeded" for n in names)


def _scenario(kubectl: Kubectl, op: Operator, ns: str, outage: Any, prefix: str) -> None:
    """Runs before, during and after an outage; the operator process must be the same throughout."""
    kubectl.apply(bgj("steady", ns, {"concurrencyPolicy": "Allow", "job": _job()}))
    before = _requests(kubectl, ns, "steady", f"{prefix}-before", 3)
    wait_for(lambda: _ended(kubectl, ns, before), timeout=60, what="runs before the outage")
    pid = op.proc.pid if op.proc else None
    outage()
    after = _requests(kubectl, ns, "steady", f"{prefix}-after", 3)
    wait_for(lambda: _ended(kubectl, ns, after), timeout=180, interval=2, what="runs after the outage")
    assert op.proc is not None and op.proc.poll() is None and op.proc.pid == pid, "the operator had to be restarted"
    accounted(op, ns, timeout=60)


def test_api_server_stopped_for_30s(kubectl: Kubectl, running_operator: Operator, namespace: str) -> None:
    cp = kubectl.cp

    def outage() -> None:
        cp.kill("kube-apiserver")
        time.sleep(30)
        cp.start_again("kube-apiserver")
        cp._wait_ready(cp.workdir / "pki")

    _scenario(kubectl, running_operator, namespace, outage, "api")


def test_etcd_restarted(kubectl: Kubectl, running_operator: Operator, namespace: str) -> None:
    cp = kubectl.cp

    def outage() -> None:
        cp.kill("etcd")
        time.sleep(5)
        cp.start_again("etcd")
        cp._wait_ready(cp.workdir / "pki")

    _scenario(kubectl, running_operator, namespace, outage, "etcd")


def test_postgres_down_for_60s_loses_no_row(
    kubectl: Kubectl, running_operator: Operator, postgres: PostgresServer, namespace: str
) -> None:
    def outage() -> None:
        postgres.pause()
        t0 = time.monotonic()
        try:
            during = _requests(kubectl, namespace, "steady", "pg-during", 5)
            wait_for(lambda: _ended(kubectl, namespace, during), timeout=60, what="runs while PostgreSQL is down")
            time.sleep(max(0.0, 60 - (time.monotonic() - t0)))
        finally:
            postgres.resume()

    _scenario(kubectl, running_operator, namespace, outage, "pg")
    dropped = [
        line for line in running_operator.metrics().splitlines() if line.startswith("nightshift_history_dropped_total")
    ]
    assert all(float(line.split()[-1]) == 0 for line in dropped), dropped  # within the buffer's bound: nothing lost


def test_leader_frozen_past_its_lease_a_standby_takes_over_and_the_old_one_stands_down(
    kubectl: Kubectl, operator: Operator, namespace: str, tmp_path: Path
) -> None:
    operator.stop()  # the session's operator does not elect; later tests start it again
    c = Churn(lease_s=4)
    lease = (namespace, "nightshift-frozen")
    a = OperatorProcess(operator.cluster, tmp_path / "a", webhook=False, history_dsn=operator.history_dsn)
    b = OperatorProcess(operator.cluster, tmp_path / "b", webhook=False, history_dsn=operator.history_dsn)
    try:
        a.start(60, **c.replica_env("op-a", lease))
        wait_for(lambda: holder(kubectl.cp, lease) == "op-a", timeout=30, what="op-a leads")
        b.start(60, **c.replica_env("op-b", lease))
        kubectl.apply(bgj("steady", namespace, {"concurrencyPolicy": "Allow", "job": _job()}))
        before = _requests(kubectl, namespace, "steady", "frozen-before", 3)
        wait_for(lambda: _ended(kubectl, namespace, before), timeout=60, what="runs under op-a")
        assert a.proc is not None
        a.proc.send_signal(19)  # SIGSTOP: frozen, not dead; its lease runs out
        wait_for(lambda: holder(kubectl.cp, lease) == "op-b", timeout=30, what="op-b takes over")
        during = _requests(kubectl, namespace, "steady", "frozen-during", 3)
        wait_for(lambda: _ended(kubectl, namespace, during), timeout=60, what="runs under op-b")
        a.proc.send_signal(18)  # SIGCONT: it must find the lease gone and stop acting
        after = _requests(kubectl, namespace, "steady", "frozen-after", 3)
        wait_for(lambda: _ended(kubectl, namespace, after), timeout=60, what="runs after op-a woke")
        assert holder(kubectl.cp, lease) == "op-b"
        invariants.assert_accounted(kubectl.cp, namespace, history_dsn=operator.history_dsn or None, timeout=60)
    finally:
        a.stop()
        b.stop()
