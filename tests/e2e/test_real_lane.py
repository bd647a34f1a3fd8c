"""nightshift as its users run it: the image built by a real engine, `helm install` on a cluster with a
real kubelet, the seed catalogues in real containers under PodSecurity `restricted`, metrics through
the Service, the webhook through the API server, upgrade and uninstall, and the host left clean.

The tests run in file order and share one release (they are steps of one story); the last one tears
the lane down and asserts the host is as it was.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import psycopg
import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from tests.e2e.conftest import IMAGE, IMAGE_REPOSITORY, IMAGE_TAG, Lane, wait_for
from tests.support.cluster import REPO_ROOT
from tests.support.postgres import PostgresServer

pytestmark = pytest.mark.e2e

CHART = REPO_ROOT / "charts" / "nightshift"
EXAMPLES = REPO_ROOT / "manifests" / "examples"
SYSTEMS = sorted(p.name for p in EXAMPLES.iterdir() if p.is_dir())
RELEASE, RELEASE_NS = "nightshift", "nightshift-system"
RESTRICTED = {
    "pod-security.kubernetes.io/enforce": "restricted",
    "pod-security.kubernetes.io/enforce-version": "latest",
    "pod-security.kubernetes.io/warn": "restricted",
}
STANDIN_PORT = 8080


def helm(lane: Lane, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    assert lane.cp.bin_dir is not None
    out = subprocess.run(
        [str(lane.cp.bin_dir / "helm"), f"--kubeconfig={lane.cp.kubeconfig}", *args],
        capture_output=True,
        text=True,
        check=False,
    )
    if check:
        assert out.returncode == 0, f"helm {' '.join(args)}\n{out.stdout}\n{out.stderr}"
    return out


def restricted_namespace(lane: Lane, name: str) -> None:
    lane.kubectl(
        "apply",
        "-f",
        "-",
        input=json.dumps({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": RESTRICTED}}),
    )


INSTALL = [
    f"--set=image.repository={IMAGE_REPOSITORY}",
    f"--set=image.tag={IMAGE_TAG}",
    "--set=image.pullPolicy=Never",
    "--set=history.existingSecret=nightshift-history",
    "--wait",
    "--timeout=180s",
]


def operator_pod(lane: Lane) -> dict[str, Any]:
    pods = lane.json("get", "pods", "-n", RELEASE_NS, "-l", "app.kubernetes.io/name=nightshift")["items"]
    running = [p for p in pods if not p["metadata"].get("deletionTimestamp")]
    assert len(running) == 1, [p["metadata"]["name"] for p in pods]
    pod: dict[str, Any] = running[0]
    return pod


def ready_seconds(pod: dict[str, Any]) -> float:
    created = dt.datetime.fromisoformat(pod["metadata"]["creationTimestamp"])
    ready = next(c for c in pod["status"]["conditions"] if c["type"] == "Ready")
    return (dt.datetime.fromisoformat(ready["lastTransitionTime"]) - created).total_seconds()


# -- the image ------------------------------------------------------------------------------------------
def test_image_is_small_non_root_and_runs_read_only(lane: Lane) -> None:
    info = json.loads(lane.docker("image", "inspect", IMAGE).stdout)[0]
    size_mb = info["Size"] / 1e6
    lane.timings["image MB"] = round(size_mb)
    assert size_mb < 400, f"image is {size_mb:.0f} MB"
    assert info["Config"]["User"] == "10001:10001"  # numeric: runAsNonRoot verifies it
    assert info["Config"]["Cmd"] == ["python", "-m", "nightshift"]  # the operator, as the chart runs it
    # Only the final stage: no build tools, no wheels, no sources.
    run = lane.docker(
        "run", "--rm", "--read-only", "--network=none", "--cap-drop=ALL", IMAGE,
        "python", "-c",
        "import os, shutil, nightshift, nightshift_jobs, kopf; "
        "print(os.getuid(), bool(shutil.which('gcc')), bool(os.listdir('/wheels')), os.path.exists('/src'))",
    )  # fmt: skip
    # (/wheels is the bind mount's empty mount point: the wheels themselves stayed in the builder.)
    assert run.returncode == 0, run.stderr
    assert run.stdout.split() == ["10001", "False", "False", "False"]


# -- the release --------------------------------------------------------------------------------------
def test_helm_install_operator_ready_restricted_and_leading(lane: Lane, pg: PostgresServer) -> None:
    restricted_namespace(lane, RELEASE_NS)
    dsn = pg.create_database("nightshift_history")
    lane.kubectl("-n", RELEASE_NS, "create", "secret", "generic", "nightshift-history", f"--from-literal=dsn={dsn}")
    t0 = time.monotonic()
    helm(lane, "install", RELEASE, str(CHART), "-n", RELEASE_NS, *INSTALL)
    lane.timings["helm install --wait"] = round(time.monotonic() - t0, 1)
    pod = operator_pod(lane)
    lane.timings["operator pod created->Ready"] = ready_seconds(pod)
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert pod["spec"]["securityContext"] == values["podSecurityContext"]
    assert pod["spec"]["containers"][0]["securityContext"] == values["securityContext"]
    assert pod["spec"]["containers"][0]["image"] == IMAGE
    lease = wait_for(
        lambda: lane.json("get", "lease", "-n", RELEASE_NS, values["operator"]["leaseName"]),
        what="the operator's Lease",
    )
    assert lease["spec"]["holderIdentity"].startswith(pod["metadata"]["name"]), lease["spec"]


def test_restricted_is_enforced(lane: Lane) -> None:
    """The positive signal behind "every generated pod is admitted": a privileged pod is refused here."""
    privileged = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "privileged", "namespace": RELEASE_NS},
        "spec": {"containers": [{"name": "c", "image": IMAGE, "securityContext": {"privileged": True}}]},
    }
    out = lane.run("create", "--dry-run=server", "-f", "-", input=json.dumps(privileged))
    assert out.returncode != 0 and 'violates PodSecurity "restricted' in out.stderr, out.stderr


# -- the seed catalogues ------------------------------------------------------------------------------
def _documents(system: str) -> list[dict[str, Any]]:
    return [d for f in sorted((EXAMPLES / system).glob("*.yaml")) for d in yaml.safe_load_all(f.read_text()) if d]


def _schema(jobs: list[dict[str, Any]]) -> list[str]:
    """Tables and views the catalogue's built-ins work on, with a few rows, from their params."""
    tables: dict[str, set[str]] = {}
    views: list[str] = []
    for d in jobs:
        p = d["spec"]["job"].get("params") or {}
        for key in ("table",):
            if key in p:
                tables.setdefault(p[key], set()).add(p.get("timestampColumn", "created_at"))
        for t in p.get("tables", []):
            tables.setdefault(t, set())
        views += p.get("views", [])
        if "api_quotas" in p.get("statement", ""):
            tables.setdefault("api_quotas", set())
    out = []
    for name, ts in sorted(tables.items()):
        cols = ", ".join(f"{c} timestamptz NOT NULL DEFAULT now()" for c in sorted(ts | {"created_at"}))
        extra = ", used int NOT NULL DEFAULT 0, reset_at timestamptz" if name == "api_quotas" else ""
        out.append(f"CREATE TABLE {name} (id bigserial PRIMARY KEY, {cols}{extra})")
        older = ", ".join("now() - interval '3 years'" for _ in sorted(ts | {"created_at"}))
        out.append(
            f"INSERT INTO {name} ({', '.join(sorted(ts | {'created_at'}))}) SELECT {older} FROM generate_series(1, 20)"
        )
        out.append(f"INSERT INTO {name} DEFAULT VALUES")
    for v in views:
        out.append(f"CREATE MATERIALIZED VIEW {v} AS SELECT g AS id FROM generate_series(1, 10) g")
        out.append(f"CREATE UNIQUE INDEX ON {v} (id)")
    return out


