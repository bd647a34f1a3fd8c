"""plan(): every decision of a reconcile, without a cluster, on an injected clock."""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Any

from nightshift.api import names
from nightshift.core import gate, ledger, render
from nightshift.core.plan import (
    CronJobSeen,
    Observed,
    Problem,
    RequestSeen,
    plan,
    plan_cronjob,
    rejected,
    request_run_id,
    request_status,
)
from nightshift.core.runs import AttemptView, group
from nightshift.settings import Settings
from tests.unit.factories import NS, failed, running, spec, succeeded, t, view, waiting

NOW = t(2026, 3, 9, 14, 30)
OWNER = render.Owner("nightly", NS, "uid-1")
SETTINGS = Settings(jobs_image="img:1")


def observed(
    s: Any = None,
    views: list[AttemptView] | None = None,
    *,
    written: dict[str, Any] | None = None,
    annotations: dict[str, str] | None = None,
    requests: list[RequestSeen] | None = None,
    upstream: dict[str, Any] | None = None,
    cronjob: CronJobSeen | None = None,
    problem: Problem | None = None,
    now: dt.datetime = NOW,
    invalid: str | None = None,
) -> Observed:
    sp = None if invalid else (s or spec(schedule="0 3 * * *"))
    return Observed(
        owner=OWNER,
        generation=1,
        created=t(2026, 1, 1),
        annotations=annotations or {},
        spec=sp,
        invalid=invalid,
        written=written or {},
        runs=group(views or []),
        requests=requests or [],
        upstream=upstream or {},
        cronjob=cronjob,
        problem=problem,
        now=now,
        settings=SETTINGS,
    )


def planned(o: Observed, cron_problem: Problem | None = None) -> Any:
    return plan(o, plan_cronjob(o), cron_problem)


def ours(s: Any) -> CronJobSeen:
    want = render.cronjob(OWNER, s, SETTINGS)
    assert want is not None
    return CronJobSeen("uid-1", want["metadata"]["annotations"][names.ANN_HASH])


def cond(status: dict[str, Any], type_: str) -> dict[str, Any]:
    return next(c for c in status["conditions"] if c["type"] == type_)


# -- the CronJob ----------------------------------------------------------------------------------------
def test_cronjob_created_when_missing_left_when_current_replaced_when_changed() -> None:
    s = spec(schedule="0 3 * * *")
    assert plan_cronjob(observed(s)).action.verb == "create"  # type: ignore[union-attr]
    assert plan_cronjob(observed(s, cronjob=ours(s))).action is None
    stale = CronJobSeen("uid-1", "old-hash")
    c = plan_cronjob(observed(s, cronjob=stale))
    assert c.action is not None and c.action.verb == "replace" and c.name == "nightly"


def test_a_foreign_cronjob_is_a_conflict_never_adopted() -> None:
    for foreign in (CronJobSeen(None, None), CronJobSeen("someone-else", None)):
        c = plan_cronjob(observed(cronjob=foreign))
        assert c.action is None and c.problem is not None and c.problem.reason == "CronJobConflict"
        p = plan(observed(cronjob=foreign), c)
        assert cond(p.status, "Ready")["reason"] == "CronJobConflict"


def test_an_on_demand_job_deletes_its_old_cronjob() -> None:
    s = spec()
    c = plan_cronjob(observed(s, cronjob=CronJobSeen("uid-1", "x")))
    assert c.action is not None and c.action.verb == "delete" and c.name is None
    assert plan_cronjob(observed(s)).action is None


def test_a_refused_cronjob_makes_ready_false_with_the_api_servers_words() -> None:
    o = observed()
    p = planned(o, rejected("spec.schedule: Invalid value", "create"))
    ready = cond(p.status, "Ready")
    assert (ready["status"], ready["reason"]) == ("False", "InvalidSchedule")
    assert [e.reason for e in p.events] == ["InvalidSchedule"]
    assert rejected("spec.jobTemplate: bad", "replace").reason == "CronJobRejected"


