"""R5, failover, short: two replicas under churn, the leader SIGKILLed 3 times (`make chaos`: 10).

Each time the standby must lead within the lease's bound (client-go's rule: a record unchanged for
a lease duration, by the standby's own clock, plus one retry), no run may be admitted twice, and the
invariant checker must pass at the end.
"""

from __future__ import annotations

import statistics
import uuid
from pathlib import Path

import pytest

from tests.conftest import Kubectl, Operator
from tests.reliability.churn import Churn, run
from tests.support.operatorproc import OperatorProcess

pytestmark = [pytest.mark.cluster, pytest.mark.postgres]


def test_leader_killed_under_churn_a_standby_leads_and_nothing_runs_twice(
    kubectl: Kubectl, operator: Operator, namespace: str, tmp_path: Path
) -> None:
    operator.stop()  # the session's operator does not elect; later tests start it again
    c = Churn(runs=30, kills=3, kcm_kills=0, scheduled=2, seed=11, limit_s=600, lease_s=4)
    lease = (namespace, "nightshift-failover")
    a = OperatorProcess(operator.cluster, tmp_path / "a", webhook=False, history_dsn=operator.history_dsn)
    b = OperatorProcess(operator.cluster, tmp_path / "b", webhook=False, history_dsn=operator.history_dsn)
    ns = f"failover-{uuid.uuid4().hex[:6]}"
    try:
        a.start(60, **c.replica_env("op-a", lease))
        b.start(60, **c.replica_env("op-b", lease))
        run(kubectl.cp, a, ns, c, standby=b, lease=lease)
    finally:
        a.stop()
        b.stop()
        kubectl("delete", "namespace", ns, "--wait=false")
    assert len(c.takeovers) == 3
    # the bound: a lease duration after the standby last saw the record change, plus its retry period
    assert max(c.takeovers) <= c.lease_s * 2, c.takeovers
    print(f"takeovers: median {statistics.median(c.takeovers):.1f}s, max {max(c.takeovers):.1f}s")
