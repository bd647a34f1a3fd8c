"""Writes of which only the latest matters, made off the path that decides (the gate's notes).

A waiting run's "Waiting: ..." note and a queue's waiting/running counts say what is, not what
happened: when a newer value comes before an older one was written, the older need not be written
at all. The gate used to await them in its pass, beside its admissions: 500 runs arriving at once
meant 500 notes (and 500 events) in the pass that should have admitted the next run, which waited
seconds with its slot free. Here they are queued by key, the latest value wins, at most `limit`
are in flight, and one key is never written twice at once (so the last value sent is the last
value written). A write that fails is logged and dropped; whoever queued it finds out on its next
look (the gate's next pass sees the index still without the note) and queues it again.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
Write = Callable[[], Awaitable[None]]

log = logging.getLogger("nightshift")


class LatestWrites(Generic[K]):
    def __init__(self, limit: int, on_error: Callable[[K], None] | None = None) -> None:
        self.limit = max(1, limit)
        self.on_error = on_error
        self._pending: dict[K, Write] = {}  # insertion order: oldest queued first
        self._inflight: set[K] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._changed = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()

    def put(self, key: K, write: Write) -> None:
        """Queue `write` for `key`, replacing one not yet started."""
        self._pending.pop(key, None)  # a newer value goes to the back, as the newest
        self._pending[key] = write
        self._idle.clear()
        self._changed.set()

    def drop(self, key: K) -> None:
        """Forget a queued write for `key` (the thing it described is gone); one in flight finishes."""
        self._pending.pop(key, None)
        self._settle()

    def __len__(self) -> int:
        return len(self._pending) + len(self._inflight)

    async def idle(self) -> None:
        """Until nothing is queued or in flight (tests, a clean stop)."""
        await self._idle.wait()

    async def run(self) -> None:
        """Forever: start queued writes, `limit` at a time, one per key."""
        while True:
            started = False
            while len(self._inflight) < self.limit:
                key = next((k for k in self._pending if k not in self._inflight), None)
                if key is None:
                    break
                write = self._pending.pop(key)
                self._inflight.add(key)
                task = asyncio.create_task(self._one(key, write))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
                started = True
            if not started:
                self._changed.clear()
                await self._changed.wait()

    async def _one(self, key: K, write: Write) -> None:
        try:
            await write()
        except asyncio.CancelledError:
            raise
        except Exception as e:  # a note that failed is looked at again on the next pass
            log.warning("write for %s failed: %s", key, e)
            if self.on_error is not None:
                self.on_error(key)
        finally:
            self._inflight.discard(key)
            self._settle()
            self._changed.set()

    def _settle(self) -> None:
        if not self._pending and not self._inflight:
            self._idle.set()
