"""Operator core on the real control plane: CronJob ownership, edits, suspend, delete, status, restart."""

from __future__ import annotations

import time
from typing import Any

import pytest

from tests.conftest import Kubectl, Operator, accounted, bgj, condition_of, script_job, wait_for

pytestmark = pytest.mark.cluster

SQL = {"builtin": "sql", "params": {"statement": "SELECT 1"}}  # a built-in with its required params


def get(kubectl: Kubectl, kind: str, name: str, ns: str) -> dict[str, Any]:
    return kubectl.json("get", kind, name, "-n", ns)  # type: ignore[no-any-return]


def ready(kubectl: Kubectl, name: str, ns: str) -> dict[str, Any] | None:
    obj = kubectl.json("get", "bgj", name, "-n", ns)
    cond = condition_of(obj, "Ready")
    return obj if cond and obj["status"].get("observedGeneration") == obj["metadata"]["generation"] else None


def test_apply_edit_suspend_delete(kubectl: Kubectl, running_operator: Operator, namespace: str) -> None:
    spec = {
        "schedule": "0 3 * * *",
        "timeZone": "Europe/Berlin",
        "priority": "high",
        "timeout": "10m",
        "job": {
            "builtin": "ttl-cleanup",
            "params": {"table": "sessions", "timestampColumn": "created_at", "olderThan": "30d"},
        },
    }
    kubectl.apply(bgj("cleanup", namespace, spec))
    cron = wait_for(
        lambda: (
            kubectl.run("get", "cronjob", "cleanup", "-n", namespace, "-o", "json").returncode == 0
            and get(kubectl, "cronjob", "cleanup", namespace)
        ),
        what="CronJob",
    )
    owner = cron["metadata"]["ownerReferences"][0]
    assert (owner["kind"], owner["name"], owner["controller"]) == ("BackgroundJob", "cleanup", True)
    cs = cron["spec"]
    assert (cs["schedule"], cs["timeZone"], cs["suspend"]) == ("0 3 * * *", "Europe/Berlin", False)
    jt = cs["jobTemplate"]["spec"]
    assert jt["suspend"] is True and jt["backoffLimit"] == 0 and jt["activeDeadlineSeconds"] == 600
    pod = jt["template"]["spec"]
    assert pod["priorityClassName"] == "nightshift-high"
    assert pod["containers"][0]["command"] == ["python", "-m", "nightshift_jobs", "ttl-cleanup"]
    assert cron["metadata"]["annotations"]["nightshift.dev/priority"] == "high"
    rv = cron["metadata"]["resourceVersion"]

    obj = wait_for(lambda: ready(kubectl, "cleanup", namespace), what="Ready")
    assert obj["status"]["nextScheduleTime"].endswith(":00:00Z")  # 03:00 Berlin is on the hour in UTC
    time.sleep(2)  # further reconciles of an unchanged job write nothing
    assert get(kubectl, "cronjob", "cleanup", namespace)["metadata"]["resourceVersion"] == rv

    kubectl("patch", "bgj", "cleanup", "-n", namespace, "--type=merge", "-p", '{"spec": {"schedule": "*/30 * * * *"}}')
    wait_for(lambda: get(kubectl, "cronjob", "cleanup", namespace)["spec"]["schedule"] == "*/30 * * * *", what="edit")
    kubectl("patch", "bgj", "cleanup", "-n", namespace, "--type=merge", "-p", '{"spec": {"suspend": true}}')
    wait_for(lambda: get(kubectl, "cronjob", "cleanup", namespace)["spec"]["suspend"] is True, what="suspend")
    obj = wait_for(lambda: ready(kubectl, "cleanup", namespace), what="Ready after suspend")
    assert condition_of(obj, "Suspended")["status"] == "True"  # type: ignore[index]
    assert "nextScheduleTime" not in obj["status"]

    kubectl("annotate", "bgj", "cleanup", "-n", namespace, "nightshift.dev/run-now=one")
    wait_for(lambda: kubectl.json("get", "jobs", "-n", namespace)["items"], what="a run Job")
    kubectl("delete", "bgj", "cleanup", "-n", namespace, "--wait=true", "--timeout=30s")
    wait_for(lambda: kubectl.run("get", "cronjob", "cleanup", "-n", namespace).returncode != 0, what="CronJob gone")
    wait_for(lambda: not kubectl.json("get", "jobs", "-n", namespace)["items"], what="Jobs gone")
    accounted(running_operator, namespace)


