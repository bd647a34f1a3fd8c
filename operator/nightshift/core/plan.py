"""plan(observed) -> Plan: every decision of one BackgroundJob's reconcile, with no I/O and an injected clock.

The controller observes one BackgroundJob (its spec and annotations, the status this operator last
wrote, its runs from Jobs and pods, its run requests, the upstream runs it chains on, the CronJob as
seen, the clock, settings) and hands it here; what comes back is data: the attempts to create, the
Jobs and requests to delete, the status, the events, the ledger's endings, the quarantine patch and
the request statuses. `controller.apply` is the only code that writes. The CronJob is planned first
(`plan_cronjob`), because whether the API server accepts it decides Ready.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from nightshift.api import names
from nightshift.api.models import TERMINAL_PHASES, BackgroundJobSpec
from nightshift.core import gate, ledger, render, schedule
from nightshift.core import status as status_mod
from nightshift.core.records import AttemptRecord
from nightshift.core.runs import Run, parse_time, prunable, state
from nightshift.settings import Settings

Obj = dict[str, Any]
HANDLED_KEEP = 32


@dataclass(frozen=True)
class CronJobSeen:
    """What the operator reads of a CronJob with a BackgroundJob's name (from the CronJob index)."""

    controller_uid: str | None  # the uid of its controlling owner, if any
    rendered_hash: str | None
    created: dt.datetime | None = None  # where the CronJob controller starts counting slots


@dataclass(frozen=True)
class RequestSeen:
    """A BackgroundJobRun of this job, slimmed to what the plan reads."""

    name: str
    uid: str
    created: dt.datetime
    params: Mapping[str, Any] | None
    scheduled_time: dt.datetime | None
    status: Mapping[str, Any]


def request_run_id(request: str, uid: str, bgj: str, namespace: str) -> str:
    """The run made for a request: a pure function of the request, so a repeat gets AlreadyExists."""
    return names.run_id(bgj, "request", namespace, request, uid)


@dataclass(frozen=True)
class Problem:
    """Why the operator cannot serve a spec: Ready=False with this reason and message."""

    reason: str
    message: str


@dataclass(frozen=True)
class Observed:
    owner: render.Owner
    generation: int | None
    created: dt.datetime | None
    annotations: Mapping[str, str]
    spec: BackgroundJobSpec | None
    invalid: str | None  # the spec's validation errors, when spec is None
    written: Mapping[str, Any]  # the status this operator last wrote (else the watched one)
    runs: Sequence[Run]
    requests: Sequence[RequestSeen]
    upstream: Mapping[str, tuple[BackgroundJobSpec | None, Sequence[Run]]]  # runAfter name -> (spec, runs)
    cronjob: CronJobSeen | None
    problem: Problem | None  # from core.validate: schedule, built-ins, params, dependencies, cycles
    now: dt.datetime
    settings: Settings
    # final Jobs whose ledger mark this process wrote and the watch has not shown yet: counted, so
    # a pass in that gap does not count their runs a second time (controller.observe.marks_in_flight)
    counting: frozenset[str] = frozenset()


@dataclass(frozen=True)
class CronJobAction:
    verb: str  # create | replace | delete
    body: Obj | None = None


@dataclass(frozen=True)
class CronJobPlan:
    action: CronJobAction | None
    name: str | None  # status.cronJob
    problem: Problem | None


@dataclass(frozen=True)
class NewAttempt:
    attempt: render.Attempt
    event: tuple[str, str, str] | None = None  # posted only if the create was not a repeat
    retry: bool = False  # a retry of a failed attempt (counted in retries_total once created)


@dataclass(frozen=True)
class Event:
    type: str
    reason: str
    message: str
    key: str | None = None  # a deterministic event name: posting it twice is refused, never doubled


@dataclass
class Plan:
    cronjob: CronJobAction | None = None
    create: list[NewAttempt] = field(default_factory=list)
    delete_jobs: list[str] = field(default_factory=list)
    delete_requests: list[str] = field(default_factory=list)
    endings: list[ledger.Ending] = field(default_factory=list)
    unrecorded: list[tuple[str, tuple[AttemptRecord, ...]]] = field(default_factory=list)  # history to offer again
    events: list[Event] = field(default_factory=list)
    status: Obj = field(default_factory=dict)
    quarantine: bool = False
    missed: int = 0
    request_status: dict[str, Obj] = field(default_factory=dict)
    requeue_after: dt.timedelta | None = None


