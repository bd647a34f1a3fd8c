# mypy: disable-error-code="arg-type"
"""kopf handlers: the I/O edge around the pure core (render, runs, gate, status).

Run with `kopf run -m nightshift.controller.handlers --all-namespaces`. Everything is level-based: each watch
event of a BackgroundJob, one of its Jobs or their pods reconciles that one BackgroundJob from the
indexes (no API lists); one gate task admits waiting runs, woken by events and by a short tick for
retry and dependency deadlines.
"""

from __future__ import annotations

import asyncio
import collections
import hashlib
import json
import logging
import time
from typing import Any

import kopf
from pydantic import ValidationError

from nightshift.api import names
from nightshift.api.models import GROUP, VERSION, BackgroundJobSpec
from nightshift.controller import admission, context, leader, lifecycle
from nightshift.controller.context import LEADING, SETTINGS, STARTED, WAKE, epoch, event, kube, now
from nightshift.controller.state import STATE
from nightshift.core import render, schedule
from nightshift.core import runs as runs_mod
from nightshift.core import status as status_mod
from nightshift.core.runs import attempt_view
from nightshift.infra import metrics
from nightshift.infra.kube import BACKGROUNDJOBS, CRONJOBS, ApiError

log = logging.getLogger("nightshift")


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
        context.start_history(SETTINGS.history_dsn, SETTINGS.history_retention_days)
    metrics.start_server(SETTINGS.metrics_port, SETTINGS.listen_address)
    if SETTINGS.leader_election_lease:
        global _elector
        metrics.set_leader(False)
        _elector = leader.Elector(
            SETTINGS.leader_election_lease,
            SETTINGS.pod_namespace,
            duration=SETTINGS.lease_duration_seconds,
            on_lead=_lead,
            on_lose=_follow,
        )
        _tasks.add(asyncio.create_task(_elector.run()))
    else:
        await _lead()
    _tasks.add(asyncio.create_task(admission.gate_loop()))


_elector: leader.Elector | None = None
_tasks: set[asyncio.Task[None]] = set()


async def _lead() -> None:
    LEADING.set()
    metrics.set_leader(True)
    WAKE.set()
    if STATE.bgjs is not None:  # not awaited here: the elector must keep renewing meanwhile
        task = asyncio.create_task(_pass_all(list(STATE.bgjs)))
        _tasks.add(task)
        task.add_done_callback(_tasks.discard)


def _follow() -> None:
    LEADING.clear()
    metrics.set_leader(False)


async def _pass_all(keys: list[tuple[str, str]]) -> None:
    """A standby ignored events, so on taking over every known BackgroundJob gets one pass."""
    for ns, name in keys:
        await reconcile(ns, name)


@kopf.on.cleanup()
async def cleanup(**_: Any) -> None:
    if _elector is not None:
        _follow()  # act no more while kopf finishes its handlers
        await _elector.release()
    await context.close()


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


# Registered only with a webhook server: kopf refuses to start with admission handlers and no server,
# and the chart's default is no webhook (it needs a TLS Secret).
if SETTINGS.webhook_port:
    kopf.on.validate(GROUP, VERSION, "backgroundjobs", operations=["CREATE", "UPDATE"], ignore_failures=True)(validate)


def _errors(e: ValidationError) -> str:
    return "; ".join(f"{'.'.join(map(str, err['loc']))}: {err['msg']}" for err in e.errors())[:1000]


# -- BackgroundJob reconcile --------------------------------------------------------------------------
@kopf.on.event(GROUP, VERSION, "backgroundjobs")
async def on_bgj(event: kopf.RawEvent, namespace: str, name: str, **kwargs: Any) -> None:
    STATE.bind(kwargs)
    key = (namespace, name)
    if event.get("type") == "DELETED":
        metrics.forget_job(namespace, name)
        for memo in (_locks, _written, _inputs, _wrote):
            memo.pop(key, None)
        return
    await reconcile(namespace, name, unless_echo=True)
    WAKE.set()


def _echo(key: tuple[str, str], entry: dict[str, Any]) -> bool:
    """The watch bringing back one of our own status writes, on an object whose inputs a pass has read.

    Not only the latest write: passes run faster than their echoes return, so an echo may carry an
    earlier status. A status someone else wrote is not ours and gets a pass (which puts ours back).
    """
    return _inputs.get(key) == (entry["uid"], entry["generation"], entry["annotations"]) and _digest(
        entry["status"]
    ) in _wrote.get(key, ())


