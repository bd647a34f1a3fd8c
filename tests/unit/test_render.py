from __future__ import annotations

import json
from typing import Any

import pytest

from nightshift.api import names
from nightshift.core.render import Attempt, Owner, attempt_job, content_hash, cronjob
from nightshift.settings import Settings
from tests.unit.factories import spec, t

Obj = dict[str, Any]


def render(owner: Owner, settings: Settings, **fields: Any) -> Obj:
    fields.setdefault("schedule", "0 3 * * *")
    obj = cronjob(owner, spec(**fields), settings)
    assert obj is not None
    return obj


def pod_spec(obj: Obj) -> Obj:
    job_spec = obj["spec"]["jobTemplate"]["spec"] if obj["kind"] == "CronJob" else obj["spec"]
    result: Obj = job_spec["template"]["spec"]
    return result


def env_of(obj: Obj) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in pod_spec(obj)["containers"][0]["env"]}


def test_cronjob_schedule_and_policies(owner: Owner, settings: Settings) -> None:
    obj = render(
        owner, settings, timeZone="Europe/Berlin", history={"successful": 1, "failed": 7}, startingDeadline="10m"
    )
    assert obj["apiVersion"] == "batch/v1" and obj["kind"] == "CronJob"
    assert obj["metadata"]["name"] == "nightly" and obj["metadata"]["namespace"] == "team"
    s = obj["spec"]
    assert s["schedule"] == "0 3 * * *"
    assert s["timeZone"] == "Europe/Berlin"
    assert s["suspend"] is False
    assert s["concurrencyPolicy"] == "Allow"
    assert s["successfulJobsHistoryLimit"] == 1
    assert s["failedJobsHistoryLimit"] == 7
    assert s["startingDeadlineSeconds"] == 600


def test_cronjob_concurrency_is_always_allow_the_gate_enforces_the_policy(owner: Owner, settings: Settings) -> None:
    for policy in ("Allow", "Forbid", "Replace"):
        obj = render(owner, settings, concurrencyPolicy=policy)
        assert obj["spec"]["concurrencyPolicy"] == "Allow"
        assert obj["metadata"]["annotations"][names.ANN_CONCURRENCY] == policy


def test_suspend_and_starting_deadline_floor(owner: Owner, settings: Settings) -> None:
    obj = render(owner, settings, suspend=True, startingDeadline="5s")
    assert obj["spec"]["suspend"] is True
    assert obj["spec"]["startingDeadlineSeconds"] == 10  # the CronJob controller checks every 10 s
    assert "startingDeadlineSeconds" not in render(owner, settings)["spec"]


@pytest.mark.parametrize(
    ("fields", "cron"),
    [
        ({"every": "5m"}, "*/5 * * * *"),
        ({"every": "2h"}, "0 */2 * * *"),
        ({"schedule": "@weekly"}, "0 0 * * 0"),
        ({"schedule": " 0  9 * * 1-5 "}, "0 9 * * 1-5"),
    ],
)
def test_cron_forms(owner: Owner, settings: Settings, fields: Obj, cron: str) -> None:
    assert cronjob(owner, spec(**fields), settings)["spec"]["schedule"] == cron  # type: ignore[index]


@pytest.mark.parametrize("fields", [{}, {"at": "2026-06-01T00:00:00Z"}])
def test_no_cronjob_without_a_schedule(owner: Owner, settings: Settings, fields: Obj) -> None:
    assert cronjob(owner, spec(**fields), settings) is None


