from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from nightshift.api.models import BackgroundJobSpec, Condition
from nightshift.core import status
from nightshift.core.runs import AttemptView, group
from tests.unit.factories import failed, running, spec, succeeded, t, ts, view, waiting

NOW = t(2026, 3, 9, 14, 30)
HOUR = dt.timedelta(hours=1)
DAILY = {"schedule": "0 9 * * *", "timeZone": "America/New_York"}


def build(
    s: BackgroundJobSpec, views: list[AttemptView], prev: dict[str, Any] | None = None, **kw: Any
) -> dict[str, Any]:
    kw.setdefault("generation", 3)
    kw.setdefault("now", NOW)
    kw.setdefault("cron_job", "nightly")
    return status.build(s, group(views), prev or {}, **kw)


def cond(st: dict[str, Any], type_: str) -> dict[str, Any]:
    return next(c for c in st["conditions"] if c["type"] == type_)


def day(n: int) -> dt.datetime:
    return t(2026, 3, n, 13)


def test_basic_status_of_a_scheduled_job() -> None:
    st = build(spec(**DAILY), [succeeded("r1", day(7)), succeeded("r2", day(8))])
    assert st["observedGeneration"] == 3
    assert st["schedule"] == "0 9 * * *"
    assert st["cronJob"] == "nightly"
    assert st["lastScheduleTime"] == ts(day(8))
    assert st["lastSuccessfulTime"] == ts(day(8) + dt.timedelta(minutes=5))
    assert "lastFailureTime" not in st
    assert st["consecutiveFailures"] == 0
    assert st["nextScheduleTime"] == "2026-03-10T13:00:00Z"  # 09:00 EDT
    assert st["missedRuns"] == 0 and st["skippedRuns"] == 0 and st["waiting"] == 0 and st["active"] == 0
    assert st["handledTriggers"] == []
    assert [c["type"] for c in st["conditions"]] == ["Ready", "Suspended", "Running", "Quarantined", "DeadLettered"]
    ready = cond(st, "Ready")
    assert ready["status"] == "True" and ready["reason"] == "Reconciled"
    assert ready["message"] == "schedule 0 9 * * *"
    assert ready["lastTransitionTime"] == ts(NOW) and ready["observedGeneration"] == 3
    assert all(v is not None for v in st.values())


def test_conditions_are_valid_metav1_conditions() -> None:
    st = build(spec(**DAILY), [failed("r1", day(8))], problem=("InvalidSchedule", "bad"))
    for c in st["conditions"]:
        Condition.model_validate(c)


def test_status_validates_against_the_api_model() -> None:
    from nightshift.api.models import BackgroundJobStatus

    st = build(
        spec(**DAILY),
        [failed("r1", day(7), code=64, term_message='{"message": "bad", "rows": 0}'), running("r2", day(8))],
    )
    BackgroundJobStatus.model_validate(st)


def test_next_schedule_time() -> None:
    assert build(spec(every="5m"), [])["nextScheduleTime"] == "2026-03-09T14:35:00Z"
    assert "nextScheduleTime" not in build(spec(suspend=True, **DAILY), [])
    assert "nextScheduleTime" not in build(spec(**DAILY), [], problem=("InvalidSchedule", "x"))
    assert "nextScheduleTime" not in build(spec(), [])  # on demand
    assert build(spec(at="2026-04-01T00:00:00Z"), [])["nextScheduleTime"] == "2026-04-01T00:00:00Z"
    assert "nextScheduleTime" not in build(spec(at="2026-03-01T00:00:00Z"), [])  # already past


@pytest.mark.parametrize(
    ("fields", "text"),
    [
        ({"every": "5m"}, "every 5m"),
        ({}, "on demand"),
        ({"at": "2026-04-01T02:00:00+02:00"}, "at 2026-04-01T00:00:00Z"),
    ],
)
def test_schedule_for_people(fields: dict[str, Any], text: str) -> None:
    assert build(spec(**fields), [])["schedule"] == text


def test_timestamps_are_carried_over_and_never_move_backwards() -> None:
    prev = {
        "lastSuccessfulTime": "2026-03-09T00:00:00Z",
        "lastFailureTime": "2026-01-01T00:00:00Z",
        "lastScheduleTime": "2026-03-09T13:00:00Z",
    }
    st = build(spec(**DAILY), [succeeded("r1", day(7)), failed("r2", day(8), code=64)], prev)
    assert st["lastSuccessfulTime"] == "2026-03-09T00:00:00Z"  # newer than any visible success
    assert st["lastFailureTime"] == ts(day(8) + dt.timedelta(minutes=5))  # newer than the old one
    assert st["lastScheduleTime"] == "2026-03-09T13:00:00Z"
    # every Job pruned: nothing is forgotten
    st = build(spec(**DAILY), [], prev)
    for key, value in prev.items():
        assert st[key] == value


