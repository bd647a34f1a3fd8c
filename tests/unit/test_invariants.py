"""The invariant checker finds each broken promise: a checker that cannot fail checks nothing."""

from __future__ import annotations

import datetime as dt
from typing import Any

from nightshift.api import names
from tests.support.invariants import Attempt, Evidence, violations

T0 = dt.datetime(2026, 3, 9, 10, 0, tzinfo=dt.UTC)


def ts(t: dt.datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def job(
    name: str, run: str, *, attempt: int = 1, result: str | None = "Succeeded", counted: str | None = "same", **kw: Any
) -> dict[str, Any]:
    ann = {names.ANN_ATTEMPT: str(attempt), names.ANN_TRIGGER: kw.get("trigger", "manual")}
    if kw.get("scheduled"):
        ann[names.ANN_SCHEDULED] = ts(kw["scheduled"])
    if counted:
        ann[names.ANN_COUNTED] = result if counted == "same" else counted
    conditions = []
    if result in ("Succeeded", "Failed"):
        conditions.append(
            {
                "type": "Complete" if result == "Succeeded" else "Failed",
                "status": "True",
                "lastTransitionTime": ts(kw.get("finished", T0)),
            }
        )
    return {
        "metadata": {
            "name": name,
            "creationTimestamp": ts(T0),
            "labels": {names.LABEL_BGJ: kw.get("bgj", "nightly"), names.LABEL_RUN: run},
            "annotations": ann,
        },
        "status": {"startTime": ts(T0), "conditions": conditions},
    }


def bgj(name: str = "nightly", **spec: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "namespace": "team", "uid": "uid-1", "creationTimestamp": ts(T0)},
        "spec": spec,
        "status": spec.pop("status", {}),
    }


def end_event(run: str, reason: str = "RunSucceeded", count: int = 1, name: str | None = None) -> dict[str, Any]:
    want = f"nightly.{names.digest('uid-1', f'end/{run}', size=16)}"
    return {
        "metadata": {"name": name or want},
        "reason": reason,
        "message": f"run {run} succeeded",
        "count": count,
        "involvedObject": {"name": "nightly"},
    }


def evidence(
    jobs: list[dict[str, Any]],
    events: list[dict[str, Any]],
    *,
    bgjs: Any = None,
    history: Any = None,
    cronjobs: Any = None,
    metrics: str | None = None,
) -> Evidence:
    return Evidence(
        bgjs=bgjs or {"nightly": bgj(status={"lastRun": {"id": "r1", "result": "Succeeded"}})},
        cronjobs=cronjobs or {},
        attempts=[Attempt.of(j) for j in jobs],
        requests={},
        events=events,
        history=history or [],
        metrics=metrics,
        history_kept=history is not None,
    )


def row(run: str, attempt: int = 1, result: str = "Succeeded", **kw: Any) -> dict[str, Any]:
    return {
        "run_id": run,
        "attempt": attempt,
        "result": result,
        "backgroundjob": "nightly",
        "trigger": kw.get("trigger", "manual"),
        "scheduled_time": kw.get("scheduled"),
    }


def test_a_clean_scenario_has_no_violation() -> None:
    assert violations(evidence([job("r1", "r1")], [end_event("r1")], history=[row("r1")])) == []


def test_each_broken_promise_is_named() -> None:
    assert any("end events" in v for v in violations(evidence([job("r1", "r1")], [])))
    assert any(
        "2 end events" in v
        for v in violations(evidence([job("r1", "r1")], [end_event("r1"), end_event("r1", name="x")]))
    )
    assert any("count 2" in v for v in violations(evidence([job("r1", "r1")], [end_event("r1", count=2)])))
    assert any(
        "not the ledger's" in v for v in violations(evidence([job("r1", "r1")], [end_event("r1", name="other")]))
    )
    assert any(
        "after a succeeded" in v
        for v in violations(evidence([job("r1", "r1"), job("r1-a2", "r1", attempt=2)], [end_event("r1")]))
    )
    assert any(
        "attempt numbers twice" in v
        for v in violations(evidence([job("r1", "r1"), job("r1x", "r1")], [end_event("r1")]))
    )
    assert any("no history row" in v for v in violations(evidence([job("r1", "r1")], [end_event("r1")], history=[])))
    assert any(
        "history rows" in v
        for v in violations(evidence([job("r1", "r1")], [end_event("r1")], history=[row("r1"), row("r1")]))
    )
    assert any(
        "its Job says" in v
        for v in violations(evidence([job("r1", "r1", counted="Failed")], [end_event("r1", "RunFailed")]))
    )
    lying = {"nightly": bgj(status={"lastRun": {"id": "r1", "result": "Failed"}})}
    assert any("status.lastRun" in v for v in violations(evidence([job("r1", "r1")], [end_event("r1")], bgjs=lying)))


def test_a_scheduled_slot_without_a_run_or_a_missed_record_is_found() -> None:
    spec_: dict[str, Any] = {"schedule": "0 * * * *", "status": {"lastRun": {"id": "r3", "result": "Succeeded"}}}
    jobs = [job(f"r{i}", f"r{i}", trigger="schedule", scheduled=T0 + dt.timedelta(hours=i)) for i in (1, 3)]
    events = [end_event("r1"), end_event("r3")]
    cron = {"nightly": {"metadata": {"creationTimestamp": ts(T0)}}}
    history = [
        row("r1", trigger="schedule", scheduled=T0 + dt.timedelta(hours=1)),
        row("r3", trigger="schedule", scheduled=T0 + dt.timedelta(hours=3)),
    ]
    found = violations(evidence(jobs, events, bgjs={"nightly": bgj(**spec_)}, cronjobs=cron, history=history))
    assert found == ["nightly: scheduled slot 2026-03-09T12:00:00+00:00 has no run and no MissedRuns record"]
    missed = {
        "reason": "MissedRuns",
        "involvedObject": {"name": "nightly"},
        "message": f"1 scheduled runs missed between {ts(T0 + dt.timedelta(hours=1))} and {ts(T0 + dt.timedelta(hours=3))} (skipped)",
        "metadata": {"name": "m"},
    }
    spec_ = {"schedule": "0 * * * *", "status": {"lastRun": {"id": "r3", "result": "Succeeded"}}}
    assert (
        violations(evidence(jobs, [*events, missed], bgjs={"nightly": bgj(**spec_)}, cronjobs=cron, history=history))
        == []
    )


def test_runs_total_must_match_the_counted_runs() -> None:
    metrics = 'nightshift_runs_total{namespace="team",backgroundjob="nightly",result="succeeded"} 2.0\n'
    found = violations(
        evidence([job("r1", "r1")], [end_event("r1")], metrics=metrics), metrics_since=T0 - dt.timedelta(hours=1)
    )
    assert any("is 2, 1 runs ended" in v for v in found)
    assert (
        violations(
            evidence([job("r1", "r1")], [end_event("r1")], metrics=metrics), metrics_since=T0 + dt.timedelta(hours=1)
        )
        == []
    )
