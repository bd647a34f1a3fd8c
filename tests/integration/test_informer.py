"""The informers' reflector against the real API server: list in pages, watch, drop changes outside
the projection, forget on a relist what was deleted while not watching (the store logic itself is
in tests/unit/test_informer_store.py)."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Mapping
from typing import Any

import pytest

from nightshift.controller.informer import Informer
from nightshift.infra.credentials import from_kubeconfig
from nightshift.infra.kube import CONFIGMAPS, Kube
from tests.conftest import Kubectl
from tests.support.cluster import ControlPlane

pytestmark = pytest.mark.cluster


def colour(obj: Mapping[str, Any]) -> str | None:
    return (obj.get("data") or {}).get("colour")


def configmap(name: str, ns: str, colour: str, **extra: str) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "namespace": ns, "labels": {"t": "informer"}},
        "data": {"colour": colour, **extra},
    }


async def until(predicate: Any, what: str, timeout: float = 20) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


def test_the_informer_lists_in_pages_watches_and_relists(
    cluster: ControlPlane, kubectl: Kubectl, namespace: str
) -> None:
    async def scenario() -> None:
        kube = Kube(from_kubeconfig(str(cluster.kubeconfig), None, os.environ))
        for i in range(7):
            await kube.create(CONFIGMAPS, configmap(f"pre-{i}", namespace, "red"))
        await kube.create(CONFIGMAPS, {"metadata": {"name": "unlabelled", "namespace": namespace}})
        changes: list[tuple[str, tuple[str, str], Any, Any]] = []
        inf = Informer(
            lambda: kube,
            CONFIGMAPS,
            colour,
            name="configmaps",
            namespaces=[namespace],
            label_selector="t",
            indexers={"colour": lambda k, c: (c, k[1])},
            on_change=lambda *c: changes.append(c),
            page=3,  # 7 objects: three pages
        )
        task = asyncio.create_task(inf.run())
        try:
            await asyncio.wait_for(inf.synced.wait(), 20)
            assert sorted(inf.indexes["colour"]["red"]) == [f"pre-{i}" for i in range(7)]
            assert (namespace, "unlabelled") not in inf.objects  # the selector went to the API server

            await kube.patch(CONFIGMAPS, "pre-0", {"data": {"colour": "blue"}}, namespace)
            await kube.patch(CONFIGMAPS, "pre-1", {"data": {"other": "x"}}, namespace)  # not projected
            await kube.delete(CONFIGMAPS, "pre-2", namespace)
            await until(lambda: (namespace, "pre-2") not in inf.objects, "the deletion")
            await until(lambda: inf.objects.get((namespace, "pre-0")) == "blue", "the change")
            ours = [(kind, key[1]) for kind, key, _, _ in changes if kind != "ADDED"]
            assert ours == [("MODIFIED", "pre-0"), ("DELETED", "pre-2")], ours

            # Deleted while not watching: a relist forgets it and says so.
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            await kube.delete(CONFIGMAPS, "pre-3", namespace)
            await inf._list(namespace)
            assert (namespace, "pre-3") not in inf.objects and inf.relists == 1
            assert changes[-1][:2] == ("DELETED", (namespace, "pre-3"))
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            await kube.close()

    asyncio.run(scenario())