def test_job_template(owner: Owner, settings: Settings) -> None:
    obj = render(owner, settings, timeout="1h30m", retry={"nonRetryableExitCodes": [78, 64, 64]})
    js = obj["spec"]["jobTemplate"]["spec"]
    assert js["suspend"] is True
    assert js["backoffLimit"] == 0
    assert js["activeDeadlineSeconds"] == 5400
    rules = js["podFailurePolicy"]["rules"]
    assert {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget"}]} in rules
    assert {"action": "FailJob", "onExitCodes": {"containerName": "job", "operator": "In", "values": [64, 78]}} in rules
    assert pod_spec(obj)["restartPolicy"] == "Never"


def test_no_deadline_without_timeout_and_no_fail_rule_without_codes(owner: Owner, settings: Settings) -> None:
    js = render(owner, settings, retry={"nonRetryableExitCodes": []})["spec"]["jobTemplate"]["spec"]
    assert "activeDeadlineSeconds" not in js
    assert [r["action"] for r in js["podFailurePolicy"]["rules"]] == ["Ignore"]


def test_default_fail_job_codes(owner: Owner, settings: Settings) -> None:
    rules = render(owner, settings)["spec"]["jobTemplate"]["spec"]["podFailurePolicy"]["rules"]
    fail = [r for r in rules if r["action"] == "FailJob"]
    assert fail[0]["onExitCodes"]["values"] == [64, 65, 78]


def test_restricted_security_context(owner: Owner, settings: Settings) -> None:
    for job in ({"builtin": "ttl-cleanup"}, {"image": "busybox:1", "command": ["true"]}):
        ps = pod_spec(render(owner, settings, job=job))
        assert ps["securityContext"]["runAsNonRoot"] is True
        assert ps["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        assert ps["automountServiceAccountToken"] is False
        (c,) = ps["containers"]
        assert c["securityContext"] == {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},
        }
        assert c["volumeMounts"] == [{"name": "tmp", "mountPath": "/tmp"}]
        assert ps["volumes"][0]["name"] == "tmp" and "emptyDir" in ps["volumes"][0]


def test_volumes_mounts_and_fs_group(owner: Owner, settings: Settings) -> None:
    job = {
        "builtin": "backup",
        "volumes": [{"name": "backups", "persistentVolumeClaim": {"claimName": "db-backups"}}],
        "volumeMounts": [{"name": "backups", "mountPath": "/backups"}],
        "fsGroup": 10001,
    }
    ps = pod_spec(render(owner, settings, job=job))
    assert ps["volumes"][1] == {"name": "backups", "persistentVolumeClaim": {"claimName": "db-backups"}}
    assert ps["containers"][0]["volumeMounts"][1] == {"name": "backups", "mountPath": "/backups", "readOnly": False}
    assert ps["securityContext"]["fsGroup"] == 10001 and ps["securityContext"]["runAsNonRoot"] is True


def test_automount_can_be_enabled(owner: Owner, settings: Settings) -> None:
    ps = pod_spec(render(owner, settings, job={"builtin": "x", "automountServiceAccountToken": True}))
    assert ps["automountServiceAccountToken"] is True


@pytest.mark.parametrize("priority", ["critical", "high", "medium", "low"])
def test_priority_class(owner: Owner, settings: Settings, priority: str) -> None:
    obj = render(owner, settings, priority=priority)
    assert pod_spec(obj)["priorityClassName"] == settings.priority_classes[priority] == f"nightshift-{priority}"
    assert obj["metadata"]["annotations"][names.ANN_PRIORITY] == priority


def test_priority_classes_from_settings_or_off(owner: Owner) -> None:
    custom = Settings(priority_classes={"critical": "c", "high": "h", "medium": "m", "low": "l"})
    assert pod_spec(render(owner, custom, priority="high"))["priorityClassName"] == "h"
    off = Settings(use_priority_classes=False)
    assert "priorityClassName" not in pod_spec(render(owner, off))


def test_labels_annotations_and_owner(owner: Owner, settings: Settings) -> None:
    obj = render(
        owner,
        settings,
        queue="maintenance",
        dependsOn=[{"name": "a"}, {"name": "b"}],
        retry={"limit": 4, "backoff": {"initial": "30s", "factor": 3, "max": "2h", "jitter": 0.5}},
        job={"builtin": "ttl-cleanup", "labels": {"team": "data", names.LABEL_BGJ: "spoofed"}},
    )
    for labels in (
        obj["metadata"]["labels"],
        obj["spec"]["jobTemplate"]["metadata"]["labels"],
        obj["spec"]["jobTemplate"]["spec"]["template"]["metadata"]["labels"],
    ):
        assert labels[names.LABEL_BGJ] == "nightly"  # the user cannot override the operator's labels
        assert labels["team"] == "data"
        assert labels["app.kubernetes.io/managed-by"] == "nightshift"
        assert labels["app.kubernetes.io/instance"] == "nightly"
        assert labels["app.kubernetes.io/part-of"] == "nightshift"
        assert labels["app.kubernetes.io/name"] == "nightshift-job"
        assert labels["app.kubernetes.io/component"] == "background-job"
        assert names.LABEL_RUN not in labels
    for ann in (obj["metadata"]["annotations"], obj["spec"]["jobTemplate"]["metadata"]["annotations"]):
        assert ann[names.ANN_PRIORITY] == "medium"
        assert ann[names.ANN_QUEUE] == "maintenance"
        assert ann[names.ANN_DEPENDS_ON] == "a,b"
        assert ann[names.ANN_RETRY] == (
            "limit=4 backoff=30s*3^n max=2h jitter=0.5 nonRetryableExitCodes=64,65,78 retryOnTimeout=true"
        )
    assert names.ANN_HASH in obj["metadata"]["annotations"]
    assert names.ANN_HASH not in obj["spec"]["jobTemplate"]["metadata"]["annotations"]
    assert obj["metadata"]["ownerReferences"] == [
        {
            "apiVersion": "nightshift.dev/v1alpha1",
            "kind": "BackgroundJob",
            "name": "nightly",
            "uid": "0000-uid",
            "controller": True,
            "blockOwnerDeletion": True,
        }
    ]


def test_no_queue_or_depends_on_annotations_when_unset(owner: Owner, settings: Settings) -> None:
    ann = render(owner, settings)["metadata"]["annotations"]
    assert names.ANN_QUEUE not in ann and names.ANN_DEPENDS_ON not in ann
    assert "limit=2 " in ann[names.ANN_RETRY]  # the default for medium


def test_builtin_container(owner: Owner, settings: Settings) -> None:
    obj = render(owner, settings, job={"builtin": "ttl-cleanup", "params": {"table": "t", "batchSize": 5000}})
    ps = pod_spec(obj)
    (c,) = ps["containers"]
    assert c["name"] == "job"
    assert c["image"] == "registry.example/nightshift:test"
    assert c["command"] == ["python", "-m", "nightshift_jobs", "ttl-cleanup"]
    assert "args" not in c
    assert c["terminationMessagePolicy"] == "FallbackToLogsOnError"
    assert ps["securityContext"]["runAsUser"] == 10001
    env = env_of(obj)
    assert json.loads(env["NIGHTSHIFT_PARAMS"]) == {"table": "t", "batchSize": 5000}
    assert env["NIGHTSHIFT_BACKGROUNDJOB"] == "nightly"
    assert env["NIGHTSHIFT_NAMESPACE"] == "team"
    assert env["NIGHTSHIFT_ATTEMPT"] == "1"
    assert env["NIGHTSHIFT_RUN_ID"] == {"fieldRef": {"fieldPath": "metadata.labels['batch.kubernetes.io/job-name']"}}


def test_builtin_params_default_to_empty_object(owner: Owner, settings: Settings) -> None:
    assert env_of(render(owner, settings))["NIGHTSHIFT_PARAMS"] == "{}"


def test_image_container(owner: Owner, settings: Settings) -> None:
    job = {
        "image": "busybox:1",
        "command": ["sh", "-c"],
        "args": ["echo hi"],
        "env": [{"name": "A", "value": "1"}],
        "envFrom": [{"secretRef": {"name": "db"}}],
        "resources": {"limits": {"cpu": "1"}},
        "serviceAccountName": "runner",
        "nodeSelector": {"disk": "ssd"},
        "tolerations": [{"key": "k", "operator": "Exists"}],
        "annotations": {"x": "y"},
    }
    obj = render(owner, settings, job=job)
    ps = pod_spec(obj)
    (c,) = ps["containers"]
    assert c["image"] == "busybox:1"
    assert c["command"] == ["sh", "-c"] and c["args"] == ["echo hi"]
    assert c["envFrom"] == [{"secretRef": {"name": "db"}}]
    assert c["resources"] == {"limits": {"cpu": "1"}}
    assert "runAsUser" not in ps["securityContext"]
    assert ps["serviceAccountName"] == "runner"
    assert ps["nodeSelector"] == {"disk": "ssd"}
    assert ps["tolerations"] == [{"key": "k", "operator": "Exists"}]
    assert obj["spec"]["jobTemplate"]["spec"]["template"]["metadata"]["annotations"] == {"x": "y"}
    env = env_of(obj)
    assert "NIGHTSHIFT_PARAMS" not in env
    assert env["A"] == "1"


def test_rendered_hash_is_stable_and_tracks_the_spec(owner: Owner, settings: Settings) -> None:
    a = render(owner, settings)
    b = render(owner, settings)
    assert a == b
    h = a["metadata"]["annotations"][names.ANN_HASH]
    assert len(h) == 16
    unhashed = json.loads(json.dumps(a))
    del unhashed["metadata"]["annotations"][names.ANN_HASH]
    assert content_hash(unhashed) == h
    for change in ({"schedule": "0 4 * * *"}, {"timeout": "1h"}, {"priority": "high"}, {"suspend": True}):
        assert render(owner, settings, **change)["metadata"]["annotations"][names.ANN_HASH] != h
    other_image = Settings(jobs_image="registry.example/nightshift:next")
    assert render(owner, other_image)["metadata"]["annotations"][names.ANN_HASH] != h


def test_attempt_job(owner: Owner, settings: Settings) -> None:
    run = names.run_id("nightly", "manual", "nonce")
    s = spec(job={"builtin": "ttl-cleanup", "params": {"table": "t", "olderThan": "30d"}}, queue="q", timeout="10m")
    attempt = Attempt(
        run=run,
        attempt=2,
        trigger="manual",
        scheduled_time=t(2026, 3, 1, 9),
        not_before=t(2026, 3, 1, 9, 2),
        params={"olderThan": "7d"},
    )
    obj = attempt_job(owner, s, settings, attempt)
    md = obj["metadata"]
    assert obj["kind"] == "Job" and obj["apiVersion"] == "batch/v1"
    assert md["name"] == names.attempt_job_name(run, 2) != run
    assert md["namespace"] == "team"
    assert md["labels"][names.LABEL_RUN] == run
    assert md["labels"][names.LABEL_BGJ] == "nightly"
    assert obj["spec"]["template"]["metadata"]["labels"][names.LABEL_RUN] == run
    ann = md["annotations"]
    assert ann[names.ANN_ATTEMPT] == "2"
    assert ann[names.ANN_TRIGGER] == "manual"
    assert ann[names.ANN_SCHEDULED] == "2026-03-01T09:00:00Z"
    assert ann[names.ANN_NOT_BEFORE] == "2026-03-01T09:02:00Z"
    assert json.loads(ann[names.ANN_PARAMS]) == {"olderThan": "7d"}
    assert ann[names.ANN_QUEUE] == "q"
    assert md["ownerReferences"][0]["controller"] is True
    js = obj["spec"]
    assert js["suspend"] is True and js["backoffLimit"] == 0 and js["activeDeadlineSeconds"] == 600
    env = env_of(obj)
    assert env["NIGHTSHIFT_RUN_ID"] == run
    assert env["NIGHTSHIFT_ATTEMPT"] == "2"
    assert env["NIGHTSHIFT_SCHEDULED_TIME"] == "2026-03-01T09:00:00Z"
    assert json.loads(env["NIGHTSHIFT_PARAMS"]) == {"table": "t", "olderThan": "7d"}  # overrides merged


def test_attempt_job_minimal(owner: Owner, settings: Settings) -> None:
    obj = attempt_job(owner, spec(), settings, Attempt(run="nightly-mabc"))
    ann = obj["metadata"]["annotations"]
    assert obj["metadata"]["name"] == "nightly-mabc"
    assert ann[names.ANN_ATTEMPT] == "1" and ann[names.ANN_TRIGGER] == "manual"
    assert names.ANN_SCHEDULED not in ann and names.ANN_NOT_BEFORE not in ann and names.ANN_PARAMS not in ann
    assert "NIGHTSHIFT_SCHEDULED_TIME" not in env_of(obj)


def test_attempt_job_of_an_unscheduled_job_renders(owner: Owner, settings: Settings) -> None:
    s = spec(at="2026-06-01T00:00:00Z")
    assert cronjob(owner, s, settings) is None
    obj = attempt_job(owner, s, settings, Attempt(run=names.run_id("nightly", "at", "2026-06-01"), trigger="at"))
    assert obj["spec"]["suspend"] is True


@pytest.mark.parametrize("attempt", [1, 2, 3, 21])
def test_attempt_job_names_fit_for_a_52_character_job(settings: Settings, attempt: int) -> None:
    long = Owner(name="j" * 52, namespace="team", uid="u")
    run = names.run_id(long.name, "backfill", "2026-01-01T00:00:00Z")
    obj = attempt_job(long, spec(), settings, Attempt(run=run, attempt=attempt))
    assert len(obj["metadata"]["name"]) <= 63
    assert obj["metadata"]["name"] == names.attempt_job_name(run, attempt)
    assert all(len(v) <= 63 for v in obj["metadata"]["labels"].values())


def test_attempt_job_name_is_deterministic(owner: Owner, settings: Settings) -> None:
    a = Attempt(run="nightly-m0123456789", attempt=3, scheduled_time=t(2026, 1, 1))
    assert attempt_job(owner, spec(), settings, a) == attempt_job(owner, spec(), settings, a)
