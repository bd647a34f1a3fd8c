"""Credentials without a cluster: kubeconfig merge and context choice, the exec protocol with a real
plugin, expiry caching and token files on an injected clock, proxy selection, in-cluster loading."""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from nightshift.cli.commands import parser
from nightshift.infra import credentials, execplugin, kubeconfig, proxy
from nightshift.infra.credentials import Credential, Exec, ReloginBackoff, Tls, TokenFile
from nightshift.infra.kubeconfig import Cluster, ExecConfig, KubeconfigError
from tests.support.cluster import write_certs
from tests.support.credtools import plugin_runs, write_plugin


def write_kubeconfig(path: Path, *, clusters: Any = (), users: Any = (), contexts: Any = (), current: str = "") -> Path:
    doc: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": n, "cluster": c} for n, c in clusters],
        "users": [{"name": n, "user": u} for n, u in users],
        "contexts": [{"name": n, "context": c} for n, c in contexts],
    }
    if current:
        doc["current-context"] = current
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(doc))
    return path


# -- which files, how they merge --------------------------------------------------------------------
def test_kubeconfig_list_merges_first_definition_wins(tmp_path: Path) -> None:
    a = write_kubeconfig(
        tmp_path / "a" / "config",
        clusters=[("prod", {"server": "https://a.example:6443", "certificate-authority": "ca.crt"})],
        users=[("me", {"tokenFile": "tok"})],
        contexts=[("prod", {"cluster": "prod", "user": "me"})],
    )
    b = write_kubeconfig(
        tmp_path / "b" / "config",
        clusters=[
            ("prod", {"server": "https://b.example:6443"}),
            ("dev", {"server": "https://dev.example:6443"}),
        ],
        users=[("me", {"token": "from-b"}), ("dev", {"exec": {"command": "bin/plugin", "apiVersion": "v"}})],
        contexts=[("dev", {"cluster": "dev", "user": "dev", "namespace": "team"})],
        current="dev",
    )
    env = {"KUBECONFIG": os.pathsep.join([str(a), str(tmp_path / "missing"), "", str(a), str(b)])}
    assert kubeconfig.default_paths(env) == [a, tmp_path / "missing", b]  # duplicates and empty entries dropped
    cfg = kubeconfig.load(None, env)
    assert cfg.files == (a, b)  # the missing file is skipped
    assert cfg.clusters["prod"].server == "https://a.example:6443"  # a defined it first
    assert cfg.clusters["dev"].server == "https://dev.example:6443"  # only b has it
    assert cfg.current_context == "dev"  # a sets none, so b's counts
    # relative paths are relative to the file that holds them
    assert cfg.clusters["prod"].certificate_authority == str(tmp_path / "a" / "ca.crt")
    assert cfg.users["me"].token_file == str(tmp_path / "a" / "tok")
    assert cfg.users["me"].token is None  # users merge whole, not field by field
    assert cfg.users["dev"].exec is not None and cfg.users["dev"].exec.command == str(tmp_path / "b" / "bin/plugin")


def test_first_current_context_wins_and_bare_exec_commands_stay_on_path(tmp_path: Path) -> None:
    a = write_kubeconfig(tmp_path / "a", current="one", users=[("u", {"exec": {"command": "aws", "apiVersion": "v"}})])
    b = write_kubeconfig(tmp_path / "b", current="two")
    cfg = kubeconfig.load(None, {"KUBECONFIG": f"{a}{os.pathsep}{b}"})
    assert cfg.current_context == "one"
    assert cfg.users["u"].exec is not None and cfg.users["u"].exec.command == "aws"


def test_explicit_kubeconfig_is_the_only_file_and_must_exist(tmp_path: Path) -> None:
    a = write_kubeconfig(tmp_path / "a", clusters=[("x", {"server": "https://x"})], current="x")
    b = write_kubeconfig(tmp_path / "b", clusters=[("y", {"server": "https://y"})])
    cfg = kubeconfig.load(str(b), {"KUBECONFIG": str(a)})
    assert set(cfg.clusters) == {"y"}
    with pytest.raises(KubeconfigError, match="does not exist"):
        kubeconfig.load(str(tmp_path / "nope"), {})


