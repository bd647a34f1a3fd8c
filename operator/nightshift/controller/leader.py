"""Leader election on a coordination.k8s.io Lease, so replicas can stand by.

Every replica watches and keeps its indexes warm; only the leader reconciles, admits runs and writes.
The rules are client-go's: a lease is expired when its record (holder, renewTime) has not changed for
leaseDurationSeconds by *our* clock (no trust in other machines' clocks); writes use the
resourceVersion, so two candidates cannot both win; a leader that cannot renew within the renew
deadline stops the process (the Deployment restarts it as a follower) rather than act on a lease it
may have lost. A leader that stops cleanly releases the lease, so failover is one retry period.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import os
import signal
import socket
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from nightshift.infra.kube import LEASES, ApiError, Kube

log = logging.getLogger("nightshift")

Step = Literal["create", "renew", "acquire", "follow"]


@dataclass(frozen=True)
class Observed:
    """A lease record as we last saw it change, and when (monotonic seconds)."""

    holder: str | None
    renewed: str | None
    at: float


def observe(previous: Observed | None, spec: Mapping[str, Any] | None, now: float) -> Observed | None:
    if spec is None:
        return None
    holder, renewed = spec.get("holderIdentity"), spec.get("renewTime")
    if previous is not None and (previous.holder, previous.renewed) == (holder, renewed):
        return previous
    return Observed(holder, renewed, now)


def step(spec: Mapping[str, Any] | None, me: str, seen: Observed | None, now: float, duration: float) -> Step:
    """What a candidate does next with the lease as it is now."""
    if spec is None:
        return "create"
    holder = spec.get("holderIdentity")
    if holder == me:
        return "renew"
    if not holder:
        return "acquire"  # released by a leader that stopped
    held_for = float(spec.get("leaseDurationSeconds") or duration)
    if seen is not None and now - seen.at >= held_for:
        return "acquire"
    return "follow"


def micro_time(when: dt.datetime) -> str:
    return when.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def identity() -> str:
    return os.environ.get("NIGHTSHIFT_POD_NAME") or f"{socket.gethostname()}-{os.getpid()}"


class Elector:
    def __init__(
        self,
        name: str,
        namespace: str,
        *,
        duration: float,
        on_lead: Callable[[], Awaitable[None]],
        on_lose: Callable[[], None],
        kube: Callable[[], Kube],
        me: str | None = None,
    ) -> None:
        self.kube = kube
        self.name, self.namespace, self.duration = name, namespace, duration
        self.me = me or identity()
        self.retry = max(duration / 5, 0.2)
        self.renew_deadline = duration * 2 / 3
        self.on_lead, self.on_lose = on_lead, on_lose
        self.leading = False
        self.stopping = False
        self.seen: Observed | None = None
        self.renewed_at = 0.0

    async def run(self) -> None:
        while not self.stopping:
            try:
                await self.tick()
            except Exception:
                log.exception("leader election: lease %s/%s", self.namespace, self.name)
            if self.leading and time.monotonic() - self.renewed_at > self.renew_deadline:
                log.error(
                    "leader election: lease not renewed for %.0fs; stopping, to restart as a follower",
                    self.renew_deadline,
                )
                self._lose()
                return
            await asyncio.sleep(self.retry)

    async def tick(self) -> None:
        lease = await self.kube().get_or_none(LEASES, self.name, self.namespace)
        spec = (lease.get("spec") or {}) if lease else None
        now = time.monotonic()
        self.seen = observe(self.seen, spec, now)
        action = step(spec, self.me, self.seen, now, self.duration)
        if self.stopping:  # released while this tick waited for the API server
            return
        if action == "follow":
            if self.leading:  # someone else holds it: we lost it between two renewals
                log.error("leader election: lease taken by %s; stopping", (spec or {}).get("holderIdentity"))
                self._lose()
            return
        stamp = micro_time(dt.datetime.now(dt.UTC))
        record: dict[str, Any] = {"holderIdentity": self.me, "leaseDurationSeconds": round(self.duration)}
        try:
            if action == "create":
                body = {
                    "apiVersion": "coordination.k8s.io/v1",
                    "kind": "Lease",
                    "metadata": {"name": self.name, "namespace": self.namespace},
                    "spec": {**record, "acquireTime": stamp, "renewTime": stamp, "leaseTransitions": 0},
                }
                await self.kube().create(LEASES, body)
            else:
                assert lease is not None and spec is not None
                new = {**spec, **record, "renewTime": stamp}
                if action == "acquire":
                    new.update(acquireTime=stamp, leaseTransitions=int(spec.get("leaseTransitions") or 0) + 1)
                await self.kube().replace(LEASES, {**lease, "spec": new})
        except ApiError as e:
            if e.conflict or e.status == 409:
                return  # another candidate wrote first; look again next period
            raise
        self.renewed_at = time.monotonic()
        if not self.leading:
            self.leading = True
            log.info("leader election: %s leads (lease %s/%s)", self.me, self.namespace, self.name)
            await self.on_lead()

    def _lose(self) -> None:
        """Stop acting at once, then stop the process: it restarts as a follower with fresh state."""
        self.leading = False
        self.stopping = True
        self.on_lose()
        os.kill(os.getpid(), signal.SIGTERM)

    async def release(self) -> None:
        """Give the lease up on a clean stop, so a standby takes over at its next retry.

        The loop stops first: while kopf shuts down, a tick would otherwise take the released lease back.
        """
        self.stopping = True
        if not self.leading:
            return
        self.leading = False
        lease = await self.kube().get_or_none(LEASES, self.name, self.namespace)
        if lease and (lease.get("spec") or {}).get("holderIdentity") == self.me:
            spec = {**lease["spec"], "holderIdentity": None}
            try:
                await self.kube().replace(LEASES, {**lease, "spec": spec})
            except ApiError as e:
                log.warning("leader election: release failed: %s", e)