@kopf.on.event("batch", "v1", "jobs", labels=_JOB_FILTER)
async def on_job(
    event: kopf.RawEvent, namespace: str, name: str, labels: kopf.Labels, body: kopf.Body, **kwargs: Any
) -> None:
    STATE.bind(kwargs)
    if event.get("type") == "DELETED":
        _seen.pop(("job", namespace, name), None)
    elif not _changed(("job", namespace, name), attempt_view(body)):
        return  # only counters the operator does not read (active, ready, uncounted pods, ...)
    owner = labels[names.LABEL_BGJ]
    if STATE.bgj(namespace, owner) is not None:
        await reconcile(namespace, owner)
        for downstream in STATE.downstream_of(namespace, owner):  # chained runs start on an upstream's success
            await reconcile(namespace, downstream)
    WAKE.set()


@kopf.on.event("", "v1", "pods", labels=_JOB_FILTER)
async def on_pod(
    event: kopf.RawEvent, namespace: str, name: str, labels: kopf.Labels, body: kopf.Body, **kwargs: Any
) -> None:
    """A finished pod carries the exit code and message; its other updates change nothing we read."""
    STATE.bind(kwargs)
    phase = body.status.get("phase")
    if phase not in ("Succeeded", "Failed"):
        return
    if event.get("type") == "DELETED":
        _seen.pop(("pod", namespace, name), None)
    else:
        ends = [(cs.get("state") or {}).get("terminated") for cs in body.status.get("containerStatuses") or []]
        if not _changed(("pod", namespace, name), (phase, ends)):
            return
    if STATE.bgj(namespace, labels[names.LABEL_BGJ]):
        await reconcile(namespace, labels[names.LABEL_BGJ])


_seen: dict[tuple[str, str, str], Any] = {}


def _changed(key: tuple[str, str, str], value: Any) -> bool:
    """Remember what the operator last read of a Job or pod; False when an event changed none of it."""
    if key in _seen and _seen[key] == value:
        return False
    _seen[key] = value
    return True


@kopf.on.event("", "v1", "configmaps", labels={names.ANN_STOP: kopf.PRESENT})
async def on_stop(**kwargs: Any) -> None:
    STATE.bind(kwargs)
    WAKE.set()


@kopf.on.event(GROUP, VERSION, "backgroundjobqueues")
async def on_queue(**kwargs: Any) -> None:
    STATE.bind(kwargs)
    WAKE.set()


_locks: dict[tuple[str, str], asyncio.Lock] = {}
_queued: dict[tuple[str, str], bool] = {}  # a pass waiting for the lock -> whether it may be an echo


async def reconcile(ns: str, name: str, *, unless_echo: bool = False) -> None:
    """Converge the CronJob, create due operator runs, rebuild status; one job at a time.

    Events coalesce: a pass reads the indexes when it starts (kopf updates them before it calls a
    handler), so while one pass for this job is still waiting for the lock, another event for the job
    needs no pass of its own. `unless_echo`: skip the pass when the object only brings back our own
    status write; decided under the lock, because the watch often delivers it before the PATCH returns.
    """
    key = (ns, name)
    if not LEADING.is_set():  # a standby keeps its indexes warm and acts once it leads
        return
    if key in _queued:
        _queued[key] = _queued[key] and unless_echo
        return
    _queued[key] = unless_echo
    lock = _locks.setdefault(key, asyncio.Lock())
    try:
        await lock.acquire()
    finally:  # also when cancelled while waiting: a mark left behind would swallow every later event
        may_be_echo = _queued.pop(key)
    try:
        await _pass(ns, name, may_be_echo)
    finally:
        lock.release()


async def _pass(ns: str, name: str, may_be_echo: bool) -> None:
    key = (ns, name)
    t0 = time.monotonic()
    try:
        entry = STATE.bgj(ns, name)
        if entry is None or (may_be_echo and _echo(key, entry)):
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
        _inputs[key] = (entry["uid"], entry["generation"], entry["annotations"])
        await _reconcile(ns, name, body)
    except Exception:
        delay = min(_backoff.get((ns, name), 2.5) * 2, 300.0)
        _backoff[(ns, name)] = delay
        log.exception("reconcile %s/%s failed; again in %.0fs", ns, name, delay)
        metrics.observe_reconcile("backgroundjob", time.monotonic() - t0, error=True)
        # Level-based: no event may come soon, so try again by ourselves, backing off to 5 minutes.
        asyncio.get_running_loop().call_later(delay, lambda: asyncio.ensure_future(reconcile(ns, name)))
        return
    _backoff.pop((ns, name), None)
    metrics.observe_reconcile("backgroundjob", time.monotonic() - t0)


