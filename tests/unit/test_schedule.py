from __future__ import annotations

import datetime as dt

import pytest

from nightshift.core import schedule
from nightshift.core.schedule import ScheduleError
from tests.unit.factories import t

NY = "America/New_York"
BERLIN = "Europe/Berlin"


@pytest.mark.parametrize(
    ("expr", "cron"),
    [
        ("@yearly", "0 0 1 1 *"),
        ("@annually", "0 0 1 1 *"),
        ("@monthly", "0 0 1 * *"),
        ("@weekly", "0 0 * * 0"),
        ("@daily", "0 0 * * *"),
        ("@midnight", "0 0 * * *"),
        ("@hourly", "0 * * * *"),
        ("0 9 * * 1-5", "0 9 * * 1-5"),
        ("  */5   *  * * *  ", "*/5 * * * *"),
        ("0 0 1,15 * MON", "0 0 1,15 * MON"),
        # robfig's ParseStandard (so the API server) accepts @every; there is no 5-field form of it
        ("@every 5m", "@every 5m"),
        ("@every 1h30m", "@every 1h30m"),
    ],
)
def test_normalise(expr: str, cron: str) -> None:
    assert schedule.normalise(expr) == cron


@pytest.mark.parametrize(
    ("expr", "message"),
    [
        # (croniter's validation rejected "@every 5m"; robfig and the API server accept it, see above)
        ("@reboot", "unknown schedule macro"),
        ("@every 5", "not a valid @every schedule: failed to parse duration @every 5"),
        (" @daily", "a macro must be written alone"),
        ("0 0 * * 7", "not a valid cron expression: end of range"),
        ("", "the schedule is empty"),
        ("0 0 0 * * *", "has 6 fields; a cron schedule has 5"),
        ("* * * *", "has 4 fields"),
        ("TZ=Europe/Berlin 0 9 * * *", "put the time zone in spec.timeZone"),
        ("CRON_TZ=UTC 0 9 * * *", "spec.timeZone"),
        ("61 * * * *", "is not a valid cron expression"),
        ("a b c d e", "is not a valid cron expression"),
        ("0 25 * * *", "not a valid cron"),
    ],
)
def test_normalise_rejects_with_clear_message(expr: str, message: str) -> None:
    with pytest.raises(ScheduleError, match=message.replace("*", r"\*").replace("(", r"\(")):
        schedule.normalise(expr)


def test_schedule_error_is_a_value_error() -> None:
    assert issubclass(ScheduleError, ValueError)


@pytest.mark.parametrize(
    ("every", "cron"),
    [
        ("1m", "* * * * *"),
        ("5m", "*/5 * * * *"),
        ("15m", "*/15 * * * *"),
        ("30m", "*/30 * * * *"),
        ("60m", "0 * * * *"),
        ("1h", "0 * * * *"),
        ("2h", "0 */2 * * *"),
        ("12h", "0 */12 * * *"),
        ("24h", "0 0 * * *"),
        ("1d", "0 0 * * *"),
        ("7d", "0 0 * * 0"),
    ],
)
def test_every_to_cron(every: str, cron: str) -> None:
    assert schedule.every_to_cron(every) == cron
    assert schedule.cron_of(None, every) == cron


@pytest.mark.parametrize("every", ["7m", "90m", "1h30m", "5h", "2d", "25h", "45m"])
def test_every_without_cron_equivalent(every: str) -> None:
    with pytest.raises(ScheduleError, match="no cron equivalent"):
        schedule.every_to_cron(every)


@pytest.mark.parametrize("every", ["30s", "90s", "0m"])
def test_every_must_be_whole_minutes(every: str) -> None:
    with pytest.raises(ScheduleError, match="whole number of minutes"):
        schedule.every_to_cron(every)


def test_cron_of() -> None:
    assert schedule.cron_of("@daily", None) == "0 0 * * *"
    assert schedule.cron_of(None, None) is None


def test_zone() -> None:
    assert str(schedule.zone(NY)) == NY
    with pytest.raises(ScheduleError, match="unknown time zone 'Nowhere/City'"):
        schedule.zone("Nowhere/City")


