"""Plain list-and-watch informers for the objects there are many of: Jobs, pods and CronJobs.

kopf gives every object it watches its own bookkeeping (a ResourceMemory, index entries, a worker
task while events arrive) and every event a logger and handler machinery: about 15 KiB and 13 ms of
CPU per Job with its pod. The operator reads three numbers of a pod and a dozen fields of a Job, so
these streams skip kopf: a reflector in the client-go manner (list in pages, then watch from the
list's resourceVersion, resume after a dropped connection, list again after 410 Gone) projects each
object to what the core reads before anything is stored, and keeps only that projection. The raw
body is dropped as soon as it is projected; a projection of None (a pod still running) stores nothing.

Each informer calls `on_change(kind, key, old, new)` when a projection changes (not when only
fields the operator does not read do), so handlers need no memory of their own to drop no-op events.
"""

from __future__ import annotations

import asyncio
import fnmatch
import logging
import sys
from collections.abc import AsyncIterator, Callable, Collection, Iterator, Mapping
from typing import Any, Generic, TypeVar

from nightshift.infra.kube import ApiError, Kube, Resource

log = logging.getLogger("nightshift")

K = TypeVar("K")
V = TypeVar("V")
P = TypeVar("P")
ObjKey = tuple[str, str]  # (namespace, name)
Change = Callable[[str, ObjKey, Any, Any], None]


Entries = tuple[Any, Any] | list[tuple[Any, Any]]  # one (index key, value), or a list of them
Indexer = Callable[[ObjKey, Any], Entries | None]  # (object key, projection) -> where to file it


def _pairs(entries: Entries | None) -> list[tuple[Any, Any]]:
    return entries if isinstance(entries, list) else [] if entries is None else [entries]


class MultiIndex(Mapping[K, Collection[V]], Generic[K, V]):
    """key -> the values of the objects filed under it, as kopf.Index reads (`in`, `[key]`, iteration).

    An object is filed under one key (a Job under its BackgroundJob), or several (a BackgroundJob
    under each job it runs after), or none. `refile` is told where the object was filed (the
    informer recomputes it from the projection it replaces: indexers are pure), so the index keeps
    no per-object memory of its own: at 50,000 Jobs and pods that was 150 bytes each.
    """

    def __init__(self) -> None:
        # key -> (object, value) while one object is filed there (most keys: a pod's Job, a
        # CronJob's name), a dict of them when several are; a one-entry dict per key costs 200 bytes
        self._by_key: dict[K, tuple[ObjKey, V] | dict[ObjKey, V]] = {}

    def refile(self, obj: ObjKey, old: Entries | None, new: Entries | None) -> None:
        for key, _ in _pairs(old):
            self._remove(key, obj)
        for key, value in _pairs(new):
            self._add(key, obj, value)

    def _add(self, key: K, obj: ObjKey, value: V) -> None:
        bucket = self._by_key.get(key)
        if bucket is None or (isinstance(bucket, tuple) and bucket[0] == obj):
            self._by_key[key] = (obj, value)
        elif isinstance(bucket, tuple):
            self._by_key[key] = {bucket[0]: bucket[1], obj: value}
        else:
            bucket[obj] = value

    def _remove(self, key: K, obj: ObjKey) -> None:
        bucket = self._by_key.get(key)
        if isinstance(bucket, tuple):
            if bucket[0] == obj:
                del self._by_key[key]
        elif bucket is not None:
            bucket.pop(obj, None)
            if len(bucket) == 1:
                self._by_key[key] = next(iter(bucket.items()))
            elif not bucket:
                del self._by_key[key]

    def filed(self, key: K) -> list[ObjKey]:
        """The objects filed under `key`."""
        bucket = self._by_key.get(key)
        if bucket is None:
            return []
        return [bucket[0]] if isinstance(bucket, tuple) else list(bucket)

    def __getitem__(self, key: K) -> Collection[V]:
        bucket = self._by_key[key]
        return (bucket[1],) if isinstance(bucket, tuple) else bucket.values()

    def __contains__(self, key: object) -> bool:
        return key in self._by_key

    def __iter__(self) -> Iterator[K]:
        return iter(list(self._by_key))  # a copy: callers may await while iterating

    def __len__(self) -> int:
        return len(self._by_key)


