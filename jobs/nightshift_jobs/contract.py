"""The run contract between the operator and job pods: one module both sides import.

The operator writes a Job's environment and reads its exit code; the job runtime reads that
environment and picks that exit code. When each side kept its own copy of a name, a number or a
duration parser, a rename on one side broke runs silently, so everything both sides must agree on
lives here: the environment variable names, the exit codes and which of them are not worth a retry,
the duration grammar, and the names valid after `builtin:`.

This module imports only the standard library (no pydantic, no psycopg, nothing from nightshift),
so the operator can import it without importing the job runtime, and nightshift_jobs never imports
the operator: the dependency points one way only.
"""

from __future__ import annotations

import re
from datetime import timedelta
from enum import IntEnum
from typing import Final

# -- environment: set by the operator on every job container ------------------------------------
ENV_PARAMS: Final = "NIGHTSHIFT_PARAMS"
"""JSON object: the job's `job.params` with a run's own params (run-now, BackgroundJobRun) merged over it."""
ENV_RUN_ID: Final = "NIGHTSHIFT_RUN_ID"
"""The run's id (its first attempt's Job name); the same for every attempt of one run."""
ENV_ATTEMPT: Final = "NIGHTSHIFT_ATTEMPT"
"""1 for the first attempt, 2 for the first retry, ..."""
ENV_SCHEDULED_TIME: Final = "NIGHTSHIFT_SCHEDULED_TIME"
"""RFC 3339 UTC time the run stands for (a cron slot, a backfill's time, a trigger's time); may be unset."""
ENV_BACKGROUNDJOB: Final = "NIGHTSHIFT_BACKGROUNDJOB"
"""The name of the BackgroundJob the run belongs to."""
ENV_NAMESPACE: Final = "NIGHTSHIFT_NAMESPACE"
"""The namespace of that BackgroundJob."""

RUN_ENV: Final[tuple[str, ...]] = (
    ENV_BACKGROUNDJOB,
    ENV_NAMESPACE,
    ENV_RUN_ID,
    ENV_ATTEMPT,
    ENV_SCHEDULED_TIME,
    ENV_PARAMS,
)
"""Every variable the operator may set, so a user's `job.env` can be checked against them."""

# -- environment: read by the job runtime only (local runs, plugins) ----------------------------
ENV_TERMINATION_LOG: Final = "NIGHTSHIFT_TERMINATION_LOG"
"""Where the one-line JSON result goes; default /dev/termination-log (what Kubernetes reads)."""
ENV_JOB_MODULES: Final = "NIGHTSHIFT_JOB_MODULES"
"""Comma-separated modules to import for extra @job registrations."""


# -- exit codes ---------------------------------------------------------------------------------
class ExitCode(IntEnum):
    """Exit codes the operator's retry policy keys on (sysexits.h numbering)."""

    OK = 0
    FAILURE = 1  # unexpected failure or unhealthy: retried by default
    USAGE = 64  # unknown job, bad flag, unknown or missing parameter: never retried
    DATA = 65  # parameter values or data are invalid: never retried
    TEMPORARY = 75  # database unreachable, lock timeout, 5xx, SIGTERM: retried
    CONFIG = 78  # the environment does not match what the job needs: never retried


NON_RETRYABLE_EXIT_CODES: Final[tuple[int, ...]] = (int(ExitCode.USAGE), int(ExitCode.DATA), int(ExitCode.CONFIG))
"""Exit codes a retry cannot fix; the default of a BackgroundJob's retry.nonRetryableExitCodes. Sorted."""

# -- built-in jobs ------------------------------------------------------------------------------
BUILTIN_NAMES: Final[tuple[str, ...]] = (
    "archive",
    "backup",
    "db-maintenance",
    "health-check",
    "http",
    "refresh-views",
    "sql",
    "ttl-cleanup",
)
"""Names valid after `builtin:` in a BackgroundJob's `job`; sorted. The registry maps each to its module."""

# -- durations ----------------------------------------------------------------------------------
DURATION_UNITS: Final[dict[str, float]] = {
    "ms": 0.001,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
    "d": 86400.0,
    "w": 604800.0,
}
DURATION_PATTERN: Final = r"^([0-9]+(ms|s|m|h|d|w))+$"
"""The one duration grammar: whole numbers with a unit, largest first or not ("90s", "1h30m", "7d", "2w").

Spec fields are held to exactly this (the CRD schema carries the pattern, so the API server checks it
too). Job parameters accept it as well, plus a bare number of seconds, because YAML and JSON hand a
job `60` as a number.
"""
_PART = re.compile(r"([0-9]+)(ms|s|m|h|d|w)")
_BARE_SECONDS = re.compile(r"[0-9]+(?:\.[0-9]+)?")
_HINT = "use a number with a unit, e.g. 90s, 5m, 1h30m, 7d, 2w"


def duration_from_text(text: str) -> timedelta:
    """Parse a duration in the spec grammar (DURATION_PATTERN); raises ValueError naming the accepted forms."""
    if not isinstance(text, str) or not re.fullmatch(DURATION_PATTERN, text):
        raise ValueError(f"invalid duration {text!r}: {_HINT}")
    return timedelta(seconds=sum(int(n) * DURATION_UNITS[u] for n, u in _PART.findall(text)))


def parse_duration(value: str | int | float | timedelta) -> timedelta:
    """A job parameter's duration: the spec grammar, or a bare number of seconds (60, 1.5, "15").

    Raises ValueError with the accepted forms, which pydantic turns into a readable parameter error.
    """
    if isinstance(value, timedelta):
        result = value
    elif isinstance(value, bool):
        raise ValueError("a duration must be a string like '30m', not a boolean")
    elif isinstance(value, int | float):
        result = timedelta(seconds=float(value))
    elif isinstance(value, str) and _BARE_SECONDS.fullmatch(value):
        result = timedelta(seconds=float(value))
    else:
        result = duration_from_text(value)
    if result < timedelta(0):
        raise ValueError(f"invalid duration {value!r}: must not be negative")
    return result


def format_duration(value: timedelta) -> str:
    """Render a timedelta in the same grammar (largest units first), so it parses back to the same value.

    Whole milliseconds are kept; negative values render as 0s.
    """
    total_ms = round(value.total_seconds() * 1000)
    if total_ms <= 0:
        return "0s"
    parts: list[str] = []
    for unit, size_ms in (("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1000), ("ms", 1)):
        count, total_ms = divmod(total_ms, size_ms)
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts)
