"""The contract every job run shares: context, exit codes, JSON logs, SIGTERM, termination result.

The operator only sees a Pod's exit code and its termination message, so those two carry everything it
needs: whether to retry (exit code) and what to put in status and history (the one-line JSON result).
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
import traceback
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import FrameType
from typing import Any

from nightshift_jobs import contract
from nightshift_jobs.contract import ExitCode as ExitCode  # re-exported: jobs and plugins import it from here

Counts = dict[str, int]

TERMINATION_LOG_DEFAULT = "/dev/termination-log"
TERMINATION_LIMIT = 4096  # Kubernetes truncates termination messages at 4096 bytes.
_SECRET_HINTS = ("dsn", "password", "secret", "token", "authorization", "apikey", "api_key")


NON_RETRYABLE_EXIT_CODES: frozenset[int] = frozenset(contract.NON_RETRYABLE_EXIT_CODES)
"""The contract's non-retryable exit codes as a set, for membership tests."""


class JobError(Exception):
    """A failure whose exit code the job knows; the message goes to stderr and the result."""

    exit_code: int = ExitCode.FAILURE

    def __init__(self, message: str, *, exit_code: int | None = None) -> None:
        super().__init__(message)
        if exit_code is not None:
            self.exit_code = exit_code


class UsageError(JobError):
    exit_code = ExitCode.USAGE


class DataError(JobError):
    exit_code = ExitCode.DATA


class TemporaryError(JobError):
    exit_code = ExitCode.TEMPORARY


class ConfigError(JobError):
    exit_code = ExitCode.CONFIG


class Terminated(TemporaryError):
    """Raised at a checkpoint after SIGTERM: the batch in hand is done, the rest is left for a retry."""

    def __init__(self) -> None:
        super().__init__("terminated")


@dataclass(frozen=True)
class RunInfo:
    """Identity of this run as the operator set it in the environment (all optional for local use)."""

    run_id: str | None = None
    attempt: int | None = None
    background_job: str | None = None
    namespace: str | None = None
    scheduled_time: str | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> RunInfo:
        attempt_text = env.get(contract.ENV_ATTEMPT) or ""
        return cls(
            run_id=env.get(contract.ENV_RUN_ID) or None,
            attempt=int(attempt_text) if attempt_text.isdigit() else None,
            background_job=env.get(contract.ENV_BACKGROUNDJOB) or None,
            namespace=env.get(contract.ENV_NAMESPACE) or None,
            scheduled_time=env.get(contract.ENV_SCHEDULED_TIME) or None,
        )


_log_lock = threading.Lock()


def emit(record: Mapping[str, Any]) -> None:
    """Write one JSON object as one line on stderr; never raises (logging must not fail a job)."""
    try:
        line = json.dumps(record, default=str, ensure_ascii=False, separators=(",", ":"))
        with _log_lock:
            sys.stderr.write(line + "\n")
            sys.stderr.flush()
    except Exception:  # pragma: no cover - stderr closed
        pass


@dataclass
class JobContext:
    """What a job function gets besides its parameters: identity, dry-run flag, counts, logging, stop."""

    job: str
    run: RunInfo = field(default_factory=RunInfo)
    dry_run: bool = False
    counts: Counts = field(default_factory=dict)
    message: str | None = None
    stop_reason: str | None = None
    _stop: threading.Event = field(default_factory=threading.Event, repr=False)

    def log(self, msg: str, *, level: str = "info", **fields: Any) -> None:
        """Log a JSON line carrying run_id, job and attempt so lines can be joined across retries."""
        record: dict[str, Any] = {
            "ts": datetime.now(UTC).isoformat(timespec="milliseconds"),
            "level": level,
            "msg": msg,
            "job": self.job,
            "run_id": self.run.run_id,
            "attempt": self.run.attempt,
        }
        if self.run.background_job:
            record["backgroundjob"] = self.run.background_job
        if self.run.namespace:
            record["namespace"] = self.run.namespace
        record.update({k: v for k, v in fields.items() if v is not None})
        emit(record)

    @contextmanager
    def step(self, name: str, **fields: Any) -> Iterator[None]:
        """Time a unit of work and log it once, with duration_ms, whether it succeeded or not."""
        started = time.monotonic()
        try:
            yield
        except BaseException as exc:
            self.log(
                "step failed",
                level="error",
                step=name,
                duration_ms=_ms_since(started),
                error=f"{type(exc).__name__}: {exc}",
                **fields,
            )
            raise
        self.log("step done", step=name, duration_ms=_ms_since(started), **fields)

    def add(self, key: str, amount: int = 1) -> None:
        """Accumulate a count; counts survive a failure so a partial run still reports its progress."""
        self.counts[key] = self.counts.get(key, 0) + int(amount)

    @property
    def stop_requested(self) -> bool:
        return self._stop.is_set()

    def request_stop(self, reason: str = "stop") -> None:
        self.stop_reason = self.stop_reason or reason
        self._stop.set()

    def checkpoint(self) -> None:
        """Call between batches: after SIGTERM this raises Terminated (exit 75) at a clean boundary."""
        if self._stop.is_set():
            self.log("stop requested; stopping after the finished batch", level="warning", signal=self.stop_reason)
            raise Terminated()


def _ms_since(started: float) -> int:
    return int((time.monotonic() - started) * 1000)


def redact(params: Mapping[str, Any]) -> dict[str, Any]:
    """Hide values that look like credentials before parameters are logged."""
    out: dict[str, Any] = {}
    for key, value in params.items():
        lowered = key.lower()
        if any(hint in lowered for hint in _SECRET_HINTS):
            out[key] = "***"
        elif isinstance(value, Mapping) and lowered == "headers":
            out[key] = {k: ("***" if _secret_header(k) else v) for k, v in value.items()}
        else:
            out[key] = value
    return out


