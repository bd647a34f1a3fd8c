"""Generated BackgroundJobs sent to the real API server with the operator (and its webhook) running.

The unit fuzz (tests/unit/test_fuzz.py) checks the models and the core; this one checks the whole
path a user's `kubectl apply` takes: the CRD schema and CEL rules, the admission webhook, the
operator's reconcile. Each of 500 generated specs must be rejected with a message that names a
field, or accepted and given Ready True or False with a reason; afterwards the operator has logged
no unhandled exception and still runs an ordinary job. Generated jobs are suspended (the point is
what the operator makes of the spec, not hundreds of runs every minute on the test node).
"""

from __future__ import annotations

import http.client
import json
import re
import ssl
from typing import Any
from urllib.parse import urlparse

import pytest
from hypothesis import given

from tests.conftest import Kubectl, Operator, bgj, condition_of, script_job, wait_for
from tests.unit.test_fuzz import fuzz, noisy, specs

pytestmark = pytest.mark.cluster

CASES = 500
FIELD = re.compile(r"\bspec(\.[A-Za-z]|\[|:)")  # "spec.job.params.tabel: ..." or "spec: Required value"
# The API server's own trailer after a wrong JSON type (a string for a list): it skips the CEL rules
# and says so under a nil path. It comes before any webhook can see the object, so no operator code
# can drop it; the field itself is named first.
CEL_SKIPPED = (
    ", <nil>: Invalid value: null: some validation rules were not checked because the object was invalid; "
    "correct the existing errors to complete validation"
)


class Api:
    """One keep-alive HTTPS connection with the admin certificate: 500 creates in seconds, not minutes."""

    def __init__(self, kubectl: Kubectl) -> None:
        pki = kubectl.cp.workdir / "pki"
        ctx = ssl.create_default_context(cafile=str(pki / "ca.crt"))
        ctx.load_cert_chain(str(pki / "admin.crt"), str(pki / "admin.key"))
        url = urlparse(kubectl.cp.server)
        self.conn = http.client.HTTPSConnection(url.hostname or "127.0.0.1", url.port or 443, context=ctx, timeout=30)

    def create(self, ns: str, obj: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        path = f"/apis/nightshift.dev/v1alpha1/namespaces/{ns}/backgroundjobs"
        self.conn.request("POST", path, body=json.dumps(obj).encode(), headers={"Content-Type": "application/json"})
        resp = self.conn.getresponse()
        return resp.status, json.loads(resp.read() or b"{}")


def test_generated_jobs_are_rejected_naming_a_field_or_get_ready_with_a_reason(
    kubectl: Kubectl, running_operator: Operator, namespace: str
) -> None:
    api = Api(kubectl)
    accepted: list[str] = []
    rejected: list[str] = []
    log_start = running_operator.log.stat().st_size

    @fuzz(CASES)
    @given(raw=specs)
    def send(raw: dict[str, Any]) -> None:
        name = f"f{len(accepted) + len(rejected)}"
        code, body = api.create(namespace, bgj(name, namespace, {**raw, "suspend": True, "runOnCreate": False}))
        if code == 201:
            accepted.append(name)
            return
        assert code in (400, 422), (code, body)
        message = body.get("message", "").replace(CEL_SKIPPED, "")
        assert FIELD.search(message), f"{raw} rejected without naming a field: {message}"
        assert not noisy(message, raw, ("Value error", "<nil>", "[type=", "errors.pydantic.dev")), message
        rejected.append(name)

    send()
    print(f"fuzz: {len(accepted)} accepted, {len(rejected)} rejected")
    assert len(accepted) + len(rejected) >= CASES and len(accepted) >= CASES // 10 and rejected

    def all_ready() -> bool:
        items = kubectl.json("get", "backgroundjobs", "-n", namespace)["items"]
        ready = [condition_of(o, "Ready") for o in items]
        return len(items) == len(accepted) and all(c and c.get("reason") for c in ready)

    wait_for(all_ready, timeout=120, interval=2, what=f"Ready with a reason on all {len(accepted)} accepted jobs")
    kubectl.apply(bgj("ordinary", namespace, {"runOnCreate": True, "job": script_job("print('ok')")}))
    wait_for(
        lambda: (
            (kubectl.json("get", "bgj", "ordinary", "-n", namespace).get("status", {}).get("lastRun") or {}).get(
                "result"
            )
            == "Succeeded"
        ),
        timeout=60,
        what="an ordinary job still runs",
    )
    with open(running_operator.log, "rb") as f:
        f.seek(log_start)
        log = f.read().decode(errors="replace")
    assert "Traceback" not in log and "Unhandled" not in log, log[-3000:]