def test_default_is_home_kube_config(tmp_path: Path) -> None:
    assert kubeconfig.default_paths({"HOME": str(tmp_path)}) == [tmp_path / ".kube" / "config"]


def test_bad_kubeconfig_names_the_file_and_field(tmp_path: Path) -> None:
    p = write_kubeconfig(tmp_path / "c", clusters=[("x", {"server": "https://x", "insecure-skip-tls-verify": "maybe"})])
    with pytest.raises(KubeconfigError, match=r"c: insecure-skip-tls-verify"):
        kubeconfig.load(str(p), {})


# -- which context ----------------------------------------------------------------------------------
def two_contexts(tmp_path: Path) -> kubeconfig.Kubeconfig:
    p = write_kubeconfig(
        tmp_path / "config",
        clusters=[("c1", {"server": "https://one:6443/"}), ("c2", {"server": "https://two:6443"})],
        users=[("u1", {"token": "t1"}), ("u2", {"token": "t2"})],
        contexts=[
            ("one", {"cluster": "c1", "user": "u1", "namespace": "ns1"}),
            ("two", {"cluster": "c2", "user": "u2"}),
        ],
        current="one",
    )
    return kubeconfig.load(str(p), {})


def test_context_choice_and_namespace(tmp_path: Path) -> None:
    cfg = two_contexts(tmp_path)
    sel = kubeconfig.select(cfg)
    assert (sel.context, sel.cluster.server, sel.user.token, sel.namespace) == ("one", "https://one:6443/", "t1", "ns1")
    sel = kubeconfig.select(cfg, "two")
    assert (sel.cluster.server, sel.user.token, sel.namespace, sel.namespace_explicit) == (
        "https://two:6443",
        "t2",
        "default",
        False,
    )
    assert kubeconfig.select(cfg, "one", "flag").namespace == "flag"  # -n beats the context
    with pytest.raises(KubeconfigError, match='context "three" does not exist'):
        kubeconfig.select(cfg, "three")
    with pytest.raises(KubeconfigError, match="no context chosen"):
        kubeconfig.select(kubeconfig.Kubeconfig())


def test_for_cli_follows_flags(tmp_path: Path) -> None:
    two_contexts(tmp_path)
    path = str(tmp_path / "config")
    c = credentials.for_cli(kubeconfig_path=path, context="two", environ={})
    assert (c.server, c.namespace) == ("https://two:6443", "default")
    c = credentials.for_cli(environ={"KUBECONFIG": path})
    assert (c.server, c.namespace) == ("https://one:6443", "ns1")  # trailing slash dropped
    args = parser().parse_args(["--kubeconfig", path, "--context", "two", "-n", "x", "status"])
    assert (args.kubeconfig, args.context, args.namespace) == (path, "two", "x")


def test_kubectl_refusals(tmp_path: Path) -> None:
    def creds(cluster: dict[str, Any], user: dict[str, Any]) -> credentials.Credentials:
        p = write_kubeconfig(
            tmp_path / "k",
            clusters=[("c", cluster)],
            users=[("u", user)],
            contexts=[("x", {"cluster": "c", "user": "u"})],
        )
        return credentials.for_cli(kubeconfig_path=str(p), context="x", environ={})

    ca = base64.b64encode(b"-----BEGIN CERTIFICATE-----").decode()
    with pytest.raises(KubeconfigError, match="insecure-skip-tls-verify is not allowed"):
        creds({"server": "https://s", "insecure-skip-tls-verify": True, "certificate-authority-data": ca}, {})
    with pytest.raises(KubeconfigError, match="auth-provider 'oidc' was removed"):
        creds({"server": "https://s"}, {"auth-provider": {"name": "oidc"}})
    with pytest.raises(KubeconfigError, match="both certificate and key"):
        creds({"server": "https://s"}, {"client-certificate": "/x.crt"})
    with pytest.raises(KubeconfigError, match="has no server"):
        creds({}, {})


