# mypy: disable-error-code="arg-type"
"""kopf registrations and the informers: what feeds the indexes and the work queue. No decisions live here.

`registry(rt)` builds a kopf registry bound to one Runtime, with the informers for BackgroundJobs,
Jobs, pods and CronJobs (`informers`) started from its start-up handler: nothing is registered at import time, and
whether the webhook handler exists depends on the settings the Runtime was built with, not on the
environment when this module was imported. Every handler only updates memory (indexes, expectations)
and enqueues keys; the reconciler and the gate do the work.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import kopf

from nightshift.api import names
from nightshift.api.models import GROUP, VERSION
from nightshift.controller import leader
from nightshift.controller.admission_log import log_rejections_at_info
from nightshift.controller.gateloop import Gate
from nightshift.controller.indexes import BgjSeen, canonical
from nightshift.controller.informer import Informer
from nightshift.controller.reconciler import Reconciler
from nightshift.controller.runtime import Runtime
from nightshift.core import validate
from nightshift.core.plan import CronJobSeen, RequestSeen
from nightshift.core.runs import JobSeen, Termination, end_read, job_seen, latest_run, parse_time, termination
from nightshift.infra import memory, metrics
from nightshift.infra.credentials import ReloginBackoff
from nightshift.infra.kube import BACKGROUNDJOBRUNS, BACKGROUNDJOBS, CRONJOBS, JOBS, PODS

log = logging.getLogger("nightshift")


def registry(rt: Runtime) -> kopf.OperatorRegistry:
    reg = kopf.OperatorRegistry()
    rec = Reconciler(rt)
    gate = Gate(rt)
    elector: list[leader.Elector] = []
    rt.indexes.attach(*informers(rt, rec))

    def bind(kwargs: dict[str, Any], *, watch: bool = True) -> None:
        """Bind the indexes on first use; a watch handler also tells readiness that they are filled."""
        if watch:  # kopf calls watch handlers only once every index is filled
            rt.readiness.watched = True
        if not rt.indexes.kopf_bound:
            rt.indexes.bind(kwargs)

    async def lead() -> None:
        rt.leading.set()
        metrics.set_leader(True)
        rt.wake.set()
        for key in list(rt.indexes.bgjs or ()):  # a standby ignored events: every job gets one pass
            rec.enqueue(key)

    def follow() -> None:
        rt.leading.clear()
        metrics.set_leader(False)

    # -- start-up and shutdown -------------------------------------------------------------------------
    relogin = ReloginBackoff()

    @kopf.on.login(registry=reg, id="login")
    async def login(**kwargs: Any) -> kopf.AiohttpSession:
        """kopf on our credentials: the ServiceAccount in a pod, else the kubeconfig (infra/credentials).

        The session re-reads rotated tokens and re-runs exec plugins per request, so kopf comes
        back here only after a 401 that a refresh could not cure, or when an exec plugin's client
        certificate expires; coming back soon after the last time waits (1 s doubling to 60 s).
        """
        delay = relogin.next_delay()
        if delay:
            log.warning("the API server refused fresh credentials; logging in again in %.0fs", delay)
            await asyncio.sleep(delay)
        return await rt.kube().credentials.kopf_context()

    @kopf.on.startup(registry=reg, id="configure")
    async def configure(settings: kopf.OperatorSettings, **kwargs: Any) -> None:
        s = rt.settings
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
        if s.webhook_port:
            settings.admission.server = kopf.WebhookServer(
                addr=s.listen_address,
                port=s.webhook_port,
                host=s.webhook_host,
                certfile=s.webhook_certfile,
                pkeyfile=s.webhook_keyfile,
                cafile=s.webhook_cafile,
            )
            settings.admission.managed = GROUP
            log_rejections_at_info()
        rt.start_history()
        metrics.configure(per_job_histograms=s.per_job_duration_histograms)
        metrics.start_server(
            s.metrics_port,
            s.listen_address,
            ready=lambda: rt.readiness.ready(rt.leading.is_set()),
        )
        bind(kwargs, watch=False)
        for informer in rt.indexes.informers:
            rt.queue.spawn(informer.run())

        async def mark_bound() -> None:
            await rt.indexes.wait_bound()
            # readiness waits for one pass of every BackgroundJob listed at start-up
            rt.readiness.first_pass = frozenset(rt.indexes.bgjs or ())
            rt.readiness.bound = rt.readiness.watched = True
            memory.trim()  # the listed pages are parsed and dropped: give their heap back

        rt.queue.spawn(mark_bound())
        rt.queue.spawn(memory.trim_every(60))
        rt.queue.spawn(rt.queue.run_timer())
        for _ in range(s.reconcile_workers):
            rt.queue.spawn(rec.worker())
        rt.queue.spawn(gate.loop())
        if s.leader_election_lease:
            metrics.set_leader(False)
            e = leader.Elector(
                s.leader_election_lease,
                s.pod_namespace,
                duration=s.lease_duration_seconds,
                on_lead=lead,
                on_lose=follow,
                kube=rt.kube,
            )
            elector.append(e)
            rt.queue.spawn(e.run())
        else:
            await lead()

    @kopf.on.cleanup(registry=reg, id="cleanup")
    async def cleanup(**_: Any) -> None:
        if elector:
            follow()  # act no more while kopf finishes its handlers
            await elector[0].release()
        await rt.queue.shutdown()
        await rt.close()

    @kopf.on.probe(id="indexes", registry=reg)
    async def probe(**_: Any) -> bool:
        return rt.indexes.bound

    # -- indexes ------------------------------------------------------------------------------------------
    @kopf.index(GROUP, VERSION, "backgroundjobqueues", registry=reg, id="queue_index")
    async def queue_index(namespace: str, name: str, spec: kopf.Spec, **_: Any) -> dict[Any, Any]:
        return {(namespace, name): dict(spec)}

    # Index functions return {} rather than None: kopf keeps an object's previous entries when an
    # index function returns None. Jobs, pods and CronJobs are not here: see `informers`.
    @kopf.index("", "v1", "configmaps", labels={names.ANN_STOP: kopf.PRESENT}, registry=reg, id="stop_index")
    async def stop_index(namespace: str, labels: kopf.Labels, body: kopf.Body, **_: Any) -> dict[Any, Any]:
        scope = "*" if labels.get(names.ANN_STOP) == "cluster" else namespace
        return {scope: (body.get("data") or {}).get("reason", "emergency stop")}

    # -- the webhook ---------------------------------------------------------------------------------------
    if rt.settings.webhook_port:
        # Only with a webhook server: kopf refuses to start with admission handlers and no server,
        # and the chart's default is no webhook (it needs a TLS Secret).
        @kopf.on.validate(
            GROUP,
            VERSION,
            "backgroundjobs",
            operations=["CREATE", "UPDATE"],
            ignore_failures=True,
            registry=reg,
            id="validate",
        )
        async def validate_bgj(
            spec: kopf.Spec, name: str | None, namespace: str | None, warnings: list[str], **kwargs: Any
        ) -> None:
            """Reject what the schema cannot: cron syntax, unknown built-ins and their params, dependency cycles.

            A missing dependency is only a warning: `kubectl apply -f dir/` creates objects in name order,
            so a job may arrive before the job it depends on; it gets Ready=False until then. The webhook
            fails open (failurePolicy Ignore): while the operator is down, the schema and CEL rules still
            guard writes, and the operator reports anything else as Ready=False.
            """
            bind(kwargs, watch=False)
            ns = namespace or ""
            parsed = validate.parse_spec(dict(spec))
            if isinstance(parsed, validate.Problem):
                raise kopf.AdmissionError(parsed.message, code=422)
            problem = validate.check(name or "", ns, parsed, lambda dep: rt.indexes.spec(ns, dep))
            if problem is None:
                return
            if not problem.blocking:
                warnings.append(problem.message)
                return
            raise kopf.AdmissionError(f"{problem.reason}: {problem.message}", code=422)

    # -- watch events feed the queue ------------------------------------------------------------------------
    @kopf.on.event("", "v1", "configmaps", labels={names.ANN_STOP: kopf.PRESENT}, registry=reg, id="on_stop")
    async def on_stop(**kwargs: Any) -> None:
        bind(kwargs)
        rt.wake.set()

    @kopf.on.event(GROUP, VERSION, "backgroundjobqueues", registry=reg, id="on_queue")
    async def on_queue(**kwargs: Any) -> None:
        bind(kwargs)
        rt.wake.set()

    del (login, configure, cleanup, probe, queue_index, stop_index, on_stop, on_queue)
    return reg


def informers(rt: Runtime, rec: Reconciler) -> tuple[Informer, Informer, Informer, Informer, Informer]:
    """BackgroundJobs, Jobs, pods, CronJobs and run requests through plain informers that keep slim
    projections (controller/informer.py), not kopf's per-object machinery (run requests come in
    bulk: through kopf, 500 at once were a fifth of the operator's CPU while they became Jobs).

    Each change of a projection (not of fields the operator does not read: a Job's active and ready
    counters, a running pod's conditions, the CronJob controller's status, kubectl's
    last-applied-configuration) queues the job's pass.
    """
    namespaces = list(rt.settings.namespaces) or None

    def bgj_entry(body: Mapping[str, Any]) -> BgjSeen:
        md = body.get("metadata") or {}
        key = (md.get("namespace") or "", md.get("name") or "")
        return BgjSeen(
            uid=md.get("uid") or "",
            generation=md.get("generation", 1),
            created=md.get("creationTimestamp"),
            annotations=_ours(md.get("annotations") or {}),
            spec_json=canonical(body.get("spec") or {}),
            status_json=_shared(canonical(body.get("status") or {}), rt.status.written.get(key)),
        )

    def on_bgj(kind: str, key: tuple[str, str], old: Any, new: Any) -> None:
        ns, name = key
        if kind == "DELETED":
            metrics.forget_job(ns, name)
            rt.status.forget(key)
            rt.queue.discard(key)
            rt.readiness.passed(key)
            return
        rec.enqueue(key, maybe_echo=True)
        for downstream in rt.indexes.downstream_of(ns, name):  # a new upstream may unblock a chain
            rec.enqueue((ns, downstream))
        rt.wake.set()

    def owner_changed(ns: str, owner: str) -> None:
        if rt.indexes.bgj(ns, owner) is not None:
            rec.enqueue((ns, owner))
            for downstream in rt.indexes.downstream_of(ns, owner):  # chained runs start on a success
                rec.enqueue((ns, downstream))
        rt.wake.set()

    def on_job(kind: str, key: tuple[str, str], old: JobSeen | None, new: JobSeen | None) -> None:
        ns, name = key
        if kind == "DELETED":
            rt.expectations.observed(("delete", ns, name))
            rt.expectations.observed(("admit", ns, name))
            rt.counted.pop(key, None)
        elif new is None or not new.waiting:
            rt.expectations.observed(("admit", ns, name))
            if new is not None and new.counted:  # the mark is seen: the index says counted from here
                rt.counted.pop(key, None)
        view = new or old
        if view is not None:
            if kind == "ADDED" or (new is not None and not end_read(new, None)):
                drop_unread_ends(ns, view.bgj)  # a new run (the latest may change) or a counted success
            owner_changed(ns, view.bgj)

    def drop_unread_ends(ns: str, bgj: str) -> None:
        """A Job's mark or a newer run makes pod ends nothing reads any more: the index lets them go
        (runs.end_read). A pod listed after its Job is not stored at all (`pod_kept`). Only a new Job
        or a change to a Job whose end could go looks (end_read with no latest run: a counted
        success that no request asked for), so the Job updates of a running run cost nothing here."""
        views = jobs.indexes["job"].get((ns, bgj))
        if not views:
            return
        latest = latest_run(views)
        for v in views:
            if not end_read(v, latest):
                pods.forget("pod", (ns, v.name))

    def pod_kept(pod: Mapping[str, Any]) -> PodEnd | None:
        """A finished pod's end, unless its Job is known and nothing reads that end (runs.end_read)."""
        end = pod_end(pod)
        if end is None or end.end is None or not end.job:
            return end
        ns = (pod.get("metadata") or {}).get("namespace") or ""
        view: JobSeen | None = jobs.objects.get((ns, end.job))
        if view is not None and not end_read(view, latest_run(jobs.indexes["job"].get((ns, view.bgj)) or ())):
            return None
        return end

    def on_pod(kind: str, key: tuple[str, str], old: PodEnd | None, new: PodEnd | None) -> None:
        """A finished pod carries the exit code and message; its other updates are not projected."""
        end = new or old
        if end is not None and rt.indexes.bgj(key[0], end.bgj):
            rec.enqueue((key[0], end.bgj))

    def on_cronjob(kind: str, key: tuple[str, str], old: CronJobSeen | None, new: CronJobSeen | None) -> None:
        """A CronJob named like a BackgroundJob changed or went away: ours to restore, or a conflict ended.

        Only its owner and rendered hash are projected, so the CronJob controller's status updates
        start no pass, nor does the watch bringing back the CronJob a pass just wrote.
        """
        ns, name = key
        if rt.indexes.bgj(ns, name) is None:
            return
        if new is not None:
            expect = ("cronjob", ns, name)
            if rt.expectations.pending(expect) == (new.controller_uid, new.rendered_hash):
                rt.expectations.observed(expect)
                return  # our own write, back from the watch
        rec.enqueue((ns, name))

    bgjs = Informer(
        rt.kube,
        BACKGROUNDJOBS,
        bgj_entry,
        name="backgroundjobs",
        namespaces=namespaces,
        indexers={
            "bgj": lambda k, e: (k, e),
            "downstream": lambda k, e: [((k[0], up), k[1]) for up in e.spec.get("runAfter") or []],
        },
        on_change=on_bgj,
    )
    by_bgj = names.LABEL_BGJ  # a label selector: the key exists
    jobs = Informer(
        rt.kube,
        JOBS,
        job_seen,
        name="jobs",
        namespaces=namespaces,
        label_selector=by_bgj,
        indexers={
            "job": lambda _, v: ((v.namespace, v.bgj), v),
            "waiting": lambda _, v: ("waiting", v.view()) if v.waiting else None,  # the gate reads these whole
            "active": lambda _, v: ((v.namespace, v.queue or ""), v) if v.active else None,
            # start times per queue, for rate limits (a Job's startTime is set when the gate admits it)
            "admitted": lambda _, v: ((v.namespace, v.queue), v.started) if v.queue and v.started else None,
        },
        on_change=on_job,
    )
    pods = Informer(
        rt.kube,
        PODS,
        pod_kept,
        name="pods",
        namespaces=namespaces,
        label_selector=by_bgj,
        indexers={"pod": lambda k, p: ((k[0], p.job), p.end) if p.end is not None and p.job else None},
        on_change=on_pod,
    )
    cronjobs = Informer(
        rt.kube,
        CRONJOBS,
        cronjob_seen,
        name="cronjobs",
        namespaces=namespaces,
        indexers={"cronjob": lambda k, c: (k, c)},
        on_change=on_cronjob,
    )

    def request_seen(body: Mapping[str, Any]) -> tuple[str, RequestSeen] | None:
        """A run request as the plan reads it, with the job it names; None if it names none."""
        md, spec = body.get("metadata") or {}, body.get("spec") or {}
        job = spec.get("backgroundJob")
        if not job:
            return None
        return job, RequestSeen(
            name=md.get("name") or "",
            uid=md.get("uid") or "",
            created=parse_time(md.get("creationTimestamp")) or rt.clock(),
            params=dict(spec.get("params") or {}) or None,
            scheduled_time=parse_time(spec.get("scheduledTime")),
            status=dict(body.get("status") or {}),
        )

    def on_request(
        kind: str, key: tuple[str, str], old: tuple[str, RequestSeen] | None, new: tuple[str, RequestSeen] | None
    ) -> None:
        """Also for a job that does not exist: the request is told so (BackgroundJobNotFound)."""
        for job in {entry[0] for entry in (old, new) if entry is not None}:  # a request renamed its job: both
            rec.enqueue((key[0], job))

    requests = Informer(
        rt.kube,
        BACKGROUNDJOBRUNS,
        request_seen,
        name="backgroundjobruns",
        namespaces=namespaces,
        indexers={"request": lambda k, e: ((k[0], e[0]), e[1])},
        on_change=on_request,
    )
    return bgjs, jobs, pods, cronjobs, requests


