"""The admission gate: a pure decision per waiting run, given a snapshot of the state and a clock.

Every run is a suspended Job; only an Admit from here unsuspends it. Waiting runs are considered in
priority order, then by scheduled time, and each Admit takes a slot from the counters in the
snapshot, so one pass over the waiting runs honours queue concurrency, rate limits and the global
maximum together.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Callable, Mapping, MutableMapping, Sequence
from dataclasses import dataclass, field

from nightshift.api import durations
from nightshift.api.models import PRIORITIES, BackgroundJobQueueSpec, BackgroundJobSpec, Backoff
from nightshift.core import schedule
from nightshift.core.runs import AttemptView, RetryRule, Run, state

# A scheduled Job created later than this was a missed run that the CronJob controller caught up.
MISSED_GRACE = dt.timedelta(minutes=2)
PRIORITY_RANK: dict[str, int] = {p: i for i, p in enumerate(PRIORITIES)}


@dataclass(frozen=True)
class Admit:
    pass


@dataclass(frozen=True)
class Wait:
    reason: str
    until: dt.datetime | None = None


@dataclass(frozen=True)
class Skip:
    reason: str


@dataclass(frozen=True)
class Cancel:
    """Admit this run after cancelling these (concurrencyPolicy Replace)."""

    runs: tuple[str, ...]
    reason: str


Decision = Admit | Wait | Skip | Cancel


def backoff_delay(b: Backoff, retry: int, seed: str) -> dt.timedelta:
    """initial * factor^(retry-1), capped at max, plus up to `jitter` of it, the same for the same seed."""
    base = durations.seconds(b.initial) * b.factor ** max(0, retry - 1)
    base = min(base, durations.seconds(b.max))
    u = int(hashlib.sha256(f"{seed}/{retry}".encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
    return dt.timedelta(seconds=base * (1 + b.jitter * u))


def retry_rule(spec: BackgroundJobSpec) -> RetryRule:
    return RetryRule(spec.retry_limit, frozenset(spec.retry.non_retryable_exit_codes), spec.retry.retry_on_timeout)


@dataclass
class Snapshot:
    """What the gate sees. Counters are mutated as runs are admitted within one pass."""

    now: dt.datetime
    specs: Mapping[tuple[str, str], BackgroundJobSpec]
    runs: Mapping[tuple[str, str], Sequence[Run]]
    queues: Mapping[tuple[str, str], BackgroundJobQueueSpec] = field(default_factory=dict)
    running_by_queue: dict[tuple[str, str], int] = field(default_factory=dict)
    admitted_by_queue: MutableMapping[tuple[str, str], list[dt.datetime]] = field(default_factory=dict)
    running_total: int = 0
    max_running: int = 50
    stopped: Callable[[str], str | None] = lambda ns: None
    created: Callable[[str, str], dt.datetime | None] = lambda ns, name: None  # a BackgroundJob's creation

    def take(self, ns: str, queue: str | None) -> None:
        self.running_total += 1
        key = (ns, queue or "")
        self.running_by_queue[key] = self.running_by_queue.get(key, 0) + 1
        self.admitted_by_queue.setdefault(key, []).append(self.now)


def order(waiting: Sequence[AttemptView]) -> list[AttemptView]:
    return sorted(waiting, key=lambda v: (PRIORITY_RANK.get(v.priority, 2), v.time, v.name))


def decide(view: AttemptView, spec: BackgroundJobSpec, snap: Snapshot) -> Decision:
    ns = view.namespace
    now = snap.now
    stop = snap.stopped(ns)
    if stop:
        return Wait(f"EmergencyStop: {stop}")
    if view.not_before and view.not_before > now:
        kind = "RetryBackoff" if view.attempt > 1 else "NotBefore"
        return Wait(f"{kind}: not before {view.not_before:%Y-%m-%dT%H:%M:%SZ}", view.not_before)
    if spec.suspend and view.trigger == "schedule":
        return Skip("Suspended: the job was suspended before this run started")
    if spec.missed_runs == "Skip" and view.trigger == "schedule" and view.scheduled is not None:
        late = view.created - view.scheduled
        if late > MISSED_GRACE:
            return Skip(
                f"MissedRunSkipped: created {int(late.total_seconds())}s after its scheduled time (missedRuns: Skip)"
            )

    if view.attempt == 1:
        dep = _dependencies(view, spec, snap)
        if dep is not None:
            return dep
        conc = _concurrency(view, spec, snap)
        if isinstance(conc, Skip | Wait):
            return conc
    else:
        conc = None

    if snap.running_total >= snap.max_running:
        return Wait(f"OperatorLimit: {snap.max_running} runs already running")
    if spec.queue:
        q = snap.queues.get((ns, spec.queue))
        if q is None:
            return Wait(f"QueueNotFound: BackgroundJobQueue {spec.queue} does not exist")
        if q.paused:
            return Wait(f"QueuePaused: queue {spec.queue} is paused")
        key = (ns, spec.queue)
        if snap.running_by_queue.get(key, 0) >= q.concurrency:
            return Wait(f"QueueFull: queue {spec.queue} runs {q.concurrency} at a time")
        if q.rate_limit:
            window = durations.parse(q.rate_limit.per)
            recent = sorted(t for t in snap.admitted_by_queue.get(key, []) if t > now - window)
            if len(recent) >= q.rate_limit.runs:
                return Wait(
                    f"RateLimited: queue {spec.queue} admits {q.rate_limit.runs} per {q.rate_limit.per}",
                    recent[0] + window,
                )
    return conc if isinstance(conc, Cancel) else Admit()


def _concurrency(view: AttemptView, spec: BackgroundJobSpec, snap: Snapshot) -> Decision | None:
    if spec.concurrency_policy == "Allow":
        return None
    rule = retry_rule(spec)
    busy = []
    for run in snap.runs.get((view.namespace, view.bgj), ()):
        if run.id == view.run:
            continue
        # Runs are ordered by (time, id), strictly: two requests made in the same second each saw the
        # other as "earlier" under a plain time comparison and waited for each other for ever.
        earlier = (run.time, run.id) < (view.time, view.run)
        result, _ = state(run, rule)
        if result in ("Running", "Retrying"):  # active, whatever its time: Forbid means one at a time
            busy.append(run.id)
        elif result == "Waiting" and earlier and spec.concurrency_policy == "Replace":
            busy.append(run.id)
        elif result == "Waiting" and earlier:
            return Wait(f"ConcurrencyForbid: earlier run {run.id} is still waiting")
    if not busy:
        return None
    if view.trigger in ("backfill", "catchup"):  # asked for (a backfill, missedRuns RunAll): queue, never drop
        return Wait(f"ConcurrencyForbid: waiting for run {busy[0]}")
    if spec.concurrency_policy == "Forbid":
        return Skip(f"ConcurrencyForbid: run {busy[0]} is still running or retrying")
    return Cancel(tuple(busy), f"Replaced: run {view.run} replaced it")


def _dependencies(view: AttemptView, spec: BackgroundJobSpec, snap: Snapshot) -> Decision | None:
    """Each dependency's latest scheduled run at or before this run's time must have succeeded."""
    t = view.time
    for dep in spec.depends_on:
        dspec = snap.specs.get((view.namespace, dep.name))
        if dspec is None:
            return Wait(f"DependencyNotFound: {dep.name}")
        druns = snap.runs.get((view.namespace, dep.name), ())
        rule = retry_rule(dspec)
        cron = schedule.cron_of(dspec.schedule, dspec.every) if dspec.scheduled else None
        due = None
        if cron is not None:
            try:
                due = schedule.latest_at_or_before(cron, dspec.time_zone, t)
            except schedule.ScheduleError:  # `@every` counts from the CronJob's own runs: judged by recency
                due = None
        if due is not None:
            match = [r for r in druns if r.first.scheduled is not None and r.first.scheduled == due]
            born = snap.created(view.namespace, dep.name)
            if not match and ((born is not None and due < born) or dspec.suspend):
                continue  # that slot never existed: the upstream was created after it, or is suspended
            results = [state(r, rule)[0] for r in match]
            ok = "Succeeded" in results
            failed = bool(results) and all(x in ("Failed", "Skipped", "Cancelled") for x in results)
            what = f"{dep.name}'s run of {due:%Y-%m-%dT%H:%M:%SZ}"
        else:
            window = durations.parse(dep.within) if dep.within else dt.timedelta(days=1)
            recent = [r for r in druns if r.last.finished and r.last.finished >= t - window]
            results = [state(r, rule)[0] for r in recent]
            ok = "Succeeded" in results
            failed = bool(results) and not ok and all(x in ("Failed",) for x in results)
            what = f"a success of {dep.name} within {dep.within or '1d'}"
        if ok:
            continue
        if failed:
            if spec.on_dependency_failure == "Skip":
                return Skip(f"DependencyFailed: {what} failed")
            continue
        if spec.dependency_timeout and snap.now - t > durations.parse(spec.dependency_timeout):
            return Skip(f"DependencyTimeout: waited {spec.dependency_timeout} for {what}")
        until = t + durations.parse(spec.dependency_timeout) if spec.dependency_timeout else None
        return Wait(f"WaitingForDependency: {what}", until)
    return None
