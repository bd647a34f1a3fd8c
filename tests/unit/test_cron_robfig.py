"""nightshift.core.cron and .schedule against the real robfig/cron v3.0.1 (the CronJob controller's).

tests/unit/data/cron_robfig.json.gz is produced by hack/cron-table (Go, the real library): how
ParseStandard parses or rejects tricky schedules, the chain of SpecSchedule.Next from tens of
thousands of start instants in 12 zones (densely around every DST transition of 2026-2028, and
Sao Paulo's midnight transitions of 2017-2018), and the controller's mostRecentScheduleTime.
Every row is checked here; then a few explicit DST cases spell out what the table shows.
"""

from __future__ import annotations

import datetime as dt
import functools
import gzip
import itertools
import json
import pathlib
from typing import Any

import pytest

from nightshift.core import cron, schedule
from nightshift.core.schedule import ScheduleError
from tests.unit.factories import t

TABLE = pathlib.Path(__file__).parent / "data" / "cron_robfig.json.gz"
NY = "America/New_York"
LORD_HOWE = "Australia/Lord_Howe"
BERLIN = "Europe/Berlin"


@functools.cache
def table() -> dict[str, Any]:
    with gzip.open(TABLE, "rt", encoding="utf-8") as f:
        data: dict[str, Any] = json.load(f)
    return data


def utc(unix: int | None) -> dt.datetime | None:
    return None if unix is None else dt.datetime.fromtimestamp(unix, dt.UTC)


def python_transitions(name: str, first: int, last: int) -> list[list[int]]:
    """[at, offset before, offset after] of each UTC-offset change of `name` in [first, last] (Python's tz data)."""
    z = cron.load_location(name)

    def off(u: int) -> int:
        o = dt.datetime.fromtimestamp(u, z).utcoffset()
        assert o is not None
        return int(o.total_seconds())

    lo = int(dt.datetime(first, 1, 1, tzinfo=dt.UTC).timestamp())
    hi = int(dt.datetime(last + 1, 1, 1, tzinfo=dt.UTC).timestamp())
    out = []
    step = 6 * 3600  # no zone changes its offset twice within 6 hours
    for u in range(lo, hi, step):
        a, b = off(u), off(u + step)
        if a != b:
            left, right = u, u + step  # off(left) == a, off(right) == b: find the first second of b
            while right - left > 1:
                mid = (left + right) // 2
                left, right = (mid, right) if off(mid) == a else (left, mid)
            out.append([right, a, b])
    return out


@functools.cache
def tz_disagreements() -> dict[str, str]:
    """Zones whose offsets differ between this machine's tz database and the one the table was made with."""
    data = table()
    spans = {z: [data["years"]] for z in data["zones"]}
    for z, span in data["historic"].items():
        spans[z].append(span)
    bad = {}
    for z in data["zones"]:
        mine = [tr for first, last in spans[z] for tr in python_transitions(z, first, last)]
        theirs = [[tr["at"], tr["before"], tr["after"]] for tr in data["transitions"][z] or []]
        if mine != theirs:
            bad[z] = f"{z}: Go saw transitions {theirs}, Python's zoneinfo sees {mine}"
    return bad


def test_tz_database_agrees_with_the_tables() -> None:
    bad = tz_disagreements()
    assert not bad, (
        "this machine's tz database disagrees with the one tests/unit/data/cron_robfig.json.gz was generated "
        "with (regenerate it with hack/cron-table, or install matching tz data); rows of these zones are not "
        "checked:\n" + "\n".join(bad.values())
    )


def test_table_is_big_enough() -> None:
    data = table()
    assert data["robfig_version"] == "v3.0.1"
    assert len(data["schedules"]) >= 40 and len(data["zones"]) >= 10
    assert len(data["rows"]) > 40000 and len(data["most_recent"]) > 5000


