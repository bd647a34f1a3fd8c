from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

import pytest

from nightshift.api.models import BackgroundJobQueueSpec, BackgroundJobSpec, Backoff
from nightshift.core import gate
from nightshift.core.gate import Admit, Cancel, Skip, Snapshot, Wait, backoff_delay, decide
from nightshift.core.runs import AttemptView, Run, group
from tests.unit.factories import NS, failed, running, spec, succeeded, t, view, waiting

NOW = t(2026, 3, 9, 14, 30)
T = t(2026, 3, 9, 14)  # the waiting run's scheduled time
MIN = dt.timedelta(minutes=1)
HOUR = dt.timedelta(hours=1)


def snap(
    specs: dict[str, BackgroundJobSpec],
    views: Sequence[AttemptView] = (),
    *,
    now: dt.datetime = NOW,
    queues: dict[str, BackgroundJobQueueSpec] | None = None,
    **kw: Any,
) -> Snapshot:
    by_job: dict[tuple[str, str], list[Run]] = {}
    for r in group(views):
        by_job.setdefault((r.namespace, r.bgj), []).append(r)
    return Snapshot(
        now=now,
        specs={(NS, k): v for k, v in specs.items()},
        runs=by_job,
        queues={(NS, k): v for k, v in (queues or {}).items()},
        **kw,
    )


def decide_one(
    v: AttemptView, specs: dict[str, BackgroundJobSpec], others: Sequence[AttemptView] = (), **kw: Any
) -> gate.Decision:
    return decide(v, specs[v.bgj], snap(specs, [v, *others], **kw))


def queue(**fields: Any) -> BackgroundJobQueueSpec:
    return BackgroundJobQueueSpec.model_validate(fields)


# --- backoff -------------------------------------------------------------------------------------


@pytest.mark.parametrize(("retry", "seconds"), [(0, 60), (1, 60), (2, 120), (3, 240), (6, 1920), (7, 3600), (20, 3600)])
def test_backoff_without_jitter(retry: int, seconds: float) -> None:
    b = Backoff(initial="1m", factor=2, max="1h", jitter=0)
    assert backoff_delay(b, retry, "seed") == dt.timedelta(seconds=seconds)


def test_backoff_factor_one_is_constant() -> None:
    b = Backoff(initial="30s", factor=1, max="1h", jitter=0)
    assert {backoff_delay(b, n, "s").total_seconds() for n in range(1, 8)} == {30}


def test_backoff_jitter_bounds_and_determinism() -> None:
    b = Backoff(initial="10s", factor=3, max="1h", jitter=0.25)
    seen = set()
    for i in range(200):
        for retry in (1, 2, 3):
            base = min(10 * 3 ** (retry - 1), 3600)
            d = backoff_delay(b, retry, f"run-{i}").total_seconds()
            assert base <= d <= base * 1.25
            assert d == backoff_delay(b, retry, f"run-{i}").total_seconds()
            seen.add(round(d / base, 6))
    assert len(seen) > 100  # the jitter really varies between runs


def test_backoff_jitter_applies_to_the_capped_delay() -> None:
    b = Backoff(initial="1m", factor=10, max="5m", jitter=1.0)
    assert all(300 <= backoff_delay(b, 5, f"s{i}").total_seconds() <= 600 for i in range(50))


# --- simple gates --------------------------------------------------------------------------------


def test_plain_waiting_run_is_admitted() -> None:
    assert decide_one(waiting("r", T), {"nightly": spec()}) == Admit()


def test_emergency_stop_comes_first() -> None:
    v = view("r-a2", run="r", attempt=2, scheduled=T, not_before=NOW + HOUR)
    stopped = snap({"nightly": spec()}, [v], stopped=lambda ns: "incident 42" if ns == NS else None)
    assert decide(v, spec(), stopped) == Wait("EmergencyStop: incident 42")
    other_ns = snap({"nightly": spec()}, [v], stopped=lambda ns: "incident 42" if ns == "other" else None)
    d = decide(v, spec(), other_ns)
    assert isinstance(d, Wait) and d.reason.startswith("RetryBackoff")


