"""controller.apply: the order of a run end's writes, on a recording client (no cluster).

What crosses the API is tested against the real one (tests/integration); here only the order the
ledger promises: the metric and the event before anything shows the end, the mark beside the
status (one round trip, not two), and a mark that failed neither loses nor doubles the count.
"""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any

import pytest

from nightshift.controller.apply import apply
from nightshift.controller.observe import marks_in_flight
from nightshift.controller.runtime import Runtime
from nightshift.infra import metrics
from nightshift.infra.kube import ApiError, Resource
from tests.unit.factories import NS, succeeded, t
from tests.unit.test_plan import SETTINGS, observed, planned

KEY = (NS, "nightly")


def runs_counted() -> int:
    """nightshift_runs_total{result="succeeded"} of the job, as the collector would serve it."""
    return int(metrics.JOBS.known(KEY)[metrics.RUN_RESULTS.index("succeeded")])


class RecordingKube:
    """Records each write as it starts and ends; the mark can be made to fail once."""

    def __init__(self) -> None:
        self.log: list[tuple[str, str, str]] = []  # (start|end, what, name)
        self.counted_at_start: dict[str, int] = {}
        self.fail_mark = False

    async def _write(self, what: str, name: str) -> Any:
        self.log.append(("start", what, name))
        self.counted_at_start[what] = runs_counted()
        await asyncio.sleep(0.01)  # writes started together overlap
        self.log.append(("end", what, name))
        if what == "mark" and self.fail_mark:
            self.fail_mark = False
            raise ApiError(500, "InternalError", "etcd leader changed")
        return {}

    async def create(self, res: Resource, body: Any, namespace: str | None = None, **_: Any) -> Any:
        return await self._write("event" if res.plural == "events" else res.plural, body["metadata"].get("name", ""))

    async def patch(self, res: Resource, name: str, patch: Any, namespace: str | None = None, **kw: Any) -> Any:
        what = "status" if kw.get("sub") == "status" else ("mark" if res.plural == "jobs" else res.plural)
        return await self._write(what, name)

    async def delete(self, *args: Any, **kwargs: Any) -> None:
        self.log.append(("start", "delete", str(args[1])))

    async def replace(self, *args: Any, **kwargs: Any) -> Any:
        return {}


def run_end(kube: RecordingKube, rt: Runtime, *, ends: int = 1) -> None:
    """One pass over a run that ended, with what observe would add: the marks still in flight."""
    o = observed(views=[succeeded("nightly-1", t(2026, 3, 9, 14))])
    o = dataclasses.replace(o, counting=marks_in_flight(rt, NS, o.runs))
    p = planned(o)
    assert [e.job for e in p.endings] == ["nightly-1"] * ends
    asyncio.run(apply(rt, o, p))


@pytest.fixture()
def rt_kube() -> tuple[Runtime, RecordingKube]:
    metrics.forget_job(*KEY)
    kube = RecordingKube()
    return Runtime(SETTINGS, kube=kube), kube  # type: ignore[arg-type]


def test_the_event_and_the_metric_come_before_the_status_and_the_mark_goes_beside_it(
    rt_kube: tuple[Runtime, RecordingKube],
) -> None:
    rt, kube = rt_kube
    before = runs_counted()
    run_end(kube, rt)
    order = [(edge, what) for edge, what, _ in kube.log]
    assert order.index(("end", "event")) < order.index(("start", "status"))
    assert order.index(("end", "event")) < order.index(("start", "mark"))
    # the mark and the status in flight at once: one round trip between the event and the status
    assert order.index(("start", "mark")) < order.index(("end", "status"))
    assert order.index(("start", "status")) < order.index(("end", "mark"))
    # whoever sees the status finds the metric counted
    assert kube.counted_at_start["status"] == before + 1
    assert runs_counted() == before + 1
    assert (NS, "nightly-1") in rt.counted  # until the watch shows the mark


def test_a_failed_mark_is_written_again_and_the_run_counted_once(rt_kube: tuple[Runtime, RecordingKube]) -> None:
    rt, kube = rt_kube
    before = runs_counted()
    kube.fail_mark = True
    with pytest.raises(ApiError):
        run_end(kube, rt)
    assert (NS, "nightly-1") in rt.counted  # the metric counted, the mark not written
    kube.log.clear()
    # the next pass (the watch shows no mark) posts the event again (refused by name in a cluster)
    # and writes the mark, and counts nothing
    run_end(kube, rt)
    assert [what for edge, what, _ in kube.log if edge == "start"].count("mark") == 1
    assert runs_counted() == before + 1
    kube.log.clear()
    # the mark is written and the watch has not shown it: a pass now leaves the end alone
    run_end(kube, rt, ends=0)
    assert {"event", "mark"} & {what for _, what, _ in kube.log} == set()  # (no index here: its status is written)
    assert runs_counted() == before + 1
