"""The work queue: one pass per key at a time, nothing lost, requeue-after and backoff on a fake clock."""

from __future__ import annotations

import asyncio

from nightshift.controller.expectations import Expectations
from nightshift.controller.workqueue import WorkQueue


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_key_added_many_times_is_queued_once() -> None:
    async def go() -> list[str]:
        q: WorkQueue[str] = WorkQueue()
        for _ in range(5):
            q.add("a")
        q.add("b")
        return [await q.get(), await q.get(), str(len(q))]

    assert asyncio.run(go()) == ["a", "b", "0"]


def test_a_key_added_while_processing_comes_back_after_done_never_in_parallel() -> None:
    async def go() -> list[str]:
        q: WorkQueue[str] = WorkQueue()
        q.add("a")
        key = await q.get()
        q.add("a")  # an event while the pass runs
        q.add("a")
        assert len(q) == 0  # not handed to a second worker meanwhile
        q.done(key)
        again = await q.get()
        q.done(again)
        return [key, again, str(len(q))]

    assert asyncio.run(go()) == ["a", "a", "0"]


def test_add_after_releases_on_time_and_keeps_the_earliest() -> None:
    async def go() -> None:
        clock = Clock()
        q: WorkQueue[str] = WorkQueue(clock=clock)
        q.add_after("a", 10)
        q.add_after("a", 30)  # later: the earlier look stands
        assert q.pop_due() == 10
        clock.now += 9.5
        assert q.pop_due() == 0.5
        assert len(q) == 0
        clock.now += 1
        assert q.pop_due() is None
        assert await q.get() == "a"
        q.add_after("b", 30)
        q.add_after("b", 5)  # earlier wins
        clock.now += 5
        q.pop_due()
        assert len(q) == 1

    asyncio.run(go())


def test_rate_limited_backs_off_exponentially_until_forgotten() -> None:
    async def go() -> list[float]:
        q: WorkQueue[str] = WorkQueue(base_delay=0.5, max_delay=4, clock=Clock())
        delays = [q.add_rate_limited("a") for _ in range(5)]
        q.forget("a")
        delays.append(q.add_rate_limited("a"))
        return delays

    assert asyncio.run(go()) == [0.5, 1, 2, 4, 4, 0.5]


def test_discard_drops_a_planned_look() -> None:
    async def go() -> int:
        clock = Clock()
        q: WorkQueue[str] = WorkQueue(clock=clock)
        q.add_after("a", 1)
        q.discard("a")
        clock.now += 2
        q.pop_due()
        return len(q)

    assert asyncio.run(go()) == 0


def test_expectations_clear_on_observation_and_expire_as_a_safety_net() -> None:
    clock = Clock()
    e = Expectations(ttl=60, clock=clock)
    e.expect(("admit", "ns", "j"), ("q", True))
    assert e.pending(("admit", "ns", "j")) == ("q", True)
    e.observed(("admit", "ns", "j"))
    assert e.pending(("admit", "ns", "j")) is None
    e.expect("k")
    clock.now += 61
    assert e.pending("k") is None
