"""Which proxy reaches the API server: the kubeconfig's `proxy-url`, else the environment, as Go does.

kubectl uses the cluster's `proxy-url` for every request when it is set; otherwise Go's
`http.ProxyFromEnvironment`: `HTTPS_PROXY` (or `https_proxy`) for https servers, `HTTP_PROXY` for
http ones, unless `NO_PROXY` matches. Python's own `urllib` rules differ (no CIDR entries, and they
proxy loopback), so this follows Go's `httpproxy` package instead:

- `localhost` and loopback addresses are never proxied from the environment;
- `NO_PROXY` is a comma list: `*` (nothing proxied), an IP, a CIDR (`10.0.0.0/8`), a host name
  (`example.com` matches it and its subdomains), `.example.com` or `*.example.com` (subdomains
  only), each optionally with `:port`;
- a proxy given without a scheme is `http://`.

aiohttp tunnels https through http and https proxies with CONNECT; SOCKS is not supported.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from urllib.parse import urlsplit

from nightshift.infra.kubeconfig import CredentialsError


class ProxyError(CredentialsError):
    """A proxy this client cannot use."""


def _env(environ: Mapping[str, str], name: str) -> str:
    return environ.get(name.upper()) or environ.get(name.lower()) or ""


def for_server(server: str, proxy_url: str | None, environ: Mapping[str, str]) -> str | None:
    """The proxy URL for requests to `server`, or None to connect directly."""
    if proxy_url:
        return _checked(proxy_url)
    url = urlsplit(server)
    scheme = (url.scheme or "https").lower()
    proxy = _env(environ, "https_proxy") if scheme == "https" else _env(environ, "http_proxy")
    if not proxy:
        return None
    host = (url.hostname or "").lower()
    port = str(url.port or (443 if scheme == "https" else 80))
    if not use_proxy(host, port, _env(environ, "no_proxy")):
        return None
    return _checked(proxy if "://" in proxy else f"http://{proxy}")


def _checked(proxy: str) -> str:
    scheme = urlsplit(proxy).scheme.lower()
    if scheme not in ("http", "https"):
        raise ProxyError(f"proxy {proxy}: scheme {scheme!r} is not supported (http or https only)")
    return proxy


def use_proxy(host: str, port: str, no_proxy: str) -> bool:
    """Go's httpproxy.Config.useProxy for one host and port."""
    if host == "localhost":
        return False
    ip = _ip(host)
    if ip is not None and ip.is_loopback:
        return False
    for raw in no_proxy.split(","):
        entry = raw.strip().lower()
        if not entry:
            continue
        if entry == "*":
            return False
        if "/" in entry:
            try:
                net = ipaddress.ip_network(entry, strict=False)
            except ValueError:
                continue
            if ip is not None and ip in net:
                return False
            continue
        e_host, e_port = _split_host_port(entry)
        e_ip = _ip(e_host)
        if e_ip is not None:
            if ip == e_ip and (not e_port or e_port == port):
                return False
            continue
        if not e_host:
            continue
        if e_host.startswith("*"):
            e_host = e_host[1:]
        exact = not e_host.startswith(".")
        suffix = e_host if e_host.startswith(".") else "." + e_host
        if (host.endswith(suffix) or (exact and host == suffix[1:])) and (not e_port or e_port == port):
            return False
    return True


def _ip(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None


def _split_host_port(entry: str) -> tuple[str, str]:
    if entry.startswith("["):  # [::1]:443
        host, _, rest = entry[1:].partition("]")
        return host, rest[1:] if rest.startswith(":") else ""
    if entry.count(":") == 1:
        host, _, port = entry.partition(":")
        return host, port
    return entry, ""  # a host, or a bare IPv6 address
