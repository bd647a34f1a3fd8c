"""R1, short: the churn of `make chaos` at a size for the test command (tests/reliability/churn.py)."""

from __future__ import annotations

import uuid

import pytest

from tests.conftest import Kubectl, Operator
from tests.reliability.churn import Churn, run

pytestmark = [pytest.mark.cluster, pytest.mark.postgres]


def test_churn_with_operator_and_controller_manager_kills(kubectl: Kubectl, running_operator: Operator) -> None:
    ns = f"churn-{uuid.uuid4().hex[:6]}"
    c = Churn(runs=40, kills=5, kcm_kills=1, scheduled=2, seed=7, limit_s=600)
    try:
        run(kubectl.cp, running_operator, ns, c)
    finally:
        kubectl("delete", "namespace", ns, "--wait=false")
    assert c.counts["kills"] == 5 and c.counts["kcm_kills"] == 1
    assert c.counts["runs"] >= 40
