"""Process helpers shared by the test tooling: free loopback ports and children that die with us."""

from __future__ import annotations

import ctypes
import signal
import socket
import threading
from collections.abc import Callable
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