def test_retry_not_before_in_the_future_waits_until_then() -> None:
    nb = NOW + 3 * MIN
    v = view("r-a2", run="r", attempt=2, scheduled=T, not_before=nb)
    d = decide_one(v, {"nightly": spec()})
    assert d == Wait("RetryBackoff: not before 2026-03-09T14:33:00Z", nb)


def test_not_before_on_a_first_attempt() -> None:
    v = view("r", scheduled=T, not_before=NOW + MIN)
    d = decide_one(v, {"nightly": spec()})
    assert isinstance(d, Wait) and d.reason.startswith("NotBefore:") and d.until == NOW + MIN


@pytest.mark.parametrize("nb", [NOW, NOW - MIN])
def test_not_before_reached(nb: dt.datetime) -> None:
    v = view("r-a2", run="r", attempt=2, scheduled=T, not_before=nb)
    assert decide_one(v, {"nightly": spec()}) == Admit()


def test_suspended_job_skips_scheduled_runs_but_not_manual_ones() -> None:
    s = {"nightly": spec(suspend=True)}
    d = decide_one(waiting("r", T), s)
    assert isinstance(d, Skip) and d.reason.startswith("Suspended:")
    assert decide_one(view("m", trigger="manual", created=T), s) == Admit()


def test_operator_limit() -> None:
    s = {"nightly": spec()}
    d = decide_one(waiting("r", T), s, running_total=5, max_running=5)
    assert d == Wait("OperatorLimit: 5 runs already running")
    retry = view("r-a2", run="r", attempt=2, scheduled=T)
    assert isinstance(decide_one(retry, s, running_total=5, max_running=5), Wait)
    assert decide_one(waiting("r", T), s, running_total=4, max_running=5) == Admit()


# --- queues --------------------------------------------------------------------------------------


def test_queue_not_found_paused_and_full() -> None:
    s = {"nightly": spec(queue="q")}
    assert decide_one(waiting("r", T), s) == Wait("QueueNotFound: BackgroundJobQueue q does not exist")
    assert decide_one(waiting("r", T), s, queues={"q": queue(paused=True)}) == Wait("QueuePaused: queue q is paused")
    full = decide_one(waiting("r", T), s, queues={"q": queue(concurrency=2)}, running_by_queue={(NS, "q"): 2})
    assert full == Wait("QueueFull: queue q runs 2 at a time")
    room = decide_one(waiting("r", T), s, queues={"q": queue(concurrency=2)}, running_by_queue={(NS, "q"): 1})
    assert room == Admit()


def test_queue_in_another_namespace_does_not_count() -> None:
    s = {"nightly": spec(queue="q")}
    d = decide_one(waiting("r", T), s, queues={"q": queue()}, running_by_queue={("other", "q"): 1})
    assert d == Admit()


def test_rate_limit_waits_until_the_oldest_admission_leaves_the_window() -> None:
    s = {"nightly": spec(queue="q")}
    q = {"q": queue(concurrency=10, rateLimit={"runs": 2, "per": "1h"})}
    admitted = {(NS, "q"): [NOW - 10 * MIN, NOW - 50 * MIN]}
    d = decide_one(waiting("r", T), s, queues=q, admitted_by_queue=admitted)
    assert d == Wait("RateLimited: queue q admits 2 per 1h", NOW + 10 * MIN)
    admitted = {(NS, "q"): [NOW - 10 * MIN, NOW - 70 * MIN]}
    assert decide_one(waiting("r", T), s, queues=q, admitted_by_queue=admitted) == Admit()


def test_retries_are_held_by_the_queue_too() -> None:
    s = {"nightly": spec(queue="q")}
    retry = view("r-a2", run="r", attempt=2, scheduled=T)
    d = decide_one(retry, s, queues={"q": queue()}, running_by_queue={(NS, "q"): 1})
    assert isinstance(d, Wait) and d.reason.startswith("QueueFull")


# --- ordering and one pass ------------------------------------------------------------------------


