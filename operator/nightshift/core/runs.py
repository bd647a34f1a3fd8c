"""Runs as seen in the Jobs that exist: parsing, grouping attempts into runs, and each run's state.

A run is one scheduled or triggered execution; each attempt is its own Job. All of it is derived
from Job labels, annotations and status (and the pod's termination state, copied into the view), so
an operator restart recomputes the same picture.
"""

from __future__ import annotations

import datetime as dt
import json
import struct
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any, Final, NamedTuple, Protocol

from nightshift.api import names

Obj = Mapping[str, Any]
TERMINAL = ("Succeeded", "Failed", "Skipped", "Cancelled")


def parse_time(value: str | None) -> dt.datetime | None:
    if not value:
        return None
    try:
        return dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


@dataclass(frozen=True, slots=True)
class AttemptView:
    """What the operator needs of one Job; small, so indexes stay small as Jobs grow (slots, no
    per-instance dict; the strings many Jobs share are interned: 50,000 Jobs are held at once)."""

    name: str
    namespace: str
    bgj: str
    run: str
    attempt: int
    trigger: str
    created: dt.datetime
    scheduled: dt.datetime | None
    not_before: dt.datetime | None
    suspended: bool
    started: dt.datetime | None
    finished: dt.datetime | None
    succeeded: bool
    failed: bool
    failure_reason: str | None  # Job condition reason: PodFailurePolicy, DeadlineExceeded, BackoffLimitExceeded
    failure_message: str | None
    outcome: str | None  # "Skipped: reason" / "Cancelled: reason" set by the operator
    gate: str | None
    priority: str
    queue: str | None
    params: Mapping[str, Any] | None
    exit_code: int | None = None
    message: str | None = None
    counted: str | None = None  # the ledger's mark: this run's end was counted (metrics, event, history)
    history_pending: bool = False  # counted while the history store could not take its rows
    request: str | None = None  # the BackgroundJobRun this run was made for

    @property
    def active(self) -> bool:
        return not self.suspended and not self.finished and self.outcome is None

    @property
    def waiting(self) -> bool:
        return self.suspended and not self.finished and self.outcome is None

    @property
    def time(self) -> dt.datetime:
        return self.scheduled or self.created


def attempt_view(job: Obj) -> AttemptView | None:
    md = job.get("metadata", {})
    labels = md.get("labels") or {}
    ann = md.get("annotations") or {}
    bgj = labels.get(names.LABEL_BGJ)
    if not bgj:
        return None
    spec = job.get("spec") or {}
    status = job.get("status") or {}
    conditions = {c.get("type"): c for c in status.get("conditions") or [] if c.get("status") == "True"}
    failed = conditions.get("Failed")
    done = conditions.get("Complete") or failed
    scheduled = parse_time(ann.get(names.ANN_SCHEDULED))
    if scheduled is None and names.CRONJOB_SCHEDULED in ann:
        scheduled = parse_time(ann[names.CRONJOB_SCHEDULED])
    params = None
    if names.ANN_PARAMS in ann:
        try:
            params = json.loads(ann[names.ANN_PARAMS])
        except ValueError:
            params = None
    name = md["name"]
    run = labels.get(names.LABEL_RUN) or name
    queue = ann.get(names.ANN_QUEUE)
    return AttemptView(
        name=name,
        namespace=sys.intern(md.get("namespace", "")),
        bgj=sys.intern(bgj),
        run=name if run == name else run,
        attempt=int(ann.get(names.ANN_ATTEMPT, "1") or 1),
        trigger=sys.intern(ann.get(names.ANN_TRIGGER, "schedule")),
        created=parse_time(md.get("creationTimestamp")) or dt.datetime.now(dt.UTC),
        scheduled=scheduled,
        not_before=parse_time(ann.get(names.ANN_NOT_BEFORE)),
        suspended=bool(spec.get("suspend")),
        started=parse_time(status.get("startTime")),
        finished=parse_time((done or {}).get("lastTransitionTime") or status.get("completionTime")) if done else None,
        succeeded="Complete" in conditions,
        failed=failed is not None,
        failure_reason=(failed or {}).get("reason"),
        failure_message=(failed or {}).get("message"),
        outcome=ann.get(names.ANN_OUTCOME),
        gate=ann.get(names.ANN_GATE),
        priority=sys.intern(ann.get(names.ANN_PRIORITY, "medium")),
        queue=sys.intern(queue) if queue else queue,
        params=params,
        counted=sys.intern(c) if (c := ann.get(names.ANN_COUNTED)) else None,
        history_pending=names.ANN_HISTORY_PENDING in ann,
        request=labels.get(names.LABEL_REQUEST),
    )


