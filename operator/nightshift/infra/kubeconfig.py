"""kubeconfig files as kubectl reads them: which files, how they merge, which context is chosen.

The rules are client-go's (`clientcmd.ClientConfigLoadingRules`), so a user's `kubectl` and
`nightshift` agree on where they point:

- `--kubeconfig FILE` reads that one file, which must exist;
- else every file in `KUBECONFIG` (`:`-separated; missing files are skipped, an entry seen twice
  counts once), else `~/.kube/config`;
- clusters, users and contexts merge by name, the first file to define a name wins; the first file
  that sets `current-context` wins;
- relative paths in a file (certificate files, `tokenFile`, an exec `command` that contains a `/`)
  are relative to that file's folder;
- `--context` chooses the context, else `current-context`; the namespace is `-n`, else the
  context's, else `default`.

Pure apart from reading the files it is given; nothing here touches the network.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError


class CredentialsError(Exception):
    """No usable way to reach and authenticate to the API server; the message is for users."""


class KubeconfigError(CredentialsError):
    """A kubeconfig that cannot be used, said in the words kubectl users know."""


class _Model(BaseModel):
    model_config = ConfigDict(populate_by_name=True, extra="ignore", frozen=True)


class NamedExtension(_Model):
    name: str
    extension: Any = None


class Cluster(_Model):
    server: str = ""
    certificate_authority: str | None = Field(None, alias="certificate-authority")
    certificate_authority_data: str | None = Field(None, alias="certificate-authority-data")
    insecure_skip_tls_verify: bool = Field(False, alias="insecure-skip-tls-verify")
    tls_server_name: str | None = Field(None, alias="tls-server-name")
    proxy_url: str | None = Field(None, alias="proxy-url")
    disable_compression: bool = Field(False, alias="disable-compression")
    extensions: list[NamedExtension] = []


class ExecEnvVar(_Model):
    name: str
    value: str


class ExecConfig(_Model):
    """`users[].user.exec`: a credential plugin (aws eks get-token, gke-gcloud-auth-plugin, kubelogin, ...)."""

    command: str
    args: list[str] = []
    env: list[ExecEnvVar] | None = None
    api_version: str = Field("", alias="apiVersion")
    install_hint: str | None = Field(None, alias="installHint")
    provide_cluster_info: bool = Field(False, alias="provideClusterInfo")
    interactive_mode: Literal["Never", "IfAvailable", "Always"] | None = Field(None, alias="interactiveMode")


class AuthInfo(_Model):
    client_certificate: str | None = Field(None, alias="client-certificate")
    client_certificate_data: str | None = Field(None, alias="client-certificate-data")
    client_key: str | None = Field(None, alias="client-key")
    client_key_data: str | None = Field(None, alias="client-key-data")
    token: str | None = None
    token_file: str | None = Field(None, alias="tokenFile")
    username: str | None = None
    password: str | None = None
    impersonate: str | None = Field(None, alias="as")
    impersonate_groups: list[str] = Field([], alias="as-groups")
    exec: ExecConfig | None = None
    auth_provider: dict[str, Any] | None = Field(None, alias="auth-provider")


class Context(_Model):
    cluster: str = ""
    user: str = ""
    namespace: str | None = None


class Kubeconfig(_Model):
    """The merged view of one or more files: entries by name, first definition wins."""

    clusters: dict[str, Cluster] = {}
    users: dict[str, AuthInfo] = {}
    contexts: dict[str, Context] = {}
    current_context: str = ""
    files: tuple[Path, ...] = ()


class Selected(_Model):
    """What one context points at: the cluster, the user and the namespace to use."""

    context: str
    cluster_name: str
    cluster: Cluster
    user_name: str
    user: AuthInfo
    namespace: str
    namespace_explicit: bool  # set by -n or the context (kubectl's "namespace from context")


def default_paths(environ: Mapping[str, str]) -> list[Path]:
    """KUBECONFIG's entries in order (duplicates dropped), else ~/.kube/config."""
    value = environ.get("KUBECONFIG", "")
    if value:
        seen: list[Path] = []
        for entry in value.split(os.pathsep):
            if entry and Path(entry).expanduser() not in seen:
                seen.append(Path(entry).expanduser())
        return seen
    home = environ.get("HOME") or str(Path.home())
    return [Path(home) / ".kube" / "config"]


