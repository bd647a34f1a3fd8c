"""Credentials as kubectl has them, for the CLI, the operator and kopf, on one aiohttp stack.

Where they come from (`for_cli`, `for_operator`): a kubeconfig (see `kubeconfig`), or, inside a
pod, the ServiceAccount's projected token, CA and namespace. What authenticates a request is a
`Source`, asked before every request and told about every 401:

- a static token, basic auth, or nothing (client certificates only);
- `tokenFile` and the in-cluster token: re-read when the file changes (the kubelet rotates
  projected tokens, an atomic symlink swap) and at least every minute, as client-go does;
- an exec plugin (`execplugin`): its credential cached until `expirationTimestamp`, the plugin run
  again when that passes or when the server answers 401 to the credential it gave.

`Credentials.middleware` is an aiohttp client middleware that sets the header from the source and
retries a request once after a 401 when the source has something new. Both our `Kube` client and
kopf's (through `kopf_context`, a `kopf.AiohttpSession`) use sessions made here, so a rotation is
followed per request: no kopf re-login, which would stop every request meanwhile and close kopf's
session, cutting every watch (each reconnects from its resourceVersion). kopf re-logins only when a 401 survives the refresh (its vault invalidates
the session and calls the login handler), or when an exec plugin's client certificate expires:
TLS material lives in the connector, so a new certificate needs a new session, and the context
returned to kopf carries that `expiration`.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime as dt
import os
import ssl
import stat
import tempfile
import time
import warnings
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiohttp
from yarl import URL

from nightshift.infra import execplugin, kubeconfig, proxy
from nightshift.infra.kubeconfig import (
    AuthInfo,
    Cluster,
    CredentialsError,
    ExecConfig,
    KubeconfigError,
)

if TYPE_CHECKING:
    import kopf  # imported when used: the CLI never needs kopf

__all__ = ["Credentials", "CredentialsError", "for_cli", "for_operator"]

SERVICEACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
SERVICEACCOUNT_DIR_ENV = "NIGHTSHIFT_SERVICEACCOUNT_DIR"  # tests and unusual mounts point it elsewhere
TOKEN_FILE_MAX_AGE = 60.0  # seconds: re-read even when the file looks unchanged (client-go: one minute)
USER_AGENT = "nightshift"

Monotonic = Callable[[], float]
WallClock = Callable[[], dt.datetime]


def _utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@dataclass(frozen=True)
class Credential:
    """What one request is authenticated with, as a source handed it out."""

    # secrets never in a repr: a logged Credentials object must not leak them
    authorization: str | None = field(default=None, repr=False)  # the Authorization header's value
    client_cert: tuple[bytes, bytes] | None = field(default=None, repr=False)  # PEM certificate and key (exec)
    expires: dt.datetime | None = None


class Source(ABC):
    """Hands out the current credential and hears about the server refusing one."""

    gives_certs = False  # only an exec plugin hands out client certificates (which need a new session)

    @abstractmethod
    async def current(self) -> Credential: ...

    async def rejected(self, credential: Credential) -> bool:
        """The server answered 401 to `credential`; True when a retry has something new to send."""
        return False


class Static(Source):
    """A token, basic auth, or nothing: kubectl does not re-read these either."""

    def __init__(self, credential: Credential) -> None:
        self._credential = credential

    def __repr__(self) -> str:
        return "Static(<credential>)"

    async def current(self) -> Credential:
        return self._credential


class TokenFile(Source):
    """A bearer token in a file, re-read when the file changes and at least every `max_age` seconds.

    A stat per request is cheap next to the request; the periodic read covers a change the stat
    cannot see (same size and inode within the mtime's granularity).
    """

    def __init__(
        self, path: str | os.PathLike[str], *, clock: Monotonic = time.monotonic, max_age: float = TOKEN_FILE_MAX_AGE
    ) -> None:
        self.path = Path(path)
        self._clock = clock
        self._max_age = max_age
        self._stamp: tuple[int, int, int] | None = None
        self._read_at = 0.0
        self._credential: Credential | None = None
        self.reads = 0

    def _stat(self) -> tuple[int, int, int]:
        st = self.path.stat()
        return (st.st_ino, st.st_mtime_ns, st.st_size)

    def _read(self) -> Credential:
        try:
            stamp = self._stat()
            token = self.path.read_text().strip()
        except OSError as e:
            if self._credential is not None:
                return self._credential  # keep the last good token while the file is being replaced
            raise CredentialsError(f"token file {self.path}: {e.strerror or e}") from e
        self.reads += 1
        self._stamp, self._read_at = stamp, self._clock()
        if not token:
            if self._credential is not None:
                return self._credential
            raise CredentialsError(f"token file {self.path} is empty")
        self._credential = Credential(authorization=f"Bearer {token}")
        return self._credential

    async def current(self) -> Credential:
        if self._credential is None or self._clock() - self._read_at >= self._max_age:
            return self._read()
        try:
            changed = self._stat() != self._stamp
        except OSError:
            changed = False
        return self._read() if changed else self._credential

    async def rejected(self, credential: Credential) -> bool:
        return self._read() != credential


class Exec(Source):
    """An exec credential plugin, its answer cached until it expires or the server refuses it."""

    gives_certs = True

    def __init__(
        self,
        config: ExecConfig,
        cluster: Cluster,
        *,
        ca_data: bytes | None = None,
        allow_interactive: bool = True,
        now: WallClock = _utc_now,
        runner: Callable[..., Any] = execplugin.run,
    ) -> None:
        self.config = config
        self.cluster = cluster
        self._ca_data = ca_data
        self._allow_interactive = allow_interactive
        self._now = now
        self._runner = runner
        self._lock = asyncio.Lock()
        self._credential: Credential | None = None
        self.runs = 0

    def _fresh(self) -> bool:
        c = self._credential
        return c is not None and (c.expires is None or self._now() < c.expires)

    async def _run(self) -> Credential:
        status: execplugin.ExecCredentialStatus = await self._runner(
            self.config, self.cluster, ca_data=self._ca_data, allow_interactive=self._allow_interactive
        )
        self.runs += 1
        cert = None
        if status.client_certificate_data and status.client_key_data:
            cert = (status.client_certificate_data.encode(), status.client_key_data.encode())
        self._credential = Credential(
            authorization=f"Bearer {status.token}" if status.token else None,
            client_cert=cert,
            expires=status.expiration_timestamp,
        )
        return self._credential

    async def current(self) -> Credential:
        if self._fresh():
            assert self._credential is not None
            return self._credential
        async with self._lock:  # concurrent requests run the plugin once
            if self._fresh():
                assert self._credential is not None
                return self._credential
            return await self._run()

    async def rejected(self, credential: Credential) -> bool:
        async with self._lock:
            if self._credential is not credential:  # another request refreshed it already
                return self._credential is not None
            return await self._run() != credential


@dataclass(frozen=True)
class Tls:
    """The server's CA, whether to verify it, the name to verify, and a client certificate from the kubeconfig."""

    ca_file: str | None = None
    ca_data: bytes | None = None
    insecure: bool = False
    server_name: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    cert_data: bytes | None = field(default=None, repr=False)
    key_data: bytes | None = field(default=None, repr=False)

    def files_stamp(self) -> tuple[tuple[int, int], ...]:
        """Inode and mtime of the certificate files: they change when a rotation (cert-manager, the
        kubelet's own) replaces them, and a new session then loads them (client-go reloads them too)."""
        stamps = []
        for path in (self.cert_file, self.key_file, self.ca_file):
            if path:
                try:
                    st = os.stat(path)
                except OSError:
                    continue
                stamps.append((st.st_ino, st.st_mtime_ns))
        return tuple(stamps)

    def context(self, exec_cert: tuple[bytes, bytes] | None = None) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=self.ca_file, cadata=self.ca_data.decode() if self.ca_data else None)
        if self.insecure:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        cert = exec_cert or (
            (self.cert_data, self.key_data) if self.cert_data is not None and self.key_data is not None else None
        )
        if cert is not None:
            with _pem_files(*cert) as (cert_path, key_path):
                ctx.load_cert_chain(cert_path, key_path)
        elif self.cert_file and self.key_file:
            ctx.load_cert_chain(self.cert_file, self.key_file)
        return ctx


