"""A small stdlib HTTP client shared by the http and health-check jobs (no extra dependency)."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Response:
    status: int
    body: bytes
    latency_ms: int


def request(
    method: str, url: str, *, headers: dict[str, str] | None = None, body: Any = None, timeout: float = 30.0
) -> Response:
    """Send one request; HTTP error statuses are returned, not raised (the caller decides)."""
    data: bytes | None = None
    hdrs = dict(headers or {})
    if isinstance(body, dict | list):
        data = json.dumps(body).encode()
        hdrs.setdefault("Content-Type", "application/json")
    elif isinstance(body, str):
        data = body.encode()
    hdrs.setdefault("User-Agent", "nightshift-jobs")
    req = urllib.request.Request(url, data=data, headers=hdrs, method=method)
    started = time.monotonic()
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            content = resp.read(64 * 1024)
            status = int(resp.status)
    except urllib.error.HTTPError as exc:
        content = exc.read(64 * 1024) if exc.fp else b""
        status = int(exc.code)
    return Response(status=status, body=content, latency_ms=int((time.monotonic() - started) * 1000))


def expected(status: int, expect: int | list[int] | None) -> bool:
    """No expectation means any 2xx."""
    if expect is None:
        return 200 <= status < 300
    return status in ([expect] if isinstance(expect, int) else expect)


def snippet(body: bytes, limit: int = 300) -> str:
    text = body.decode("utf-8", errors="replace").strip().replace("\n", " ")
    return text if len(text) <= limit else text[:limit] + "…"
