"""R4, canaries: secret values given to jobs (in Secrets, params, env, DSNs) never show up where the
operator writes: its log, events, status, run requests, metrics or history.

The jobs fail on purpose (the DSNs point at a closed port), because failures are where messages
carry the most text: a driver's error, a termination message, a reason.
"""

from __future__ import annotations

import json

import psycopg
import pytest
from psycopg.rows import dict_row

from tests.conftest import Kubectl, Operator, accounted, bgj, script_job, wait_for

pytestmark = [pytest.mark.cluster, pytest.mark.postgres]

IN_SECRET = "canary-in-secret-5d1c"
IN_PARAM = "canary-in-param-8a2f"
IN_ENV = "canary-in-env-3b7e"
CANARIES = (IN_SECRET, IN_PARAM, IN_ENV)


def test_secret_values_never_reach_logs_events_status_metrics_or_history(
    kubectl: Kubectl, running_operator: Operator, namespace: str
) -> None:
    log_start = running_operator.log.stat().st_size
    closed = "127.0.0.1:1"
    kubectl(
        "create", "secret", "generic", "creds", "-n", namespace,
        f"--from-literal=DATABASE_URL=postgresql://app:{IN_SECRET}@{closed}/app",
    )  # fmt: skip
    now = {"nightshift.dev/run-now": "1"}
    jobs = {
        "from-secret": {"builtin": "sql", "params": {"statement": "select 1"}, "envFrom": [{"secretRef": {"name": "creds"}}]},
        "from-param": {"builtin": "sql", "params": {"statement": "select 1", "dsn": f"postgresql://app:{IN_PARAM}@{closed}/app"}},
        "from-env": {
            **script_job("import os, sys; print('working'); sys.exit(75 if os.environ['TOKEN'] else 0)"),
            "env": [{"name": "TOKEN", "value": IN_ENV}, {"name": "DB", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "DATABASE_URL"}}}],
        },
    }  # fmt: skip
    for name, job in jobs.items():
        kubectl.apply(bgj(name, namespace, {"retry": {"limit": 0}, "job": job}, annotations=now))

    def ended() -> bool:
        items = kubectl.json("get", "bgj", "-n", namespace)["items"]
        return len(items) == 3 and all(
            (i.get("status", {}).get("lastRun") or {}).get("result") in ("Failed", "Succeeded") for i in items
        )

    wait_for(ended, timeout=120, what="the three runs ended")
    accounted(running_operator, namespace)
    with psycopg.connect(running_operator.history_dsn, row_factory=dict_row) as conn:
        history = conn.execute("SELECT * FROM nightshift_attempts WHERE namespace = %s", (namespace,)).fetchall()
    assert len(history) == 3
    with open(running_operator.log, "rb") as f:
        f.seek(log_start)
        log = f.read().decode(errors="replace")
    places = {
        "operator log": log,
        "events": json.dumps(kubectl.json("get", "events", "-n", namespace)),
        "status": json.dumps([i.get("status") for i in kubectl.json("get", "bgj", "-n", namespace)["items"]]),
        "run requests": json.dumps(kubectl.json("get", "bgjr", "-n", namespace)),
        "metrics": running_operator.metrics(),
        "history": json.dumps(history, default=str),
    }
    leaks = [f"{c} in the {where}" for where, text in places.items() for c in CANARIES if c in text]
    assert not leaks, leaks