# -- the CronJob ----------------------------------------------------------------------------------------
def plan_cronjob(o: Observed) -> CronJobPlan:
    """Create, replace or delete the job's CronJob; adopt only what this BackgroundJob controls."""
    if o.spec is None or o.problem is not None:
        return CronJobPlan(None, None, None)
    want = render.cronjob(o.owner, o.spec, o.settings)
    have = o.cronjob
    if have is not None and have.controller_uid != o.owner.uid:
        return CronJobPlan(
            None,
            None,
            Problem("CronJobConflict", f"a CronJob named {o.owner.name} exists and is not owned by this BackgroundJob"),
        )
    if want is None:
        return CronJobPlan(CronJobAction("delete") if have is not None else None, None, None)
    if have is None:
        return CronJobPlan(CronJobAction("create", want), o.owner.name, None)
    if have.rendered_hash != want["metadata"]["annotations"][names.ANN_HASH]:
        return CronJobPlan(CronJobAction("replace", want), o.owner.name, None)
    return CronJobPlan(None, o.owner.name, None)


def rejected(message: str, verb: str) -> Problem:
    """The API server refused the CronJob (400/422): Ready=False, with its words."""
    reason = "InvalidSchedule" if verb == "create" and "schedule" in message.lower() else "CronJobRejected"
    return Problem(reason, message)


# -- the whole plan -------------------------------------------------------------------------------------
def plan(o: Observed, cron: CronJobPlan, cron_problem: Problem | None = None) -> Plan:
    """Everything else, once the CronJob's fate is known (`cron_problem`: the API server refused it)."""
    p = Plan(cronjob=cron.action)
    prev = o.written
    if o.spec is None:
        _invalid(o, p)
        return p
    spec = o.spec
    problem = o.problem or cron.problem or cron_problem
    handled = list(prev.get("handledTriggers") or [])
    rule = gate.retry_rule(spec)
    if problem is None:
        handled = _due_runs(o, spec, handled, p)
        _requests(o, spec, p)
        p.missed = _missed(o, spec, p)
    _retries(o, spec, p)
    p.endings = ledger.endings(o.runs, rule, o.counting)
    p.unrecorded = ledger.unrecorded(o.runs, rule)
    if p.unrecorded:
        _look_again(p, UNRECORDED_RETRY)
    resumed = parse_time(o.annotations.get(names.ANN_RESUMED))
    new = status_mod.build(
        spec,
        o.runs,
        {**prev, "handledTriggers": handled[-HANDLED_KEEP:]},
        generation=o.generation,
        now=o.now,
        cron_job=cron.name if problem is None else None,
        problem=(problem.reason, problem.message) if problem else None,
        failures_after=resumed,
        missed=p.missed,
    )
    p.status = new
    _transitions(o, spec, prev, new, p)
    _request_status(o, spec, p)
    for run in prunable(list(o.runs), rule, spec.history.successful, spec.history.failed):
        # a run is pruned only once its end is on the ledger and its rows are in the history store
        if run.last.counted and not run.last.history_pending:
            p.delete_jobs += [a.name for a in run.attempts]
    _prune_requests(o, p)
    return p


# How soon a run whose history rows are still buffered (the store was down) is looked at again.
UNRECORDED_RETRY = dt.timedelta(seconds=30)

# A request outlives its pruned run for this long, so `kubectl wait` and `nightshift trigger --wait` read its result.
REQUEST_RETENTION = dt.timedelta(minutes=10)


