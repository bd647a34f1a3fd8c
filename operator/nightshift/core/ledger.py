"""The ledger of runs: each run's end is counted exactly once, whatever order runs end in.

Counting used to be a diff of `status.lastRun` before and after a pass, so five overlapping runs
that ended together counted as one, and a failure next to a newer skip was never counted at all.
Here every run that reached an end (Succeeded, Failed, Skipped, Cancelled) and whose final Job does
not carry the `nightshift.dev/counted` mark yields one `Ending`: one metric observation, one event
and its history rows. The controller counts the metric (once per process) and posts the event
(whose name is deterministic, so a repeat is refused by the API server) before the status shows
the end, and writes the mark beside the status once the history rows are queued (an idempotent
upsert): a restart finds the mark and counts nothing twice; a crash before the mark repeats only
writes that are refused or idempotent, and the new process's metrics start from zero.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence, Set
from dataclasses import dataclass

from nightshift.core.records import AttemptRecord
from nightshift.core.runs import TERMINAL, RetryRule, Run, output_of, state

# metric label values, by run result
METRIC_RESULT = {"Succeeded": "succeeded", "Failed": "failed", "Skipped": "skipped", "Cancelled": "cancelled"}
EVENT = {
    "Succeeded": ("Normal", "RunSucceeded"),
    "Failed": ("Warning", "RunFailed"),
    "Skipped": ("Warning", "RunSkipped"),
    "Cancelled": ("Warning", "RunCancelled"),
}


@dataclass(frozen=True)
class Ending:
    """One run's end, to be counted once."""

    run: Run
    result: str  # Succeeded, Failed, Skipped, Cancelled
    reason: str | None
    duration_s: float | None
    history: tuple[AttemptRecord, ...]

    @property
    def job(self) -> str:
        """The Job that carries the mark: the run's final attempt."""
        return self.run.last.name

    @property
    def metric_result(self) -> str:
        return METRIC_RESULT[self.result]

    @property
    def reason_kind(self) -> str | None:
        """ "ConcurrencyForbid: run x is still running" -> "ConcurrencyForbid" (the skip metric's label)."""
        return self.reason.split(":")[0].strip() if self.reason else None

    @property
    def event(self) -> tuple[str, str, str]:
        type_, reason = EVENT[self.result]
        rid = self.run.id
        if self.result == "Succeeded":
            text = f"run {rid} succeeded"
        elif self.result == "Failed":
            text = f"run {rid} failed for good: {self.reason or ''}"
        elif self.result == "Skipped":
            text = f"run {rid} skipped: {self.reason or ''}"
        else:
            text = f"run {rid} cancelled: {self.reason or ''}"
        return type_, reason, text


def history_rows(run: Run, result: str, reason: str | None) -> tuple[AttemptRecord, ...]:
    """Every attempt of a run as history rows: earlier attempts failed, the last one has the run's result."""
    rows = []
    for a in run.attempts:
        final = a is run.last
        if not final and not a.finished:
            continue
        out = output_of(a.message)
        rows.append(
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
    return tuple(rows)


def endings(runs: Sequence[Run], rule: RetryRule, counting: Set[str] = frozenset()) -> list[Ending]:
    """Runs that ended and are not yet counted, oldest first. `counting`: final Jobs whose mark was
    written and is not yet seen (counted all the same)."""
    out = []
    for run in runs:
        if run.last.counted or run.last.name in counting:
            continue
        result, reason = state(run, rule)
        if result not in TERMINAL:
            continue
        out.append(Ending(run, result, reason, _duration(run, result), history_rows(run, result, reason)))
    return out


def unrecorded(runs: Sequence[Run], rule: RetryRule) -> list[tuple[str, tuple[AttemptRecord, ...]]]:
    """Counted runs whose history rows the store had not taken: (final Job, rows) to offer again."""
    out = []
    for run in runs:
        if run.last.counted and run.last.history_pending:
            result, reason = state(run, rule)
            out.append((run.last.name, history_rows(run, result, reason)))
    return out


def _duration(run: Run, result: str) -> float | None:
    """From the first attempt's start to the last attempt's end; None for runs that never ran."""
    if result not in ("Succeeded", "Failed"):
        return None
    started: dt.datetime | None = run.first.started
    finished = run.last.finished
    if started is None or finished is None:
        return None
    return max(0.0, (finished - started).total_seconds())