@contextlib.contextmanager
def _pem_files(cert: bytes, key: bytes) -> Iterator[tuple[str, str]]:
    """Python's ssl loads certificates only from files: a private folder that is gone right after."""
    with tempfile.TemporaryDirectory(prefix="nightshift-tls-") as d:
        os.chmod(d, stat.S_IRWXU)
        paths = (os.path.join(d, "tls.crt"), os.path.join(d, "tls.key"))
        for path, data in zip(paths, (cert, key), strict=True):
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(data)
        yield paths


@dataclass
class Credentials:
    """One API server and how to authenticate to it; shared by every session this process opens."""

    server: str
    namespace: str
    source: Source
    tls: Tls = field(default_factory=Tls)
    proxy: str | None = None
    impersonate: str | None = None  # the kubeconfig's `as` and `as-groups`
    impersonate_groups: tuple[str, ...] = ()
    origin: str = ""  # where they came from, for messages: "context x in /path", "in-cluster ServiceAccount"
    _ssl: tuple[object, ssl.SSLContext] | None = field(default=None, init=False, repr=False, compare=False)

    async def ssl_context(self) -> tuple[ssl.SSLContext, object]:
        """The TLS context for the current client certificate, and a key that changes with it."""
        cert = (await self.source.current()).client_cert if self.source.gives_certs else None
        key: object = (cert, self.tls.files_stamp())
        if self._ssl is None or self._ssl[0] != key:
            self._ssl = (key, self.tls.context(cert))
        return self._ssl[1], key

    async def middleware(
        self, req: aiohttp.ClientRequest, handler: aiohttp.ClientHandlerType
    ) -> aiohttp.ClientResponse:
        """Authenticate each request with the current credential; after a 401, refresh and retry once."""
        cred = await self.source.current()
        self._apply(req, cred)
        resp = await handler(req)
        if resp.status != 401 or not await self.source.rejected(cred):
            return resp
        fresh = await self.source.current()
        if fresh.client_cert != cred.client_cert:
            return resp  # a new certificate needs a new connection: the session's owner makes one
        resp.release()
        self._apply(req, fresh)
        return await handler(req)

    def _apply(self, req: aiohttp.ClientRequest, cred: Credential) -> None:
        if cred.authorization:
            req.headers["Authorization"] = cred.authorization
        if self.tls.server_name:
            req.server_hostname = self.tls.server_name
        if self.impersonate:
            req.headers["Impersonate-User"] = self.impersonate
            req.headers.popall("Impersonate-Group", None)  # a retry applies them again
            for group in self.impersonate_groups:
                req.headers.add("Impersonate-Group", group)

    async def session(self, *, limit: int = 32) -> tuple[aiohttp.ClientSession, object]:
        """A new session authenticated by `middleware`, and the TLS key it was made for."""
        ctx, key = await self.ssl_context()
        proxy_url, proxy_user = _proxy_auth(self.proxy)
        with warnings.catch_warnings():  # proxy_auth is deprecated for aiohttp 4, the only session-wide way in 3.x
            warnings.simplefilter("ignore", DeprecationWarning)
            proxy_auth = aiohttp.BasicAuth(*proxy_user) if proxy_user else None
            s = aiohttp.ClientSession(
                headers={"User-Agent": USER_AGENT, "Accept": "application/json"},
                connector=aiohttp.TCPConnector(ssl=ctx, limit=limit),
                timeout=aiohttp.ClientTimeout(total=None, sock_connect=10),
                proxy=proxy_url,
                proxy_auth=proxy_auth,
                middlewares=(self.middleware,),
            )
        return s, key

    async def kopf_context(self) -> kopf.AiohttpSession:
        """What kopf's login handler returns: a session of ours (kopf closes it when it invalidates it)."""
        import kopf

        s, _ = await self.session(limit=0)  # kopf holds one connection per watch: no pool limit, as kopf's own
        cred = await self.source.current()
        return kopf.AiohttpSession(
            server=self.server,
            default_namespace=self.namespace,
            aiohttp_session=s,
            expiration=cred.expires if cred.client_cert is not None else None,
        )


