"""Process helpers shared by the test tooling: free loopback ports, children that die with us, readiness."""

from __future__ import annotations

import ctypes
import signal
import socket
import ssl
import threading
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from types import FrameType


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def die_with_parent() -> None:
    """In the child: SIGKILL when the parent dies, so an interrupted or killed run leaves nothing behind."""
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def stop_on_signals() -> Callable[[], bool]:
    """Handle SIGINT and SIGTERM by asking the main loop to stop; returns `stopped()`."""
    flag = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        flag.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    return flag.is_set


def wait_http_ok(
    url: str,
    *,
    alive: Callable[[], None],
    timeout: float,
    what: str,
    log: Path,
    context: ssl.SSLContext | None = None,
    interval: float = 0.3,
) -> None:
    """Poll `url` until it answers 200; `alive()` raises as soon as the process behind it has exited."""
    deadline = time.monotonic() + timeout
    while True:
        alive()
        try:
            with urllib.request.urlopen(url, context=context, timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not ready after {timeout}s; see {log}")
        time.sleep(interval)
