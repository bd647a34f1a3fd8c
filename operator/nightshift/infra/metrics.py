"""Every Prometheus metric nightshift exports, and the small typed helpers the operator calls.

This is the only module that names a metric. All metrics live in one registry, `REGISTRY`, served by
`start_server`; tests read it directly with `REGISTRY.get_sample_value(...)`.

Rules (see docs/observability.md):

- prefix `nightshift_`, base units, `_total` on counters, `_timestamp_seconds` on Unix timestamps;
- labels are bounded: `namespace`, `backgroundjob`, `queue`, `result`, `reason`, `kind`, `version`;
  never a run id, and never a label called `job` (it collides with Prometheus' scrape label);
- every per-job series is created at 0 by `known_job`, so `rate()` and the alerts work from the
  first scrape, and `forget_job` removes them when the BackgroundJob is deleted;
- in an HA deployment only the leader reports job and queue metrics: on losing leadership call
  `set_leader(False)`, which drops them (`nightshift_is_leader` says who leads).
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from importlib import metadata
from typing import Any, Final, Literal, get_args
from wsgiref.simple_server import make_server

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    make_wsgi_app,
)
from prometheus_client.exposition import ThreadingWSGIServer, _SilentHandler


def _version() -> str:
    try:
        return metadata.version("nightshift")
    except metadata.PackageNotFoundError:  # running from a source tree without an install
        return "unknown"


__all__ = [
    "REGISTRY",
    "RUN_RESULTS",
    "RunResult",
    "clear_job_metrics",
    "forget_job",
    "forget_queue",
    "history_dropped",
    "known_job",
    "known_queue",
    "observe_admission_wait",
    "observe_missed_runs",
    "observe_reconcile",
    "observe_retry",
    "observe_run",
    "reconcile_timer",
    "set_job_status",
    "set_leader",
    "set_queue",
    "set_running_since",
    "start_server",
]

# `*_created` series double the series count and nobody alerts on them. Process-wide switch.
disable_created_metrics()  # type: ignore[no-untyped-call]

RunResult = Literal["succeeded", "failed", "skipped", "cancelled"]
RUN_RESULTS: Final[tuple[RunResult, ...]] = get_args(RunResult)

DEFAULT_QUEUE: Final = "default"
UNKNOWN_REASON: Final = "Unknown"

# Runs take seconds to hours: 1s .. 6h.
RUN_DURATION_BUCKETS: Final = (1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 7200, 14400, 21600)
# Waiting for admission by the gate: 0.1s .. 1h.
ADMISSION_WAIT_BUCKETS: Final = (0.1, 0.5, 1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600)
# One reconcile of one object: milliseconds .. tens of seconds.
RECONCILE_BUCKETS: Final = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)

JOB_LABELS: Final = ("namespace", "backgroundjob")
QUEUE_LABELS: Final = ("namespace", "queue")

REGISTRY: Final = CollectorRegistry(auto_describe=True)

# --- per BackgroundJob -------------------------------------------------------------------------------

RUNS = Counter(
    "nightshift_runs_total",
    "Finished runs of a BackgroundJob, by result (succeeded, failed, skipped, cancelled). "
    "A run with retries counts once, with its final result.",
    (*JOB_LABELS, "result"),
    registry=REGISTRY,
)
RUN_DURATION = Histogram(
    "nightshift_run_duration_seconds",
    "Wall time of a finished run, from the start of its first attempt to the end of its last.",
    JOB_LABELS,
    buckets=RUN_DURATION_BUCKETS,
    registry=REGISTRY,
)
RETRIES = Counter(
    "nightshift_retries_total",
    "Retry attempts scheduled after a failed attempt.",
    JOB_LABELS,
    registry=REGISTRY,
)
MISSED_RUNS = Counter(
    "nightshift_missed_runs_total",
    "Scheduled times that passed without a run starting (operator down, startingDeadline exceeded).",
    JOB_LABELS,
    registry=REGISTRY,
)
SKIPPED_RUNS = Counter(
    "nightshift_skipped_runs_total",
    "Runs skipped instead of executed, by reason (a CamelCase reason from a fixed set).",
    (*JOB_LABELS, "reason"),
    registry=REGISTRY,
)
LAST_SUCCESS = Gauge(
    "nightshift_last_success_timestamp_seconds",
    "Unix time the last successful run completed; 0 if it never succeeded.",
    JOB_LABELS,
    registry=REGISTRY,
)
LAST_FAILURE = Gauge(
    "nightshift_last_failure_timestamp_seconds",
    "Unix time the last failed run completed; 0 if it never failed.",
    JOB_LABELS,
    registry=REGISTRY,
)
NEXT_SCHEDULE = Gauge(
    "nightshift_next_schedule_timestamp_seconds",
    "Unix time of the next scheduled run; 0 if none (suspended, on demand, one-shot done).",
    JOB_LABELS,
    registry=REGISTRY,
)
SCHEDULE_INTERVAL = Gauge(
    "nightshift_schedule_interval_seconds",
    "Longest gap between consecutive scheduled times of the job's schedule; 0 if not recurring.",
    JOB_LABELS,
    registry=REGISTRY,
)
CONSECUTIVE_FAILURES = Gauge(
    "nightshift_consecutive_failures",
    "Failed runs since the last successful run (status.consecutiveFailures).",
    JOB_LABELS,
    registry=REGISTRY,
)
RUN_STARTED = Gauge(
    "nightshift_run_started_timestamp_seconds",
    "Unix time the oldest run still in progress started; 0 if no run is in progress.",
    JOB_LABELS,
    registry=REGISTRY,
)
JOB_CREATED = Gauge(
    "nightshift_job_created_timestamp_seconds",
    "Unix time the BackgroundJob was created (metadata.creationTimestamp).",
    JOB_LABELS,
    registry=REGISTRY,
)

# --- per BackgroundJobQueue --------------------------------------------------------------------------

QUEUE_WAITING = Gauge(
    "nightshift_queue_waiting_runs",
    "Runs waiting for admission in a queue (queue 'default' = runs without a queue).",
    QUEUE_LABELS,
    registry=REGISTRY,
)
QUEUE_RUNNING = Gauge(
    "nightshift_queue_running_runs",
    "Admitted runs of a queue still running.",
    QUEUE_LABELS,
    registry=REGISTRY,
)
ADMISSION_WAIT = Histogram(
    "nightshift_admission_wait_seconds",
    "Time from a run's creation (suspended) to its admission by the gate.",
    QUEUE_LABELS,
    buckets=ADMISSION_WAIT_BUCKETS,
    registry=REGISTRY,
)

# --- the operator itself -----------------------------------------------------------------------------

RECONCILE_ERRORS = Counter(
    "nightshift_reconcile_errors_total",
    "Reconciles that raised, by kind of object.",
    ("kind",),
    registry=REGISTRY,
)
RECONCILE_DURATION = Histogram(
    "nightshift_reconcile_duration_seconds",
    "Duration of one reconcile, by kind of object.",
    ("kind",),
    buckets=RECONCILE_BUCKETS,
    registry=REGISTRY,
)
HISTORY_DROPPED = Counter(
    "nightshift_history_dropped_total",
    "History rows dropped because the buffer in front of PostgreSQL was full.",
    registry=REGISTRY,
)
BUILD_INFO = Gauge(
    "nightshift_build_info",
    "Always 1; the operator's version as a label.",
    ("version",),
    registry=REGISTRY,
)
IS_LEADER = Gauge(
    "nightshift_is_leader",
    "1 if this operator instance is the leader (the one that reconciles and reports), else 0.",
    registry=REGISTRY,
)

BUILD_INFO.labels(version=_version()).set(1)
IS_LEADER.set(0)

_JOB_GAUGES: Final = (
    LAST_SUCCESS,
    LAST_FAILURE,
    NEXT_SCHEDULE,
    SCHEDULE_INTERVAL,
    CONSECUTIVE_FAILURES,
    RUN_STARTED,
    JOB_CREATED,
)
_JOB_SERIES: Final = (RUN_DURATION, RETRIES, MISSED_RUNS)

# Label values we created, so they can be removed again without private prometheus-client API.
_lock = threading.Lock()
_jobs: dict[tuple[str, str], set[str]] = {}  # (namespace, name) -> skip reasons seen
_queues: set[tuple[str, str]] = set()


def _queue_name(queue: str | None) -> str:
    return queue or DEFAULT_QUEUE


def _ts(value: float | None) -> float:
    """A timestamp gauge value: None (never / not applicable) is exported as 0."""
    if value is None or not math.isfinite(value) or value < 0:
        return 0.0
    return float(value)


# --- BackgroundJob lifecycle -------------------------------------------------------------------------


def known_job(namespace: str, name: str, created_ts: float | None = None) -> None:
    """Create every per-job series at 0 (idempotent; existing values are kept).

    Call it for every BackgroundJob the operator sees (on create, resume and each reconcile is fine).
    `created_ts` is metadata.creationTimestamp as Unix time: NightshiftJobLate measures a job that
    never succeeded from its creation.
    """
    with _lock:
        _jobs.setdefault((namespace, name), set())
    for result in RUN_RESULTS:
        RUNS.labels(namespace, name, result)
    for metric in (*_JOB_SERIES, *_JOB_GAUGES):
        metric.labels(namespace, name)
    if created_ts is not None:
        JOB_CREATED.labels(namespace, name).set(_ts(created_ts))


def forget_job(namespace: str, name: str) -> None:
    """Remove every series of a deleted BackgroundJob."""
    with _lock:
        reasons = _jobs.pop((namespace, name), set())
    for result in RUN_RESULTS:
        _remove(RUNS, namespace, name, result)
    for reason in reasons:
        _remove(SKIPPED_RUNS, namespace, name, reason)
    for metric in (*_JOB_SERIES, *_JOB_GAUGES):
        _remove(metric, namespace, name)


def _remove(metric: Counter | Gauge | Histogram, *labels: str) -> None:
    try:
        metric.remove(*labels)
    except KeyError:
        pass


def observe_run(
    namespace: str,
    name: str,
    result: RunResult,
    duration_s: float | None,
    *,
    reason: str | None = None,
) -> None:
    """Count one finished run with its final result, and observe its duration if it ran.

    For `result="skipped"` pass the CamelCase `reason` (e.g. DependencyFailed, DependencyTimeout,
    ConcurrencyForbid); it is also counted in nightshift_skipped_runs_total{reason}.
    """
    if result not in RUN_RESULTS:
        raise ValueError(f"unknown run result {result!r}; expected one of {RUN_RESULTS}")
    known_job(namespace, name)
    RUNS.labels(namespace, name, result).inc()
    if result == "skipped":
        skip_reason = reason or UNKNOWN_REASON
        with _lock:
            _jobs.setdefault((namespace, name), set()).add(skip_reason)
        SKIPPED_RUNS.labels(namespace, name, skip_reason).inc()
    if duration_s is not None and math.isfinite(duration_s) and duration_s >= 0:
        RUN_DURATION.labels(namespace, name).observe(duration_s)


def observe_retry(namespace: str, name: str) -> None:
    """Count one retry attempt scheduled after a failed attempt."""
    RETRIES.labels(namespace, name).inc()


def observe_missed_runs(namespace: str, name: str, count: int = 1) -> None:
    """Count scheduled times that passed without a run."""
    if count > 0:
        MISSED_RUNS.labels(namespace, name).inc(count)


def set_job_status(
    namespace: str,
    name: str,
    last_success_ts: float | None,
    last_failure_ts: float | None,
    next_ts: float | None,
    consecutive_failures: int,
    *,
    schedule_interval_s: float | None = None,
) -> None:
    """Set the per-job gauges from the recomputed status (Unix times; None -> 0 = never/none).

    `next_ts` must be None while the job is suspended or has no recurring schedule: the
    NightshiftJobLate alert only considers jobs with a next scheduled time.
    `schedule_interval_s` is the longest gap between consecutive scheduled times (for a cron such
    as `0 9 * * 1-5` the weekend gap, 3 days); None or 0 for jobs without a recurring schedule.
    Without it NightshiftJobLate never fires for the job.
    """
    LAST_SUCCESS.labels(namespace, name).set(_ts(last_success_ts))
    LAST_FAILURE.labels(namespace, name).set(_ts(last_failure_ts))
    NEXT_SCHEDULE.labels(namespace, name).set(_ts(next_ts))
    CONSECUTIVE_FAILURES.labels(namespace, name).set(max(0, consecutive_failures))
    SCHEDULE_INTERVAL.labels(namespace, name).set(_ts(schedule_interval_s))


def set_running_since(namespace: str, name: str, started_ts: float | None) -> None:
    """Start time of the oldest run in progress (first attempt's start), or None when none runs.

    NightshiftRunTooLong compares time() minus this with the job's usual duration.
    """
    RUN_STARTED.labels(namespace, name).set(_ts(started_ts))


# --- queues ------------------------------------------------------------------------------------------


def known_queue(namespace: str, queue: str | None) -> None:
    """Create the queue's series at 0 (idempotent). queue None or "" is the 'default' queue."""
    q = _queue_name(queue)
    with _lock:
        _queues.add((namespace, q))
    for metric in (QUEUE_WAITING, QUEUE_RUNNING, ADMISSION_WAIT):
        metric.labels(namespace, q)


def set_queue(namespace: str, queue: str | None, waiting: int, running: int) -> None:
    """Runs waiting for admission and admitted runs still running in one queue."""
    known_queue(namespace, queue)
    q = _queue_name(queue)
    QUEUE_WAITING.labels(namespace, q).set(max(0, waiting))
    QUEUE_RUNNING.labels(namespace, q).set(max(0, running))


def observe_admission_wait(namespace: str, queue: str | None, seconds: float) -> None:
    """How long one run waited, suspended, before the gate admitted it."""
    known_queue(namespace, queue)
    if math.isfinite(seconds):
        ADMISSION_WAIT.labels(namespace, _queue_name(queue)).observe(max(0.0, seconds))


def forget_queue(namespace: str, queue: str | None) -> None:
    """Remove the series of a deleted BackgroundJobQueue."""
    q = _queue_name(queue)
    with _lock:
        _queues.discard((namespace, q))
    for metric in (QUEUE_WAITING, QUEUE_RUNNING, ADMISSION_WAIT):
        _remove(metric, namespace, q)


# --- the operator itself -----------------------------------------------------------------------------


def observe_reconcile(kind: str, duration_s: float, *, error: bool = False) -> None:
    """One reconcile of an object of `kind` (BackgroundJob, BackgroundJobQueue, Job, ...)."""
    RECONCILE_DURATION.labels(kind).observe(max(0.0, duration_s))
    if error:
        RECONCILE_ERRORS.labels(kind).inc()


@contextmanager
def reconcile_timer(kind: str) -> Iterator[None]:
    """`with reconcile_timer("BackgroundJob"): ...` times the block and counts it as an error if it
    raises (the exception propagates; kopf's own retry/backoff stays in charge)."""
    RECONCILE_ERRORS.labels(kind)
    start = time.monotonic()
    failed = False
    try:
        yield
    except Exception:
        failed = True
        raise
    finally:
        observe_reconcile(kind, time.monotonic() - start, error=failed)


def history_dropped(count: int = 1) -> None:
    """History rows dropped because the buffer was full."""
    if count > 0:
        HISTORY_DROPPED.inc(count)


def clear_job_metrics() -> None:
    """Drop every per-job and per-queue series (a standby must not report stale values)."""
    with _lock:
        jobs = list(_jobs)
        queues = list(_queues)
    for namespace, name in jobs:
        forget_job(namespace, name)
    for namespace, queue in queues:
        forget_queue(namespace, queue)


def set_leader(is_leader: bool) -> None:
    """Report leadership. Losing it drops the job and queue series: only the leader reports them."""
    IS_LEADER.set(1 if is_leader else 0)
    if not is_leader:
        clear_job_metrics()


def start_server(port: int, addr: str = "0.0.0.0", ready: Callable[[], bool] | None = None) -> None:
    """Serve REGISTRY on http://addr:port/metrics and readiness on /readyz (a daemon thread).

    /readyz answers 200 only once `ready()` is true (the indexes are bound and every BackgroundJob
    had its first pass), unlike kopf's /healthz, which answers as soon as the process runs.
    """
    metrics_app = make_wsgi_app(REGISTRY)

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if environ.get("PATH_INFO") == "/readyz":
            ok = ready() if ready is not None else True
            start_response("200 OK" if ok else "503 Service Unavailable", [("Content-Type", "text/plain")])
            return [b"ready\n" if ok else b"not ready\n"]
        result: Iterable[bytes] = metrics_app(environ, start_response)
        return result

    server = make_server(addr, port, app, ThreadingWSGIServer, handler_class=_SilentHandler)
    thread = threading.Thread(target=server.serve_forever, name="nightshift-metrics", daemon=True)
    thread.start()