def _secret_header(name: str) -> bool:
    return any(hint in name.lower() for hint in ("auth", "token", "key", "cookie"))


def build_result(*, job: str, exit_code: int, message: str, counts: Counts, duration_ms: int) -> dict[str, Any]:
    """Build the result object, shrinking the message (then counts) until it fits in 4096 bytes."""
    result: dict[str, Any] = {
        "result": "succeeded" if exit_code == 0 else "failed",
        "job": job[:200],
        "exitCode": exit_code,
        "message": message,
        "counts": dict(counts),
        "durationMs": duration_ms,
    }
    if _size(result) <= TERMINATION_LIMIT:
        return result
    # message first (down to 1 KiB), then counts, then the rest of the message
    result["message"] = _shrink(message, _size(result) - TERMINATION_LIMIT, floor=1024)
    while _size(result) > TERMINATION_LIMIT and result["counts"]:
        result["counts"].pop(sorted(result["counts"])[-1])
    while _size(result) > TERMINATION_LIMIT and len(result["message"]) > 1:
        # escapes (quotes, control characters) take 2-6 bytes each, so shrink until it fits
        result["message"] = _shrink(result["message"], _size(result) - TERMINATION_LIMIT + 64, floor=0)
    return result


def _shrink(message: str, overflow: int, *, floor: int) -> str:
    """Cut `overflow` bytes (plus room for the ellipsis) off the end, keeping at least `floor` bytes."""
    encoded = message.encode("utf-8")
    keep = max(min(floor, len(encoded)), len(encoded) - overflow - 8)
    if keep >= len(encoded):
        return message
    return encoded[:keep].decode("utf-8", errors="ignore") + "…"


def _size(result: Mapping[str, Any]) -> int:
    return len(json.dumps(result, ensure_ascii=False, separators=(",", ":")).encode("utf-8"))


def write_result(ctx: JobContext, result: Mapping[str, Any], env: Mapping[str, str]) -> None:
    """Write the one-line result to the termination log; an unwritable path is logged, not fatal."""
    path = env.get(contract.ENV_TERMINATION_LOG) or TERMINATION_LOG_DEFAULT
    line = json.dumps(result, ensure_ascii=False, separators=(",", ":"))
    try:
        with open(path, "w", encoding="utf-8") as fh:
            fh.write(line)
    except OSError as exc:
        ctx.log("termination log not written", level="warning", path=path, error=str(exc))


def install_signal_handlers(ctx: JobContext) -> None:
    """SIGTERM/SIGINT only set a flag: jobs stop at their next checkpoint, never mid-batch.

    The handler must not log: it runs between bytecodes of the main thread, which may be inside
    emit() holding the log lock or the stderr buffer; checkpoint() logs the stop instead.
    """

    def _handler(signum: int, _frame: FrameType | None) -> None:
        ctx.request_stop(signal.Signals(signum).name)

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _handler)
        signal.signal(signal.SIGINT, _handler)


def execute(
    name: str,
    overrides: Mapping[str, Any] | None = None,
    *,
    dry_run: bool = False,
    env: Mapping[str, str] | None = None,
    handle_signals: bool = True,
    usage_error: str | None = None,
) -> int:
    """Run one job end to end and return its exit code; always writes a result, even for usage errors."""
    from nightshift_jobs import registry
    from nightshift_jobs.params import load_params, validate_params

    env = os.environ if env is None else env
    started = time.monotonic()
    ctx = JobContext(job=name, run=RunInfo.from_env(env), dry_run=dry_run)
    exit_code: int = ExitCode.OK
    message = ""
    try:
        if usage_error:
            raise UsageError(usage_error)
        spec = registry.get(name)
        raw = load_params(env.get(contract.ENV_PARAMS), overrides or {})
        params = validate_params(spec.params, raw)
        if handle_signals:
            install_signal_handlers(ctx)
        ctx.log("job started", step="start", params=redact(raw), dry_run=dry_run or None)
        returned = spec.func(ctx, params)
        if returned:
            for key, value in returned.items():
                ctx.counts[key] = int(value)
        message = ctx.message or "ok"
        if dry_run:
            message = f"dry run: {message}"
    except JobError as exc:
        exit_code, message = exc.exit_code, str(exc)
    except Exception as exc:
        exit_code, message = _classify(exc)
        if exit_code == ExitCode.FAILURE:
            ctx.log("unexpected error", level="error", traceback=traceback.format_exc())
    duration_ms = _ms_since(started)
    result = build_result(job=name, exit_code=exit_code, message=message, counts=ctx.counts, duration_ms=duration_ms)
    ctx.log(
        "job finished",
        level="info" if exit_code == 0 else "error",
        step="finish",
        exit_code=exit_code,
        result=result["result"],
        message=message,
        counts=ctx.counts,
        duration_ms=duration_ms,
    )
    write_result(ctx, result, env)
    return exit_code


def _classify(exc: Exception) -> tuple[int, str]:
    """Map library exceptions to exit codes; only psycopg needs it, so import it only when seen."""
    if type(exc).__module__.startswith("psycopg"):
        from nightshift_jobs.db import classify_error

        return classify_error(exc)
    if isinstance(exc, TimeoutError | ConnectionError):
        return ExitCode.TEMPORARY, f"{type(exc).__name__}: {exc}"
    return ExitCode.FAILURE, f"{type(exc).__name__}: {exc}"
