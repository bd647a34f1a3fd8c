"""The scale benchmark: one control plane, one operator, a baseline size and a 20x size, one run.

For each size it measures, over a fixed batch of K manual runs (run-now) on BackgroundJobs that each
already have the same number of finished runs:

- reconcile: mean of nightshift_reconcile_duration_seconds{kind="backgroundjob"} (histogram sum and
  count deltas over the window), and reconciles per run;
- gate: mean of nightshift_reconcile_duration_seconds{kind="gate"} over the same window;
- end-to-end latency from setting the run-now annotation to status.lastRun.result Succeeded (median,
  p90), seen on a watch;
- operator CPU seconds per run over the window, CPU at rest, and RSS at rest (/proc/<pid>).

The sizes differ only in how many BackgroundJobs and finished Jobs (and their pods) exist; the
measured jobs look the same in both (same spec, same number of finished runs), so a ratio near 1
means the per-event cost does not depend on how many objects the operator watches.

Then, for each `--apply` size N (1,000 by default; 10,000 when asked), three ways of making N
scheduled jobs, each in a namespace of its own, by a plain client with 8 requests in flight:
N plain CronJobs; the writes the operator must make, made directly (N BackgroundJobs, N CronJobs,
N status patches, in a namespace the operator does not serve); and N BackgroundJobs applied, until
the operator reports every one Ready. For each: wall time, the API server's requests by verb,
resource and code (apiserver_request_total deltas) per object, operator CPU; then the operator's
RSS per BackgroundJob and one /metrics scrape with the N more jobs. `--quick` (10/40 jobs, N=100)
runs in the test command and fails only when a count ratio regresses, never on a time.

Two more phases, each in a namespace of its own (issue 11, P3 and P4):

- gate (`--gate N`, 500): N runs asked for at once (BackgroundJobRuns, 10 per on-demand
  BackgroundJob) on one BackgroundJobQueue of concurrency 10; on a watch of its Jobs and pods, the
  time from each free slot (a finish seen while the queue was full and a run waited) to the
  admission it allowed (spec.suspend turning false), the queue's throughput against concurrency /
  mean run time, where a run's time goes (admission -> pod -> pod done -> Job finished), and the
  reconcile p50/p99 over the phase, estimated from the histogram's bucket deltas;
- status lag (`--lag RATE`, 50 a second): runs ending at RATE a second on `--lag-jobs` BackgroundJobs
  for `--lag-seconds`, each the newest run of its job, completed by the bench through the Job status
  subresource (as seed_history does); the time from each Complete written to its end shown in the
  job's status.lastRun, on a watch.
"""

from __future__ import annotations

import argparse
import datetime as dt
import http.client
import json
import os
import queue
import re
import shutil
import ssl
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from nightshift.api import names
from nightshift.api.models import BackgroundJobSpec
from nightshift.cli import requests
from nightshift.core import render
from nightshift.core import status as status_mod
from nightshift.settings import Settings
from tests.conftest import Kubectl, Operator, bgj
from tests.support.cluster import ControlPlane, kwok_pod_template
from tests.support.operatorproc import install_crds

NAMESPACE = "bench"
RESULTS_DIR = Path(__file__).resolve().parent / "results"
CLK_TCK = os.sysconf("SC_CLK_TCK")


