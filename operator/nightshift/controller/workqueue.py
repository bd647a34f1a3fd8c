"""A work queue in client-go's shape: per-key de-duplication, one worker per key, requeue-after, backoff.

Watch events only enqueue keys; workers take them. A key added while it is queued is not queued
twice; a key added while a worker holds it is queued again once that worker is done, so no change is
lost and no two passes of one key ever run at once (no per-key locks needed). `add_after` serves the
plan's and the gate's "look again at" times; `add_rate_limited` backs off exponentially after errors
until `forget`. Every timer task is kept referenced, so none is garbage-collected mid-flight.
"""

from __future__ import annotations

import asyncio
import collections
import heapq
import itertools
import time
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)


class WorkQueue(Generic[K]):
    def __init__(
        self,
        *,
        base_delay: float = 0.5,
        max_delay: float = 300.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._queue: collections.deque[K] = collections.deque()
        self._dirty: set[K] = set()
        self._processing: set[K] = set()
        self._failures: dict[K, int] = {}
        self._delayed: list[tuple[float, int, K]] = []
        self._delayed_at: dict[K, float] = {}
        self._seq = itertools.count()
        self._ready = asyncio.Event()
        self._timer = asyncio.Event()
        self._base = base_delay
        self._max = max_delay
        self._clock = clock
        self._tasks: set[asyncio.Task[None]] = set()

    def __len__(self) -> int:
        return len(self._queue)

    def add(self, key: K) -> None:
        if key in self._dirty:
            return
        self._dirty.add(key)
        if key in self._processing:  # queued again when its worker is done
            return
        self._queue.append(key)
        self._ready.set()

    def add_after(self, key: K, delay: float) -> None:
        if delay <= 0:
            self.add(key)
            return
        when = self._clock() + delay
        if self._delayed_at.get(key, float("inf")) <= when:
            return  # an earlier look is already planned
        self._delayed_at[key] = when
        heapq.heappush(self._delayed, (when, next(self._seq), key))
        self._timer.set()

    def add_rate_limited(self, key: K) -> float:
        n = self._failures.get(key, 0)
        self._failures[key] = n + 1
        delay: float = min(self._base * 2.0**n, self._max)
        self.add_after(key, delay)
        return delay

    def forget(self, key: K) -> None:
        self._failures.pop(key, None)

    async def get(self) -> K:
        while not self._queue:
            self._ready.clear()
            await self._ready.wait()
        key = self._queue.popleft()
        self._dirty.discard(key)
        self._processing.add(key)
        return key

    def done(self, key: K) -> None:
        self._processing.discard(key)
        if key in self._dirty:
            self._queue.append(key)
            self._ready.set()

    def discard(self, key: K) -> None:
        """A deleted object: drop its backoff and any planned look (a queued pass finds nothing and ends)."""
        self._failures.pop(key, None)
        self._delayed_at.pop(key, None)

    def pop_due(self) -> float | None:
        """Move due delayed keys into the queue; the seconds until the next one, or None."""
        now = self._clock()
        while self._delayed:
            when, _, key = self._delayed[0]
            if self._delayed_at.get(key) != when:  # superseded by an earlier look, or discarded
                heapq.heappop(self._delayed)
                continue
            if when > now:
                return when - now
            heapq.heappop(self._delayed)
            del self._delayed_at[key]
            self.add(key)
        return None

    async def run_timer(self) -> None:
        """The one task that releases delayed keys on time."""
        while True:
            wait = self.pop_due()
            self._timer.clear()
            try:
                await asyncio.wait_for(self._timer.wait(), timeout=wait)
            except TimeoutError:
                pass

    async def shutdown(self) -> None:
        """Cancel the spawned tasks and wait until they end: kopf gives tasks still running at exit
        5 s before it cancels them itself, so every stop (and every restart) took 5 s longer."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def spawn(self, coro: asyncio.Future[None] | asyncio.Task[None] | object) -> None:
        """Keep a background task referenced until it ends (ruff RUF006)."""
        task: asyncio.Task[None] = asyncio.ensure_future(coro)  # type: ignore[arg-type]
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
