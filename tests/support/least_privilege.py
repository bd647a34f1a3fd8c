"""R4, least privilege: the suite's operator runs as the chart's ServiceAccount, and the API server's
audit log of everything it did is compared with the chart's RBAC.

The session's control plane writes an audit log of the requests of ServiceAccounts in the
operator's namespace only (the rest of the suite's traffic would drown it). The session's operator
authenticates as the chart's ServiceAccount, with the ClusterRole and Role that `helm template`
renders (webhook on, as the suite runs it): a grant the chart lacks fails the test that needed it,
with a 403 in the operator's log. At the end of the session (tests/integration/test_zz_least_privilege.py)
every (group, resource, verb) the operator used must be granted, and every grant must have been
used or be justified in charts/nightshift/templates/rbac.yaml by a comment of the form
`# unexercised: <group>/<resource> <verb>: why`.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from tests.support.cluster import APISERVER_STARTS, REPO_ROOT, ControlPlane, binaries_dir

# Not the release of test_helm_install (nightshift in nightshift-system): its uninstall would take
# this identity's ClusterRole with it in the middle of the session.
NAMESPACE = "nightshift-suite"
RELEASE = "nightshift-suite"
RBAC_TEMPLATE = REPO_ROOT / "charts" / "nightshift" / "templates" / "rbac.yaml"
Grant = tuple[str, str, str]  # (apiGroup, resource[/subresource], verb)

POLICY = f"""\
apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived]
rules:
  - level: Metadata
    userGroups: ["system:serviceaccounts:{NAMESPACE}"]
  - level: None
"""


def audit_args(workdir: Path) -> list[str]:
    """kube-apiserver flags for the audit log (policy above), written under `workdir`."""
    workdir.mkdir(parents=True, exist_ok=True)
    policy = workdir / "audit-policy.yaml"
    policy.write_text(POLICY)
    return [
        f"--audit-policy-file={policy}",
        f"--audit-log-path={workdir / 'audit.log'}",
        "--audit-log-format=json",
        "--audit-log-maxbackup=0",
    ]


def audit_log(cp: ControlPlane) -> Path:
    return cp.workdir / "audit" / "audit.log"


def chart_rbac(cp: ControlPlane) -> list[dict[str, Any]]:
    """The chart's ServiceAccount and RBAC as `helm install` creates them, with the webhook on."""
    assert cp.bin_dir is not None
    return chart_rbac_from_template(cp.bin_dir / "helm")


def chart_rbac_from_template(helm: Path | None = None) -> list[dict[str, Any]]:
    if helm is None:
        helm = binaries_dir() / "helm"
    out = subprocess.run(
        [
            str(helm),
            "template",
            RELEASE,
            str(REPO_ROOT / "charts" / "nightshift"),
            "--namespace",
            NAMESPACE,
            "--set",
            "webhook.enabled=true,webhook.certSecret=unused",  # only the RBAC documents are kept
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    kinds = {"ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"}
    return [d for d in yaml.safe_load_all(out) if d and d.get("kind") in kinds]


@dataclass(frozen=True)
class Identity:
    env: dict[str, str]  # what the operator process needs to be that ServiceAccount, as in a pod
    docs: list[dict[str, Any]]


def chart_identity(cp: ControlPlane, folder: Path) -> Identity:
    """Create the chart's ServiceAccount and RBAC and a token folder as the kubelet would mount it."""
    docs = chart_rbac(cp)
    cp.kubectl("create", "namespace", NAMESPACE)
    cp.kubectl("apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List", "items": docs}))
    (sa,) = [d["metadata"]["name"] for d in docs if d["kind"] == "ServiceAccount"]
    token = cp.kubectl("create", "token", sa, "-n", NAMESPACE, "--duration=6h").strip()
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "token").write_text(token)
    (folder / "ca.crt").write_text((cp.workdir / "pki" / "ca.crt").read_text())
    (folder / "namespace").write_text(NAMESPACE)
    return Identity(
        env={
            "KUBERNETES_SERVICE_HOST": "127.0.0.1",
            "KUBERNETES_SERVICE_PORT": cp.server.rsplit(":", 1)[1],
            "NIGHTSHIFT_SERVICEACCOUNT_DIR": str(folder),
            "KUBECONFIG": str(folder / "no-kubeconfig"),  # nothing but the ServiceAccount to fall back on
            "NIGHTSHIFT_POD_NAMESPACE": NAMESPACE,
        },
        docs=docs,
    )


def granted(docs: list[dict[str, Any]]) -> set[Grant]:
    out: set[Grant] = set()
    for d in docs:
        if d["kind"] not in ("ClusterRole", "Role"):
            continue
        for rule in d.get("rules") or []:
            for g in rule.get("apiGroups") or [""]:
                for r in rule.get("resources") or []:
                    for v in rule.get("verbs") or []:
                        out.add((g, r, v))
    return out


WARM_UP_S = 20.0


def _warming(log: Path) -> list[float]:
    """Unix times of kube-apiserver starts (tests/support/cluster.py writes them next to the audit folder)."""
    starts = log.parent.parent / APISERVER_STARTS
    return [float(x) for x in starts.read_text().split()] if starts.exists() else []


def _stamp(value: str) -> float:
    return dt.datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def used(log: Path) -> tuple[set[Grant], list[str]]:
    """(group, resource, verb) of every audited request, and the ones RBAC refused, as sentences.

    A refusal within WARM_UP_S of a kube-apiserver start is not counted: until its RBAC informers
    have synced, a restarted API server forbids everything (the outage tests restart it, and every
    client's watches reconnect at once). A grant that is really missing is refused again later: the
    operator's watches retry within 30 s.
    """
    seen: set[Grant] = set()
    refused: list[str] = []
    starts = _warming(log)
    for line in log.read_text().splitlines() if log.exists() else []:
        e = json.loads(line)
        ref = e.get("objectRef") or {}
        if not ref.get("resource"):
            continue  # discovery (/apis, /version): not RBAC resources
        resource = ref["resource"] + (f"/{ref['subresource']}" if ref.get("subresource") else "")
        verb = e["verb"]
        grant = (ref.get("apiGroup") or "", resource, verb)
        # RBAC's own refusal, not any 403 (a namespace being deleted refuses creates with 403 too)
        if (e.get("annotations") or {}).get("authorization.k8s.io/decision") == "forbid":
            at = _stamp(e["requestReceivedTimestamp"])
            if any(0 <= at - t <= WARM_UP_S for t in starts):
                continue
            refused.append(f"{verb} {grant[0]}/{resource} in {ref.get('namespace') or 'the cluster'}: forbidden")
        seen.add(grant)
    return seen, refused


JUSTIFIED = re.compile(r"#\s*unexercised:\s*(\S*)/(\S+)\s+(\S+?):")


def justified(template: Path = RBAC_TEMPLATE) -> set[Grant]:
    """Grants the chart keeps although the suite never uses them, each with its reason in a comment."""
    return {(m.group(1), m.group(2), m.group(3)) for m in JUSTIFIED.finditer(template.read_text())}


def unused_grants(docs: list[dict[str, Any]], seen: set[Grant]) -> set[Grant]:
    """Grants no request used. A list covers a watch (`?watch=true` is audited as verb watch)."""
    return {g for g in granted(docs) if g not in seen} - justified()