def _prune_requests(o: Observed, p: Plan) -> None:
    """Requests whose run was pruned go REQUEST_RETENTION after they ended; the plan asks to look again then."""
    have = {r.id for r in o.runs}
    pruned = set(p.delete_jobs)
    for req in o.requests:
        run = request_run_id(req.name, req.uid, o.owner.name, o.owner.namespace)
        if req.status.get("phase") not in TERMINAL_PHASES or (run in have and run not in pruned):
            continue
        ended = parse_time(req.status.get("completionTime")) or req.created
        due = ended + REQUEST_RETENTION
        if due <= o.now:
            p.delete_requests.append(req.name)
        else:
            _look_again(p, due - o.now)


def _look_again(p: Plan, after: dt.timedelta) -> None:
    if p.requeue_after is None or after < p.requeue_after:
        p.requeue_after = after


def _invalid(o: Observed, p: Plan) -> None:
    prev = o.written
    message = o.invalid or "invalid spec"
    conds = prev.get("conditions") or []
    ready = status_mod.condition(conds, "Ready", "False", "InvalidSpec", message, o.generation, o.now)
    old: Mapping[str, Any] = next((c for c in conds if c.get("type") == "Ready"), {})
    if (old.get("status"), old.get("reason")) != ("False", "InvalidSpec"):
        p.events.append(Event("Warning", "InvalidSpec", message))
    others = [c for c in conds if c.get("type") != "Ready"]
    p.status = {**prev, "observedGeneration": o.generation, "conditions": [ready, *others]}


def _due_runs(o: Observed, spec: BackgroundJobSpec, handled: list[str], p: Plan) -> list[str]:
    """Runs the operator makes itself: a run-now nonce, runOnCreate, `at`, a chained run.

    Each is remembered in handledTriggers by a marker, so a repeat (or a pruned run) is never made again.
    """
    name = o.owner.name

    def make(marker: str, attempt: render.Attempt) -> None:
        p.create.append(NewAttempt(attempt, ("Normal", "RunCreated", f"run {attempt.run} created ({attempt.trigger})")))
        handled.append(marker)

    nonce = o.annotations.get(names.ANN_RUN_NOW)
    if nonce:
        # A nonce is remembered as itself, or as a digest if too long for status.handledTriggers.
        marker = nonce if len(nonce) <= 100 else f"@nonce:{names.digest(nonce, size=32)}"
        if marker not in handled:
            try:
                params = json.loads(o.annotations.get(names.ANN_RUN_NOW + "-params") or "{}")
            except ValueError:
                params = None
            if not isinstance(params, dict):  # bad input never stops the run: it runs with the job's own params
                p.events.append(Event("Warning", "InvalidRunParams", "run-now-params is not a JSON object; ignored"))
                params = {}
            run = names.run_id(name, "manual", nonce)
            make(marker, render.Attempt(run, trigger="manual", scheduled_time=o.now, params=params))
    if spec.run_on_create and "@create" not in handled:
        run = names.run_id(name, "create", o.owner.uid)
        make("@create", render.Attempt(run, trigger="create", scheduled_time=o.now))
    if spec.at is not None:
        at_marker = f"@at:{status_mod.ts(spec.at)}"
        if at_marker not in handled:
            run = names.run_id(name, "at", at_marker)
            make(at_marker, render.Attempt(run, trigger="at", scheduled_time=spec.at, not_before=spec.at))
    chained = chain_run(o, spec)
    if chained and f"@chain:{chained.run}" not in handled:  # remembered: a pruned chained run stays done
        make(f"@chain:{chained.run}", chained)
    return handled


def chain_run(o: Observed, spec: BackgroundJobSpec) -> render.Attempt | None:
    """A chained run when every upstream has succeeded since this job's last run."""
    if not spec.run_after:
        return None
    since = o.runs[-1].time if o.runs else None
    latest: list[Run] = []
    for up in spec.run_after:
        uspec, uruns = o.upstream.get(up, (None, ()))
        if uspec is None:
            return None
        rule = gate.retry_rule(uspec)
        ok = [r for r in uruns if state(r, rule)[0] == "Succeeded" and r.last.finished]
        if not ok:
            return None
        best = max(ok, key=lambda r: r.last.finished or r.time)
        if since is not None and (best.last.finished or best.time) <= since:
            return None
        latest.append(best)
    ids = sorted(r.id for r in latest)
    return render.Attempt(names.run_id(o.owner.name, "chain", *ids), trigger="chain", scheduled_time=o.now)