_EPOCH: Final = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_NO_TIME: Final = -(2**63)
_TIMES: Final = struct.Struct("<5qB")  # created, scheduled, not_before, started, finished (µs), flags
_SUSPENDED, _SUCCEEDED, _FAILED, _HISTORY_PENDING = 1, 2, 4, 8
_NO_RARE: Final = (None, None, None, None, None, None, None)


def _us(t: dt.datetime | None) -> int:
    """Microseconds since the epoch; a time without offset is read as UTC."""
    if t is None:
        return _NO_TIME
    d = (t if t.tzinfo is not None else t.replace(tzinfo=dt.UTC)) - _EPOCH
    return (d.days * 86400 + d.seconds) * 1_000_000 + d.microseconds


def _time(us: int) -> dt.datetime | None:
    return None if us == _NO_TIME else _EPOCH + dt.timedelta(microseconds=us)


class JobSeen(NamedTuple):
    """A Job as the index keeps it: its AttemptView, packed. 50,000 Jobs are held at once, and an
    AttemptView with its five datetimes is about 430 bytes; this is about 200: the times (UTC
    microseconds) and flags in one bytes object, the fields most Jobs leave empty in one tuple or
    None, the strings many Jobs share interned. `view()` gives back the AttemptView it was made of
    (times in UTC: every time the core writes is converted to UTC first), so the core reads what it
    always read; the few fields the index itself files by are properties."""

    name: str
    namespace: str
    bgj: str
    run: str
    attempt: int
    trigger: str
    priority: str
    counted: str | None
    times: bytes
    # (failure_reason, failure_message, outcome, gate, queue, params, request), None when all are
    rare: tuple[Any, ...] | None

    @classmethod
    def of(cls, v: AttemptView) -> JobSeen:
        flags = (
            (_SUSPENDED if v.suspended else 0)
            | (_SUCCEEDED if v.succeeded else 0)
            | (_FAILED if v.failed else 0)
            | (_HISTORY_PENDING if v.history_pending else 0)
        )
        times = _TIMES.pack(_us(v.created), _us(v.scheduled), _us(v.not_before), _us(v.started), _us(v.finished), flags)
        rare = (v.failure_reason, v.failure_message, v.outcome, v.gate, v.queue, v.params, v.request)
        return cls(
            v.name,
            v.namespace,
            v.bgj,
            v.run,
            v.attempt,
            v.trigger,
            v.priority,
            v.counted,
            times,
            None if rare == _NO_RARE else rare,
        )

    def view(self, end: Termination | None = None) -> AttemptView:
        """The AttemptView, with the exit code and message of the attempt's pod when `end` is given."""
        created, scheduled, not_before, started, finished, flags = _TIMES.unpack(self.times)
        reason, message, outcome, gate, queue, params, request = self.rare or _NO_RARE
        return AttemptView(
            name=self.name,
            namespace=self.namespace,
            bgj=self.bgj,
            run=self.run,
            attempt=self.attempt,
            trigger=self.trigger,
            created=_time(created) or _EPOCH,
            scheduled=_time(scheduled),
            not_before=_time(not_before),
            suspended=bool(flags & _SUSPENDED),
            started=_time(started),
            finished=_time(finished),
            succeeded=bool(flags & _SUCCEEDED),
            failed=bool(flags & _FAILED),
            failure_reason=reason,
            failure_message=message,
            outcome=outcome,
            gate=gate,
            priority=self.priority,
            queue=queue,
            params=params,
            exit_code=end[0] if end is not None else None,
            message=end[1] if end is not None else None,
            counted=self.counted,
            history_pending=bool(flags & _HISTORY_PENDING),
            request=request,
        )

    def _time_at(self, i: int) -> dt.datetime | None:
        return _time(_TIMES.unpack(self.times)[i])

    @property
    def _flags(self) -> int:
        flags: int = _TIMES.unpack(self.times)[5]
        return flags

    @property
    def started(self) -> dt.datetime | None:
        return self._time_at(3)

    @property
    def time(self) -> dt.datetime:
        return self._time_at(1) or self._time_at(0) or _EPOCH

    @property
    def succeeded(self) -> bool:
        return bool(self._flags & _SUCCEEDED)

    @property
    def history_pending(self) -> bool:
        return bool(self._flags & _HISTORY_PENDING)

    @property
    def outcome(self) -> str | None:
        return None if self.rare is None else self.rare[2]

    @property
    def queue(self) -> str | None:
        return None if self.rare is None else self.rare[4]

    @property
    def request(self) -> str | None:
        return None if self.rare is None else self.rare[6]

    @property
    def active(self) -> bool:
        """As AttemptView.active."""
        finished = _TIMES.unpack(self.times)[4] != _NO_TIME
        return not self._flags & _SUSPENDED and not finished and self.outcome is None

    @property
    def waiting(self) -> bool:
        """As AttemptView.waiting."""
        finished = _TIMES.unpack(self.times)[4] != _NO_TIME
        return bool(self._flags & _SUSPENDED) and not finished and self.outcome is None


