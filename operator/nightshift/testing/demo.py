"""`make run`: a local control plane, a local node, PostgreSQL, the operator and the demo jobs (demo tooling).

Prints `kubectl get backgroundjobs` as runs finish; Ctrl-C stops every process it started.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from nightshift.testing.cluster import REPO_ROOT, ControlPlane
from nightshift.testing.postgres import PostgresServer
from nightshift.testing.procs import die_with_parent, free_port, stop_on_signals

NAMESPACE = "nightshift-demo"
DEMO = REPO_ROOT / "manifests" / "demo"


def say(msg: str) -> None:
    print(f"[make run] {msg}", file=sys.stderr, flush=True)


def setup(cp: ControlPlane, pg: PostgresServer) -> str:
    import psycopg

    app = pg.create_database("app")
    with psycopg.connect(app, autocommit=True) as conn:
        conn.execute((DEMO / "setup.sql").read_text().encode())
    cp.kubectl("apply", "--server-side", "-f", str(REPO_ROOT / "crds"))
    for crd in ("backgroundjobs", "backgroundjobqueues"):
        cp.kubectl("wait", "--for=condition=Established", f"crd/{crd}.nightshift.dev", "--timeout=60s")
    for i, prio in enumerate(("low", "medium", "high", "critical")):
        cp.kubectl(
            "apply",
            "-f",
            "-",
            input=json.dumps(
                {
                    "apiVersion": "scheduling.k8s.io/v1",
                    "kind": "PriorityClass",
                    "metadata": {"name": f"nightshift-{prio}"},
                    "value": 1000 * (i + 1),
                }
            ),
        )
    cp.kubectl("create", "namespace", NAMESPACE)
    cp.kubectl("create", "secret", "generic", "app-db", "-n", NAMESPACE, f"--from-literal=DATABASE_URL={app}")
    return pg.create_database("nightshift_history")


def main() -> int:
    workdir = REPO_ROOT / ".run"
    stopped = stop_on_signals()
    if workdir.exists():
        subprocess.run(["rm", "-rf", str(workdir)], check=True)
    say("starting the control plane (etcd, kube-apiserver, controllers, scheduler, KWOK, local node)")
    with ControlPlane(workdir) as cp, PostgresServer() as pg:
        say(f"PostgreSQL at {pg.dsn}")
        history = setup(cp, pg)
        port, health = free_port(), free_port()
        env = {
            **os.environ,
            "KUBECONFIG": str(cp.kubeconfig),
            "NIGHTSHIFT_HISTORY_DSN": history,
            "NIGHTSHIFT_METRICS_PORT": str(port),
            "NIGHTSHIFT_HEALTH_PORT": str(health),
            "NIGHTSHIFT_LISTEN_ADDRESS": "127.0.0.1",
            "NIGHTSHIFT_JOBS_IMAGE": "nightshift:demo",
            "NIGHTSHIFT_LOG_JSON": "false",
        }
        log = open(workdir / "operator.log", "wb")
        operator = subprocess.Popen(
            [str(Path(sys.executable).parent / "nightshift-operator")],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            preexec_fn=die_with_parent,
        )
        log.close()
        try:
            time.sleep(3)
            cp.kubectl("apply", "-f", str(DEMO / "jobs.yaml"))
            say(f"operator running (metrics http://127.0.0.1:{port}/metrics, log {workdir / 'operator.log'})")
            say(f"in another shell: export KUBECONFIG={cp.kubeconfig}; nightshift -n {NAMESPACE} status")
            say("Ctrl-C stops everything")
            while not stopped():
                if operator.poll() is not None:
                    say(f"the operator exited ({operator.returncode}); see {workdir / 'operator.log'}")
                    return 1
                table = cp.kubectl("get", "backgroundjobs", "-n", NAMESPACE, check=False)
                print(
                    f"\n$ kubectl get backgroundjobs -n {NAMESPACE}   ({time.strftime('%H:%M:%S')})\n{table}",
                    flush=True,
                )
                for _ in range(10):
                    if stopped():
                        break
                    time.sleep(0.5)
        finally:
            operator.terminate()
            try:
                operator.wait(timeout=15)
            except subprocess.TimeoutExpired:
                operator.kill()
    say("stopped everything")
    return 0


if __name__ == "__main__":
    sys.exit(main())