def _requests(o: Observed, spec: BackgroundJobSpec, p: Plan) -> None:
    """Each BackgroundJobRun that has no run yet gets one; a request that ended is never run again."""
    have = {r.id for r in o.runs}
    for req in o.requests:
        if req.status.get("phase") not in (None, "Pending"):
            continue
        run = request_run_id(req.name, req.uid, o.owner.name, o.owner.namespace)
        if run in have:
            continue
        trigger = "backfill" if req.scheduled_time is not None else "manual"
        attempt = render.Attempt(
            run,
            trigger=trigger,
            scheduled_time=req.scheduled_time or req.created,
            params=dict(req.params or {}),
            request=req.name,
        )
        p.create.append(
            NewAttempt(
                attempt, ("Normal", "RunCreated", f"run {run} created for BackgroundJobRun {req.name} ({trigger})")
            )
        )


def _missed(o: Observed, spec: BackgroundJobSpec, p: Plan) -> int:
    """Count scheduled times that never got a run; with missedRuns RunAll, create them (bounded)."""
    cron = schedule.cron_of(spec.schedule, spec.every)
    last = _counting_since(o)
    scheduled = [r.first.scheduled for r in o.runs if r.trigger == "schedule" and r.first.scheduled]
    if cron is None or last is None or not scheduled or max(scheduled) <= last:
        return 0
    missed = schedule.missed_between(cron, spec.time_zone, last, max(scheduled))
    if not missed:
        return 0
    action = {"Skip": "skipped", "RunLatest": "the latest run runs", "RunAll": "caught up"}[spec.missed_runs]
    p.events.append(
        Event(
            "Warning",
            "MissedRuns",
            f"{len(missed)} scheduled runs missed between {status_mod.ts(last)} and "
            f"{status_mod.ts(max(scheduled))} ({action})",
        )
    )
    if spec.missed_runs == "RunAll":
        for t in missed[-spec.max_catch_up :]:
            run = names.run_id(o.owner.name, "catchup", t.isoformat())
            p.create.append(NewAttempt(render.Attempt(run, trigger="catchup", scheduled_time=t)))
    return len(missed)


def _counting_since(o: Observed) -> dt.datetime | None:
    """Where missed slots start: the last scheduled run, else the CronJob's creation (where the CronJob
    controller itself starts), and never before the job was last resumed: a slot while suspended was
    refused by the user, not missed (a missed run is one the cluster failed to start)."""
    since = parse_time(o.written.get("lastScheduleTime"))
    if since is None and o.cronjob is not None:
        since = o.cronjob.created
    resumed = next(
        (
            parse_time(c.get("lastTransitionTime"))
            for c in o.written.get("conditions") or []
            if c.get("type") == "Suspended" and c.get("status") == "False"
        ),
        None,
    )
    if since is None or resumed is None:
        return since
    return max(since, resumed)


def _retries(o: Observed, spec: BackgroundJobSpec, p: Plan) -> None:
    """A retryable failed attempt gets its next attempt, suspended until its backoff ends."""
    rule = gate.retry_rule(spec)
    for run in o.runs:
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
            request=run.first.request,
        )
        text = f"run {run.id} attempt {last.attempt} failed ({reason}); attempt {n} after {delay.total_seconds():.0f}s"
        p.create.append(NewAttempt(nxt, ("Warning", "Retrying", text), retry=True))