def test_source_precedence_token_then_file_then_exec(tmp_path: Path) -> None:
    exec_ = {"command": "plugin", "apiVersion": "client.authentication.k8s.io/v1", "interactiveMode": "Never"}
    (tmp_path / "tok").write_text("from-file\n")

    def source(user: dict[str, Any]) -> credentials.Source:
        p = write_kubeconfig(
            tmp_path / "k",
            clusters=[("c", {"server": "https://s"})],
            users=[("u", user)],
            contexts=[("x", {"cluster": "c", "user": "u"})],
        )
        return credentials.for_cli(kubeconfig_path=str(p), context="x", environ={}).source

    assert asyncio.run(source({"token": "t", "tokenFile": "tok", "exec": exec_}).current()).authorization == "Bearer t"
    assert isinstance(source({"tokenFile": "tok", "exec": exec_}), TokenFile)
    assert isinstance(source({"exec": exec_, "username": "a", "password": "b"}), Exec)
    basic = asyncio.run(source({"username": "a", "password": "b"}).current()).authorization
    assert basic == "Basic " + base64.b64encode(b"a:b").decode()


# -- exec plugins: the real protocol with a real plugin ------------------------------------------------
@pytest.fixture
def plugin(tmp_path: Path) -> Path:
    (tmp_path / "token").write_text("tok-1\n")
    return write_plugin(tmp_path / "plugin")


def exec_config(plugin: Path, version: str = "v1", **extra: Any) -> ExecConfig:
    env = [{"name": "PLUGIN_TOKEN_FILE", "value": str(plugin.parent / "token")}]
    env.append({"name": "PLUGIN_LOG", "value": str(plugin.parent / "runs.log")})
    env += [{"name": k, "value": v} for k, v in extra.pop("env", {}).items()]
    return ExecConfig.model_validate(
        {
            "command": str(plugin),
            "args": ["token", "--cluster", "c1"],
            "apiVersion": f"client.authentication.k8s.io/{version}",
            "env": env,
            **extra,
        }
    )


CLUSTER = Cluster.model_validate(
    {
        "server": "https://api.example:6443",
        "tls-server-name": "api.internal",
        "proxy-url": "http://proxy:3128",
        "extensions": [{"name": "client.authentication.k8s.io/exec", "extension": {"audience": "x"}}],
    }
)


@pytest.mark.parametrize("version", ["v1", "v1beta1"])
def test_exec_plugin_protocol(plugin: Path, version: str) -> None:
    cfg = exec_config(
        plugin, version, interactiveMode="Never", provideClusterInfo=True, env={"PLUGIN_TTL_SECONDS": "600"}
    )
    status = asyncio.run(execplugin.run(cfg, CLUSTER, ca_data=b"CA PEM"))
    assert status.token == "tok-1"
    assert status.expiration_timestamp is not None and status.expiration_timestamp.tzinfo is not None
    (run,) = plugin_runs(plugin.parent / "runs.log")
    assert run["argv"] == ["token", "--cluster", "c1"]
    assert run["env"]["PLUGIN_TTL_SECONDS"] == "600"  # exec.env reaches the plugin
    assert run["stdin_tty"] is False  # interactiveMode Never: no terminal
    assert run["info"] == {
        "apiVersion": f"client.authentication.k8s.io/{version}",
        "kind": "ExecCredential",
        "spec": {
            "interactive": False,
            "cluster": {
                "server": "https://api.example:6443",
                "tls-server-name": "api.internal",
                "certificate-authority-data": base64.b64encode(b"CA PEM").decode(),
                "proxy-url": "http://proxy:3128",
                "config": {"audience": "x"},
            },
        },
    }


def test_exec_cluster_info_only_when_asked(plugin: Path) -> None:
    asyncio.run(execplugin.run(exec_config(plugin, "v1beta1"), CLUSTER))  # v1beta1: IfAvailable by default
    (run,) = plugin_runs(plugin.parent / "runs.log")
    assert run["info"]["spec"] == {"interactive": False}


