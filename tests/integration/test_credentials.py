"""Credentials on the real control plane: the CLI through an exec plugin, `--context` between two
clusters, a token that rotates during `trigger --wait`, the operator across a rotation of its
ServiceAccount token, and proxies.

Tokens are real ServiceAccount tokens from the TokenRequest API (`kubectl create token`), bound to
a Secret: deleting the Secret invalidates the token in the API server, which is a rotation the
client has to follow, not one it could ignore. The API server caches token reviews for about ten
seconds, so each test waits until the old token is really refused before it goes on.
"""

from __future__ import annotations

import base64
import json
import os
import ssl
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from nightshift.cli.requests import id_name
from tests.conftest import Kubectl, Operator, bgj, script_job, wait_for
from tests.support.cluster import ControlPlane
from tests.support.credtools import ConnectProxy, plugin_runs, write_plugin
from tests.support.operatorproc import OperatorProcess, install_crds

pytestmark = pytest.mark.cluster
BIN = Path(sys.executable).parent
EXEC_V1 = "client.authentication.k8s.io/v1"


# -- helpers ----------------------------------------------------------------------------------------
def nightshift(*args: str, env: dict[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """The CLI as a user runs it: no KUBECONFIG from the test session unless given."""
    base = {k: v for k, v in os.environ.items() if k not in ("KUBECONFIG", "HTTPS_PROXY", "https_proxy", "NO_PROXY")}
    return subprocess.run(
        [str(BIN / "nightshift"), *args],
        capture_output=True,
        text=True,
        env={**base, "NIGHTSHIFT_HISTORY_DSN": "", **(env or {})},
        timeout=timeout,
    )


def ok(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode == 0, f"exit {proc.returncode}\nstdout: {proc.stdout}\nstderr: {proc.stderr}"
    return proc.stdout


def b64(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode()


def admin_user(cp: ControlPlane) -> dict[str, Any]:
    pki = cp.workdir / "pki"
    return {"client-certificate-data": b64(pki / "admin.crt"), "client-key-data": b64(pki / "admin.key")}


def cluster_entry(cp: ControlPlane, **extra: Any) -> dict[str, Any]:
    return {"server": cp.server, "certificate-authority-data": b64(cp.workdir / "pki" / "ca.crt"), **extra}


def write_kubeconfig(path: Path, contexts: dict[str, tuple[dict[str, Any], dict[str, Any], str]], current: str) -> Path:
    """contexts: name -> (cluster entry, user entry, namespace)."""
    doc = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": n, "cluster": c} for n, (c, _, _) in contexts.items()],
        "users": [{"name": n, "user": u} for n, (_, u, _) in contexts.items()],
        "contexts": [
            {"name": n, "context": {"cluster": n, "user": n, "namespace": ns}} for n, (_, _, ns) in contexts.items()
        ],
        "current-context": current,
    }
    path.write_text(yaml.safe_dump(doc))
    path.chmod(0o600)
    return path


def service_account(kubectl: Kubectl, ns: str, name: str = "runner", *secrets: str) -> None:
    """A ServiceAccount allowed everything in `ns`, and the Secrets its tokens will be bound to."""
    kubectl("create", "serviceaccount", name, "-n", ns)
    kubectl(
        "create", "rolebinding", f"{name}-all", "-n", ns, "--clusterrole=cluster-admin", f"--serviceaccount={ns}:{name}"
    )
    for s in secrets:
        kubectl("create", "secret", "generic", s, "-n", ns)


def bound_token(kubectl: Kubectl, ns: str, sa: str, secret: str) -> str:
    """A TokenRequest token that lives as long as `secret` does."""
    return kubectl(
        "create", "token", sa, "-n", ns, "--duration=10m", "--bound-object-kind=Secret", f"--bound-object-name={secret}"
    ).strip()


def token_accepted(cp: ControlPlane, token: str) -> bool:
    ctx = ssl.create_default_context(cafile=str(cp.workdir / "pki" / "ca.crt"))
    req = urllib.request.Request(f"{cp.server}/apis", headers={"Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(req, context=ctx, timeout=10):
            return True
    except urllib.error.HTTPError as e:
        if e.code == 401:
            return False
        raise


def revoke(kubectl: Kubectl, cp: ControlPlane, ns: str, secret: str, token: str) -> None:
    """Delete the Secret the token is bound to and wait until the API server refuses the token."""
    assert token_accepted(cp, token)
    kubectl("delete", "secret", secret, "-n", ns)
    wait_for(lambda: not token_accepted(cp, token), timeout=30, what="the old token refused")


def write_atomically(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def kubelet_write(folder: Path, files: dict[str, str], generation: int) -> None:
    """The kubelet's atomic writer: files in a new timestamped folder, then the ..data link swapped."""
    data = folder / f"..{generation}"
    data.mkdir()
    for name, text in files.items():
        (data / name).write_text(text)
        if not (folder / name).is_symlink():
            (folder / name).symlink_to(f"..data/{name}")
    (folder / "..data_tmp").symlink_to(data.name)
    os.replace(folder / "..data_tmp", folder / "..data")


@pytest.fixture
def crds(cluster: ControlPlane, kubectl: Kubectl) -> ControlPlane:
    install_crds(cluster)
    kubectl("wait", "--for=condition=Established", "crd/backgroundjobruns.nightshift.dev", "--timeout=60s")
    return cluster


@pytest.fixture(scope="module")
def other_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    """A second, small control plane (no nodes) for `--context`."""
    bin_dir = os.environ.get("NIGHTSHIFT_BIN_DIR")
    cp = ControlPlane(
        tmp_path_factory.mktemp("other"),
        bin_dir=Path(bin_dir) if bin_dir else None,
        local_node=False,
        kwok=False,
        quiet=True,
    )
    with cp:
        install_crds(cp)
        yield cp


# -- exec plugins -----------------------------------------------------------------------------------
def test_cli_authenticates_through_an_exec_plugin(
    kubectl: Kubectl, crds: ControlPlane, namespace: str, tmp_path: Path
) -> None:
    service_account(kubectl, namespace, "runner", "bind-1")
    (tmp_path / "token").write_text(bound_token(kubectl, namespace, "runner", "bind-1"))
    (tmp_path / "bin").mkdir()
    write_plugin(tmp_path / "bin" / "get-token")
    log = tmp_path / "runs.log"
    user = {
        "exec": {
            "apiVersion": EXEC_V1,
            "command": "bin/get-token",  # relative to the kubeconfig's folder, as kubectl resolves it
            "args": ["eks", "get-token", "--cluster-name", "test"],
            "env": [
                {"name": "PLUGIN_TOKEN_FILE", "value": str(tmp_path / "token")},
                {"name": "PLUGIN_LOG", "value": str(log)},
                {"name": "PLUGIN_TTL_SECONDS", "value": "900"},
            ],
            "interactiveMode": "IfAvailable",
            "provideClusterInfo": True,
        }
    }
    kc = write_kubeconfig(tmp_path / "config", {"eks": (cluster_entry(crds), user, namespace)}, "eks")
    kubectl.apply(bgj("report", namespace, {"job": script_job("pass")}))

    out = ok(nightshift("--kubeconfig", str(kc), "trigger", "report", "--id", "exec-1"))
    assert "created" in out
    (req,) = kubectl.json("get", "bgjr", "-n", namespace)["items"]
    assert req["spec"]["backgroundJob"] == "report"
    runs = plugin_runs(log)  # the kubeconfig holds no other credential: the plugin's token did it
    assert len(runs) == 1  # several API calls, one plugin run: cached until its expiry
    assert runs[0]["argv"] == ["eks", "get-token", "--cluster-name", "test"]
    assert runs[0]["info"]["spec"]["interactive"] is False  # stdin is no terminal here
    assert runs[0]["info"]["spec"]["cluster"]["server"] == crds.server

    # a token the server refuses: the plugin runs again once (client-go's re-run on 401), then the CLI says so
    (tmp_path / "token").write_text("not-a-token")
    proc = nightshift("--kubeconfig", str(kc), "status")
    assert proc.returncode == 1 and "Unauthorized" in proc.stderr, proc.stderr
    assert len(plugin_runs(log)) == 3

    # the plugin fails: its exit code and stderr reach the user
    env_fail = {"PLUGIN_FAIL": "4"}
    proc = nightshift("--kubeconfig", str(kc), "status", env=env_fail)
    assert proc.returncode == 1
    assert "exec plugin" in proc.stderr and "exit code 4" in proc.stderr and "told to fail" in proc.stderr


# -- contexts ---------------------------------------------------------------------------------------
def test_context_chooses_between_two_clusters(
    kubectl: Kubectl, crds: ControlPlane, other_cluster: ControlPlane, namespace: str, tmp_path: Path
) -> None:
    kubectl.apply(bgj("here", namespace, {"job": script_job("pass")}))
    other_cluster.kubectl("create", "namespace", namespace)
    other_cluster.kubectl("apply", "-f", "-", input=json.dumps(bgj("there", namespace, {"job": script_job("pass")})))
    main_kc = write_kubeconfig(tmp_path / "main", {"main": (cluster_entry(crds), admin_user(crds), namespace)}, "main")
    other_kc = write_kubeconfig(
        tmp_path / "other", {"other": (cluster_entry(other_cluster), admin_user(other_cluster), namespace)}, "other"
    )
    env = {"KUBECONFIG": os.pathsep.join([str(main_kc), str(other_kc)])}  # merged; main's current-context wins

    def names(*args: str, env: dict[str, str] | None = None) -> list[str]:
        data = json.loads(ok(nightshift(*args, "-o", "json", "status", env=env)))
        return [j["name"] for j in data["jobs"]]

    assert names(env=env) == ["here"]
    assert names("--context", "other", env=env) == ["there"]
    assert names("--context", "main", env=env) == ["here"]
    assert names("--kubeconfig", str(other_kc), env=env) == ["there"]  # --kubeconfig: that file alone
    proc = nightshift("--kubeconfig", str(main_kc), "--context", "other", "status", env=env)
    assert proc.returncode == 1 and 'context "other" does not exist' in proc.stderr
    proc = nightshift("--kubeconfig", str(tmp_path / "missing"), "status")
    assert proc.returncode == 1 and "does not exist" in proc.stderr


# -- rotation ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("source", ["tokenFile", "exec"])
def test_token_rotates_during_trigger_wait(
    kubectl: Kubectl, crds: ControlPlane, running_operator: Operator, namespace: str, tmp_path: Path, source: str
) -> None:
    """The token changes while `trigger --wait` waits, the old one dies, the connection drops.

    tokenFile: the file is re-read because it changed. exec: the plugin's credential is cached for
    an hour, so only the server's 401 makes the CLI run the plugin again and get the new token."""
    service_account(kubectl, namespace, "runner", "bind-1", "bind-2")
    token_file = tmp_path / "token"
    old = bound_token(kubectl, namespace, "runner", "bind-1")
    token_file.write_text(old)
    release = tmp_path / "release"
    wait_code = f"import os, time\nwhile not os.path.exists({str(release)!r}): time.sleep(0.2)"
    kubectl.apply(bgj("long", namespace, {"job": script_job(wait_code)}))
    log = tmp_path / "runs.log"
    user: dict[str, Any] = {"tokenFile": str(token_file)}
    if source == "exec":
        env = {"PLUGIN_TOKEN_FILE": str(token_file), "PLUGIN_LOG": str(log), "PLUGIN_TTL_SECONDS": "3600"}
        user = {
            "exec": {
                "apiVersion": EXEC_V1,
                "command": str(write_plugin(tmp_path / "get-token")),
                "env": [{"name": k, "value": v} for k, v in env.items()],
                "interactiveMode": "Never",
            }
        }
    with ConnectProxy() as proxy:
        cluster = cluster_entry(crds, **{"proxy-url": proxy.url})
        kc = write_kubeconfig(tmp_path / "config", {"sa": (cluster, user, namespace)}, "sa")
        cli = subprocess.Popen(
            [str(BIN / "nightshift"), "--kubeconfig", str(kc), "trigger", "long", "--wait", "--timeout", "180"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "NIGHTSHIFT_HISTORY_DSN": ""},
        )
        try:

            def running() -> bool:
                items = kubectl.json("get", "bgjr", "-n", namespace)["items"]
                return bool(items) and items[0].get("status", {}).get("phase") == "Running"

            wait_for(running, timeout=90, what="the run is running while the CLI waits")
            assert cli.poll() is None
            write_atomically(token_file, bound_token(kubectl, namespace, "runner", "bind-2"))
            revoke(kubectl, crds, namespace, "bind-1", old)
            tunnels = len(proxy.tunnels)
            assert proxy.cut() >= 1  # the CLI's watch connection drops: it must come back with the new token
            wait_for(lambda: len(proxy.tunnels) > tunnels, timeout=30, what="the CLI reconnects")
            release.touch()
            out, err = cli.communicate(timeout=120)
        finally:
            if cli.poll() is None:
                cli.kill()
                cli.communicate()
    assert cli.returncode == 0, f"stdout: {out}\nstderr: {err}"
    assert "Succeeded" in out
    assert "Unauthorized" not in err
    if source == "exec":
        assert len(plugin_runs(log)) == 2  # once at the start, once after the 401 on the revoked token


def chart_rbac(cp: ControlPlane, release: str, namespace: str) -> list[dict[str, Any]]:
    """The chart's ServiceAccount and RBAC as `helm install` would create them (webhook off)."""
    assert cp.bin_dir is not None
    out = subprocess.run(
        [str(cp.bin_dir / "helm"), "template", release, "charts/nightshift", "--namespace", namespace],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).resolve().parents[2],
    ).stdout
    kinds = {"ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"}
    return [d for d in yaml.safe_load_all(out) if d and d.get("kind") in kinds]


def test_operator_follows_a_rotation_of_its_serviceaccount_token(
    kubectl: Kubectl, crds: ControlPlane, operator: Operator, namespace: str, tmp_path: Path
) -> None:
    """In-cluster credentials (the pod's env and token folder), the chart's RBAC, a kubelet-style rotation."""
    release = f"{namespace}-op"
    docs = chart_rbac(crds, release, namespace)
    (sa,) = [d["metadata"]["name"] for d in docs if d["kind"] == "ServiceAccount"]
    for d in docs:
        kubectl.apply(d)
    for s in ("bind-1", "bind-2"):
        kubectl("create", "secret", "generic", s, "-n", namespace)
    folder = tmp_path / "serviceaccount"
    folder.mkdir()
    ca = (crds.workdir / "pki" / "ca.crt").read_text()
    old = bound_token(kubectl, namespace, sa, "bind-1")
    kubelet_write(folder, {"token": old, "ca.crt": ca, "namespace": namespace}, 1)
    operator.stop()  # one operator at a time; the next test's running_operator starts it again
    op = OperatorProcess(crds, tmp_path / "op", webhook=False)
    port = crds.server.rsplit(":", 1)[1]
    try:
        op.start(
            KUBERNETES_SERVICE_HOST="127.0.0.1",
            KUBERNETES_SERVICE_PORT=port,
            NIGHTSHIFT_SERVICEACCOUNT_DIR=str(folder),
            KUBECONFIG=str(tmp_path / "no-kubeconfig"),  # nothing but the ServiceAccount to fall back on
        )
        kubectl.apply(bgj("report", namespace, {"job": script_job("print('ok')")}))
        admin = {"KUBECONFIG": str(crds.kubeconfig)}

        def succeeded(key: str) -> bool:
            got = kubectl.run("get", "bgjr", id_name("report", key), "-n", namespace, "-o", "jsonpath={.status.phase}")
            return got.stdout == "Succeeded"

        ok(nightshift("-n", namespace, "trigger", "report", "--id", "before", env=admin))
        wait_for(lambda: succeeded("before"), timeout=90, what="a run before the rotation")

        kubelet_write(
            folder, {"token": bound_token(kubectl, namespace, sa, "bind-2"), "ca.crt": ca, "namespace": namespace}, 2
        )
        revoke(kubectl, crds, namespace, "bind-1", old)
        ok(nightshift("-n", namespace, "trigger", "report", "--id", "after", env=admin))
        wait_for(lambda: succeeded("after"), timeout=90, what="a run after the old token died, status written")
        log = op.log.read_text()
        assert "Unauthorized" not in log and "401" not in log
        assert "Re-authentication" not in log  # followed per request: kopf never had to log in again
    finally:
        op.stop()
        for d in docs:
            if d["kind"].startswith("Cluster"):
                kubectl("delete", d["kind"].lower(), d["metadata"]["name"], "--ignore-not-found")


# -- proxies ----------------------------------------------------------------------------------------
def test_cli_reaches_the_api_server_through_a_proxy(
    kubectl: Kubectl, crds: ControlPlane, namespace: str, tmp_path: Path
) -> None:
    kubectl.apply(bgj("report", namespace, {"job": script_job("pass")}))
    port = crds.server.rsplit(":", 1)[1]
    with ConnectProxy(hosts={"api.nightshift.test": "127.0.0.1"}) as proxy:
        # the kubeconfig's proxy-url: used for every server, loopback too
        kc = write_kubeconfig(
            tmp_path / "kc-proxy-url",
            {"p": (cluster_entry(crds, **{"proxy-url": proxy.url}), admin_user(crds), namespace)},
            "p",
        )
        assert "report" in ok(nightshift("--kubeconfig", str(kc), "status"))
        assert proxy.tunnels and set(proxy.tunnels) == {f"127.0.0.1:{port}"}

        # HTTPS_PROXY from the environment, for a server name only the proxy can resolve, verified
        # against the certificate's name with tls-server-name
        cluster = cluster_entry(crds, server=f"https://api.nightshift.test:{port}", **{"tls-server-name": "localhost"})
        kc = write_kubeconfig(tmp_path / "kc-env", {"e": (cluster, admin_user(crds), namespace)}, "e")
        before = len(proxy.tunnels)
        assert "report" in ok(nightshift("--kubeconfig", str(kc), "status", env={"HTTPS_PROXY": proxy.url}))
        assert proxy.tunnels[before:] and set(proxy.tunnels[before:]) == {f"api.nightshift.test:{port}"}

        # user info in the proxy's URL becomes Proxy-Authorization, as Go sends it
        with ConnectProxy(auth=("corp", "p@ss word")) as guarded:
            for url, code in ((guarded.url, 1), (guarded.url.replace("://", "://corp:p%40ss%20word@"), 0)):
                kc_auth = write_kubeconfig(
                    tmp_path / "kc-auth",
                    {"a": (cluster_entry(crds, **{"proxy-url": url}), admin_user(crds), namespace)},
                    "a",
                )
                assert nightshift("--kubeconfig", str(kc_auth), "status").returncode == code
            assert guarded.refused == 1 and guarded.tunnels == [f"127.0.0.1:{port}"]

        # NO_PROXY: the CLI goes direct, and no DNS knows the name
        before = len(proxy.tunnels)
        proc = nightshift(
            "--kubeconfig", str(kc), "status", env={"HTTPS_PROXY": proxy.url, "NO_PROXY": ".nightshift.test"}
        )
        assert proc.returncode == 1 and len(proxy.tunnels) == before
        # without the proxy's help a wrong tls-server-name fails verification: the name is really checked
        bad = cluster_entry(crds, **{"proxy-url": proxy.url, "tls-server-name": "not-the-server"})
        kc = write_kubeconfig(tmp_path / "kc-bad-name", {"b": (bad, admin_user(crds), namespace)}, "b")
        proc = nightshift("--kubeconfig", str(kc), "status")
        assert proc.returncode == 1 and "certificate" in proc.stderr.lower(), proc.stderr


def test_impersonation_from_the_kubeconfig(
    kubectl: Kubectl, crds: ControlPlane, namespace: str, tmp_path: Path
) -> None:
    """`as` and `as-groups` become Impersonate-* headers: the API server answers as that user."""
    kubectl.apply(bgj("report", namespace, {"job": script_job("pass")}))

    def status(**user: Any) -> subprocess.CompletedProcess[str]:
        kc = write_kubeconfig(
            tmp_path / "kc", {"x": (cluster_entry(crds), {**admin_user(crds), **user}, namespace)}, "x"
        )
        return nightshift("--kubeconfig", str(kc), "status")

    proc = status(**{"as": "someone"})
    assert proc.returncode == 1 and 'User "someone" cannot list' in proc.stderr, proc.stderr
    assert "report" in ok(status(**{"as": "someone", "as-groups": ["system:masters", "team"]}))