def test_parse_standard_matches_robfig() -> None:
    wrong = []
    for case in table()["parse"]:
        spec = case["spec"]
        try:
            got = cron.parse_standard(spec)
        except cron.CronError as e:
            if str(e) != case["error"]:
                wrong.append(f"{spec!r}: we say {e}, robfig says {case['error']}")
            continue
        if case["error"] is not None:
            wrong.append(f"{spec!r}: we accept it, robfig says {case['error']}")
        elif isinstance(got, cron.ConstantDelaySchedule):
            if got.delay_ns != case.get("delay_ns"):
                wrong.append(f"{spec!r}: delay {got.delay_ns}, robfig {case.get('delay_ns')}")
        elif list(got.bits()) != case.get("bits"):
            wrong.append(f"{spec!r}: bits {got.bits()}, robfig {case.get('bits')}")
        elif case.get("zone") is not None and str(got.location) != case["zone"]:
            wrong.append(f"{spec!r}: zone {got.location}, robfig {case['zone']}")
    assert not wrong, "\n".join(wrong)


def test_normalise_accepts_what_the_api_server_accepts() -> None:
    wrong = []
    for case in table()["parse"]:
        spec, k8s_error = case["spec"], case["kubernetes_error"]
        try:
            text = schedule.normalise(spec)
        except ScheduleError as e:
            if k8s_error is None:
                wrong.append(f"{spec!r}: we reject it ({e}), the API server accepts it")
            continue
        if k8s_error is not None:
            wrong.append(f"{spec!r}: we accept it, the API server says {k8s_error}")
            continue
        # what we write into the CronJob must be the same schedule for robfig
        before, after = cron.parse_standard(spec), cron.parse_standard(text)
        if before != after:
            wrong.append(f"{spec!r}: normalised to {text!r}, which robfig parses differently")
    assert not wrong, "\n".join(wrong)


