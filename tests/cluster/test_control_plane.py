"""The test control plane itself: real controllers, a local node that runs processes, KWOK at scale."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import Kubectl, wait_for
from tests.support.cluster import ControlPlane, kwok_pod_template

pytestmark = pytest.mark.cluster


def job(name: str, namespace: str, command: list[str], **pod: object) -> dict[str, object]:
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "backoffLimit": 0,
            "podFailurePolicy": {"rules": [{"action": "FailJob", "onExitCodes": {"operator": "In", "values": [3]}}]},
            "template": {
                "spec": {
                    "restartPolicy": "Never",
                    "containers": [{"name": "main", "image": "local", "command": command}],
                    **pod,
                }
            },
        },
    }


def condition(obj: dict[str, object], kind: str) -> dict[str, object] | None:
    for c in obj.get("status", {}).get("conditions", []):  # type: ignore[attr-defined]
        if c["type"] == kind and c["status"] == "True":
            return c  # type: ignore[no-any-return]
    return None


def test_cronjob_controller_runs_a_real_process(kubectl: Kubectl, namespace: str, tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    script = f"import os; open({str(marker)!r}, 'w').write(os.environ['MSG'])"
    cron = {
        "apiVersion": "batch/v1",
        "kind": "CronJob",
        "metadata": {"name": "every-minute", "namespace": namespace},
        "spec": {
            "schedule": "* * * * *",
            "jobTemplate": {"spec": job("x", namespace, ["python", "-c", script])["spec"]},
        },
    }
    cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]["env"] = [
        {"name": "MSG", "value": "hello"}
    ]  # type: ignore[index]
    kubectl.apply(cron)
    jobs = wait_for(
        lambda: kubectl.json("get", "jobs", "-n", namespace)["items"], timeout=90, what="a Job from the CronJob"
    )
    name = jobs[0]["metadata"]["name"]
    assert jobs[0]["metadata"]["ownerReferences"][0]["kind"] == "CronJob"
    done = wait_for(
        lambda: condition(kubectl.json("get", "job", name, "-n", namespace), "Complete"), timeout=60, what="Complete"
    )
    assert done
    assert marker.read_text() == "hello"
    pod = kubectl.json("get", "pods", "-n", namespace, "-l", f"job-name={name}")["items"][0]
    assert pod["spec"]["nodeName"] == "nightshift-local"
    assert pod["status"]["containerStatuses"][0]["state"]["terminated"]["exitCode"] == 0


def test_exit_code_reaches_pod_failure_policy(kubectl: Kubectl, namespace: str) -> None:
    script = "import os,sys; print('to the log'); open(os.environ['NIGHTSHIFT_TERMINATION_LOG'],'w').write('bad data'); sys.exit(3)"
    kubectl.apply(job("fails", namespace, ["python", "-c", script]))
    failed = wait_for(lambda: condition(kubectl.json("get", "job", "fails", "-n", namespace), "Failed"), what="Failed")
    assert failed["reason"] == "PodFailurePolicy"
    assert "exit code 3" in failed["message"]
    pod = kubectl.json("get", "pods", "-n", namespace, "-l", "job-name=fails")["items"][0]
    term = pod["status"]["containerStatuses"][0]["state"]["terminated"]
    assert (term["exitCode"], term["message"]) == (3, "bad data")
    assert kubectl("logs", "job/fails", "-n", namespace).strip() == "to the log"


def test_pod_deletion_terminates_the_process(kubectl: Kubectl, namespace: str) -> None:
    script = "import signal,sys,time; signal.signal(signal.SIGTERM, lambda *a: sys.exit(75)); time.sleep(600)"
    kubectl.apply(job("sleeper", namespace, ["python", "-c", script]))

    def running() -> object:
        pods = kubectl.json("get", "pods", "-n", namespace, "-l", "job-name=sleeper")["items"]
        return pods and pods[0].get("status", {}).get("phase") == "Running" and pods[0]["metadata"]["name"]

    pod = wait_for(running, what="Running pod")
    t0 = time.monotonic()
    kubectl("delete", "pod", pod, "-n", namespace, "--wait=true", "--timeout=30s")
    assert time.monotonic() - t0 < 15
    assert not subprocess.run(["pgrep", "-f", "time.sleep\\(600\\)"], capture_output=True).stdout


def test_kwok_completes_job_pods_at_scale(kubectl: Kubectl, namespace: str) -> None:
    """KWOK takes the pods of a wide Job through their lifecycle (make bench runs thousands)."""
    spec = job("many", namespace, ["true"], **kwok_pod_template())
    spec["spec"].update({"completions": 200, "parallelism": 100})  # type: ignore[attr-defined]
    kubectl.apply(spec)
    wait_for(
        lambda: condition(kubectl.json("get", "job", "many", "-n", namespace), "Complete"),
        timeout=240,
        interval=2,
        what="200 completions",
    )
    assert kubectl.json("get", "job", "many", "-n", namespace)["status"]["succeeded"] == 200


def _children_alive(pids: list[int]) -> list[int]:
    alive = []
    for pid in pids:
        try:
            os.kill(pid, 0)
            alive.append(pid)
        except ProcessLookupError:
            pass
    return alive


def _cluster_up(workdir: Path, env: dict[str, str]) -> tuple[subprocess.Popen[bytes], list[int]]:
    """`python -m tests.support.cluster up` in the background, once ready, with its children's pids."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.support.cluster", "up", "--dir", str(workdir)],
        env=env,
        stderr=subprocess.DEVNULL,
    )
    wait_for(lambda: (workdir / "ready").exists(), timeout=90, what="ready")
    out = subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True, text=True).stdout
    return proc, [int(p) for p in out.split()]


