"""The gate's I/O: one task that applies core.gate.decide() to every waiting run and writes the outcome.

Woken by events, and at the earliest time a decision asked for (`Wait.until`: a retry's backoff, a
rate limit's window, a dependency timeout); the settings' interval is only a safety net. It reads the
waiting and active indexes, so a pass costs O(waiting runs), not O(all Jobs). An admission is an
expectation until the watch shows the Job no longer waiting, so a lagging index never admits twice.
Skips and cancellations are written as the Job's outcome; the ledger counts them, once. A pass
waits only on those decisions; the notes that describe the present (why a run waits, a queue's
counts) are latest-wins writes off the pass (controller/latest.py).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from nightshift.api import names
from nightshift.controller.indexes import LazyAdmissions, LazyRuns
from nightshift.controller.latest import LatestWrites
from nightshift.controller.runtime import Runtime
from nightshift.core import gate, render
from nightshift.core.runs import AttemptView
from nightshift.infra import metrics
from nightshift.infra.kube import JOBS, JSON_PATCH, QUEUES, ApiError
from nightshift.infra.ratelimit import gate_lane

log = logging.getLogger("nightshift")


class Gate:
    def __init__(self, rt: Runtime) -> None:
        self.rt = rt
        self.queue_status: dict[tuple[str, str], tuple[int, int]] = {}
        # notes (a run's "Waiting: ..." and its event, a queue's counts) are written off the pass:
        # its own writes are only the decisions, so a free slot is filled within one pass
        self.notes: LatestWrites[tuple[str, ...]] = LatestWrites(rt.settings.gate_workers, on_error=self._note_failed)
        self.noted: dict[tuple[str, str], str] = {}  # the note each waiting run was last sent (or seen with)

    async def loop(self) -> None:
        rt = self.rt
        # the notes' task first, so it keeps the shared bucket: 500 notes and their events in the
        # gate's own (50 a second) held the next admission back by seconds
        notes = asyncio.create_task(self.notes.run())
        gate_lane()  # from here, this task's requests (its decisions) use the gate's own bucket
        try:
            await rt.indexes.wait_bound()
            await self._loop()
        finally:
            notes.cancel()

    async def _loop(self) -> None:
        rt = self.rt
        next_at: float | None = None
        while True:
            timeout = rt.settings.gate_interval_seconds
            if next_at is not None:
                timeout = max(0.05, min(timeout, next_at - time.monotonic()))
            try:
                await asyncio.wait_for(rt.wake.wait(), timeout=timeout)
            except TimeoutError:
                pass
            rt.wake.clear()
            await rt.leading.wait()
            t0 = time.monotonic()
            try:
                until = await self.run_pass()
            except Exception:
                log.exception("gate pass failed")
                metrics.observe_reconcile("gate", time.monotonic() - t0, error=True)
                next_at = time.monotonic() + 1.0
            else:
                metrics.observe_reconcile("gate", time.monotonic() - t0)
                rt.readiness.gate_passes += 1
                rt.readiness.settle(lambda key: rt.indexes.bgj(*key) is not None)
                next_at = None
                if until is not None:
                    next_at = time.monotonic() + max(0.0, (until - rt.clock()).total_seconds())

    async def run_pass(self) -> dt.datetime | None:
        """One pass over the waiting runs; the earliest time a Wait asked to be looked at again."""
        rt = self.rt
        ix = rt.indexes
        waiting = gate.order(ix.waiting_views())
        total, per_queue = ix.active_count()
        snap = gate.Snapshot(
            now=rt.clock(),
            specs=ix.specs(),
            runs=LazyRuns(ix),
            queues=ix.queue_specs(),
            running_by_queue=per_queue,
            running_total=total,
            max_running=rt.settings.max_concurrent_runs,
            stopped=ix.stopped,
            admitted_by_queue=LazyAdmissions(ix),
            created=ix.created,
        )
        earliest: dt.datetime | None = None
        waiting_per_queue: dict[tuple[str, str], int] = {}
        fresh: list[AttemptView] = []
        for view in waiting:
            pending = rt.expectations.pending(("admit", view.namespace, view.name))
            if pending is None:
                fresh.append(view)
            elif pending[1]:  # admitted, but the index still shows it waiting: it holds its slot already
                snap.take(view.namespace, pending[0])
        writes: list[Callable[[], Awaitable[None]]] = []  # this pass's decisions, gate_workers at a time
        for view in fresh:
            spec = ix.spec(view.namespace, view.bgj)
            if spec is None:
                continue
            decision = gate.decide(view, spec, snap)
            if isinstance(decision, gate.Admit | gate.Cancel):
                if isinstance(decision, gate.Cancel):  # the replaced runs stop before the new one starts
                    await self._write(writes)
                    await self.cancel_runs(view.namespace, view.bgj, decision.runs, decision.reason)
                admit = [*_STILL_WAITING, {"op": "replace", "path": "/spec/suspend", "value": False}, *_NO_GATE]
                writes.append(functools.partial(self._decide_job, view, admit))
                self._decided(view)
                snap.take(view.namespace, spec.queue)
                rt.expectations.expect(("admit", view.namespace, view.name), (spec.queue, True))
                metrics.observe_admission_wait(view.namespace, spec.queue, (snap.now - view.time).total_seconds())
            elif isinstance(decision, gate.Skip):
                outcome = {"op": "add", "path": _OUTCOME_PATH, "value": f"Skipped: {decision.reason}"}
                writes.append(functools.partial(self._decide_job, view, [*_STILL_WAITING, outcome]))
                self._decided(view)
                rt.expectations.expect(("admit", view.namespace, view.name), (spec.queue, False))
            else:
                if decision.until is not None and (earliest is None or decision.until < earliest):
                    earliest = decision.until
                key = (view.namespace, spec.queue or "")
                waiting_per_queue[key] = waiting_per_queue.get(key, 0) + 1
                self._note(view, f"Waiting: {decision.reason}", decision.reason)
        await self._write(writes)
        self._forget_notes(waiting)
        self._queues(per_queue, waiting_per_queue, snap)
        return earliest

    def _note(self, view: AttemptView, text: str, reason: str) -> None:
        """Queue a waiting run's note unless it carries it, or it was sent and the watch is behind."""
        key = (view.namespace, view.name)
        sent = self.noted.get(key, view.gate)
        if view.gate == text:
            self.noted[key] = text
            return
        if sent == text:
            return
        self.noted[key] = text
        self.notes.put(("job", *key), functools.partial(self._waiting, view, text, reason, sent))

    def _note_failed(self, key: tuple[str, ...]) -> None:
        if key[0] == "job":
            self.noted.pop((key[1], key[2]), None)  # the next pass sends it again
        elif key[0] == "queue":
            self.queue_status.pop((key[1], key[2]), None)

    def _forget_notes(self, waiting: list[AttemptView]) -> None:
        """Runs no longer waiting need no note: the memory and any note not yet sent go (O(waiting))."""
        if len(self.noted) <= len(waiting):
            return
        still = {(v.namespace, v.name) for v in waiting}
        for key in [k for k in self.noted if k not in still]:
            del self.noted[key]
            self.notes.drop(("job", *key))

    def _decided(self, view: AttemptView) -> None:
        """Admitted or skipped: a note not yet written would only be refused (the Job no longer waits)."""
        key = (view.namespace, view.name)
        self.noted.pop(key, None)
        self.notes.drop(("job", *key))

    def _queues(
        self,
        per_queue: dict[tuple[str, str], int],
        waiting_per_queue: dict[tuple[str, str], int],
        snap: gate.Snapshot,
    ) -> None:
        """Queue gauges for this pass (a queue that went loses its series) and each declared queue's
        status, queued as a note: the latest counts win, a pass never waits on them."""
        counts = {
            key: (waiting_per_queue.get(key, 0), snap.running_by_queue.get(key, per_queue.get(key, 0)))
            for key in per_queue.keys() | waiting_per_queue.keys()
        }
        metrics.sync_queues(counts, snap.queues.keys())
        for key in self.queue_status.keys() - snap.queues.keys():
            del self.queue_status[key]  # deleted queues: no status to write, nothing to remember
        for ns, q in (counts.keys() | self.queue_status.keys()) & snap.queues.keys():
            if not q:
                continue
            current = counts.get((ns, q), (0, 0))
            if self.queue_status.get((ns, q)) != current:
                self.queue_status[(ns, q)] = current
                self.notes.put(("queue", ns, q), functools.partial(self._queue_status, ns, q, current))

    async def _queue_status(self, ns: str, q: str, counts: tuple[int, int]) -> None:
        try:
            await self.rt.kube().patch(
                QUEUES, q, {"status": {"waiting": counts[0], "running": counts[1]}}, ns, sub="status"
            )
        except ApiError as e:
            if not e.not_found:
                raise

    async def _write(self, writes: list[Callable[[], Awaitable[None]]]) -> None:
        """Run the pass's writes, at most `gate_workers` at once: 500 admissions one after the other
        would hold the last run back by 500 round trips. The decisions (and the expectations that
        keep the next pass from repeating them) were all made before."""
        todo, writes[:] = list(writes), []
        if not todo:
            return
        limit = asyncio.Semaphore(self.rt.settings.gate_workers)

        async def one(write: Callable[[], Awaitable[None]]) -> None:
            async with limit:
                await write()

        results = await asyncio.gather(*(one(w) for w in todo), return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                raise result

    async def _waiting(self, view: AttemptView, text: str, reason: str, before: str | None) -> None:
        """Why a run waits, on its Job, only while it still waits (the tests make a note that comes
        after its admission a refusal, not a stale "Waiting" on a running Job); an event per new
        kind of wait."""
        note = {"op": "add", "path": _GATE_PATH, "value": text}
        try:
            await self.rt.kube().patch(
                JOBS, view.name, [*_STILL_WAITING, note], view.namespace, content_type=JSON_PATCH
            )
        except ApiError as e:
            if e.status == 422 or e.not_found:
                return  # decided (or gone) meanwhile
            raise
        owner = self._owner(view)
        if owner and _reason_kind(before) != _reason_kind(text):
            await self.rt.events.post(owner, "Normal", "RunWaiting", f"run {view.run} waits: {reason}")

    def _owner(self, view: AttemptView) -> render.Owner | None:
        entry = self.rt.indexes.bgj(view.namespace, view.bgj)
        return render.Owner(view.bgj, view.namespace, entry.uid) if entry else None

    async def _decide_job(self, view: AttemptView, ops: list[dict[str, Any]]) -> None:
        """Admit or skip a waiting Job, only if it still waits: a JSON patch whose tests (still
        suspended, no outcome yet) make admit and skip exclusive at the API server. A new leader whose
        index lagged a Job its predecessor admitted just before it died would otherwise skip a run
        that goes on to succeed (the churn test saw it: counted Skipped, Job Succeeded). A failed test
        (422) means the Job moved on: the expectation goes, the next pass sees what it became."""
        try:
            await self.rt.kube().patch(JOBS, view.name, ops, view.namespace, content_type=JSON_PATCH)
        except ApiError as e:
            if e.status == 422:
                self.rt.expectations.observed(("admit", view.namespace, view.name))
                log.info("run %s/%s was decided meanwhile; looking again", view.namespace, view.name)
                self.rt.wake.set()
                return
            if not e.not_found:
                raise

    async def _patch_job(self, view: AttemptView, patch: dict[str, Any]) -> None:
        try:
            await self.rt.kube().patch(JOBS, view.name, patch, view.namespace)
        except ApiError as e:
            if not e.not_found:
                raise

    async def cancel_runs(self, ns: str, bgj: str, run_ids: tuple[str, ...], reason: str) -> None:
        """Suspending a started Job makes the Job controller delete its pods; the outcome records why."""
        for run in self.rt.indexes.runs(ns, bgj):
            if run.id not in run_ids:
                continue
            for a in run.attempts:
                if a.active or a.waiting:
                    await self._patch_job(
                        a,
                        {
                            "spec": {"suspend": True},
                            "metadata": {"annotations": {names.ANN_OUTCOME: f"Cancelled: {reason}"}},
                        },
                    )


_ANN_PATH = "/metadata/annotations/"
_OUTCOME_PATH = _ANN_PATH + names.ANN_OUTCOME.replace("/", "~1")
# JSON patch tests: still suspended, and no outcome (the API server's test of a missing path against
# null passes, of a present one fails).
_STILL_WAITING: list[dict[str, Any]] = [
    {"op": "test", "path": "/spec/suspend", "value": True},
    {"op": "test", "path": _OUTCOME_PATH, "value": None},
]
# Drop the gate's "Waiting: ..." note whether or not the Job has it (the index may not show the
# latest one yet): add makes sure it exists, so remove cannot fail.
_GATE_PATH = _ANN_PATH + names.ANN_GATE.replace("/", "~1")
_NO_GATE: list[dict[str, Any]] = [{"op": "add", "path": _GATE_PATH, "value": ""}, {"op": "remove", "path": _GATE_PATH}]


def _reason_kind(gate_text: str | None) -> str | None:
    """ "Waiting: QueueFull: queue q runs 2 at a time" -> "QueueFull"."""
    return gate_text.removeprefix("Waiting: ").split(":")[0] if gate_text else None