def test_invalid_spec_is_reported_once() -> None:
    p = planned(observed(invalid="spec.every: 7m has no cron equivalent"))
    assert cond(p.status, "Ready")["reason"] == "InvalidSpec"
    assert [e.reason for e in p.events] == ["InvalidSpec"]
    again = planned(observed(invalid="spec.every: 7m has no cron equivalent", written=p.status))
    assert again.events == []


def test_ready_events_only_on_change() -> None:
    p = planned(observed())
    assert p.events == []  # a new job's Ready=True is in its condition: no event (one write less per job)
    assert planned(observed(written=p.status)).events == []
    bad = planned(observed(invalid="spec.every: 7m has no cron equivalent"))
    assert [e.reason for e in planned(observed(written=bad.status)).events] == ["Reconciled"]  # Ready again


# -- runs the operator makes ------------------------------------------------------------------------------
def test_run_now_nonce_makes_one_run_with_its_params() -> None:
    ann = {names.ANN_RUN_NOW: "n1", names.ANN_RUN_NOW + "-params": '{"olderThan": "7d"}'}
    p = planned(observed(spec(), annotations=ann))
    (new,) = p.create
    assert new.attempt.run == names.run_id("nightly", "manual", "n1")
    assert new.attempt.params == {"olderThan": "7d"} and new.attempt.trigger == "manual"
    assert "n1" in p.status["handledTriggers"]
    assert planned(observed(spec(), annotations=ann, written=p.status)).create == []


def test_bad_run_params_never_stop_the_run() -> None:
    ann = {names.ANN_RUN_NOW: "n2", names.ANN_RUN_NOW + "-params": "[1, 2]"}
    p = planned(observed(spec(), annotations=ann))
    assert len(p.create) == 1 and p.create[0].attempt.params == {}
    assert "InvalidRunParams" in [e.reason for e in p.events]


def test_a_long_nonce_is_remembered_as_a_digest() -> None:
    ann = {names.ANN_RUN_NOW: "x" * 300}
    p = planned(observed(spec(), annotations=ann))
    assert all(len(h) <= 128 for h in p.status["handledTriggers"])
    assert planned(observed(spec(), annotations=ann, written=p.status)).create == []


def test_run_on_create_and_at_run_once() -> None:
    at = t(2026, 3, 10, 8)
    p = planned(observed(spec(runOnCreate=True, at=at.isoformat())))
    triggers = sorted(n.attempt.trigger for n in p.create)
    assert triggers == ["at", "create"]
    at_run = next(n for n in p.create if n.attempt.trigger == "at")
    assert at_run.attempt.not_before == at
    assert planned(observed(spec(runOnCreate=True, at=at.isoformat()), written=p.status)).create == []


def test_chained_run_after_every_upstream_succeeded_since_the_last_run() -> None:
    up_spec = spec()
    up = group([succeeded("up-1", t(2026, 3, 9, 14), bgj="up")])
    s = spec(runAfter=["up"])
    p = planned(observed(s, upstream={"up": (up_spec, up)}))
    (new,) = p.create
    assert new.attempt.trigger == "chain"
    again = planned(observed(s, upstream={"up": (up_spec, up)}, written=p.status))
    assert again.create == []  # remembered in handledTriggers, even once the chained run is pruned
    mine = [succeeded(new.attempt.run, t(2026, 3, 9, 14, 20), trigger="chain")]
    assert planned(observed(s, mine, upstream={"up": (up_spec, up)})).create == []  # not newer than ours
    assert planned(observed(s, upstream={"up": (None, ())})).create == []
    assert (
        planned(observed(s, upstream={"up": (up_spec, group([failed("up-2", NOW, bgj="up", code=65)]))})).create == []
    )


def test_missed_runs_counted_and_caught_up_with_run_all() -> None:
    s = spec(schedule="0 * * * *", missedRuns="RunAll", maxCatchUp=2)
    views = [succeeded("nightly-1", t(2026, 3, 9, 10)), waiting("nightly-2", t(2026, 3, 9, 14))]
    p = planned(observed(s, views, written={"lastScheduleTime": "2026-03-09T10:00:00Z"}))
    assert p.missed == 3
    assert [n.attempt.scheduled_time for n in p.create] == [t(2026, 3, 9, 12), t(2026, 3, 9, 13)]
    assert "MissedRuns" in [e.reason for e in p.events]
    assert p.status["missedRuns"] == 3