def test_up_and_down_leave_no_process(tmp_path: Path, cluster: ControlPlane) -> None:
    """`make cluster` / `make cluster-down` path, and stopping an interrupted owner (SIGKILL)."""
    env = {**os.environ, "NIGHTSHIFT_BIN_DIR": str(cluster.bin_dir)}
    up, children = _cluster_up(tmp_path / "a", env)
    assert len(children) >= 6
    subprocess.run(
        [sys.executable, "-m", "tests.support.cluster", "down", "--dir", str(tmp_path / "a")], check=True, env=env
    )
    up.wait(timeout=30)
    wait_for(lambda: not _children_alive(children), timeout=15, what="children gone")

    killed, children = _cluster_up(tmp_path / "b", env)
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    wait_for(lambda: not _children_alive(children), timeout=30, what="children of a killed owner gone")


def test_up_after_down_is_a_new_cluster(tmp_path: Path, cluster: ControlPlane) -> None:
    """`make cluster` after `make cluster-down` must not bring the last cluster's objects back (the
    PKI is new each time; old objects, a namespace still terminating, broke `helm install`)."""
    assert cluster.bin_dir is not None
    bin_dir = cluster.bin_dir
    env = {**os.environ, "NIGHTSHIFT_BIN_DIR": str(bin_dir)}
    workdir = tmp_path / "c"

    def kubectl(*args: str) -> subprocess.CompletedProcess[str]:
        argv = [str(bin_dir / "kubectl"), f"--kubeconfig={workdir / 'kubeconfig'}", *args]
        return subprocess.run(argv, capture_output=True, text=True, check=False)

    def down() -> None:
        subprocess.run(
            [sys.executable, "-m", "tests.support.cluster", "down", "--dir", str(workdir)], check=True, env=env
        )

    up, _ = _cluster_up(workdir, env)
    assert kubectl("create", "namespace", "left-from-last-time").returncode == 0
    down()
    up.wait(timeout=30)
    up, _ = _cluster_up(workdir, env)
    try:
        assert kubectl("get", "namespace", "default").returncode == 0  # the positive signal
        gone = kubectl("get", "namespace", "left-from-last-time")
        assert gone.returncode != 0 and "NotFound" in gone.stderr, gone.stdout
    finally:
        down()
        up.wait(timeout=30)