def test_order_by_priority_then_time_then_name() -> None:
    vs = [
        waiting("low-1", T, priority="low"),
        waiting("med-late", T + HOUR),
        waiting("med-early", T - HOUR),
        waiting("crit", T + 2 * HOUR, priority="critical"),
        waiting("high-b", T, priority="high"),
        waiting("high-a", T, priority="high"),
        waiting("odd", T - 2 * HOUR, priority="unknown"),  # ranked as medium
    ]
    assert [v.name for v in gate.order(vs)] == ["crit", "high-a", "high-b", "odd", "med-early", "med-late", "low-1"]


def one_pass(views: Sequence[AttemptView], s: Snapshot) -> list[str]:
    admitted = []
    for v in gate.order(views):
        d = decide(v, s.specs[(v.namespace, v.bgj)], s)
        if isinstance(d, Admit | Cancel):
            s.take(v.namespace, s.specs[(v.namespace, v.bgj)].queue)
            admitted.append(v.name)
    return admitted


PRIOS = ["low", "medium", "high", "critical", "low", "medium", "high", "low", "medium", "critical"]


def ten_waiting() -> tuple[dict[str, BackgroundJobSpec], list[AttemptView]]:
    specs, views = {}, []
    for i, p in enumerate(PRIOS):
        name = f"job-{i}"
        specs[name] = spec(queue="q", priority=p, schedule="0 * * * *")
        views.append(waiting(f"{name}-run", T + i * MIN, bgj=name, priority=p, queue="q"))
    return specs, views


def test_one_pass_admits_exactly_the_queue_concurrency_highest_priority_first() -> None:
    specs, views = ten_waiting()
    s = snap(specs, views, queues={"q": queue(concurrency=2)})
    assert one_pass(views, s) == ["job-3-run", "job-9-run"]
    assert s.running_by_queue == {(NS, "q"): 2} and s.running_total == 2
    assert s.admitted_by_queue[(NS, "q")] == [NOW, NOW]


def test_next_pass_admits_the_next_priority_when_slots_free_up() -> None:
    specs, views = ten_waiting()
    s = snap(specs, views, queues={"q": queue(concurrency=2)}, running_by_queue={(NS, "q"): 0})
    remaining = [v for v in views if v.priority != "critical"]
    assert one_pass(remaining, s) == ["job-2-run", "job-6-run"]


def test_one_pass_honours_the_rate_limit_and_the_operator_maximum() -> None:
    specs, views = ten_waiting()
    s = snap(specs, views, queues={"q": queue(concurrency=10, rateLimit={"runs": 3, "per": "10m"})})
    assert len(one_pass(views, s)) == 3
    s = snap(specs, views, queues={"q": queue(concurrency=10)}, max_running=4, running_total=1)
    assert one_pass(views, s) == ["job-3-run", "job-9-run", "job-2-run"]


# --- concurrency policy -----------------------------------------------------------------------------


def test_forbid_skips_while_an_earlier_run_is_running_or_retrying() -> None:
    s = {"nightly": spec(concurrencyPolicy="Forbid")}
    d = decide_one(waiting("r2", T), s, [running("r1", T - HOUR)])
    assert d == Skip("ConcurrencyForbid: run r1 is still running or retrying")
    d = decide_one(waiting("r2", T), s, [failed("r1", T - HOUR, code=75)])
    assert isinstance(d, Skip)


def test_forbid_waits_behind_an_earlier_waiting_run() -> None:
    s = {"nightly": spec(concurrencyPolicy="Forbid")}
    d = decide_one(waiting("r2", T), s, [waiting("r1", T - HOUR)])
    assert d == Wait("ConcurrencyForbid: earlier run r1 is still waiting")


def test_forbid_ignores_finished_and_later_waiting_runs_but_not_a_later_active_one() -> None:
    s = {"nightly": spec(concurrencyPolicy="Forbid")}
    others = [succeeded("r0", T - 2 * HOUR), failed("r1", T - HOUR, code=64), waiting("r3", T + HOUR)]
    assert decide_one(waiting("r2", T), s, others) == Admit()
    # a run for an earlier time asked for while a later one runs (a backfill): still one at a time
    assert isinstance(decide_one(waiting("r2", T), s, [running("r3", T + HOUR)]), Skip)


