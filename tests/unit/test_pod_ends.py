"""The pod ends the index lets go (runs.end_read): nothing the core computes changes without them (no cluster)."""

from __future__ import annotations

import dataclasses
import datetime as dt
import types
from typing import Any

from nightshift.api import names
from nightshift.controller import handlers
from nightshift.controller.runtime import Runtime
from nightshift.core import ledger, plan, status
from nightshift.core.gate import retry_rule
from nightshift.core.runs import AttemptView, end_read, group, latest_run, prunable
from nightshift.settings import Settings
from tests.unit.factories import NS, failed, job, spec, succeeded, t, waiting

NOW = t(2026, 3, 9, 14, 30)
OUTPUT = 'progress\n{"message": "deleted 5 rows", "rows": 5}'


def day(n: int) -> dt.datetime:
    return t(2026, 3, n, 13)


def history() -> list[AttemptView]:
    """Every kind of attempt: counted and not, failed, retried, asked for by a request, rows pending."""
    return [
        succeeded("r1", day(1), counted="Succeeded", term_message=OUTPUT),
        # exit code 64 is not retryable: Failed, where without it the run would be Retrying
        failed("r2", day(2), code=64, reason="BackoffLimitExceeded", counted="Failed", term_message="bad input"),
        succeeded("r3", day(3), counted="Succeeded", request="ask-1", term_message=OUTPUT),
        succeeded("r4", day(4), counted="Succeeded", history_pending=True, term_message=OUTPUT),
        failed("r5-a1", day(5), run="r5", attempt=1, code=75, term_message="temporary"),
        succeeded("r5-a2", day(5), run="r5", attempt=2, counted="Succeeded", term_message=OUTPUT),
        failed("r6", day(6), code=75, attempt=3, counted="Failed"),  # retries exhausted
        succeeded("r7", day(7), term_message=OUTPUT),  # ended, not counted yet
        succeeded("r8", day(8), counted="Succeeded", term_message=OUTPUT),
    ]


def without_unread(views: list[AttemptView]) -> list[AttemptView]:
    latest = latest_run(views)
    return [v if end_read(v, latest) else dataclasses.replace(v, exit_code=None, message=None) for v in views]


def computed(views: list[AttemptView]) -> dict[str, Any]:
    s = spec(schedule="0 9 * * *", retry={"limit": 2})
    rule = retry_rule(s)
    runs = group(views)
    prev = {"consecutiveFailures": 1, "lastFailureTime": "2026-02-01T00:00:00Z"}
    return {
        "status": status.build(s, runs, prev, generation=2, now=NOW, cron_job="nightly"),
        "requests": [plan.request_status(r, s, NOW, {}) for r in runs if r.first.request],
        "endings": [(e.run.id, e.result, e.reason, e.duration_s, e.history) for e in ledger.endings(runs, rule)],
        "unrecorded": ledger.unrecorded(runs, rule),
        "prunable": [r.id for r in prunable(runs, rule, 2, 1)],
    }


def test_a_counted_success_is_read_only_as_the_latest_run_or_a_request() -> None:
    views = {v.name: v for v in history()}
    unread = {name for name, v in views.items() if not end_read(v, "r8")}
    assert unread == {"r1", "r5-a2"}
    assert end_read(views["r1"], "r1")  # the latest run's end is lastRun's exit code and output


def test_the_core_computes_the_same_without_the_ends_nothing_reads() -> None:
    """Status (lastRun, last success and failure, consecutive failures, conditions), request statuses,
    the ledger's endings and unrecorded rows, and pruning, with every end and with the unread ones
    gone; for each point in the history, so every run is the latest once."""
    views = history()
    for n in range(1, len(views) + 1):
        seen = views[:n]
        assert computed(without_unread(seen)) == computed(seen), n
    queued = [*views, waiting("r9", day(9))]  # a newer run waits: r8 is no longer the latest
    assert not end_read(queued[-2], latest_run(queued))
    assert computed(without_unread(queued)) == computed(queued)