def test_consecutive_failures() -> None:
    s = spec(**DAILY)
    assert build(s, [failed("r1", day(1), code=64), succeeded("r2", day(2))])["consecutiveFailures"] == 0
    runs = [succeeded("r1", day(1)), failed("r2", day(2), code=64), failed("r3", day(3), code=64)]
    assert build(s, runs)["consecutiveFailures"] == 2
    # runs not finished yet (waiting, running, retrying) neither count nor reset
    more = [*runs, failed("r4", day(4), code=75), running("r5", day(5)), waiting("r6", day(6))]
    st = build(s, more)
    assert st["consecutiveFailures"] == 2
    assert st["active"] == 1 and st["waiting"] == 2
    # retries exhausted is a failed run
    exhausted = [failed(f"r4-a{i}", day(4), run="r4", attempt=i, code=75) for i in (1, 2, 3)]
    assert build(s, [*runs, *exhausted])["consecutiveFailures"] == 3


def test_consecutive_failures_carried_over_when_no_jobs_are_left() -> None:
    assert build(spec(**DAILY), [], {"consecutiveFailures": 4})["consecutiveFailures"] == 4


def test_consecutive_failures_survive_history_pruning() -> None:
    s = spec(quarantineAfter=6, history={"failed": 5}, **DAILY)
    visible = [failed(f"r{i}", day(i), code=64) for i in range(1, 6)]
    prev = build(s, visible)
    assert prev["consecutiveFailures"] == 5
    # r6 fails; the CronJob controller prunes r1 (failedJobsHistoryLimit 5)
    after = [*visible[1:], failed("r6", day(6), code=64)]
    st = build(s, after, prev, now=day(6) + HOUR)
    assert st["consecutiveFailures"] == 6
    assert cond(st, "Quarantined")["status"] == "True"


def test_quarantined_condition() -> None:
    s = spec(quarantineAfter=2, **DAILY)
    one = build(s, [failed("r1", day(1), code=64)])
    assert cond(one, "Quarantined")["status"] == "False" and cond(one, "Quarantined")["reason"] == "Healthy"
    two = build(s, [failed("r1", day(1), code=64), failed("r2", day(2), code=64)])
    q = cond(two, "Quarantined")
    assert q["status"] == "True" and q["reason"] == "TooManyFailures"
    assert q["message"] == "2 consecutive failed runs (quarantineAfter 2)"
    assert cond(two, "Suspended")["status"] == "False"  # the handler suspends it next
    suspended = build(
        spec(quarantineAfter=2, suspend=True, **DAILY), [failed("r1", day(1), code=64), failed("r2", day(2), code=64)]
    )
    assert cond(suspended, "Suspended")["reason"] == "Quarantined"
    never = build(spec(**DAILY), [failed(f"r{i}", day(i), code=64) for i in range(1, 9)])
    assert cond(never, "Quarantined")["status"] == "False"


def test_suspended_and_running_conditions() -> None:
    st = build(spec(suspend=True, **DAILY), [running("r1", day(8))])
    assert cond(st, "Suspended")["status"] == "True" and cond(st, "Suspended")["reason"] == "Suspended"
    assert cond(st, "Running")["status"] == "True" and cond(st, "Running")["reason"] == "RunActive"
    assert cond(st, "Running")["message"] == "1 running, 0 waiting"
    idle = build(spec(**DAILY), [])
    assert cond(idle, "Running")["reason"] == "Idle" and cond(idle, "Suspended")["reason"] == "Active"


def test_ready_false_with_problem() -> None:
    st = build(spec(**DAILY), [], problem=("InvalidSchedule", "every: 7m has no cron equivalent"))
    ready = cond(st, "Ready")
    assert ready["status"] == "False"
    assert ready["reason"] == "InvalidSchedule"
    assert ready["message"] == "every: 7m has no cron equivalent"


def test_last_transition_time_moves_only_when_status_changes() -> None:
    s = spec(**DAILY)
    first = build(s, [], now=NOW)
    later = NOW + HOUR
    again = build(s, [], first, now=later, generation=4)
    assert again["conditions"] == [{**c, "observedGeneration": 4} for c in first["conditions"]]
    broken = build(s, [], again, now=later, problem=("InvalidSchedule", "x"))
    assert cond(broken, "Ready")["lastTransitionTime"] == ts(later)
    assert cond(broken, "Suspended")["lastTransitionTime"] == ts(NOW)
    # a new message with the same status keeps the time
    moved = build(s, [running("r", day(9))], first, now=later)
    assert cond(moved, "Ready")["lastTransitionTime"] == ts(NOW)
    assert cond(moved, "Running")["lastTransitionTime"] == ts(later)