def test_next_after_is_strictly_after_and_utc() -> None:
    assert schedule.next_after("*/5 * * * *", "UTC", t(2026, 1, 1, 10, 0)) == t(2026, 1, 1, 10, 5)
    assert schedule.next_after("*/5 * * * *", "UTC", t(2026, 1, 1, 10, 2, 30)) == t(2026, 1, 1, 10, 5)
    got = schedule.next_after("0 9 * * *", BERLIN, t(2026, 1, 1, 12))
    assert got == t(2026, 1, 2, 8) and got.tzinfo == dt.UTC


def test_next_after_accepts_other_offsets() -> None:
    after = dt.datetime(2026, 1, 1, 9, 0, tzinfo=dt.timezone(dt.timedelta(hours=-5)))  # 14:00 UTC
    assert schedule.next_after("0 * * * *", "UTC", after) == t(2026, 1, 1, 15)


def test_daily_local_job_across_new_york_spring_forward() -> None:
    # 09:00 EST = 14:00 UTC before 2026-03-08; 09:00 EDT = 13:00 UTC from that day on
    assert schedule.next_after("0 9 * * *", NY, t(2026, 3, 6, 15)) == t(2026, 3, 7, 14)
    assert schedule.next_after("0 9 * * *", NY, t(2026, 3, 7, 15)) == t(2026, 3, 8, 13)
    times = list(schedule.times_between("0 9 * * *", NY, t(2026, 3, 6), t(2026, 3, 10)))
    assert times == [t(2026, 3, 6, 14), t(2026, 3, 7, 14), t(2026, 3, 8, 13), t(2026, 3, 9, 13)]


def test_daily_local_job_across_new_york_fall_back() -> None:
    times = list(schedule.times_between("0 9 * * *", NY, t(2026, 10, 30), t(2026, 11, 3)))
    assert times == [t(2026, 10, 30, 13), t(2026, 10, 31, 13), t(2026, 11, 1, 14), t(2026, 11, 2, 14)]


def test_hourly_across_new_york_fall_back_keeps_one_hour_steps() -> None:
    times = list(schedule.times_between("0 * * * *", NY, t(2026, 11, 1, 4), t(2026, 11, 1, 8)))
    assert times == [t(2026, 11, 1, 5), t(2026, 11, 1, 6), t(2026, 11, 1, 7), t(2026, 11, 1, 8)]


def test_berlin_spring_forward() -> None:
    daily = list(schedule.times_between("0 9 * * *", BERLIN, t(2026, 3, 27), t(2026, 3, 31)))
    assert daily == [t(2026, 3, 27, 8), t(2026, 3, 28, 8), t(2026, 3, 29, 7), t(2026, 3, 30, 7)]
    hourly = list(schedule.times_between("0 * * * *", BERLIN, t(2026, 3, 28, 23), t(2026, 3, 29, 3)))
    assert hourly == [t(2026, 3, 29, 0), t(2026, 3, 29, 1), t(2026, 3, 29, 2), t(2026, 3, 29, 3)]


def test_latest_at_or_before() -> None:
    cron = "0 9 * * *"
    assert schedule.latest_at_or_before(cron, "UTC", t(2026, 1, 2, 9)) == t(2026, 1, 2, 9)  # at counts
    assert schedule.latest_at_or_before(cron, "UTC", t(2026, 1, 2, 8, 59, 59)) == t(2026, 1, 1, 9)
    assert schedule.latest_at_or_before(cron, "UTC", t(2026, 1, 2, 9, 0, 1)) == t(2026, 1, 2, 9)


def test_latest_at_or_before_across_dst() -> None:
    cron = "0 9 * * *"
    assert schedule.latest_at_or_before(cron, NY, t(2026, 3, 9, 13)) == t(2026, 3, 9, 13)
    assert schedule.latest_at_or_before(cron, NY, t(2026, 3, 9, 12, 59)) == t(2026, 3, 8, 13)
    assert schedule.latest_at_or_before(cron, NY, t(2026, 3, 8, 12, 59)) == t(2026, 3, 7, 14)
    assert schedule.latest_at_or_before(cron, NY, t(2026, 11, 2, 14)) == t(2026, 11, 2, 14)
    assert schedule.latest_at_or_before(cron, NY, t(2026, 11, 1, 13, 59)) == t(2026, 10, 31, 13)
    assert schedule.latest_at_or_before(cron, BERLIN, t(2026, 3, 29, 7)) == t(2026, 3, 29, 7)
    assert schedule.latest_at_or_before(cron, BERLIN, t(2026, 3, 29, 6, 59)) == t(2026, 3, 28, 8)