@dataclass(frozen=True, slots=True)
class PodEnd:
    """A finished pod, as the core reads it: whose run it was and how its container ended."""

    bgj: str
    job: str
    phase: str
    end: Termination | None


def pod_end(pod: Mapping[str, Any]) -> PodEnd | None:
    """Only a finished pod is kept (its exit code and message); a pending or running one is not stored."""
    phase = (pod.get("status") or {}).get("phase")
    if phase not in ("Succeeded", "Failed"):
        return None
    md = pod.get("metadata") or {}
    labels = md.get("labels") or {}
    job = labels.get("batch.kubernetes.io/job-name") or labels.get("job-name") or ""
    return PodEnd(sys.intern(labels.get(names.LABEL_BGJ) or ""), job, sys.intern(phase), termination(pod))


def cronjob_seen(cronjob: Mapping[str, Any]) -> CronJobSeen:
    """Every CronJob, slim: whose it is and what we rendered. Ours and the foreign ones that block a job."""
    md = cronjob.get("metadata") or {}
    ctl = next((r.get("uid") for r in md.get("ownerReferences") or [] if r.get("controller")), None)
    created = parse_time(md.get("creationTimestamp"))
    return CronJobSeen(ctl, (md.get("annotations") or {}).get(names.ANN_HASH), created)


def _shared(watched: bytes, written: tuple[str, bytes] | None) -> bytes:
    """The status we wrote, when the watch brings back the same: one copy per BackgroundJob, not two."""
    if written is not None and written[1] == watched:
        return written[1]
    return watched


def _ours(annotations: Any) -> dict[str, str]:
    """The annotations the core reads (nightshift.dev/...): kubectl's last-applied-configuration, a copy
    of the whole object, would double what the index holds per BackgroundJob."""
    prefix = names.PREFIX + "/"
    return {
        k: v for k, v in annotations.items() if k.startswith(prefix) and not k.endswith("last-handled-configuration")
    }