def say(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# -- a small API client: keep-alive HTTPS with the control plane's admin certificate -------------------
class Api:
    def __init__(self, cp: ControlPlane) -> None:
        pki = cp.workdir / "pki"
        self.ctx = ssl.create_default_context(cafile=str(pki / "ca.crt"))
        self.ctx.load_cert_chain(str(pki / "admin.crt"), str(pki / "admin.key"))
        url = urlparse(cp.server)
        self.host, self.port = url.hostname or "127.0.0.1", url.port or 443
        self._local = threading.local()  # one keep-alive connection per thread

    def connect(self, timeout: float | None = 30) -> http.client.HTTPSConnection:
        return http.client.HTTPSConnection(self.host, self.port, context=self.ctx, timeout=timeout)

    def request(self, method: str, path: str, body: Any = None, content_type: str = "application/json") -> Any:
        data = None if body is None else json.dumps(body).encode()
        for attempt in range(3):
            conn: http.client.HTTPSConnection | None = getattr(self._local, "conn", None)
            if conn is None:
                conn = self._local.conn = self.connect()
            try:
                conn.request(method, path, body=data, headers={"Content-Type": content_type})
                resp = conn.getresponse()
                text = resp.read()
            except (OSError, http.client.HTTPException):
                conn.close()
                self._local.conn = None
                if attempt == 2:
                    raise
                continue
            if resp.status >= 400:
                raise RuntimeError(f"{method} {path}: {resp.status} {text[:300]!r}")
            return json.loads(text) if text else None
        return None

    def request_text(self, method: str, path: str) -> str:
        """A plain-text answer (the API server's /metrics)."""
        conn = self.connect()
        try:
            conn.request(method, path)
            resp = conn.getresponse()
            text = resp.read().decode()
        finally:
            conn.close()
        if resp.status >= 400:
            raise RuntimeError(f"{method} {path}: {resp.status} {text[:300]!r}")
        return text

    def annotate_run_now(self, name: str, nonce: str) -> None:
        self.request(
            "PATCH",
            f"/apis/nightshift.dev/v1alpha1/namespaces/{NAMESPACE}/backgroundjobs/{name}",
            {"metadata": {"annotations": {names.ANN_RUN_NOW: nonce}}},
            "application/merge-patch+json",
        )


class Watch(threading.Thread):
    """Watches the namespace's BackgroundJobs; remembers each one's lastRun and when it was first seen."""

    def __init__(self, api: Api, namespace: str = NAMESPACE) -> None:
        super().__init__(daemon=True)
        self.api = api
        self.namespace = namespace
        self.lock = threading.Lock()
        self.last: dict[str, tuple[str, str]] = {}  # name -> (lastRun.id, lastRun.result)
        self.seen: dict[tuple[str, str, str], float] = {}  # (name, run id, result) -> monotonic time
        self.events = 0
        self.stopping = False

    def run(self) -> None:
        path = f"/apis/nightshift.dev/v1alpha1/namespaces/{self.namespace}/backgroundjobs?watch=1"
        while True:
            try:
                conn = self.api.connect(timeout=None)
                conn.request("GET", path)
                resp = conn.getresponse()
                while line := resp.readline():
                    self._handle(json.loads(line))
            except Exception as e:  # reconnect; the first events of a new watch re-list every object
                if self.stopping:
                    return
                say(f"watch reconnecting after {e!r}")
                time.sleep(0.5)

    def _handle(self, ev: dict[str, Any]) -> None:
        obj = ev.get("object") or {}
        name = (obj.get("metadata") or {}).get("name")
        if not name or ev.get("type") not in ("ADDED", "MODIFIED"):
            return
        run = (obj.get("status") or {}).get("lastRun") or {}
        key = (str(run.get("id", "")), str(run.get("result", "")))
        now = time.monotonic()
        with self.lock:
            self.events += 1
            self.last[name] = key
            self.seen.setdefault((name, *key), now)

    def succeeded(self, name: str, run_id: str) -> float | None:
        with self.lock:
            return self.seen.get((name, run_id, "Succeeded"))

    def has_result(self, name: str, run_id: str) -> str | None:
        with self.lock:
            last = self.last.get(name)
        return last[1] if last and last[0] == run_id and last[1] else None


# -- operator metrics and process stats ---------------------------------------------------------------
_SAMPLE = re.compile(r'^nightshift_reconcile_duration_seconds_(sum|count)\{kind="(\w+)"\} (\S+)$', re.M)


def reconcile_totals(op: Operator) -> dict[str, float]:
    """{"backgroundjob_sum": .., "backgroundjob_count": .., "gate_sum": .., "gate_count": ..}"""
    out = {f"{k}_{f}": 0.0 for k in ("backgroundjob", "gate") for f in ("sum", "count")}
    for field, kind, value in _SAMPLE.findall(op.metrics()):
        out[f"{kind}_{field}"] = float(value)
    return out


def proc_pid(op: Operator) -> int:
    assert op.proc is not None
    return op.proc.pid


def rss_mib(pid: int, field: str = "VmRSS") -> float:
    """The process's resident set (VmHWM: its peak) in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime + stime


def wait_quiet(pid: int, settle: float = 3.0, timeout: float = 120.0) -> None:
    """Until the operator used under 2% of a CPU for `settle` seconds (the gate ticks on regardless).

    Watches /proc rather than /metrics: a scrape costs the operator time that grows with the number
    of per-job series, and would pollute the measurement.
    """
    deadline = time.monotonic() + timeout
    quiet_since = time.monotonic()
    while time.monotonic() < deadline:
        c0 = cpu_seconds(pid)
        time.sleep(0.5)
        if cpu_seconds(pid) - c0 > 0.01:
            quiet_since = time.monotonic()
        elif time.monotonic() - quiet_since >= settle:
            return
    say(f"operator not quiet after {timeout}s; measuring anyway")


def scrape_cost(op: Operator) -> tuple[float, float]:
    """(ms, KiB) of one /metrics scrape: per-job series make it grow with the number of jobs."""
    t0 = time.monotonic()
    size = len(op.metrics())
    return 1000 * (time.monotonic() - t0), size / 1024


# -- objects ------------------------------------------------------------------------------------------
def job_name(i: int) -> str:
    return f"bench-{i:04d}"


def bench_spec() -> dict[str, Any]:
    """On demand, runs go to KWOK; history limits high enough that the operator prunes none of them."""
    return {
        "job": {"image": "nightshift:bench", "command": ["true"], **kwok_pod_template()},
        "history": {"successful": 20, "failed": 20},
    }


def create_bgjs(kubectl: Kubectl, first: int, last: int) -> None:
    """BackgroundJobs first..last-1 (on demand, runs go to KWOK), in multi-item Lists of 100."""
    for start in range(first, last, 100):
        items = [bgj(job_name(i), NAMESPACE, bench_spec()) for i in range(start, min(last, start + 100))]
        kubectl.apply({"apiVersion": "v1", "kind": "List", "items": items})


def run_rounds(api: Api, watch: Watch, jobs: list[str], rounds: int, tag: str, in_flight: int = 40) -> None:
    """Give each job `rounds` finished manual runs, one after the other, at most `in_flight` at a time."""
    done = dict.fromkeys(jobs, 0)
    pending: dict[str, str] = {}  # job -> run id in flight
    t0, total = time.monotonic(), len(jobs) * rounds
    finished, last_report = 0, t0
    deadline = t0 + 60 + total * 2.0
    while finished < total:
        for job, run_id in list(pending.items()):
            result = watch.has_result(job, run_id)
            if result in ("Succeeded", "Failed", "Skipped", "Cancelled"):
                if result != "Succeeded":
                    say(f"{job}: run {run_id} ended {result}")
                del pending[job]
                done[job] += 1
                finished += 1
        for job in jobs:
            if len(pending) >= in_flight:
                break
            if job not in pending and done[job] < rounds:
                nonce = f"{tag}-{done[job]}"
                pending[job] = names.run_id(job, "manual", nonce)
                api.annotate_run_now(job, nonce)
        if time.monotonic() - last_report > 15:
            rate = finished / (time.monotonic() - t0)
            say(f"history {tag}: {finished}/{total} runs ({rate:.1f}/s)")
            last_report = time.monotonic()
        if time.monotonic() > deadline:
            raise TimeoutError(f"history {tag}: only {finished}/{total} runs finished")
        time.sleep(0.1)
    say(f"history {tag}: {total} runs in {time.monotonic() - t0:.0f}s")


def _ts(t: dt.datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


SEED_MANAGER = "bench.nightshift.dev/seed"  # spec.managedBy of the Jobs the bench finishes itself


def running_status(began: str) -> dict[str, Any]:
    """A seeded Job's status while it runs: started, one pod active (as the Job controller writes it)."""
    return {"startTime": began, "active": 1, "ready": 0, "terminating": 0, "uncountedTerminatedPods": {}}


def complete_status(began: str, ended: str) -> dict[str, Any]:
    """A seeded Job's status once its one pod succeeded: the Job controller's Complete, as it writes it."""
    cond = {
        "status": "True",
        "reason": "CompletionsReached",
        "message": "Reached expected number of succeeded pods",
    }
    return {
        "startTime": began,
        "completionTime": ended,
        "active": 0,
        "succeeded": 1,
        "ready": 0,
        "terminating": 0,
        "uncountedTerminatedPods": {},
        "conditions": [
            {**cond, "type": t, "lastTransitionTime": ended, "lastProbeTime": ended}
            for t in ("SuccessCriteriaMet", "Complete")
        ],
    }


def seeded_job(
    owner: render.Owner, spec: BackgroundJobSpec, settings: Settings, attempt: render.Attempt
) -> dict[str, Any]:
    """The Job the operator would create for `attempt`, started and owned by the bench (spec.managedBy:
    the Job controller leaves it alone), so the bench writes its status itself."""
    body = render.attempt_job(owner, spec, settings, attempt)
    body["spec"]["suspend"] = False
    body["spec"]["managedBy"] = SEED_MANAGER
    return body


def seeded_pod(job: dict[str, Any], created: dict[str, Any], **spec: Any) -> dict[str, Any]:
    """The pod of a seeded Job as the Job controller would make it (its labels, its owner); `spec`
    adds where it goes (the KWOK node, or no scheduler at all)."""
    name, namespace = created["metadata"]["name"], created["metadata"]["namespace"]
    template = job["spec"]["template"]
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": f"{name[:56]}-{names.digest(name, size=5)}",
            "namespace": namespace,
            "labels": {**template["metadata"]["labels"], "batch.kubernetes.io/job-name": name, "job-name": name},
            "ownerReferences": [
                {
                    "apiVersion": "batch/v1",
                    "kind": "Job",
                    "name": name,
                    "uid": created["metadata"]["uid"],
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
        },
        "spec": {**template["spec"], **spec},
    }


def seed_history(api: Api, jobs: list[str], rounds: int, workers: int = 4) -> None:
    """Finished runs without running them: per run, the Job the operator would have created (render),
    owned by an external controller (spec.managedBy) so the Job controller leaves it alone, with a
    Complete status, and its pod on the KWOK node, which KWOK completes.

    Real runs go through kube-controller-manager, whose client is rate limited (a few Jobs a second
    here); this creates the same objects a hundred times faster. The operator sees them exactly as it
    sees real finished runs: watch events of Jobs and pods with its labels.
    """
    t0 = time.monotonic()
    base = f"/apis/nightshift.dev/v1alpha1/namespaces/{NAMESPACE}/backgroundjobs"
    uids = {o["metadata"]["name"]: o["metadata"]["uid"] for o in api.request("GET", base)["items"]}
    spec = BackgroundJobSpec.model_validate(bench_spec())
    settings = Settings()
    start = dt.datetime.now(dt.UTC).replace(microsecond=0) - dt.timedelta(hours=rounds + 1)

    def one(job: str, r: int) -> None:
        owner = render.Owner(job, NAMESPACE, uids[job])
        when = start + dt.timedelta(hours=r)
        attempt = render.Attempt(names.run_id(job, "manual", f"seed-{r}"), trigger="manual", scheduled_time=when)
        body = seeded_job(owner, spec, settings, attempt)
        created = api.request("POST", f"/apis/batch/v1/namespaces/{NAMESPACE}/jobs", body)
        began, ended = _ts(when + dt.timedelta(seconds=1)), _ts(when + dt.timedelta(seconds=3))
        name = created["metadata"]["name"]
        api.request(
            "PATCH",
            f"/apis/batch/v1/namespaces/{NAMESPACE}/jobs/{name}/status",
            {"status": complete_status(began, ended)},
            "application/merge-patch+json",
        )
        api.request("POST", f"/api/v1/namespaces/{NAMESPACE}/pods", seeded_pod(body, created, nodeName="kwok-node-0"))

    with ThreadPoolExecutor(workers) as pool:
        for fut in [pool.submit(one, job, r) for r in range(rounds) for job in jobs]:
            fut.result()
    say(f"history seeded: {len(jobs) * rounds} finished Jobs with pods in {time.monotonic() - t0:.0f}s")


# -- one measurement ------------------------------------------------------------------------------------
def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    idx = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[idx]


def measure(op: Operator, api: Api, watch: Watch, jobs: list[str], tag: str, spacing: float) -> dict[str, float]:
    pid = proc_pid(op)
    wait_quiet(pid)
    scrape_ms, scrape_kib = scrape_cost(op)
    wait_quiet(pid, settle=1.0)
    rest_cpu0, rest_t0 = cpu_seconds(pid), time.monotonic()
    time.sleep(5)
    idle_cpu = (cpu_seconds(pid) - rest_cpu0) / (time.monotonic() - rest_t0)
    rss = rss_mib(pid)
    before, cpu0, w0 = reconcile_totals(op), cpu_seconds(pid), time.monotonic()
    started: dict[str, tuple[str, float]] = {}
    for job in jobs:
        nonce = f"measure-{tag}"
        started[job] = (names.run_id(job, "manual", nonce), time.monotonic())
        api.annotate_run_now(job, nonce)
        time.sleep(spacing)
    latencies: list[float] = []
    deadline = time.monotonic() + 180
    for job, (run_id, t0) in started.items():
        while (t1 := watch.succeeded(job, run_id)) is None:
            if (result := watch.has_result(job, run_id)) not in (None, "Running", "Waiting", "Retrying"):
                raise RuntimeError(f"{job}: measured run {run_id} ended {result}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"{job}: measured run {run_id} did not succeed")
            time.sleep(0.05)
        latencies.append(t1 - t0)
    wait_quiet(pid)
    cpu1, w1 = cpu_seconds(pid), time.monotonic()
    after = reconcile_totals(op)
    d = {k: after[k] - before[k] for k in before}
    # CPU per run: above the idle rate (gate ticks), over the whole window including the quiet wait.
    return {
        "reconcile_mean_ms": 1000 * d["backgroundjob_sum"] / max(1, d["backgroundjob_count"]),
        "reconciles_per_run": d["backgroundjob_count"] / len(jobs),
        "gate_mean_ms": 1000 * d["gate_sum"] / max(1, d["gate_count"]),
        "gate_passes": d["gate_count"],
        "e2e_median_s": statistics.median(latencies),
        "e2e_p90_s": percentile(latencies, 0.9),
        "cpu_ms_per_run": 1000 * max(0.0, (cpu1 - cpu0) - idle_cpu * (w1 - w0)) / len(jobs),
        "idle_cpu_pct": 100 * idle_cpu,
        "rss_mib": rss,
        "metrics_scrape_ms": scrape_ms,
        "metrics_kib": scrape_kib,
    }


# -- apply: N BackgroundJobs against the same writes made directly, and against N plain CronJobs ---------
APPLY_NS = {"plain": "apply-plain", "direct": "apply-direct", "operator": "apply-op"}
APPLY_WORKERS = 8  # concurrent requests of the plain client, as many as the operator's reconcile workers
_REQ = re.compile(r"^apiserver_request_total\{([^}]*)\} (\S+)$", re.M)
_LABEL = re.compile(r'(\w+)="([^"]*)"')


def apply_spec() -> dict[str, Any]:
    """A scheduled job (so it has a CronJob) whose schedule fires once a year: nothing runs meanwhile."""
    return {"schedule": "0 3 1 1 *", "job": {"image": "nightshift:bench", "command": ["true"], **kwok_pod_template()}}


def api_requests(api: Api) -> dict[tuple[str, str, str], float]:
    """The API server's own count of the requests it answered: (verb, resource[/subresource], code) -> n."""
    text = api.request_text("GET", "/metrics")
    out: dict[tuple[str, str, str], float] = {}
    for labels, value in _REQ.findall(text):
        lab = dict(_LABEL.findall(labels))
        if lab.get("verb") in ("WATCH", "CONNECT") or not lab.get("resource"):
            continue
        resource = lab["resource"] + (f"/{lab['subresource']}" if lab.get("subresource") else "")
        key = (lab["verb"], resource, lab.get("code", ""))
        out[key] = out.get(key, 0.0) + float(value)
    return out


def request_delta(
    before: dict[tuple[str, str, str], float], after: dict[tuple[str, str, str], float]
) -> dict[str, float]:
    """Requests made between two readings, as "VERB resource code" -> count (leases, nodes and other
    background traffic of the control plane included: the table shows them per object, so they fade)."""
    out = {}
    for key, value in after.items():
        d = value - before.get(key, 0.0)
        if d > 0:
            out[" ".join(key)] = d
    return out


class ReadyWatch(threading.Thread):
    """Counts the BackgroundJobs of one namespace whose status says Ready=True for their generation."""

    def __init__(self, api: Api, namespace: str) -> None:
        super().__init__(daemon=True)
        self.api, self.namespace = api, namespace
        self.ready: set[str] = set()
        self.lock = threading.Lock()
        self.stopping = False

    def run(self) -> None:
        path = f"/apis/nightshift.dev/v1alpha1/namespaces/{self.namespace}/backgroundjobs?watch=1"
        while not self.stopping:
            try:
                conn = self.api.connect(timeout=None)
                conn.request("GET", path)
                resp = conn.getresponse()
                while line := resp.readline():
                    obj = json.loads(line).get("object") or {}
                    md, st = obj.get("metadata") or {}, obj.get("status") or {}
                    ok = st.get("observedGeneration") == md.get("generation") and any(
                        c.get("type") == "Ready" and c.get("status") == "True" for c in st.get("conditions") or []
                    )
                    if ok and st.get("cronJob"):
                        with self.lock:
                            self.ready.add(md.get("name", ""))
            except Exception:
                if self.stopping:
                    return
                time.sleep(0.5)

    def count(self) -> int:
        with self.lock:
            return len(self.ready)


def _parallel(n: int, one: Any) -> None:
    with ThreadPoolExecutor(APPLY_WORKERS) as pool:
        for fut in [pool.submit(one, i) for i in range(n)]:
            fut.result()


def apply_phase(api: Api, op: Operator, kind: str, n: int, spaces: list[str]) -> dict[str, Any]:
    """One way of making N scheduled jobs, round-robin over `spaces`: its wall time and the API
    requests it cost."""
    spec = BackgroundJobSpec.model_validate(apply_spec())
    settings = Settings()
    pid = proc_pid(op)
    wait_quiet(pid, settle=2.0)
    before, cpu0, t0 = api_requests(api), cpu_seconds(pid), time.monotonic()
    watches: list[ReadyWatch] = []

    def name(i: int) -> str:
        return f"job-{i:05d}"

    def where(i: int) -> tuple[str, str, str]:
        ns = spaces[i % len(spaces)]
        return (
            ns,
            f"/apis/nightshift.dev/v1alpha1/namespaces/{ns}/backgroundjobs",
            f"/apis/batch/v1/namespaces/{ns}/cronjobs",
        )

    if kind == "plain":

        def one(i: int) -> None:
            ns, _, cronjobs = where(i)
            body = render.cronjob(render.Owner(name(i), ns, "0"), spec, settings)
            assert body is not None
            body["metadata"].pop("ownerReferences", None)  # no owner: the garbage collector would remove it
            api.request("POST", cronjobs, body)

        _parallel(n, one)
    elif kind == "direct":

        def one(i: int) -> None:
            ns, bgjs, cronjobs = where(i)
            created = api.request("POST", bgjs, bgj(name(i), ns, apply_spec()))
            owner = render.Owner(name(i), ns, created["metadata"]["uid"])
            body = render.cronjob(owner, spec, settings)
            api.request("POST", cronjobs, body)
            st = status_mod.build(spec, [], {}, generation=1, now=dt.datetime.now(dt.UTC), cron_job=name(i))
            api.request(
                "PATCH",
                f"{bgjs}/{name(i)}/status",
                [{"op": "add", "path": "/status", "value": st}],
                "application/json-patch+json",
            )

        _parallel(n, one)
    else:
        watches = [ReadyWatch(api, ns) for ns in spaces]
        for w in watches:
            w.start()
        _parallel(n, lambda i: api.request("POST", where(i)[1], bgj(name(i), where(i)[0], apply_spec())))
        deadline = time.monotonic() + 120 + n * 0.2
        while (ready := sum(w.count() for w in watches)) < n:
            if time.monotonic() > deadline:
                raise TimeoutError(f"apply: only {ready}/{n} BackgroundJobs Ready")
            time.sleep(0.05)
    wall = time.monotonic() - t0
    wait_quiet(pid, settle=3.0)  # follow-up passes (the watch bringing the CronJobs) count too
    cpu = cpu_seconds(pid) - cpu0
    for w in watches:
        w.stopping = True
    requests = request_delta(before, api_requests(api))
    say(f"apply {kind}: {n} in {wall:.1f}s; requests {sorted(requests.items(), key=lambda kv: -kv[1])[:8]}")
    return {"n": n, "seconds": wall, "operator_cpu_s": cpu, "requests": requests}


# -- watches and histograms for the gate and status-lag phases -------------------------------------------
class EventWatch(threading.Thread):
    """A watch on one collection, handing every event to `handle(type, object, monotonic time of arrival)`.

    Resumes from the last resourceVersion after a dropped connection (a 410 starts over with a list,
    whose ADDED events the handlers take as a repeat of what they know)."""

    def __init__(self, api: Api, path: str, handle: Callable[[str, dict[str, Any], float], None]) -> None:
        super().__init__(daemon=True)
        self.api, self.path, self.handle = api, path, handle
        self.stopping = False

    def run(self) -> None:
        rv = ""
        while not self.stopping:
            try:
                conn = self.api.connect(timeout=None)
                conn.request("GET", f"{self.path}?watch=1&allowWatchBookmarks=true&resourceVersion={rv}")
                resp = conn.getresponse()
                while line := resp.readline():
                    t = time.monotonic()
                    ev = json.loads(line)
                    obj = ev.get("object") or {}
                    if ev.get("type") == "ERROR":  # 410 Gone: too old to resume from
                        rv = ""
                        break
                    rv = (obj.get("metadata") or {}).get("resourceVersion", rv)
                    if ev.get("type") != "BOOKMARK":
                        self.handle(ev["type"], obj, t)
            except Exception as e:
                if self.stopping:
                    return
                say(f"watch {self.path} reconnecting after {e!r}")
                time.sleep(0.5)


_BUCKET = re.compile(r'^nightshift_reconcile_duration_seconds_bucket\{kind="(\w+)",le="([^"]+)"\} (\S+)$', re.M)


def reconcile_buckets(op: Operator) -> dict[str, dict[float, float]]:
    """kind -> {upper bound: cumulative count} of nightshift_reconcile_duration_seconds."""
    out: dict[str, dict[float, float]] = {}
    for kind, le, value in _BUCKET.findall(op.metrics()):
        out.setdefault(kind, {})[float(le)] = float(value)
    return out


def bucket_quantile(before: dict[float, float], after: dict[float, float], q: float) -> tuple[float, int]:
    """(estimated q-quantile in seconds, observations) of the observations made between two readings.

    As Prometheus' histogram_quantile: the bucket holding the q-th observation, linearly interpolated
    between its bounds; in the +Inf bucket, the highest finite bound (a lower bound, then)."""
    bounds = sorted(after)
    cum = [after[b] - before.get(b, 0.0) for b in bounds]
    total = cum[-1] if cum else 0.0
    if total <= 0:
        return float("nan"), 0
    rank = q * total
    lower, below = 0.0, 0.0
    for bound, c in zip(bounds, cum, strict=True):
        if c >= rank:
            if bound == float("inf"):
                return lower, int(total)
            return lower + (bound - lower) * (rank - below) / max(1e-9, c - below), int(total)
        lower, below = bound, c
    return lower, int(total)


def reconcile_quantiles(before: dict[str, dict[float, float]], after: dict[str, dict[float, float]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for kind in ("backgroundjob", "backgroundjob_plan", "gate"):
        p50, n = bucket_quantile(before.get(kind, {}), after.get(kind, {}), 0.5)
        p99, _ = bucket_quantile(before.get(kind, {}), after.get(kind, {}), 0.99)
        out[kind] = {"count": n, "p50_ms": 1000 * p50, "p99_ms": 1000 * p99}
    return out


def spread(values: list[float]) -> dict[str, float]:
    """n, p50, p99, max and mean of `values` (seconds), nan when there are none."""
    if not values:
        return {"n": 0, "p50": float("nan"), "p99": float("nan"), "max": float("nan"), "mean": float("nan")}
    return {
        "n": len(values),
        "p50": percentile(values, 0.5),
        "p99": percentile(values, 0.99),
        "max": max(values),
        "mean": statistics.fmean(values),
    }


def _finished(job: dict[str, Any]) -> bool:
    conds = (job.get("status") or {}).get("conditions") or []
    return any(c.get("type") in ("Complete", "Failed") and c.get("status") == "True" for c in conds)


# -- P3: the gate with many runs waiting on one queue --------------------------------------------------
GATE_NS = "bench-gate"
GATE_QUEUE = "bench-queue"
GATE_CONCURRENCY = 10
GATE_RUNS_PER_JOB = 10


class GateMeter:
    """Follows the queue's Jobs and pods on two watches: admissions, finishes, pods, and the free slots.

    A free slot is a finish seen while the queue was full (the Jobs admitted and not finished, plus
    the slots freed and not yet refilled, make its concurrency) and a Job waited; each admission seen
    takes the oldest free slot, if there is one: the first admissions, into an empty queue, take none.
    """

    def __init__(self, concurrency: int) -> None:
        self.concurrency = concurrency
        self.lock = threading.Lock()
        self.created: dict[str, float] = {}
        self.admitted: dict[str, float] = {}
        self.finished: dict[str, float] = {}
        self.failed: set[str] = set()
        self.pod_created: dict[str, float] = {}
        self.pod_done: dict[str, float] = {}
        self.free: list[float] = []  # free slots not yet taken, oldest first
        self.gaps: list[float] = []  # free slot -> admission, seconds
        self.gap_at: list[float] = []  # when each of those admissions was seen
        self.running = 0
        self.max_running = 0

    def on_job(self, kind: str, job: dict[str, Any], t: float) -> None:
        md = job.get("metadata") or {}
        name = md.get("name", "")
        if kind == "DELETED" or (md.get("annotations") or {}).get(names.ANN_QUEUE) != GATE_QUEUE:
            return
        with self.lock:
            self.created.setdefault(name, t)
            if not (job.get("spec") or {}).get("suspend") and name not in self.admitted:
                self.admitted[name] = t
                self.running += 1
                self.max_running = max(self.max_running, self.running)
                if self.free:
                    self.gaps.append(t - self.free.pop(0))
                    self.gap_at.append(t)
            if _finished(job) and name in self.admitted and name not in self.finished:
                self.finished[name] = t
                if any(c.get("type") == "Failed" for c in (job.get("status") or {}).get("conditions") or []):
                    self.failed.add(name)
                waiting = len(self.created) - len(self.admitted)
                if self.running + len(self.free) >= self.concurrency and waiting > 0:
                    self.free.append(t)
                self.running -= 1

    def on_pod(self, kind: str, pod: dict[str, Any], t: float) -> None:
        job = ((pod.get("metadata") or {}).get("labels") or {}).get("batch.kubernetes.io/job-name")
        if not job or kind == "DELETED":
            return
        with self.lock:
            self.pod_created.setdefault(job, t)
            if (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed"):
                self.pod_done.setdefault(job, t)

    def done(self) -> int:
        with self.lock:
            return len(self.finished)


def gate_phase(api: Api, op: Operator, n: int) -> dict[str, Any]:
    """P3: `n` runs asked for at once (BackgroundJobRuns, 10 per on-demand BackgroundJob) on one queue of
    concurrency 10; the time from each free slot to the admission it allowed, the queue's throughput
    against what its concurrency allows with this control plane's run time, and where that time goes."""
    pid = proc_pid(op)
    base = f"/apis/nightshift.dev/v1alpha1/namespaces/{GATE_NS}"
    n_jobs = max(1, -(-n // GATE_RUNS_PER_JOB))
    api.request(
        "POST",
        f"{base}/backgroundjobqueues",
        {
            "apiVersion": "nightshift.dev/v1alpha1",
            "kind": "BackgroundJobQueue",
            "metadata": {"name": GATE_QUEUE, "namespace": GATE_NS},
            "spec": {"concurrency": GATE_CONCURRENCY},
        },
    )
    spec = {**bench_spec(), "queue": GATE_QUEUE, "concurrencyPolicy": "Allow"}  # Allow: a job's runs queue up
    jobs = [api.request("POST", f"{base}/backgroundjobs", bgj(f"gate-{i:03d}", GATE_NS, spec)) for i in range(n_jobs)]
    meter = GateMeter(GATE_CONCURRENCY)
    watches = [
        EventWatch(api, f"/apis/batch/v1/namespaces/{GATE_NS}/jobs", meter.on_job),
        EventWatch(api, f"/api/v1/namespaces/{GATE_NS}/pods", meter.on_pod),
    ]
    for w in watches:
        w.start()
    wait_quiet(pid)
    before, cpu0, t0 = reconcile_buckets(op), cpu_seconds(pid), time.monotonic()
    asks = [(jobs[i % n_jobs], f"{jobs[i % n_jobs]['metadata']['name']}-r{i // n_jobs:03d}") for i in range(n)]
    with ThreadPoolExecutor(APPLY_WORKERS) as pool:
        for fut in [
            pool.submit(api.request, "POST", f"{base}/backgroundjobruns", requests.body(j, r)) for j, r in asks
        ]:
            fut.result()
    t_asked = time.monotonic()
    say(f"gate: {n} runs asked for on {n_jobs} BackgroundJobs in {t_asked - t0:.1f}s")
    deadline, last_report = t0 + 120 + 2.0 * n, t0
    intake: tuple[float, dict[str, dict[float, float]]] | None = None  # when every run's Job existed
    while meter.done() < n:
        if intake is None and len(meter.created) >= n:
            intake = (time.monotonic(), reconcile_buckets(op))
        if time.monotonic() > deadline:
            raise TimeoutError(f"gate: only {meter.done()}/{n} runs finished")
        if time.monotonic() - last_report > 15:
            last_report = time.monotonic()
            say(f"gate: {meter.done()}/{n} runs finished, {len(meter.gaps)} admissions measured")
        time.sleep(0.2)
    wait_quiet(pid)
    cpu = cpu_seconds(pid) - cpu0
    after = reconcile_buckets(op)
    for w in watches:
        w.stopping = True
    with meter.lock:
        admitted, finished = dict(meter.admitted), dict(meter.finished)
        pod_created, pod_done = dict(meter.pod_created), dict(meter.pod_done)
        gaps, failed, max_running = list(meter.gaps), len(meter.failed), meter.max_running
        gap_at = list(meter.gap_at)
    t_intake = intake[0] if intake else t0
    first, last = min(admitted.values()), max(finished.values())
    run_time = [finished[j] - admitted[j] for j in finished]
    busy = sum(run_time)  # slot-seconds the queue's runs held between the first admission and the last finish
    bound = GATE_CONCURRENCY / statistics.fmean(run_time)

    def legs(a: dict[str, float], b: dict[str, float]) -> dict[str, float]:
        return spread([b[j] - a[j] for j in finished if j in a and j in b])

    result = {
        "runs": n,
        "backgroundjobs": n_jobs,
        "concurrency": GATE_CONCURRENCY,
        "asked_s": t_asked - t0,
        "admitted": len(admitted),
        "finished": len(finished),
        "failed": failed,
        "max_running_seen": max_running,
        "slot_to_admission_s": spread(gaps),
        "throughput_runs_per_s": len(finished) / (last - first),
        "bound_runs_per_s": bound,  # concurrency / mean(admission -> finished): the queue's limit at this run time
        "occupancy": busy / (GATE_CONCURRENCY * (last - first)),
        "wall_s": last - t0,
        "admission_to_pod_s": legs(admitted, pod_created),
        "pod_to_pod_done_s": legs(pod_created, pod_done),
        "pod_done_to_finished_s": legs(pod_done, finished),
        "admission_to_finished_s": spread(run_time),
        "operator_cpu_s": cpu,
        "reconcile": reconcile_quantiles(before, after),
        # the same split at the moment every run's Job existed: the intake of the N requests (a
        # pass creates its job's Jobs), then the queue draining (admissions and ends only)
        "intake_s": intake[0] - t0 if intake else None,
        # free slot -> admission while the requests still became Jobs (the API server busy with the
        # intake's creates), and after
        "slot_to_admission_intake_s": spread([g for g, at in zip(gaps, gap_at, strict=True) if at <= t_intake]),
        "slot_to_admission_draining_s": spread([g for g, at in zip(gaps, gap_at, strict=True) if at > t_intake]),
        "reconcile_intake": reconcile_quantiles(before, intake[1]) if intake else None,
        "reconcile_draining": reconcile_quantiles(intake[1], after) if intake else None,
    }
    say(f"gate: {result}")
    return result


def gate_table(r: dict[str, Any]) -> str:
    gap, rec = r["slot_to_admission_s"], r["reconcile"]

    def ms(x: dict[str, float]) -> str:
        return f"{1000 * x['p50']:>10.0f} {1000 * x['p99']:>10.0f} {1000 * x['max']:>10.0f}"

    lines = [
        f"{'gate: ' + str(r['runs']) + ' runs on a queue of ' + str(r['concurrency']):40} {'p50':>10} {'p99':>10} {'max':>10}",
        f"{'free slot -> admission (ms)':40} {ms(gap)}",
        f"{'  admissions measured / runs':40} {gap['n']:>10} {r['runs']:>10}",
    ]
    for label, key in (("intake", "slot_to_admission_intake_s"), ("draining", "slot_to_admission_draining_s")):
        part = r.get(key)
        if part and part.get("n"):
            lines.append(f"{'  ' + label + ' (' + str(part['n']) + ')':40} {ms(part)}")
    lines += [
        f"{'admission -> pod created (ms)':40} {ms(r['admission_to_pod_s'])}",
        f"{'pod created -> pod finished (ms)':40} {ms(r['pod_to_pod_done_s'])}",
        f"{'pod finished -> Job finished (ms)':40} {ms(r['pod_done_to_finished_s'])}",
        f"{'admission -> Job finished (ms)':40} {ms(r['admission_to_finished_s'])}",
        f"{'throughput (runs/s)':40} {r['throughput_runs_per_s']:>10.2f}",
        f"{'  concurrency / mean run time (runs/s)':40} {r['bound_runs_per_s']:>10.2f}",
        f"{'  slots busy (occupancy)':40} {100 * r['occupancy']:>9.0f}%",
        f"{'most runs admitted at once (seen)':40} {r['max_running_seen']:>10}",
        f"{'reconcile backgroundjob p50 / p99 (ms)':40} {rec['backgroundjob']['p50_ms']:>10.0f}"
        f" {rec['backgroundjob']['p99_ms']:>10.0f}   ({rec['backgroundjob']['count']} passes, from buckets)",
        f"{'  of it observe + plan p50 / p99 (ms)':40} {rec['backgroundjob_plan']['p50_ms']:>10.0f}"
        f" {rec['backgroundjob_plan']['p99_ms']:>10.0f}   (the operator's own time; buckets from 5 ms)",
        f"{'gate pass p50 / p99 (ms)':40} {rec['gate']['p50_ms']:>10.0f} {rec['gate']['p99_ms']:>10.0f}"
        f"   ({rec['gate']['count']} passes, from buckets)",
    ]
    for label, key in (("intake", "reconcile_intake"), ("draining", "reconcile_draining")):
        if r.get(key):
            part = r[key]["backgroundjob"]
            when = f"first {r['intake_s']:.0f} s" if key == "reconcile_intake" else "the rest"
            lines.append(
                f"{'  ' + label + ' (' + when + ') p50 / p99 (ms)':40} {part['p50_ms']:>10.0f} {part['p99_ms']:>10.0f}"
                f"   ({part['count']} passes)"
            )
    lines.append(f"{'operator CPU per run (ms)':40} {1000 * r['operator_cpu_s'] / r['runs']:>10.1f}")
    return "\n".join(lines)


# -- P4: status lag at a given rate of run completions -------------------------------------------------
LAG_NS = "bench-lag"


def lag_phase(api: Api, op: Operator, rate: float, n_jobs: int, seconds: float) -> dict[str, Any]:
    """P4: runs ending at `rate` per second, the time from each one's Complete condition written to
    its BackgroundJob's status.lastRun showing it Succeeded.

    The runs are the Jobs the operator would create (render.attempt_job), each the newest run of its
    BackgroundJob, started (status startTime and one active pod, as the Job controller writes it)
    and completed by the bench through the status subresource, with spec.managedBy so the Job
    controller leaves them alone (and without pods: a run's result comes from the Job's condition).
    Each job's next run is started once the watch saw the previous one's end in lastRun, so at the
    rate asked for as many runs start as end, and every end is measured; a job's runs end every
    n_jobs / rate seconds."""
    pid = proc_pid(op)
    base = f"/apis/nightshift.dev/v1alpha1/namespaces/{LAG_NS}/backgroundjobs"
    jobs_path = f"/apis/batch/v1/namespaces/{LAG_NS}/jobs"
    rounds = max(1, -(-int(rate * seconds) // n_jobs))
    total = n_jobs * rounds
    watch = Watch(api, LAG_NS)
    watch.start()
    names_ = [f"lag-{i:04d}" for i in range(n_jobs)]
    spec_body = bench_spec()
    _parallel(n_jobs, lambda i: api.request("POST", base, bgj(names_[i], LAG_NS, spec_body)))
    uids = {o["metadata"]["name"]: o["metadata"]["uid"] for o in api.request("GET", base)["items"]}
    spec = BackgroundJobSpec.model_validate(spec_body)
    settings = Settings()
    last_sched: dict[str, dt.datetime] = {}
    ready: queue.Queue[tuple[str, str, int, str]] = queue.Queue()  # (job, run id, round, startTime) to end
    written: queue.Queue[tuple[str, str, int, float, float]] = queue.Queue()  # + (sent, written) times

    def start_run(job: str, r: int) -> None:
        now = dt.datetime.now(dt.UTC).replace(microsecond=0)
        when = max(now, last_sched.get(job, now - dt.timedelta(seconds=1)) + dt.timedelta(seconds=1))
        last_sched[job] = when  # strictly later than the job's previous run: it is the newest
        attempt = render.Attempt(names.run_id(job, "manual", f"lag-{r}"), trigger="manual", scheduled_time=when)
        body = seeded_job(render.Owner(job, LAG_NS, uids[job]), spec, settings, attempt)
        created = api.request("POST", jobs_path, body)
        api.request(
            "PATCH",
            f"{jobs_path}/{created['metadata']['name']}/status",
            {"status": running_status(_ts(now))},
            "application/merge-patch+json",
        )
        ready.put((job, attempt.run, r, _ts(now)))

    _parallel(n_jobs, lambda i: start_run(names_[i], 0))
    # the operator must see them as the jobs' current runs before any ends
    deadline = time.monotonic() + 120 + n_jobs * 0.2
    first_ids = {job: names.run_id(job, "manual", "lag-0") for job in names_}
    while True:
        with watch.lock:
            shown = sum(1 for job in names_ if watch.last.get(job) == (first_ids[job], "Running"))
        if shown == n_jobs:
            break
        if time.monotonic() > deadline:
            raise TimeoutError(f"lag: only {shown}/{n_jobs} BackgroundJobs show their run Running")
        time.sleep(0.2)
    wait_quiet(pid)
    say(f"lag: {n_jobs} BackgroundJobs with a run each; {total} ends at {rate}/s")

    before, cpu0 = reconcile_buckets(op), cpu_seconds(pid)
    starved = [0.0]  # seconds the timetable waited for a started run: the lag holding the next start back

    def end_run(job: str, run_id: str, r: int, began: str) -> None:
        sent = time.monotonic()
        ended = _ts(dt.datetime.now(dt.UTC))
        api.request(
            "PATCH",
            f"{jobs_path}/{run_id}/status",
            {"status": complete_status(began, max(began, ended))},
            "application/merge-patch+json",
        )
        written.put((job, run_id, r, sent, time.monotonic()))

    def timetable() -> None:
        """One end every 1/rate seconds, never faster: a late one moves the ones after it."""
        with ThreadPoolExecutor(16) as writers:  # a write takes 0.1-0.3 s on a busy API server
            due = time.monotonic()
            for _ in range(total):
                t_wait = time.monotonic()
                try:
                    item = ready.get(timeout=60)
                except queue.Empty:
                    say("lag: no started run to end for 60s")
                    return
                starved[0] += time.monotonic() - t_wait
                due = max(due, time.monotonic())
                time.sleep(max(0.0, due - time.monotonic()))
                writers.submit(end_run, *item)
                due += 1 / rate

    threads = [threading.Thread(target=timetable, daemon=True)]
    for th in threads:
        th.start()
    outstanding: dict[str, tuple[str, int, float, float]] = {}
    lags: list[float] = []
    writes: list[tuple[float, float]] = []  # (sent, written) of each end
    missing = 0
    measured = 0
    with ThreadPoolExecutor(24) as pool:  # a start is two writes: at 50/s and 0.2 s each, 20 at once
        starts = []
        deadline = time.monotonic() + 3 * total / rate + 180
        while measured + missing < total:
            while True:
                try:
                    job, run_id, r, sent, done = written.get_nowait()
                except queue.Empty:
                    break
                outstanding[job] = (run_id, r, sent, done)
                writes.append((sent, done))
            now = time.monotonic()
            for job, (run_id, r, _sent, done) in list(outstanding.items()):
                seen = watch.succeeded(job, run_id)
                if seen is None and now - done < 30:
                    continue
                del outstanding[job]
                if seen is None:
                    missing += 1
                else:
                    lags.append(seen - done)
                    measured += 1
                if r + 1 < rounds:
                    starts.append(pool.submit(start_run, job, r + 1))
            if now > deadline:
                raise TimeoutError(f"lag: {measured + missing}/{total} ends measured")
            time.sleep(0.01)
        for fut in starts:
            fut.result()
    for th in threads:
        th.join()
    watch.stopping = True
    wait_quiet(pid)
    cpu = cpu_seconds(pid) - cpu0
    after = reconcile_buckets(op)
    span = max(d for _, d in writes) - min(s for s, _ in writes)
    result = {
        "rate_asked": rate,
        "backgroundjobs": n_jobs,
        "rounds": rounds,
        "ends": total,
        "measured": measured,
        "missing": missing,
        "rate_achieved": (len(writes) - 1) / span if span > 0 else float("nan"),
        "seconds": span,
        "starved_s": starved[0],
        "write_s": spread([d - s for s, d in writes]),
        "lag_s": spread(lags),
        "operator_cpu_s": cpu,
        "reconcile": reconcile_quantiles(before, after),
    }
    say(f"lag: {result}")
    return result


def lag_table(r: dict[str, Any]) -> str:
    lag, rec = r["lag_s"], r["reconcile"]
    return "\n".join(
        [
            f"{'status lag: ' + str(r['ends']) + ' run ends':40} {'p50':>10} {'p99':>10} {'max':>10}",
            f"{'Complete written -> lastRun (ms)':40} {1000 * lag['p50']:>10.0f} {1000 * lag['p99']:>10.0f}"
            f" {1000 * lag['max']:>10.0f}",
            f"{'  ends measured / not seen in 30 s':40} {r['measured']:>10} {r['missing']:>10}",
            f"{'  the status write itself (ms)':40} {1000 * r['write_s']['p50']:>10.0f}"
            f" {1000 * r['write_s']['p99']:>10.0f} {1000 * r['write_s']['max']:>10.0f}",
            f"{'ends per second: asked, achieved':40} {r['rate_asked']:>10.1f} {r['rate_achieved']:>10.1f}"
            f"   (over {r['seconds']:.1f} s, {r['backgroundjobs']} jobs x {r['rounds']} runs)",
            f"{'  waiting for a started run (s)':40} {r['starved_s']:>10.1f}"
            "   (a job's next run starts once its last end is shown)",
            f"{'reconcile backgroundjob p50 / p99 (ms)':40} {rec['backgroundjob']['p50_ms']:>10.0f}"
            f" {rec['backgroundjob']['p99_ms']:>10.0f}   ({rec['backgroundjob']['count']} passes, from buckets)",
            f"{'  of it observe + plan p50 / p99 (ms)':40} {rec['backgroundjob_plan']['p50_ms']:>10.0f}"
            f" {rec['backgroundjob_plan']['p99_ms']:>10.0f}   (the operator's own time; buckets from 5 ms)",
            f"{'operator CPU per run end (ms)':40} {1000 * r['operator_cpu_s'] / r['ends']:>10.1f}",
        ]
    )


# -- the whole thing ------------------------------------------------------------------------------------
METRICS = [
    ("reconcile_mean_ms", "reconcile mean (ms)", "{:.2f}"),
    ("reconciles_per_run", "reconciles per run", "{:.1f}"),
    ("gate_mean_ms", "gate pass mean (ms)", "{:.2f}"),
    ("e2e_median_s", "run-now -> Succeeded median (s)", "{:.2f}"),
    ("e2e_p90_s", "run-now -> Succeeded p90 (s)", "{:.2f}"),
    ("cpu_ms_per_run", "operator CPU per run (ms)", "{:.0f}"),
    ("idle_cpu_pct", "operator CPU at rest (%)", "{:.1f}"),
    ("rss_mib", "operator RSS at rest (MiB)", "{:.0f}"),
    ("metrics_scrape_ms", "one /metrics scrape (ms)", "{:.0f}"),
    ("metrics_kib", "/metrics size (KiB)", "{:.0f}"),
]


def table(sizes: dict[str, dict[str, Any]]) -> str:
    base, scale = sizes["baseline"], sizes["scale"]
    head = (
        f"{'':34} {'baseline':>10} {'scale':>10} {'ratio':>7}\n"
        f"{'BackgroundJobs':34} {base['backgroundjobs']:>10} {scale['backgroundjobs']:>10}"
        f" {scale['backgroundjobs'] / base['backgroundjobs']:>6.0f}x\n"
        f"{'finished Jobs':34} {base['jobs']:>10} {scale['jobs']:>10} {scale['jobs'] / max(1, base['jobs']):>6.0f}x\n"
        f"{'their pods':34} {base['pods']:>10} {scale['pods']:>10} {scale['pods'] / max(1, base['pods']):>6.0f}x\n"
        f"{'lastRun Succeeded (BackgroundJobs)':34} {base['last_run_succeeded']:>10} {scale['last_run_succeeded']:>10}\n"
    )
    rows = []
    for key, label, fmt in METRICS:
        b, s = base["metrics"][key], scale["metrics"][key]
        ratio = f"{s / b:>7.2f}" if b else f"{'-':>7}"
        rows.append(f"{label:34} {fmt.format(b):>10} {fmt.format(s):>10} {ratio}")
    return head + "\n".join(rows)


def count(kubectl: Kubectl, kind: str) -> int:
    out = kubectl("get", kind, "-n", NAMESPACE, "-l", names.LABEL_BGJ, "-o", "name")
    return len(out.split())


def sized(kubectl: Kubectl, watch: Watch, n: int) -> dict[str, Any]:
    with watch.lock:
        ok = sum(1 for _, result in watch.last.values() if result == "Succeeded")
    return {
        "backgroundjobs": n,
        "jobs": count(kubectl, "jobs"),
        "pods": count(kubectl, "pods"),
        "last_run_succeeded": ok,  # BackgroundJobs whose status.lastRun says Succeeded: the operator saw them all
    }


def parse_apply(text: str) -> list[tuple[int, int]]:
    """ "1000,1000x10,10000" -> [(1000, 1), (1000, 10), (10000, 1)]: N jobs over K namespaces."""
    out = []
    for part in text.split(","):
        n, _, k = part.strip().partition("x")
        if int(n) > 0:
            out.append((int(n), int(k or 1)))
    return out


def apply_spaces(kind: str, n: int, k: int = 1) -> list[str]:
    base = f"{APPLY_NS[kind]}-{n}"
    return [base] if k == 1 else [f"{base}x{k}-{i}" for i in range(k)]


def apply_size(api: Api, kubectl: Kubectl, op: Operator, n: int, k: int = 1) -> dict[str, Any]:
    """Plain CronJobs, the same writes made directly, then the operator's apply (N jobs over K
    namespaces each); then /metrics and RSS with the operator holding N more BackgroundJobs."""
    pid = proc_pid(op)
    wait_quiet(pid)
    rss0 = rss_mib(pid)
    phases = {kind: apply_phase(api, op, kind, n, apply_spaces(kind, n, k)) for kind in ("plain", "direct", "operator")}
    wait_quiet(pid)
    rss1 = rss_mib(pid)
    text = op.metrics()
    scrape_ms, scrape_kib = scrape_cost(op)
    series = [
        ln
        for ln in text.splitlines()
        if f'namespace="{apply_spaces("operator", n, k)[42 % k]}",backgroundjob="job-00042"' in ln
    ]
    return {
        "n": n,
        "namespaces": k,
        "phases": phases,
        "rss_before_mib": rss0,
        "rss_after_mib": rss1,
        "rss_kib_per_bgj": 1024 * (rss1 - rss0) / n,
        "metrics_scrape_ms": scrape_ms,
        "metrics_kib": scrape_kib,
        "metrics_series_per_job": len(series),
        "backgroundjobs_total": text.count("nightshift_runs_total{") // 2,
    }


NIGHTSHIFT_RESOURCES = ("backgroundjobs", "cronjobs", "events", "jobs", "pods", "backgroundjobruns")


def per_object(phase: dict[str, Any]) -> dict[str, float]:
    """Requests per object to the resources the operator touches (background traffic left out)."""
    return {
        key: count / phase["n"]
        for key, count in phase["requests"].items()
        if key.split()[1].split("/")[0] in NIGHTSHIFT_RESOURCES and key.split()[0] not in ("LIST", "WATCH")
    }


def apply_table(result: dict[str, Any]) -> str:
    n, ph = result["n"], result["phases"]
    plain, direct, oper = ph["plain"], ph["direct"], ph["operator"]
    k = result.get("namespaces", 1)
    title = f"apply N={n}" + (f" in {k} namespaces" if k > 1 else "")
    lines = [
        f"{title:34} {'CronJobs':>10} {'direct':>10} {'operator':>10}",
        f"{'wall time (s)':34} {plain['seconds']:>10.1f} {direct['seconds']:>10.1f} {oper['seconds']:>10.1f}",
        f"{'  operator / direct writes':34} {'':>10} {'':>10} {oper['seconds'] / direct['seconds']:>9.2f}x",
        f"{'  operator / plain CronJobs':34} {'':>10} {'':>10} {oper['seconds'] / plain['seconds']:>9.2f}x",
        f"{'  direct writes / plain CronJobs':34} {'':>10} {direct['seconds'] / plain['seconds']:>9.2f}x",
        f"{'operator CPU per object (ms)':34} {'':>10} {'':>10} {1000 * oper['operator_cpu_s'] / n:>10.1f}",
        "requests per object (verb resource code):",
    ]
    rows = [per_object(x) for x in (plain, direct, oper)]
    for key in sorted(set().union(*rows)):
        if max(r.get(key, 0.0) for r in rows) >= 0.005:
            lines.append(f"  {key:32} " + " ".join(f"{r.get(key, 0.0):>10.2f}" for r in rows))
    totals = [sum(r.values()) for r in rows]
    lines.append(f"  {'all of them':32} " + " ".join(f"{t:>10.2f}" for t in totals))
    lines += [
        f"{'operator RSS (MiB) before / after':34} {result['rss_before_mib']:>10.0f} {result['rss_after_mib']:>10.0f}",
        f"{'  RSS per BackgroundJob (KiB)':34} {result['rss_kib_per_bgj']:>10.1f}",
        f"{'/metrics with ' + str(result['backgroundjobs_total']) + ' jobs: KiB, ms':34}"
        f" {result['metrics_kib']:>10.0f} {result['metrics_scrape_ms']:>10.0f}",
        f"{'  series per BackgroundJob':34} {result['metrics_series_per_job']:>10}",
    ]
    return "\n".join(lines)


def quick_check(
    sizes: dict[str, dict[str, Any]],
    applies: list[dict[str, Any]],
    gate: dict[str, Any] | None = None,
    lag: dict[str, Any] | None = None,
) -> list[str]:
    """What `--quick` fails on: counts and their ratios, never a time (the machine is shared)."""
    problems = []
    base, scale = sizes["baseline"]["metrics"], sizes["scale"]["metrics"]
    if scale["reconciles_per_run"] > 1.5 * base["reconciles_per_run"]:
        problems.append(
            f"reconciles per run grew with size: {base['reconciles_per_run']:.1f} -> {scale['reconciles_per_run']:.1f}"
        )
    for result in applies:
        direct, oper = (per_object(result["phases"][k]) for k in ("direct", "operator"))
        ratio = sum(oper.values()) / max(1e-9, sum(direct.values()))
        if ratio > 1.2:
            problems.append(f"apply: {ratio:.2f}x the requests of the same writes made directly ({oper})")
        errors = sum(v for k, v in oper.items() if not k.split()[2].startswith("2"))
        if errors > 0.05:
            problems.append(f"apply: {errors:.2f} refused requests per BackgroundJob ({oper})")
        if result["metrics_series_per_job"] > 10:
            problems.append(f"/metrics: {result['metrics_series_per_job']} series per BackgroundJob")
    if gate is not None:
        if gate["max_running_seen"] > gate["concurrency"]:
            problems.append(
                f"gate: {gate['max_running_seen']} runs admitted at once on a queue of {gate['concurrency']}"
            )
        if gate["failed"] or gate["finished"] != gate["runs"]:
            problems.append(f"gate: {gate['finished']}/{gate['runs']} runs finished, {gate['failed']} failed")
    if lag is not None and lag["missing"]:
        problems.append(f"status lag: {lag['missing']}/{lag['ends']} run ends never shown in status.lastRun")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.bench", description=__doc__.split("\n")[0])
    parser.add_argument("--baseline", type=int, default=20, help="BackgroundJobs at the baseline size")
    parser.add_argument("--scale", type=int, default=400, help="BackgroundJobs at the large size")
    parser.add_argument("--history", type=int, default=5, help="finished runs per BackgroundJob before measuring")
    parser.add_argument("-k", type=int, default=20, help="measured runs per size")
    parser.add_argument("--spacing", type=float, default=0.25, help="seconds between the measured triggers")
    parser.add_argument(
        "--apply",
        default="1000",
        help="sizes of the apply benchmark, comma-separated; NxK spreads N over K namespaces (e.g. 1000,1000x10,10000; 0: none)",
    )
    parser.add_argument(
        "--gate",
        type=int,
        default=500,
        help="runs waiting on one queue of concurrency 10 for the gate's latency (P3; 0: leave out)",
    )
    parser.add_argument(
        "--lag", type=float, default=50, help="run ends per second for the status lag (P4; 0: leave out)"
    )
    parser.add_argument("--lag-jobs", type=int, default=200, help="BackgroundJobs whose runs end for the status lag")
    parser.add_argument("--lag-seconds", type=float, default=20, help="how long the runs end at --lag per second")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="small sizes (10/40 jobs, apply 100, gate 20, no status lag) for the test command; fails on a count"
        " ratio regression only",
    )
    parser.add_argument(
        "--no-webhook", action="store_true", help="run the operator without its validating webhook (its share of apply)"
    )
    parser.add_argument("--out", type=Path, default=RESULTS_DIR / "results.json")
    parser.add_argument("--keep", action="store_true", help="keep the control plane's directory")
    args = parser.parse_args(argv)
    if args.quick:
        args.baseline, args.scale, args.k, args.history = 10, 40, 5, 2
        if args.apply == parser.get_default("apply"):
            args.apply = "100"
        # a small gate phase for its counts (never more admitted than the queue's concurrency, every run
        # finished; about 14 s); no status lag unless asked: its only count, ends never shown within
        # 30 s, is a time in disguise
        for name, small in (("gate", 20), ("lag", 0)):
            if getattr(args, name) == parser.get_default(name):
                setattr(args, name, small)
    apply_sizes = parse_apply(args.apply)
    if args.k > args.baseline or args.baseline + args.k > args.scale:
        parser.error("need k <= baseline and baseline + k <= scale")
    bin_dir = os.environ.get("NIGHTSHIFT_BIN_DIR")
    if not bin_dir:
        print("NIGHTSHIFT_BIN_DIR is not set (use `make bench`)", file=sys.stderr)
        return 2

    t_start = time.monotonic()
    load0 = os.getloadavg()
    workdir = Path(tempfile.mkdtemp(prefix="nightshift-bench-"))
    cp = ControlPlane(workdir / "cluster", bin_dir=Path(bin_dir), local_node=False, kwok=True, quiet=True)
    op: Operator | None = None
    watch: Watch | None = None
    try:
        say(f"starting control plane in {workdir}")
        cp.start()
        op = Operator(cp, workdir, webhook=not args.no_webhook)  # after start: it may need the control plane's PKI
        kubectl = Kubectl(cp)
        install_crds(kubectl.cp)
        served = [NAMESPACE, GATE_NS, LAG_NS] + [ns for n, k in apply_sizes for ns in apply_spaces("operator", n, k)]
        plain_direct = [ns for n, k in apply_sizes for kind in ("plain", "direct") for ns in apply_spaces(kind, n, k)]
        for ns in served + plain_direct:
            kubectl("create", "namespace", ns)
        api = Api(cp)
        watch = Watch(api)
        watch.start()
        # the operator serves the bench's namespace and the apply namespaces it is measured in: the
        # plain and direct writes happen where it does not look
        op.start(NIGHTSHIFT_NAMESPACES=json.dumps(served))
        say(f"operator pid {proc_pid(op)}; log {op.log}")
        sizes: dict[str, dict[str, Any]] = {}
        # baseline: jobs 0..baseline-1, the first k of them measured
        create_bgjs(kubectl, 0, args.baseline)
        run_rounds(api, watch, [job_name(i) for i in range(args.baseline)], args.history, "h")
        measured = [job_name(i) for i in range(args.k)]
        say(f"measuring baseline ({args.baseline} BackgroundJobs)")
        sizes["baseline"] = {
            **sized(kubectl, watch, args.baseline),
            "metrics": measure(op, api, watch, measured, "baseline", args.spacing),
        }
        say(f"baseline: {sizes['baseline']}")

        # scale: k fresh jobs with real runs like the baseline's (these are measured); the others get
        # their finished runs seeded (see seed_history), as many per job
        create_bgjs(kubectl, args.baseline, args.scale)
        measured = [job_name(i) for i in range(args.baseline, args.baseline + args.k)]
        seed_history(api, [job_name(i) for i in range(args.baseline + args.k, args.scale)], args.history)
        run_rounds(api, watch, measured, args.history, "h")
        say(f"measuring scale ({args.scale} BackgroundJobs)")
        sizes["scale"] = {
            **sized(kubectl, watch, args.scale),
            "metrics": measure(op, api, watch, measured, "scale", args.spacing),
        }
        say(f"scale: {sizes['scale']}")

        gate_result = lag_result = None
        if args.gate > 0:
            say(f"gate: {args.gate} runs waiting on a queue of concurrency {GATE_CONCURRENCY}")
            gate_result = gate_phase(api, op, args.gate)
        if args.lag > 0:
            say(f"status lag: {args.lag} run ends per second")
            lag_result = lag_phase(api, op, args.lag, args.lag_jobs, args.lag_seconds)

        applies = []
        for n, k in apply_sizes:
            say(f"apply benchmark, N={n} in {k} namespace(s)")
            applies.append(apply_size(api, kubectl, op, n, k))

        runtime = time.monotonic() - t_start
        load1 = os.getloadavg()
        print(table(sizes))
        for result in applies:
            print()
            print(apply_table(result))
        if gate_result is not None:
            print()
            print(gate_table(gate_result))
        if lag_result is not None:
            print()
            print(lag_table(lag_result))
        print(
            f"\nK={args.k} measured runs per size; total run time {runtime:.0f}s on {os.cpu_count()} CPUs;"
            f" load average {load0[0]:.1f} at the start, {load1[0]:.1f} at the end (1 min)"
        )
        ratios = {
            key: sizes["scale"]["metrics"][key] / sizes["baseline"]["metrics"][key]
            for key, _, _ in METRICS
            if sizes["baseline"]["metrics"][key]
        }
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(
            json.dumps(
                {
                    "k": args.k,
                    "history_runs_per_job": args.history,
                    "cpus": os.cpu_count(),
                    "runtime_s": round(runtime, 1),
                    "load_average": [load0, load1],
                    "sizes": sizes,
                    "ratios": ratios,
                    "apply": applies,
                    "gate": gate_result,
                    "status_lag": lag_result,
                },
                indent=2,
            )
            + "\n"
        )
        print(f"results: {args.out}")
        if args.quick:
            problems = quick_check(sizes, applies, gate_result, lag_result)
            for problem in problems:
                print(f"REGRESSION: {problem}")
            return 1 if problems else 0
        return 0
    except Exception as e:
        say(f"bench could not run: {e!r}; operator logs in {workdir}, cluster logs {cp.logs}")
        args.keep = True
        return 1
    finally:
        if watch is not None:
            watch.stopping = True
        if op is not None:
            op.stop()
        cp.stop()
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