def test_forbid_queues_a_catch_up_behind_the_run_that_is_active_instead_of_skipping_it() -> None:
    """missedRuns RunAll asked for every missed slot: under Forbid they run one at a time, none dropped."""
    s = {"nightly": spec(concurrencyPolicy="Forbid")}
    catchup = view("c1", trigger="catchup", scheduled=T - HOUR)
    assert decide_one(catchup, s, [running("r2", T)]) == Wait("ConcurrencyForbid: waiting for run r2")


def test_forbid_orders_runs_of_the_same_time_by_id_so_two_never_wait_for_each_other() -> None:
    """Found by the churn test: two requests made in the same second each waited for the other."""
    s = {"nightly": spec(concurrencyPolicy="Forbid")}
    a, b = waiting("r-a", T), waiting("r-b", T)
    assert decide_one(a, s, [b]) == Admit()
    assert decide_one(b, s, [a]) == Wait("ConcurrencyForbid: earlier run r-a is still waiting")


def test_forbid_does_not_hold_back_a_retry_of_the_same_run() -> None:
    s = {"nightly": spec(concurrencyPolicy="Forbid")}
    retry = view("r-a2", run="r", attempt=2, scheduled=T)
    assert decide_one(retry, s, [failed("r", T, run="r", code=75)]) == Admit()


def test_replace_cancels_earlier_running_and_waiting_runs() -> None:
    s = {"nightly": spec(concurrencyPolicy="Replace")}
    d = decide_one(
        waiting("r3", T), s, [running("r1", T - 2 * HOUR), waiting("r2", T - HOUR), succeeded("r0", T - 3 * HOUR)]
    )
    assert d == Cancel(("r1", "r2"), "Replaced: run r3 replaced it")


def test_replace_still_respects_the_queue() -> None:
    s = {"nightly": spec(concurrencyPolicy="Replace", queue="q")}
    d = decide_one(
        waiting("r2", T), s, [running("r1", T - HOUR)], queues={"q": queue()}, running_by_queue={(NS, "q"): 1}
    )
    assert isinstance(d, Wait) and d.reason.startswith("QueueFull")


def test_allow_admits_alongside_running_runs() -> None:
    s = {"nightly": spec(concurrencyPolicy="Allow")}
    assert decide_one(waiting("r2", T), s, [running("r1", T - HOUR), waiting("r0", T - 2 * HOUR)]) == Admit()


# --- dependencies -----------------------------------------------------------------------------------

NY_DAILY = {"schedule": "0 9 * * *", "timeZone": "America/New_York"}


def dep_specs(**fields: Any) -> dict[str, BackgroundJobSpec]:
    return {"report": spec(dependsOn=[{"name": "extract"}], **fields), "extract": spec(**NY_DAILY)}


def test_dependency_success_of_the_latest_scheduled_run_admits() -> None:
    # 09:00 New York on 2026-03-09 (after the spring change) is 13:00 UTC
    d = decide_one(waiting("rep", T, bgj="report"), dep_specs(), [succeeded("ex", t(2026, 3, 9, 13), bgj="extract")])
    assert d == Admit()


def test_dependency_matched_through_the_cronjob_annotation_in_local_time() -> None:
    ex = view(
        "extract-1",
        "extract",
        cron_scheduled="2026-03-09T09:00:00-04:00",
        suspend=False,
        started=t(2026, 3, 9, 13),
        complete=t(2026, 3, 9, 13, 5),
    )
    assert decide_one(waiting("rep", T, bgj="report"), dep_specs(), [ex]) == Admit()


def test_an_older_dependency_success_does_not_count() -> None:
    d = decide_one(waiting("rep", T, bgj="report"), dep_specs(), [succeeded("ex", t(2026, 3, 8, 13), bgj="extract")])
    assert d == Wait("WaitingForDependency: extract's run of 2026-03-09T13:00:00Z")


