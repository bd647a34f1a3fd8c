"""Schedule maths: cron validation, `every` intervals as cron, and scheduled times in a time zone.

Kubernetes' CronJob controller parses schedules with robfig/cron v3 (``cron.ParseStandard``: 5
fields or an @-descriptor) and evaluates them in spec.timeZone with robfig's ``Next``, which has
its own DST behaviour (a wall time that does not exist that day is skipped to the next day; on a
fall-back day the repeated hour is walked twice). nightshift.core.cron ports that library exactly
and this module answers the operator's questions with it, so nextScheduleTime, missed runs and
"which run of a dependency is due" are the times the controller creates Jobs for.
"""

from __future__ import annotations

import datetime as dt
import functools
import itertools
import zoneinfo
from collections.abc import Iterator

from nightshift.api import durations
from nightshift.core import cron as robfig

MACROS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
"""robfig's descriptors and the 5-field schedule each one is (same bits, star bits included)."""


class ScheduleError(ValueError):
    """A schedule the operator cannot run; the message is shown to users as is."""


def normalise(expr: str) -> str:
    """The schedule text to write into the CronJob; raises ScheduleError with a clear message.

    Accepts exactly what the API server accepts for spec.schedule: what robfig's ParseStandard
    parses, without a TZ=/CRON_TZ= prefix (Kubernetes rejects any "TZ" in the schedule). Macros
    become their 5-field form, 5-field schedules have their whitespace collapsed (robfig splits on
    Go's whitespace, so the fields are unchanged) and ``@every <duration>`` is kept as written.
    """
    if not expr:
        raise ScheduleError("the schedule is empty")
    if "TZ" in expr:
        raise ScheduleError("put the time zone in spec.timeZone, not in the schedule")
    try:
        robfig.parse_standard(expr)
    except robfig.CronError as e:
        raise _clear(expr, e) from None
    if expr.startswith("@"):
        return MACROS.get(expr, expr)
    return " ".join(robfig.go_fields(expr))


def _clear(expr: str, e: robfig.CronError) -> ScheduleError:
    """robfig's reason, said in the operator's words (robfig's own message is kept at the end)."""
    if expr.startswith("@"):
        if expr.startswith("@every "):
            return ScheduleError(f"schedule {expr!r} is not a valid @every schedule: {e}")
        return ScheduleError(
            f"unknown schedule macro {expr!r}; use one of {', '.join(sorted(MACROS))} or @every <duration>"
        )
    fields = robfig.go_fields(expr)
    if len(fields) != 5:
        hint = " (a macro must be written alone, without spaces around it)" if expr.strip().startswith("@") else ""
        return ScheduleError(
            f"schedule {expr!r} has {len(fields)} fields; a cron schedule has 5 (minute hour day month weekday){hint}"
        )
    return ScheduleError(f"schedule {expr!r} is not a valid cron expression: {e}")


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


@functools.lru_cache(maxsize=1024)
def parse(cron: str, tz: str) -> robfig.Schedule:
    """The schedule as the controller builds it: ParseStandard("TZ=<tz> <cron>")."""
    location = zone(tz)
    try:
        return robfig.parse_standard(cron, location)
    except robfig.CronError as e:
        raise _clear(cron, e) from None


def next_after(cron: str, tz: str, after: dt.datetime) -> dt.datetime:
    """The first scheduled time strictly after `after`, in UTC (robfig's Next).

    Raises ScheduleError for a schedule with no time in the five years robfig looks ahead
    (``0 0 31 2 *``: the API server accepts it, the controller never runs it).
    """
    got = parse(cron, tz).next(after)
    if got is None:
        raise ScheduleError(f"schedule {cron!r} has no time in the five years after {after.isoformat()}")
    return got.astimezone(dt.UTC)


# How far before `at` the regular search starts walking Next, widened until a time turns up; the
# last bound is past robfig's five-year horizon (a schedule with nothing in it never fires).
_LOOK_BACK = [dt.timedelta(minutes=2 * 4**i) for i in range(10)] + [dt.timedelta(days=6 * 366)]


def _regular_latest(s: robfig.SpecSchedule, at: dt.datetime, floor: dt.datetime | None) -> dt.datetime | None:
    """The last time <= at of the Next chain, walking from close before `at`, widening.

    Exact where the zone keeps one UTC offset over the walk (there robfig's Next is plain cron:
    the first matching wall time after t, whatever t). `floor`, a time of the chain, bounds the
    walk: from there the chain is the controller's.
    """
    for back in _LOOK_BACK:
        start = at - back
        if floor is not None and start <= floor:
            start = floor
        latest = start if start == floor else None
        t = s.next(start)
        while t is not None and t <= at:
            latest = t
            t = s.next(t)
        if latest is not None or start == floor:
            return latest
    return None


def _last_offset_change(loc: dt.tzinfo, at: dt.datetime, horizon_days: int = 400) -> dt.datetime | None:
    """The instant of the last UTC-offset change at or before `at` within the horizon, or None."""
    if loc is dt.UTC:
        return None
    hi = int(at.timestamp())
    off = at.astimezone(loc).utcoffset()
    for day in range(1, horizon_days + 1):
        lo = hi - 86400 * day
        if dt.datetime.fromtimestamp(lo, loc).utcoffset() != off:
            left, right = lo, lo + 86400  # offset differs at left, is `off` at right: bisect
            while right - left > 1:
                mid = (left + right) // 2
                left, right = (mid, right) if dt.datetime.fromtimestamp(mid, loc).utcoffset() != off else (left, mid)
            return dt.datetime.fromtimestamp(right, dt.UTC)
    return None


def latest_at_or_before(cron: str, tz: str, at: dt.datetime) -> dt.datetime:
    """The last scheduled time at or before `at`, in UTC, on the Next chain the controller follows.

    robfig has no "previous", and its Next chain depends on where it starts: right after a DST
    change a chain can skip a time another chain has (Lord Howe's half-hour change puts the walk
    on :30 and a daily midnight job loses the next day). The controller walks Next from the
    CronJob's last schedule time, so a CronJob that has been running follows the chain that comes
    from before the last offset change. So: find the chain's last time at or before that change
    (where one offset holds, any start gives the same times), walk Next across the change, and
    from the first time after it search close before `at` again. An ``@every`` schedule has no
    times of its own (they count from the CronJob's creation or last schedule time), so it raises
    ScheduleError, as does a schedule that never fires.
    """
    s = parse(cron, tz)
    if isinstance(s, robfig.ConstantDelaySchedule):
        raise ScheduleError(
            f"schedule {cron!r} has no fixed times: @every counts from the CronJob's creation or last run"
        )
    assert s.location is not None
    change = _last_offset_change(s.location, at)
    floor = None
    if change is not None:
        c = _regular_latest(s, change - dt.timedelta(seconds=1), None)
        while c is not None:
            n = s.next(c)
            if n is None or n > at:
                return c.astimezone(dt.UTC)
            c = n
            if c >= change:
                break
        floor = c
    latest = _regular_latest(s, at, floor)
    if latest is None:
        raise ScheduleError(f"schedule {cron!r} has no time in the six years before {at.isoformat()}")
    return latest.astimezone(dt.UTC)


def times_between(
    cron: str, tz: str, start: dt.datetime, end: dt.datetime, limit: int = 10000
) -> Iterator[dt.datetime]:
    """Scheduled times in (start, end], in UTC, at most `limit` of them: robfig's Next chain from start."""
    schedule = parse(cron, tz)
    t: dt.datetime | None = start
    for _ in range(limit):
        assert t is not None
        t = schedule.next(t)
        if t is None or t > end:
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
