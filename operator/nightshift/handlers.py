# mypy: disable-error-code="arg-type"
"""kopf handlers: the I/O edge around the pure core (render, runs, gate, status).

Run with `kopf run -m nightshift.handlers --all-namespaces`. Everything is level-based: each watch
event of a BackgroundJob, one of its Jobs or their pods reconciles that one BackgroundJob from the
indexes (no API lists); one gate task admits waiting runs, woken by events and by a short tick for
retry and dependency deadlines.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import time
from typing import Any

import kopf
from pydantic import ValidationError

from nightshift import gate, metrics, names, render, schedule
from nightshift import runs as runs_mod
from nightshift import status as status_mod
from nightshift.history import AttemptRecord, HistoryWriter
from nightshift.kube import BACKGROUNDJOBS, CRONJOBS, EVENTS, JOBS, QUEUES, ApiError, Kube
from nightshift.models import GROUP, VERSION, BackgroundJobSpec
from nightshift.runs import AttemptView, Run, attempt_view, state
from nightshift.settings import Settings
from nightshift.state import STATE

log = logging.getLogger("nightshift")
SETTINGS = Settings()
_kube: Kube | None = None
_wake = asyncio.Event()
_history: HistoryWriter | None = None
_started = time.time()


def kube() -> Kube:
    global _kube
    if _kube is None:
        _kube = Kube.from_env()
    return _kube


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


# -- start-up ---------------------------------------------------------------------------------------
@kopf.on.startup()
async def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
    # Watches that go silent (kopf #585, #957) are cut and resumed; bookmarks keep resourceVersion fresh.
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.watching.connect_timeout = 10
    settings.watching.reconnect_backoff = 1.0
    settings.persistence.finalizer = f"{GROUP}/finalizer"
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=GROUP, key="last-handled-configuration"
    )
    settings.posting.level = logging.WARNING
    settings.execution.max_workers = 8
    if SETTINGS.webhook_port:
        settings.admission.server = kopf.WebhookServer(
            addr=SETTINGS.listen_address,
            port=SETTINGS.webhook_port,
            host=SETTINGS.webhook_host,
            certfile=SETTINGS.webhook_certfile,
            pkeyfile=SETTINGS.webhook_keyfile,
            cafile=SETTINGS.webhook_cafile,
        )
        settings.admission.managed = GROUP
    if SETTINGS.history_dsn:
        global _history
        _history = HistoryWriter(SETTINGS.history_dsn, retention_days=SETTINGS.history_retention_days)
        _history.start()
    metrics.start_server(SETTINGS.metrics_port, SETTINGS.listen_address)
    metrics.set_leader(True)
    asyncio.create_task(_gate_loop())


@kopf.on.cleanup()
async def cleanup(**_: Any) -> None:
    if _kube is not None:
        await _kube.close()


@kopf.on.probe(id="indexes")
async def probe(**_: Any) -> bool:
    return STATE.bound


# -- indexes ----------------------------------------------------------------------------------------
@kopf.index(GROUP, VERSION, "backgroundjobs")
async def bgj_index(namespace: str, name: str, body: kopf.Body, **_: Any) -> dict[Any, Any]:
    md = body.metadata
    return {
        (namespace, name): {
            "uid": md.uid,
            "generation": md.get("generation", 1),
            "spec": dict(body.spec),
            "status": dict(body.status),
            "annotations": dict(md.annotations),
            "created": md.get("creationTimestamp"),
        }
    }


@kopf.index(GROUP, VERSION, "backgroundjobs")
async def downstream_index(namespace: str, name: str, spec: kopf.Spec, **_: Any) -> dict[Any, Any]:
    return {(namespace, up): name for up in spec.get("runAfter") or []}


@kopf.index(GROUP, VERSION, "backgroundjobqueues")
async def queue_index(namespace: str, name: str, spec: kopf.Spec, **_: Any) -> dict[Any, Any]:
    return {(namespace, name): dict(spec)}


_JOB_FILTER = {names.LABEL_BGJ: kopf.PRESENT}
# Index functions return {} rather than None: kopf keeps an object's previous entries when an
# index function returns None, so a Job that stopped waiting would stay "waiting" forever.


@kopf.index("batch", "v1", "jobs", labels=_JOB_FILTER)
async def job_index(body: kopf.Body, **_: Any) -> dict[Any, Any]:
    view = attempt_view(body)
    return {(view.namespace, view.bgj): view} if view else {}


@kopf.index("batch", "v1", "jobs", labels=_JOB_FILTER)
async def waiting_index(body: kopf.Body, **_: Any) -> dict[Any, Any]:
    view = attempt_view(body)
    return {"waiting": view} if view and view.waiting else {}


@kopf.index("batch", "v1", "jobs", labels=_JOB_FILTER)
async def active_index(body: kopf.Body, **_: Any) -> dict[Any, Any]:
    view = attempt_view(body)
    return {(view.namespace, view.queue or ""): view} if view and view.active else {}


@kopf.index("batch", "v1", "jobs", labels=_JOB_FILTER)
async def admitted_index(body: kopf.Body, **_: Any) -> dict[Any, Any]:
    """Start times per queue, for rate limits (a Job's startTime is set when the gate admits it)."""
    view = attempt_view(body)
    return {(view.namespace, view.queue): view.started} if view and view.queue and view.started else {}


@kopf.index("", "v1", "pods", labels=_JOB_FILTER)
async def pod_index(namespace: str, labels: kopf.Labels, body: kopf.Body, **_: Any) -> dict[Any, Any]:
    job = labels.get("batch.kubernetes.io/job-name") or labels.get("job-name")
    if not job:
        return {}
    return {(namespace, job): {"status": {"containerStatuses": list(body.status.get("containerStatuses") or [])}}}


@kopf.index("", "v1", "configmaps", labels={names.ANN_STOP: kopf.PRESENT})
async def stop_index(namespace: str, labels: kopf.Labels, body: kopf.Body, **_: Any) -> dict[Any, Any]:
    scope = "*" if labels.get(names.ANN_STOP) == "cluster" else namespace
    return {scope: (body.get("data") or {}).get("reason", "emergency stop")}


# -- admission ----------------------------------------------------------------------------------------
@kopf.on.validate(GROUP, VERSION, "backgroundjobs", operations=["CREATE", "UPDATE"], ignore_failures=True)
async def validate(
    spec: kopf.Spec, name: str | None, namespace: str | None, warnings: list[str], **kwargs: Any
) -> None:
    """Reject what the schema cannot: cron syntax, unknown built-ins, dependency cycles.

    A missing dependency is only a warning: `kubectl apply -f dir/` creates objects in name order,
    so a job may arrive before the job it depends on; it gets Ready=False until then.
    The webhook fails open (failurePolicy Ignore): while the operator is down, the schema and CEL
    rules still guard writes, and the operator reports anything else as Ready=False.
    """
    STATE.bind(kwargs)
    try:
        parsed = BackgroundJobSpec.model_validate(dict(spec))
    except ValidationError as e:
        raise kopf.AdmissionError(_errors(e), code=422) from e
    problem = _problem(namespace or "", name or "", parsed)
    if problem is None:
        return
    reason, message = problem
    if reason == "DependencyNotFound":
        warnings.append(message)
        return
    raise kopf.AdmissionError(f"{reason}: {message}", code=422)


def _errors(e: ValidationError) -> str:
    return "; ".join(f"{'.'.join(map(str, err['loc']))}: {err['msg']}" for err in e.errors())[:1000]


# -- BackgroundJob reconcile --------------------------------------------------------------------------
@kopf.on.event(GROUP, VERSION, "backgroundjobs")
async def on_bgj(event: kopf.RawEvent, namespace: str, name: str, body: kopf.Body, **kwargs: Any) -> None:
    STATE.bind(kwargs)
    if event.get("type") == "DELETED":
        metrics.forget_job(namespace, name)
        return
    await reconcile(namespace, name, dict(body))
    _wake.set()


@kopf.on.event("batch", "v1", "jobs", labels=_JOB_FILTER)
async def on_job(namespace: str, labels: kopf.Labels, **kwargs: Any) -> None:
    STATE.bind(kwargs)
    owner = labels[names.LABEL_BGJ]
    if STATE.bgj(namespace, owner) is not None:
        await reconcile(namespace, owner, None)
        for downstream in STATE.downstream_of(namespace, owner):  # chained runs start on an upstream's success
            await reconcile(namespace, downstream, None)
    _wake.set()


@kopf.on.event("", "v1", "pods", labels=_JOB_FILTER)
async def on_pod(namespace: str, labels: kopf.Labels, body: kopf.Body, **kwargs: Any) -> None:
    STATE.bind(kwargs)
    if body.status.get("phase") in ("Succeeded", "Failed") and STATE.bgj(namespace, labels[names.LABEL_BGJ]):
        await reconcile(namespace, labels[names.LABEL_BGJ], None)


@kopf.on.event("", "v1", "configmaps", labels={names.ANN_STOP: kopf.PRESENT})
async def on_stop(**kwargs: Any) -> None:
    STATE.bind(kwargs)
    _wake.set()


@kopf.on.event(GROUP, VERSION, "backgroundjobqueues")
async def on_queue(**kwargs: Any) -> None:
    STATE.bind(kwargs)
    _wake.set()


_locks: dict[tuple[str, str], asyncio.Lock] = {}


async def reconcile(ns: str, name: str, body: dict[str, Any] | None) -> None:
    """Converge the CronJob, create due operator runs, rebuild status; one job at a time."""
    lock = _locks.setdefault((ns, name), asyncio.Lock())
    async with lock:
        t0 = time.monotonic()
        try:
            if body is None:
                entry = STATE.bgj(ns, name)
                if entry is None:
                    return
                body = {
                    "metadata": {
                        "name": name,
                        "namespace": ns,
                        "uid": entry["uid"],
                        "generation": entry["generation"],
                        "annotations": entry["annotations"],
                        "creationTimestamp": entry["created"],
                    },
                    "spec": entry["spec"],
                    "status": entry["status"],
                }
            await _reconcile(ns, name, body)
        except Exception:
            log.exception("reconcile %s/%s failed", ns, name)
            metrics.observe_reconcile("backgroundjob", time.monotonic() - t0, error=True)
            return
        metrics.observe_reconcile("backgroundjob", time.monotonic() - t0)


async def _reconcile(ns: str, name: str, body: dict[str, Any]) -> None:
    md = body["metadata"]
    owner = render.Owner(name, ns, md["uid"])
    prev = body.get("status") or {}
    generation = md.get("generation")
    created = md.get("creationTimestamp")
    metrics.known_job(ns, name, _epoch(created))
    try:
        spec = BackgroundJobSpec.model_validate(body["spec"])
    except ValidationError as e:
        message = _errors(e)
        ready = status_mod.condition(
            prev.get("conditions") or [], "Ready", "False", "InvalidSpec", message, generation, now()
        )
        old: dict[str, Any] = next((c for c in prev.get("conditions") or [] if c.get("type") == "Ready"), {})
        if (old.get("status"), old.get("reason")) != ("False", "InvalidSpec"):
            await event(owner, "Warning", "InvalidSpec", message)
        others = [c for c in prev.get("conditions") or [] if c.get("type") != "Ready"]
        await _set_status(owner, body, {**prev, "observedGeneration": generation, "conditions": [ready, *others]})
        return
    problem = _problem(ns, name, spec)
    cron_name = None
    if problem is None:
        problem, cron_name = await _converge_cronjob(owner, spec)
    handled = list(prev.get("handledTriggers") or [])
    missed = 0
    if problem is None:
        handled = await _create_due_runs(owner, spec, body, handled)
        missed = await _missed_runs(owner, spec, prev)
    await _after_attempts(owner, spec, STATE.runs(ns, name))
    runs = STATE.runs(ns, name)
    _record_history(spec, runs)
    resumed = runs_mod.parse_time((md.get("annotations") or {}).get(names.PREFIX + "/resumed-at"))
    new = status_mod.build(
        spec,
        runs,
        {**prev, "handledTriggers": handled[-32:]},
        generation=generation,
        now=now(),
        cron_job=cron_name,
        problem=problem,
        failures_after=resumed,
        missed=missed,
    )
    await _transitions(owner, spec, prev, new)
    await _set_status(owner, body, new)
    _export(ns, name, spec, new)
    await _prune(owner, spec, runs)


async def _prune(owner: render.Owner, spec: BackgroundJobSpec, runs: list[Run]) -> None:
    """Keep the newest runs within the history limits, for every trigger.

    The CronJob controller prunes only finished Jobs it owns; retries, triggered runs and skipped
    or cancelled runs (suspended Jobs, never finished) are the operator's to prune. What is pruned
    stays in status (monotone timestamps, lastRun) and in the PostgreSQL history.
    """
    for run in runs_mod.prunable(runs, gate.retry_rule(spec), spec.history.successful, spec.history.failed):
        for a in run.attempts:
            if (a.namespace, a.name) not in _pruned:
                _pruned[(a.namespace, a.name)] = time.monotonic()
                await kube().delete(JOBS, a.name, a.namespace, propagation="Background")
    if len(_pruned) > 10000:
        _pruned.clear()


_pruned: dict[tuple[str, str], float] = {}


def _record_history(spec: BackgroundJobSpec, runs: list[Run]) -> None:
    if _history is None:
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
            _history.record(
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


def _problem(ns: str, name: str, spec: BackgroundJobSpec) -> tuple[str, str] | None:
    try:
        schedule.cron_of(spec.schedule, spec.every)
    except schedule.ScheduleError as e:
        return "InvalidSchedule", str(e)
    if spec.job.builtin:
        from nightshift_jobs.registry import BUILTIN_NAMES

        if spec.job.builtin not in BUILTIN_NAMES:
            return (
                "UnknownBuiltin",
                f"unknown built-in job {spec.job.builtin!r}; built-ins: {', '.join(BUILTIN_NAMES)}",
            )
    for dep in [d.name for d in spec.depends_on] + list(spec.run_after):
        if dep == name:
            return "DependencyCycle", f"{name} depends on itself"
        if STATE.bgj(ns, dep) is None:
            return "DependencyNotFound", f"BackgroundJob {dep} does not exist in namespace {ns}"
    cycle = find_cycle(ns, name, spec)
    if cycle:
        return "DependencyCycle", "dependency cycle: " + " -> ".join(cycle)
    return None


def find_cycle(ns: str, name: str, spec: BackgroundJobSpec) -> list[str] | None:
    from nightshift.graph import cycle_from

    def edges(n: str) -> list[str]:
        s = spec if n == name else STATE.spec(ns, n)
        return [d.name for d in s.depends_on] + list(s.run_after) if s else []

    return cycle_from(name, edges)


async def _converge_cronjob(owner: render.Owner, spec: BackgroundJobSpec) -> tuple[tuple[str, str] | None, str | None]:
    want = render.cronjob(owner, spec, SETTINGS)
    k = kube()
    have = await k.get_or_none(CRONJOBS, owner.name, owner.namespace)
    if have is not None and not any(
        r.get("uid") == owner.uid and r.get("controller") for r in have["metadata"].get("ownerReferences") or []
    ):
        return (
            "CronJobConflict",
            f"a CronJob named {owner.name} exists and is not owned by this BackgroundJob",
        ), None
    if want is None:
        if have is not None:
            await k.delete(CRONJOBS, owner.name, owner.namespace, propagation="Orphan")
        return None, None
    if have is None:
        try:
            await k.create(CRONJOBS, want)
        except ApiError as e:
            if e.status == 422 or e.status == 400:
                return (
                    "InvalidSchedule" if "schedule" in e.message.lower() else "CronJobRejected",
                    e.message,
                ), None
            raise
    elif have["metadata"].get("annotations", {}).get(names.ANN_HASH) != want["metadata"]["annotations"][names.ANN_HASH]:
        want["metadata"]["resourceVersion"] = have["metadata"]["resourceVersion"]
        try:
            await k.replace(CRONJOBS, want)
        except ApiError as e:
            if e.status in (400, 422):
                return ("CronJobRejected", e.message), None
            raise
    return None, owner.name


async def _create_due_runs(
    owner: render.Owner, spec: BackgroundJobSpec, body: dict[str, Any], handled: list[str]
) -> list[str]:
    """Runs the operator creates itself: run-now nonces, runOnCreate, `at`, chained runs."""
    ann = body["metadata"].get("annotations") or {}
    nonce = ann.get(names.ANN_RUN_NOW)
    todo: list[tuple[str, render.Attempt]] = []
    if nonce and nonce not in handled:
        params = {}
        try:
            params = json.loads(ann.get(names.ANN_RUN_NOW + "-params") or "{}")
        except ValueError:
            pass
        todo.append(
            (
                nonce,
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
        marker = f"@at:{status_mod.ts(spec.at)}"
        if marker not in handled:
            todo.append(
                (
                    marker,
                    render.Attempt(
                        names.run_id(owner.name, "at", marker),
                        trigger="at",
                        scheduled_time=spec.at,
                        not_before=spec.at,
                    ),
                )
            )
    chained = chain_run(owner.namespace, owner.name, spec)
    if chained:
        todo.append(("", chained))
    for marker, attempt in todo:
        if await create_attempt(owner, spec, attempt) is not None and marker:
            await event(owner, "Normal", "RunCreated", f"run {attempt.run} created ({attempt.trigger})")
        if marker:
            handled.append(marker)
    return handled


async def _missed_runs(owner: render.Owner, spec: BackgroundJobSpec, prev: dict[str, Any]) -> int:
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
        raise
    _wake.set()
    return created


async def _after_attempts(owner: render.Owner, spec: BackgroundJobSpec, runs: list[Run]) -> None:
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


async def _transitions(owner: render.Owner, spec: BackgroundJobSpec, prev: dict[str, Any], new: dict[str, Any]) -> None:
    """Events and metrics on changes only: a finished run, Ready flipping, quarantine."""
    old_ready: dict[str, Any] = next((c for c in prev.get("conditions") or [] if c["type"] == "Ready"), {})
    new_ready = next(c for c in new["conditions"] if c["type"] == "Ready")
    if (old_ready.get("status"), old_ready.get("reason")) != (new_ready["status"], new_ready["reason"]):
        await event(
            owner,
            "Normal" if new_ready["status"] == "True" else "Warning",
            new_ready["reason"],
            new_ready["message"],
        )
    old_run, run = prev.get("lastRun") or {}, new.get("lastRun") or {}
    if (
        run
        and (old_run.get("id"), old_run.get("result")) != (run["id"], run["result"])
        and run["result"] in ("Succeeded", "Failed")
    ):
        finished = run.get("completionTime")
        if finished and (_epoch(finished) or 0) >= _started - 5:
            started = _epoch(run.get("startTime"))
            duration = (_epoch(finished) or 0) - started if started else None
            metrics.observe_run(
                owner.namespace,
                owner.name,
                "succeeded" if run["result"] == "Succeeded" else "failed",
                duration,
            )
        if run["result"] == "Failed":
            await event(owner, "Warning", "RunFailed", f"run {run['id']} failed for good: {run.get('reason', '')}")
        else:
            await event(owner, "Normal", "RunSucceeded", f"run {run['id']} succeeded")
    quarantined = next(c for c in new["conditions"] if c["type"] == "Quarantined")["status"] == "True"
    if quarantined and not spec.suspend:
        await kube().patch(BACKGROUNDJOBS, owner.name, {"spec": {"suspend": True}}, owner.namespace)
        await event(
            owner,
            "Warning",
            "Quarantined",
            f"{new['consecutiveFailures']} consecutive failed runs: suspended until resumed",
        )


async def _set_status(owner: render.Owner, body: dict[str, Any], new: dict[str, Any]) -> None:
    prev = body.get("status") or {}
    if _same(prev, new):
        return
    patch = {"status": {**{k: None for k in prev if k not in new}, **new}}
    try:
        await kube().patch(BACKGROUNDJOBS, owner.name, patch, owner.namespace, sub="status")
    except ApiError as e:
        if not e.not_found:
            raise
    entry = STATE.bgj(owner.namespace, owner.name)
    if entry is not None:
        entry["status"] = new  # until the watch brings the patched object back


def _same(a: dict[str, Any], b: dict[str, Any]) -> bool:
    return json.dumps(a, sort_keys=True, default=str) == json.dumps(b, sort_keys=True, default=str)


def _export(ns: str, name: str, spec: BackgroundJobSpec, st: dict[str, Any]) -> None:
    cron = None
    try:
        cron = schedule.cron_of(spec.schedule, spec.every)
    except schedule.ScheduleError:
        pass
    metrics.set_job_status(
        ns,
        name,
        _epoch(st.get("lastSuccessfulTime")),
        _epoch(st.get("lastFailureTime")),
        _epoch(st.get("nextScheduleTime")),
        int(st.get("consecutiveFailures") or 0),
        schedule_interval_s=schedule.max_interval(cron, spec.time_zone, now()) if cron and not spec.suspend else None,
    )
    active = [r for r in STATE.runs(ns, name) if any(a.active for a in r.attempts)]
    metrics.set_running_since(
        ns, name, _epoch(status_mod.ts(min((r.first.started or r.time) for r in active))) if active else None
    )


def _epoch(value: str | None) -> float | None:
    if not value:
        return None
    return dt.datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


async def event(owner: render.Owner, type_: str, reason: str, message: str) -> None:
    t = now().strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    body = {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"generateName": f"{owner.name}.", "namespace": owner.namespace},
        "involvedObject": {
            "apiVersion": owner.api_version,
            "kind": owner.kind,
            "name": owner.name,
            "namespace": owner.namespace,
            "uid": owner.uid,
        },
        "type": type_,
        "reason": reason,
        "message": message[:1024],
        "firstTimestamp": t[:19] + "Z",
        "lastTimestamp": t[:19] + "Z",
        "count": 1,
        "source": {"component": "nightshift"},
        "reportingComponent": "nightshift",
        "reportingInstance": "nightshift",
    }
    try:
        await kube().create(EVENTS, body)
    except ApiError as e:
        log.warning("event %s on %s/%s not posted: %s", reason, owner.namespace, owner.name, e)


# -- the gate ---------------------------------------------------------------------------------------
async def _gate_loop() -> None:
    while not STATE.bound:
        await asyncio.sleep(0.2)
    while True:
        try:
            await asyncio.wait_for(_wake.wait(), timeout=SETTINGS.gate_interval_seconds)
        except TimeoutError:
            pass
        _wake.clear()
        t0 = time.monotonic()
        try:
            await gate_pass()
        except Exception:
            log.exception("gate pass failed")
            metrics.observe_reconcile("gate", time.monotonic() - t0, error=True)
        else:
            metrics.observe_reconcile("gate", time.monotonic() - t0)


# Runs decided in an earlier pass whose Job event has not reached the indexes yet: (time, queue, admitted).
_decided: dict[tuple[str, str], tuple[float, str | None, bool]] = {}


async def gate_pass() -> None:
    waiting = gate.order(STATE.waiting_views())
    total, per_queue = STATE.active_count()
    from nightshift.state import LazyRuns

    snap = gate.Snapshot(
        now=now(),
        specs=STATE.specs(),
        runs=LazyRuns(STATE),
        queues=STATE.queue_specs(),
        running_by_queue=per_queue,
        running_total=total,
        max_running=SETTINGS.max_concurrent_runs,
        stopped=STATE.stopped,
        admitted_by_queue=_admissions(),
    )
    waiting_per_queue: dict[tuple[str, str], int] = {}
    horizon = time.monotonic() - 30
    for key in [k for k, d in _decided.items() if d[0] < horizon]:
        del _decided[key]
    for view in waiting:  # admitted, but the index still shows them waiting: they hold a slot already
        pending = _decided.get((view.namespace, view.name))
        if pending and pending[2]:
            snap.take(view.namespace, pending[1])
    for view in waiting:
        if (view.namespace, view.name) in _decided:  # admitted or skipped; the watch has not caught up yet
            continue
        spec = STATE.spec(view.namespace, view.bgj)
        if spec is None:
            continue
        decision = gate.decide(view, spec, snap)
        owner = _owner(view)
        if isinstance(decision, gate.Admit | gate.Cancel):
            if isinstance(decision, gate.Cancel):
                await cancel_runs(view.namespace, view.bgj, decision.runs, decision.reason)
            await _patch_job(view, {"spec": {"suspend": False}, "metadata": {"annotations": {names.ANN_GATE: None}}})
            snap.take(view.namespace, spec.queue)
            _decided[(view.namespace, view.name)] = (time.monotonic(), spec.queue, True)
            metrics.observe_admission_wait(view.namespace, spec.queue, (snap.now - view.time).total_seconds())
        elif isinstance(decision, gate.Skip):
            await _patch_job(view, {"metadata": {"annotations": {names.ANN_OUTCOME: f"Skipped: {decision.reason}"}}})
            _decided[(view.namespace, view.name)] = (time.monotonic(), spec.queue, False)
            metrics.observe_run(view.namespace, view.bgj, "skipped", None, reason=decision.reason.split(":")[0])
            if owner:
                await event(owner, "Warning", "RunSkipped", f"run {view.run} skipped: {decision.reason}")
        else:
            key = (view.namespace, spec.queue or "")
            waiting_per_queue[key] = waiting_per_queue.get(key, 0) + 1
            text = f"Waiting: {decision.reason}"
            if view.gate != text:
                await _patch_job(view, {"metadata": {"annotations": {names.ANN_GATE: text}}})
                if (owner and view.gate is None) or (view.gate or "").split(":")[1:2] != text.split(":")[1:2]:
                    if owner:
                        await event(owner, "Normal", "RunWaiting", f"run {view.run} waits: {decision.reason}")
    for (ns, q), running in (
        set(per_queue.items()) | {(k, 0) for k in waiting_per_queue} | {(k, 0) for k in _queue_status}
    ):
        counts = (waiting_per_queue.get((ns, q), 0), snap.running_by_queue.get((ns, q), running))
        metrics.set_queue(ns, q or None, *counts)
        if q and _queue_status.get((ns, q)) != counts and (ns, q) in snap.queues:
            _queue_status[(ns, q)] = counts
            try:
                await kube().patch(
                    QUEUES, q, {"status": {"waiting": counts[0], "running": counts[1]}}, ns, sub="status"
                )
            except ApiError as e:
                if not e.not_found:
                    raise


_queue_status: dict[tuple[str, str], tuple[int, int]] = {}


def _admissions() -> dict[tuple[str, str], list[dt.datetime]]:
    index = STATE.admitted
    if index is None:
        return {}
    return {key: list(index[key]) for key in index}


def _owner(view: AttemptView) -> render.Owner | None:
    entry = STATE.bgj(view.namespace, view.bgj)
    return render.Owner(view.bgj, view.namespace, entry["uid"]) if entry else None


async def _patch_job(view: AttemptView, patch: dict[str, Any]) -> None:
    try:
        await kube().patch(JOBS, view.name, patch, view.namespace)
    except ApiError as e:
        if not e.not_found:
            raise


async def cancel_runs(ns: str, bgj: str, run_ids: tuple[str, ...], reason: str) -> None:
    """Suspending a started Job makes the Job controller delete its pods; the annotation records why."""
    for run in STATE.runs(ns, bgj):
        if run.id not in run_ids:
            continue
        for a in run.attempts:
            if a.active or a.waiting:
                await _patch_job(
                    a,
                    {
                        "spec": {"suspend": True},
                        "metadata": {"annotations": {names.ANN_OUTCOME: f"Cancelled: {reason}"}},
                    },
                )
        metrics.observe_run(ns, bgj, "cancelled", None)
