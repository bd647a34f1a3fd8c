"""The real lane's fixtures: the project's control plane for real pods, a real node (hack/e2e/lane.sh:
the image built by a container engine, containerd, a kubelet, CNI, kube-proxy), cluster DNS, and a
PostgreSQL that pods reach. One of each per session; the host is snapshotted first and restored last.

`make e2e` runs these tests (pytest -m e2e); `make test` leaves them out by configuration (the
`e2e` marker is deselected in pyproject's addopts). A machine that cannot run them fails here, saying
what is missing; nothing is skipped.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import wait_for as _wait_for
from tests.support import hoststate
from tests.support.cluster import REPO_ROOT, ControlPlane
from tests.support.postgres import PostgresServer

LANE = REPO_ROOT / "hack" / "e2e" / "lane.sh"
IMAGE_REPOSITORY = "ghcr.io/nightshift-dev/nightshift"
IMAGE_TAG = "e2e"
IMAGE = f"{IMAGE_REPOSITORY}:{IMAGE_TAG}"
NODE = "nightshift-e2e"
POD_CIDR = "10.88.0.0/16"


wait_for = functools.partial(_wait_for, interval=1)  # the suite's, polling once a second: real pods are slower


@dataclass
class Lane:
    """The running lane: its directory, control plane, node binaries and the host as it was before."""

    dir: Path
    cp: ControlPlane
    node_bin: Path
    before: dict[str, Any]
    timings: dict[str, Any] = field(default_factory=dict)
    seen_running: dict[str, bool] = field(default_factory=dict)
    left_behind: list[str] | None = None
    pids: dict[str, int] = field(default_factory=dict)

    @property
    def env(self) -> dict[str, str]:
        return {
            **os.environ,
            "E2E_DIR": str(self.dir),
            "KUBECONFIG": str(self.cp.kubeconfig),
            # The node's own identities, as in a real cluster (not the admin's).
            "KUBELET_KUBECONFIG": str(self.cp.workdir / "kubelet.kubeconfig"),
            "KUBE_PROXY_KUBECONFIG": str(self.cp.workdir / "kube-proxy.kubeconfig"),
            "IMAGE": IMAGE,
            "NODE_NAME": NODE,
        }

    def sh(self, *phases: str) -> None:
        t0 = time.monotonic()
        out = subprocess.run(["bash", str(LANE), *phases], env=self.env, capture_output=True, text=True, check=False)
        (self.dir / "logs").mkdir(parents=True, exist_ok=True)
        with (self.dir / "logs" / "lane.log").open("a") as f:
            f.write(out.stdout + out.stderr)
        if out.returncode != 0:
            raise AssertionError(f"hack/e2e/lane.sh {' '.join(phases)} failed:\n{out.stderr[-4000:]}")
        self.timings["lane " + " ".join(phases)] = round(time.monotonic() - t0, 1)

    def kubectl(self, *args: str, input: str | None = None, check: bool = True) -> str:
        return self.cp.kubectl(*args, input=input, check=check)

    def run(self, *args: str, input: str | None = None) -> subprocess.CompletedProcess[str]:
        """kubectl, its exit code and stderr kept: for what the API server refuses."""
        assert self.cp.bin_dir is not None
        argv = [str(self.cp.bin_dir / "kubectl"), f"--kubeconfig={self.cp.kubeconfig}", *args]
        return subprocess.run(argv, input=input, capture_output=True, text=True, check=False)

    def json(self, *args: str) -> Any:
        return json.loads(self.kubectl(*args, "-o", "json"))

    def docker(self, *args: str) -> subprocess.CompletedProcess[str]:
        """The engine the lane built with (its own or the host's), with the client it chose."""
        return subprocess.run(["bash", str(LANE), "docker", *args], env=self.env, capture_output=True, text=True)

    def pid_files(self) -> dict[str, int]:
        run = self.dir / "run"
        return {p.stem: int(p.read_text()) for p in run.glob("*.pid") if p.read_text().strip().isdigit()}

    def teardown(self) -> list[str]:
        """Everything down, the host restored; returns what still differs from before (idempotent)."""
        if self.left_behind is not None:
            return self.left_behind
        self.pids = self.pid_files()
        # Pods first, while the kubelet runs: it unmounts their volumes and CNI DEL removes their links.
        # (Best effort: when the lane failed half way up there may be no API server to ask.)
        try:
            for ns in self.json("get", "namespaces")["items"]:
                name = ns["metadata"]["name"]
                if name not in ("default", "kube-system", "kube-public", "kube-node-lease"):
                    self.kubectl("delete", "namespace", name, "--wait=false", check=False)
            self.kubectl("delete", "deployments,pods", "--all", "-n", "kube-system", "--wait=false", check=False)
            wait_for(
                lambda: not self.json("get", "pods", "-A")["items"], timeout=90, what="every pod gone before the node"
            )
        except (AssertionError, RuntimeError) as e:
            print(f"[e2e] before down: {e}")
        try:
            self.sh("down")
        finally:
            self.cp.stop()
            hoststate.restore(self.before)
        self.left_behind = hoststate.diff(self.before, hoststate.snapshot())
        (self.dir / "host-left-behind.json").write_text(json.dumps(self.left_behind, indent=1))
        # The node's and the cluster's state go (about 1 GB: images unpacked, etcd); logs, configs
        # and timings stay for a look afterwards.
        if not any(m.startswith(str(self.dir)) for m in hoststate.snapshot()["mounts"]):
            for sub in ("containerd", "kubelet", "volumes", "cni", "cluster/etcd"):
                shutil.rmtree(self.dir / sub, ignore_errors=True)
        return self.left_behind


def _fail_unless_root_and_tools(env: dict[str, str]) -> None:
    if os.geteuid() != 0:
        pytest.fail("the real lane needs root: a kubelet, containerd, iptables and mounts (run `sudo make e2e`)")
    out = subprocess.run(["bash", str(LANE), "check"], env=env, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        pytest.fail(f"this machine cannot run the real lane yet: {out.stderr.strip()}")


@pytest.fixture(scope="session")
def lane() -> Iterator[Lane]:
    bin_dir = os.environ.get("NIGHTSHIFT_BIN_DIR")
    node_bin = os.environ.get("NIGHTSHIFT_NODE_BIN_DIR")
    if not bin_dir or not node_bin:
        pytest.fail(
            "NIGHTSHIFT_BIN_DIR (control plane) and NIGHTSHIFT_NODE_BIN_DIR (kubelet, kube-proxy, coredns:"
            " hack/build-node-binaries.sh) must be set: run `make e2e`"
        )
    # A short path: unix socket paths (containerd's, dockerd's) must stay under 108 bytes.
    root = Path(os.environ.get("NIGHTSHIFT_E2E_DIR", "/tmp/nightshift-e2e"))
    root.mkdir(parents=True, exist_ok=True)
    workdir = root / f"run-{os.getpid()}"
    workdir.mkdir(parents=True)
    _fail_unless_root_and_tools({**os.environ, "E2E_DIR": str(workdir)})
    before = hoststate.snapshot()
    (workdir / "host-before.json").write_text(json.dumps(before))
    cp = ControlPlane(
        workdir / "cluster", bin_dir=Path(bin_dir), local_node=False, kwok=False, real_pods=True, quiet=True
    )
    lane = Lane(dir=workdir, cp=cp, node_bin=Path(node_bin), before=before)
    t0 = time.monotonic()
    try:
        cp.start()
        lane.timings["control plane"] = round(time.monotonic() - t0, 1)
        cp.client_kubeconfig("kubelet", f"system:node:{NODE}", ["system:nodes"])
        cp.client_kubeconfig("kube-proxy", "system:kube-proxy")
        lane.sh("engine-up")
        lane.sh("images")
        lane.sh("node-up")
        t1 = time.monotonic()
        wait_for(lambda: _node_ready(lane), timeout=120, what=f"node {NODE} Ready (see {workdir}/logs/kubelet.log)")
        lane.timings["node Ready"] = round(time.monotonic() - t1, 1)
        coredns = (REPO_ROOT / "hack" / "e2e" / "coredns.yaml").read_text()
        lane.kubectl("apply", "-f", "-", input=coredns.replace("${COREDNS_IMAGE}", _coredns_image()))
        t1 = time.monotonic()
        lane.kubectl("-n", "kube-system", "rollout", "status", "deploy/coredns", "--timeout=120s")
        lane.timings["cluster DNS Ready"] = round(time.monotonic() - t1, 1)
        lane.timings["lane up"] = round(time.monotonic() - t0, 1)
        lane.seen_running = {
            "kubelet": _alive(lane.pid_files().get("kubelet")),
            "containerd": _alive(lane.pid_files().get("containerd")),
            "bridge": "nse2e0" in hoststate.snapshot()["links"],
        }
        yield lane
    finally:
        try:
            lane.teardown()
        finally:
            print(f"\n[e2e] timings: {json.dumps(lane.timings)}")
            (workdir / "timings.json").write_text(json.dumps(lane.timings, indent=1))


def _alive(pid: int | None) -> bool:
    if pid is None:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _coredns_image() -> str:
    versions = dict(
        line.split("=", 1) for line in (REPO_ROOT / "hack" / "versions.env").read_text().splitlines() if "=" in line
    )
    return f"local/coredns:{versions['COREDNS_VERSION'].strip()}"


def _node_ready(lane: Lane) -> bool:
    nodes = lane.json("get", "nodes")["items"]
    return any(
        c["type"] == "Ready" and c["status"] == "True"
        for n in nodes
        if n["metadata"]["name"] == NODE
        for c in n["status"].get("conditions", [])
    )


@pytest.fixture(scope="session")
def pg(lane: Lane) -> Iterator[PostgresServer]:
    """PostgreSQL on the host, listening on the node's address where pods reach it, trusting the pod
    network (a throwaway test server)."""
    server = PostgresServer()
    server.host = lane.cp.host
    with server:
        server.allow(POD_CIDR)
        server.allow(f"{server.host}/32")  # the tests themselves, on the node
        yield server