def _standin_web(lane: Lane, ns: str, jobs: list[dict[str, Any]]) -> None:
    """The apps' HTTP endpoints the built-ins call (cache refresh, health), answered by a stand-in:
    one pod of the project image answering 200 to any request, one Service per host name."""
    hosts: dict[str, int] = {}
    for d in jobs:
        p = d["spec"]["job"].get("params") or {}
        urls = [p["url"]] if "url" in p else []
        urls += [e["url"] for e in p.get("endpoints", [])]
        for url in urls:
            parts = urlsplit(url)
            assert parts.hostname and parts.hostname.endswith(f".{ns}.svc"), url
            hosts[parts.hostname.split(".")[0]] = parts.port or 80
    if not hosts:
        return
    server = (
        "import http.server as h\n"
        "class H(h.BaseHTTPRequestHandler):\n"
        "    def answer(self):\n"
        "        self.send_response(200); self.send_header('Content-Type', 'application/json'); self.end_headers()\n"
        '        self.wfile.write(b\'{"status": "ok"}\')\n'
        "    do_GET = do_POST = do_PUT = do_HEAD = answer\n"
        f"h.ThreadingHTTPServer(('', {STANDIN_PORT}), H).serve_forever()\n"
    )
    objs: list[dict[str, Any]] = [
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "standin-web", "namespace": ns},
            "spec": {
                "selector": {"matchLabels": {"app": "standin-web"}},
                "template": {
                    "metadata": {"labels": {"app": "standin-web"}},
                    "spec": {
                        "securityContext": {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}},
                        "containers": [
                            {
                                "name": "web",
                                "image": IMAGE,
                                "imagePullPolicy": "Never",
                                "command": ["python", "-c", server],
                                "ports": [{"containerPort": STANDIN_PORT}],
                                "readinessProbe": {"tcpSocket": {"port": STANDIN_PORT}, "periodSeconds": 1},
                                "securityContext": {
                                    "allowPrivilegeEscalation": False,
                                    "readOnlyRootFilesystem": True,
                                    "capabilities": {"drop": ["ALL"]},
                                },
                            }
                        ],
                    },
                },
            },
        }
    ]
    for host, port in hosts.items():
        objs.append(
            {
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": {"name": host, "namespace": ns},
                "spec": {"selector": {"app": "standin-web"}, "ports": [{"port": port, "targetPort": STANDIN_PORT}]},
            }
        )
    lane.kubectl("apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List", "items": objs}))
    lane.kubectl("-n", ns, "rollout", "status", "deploy/standin-web", "--timeout=120s")


