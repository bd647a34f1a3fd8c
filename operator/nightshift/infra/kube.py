"""A small asyncio Kubernetes client on aiohttp, authenticated as kubectl is (`credentials`).

The operator is asyncio, so its API calls must be too; the official client is synchronous and heavy
(kopf's author measured it at ~60% of a no-op operator's memory). Objects stay plain dicts, which is
what the pure render functions produce and what the API speaks.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any, Self
from urllib.parse import quote

import aiohttp
from pydantic_core import from_json  # the Rust parser pydantic carries: a third of json.loads' time

from nightshift.infra.credentials import Credentials, for_operator

Obj = dict[str, Any]


@dataclass(frozen=True)
class Resource:
    group: str
    version: str
    plural: str
    namespaced: bool = True

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    def path(self, namespace: str | None = None, name: str | None = None, sub: str | None = None) -> str:
        base = f"/apis/{self.group}/{self.version}" if self.group else f"/api/{self.version}"
        parts = [base]
        if self.namespaced and namespace:
            parts.append(f"namespaces/{quote(namespace)}")
        parts.append(self.plural)
        if name:
            parts.append(quote(name))
        if sub:
            parts.append(sub)
        return "/".join(parts)


BACKGROUNDJOBS = Resource("nightshift.dev", "v1alpha1", "backgroundjobs")
QUEUES = Resource("nightshift.dev", "v1alpha1", "backgroundjobqueues")
BACKGROUNDJOBRUNS = Resource("nightshift.dev", "v1alpha1", "backgroundjobruns")
CRONJOBS = Resource("batch", "v1", "cronjobs")
JOBS = Resource("batch", "v1", "jobs")
PODS = Resource("", "v1", "pods")
EVENTS = Resource("", "v1", "events")
NODES = Resource("", "v1", "nodes", namespaced=False)
NAMESPACES = Resource("", "v1", "namespaces", namespaced=False)
SECRETS = Resource("", "v1", "secrets")
CONFIGMAPS = Resource("", "v1", "configmaps")
LEASES = Resource("coordination.k8s.io", "v1", "leases")
CRDS = Resource("apiextensions.k8s.io", "v1", "customresourcedefinitions", namespaced=False)
PRIORITYCLASSES = Resource("scheduling.k8s.io", "v1", "priorityclasses", namespaced=False)

MERGE = "application/merge-patch+json"
STRATEGIC = "application/strategic-merge-patch+json"
JSON_PATCH = "application/json-patch+json"
APPLY = "application/apply-patch+yaml"


class ApiError(Exception):
    """An API answer other than 2xx, with the server's own Status message kept for users."""

    def __init__(self, status: int, reason: str, message: str, body: Obj | None = None) -> None:
        super().__init__(f"{status} {reason}: {message}")
        self.status = status
        self.reason = reason
        self.message = message
        self.body = body or {}

    @property
    def not_found(self) -> bool:
        return self.status == 404

    @property
    def conflict(self) -> bool:
        return self.status == 409

    @property
    def namespace_terminating(self) -> bool:
        """403 from the NamespaceLifecycle admission: nothing new may be made in a namespace being deleted."""
        causes = (self.body.get("details") or {}).get("causes") or []
        return self.status == 403 and any(c.get("reason") == "NamespaceTerminating" for c in causes)