def test_times_between_is_half_open_and_bounded() -> None:
    times = list(schedule.times_between("0 * * * *", "UTC", t(2026, 1, 1, 0), t(2026, 1, 1, 3)))
    assert times == [t(2026, 1, 1, 1), t(2026, 1, 1, 2), t(2026, 1, 1, 3)]  # (start, end]
    assert len(list(schedule.times_between("* * * * *", "UTC", t(2026, 1, 1), t(2026, 2, 1), limit=7))) == 7
    assert list(schedule.times_between("0 0 1 1 *", "UTC", t(2026, 1, 1), t(2026, 6, 1))) == []


@pytest.mark.parametrize(
    ("cron", "tz", "gap"),
    [
        ("0 9 * * 1-5", "UTC", 3 * 86400),
        ("0 9 * * 1-5", NY, 3 * 86400),
        ("*/5 * * * *", "UTC", 300),
        ("0 0 * * 0", BERLIN, 7 * 86400),
    ],
)
def test_max_interval(cron: str, tz: str, gap: float) -> None:
    assert schedule.max_interval(cron, tz, t(2026, 1, 1)) == gap


def test_max_interval_sees_a_dst_day() -> None:
    # New York's fall-back day is 25 hours long, so a daily job's longest gap spanning it is 25 h
    assert schedule.max_interval("0 9 * * *", NY, t(2026, 10, 28), samples=8) == 25 * 3600


def test_describe() -> None:
    assert schedule.describe("0 0 * * 0", None, None) == "0 0 * * 0"
    assert schedule.describe(None, "5m", None) == "every 5m"
    at = dt.datetime(2026, 1, 1, 10, tzinfo=dt.timezone(dt.timedelta(hours=1)))
    assert schedule.describe(None, None, at) == "at 2026-01-01T09:00:00Z"
    assert schedule.describe(None, None, None) == "on demand"


def brute_latest(cron: str, tz: str, at: dt.datetime) -> dt.datetime:
    """The last of times_between (the controller's view) at or before `at`."""
    return list(schedule.times_between(cron, tz, at - dt.timedelta(days=2), at))[-1]


@pytest.mark.parametrize(
    ("cron", "tz", "day"),
    [
        ("0 9 * * *", NY, t(2026, 3, 8)),
        ("0 * * * *", NY, t(2026, 3, 8)),
        ("30 2 * * *", NY, t(2026, 3, 8)),
        ("0 * * * *", BERLIN, t(2026, 3, 29)),
        ("0 9 * * *", NY, t(2026, 11, 1)),
    ],
)
def test_latest_at_or_before_agrees_with_times_between(cron: str, tz: str, day: dt.datetime) -> None:
    for minutes in range(0, 24 * 60, 10):
        at = day + dt.timedelta(minutes=minutes)
        assert schedule.latest_at_or_before(cron, tz, at) == brute_latest(cron, tz, at), at


def test_latest_at_or_before_in_the_repeated_fall_back_hour() -> None:
    # 2026-11-01 New York: 01:00-01:59 happens twice, 05:00-05:59 UTC (EDT) and 06:00-06:59 UTC (EST)
    assert t(2026, 11, 1, 6) in list(schedule.times_between("0 * * * *", NY, t(2026, 11, 1, 4), t(2026, 11, 1, 8)))
    assert schedule.latest_at_or_before("0 * * * *", NY, t(2026, 11, 1, 6, 30)) == t(2026, 11, 1, 6)
    assert schedule.latest_at_or_before("30 1 * * *", NY, t(2026, 11, 1, 6, 0)) == t(2026, 11, 1, 5, 30)
    # 2026-10-25 Berlin: 02:00-02:59 twice, 00:00-00:59 UTC (CEST) and 01:00-01:59 UTC (CET)
    assert schedule.latest_at_or_before("0 * * * *", BERLIN, t(2026, 10, 25, 1, 30)) == t(2026, 10, 25, 1)


def test_latest_at_or_before_never_returns_a_time_after_at() -> None:
    at = dt.datetime(2026, 1, 2, 8, 59, 59, 500000, tzinfo=dt.UTC)
    got = schedule.latest_at_or_before("0 9 * * *", "UTC", at)
    assert got <= at
    assert got == t(2026, 1, 1, 9)