def test_volumes_reach_the_cronjob_pod_template(kubectl: Kubectl, running_operator: Operator, namespace: str) -> None:
    job = {
        "builtin": "backup",
        "params": {"directory": "/backups"},  # required: checked at apply time
        "volumes": [
            {"name": "backups", "persistentVolumeClaim": {"claimName": "db-backups"}},
            {"name": "tls", "secret": {"secretName": "db-ca", "optional": True}},
        ],
        "volumeMounts": [{"name": "backups", "mountPath": "/backups"}, {"name": "tls", "mountPath": "/etc/db-ca"}],
        "fsGroup": 10001,
    }
    kubectl.apply(bgj("backup", namespace, {"schedule": "0 3 * * *", "job": job}))
    obj = wait_for(lambda: ready(kubectl, "backup", namespace), what="Ready")
    assert condition_of(obj, "Ready")["status"] == "True", obj["status"]  # type: ignore[index]
    pod = get(kubectl, "cronjob", "backup", namespace)["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    assert [v["name"] for v in pod["volumes"]] == ["tmp", "backups", "tls"]
    assert pod["volumes"][1]["persistentVolumeClaim"] == {"claimName": "db-backups"}
    assert [m["mountPath"] for m in pod["containers"][0]["volumeMounts"]] == ["/tmp", "/backups", "/etc/db-ca"]
    assert pod["securityContext"]["fsGroup"] == 10001


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"schedule": "* * * * *", "every": "5m", "job": {"builtin": "sql"}}, "at most one of schedule, every and at"),
        ({"job": {"builtin": "sql", "image": "x"}}, "exactly one of job.builtin or job.image"),
        ({"every": "7x", "job": {"builtin": "sql"}}, "spec.every"),
        ({"priority": "urgent", "job": {"builtin": "sql"}}, 'Unsupported value: "urgent"'),
        ({"retry": {"limit": 50}, "job": {"builtin": "sql"}}, "spec.retry.limit"),
        ({"job": {"image": "x", "params": {"a": 1}}}, "job.params is for built-in jobs"),
        ({"schedule": "x" * 200, "job": {"builtin": "sql"}}, "spec.schedule"),
        (
            {"job": {"builtin": "backup", "volumeMounts": [{"name": "data", "mountPath": "/data"}]}},
            "every job.volumeMounts name must be one of job.volumes",
        ),
        (
            {"job": {"builtin": "backup", "volumes": [{"name": "tmp", "emptyDir": {}}]}},
            "the volume name tmp is reserved",
        ),
    ],
)
def test_api_server_rejects_bad_specs(
    kubectl: Kubectl, operator: Operator, namespace: str, spec: dict[str, Any], message: str
) -> None:
    result = kubectl.run("apply", "-f", "-", input=__import__("json").dumps(bgj("bad", namespace, spec)))
    assert result.returncode != 0
    assert message in result.stderr
    # every rule of ours names its field; the one `<nil>` line left is the API server's own notice that
    # it skipped CEL rules on an object with schema errors
    unnamed = [line for line in result.stderr.splitlines() if "<nil>" in line]
    assert all("some validation rules were not checked" in line for line in unnamed), result.stderr


