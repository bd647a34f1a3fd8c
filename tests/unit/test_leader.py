"""The leader-election decision: client-go's rules, on our own clock."""

from __future__ import annotations

import datetime as dt

from nightshift.controller.leader import Observed, micro_time, observe, step

ME, OTHER = "me", "other"


def lease(holder: str | None, renewed: str = "t1", duration: int = 15) -> dict[str, object]:
    return {"holderIdentity": holder, "renewTime": renewed, "leaseDurationSeconds": duration}


def test_no_lease_is_created() -> None:
    assert step(None, ME, None, 0.0, 15) == "create"


def test_our_lease_is_renewed() -> None:
    spec = lease(ME)
    assert step(spec, ME, observe(None, spec, 0.0), 100.0, 15) == "renew"


def test_a_released_lease_is_taken_at_once() -> None:
    spec = lease(None)
    assert step(spec, ME, observe(None, spec, 0.0), 0.0, 15) == "acquire"


def test_another_holder_is_followed_until_its_record_stands_still_for_the_duration() -> None:
    spec = lease(OTHER, "t1", duration=10)
    seen = observe(None, spec, 100.0)
    assert step(spec, ME, seen, 109.9, 15) == "follow"
    assert step(spec, ME, seen, 110.0, 15) == "acquire"  # the lease's own duration, not ours


def test_a_renewal_restarts_our_clock() -> None:
    seen = observe(None, lease(OTHER, "t1"), 0.0)
    renewed = lease(OTHER, "t2")
    seen = observe(seen, renewed, 14.0)
    assert seen == Observed(OTHER, "t2", 14.0)
    assert step(renewed, ME, seen, 20.0, 15) == "follow"
    assert observe(seen, renewed, 20.0) is seen  # unchanged record keeps the first sighting


def test_a_just_started_candidate_does_not_take_a_lease_it_has_not_watched() -> None:
    spec = lease(OTHER, "long ago by another clock")
    assert step(spec, ME, observe(None, spec, 1000.0), 1000.0, 15) == "follow"


def test_micro_time_format() -> None:
    when = dt.datetime(2026, 11, 23, 14, 20, 1, 2345, tzinfo=dt.UTC)
    assert micro_time(when) == "2026-11-23T14:20:01.002345Z"