# -- run requests ----------------------------------------------------------------------------------------------
def req(name: str, **kw: Any) -> RequestSeen:
    return RequestSeen(
        name=name,
        uid=f"uid-{name}",
        created=kw.pop("created", t(2026, 3, 9, 14, 29)),
        params=kw.pop("params", None),
        scheduled_time=kw.pop("scheduled_time", None),
        status=kw.pop("status", {}),
    )


def test_every_request_gets_its_own_run_none_overwrites_another() -> None:
    reqs = [req("a", params={"x": 1}), req("b"), req("c", scheduled_time=t(2026, 3, 1, 3))]
    p = planned(observed(spec(), requests=reqs))
    assert [n.attempt.request for n in p.create] == ["a", "b", "c"]
    assert [n.attempt.trigger for n in p.create] == ["manual", "manual", "backfill"]
    assert p.create[0].attempt.params == {"x": 1}
    assert p.create[2].attempt.scheduled_time == t(2026, 3, 1, 3)
    assert len({n.attempt.run for n in p.create}) == 3
    assert set(p.request_status) == {"a", "b", "c"}
    assert all(s["phase"] == "Pending" for s in p.request_status.values())


def test_a_request_with_a_run_is_not_run_again_and_carries_its_result() -> None:
    r = req("a")
    rid = request_run_id("a", "uid-a", "nightly", NS)
    views = [succeeded(rid, t(2026, 3, 9, 14, 29), request="a", trigger="manual")]
    p = planned(observed(spec(), views, requests=[r]))
    assert p.create == []
    st = p.request_status["a"]
    assert st["phase"] == "Succeeded" and st["runId"] == rid
    assert cond(st, "Finished")["status"] == "True" and cond(st, "Succeeded")["status"] == "True"
    done = req("a", status=st)
    assert planned(observed(spec(), views, requests=[done])).request_status == {}
    # pruned run: the request keeps its result and is never run again
    assert planned(observed(spec(), [], requests=[done])).create == []


def test_request_status_while_running_and_failed() -> None:
    s = spec(retry={"limit": 0})
    rid = "r1"
    run_ = group([running(rid, NOW)])[0]
    st = request_status(run_, s, NOW, {})
    assert st["phase"] == "Running" and cond(st, "Finished")["status"] == "False"
    assert cond(st, "Succeeded")["status"] == "Unknown"
    bad = group([failed(rid, NOW, code=3)])[0]
    st = request_status(bad, s, NOW, st)
    assert st["phase"] == "Failed" and st["exitCode"] == 3 and cond(st, "Succeeded")["status"] == "False"


def test_requests_wait_while_the_job_cannot_be_served() -> None:
    p = planned(observed(spec(), requests=[req("a")], problem=Problem("DependencyNotFound", "x")))
    assert p.create == []


# -- retries, the ledger, quarantine, pruning ------------------------------------------------------------------
def test_a_retryable_failure_gets_its_next_attempt_after_backoff() -> None:
    s = spec(retry={"limit": 2, "backoff": {"initial": "1m", "factor": 2, "jitter": 0}})
    views = [failed("nightly-1", t(2026, 3, 9, 14), code=1)]
    p = planned(observed(s, views))
    (new,) = p.create
    assert new.attempt.attempt == 2 and new.retry
    assert new.attempt.not_before == t(2026, 3, 9, 14, 5) + dt.timedelta(minutes=1)
    assert p.endings == []


def test_overlapping_runs_each_end_once() -> None:
    s = spec(concurrencyPolicy="Allow")
    views = [succeeded(f"nightly-{i}", t(2026, 3, 9, 14, i)) for i in range(5)]
    p = planned(observed(s, views))
    assert [e.result for e in p.endings] == ["Succeeded"] * 5
    marked = [succeeded(f"nightly-{i}", t(2026, 3, 9, 14, i), counted="Succeeded") for i in range(5)]
    assert planned(observed(s, marked)).endings == []


