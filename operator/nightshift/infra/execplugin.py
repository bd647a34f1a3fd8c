"""Exec credential plugins (client.authentication.k8s.io v1 and v1beta1), as client-go runs them.

This is how the kubeconfigs of EKS (`aws eks get-token`), GKE (`gke-gcloud-auth-plugin`), AKS and
OIDC (`kubelogin`) authenticate: the client runs a command and reads an ExecCredential from its
stdout. What client-go does and so does this:

- the environment is ours plus `exec.env`, and `KUBERNETES_EXEC_INFO` holds an ExecCredential whose
  `spec.interactive` says whether the plugin may prompt (and `spec.cluster` when
  `provideClusterInfo` is set);
- `interactiveMode` (v1 requires it; v1beta1 defaults to IfAvailable): the plugin gets our stdin
  only when it is a terminal and the mode allows it; `Always` without a terminal is an error; the
  operator never runs one interactively;
- stderr goes to ours (plugins print prompts and warnings there);
- the answer must be an ExecCredential of the same apiVersion with a token or a client certificate
  and key; `expirationTimestamp`, when given, is when the caller must run it again.

The plugin runs as an asyncio subprocess, so the event loop is never blocked while it works.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import json
import os
import sys
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from nightshift.infra.kubeconfig import Cluster, CredentialsError, ExecConfig

API_VERSIONS = ("client.authentication.k8s.io/v1", "client.authentication.k8s.io/v1beta1")
CLUSTER_CONFIG_EXTENSION = "client.authentication.k8s.io/exec"


class ExecPluginError(CredentialsError):
    """A plugin that could not be run or gave no usable credential."""


class ExecCredentialStatus(BaseModel):
    model_config = ConfigDict(populate_by_name=True, extra="ignore", frozen=True)

    token: str | None = None
    client_certificate_data: str | None = Field(None, alias="clientCertificateData")
    client_key_data: str | None = Field(None, alias="clientKeyData")
    expiration_timestamp: dt.datetime | None = Field(None, alias="expirationTimestamp")


class ExecCredential(BaseModel):
    model_config = ConfigDict(populate_by_name=True, extra="ignore", frozen=True)

    api_version: str = Field(alias="apiVersion")
    kind: str
    status: ExecCredentialStatus | None = None


def interactive(config: ExecConfig, stdin_is_tty: bool) -> bool:
    """Whether the plugin gets a terminal; raises for `Always` without one (client-go's rule)."""
    mode = config.interactive_mode or ("IfAvailable" if config.api_version.endswith("v1beta1") else None)
    if mode is None:
        raise ExecPluginError(f"exec plugin {config.command}: interactiveMode must be set for {config.api_version}")
    if mode == "Never":
        return False
    if mode == "Always" and not stdin_is_tty:
        raise ExecPluginError(
            f"exec plugin {config.command} needs a terminal (interactiveMode: Always) and stdin is not one"
        )
    return stdin_is_tty


def exec_info(config: ExecConfig, cluster: Cluster, *, is_interactive: bool, ca_data: bytes | None) -> dict[str, Any]:
    """The KUBERNETES_EXEC_INFO ExecCredential the plugin reads."""
    spec: dict[str, Any] = {"interactive": is_interactive}
    if config.provide_cluster_info:
        info: dict[str, Any] = {"server": cluster.server}
        if cluster.tls_server_name:
            info["tls-server-name"] = cluster.tls_server_name
        if cluster.insecure_skip_tls_verify:
            info["insecure-skip-tls-verify"] = True
        if ca_data:
            info["certificate-authority-data"] = base64.b64encode(ca_data).decode()
        if cluster.proxy_url:
            info["proxy-url"] = cluster.proxy_url
        if cluster.disable_compression:
            info["disable-compression"] = True
        ext = next((e.extension for e in cluster.extensions if e.name == CLUSTER_CONFIG_EXTENSION), None)
        if ext is not None:
            info["config"] = ext
        spec["cluster"] = info
    return {"apiVersion": config.api_version, "kind": "ExecCredential", "spec": spec}


def environment(config: ExecConfig, base: Mapping[str, str], info: Mapping[str, Any]) -> dict[str, str]:
    env = dict(base)
    for var in config.env or ():
        env[var.name] = var.value
    env["KUBERNETES_EXEC_INFO"] = json.dumps(info)
    return env


def parse(config: ExecConfig, stdout: bytes) -> ExecCredentialStatus:
    """The plugin's answer, checked as client-go checks it."""
    try:
        cred = ExecCredential.model_validate_json(stdout)
    except ValidationError as e:
        raise ExecPluginError(f"exec plugin {config.command}: not an ExecCredential: {e.errors()[0]['msg']}") from e
    if cred.kind != "ExecCredential":
        raise ExecPluginError(f"exec plugin {config.command}: kind {cred.kind!r}, want ExecCredential")
    if cred.api_version != config.api_version:
        raise ExecPluginError(
            f"exec plugin {config.command}: answered {cred.api_version}, the kubeconfig asks for {config.api_version}"
        )
    st = cred.status
    if st is None:
        raise ExecPluginError(f"exec plugin {config.command}: no status in its answer")
    if bool(st.client_certificate_data) != bool(st.client_key_data):
        raise ExecPluginError(f"exec plugin {config.command}: a client certificate needs both certificate and key")
    if not st.token and not st.client_certificate_data:
        raise ExecPluginError(f"exec plugin {config.command}: neither a token nor a client certificate")
    if st.expiration_timestamp is not None and st.expiration_timestamp.tzinfo is None:
        st = st.model_copy(update={"expiration_timestamp": st.expiration_timestamp.replace(tzinfo=dt.UTC)})
    return st


async def run(
    config: ExecConfig,
    cluster: Cluster,
    *,
    ca_data: bytes | None = None,
    allow_interactive: bool = True,
    environ: Mapping[str, str] | None = None,
    timeout: float = 120,
) -> ExecCredentialStatus:
    """Run the plugin once and return its credential (the caller caches it)."""
    if config.api_version not in API_VERSIONS:
        raise ExecPluginError(
            f"exec plugin {config.command}: apiVersion {config.api_version!r} is not supported "
            f"(use {' or '.join(API_VERSIONS)})"
        )
    tty = allow_interactive and _stdin_is_tty()
    is_interactive = interactive(config, tty)
    info = exec_info(config, cluster, is_interactive=is_interactive, ca_data=ca_data)
    env = environment(config, os.environ if environ is None else environ, info)
    try:
        proc = await asyncio.create_subprocess_exec(
            config.command,
            *config.args,
            env=env,
            stdin=None if is_interactive else asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=None,  # ours: plugins print prompts and warnings there
        )
    except FileNotFoundError as e:
        hint = f"\n{config.install_hint}" if config.install_hint else ""
        raise ExecPluginError(f"exec plugin {config.command}: not found{hint}") from e
    except PermissionError as e:
        raise ExecPluginError(f"exec plugin {config.command}: not executable") from e
    try:  # a plugin at a terminal may wait for a browser login or a prompt: no deadline then
        stdout, _ = await asyncio.wait_for(proc.communicate(), None if is_interactive else timeout)
    except TimeoutError as e:
        proc.kill()
        await proc.wait()
        raise ExecPluginError(f"exec plugin {config.command}: no answer within {timeout:.0f}s") from e
    if proc.returncode != 0:
        raise ExecPluginError(f"exec plugin {config.command}: exit code {proc.returncode}")
    return parse(config, stdout)


def _stdin_is_tty() -> bool:
    try:
        return sys.stdin is not None and sys.stdin.isatty()
    except (ValueError, OSError):
        return False
