"""The Helm chart (charts/nightshift): lint --strict, render with default values and with every flag on,
and check what users rely on (restricted pod security, least-privilege RBAC, the rules and dashboard
coming verbatim from charts/nightshift/files/). Needs helm: NIGHTSHIFT_BIN_DIR = directory containing it."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from tests.support import tools

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.tools  # helm, built into the cache by `make binaries`
CHART = ROOT / "charts" / "nightshift"
ALL_ON = [
    "--set",
    "metrics.serviceMonitor.enabled=true,metrics.prometheusRule.enabled=true,metrics.dashboard.enabled=true",
    "--set",
    "metrics.serviceMonitor.extraLabels.release=kube-prometheus-stack",
    "--set",
    "metrics.prometheusRule.extraLabels.release=kube-prometheus-stack",
    "--set",
    "history.existingSecret=nightshift-history,operator.extraArgs[0]=--verbose",
]
NAMESPACE = "nightshift-system"


def _helm() -> Path:
    return tools.helm()


def _run(*args: str) -> str:
    result = subprocess.run([str(_helm()), *args], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, f"helm {' '.join(args)}\n{result.stdout}\n{result.stderr}"
    return result.stdout


def _render(*extra: str) -> list[dict[str, Any]]:
    out = _run("template", "rel", str(CHART), "--namespace", NAMESPACE, *extra)
    return [doc for doc in yaml.safe_load_all(out) if doc]


def _by_kind(objs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [o for o in objs if o["kind"] == kind]


def _one(objs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = _by_kind(objs, kind)
    assert len(found) == 1, f"{kind}: {len(found)}"
    return found[0]


def test_lint_strict() -> None:
    _run("lint", "--strict", str(CHART))
    _run("lint", "--strict", str(CHART), *ALL_ON)


def test_schema_rejects_unknown_keys() -> None:
    helm = _helm()
    for bad in ("metrics.serviceMonitor.enabeld=true", "imagee.tag=x", "priorityClasses.critical.vaule=1"):
        result = subprocess.run(
            [str(helm), "template", "rel", str(CHART), "--set", bad], capture_output=True, text=True, timeout=120
        )
        assert result.returncode != 0, bad
        assert "additional properties" in result.stderr.lower(), result.stderr


@pytest.mark.parametrize("flags", [[], ALL_ON], ids=["defaults", "all-on"])
def test_rendered_objects(flags: list[str]) -> None:
    objs = _render(*flags)
    for obj in objs:
        assert obj["apiVersion"] and obj["kind"] and obj["metadata"]["name"], obj
        labels = obj["metadata"].get("labels", {})
        assert labels.get("app.kubernetes.io/name") == "nightshift", obj["kind"]
        assert labels.get("app.kubernetes.io/instance") == "rel", obj["kind"]
        assert labels.get("app.kubernetes.io/managed-by") == "Helm", obj["kind"]
    kinds = {o["kind"] for o in objs}
    expected = {
        "Deployment",
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "Role",
        "RoleBinding",
        "PriorityClass",
        "Service",
    }
    assert expected <= kinds
    if flags:
        assert {"ServiceMonitor", "PrometheusRule", "ConfigMap"} <= kinds
    else:
        assert not {"ServiceMonitor", "PrometheusRule", "ConfigMap"} & kinds


def test_replicas_elect_a_leader_and_roll() -> None:
    one = _one(_render(), "Deployment")
    env = {e["name"]: e.get("value") for e in one["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["NIGHTSHIFT_LEADER_ELECTION_LEASE"] == "nightshift-operator"
    assert env["NIGHTSHIFT_LEASE_DURATION_SECONDS"] == "15"
    two = _one(_render("--set", "operator.replicas=2"), "Deployment")
    assert two["spec"]["replicas"] == 2
    assert two["spec"]["strategy"] == {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}}


def _containers(pod_spec: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield from pod_spec.get("initContainers", [])
    yield from pod_spec["containers"]


@pytest.mark.parametrize("flags", [[], ALL_ON], ids=["defaults", "all-on"])
def test_deployment_is_restricted(flags: list[str]) -> None:
    dep = _one(_render(*flags), "Deployment")
    assert dep["spec"]["replicas"] == 1
    assert dep["spec"]["strategy"] == {"type": "Recreate"}
    pod = dep["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    mounts_tmp = False
    for c in _containers(pod):
        sc = c["securityContext"]
        assert sc["allowPrivilegeEscalation"] is False
        assert sc["capabilities"]["drop"] == ["ALL"]
        assert not sc["capabilities"].get("add")
        assert sc["readOnlyRootFilesystem"] is True
        assert sc["runAsNonRoot"] is True
        assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
        mounts_tmp |= any(m["mountPath"] == "/tmp" for m in c.get("volumeMounts", []))
    assert mounts_tmp
    assert any(v["name"] == "tmp" and "emptyDir" in v for v in pod["volumes"])


def test_deployment_command_env_and_probe() -> None:
    dep = _one(_render(*ALL_ON), "Deployment")
    (c,) = dep["spec"]["template"]["spec"]["containers"]
    assert c["command"] == ["python", "-m", "nightshift", "--verbose"]
    env = {e["name"]: e for e in c["env"]}
    assert env["NIGHTSHIFT_METRICS_PORT"]["value"] == "9090"
    assert env["NIGHTSHIFT_JOBS_IMAGE"]["value"].endswith(":0.1.0")
    assert json.loads(env["NIGHTSHIFT_PRIORITY_CLASSES"]["value"]) == {
        "critical": "nightshift-critical",
        "high": "nightshift-high",
        "medium": "nightshift-medium",
        "low": "nightshift-low",
    }
    assert env["NIGHTSHIFT_HISTORY_DSN"]["valueFrom"]["secretKeyRef"] == {"name": "nightshift-history", "key": "dsn"}
    assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert ports == {"metrics": 9090, "health": 8080}
    assert c["livenessProbe"]["httpGet"]["port"] == "health"

    default_env = {e["name"] for e in _one(_render(), "Deployment")["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert "NIGHTSHIFT_HISTORY_DSN" not in default_env


def test_priority_classes() -> None:
    pcs = {o["metadata"]["name"]: o["value"] for o in _by_kind(_render(), "PriorityClass")}
    assert pcs == {
        "nightshift-critical": 1000000,
        "nightshift-high": 100000,
        "nightshift-medium": 10000,
        "nightshift-low": 1000,
    }
    renamed = _render("--set", "priorityClasses.create=false,priorityClasses.high.name=team-high")
    assert not _by_kind(renamed, "PriorityClass")
    env = {
        e["name"]: e.get("value")
        for e in _one(renamed, "Deployment")["spec"]["template"]["spec"]["containers"][0]["env"]
    }
    assert json.loads(env["NIGHTSHIFT_PRIORITY_CLASSES"] or "")["high"] == "team-high"


def test_rbac_is_least_privilege() -> None:
    objs = _render()
    role = _one(objs, "ClusterRole")
    granted: dict[tuple[str, str], set[str]] = {}
    for rule in role["rules"]:
        assert "resourceNames" not in rule
        for group in rule["apiGroups"]:
            for res in rule["resources"]:
                granted.setdefault((group, res), set()).update(rule["verbs"])
    for verbs in granted.values():
        assert "*" not in verbs
    assert not any("*" in key for key in granted)
    assert ("", "secrets") not in granted
    # What the suite's audit log shows the operator using (tests/integration/test_zz_least_privilege.py)
    assert granted[("nightshift.dev", "backgroundjobs")] == {"list", "watch", "patch"}
    assert granted[("nightshift.dev", "backgroundjobs/status")] == {"patch"}
    assert granted[("nightshift.dev", "backgroundjobqueues/status")] == {"patch"}
    assert granted[("batch", "jobs")] == {"list", "watch", "create", "patch", "delete"}
    assert granted[("batch", "cronjobs")] == {"list", "watch", "create", "update", "delete"}
    assert granted[("", "pods")] == {"list", "watch"}
    assert ("", "pods/log") not in granted  # the CLI reads logs with its user's credentials
    assert granted[("", "events")] == {"create"}
    assert ("events.k8s.io", "events") not in granted
    assert granted[("apiextensions.k8s.io", "customresourcedefinitions")] == {"list", "watch"}
    lease_role = _one(objs, "Role")
    assert lease_role["metadata"]["namespace"] == NAMESPACE
    for rule in lease_role["rules"]:
        assert rule["resources"] == ["leases"]
        assert set(rule["verbs"]) == {"create"} or rule["resourceNames"] == ["nightshift-operator"]
    binding = _one(objs, "ClusterRoleBinding")
    sa = _one(objs, "ServiceAccount")
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": sa["metadata"]["name"], "namespace": NAMESPACE}]


def test_monitoring_objects_come_from_files() -> None:
    objs = _render(*ALL_ON)
    rule = _one(objs, "PrometheusRule")
    source = yaml.safe_load((CHART / "files" / "alerts.yaml").read_text())
    assert rule["spec"] == source
    assert rule["metadata"]["labels"]["release"] == "kube-prometheus-stack"

    cm = _one(objs, "ConfigMap")
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(cm["data"]["nightshift.json"]) == json.loads((CHART / "files" / "dashboard.json").read_text())

    sm = _one(objs, "ServiceMonitor")
    svc = _one(objs, "Service")
    assert sm["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert sm["spec"]["endpoints"][0]["port"] == "metrics"
    assert sm["spec"]["endpoints"][0]["honorLabels"] is True
    assert sm["spec"]["jobLabel"] == "app.kubernetes.io/name"
    for key, value in sm["spec"]["selector"]["matchLabels"].items():
        assert svc["metadata"]["labels"][key] == value
    dep = _one(objs, "Deployment")
    for key, value in svc["spec"]["selector"].items():
        assert dep["spec"]["template"]["metadata"]["labels"][key] == value


def test_chart_ships_crds_directory() -> None:
    # Filled by the CRD generator from the pydantic models; Helm installs crds/ once, never upgrades.
    crds = sorted(p.name for p in (CHART / "crds").glob("*.yaml"))
    assert "backgroundjobs.nightshift.dev.yaml" in crds
    assert "backgroundjobqueues.nightshift.dev.yaml" in crds
    readme = (CHART / "README.md").read_text()
    assert "kubectl apply --server-side --force-conflicts -f charts/nightshift/crds/" in readme


def _objects_without_closed_schema(node: Any, path: str = "$") -> Iterator[str]:
    if isinstance(node, dict):
        if node.get("type") == "object" and node.get("additionalProperties", True) is True:
            yield path
        for key, value in node.items():
            yield from _objects_without_closed_schema(value, f"{path}.{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _objects_without_closed_schema(value, f"{path}[{i}]")


def test_values_schema_is_closed_at_every_object_level() -> None:
    # No helm needed. Free-form maps (labels, annotations) are closed to strings, not to "anything".
    schema = json.loads((CHART / "values.schema.json").read_text())
    assert schema["additionalProperties"] is False
    assert list(_objects_without_closed_schema(schema)) == []
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert set(values) == set(schema["properties"])


def test_webhook_values_render_service_env_and_cert_mount() -> None:
    objs = _render("--set", "webhook.enabled=true", "--set", "webhook.certSecret=nightshift-webhook-tls")
    dep = _one(objs, "Deployment")
    (c,) = dep["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e.get("value") for e in c["env"]}
    assert env["NIGHTSHIFT_WEBHOOK_PORT"] == "9443"
    assert (
        env["NIGHTSHIFT_WEBHOOK_HOST"].endswith("-webhook.nightshift-system.svc")
        or ".svc" in env["NIGHTSHIFT_WEBHOOK_HOST"]
    )
    assert env["NIGHTSHIFT_WEBHOOK_CAFILE"] == "/etc/nightshift/webhook/ca.crt"
    vols = {v["name"]: v for v in dep["spec"]["template"]["spec"]["volumes"]}
    assert vols["webhook-cert"]["secret"]["secretName"] == "nightshift-webhook-tls"
    services = [o for o in objs if o["kind"] == "Service" and o["metadata"]["name"].endswith("-webhook")]
    assert services and services[0]["spec"]["ports"][0]["port"] == 9443


def test_webhook_configurations_granted_only_with_the_webhook() -> None:
    """kopf's managed webhook creates and patches a Validating and a Mutating configuration."""

    def webhook_rules(objs: list[dict[str, Any]]) -> set[tuple[str, str]]:
        return {
            (res, verb)
            for rule in _one(objs, "ClusterRole")["rules"]
            if "admissionregistration.k8s.io" in rule["apiGroups"]
            for res in rule["resources"]
            for verb in rule["verbs"]
        }

    assert webhook_rules(_render()) == set()
    on = webhook_rules(_render("--set", "webhook.enabled=true", "--set", "webhook.certSecret=tls"))
    for res in ("validatingwebhookconfigurations", "mutatingwebhookconfigurations"):
        assert {(res, v) for v in ("create", "patch")} == {(r, v) for r, v in on if r == res}
    # The configurations themselves belong to the release (so helm uninstall deletes them), empty:
    # kopf patches its webhooks into the ones named after the API group.
    objs = _render("--set", "webhook.enabled=true", "--set", "webhook.certSecret=tls")
    for kind in ("ValidatingWebhookConfiguration", "MutatingWebhookConfiguration"):
        conf = _one(objs, kind)
        assert conf["metadata"]["name"] == "nightshift.dev" and conf["webhooks"] == []
    assert not [o for o in _render() if o["kind"].endswith("WebhookConfiguration")]
