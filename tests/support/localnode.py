"""A local node for the test control plane: pods bound to it run as local processes (test and demo tooling).

It is a tiny kubelet: it registers a Node, watches the pods bound to it, runs each container's
command and args as a process of this machine (``python`` is this environment's interpreter, so the
job image is this project's own code), resolves env from values, Secrets, ConfigMaps and the
downward API, and writes phase and container state (exit code, reason, termination message) through
pods/status. Deleting a pod sends SIGTERM and, after the grace period, SIGKILL. Output is kept per
pod and served on the kubelet endpoint, so `kubectl logs` works. Nothing here isolates anything: it
is not a container runtime and must never run untrusted pods.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import datetime as dt
import logging
import os
import re
import signal
import ssl
import sys
from collections.abc import Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from nightshift.infra.kube import CONFIGMAPS, NODES, PODS, SECRETS, ApiError, Kube, Obj
from tests.support.procs import die_with_parent

log = logging.getLogger("localnode")
_VAR = re.compile(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)")
MAX_MESSAGE = 4096


def now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class RunningPod:
    uid: str
    namespace: str
    name: str
    directory: Path
    proc: asyncio.subprocess.Process | None = None
    task: asyncio.Task[None] | None = None
    killing: bool = False
    extra: dict[str, Any] = field(default_factory=dict)


class LocalNode:
    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    def __init__(self, kube: Kube, name: str, workdir: Path, ca_dir: Path | None) -> None:
        self.kube = kube
        self.name = name
        self.workdir = workdir
        self.tasks: set[asyncio.Task[None]] = set()  # background tasks stay referenced until they end
        self.ca_dir = ca_dir
        self.pods: dict[str, RunningPod] = {}
        self.port = 0

    # -- node registration ------------------------------------------------------------------------
    async def register(self) -> None:
        node = {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {"name": self.name, "labels": {"kubernetes.io/hostname": self.name, "type": "local"}},
        }
        try:
            await self.kube.create(NODES, node)
        except ApiError as e:
            if not e.conflict:
                raise
        await self.heartbeat()

    async def heartbeat(self) -> None:
        ts = now()
        status = {
            "conditions": [
                {
                    "type": "Ready",
                    "status": "True",
                    "reason": "KubeletReady",
                    "message": "local node (test tooling)",
                    "lastHeartbeatTime": ts,
                    "lastTransitionTime": ts,
                },
            ],
            "addresses": [
                {"type": "InternalIP", "address": "127.0.0.1"},
                {"type": "Hostname", "address": self.name},
            ],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": self.port}},
            "capacity": {"cpu": "64", "memory": "64Gi", "pods": "500"},
            "allocatable": {"cpu": "64", "memory": "64Gi", "pods": "500"},
            "nodeInfo": {
                "architecture": "amd64",
                "operatingSystem": "linux",
                "kubeletVersion": "nightshift-localnode",
                "containerRuntimeVersion": "local-process://0",
                "machineID": "",
                "systemUUID": "",
                "bootID": "",
                "kernelVersion": "",
                "osImage": "",
                "kubeProxyVersion": "",
            },
        }
        await self.kube.patch(NODES, self.name, {"status": status}, sub="status")

    # -- pod watching -------------------------------------------------------------------------------
    async def run(self) -> None:
        await self.start_log_server()
        await self.register()
        self._spawn(self._heartbeats())
        selector = f"spec.nodeName={self.name}"
        while True:
            try:
                page = await self.kube.request("GET", PODS.path(), params={"fieldSelector": selector})
                for pod in page["items"]:
                    await self.on_pod(pod)
                rv = page["metadata"]["resourceVersion"]
                while True:
                    async for kind, pod in self.kube.watch(PODS, field_selector=selector, resource_version=rv):
                        rv = pod["metadata"].get("resourceVersion", rv)
                        if kind != "BOOKMARK":
                            await self.on_pod(pod, deleted=kind == "DELETED")
            except ApiError as e:
                if e.status != 410:
                    log.warning("watch failed: %s", e)
                    await asyncio.sleep(1)
            except (TimeoutError, OSError, aiohttp.ClientError) as e:
                # An API server restart (the outage tests) ends the stream with a disconnect, which
                # aiohttp raises as a ClientError that is no OSError: the node listed again, not died.
                log.warning("watch interrupted: %s", e)
                await asyncio.sleep(1)

    async def _heartbeats(self) -> None:
        while True:
            await asyncio.sleep(30)
            with contextlib.suppress(Exception):
                await self.heartbeat()

    async def on_pod(self, pod: Obj, deleted: bool = False) -> None:
        md = pod["metadata"]
        uid = md["uid"]
        running = self.pods.get(uid)
        if deleted:
            if running:
                await self.kill(running, 0)
            return
        if md.get("deletionTimestamp"):
            if running and not running.killing:
                running.killing = True
                grace = md.get("deletionGracePeriodSeconds", 30)
                self._spawn(self.terminate_and_remove(running, pod, grace))
            elif not running:
                await self.remove(pod)
            return
        if running or pod.get("status", {}).get("phase") in ("Succeeded", "Failed"):
            return
        directory = self.workdir / f"{md['namespace']}_{md['name']}_{uid[:8]}"
        running = RunningPod(uid, md["namespace"], md["name"], directory)
        self.pods[uid] = running
        running.task = asyncio.create_task(self.run_pod(running, pod))

    async def remove(self, pod: Obj) -> None:
        md = pod["metadata"]
        with contextlib.suppress(ApiError):
            await self.kube.request(
                "DELETE",
                PODS.path(md["namespace"], md["name"]),
                body={
                    "kind": "DeleteOptions",
                    "apiVersion": "v1",
                    "gracePeriodSeconds": 0,
                    "preconditions": {"uid": md["uid"]},
                },
            )

    async def terminate_and_remove(self, running: RunningPod, pod: Obj, grace: int) -> None:
        await self.kill(running, grace)
        if running.task:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(running.task, 10)
        await self.remove(pod)
        self.pods.pop(running.uid, None)

    async def kill(self, running: RunningPod, grace: float) -> None:
        proc = running.proc
        if proc is None or proc.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), timeout=max(grace, 0.1))
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)

    # -- running a pod ------------------------------------------------------------------------------
    async def run_pod(self, running: RunningPod, pod: Obj) -> None:
        spec = pod["spec"]
        container = spec["containers"][0]
        running.directory.mkdir(parents=True, exist_ok=True)
        (running.directory / "tmp").mkdir(exist_ok=True)
        log_path = running.directory / f"{container['name']}.log"
        term_path = running.directory / "termination-log"
        started = now()
        try:
            env = await self.resolve_env(pod, container)
        except (ApiError, KeyError) as e:
            await self.set_waiting(pod, container, "CreateContainerConfigError", str(e))
            self.pods.pop(running.uid, None)  # a later event retries, like the kubelet
            return
        argv = [
            _VAR.sub(lambda m: env.get(m.group(1), m.group(0)), a)
            for a in [*container.get("command", []), *container.get("args", [])]
        ]
        if not argv:
            await self.finish(
                pod,
                container,
                started,
                128,
                "ContainerCannotRun",
                "no command: the local node runs no image entrypoints",
            )
            return
        if argv[0] in ("python", "python3") or argv[0].startswith("/usr/local/bin/python"):
            argv[0] = sys.executable
        base = {k: v for k, v in os.environ.items() if k in ("PATH", "LANG", "LC_ALL", "VIRTUAL_ENV", "PYTHONPATH")}
        env = {
            **base,
            "HOME": str(running.directory),
            "TMPDIR": str(running.directory / "tmp"),
            "HOSTNAME": pod["metadata"]["name"],
            **env,
            "NIGHTSHIFT_TERMINATION_LOG": str(term_path),
        }
        with open(log_path, "ab") as out:
            try:
                running.proc = await asyncio.create_subprocess_exec(
                    *argv,
                    stdout=out,
                    stderr=asyncio.subprocess.STDOUT,
                    stdin=asyncio.subprocess.DEVNULL,
                    env=env,
                    cwd=container.get("workingDir") or running.directory,
                    start_new_session=True,
                    preexec_fn=die_with_parent,
                )
            except OSError as e:
                await self.finish(pod, container, started, 127, "StartError", str(e))
                return
        await self.patch_status(
            pod,
            {
                "phase": "Running",
                "hostIP": "127.0.0.1",
                "podIP": "127.0.0.1",
                "startTime": started,
                "podIPs": [{"ip": "127.0.0.1"}],
                "hostIPs": [{"ip": "127.0.0.1"}],
                "conditions": _conditions(True, started),
                "containerStatuses": [_cstatus(container, True, {"running": {"startedAt": started}})],
            },
        )
        code = await running.proc.wait()
        if code < 0:  # killed by a signal: report as the kubelet does
            code = 128 - code
        message = ""
        with contextlib.suppress(OSError):
            message = term_path.read_text(errors="replace")[:MAX_MESSAGE]
        if not message and code != 0 and container.get("terminationMessagePolicy") == "FallbackToLogsOnError":
            with contextlib.suppress(OSError):
                message = "\n".join(log_path.read_text(errors="replace").splitlines()[-80:])[-2048:]
        await self.finish(pod, container, started, code, "Completed" if code == 0 else "Error", message)

    async def finish(self, pod: Obj, container: Obj, started: str, code: int, reason: str, message: str) -> None:
        terminated = {"exitCode": code, "reason": reason, "startedAt": started, "finishedAt": now()}
        if message:
            terminated["message"] = message
        await self.patch_status(
            pod,
            {
                "phase": "Succeeded" if code == 0 else "Failed",
                "conditions": _conditions(False, started),
                "containerStatuses": [_cstatus(container, False, {"terminated": terminated})],
            },
        )

    async def set_waiting(self, pod: Obj, container: Obj, reason: str, message: str) -> None:
        await self.patch_status(
            pod,
            {
                "containerStatuses": [_cstatus(container, False, {"waiting": {"reason": reason, "message": message}})],
            },
        )

    async def patch_status(self, pod: Obj, status: Obj) -> None:
        md = pod["metadata"]
        try:
            await self.kube.patch(PODS, md["name"], {"status": status}, md["namespace"], sub="status")
        except ApiError as e:
            if not e.not_found:
                log.warning("status of %s/%s: %s", md["namespace"], md["name"], e)

    async def resolve_env(self, pod: Obj, container: Obj) -> dict[str, str]:
        ns = pod["metadata"]["namespace"]
        env: dict[str, str] = {}
        for src in container.get("envFrom", []):
            prefix = src.get("prefix", "")
            if "secretRef" in src:
                data = await self._data(SECRETS, ns, src["secretRef"], secret=True)
            else:
                data = await self._data(CONFIGMAPS, ns, src["configMapRef"], secret=False)
            env.update({prefix + k: v for k, v in data.items()})
        for item in container.get("env", []):
            if "value" in item:
                env[item["name"]] = _VAR.sub(lambda m: env.get(m.group(1), m.group(0)), item["value"])
                continue
            ref = item.get("valueFrom", {})
            if "secretKeyRef" in ref or "configMapKeyRef" in ref:
                secret = "secretKeyRef" in ref
                sel = ref["secretKeyRef" if secret else "configMapKeyRef"]
                data = await self._data(SECRETS if secret else CONFIGMAPS, ns, sel, secret=secret)
                if sel["key"] in data:
                    env[item["name"]] = data[sel["key"]]
                elif not sel.get("optional"):
                    raise KeyError(f"key {sel['key']} not found in {sel['name']}")
            elif "fieldRef" in ref:
                env[item["name"]] = str(_field(pod, ref["fieldRef"]["fieldPath"]))
        return env

    async def _data(self, res: Any, ns: str, ref: Obj, *, secret: bool) -> dict[str, str]:
        try:
            obj = await self.kube.get(res, ref["name"], ns)
        except ApiError as e:
            if e.not_found and ref.get("optional"):
                return {}
            raise
        raw = obj.get("data") or {}
        if secret:
            return {k: base64.b64decode(v).decode() for k, v in raw.items()}
        return dict(raw)

    # -- logs -------------------------------------------------------------------------------------
    async def start_log_server(self) -> None:
        app = web.Application()
        app.router.add_get("/containerLogs/{ns}/{pod}/{container}", self.serve_logs)
        runner = web.AppRunner(app)
        await runner.setup()
        ctx = None
        if self.ca_dir:
            ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            ctx.load_cert_chain(str(self.ca_dir / "server.crt"), str(self.ca_dir / "server.key"))
        site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=ctx)
        await site.start()
        server = site._server
        assert server is not None
        self.port = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]

    async def serve_logs(self, request: web.Request) -> web.StreamResponse:
        ns, pod, container = (request.match_info[k] for k in ("ns", "pod", "container"))
        matches = sorted(self.workdir.glob(f"{ns}_{pod}_*/{container}.log"), key=lambda p: p.stat().st_mtime)
        if not matches:
            raise web.HTTPNotFound(text=f"no logs for {ns}/{pod}/{container}")
        lines = matches[-1].read_text(errors="replace").splitlines(keepends=True)
        tail = request.query.get("tailLines")
        if tail:
            lines = lines[-int(tail) :]
        return web.Response(text="".join(lines), content_type="text/plain")


def _conditions(ready: bool, ts: str) -> list[Obj]:
    s = "True" if ready else "False"
    return [
        {"type": "Initialized", "status": "True", "lastTransitionTime": ts},
        {"type": "Ready", "status": s, "lastTransitionTime": ts},
        {"type": "ContainersReady", "status": s, "lastTransitionTime": ts},
    ]


def _cstatus(container: Obj, ready: bool, state: Obj) -> Obj:
    return {
        "name": container["name"],
        "image": container.get("image", ""),
        "imageID": "",
        "ready": ready,
        "restartCount": 0,
        "started": "running" in state,
        "state": state,
    }


def _field(pod: Obj, path: str) -> Any:
    m = re.fullmatch(r"metadata\.(labels|annotations)\['(.+)'\]", path)
    if m:
        return pod["metadata"].get(m.group(1), {}).get(m.group(2), "")
    value: Any = pod
    for part in path.split("."):
        value = value.get(part, "") if isinstance(value, dict) else ""
    return value


async def amain(args: argparse.Namespace) -> None:
    os.environ["KUBECONFIG"] = args.kubeconfig
    async with Kube.from_env() as kube:
        node = LocalNode(kube, args.name, args.workdir, args.ca_dir)
        args.workdir.mkdir(parents=True, exist_ok=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        runner = asyncio.create_task(node.run())
        await stop.wait()
        runner.cancel()
        await asyncio.gather(*(node.kill(p, 2) for p in node.pods.values()), return_exceptions=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--kubeconfig", required=True)
    p.add_argument("--name", default="nightshift-local")
    p.add_argument("--workdir", type=Path, required=True)
    p.add_argument("--ca-dir", type=Path)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    asyncio.run(amain(p.parse_args()))


if __name__ == "__main__":
    main()
