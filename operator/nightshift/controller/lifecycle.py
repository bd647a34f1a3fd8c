"""Runs the operator creates and removes: triggers, chains, catch-up, retries, history, pruning.

Every run it creates has a name derived from its cause (names.py), so repeating any of this after a
crash or a restart gets AlreadyExists instead of a second run.
"""

from __future__ import annotations

import json
from typing import Any

from nightshift.api import names
from nightshift.api.models import BackgroundJobSpec
from nightshift.controller.context import SETTINGS, WAKE, event, history, kube, now
from nightshift.controller.state import STATE
from nightshift.core import gate, render, schedule
from nightshift.core import runs as runs_mod
from nightshift.core import status as status_mod
from nightshift.core.runs import Run, state
from nightshift.infra import metrics
from nightshift.infra.history import AttemptRecord
from nightshift.infra.kube import JOBS, ApiError


async def prune(owner: render.Owner, spec: BackgroundJobSpec, runs: list[Run]) -> None:
    """Keep the newest runs within the history limits, for every trigger.

    The CronJob controller prunes only finished Jobs it owns; retries, triggered runs and skipped
    or cancelled runs (suspended Jobs, never finished) are the operator's to prune. What is pruned
    stays in status (monotone timestamps, lastRun) and in the PostgreSQL history.
    """
    for run in runs_mod.prunable(runs, gate.retry_rule(spec), spec.history.successful, spec.history.failed):
        for a in run.attempts:
            if (a.namespace, a.name) not in _pruned:
                _pruned.add((a.namespace, a.name))
                await kube().delete(JOBS, a.name, a.namespace, propagation="Background")
    if len(_pruned) > 10000:
        _pruned.clear()


_pruned: set[tuple[str, str]] = set()  # deletes already sent; the watch removes the Jobs soon after


def record_history(spec: BackgroundJobSpec, runs: list[Run]) -> None:
    writer = history()
    if writer is None:
        return
    rule = gate.retry_rule(spec)
    for run in runs:
        result, reason = state(run, rule)
        for a in run.attempts:
            final = a is run.last
            if final and result not in ("Succeeded", "Failed", "Skipped", "Cancelled"):
                continue
            if not final and not a.finished:
                continue
            out = runs_mod.output_of(a.message)
            writer.record(
                AttemptRecord(
                    namespace=a.namespace,
                    job_name=a.name,
                    backgroundjob=a.bgj,
                    run_id=run.id,
                    attempt=a.attempt,
                    trigger=run.trigger,
                    scheduled_time=run.first.scheduled,
                    started_at=a.started,
                    finished_at=a.finished,
                    result=result if final else "Failed",
                    exit_code=a.exit_code,
                    reason=reason if final else None,
                    message=(out or {}).get("message") if out else a.message,
                    output=out,
                )
            )


async def create_due_runs(
    owner: render.Owner, spec: BackgroundJobSpec, body: dict[str, Any], handled: list[str]
) -> list[str]:
    """Runs the operator creates itself: run-now nonces, runOnCreate, `at`, chained runs."""
    ann = body["metadata"].get("annotations") or {}
    nonce = ann.get(names.ANN_RUN_NOW)
    # A nonce is remembered as itself, or as a digest if too long for status.handledTriggers.
    marker = nonce if nonce is None or len(nonce) <= 100 else f"@nonce:{names.digest(nonce, size=32)}"
    todo: list[tuple[str, render.Attempt]] = []
    if nonce and marker and marker not in handled:
        try:
            params = json.loads(ann.get(names.ANN_RUN_NOW + "-params") or "{}")
        except ValueError:
            params = None
        if not isinstance(params, dict):  # bad input never stops the run: it runs with the job's own params
            await event(owner, "Warning", "InvalidRunParams", "run-now-params is not a JSON object; ignored")
            params = {}
        todo.append(
            (
                marker,
                render.Attempt(
                    names.run_id(owner.name, "manual", nonce),
                    trigger="manual",
                    scheduled_time=now(),
                    params=params,
                ),
            )
        )
    if spec.run_on_create and "@create" not in handled:
        todo.append(
            (
                "@create",
                render.Attempt(names.run_id(owner.name, "create", owner.uid), trigger="create", scheduled_time=now()),
            )
        )
    if spec.at is not None:
        at_marker = f"@at:{status_mod.ts(spec.at)}"
        if at_marker not in handled:
            todo.append(
                (
                    at_marker,
                    render.Attempt(
                        names.run_id(owner.name, "at", at_marker),
                        trigger="at",
                        scheduled_time=spec.at,
                        not_before=spec.at,
                    ),
                )
            )
    chained = chain_run(owner.namespace, owner.name, spec)
    if chained and f"@chain:{chained.run}" not in handled:  # remembered: a pruned chained run stays done
        todo.append((f"@chain:{chained.run}", chained))
    for done, attempt in todo:
        if await create_attempt(owner, spec, attempt) is not None:
            await event(owner, "Normal", "RunCreated", f"run {attempt.run} created ({attempt.trigger})")
        handled.append(done)
    return handled