def test_last_run_summary() -> None:
    message = 'progress 50%\n{"message": "deleted 5000 rows", "rows": 5000}'
    r = succeeded("r1", day(8), term_message=message, trigger="manual")
    st = build(spec(**DAILY), [r])
    assert st["lastRun"] == {
        "id": "r1",
        "trigger": "manual",
        "scheduledTime": ts(day(8)),
        "startTime": ts(day(8)),
        "completionTime": ts(day(8) + dt.timedelta(minutes=5)),
        "attempts": 1,
        "result": "Succeeded",
        "exitCode": 0,
        "message": "deleted 5000 rows",
        "output": {"message": "deleted 5000 rows", "rows": 5000},
    }


def test_last_run_summary_of_a_failed_retried_run() -> None:
    attempts = [failed(f"r-a{i}", day(8), run="r", attempt=i, code=75, term_message="temporary") for i in (1, 2, 3)]
    st = build(spec(**DAILY), attempts)
    last = st["lastRun"]
    assert last["id"] == "r" and last["attempts"] == 3 and last["result"] == "Failed"
    assert last["reason"].startswith("RetriesExhausted: 3 attempts")
    assert last["message"] == "temporary" and "output" not in last
    assert last["exitCode"] == 75


def test_last_run_is_the_latest_run_and_unfinished_runs_have_no_completion_time() -> None:
    st = build(spec(**DAILY), [succeeded("r1", day(7)), failed("r2", day(8), code=75)])
    last = st["lastRun"]
    assert last["id"] == "r2" and last["result"] == "Retrying" and "completionTime" not in last
    waiting_run = build(spec(**DAILY), [succeeded("r1", day(7)), waiting("r2", day(8), gate="Waiting: QueueFull")])
    assert waiting_run["lastRun"]["result"] == "Waiting" and waiting_run["lastRun"]["attempts"] == 0


def test_last_run_carried_over_when_jobs_are_gone() -> None:
    prev_run = {"id": "old", "result": "Succeeded", "attempts": 1, "trigger": "schedule"}
    assert build(spec(**DAILY), [], {"lastRun": prev_run})["lastRun"] == prev_run


def test_counters_and_carried_fields() -> None:
    views = [
        view("s1", scheduled=day(5), outcome="Skipped: DependencyFailed: x"),
        view("s2", scheduled=day(6), outcome="Cancelled: Replaced"),
        waiting("w", day(7)),
    ]
    st = build(spec(**DAILY), views, {"missedRuns": 3, "handledTriggers": ["n1", "n2"]})
    assert st["skippedRuns"] == 1
    assert st["waiting"] == 1
    assert st["missedRuns"] == 3
    assert st["handledTriggers"] == ["n1", "n2"]


def test_build_is_deterministic() -> None:
    views = [succeeded("r1", day(7)), failed("r2", day(8), code=64)]
    assert build(spec(**DAILY), views) == build(spec(**DAILY), list(reversed(views)))


def test_condition_helper() -> None:
    prev = [{"type": "Ready", "status": "True", "lastTransitionTime": "2026-01-01T00:00:00Z"}]
    same = status.condition(prev, "Ready", "True", "R", "m", 1, NOW)
    assert same["lastTransitionTime"] == "2026-01-01T00:00:00Z"
    flipped = status.condition(prev, "Ready", "False", "R", "m", 1, NOW)
    assert flipped["lastTransitionTime"] == ts(NOW)
    new = status.condition(prev, "Healthy", "True", "R", "m", None, NOW)
    assert new["lastTransitionTime"] == ts(NOW) and new["observedGeneration"] is None


def test_ts() -> None:
    assert status.ts(None) is None
    assert status.ts(dt.datetime(2026, 1, 1, 1, tzinfo=dt.timezone(dt.timedelta(hours=1)))) == "2026-01-01T00:00:00Z"


def test_dead_lettered_condition_follows_the_last_run() -> None:
    s = spec(**DAILY)
    st = build(s, [failed("r1", day(1), code=64)])
    dl = cond(st, "DeadLettered")
    assert dl["status"] == "True" and dl["reason"] == "RunFailed" and "nightshift retry" in dl["message"]
    ok = build(s, [failed("r1", day(1), code=64), succeeded("r2", day(2))], st, now=day(2) + HOUR)
    assert cond(ok, "DeadLettered")["status"] == "False"
