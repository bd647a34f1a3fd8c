"""The operator's view of the cluster, read by observe and the gate: O(1) lookups in memory, so no
handler lists objects from the API.

BackgroundJobs, Jobs, pods, CronJobs and run requests, which there are tens of thousands of (or
hundreds at once), come from the plain informers (controller/informer.py), which keep only slim
projections. Queues and stop ConfigMaps come from kopf's indexes (kopf fills them before any handler runs). The view is ready
once kopf has bound its indexes and every informer has listed. Parsed specs are cached per (uid,
generation).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from collections.abc import Iterator, Mapping, MutableMapping
from typing import Any

import kopf
from pydantic import ValidationError

from nightshift.api.models import BackgroundJobQueueSpec, BackgroundJobSpec
from nightshift.controller.informer import Informer, MultiIndex
from nightshift.core import runs as runs_mod
from nightshift.core.plan import CronJobSeen, RequestSeen
from nightshift.core.runs import AttemptView, JobSeen, Run

Key = tuple[str, str]


def canonical(value: Any) -> bytes:
    """The one JSON form of a spec or status: compact and key-sorted, so equal values are equal bytes
    (the echo check and the status memory compare digests of it)."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str).encode()


class BgjSeen:
    """A BackgroundJob as the index keeps it: its spec and status as canonical JSON, decoded when a
    pass reads them. As dicts they were 7.6 KiB per job (status 4.4, spec 3); as bytes about 1.5:
    at 10,000 jobs that is 60 MB, and a pass decodes its one job in tens of microseconds."""

    __slots__ = ("annotations", "created", "generation", "spec_json", "status_json", "uid")

    def __init__(
        self,
        uid: str,
        generation: int,
        created: str | None,
        annotations: dict[str, str],
        spec_json: bytes,
        status_json: bytes,
    ) -> None:
        self.uid, self.generation, self.created, self.annotations = uid, generation, created, annotations
        self.spec_json, self.status_json = spec_json, status_json

    @property
    def spec(self) -> dict[str, Any]:
        value: dict[str, Any] = json.loads(self.spec_json)
        return value

    @property
    def status(self) -> dict[str, Any]:
        value: dict[str, Any] = json.loads(self.status_json)
        return value

    def _fields(self) -> tuple[Any, ...]:
        return (self.uid, self.generation, self.created, self.annotations, self.spec_json, self.status_json)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, BgjSeen) and self._fields() == other._fields()

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"BgjSeen(uid={self.uid!r}, generation={self.generation})"


Index = kopf.Index[Any, Any] | MultiIndex[Any, Any]


def _one(index: Index | None, key: Any) -> Any:
    if index is None or key not in index:
        return None
    for value in index[key]:
        return value
    return None


