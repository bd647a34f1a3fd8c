"""Pure rendering: BackgroundJob -> CronJob, and a run attempt -> Job. No I/O here.

Every Job is born suspended with backoffLimit 0: the operator's gate starts it and the operator
creates each retry as a new attempt, so Kubernetes' fixed 10 s-doubling backoff never applies. The
CronJob's own concurrencyPolicy is always Allow; the job's policy is enforced by the gate, which
can see retries and queued runs that the CronJob controller cannot.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from nightshift.api import durations, names
from nightshift.api.models import API_VERSION, BackgroundJobSpec
from nightshift.core import schedule
from nightshift.settings import Settings

Obj = dict[str, Any]


@dataclass(frozen=True)
class Owner:
    name: str
    namespace: str
    uid: str
    kind: str = "BackgroundJob"
    api_version: str = API_VERSION

    def reference(self) -> Obj:
        return {
            "apiVersion": self.api_version,
            "kind": self.kind,
            "name": self.name,
            "uid": self.uid,
            "controller": True,
            "blockOwnerDeletion": True,
        }


@dataclass(frozen=True)
class Attempt:
    """One attempt of one run, for Jobs the operator creates itself."""

    run: str
    attempt: int = 1
    trigger: str = "manual"
    scheduled_time: dt.datetime | None = None
    not_before: dt.datetime | None = None
    params: Obj = field(default_factory=dict)
    request: str | None = None  # the BackgroundJobRun this run was made for (a label on its Jobs)


def labels(owner: Owner, spec: BackgroundJobSpec) -> dict[str, str]:
    return {
        **(spec.job.labels or {}),
        names.LABEL_BGJ: owner.name,
        "app.kubernetes.io/name": "nightshift-job",
        "app.kubernetes.io/instance": owner.name,
        "app.kubernetes.io/component": "background-job",
        "app.kubernetes.io/part-of": "nightshift",
        names.LABEL_MANAGED: names.MANAGER,
    }


def policy_annotations(spec: BackgroundJobSpec) -> dict[str, str]:
    """What the gate will apply, written where a person reading the CronJob or Job sees it."""
    b = spec.retry.backoff
    out = {
        names.ANN_PRIORITY: spec.priority,
        names.ANN_CONCURRENCY: spec.concurrency_policy,
        names.ANN_RETRY: (
            f"limit={spec.retry_limit} backoff={b.initial}*{b.factor:g}^n max={b.max} jitter={b.jitter:g} "
            f"nonRetryableExitCodes={','.join(map(str, spec.retry.non_retryable_exit_codes))} "
            f"retryOnTimeout={str(spec.retry.retry_on_timeout).lower()}"
        ),
    }
    if spec.queue:
        out[names.ANN_QUEUE] = spec.queue
    if spec.depends_on:
        out[names.ANN_DEPENDS_ON] = ",".join(d.name for d in spec.depends_on)
    return out


def _env(owner: Owner, spec: BackgroundJobSpec, settings: Settings, attempt: Attempt | None) -> list[Obj]:
    env: list[Obj] = [
        {"name": "NIGHTSHIFT_BACKGROUNDJOB", "value": owner.name},
        {"name": "NIGHTSHIFT_NAMESPACE", "value": owner.namespace},
    ]
    if attempt is None:  # a CronJob's Job: the run is the Job itself
        env += [
            {
                "name": "NIGHTSHIFT_RUN_ID",
                "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['batch.kubernetes.io/job-name']"}},
            },
            {"name": "NIGHTSHIFT_ATTEMPT", "value": "1"},
        ]
    else:
        env += [
            {"name": "NIGHTSHIFT_RUN_ID", "value": attempt.run},
            {"name": "NIGHTSHIFT_ATTEMPT", "value": str(attempt.attempt)},
        ]
        if attempt.scheduled_time:
            env.append({"name": "NIGHTSHIFT_SCHEDULED_TIME", "value": _ts(attempt.scheduled_time)})
    params = {**(spec.job.params or {}), **(attempt.params if attempt else {})}
    if spec.job.builtin or params:  # custom images get per-run overrides (a trigger's payload) the same way
        env.append({"name": "NIGHTSHIFT_PARAMS", "value": json.dumps(params, sort_keys=True)})
    return env + list(spec.job.env or [])


def pod_template(owner: Owner, spec: BackgroundJobSpec, settings: Settings, attempt: Attempt | None) -> Obj:
    job = spec.job
    if job.builtin:
        image = settings.jobs_image
        command = [settings.jobs_python, "-m", "nightshift_jobs", job.builtin]
        args: list[str] = []
    else:
        image = job.image or ""
        command = list(job.command or [])
        args = list(job.args or [])
    container: Obj = {
        "name": "job",
        "image": image,
        "env": _env(owner, spec, settings, attempt),
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},
        },
        "volumeMounts": [
            {"name": "tmp", "mountPath": "/tmp"},
            *(m.model_dump(by_alias=True, exclude_none=True) for m in job.volume_mounts or []),
        ],
    }
    if command:
        container["command"] = command
    if args:
        container["args"] = args
    if job.env_from:
        container["envFrom"] = list(job.env_from)
    if job.resources:
        container["resources"] = dict(job.resources)
    pod_labels = labels(owner, spec)
    if attempt is not None:
        pod_labels[names.LABEL_RUN] = attempt.run
    pod: Obj = {
        "restartPolicy": "Never",
        "automountServiceAccountToken": job.automount_service_account_token,
        "securityContext": {
            "runAsNonRoot": True,
            "seccompProfile": {"type": "RuntimeDefault"},
            **({"runAsUser": 10001, "runAsGroup": 10001} if job.builtin else {}),
            **({"fsGroup": job.fs_group} if job.fs_group is not None else {}),
        },
        "containers": [container],
        "volumes": [
            {"name": "tmp", "emptyDir": {"sizeLimit": "1Gi"}},
            *(v.model_dump(by_alias=True, exclude_none=True) for v in job.volumes or []),
        ],
    }
    if settings.use_priority_classes:
        pod["priorityClassName"] = settings.priority_classes[spec.priority]
    if job.service_account_name:
        pod["serviceAccountName"] = job.service_account_name
    if job.node_selector:
        pod["nodeSelector"] = dict(job.node_selector)
    if job.tolerations:
        pod["tolerations"] = list(job.tolerations)
    return {"metadata": {"labels": pod_labels, "annotations": dict(job.annotations or {})}, "spec": pod}


def job_spec(owner: Owner, spec: BackgroundJobSpec, settings: Settings, attempt: Attempt | None) -> Obj:
    rules: list[Obj] = [{"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget"}]}]
    codes = sorted(set(spec.retry.non_retryable_exit_codes))
    if codes:
        rules.append({"action": "FailJob", "onExitCodes": {"containerName": "job", "operator": "In", "values": codes}})
    out: Obj = {
        "suspend": True,
        "backoffLimit": 0,
        "podFailurePolicy": {"rules": rules},
        "template": pod_template(owner, spec, settings, attempt),
    }
    if spec.timeout:
        out["activeDeadlineSeconds"] = max(1, int(durations.seconds(spec.timeout)))
    return out


def cronjob(owner: Owner, spec: BackgroundJobSpec, settings: Settings) -> Obj | None:
    """The CronJob of a scheduled job, or None for at/on-demand/chained jobs (the operator creates those runs)."""
    cron = schedule.cron_of(spec.schedule, spec.every)
    if cron is None:
        return None
    body: Obj = {
        "schedule": cron,
        "timeZone": spec.time_zone,
        "suspend": spec.suspend,
        "concurrencyPolicy": "Allow",
        "successfulJobsHistoryLimit": spec.history.successful,
        "failedJobsHistoryLimit": spec.history.failed,
        "jobTemplate": {
            "metadata": {"labels": labels(owner, spec), "annotations": policy_annotations(spec)},
            "spec": job_spec(owner, spec, settings, None),
        },
    }
    if spec.starting_deadline:
        body["startingDeadlineSeconds"] = max(10, int(durations.seconds(spec.starting_deadline)))
    obj: Obj = {
        "apiVersion": "batch/v1",
        "kind": "CronJob",
        "metadata": {
            "name": owner.name,
            "namespace": owner.namespace,
            "labels": labels(owner, spec),
            "annotations": policy_annotations(spec),
            "ownerReferences": [owner.reference()],
        },
        "spec": body,
    }
    obj["metadata"]["annotations"][names.ANN_HASH] = content_hash(obj)
    return obj


def attempt_job(owner: Owner, spec: BackgroundJobSpec, settings: Settings, attempt: Attempt) -> Obj:
    annotations = {
        **policy_annotations(spec),
        names.ANN_ATTEMPT: str(attempt.attempt),
        names.ANN_TRIGGER: attempt.trigger,
    }
    if attempt.scheduled_time:
        annotations[names.ANN_SCHEDULED] = _ts(attempt.scheduled_time)
    if attempt.not_before:
        annotations[names.ANN_NOT_BEFORE] = _ts(attempt.not_before)
    if attempt.params:
        annotations[names.ANN_PARAMS] = json.dumps(attempt.params, sort_keys=True)
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": names.attempt_job_name(attempt.run, attempt.attempt),
            "namespace": owner.namespace,
            "labels": {
                **labels(owner, spec),
                names.LABEL_RUN: attempt.run,
                **({names.LABEL_REQUEST: attempt.request[:63]} if attempt.request else {}),
            },
            "annotations": annotations,
            "ownerReferences": [owner.reference()],
        },
        "spec": job_spec(owner, spec, settings, attempt),
    }


def content_hash(obj: Obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _ts(t: dt.datetime) -> str:
    return t.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