def test_next_chains_match_robfig() -> None:
    """Every row: schedule.next_after (robfig's Next in the zone) from the start, three times."""
    data = table()
    skip = tz_disagreements()
    wrong = []
    checked = 0
    for si, zi, start_ns, *want in data["rows"]:
        spec, tz = data["schedules"][si], data["zones"][zi]
        if tz in skip:
            continue
        at = dt.datetime.fromtimestamp(start_ns // 10**9, dt.UTC) + dt.timedelta(microseconds=start_ns % 10**9 // 1000)
        got: list[int | None] = []
        for _ in want:
            try:
                at = schedule.next_after(spec, tz, at)
            except ScheduleError:
                got.append(None)
                break
            got.append(int(at.timestamp()))
        checked += 1
        if got != want:
            wrong.append(f"{spec!r} in {tz} after {start_ns / 1e9:.1f}: we say {got}, robfig says {want}")
    assert checked > 40000 or skip
    assert not wrong, f"{len(wrong)} of {checked} rows differ:\n" + "\n".join(wrong[:25])


def test_most_recent_schedule_time_matches_the_controller() -> None:
    data = table()
    skip = tz_disagreements()
    wrong = []
    for si, zi, creation, last, sds, now, earliest, recent, missed, error in data["most_recent"]:
        spec, tz = data["schedules"][si], data["zones"][zi]
        if tz in skip:
            continue
        got = cron.most_recent_schedule_time(
            schedule.parse(spec, tz),
            dt.datetime.fromtimestamp(now, dt.UTC),
            dt.datetime.fromtimestamp(creation, dt.UTC),
            utc(last),
            sds,
        )
        want = (utc(earliest), utc(recent), missed, error)
        mine = (got.earliest, got.most_recent, got.missed.value, got.error)
        if mine != want:
            wrong.append(f"{spec!r} in {tz}, created {creation}, last {last}, sds {sds}, now {now}: {mine} != {want}")
    assert not wrong, f"{len(wrong)} cases differ:\n" + "\n".join(wrong[:25])


SETTLED = [
    "@daily", "@hourly", "@weekly", "@monthly", "30 2 * * *", "30 1 * * *", "0 2 * * *", "0 0 * * *",
    "0 3 * * 0", "15 */4 * * 1-5", "59 1 * * *", "0,30 1-3 * * *", "45 23 * * *", "30 0 * * *",
]  # fmt: skip


def test_latest_at_or_before_follows_the_chain_from_before_the_change() -> None:
    """Around every DST change in the table: latest_at_or_before at each time of the Next chain that
    comes from well before the change (the chain a running CronJob follows, Next from its last
    schedule time) is that time, and a second earlier it is the time before.

    robfig's chains are not all the same: one started just after a change can hold a time the
    settled chain skips (see test_a_settled_chain_can_skip_a_run), so the table's rows, which start
    anywhere, are not the reference here; Next itself is, and it is checked against the table above.
    """
    data = table()
    skip = tz_disagreements()
    wrong = []
    checked = 0
    for tz, transitions in data["transitions"].items():
        if tz in skip or not transitions:
            continue
        for tr in transitions[:4]:  # 2026 and 2027 (and Sao Paulo 2017): both kinds of change, in time
            change = utc(tr["at"])
            assert change is not None
            for spec in SETTLED:
                s = schedule.parse(spec, tz)
                long = spec in ("@weekly", "@monthly", "0 3 * * 0")
                c = s.next(change - dt.timedelta(days=40 if long else 3))
                chain = []
                while c is not None and c < change + dt.timedelta(days=40 if long else 2):
                    chain.append(c.astimezone(dt.UTC))
                    c = s.next(c)
                for prev, cur in itertools.pairwise(chain):
                    if cur < change - dt.timedelta(days=1):
                        continue
                    checked += 1
                    for at, want in ((cur, cur), (cur - dt.timedelta(seconds=1), prev)):
                        got = schedule.latest_at_or_before(spec, tz, at)
                        if got != want:
                            wrong.append(f"{spec!r} in {tz} at {at}: {got} != {want}")
    assert checked > 1000
    assert not wrong, f"{len(wrong)} differ:\n" + "\n".join(wrong[:25])


# --- explicit cases: what the table shows, in words ----------------------------------------------


def test_a_wall_time_that_does_not_exist_moves_to_the_next_day() -> None:
    # 2027-03-14 New York springs forward at 02:00 EST (07:00Z): 02:30 does not exist. robfig's hour
    # loop adds absolute hours (01:00 EST + 1 h = 03:00 EDT) and never sees hour 2, so the run is
    # the next day's 02:30 EDT; croniter said 03:00 EDT (07:00Z) that day.
    assert schedule.next_after("30 2 * * *", NY, t(2027, 3, 14, 5)) == t(2027, 3, 15, 6, 30)
    runs = list(schedule.times_between("30 2 * * *", NY, t(2027, 3, 12), t(2027, 3, 16)))
    assert runs == [t(2027, 3, 12, 7, 30), t(2027, 3, 13, 7, 30), t(2027, 3, 15, 6, 30)]


def test_the_repeated_fall_back_hour_runs_twice() -> None:
    # 2027-11-07 New York: 01:00-01:59 happens in EDT (05:xxZ) and again in EST (06:xxZ)
    runs = list(schedule.times_between("30 1 * * *", NY, t(2027, 11, 6, 12), t(2027, 11, 8, 12)))
    assert runs == [t(2027, 11, 7, 5, 30), t(2027, 11, 7, 6, 30), t(2027, 11, 8, 6, 30)]
    hourly = list(schedule.times_between("0 * * * *", NY, t(2027, 11, 7, 4), t(2027, 11, 7, 8)))
    assert hourly == [t(2027, 11, 7, 5), t(2027, 11, 7, 6), t(2027, 11, 7, 7), t(2027, 11, 7, 8)]


def test_lord_howe_half_hour_spring_forward() -> None:
    # 2026-10-04 Lord Howe: 02:00 +10:30 becomes 02:30 +11:00 (15:30Z). The hour loop lands on
    # 02:30, so "30 2" runs then, while "0 2" and "15 2" find no minute 0/15 in hour 2 and skip the day.
    assert schedule.next_after("30 2 * * *", LORD_HOWE, t(2026, 10, 3, 12)) == t(2026, 10, 3, 15, 30)
    assert schedule.next_after("0 2 * * *", LORD_HOWE, t(2026, 10, 3, 12)) == t(2026, 10, 4, 15)
    assert schedule.next_after("15 2 * * *", LORD_HOWE, t(2026, 10, 3, 12)) == t(2026, 10, 4, 15, 15)
    hourly = list(schedule.times_between("0 * * * *", LORD_HOWE, t(2026, 10, 3, 13), t(2026, 10, 3, 17)))
    assert hourly == [t(2026, 10, 3, 13, 30), t(2026, 10, 3, 14, 30), t(2026, 10, 3, 16), t(2026, 10, 3, 17)]


def test_lord_howe_half_hour_fall_back() -> None:
    # 2026-04-05 Lord Howe: 02:00 +11:00 becomes 01:30 +10:30 (15:00Z); 01:30-01:59 happens twice
    runs = list(schedule.times_between("45 1 * * *", LORD_HOWE, t(2026, 4, 4, 12), t(2026, 4, 5, 16)))
    assert runs == [t(2026, 4, 4, 14, 45), t(2026, 4, 4, 15, 15), t(2026, 4, 5, 15, 15)]
    # but "0 * * * *" has no second 01:00 (the repeat starts at 01:30): 14:00Z then 15:30Z (02:00)
    hourly = list(schedule.times_between("0 * * * *", LORD_HOWE, t(2026, 4, 4, 13, 30), t(2026, 4, 4, 17)))
    assert hourly == [t(2026, 4, 4, 14), t(2026, 4, 4, 15, 30), t(2026, 4, 4, 16, 30)]


def test_a_midnight_that_does_not_exist_skips_the_day() -> None:
    # 2026-09-06 Santiago: 00:00 -04 becomes 01:00 -03. robfig's day loop nudges the 01:00 it gets
    # back an hour, to 23:00 the day before, and the daily midnight job skips the 6th.
    runs = list(schedule.times_between("0 0 * * *", "America/Santiago", t(2026, 9, 4), t(2026, 9, 8)))
    assert runs == [t(2026, 9, 4, 4), t(2026, 9, 5, 4), t(2026, 9, 7, 3)]


def test_a_settled_chain_can_skip_a_run() -> None:
    # Lord Howe, 2026-10-04 00:00 +10:30 (03 13:30Z) runs; at 02:00 clocks go to 02:30, and
    # robfig's walk from that run keeps the :30 phase (hours are absolute), wraps into the 5th at
    # 00:30 and finds no minute 0 in hour 0 any more: the 5th's midnight is skipped. A chain that
    # starts after the change (a CronJob created then) does run on the 5th.
    after_run = list(schedule.times_between("@daily", LORD_HOWE, t(2026, 10, 3, 13, 30), t(2026, 10, 6)))
    assert after_run == [t(2026, 10, 5, 13)]
    assert schedule.next_after("@daily", LORD_HOWE, t(2026, 10, 3, 16)) == t(2026, 10, 4, 13)
    assert schedule.latest_at_or_before("@daily", LORD_HOWE, t(2026, 10, 5, 12)) == t(2026, 10, 3, 13, 30)
    # the same phase shift costs a @monthly job November 2028 (the change is on 1 October)
    monthly = list(schedule.times_between("@monthly", LORD_HOWE, t(2028, 9, 30, 13, 30), t(2028, 12, 31)))
    assert monthly == [t(2028, 11, 30, 13)]


def test_latest_at_or_before_on_dst_days() -> None:
    cron_ = "30 2 * * *"
    assert schedule.latest_at_or_before(cron_, NY, t(2027, 3, 15, 6, 29)) == t(2027, 3, 13, 7, 30)
    assert schedule.latest_at_or_before(cron_, NY, t(2027, 3, 15, 6, 30)) == t(2027, 3, 15, 6, 30)
    assert schedule.latest_at_or_before("30 1 * * *", NY, t(2027, 11, 7, 6, 29)) == t(2027, 11, 7, 5, 30)
    assert schedule.latest_at_or_before("30 1 * * *", NY, t(2027, 11, 7, 6, 30)) == t(2027, 11, 7, 6, 30)
    assert schedule.latest_at_or_before("0 2 * * *", LORD_HOWE, t(2026, 10, 4, 14)) == t(2026, 10, 2, 15, 30)


def test_missed_between_on_dst_days() -> None:
    # Berlin 2026-03-29: 02:30 does not exist, so no run is missed that day; 2026-10-25: 02:30 twice
    spring = schedule.missed_between("30 2 * * *", BERLIN, t(2026, 3, 27, 1, 30), t(2026, 3, 31, 0, 30))
    assert spring == [t(2026, 3, 28, 1, 30), t(2026, 3, 30, 0, 30)]
    autumn = schedule.missed_between("30 2 * * *", BERLIN, t(2026, 10, 24, 0, 30), t(2026, 10, 26, 1, 30))
    assert autumn == [t(2026, 10, 25, 0, 30), t(2026, 10, 25, 1, 30)]


def test_most_recent_schedule_time_across_spring_forward() -> None:
    s = schedule.parse("30 2 * * *", NY)
    r = cron.most_recent_schedule_time(s, now=t(2027, 3, 15, 12), creation=t(2027, 3, 10))
    assert r.most_recent == t(2027, 3, 15, 6, 30) and r.missed is cron.Missed.FEW
    r = cron.most_recent_schedule_time(s, now=t(2027, 3, 14, 12), creation=t(2027, 3, 13, 8))
    assert r.most_recent is None and r.missed is cron.Missed.NONE  # nothing on the 14th
    never = cron.most_recent_schedule_time(
        schedule.parse("0 0 31 2 *", "UTC"), now=t(2027, 1, 1), creation=t(2026, 1, 1)
    )
    assert never.error == "time difference between two schedules is less than 1 second"


def test_seven_is_not_sunday_for_robfig() -> None:
    with pytest.raises(ScheduleError, match=r"end of range \(7\) above maximum \(6\)"):
        schedule.normalise("0 0 * * 7")


def test_dom_and_dow_or_unless_one_is_a_star() -> None:
    # "0 0 1-7 * 1": the 1st-7th OR any Monday (neither field is a star)
    after = t(2027, 2, 7)  # a Sunday
    assert schedule.next_after("0 0 1-7 * 1", "UTC", after) == t(2027, 2, 8)  # Monday the 8th
    assert schedule.next_after("0 0 1-7 * 1", "UTC", t(2027, 2, 9)) == t(2027, 2, 15)
    # "*/2" is not a star (step > 1), so "0 0 */2 * 1" is odd days OR Mondays
    assert schedule.next_after("0 0 */2 * 1", "UTC", t(2027, 2, 1, 1)) == t(2027, 2, 3)
    # "?" is a star: "0 0 ? * MON" is Mondays only
    assert schedule.next_after("0 0 ? * MON", "UTC", t(2027, 2, 2)) == t(2027, 2, 8)


def test_every_descriptor() -> None:
    assert schedule.normalise("@every 1h30m") == "@every 1h30m"
    assert schedule.next_after("@every 1h30m", NY, t(2027, 3, 14, 5, 0, 0)) == t(2027, 3, 14, 6, 30)
    with pytest.raises(ScheduleError, match="no fixed times"):
        schedule.latest_at_or_before("@every 5m", "UTC", t(2027, 1, 1))