class Informer:
    """One resource, one selector, in the served namespaces: projections and the indexes over them."""

    def __init__(
        self,
        kube: Callable[[], Kube],
        resource: Resource,
        project: Callable[[Mapping[str, Any]], Any],
        *,
        name: str,
        namespaces: list[str] | None = None,
        label_selector: str | None = None,
        indexers: Mapping[str, Indexer] | None = None,
        on_change: Change | None = None,
        page: int = 100,  # a page of Jobs parsed is ~5 MB of dicts for a moment; 100 keeps that small
        watch_seconds: int = 300,
    ) -> None:
        self.kube = kube
        self.resource = resource
        self.project = project
        self.name = name
        self.label_selector = label_selector
        self.indexers = dict(indexers or {})
        self.indexes: dict[str, MultiIndex[Any, Any]] = {k: MultiIndex() for k in self.indexers}
        self.on_change = on_change
        self.page = page
        self.watch_seconds = watch_seconds
        # Plain names are watched one by one (what a namespaced Role allows); patterns need the
        # cluster-wide watch, filtered here, as kopf does for them.
        names = list(namespaces or [])
        self._patterns = [n for n in names if any(c in n for c in "*?[")]
        self._scopes: list[str | None] = [None] if (not names or self._patterns) else list[str | None](names)
        self.objects: dict[ObjKey, Any] = {}
        self.synced = asyncio.Event()
        self._listed: set[str | None] = set()
        self.relists = 0

    def serves(self, namespace: str) -> bool:
        return not self._patterns or any(fnmatch.fnmatchcase(namespace, p) for p in self._patterns)

    async def run(self) -> None:
        """Reflect every scope until cancelled; a scope that fails waits and tries again, the others go on."""
        await asyncio.gather(*(self._reflect(scope) for scope in self._scopes))

    # -- one scope ------------------------------------------------------------------------------------
    async def _reflect(self, scope: str | None) -> None:
        backoff = 1.0
        rv: str | None = None
        while True:
            try:
                if rv is None:
                    rv = await self._list(scope)
                    backoff = 1.0
                async for kind, obj in self._watch(scope, rv):
                    md = obj.get("metadata") or {}
                    rv = md.get("resourceVersion") or rv
                    if kind != "BOOKMARK":
                        self._apply(kind, obj)
                    backoff = 1.0
            except asyncio.CancelledError:
                raise
            except ApiError as e:
                if e.status == 410:  # the resourceVersion is compacted away: list again
                    rv = None
                    continue
                log.warning("watch of %s (%s) failed: %s; again in %.0fs", self.name, scope or "all", e, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 30.0)
            except Exception as e:  # a dropped connection, a timeout: resume from the last resourceVersion
                log.info(
                    "watch of %s (%s) interrupted (%s); resuming", self.name, scope or "all", e or type(e).__name__
                )
                await asyncio.sleep(min(backoff, 5.0))
                backoff = min(backoff * 2, 30.0)

    async def _list(self, scope: str | None) -> str:
        """List in pages, projecting each page before the next is read; then forget what is gone."""
        params: dict[str, str | int] = {"limit": self.page}
        if self.label_selector:
            params["labelSelector"] = self.label_selector
        present: set[ObjKey] = set()
        rv = ""
        while True:
            page = await self.kube().request("GET", self.resource.path(scope), params=params, timeout=120)
            for obj in page.get("items") or ():
                key = self._apply("ADDED", obj)
                if key is not None:
                    present.add(key)
            md = page.get("metadata") or {}
            rv = md.get("resourceVersion") or rv
            if not md.get("continue"):
                break
            params["continue"] = md["continue"]
        for key in [k for k in self.objects if (scope is None or k[0] == scope) and k not in present]:
            self._delete(key)  # deleted while we were not watching
        if scope in self._listed:
            self.relists += 1
        self._listed.add(scope)
        if len(self._listed) == len(self._scopes):
            self.synced.set()
        return rv

    async def _watch(self, scope: str | None, rv: str) -> AsyncIterator[tuple[str, Mapping[str, Any]]]:
        kube = self.kube()
        params: dict[str, str] = {
            "watch": "true",
            "allowWatchBookmarks": "true",
            "timeoutSeconds": str(self.watch_seconds),
            "resourceVersion": rv,
        }
        if self.label_selector:
            params["labelSelector"] = self.label_selector
        async for kind, obj in kube.watch_raw(self.resource.path(scope), params, self.watch_seconds):
            yield kind, obj

    # -- the store ------------------------------------------------------------------------------------
    def _apply(self, kind: str, obj: Mapping[str, Any]) -> ObjKey | None:
        md = obj.get("metadata") or {}
        key = (sys.intern(md.get("namespace") or ""), md.get("name") or "")
        if not key[1] or not self.serves(key[0]):
            return None
        if kind == "DELETED":
            self._delete(key, gone=obj)
            return key
        new = self.project(obj)
        old = self.objects.get(key)
        if new is None:
            if old is not None:
                self._store(key, None)
                self._notify("MODIFIED", key, old, None)
            return key
        if old == new:
            return key  # only what the operator does not read changed
        self._store(key, new)
        self._notify("ADDED" if old is None else "MODIFIED", key, old, new)
        return key

    def _store(self, key: ObjKey, value: Any) -> None:
        old = self.objects.pop(key, None) if value is None else self.objects.get(key)
        if value is not None:
            self.objects[key] = value
        for name, indexer in self.indexers.items():
            was = indexer(key, old) if old is not None else None
            self.indexes[name].refile(key, was, indexer(key, value) if value is not None else None)

    def forget(self, index: str, key: Any) -> int:
        """Drop the objects filed under `key` in `index` from the store, with no change notice: what
        the operator no longer reads (a counted run's pod end). Their next event projects them again;
        the projection decides whether they are kept then. Returns how many were dropped."""
        objs = self.indexes[index].filed(key)
        for obj in objs:
            self._store(obj, None)
        return len(objs)

    def _delete(self, key: ObjKey, gone: Mapping[str, Any] | None = None) -> None:
        old = self.objects.get(key)
        self._store(key, None)
        last = self.project(gone) if gone is not None else None
        self._notify("DELETED", key, old if old is not None else last, None)

    def _notify(self, kind: str, key: ObjKey, old: Any, new: Any) -> None:
        if self.on_change is None:
            return
        try:
            self.on_change(kind, key, old, new)
        except Exception:  # a handler's bug must not stop the stream
            log.exception("%s: handling %s of %s/%s failed", self.name, kind, *key)
