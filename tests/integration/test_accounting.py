"""Every run accounted for once, on the real control plane: the defects of the status-diff reconcile.

Each test failed on the reconcile that found transitions by comparing status before and after a
pass; each passes with the ledger, run requests and the CronJob watch.
"""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from tests.conftest import Kubectl, Operator, accounted, bgj, condition_of, script_job, wait_for
from tests.observability.test_metrics_live import value

pytestmark = pytest.mark.cluster

SLOW = "import time; time.sleep({s}); print('done')"


def run_request(name: str, ns: str, job: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "nightshift.dev/v1alpha1",
        "kind": "BackgroundJobRun",
        "metadata": {"name": name, "namespace": ns},
        "spec": {"backgroundJob": job, **spec},
    }


def requests(kubectl: Kubectl, ns: str) -> dict[str, dict[str, Any]]:
    items = kubectl.json("get", "backgroundjobruns", "-n", ns)["items"]
    return {r["metadata"]["name"]: r for r in items}


def events(kubectl: Kubectl, ns: str, reason: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = kubectl.json("get", "events", "-n", ns, "--field-selector", f"reason={reason}")[
        "items"
    ]
    return items


def labels(ns: str, name: str) -> dict[str, str]:
    return {"namespace": ns, "backgroundjob": name}


def test_overlapping_runs_are_each_counted_once(kubectl: Kubectl, running_operator: Operator, namespace: str) -> None:
    kubectl.apply(
        bgj(
            "overlap",
            namespace,
            {"concurrencyPolicy": "Allow", "history": {"successful": 2}, "job": script_job(SLOW.format(s=3))},
        )
    )
    for i in range(5):
        kubectl.apply(run_request(f"overlap-{i}", namespace, "overlap"))

    def all_succeeded() -> bool:
        reqs = requests(kubectl, namespace)
        return len(reqs) == 5 and all(r.get("status", {}).get("phase") == "Succeeded" for r in reqs.values())

    wait_for(all_succeeded, timeout=120, interval=1, what="five overlapping runs succeeded")
    wait_for(
        lambda: (
            value(
                running_operator.metrics(), "nightshift_runs_total", **labels(namespace, "overlap"), result="succeeded"
            )
            == 5
        ),
        timeout=30,
        what="runs_total{succeeded} == 5",
    )
    assert len(events(kubectl, namespace, "RunSucceeded")) == 5
    # `kubectl wait` works on a request
    out = kubectl("wait", "--for=condition=Finished", "bgjr/overlap-0", "-n", namespace, "--timeout=10s")
    assert "condition met" in out
    time.sleep(2)  # nothing more comes later: counted once, not again on a later pass
    assert (
        value(running_operator.metrics(), "nightshift_runs_total", **labels(namespace, "overlap"), result="succeeded")
        == 5
    )
    assert len(events(kubectl, namespace, "RunSucceeded")) == 5
    accounted(running_operator, namespace)


def test_a_failure_next_to_a_skip_is_told(kubectl: Kubectl, running_operator: Operator, namespace: str) -> None:
    code = "import time, sys; time.sleep(5); sys.exit(65)"
    kubectl.apply(bgj("fails", namespace, {"concurrencyPolicy": "Forbid", "job": script_job(code)}))
    kubectl.apply(run_request("first", namespace, "fails"))
    wait_for(
        lambda: requests(kubectl, namespace)["first"].get("status", {}).get("phase") == "Running",
        timeout=60,
        what="first run running",
    )
    kubectl.apply(run_request("second", namespace, "fails"))
    wait_for(
        lambda: requests(kubectl, namespace)["second"].get("status", {}).get("phase") == "Skipped",
        timeout=60,
        what="second run skipped",
    )
    wait_for(
        lambda: requests(kubectl, namespace)["first"].get("status", {}).get("phase") == "Failed",
        timeout=60,
        what="first run failed",
    )
    obj = wait_for(
        lambda: (
            (o := kubectl.json("get", "bgj", "fails", "-n", namespace))
            and (condition_of(o, "DeadLettered") or {}).get("status") == "True"
            and o
        ),
        timeout=30,
        what="DeadLettered True",
    )
    text = running_operator.metrics()
    assert value(text, "nightshift_runs_total", **labels(namespace, "fails"), result="failed") == 1
    assert value(text, "nightshift_runs_total", **labels(namespace, "fails"), result="skipped") == 1
    assert len(events(kubectl, namespace, "RunFailed")) == 1
    assert len(events(kubectl, namespace, "RunSkipped")) == 1
    last = obj["status"]["lastRun"]
    assert last["result"] in ("Skipped", "Failed")
    if last["result"] == "Skipped":  # a skipped run shows no times but its own
        assert "completionTime" not in last and "exitCode" not in last
    first = requests(kubectl, namespace)["first"]["status"]
    assert first["exitCode"] == 65 and first["reason"].startswith("NonRetryableExitCode")
    accounted(running_operator, namespace)


def test_triggers_while_the_operator_is_down_each_make_a_run(
    kubectl: Kubectl, running_operator: Operator, namespace: str
) -> None:
    kubectl.apply(bgj("offline", namespace, {"concurrencyPolicy": "Allow", "job": script_job("print('ok')")}))
    wait_for(
        lambda: (
            (condition_of(kubectl.json("get", "bgj", "offline", "-n", namespace), "Ready") or {}).get("status")
            == "True"
        ),
        what="offline Ready",
    )
    running_operator.stop()
    try:
        for i in range(3):
            kubectl.apply(run_request(f"offline-{i}", namespace, "offline", params={"n": i}))
    finally:
        running_operator.start()
    wait_for(
        lambda: all(r.get("status", {}).get("phase") == "Succeeded" for r in requests(kubectl, namespace).values()),
        timeout=90,
        what="three requested runs succeeded",
    )
    jobs = kubectl.json("get", "jobs", "-n", namespace, "-l", "nightshift.dev/backgroundjob=offline")["items"]
    assert len(jobs) == 3
    params = sorted(json.loads(j["metadata"]["annotations"]["nightshift.dev/params"])["n"] for j in jobs)
    assert params == [0, 1, 2]
    accounted(running_operator, namespace)


def test_a_deleted_cronjob_comes_back_and_a_foreign_one_is_taken_over(
    kubectl: Kubectl, running_operator: Operator, namespace: str
) -> None:
    kubectl.apply(bgj("hourly", namespace, {"schedule": "0 * * * *", "job": script_job("print('ok')")}))
    first = wait_for(lambda: kubectl.run("get", "cronjob", "hourly", "-n", namespace).returncode == 0, what="CronJob")
    assert first
    uid = kubectl.json("get", "cronjob", "hourly", "-n", namespace)["metadata"]["uid"]
    kubectl("delete", "cronjob", "hourly", "-n", namespace)
    wait_for(
        lambda: (
            (r := kubectl.run("get", "cronjob", "hourly", "-n", namespace, "-o", "json")).returncode == 0
            and json.loads(r.stdout)["metadata"]["uid"] != uid
        ),
        timeout=30,
        what="the CronJob recreated without a restart",
    )

    foreign = {
        "apiVersion": "batch/v1",
        "kind": "CronJob",
        "metadata": {"name": "taken", "namespace": namespace},
        "spec": {
            "schedule": "0 0 1 1 *",
            "suspend": True,
            "jobTemplate": {
                "spec": {
                    "template": {
                        "spec": {"restartPolicy": "Never", "containers": [{"name": "x", "image": "nightshift:test"}]}
                    }
                }
            },
        },
    }
    kubectl.apply(foreign)
    kubectl.apply(bgj("taken", namespace, {"schedule": "0 * * * *", "job": script_job("print('ok')")}))

    def ready(want: str, reason: str | None = None) -> bool:
        c = condition_of(kubectl.json("get", "bgj", "taken", "-n", namespace), "Ready") or {}
        return c.get("status") == want and (reason is None or c.get("reason") == reason)

    wait_for(lambda: ready("False", "CronJobConflict"), what="Ready False CronJobConflict")
    kubectl("delete", "cronjob", "taken", "-n", namespace)
    wait_for(lambda: ready("True"), timeout=30, what="nightshift takes over once the foreign CronJob is gone")
    owners = kubectl.json("get", "cronjob", "taken", "-n", namespace)["metadata"]["ownerReferences"]
    assert owners[0]["kind"] == "BackgroundJob" and owners[0]["name"] == "taken"
    accounted(running_operator, namespace)


def test_on_demand_job_depending_on_a_new_scheduled_job_runs(
    kubectl: Kubectl, running_operator: Operator, namespace: str
) -> None:
    """The upstream's slot of the minute before it existed is not waited for."""
    kubectl.apply(bgj("up", namespace, {"every": "1m", "job": script_job("print('ok')")}))
    kubectl.apply(bgj("down", namespace, {"dependsOn": [{"name": "up"}], "job": script_job("print('ok')")}))
    kubectl.apply(run_request("down-now", namespace, "down"))
    wait_for(
        lambda: requests(kubectl, namespace)["down-now"].get("status", {}).get("phase") == "Succeeded",
        timeout=90,
        what="the on-demand run admitted without waiting for a slot that never existed",
    )
    accounted(running_operator, namespace)


def test_a_request_before_its_job_says_so_then_runs_when_the_job_comes(
    kubectl: Kubectl, running_operator: Operator, namespace: str
) -> None:
    """GitOps order: a BackgroundJobRun may be applied before its BackgroundJob."""
    kubectl.apply(run_request("early", namespace, "later"))
    pending = wait_for(
        lambda: (
            (requests(kubectl, namespace).get("early", {}).get("status") or {}).get("reason") == "BackgroundJobNotFound"
            and requests(kubectl, namespace)["early"]
        ),
        timeout=30,
        what="the request told its job does not exist",
    )
    assert "no BackgroundJob later" in pending["status"]["message"]
    kubectl.apply(bgj("later", namespace, {"job": script_job("print('ok')")}))
    wait_for(
        lambda: requests(kubectl, namespace)["early"].get("status", {}).get("phase") == "Succeeded",
        timeout=60,
        what="the request's run once the job exists",
    )
    accounted(running_operator, namespace)
