"""R4: what the suite's operator did, from the API server's audit log, against the chart's RBAC.

Runs last in its session (tests/conftest.py orders it): the session's operator ran every test as
the chart's ServiceAccount (tests/support/least_privilege.py). Every request must have been granted
(none refused by RBAC). That every grant was used or justified is judged over the whole suite, all
xdist workers' audit logs together, at the end of the run (pytest_sessionfinish in tests/conftest.py).
"""

from __future__ import annotations

import pytest

from tests.conftest import Operator
from tests.support import least_privilege

pytestmark = pytest.mark.cluster


def test_the_operator_used_only_what_the_chart_grants(operator: Operator) -> None:
    cp = operator.cluster
    seen, refused = least_privilege.used(least_privilege.audit_log(cp))
    assert seen, "no audited request: the operator did not run as the chart's ServiceAccount"
    assert not refused, "requests the chart's RBAC refused:\n" + "\n".join(sorted(set(refused)))
    docs = least_privilege.chart_rbac(cp)
    grants = least_privilege.granted(docs)
    assert seen <= grants, f"used but not granted: {sorted(seen - grants)}"
    print(f"least privilege: {len(seen)} (group, resource, verb) used of {len(grants)} granted")
