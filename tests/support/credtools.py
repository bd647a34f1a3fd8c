"""Test tooling for credentials: a real exec credential plugin and a real HTTP CONNECT proxy.

`write_plugin` writes an executable plugin script that answers like `aws eks get-token` does: it
reads the token to hand out from a file (so a test can rotate it), may add an expirationTimestamp,
and appends one JSON line per run to a log (its argv, the env it saw and KUBERNETES_EXEC_INFO), so
tests can see each run and what the client passed.

`ConnectProxy` is a small asyncio HTTP proxy on loopback, in a thread of its own: it tunnels
CONNECT requests, records their targets, resolves names it is given (so a test can use a server
name that no DNS knows), and can cut every open tunnel (a dropped connection clients must
recover from).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import sys
import threading
from pathlib import Path
from typing import Any

PLUGIN = '''\
#!{python}
"""An exec credential plugin for tests: token from $PLUGIN_TOKEN_FILE, one log line per run."""
import datetime, json, os, sys
log = os.environ.get("PLUGIN_LOG")
if log:
    with open(log, "a") as f:
        f.write(json.dumps({{"argv": sys.argv[1:], "env": {{k: v for k, v in os.environ.items() if k.startswith("PLUGIN_")}},
                            "info": json.loads(os.environ.get("KUBERNETES_EXEC_INFO", "null")),
                            "stdin_tty": sys.stdin.isatty() if sys.stdin else None}}) + "\\n")
if os.environ.get("PLUGIN_FAIL"):
    print("plugin: told to fail", file=sys.stderr)
    sys.exit(int(os.environ["PLUGIN_FAIL"]))
status = {{}}
if os.environ.get("PLUGIN_CERT_FILE"):
    status["clientCertificateData"] = open(os.environ["PLUGIN_CERT_FILE"]).read()
    status["clientKeyData"] = open(os.environ["PLUGIN_KEY_FILE"]).read()
else:
    status["token"] = open(os.environ["PLUGIN_TOKEN_FILE"]).read().strip()
ttl = os.environ.get("PLUGIN_TTL_SECONDS")
if ttl:
    exp = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(seconds=float(ttl))
    status["expirationTimestamp"] = exp.strftime("%Y-%m-%dT%H:%M:%SZ")
version = os.environ.get("PLUGIN_ANSWER_VERSION") or json.loads(os.environ["KUBERNETES_EXEC_INFO"])["apiVersion"]
print(json.dumps({{"apiVersion": version, "kind": "ExecCredential", "status": status}}))
'''


def write_plugin(path: Path) -> Path:
    path.write_text(PLUGIN.format(python=sys.executable))
    path.chmod(0o755)
    return path


def plugin_runs(log: Path) -> list[dict[str, Any]]:
    if not log.exists():
        return []
    return [json.loads(line) for line in log.read_text().splitlines() if line.strip()]


class ConnectProxy:
    """An HTTP CONNECT proxy on 127.0.0.1 in its own thread and event loop."""

    def __init__(self, hosts: dict[str, str] | None = None, auth: tuple[str, str] | None = None) -> None:
        self.hosts = hosts or {}  # names the proxy resolves itself (the client never looks them up)
        self.auth = auth  # (user, password) the proxy demands in Proxy-Authorization, else 407
        self.refused = 0
        self.port = 0
        self.tunnels: list[str] = []  # the CONNECT targets, in order
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="connect-proxy", daemon=True)
        self._server: asyncio.Server | None = None
        self._open: set[asyncio.StreamWriter] = set()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> ConnectProxy:
        self._thread.start()
        self._server = asyncio.run_coroutine_threadsafe(
            asyncio.start_server(self._client, "127.0.0.1", 0), self._loop
        ).result(10)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    def __exit__(self, *exc: object) -> None:
        async def stop() -> None:
            assert self._server is not None
            self._server.close()
            self._cut()

        asyncio.run_coroutine_threadsafe(stop(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    def cut(self) -> int:
        """Close every open tunnel; returns how many there were."""

        async def do() -> int:
            return self._cut()

        return asyncio.run_coroutine_threadsafe(do(), self._loop).result(10)

    def _cut(self) -> int:
        n = len(self._open)
        for w in list(self._open):
            w.transport.abort()
        self._open.clear()
        return n

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            writer.close()
            return
        first, *lines = head.decode().split("\r\n")
        method, target, _ = first.split(" ", 2)
        if self.auth is not None:
            want = "Basic " + base64.b64encode(":".join(self.auth).encode()).decode()
            given = [v.strip() for k, _, v in (ln.partition(":") for ln in lines) if k.lower() == "proxy-authorization"]
            if given != [want]:
                self.refused += 1
                writer.write(b"HTTP/1.1 407 Proxy Authentication Required\r\nContent-Length: 0\r\n\r\n")
                writer.close()
                return
        if method != "CONNECT":
            writer.write(b"HTTP/1.1 405 Method Not Allowed\r\nContent-Length: 0\r\n\r\n")
            writer.close()
            return
        host, _, port = target.rpartition(":")
        try:
            address = self.hosts.get(host, host.strip("[]"))
            up_reader, up_writer = await asyncio.open_connection(address, int(port))
        except OSError:
            writer.write(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n")
            writer.close()
            return
        self.tunnels.append(target)
        writer.write(b"HTTP/1.1 200 Connection Established\r\n\r\n")
        self._open.update((writer, up_writer))

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError, asyncio.IncompleteReadError):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            with contextlib.suppress(OSError):
                dst.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        self._open.discard(writer)
        self._open.discard(up_writer)
