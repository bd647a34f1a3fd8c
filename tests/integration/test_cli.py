"""The `nightshift` CLI (and `kubectl nightshift`) against the real control plane.

trigger, backfill and retry create BackgroundJobRuns; the tests without a marker check only what
the CLI writes. Some tests also need the operator to act on those requests
(create the run, write its result into the request's status).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from nightshift.api import names
from tests.conftest import Kubectl, Operator, bgj, script_job, wait_for
from tests.support.cluster import ControlPlane
from tests.support.operatorproc import install_crds

pytestmark = pytest.mark.cluster
BIN = Path(sys.executable).parent
ECHO_PARAMS = (
    "import os; open(os.environ['NIGHTSHIFT_TERMINATION_LOG'],'w').write(os.environ.get('NIGHTSHIFT_PARAMS','{}'))"
)
BACKFILL = ("backfill", "hourly", "--from", "2026-01-01T00:00:00Z", "--to", "2026-01-01T01:00:00Z")


def cli(target: Operator | ControlPlane, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    cluster = target if isinstance(target, ControlPlane) else target.cluster
    env = {**os.environ, "KUBECONFIG": str(cluster.kubeconfig), "NIGHTSHIFT_HISTORY_DSN": ""}
    return subprocess.run([str(BIN / "nightshift"), *args], capture_output=True, text=True, env=env, timeout=timeout)


def ok(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def jobs(kubectl: Kubectl, ns: str, name: str) -> list[dict[str, Any]]:
    return kubectl.json("get", "jobs", "-n", ns, "-l", f"nightshift.dev/backgroundjob={name}")["items"]  # type: ignore[no-any-return]


def run_requests(kubectl: Kubectl, ns: str, job: str | None = None) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = kubectl.json("get", "bgjr", "-n", ns)["items"]
    return [r for r in items if job is None or r["spec"]["backgroundJob"] == job]


def created_name(out: str) -> str:
    """The request's name from `bgjr/<name> created` (or `exists already`)."""
    m = re.search(r"^bgjr/(\S+) (created|exists already)", out, re.M)
    assert m, out
    return m.group(1)


@pytest.fixture
def crds(cluster: ControlPlane, kubectl: Kubectl) -> ControlPlane:
    """The CRDs, BackgroundJobRun's served: enough for what the CLI writes, with or without an operator."""
    install_crds(cluster)
    kubectl("wait", "--for=condition=Established", "crd/backgroundjobruns.nightshift.dev", "--timeout=60s")
    return cluster


@pytest.fixture
def requests_served(crds: ControlPlane, running_operator: Operator) -> Operator:
    """A running operator, with the BackgroundJobRun CRD served."""
    return running_operator


# -- what the CLI writes: no operator support needed ------------------------------------------------
def test_trigger_creates_one_run_request(kubectl: Kubectl, crds: ControlPlane, namespace: str) -> None:
    kubectl.apply(bgj("report", namespace, {"job": script_job("pass")}))
    uid = kubectl.json("get", "bgj", "report", "-n", namespace)["metadata"]["uid"]
    proc = cli(crds, "-n", namespace, "trigger", "report", "--param", "limit=5", "--param", "mode=fast")
    name = created_name(ok(proc))
    assert re.fullmatch(r"report-\d{14}-[a-z0-9]{4}", name)
    assert f"kubectl wait --for=condition=Finished bgjr/{name} -n {namespace}" in proc.stderr
    (req,) = run_requests(kubectl, namespace, "report")
    assert req["metadata"]["name"] == name
    assert req["metadata"]["labels"]["nightshift.dev/backgroundjob"] == "report"
    assert req["metadata"]["ownerReferences"] == [
        {
            "apiVersion": "nightshift.dev/v1alpha1",
            "kind": "BackgroundJob",
            "name": "report",
            "uid": uid,
            "controller": False,
            "blockOwnerDeletion": False,
        }
    ]
    assert req["spec"]["backgroundJob"] == "report" and req["spec"]["params"] == {"limit": 5, "mode": "fast"}
    assert req["spec"]["reason"].startswith("nightshift trigger by ")

    again = json.loads(ok(cli(crds, "-n", namespace, "-o", "json", "trigger", "report", "--reason", "ci")))
    assert again["kind"] == "BackgroundJobRun" and again["spec"] == {"backgroundJob": "report", "reason": "ci"}
    assert len(run_requests(kubectl, namespace, "report")) == 2  # without --id, every call is a new run

    listed = json.loads(ok(cli(crds, "-n", namespace, "-o", "json", "runs", "report")))
    assert sorted(r["metadata"]["name"] for r in listed) == sorted([name, again["metadata"]["name"]])
    table = ok(cli(crds, "-n", namespace, "runs", "report"))
    assert table.split()[:7] == ["NAME", "PHASE", "ATTEMPTS", "STARTED", "FINISHED", "REASON", "REQUESTED"]
    assert name in table


