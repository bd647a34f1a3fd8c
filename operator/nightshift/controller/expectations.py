"""Expectations (Kueue's and the ReplicaSet controller's idea): writes made but not yet seen on the watch.

The indexes lag the API: a Job the gate just admitted still shows as waiting, a Job just deleted
still shows. Each such write is recorded here and cleared when the watch brings the change back,
so a pass neither admits twice nor deletes twice. A time-to-live is only a safety net for a watch
event that never comes (the object changed again, or was deleted by someone else).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable
from typing import Any


class Expectations:
    def __init__(self, *, ttl: float = 120.0, clock: Callable[[], float] = time.monotonic) -> None:
        self._pending: dict[Hashable, tuple[float, Any]] = {}
        self._ttl = ttl
        self._clock = clock

    def expect(self, key: Hashable, value: Any = True) -> None:
        self._pending[key] = (self._clock(), value)

    def pending(self, key: Hashable) -> Any | None:
        """The expected value while the watch has not shown the change, else None."""
        entry = self._pending.get(key)
        if entry is None:
            return None
        if self._clock() - entry[0] > self._ttl:
            del self._pending[key]
            return None
        return entry[1]

    def observed(self, key: Hashable) -> None:
        self._pending.pop(key, None)

    def __len__(self) -> int:
        return len(self._pending)
