"""Schedule maths: cron validation, `every` intervals as cron, and scheduled times in a time zone.

Kubernetes' CronJob controller parses schedules with robfig/cron (5 fields plus @-macros) and
evaluates them in spec.timeZone; croniter, given a zone-aware datetime, walks the same times,
including across DST changes, so the operator's nextScheduleTime matches what the controller does.
"""

from __future__ import annotations

import datetime as dt
import itertools
import zoneinfo
from collections.abc import Iterator

from croniter import croniter

from nightshift.api import durations

MACROS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}


class ScheduleError(ValueError):
    """A schedule the operator cannot run; the message is shown to users as is."""


def normalise(expr: str) -> str:
    """The 5-field form of a cron expression or macro; raises ScheduleError with a clear message."""
    text = " ".join(expr.split())
    if text.startswith("@"):
        if text not in MACROS:
            raise ScheduleError(f"unknown schedule macro {text!r}; use one of {', '.join(sorted(MACROS))}")
        return MACROS[text]
    if "TZ=" in text:
        raise ScheduleError("put the time zone in spec.timeZone, not in the schedule")
    fields = text.split(" ")
    if len(fields) != 5:
        raise ScheduleError(
            f"schedule {expr!r} has {len(fields)} fields; a cron schedule has 5 (minute hour day month weekday)"
        )
    if not croniter.is_valid(text):
        raise ScheduleError(f"schedule {expr!r} is not a valid cron expression")
    return text


def every_to_cron(every: str) -> str:
    """`every: 5m` as cron; only intervals that divide an hour, a day or are whole days map exactly."""
    secs = int(durations.seconds(every))
    minute, hour, day = 60, 3600, 86400
    if secs <= 0 or secs % minute:
        raise ScheduleError(f"every: {every} is not a whole number of minutes")
    if secs < hour:
        n = secs // minute
        if hour % secs:
            raise ScheduleError(
                f"every: {every} has no cron equivalent (it does not divide an hour evenly); "
                f"use one of 1m, 2m, 3m, 4m, 5m, 6m, 10m, 12m, 15m, 20m, 30m, or a cron schedule"
            )
        return "* * * * *" if n == 1 else f"*/{n} * * * *"
    if secs < day:
        if secs % hour or day % secs:
            raise ScheduleError(
                f"every: {every} has no cron equivalent; use 1h, 2h, 3h, 4h, 6h, 8h, 12h, 1d or a cron schedule"
            )
        n = secs // hour
        return "0 * * * *" if n == 1 else f"0 */{n} * * *"
    if secs == day:
        return "0 0 * * *"
    if secs == 7 * day:
        return "0 0 * * 0"
    raise ScheduleError(f"every: {every} has no cron equivalent; use 1d, 7d or a cron schedule")


def cron_of(schedule: str | None, every: str | None) -> str | None:
    """The CronJob schedule of a job, or None for at/on-demand/chained jobs."""
    if schedule is not None:
        return normalise(schedule)
    if every is not None:
        return every_to_cron(every)
    return None


def zone(name: str) -> zoneinfo.ZoneInfo:
    try:
        return zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError) as e:
        raise ScheduleError(f"unknown time zone {name!r}") from e


def next_after(cron: str, tz: str, after: dt.datetime) -> dt.datetime:
    """The first scheduled time strictly after `after`, in UTC."""
    it = croniter(cron, after.astimezone(zone(tz)))
    result: dt.datetime = it.get_next(dt.datetime)
    return result.astimezone(dt.UTC)


def latest_at_or_before(cron: str, tz: str, at: dt.datetime) -> dt.datetime:
    """The last scheduled time at or before `at`, in UTC.

    croniter's get_prev skips the first pass through the hour repeated when clocks go back, so
    step back once and then walk forward with get_next, which handles both passes.
    """
    at = at.replace(microsecond=0)
    it = croniter(cron, at.astimezone(zone(tz)) + dt.timedelta(seconds=1))
    candidate: dt.datetime = it.get_prev(dt.datetime)
    candidate = candidate.astimezone(dt.UTC)
    while (following := next_after(cron, tz, candidate)) <= at:
        candidate = following
    return candidate


def times_between(
    cron: str, tz: str, start: dt.datetime, end: dt.datetime, limit: int = 10000
) -> Iterator[dt.datetime]:
    """Scheduled times in (start, end], in UTC, at most `limit` of them."""
    it = croniter(cron, start.astimezone(zone(tz)))
    for _ in range(limit):
        t: dt.datetime = it.get_next(dt.datetime)
        if t > end:
            return
        yield t.astimezone(dt.UTC)


def describe(schedule: str | None, every: str | None, at: dt.datetime | None) -> str:
    if schedule is not None:
        return schedule
    if every is not None:
        return f"every {every}"
    if at is not None:
        return f"at {at.astimezone(dt.UTC).strftime('%Y-%m-%dT%H:%M:%SZ')}"
    return "on demand"


def max_interval(cron: str, tz: str, after: dt.datetime, samples: int = 16) -> float:
    """The longest gap between consecutive scheduled times (seconds), e.g. a weekend for `0 9 * * 1-5`."""
    times = list(times_between(cron, tz, after, after + dt.timedelta(days=400), limit=samples))
    return max(((b - a).total_seconds() for a, b in itertools.pairwise(times)), default=0.0)


def missed_between(cron: str, tz: str, last: dt.datetime, latest: dt.datetime, limit: int = 1000) -> list[dt.datetime]:
    """Scheduled times strictly between the previous scheduled run and the latest one: runs that never came."""
    return [t for t in times_between(cron, tz, last, latest, limit=limit + 1) if t < latest][:limit]
