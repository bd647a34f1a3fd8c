"""One parser for human durations ("240d", "30m", "1h30m", "90s", "500ms").

Every job parameter and every spec field that takes a duration goes through here, so "1h" means the
same thing everywhere and a typo fails validation (exit 65) instead of silently meaning something else.
"""

from __future__ import annotations

import re
from datetime import timedelta

_UNITS: dict[str, float] = {
    "ms": 0.001,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
    "d": 86400.0,
    "w": 604800.0,
}
_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)")
_WHOLE = re.compile(r"(?:\d+(?:\.\d+)?(?:ms|s|m|h|d|w))+")


def parse_duration(value: str | int | float | timedelta) -> timedelta:
    """Parse "240d", "1h30m", "90s", "500ms"; plain numbers are seconds.

    Raises ValueError with the accepted forms, which pydantic turns into a readable parameter error.
    """
    if isinstance(value, timedelta):
        result = value
    elif isinstance(value, bool):
        raise ValueError("a duration must be a string like '30m', not a boolean")
    elif isinstance(value, int | float):
        result = timedelta(seconds=float(value))
    else:
        text = value.strip().lower()
        if re.fullmatch(r"\d+(?:\.\d+)?", text):
            result = timedelta(seconds=float(text))
        elif _WHOLE.fullmatch(text):
            seconds = sum(float(n) * _UNITS[u] for n, u in _PART.findall(text))
            result = timedelta(seconds=seconds)
        else:
            raise ValueError(
                f"invalid duration {value!r}: use a number with a unit, e.g. '90s', '30m', '1h', '240d', '1h30m'"
            )
    if result < timedelta(0):
        raise ValueError(f"invalid duration {value!r}: must not be negative")
    return result


def format_duration(value: timedelta) -> str:
    """Render a timedelta back in the same notation (largest units first), for log lines and messages."""
    total_ms = round(value.total_seconds() * 1000)
    if total_ms == 0:
        return "0s"
    parts: list[str] = []
    for unit, size_ms in (("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1000), ("ms", 1)):
        count, total_ms = divmod(total_ms, size_ms)
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts)