def job_seen(job: Obj) -> JobSeen | None:
    """The informer's projection of a Job: its AttemptView, packed (None for a Job that is not ours)."""
    v = attempt_view(job)
    return JobSeen.of(v) if v is not None else None


Termination = tuple[Any, Any]  # (exit code, message) of a pod's first terminated container


def termination(pod: Obj) -> Termination | None:
    """All the core reads of a pod: its first terminated container's exit code and message."""
    for cs in (pod.get("status") or {}).get("containerStatuses") or []:
        term = (cs.get("state") or {}).get("terminated")
        if term:
            return term.get("exitCode"), term.get("message")
    return None


def with_end(view: AttemptView, end: Termination | None) -> AttemptView:
    """Copy the exit code and termination message of the attempt's pod into its view."""
    if end is None:
        return view
    return replace(view, exit_code=end[0], message=end[1])


class Attempt(Protocol):
    """What `end_read` and `latest_run` read of an attempt: an AttemptView or a JobSeen."""

    @property
    def run(self) -> str: ...
    @property
    def attempt(self) -> int: ...
    @property
    def time(self) -> dt.datetime: ...
    @property
    def succeeded(self) -> bool: ...
    @property
    def counted(self) -> str | None: ...
    @property
    def history_pending(self) -> bool: ...
    @property
    def request(self) -> str | None: ...


def end_read(view: Attempt, latest_run: str | None) -> bool:
    """Whether anything the core computes reads this attempt's pod end (exit code, message).

    A succeeded attempt whose run is counted (the ledger's mark, its history rows taken) is no
    longer read unless its run is the job's latest (`status.lastRun`) or was asked for by a
    BackgroundJobRun (the request's status shows its exit code and output): a success's state and
    reason do not depend on its exit code, and its event and history row were written when it was
    counted. Failed attempts are always read (the exit code decides whether a failure is retryable),
    and so is every attempt of a run not yet counted (its history rows). The index drops the ends
    nothing reads: at 50,000 finished Jobs that is most of them.
    """
    counted = view.succeeded and view.counted is not None and not view.history_pending
    return not counted or view.request is not None or view.run == latest_run