def test_exec_plugin_client_certificate(plugin: Path, tmp_path: Path) -> None:
    (tmp_path / "c.pem").write_text("CERT")
    (tmp_path / "k.pem").write_text("KEY")
    env = {"PLUGIN_CERT_FILE": str(tmp_path / "c.pem"), "PLUGIN_KEY_FILE": str(tmp_path / "k.pem")}
    status = asyncio.run(execplugin.run(exec_config(plugin, interactiveMode="Never", env=env), CLUSTER))
    assert (status.token, status.client_certificate_data, status.client_key_data) == (None, "CERT", "KEY")


def test_exec_plugin_failures_say_why(plugin: Path) -> None:
    def run(cfg: ExecConfig, **kw: Any) -> Any:
        return asyncio.run(execplugin.run(cfg, CLUSTER, **kw))

    with pytest.raises(execplugin.ExecPluginError, match="exit code 3"):
        run(exec_config(plugin, interactiveMode="Never", env={"PLUGIN_FAIL": "3"}))
    with pytest.raises(execplugin.ExecPluginError, match=r"answered client\.authentication\.k8s\.io/v1beta1"):
        run(
            exec_config(
                plugin, interactiveMode="Never", env={"PLUGIN_ANSWER_VERSION": "client.authentication.k8s.io/v1beta1"}
            )
        )
    with pytest.raises(execplugin.ExecPluginError, match="interactiveMode must be set"):
        run(exec_config(plugin))
    with pytest.raises(execplugin.ExecPluginError, match="needs a terminal"):
        run(exec_config(plugin, interactiveMode="Always"))
    with pytest.raises(execplugin.ExecPluginError, match=r"v1alpha1.* is not supported"):
        run(exec_config(plugin, "v1alpha1", interactiveMode="Never"))
    missing = exec_config(plugin, interactiveMode="Never", installHint="install it with: brew install x").model_copy(
        update={"command": str(plugin.parent / "nope")}
    )
    with pytest.raises(execplugin.ExecPluginError, match="not found\ninstall it with: brew install x"):
        run(missing)


@pytest.mark.parametrize(
    ("answer", "message"),
    [
        ({"kind": "ExecCredential"}, "not an ExecCredential"),
        ({"apiVersion": "client.authentication.k8s.io/v1", "kind": "Other", "status": {"token": "x"}}, "kind 'Other'"),
        ({"apiVersion": "client.authentication.k8s.io/v1", "kind": "ExecCredential"}, "no status"),
        ({"apiVersion": "client.authentication.k8s.io/v1", "kind": "ExecCredential", "status": {}}, "neither a token"),
        (
            {
                "apiVersion": "client.authentication.k8s.io/v1",
                "kind": "ExecCredential",
                "status": {"clientKeyData": "k"},
            },
            "both certificate and key",
        ),
    ],
)
def test_exec_answers_checked(answer: dict[str, Any], message: str) -> None:
    cfg = ExecConfig(command="p", apiVersion="client.authentication.k8s.io/v1")
    with pytest.raises(execplugin.ExecPluginError, match=message):
        execplugin.parse(cfg, json.dumps(answer).encode())


def test_interactive_modes() -> None:
    def cfg(mode: str | None, version: str = "v1") -> ExecConfig:
        return ExecConfig.model_validate(
            {"command": "p", "apiVersion": f"client.authentication.k8s.io/{version}", "interactiveMode": mode}
        )

    assert execplugin.interactive(cfg("IfAvailable"), stdin_is_tty=True) is True
    assert execplugin.interactive(cfg("IfAvailable"), stdin_is_tty=False) is False
    assert execplugin.interactive(cfg("Never"), stdin_is_tty=True) is False
    assert execplugin.interactive(cfg("Always"), stdin_is_tty=True) is True
    assert execplugin.interactive(cfg(None, "v1beta1"), stdin_is_tty=True) is True


# -- caching on an injected clock -------------------------------------------------------------------
class Clock:
    def __init__(self) -> None:
        self.t = dt.datetime(2026, 12, 1, 12, 0, tzinfo=dt.UTC)
        self.mono = 1000.0

    def now(self) -> dt.datetime:
        return self.t

    def monotonic(self) -> float:
        return self.mono

    def advance(self, seconds: float) -> None:
        self.t += dt.timedelta(seconds=seconds)
        self.mono += seconds


