"""Human durations ("240d", "30m", "1h30m", "90s", "500ms") for job parameters.

The grammar and its parser live in nightshift_jobs.contract, which the operator's spec fields use too,
so "1h" means the same thing in a schedule's timeout and in a job's olderThan, and a typo fails
validation (exit 65) instead of silently meaning something else. This module keeps the names jobs import.
"""

from __future__ import annotations

from nightshift_jobs.contract import DURATION_PATTERN, duration_from_text, format_duration, parse_duration

__all__ = ["DURATION_PATTERN", "duration_from_text", "format_duration", "parse_duration"]
