"""The gate's I/O: one task that applies gate.decide() to every waiting run and writes the outcome.

Woken by events and by a short tick (retry and dependency deadlines); it reads the waiting and
active indexes, so a pass costs O(waiting runs), not O(all Jobs).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from nightshift.api import names
from nightshift.controller.context import LEADING, SETTINGS, WAKE, event, kube, log, now
from nightshift.controller.state import STATE, LazyAdmissions, LazyRuns
from nightshift.core import gate, render
from nightshift.core.runs import AttemptView
from nightshift.infra import metrics
from nightshift.infra.kube import JOBS, QUEUES, ApiError


async def gate_loop() -> None:
    while not STATE.bound:
        await asyncio.sleep(0.2)
    while True:
        try:
            await asyncio.wait_for(WAKE.wait(), timeout=SETTINGS.gate_interval_seconds)
        except TimeoutError:
            pass
        WAKE.clear()
        await LEADING.wait()
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
    snap = gate.Snapshot(
        now=now(),
        specs=STATE.specs(),
        runs=LazyRuns(STATE),
        queues=STATE.queue_specs(),
        running_by_queue=per_queue,
        running_total=total,
        max_running=SETTINGS.max_concurrent_runs,
        stopped=STATE.stopped,
        admitted_by_queue=LazyAdmissions(STATE),
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
                if owner and _reason_kind(view.gate) != _reason_kind(text):  # an event per new kind of wait
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


def _reason_kind(gate_text: str | None) -> str | None:
    """ "Waiting: QueueFull: queue q runs 2 at a time" -> "QueueFull"."""
    return gate_text.removeprefix("Waiting: ").split(":")[0] if gate_text else None


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
