"""Process helpers shared by the test tooling: free loopback ports and children that die with us."""

from __future__ import annotations

import ctypes
import signal
import socket


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def die_with_parent() -> None:
    """In the child: SIGKILL when the parent dies, so an interrupted or killed run leaves nothing behind."""
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
