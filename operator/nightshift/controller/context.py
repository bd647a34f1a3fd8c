"""What the operator's modules share at run time: settings, the API client, the wake-up, events.

Kept in one small module so handlers, run lifecycle and the gate need no globals of each other.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time

from nightshift.core import render
from nightshift.infra.history import HistoryWriter
from nightshift.infra.kube import EVENTS, ApiError, Kube, event_body
from nightshift.settings import Settings

log = logging.getLogger("nightshift")
SETTINGS = Settings()
WAKE = asyncio.Event()  # set when the gate should look again (a Job changed, a run was created)
LEADING = asyncio.Event()  # set while this replica holds the lease (always, without leader election)
STARTED = time.time()
_kube: Kube | None = None
_history: HistoryWriter | None = None


def kube() -> Kube:
    global _kube
    if _kube is None:
        _kube = Kube.from_env()
    return _kube


async def close() -> None:
    if _kube is not None:
        await _kube.close()


def history() -> HistoryWriter | None:
    return _history


def start_history(dsn: str, retention_days: int) -> None:
    global _history
    _history = HistoryWriter(dsn, retention_days=retention_days)
    _history.start()


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def epoch(value: str | None) -> float | None:
    if not value:
        return None
    return dt.datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


async def event(owner: render.Owner, type_: str, reason: str, message: str) -> None:
    involved = {
        "apiVersion": owner.api_version,
        "kind": owner.kind,
        "name": owner.name,
        "namespace": owner.namespace,
        "uid": owner.uid,
    }
    try:
        await kube().create(EVENTS, event_body(involved, type_, reason, message))
    except ApiError as e:
        log.warning("event %s on %s/%s not posted: %s", reason, owner.namespace, owner.name, e)