def load(explicit: str | os.PathLike[str] | None, environ: Mapping[str, str]) -> Kubeconfig:
    """The merged kubeconfig: the `--kubeconfig` file alone, else KUBECONFIG's files, else ~/.kube/config."""
    if explicit:
        path = Path(explicit).expanduser()
        if not path.is_file():
            raise KubeconfigError(f"kubeconfig {path} does not exist")
        return merge([(path, _read(path))])
    docs = [(p, _read(p)) for p in default_paths(environ) if p.is_file()]
    return merge(docs)


def _read(path: Path) -> Mapping[str, Any]:
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as e:
        raise KubeconfigError(f"kubeconfig {path}: {e}") from e
    if not isinstance(data, dict):
        raise KubeconfigError(f"kubeconfig {path}: not a mapping")
    return data


def merge(docs: Sequence[tuple[Path, Mapping[str, Any]]]) -> Kubeconfig:
    """client-go's merge: per name the first file wins, and so does the first current-context."""
    clusters: dict[str, Cluster] = {}
    users: dict[str, AuthInfo] = {}
    contexts: dict[str, Context] = {}
    current = ""
    for path, doc in docs:
        base = path.resolve().parent
        try:
            for name, cluster in _named(doc, "clusters", "cluster"):
                clusters.setdefault(name, _resolve_cluster(Cluster.model_validate(cluster), base))
            for name, user in _named(doc, "users", "user"):
                users.setdefault(name, _resolve_user(AuthInfo.model_validate(user), base))
            for name, ctx in _named(doc, "contexts", "context"):
                contexts.setdefault(name, Context.model_validate(ctx))
        except ValidationError as e:
            raise KubeconfigError(f"kubeconfig {path}: {_first_error(e)}") from e
        if not current and doc.get("current-context"):
            current = str(doc["current-context"])
    return Kubeconfig(
        clusters=clusters,
        users=users,
        contexts=contexts,
        current_context=current,
        files=tuple(p for p, _ in docs),
    )


def _named(doc: Mapping[str, Any], key: str, inner: str) -> list[tuple[str, Mapping[str, Any]]]:
    out = []
    for entry in doc.get(key) or []:
        if isinstance(entry, dict) and entry.get("name"):
            out.append((str(entry["name"]), entry.get(inner) or {}))
    return out


def _first_error(e: ValidationError) -> str:
    err = e.errors()[0]
    return f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}"


def _abs(value: str | None, base: Path) -> str | None:
    if not value:
        return value
    p = Path(value).expanduser()
    return str(p if p.is_absolute() else base / p)


def _resolve_cluster(c: Cluster, base: Path) -> Cluster:
    return c.model_copy(update={"certificate_authority": _abs(c.certificate_authority, base)})


def _resolve_user(u: AuthInfo, base: Path) -> AuthInfo:
    update: dict[str, Any] = {
        "client_certificate": _abs(u.client_certificate, base),
        "client_key": _abs(u.client_key, base),
        "token_file": _abs(u.token_file, base),
    }
    if u.exec is not None and os.sep in u.exec.command and not Path(u.exec.command).is_absolute():
        update["exec"] = u.exec.model_copy(update={"command": str(base / u.exec.command)})
    return u.model_copy(update=update)


def select(config: Kubeconfig, context: str | None = None, namespace: str | None = None) -> Selected:
    """The context to use (`--context`, else current-context) with its cluster, user and namespace."""
    name = context or config.current_context
    if not name:
        where = ", ".join(str(f) for f in config.files) or "no kubeconfig file found"
        raise KubeconfigError(f"no context chosen: give --context or set current-context ({where})")
    ctx = config.contexts.get(name)
    if ctx is None:
        raise KubeconfigError(f'context "{name}" does not exist in the kubeconfig')
    cluster = config.clusters.get(ctx.cluster)
    if cluster is None or not cluster.server:
        raise KubeconfigError(f'context "{name}": cluster "{ctx.cluster}" has no server')
    user = config.users.get(ctx.user, AuthInfo())
    ns = namespace or ctx.namespace
    return Selected(
        context=name,
        cluster_name=ctx.cluster,
        cluster=cluster,
        user_name=ctx.user,
        user=user,
        namespace=ns or "default",
        namespace_explicit=bool(ns),
    )