def test_dependency_due_time_across_the_dst_change() -> None:
    specs = dep_specs()
    before = [succeeded("ex-7", t(2026, 3, 7, 14), bgj="extract")]  # 09:00 EST
    after = [succeeded("ex-8", t(2026, 3, 8, 13), bgj="extract")]  # 09:00 EDT
    # a run at 13:30 UTC on the change day needs that day's 13:00 UTC run, not yesterday's 14:00 UTC one
    rep = waiting("rep", t(2026, 3, 8, 13, 30), bgj="report")
    d = decide_one(rep, specs, before, now=t(2026, 3, 8, 13, 31))
    assert d == Wait("WaitingForDependency: extract's run of 2026-03-08T13:00:00Z")
    assert decide_one(rep, specs, after, now=t(2026, 3, 8, 13, 31)) == Admit()
    # at 12:30 UTC on the change day, today's 09:00 EDT has not come yet: yesterday's run is the one
    early = waiting("rep0", t(2026, 3, 8, 12, 30), bgj="report")
    assert decide_one(early, specs, before, now=t(2026, 3, 8, 12, 31)) == Admit()


def test_dependency_in_its_own_time_zone_berlin() -> None:
    specs = {
        "report": spec(dependsOn=[{"name": "extract"}]),
        "extract": spec(schedule="0 9 * * *", timeZone="Europe/Berlin"),
    }
    rep = waiting("rep", t(2026, 3, 29, 7, 30), bgj="report")
    d = decide_one(rep, specs, [succeeded("ex", t(2026, 3, 28, 8), bgj="extract")], now=t(2026, 3, 29, 8))
    assert d == Wait("WaitingForDependency: extract's run of 2026-03-29T07:00:00Z")
    assert decide_one(rep, specs, [succeeded("ex", t(2026, 3, 29, 7), bgj="extract")], now=t(2026, 3, 29, 8)) == Admit()


def test_dependency_still_retrying_waits() -> None:
    ex = failed("ex", t(2026, 3, 9, 13), bgj="extract", code=75)
    d = decide_one(waiting("rep", T, bgj="report"), dep_specs(), [ex])
    assert isinstance(d, Wait) and d.reason.startswith("WaitingForDependency")


@pytest.mark.parametrize(
    "dep_run",
    [
        lambda: failed("ex", t(2026, 3, 9, 13), bgj="extract", code=64),
        lambda: waiting("ex", t(2026, 3, 9, 13), bgj="extract", outcome="Skipped: upstream"),
        lambda: waiting("ex", t(2026, 3, 9, 13), bgj="extract", outcome="Cancelled: replaced"),
    ],
)
def test_dependency_failed_skip_or_run(dep_run: Any) -> None:
    d = decide_one(waiting("rep", T, bgj="report"), dep_specs(), [dep_run()])
    assert d == Skip("DependencyFailed: extract's run of 2026-03-09T13:00:00Z failed")
    assert decide_one(waiting("rep", T, bgj="report"), dep_specs(onDependencyFailure="Run"), [dep_run()]) == Admit()


def test_one_success_among_several_runs_for_the_due_time_is_enough() -> None:
    runs = [
        failed("ex", t(2026, 3, 9, 13), bgj="extract", code=64),
        succeeded("ex-manual", t(2026, 3, 9, 13), bgj="extract", run="ex-manual"),
    ]
    assert decide_one(waiting("rep", T, bgj="report"), dep_specs(), runs) == Admit()


def test_dependency_timeout() -> None:
    specs = dep_specs(dependencyTimeout="6h")
    rep = waiting("rep", T, bgj="report")
    assert decide_one(rep, specs, now=T + HOUR) == Wait(
        "WaitingForDependency: extract's run of 2026-03-09T13:00:00Z", T + 6 * HOUR
    )
    assert decide_one(rep, specs, now=T + 6 * HOUR) == Wait(
        "WaitingForDependency: extract's run of 2026-03-09T13:00:00Z", T + 6 * HOUR
    )
    assert decide_one(rep, specs, now=T + 6 * HOUR + MIN) == Skip(
        "DependencyTimeout: waited 6h for extract's run of 2026-03-09T13:00:00Z"
    )


def test_missing_dependency_waits() -> None:
    specs = {"report": spec(dependsOn=[{"name": "extract"}])}
    assert decide_one(waiting("rep", T, bgj="report"), specs) == Wait("DependencyNotFound: extract")


