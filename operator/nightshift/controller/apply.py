"""apply(plan): the only code that writes, in an order that keeps every run accounted for once.

Order matters: attempts are created before status claims them; a run's end is counted in the
metrics (once per process) and its event posted before anything shows it (the status, its
request's status), which are written beside the ledger's mark on the Job; the mark goes on only
after the event (deterministic name) and the history rows (idempotent upsert), so a crash before
it repeats only writes the API server or the store refuses to double; a Job is pruned only after
its mark was seen.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
import logging
from collections.abc import Awaitable, Iterable
from typing import Any, cast

from nightshift.api import names
from nightshift.controller.indexes import canonical
from nightshift.controller.runtime import Runtime
from nightshift.core import plan as plan_mod
from nightshift.core import render, schedule
from nightshift.core.ledger import Ending
from nightshift.core.plan import CronJobAction, Observed, Plan, Problem
from nightshift.infra import metrics
from nightshift.infra.kube import BACKGROUNDJOBRUNS, BACKGROUNDJOBS, CRONJOBS, JOBS, JSON_PATCH, ApiError, Resource

log = logging.getLogger("nightshift")


async def apply_cronjob(rt: Runtime, o: Observed, action: CronJobAction | None) -> Problem | None:
    """Converge the CronJob; a refusal by the API server (400/422) becomes the job's Ready problem."""
    if action is None:
        return None
    k = rt.kube()
    owner = o.owner
    echo = ("cronjob", owner.namespace, owner.name)
    if action.body is not None:  # before the write: the watch may bring the CronJob back before it returns
        rt.expectations.expect(echo, (owner.uid, action.body["metadata"]["annotations"][names.ANN_HASH]))
    try:
        if action.verb == "delete":
            await k.delete(CRONJOBS, owner.name, owner.namespace, propagation="Orphan")
        elif action.verb == "create":
            assert action.body is not None
            try:
                await k.create(CRONJOBS, action.body)
            except ApiError as e:
                if not e.conflict:
                    raise
                # made by our own earlier pass, or by someone else: the CronJob watch tells which
        else:
            assert action.body is not None
            await k.replace(CRONJOBS, action.body)
    except ApiError as e:
        rt.expectations.observed(echo)
        if e.status in (400, 422):
            return plan_mod.rejected(e.message, action.verb)
        raise
    return None


async def apply(rt: Runtime, o: Observed, p: Plan) -> None:
    owner = o.owner
    ns, name = owner.namespace, owner.name
    spec = o.spec
    k = rt.kube()
    for ev in p.events:
        await rt.events.post(owner, ev.type, ev.reason, ev.message, key=ev.key)
    if spec is not None:
        for new in p.create:
            body = render.attempt_job(owner, spec, rt.settings, new.attempt)
            created = await _create_job(rt, owner, body, new.attempt.run)
            if created:
                rt.wake.set()
                if new.retry:
                    metrics.observe_retry(ns, name)
                if new.event:
                    await rt.events.post(owner, *new.event)
    # the ledger: each end counted in this process and its event posted, then the marks, the status
    # and the requests' statuses at once (one round trip, not three in a row: a run's end reaches
    # its status in two)
    await _all(_announce(rt, owner, ending) for ending in p.endings)
    await _all(
        [
            *(_mark(rt, owner, ending) for ending in p.endings),
            _recorded(rt, ns, p.unrecorded),
            _write_status(rt, o, p.status),
            *(_replace_status(rt, BACKGROUNDJOBRUNS, req, ns, status) for req, status in p.request_status.items()),
        ]
    )
    if p.quarantine:
        await k.patch(BACKGROUNDJOBS, name, {"spec": {"suspend": True}}, ns)
        entry = rt.indexes.bgj(ns, name)
        if entry is not None:  # until the watch brings the patched spec back, so the next pass sees it
            entry.spec_json = canonical({**entry.spec, "suspend": True})
    if p.missed:
        metrics.observe_missed_runs(ns, name, p.missed)
    for job in p.delete_jobs:
        if rt.expectations.pending(("delete", ns, job)) is None:
            rt.expectations.expect(("delete", ns, job))
            await k.delete(JOBS, job, ns, propagation="Background")
    for req in p.delete_requests:
        if rt.expectations.pending(("delete-request", ns, req)) is None:
            rt.expectations.expect(("delete-request", ns, req))
            await k.delete(BACKGROUNDJOBRUNS, req, ns)
    _export(rt, o, p)


async def apply_orphan_requests(rt: Runtime, key: tuple[str, str]) -> None:
    """Requests naming a BackgroundJob that does not exist: each says so in its status (once)."""
    ns, job = key
    for req in rt.indexes.requests_of(ns, job):
        want = plan_mod.orphan_request_status(job, ns, rt.clock(), req.status)
        if want is not None:
            await _replace_status(rt, BACKGROUNDJOBRUNS, req.name, ns, want)


async def _create_job(rt: Runtime, owner: render.Owner, body: dict[str, Any], run: str) -> bool:
    """Create an attempt's suspended Job; False when it exists already (a repeat after a restart)."""
    try:
        await rt.kube().create(JOBS, body)
    except ApiError as e:
        if e.conflict:
            return False
        if e.status in (400, 422):  # the API server refuses this job's pod template: say so, once per run
            await rt.events.post(
                owner, "Warning", "RunRejected", f"run {run} could not be created: {e.message}", key=f"rejected/{run}"
            )
            return False
        raise
    return True


HISTORY_WAIT_S = 2.0  # how long the ledger waits for the history store before marking the rows pending