def test_exec_credential_cached_until_expiry_and_rerun_on_401() -> None:
    clock = Clock()
    tokens = iter(["a", "b", "c", "c"])
    runs: list[int] = []

    async def runner(config: ExecConfig, cluster: Cluster, **kw: Any) -> execplugin.ExecCredentialStatus:
        runs.append(1)
        await asyncio.sleep(0.01)  # concurrent callers must wait for this one run
        return execplugin.ExecCredentialStatus(
            token=next(tokens), expirationTimestamp=clock.now() + dt.timedelta(minutes=15)
        )

    src = Exec(ExecConfig(command="p", apiVersion="v"), CLUSTER, now=clock.now, runner=runner)

    async def scenario() -> None:
        first = await asyncio.gather(*(src.current() for _ in range(5)))
        assert {c.authorization for c in first} == {"Bearer a"} and len(runs) == 1
        clock.advance(14 * 60)
        assert (await src.current()).authorization == "Bearer a" and len(runs) == 1  # still fresh
        clock.advance(61)
        b = await src.current()
        assert b.authorization == "Bearer b" and len(runs) == 2  # expired: run again
        assert await src.rejected(first[0]) is True and len(runs) == 2  # a stale 401: the newer one is there
        assert await src.rejected(b) is True and len(runs) == 3  # a 401 on the current one: run again
        c = await src.current()
        assert c.authorization == "Bearer c"
        assert await src.rejected(c) is False  # the plugin gave the same token: nothing new to try

    asyncio.run(scenario())


def test_exec_credential_without_expiry_lasts_until_401() -> None:
    clock = Clock()
    runs: list[int] = []

    async def runner(*a: Any, **kw: Any) -> execplugin.ExecCredentialStatus:
        runs.append(1)
        return execplugin.ExecCredentialStatus(token=f"t{len(runs)}")

    src = Exec(ExecConfig(command="p", apiVersion="v"), CLUSTER, now=clock.now, runner=runner)

    async def scenario() -> None:
        c = await src.current()
        clock.advance(10 * 86400)
        assert await src.current() is c and len(runs) == 1

    asyncio.run(scenario())


def test_token_file_reread_when_it_changes(tmp_path: Path) -> None:
    clock = Clock()
    path = tmp_path / "token"
    path.write_text("one\n")
    src = TokenFile(path, clock=clock.monotonic, max_age=60)

    async def scenario() -> None:
        assert (await src.current()).authorization == "Bearer one"
        assert (await src.current()).authorization == "Bearer one" and src.reads == 1  # a stat, no read
        path.write_text("two-longer\n")
        assert (await src.current()).authorization == "Bearer two-longer" and src.reads == 2
        clock.advance(61)
        await src.current()
        assert src.reads == 3  # read at least once a minute, changed or not
        # the kubelet's atomic writer: a new folder, then the ..data symlink swapped
        (tmp_path / "v1").mkdir()
        (tmp_path / "v1" / "token").write_text("three\n")
        (tmp_path / "..data").symlink_to("v1")
        path.unlink()
        path.symlink_to("..data/token")
        assert (await src.current()).authorization == "Bearer three"
        (tmp_path / "v2").mkdir()
        (tmp_path / "v2" / "token").write_text("four\n")
        (tmp_path / "..tmp").symlink_to("v2")
        os.replace(tmp_path / "..tmp", tmp_path / "..data")
        assert (await src.current()).authorization == "Bearer four"
        stale = Credential(authorization="Bearer three")
        assert await src.rejected(stale) is True  # the file holds another token now
        assert await src.rejected(await src.current()) is False  # same token: nothing new

    asyncio.run(scenario())


def test_token_file_keeps_last_token_while_replaced(tmp_path: Path) -> None:
    path = tmp_path / "token"
    path.write_text("one")
    src = TokenFile(path)

    async def scenario() -> None:
        await src.current()
        path.unlink()
        assert (await src.rejected(Credential(authorization="Bearer one"))) is False
        assert (await src.current()).authorization == "Bearer one"

    asyncio.run(scenario())
    with pytest.raises(credentials.CredentialsError, match="token file"):
        asyncio.run(TokenFile(tmp_path / "none").current())