def test_a_mark_written_but_not_yet_watched_counts_as_counted() -> None:
    """A pass between the mark's write and the watch bringing it back (another run's event queued the
    job meanwhile) counts nothing twice; pruning still waits for the mark to be seen."""
    s = spec(concurrencyPolicy="Allow", history={"successful": 1, "failed": 1})
    views = [succeeded(f"nightly-{i}", t(2026, 3, 9, 14, i)) for i in range(3)]
    o = dataclasses.replace(observed(s, views), counting=frozenset({"nightly-0", "nightly-1"}))
    p = planned(o)
    assert [e.run.id for e in p.endings] == ["nightly-2"]
    assert p.delete_jobs == []
    assert p.status == planned(observed(s, views)).status  # the status does not depend on the ledger


def test_a_failure_next_to_a_newer_skip_is_counted_and_dead_letters() -> None:
    views = [
        failed("nightly-1", t(2026, 3, 9, 13), code=65),
        waiting("nightly-2", t(2026, 3, 9, 14), outcome="Skipped: ConcurrencyForbid: run nightly-1 is still running"),
    ]
    p = planned(observed(spec(), views))
    assert sorted(e.result for e in p.endings) == ["Failed", "Skipped"]
    assert cond(p.status, "DeadLettered")["status"] == "True"
    assert p.status["lastRun"]["result"] == "Skipped"
    skip = next(e for e in p.endings if e.result == "Skipped")
    assert skip.reason_kind == "ConcurrencyForbid" and skip.event[1] == "RunSkipped"
    fail = next(e for e in p.endings if e.result == "Failed")
    assert fail.event[:2] == ("Warning", "RunFailed") and fail.metric_result == "failed"


def test_last_run_names_one_run_only() -> None:
    views = [succeeded("nightly-1", t(2026, 3, 9, 13)), running("nightly-2", t(2026, 3, 9, 14))]
    last = planned(observed(spec(), views)).status["lastRun"]
    assert last["id"] == "nightly-2" and last["result"] == "Running"
    assert "completionTime" not in last and "exitCode" not in last


def test_quarantine_after_consecutive_failures_once() -> None:
    s = spec(quarantineAfter=2, retry={"limit": 0})
    views = [failed("nightly-1", t(2026, 3, 9, 12), code=1), failed("nightly-2", t(2026, 3, 9, 13), code=1)]
    p = planned(observed(s, views))
    assert p.quarantine and [e.reason for e in p.events].count("Quarantined") == 1
    again = planned(observed(s, views, written=p.status))
    assert again.quarantine and "Quarantined" not in [e.reason for e in again.events]
    suspended = spec(quarantineAfter=2, retry={"limit": 0}, suspend=True)
    assert not planned(observed(suspended, views, written=p.status)).quarantine


def test_pruning_only_removes_counted_runs() -> None:
    s = spec(history={"successful": 1, "failed": 1})
    views = [
        succeeded("nightly-1", t(2026, 3, 9, 10), counted="Succeeded"),
        succeeded("nightly-2", t(2026, 3, 9, 11)),
        succeeded("nightly-3", t(2026, 3, 9, 12), counted="Succeeded"),
    ]
    p = planned(observed(s, views))
    assert p.delete_jobs == ["nightly-1"]  # nightly-2 is not counted yet: it stays until it is


def test_a_run_counted_while_history_was_down_is_offered_again_and_kept_until_recorded() -> None:
    s = spec(history={"successful": 1, "failed": 1})
    views = [
        succeeded("nightly-1", t(2026, 3, 9, 10), counted="Succeeded", history_pending=True),
        succeeded("nightly-2", t(2026, 3, 9, 11), counted="Succeeded"),
        succeeded("nightly-3", t(2026, 3, 9, 12), counted="Succeeded"),
    ]
    p = planned(observed(s, views))
    assert p.delete_jobs == ["nightly-2"]  # nightly-1 is beyond the limit too, but its rows are not in yet
    assert p.endings == []  # counted once: only the rows are offered again
    assert [(job, [r.result for r in rows]) for job, rows in p.unrecorded] == [("nightly-1", ["Succeeded"])]
    assert p.requeue_after is not None and p.requeue_after <= dt.timedelta(seconds=30)