def _proxy_auth(proxy_url: str | None) -> tuple[str | None, tuple[str, str] | None]:
    """`http://user:pass@proxy:3128`: Go sends the user info as Proxy-Authorization; aiohttp needs it apart."""
    if not proxy_url:
        return None, None
    url = URL(proxy_url)
    if url.user is None:
        return proxy_url, None
    return str(url.with_user(None)), (url.user, url.password or "")


class ReloginBackoff:
    """How long kopf's login handler waits when it is called again soon after the last time.

    A 401 that survives our refresh sends kopf to the login handler; if the new session is refused
    too, kopf comes back at once. Waiting 1, 2, 4 ... 60 s keeps a revoked credential from turning
    into a tight loop of requests and plugin runs; a minute of quiet resets it.
    """

    def __init__(self, *, clock: Monotonic = time.monotonic, quiet: float = 60, cap: float = 60) -> None:
        self._clock = clock
        self._quiet = quiet
        self._cap = cap
        self._last: float | None = None
        self._delay = 0.0

    def next_delay(self) -> float:
        now = self._clock()
        if self._last is None or now - self._last >= self._quiet:
            self._delay = 0.0
        else:
            self._delay = min(self._cap, max(1.0, self._delay * 2))
        self._last = now + self._delay
        return self._delay