def test_every_dependency_must_be_met() -> None:
    specs = {
        "report": spec(dependsOn=[{"name": "a"}, {"name": "b"}]),
        "a": spec(schedule="0 * * * *"),
        "b": spec(schedule="0 * * * *"),
    }
    a_ok = succeeded("a1", t(2026, 3, 9, 14), bgj="a")
    d = decide_one(waiting("rep", T, bgj="report"), specs, [a_ok])
    assert d == Wait("WaitingForDependency: b's run of 2026-03-09T14:00:00Z")
    assert decide_one(waiting("rep", T, bgj="report"), specs, [a_ok, succeeded("b1", T, bgj="b")]) == Admit()


def test_dependencies_are_checked_only_for_first_attempts() -> None:
    specs = {"report": spec(dependsOn=[{"name": "gone"}])}
    retry = view("rep-a2", "report", run="rep", attempt=2, scheduled=T)
    assert decide_one(retry, specs) == Admit()


def unscheduled(within: str | None = "24h", **fields: Any) -> dict[str, BackgroundJobSpec]:
    dep: dict[str, Any] = {"name": "seed"} if within is None else {"name": "seed", "within": within}
    return {"report": spec(dependsOn=[dep], **fields), "seed": spec()}


def seed_run(name: str, finished_at: dt.datetime, ok: bool = True, code: int = 64) -> AttemptView:
    start = finished_at - 5 * MIN
    if ok:
        return succeeded(name, start, bgj="seed", trigger="manual")
    return failed(name, start, bgj="seed", trigger="manual", code=code)


def test_unscheduled_dependency_within_window() -> None:
    rep = waiting("rep", T, bgj="report")
    assert decide_one(rep, unscheduled(), [seed_run("s", T - 23 * HOUR)]) == Admit()
    d = decide_one(rep, unscheduled(), [seed_run("s", T - 25 * HOUR)])
    assert d == Wait("WaitingForDependency: a success of seed within 24h")
    assert decide_one(rep, unscheduled("2h"), [seed_run("s", T - 3 * HOUR)]) == Wait(
        "WaitingForDependency: a success of seed within 2h"
    )


def test_unscheduled_dependency_default_window_is_a_day() -> None:
    rep = waiting("rep", T, bgj="report")
    assert decide_one(rep, unscheduled(None), [seed_run("s", T - 23 * HOUR)]) == Admit()
    d = decide_one(rep, unscheduled(None), [seed_run("s", T - 25 * HOUR)])
    assert d == Wait("WaitingForDependency: a success of seed within 1d")


def test_unscheduled_dependency_failed() -> None:
    rep = waiting("rep", T, bgj="report")
    d = decide_one(rep, unscheduled(), [seed_run("s", T - HOUR, ok=False)])
    assert d == Skip("DependencyFailed: a success of seed within 24h failed")
    assert decide_one(rep, unscheduled(onDependencyFailure="Run"), [seed_run("s", T - HOUR, ok=False)]) == Admit()
    # a failure next to a success in the window: the success counts
    runs = [seed_run("s1", T - 2 * HOUR, ok=False), seed_run("s2", T - HOUR)]
    assert decide_one(rep, unscheduled(), runs) == Admit()
    # a retryable failure that will be retried is not a failure yet
    d = decide_one(rep, unscheduled(), [seed_run("s", T - HOUR, ok=False, code=75)])
    assert isinstance(d, Wait)


def test_dependency_due_time_in_the_repeated_fall_back_hour() -> None:
    specs = {
        "report": spec(dependsOn=[{"name": "extract"}]),
        "extract": spec(schedule="30 1 * * *", timeZone="America/New_York"),
    }
    # extract ran at 01:30 EDT (05:30 UTC) on 2026-11-01 and failed for good; yesterday's run succeeded
    dep_runs = [
        succeeded("ex-31", t(2026, 10, 31, 5, 30), bgj="extract"),
        failed("ex-1", t(2026, 11, 1, 5, 30), bgj="extract", code=64),
    ]
    rep = waiting("rep", t(2026, 11, 1, 6, 15), bgj="report")  # 01:15 EST, after the 01:30 EDT run
    d = decide_one(rep, specs, dep_runs, now=t(2026, 11, 1, 6, 16))
    assert d == Skip("DependencyFailed: extract's run of 2026-11-01T05:30:00Z failed")