async def _recorded(rt: Runtime, ns: str, unrecorded: list[tuple[str, tuple[Any, ...]]]) -> None:
    """Counted runs whose rows the store had not taken: offer them again (after a restart the buffer
    is empty), and take the pending mark off once the store has them (or there is no store)."""
    for job, rows in unrecorded:
        if rt.history is not None:
            for row in rows:
                rt.history.record(row)
            if not rt.history.has(rows):
                continue
        try:
            await rt.kube().patch(JOBS, job, {"metadata": {"annotations": {names.ANN_HISTORY_PENDING: None}}}, ns)
        except ApiError as e:
            if not e.not_found:
                raise


async def _all(writes: Iterable[Awaitable[None]]) -> None:
    """Independent writes at once; all finish before the first error is raised."""
    results = await asyncio.gather(*writes, return_exceptions=True)
    for result in results:
        if isinstance(result, BaseException):
            raise result


async def _announce(rt: Runtime, owner: render.Owner, ending: Ending) -> None:
    """An end's count in this process's metrics (once: `rt.counted` remembers it until the watch
    shows the Job's mark), then its event (a deterministic name: a repeat is refused).

    Both come before anything that shows the end (the status, the request's status), so whoever
    sees it there finds the event and the metric too. The metric is in memory and restarts with
    the process; the mark (`_mark`) is what makes the count durable: a process that starts after
    a crash before the mark counts the run in its own metrics and posts the event again (refused)."""
    ns = owner.namespace
    if (ns, ending.job) not in rt.counted:
        rt.counted[(ns, ending.job)] = False  # counted; its mark not yet written
        _observe(owner, ending)
    type_, reason, message = ending.event
    await rt.events.post(owner, type_, reason, message, key=f"end/{ending.run.id}")


async def _mark(rt: Runtime, owner: render.Owner, ending: Ending) -> None:
    """The ledger's mark on the run's final Job, once its history rows are queued (an idempotent
    upsert): after it no process counts the run again. Written beside the status, after the event,
    so a crash between the event and the mark repeats only the event (refused by name)."""
    annotations = {names.ANN_COUNTED: ending.result}
    if rt.history is not None:
        for row in ending.history:
            rt.history.record(row)
        if not await rt.history.wait_durable(ending.history, timeout=HISTORY_WAIT_S):
            annotations[names.ANN_HISTORY_PENDING] = "true"  # offered again until the store has them
    try:
        await rt.kube().patch(JOBS, ending.job, {"metadata": {"annotations": annotations}}, owner.namespace)
    except ApiError as e:
        if not e.not_found:
            raise  # the next pass writes it again; `rt.counted` keeps the metric from counting twice
        rt.counted.pop((owner.namespace, ending.job), None)  # deleted by hand meanwhile: no mark to wait for
        return
    # written: until the watch shows it, passes leave this end alone (observe.marks_in_flight)
    rt.counted[(owner.namespace, ending.job)] = True


def _observe(owner: render.Owner, ending: Ending) -> None:
    metrics.observe_run(
        owner.namespace,
        owner.name,
        cast(metrics.RunResult, ending.metric_result),
        ending.duration_s,
        reason=ending.reason_kind if ending.result == "Skipped" else None,
    )


async def _write_status(rt: Runtime, o: Observed, new: dict[str, Any]) -> None:
    """The BackgroundJob's status, unless the watched one is the same already."""
    owner = o.owner
    key = (owner.namespace, owner.name)
    entry = rt.indexes.bgj(*key)
    data = canonical(new)
    if entry is not None and entry.status_json == data:
        rt.status.remember(key, owner.uid, entry.status_json, sent=False)  # the same bytes, held once
        return
    await _replace_status(rt, BACKGROUNDJOBS, owner.name, owner.namespace, new)
    rt.status.remember(key, owner.uid, data, sent=True)
    if entry is not None:
        entry.status_json = data  # until the watch brings the patched object back


async def _replace_status(rt: Runtime, res: Resource, name: str, namespace: str, status: dict[str, Any]) -> None:
    """Replace a whole status (a JSON patch `add /status`): a merge patch would keep keys the new status
    no longer has, such as the previous run's completionTime under lastRun. Gone objects are no error."""
    try:
        await rt.kube().patch(
            res,
            name,
            [{"op": "add", "path": "/status", "value": status}],
            namespace,
            sub="status",
            content_type=JSON_PATCH,
        )
    except ApiError as e:
        if not e.not_found:
            raise


def _export(rt: Runtime, o: Observed, p: Plan) -> None:
    """The pass's view for the per-job gauges: the values worked out now (the view keeps them, not
    the status), one dict assignment; the collector reads them when /metrics is scraped."""
    spec = o.spec
    interval = None
    if spec is not None and not spec.suspend:
        cron = _cron(spec.schedule, spec.every)
        if cron:
            interval = _max_interval(cron, spec.time_zone, o.now.date())
    active = [r for r in o.runs if any(a.active for a in r.attempts)]
    started = min((r.first.started or r.time) for r in active) if active else None
    view = metrics.JobView(
        p.status,
        created_ts=o.created.timestamp() if o.created else None,
        running_since_ts=started.timestamp() if started else None,
        schedule_interval_s=interval,
    )
    metrics.set_job(o.owner.namespace, o.owner.name, view)


def _cron(cron: str | None, every: str | None) -> str | None:
    try:
        return schedule.cron_of(cron, every)
    except schedule.ScheduleError:
        return None


@functools.lru_cache(maxsize=4096)
def _max_interval(cron: str, tz: str, day: dt.date) -> float:
    """The schedule's longest gap, from the start of `day`: a pure function of its arguments, so cached;
    computing it (16 cron steps) on every pass was a good part of a pass's CPU."""
    start = dt.datetime.combine(day, dt.time(), tzinfo=dt.UTC)
    try:
        return schedule.max_interval(cron, tz, start)
    except schedule.ScheduleError:  # a schedule that never fires: not recurring
        return 0.0
