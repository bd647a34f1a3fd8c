"""Small builders for unit tests: specs, Job dicts, attempt views and runs, all with explicit times."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

from nightshift.api import names
from nightshift.api.models import BackgroundJobSpec
from nightshift.core.runs import AttemptView, Run, attempt_view, group, with_pod

NS = "team"
UTC = dt.UTC


def t(year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0) -> dt.datetime:
    """An aware UTC datetime."""
    return dt.datetime(year, month, day, hour, minute, second, tzinfo=UTC)


def ts(when: dt.datetime) -> str:
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def spec(job: dict[str, Any] | None = None, **fields: Any) -> BackgroundJobSpec:
    """A BackgroundJobSpec; fields may use snake_case or camelCase names."""
    return BackgroundJobSpec.model_validate({"job": job or {"builtin": "ttl-cleanup"}, **fields})


def job(
    name: str,
    bgj: str = "nightly",
    *,
    namespace: str = NS,
    run: str | None = None,
    attempt: int | None = None,
    trigger: str | None = None,
    scheduled: dt.datetime | None = None,
    cron_scheduled: str | None = None,
    not_before: dt.datetime | None = None,
    created: dt.datetime | None = None,
    suspend: bool = True,
    started: dt.datetime | None = None,
    complete: dt.datetime | None = None,
    failed: dt.datetime | None = None,
    reason: str | None = None,
    message: str | None = None,
    outcome: str | None = None,
    gate: str | None = None,
    priority: str | None = None,
    queue: str | None = None,
    params: dict[str, Any] | str | None = None,
    counted: str | None = None,
    history_pending: bool = False,
    request: str | None = None,
) -> dict[str, Any]:
    """A batch/v1 Job as the API server returns it, with only what attempt_view reads."""
    labels = {names.LABEL_BGJ: bgj, names.LABEL_MANAGED: names.MANAGER}
    if run is not None:
        labels[names.LABEL_RUN] = run
    if request is not None:
        labels[names.LABEL_REQUEST] = request
    ann: dict[str, str] = {}
    for key, value in (
        (names.ANN_ATTEMPT, None if attempt is None else str(attempt)),
        (names.ANN_TRIGGER, trigger),
        (names.ANN_SCHEDULED, ts(scheduled) if scheduled else None),
        (names.CRONJOB_SCHEDULED, cron_scheduled),
        (names.ANN_NOT_BEFORE, ts(not_before) if not_before else None),
        (names.ANN_OUTCOME, outcome),
        (names.ANN_GATE, gate),
        (names.ANN_PRIORITY, priority),
        (names.ANN_QUEUE, queue),
        (names.ANN_PARAMS, params if isinstance(params, str) or params is None else json.dumps(params)),
        (names.ANN_COUNTED, counted),
        (names.ANN_HISTORY_PENDING, "true" if history_pending else None),
    ):
        if value is not None:
            ann[key] = value
    created = created or scheduled or t(2026, 1, 1)
    status: dict[str, Any] = {}
    conditions: list[dict[str, Any]] = []
    if started:
        status["startTime"] = ts(started)
    if complete:
        conditions.append({"type": "Complete", "status": "True", "lastTransitionTime": ts(complete)})
        status["completionTime"] = ts(complete)
    if failed:
        conditions.append(
            {
                "type": "Failed",
                "status": "True",
                "reason": reason or "BackoffLimitExceeded",
                "message": message or "Job has reached the specified backoff limit",
                "lastTransitionTime": ts(failed),
            }
        )
    if conditions:
        status["conditions"] = conditions
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "creationTimestamp": ts(created),
            "labels": labels,
            "annotations": ann,
        },
        "spec": {"suspend": suspend},
        "status": status,
    }


def pod(exit_code: int | None, message: str | None = None) -> dict[str, Any]:
    state: dict[str, Any] = {"running": {}} if exit_code is None else {"terminated": {"exitCode": exit_code}}
    if message is not None and exit_code is not None:
        state["terminated"]["message"] = message
    return {"status": {"containerStatuses": [{"name": "job", "state": state}]}}


def view(
    name: str, bgj: str = "nightly", *, exit_code: int | None = None, term_message: str | None = None, **kw: Any
) -> AttemptView:
    v = attempt_view(job(name, bgj, **kw))
    assert v is not None
    if exit_code is not None:
        v = with_pod(v, pod(exit_code, term_message))
    return v


def run(*views: AttemptView) -> Run:
    runs = group(views)
    assert len(runs) == 1, runs
    return runs[0]


# Ready-made states of a single-attempt run scheduled at `when`.
def waiting(name: str, when: dt.datetime, bgj: str = "nightly", **kw: Any) -> AttemptView:
    return view(name, bgj, scheduled=when, **kw)


def running(name: str, when: dt.datetime, bgj: str = "nightly", **kw: Any) -> AttemptView:
    return view(name, bgj, scheduled=when, suspend=False, started=when, **kw)


def succeeded(
    name: str, when: dt.datetime, bgj: str = "nightly", done: dt.timedelta = dt.timedelta(minutes=5), **kw: Any
) -> AttemptView:
    return view(name, bgj, scheduled=when, suspend=False, started=when, complete=when + done, exit_code=0, **kw)


def failed(
    name: str,
    when: dt.datetime,
    bgj: str = "nightly",
    *,
    code: int = 1,
    done: dt.timedelta = dt.timedelta(minutes=5),
    **kw: Any,
) -> AttemptView:
    reason = kw.pop("reason", "PodFailurePolicy" if code in (64, 65, 78) else "BackoffLimitExceeded")
    return view(
        name, bgj, scheduled=when, suspend=False, started=when, failed=when + done, reason=reason, exit_code=code, **kw
    )