# -- the index: the informers as handlers wires them, fed events by hand ------------------------------


def pod_of(job_name: str, exit_code: int = 0, bgj: str = "nightly") -> dict[str, Any]:
    labels = {names.LABEL_BGJ: bgj, "batch.kubernetes.io/job-name": job_name}
    term = {"exitCode": exit_code, "message": OUTPUT}
    return {
        "metadata": {"name": f"{job_name}-pod", "namespace": NS, "labels": labels},
        "status": {"phase": "Succeeded", "containerStatuses": [{"name": "job", "state": {"terminated": term}}]},
    }


def done(name: str, n: int, **kw: Any) -> dict[str, Any]:
    return job(name, scheduled=day(n), suspend=False, started=day(n), complete=day(n) + dt.timedelta(minutes=1), **kw)


def wired() -> tuple[Runtime, Any, Any]:
    rt = Runtime(Settings())
    bgjs, jobs, pods, cronjobs, requests = handlers.informers(rt, types.SimpleNamespace(enqueue=lambda *a, **k: None))  # type: ignore[arg-type]
    rt.indexes.attach(bgjs, jobs, pods, cronjobs, requests)
    return rt, jobs, pods


def exit_codes(rt: Runtime) -> dict[str, int | None]:
    return {a.name: a.exit_code for a in rt.indexes.attempts(NS, "nightly")}


def test_a_pod_listed_after_its_counted_job_is_not_kept_unless_its_run_is_the_latest() -> None:
    rt, jobs, pods = wired()
    for name, n in (("j1", 1), ("j2", 2)):
        jobs._apply("ADDED", done(name, n, counted="Succeeded"))
    for name in ("j1", "j2"):
        pods._apply("ADDED", pod_of(name))
    assert list(pods.objects) == [(NS, "j2-pod")]
    assert exit_codes(rt) == {"j1": None, "j2": 0}


def test_a_pod_listed_before_its_job_goes_when_the_job_shows_it_is_not_read() -> None:
    _, jobs, pods = wired()
    for name in ("j1", "j2"):
        pods._apply("ADDED", pod_of(name))
    jobs._apply("ADDED", done("j1", 1, counted="Succeeded"))
    assert len(pods.objects) == 2  # j1 is the latest run so far
    jobs._apply("ADDED", done("j2", 2, counted="Succeeded"))
    assert list(pods.objects) == [(NS, "j2-pod")]
    pods._apply("MODIFIED", pod_of("j1"))  # a later event of the dropped pod stores nothing again
    assert list(pods.objects) == [(NS, "j2-pod")]


def test_the_mark_arriving_after_the_pod_end_drops_it_then() -> None:
    rt, jobs, pods = wired()
    jobs._apply("ADDED", done("j1", 1))
    pods._apply("ADDED", pod_of("j1"))
    jobs._apply("ADDED", job("j2", scheduled=day(2)))  # a newer run waits; j1 is not counted yet
    assert exit_codes(rt) == {"j1": 0, "j2": None}
    jobs._apply("MODIFIED", done("j1", 1, counted="Succeeded"))  # the ledger's mark
    assert exit_codes(rt) == {"j1": None, "j2": None} and pods.objects == {}


def test_pending_history_rows_and_requests_keep_their_ends() -> None:
    rt, jobs, pods = wired()
    jobs._apply("ADDED", done("j1", 1, counted="Succeeded", history_pending=True))
    jobs._apply("ADDED", done("j2", 2, counted="Succeeded", request="ask-1"))
    jobs._apply("ADDED", done("j3", 3, counted="Succeeded"))
    for name in ("j1", "j2", "j3"):
        pods._apply("ADDED", pod_of(name))
    assert exit_codes(rt) == {"j1": 0, "j2": 0, "j3": 0}
    jobs._apply("MODIFIED", done("j1", 1, counted="Succeeded"))  # the store took the rows
    assert exit_codes(rt) == {"j1": None, "j2": 0, "j3": 0}
