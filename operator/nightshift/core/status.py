"""BackgroundJob status rebuilt from its runs on every pass (the kubebuilder CronJob pattern).

Timestamps that only move forward (last success, last failure, last schedule) are carried over
from the previous status, so pruning old Jobs by the history limits does not erase them.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from typing import Any

from nightshift.api.models import BackgroundJobSpec
from nightshift.core import schedule
from nightshift.core.gate import retry_rule
from nightshift.core.runs import Run, output_of, parse_time, state

Obj = dict[str, Any]


def ts(t: dt.datetime | None) -> str | None:
    return t.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ") if t else None


def _later(a: str | None, b: dt.datetime | None) -> str | None:
    pa = parse_time(a)
    if pa and (b is None or pa >= b):
        return ts(pa)
    return ts(b)


def condition(
    prev: Sequence[Mapping[str, Any]],
    type_: str,
    status: str,
    reason: str,
    message: str,
    generation: int | None,
    now: dt.datetime,
) -> Obj:
    """A metav1.Condition whose lastTransitionTime moves only when its status changes."""
    old = next((c for c in prev if c.get("type") == type_), None)
    changed = old is None or old.get("status") != status
    return {
        "type": type_,
        "status": status,
        "reason": reason,
        "message": message,
        "lastTransitionTime": ts(now) if changed else old["lastTransitionTime"],  # type: ignore[index]
        "observedGeneration": generation,
    }


def run_summary(run: Run, result: str, reason: str | None) -> Obj:
    last = run.last
    out = output_of(last.message)
    message = (out or {}).get("message") if out else last.message
    summary: Obj = {
        "id": run.id,
        "trigger": run.trigger,
        "scheduledTime": ts(run.first.scheduled),
        "startTime": ts(run.first.started),
        "completionTime": ts(last.finished) if result in ("Succeeded", "Failed") else None,
        "attempts": len([a for a in run.attempts if a.started or a.finished]),
        "result": result,
        "exitCode": last.exit_code,
        "reason": reason[:256] if reason else None,
        "message": message[:4096] if isinstance(message, str) else None,
        "output": out,
    }
    return {k: v for k, v in summary.items() if v is not None}


def build(
    spec: BackgroundJobSpec,
    runs: Sequence[Run],
    prev: Mapping[str, Any],
    *,
    generation: int | None,
    now: dt.datetime,
    cron_job: str | None,
    problem: tuple[str, str] | None = None,
    failures_after: dt.datetime | None = None,
    missed: int = 0,
) -> Obj:
    """The whole status; `problem` is (reason, message) of a spec the operator cannot serve."""
    rule = retry_rule(spec)
    states = [(r, *state(r, rule)) for r in runs]
    last_success = max((r.last.finished for r, s, _ in states if s == "Succeeded" and r.last.finished), default=None)
    last_failure = max((r.last.finished for r, s, _ in states if s == "Failed" and r.last.finished), default=None)
    last_sched = max(
        (r.first.scheduled for r in runs if r.first.scheduled and r.trigger in ("schedule", "catchup")), default=None
    )
    finished = [(r, s) for r, s, _ in states if s in ("Succeeded", "Failed")]
    since: dt.datetime | None
    if failures_after is not None:  # `nightshift resume` lifts a quarantine: earlier failures no longer count
        finished = [(r, s) for r, s in finished if r.last.finished and r.last.finished > failures_after]
        carried, since = 0, failures_after
    else:
        carried, since = int(prev.get("consecutiveFailures") or 0), parse_time(prev.get("lastFailureTime"))
    failures = 0
    for _r, s in reversed(finished):
        if s == "Succeeded":
            break
        failures += 1
    if failures == len(finished):
        # No success among the Jobs left: older failures may have been pruned by the history limits,
        # so continue the previous count with the failures that finished since it was taken.
        newer = len([r for r, s in finished if s == "Failed" and since and r.last.finished and r.last.finished > since])
        failures = max(failures, carried + newer)

    status: Obj = {
        "observedGeneration": generation,
        "schedule": schedule.describe(spec.schedule, spec.every, spec.at),
        "cronJob": cron_job,
        "lastScheduleTime": _later(prev.get("lastScheduleTime"), last_sched),
        "lastSuccessfulTime": _later(prev.get("lastSuccessfulTime"), last_success),
        "lastFailureTime": _later(prev.get("lastFailureTime"), last_failure),
        "consecutiveFailures": failures,
        "missedRuns": int(prev.get("missedRuns") or 0) + missed,
        "skippedRuns": sum(1 for _, s, _ in states if s == "Skipped"),
        "waiting": sum(1 for _, s, _ in states if s in ("Waiting", "Retrying")),
        "active": sum(1 for _, s, _ in states if s == "Running"),
        "handledTriggers": list(prev.get("handledTriggers") or []),
    }
    next_time = None
    if problem is None and not spec.suspend:
        cron = schedule.cron_of(spec.schedule, spec.every)
        if cron:
            try:
                next_time = schedule.next_after(cron, spec.time_zone, now)
            except schedule.ScheduleError:  # a schedule that never fires (`0 0 31 2 *`): no next run
                next_time = None
        elif spec.at and spec.at > now:
            next_time = spec.at
    status["nextScheduleTime"] = ts(next_time)
    if runs:
        r, s, why = states[-1]
        status["lastRun"] = run_summary(r, s, why)
    elif prev.get("lastRun"):
        status["lastRun"] = prev["lastRun"]

    conds = prev.get("conditions") or []
    if problem:
        ready = condition(conds, "Ready", "False", problem[0], problem[1], generation, now)
    else:
        ready = condition(conds, "Ready", "True", "Reconciled", f"schedule {status['schedule']}", generation, now)
    quarantined = spec.quarantine_after is not None and failures >= spec.quarantine_after
    running = status["active"] > 0
    status["conditions"] = [
        ready,
        condition(
            conds,
            "Suspended",
            "True" if spec.suspend else "False",
            "Quarantined" if quarantined and spec.suspend else ("Suspended" if spec.suspend else "Active"),
            "spec.suspend is true" if spec.suspend else "",
            generation,
            now,
        ),
        condition(
            conds,
            "Running",
            "True" if running else "False",
            "RunActive" if running else "Idle",
            f"{status['active']} running, {status['waiting']} waiting",
            generation,
            now,
        ),
        condition(
            conds,
            "Quarantined",
            "True" if quarantined else "False",
            "TooManyFailures" if quarantined else "Healthy",
            f"{failures} consecutive failed runs (quarantineAfter {spec.quarantine_after})" if quarantined else "",
            generation,
            now,
        ),
        _dead_letter(conds, _last_completed(states), generation, now),
    ]
    return {k: v for k, v in status.items() if v is not None}


def _last_completed(states: Sequence[tuple[Run, str, str | None]]) -> Obj | None:
    """The newest run that succeeded or failed for good; skipped and cancelled runs neither clear nor set it."""
    done = [(r, s, why) for r, s, why in states if s in ("Succeeded", "Failed") and r.last.finished]
    if not done:
        return None
    r, s, why = max(done, key=lambda x: (x[0].last.finished, x[0].id))
    return run_summary(r, s, why)


def _dead_letter(
    conds: Sequence[Mapping[str, Any]], last: Mapping[str, Any] | None, generation: int | None, now: dt.datetime
) -> Obj:
    """DeadLettered: the newest completed run failed for good; `nightshift retry NAME` runs it again.

    Judged on completed runs only, so a failure next to a newer skipped run still dead-letters. When
    the history limits have pruned every completed run, the previous condition stands.
    """
    if last is None:
        old = next((c for c in conds if c.get("type") == "DeadLettered"), None)
        if old is not None:
            return {**old, "observedGeneration": generation}
        return condition(conds, "DeadLettered", "False", "NoFailedRun", "", generation, now)
    if last.get("result") == "Failed":
        return condition(
            conds,
            "DeadLettered",
            "True",
            "RunFailed",
            f"run {last.get('id')} failed after {last.get('attempts', 0)} attempts: {last.get('reason', '')}"
            f"; `nightshift retry` runs it again",
            generation,
            now,
        )
    return condition(conds, "DeadLettered", "False", "NoFailedRun", "", generation, now)