def _volumes(lane: Lane, ns: str, jobs: list[dict[str, Any]]) -> None:
    """PersistentVolumeClaims the jobs mount (the backup's), bound to a hostPath volume in the lane's
    directory: restricted forbids hostPath in pods, not behind a claim."""
    for d in jobs:
        for vol in d["spec"]["job"].get("volumes", []):
            claim = vol.get("persistentVolumeClaim", {}).get("claimName")
            if not claim:
                continue
            path = lane.dir / "volumes" / ns / claim
            path.mkdir(parents=True, exist_ok=True)
            path.chmod(0o777)
            pv = {
                "apiVersion": "v1",
                "kind": "PersistentVolume",
                "metadata": {"name": f"{ns}-{claim}"},
                "spec": {
                    "capacity": {"storage": "1Gi"},
                    "accessModes": ["ReadWriteOnce"],
                    "storageClassName": "",
                    "hostPath": {"path": str(path), "type": "Directory"},
                    "claimRef": {"namespace": ns, "name": claim},
                },
            }
            pvc = {
                "apiVersion": "v1",
                "kind": "PersistentVolumeClaim",
                "metadata": {"name": claim, "namespace": ns},
                "spec": {
                    "accessModes": ["ReadWriteOnce"],
                    "storageClassName": "",
                    "volumeName": f"{ns}-{claim}",
                    "resources": {"requests": {"storage": "1Gi"}},
                },
            }
            lane.kubectl("apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List", "items": [pv, pvc]}))


def _secrets(lane: Lane, ns: str, jobs: list[dict[str, Any]], dsn: str) -> None:
    names = {e["secretRef"]["name"] for d in jobs for e in d["spec"]["job"].get("envFrom", []) if "secretRef" in e}
    for name in sorted(names):
        data = {"DATABASE_URL": dsn, "INTERNAL_API_TOKEN": "Bearer e2e"} if name in ("app-db", "supabase") else {}
        data = data or {"INTERNAL_API_TOKEN": "Bearer e2e", "API_KEY": "e2e"}
        lane.kubectl(
            "apply",
            "-f",
            "-",
            input=json.dumps(
                {
                    "apiVersion": "v1",
                    "kind": "Secret",
                    "metadata": {"name": name, "namespace": ns},
                    "stringData": data,
                }
            ),
        )


def _levels(jobs: list[dict[str, Any]]) -> list[list[str]]:
    """Job names in dependency order: each level depends only on earlier ones."""
    deps = {d["metadata"]["name"]: {x["name"] for x in d["spec"].get("dependsOn", [])} for d in jobs}
    done: set[str] = set()
    levels = []
    while len(done) < len(deps):
        level = sorted(n for n, ds in deps.items() if n not in done and ds <= done)
        assert level, f"dependency cycle among {set(deps) - done}"
        levels.append(level)
        done |= set(level)
    return levels


