"""Durations as users write them in YAML ("90s", "5m", "1h30m", "7d"), one grammar for the whole API.

The implementation is the run contract's (nightshift_jobs.contract), shared with job parameters, so a
spec field and a job parameter can never disagree about what "1h30m" means. The names here are the
ones the operator has always used: PATTERN for the CRD schema, parse/seconds for the maths.
"""

from __future__ import annotations

from nightshift_jobs.contract import DURATION_PATTERN as PATTERN
from nightshift_jobs.contract import duration_from_text as parse
from nightshift_jobs.contract import format_duration as format  # the established public name

__all__ = ["PATTERN", "format", "parse", "seconds"]


def seconds(text: str) -> float:
    """The duration in seconds; raises ValueError like parse()."""
    return parse(text).total_seconds()
