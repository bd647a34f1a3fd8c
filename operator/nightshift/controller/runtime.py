"""The Runtime: what the controller's parts share, built once at start-up and passed to each of them.

No module-level mutable state: settings, the API client, the clock, the history writer, the event
recorder, leadership, the work queue, the indexes, expectations and the memory of our own status
writes all live here, so a test can build a Runtime with a fake clock and a second operator in the
same process would not share anything by accident.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from nightshift.api import names
from nightshift.controller.expectations import Expectations
from nightshift.controller.indexes import BgjSeen, Indexes, canonical
from nightshift.controller.workqueue import WorkQueue
from nightshift.core import render
from nightshift.infra.kube import EVENTS, ApiError, Kube, event_body
from nightshift.infra.ratelimit import LimitedKube, TokenBucket
from nightshift.settings import Settings

if TYPE_CHECKING:  # psycopg (with its own libpq and OpenSSL, 11 MiB) loads only when history is on
    from nightshift.infra.history import HistoryWriter

log = logging.getLogger("nightshift")
Key = tuple[str, str]


def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def digest(data: bytes) -> str:
    """Of a status's canonical JSON (equal statuses, equal digests)."""
    return hashlib.blake2b(data, digest_size=16).hexdigest()


@dataclass
class StatusMemory:
    """The status this operator last wrote per job, and the digests of its recent writes.

    Only the operator writes status, and a watch event may carry an object older than our last
    status patch (our spec patch on quarantine lands first): transitions compare with what we wrote,
    never with the watched object. The digests recognise the watch echoing our own writes, which
    then start no pass.
    """

    written: dict[Key, tuple[str, bytes]] = field(default_factory=dict)  # (uid, canonical JSON)
    inputs: dict[Key, tuple[str, Any, Any]] = field(default_factory=dict)  # (uid, generation, annotations) read
    wrote: dict[Key, tuple[str, ...]] = field(default_factory=dict)  # the last 4 (a deque per job was 600 bytes)

    def last(self, key: Key, entry: BgjSeen) -> dict[str, Any]:
        """What we last wrote for this object, else what the watch shows."""
        mine = self.written.get(key)
        if mine is not None and mine[0] == entry.uid:
            value: dict[str, Any] = json.loads(mine[1])
            return value
        return entry.status

    def remember(self, key: Key, uid: str, status: dict[str, Any] | bytes, *, sent: bool) -> bytes:
        data = status if isinstance(status, bytes) else canonical(status)
        self.written[key] = (uid, data)
        if sent:
            self.wrote[key] = (*self.wrote.get(key, ())[-3:], digest(data))
        return data

    def read(self, key: Key, entry: BgjSeen) -> None:
        self.inputs[key] = (entry.uid, entry.generation, entry.annotations)

    def echo(self, key: Key, entry: BgjSeen) -> bool:
        """The watch bringing back one of our own status writes, on an object whose inputs a pass has read."""
        return self.inputs.get(key) == (entry.uid, entry.generation, entry.annotations) and digest(
            entry.status_json
        ) in self.wrote.get(key, ())

    def forget(self, key: Key) -> None:
        for memo in (self.written, self.inputs, self.wrote):
            memo.pop(key, None)


class EventRecorder:
    """Kubernetes Events on BackgroundJobs and requests; a keyed event has a deterministic name, so
    posting it again after a crash is refused by the API server instead of doubled."""

    def __init__(self, kube: Callable[[], Kube]) -> None:
        self._kube = kube

    async def post(self, owner: render.Owner, type_: str, reason: str, message: str, *, key: str | None = None) -> None:
        involved = {
            "apiVersion": owner.api_version,
            "kind": owner.kind,
            "name": owner.name,
            "namespace": owner.namespace,
            "uid": owner.uid,
        }
        body = event_body(involved, type_, reason, message)
        if key is not None:
            body["metadata"] = {
                "name": f"{owner.name[:200]}.{names.digest(owner.uid, key, size=16)}",
                "namespace": owner.namespace,
            }
        try:
            await self._kube().create(EVENTS, body)
        except ApiError as e:
            if e.conflict and key is not None:
                return  # posted before a restart: once is enough
            log.warning("event %s on %s/%s not posted: %s", reason, owner.namespace, owner.name, e)


@dataclass
class Readiness:
    """Ready once the indexes are bound and every BackgroundJob known then has had one pass.

    Changed only on the event loop (`passed`, `settle`); the metrics thread only reads `ready`.
    """

    bound: bool = False
    first_pass: frozenset[Key] | None = None
    gate_passes: int = 0
    watched: bool = False  # kopf called a watch handler: it does so only once every index is filled
    since: float = field(default_factory=time.monotonic)

    def passed(self, key: Key) -> None:
        if self.first_pass is not None and key in self.first_pass:
            self.first_pass = self.first_pass - {key}

    def settle(self, present: Callable[[Key], bool]) -> None:
        """Let go of jobs listed at start-up that the index no longer holds (deleted before the watch saw
        them, so no pass will come), once the indexes are filled or after a grace period."""
        if self.first_pass and (self.watched or time.monotonic() - self.since > 30):
            self.first_pass = frozenset(k for k in self.first_pass if present(k))

    def ready(self, leading: bool) -> bool:
        """A standby is ready once it watches (it could take over); the leader once it has acted on all."""
        if not self.bound or self.first_pass is None:
            return False
        return not leading or (not self.first_pass and self.gate_passes > 0)


class Runtime:
    def __init__(
        self,
        settings: Settings,
        *,
        clock: Callable[[], dt.datetime] = utc_now,
        kube: Kube | None = None,
    ) -> None:
        self.settings = settings
        self.clock = clock
        self._kube = kube
        self.history: HistoryWriter | None = None
        self.events = EventRecorder(self.kube)
        self.leading = asyncio.Event()
        self.wake = asyncio.Event()  # the gate should look again (a Job changed, a run was created)
        self.queue: WorkQueue[Key] = WorkQueue()
        self.indexes = Indexes()
        self.expectations = Expectations()
        self.status = StatusMemory()
        # final Jobs whose run this process counted, until the watch shows their mark (or they go):
        # a pass in between neither counts them again nor waits for the mark to count (no TTL: a
        # count must never repeat)
        # (True once its mark is written: a pass then leaves the end alone; False while the mark is
        # still to write, so the next pass writes it without counting again)
        self.counted: dict[tuple[str, str], bool] = {}
        self.readiness = Readiness()
        self.started = time.time()

    def kube(self) -> Kube:
        if self._kube is None:
            client = LimitedKube.from_env()
            client.limiter = TokenBucket(self.settings.kube_qps, self.settings.kube_burst)
            client.gate_limiter = TokenBucket(self.settings.gate_kube_qps, self.settings.gate_kube_burst)
            # every reconcile worker and gate writer may have a request in flight, and events and the
            # informers' lists besides
            client.pool = max(64, self.settings.reconcile_workers + self.settings.gate_workers + 16)
            self._kube = client
        return self._kube

    def start_history(self) -> None:
        if self.settings.history_dsn:
            from nightshift.infra.history import HistoryWriter

            self.history = HistoryWriter(self.settings.history_dsn, retention_days=self.settings.history_retention_days)
            self.history.start()

    async def close(self) -> None:
        if self.history is not None:
            await self.history.stop()
        if self._kube is not None:
            await self._kube.close()