def test_trigger_with_id_twice_makes_one_request(kubectl: Kubectl, crds: ControlPlane, namespace: str) -> None:
    kubectl.apply(bgj("report", namespace, {"job": script_job("pass")}))
    args = ("-n", namespace, "trigger", "report", "--id", "deploy-42", "--param", "limit=5")
    first = created_name(ok(cli(crds, *args)))
    second = ok(cli(crds, *args))
    assert created_name(second) == first and "exists already (same request" in second
    assert [r["metadata"]["name"] for r in run_requests(kubectl, namespace, "report")] == [first]
    (req,) = run_requests(kubectl, namespace, "report")
    assert req["metadata"]["annotations"]["nightshift.dev/request-id"] == "deploy-42"

    other = cli(crds, "-n", namespace, "trigger", "report", "--id", "deploy-42", "--param", "limit=6")
    assert other.returncode == 1 and "already exists" in other.stderr and "differs in: params" in other.stderr
    assert len(run_requests(kubectl, namespace, "report")) == 1


def test_backfill_creates_requests_not_jobs_once_per_time(kubectl: Kubectl, crds: ControlPlane, namespace: str) -> None:
    kubectl.apply(bgj("hourly", namespace, {"schedule": "*/15 * * * *", "job": script_job("pass")}))
    dry = ok(cli(crds, "-n", namespace, *BACKFILL, "--dry-run"))
    assert "5 scheduled times, 5 requests would be created" in dry and not run_requests(kubectl, namespace)

    assert "5 scheduled times, 5 requests created, 0 existed already" in ok(cli(crds, "-n", namespace, *BACKFILL))
    got = run_requests(kubectl, namespace, "hourly")
    assert sorted(r["spec"]["scheduledTime"] for r in got) == [
        "2026-01-01T00:00:00Z",
        "2026-01-01T00:15:00Z",
        "2026-01-01T00:30:00Z",
        "2026-01-01T00:45:00Z",
        "2026-01-01T01:00:00Z",
    ]
    assert all(re.fullmatch(r"hourly-b[0-9a-f]{10}", r["metadata"]["name"]) for r in got)
    # the CLI builds no Job itself any more (it used to, named by names.run_id(job, "backfill", time))
    before = {names.run_id("hourly", "backfill", r["spec"]["scheduledTime"].replace("Z", "+00:00")) for r in got}
    assert not [j for j in jobs(kubectl, namespace, "hourly") if j["metadata"]["name"] in before]

    assert "0 requests created, 5 existed already" in ok(cli(crds, "-n", namespace, *BACKFILL))
    assert len(run_requests(kubectl, namespace, "hourly")) == 5

    too_many = cli(
        crds,
        "-n",
        namespace,
        "backfill",
        "hourly",
        "--from",
        "2026-01-01T00:00:00Z",
        "--to",
        "2026-02-01T00:00:00Z",
    )
    assert too_many.returncode == 2 and "--max" in too_many.stderr
    kubectl.apply(bgj("adhoc", namespace, {"job": script_job("pass")}))
    none = cli(
        crds,
        "-n",
        namespace,
        "backfill",
        "adhoc",
        "--from",
        "2026-01-01T00:00:00Z",
        "--to",
        "2026-01-02T00:00:00Z",
    )
    assert none.returncode == 2 and "no schedule" in none.stderr


def test_deleting_the_job_deletes_its_requests(kubectl: Kubectl, crds: ControlPlane, namespace: str) -> None:
    kubectl.apply(bgj("report", namespace, {"job": script_job("pass")}))
    ok(cli(crds, "-n", namespace, "trigger", "report"))
    kubectl("delete", "bgj", "report", "-n", namespace)
    wait_for(lambda: not run_requests(kubectl, namespace), timeout=60, what="requests garbage-collected with their job")