async def missed_runs(owner: render.Owner, spec: BackgroundJobSpec, prev: dict[str, Any]) -> int:
    """Count scheduled times that never got a run; with missedRuns RunAll, create them (bounded)."""
    cron = schedule.cron_of(spec.schedule, spec.every)
    last = runs_mod.parse_time(prev.get("lastScheduleTime"))
    scheduled = [
        r.first.scheduled
        for r in STATE.runs(owner.namespace, owner.name)
        if r.trigger == "schedule" and r.first.scheduled
    ]
    if cron is None or last is None or not scheduled or max(scheduled) <= last:
        return 0
    missed = schedule.missed_between(cron, spec.time_zone, last, max(scheduled))
    if not missed:
        return 0
    metrics.observe_missed_runs(owner.namespace, owner.name, len(missed))
    action = {"Skip": "skipped", "RunLatest": "the latest run runs", "RunAll": "caught up"}[spec.missed_runs]
    await event(
        owner,
        "Warning",
        "MissedRuns",
        f"{len(missed)} scheduled runs missed between {status_mod.ts(last)} and "
        f"{status_mod.ts(max(scheduled))} ({action})",
    )
    if spec.missed_runs == "RunAll":
        for t in missed[-spec.max_catch_up :]:
            await create_attempt(
                owner,
                spec,
                render.Attempt(names.run_id(owner.name, "catchup", t.isoformat()), trigger="catchup", scheduled_time=t),
            )
    return len(missed)


def chain_run(ns: str, name: str, spec: BackgroundJobSpec) -> render.Attempt | None:
    """A chained run when every upstream has succeeded since this job's last run."""
    if not spec.run_after:
        return None
    mine = STATE.runs(ns, name)
    since = mine[-1].time if mine else None
    latest: list[Run] = []
    for up in spec.run_after:
        uspec = STATE.spec(ns, up)
        if uspec is None:
            return None
        rule = gate.retry_rule(uspec)
        ok = [r for r in STATE.runs(ns, up) if state(r, rule)[0] == "Succeeded" and r.last.finished]
        if not ok:
            return None
        best = max(ok, key=lambda r: r.last.finished or r.time)
        if since is not None and (best.last.finished or best.time) <= since:
            return None
        latest.append(best)
    ids = sorted(r.id for r in latest)
    return render.Attempt(names.run_id(name, "chain", *ids), trigger="chain", scheduled_time=now())


async def create_attempt(
    owner: render.Owner, spec: BackgroundJobSpec, attempt: render.Attempt
) -> dict[str, Any] | None:
    """Create the attempt's suspended Job; None when it exists already (a repeat after a restart)."""
    try:
        created: dict[str, Any] = await kube().create(JOBS, render.attempt_job(owner, spec, SETTINGS, attempt))
    except ApiError as e:
        if e.conflict:
            return None
        if e.status in (400, 422):  # the API server refuses this job's pod template: say so, once per run
            await event(owner, "Warning", "RunRejected", f"run {attempt.run} could not be created: {e.message}")
            return None
        raise
    WAKE.set()
    return created


async def after_attempts(owner: render.Owner, spec: BackgroundJobSpec, runs: list[Run]) -> None:
    """Retries: a retryable failed attempt gets its next attempt, suspended until its backoff ends."""
    rule = gate.retry_rule(spec)
    for run in runs:
        result, reason = state(run, rule)
        last = run.last
        if result != "Retrying" or not last.failed or last.finished is None:
            continue
        n = last.attempt + 1
        delay = gate.backoff_delay(spec.retry.backoff, last.attempt, run.id)
        nxt = render.Attempt(
            run.id,
            n,
            trigger=run.trigger,
            scheduled_time=run.first.scheduled or run.first.created,
            not_before=last.finished + delay,
            params=dict(run.first.params or {}),
        )
        if await create_attempt(owner, spec, nxt) is not None:
            metrics.observe_retry(owner.namespace, owner.name)
            await event(
                owner,
                "Warning",
                "Retrying",
                f"run {run.id} attempt {last.attempt} failed ({reason}); attempt {n} after {delay.total_seconds():.0f}s",
            )
