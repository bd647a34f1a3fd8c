"""R4: what the suite's operator did, from the API server's audit log, against the chart's RBAC.

Runs last (tests/conftest.py orders it): the session's operator ran every test as the chart's
ServiceAccount (tests/support/least_privilege.py). Every request must have been granted (no 403),
and, when the whole suite ran, every grant used or justified in rbac.yaml.
"""

from __future__ import annotations

import pytest

from tests.conftest import WHOLE_SUITE_KEY, Operator
from tests.support import least_privilege

pytestmark = pytest.mark.cluster


def test_the_operator_used_only_what_the_chart_grants_and_the_chart_grants_only_what_it_uses(
    operator: Operator, request: pytest.FixtureRequest
) -> None:
    cp = operator.cluster
    seen, refused = least_privilege.used(least_privilege.audit_log(cp))
    assert seen, "no audited request: the operator did not run as the chart's ServiceAccount"
    assert not refused, "requests the chart's RBAC refused:\n" + "\n".join(sorted(set(refused)))
    docs = least_privilege.chart_rbac(cp)
    grants = least_privilege.granted(docs)
    assert seen <= grants, f"used but not granted: {sorted(seen - grants)}"
    if request.config.stash.get(WHOLE_SUITE_KEY, False):
        unused = least_privilege.unused_grants(docs, seen)
        assert not unused, (
            "granted, used by no request of the whole suite, and not justified with an "
            f"'# unexercised: group/resource verb: why' comment in rbac.yaml: {sorted(unused)}"
        )
    print(f"least privilege: {len(seen)} (group, resource, verb) used of {len(grants)} granted")
