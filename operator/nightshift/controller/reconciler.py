"""The reconcile loop: workers take keys from the work queue and run observe → plan → apply.

A pass for one BackgroundJob: observe it from the indexes, plan its CronJob, apply that (the API
server's answer decides Ready), plan the rest, apply it. Errors requeue the key with exponential
backoff; the plan's `requeue_after` asks to look again later. A pass that only the watch's echo of
our own status write asked for is skipped, decided when the pass starts, because the echo often
arrives before the PATCH returns.
"""

from __future__ import annotations

import logging
import time

from nightshift.controller.apply import apply, apply_cronjob, apply_orphan_requests
from nightshift.controller.observe import observe
from nightshift.controller.runtime import Key, Runtime
from nightshift.core.plan import plan, plan_cronjob
from nightshift.infra import metrics
from nightshift.infra.kube import ApiError

log = logging.getLogger("nightshift")


class Reconciler:
    def __init__(self, rt: Runtime) -> None:
        self.rt = rt
        self._echo_only: dict[Key, bool] = {}  # key -> every event that queued it may be our own echo

    def enqueue(self, key: Key, *, maybe_echo: bool = False) -> None:
        self._echo_only[key] = self._echo_only.get(key, True) and maybe_echo
        self.rt.queue.add(key)

    async def worker(self) -> None:
        rt = self.rt
        await rt.indexes.wait_bound()  # a pass before the informers have listed would miss runs
        while True:
            key = await rt.queue.get()
            echo_only = self._echo_only.pop(key, False)
            leading = rt.leading.is_set()
            try:
                if leading:
                    await self.reconcile(key, echo_only=echo_only)
            except ApiError as e:
                if e.namespace_terminating:
                    # The API server refuses new objects in a namespace being deleted, and the job's
                    # own deletion comes next: no error and no retries.
                    log.info("reconcile %s/%s: its namespace is being deleted", *key)
                    rt.queue.forget(key)
                else:
                    delay = rt.queue.add_rate_limited(key)
                    log.exception("reconcile %s/%s failed; again in %.1fs", *key, delay)
            except Exception:
                delay = rt.queue.add_rate_limited(key)
                log.exception("reconcile %s/%s failed; again in %.1fs", *key, delay)
            else:
                rt.queue.forget(key)
            finally:
                rt.queue.done(key)
                if leading:
                    rt.readiness.passed(key)

    async def reconcile(self, key: Key, *, echo_only: bool = False) -> None:
        rt = self.rt
        t0 = time.monotonic()
        try:
            entry = rt.indexes.bgj(*key)
            if entry is None:
                await apply_orphan_requests(rt, key)  # run requests may name a job before it exists
                return
            if echo_only and rt.status.echo(key, entry):
                return
            c0 = time.monotonic()
            observed = observe(rt, key)
            if observed is None:
                return
            cron = plan_cronjob(observed)
            compute = time.monotonic() - c0
            refused = await apply_cronjob(rt, observed, cron.action)
            c1 = time.monotonic()
            p = plan(observed, cron, refused)
            # the operator's own time in a pass (observe and plan), apart from the pass's wall time,
            # which includes waiting on the API server
            metrics.observe_reconcile("backgroundjob_plan", compute + time.monotonic() - c1)
            await apply(rt, observed, p)
            if p.requeue_after is not None:
                rt.queue.add_after(key, p.requeue_after.total_seconds())
        except Exception:
            metrics.observe_reconcile("backgroundjob", time.monotonic() - t0, error=True)
            raise
        metrics.observe_reconcile("backgroundjob", time.monotonic() - t0)