class Indexes:
    def __init__(self) -> None:
        self.bgjs: MultiIndex[Key, BgjSeen] | None = None
        self.jobs: MultiIndex[Key, JobSeen] | None = None
        self.pods: MultiIndex[Key, runs_mod.Termination] | None = None
        self.queues: kopf.Index[Key, dict[str, Any]] | None = None
        self.waiting: MultiIndex[str, AttemptView] | None = None
        self.active: MultiIndex[Key, JobSeen] | None = None
        self.downstream: MultiIndex[Key, str] | None = None
        self.stops: kopf.Index[str, str] | None = None
        self.admitted: MultiIndex[Key, dt.datetime] | None = None
        self.cronjobs: MultiIndex[Key, CronJobSeen] | None = None
        self.requests: MultiIndex[Key, RequestSeen] | None = None
        self._specs: dict[tuple[str, int], BackgroundJobSpec | None] = {}
        self.informers: list[Informer] = []
        self.kopf_bound = False

    @property
    def bound(self) -> bool:
        """kopf's indexes are bound and every informer has listed: a pass may trust what it reads."""
        return self.kopf_bound and all(i.synced.is_set() for i in self.informers)

    async def wait_bound(self) -> None:
        while not self.kopf_bound:  # kopf binds its indexes in the start-up handler, before any waiter
            await asyncio.sleep(0.1)
        for informer in self.informers:
            await informer.synced.wait()

    def bind(self, kwargs: Mapping[str, Any]) -> None:
        if self.kopf_bound or "queue_index" not in kwargs:
            return
        self.queues = kwargs["queue_index"]
        self.stops = kwargs["stop_index"]
        self.kopf_bound = True

    def attach(self, bgjs: Informer, jobs: Informer, pods: Informer, cronjobs: Informer, requests: Informer) -> None:
        """The informers' indexes (see handlers.informers for what each files where)."""
        self.bgjs, self.downstream = bgjs.indexes["bgj"], bgjs.indexes["downstream"]
        self.jobs, self.waiting = jobs.indexes["job"], jobs.indexes["waiting"]
        self.active, self.admitted = jobs.indexes["active"], jobs.indexes["admitted"]
        self.pods = pods.indexes["pod"]
        self.cronjobs = cronjobs.indexes["cronjob"]
        self.requests = requests.indexes["request"]
        self.informers = [bgjs, jobs, pods, cronjobs, requests]

    # -- BackgroundJobs ---------------------------------------------------------------------------
    def bgj(self, ns: str, name: str) -> BgjSeen | None:
        value: BgjSeen | None = _one(self.bgjs, (ns, name))
        return value

    def spec(self, ns: str, name: str) -> BackgroundJobSpec | None:
        entry = self.bgj(ns, name)
        return self.parse(entry) if entry else None

    def parse(self, entry: BgjSeen) -> BackgroundJobSpec | None:
        key = (entry.uid, entry.generation)
        if key not in self._specs:
            if len(self._specs) > 10000:
                self._specs.clear()
            try:
                self._specs[key] = BackgroundJobSpec.model_validate(entry.spec)
            except ValidationError:
                self._specs[key] = None
        return self._specs[key]

    def specs(self) -> Mapping[Key, BackgroundJobSpec]:
        return _Specs(self)

    def created(self, ns: str, name: str) -> dt.datetime | None:
        entry = self.bgj(ns, name)
        return runs_mod.parse_time(entry.created) if entry else None

    def cronjob(self, ns: str, name: str) -> CronJobSeen | None:
        value: CronJobSeen | None = _one(self.cronjobs, (ns, name))
        return value

    def requests_of(self, ns: str, bgj: str) -> list[RequestSeen]:
        if self.requests is None or (ns, bgj) not in self.requests:
            return []
        return sorted(self.requests[(ns, bgj)], key=lambda r: (r.created, r.name))

    # -- runs -------------------------------------------------------------------------------------
    def attempts(self, ns: str, bgj: str) -> list[AttemptView]:
        if self.jobs is None or (ns, bgj) not in self.jobs:
            return []
        return [v.view(_one(self.pods, (ns, v.name))) for v in self.jobs[(ns, bgj)]]

    def runs(self, ns: str, bgj: str) -> list[Run]:
        return runs_mod.group(self.attempts(ns, bgj))

    def waiting_views(self) -> list[AttemptView]:
        if self.waiting is None or "waiting" not in self.waiting:
            return []
        return list(self.waiting["waiting"])

    def active_count(self) -> tuple[int, dict[Key, int]]:
        total, per = 0, {}
        if self.active is not None:
            for key in self.active:
                n = len(list(self.active[key]))
                per[key] = n
                total += n
        return total, per

    def queue(self, ns: str, name: str) -> BackgroundJobQueueSpec | None:
        raw = _one(self.queues, (ns, name))
        if raw is None:
            return None
        try:
            return BackgroundJobQueueSpec.model_validate(raw)
        except ValidationError:
            return None

    def queue_specs(self) -> dict[Key, BackgroundJobQueueSpec]:
        out = {}
        if self.queues is not None:
            for key in self.queues:
                q = self.queue(*key)
                if q:
                    out[key] = q
        return out

    def downstream_of(self, ns: str, name: str) -> list[str]:
        if self.downstream is None or (ns, name) not in self.downstream:
            return []
        return sorted(set(self.downstream[(ns, name)]))

    def stopped(self, ns: str) -> str | None:
        if self.stops is None:
            return None
        for key in ("*", ns):
            reason = _one(self.stops, key)
            if reason is not None:
                return f"{reason} ({'cluster' if key == '*' else 'namespace ' + ns})"
        return None


class _Specs(Mapping[Key, BackgroundJobSpec]):
    """Specs looked up on demand, so a gate pass touches only the jobs it needs."""

    def __init__(self, state: Indexes) -> None:
        self.state = state

    def __getitem__(self, key: Key) -> BackgroundJobSpec:
        spec = self.state.spec(*key)
        if spec is None:
            raise KeyError(key)
        return spec

    def __iter__(self) -> Iterator[Key]:
        return iter(self.state.bgjs or ())

    def __len__(self) -> int:
        return len(self.state.bgjs or ())


class LazyRuns(Mapping[Key, list[Run]]):
    """Runs per job, grouped on first use within one gate pass."""

    def __init__(self, state: Indexes) -> None:
        self.state = state
        self.cache: dict[Key, list[Run]] = {}

    def __getitem__(self, key: Key) -> list[Run]:
        if key not in self.cache:
            self.cache[key] = self.state.runs(*key)
        return self.cache[key]

    def __iter__(self) -> Iterator[Key]:
        return iter(self.state.jobs or ())

    def __len__(self) -> int:
        return len(self.state.jobs or ())


class LazyAdmissions(MutableMapping[Key, list[dt.datetime]]):
    """Start times per queue, read from the index only for the queues a gate pass asks about.

    Only rate-limited queues with a waiting run (and queues admitting in this pass) are read, so a
    pass with nothing to decide costs nothing however many Jobs the queues hold.
    """

    def __init__(self, state: Indexes) -> None:
        self.state = state
        self.cache: dict[Key, list[dt.datetime]] = {}

    def __getitem__(self, key: Key) -> list[dt.datetime]:
        if key not in self.cache:
            index = self.state.admitted
            self.cache[key] = list(index[key]) if index is not None and key in index else []
        return self.cache[key]

    def __setitem__(self, key: Key, value: list[dt.datetime]) -> None:
        self.cache[key] = value

    def __delitem__(self, key: Key) -> None:
        del self.cache[key]

    def __iter__(self) -> Iterator[Key]:
        return iter(self.cache)

    def __len__(self) -> int:
        return len(self.cache)
