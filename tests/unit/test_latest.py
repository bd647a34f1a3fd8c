"""controller.latest: writes of which only the latest matters, off the gate's pass (no cluster)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from nightshift.controller.latest import LatestWrites


def test_the_latest_value_wins_and_one_key_is_never_written_twice_at_once() -> None:
    written: list[tuple[str, int]] = []
    in_flight: set[str] = set()
    doubled: list[str] = []
    gates: dict[str, asyncio.Event] = {}

    def write(key: str, value: int) -> Callable[[], Awaitable[None]]:
        async def go() -> None:
            if key in in_flight:
                doubled.append(key)
            in_flight.add(key)
            await gates.setdefault(key, asyncio.Event()).wait()
            in_flight.discard(key)
            written.append((key, value))

        return go

    async def main() -> None:
        w: LatestWrites[str] = LatestWrites(limit=2)
        task = asyncio.create_task(w.run())
        w.put("a", write("a", 1))
        await asyncio.sleep(0)
        w.put("a", write("a", 2))  # while 1 is in flight: waits for it
        w.put("a", write("a", 3))  # replaces 2, never written
        w.put("b", write("b", 1))
        w.put("c", write("c", 1))
        w.drop("c")  # the thing it described went
        await asyncio.sleep(0.01)
        assert in_flight == {"a", "b"}  # the limit, one per key
        for key in ("a", "b"):
            gates[key].set()
        await asyncio.sleep(0.01)
        gates["a"] = asyncio.Event()
        gates["a"].set()
        await asyncio.wait_for(w.idle(), 1)
        task.cancel()

    asyncio.run(main())
    assert sorted(written) == [("a", 1), ("a", 3), ("b", 1)]
    assert written.index(("a", 1)) < written.index(("a", 3))
    assert doubled == []


def test_a_failed_write_is_reported_and_the_rest_go_on() -> None:
    failed: list[str] = []
    done: list[str] = []

    async def boom() -> None:
        raise RuntimeError("API down")

    async def ok() -> None:
        done.append("b")

    async def main() -> None:
        w: LatestWrites[str] = LatestWrites(limit=1, on_error=failed.append)
        task = asyncio.create_task(w.run())
        w.put("a", boom)
        w.put("b", ok)
        await asyncio.wait_for(w.idle(), 1)
        task.cancel()
        assert len(w) == 0

    asyncio.run(main())
    assert failed == ["a"] and done == ["b"]