def test_errors_have_clear_messages_and_exit_codes(running_operator: Operator, namespace: str) -> None:
    missing = cli(running_operator, "-n", namespace, "describe", "nope")
    assert missing.returncode == 3 and "BackgroundJob nope not found" in missing.stderr
    usage = cli(running_operator, "-n", namespace, "suspend")
    assert usage.returncode == 2 and "give a NAME or --all" in usage.stderr
    bad = cli(running_operator, "-n", namespace, "trigger", "nope", "--param", "novalue")
    assert bad.returncode in (2, 3)
    absent = cli(running_operator, "-n", namespace, "trigger", "nope")
    assert absent.returncode == 3 and "BackgroundJob nope not found" in absent.stderr
    assert cli(running_operator, "-n", namespace, "runs", "nope").returncode == 3


def test_graph_suspend_resume_all(kubectl: Kubectl, running_operator: Operator, namespace: str) -> None:
    kubectl.apply(bgj("a", namespace, {"schedule": "@daily", "job": script_job("pass")}))
    kubectl.apply(bgj("b", namespace, {"schedule": "@daily", "dependsOn": [{"name": "a"}], "job": script_job("pass")}))
    kubectl.apply(bgj("c", namespace, {"runAfter": ["b"], "job": script_job("pass")}))
    text = ok(cli(running_operator, "-n", namespace, "graph"))
    assert text.splitlines() == ["a", "b  <- a", "c  <- b"]
    dot = ok(cli(running_operator, "-n", namespace, "-o", "dot", "graph"))
    assert '"a" -> "b";' in dot and '"b" -> "c" [style=dashed, label="runAfter"];' in dot

    ok(cli(running_operator, "-n", namespace, "suspend", "--all"))
    assert all(o["spec"]["suspend"] for o in kubectl.json("get", "bgj", "-n", namespace)["items"])
    wait_for(lambda: kubectl.json("get", "cronjob", "a", "-n", namespace)["spec"]["suspend"], what="CronJob suspended")
    ok(cli(running_operator, "-n", namespace, "resume", "--all"))
    assert not any(o["spec"]["suspend"] for o in kubectl.json("get", "bgj", "-n", namespace)["items"])


def test_stop_kill_and_start(kubectl: Kubectl, running_operator: Operator, namespace: str) -> None:
    kubectl.apply(
        bgj(
            "long",
            namespace,
            # long enough that it is still running when the CLI (a new process) looks, on a loaded machine
            {"job": script_job("import time; time.sleep(12)")},
            annotations={"nightshift.dev/run-now": "1"},
        )
    )
    wait_for(lambda: any(j.get("status", {}).get("active") for j in jobs(kubectl, namespace, "long")), what="running")
    out = ok(cli(running_operator, "-n", namespace, "stop", "--kill", "--reason", "db migration"))
    assert "1 running attempts cancelled" in out
    job = wait_for(lambda: [j for j in jobs(kubectl, namespace, "long") if j["spec"]["suspend"]], what="re-suspended")[
        0
    ]
    assert "EmergencyStop" in job["metadata"]["annotations"]["nightshift.dev/gate"]
    events = kubectl.json("get", "events", "-n", namespace, "--field-selector", "reason=Cancelled")["items"]
    assert events and "db migration" in events[0]["message"]
    ok(cli(running_operator, "-n", namespace, "start"))
    wait_for(
        lambda: (
            kubectl.json("get", "bgj", "long", "-n", namespace).get("status", {}).get("lastRun", {}).get("result")
            == "Succeeded"
        ),
        timeout=90,
        what="the cancelled run runs again after start",
    )
    assert len(jobs(kubectl, namespace, "long")) == 1