def _request(lane: Lane, ns: str, job: str) -> str:
    name = f"{job[:40]}-e2e-{uuid.uuid4().hex[:6]}"
    lane.kubectl(
        "create",
        "-f",
        "-",
        input=json.dumps(
            {
                "apiVersion": "nightshift.dev/v1alpha1",
                "kind": "BackgroundJobRun",
                "metadata": {"name": name, "namespace": ns},
                "spec": {"backgroundJob": job, "reason": "e2e"},
            }
        ),
    )
    return name


def _finished(lane: Lane, ns: str, names: list[str]) -> dict[str, dict[str, Any]] | None:
    runs = {r["metadata"]["name"]: r for r in lane.json("get", "backgroundjobruns", "-n", ns)["items"]}
    done = {n: runs[n] for n in names if any(
        c["type"] == "Finished" and c["status"] == "True" for c in runs.get(n, {}).get("status", {}).get("conditions", [])
    )}  # fmt: skip
    return done if len(done) == len(names) else None


@pytest.mark.parametrize("system", SYSTEMS)
def test_seed_catalogue_runs_in_real_containers(lane: Lane, pg: PostgresServer, system: str) -> None:
    docs = _documents(system)
    jobs = [d for d in docs if d["kind"] == "BackgroundJob"]
    ns = system
    restricted_namespace(lane, ns)
    dsn = pg.create_database(f"e2e_{system.replace('-', '_')}")
    with psycopg.connect(dsn, autocommit=True) as conn:
        for stmt in _schema(jobs):
            conn.execute(stmt)
    _secrets(lane, ns, jobs, dsn)
    _volumes(lane, ns, jobs)
    _standin_web(lane, ns, jobs)
    lane.kubectl("apply", "-f", str(EXAMPLES / system))
    t0 = time.monotonic()
    results: dict[str, dict[str, Any]] = {}
    for level in _levels(jobs):
        pending = list(level)
        for _ in range(4):
            requests = {_request(lane, ns, job): job for job in pending}
            names = list(requests)

            def finished(names: list[str] = names) -> dict[str, dict[str, Any]] | None:
                return _finished(lane, ns, names)

            done = wait_for(finished, timeout=300, interval=2, what=f"{system} runs {pending}")
            results |= {requests[n]: r for n, r in done.items()}
            # A request that met the job's own scheduled run (every: 1m, at: ...) under
            # concurrencyPolicy: Forbid is skipped, as it should be: ask again once that run ends.
            pending = [
                requests[n] for n, r in done.items() if r["status"].get("reason", "").startswith("ConcurrencyForbid")
            ]
            if not pending:
                break
            time.sleep(5)
    lane.timings[f"catalogue {system} ({len(jobs)} jobs)"] = round(time.monotonic() - t0, 1)
    failed = {
        job: {k: r["status"].get(k) for k in ("phase", "reason", "exitCode", "message", "output")}
        for job, r in results.items()
        if r["status"].get("phase") != "Succeeded"
    }
    assert not failed, json.dumps(failed, indent=1)
    # Pod start: created by the Job controller to its container running, as the kubelet reports it.
    starts = sorted(
        (
            dt.datetime.fromisoformat(c["state"]["terminated"]["startedAt"])
            - dt.datetime.fromisoformat(p["metadata"]["creationTimestamp"])
        ).total_seconds()
        for p in lane.json("get", "pods", "-n", ns, "-l", "batch.kubernetes.io/job-name")["items"]
        for c in p["status"].get("containerStatuses", [])
        if "terminated" in c.get("state", {})
    )
    if starts:  # a measurement, not a check: the operator may have pruned finished pods already
        lane.timings[f"job pod start {system} median/max s"] = [starts[len(starts) // 2], starts[-1]]

    # The history: the operator, in its pod, wrote every attempt to PostgreSQL on the host.
    def attempts() -> int:
        with psycopg.connect(pg.dsn_for("nightshift_history")) as conn:
            row = conn.execute("SELECT count(*) FROM nightshift_attempts WHERE namespace = %s", (ns,)).fetchone()
        return int(row[0]) if row and row[0] >= len(jobs) else 0

    wait_for(attempts, timeout=60, what=f"{len(jobs)} attempts of {ns} in the history")
    # Every generated pod admitted: no Job of the namespace was refused a pod.
    events = lane.json("get", "events", "-n", ns)["items"]
    refused = [e["message"] for e in events if "violates PodSecurity" in e.get("message", "")]
    assert not refused, refused
    lane.kubectl("delete", "namespace", ns, "--wait=false")


# -- metrics, webhook, upgrade, uninstall -------------------------------------------------------------
def test_metrics_through_the_service(lane: Lane) -> None:
    """A pod scrapes /metrics through the chart's Service by its DNS name, as Prometheus would."""
    ns = "scrape"
    restricted_namespace(lane, ns)
    url = f"http://{RELEASE}-metrics.{RELEASE_NS}.svc:9090/metrics"
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "scrape", "namespace": ns},
        "spec": {
            "restartPolicy": "Never",
            "securityContext": {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [
                {
                    "name": "scrape",
                    "image": IMAGE,
                    "imagePullPolicy": "Never",
                    "command": [
                        "python",
                        "-c",
                        f"import urllib.request; print(urllib.request.urlopen({url!r}, timeout=10).read().decode())",
                    ],
                    "securityContext": {
                        "allowPrivilegeEscalation": False,
                        "readOnlyRootFilesystem": True,
                        "capabilities": {"drop": ["ALL"]},
                    },
                }
            ],
        },
    }
    lane.kubectl("apply", "-f", "-", input=json.dumps(pod))
    phase = wait_for(
        lambda: (
            lane.json("get", "pod", "-n", ns, "scrape").get("status", {}).get("phase") in ("Succeeded", "Failed")
            and lane.json("get", "pod", "-n", ns, "scrape")["status"]["phase"]
        ),
        timeout=90,
        what="the scrape pod",
    )
    text = lane.kubectl("logs", "-n", ns, "scrape")
    assert phase == "Succeeded", text
    assert "nightshift_" in text and "# TYPE" in text, text[:2000]
    lane.kubectl("delete", "namespace", ns, "--wait=false")


def _webhook_tls(lane: Lane, service: str) -> dict[str, str]:
    """A serving certificate for the webhook Service's DNS name, signed by the cluster's CA."""
    pki = lane.cp.workdir / "pki"
    ca = x509.load_pem_x509_certificate((pki / "ca.crt").read_bytes())
    ca_key = serialization.load_pem_private_key((pki / "ca.key").read_bytes(), password=None)
    assert isinstance(ca_key, rsa.RSAPrivateKey)
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, service)]))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(service)]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    pem_key = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()
    )
    return {
        "tls.crt": base64.b64encode(cert.public_bytes(serialization.Encoding.PEM)).decode(),
        "tls.key": base64.b64encode(pem_key).decode(),
        "ca.crt": base64.b64encode((pki / "ca.crt").read_bytes()).decode(),
    }