def _transitions(o: Observed, spec: BackgroundJobSpec, prev: Mapping[str, Any], new: Obj, p: Plan) -> None:
    """Events on changes of Ready and quarantine, compared with the status this operator last wrote.

    A new job that becomes Ready gets no event: its condition says so, and at 10,000 new jobs an
    event each is a third of the writes that applying them costs. Ready=False always gets one, and
    so does a job that becomes Ready again.
    """
    old_ready: Mapping[str, Any] = next((c for c in prev.get("conditions") or [] if c.get("type") == "Ready"), {})
    new_ready = next(c for c in new["conditions"] if c["type"] == "Ready")
    changed = (old_ready.get("status"), old_ready.get("reason")) != (new_ready["status"], new_ready["reason"])
    if changed and (old_ready or new_ready["status"] != "True"):
        p.events.append(
            Event("Normal" if new_ready["status"] == "True" else "Warning", new_ready["reason"], new_ready["message"])
        )
    was = any(c.get("type") == "Quarantined" and c.get("status") == "True" for c in prev.get("conditions") or [])
    quarantined = next(c for c in new["conditions"] if c["type"] == "Quarantined")["status"] == "True"
    p.quarantine = quarantined and not spec.suspend
    if quarantined and not was:
        p.events.append(
            Event(
                "Warning",
                "Quarantined",
                f"{new['consecutiveFailures']} consecutive failed runs: suspended until resumed",
            )
        )


def request_status(run: Run | None, spec: BackgroundJobSpec, now: dt.datetime, prev: Mapping[str, Any]) -> Obj:
    """A BackgroundJobRun's status from the one run made for it; conditions for `kubectl wait`."""
    conds = prev.get("conditions") or []
    if run is None:
        phase, why = "Pending", None
        summary: Obj = {}
    else:
        phase, why = state(run, gate.retry_rule(spec))
        summary = status_mod.run_summary(run, phase, why)
    finished = phase in TERMINAL_PHASES
    out: Obj = {
        "phase": phase,
        "runId": run.id if run else None,
        "attempts": summary.get("attempts", 0),
        "scheduledTime": summary.get("scheduledTime"),
        "startTime": summary.get("startTime"),
        "completionTime": summary.get("completionTime") or (status_mod.ts(run.last.finished) if run else None),
        "exitCode": summary.get("exitCode"),
        "reason": summary.get("reason"),
        "message": summary.get("message"),
        "output": summary.get("output"),
    }
    ok = "True" if phase == "Succeeded" else "False"
    out["conditions"] = [
        status_mod.condition(conds, "Finished", "True" if finished else "False", phase, why or "", None, now),
        status_mod.condition(conds, "Succeeded", ok if finished else "Unknown", phase, why or "", None, now),
    ]
    for c in out["conditions"]:
        c.pop("observedGeneration", None)
    return {k: v for k, v in out.items() if v is not None}


def orphan_request_status(job: str, namespace: str, now: dt.datetime, prev: Mapping[str, Any]) -> Obj | None:
    """A request whose BackgroundJob does not exist (not yet, as in a GitOps apply, or no more): it
    stays Pending and says why, so `kubectl get bgjr` and `kubectl wait` are not left guessing.
    None when it already says so, or when it ended before its job went (it keeps its result)."""
    if prev.get("phase") not in (None, "Pending"):
        return None
    why = f"no BackgroundJob {job} in namespace {namespace}; the run starts when it exists"
    conds = prev.get("conditions") or []
    want: Obj = {
        "phase": "Pending",
        "attempts": 0,
        "reason": "BackgroundJobNotFound",
        "message": why,
        "conditions": [
            status_mod.condition(conds, "Finished", "False", "BackgroundJobNotFound", why, None, now),
            status_mod.condition(conds, "Succeeded", "Unknown", "BackgroundJobNotFound", why, None, now),
        ],
    }
    for c in want["conditions"]:
        c.pop("observedGeneration", None)
    return None if _same_request_status(prev, want) else want


def _request_status(o: Observed, spec: BackgroundJobSpec, p: Plan) -> None:
    by_id = {r.id: r for r in o.runs}
    for req in o.requests:
        run = by_id.get(request_run_id(req.name, req.uid, o.owner.name, o.owner.namespace))
        if run is None and req.status.get("phase") not in (None, "Pending"):
            continue  # its run was pruned: the request keeps the result it was given
        want = request_status(run, spec, o.now, req.status)
        if not _same_request_status(req.status, want):
            p.request_status[req.name] = want


def _same_request_status(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    def strip(s: Mapping[str, Any]) -> Obj:
        return {
            **{k: v for k, v in s.items() if k != "conditions"},
            "conditions": [(c.get("type"), c.get("status"), c.get("reason")) for c in s.get("conditions") or []],
        }

    return strip(a) == strip(b)
