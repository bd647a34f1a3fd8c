"""The `nightshift` CLI (and `kubectl nightshift`) against the real control plane."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Kubectl, Operator, bgj, script_job, wait_for

pytestmark = pytest.mark.cluster
BIN = Path(sys.executable).parent
ECHO_PARAMS = (
    "import os; open(os.environ['NIGHTSHIFT_TERMINATION_LOG'],'w').write(os.environ.get('NIGHTSHIFT_PARAMS','{}'))"
)


def cli(operator: Operator, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "KUBECONFIG": str(operator.cluster.kubeconfig), "NIGHTSHIFT_HISTORY_DSN": ""}
    return subprocess.run([str(BIN / "nightshift"), *args], capture_output=True, text=True, env=env, timeout=timeout)


def ok(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def jobs(kubectl: Kubectl, ns: str, name: str) -> list[dict[str, Any]]:
    return kubectl.json("get", "jobs", "-n", ns, "-l", f"nightshift.dev/backgroundjob={name}")["items"]  # type: ignore[no-any-return]


def test_trigger_wait_params_status_describe_history_logs(
    kubectl: Kubectl, running_operator: Operator, namespace: str
) -> None:
    kubectl.apply(bgj("report", namespace, {"schedule": "0 4 * * *", "job": {**script_job(ECHO_PARAMS)}}))
    kubectl.apply(bgj("broken", namespace, {"job": script_job("import sys; print('boom'); sys.exit(65)")}))
    out = ok(
        cli(
            running_operator,
            "-n",
            namespace,
            "trigger",
            "report",
            "--param",
            "limit=5",
            "--param",
            "mode=fast",
            "--wait",
        )
    )
    assert "requested" in out
    st = kubectl.json("get", "bgj", "report", "-n", namespace)["status"]
    assert st["lastRun"]["output"] == {"limit": 5, "mode": "fast"}

    failed = cli(running_operator, "-n", namespace, "trigger", "broken", "--wait")
    assert failed.returncode == 1 and "Failed" in failed.stderr

    status = ok(cli(running_operator, "-n", namespace, "status"))
    assert "report" in status and "health: degraded (1 of 2 jobs failing)" in status
    data = json.loads(ok(cli(running_operator, "-n", namespace, "-o", "json", "status")))
    assert data["health"] == "degraded" and {j["name"] for j in data["jobs"]} == {"report", "broken"}

    described = ok(cli(running_operator, "-n", namespace, "describe", "report"))
    assert "Conditions:" in described and "Ready" in described and "Recent runs:" in described
    assert "Succeeded" in described and "T04:00:00+00:00" in described  # next runs at 04:00 UTC

    history = json.loads(ok(cli(running_operator, "-n", namespace, "-o", "json", "history", "broken")))
    assert [(h["attempt"], h["result"], h["exitCode"]) for h in history] == [(1, "Failed", 65)]
    assert ok(cli(running_operator, "-n", namespace, "logs", "broken")).strip() == "boom"

    retried = ok(cli(running_operator, "-n", namespace, "retry", "broken"))
    assert "requested" in retried
    wait_for(lambda: len(jobs(kubectl, namespace, "broken")) == 2, what="retry run")
    assert cli(running_operator, "-n", namespace, "retry", "report").returncode == 1  # nothing failed there

    plugin = subprocess.run(
        ["kubectl", "nightshift", "-n", namespace, "status", "report"],
        capture_output=True,
        text=True,
        env={
            **os.environ,
            "KUBECONFIG": str(running_operator.cluster.kubeconfig),
            "PATH": f"{BIN}:{running_operator.cluster.bin_dir}:{os.environ['PATH']}",
        },
    )
    assert plugin.returncode == 0 and "report" in plugin.stdout


def test_errors_have_clear_messages_and_exit_codes(running_operator: Operator, namespace: str) -> None:
    missing = cli(running_operator, "-n", namespace, "describe", "nope")
    assert missing.returncode == 3 and "BackgroundJob nope not found" in missing.stderr
    usage = cli(running_operator, "-n", namespace, "suspend")
    assert usage.returncode == 2 and "give a NAME or --all" in usage.stderr
    bad = cli(running_operator, "-n", namespace, "trigger", "nope", "--param", "novalue")
    assert bad.returncode in (2, 3)


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
            {"job": script_job("import time; time.sleep(4)")},
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


def test_backfill_creates_each_scheduled_time_once(
    kubectl: Kubectl, running_operator: Operator, namespace: str
) -> None:
    kubectl.apply(bgj("hourly", namespace, {"schedule": "*/15 * * * *", "job": script_job("pass")}))
    wait_for(lambda: kubectl.run("get", "cronjob", "hourly", "-n", namespace).returncode == 0, what="CronJob")
    args = ("-n", namespace, "backfill", "hourly", "--from", "2026-01-01T00:00:00Z", "--to", "2026-01-01T01:00:00Z")
    assert "5 scheduled times, 5 runs created" in ok(cli(running_operator, *args))
    assert "0 runs created, 5 existed already" in ok(cli(running_operator, *args))
    got = jobs(kubectl, namespace, "hourly")
    assert (
        sorted(j["metadata"]["annotations"]["nightshift.dev/scheduled-time"] for j in got)[0] == "2026-01-01T00:00:00Z"
    )
    wait_for(
        lambda: all(j.get("status", {}).get("succeeded") for j in jobs(kubectl, namespace, "hourly")),
        timeout=120,
        what="backfilled runs complete",
    )
    too_many = cli(
        running_operator,
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
