"""Client-side rate limiting of the operator's API requests (QPS and burst, as client-go's).

A token bucket, `rate` tokens a second up to `burst`: each request takes one, and waits (on the event
loop, never blocking it) until its token is due. Requests reserve tokens in the order they ask, so
the wait is fair and one burst of 10,000 first passes cannot starve the gate's admissions for long.
Watches are not limited (they are long-lived, as in client-go). `LimitedKube` puts the bucket in
front of `Kube.request` without touching the client itself.
"""

from __future__ import annotations

import asyncio
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


class LimitedKube(Kube):
    """The API client with a token bucket in front of every request but watches."""

    limiter: TokenBucket | None = None

    async def request(self, method: str, path: str, **kwargs: Any) -> Any:
        if self.limiter is not None:
            await self.limiter.acquire()
        return await super().request(method, path, **kwargs)