# -- where credentials come from ---------------------------------------------------------------------
def from_selected(
    sel: kubeconfig.Selected,
    *,
    environ: Mapping[str, str],
    allow_interactive: bool,
    origin: str,
    clock: Monotonic = time.monotonic,
    now: WallClock = _utc_now,
) -> Credentials:
    """Credentials for one kubeconfig context."""
    c, u = sel.cluster, sel.user
    if c.insecure_skip_tls_verify and (c.certificate_authority or c.certificate_authority_data):
        raise KubeconfigError(
            f"{origin}: a certificate authority together with insecure-skip-tls-verify is not allowed"
        )
    if u.auth_provider is not None:
        name = u.auth_provider.get("name", "?")
        raise KubeconfigError(
            f"{origin}: auth-provider {name!r} was removed from kubectl; use its exec plugin "
            "(gke-gcloud-auth-plugin, kubelogin)"
        )
    ca_data = _b64(c.certificate_authority_data, "certificate-authority-data", origin)
    tls = Tls(
        ca_file=c.certificate_authority,
        ca_data=ca_data,
        insecure=c.insecure_skip_tls_verify,
        server_name=c.tls_server_name,
        cert_file=u.client_certificate,
        key_file=u.client_key,
        cert_data=_b64(u.client_certificate_data, "client-certificate-data", origin),
        key_data=_b64(u.client_key_data, "client-key-data", origin),
    )
    if bool(tls.cert_file or tls.cert_data) != bool(tls.key_file or tls.key_data):
        raise KubeconfigError(f"{origin}: a client certificate needs both certificate and key")
    if ca_data is None and c.certificate_authority:
        try:
            ca_bytes: bytes | None = Path(c.certificate_authority).read_bytes()
        except OSError as e:
            raise KubeconfigError(f"{origin}: certificate-authority {c.certificate_authority}: {e.strerror}") from e
    else:
        ca_bytes = ca_data
    return Credentials(
        server=c.server.rstrip("/"),
        namespace=sel.namespace,
        source=_source(u, c, ca_bytes, allow_interactive=allow_interactive, clock=clock, now=now),
        tls=tls,
        proxy=proxy.for_server(c.server, c.proxy_url, environ),
        impersonate=u.impersonate,
        impersonate_groups=tuple(u.impersonate_groups),
        origin=origin,
    )