def test_relogin_backoff() -> None:
    clock = Clock()
    b = ReloginBackoff(clock=clock.monotonic)
    assert b.next_delay() == 0  # the first login
    clock.advance(600)
    assert b.next_delay() == 0  # long after: at once
    assert [b.next_delay() for _ in range(8)] == [1, 2, 4, 8, 16, 32, 60, 60]
    clock.advance(60 + 60)
    assert b.next_delay() == 0


# -- proxies ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("server", "env", "want"),
    [
        ("https://api.example:6443", {}, None),
        ("https://api.example:6443", {"HTTPS_PROXY": "http://p:3128"}, "http://p:3128"),
        ("https://api.example:6443", {"https_proxy": "p:3128"}, "http://p:3128"),  # no scheme: http
        ("https://api.example:6443", {"HTTP_PROXY": "http://p:3128"}, None),  # https uses HTTPS_PROXY only
        ("http://api.example:8080", {"HTTP_PROXY": "http://p:3128"}, "http://p:3128"),
        ("https://127.0.0.1:6443", {"HTTPS_PROXY": "http://p:3128"}, None),  # loopback never, as Go
        ("https://localhost:6443", {"HTTPS_PROXY": "http://p:3128"}, None),
        ("https://[::1]:6443", {"HTTPS_PROXY": "http://p:3128"}, None),
        ("https://api.example:6443", {"HTTPS_PROXY": "http://p", "NO_PROXY": "*"}, None),
        (
            "https://api.example:6443",
            {"HTTPS_PROXY": "http://p", "NO_PROXY": "ample"},
            "http://p",
        ),  # not a dot boundary
        ("https://api.example:6443", {"HTTPS_PROXY": "http://p", "NO_PROXY": "example"}, None),  # a parent domain
        ("https://api.example:6443", {"HTTPS_PROXY": "http://p", "NO_PROXY": "api.example"}, None),
        ("https://x.api.example:6443", {"HTTPS_PROXY": "http://p", "no_proxy": "api.example"}, None),
        ("https://api.example:6443", {"HTTPS_PROXY": "http://p", "NO_PROXY": ".api.example"}, "http://p"),
        ("https://x.api.example:6443", {"HTTPS_PROXY": "http://p", "NO_PROXY": "*.api.example"}, None),
        ("https://api.example:6443", {"HTTPS_PROXY": "http://p", "NO_PROXY": "api.example:443"}, "http://p"),
        ("https://api.example:6443", {"HTTPS_PROXY": "http://p", "NO_PROXY": "a, api.example:6443"}, None),
        ("https://10.1.2.3:6443", {"HTTPS_PROXY": "http://p", "NO_PROXY": "10.0.0.0/8"}, None),
        ("https://11.1.2.3:6443", {"HTTPS_PROXY": "http://p", "NO_PROXY": "10.0.0.0/8"}, "http://p"),
        ("https://10.1.2.3:6443", {"HTTPS_PROXY": "http://p", "NO_PROXY": "10.1.2.3"}, None),
        ("https://[fd00::1]:6443", {"HTTPS_PROXY": "http://p", "NO_PROXY": "fd00::/8"}, None),
    ],
)
def test_proxy_from_environment(server: str, env: dict[str, str], want: str | None) -> None:
    assert proxy.for_server(server, None, env) == want


def test_kubeconfig_proxy_url_wins_even_for_loopback() -> None:
    env = {"HTTPS_PROXY": "http://env:1", "NO_PROXY": "*"}
    assert proxy.for_server("https://127.0.0.1:6443", "http://kc:3128", env) == "http://kc:3128"
    with pytest.raises(proxy.ProxyError, match="'socks5' is not supported"):
        proxy.for_server("https://a", "socks5://p:1080", {})


# -- in a pod ---------------------------------------------------------------------------------------
def serviceaccount_dir(tmp_path: Path) -> Path:
    d = tmp_path / "sa"
    d.mkdir()
    (d / "token").write_text("sa-token")
    (d / "namespace").write_text("ops\n")
    return d


