"""P2: the operator's memory at rest with N BackgroundJobs and M finished Jobs with their pods.

    NIGHTSHIFT_BIN_DIR=... python -m tests.bench.memory --bgjs 10000 --jobs 50000

One control plane (KWOK node), one operator process. Steps, each ending with the operator at rest
(its CPU idle, read from /proc): empty; N BackgroundJobs created and Ready (yearly schedules, so
nothing runs); then, with the operator stopped, M finished Jobs, each with its pod, seeded the way
`make bench` seeds history (the Job the operator would have rendered, spec.managedBy so the Job
controller leaves it alone, a Complete status, a Succeeded pod with its exit code, the ledger's
counted mark), spread evenly over the BackgroundJobs; then the operator started on all of it, as
after any restart. Prints the RSS table, the peak while listing, and the cost per object.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from nightshift.api import names
from nightshift.api.models import BackgroundJobSpec
from nightshift.core import render
from nightshift.settings import Settings
from tests.bench.bench import (
    Api,
    _ts,
    complete_status,
    cpu_seconds,
    proc_pid,
    rss_mib,
    say,
    seeded_job,
    seeded_pod,
    wait_quiet,
)
from tests.conftest import Kubectl, Operator, bgj
from tests.support.cluster import ControlPlane
from tests.support.operatorproc import install_crds

NS = "memory"
WORKERS = 8


def spec() -> dict[str, Any]:
    """Scheduled yearly (nothing runs while measuring), history limits above what is seeded."""
    return {
        "schedule": "0 0 1 1 *",
        "job": {"image": "nightshift:bench", "command": ["true"]},
        "history": {"successful": 50, "failed": 50},
    }


def pool_map(fn: Any, items: list[Any], what: str) -> None:
    t0, done, lock = time.monotonic(), [0], threading.Lock()

    def one(item: Any) -> None:
        fn(item)
        with lock:
            done[0] += 1
            if done[0] % 5000 == 0:
                say(f"{what}: {done[0]}/{len(items)} ({done[0] / (time.monotonic() - t0):.0f}/s)")

    with ThreadPoolExecutor(WORKERS) as pool:
        for fut in [pool.submit(one, i) for i in items]:
            fut.result()
    say(f"{what}: {len(items)} in {time.monotonic() - t0:.0f}s")


def create_bgjs(api: Api, n: int) -> list[str]:
    jobs = [f"m-{i:05d}" for i in range(n)]
    path = f"/apis/nightshift.dev/v1alpha1/namespaces/{NS}/backgroundjobs"
    pool_map(lambda name: api.request("POST", path, bgj(name, NS, spec())), jobs, "BackgroundJobs")
    return jobs


def ready_count(api: Api) -> int:
    items = api.request("GET", f"/apis/nightshift.dev/v1alpha1/namespaces/{NS}/backgroundjobs")["items"]
    return sum(
        1
        for o in items
        if any(
            c.get("type") == "Ready" and c.get("status") == "True"
            for c in (o.get("status") or {}).get("conditions") or []
        )
    )


def seed(api: Api, jobs: list[str], m: int) -> None:
    """m finished runs with their pods, round-robin over the jobs (see tests/bench/bench.py seed_history)."""
    uids = {
        o["metadata"]["name"]: o["metadata"]["uid"]
        for o in api.request("GET", f"/apis/nightshift.dev/v1alpha1/namespaces/{NS}/backgroundjobs")["items"]
    }
    parsed = BackgroundJobSpec.model_validate(spec())
    settings = Settings()
    start = dt.datetime.now(dt.UTC).replace(microsecond=0) - dt.timedelta(days=30)

    def one(i: int) -> None:
        job = jobs[i % len(jobs)]
        r = i // len(jobs)
        owner = render.Owner(job, NS, uids[job])
        when = start + dt.timedelta(hours=r)
        attempt = render.Attempt(names.run_id(job, "manual", f"seed-{r}"), trigger="manual", scheduled_time=when)
        body = seeded_job(owner, parsed, settings, attempt)
        # counted already, as every finished run at rest is (metrics, event, history): the operator
        # finds runs it has nothing left to do for, as after a restart
        body["metadata"]["annotations"][names.ANN_COUNTED] = "Succeeded"
        created = api.request("POST", f"/apis/batch/v1/namespaces/{NS}/jobs", body)
        name = created["metadata"]["name"]
        began, ended = _ts(when + dt.timedelta(seconds=1)), _ts(when + dt.timedelta(seconds=3))
        # no node: nothing schedules it (the scheduler skips pods whose status says they ended)
        pod = seeded_pod(body, created, schedulerName="nobody")
        made = api.request("POST", f"/api/v1/namespaces/{NS}/pods", pod)
        term = {"exitCode": 0, "reason": "Completed", "startedAt": began, "finishedAt": ended}
        api.request(
            "PATCH",
            f"/api/v1/namespaces/{NS}/pods/{made['metadata']['name']}/status",
            {
                "status": {
                    "phase": "Succeeded",
                    "containerStatuses": [
                        {
                            "name": "job",
                            "image": "nightshift:bench",
                            "imageID": "",
                            "ready": False,
                            "restartCount": 0,
                            "state": {"terminated": term},
                        }
                    ],
                }
            },
            "application/merge-patch+json",
        )
        api.request(
            "PATCH",
            f"/apis/batch/v1/namespaces/{NS}/jobs/{name}/status",
            {"status": complete_status(began, ended)},
            "application/merge-patch+json",
        )

    pool_map(one, list(range(m)), "finished Jobs with pods")


def at_rest(op: Operator, what: str) -> float:
    pid = proc_pid(op)
    wait_quiet(pid, settle=5.0, timeout=1800)
    rss = rss_mib(pid)
    say(f"{what}: RSS {rss:.0f} MiB, operator CPU so far {cpu_seconds(pid):.0f}s")
    return rss


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.bench.memory", description=__doc__)
    parser.add_argument("--bgjs", type=int, default=10000)
    parser.add_argument("--jobs", type=int, default=50000)
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results" / "memory.json")
    parser.add_argument(
        "--reuse",
        type=Path,
        help="a folder a run left (its etcd data holds the objects already): only start the operator on it and measure",
    )
    args = parser.parse_args(argv)
    bin_dir = os.environ.get("NIGHTSHIFT_BIN_DIR")
    if not bin_dir:
        print("NIGHTSHIFT_BIN_DIR is not set (use `make bench`)", file=sys.stderr)
        return 2
    workdir = args.reuse or Path(tempfile.mkdtemp(prefix="nightshift-memory-"))
    cp = ControlPlane(
        workdir / "cluster", bin_dir=Path(bin_dir), local_node=False, kwok=True, quiet=True, keep_data=bool(args.reuse)
    )
    op: Operator | None = None
    t0, load0 = time.monotonic(), os.getloadavg()
    try:
        cp.start()
        op = Operator(cp, workdir)
        kubectl = Kubectl(cp)
        api = Api(cp)
        out: dict[str, Any] = {"bgjs": args.bgjs, "jobs": args.jobs}
        if args.reuse:
            t_start = time.monotonic()
            op.start(timeout=1800, NIGHTSHIFT_NAMESPACES=json.dumps([NS]))
            out["start_to_ready_s"] = time.monotonic() - t_start
            out["jobs_rss"] = at_rest(op, "started on the reused objects")
            out["peak_rss"] = rss_mib(proc_pid(op), "VmHWM")
            print(json.dumps(out, indent=2))
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(json.dumps(out, indent=2))
            return 0
        install_crds(cp)
        kubectl("create", "namespace", NS)
        op.start(NIGHTSHIFT_NAMESPACES=json.dumps([NS]))
        out["empty"] = at_rest(op, "empty")
        jobs = create_bgjs(api, args.bgjs)
        deadline = time.monotonic() + 600 + args.bgjs * 0.1
        while (n := ready_count(api)) < args.bgjs:
            if time.monotonic() > deadline:
                raise TimeoutError(f"only {n}/{args.bgjs} BackgroundJobs Ready")
            time.sleep(5)
        out["bgjs_rss"] = at_rest(op, f"{args.bgjs} BackgroundJobs")
        # seeded with the operator stopped (the API server's two cores go to the writes), then the
        # operator starts and lists everything, as after any restart
        op.stop()
        seed(api, jobs, args.jobs)
        t_start = time.monotonic()
        op.start(timeout=1800, NIGHTSHIFT_NAMESPACES=json.dumps([NS]))  # returns once /readyz says ready
        out["start_to_ready_s"] = time.monotonic() - t_start
        out["jobs_rss"] = at_rest(op, f"{args.bgjs} BackgroundJobs and {args.jobs} finished Jobs, listed at start")
        out["peak_rss"] = rss_mib(proc_pid(op), "VmHWM")
        out["per_bgj_kib"] = (out["bgjs_rss"] - out["empty"]) * 1024 / max(1, args.bgjs)
        out["per_job_kib"] = (out["jobs_rss"] - out["bgjs_rss"]) * 1024 / max(1, args.jobs)
        out["wall_s"] = time.monotonic() - t0
        out["load"] = [load0, os.getloadavg()]
        print(
            "\n| operator RSS at rest (MiB) | |\n|---|---|\n"
            f"| empty | {out['empty']:.0f} |\n"
            f"| {args.bgjs:,} BackgroundJobs | {out['bgjs_rss']:.0f} |\n"
            f"| and {args.jobs:,} finished Jobs with their pods (operator started on them) | {out['jobs_rss']:.0f} |\n"
            f"| peak while listing them (VmHWM) | {out['peak_rss']:.0f} |\n"
            f"| start to ready (s) | {out['start_to_ready_s']:.0f} |\n"
            f"| per BackgroundJob (KiB) | {out['per_bgj_kib']:.1f} |\n"
            f"| per finished Job with its pod (KiB) | {out['per_job_kib']:.1f} |\n"
        )
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(out, indent=2))
        return 0
    except Exception:
        say(f"failed; logs in {workdir}")
        raise
    finally:
        if op is not None:
            op.stop()
        cp.stop()


if __name__ == "__main__":
    sys.exit(main())
