"""Missed runs: which scheduled times never got a run, and what each missedRuns policy does with a late one."""

from __future__ import annotations

from nightshift.core import gate, schedule
from nightshift.core.status import build
from tests.unit.factories import spec, t, view
from tests.unit.test_gate import decide_one


def test_missed_between_excludes_both_ends() -> None:
    got = schedule.missed_between("0 * * * *", "UTC", t(2026, 1, 1, 1), t(2026, 1, 1, 5))
    assert got == [t(2026, 1, 1, 2), t(2026, 1, 1, 3), t(2026, 1, 1, 4)]
    assert schedule.missed_between("0 * * * *", "UTC", t(2026, 1, 1, 1), t(2026, 1, 1, 2)) == []


def test_missed_between_is_bounded() -> None:
    assert len(schedule.missed_between("* * * * *", "UTC", t(2026, 1, 1), t(2026, 1, 10), limit=50)) == 50


def test_missed_between_across_dst_in_local_time() -> None:
    # 02:30 Berlin does not exist on 2026-03-29: robfig/cron (so the CronJob controller) has no run that
    # day, so none is missed either; before and after it, 02:30 local is 01:30 and 00:30 UTC.
    got = schedule.missed_between("30 2 * * *", "Europe/Berlin", t(2026, 3, 27, 1, 30), t(2026, 3, 31, 0, 30))
    assert got == [t(2026, 3, 28, 1, 30), t(2026, 3, 30, 0, 30)]


def test_skip_policy_skips_a_late_scheduled_run() -> None:
    s = spec(schedule="0 * * * *", missedRuns="Skip")
    late = view("late", scheduled=t(2026, 1, 1, 3), created=t(2026, 1, 1, 3, 10))
    decision = decide_one(late, {"nightly": s}, now=t(2026, 1, 1, 3, 10))
    assert isinstance(decision, gate.Skip) and decision.reason.startswith("MissedRunSkipped")


def test_skip_policy_admits_an_on_time_run_and_other_policies_admit_late_ones() -> None:
    on_time = view("on-time", scheduled=t(2026, 1, 1, 3), created=t(2026, 1, 1, 3, 0, 1))
    now = t(2026, 1, 1, 3, 10)
    assert isinstance(
        decide_one(on_time, {"nightly": spec(schedule="0 * * * *", missedRuns="Skip")}, now=now), gate.Admit
    )
    late = view("late", scheduled=t(2026, 1, 1, 3), created=t(2026, 1, 1, 3, 10))
    for policy in ("RunLatest", "RunAll"):
        assert isinstance(
            decide_one(late, {"nightly": spec(schedule="0 * * * *", missedRuns=policy)}, now=now), gate.Admit
        )


def test_status_adds_missed_runs_to_the_count() -> None:
    s = spec(schedule="0 * * * *")
    st = build(s, [], {"missedRuns": 4}, generation=1, now=t(2026, 1, 1), cron_job="nightly", missed=3)
    assert st["missedRuns"] == 7


def test_manual_runs_do_not_move_last_schedule_time() -> None:
    s = spec(schedule="0 * * * *")
    manual = view("m", trigger="manual", scheduled=t(2026, 1, 1, 9, 17), created=t(2026, 1, 1, 9, 17))
    sched = view("s", scheduled=t(2026, 1, 1, 9), created=t(2026, 1, 1, 9))
    st = build(
        s,
        [*__import__("nightshift.core.runs").core.runs.group([manual, sched])],
        {},
        generation=1,
        now=t(2026, 1, 1, 10),
        cron_job="nightly",
    )
    assert st["lastScheduleTime"] == "2026-01-01T09:00:00Z"
