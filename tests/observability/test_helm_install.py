"""`helm install` of charts/nightshift into the real test control plane, then `helm uninstall`.

The session may already hold the chart's CRDs (the `operator` fixture applies crds/ server-side) and
PriorityClasses nightshift-{critical,high,medium,low} (created by kubectl, with other values), so the
release installs with --skip-crds (the chart's crds/ are asserted byte-identical to crds/) and its own
PriorityClass names. CRDs are checked separately: `helm template --include-crds` applied with
--dry-run=server. The ServiceMonitor and PrometheusRule need the Prometheus Operator's CRDs, which the
test cluster lacks: off for the install, rendered and checked structurally (rules by promtool).
The cluster has no Deployment controller, so no operator pod starts: expected.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml
from tests.conftest import Kubectl, install_crds
from tests.support.cluster import ControlPlane

pytestmark = pytest.mark.cluster

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "nightshift"
FILES = CHART / "files"
RELEASE = "nightshift"
NAMESPACE = "nightshift-system"
LEVELS = ("critical", "high", "medium", "low")
# Not the session fixture's nightshift-<level> classes (PriorityClass values are immutable).
PRIORITY_CLASSES = {level: f"nightshift-helm-{level}" for level in LEVELS}
PC_FLAGS = ",".join(f"priorityClasses.{level}.name={name}" for level, name in PRIORITY_CLASSES.items())
INSTALL_FLAGS = [
    "--set",
    PC_FLAGS,
    "--set",
    "metrics.serviceMonitor.enabled=false,metrics.prometheusRule.enabled=false,metrics.dashboard.enabled=true",
]
MONITORING_ON = [
    "--set",
    PC_FLAGS,
    "--set",
    "metrics.serviceMonitor.enabled=true,metrics.prometheusRule.enabled=true,metrics.dashboard.enabled=true",
]
MONITORING_KINDS = {"ServiceMonitor", "PrometheusRule"}
PROMTOOL = shutil.which("promtool") or ("/usr/bin/promtool" if Path("/usr/bin/promtool").exists() else None)


class Helm:
    def __init__(self, cluster: ControlPlane, home: Path) -> None:
        assert cluster.bin_dir is not None
        self.binary = cluster.bin_dir / "helm"
        if not self.binary.exists():
            pytest.fail(f"no helm in {cluster.bin_dir} (NIGHTSHIFT_BIN_DIR)")
        self.kubeconfig = cluster.kubeconfig
        self.env = {
            **os.environ,
            "HELM_CACHE_HOME": str(home / "cache"),
            "HELM_CONFIG_HOME": str(home / "config"),
            "HELM_DATA_HOME": str(home / "data"),
        }

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [str(self.binary), f"--kubeconfig={self.kubeconfig}", *args],
            capture_output=True,
            text=True,
            env=self.env,
            timeout=180,
            check=False,
        )
        if check:
            assert result.returncode == 0, f"helm {' '.join(args)}\n{result.stdout}\n{result.stderr}"
        return result

    def __call__(self, *args: str) -> str:
        return self.run(*args).stdout

    def template(self, release: str, namespace: str, *flags: str) -> list[dict[str, Any]]:
        out = self("template", release, str(CHART), "--namespace", namespace, *flags)
        return [doc for doc in yaml.safe_load_all(out) if doc]


@pytest.fixture(scope="module")
def helm(cluster: ControlPlane, tmp_path_factory: pytest.TempPathFactory) -> Helm:
    return Helm(cluster, tmp_path_factory.mktemp("helm"))


def _one(objs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = [o for o in objs if o["kind"] == kind]
    assert len(found) == 1, f"{kind}: {len(found)}"
    return found[0]


def _dry_run(kubectl: Kubectl, objs: list[dict[str, Any]]) -> str:
    """Server-side apply, dry run: admission, schema and immutability checks, nothing persisted."""
    text = yaml.safe_dump_all(objs, sort_keys=False)
    result = kubectl.run(
        "apply",
        "--server-side",
        "--force-conflicts",
        "--field-manager=nightshift-helm-test",
        "--dry-run=server",
        "-f",
        "-",
        input=text,
    )
    assert result.returncode == 0, f"kubectl apply --dry-run=server rejected the chart:\n{result.stderr}"
    return result.stdout


def _can(kubectl: Kubectl, sa: str, verb: str, resource: str, namespace: str | None = None) -> bool:
    """`kubectl auth can-i` as the chart's ServiceAccount. "x/status" is the status subresource (can-i
    itself reads "x/y" as the object named y, which asked about the main resource)."""
    extra = []
    if resource.endswith("/status"):
        resource, extra = resource.removesuffix("/status"), ["--subresource=status"]
    args = ["auth", "can-i", verb, resource, *extra, f"--as=system:serviceaccount:{NAMESPACE}:{sa}"]
    if namespace:
        args += ["-n", namespace]
    result = kubectl.run(*args)
    assert result.stdout.strip() in ("yes", "no"), (args, result.stdout, result.stderr)
    return result.stdout.strip() == "yes"


def test_chart_crds_are_the_repository_crds() -> None:
    """--skip-crds below is safe only because the chart ships exactly crds/ (which the session applied)."""
    chart = {p.name: p.read_bytes() for p in sorted((CHART / "crds").iterdir())}
    repo = {p.name: p.read_bytes() for p in sorted((ROOT / "crds").iterdir())}
    assert sorted(chart) == sorted(repo)
    for name in repo:
        assert chart[name] == repo[name], f"charts/nightshift/crds/{name} differs from crds/{name}"


def test_template_with_crds_is_valid_server_side(helm: Helm, kubectl: Kubectl) -> None:
    """Every object of `helm template --include-crds`, validated by the API server (dry run)."""
    ns = f"nightshift-dry-{uuid.uuid4().hex[:6]}"
    kubectl("create", "namespace", ns)
    try:
        objs = helm.template("nightshift-dry", ns, "--include-crds", *INSTALL_FLAGS)
        kinds = sorted(o["kind"] for o in objs)
        assert kinds.count("CustomResourceDefinition") == 3, kinds  # jobs, queues, run requests
        assert not MONITORING_KINDS & set(kinds)
        out = _dry_run(kubectl, objs)
        assert out.count("(server dry run)") == len(objs), out
    finally:
        kubectl("delete", "namespace", ns, "--wait=false", check=False)


def test_template_with_monitoring_on(helm: Helm, kubectl: Kubectl, tmp_path: Path) -> None:
    """ServiceMonitor and PrometheusRule on: the rest still valid server-side; the monitoring objects,
    whose CRDs the test cluster lacks, checked for what Prometheus Operator and the alerts rely on."""
    ns = f"nightshift-mon-{uuid.uuid4().hex[:6]}"
    kubectl("create", "namespace", ns)
    try:
        objs = helm.template("nightshift", ns, *MONITORING_ON)
        monitoring = [o for o in objs if o["kind"] in MONITORING_KINDS]
        assert sorted(o["kind"] for o in monitoring) == ["PrometheusRule", "ServiceMonitor"]
        have_crds = kubectl("api-resources", "--api-group=monitoring.coreos.com", "-o", "name").split()
        _dry_run(kubectl, [o for o in objs if o["kind"] not in MONITORING_KINDS or have_crds])
    finally:
        kubectl("delete", "namespace", ns, "--wait=false", check=False)

    service = _one(objs, "Service")
    deployment = _one(objs, "Deployment")
    monitor = _one(objs, "ServiceMonitor")
    rule = _one(objs, "PrometheusRule")
    for obj in monitoring:
        assert obj["apiVersion"] == "monitoring.coreos.com/v1"
        assert obj["metadata"]["namespace"] == ns

    # The ServiceMonitor selects the metrics Service, in its namespace, by its port name, keeping the
    # operator's `namespace` label, and names the scrape job so NightshiftOperatorDown (job=~".*nightshift.*") finds it.
    spec = monitor["spec"]
    assert spec["namespaceSelector"] == {"matchNames": [ns]}
    svc_labels = service["metadata"]["labels"]
    assert spec["selector"]["matchLabels"].items() <= svc_labels.items()
    [endpoint] = spec["endpoints"]
    assert endpoint["port"] in {p["name"] for p in service["spec"]["ports"]}
    assert endpoint["path"] == "/metrics" and endpoint["honorLabels"] is True
    assert "nightshift" in svc_labels[spec["jobLabel"]]
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    metrics_port = next(p for p in container["ports"] if p["name"] == "metrics")
    assert service["spec"]["ports"][0]["targetPort"] == "metrics"
    assert service["spec"]["selector"].items() <= deployment["spec"]["template"]["metadata"]["labels"].items()
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["NIGHTSHIFT_METRICS_PORT"] == str(metrics_port["containerPort"])

    # The PrometheusRule is alerts.yaml verbatim, and a valid Prometheus rule file.
    assert rule["spec"] == yaml.safe_load((FILES / "alerts.yaml").read_text())
    if PROMTOOL:
        rules_file = tmp_path / "rules.yaml"
        rules_file.write_text(yaml.safe_dump(rule["spec"]))
        check = subprocess.run([PROMTOOL, "check", "rules", str(rules_file)], capture_output=True, text=True)
        assert check.returncode == 0, check.stdout + check.stderr


def test_install_and_uninstall(helm: Helm, kubectl: Kubectl) -> None:
    # What the session's `operator` fixture does (idempotent): the CRDs --skip-crds relies on, and the
    # session's own nightshift-<level> PriorityClasses the release must leave alone.
    install_crds(kubectl.cp)
    session_classes = {
        pc["metadata"]["name"]: pc
        for pc in kubectl.json("get", "priorityclasses")["items"]
        if pc["metadata"]["name"] in {f"nightshift-{level}" for level in LEVELS}
    }
    try:
        helm(
            "install",
            RELEASE,
            str(CHART),
            "--namespace",
            NAMESPACE,
            "--create-namespace",
            "--skip-crds",
            "--timeout=120s",
            *INSTALL_FLAGS,
        )
        _check_release(helm, kubectl)
    finally:
        uninstalled = helm.run("uninstall", RELEASE, "--namespace", NAMESPACE, "--timeout=120s", check=False)
        kubectl("delete", "namespace", NAMESPACE, "--wait=false", check=False)
    assert uninstalled.returncode == 0, uninstalled.stderr

    # Gone, cluster-scoped objects included; the session's own PriorityClasses untouched.
    for kind, name in (
        ("priorityclass", PRIORITY_CLASSES["critical"]),
        ("clusterrole", RELEASE),
        ("clusterrolebinding", RELEASE),
    ):
        assert kubectl.run("get", kind, name).returncode != 0, f"{kind}/{name} survived helm uninstall"
    after = {
        pc["metadata"]["name"]: pc
        for pc in kubectl.json("get", "priorityclasses")["items"]
        if pc["metadata"]["name"] in session_classes
    }
    assert {n: pc["value"] for n, pc in after.items()} == {n: pc["value"] for n, pc in session_classes.items()}
    assert {n: pc["metadata"]["uid"] for n, pc in after.items()} == {
        n: pc["metadata"]["uid"] for n, pc in session_classes.items()
    }


def _check_release(helm: Helm, kubectl: Kubectl) -> None:
    status = json.loads(helm("status", RELEASE, "--namespace", NAMESPACE, "-o", "json"))
    assert status["info"]["status"] == "deployed", status["info"]
    manifest = [doc for doc in yaml.safe_load_all(helm("get", "manifest", RELEASE, "--namespace", NAMESPACE)) if doc]
    kinds = sorted(o["kind"] for o in manifest)
    assert kinds == sorted(
        [
            "ClusterRole",
            "ClusterRoleBinding",
            "ConfigMap",
            "Deployment",
            *["PriorityClass"] * 4,
            "Role",
            "RoleBinding",
            "Service",
            "ServiceAccount",
        ]
    ), kinds

    # Every object exists, owned by the release, and re-applying the manifest is accepted server-side.
    live: dict[tuple[str, str], dict[str, Any]] = {}
    for obj in manifest:
        name = obj["metadata"]["name"]
        ns_args = ["-n", NAMESPACE] if obj["kind"] not in ("ClusterRole", "ClusterRoleBinding", "PriorityClass") else []
        got = kubectl.json("get", _resource(obj), name, *ns_args)
        assert got["metadata"]["annotations"]["meta.helm.sh/release-name"] == RELEASE
        assert got["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "Helm"
        live[(obj["kind"], name)] = got
    _dry_run(kubectl, manifest)

    # Deployment: the chart's SA and priority class names reach the operator; no pods (no controller).
    deploy = live[("Deployment", RELEASE)]
    pod = deploy["spec"]["template"]["spec"]
    sa = pod["serviceAccountName"]
    assert ("ServiceAccount", sa) in live
    env = {e["name"]: e.get("value") for e in pod["containers"][0]["env"]}
    assert json.loads(env["NIGHTSHIFT_PRIORITY_CLASSES"]) == PRIORITY_CLASSES
    assert env["NIGHTSHIFT_USE_PRIORITY_CLASSES"] == "true"

    # PriorityClasses: the release's names, the chart's values.
    values = yaml.safe_load((CHART / "values.yaml").read_text())["priorityClasses"]
    for level, name in PRIORITY_CLASSES.items():
        pc = live[("PriorityClass", name)]
        assert pc["value"] == values[level]["value"], name
        assert pc["preemptionPolicy"] == values[level]["preemptionPolicy"], name
        assert pc.get("globalDefault", False) is False

    # RBAC: bound to the SA, and it grants what the operator does (and not more than it needs).
    binding = live[("ClusterRoleBinding", RELEASE)]
    assert binding["roleRef"]["name"] == RELEASE
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": sa, "namespace": NAMESPACE}]
    anywhere = "default"
    for verb, resource in (
        ("watch", "backgroundjobs.nightshift.dev"),
        ("patch", "backgroundjobs.nightshift.dev"),
        ("patch", "backgroundjobs.nightshift.dev/status"),
        ("list", "backgroundjobqueues.nightshift.dev"),
        ("patch", "backgroundjobqueues.nightshift.dev/status"),
        ("create", "jobs.batch"),
        ("delete", "jobs.batch"),
        ("create", "cronjobs.batch"),
        ("watch", "pods"),
        ("watch", "configmaps"),
        ("create", "events"),
    ):
        assert _can(kubectl, sa, verb, resource, anywhere), f"{sa} cannot {verb} {resource}"
    for verb, resource in (("watch", "namespaces"), ("list", "customresourcedefinitions.apiextensions.k8s.io")):
        assert _can(kubectl, sa, verb, resource), f"{sa} cannot {verb} {resource}"
    for verb, resource in (
        ("get", "secrets"),
        ("create", "configmaps"),
        ("delete", "backgroundjobs.nightshift.dev"),
        ("create", "pods"),
        ("create", "priorityclasses.scheduling.k8s.io"),
        ("delete", "pods"),
        ("get", "pods/log"),
    ):
        assert not _can(kubectl, sa, verb, resource, anywhere), f"{sa} may {verb} {resource}: more than it needs"
    lease = f"leases.coordination.k8s.io/{env['NIGHTSHIFT_LEADER_ELECTION_LEASE']}"
    assert _can(kubectl, sa, "update", lease, NAMESPACE)
    assert not _can(kubectl, sa, "update", "leases.coordination.k8s.io/someone-else", NAMESPACE)

    # Metrics Service: selects the operator pod, on the metrics port.
    service = live[("Service", f"{RELEASE}-metrics")]
    assert service["spec"]["selector"].items() <= deploy["spec"]["template"]["metadata"]["labels"].items()
    assert [(p["name"], p["port"], p["targetPort"]) for p in service["spec"]["ports"]] == [
        ("metrics", int(env["NIGHTSHIFT_METRICS_PORT"]), "metrics")
    ]
    assert service["spec"]["clusterIP"]

    # Dashboard ConfigMap: files/dashboard.json as stored by the API server, labelled for Grafana's sidecar.
    dashboard = live[("ConfigMap", f"{RELEASE}-dashboard")]
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(dashboard["data"]["nightshift.json"]) == json.loads((FILES / "dashboard.json").read_text())

    # No Deployment controller runs in the test cluster: nothing is scheduled, as expected.
    assert not kubectl.json("get", "pods", "-n", NAMESPACE)["items"]


def _resource(obj: dict[str, Any]) -> str:
    """kind.group for kubectl (kind alone for the core group)."""
    api = str(obj["apiVersion"])
    kind = str(obj["kind"]).lower()
    return f"{kind}.{api.split('/')[0]}" if "/" in api else kind
