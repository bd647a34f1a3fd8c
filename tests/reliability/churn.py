"""R1: churn with kills. Hundreds of runs while the operator is SIGKILLed at random and
kube-controller-manager with it now and then; then the invariant checker.

The workload has every way a run comes about: scheduled jobs every minute (with RunAll and
RunLatest), a chain (runAfter), a dependency (dependsOn), retries with backoff that end Failed, a
non-retryable failure, queues with a concurrency bound and a rate limit, a stream of run requests
and a backfill. Pods run on the KWOK node (a run costs the API server, not a Python process), and
fail with the exit code a job asks for.

`make chaos` runs the long form (at least 500 runs, 50 operator kills, 5 controller-manager
kills; then two replicas with the leader killed 10 times) on a control plane of its own;
tests/integration/test_churn.py and test_failover.py run short forms on the test session's. The result is a line of counts and, on success, the checker's silence.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import random
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg

from tests.support import invariants
from tests.support.cluster import ControlPlane, kwok_pod_template
from tests.support.operatorproc import OperatorProcess, install_crds
from tests.support.postgres import PostgresServer

API = "nightshift.dev/v1alpha1"
OK, RETRYABLE, DATA_ERROR = 0, 75, 65


def say(msg: str) -> None:
    print(f"[churn {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


@dataclass
class Churn:
    """How much load and how many faults."""

    runs: int = 500  # at least this many runs (scheduled ones included) before the faults stop
    kills: int = 50  # operator SIGKILLs
    kcm_kills: int = 5  # kube-controller-manager SIGKILLs (it is started again 1-3 s later)
    scheduled: int = 12  # every-minute jobs
    request_rate: float = 1.0  # run requests per second
    seed: int = 1
    limit_s: float = 1200  # give up (and fail) after this long
    lease_s: int = 4  # with two replicas: the lease duration
    counts: dict[str, int] = field(default_factory=dict)
    takeovers: list[float] = field(default_factory=list)  # seconds from a leader's kill to a new leader

    def replica_env(self, name: str, lease: tuple[str, str]) -> dict[str, str]:
        return {
            "NIGHTSHIFT_POD_NAME": name,
            "NIGHTSHIFT_POD_NAMESPACE": lease[0],
            "NIGHTSHIFT_LEADER_ELECTION_LEASE": lease[1],
            "NIGHTSHIFT_LEASE_DURATION_SECONDS": str(self.lease_s),
        }


def _job(exit_code: int = OK) -> dict[str, Any]:
    """A job whose pod goes to the KWOK node and ends with `exit_code`."""
    job: dict[str, Any] = {"image": "nightshift:test", "command": ["true"], **kwok_pod_template()}
    if exit_code:
        job["labels"] = {"kwok.nightshift.dev/fail": "true"}
        job["annotations"] = {"kwok.nightshift.dev/exit-code": str(exit_code)}
    return job


def _bgj(name: str, ns: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": API, "kind": "BackgroundJob", "metadata": {"name": name, "namespace": ns}, "spec": spec}


def workload(ns: str, c: Churn) -> list[dict[str, Any]]:
    retry = {"limit": 2, "backoff": {"initial": "2s", "factor": 1, "max": "2s", "jitter": 0}}
    objs: list[dict[str, Any]] = [
        {
            "apiVersion": API,
            "kind": "BackgroundJobQueue",
            "metadata": {"name": "narrow", "namespace": ns},
            "spec": {"concurrency": 2},
        },
        {
            "apiVersion": API,
            "kind": "BackgroundJobQueue",
            "metadata": {"name": "metered", "namespace": ns},
            "spec": {"concurrency": 4, "rateLimit": {"runs": 60, "per": "1m"}},
        },
    ]
    for i in range(c.scheduled):
        spec: dict[str, Any] = {
            "schedule": "* * * * *",
            "missedRuns": "RunAll" if i % 2 == 0 else "RunLatest",
            "concurrencyPolicy": "Allow" if i % 3 == 0 else "Forbid",
            "history": {"successful": 2, "failed": 2},
            "job": _job(),
        }
        if i % 4 == 1:
            spec["queue"] = "narrow"
        objs.append(_bgj(f"every-minute-{i}", ns, spec))
    objs += [
        _bgj("flaky", ns, {"schedule": "* * * * *", "retry": retry, "history": {"failed": 2}, "job": _job(RETRYABLE)}),
        _bgj("chained", ns, {"runAfter": ["every-minute-0"], "job": _job()}),
        _bgj("needs-upstream", ns, {"dependsOn": [{"name": "every-minute-1", "within": "1h"}], "job": _job()}),
        _bgj("bad-data", ns, {"retry": retry, "job": _job(DATA_ERROR)}),
        _bgj("backfilled", ns, {"schedule": "0 3 * * *", "job": _job()}),
    ]
    objs += [
        _bgj(
            f"on-demand-{i}",
            ns,
            {"queue": "metered" if i % 2 else "narrow", "history": {"successful": 3}, "job": _job()},
        )
        for i in range(6)
    ]
    return objs


def _request(ns: str, name: str, job: str, scheduled: dt.datetime | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {"backgroundJob": job, "reason": "churn"}
    if scheduled is not None:
        spec["scheduledTime"] = scheduled.strftime("%Y-%m-%dT%H:%M:%SZ")
    return {"apiVersion": API, "kind": "BackgroundJobRun", "metadata": {"name": name, "namespace": ns}, "spec": spec}


def _apply(cp: ControlPlane, objs: list[dict[str, Any]]) -> None:
    cp.kubectl("apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List", "items": objs}))


def _runs_so_far(dsn: str, ns: str) -> int:
    """Runs that ended, from history: Jobs are pruned by the history limits, rows are not."""
    with psycopg.connect(dsn) as conn:
        try:
            row = conn.execute(
                "SELECT count(DISTINCT run_id) FROM nightshift_attempts WHERE namespace = %s", (ns,)
            ).fetchone()
        except psycopg.errors.UndefinedTable:
            return 0
    return int(row[0]) if row else 0


def holder(cp: ControlPlane, lease: tuple[str, str]) -> str | None:
    got = cp.kubectl(
        "get", "lease", lease[1], "-n", lease[0], "-o", "jsonpath={.spec.holderIdentity}", check=False
    ).strip()
    return got or None


def kill_leader(cp: ControlPlane, ops: dict[str, OperatorProcess], lease: tuple[str, str], c: Churn) -> float:
    """SIGKILL whichever replica holds the lease; return how long until another one holds it."""
    t0 = time.monotonic()
    while (leader := holder(cp, lease)) not in ops:
        if time.monotonic() - t0 > 60:
            raise AssertionError(f"no replica holds {lease} after 60s")
        time.sleep(0.2)
    ops[leader].stop(kill=True)
    killed = time.monotonic()
    while (now := holder(cp, lease)) in (leader, None):
        if time.monotonic() - killed > 120:
            raise AssertionError(f"no replica took {lease} over from {leader} in 120s")
        time.sleep(0.2)
    took = time.monotonic() - killed
    c.takeovers.append(took)
    say(f"{leader} killed; {now} leads after {took:.1f}s")
    ops[leader].start(60, **c.replica_env(leader, lease))
    return took


def run(
    cp: ControlPlane,
    op: OperatorProcess,
    ns: str,
    c: Churn,
    *,
    standby: OperatorProcess | None = None,
    lease: tuple[str, str] | None = None,
) -> invariants.Evidence:
    """The scenario on a running control plane and operator (with a history store); returns what the
    checker read.

    With a standby and a lease (both replicas started with `Churn.replica_env`), each kill is of the
    current leader, and the time until the other one leads is kept in `c.takeovers`.
    """
    rng = random.Random(c.seed)
    t0 = time.monotonic()
    cp.kubectl("create", "namespace", ns)
    _apply(cp, workload(ns, c))
    today = dt.datetime.now(dt.UTC).replace(hour=3, minute=0, second=0, microsecond=0)
    backfill = [_request(ns, f"backfill-{d}", "backfilled", today - dt.timedelta(days=d)) for d in range(1, 8)]
    _apply(cp, backfill)
    stop = threading.Event()
    made = {"requests": len(backfill), "kills": 0, "kcm_kills": 0}

    def requests() -> None:
        n = 0
        jobs = [f"on-demand-{i}" for i in range(6)] + ["needs-upstream", "bad-data"]
        while not stop.is_set() and made["requests"] < c.runs:  # scheduled runs come on top
            batch = [_request(ns, f"r-{n + k}", rng.choice(jobs)) for k in range(max(1, int(c.request_rate * 2)))]
            try:
                _apply(cp, batch)
                n += len(batch)
                made["requests"] += len(batch)
            except Exception as e:  # the API server is fine; a refused batch is retried with new names
                say(f"requests: {e}")
            stop.wait(2)

    feeder = threading.Thread(target=requests, daemon=True)
    feeder.start()
    try:
        kcm_every = max(1, c.kills // max(1, c.kcm_kills))
        while made["kills"] < c.kills or _runs_so_far(op.history_dsn, ns) < c.runs:
            if time.monotonic() - t0 > c.limit_s:
                raise AssertionError(
                    f"churn: not done after {c.limit_s}s: {made}, runs {_runs_so_far(op.history_dsn, ns)}"
                )
            time.sleep(rng.uniform(1.0, 6.0))
            if made["kills"] < c.kills and standby is not None and lease is not None:
                kill_leader(cp, {"op-a": op, "op-b": standby}, lease, c)
                made["kills"] += 1
            elif made["kills"] < c.kills:
                op.stop(kill=True)
                made["kills"] += 1
                if made["kcm_kills"] < c.kcm_kills and made["kills"] % kcm_every == 0:
                    cp.kill("kube-controller-manager")
                    made["kcm_kills"] += 1
                    time.sleep(rng.uniform(1.0, 3.0))
                    cp.start_again("kube-controller-manager")
                time.sleep(rng.uniform(0.0, 2.0))
                op.start()
            if made["kills"] % 10 == 0:
                say(f"{made}, runs {_runs_so_far(op.history_dsn, ns)}")
    finally:
        stop.set()
        feeder.join(timeout=30)
    # Quiesce: no new scheduled runs; what waits ends (or is skipped as suspended), then the checker.
    patch = json.dumps({"spec": {"suspend": True}})
    for o in workload(ns, c):
        if o["kind"] == "BackgroundJob" and "schedule" in o["spec"]:
            cp.kubectl("patch", "bgj", o["metadata"]["name"], "-n", ns, "--type=merge", "-p", patch)
    _wait_quiet(cp, ns, timeout=max(120.0, c.limit_s - (time.monotonic() - t0)))
    ev = invariants.assert_accounted(cp, ns, history_dsn=op.history_dsn or None, timeout=120)
    phases: dict[str, int] = {}
    for r in ev.requests.values():
        phase = (r.get("status") or {}).get("phase", "Pending")
        phases[phase] = phases.get(phase, 0) + 1
    assert set(phases) <= {"Succeeded", "Failed", "Skipped", "Cancelled"}, f"requests not ended: {phases}"
    ended: dict[str, int] = {}
    for _bgj_name, result in ev.ended().values():
        ended[result] = ended.get(result, 0) + 1
    c.counts = {
        **made,
        "runs": len(ev.ended()),
        "slots": ev.slots_checked,
        **{f"ended_{k.lower()}": v for k, v in ended.items()},
    }
    say(f"done in {time.monotonic() - t0:.0f}s: {c.counts}; requests {phases}")
    return ev


def _wait_quiet(cp: ControlPlane, ns: str, timeout: float) -> None:
    """Every request ended and no Job is still suspended (waiting) or active."""
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        reqs = json.loads(cp.kubectl("get", "backgroundjobruns", "-n", ns, "-o", "json"))["items"]
        jobs = json.loads(cp.kubectl("get", "jobs", "-n", ns, "-o", "json"))["items"]
        pending = [
            r["metadata"]["name"]
            for r in reqs
            if (r.get("status") or {}).get("phase") in (None, "Pending", "Waiting", "Running")
        ]
        busy = [
            j["metadata"]["name"]
            for j in jobs
            if not any(
                c.get("status") == "True" and c.get("type") in ("Complete", "Failed")
                for c in (j.get("status") or {}).get("conditions") or []
            )
            and not (j["metadata"].get("annotations") or {}).get("nightshift.dev/outcome")
        ]
        if not pending and not busy:
            return
        last = f"{len(pending)} requests and {len(busy)} Jobs not ended, e.g. {(pending + busy)[:5]}"
        time.sleep(2)
    raise AssertionError(f"churn did not quiesce in {timeout:.0f}s: {last}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tests.reliability.churn", description=__doc__.split("\n")[0])
    p.add_argument("--runs", type=int, default=500)
    p.add_argument("--kills", type=int, default=50)
    p.add_argument("--kcm-kills", type=int, default=5)
    p.add_argument("--failover-runs", type=int, default=100)
    p.add_argument("--failover-kills", type=int, default=10, help="leader kills with two replicas")
    p.add_argument("--seed", type=int, default=int(time.time()))
    p.add_argument("--keep", action="store_true", help="keep the control plane's directory")
    a = p.parse_args(argv)
    bin_dir = os.environ.get("NIGHTSHIFT_BIN_DIR")
    if not bin_dir:
        print("NIGHTSHIFT_BIN_DIR is not set (use `make chaos`)", file=sys.stderr)
        return 2
    workdir = Path(tempfile.mkdtemp(prefix="nightshift-chaos-"))
    say(f"seed {a.seed}; control plane in {workdir}")
    with ControlPlane(workdir / "cluster", bin_dir=Path(bin_dir), local_node=False, kwok=True, quiet=True) as cp:
        install_crds(cp)
        with PostgresServer() as pg:
            dsn = pg.create_database("nightshift_history")
            op = OperatorProcess(cp, workdir / "operator", history_dsn=dsn)
            op.start()
            try:
                c = Churn(runs=a.runs, kills=a.kills, kcm_kills=a.kcm_kills, seed=a.seed)
                run(cp, op, "chaos", c)
            finally:
                op.stop()
            # R5: two replicas electing a leader; each kill is of the leader
            f = Churn(runs=a.failover_runs, kills=a.failover_kills, kcm_kills=0, scheduled=4, seed=a.seed + 1)
            lease = ("default", "nightshift-chaos")
            first = OperatorProcess(cp, workdir / "op-a", history_dsn=dsn, webhook=False)
            second = OperatorProcess(cp, workdir / "op-b", history_dsn=dsn, webhook=False)
            try:
                first.start(60, **f.replica_env("op-a", lease))
                second.start(60, **f.replica_env("op-b", lease))
                run(cp, first, "failover", f, standby=second, lease=lease)
            finally:
                first.stop()
                second.stop()
    takeovers = {
        "takeover_median_s": round(statistics.median(f.takeovers), 1),
        "takeover_max_s": round(max(f.takeovers), 1),
    }
    print(json.dumps({"seed": a.seed, "churn": c.counts, "failover": {**f.counts, **takeovers}}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