_backoff: dict[tuple[str, str], float] = {}


async def _reconcile(ns: str, name: str, body: dict[str, Any]) -> None:
    md = body["metadata"]
    owner = render.Owner(name, ns, md["uid"])
    prev = _last_status(owner, body)
    generation = md.get("generation")
    created = md.get("creationTimestamp")
    metrics.known_job(ns, name, epoch(created))
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
        handled = await lifecycle.create_due_runs(owner, spec, body, handled)
        missed = await lifecycle.missed_runs(owner, spec, prev)
    await lifecycle.after_attempts(owner, spec, STATE.runs(ns, name))
    runs = STATE.runs(ns, name)
    lifecycle.record_history(spec, runs)
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
    await lifecycle.prune(owner, spec, runs)


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
    from nightshift.core.graph import cycle_from

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
        if finished and (epoch(finished) or 0) >= STARTED - 5:
            started = epoch(run.get("startTime"))
            duration = (epoch(finished) or 0) - started if started else None
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
    was = any(c["type"] == "Quarantined" and c["status"] == "True" for c in prev.get("conditions") or [])
    quarantined = next(c for c in new["conditions"] if c["type"] == "Quarantined")["status"] == "True"
    if quarantined and not spec.suspend:
        await kube().patch(BACKGROUNDJOBS, owner.name, {"spec": {"suspend": True}}, owner.namespace)
        entry = STATE.bgj(owner.namespace, owner.name)
        if entry is not None:  # until the watch brings the patched spec back, so the next pass sees it
            entry["spec"] = {**entry["spec"], "suspend": True}
    if quarantined and not was:
        await event(
            owner,
            "Warning",
            "Quarantined",
            f"{new['consecutiveFailures']} consecutive failed runs: suspended until resumed",
        )


_written: dict[tuple[str, str], tuple[str, dict[str, Any]]] = {}
_inputs: dict[tuple[str, str], tuple[str, Any, Any]] = {}  # (uid, generation, annotations) a pass last read
_wrote: dict[tuple[str, str], collections.deque[str]] = {}  # digests of our last status writes


def _last_status(owner: render.Owner, body: dict[str, Any]) -> dict[str, Any]:
    """The status this operator last wrote, else the watched one.

    Only the operator writes status, and a watch event may carry an object older than our own last
    status patch (our spec patch on quarantine lands first); comparing against it would repeat
    transition events and recount missed runs.
    """
    written = _written.get((owner.namespace, owner.name))
    if written is not None and written[0] == owner.uid:
        return written[1]
    status: dict[str, Any] = body.get("status") or {}
    return status


async def _set_status(owner: render.Owner, body: dict[str, Any], new: dict[str, Any]) -> None:
    prev = body.get("status") or {}
    if _same(prev, new):
        _written[(owner.namespace, owner.name)] = (owner.uid, new)
        return
    patch = {"status": {**{k: None for k in prev if k not in new}, **new}}
    try:
        await kube().patch(BACKGROUNDJOBS, owner.name, patch, owner.namespace, sub="status")
    except ApiError as e:
        if not e.not_found:
            raise
    _written[(owner.namespace, owner.name)] = (owner.uid, new)
    _wrote.setdefault((owner.namespace, owner.name), collections.deque(maxlen=4)).append(_digest(new))
    entry = STATE.bgj(owner.namespace, owner.name)
    if entry is not None:
        entry["status"] = new  # until the watch brings the patched object back


def _same(a: dict[str, Any], b: dict[str, Any]) -> bool:
    return _digest(a) == _digest(b)


def _digest(status: dict[str, Any]) -> str:
    return hashlib.blake2b(json.dumps(status, sort_keys=True, default=str).encode(), digest_size=16).hexdigest()


def _export(ns: str, name: str, spec: BackgroundJobSpec, st: dict[str, Any]) -> None:
    cron = None
    try:
        cron = schedule.cron_of(spec.schedule, spec.every)
    except schedule.ScheduleError:
        pass
    metrics.set_job_status(
        ns,
        name,
        epoch(st.get("lastSuccessfulTime")),
        epoch(st.get("lastFailureTime")),
        epoch(st.get("nextScheduleTime")),
        int(st.get("consecutiveFailures") or 0),
        schedule_interval_s=schedule.max_interval(cron, spec.time_zone, now()) if cron and not spec.suspend else None,
    )
    active = [r for r in STATE.runs(ns, name) if any(a.active for a in r.attempts)]
    metrics.set_running_since(
        ns, name, epoch(status_mod.ts(min((r.first.started or r.time) for r in active))) if active else None
    )
