"""`make run`: a local control plane, a local node, PostgreSQL, the operator and the demo jobs (demo tooling).

Prints `kubectl get backgroundjobs` as runs finish; Ctrl-C stops every process it started.
"""

from __future__ import annotations

import subprocess
import sys
import time

from tests.support.cluster import REPO_ROOT, ControlPlane
from tests.support.operatorproc import OperatorProcess, install_crds
from tests.support.postgres import PostgresServer
from tests.support.procs import stop_on_signals

NAMESPACE = "nightshift-demo"
DEMO = REPO_ROOT / "manifests" / "demo"


def say(msg: str) -> None:
    print(f"[make run] {msg}", file=sys.stderr, flush=True)


def setup(cp: ControlPlane, pg: PostgresServer) -> str:
    import psycopg

    app = pg.create_database("app")
    with psycopg.connect(app, autocommit=True) as conn:
        conn.execute((DEMO / "setup.sql").read_text().encode())
    install_crds(cp)
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
        operator = OperatorProcess(cp, workdir / "operator", history_dsn=history, jobs_image="nightshift:demo")
        operator.start()
        try:
            cp.kubectl("apply", "-f", str(DEMO / "jobs.yaml"))
            say(f"operator running (metrics http://127.0.0.1:{operator.metrics_port}/metrics, log {operator.log})")
            say(f"in another shell: export KUBECONFIG={cp.kubeconfig}; nightshift -n {NAMESPACE} status")
            say("Ctrl-C stops everything")
            while not stopped():
                if operator.proc is None or operator.proc.poll() is not None:
                    say(f"the operator exited; see {operator.log}")
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
            operator.stop()
    say("stopped everything")
    return 0


if __name__ == "__main__":
    sys.exit(main())