class Kube:
    """One API server, through sessions that `Credentials` authenticate per request.

    The session is rebuilt only when an exec plugin hands out a new client certificate (TLS lives
    in the connector); the old one is closed with the client, so requests in flight finish.
    """

    def __init__(self, credentials: Credentials, *, pool: int = 64) -> None:
        self.credentials = credentials
        self.server = credentials.server
        self.default_namespace = credentials.namespace
        self.pool = pool  # connections for requests; watches have a session of their own, unbounded
        self._sessions: dict[bool, aiohttp.ClientSession] = {}  # watch? -> session
        self._tls_key: object = None
        self._retired: list[aiohttp.ClientSession] = []

    @classmethod
    def from_env(cls) -> Self:
        """The operator's credentials: the pod's ServiceAccount, else the kubeconfig (see `for_operator`)."""
        return cls(for_operator())

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        for s in [*self._retired, *self._sessions.values()]:
            if not s.closed:
                await s.close()
        self._sessions, self._retired = {}, []

    async def session(self, *, watch: bool = False) -> aiohttp.ClientSession:
        """The session for requests, or for watches. Watches hold a connection each for minutes: in the
        requests' pool they left too few for the reconcile workers, and requests queued for a
        connection ran into their timeout."""
        _, key = await self.credentials.ssl_context()
        if key != self._tls_key:
            self._retired += self._sessions.values()
            self._sessions, self._tls_key = {}, key
        current = self._sessions.get(watch)
        if current is None or current.closed:
            current, _ = await self.credentials.session(limit=0 if watch else self.pool)
            self._sessions[watch] = current
        return current

    async def _send(self, method: str, url: str, *, watch: bool = False, **kwargs: Any) -> aiohttp.ClientResponse:
        """One request; after a 401 that came with a certificate now replaced, once more on a new session."""
        session = await self.session(watch=watch)
        resp = await session.request(method, url, **kwargs)
        if resp.status == 401 and (await self.session(watch=watch)) is not session:
            resp.release()
            resp = await (await self.session(watch=watch)).request(method, url, **kwargs)
        return resp

    async def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str | int] | None = None,
        body: Any = None,
        content_type: str = "application/json",
        timeout: float = 30,
    ) -> Any:
        data = None if body is None else json.dumps(body)
        headers = {"Content-Type": content_type} if data is not None else None
        async with await self._send(
            method,
            self.server + path,
            params={k: str(v) for k, v in (params or {}).items()},
            data=data,
            headers=headers,
            timeout=aiohttp.ClientTimeout(total=timeout),
        ) as resp:
            raw = await resp.read()
            if resp.status >= 400:
                raise _api_error(resp.status, raw.decode(errors="replace"))
            if not raw:
                return None
            if resp.content_type == "application/json":
                return from_json(raw)
            return raw.decode(errors="replace")

    async def get(self, res: Resource, name: str, namespace: str | None = None, sub: str | None = None) -> Obj:
        result: Obj = await self.request("GET", res.path(namespace, name, sub))
        return result

    async def get_or_none(self, res: Resource, name: str, namespace: str | None = None) -> Obj | None:
        try:
            return await self.get(res, name, namespace)
        except ApiError as e:
            if e.not_found:
                return None
            raise

    async def list(
        self,
        res: Resource,
        namespace: str | None = None,
        *,
        label_selector: str | None = None,
        field_selector: str | None = None,
    ) -> list[Obj]:
        """All pages of a list; for tools and start-up, never per event."""
        items: list[Obj] = []
        params: dict[str, str | int] = {"limit": 500}
        if label_selector:
            params["labelSelector"] = label_selector
        if field_selector:
            params["fieldSelector"] = field_selector
        while True:
            page = await self.request("GET", res.path(namespace), params=params)
            items.extend(page.get("items", []))
            cont = page.get("metadata", {}).get("continue")
            if not cont:
                return items
            params["continue"] = cont

    async def create(self, res: Resource, body: Obj, namespace: str | None = None, **params: str) -> Obj:
        ns = namespace or body.get("metadata", {}).get("namespace")
        result: Obj = await self.request("POST", res.path(ns), body=body, params=params)
        return result

    async def replace(self, res: Resource, body: Obj, **params: str) -> Obj:
        md = body["metadata"]
        result: Obj = await self.request("PUT", res.path(md.get("namespace"), md["name"]), body=body, params=params)
        return result

    async def patch(
        self,
        res: Resource,
        name: str,
        patch: Any,
        namespace: str | None = None,
        *,
        sub: str | None = None,
        content_type: str = MERGE,
        **params: str,
    ) -> Obj:
        result: Obj = await self.request(
            "PATCH", res.path(namespace, name, sub), body=patch, content_type=content_type, params=params
        )
        return result

    async def delete(
        self,
        res: Resource,
        name: str,
        namespace: str | None = None,
        *,
        propagation: str = "Background",
        grace_seconds: int | None = None,
        missing_ok: bool = True,
    ) -> None:
        body: Obj = {"kind": "DeleteOptions", "apiVersion": "v1", "propagationPolicy": propagation}
        if grace_seconds is not None:
            body["gracePeriodSeconds"] = grace_seconds
        try:
            await self.request("DELETE", res.path(namespace, name), body=body)
        except ApiError as e:
            if not (missing_ok and e.not_found):
                raise

    async def watch(
        self,
        res: Resource,
        namespace: str | None = None,
        *,
        field_selector: str | None = None,
        label_selector: str | None = None,
        resource_version: str | None = None,
        timeout_seconds: int = 300,
    ) -> AsyncIterator[tuple[str, Obj]]:
        """One watch window; the caller loops (and re-lists on 410 Gone)."""
        params: dict[str, str | int] = {
            "watch": "true",
            "timeoutSeconds": timeout_seconds,
            "allowWatchBookmarks": "true",
        }
        if field_selector:
            params["fieldSelector"] = field_selector
        if label_selector:
            params["labelSelector"] = label_selector
        if resource_version:
            params["resourceVersion"] = resource_version
        async for event in self.watch_raw(res.path(namespace), {k: str(v) for k, v in params.items()}, timeout_seconds):
            yield event

    async def watch_raw(
        self, path: str, params: Mapping[str, str], timeout_seconds: int
    ) -> AsyncIterator[tuple[str, Obj]]:
        """One watch window on a path with the caller's parameters (the informers' reflector loops)."""
        async with await self._send(
            "GET",
            self.server + path,
            watch=True,
            params=dict(params),
            timeout=aiohttp.ClientTimeout(total=timeout_seconds + 30, sock_read=timeout_seconds + 30),
        ) as resp:
            if resp.status >= 400:
                raise _api_error(resp.status, await resp.text())
            async for event in _events(resp):
                yield event