def test_name_longer_than_52_is_rejected(kubectl: Kubectl, operator: Operator, namespace: str) -> None:
    result = kubectl.run(
        "apply", "-f", "-", input=__import__("json").dumps(bgj("a" * 53, namespace, {"job": {"builtin": "sql"}}))
    )
    assert result.returncode != 0 and "at most 52 characters" in result.stderr


@pytest.mark.parametrize(
    ("spec", "reason", "text"),
    [
        # Every reason has its unit test (tests/unit/test_validate.py); here, one of each path through the
        # webhook and Ready: a schedule, a built-in's params (the user's spelling, a suggestion), a warning.
        ({"every": "7m", "job": {"builtin": "sql"}}, "InvalidSchedule", "no cron equivalent"),
        (
            {"schedule": "@daily", "job": {"builtin": "ttl-cleanup", "params": {"tabel": "sessions"}}},
            "InvalidParams",
            "spec.job.params.tabel: unknown parameter (did you mean table?)",
        ),
        ({"dependsOn": [{"name": "ghost"}], "job": {"builtin": "sql"}}, "DependencyNotFound", "ghost"),
    ],
)
def test_invalid_specs_get_ready_false(
    kubectl: Kubectl, running_operator: Operator, namespace: str, spec: dict[str, Any], reason: str, text: str
) -> None:
    """The webhook rejects these first; with the operator down it fails open, and the operator reports them."""
    wait_for(
        lambda: kubectl.run("get", "validatingwebhookconfiguration", "nightshift.dev").returncode == 0,
        what="webhook registered",
    )
    first = kubectl.run("apply", "-f", "-", input=__import__("json").dumps(bgj("broken", namespace, spec)))
    if reason == "DependencyNotFound":
        assert first.returncode == 0 and text in first.stderr  # a warning only
        kubectl("delete", "bgj", "broken", "-n", namespace)
    else:
        assert first.returncode != 0 and text in first.stderr
        assert "Value error" not in first.stderr
    log = running_operator.log.read_text()  # a rejection is the webhook doing its job: INFO, not ERROR
    assert not [line for line in log.splitlines() if "ERROR" in line and "validate" in line], log[-2000:]
    running_operator.stop()
    kubectl.apply(bgj("broken", namespace, spec))
    kubectl.apply(bgj("fine", namespace, {"schedule": "@hourly", "job": SQL}))
    running_operator.start()
    obj = wait_for(lambda: ready(kubectl, "broken", namespace), what="status")
    cond = condition_of(obj, "Ready")
    assert cond is not None and (cond["status"], cond["reason"]) == ("False", reason)
    assert text in cond["message"]
    assert condition_of(wait_for(lambda: ready(kubectl, "fine", namespace), what="fine"), "Ready")["status"] == "True"  # type: ignore[index]
    uid = obj["metadata"]["uid"]
    events = kubectl.json("get", "events", "-n", namespace, "--field-selector", f"involvedObject.uid={uid}")["items"]
    assert [e["reason"] for e in events].count(reason) == 1


