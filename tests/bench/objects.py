"""P2 without a cluster: what the operator keeps per object, by tracemalloc, in a minute.

    python -m tests.bench.objects --bgjs 2000 --jobs 10000 [--top 15]

The objects `tests/bench/memory.py` seeds (BackgroundJobs, finished Jobs with the ledger's mark, each
with its Succeeded pod), made here as JSON and parsed one at a time as a list page would be, fed
through the real informers (controller/handlers.informers); then one real pass per BackgroundJob
(observe, plan, apply) against an API that accepts every write. Prints the bytes still allocated per
BackgroundJob, per Job and per pod after the informers, and per BackgroundJob after the passes
(status memory, metrics), and with --top the lines that hold the most. This is Python's heap only:
the process's RSS adds the interpreter and modules (about 58 MiB) and the allocator's slack.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import gc
import json
import sys
import tracemalloc
from typing import Any

from nightshift.api import names
from nightshift.api.models import BackgroundJobSpec
from nightshift.controller import handlers
from nightshift.controller.reconciler import Reconciler
from nightshift.controller.runtime import Runtime
from nightshift.core import render
from nightshift.settings import Settings
from tests.bench.bench import _ts, complete_status, seeded_job, seeded_pod
from tests.bench.memory import NS, spec
from tests.conftest import bgj


class AcceptingKube:
    """Every write succeeds and changes nothing (the informers are fed by hand)."""

    async def create(self, res: Any, body: Any, namespace: str | None = None, **params: str) -> Any:
        return body

    async def replace(self, res: Any, body: Any, **params: str) -> Any:
        return body

    async def patch(self, *args: Any, **kwargs: Any) -> Any:
        return {}

    async def delete(self, *args: Any, **kwargs: Any) -> Any:
        return {}

    async def close(self) -> None:
        pass


def bodies(n_bgjs: int, n_jobs: int) -> tuple[list[bytes], list[bytes], list[tuple[bytes, bytes]]]:
    """BackgroundJobs, their CronJobs, and (Job, pod) pairs spread round-robin, as memory.seed makes them."""
    parsed = BackgroundJobSpec.model_validate(spec())
    settings = Settings()
    start = dt.datetime(2026, 11, 1, tzinfo=dt.UTC)
    created = "2026-12-01T12:00:00Z"
    owners = [render.Owner(f"m-{i:05d}", NS, f"{i:08d}-0000-4000-8000-000000000000") for i in range(n_bgjs)]
    out_b, out_c, out_j = [], [], []
    for o in owners:
        body = bgj(o.name, NS, spec(), uid=o.uid, generation=1, creationTimestamp=created)
        out_b.append(json.dumps(body).encode())
        cron = render.cronjob(o, parsed, settings)
        assert cron is not None
        cron["metadata"].update(namespace=NS, creationTimestamp=created)
        out_c.append(json.dumps(cron).encode())
    for i in range(n_jobs):
        owner, r = owners[i % n_bgjs], i // n_bgjs
        when = start + dt.timedelta(hours=r)
        attempt = render.Attempt(names.run_id(owner.name, "manual", f"seed-{r}"), trigger="manual", scheduled_time=when)
        job = seeded_job(owner, parsed, settings, attempt)
        job["metadata"]["annotations"][names.ANN_COUNTED] = "Succeeded"
        job["metadata"].update(uid=f"{i:08d}-1111-4000-8000-000000000000", creationTimestamp=created)
        began, ended = _ts(when + dt.timedelta(seconds=1)), _ts(when + dt.timedelta(seconds=3))
        job["status"] = complete_status(began, ended)
        pod = seeded_pod(job, job, schedulerName="nobody")
        pod["metadata"].update(uid=f"{i:08d}-2222-4000-8000-000000000000", creationTimestamp=created)
        term = {"exitCode": 0, "reason": "Completed", "startedAt": began, "finishedAt": ended}
        pod["status"] = {"phase": "Succeeded", "containerStatuses": [{"name": "job", "state": {"terminated": term}}]}
        out_j.append((json.dumps(job).encode(), json.dumps(pod).encode()))
    return out_b, out_c, out_j


def held() -> int:
    gc.collect()
    return tracemalloc.get_traced_memory()[0]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.bench.objects", description=__doc__)
    parser.add_argument("--bgjs", type=int, default=2000)
    parser.add_argument("--jobs", type=int, default=10000)
    parser.add_argument("--top", type=int, default=0, help="also print the lines holding the most")
    args = parser.parse_args(argv)
    rt = Runtime(Settings(), kube=AcceptingKube())  # type: ignore[arg-type]
    rt.leading.set()
    rec = Reconciler(rt)
    bgjs, jobs, pods, cronjobs, requests = handlers.informers(rt, rec)
    rt.indexes.attach(bgjs, jobs, pods, cronjobs, requests)
    rt.indexes.queues, rt.indexes.stops = {}, {}  # type: ignore[assignment]
    rt.indexes.kopf_bound = True
    made_b, made_c, made_j = bodies(args.bgjs, args.jobs)

    tracemalloc.start()
    m0 = held()
    for b in made_b:
        bgjs._apply("ADDED", json.loads(b))
    for c in made_c:
        cronjobs._apply("ADDED", json.loads(c))
    m1 = held()
    for j, _ in made_j:
        jobs._apply("ADDED", json.loads(j))
    m2 = held()
    for _, p in made_j:
        pods._apply("ADDED", json.loads(p))
    m3 = held()
    listed = tracemalloc.take_snapshot()

    async def passes() -> None:
        for key in list(rt.indexes.bgjs or ()):
            await rec.reconcile(key)

    asyncio.run(passes())
    rec._echo_only.clear()
    while len(rt.queue):  # what the informers queued: drained at rest
        key = rt.queue._queue.popleft()
        rt.queue._dirty.discard(key)
    m4 = held()
    print(
        f"per BackgroundJob {(m1 - m0) / args.bgjs:.0f} B (with its CronJob) + {(m4 - m3) / args.bgjs:.0f} B after"
        f" its pass; per Job {(m2 - m1) / args.jobs:.0f} B; per pod {(m3 - m2) / args.jobs:.0f} B;"
        f" {(m4 - m0) / 2**20:.1f} MiB in all"
    )
    if args.top:
        for stat in tracemalloc.take_snapshot().compare_to(listed, "lineno")[: args.top]:
            print(stat)
    return 0


if __name__ == "__main__":
    sys.exit(main())