def test_a_request_outlives_its_pruned_run_for_a_while() -> None:
    s = spec(history={"successful": 0, "failed": 1})
    rid = request_run_id("a", "uid-a", "nightly", NS)
    done = {"phase": "Succeeded", "completionTime": "2026-03-09T14:25:00Z"}
    views = [succeeded(rid, t(2026, 3, 9, 14, 20), request="a", counted="Succeeded")]
    p = planned(observed(s, views, requests=[req("a", status=done)]))
    assert p.delete_jobs == [rid] and p.delete_requests == []
    assert p.requeue_after == dt.timedelta(minutes=5)  # ten minutes after it ended
    later = planned(observed(s, [], requests=[req("a", status=done)], now=t(2026, 3, 9, 14, 36)))
    assert later.delete_requests == ["a"] and later.create == []
    running_req = planned(observed(s, [], requests=[req("b", status={"phase": "Running"})], now=t(2026, 3, 9, 15)))
    assert running_req.delete_requests == []


def test_ledger_rows_and_durations() -> None:
    s = spec(retry={"limit": 1, "backoff": {"initial": "1m", "jitter": 0}})
    views = [
        failed("r-1", t(2026, 3, 9, 12), run="r", code=1),
        view(
            "r-a2",
            run="r",
            attempt=2,
            scheduled=t(2026, 3, 9, 12),
            suspend=False,
            started=t(2026, 3, 9, 12, 7),
            complete=t(2026, 3, 9, 12, 9),
            exit_code=0,
        ),
    ]
    (end,) = ledger.endings(group(views), gate.retry_rule(s))
    assert end.result == "Succeeded" and end.job == "r-a2"
    assert end.duration_s == 9 * 60
    assert [r.result for r in end.history] == ["Failed", "Succeeded"]


def test_missed_slots_count_from_the_cronjobs_creation_when_nothing_ran_yet() -> None:
    """The CronJob controller starts at its CronJob's creation; so does the count of missed slots."""
    s = spec(schedule="0 * * * *", missedRuns="RunAll")
    seen = CronJobSeen("uid-1", None, t(2026, 3, 9, 11, 30))
    p = planned(observed(s, [waiting("nightly-2", t(2026, 3, 9, 14))], cronjob=seen))
    assert p.missed == 2  # 12:00 and 13:00; 11:00 came before the CronJob existed
    assert [n.attempt.scheduled_time for n in p.create] == [t(2026, 3, 9, 12), t(2026, 3, 9, 13)]
    assert planned(observed(s, [waiting("nightly-2", t(2026, 3, 9, 14))])).missed == 0  # no CronJob seen: no base


def test_slots_while_suspended_are_refused_not_missed() -> None:
    s = spec(schedule="0 * * * *", missedRuns="RunAll")
    resumed = {"type": "Suspended", "status": "False", "lastTransitionTime": "2026-03-09T12:30:00Z"}
    written = {"lastScheduleTime": "2026-03-09T10:00:00Z", "conditions": [resumed]}
    p = planned(observed(s, [waiting("nightly-5", t(2026, 3, 9, 14))], written=written))
    assert p.missed == 1  # only 13:00 came after the resume
    assert [n.attempt.scheduled_time for n in p.create] == [t(2026, 3, 9, 13)]


def test_a_request_for_a_job_that_does_not_exist_says_so_once_and_an_ended_one_keeps_its_result() -> None:
    from nightshift.core.plan import orphan_request_status

    first = orphan_request_status("ghost", NS, NOW, {})
    assert first is not None and first["phase"] == "Pending" and first["reason"] == "BackgroundJobNotFound"
    assert "no BackgroundJob ghost in namespace team" in first["message"]
    finished = next(c for c in first["conditions"] if c["type"] == "Finished")
    assert finished["status"] == "False" and finished["reason"] == "BackgroundJobNotFound"
    assert orphan_request_status("ghost", NS, NOW, first) is None  # written once
    assert orphan_request_status("ghost", NS, NOW, {"phase": "Succeeded"}) is None