# -- the operator acting on the requests ------------------------------------------------------------
def test_trigger_wait_params_status_describe_history_logs_retry(
    kubectl: Kubectl, requests_served: Operator, namespace: str
) -> None:
    kubectl.apply(bgj("report", namespace, {"schedule": "0 4 * * *", "job": {**script_job(ECHO_PARAMS)}}))
    # fails after a few seconds, so the retry's own run is still going when `retry` is asked again below
    fails = "import sys, time; print('boom', flush=True); time.sleep(4); sys.exit(65)"
    kubectl.apply(bgj("broken", namespace, {"job": script_job(fails)}))
    proc = cli(
        requests_served, "-n", namespace, "trigger", "report", "--param", "limit=5", "--param", "mode=fast", "--wait"
    )
    out = ok(proc)
    name = created_name(out)
    assert f"bgjr/{name}: Succeeded" in out
    st = kubectl.json("get", "bgj", "report", "-n", namespace)["status"]
    assert st["lastRun"]["output"] == {"limit": 5, "mode": "fast"}
    md = kubectl.json("get", "bgjr", name, "-n", namespace)
    assert md["status"]["phase"] == "Succeeded"
    assert md["status"]["runId"] == names.run_id("report", "request", namespace, name, md["metadata"]["uid"])
    kubectl("wait", "--for=condition=Finished", f"bgjr/{name}", "-n", namespace, "--timeout=5s")

    failed = cli(requests_served, "-n", namespace, "trigger", "broken", "--wait")
    assert failed.returncode == 1 and "Failed" in failed.stdout and "exit code 65" in failed.stdout

    status = ok(cli(requests_served, "-n", namespace, "status"))
    assert "report" in status and "health: degraded (1 of 2 jobs failing)" in status
    data = json.loads(ok(cli(requests_served, "-n", namespace, "-o", "json", "status")))
    assert data["health"] == "degraded" and {j["name"] for j in data["jobs"]} == {"report", "broken"}

    described = ok(cli(requests_served, "-n", namespace, "describe", "report"))
    assert "Conditions:" in described and "Ready" in described and "Recent runs:" in described
    assert "Succeeded" in described and "T04:00:00+00:00" in described  # next runs at 04:00 UTC

    history = json.loads(ok(cli(requests_served, "-n", namespace, "-o", "json", "history", "broken")))
    assert [(h["attempt"], h["result"], h["exitCode"]) for h in history] == [(1, "Failed", 65)]
    assert ok(cli(requests_served, "-n", namespace, "logs", "broken")).strip() == "boom"

    last = kubectl.json("get", "bgj", "broken", "-n", namespace)["status"]["lastRun"]["id"]
    retried = created_name(ok(cli(requests_served, "-n", namespace, "retry", "broken")))
    assert kubectl.json("get", "bgjr", retried, "-n", namespace)["spec"]["reason"] == f"retry of {last}"
    assert created_name(ok(cli(requests_served, "-n", namespace, "retry", "broken"))) == retried  # once per failed run
    wait_for(lambda: len(jobs(kubectl, namespace, "broken")) == 2, what="retry run")
    assert cli(requests_served, "-n", namespace, "retry", "report").returncode == 1  # nothing failed there

    plugin = subprocess.run(
        ["kubectl", "nightshift", "-n", namespace, "status", "report"],
        capture_output=True,
        text=True,
        env={
            **os.environ,
            "KUBECONFIG": str(requests_served.cluster.kubeconfig),
            "PATH": f"{BIN}:{requests_served.cluster.bin_dir}:{os.environ['PATH']}",
        },
    )
    assert plugin.returncode == 0 and "report" in plugin.stdout


def test_three_triggers_while_the_operator_is_down_make_three_runs(
    kubectl: Kubectl, requests_served: Operator, namespace: str
) -> None:
    # Allow: the three runs overlap; with the default Forbid the later ones are (correctly) skipped
    kubectl.apply(bgj("report", namespace, {"concurrencyPolicy": "Allow", "job": script_job("pass")}))
    requests_served.stop()
    try:
        made = [created_name(ok(cli(requests_served, "-n", namespace, "trigger", "report"))) for _ in range(3)]
    finally:
        requests_served.start()
    assert len(set(made)) == 3
    for name in made:
        kubectl("wait", "--for=condition=Finished", f"bgjr/{name}", "-n", namespace, "--timeout=120s")
    phases = [r["status"]["phase"] for r in run_requests(kubectl, namespace, "report")]
    assert phases == ["Succeeded"] * 3
    assert len({r["status"]["runId"] for r in run_requests(kubectl, namespace, "report")}) == 3


def test_backfill_wait_runs_each_scheduled_time(kubectl: Kubectl, requests_served: Operator, namespace: str) -> None:
    kubectl.apply(bgj("hourly", namespace, {"schedule": "*/15 * * * *", "job": script_job("pass")}))
    out = ok(cli(requests_served, "-n", namespace, *BACKFILL, "--wait", "--timeout", "180", timeout=240))
    assert "5 succeeded, 0 did not" in out
    got = run_requests(kubectl, namespace, "hourly")
    assert len(got) == 5 and all(r["status"]["phase"] == "Succeeded" for r in got)
    scheduled = sorted(r["status"]["scheduledTime"] for r in got)
    assert scheduled[0].startswith("2026-01-01T00:00:00")