def test_helm_upgrade_enables_the_webhook_which_rejects_through_the_api_server(lane: Lane) -> None:
    service = f"{RELEASE}-webhook.{RELEASE_NS}.svc"
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "kubernetes.io/tls",
        "metadata": {"name": "nightshift-webhook-tls", "namespace": RELEASE_NS},
        "data": _webhook_tls(lane, service),
    }
    lane.kubectl("apply", "-f", "-", input=json.dumps(secret))
    helm(lane, "upgrade", RELEASE, str(CHART), "-n", RELEASE_NS, *INSTALL,
         "--set=webhook.enabled=true", "--set=webhook.certSecret=nightshift-webhook-tls")  # fmt: skip
    # The API server dials the URL kopf registers (https://<service>:9443/...): it resolves the
    # Service's name with its own /etc/hosts (tests/support/cluster.py), pointed at the ClusterIP.
    ip = lane.json("get", "service", "-n", RELEASE_NS, f"{RELEASE}-webhook")["spec"]["clusterIP"]
    lane.cp.add_host(service, ip)
    pod = operator_pod(lane)
    wait_for(
        lambda: lane.kubectl("get", "validatingwebhookconfigurations", "-o", "name", check=False).strip(),
        what="kopf's ValidatingWebhookConfiguration",
    )
    ns = "webhook-check"
    restricted_namespace(lane, ns)
    bad = {
        "apiVersion": "nightshift.dev/v1alpha1",
        "kind": "BackgroundJob",
        "metadata": {"name": "typo", "namespace": ns},
        "spec": {"job": {"builtin": "ttl-cleanup", "params": {"tabel": "sessions", "timestampColumn": "created_at"}}},
    }

    def rejected() -> str | None:
        out = lane.run("create", "--dry-run=server", "-f", "-", input=json.dumps(bad))
        return out.stderr if out.returncode != 0 and "admission webhook" in out.stderr else None

    message = wait_for(rejected, timeout=60, interval=2, what="the webhook rejecting an invalid BackgroundJob")
    assert "tabel" in message, message
    logs = lane.kubectl("logs", "-n", RELEASE_NS, pod["metadata"]["name"])
    assert "forbidden" not in logs.lower(), [ln for ln in logs.splitlines() if "orbidden" in ln][:5]
    lane.kubectl("delete", "namespace", ns, "--wait=false")