async def _events(resp: aiohttp.ClientResponse) -> AsyncIterator[tuple[str, Obj]]:
    """(type, object) per line of a watch stream. Lines are split here, not by aiohttp's readline,
    which refuses lines over 128 KiB (an object with a large annotation)."""
    buffer = bytearray()
    async for chunk in resp.content.iter_any():
        buffer.extend(chunk)
        while (end := buffer.find(b"\n")) >= 0:
            line = bytes(buffer[:end])
            del buffer[: end + 1]
            if not line.strip():
                continue
            event = from_json(line)
            if event.get("type") == "ERROR":
                status = event.get("object", {})
                raise ApiError(status.get("code", 500), status.get("reason", ""), status.get("message", ""))
            yield event["type"], event["object"]


def event_body(involved: Obj, type_: str, reason: str, message: str, component: str = "nightshift") -> Obj:
    """A core/v1 Event about `involved` (apiVersion, kind, name, namespace, uid)."""
    t = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"generateName": f"{involved['name']}.", "namespace": involved["namespace"]},
        "involvedObject": involved,
        "type": type_,
        "reason": reason,
        "message": message[:1024],
        "firstTimestamp": t,
        "lastTimestamp": t,
        "count": 1,
        "source": {"component": component},
        "reportingComponent": component,
        "reportingInstance": component,
    }


def _api_error(status: int, text: str) -> ApiError:
    try:
        body = json.loads(text)
    except ValueError:
        return ApiError(status, "", text[:500])
    return ApiError(status, body.get("reason", ""), body.get("message", text[:500]), body)
