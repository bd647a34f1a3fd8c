"""Durations as users write them in YAML ("90s", "5m", "1h30m", "7d"), one parser for the whole API."""

from __future__ import annotations

import datetime as dt
import re

PATTERN = r"^([0-9]+(ms|s|m|h|d|w))+$"  # the same units as job parameters (nightshift_jobs.durations)
_PART = re.compile(r"([0-9]+)(ms|s|m|h|d|w)")
_UNIT = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse(text: str) -> dt.timedelta:
    if not re.fullmatch(PATTERN, text):
        raise ValueError(f"invalid duration {text!r}: use a number with a unit, e.g. 90s, 5m, 1h30m, 7d, 2w")
    return dt.timedelta(seconds=sum(int(n) * _UNIT[u] for n, u in _PART.findall(text)))


def seconds(text: str) -> float:
    return parse(text).total_seconds()


def format(delta: dt.timedelta) -> str:
    total = int(delta.total_seconds())
    if total <= 0:
        return "0s"
    out = ""
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        n, total = divmod(total, size)
        if n:
            out += f"{n}{unit}"
    return out