def test_crd_upgrade_command_from_the_docs_works_after_helm_install(lane: Lane, tmp_path: Path) -> None:
    """Helm installs CRDs once and never upgrades them; the docs' command must apply a changed CRD over
    the fields helm owns (a plain server-side apply conflicts with helm's field manager)."""
    changed = tmp_path / "crds"
    changed.mkdir()
    for f in (CHART / "crds").glob("*.yaml"):
        doc = yaml.safe_load(f.read_text())
        doc["metadata"].setdefault("annotations", {})["nightshift.dev/e2e"] = "upgraded"
        versions = doc["spec"]["versions"]
        versions[0]["schema"]["openAPIV3Schema"]["description"] = "changed by the e2e upgrade test"
        (changed / f.name).write_text(yaml.safe_dump(doc))
    plain = lane.run("apply", "--server-side", "-f", str(changed))
    documented = _documented_crd_command()
    out = lane.run(*documented[1:], str(changed))
    assert out.returncode == 0, f"{' '.join(documented)}: {out.stderr}\n(plain server-side apply: {plain.stderr})"
    crd = lane.json("get", "crd", "backgroundjobs.nightshift.dev")
    assert crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["description"] == "changed by the e2e upgrade test"
    # Back to the chart's CRDs with the same command.
    back = lane.run(*documented[1:], str(CHART / "crds"))
    assert back.returncode == 0, back.stderr


def _documented_crd_command() -> list[str]:
    """The CRD upgrade command as the chart's README gives it (docs/observability.md repeats it)."""
    lines = (CHART / "README.md").read_text().splitlines()
    (line,) = [ln for ln in lines if ln.startswith("kubectl apply --server-side")]
    assert f"`{line}`" in (REPO_ROOT / "docs" / "observability.md").read_text(), "docs and chart README differ"
    cmd = line.split()
    assert cmd[-1] == "charts/nightshift/crds/", cmd
    return cmd[:-1]


def test_helm_uninstall_leaves_nothing_behind(lane: Lane) -> None:
    manifest = [d for d in yaml.safe_load_all(helm(lane, "get", "manifest", RELEASE, "-n", RELEASE_NS).stdout) if d]
    assert manifest
    helm(lane, "uninstall", RELEASE, "-n", RELEASE_NS, "--wait", "--timeout=120s")
    left = []
    for obj in manifest:
        kind, name = obj["kind"], obj["metadata"]["name"]
        ns = ["-n", obj["metadata"].get("namespace", RELEASE_NS)] if kind not in CLUSTER_SCOPED else []
        if lane.kubectl("get", kind, name, *ns, "--ignore-not-found", "-o", "name", check=False).strip():
            left.append(f"{kind}/{name}")
    # What the operator made outside the manifest: kopf's webhook configurations, the Lease.
    for kind in ("validatingwebhookconfigurations", "mutatingwebhookconfigurations"):
        left += [n for n in lane.kubectl("get", kind, "-o", "name").split() if "nightshift" in n]
    wait_for(lambda: not lane.json("get", "pods", "-n", RELEASE_NS)["items"], timeout=60, what="operator pod gone")
    assert not left, left


CLUSTER_SCOPED = {"ClusterRole", "ClusterRoleBinding", "PriorityClass", "CustomResourceDefinition"}


def test_zz_lane_down_leaves_the_host_as_it_was(lane: Lane) -> None:
    # The positive signal first: the lane's processes and bridge did exist while it ran.
    assert lane.seen_running == {"kubelet": True, "containerd": True, "bridge": True}, lane.seen_running
    left = lane.teardown()
    assert lane.pids, "no pid files: the lane recorded nothing it started"
    alive = {}
    for name, pid in lane.pids.items():
        try:
            Path(f"/proc/{pid}").stat()
            alive[name] = pid
        except FileNotFoundError:
            pass
    assert not alive, f"still running: {alive}"
    strays = subprocess.run(["pgrep", "-af", str(lane.dir)], capture_output=True, text=True, check=False).stdout
    assert not strays.strip(), f"processes of the lane left: {strays}"
    assert not left, "the host differs from before the lane:\n" + "\n".join(left)