def latest_run(views: Iterable[Attempt]) -> str | None:
    """The id of the run `status.lastRun` shows: the last in `group`'s order (by the time of its
    first attempt, then id)."""
    first: dict[str, tuple[int, dt.datetime]] = {}
    for v in views:
        seen = first.get(v.run)
        if seen is None or v.attempt < seen[0]:
            first[v.run] = (v.attempt, v.time)
    return max(first, key=lambda r: (first[r][1], r)) if first else None


def with_pod(view: AttemptView, pod: Obj | None) -> AttemptView:
    """Copy the exit code and termination message of the attempt's pod into its view."""
    return with_end(view, termination(pod)) if pod else view


@dataclass(frozen=True)
class Run:
    id: str
    bgj: str
    namespace: str
    attempts: tuple[AttemptView, ...]  # by attempt number

    @property
    def last(self) -> AttemptView:
        return self.attempts[-1]

    @property
    def first(self) -> AttemptView:
        return self.attempts[0]

    @property
    def time(self) -> dt.datetime:
        return self.first.time

    @property
    def trigger(self) -> str:
        return self.first.trigger

    @property
    def priority(self) -> str:
        return self.first.priority


def group(views: Iterable[AttemptView]) -> list[Run]:
    """Runs ordered by scheduled (or creation) time, attempts by number."""
    by_run: dict[str, list[AttemptView]] = {}
    for v in views:
        by_run.setdefault(v.run, []).append(v)
    runs = [
        Run(rid, vs[0].bgj, vs[0].namespace, tuple(sorted(vs, key=lambda v: v.attempt))) for rid, vs in by_run.items()
    ]
    return sorted(runs, key=lambda r: (r.time, r.id))


@dataclass(frozen=True)
class RetryRule:
    limit: int
    non_retryable: frozenset[int]
    retry_on_timeout: bool


def failure_retryable(view: AttemptView, rule: RetryRule) -> tuple[bool, str]:
    """Whether a failed attempt is worth another, and the reason in words."""
    if view.failure_reason == "PodFailurePolicy" or (
        view.exit_code is not None and view.exit_code in rule.non_retryable
    ):
        return False, f"NonRetryableExitCode: exit code {view.exit_code}"
    if view.failure_reason == "DeadlineExceeded":
        return rule.retry_on_timeout, "Timeout: the attempt ran past spec.timeout"
    if view.exit_code is not None:
        return True, f"ExitCode: exit code {view.exit_code}"
    return True, f"{view.failure_reason or 'Failed'}: {view.failure_message or 'the attempt failed'}"


def state(run: Run, rule: RetryRule) -> tuple[str, str | None]:
    """The run's result (Waiting, Running, Retrying, Succeeded, Failed, Skipped, Cancelled) and why."""
    last = run.last
    if last.outcome:
        kind, _, reason = last.outcome.partition(":")
        return kind.strip(), reason.strip() or None
    if last.succeeded:
        return "Succeeded", None
    if last.failed:
        retryable, reason = failure_retryable(last, rule)
        if retryable and last.attempt <= rule.limit:
            return "Retrying", reason
        if retryable:
            return "Failed", f"RetriesExhausted: {last.attempt} attempts; last: {reason}"
        return "Failed", reason
    if last.active:
        return "Running", None
    return ("Retrying" if last.attempt > 1 else "Waiting"), last.gate


def output_of(message: str | None) -> dict[str, Any] | None:
    """The job runtime's one-line JSON result, if the termination message is one."""
    if not message:
        return None
    try:
        value = json.loads(message.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return None
    return value if isinstance(value, dict) else None


def prunable(runs: list[Run], rule: RetryRule, keep_succeeded: int, keep_failed: int) -> list[Run]:
    """Runs beyond the history limits, oldest first: successes beyond `keep_succeeded`, and failed,
    skipped or cancelled runs beyond `keep_failed`. Runs still in progress are never pruned."""
    ok, bad = [], []
    for run in runs:
        result, _ = state(run, rule)
        if result == "Succeeded":
            ok.append(run)
        elif result in ("Failed", "Skipped", "Cancelled"):
            bad.append(run)
    return [*ok[: max(0, len(ok) - keep_succeeded)], *bad[: max(0, len(bad) - keep_failed)]]
