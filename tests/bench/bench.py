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
"""

from __future__ import annotations

import argparse
import datetime as dt
import http.client
import json
import os
import re
import shutil
import ssl
import statistics
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from nightshift.api import names
from nightshift.api.models import BackgroundJobSpec
from nightshift.core import render
from nightshift.core import status as status_mod
from nightshift.settings import Settings
from tests.conftest import Kubectl, Operator, bgj, install_crds
from tests.support.cluster import ControlPlane, kwok_pod_template

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

    def __init__(self, api: Api) -> None:
        super().__init__(daemon=True)
        self.api = api
        self.lock = threading.Lock()
        self.last: dict[str, tuple[str, str]] = {}  # name -> (lastRun.id, lastRun.result)
        self.seen: dict[tuple[str, str, str], float] = {}  # (name, run id, result) -> monotonic time
        self.events = 0
        self.stopping = False

    def run(self) -> None:
        path = f"/apis/nightshift.dev/v1alpha1/namespaces/{NAMESPACE}/backgroundjobs?watch=1"
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


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
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
        body = render.attempt_job(owner, spec, settings, attempt)
        body["spec"]["suspend"] = False
        body["spec"]["managedBy"] = "bench.nightshift.dev/seed"
        created = api.request("POST", f"/apis/batch/v1/namespaces/{NAMESPACE}/jobs", body)
        began, ended = _ts(when + dt.timedelta(seconds=1)), _ts(when + dt.timedelta(seconds=3))
        cond = {
            "status": "True",
            "reason": "CompletionsReached",
            "message": "Reached expected number of succeeded pods",
        }
        status = {
            "startTime": began,
            "completionTime": ended,
            "succeeded": 1,
            "ready": 0,
            "terminating": 0,
            "uncountedTerminatedPods": {},
            "conditions": [
                {**cond, "type": t, "lastTransitionTime": ended, "lastProbeTime": ended}
                for t in ("SuccessCriteriaMet", "Complete")
            ],
        }
        name = created["metadata"]["name"]
        api.request(
            "PATCH",
            f"/apis/batch/v1/namespaces/{NAMESPACE}/jobs/{name}/status",
            {"status": status},
            "application/merge-patch+json",
        )
        template = body["spec"]["template"]
        pod = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": f"{name[:56]}-{names.digest(name, size=5)}",
                "namespace": NAMESPACE,
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
            "spec": {**template["spec"], "nodeName": "kwok-node-0"},
        }
        api.request("POST", f"/api/v1/namespaces/{NAMESPACE}/pods", pod)

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


def apply_phase(api: Api, op: Operator, kind: str, n: int, ns: str) -> dict[str, Any]:
    """One way of making N scheduled jobs in `ns`: its wall time and the API requests it cost."""
    spec = BackgroundJobSpec.model_validate(apply_spec())
    settings = Settings()
    bgjs = f"/apis/nightshift.dev/v1alpha1/namespaces/{ns}/backgroundjobs"
    cronjobs = f"/apis/batch/v1/namespaces/{ns}/cronjobs"
    pid = proc_pid(op)
    wait_quiet(pid, settle=2.0)
    before, cpu0, t0 = api_requests(api), cpu_seconds(pid), time.monotonic()
    watch: ReadyWatch | None = None

    def name(i: int) -> str:
        return f"job-{i:05d}"

    if kind == "plain":

        def one(i: int) -> None:
            body = render.cronjob(render.Owner(name(i), ns, "0"), spec, settings)
            assert body is not None
            body["metadata"].pop("ownerReferences", None)  # no owner: the garbage collector would remove it
            api.request("POST", cronjobs, body)

        _parallel(n, one)
    elif kind == "direct":

        def one(i: int) -> None:
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
        watch = ReadyWatch(api, ns)
        watch.start()
        _parallel(n, lambda i: api.request("POST", bgjs, bgj(name(i), ns, apply_spec())))
        deadline = time.monotonic() + 120 + n * 0.2
        while watch.count() < n:
            if time.monotonic() > deadline:
                raise TimeoutError(f"apply: only {watch.count()}/{n} BackgroundJobs Ready")
            time.sleep(0.05)
    wall = time.monotonic() - t0
    wait_quiet(pid, settle=3.0)  # follow-up passes (the watch bringing the CronJobs) count too
    cpu = cpu_seconds(pid) - cpu0
    if watch is not None:
        watch.stopping = True
    requests = request_delta(before, api_requests(api))
    say(f"apply {kind}: {n} in {wall:.1f}s; requests {sorted(requests.items(), key=lambda kv: -kv[1])[:8]}")
    return {"n": n, "seconds": wall, "operator_cpu_s": cpu, "requests": requests}


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


def apply_ns(kind: str, n: int) -> str:
    return f"{APPLY_NS[kind]}-{n}"


def apply_size(api: Api, kubectl: Kubectl, op: Operator, n: int) -> dict[str, Any]:
    """Plain CronJobs, the same writes made directly, then the operator's apply; then /metrics and RSS
    with the operator holding N more BackgroundJobs."""
    pid = proc_pid(op)
    wait_quiet(pid)
    rss0 = rss_mib(pid)
    phases = {kind: apply_phase(api, op, kind, n, apply_ns(kind, n)) for kind in ("plain", "direct", "operator")}
    wait_quiet(pid)
    rss1 = rss_mib(pid)
    text = op.metrics()
    scrape_ms, scrape_kib = scrape_cost(op)
    series = [
        ln for ln in text.splitlines() if f'namespace="{apply_ns("operator", n)}",backgroundjob="job-00042"' in ln
    ]
    return {
        "n": n,
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
    lines = [
        f"{'apply N=' + str(n):34} {'CronJobs':>10} {'direct':>10} {'operator':>10}",
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


def quick_check(sizes: dict[str, dict[str, Any]], applies: list[dict[str, Any]]) -> list[str]:
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
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.bench", description=__doc__.split("\n")[0])
    parser.add_argument("--baseline", type=int, default=20, help="BackgroundJobs at the baseline size")
    parser.add_argument("--scale", type=int, default=400, help="BackgroundJobs at the large size")
    parser.add_argument("--history", type=int, default=5, help="finished runs per BackgroundJob before measuring")
    parser.add_argument("-k", type=int, default=20, help="measured runs per size")
    parser.add_argument("--spacing", type=float, default=0.25, help="seconds between the measured triggers")
    parser.add_argument(
        "--apply", default="1000", help="sizes of the apply benchmark, comma-separated (e.g. 1000,10000; 0: none)"
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="small sizes (10/40 jobs, apply 100) for the test command; fails on a count ratio regression only",
    )
    parser.add_argument(
        "--no-webhook", action="store_true", help="run the operator without its validating webhook (its share of apply)"
    )
    parser.add_argument("--out", type=Path, default=RESULTS_DIR / "results.json")
    parser.add_argument("--keep", action="store_true", help="keep the control plane's directory")
    args = parser.parse_args(argv)
    if args.quick:
        args.baseline, args.scale, args.k, args.history, args.apply = 10, 40, 5, 2, "100"
    apply_sizes = [int(x) for x in args.apply.split(",") if int(x) > 0]
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
        served = [NAMESPACE] + [apply_ns("operator", n) for n in apply_sizes]
        for ns in served + [apply_ns(k, n) for n in apply_sizes for k in ("plain", "direct")]:
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

        applies = []
        for n in apply_sizes:
            say(f"apply benchmark, N={n}")
            applies.append(apply_size(api, kubectl, op, n))

        runtime = time.monotonic() - t_start
        load1 = os.getloadavg()
        print(table(sizes))
        for result in applies:
            print()
            print(apply_table(result))
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
                },
                indent=2,
            )
            + "\n"
        )
        print(f"results: {args.out}")
        if args.quick:
            problems = quick_check(sizes, applies)
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