def test_foreign_cronjob_is_never_overwritten(kubectl: Kubectl, running_operator: Operator, namespace: str) -> None:
    foreign = {
        "apiVersion": "batch/v1",
        "kind": "CronJob",
        "metadata": {"name": "report", "namespace": namespace},
        "spec": {
            "schedule": "0 1 * * *",
            "jobTemplate": {
                "spec": {
                    "template": {"spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "theirs"}]}}
                }
            },
        },
    }
    kubectl.apply(foreign)
    kubectl.apply(bgj("report", namespace, {"schedule": "0 2 * * *", "job": SQL}))
    obj = wait_for(lambda: ready(kubectl, "report", namespace), what="status")
    assert condition_of(obj, "Ready")["reason"] == "CronJobConflict"  # type: ignore[index]
    cron = get(kubectl, "cronjob", "report", namespace)
    assert cron["spec"]["schedule"] == "0 1 * * *" and not cron["metadata"].get("ownerReferences")


def test_run_completes_and_status_survives_restart(
    kubectl: Kubectl, running_operator: Operator, namespace: str
) -> None:
    code = (
        "import json, os; print('working'); "
        "open(os.environ['NIGHTSHIFT_TERMINATION_LOG'], 'w').write(json.dumps({'result': 'succeeded', 'message': 'did it', 'counts': {'rows': 7}}))"
    )
    kubectl.apply(
        bgj(
            "report",
            namespace,
            {"schedule": "0 5 * * *", "job": script_job(code)},
            annotations={"nightshift.dev/run-now": "first"},
        )
    )

    def succeeded() -> dict[str, Any] | None:
        obj = kubectl.json("get", "bgj", "report", "-n", namespace)
        return obj if obj.get("status", {}).get("lastRun", {}).get("result") == "Succeeded" else None

    obj = wait_for(succeeded, timeout=90, what="a succeeded run")
    st = obj["status"]
    assert st["lastSuccessfulTime"] and st["lastRun"]["trigger"] == "manual"
    assert st["lastRun"]["output"]["counts"] == {"rows": 7} and st["lastRun"]["message"] == "did it"
    assert st["lastRun"]["exitCode"] == 0 and st["consecutiveFailures"] == 0

    table = kubectl("get", "bgj", "-n", namespace)
    header = table.splitlines()[0].split()
    assert header == [
        "NAME",
        "SCHEDULE",
        "SUSPENDED",
        "READY",
        "LAST",
        "RESULT",
        "LAST",
        "SUCCESS",
        "NEXT",
        "RUN",
        "AGE",
    ]
    row = table.splitlines()[1].split()
    assert row[:5] == ["report", "0", "5", "*", "*"] and "Succeeded" in row
    assert "MESSAGE" in kubectl("get", "bgj", "-n", namespace, "-o", "wide").splitlines()[0]

    jobs_before = sorted(j["metadata"]["name"] for j in kubectl.json("get", "jobs", "-n", namespace)["items"])
    events_before = len(kubectl.json("get", "events", "-n", namespace)["items"])
    running_operator.restart()
    time.sleep(5)
    after = kubectl.json("get", "bgj", "report", "-n", namespace)
    assert after["status"] == st
    assert sorted(j["metadata"]["name"] for j in kubectl.json("get", "jobs", "-n", namespace)["items"]) == jobs_before
    assert len(kubectl.json("get", "events", "-n", namespace)["items"]) == events_before
    accounted(running_operator, namespace)


def test_webhook_rejects_cycles_and_bad_schedules(kubectl: Kubectl, running_operator: Operator, namespace: str) -> None:
    def apply(name: str, spec: dict[str, Any]) -> Any:
        return kubectl.run("apply", "-f", "-", input=__import__("json").dumps(bgj(name, namespace, spec)))

    wait_for(
        lambda: kubectl.run("get", "validatingwebhookconfiguration", "nightshift.dev").returncode == 0,
        what="the webhook registered by the operator",
    )
    early = apply("downstream", {"dependsOn": [{"name": "upstream"}], "job": {"builtin": "sql"}})
    assert early.returncode == 0 and "upstream does not exist" in early.stderr  # a warning, not a rejection
    assert apply("upstream", {"runAfter": ["middle"], "job": SQL}).returncode == 0
    cycle = apply("middle", {"dependsOn": [{"name": "downstream"}], "job": {"builtin": "sql"}})
    assert cycle.returncode != 0 and "DependencyCycle" in cycle.stderr and "middle -> downstream" in cycle.stderr
    bad = apply("badcron", {"schedule": "61 * * * *", "job": {"builtin": "sql"}})
    assert bad.returncode != 0 and "not a valid cron expression" in bad.stderr
    unknown = apply("unknown", {"schedule": "@daily", "job": {"builtin": "no-such-job"}})
    assert unknown.returncode != 0 and "unknown built-in job" in unknown.stderr