def _source(
    u: AuthInfo, c: Cluster, ca: bytes | None, *, allow_interactive: bool, clock: Monotonic, now: WallClock
) -> Source:
    """kubectl's precedence: token, then tokenFile, then an exec plugin, then basic auth."""
    if u.token:
        return Static(Credential(authorization=f"Bearer {u.token}"))
    if u.token_file:
        return TokenFile(u.token_file, clock=clock)
    if u.exec is not None:
        return Exec(u.exec, c, ca_data=ca, allow_interactive=allow_interactive, now=now)
    if u.username and u.password:
        basic = base64.b64encode(f"{u.username}:{u.password}".encode()).decode()
        return Static(Credential(authorization=f"Basic {basic}"))
    return Static(Credential())


def _b64(value: str | None, what: str, origin: str) -> bytes | None:
    if not value:
        return None
    try:
        return base64.b64decode(value, validate=False)
    except ValueError as e:
        raise KubeconfigError(f"{origin}: {what} is not base64") from e


def in_cluster(environ: Mapping[str, str], *, clock: Monotonic = time.monotonic) -> Credentials | None:
    """The pod's ServiceAccount (KUBERNETES_SERVICE_HOST/PORT and the projected token), or None outside a pod."""
    host, port = environ.get("KUBERNETES_SERVICE_HOST"), environ.get("KUBERNETES_SERVICE_PORT")
    folder = Path(environ.get(SERVICEACCOUNT_DIR_ENV) or SERVICEACCOUNT_DIR)
    token = folder / "token"
    if not host or not port or not token.is_file():
        return None
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    ns_file = folder / "namespace"
    namespace = ns_file.read_text().strip() if ns_file.is_file() else "default"
    ca = folder / "ca.crt"
    server = f"https://{host}:{port}"
    return Credentials(
        server=server,
        namespace=namespace or "default",
        source=TokenFile(token, clock=clock),
        tls=Tls(ca_file=str(ca) if ca.is_file() else None),
        proxy=proxy.for_server(server, None, environ),
        origin=f"in-cluster ServiceAccount ({folder})",
    )


def from_kubeconfig(
    path: str | os.PathLike[str] | None,
    context: str | None,
    environ: Mapping[str, str],
    *,
    namespace: str | None = None,
    allow_interactive: bool = True,
) -> Credentials:
    config = kubeconfig.load(path, environ)
    sel = kubeconfig.select(config, context, namespace)
    files = ", ".join(str(f) for f in config.files)
    return from_selected(
        sel, environ=environ, allow_interactive=allow_interactive, origin=f'context "{sel.context}" ({files})'
    )


def for_cli(
    *,
    kubeconfig_path: str | None = None,
    context: str | None = None,
    namespace: str | None = None,
    environ: Mapping[str, str] | None = None,
) -> Credentials:
    """kubectl's order: --kubeconfig, else KUBECONFIG or ~/.kube/config; in a pod with none of those, its ServiceAccount."""
    env = os.environ if environ is None else environ
    if not kubeconfig_path and not context:
        paths = kubeconfig.default_paths(env)
        if not any(p.is_file() for p in paths):
            found = in_cluster(env)
            if found is not None:
                if namespace:
                    found.namespace = namespace
                return found
            raise CredentialsError(
                f"no kubeconfig ({', '.join(str(p) for p in paths)}): give --kubeconfig or set KUBECONFIG"
            )
    return from_kubeconfig(kubeconfig_path, context, env, namespace=namespace)


def for_operator(environ: Mapping[str, str] | None = None) -> Credentials:
    """The ServiceAccount when in a pod, else the kubeconfig (KUBECONFIG, NIGHTSHIFT_CONTEXT); never interactive."""
    env = os.environ if environ is None else environ
    found = in_cluster(env)
    if found is not None:
        return found
    return from_kubeconfig(None, env.get("NIGHTSHIFT_CONTEXT") or None, env, allow_interactive=False)