def test_in_cluster_from_env_and_folder(tmp_path: Path) -> None:
    d = serviceaccount_dir(tmp_path)
    env = {
        "KUBERNETES_SERVICE_HOST": "fd00::1",
        "KUBERNETES_SERVICE_PORT": "443",
        credentials.SERVICEACCOUNT_DIR_ENV: str(d),
    }
    c = credentials.in_cluster(env)
    assert c is not None
    assert (c.server, c.namespace) == ("https://[fd00::1]:443", "ops")
    assert isinstance(c.source, TokenFile) and c.source.path == d / "token"
    assert credentials.in_cluster({**env, "KUBERNETES_SERVICE_HOST": ""}) is None


def test_operator_prefers_the_pod_and_the_cli_the_kubeconfig(tmp_path: Path) -> None:
    d = serviceaccount_dir(tmp_path)
    kc = write_kubeconfig(
        tmp_path / "config",
        clusters=[("c", {"server": "https://kc:6443"})],
        contexts=[("x", {"cluster": "c", "user": "u"})],
        current="x",
    )
    pod = {
        "KUBERNETES_SERVICE_HOST": "10.0.0.1",
        "KUBERNETES_SERVICE_PORT": "443",
        credentials.SERVICEACCOUNT_DIR_ENV: str(d),
    }
    assert credentials.for_operator({**pod, "KUBECONFIG": str(kc)}).server == "https://10.0.0.1:443"
    assert credentials.for_operator({"KUBECONFIG": str(kc)}).server == "https://kc:6443"
    assert credentials.for_cli(environ={**pod, "KUBECONFIG": str(kc)}).server == "https://kc:6443"
    # kubectl in a pod without a kubeconfig: the ServiceAccount, -n still wins
    c = credentials.for_cli(namespace="mine", environ={**pod, "KUBECONFIG": str(tmp_path / "none")})
    assert (c.server, c.namespace) == ("https://10.0.0.1:443", "mine")
    with pytest.raises(credentials.CredentialsError, match="no kubeconfig"):
        credentials.for_cli(environ={"KUBECONFIG": str(tmp_path / "none")})


# -- TLS -------------------------------------------------------------------------------------------
def test_tls_from_data_files_and_exec(tmp_path: Path) -> None:
    pki = tmp_path / "pki"
    write_certs(pki)
    crt, key, ca = ((pki / n).read_bytes() for n in ("admin.crt", "admin.key", "ca.crt"))
    assert Tls(ca_data=ca, cert_data=crt, key_data=key).context().verify_mode.name == "CERT_REQUIRED"
    assert Tls(ca_file=str(pki / "ca.crt"), cert_file=str(pki / "admin.crt"), key_file=str(pki / "admin.key")).context()
    insecure = Tls(insecure=True).context((crt, key))
    assert (insecure.check_hostname, insecure.verify_mode.name) == (False, "CERT_NONE")
    leftovers = [p for p in Path(os.environ.get("TMPDIR", "/tmp")).glob("nightshift-tls-*")]
    assert leftovers == []  # key material is never left on disk


def test_exec_client_certificate_makes_a_new_tls_context_and_kopf_expiry(tmp_path: Path) -> None:
    """A certificate from a plugin lives in the connector: a new one means a new context, and kopf
    gets its expiry so that it logs in again (with a new session) when it runs out."""
    pki = tmp_path / "pki"
    write_certs(pki)
    clock = Clock()
    answers = iter([("admin.crt", "admin.key"), ("server.crt", "server.key")])

    async def runner(*a: Any, **kw: Any) -> execplugin.ExecCredentialStatus:
        crt, key = next(answers)
        return execplugin.ExecCredentialStatus(
            clientCertificateData=(pki / crt).read_text(),
            clientKeyData=(pki / key).read_text(),
            expirationTimestamp=clock.now() + dt.timedelta(hours=1),
        )

    src = Exec(ExecConfig(command="p", apiVersion="v"), CLUSTER, now=clock.now, runner=runner)
    creds = credentials.Credentials(server="https://s", namespace="n", source=src, tls=Tls(ca_file=str(pki / "ca.crt")))

    async def scenario() -> None:
        ctx1, key1 = await creds.ssl_context()
        assert (await creds.ssl_context())[0] is ctx1  # cached while the certificate holds
        ctx = await creds.kopf_context()
        assert ctx.expiration == clock.now() + dt.timedelta(hours=1)
        await ctx.aiohttp_session.close()
        clock.advance(3601)
        ctx2, key2 = await creds.ssl_context()
        assert ctx2 is not ctx1 and key2 != key1

    asyncio.run(scenario())


