"""Event coalescing in handlers.reconcile: one pass per burst, never a lost one."""

from __future__ import annotations

import asyncio

import pytest

from nightshift.controller import context, handlers


@pytest.fixture
def passes(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, bool]]:
    """Record each pass instead of running it; a pass takes one loop turn, as an API call would."""
    seen: list[tuple[str, bool]] = []

    async def fake_pass(ns: str, name: str, may_be_echo: bool) -> None:
        seen.append((name, may_be_echo))
        await asyncio.sleep(0.01)

    monkeypatch.setattr(handlers, "_pass", fake_pass)
    context.LEADING.set()  # no leader election: this process leads
    monkeypatch.setattr(handlers, "_locks", {})  # locks belong to one event loop; each test runs its own
    return seen


def test_a_burst_while_a_pass_runs_gives_one_more_pass(passes: list[tuple[str, bool]]) -> None:
    async def burst() -> None:
        first = asyncio.ensure_future(handlers.reconcile("ns", "a"))
        await asyncio.sleep(0)  # the first pass holds the lock now
        await asyncio.gather(first, *(handlers.reconcile("ns", "a") for _ in range(5)))

    asyncio.run(burst())
    assert passes == [("a", False), ("a", False)]
    assert not handlers._queued


def test_other_jobs_do_not_coalesce(passes: list[tuple[str, bool]]) -> None:
    async def two() -> None:
        await asyncio.gather(handlers.reconcile("ns", "a"), handlers.reconcile("ns", "b"))

    asyncio.run(two())
    assert sorted(passes) == [("a", False), ("b", False)]


def test_a_queued_echo_check_joined_by_a_real_event_runs_in_full(passes: list[tuple[str, bool]]) -> None:
    async def mixed() -> None:
        first = asyncio.ensure_future(handlers.reconcile("ns", "a"))
        await asyncio.sleep(0)
        echo = asyncio.ensure_future(handlers.reconcile("ns", "a", unless_echo=True))
        await asyncio.sleep(0)
        await asyncio.gather(first, echo, handlers.reconcile("ns", "a"))

    asyncio.run(mixed())
    assert passes == [("a", False), ("a", False)]


def test_an_echo_alone_may_be_skipped(passes: list[tuple[str, bool]]) -> None:
    async def echo() -> None:
        await asyncio.gather(
            handlers.reconcile("ns", "a", unless_echo=True), handlers.reconcile("ns", "a", unless_echo=True)
        )

    asyncio.run(echo())
    assert passes == [("a", True), ("a", True)]  # the second waited for the lock, so it was not merged away


def test_cancelled_while_waiting_leaves_no_mark(passes: list[tuple[str, bool]]) -> None:
    async def cancel() -> None:
        first = asyncio.ensure_future(handlers.reconcile("ns", "a"))
        await asyncio.sleep(0)
        waiting = asyncio.ensure_future(handlers.reconcile("ns", "a"))
        await asyncio.sleep(0)
        waiting.cancel()
        await asyncio.gather(first, waiting, return_exceptions=True)
        assert not handlers._queued
        await handlers.reconcile("ns", "a")  # a later event still gets its pass

    asyncio.run(cancel())
    assert passes == [("a", False), ("a", False)]
