"""Give freed heap back to the system: glibc's malloc_trim after the bursts an operator absorbs.

Listing 50,000 Jobs parses pages of JSON that are freed a moment later, and a burst of watch events
does the same; glibc keeps the freed memory in its arenas, so the process's RSS stays at the burst's
high-water mark although Python holds a fraction of it. `malloc_trim(0)` returns free pages to the
system. It is called once the informers have listed and then periodically, costs a few milliseconds
at these sizes, and is a no-op where libc is not glibc.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import logging
import time
from collections.abc import Callable

log = logging.getLogger("nightshift")


def _load() -> Callable[[int], int] | None:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        fn: Callable[[int], int] = libc.malloc_trim
        return fn
    except (OSError, AttributeError):
        return None


_TRIM = _load()


def trim() -> float:
    """Return free heap to the system; the seconds it took (0 where unsupported)."""
    if _TRIM is None:
        return 0.0
    t0 = time.perf_counter()
    _TRIM(0)
    return time.perf_counter() - t0


async def trim_every(seconds: float) -> None:
    while True:
        await asyncio.sleep(seconds)
        took = trim()
        if took > 0.05:
            log.debug("malloc_trim took %.0f ms", took * 1000)
