"""Client-side rate limiting of the operator's API requests (QPS and burst, as client-go's).

A token bucket, `rate` tokens a second up to `burst`: each request takes one, and waits (on the event
loop, never blocking it) until its token is due. Requests reserve tokens in the order they ask, so
the wait is fair and one burst of 10,000 first passes cannot starve the gate's admissions for long.
Watches are not limited (they are long-lived, as in client-go). `LimitedKube` puts the bucket in
front of `Kube.request` without touching the client itself.

The gate has a bucket of its own (`gate_lane`): fair FIFO tokens made an admission wait behind every
request reserved before it, and 500 run requests arriving at once reserve about 2,000 (a Job, the
request's status, the run's waiting note and event each), which held admissions back by up to 8 s
at 200 QPS while slots stood free. Its writes are few (bounded by the runs it decides), so its own
budget cannot swamp the API server, and requests from the gate's task (and the tasks it gathers,
which inherit its context) draw from it without passing a client around. Its notes (a waiting run's
reason, a queue's counts) are written by a task started outside the lane: they are many when runs
arrive in bulk, and in the gate's bucket they would queue ahead of the next admission.
"""

from __future__ import annotations

import asyncio
import contextvars
import time
from collections.abc import Callable
from typing import Any

from nightshift.infra.kube import Kube


class TokenBucket:
    """`rate` requests a second on average, `burst` at once; rate <= 0 means no limit."""

    def __init__(self, rate: float, burst: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = rate
        self.burst = max(1, burst)
        self.clock = clock
        self.tokens = float(self.burst)
        self.last = clock()

    def reserve(self) -> float:
        """Take a token; the seconds to wait until it is due (0 when one was there)."""
        if self.rate <= 0:
            return 0.0
        now = self.clock()
        self.tokens = min(float(self.burst), self.tokens + (now - self.last) * self.rate)
        self.last = now
        self.tokens -= 1.0
        return 0.0 if self.tokens >= 0 else -self.tokens / self.rate

    async def acquire(self) -> None:
        delay = self.reserve()
        if delay > 0:
            await asyncio.sleep(delay)


_GATE_LANE: contextvars.ContextVar[bool] = contextvars.ContextVar("nightshift_gate_lane", default=False)


def gate_lane() -> None:
    """From here on, this task's requests (and those of tasks it starts) use the gate's bucket."""
    _GATE_LANE.set(True)


class LimitedKube(Kube):
    """The API client with a token bucket in front of every request but watches; the gate's own lane."""

    limiter: TokenBucket | None = None
    gate_limiter: TokenBucket | None = None

    async def request(self, method: str, path: str, **kwargs: Any) -> Any:
        bucket = self.gate_limiter if _GATE_LANE.get() and self.gate_limiter is not None else self.limiter
        if bucket is not None:
            await bucket.acquire()
        return await super().request(method, path, **kwargs)