def test_token_sessions_never_expire_for_kopf(tmp_path: Path) -> None:
    (tmp_path / "t").write_text("tok")
    creds = credentials.Credentials(server="https://s", namespace="n", source=TokenFile(tmp_path / "t"))

    async def scenario() -> None:
        ctx = await creds.kopf_context()
        assert ctx.expiration is None and ctx.server == "https://s" and ctx.default_namespace == "n"
        await ctx.aiohttp_session.close()

    asyncio.run(scenario())


def test_no_secret_in_a_repr(tmp_path: Path) -> None:
    p = write_kubeconfig(
        tmp_path / "k",
        clusters=[("c", {"server": "https://s"})],
        users=[
            (
                "u",
                {
                    "token": "s3cret-token",
                    "client-key-data": base64.b64encode(b"PRIVATE").decode(),
                    "client-certificate-data": "Y2VydA==",
                },
            )
        ],
        contexts=[("x", {"cluster": "c", "user": "u"})],
    )
    text = repr(credentials.for_cli(kubeconfig_path=str(p), context="x", environ={}))
    assert "s3cret" not in text and "PRIVATE" not in text and "https://s" in text


def test_exec_plugin_gets_the_terminal_when_it_may(plugin: Path) -> None:
    """Run under a real pseudo-terminal: IfAvailable hands the plugin our stdin, Never does not."""
    import pty

    code = (
        "import asyncio, sys; from nightshift.infra import execplugin; from nightshift.infra.kubeconfig import *; "
        "cfg = ExecConfig.model_validate_json(sys.argv[1]); "
        "print(asyncio.run(execplugin.run(cfg, Cluster(server='https://s'))).token)"
    )
    for mode, tty in (("IfAvailable", True), ("Never", False)):
        cfg = exec_config(plugin, interactiveMode=mode)
        leader, follower = pty.openpty()
        try:
            out = subprocess.run(
                [sys.executable, "-c", code, cfg.model_dump_json(by_alias=True)],
                stdin=follower,
                capture_output=True,
                text=True,
                timeout=60,
            )
        finally:
            os.close(leader)
            os.close(follower)
        assert out.returncode == 0, out.stderr
        assert out.stdout.strip() == "tok-1"
        run = plugin_runs(plugin.parent / "runs.log")[-1]
        assert (run["stdin_tty"], run["info"]["spec"]["interactive"]) == (tty, tty)


def test_rotated_certificate_files_make_a_new_tls_context(tmp_path: Path) -> None:
    one, two = tmp_path / "one", tmp_path / "two"
    write_certs(one)
    write_certs(two)
    live = tmp_path / "live"
    live.mkdir()
    for name in ("admin.crt", "admin.key", "ca.crt"):
        (live / name).write_bytes((one / name).read_bytes())
    tls = Tls(ca_file=str(live / "ca.crt"), cert_file=str(live / "admin.crt"), key_file=str(live / "admin.key"))
    creds = credentials.Credentials(server="https://s", namespace="n", source=credentials.Static(Credential()), tls=tls)

    async def scenario() -> None:
        ctx1, key1 = await creds.ssl_context()
        assert (await creds.ssl_context()) == (ctx1, key1)
        for name in ("admin.crt", "admin.key"):  # cert-manager style: new files moved into place
            (live / f"{name}.new").write_bytes((two / name).read_bytes())
            os.replace(live / f"{name}.new", live / name)
        ctx2, key2 = await creds.ssl_context()
        assert ctx2 is not ctx1 and key2 != key1

    asyncio.run(scenario())
