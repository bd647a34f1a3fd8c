"""How much an API client costs: import RSS, CPU per GET and per LIST (the numbers in docs/credentials.md).

Each candidate runs in a fresh interpreter of its own virtualenv (kopf imports kubernetes_asyncio
whenever it is installed, so libraries measured side by side would all pay for it):

    python -m tests.support.measure_clients --kubeconfig .cluster/kubeconfig --namespace bench \\
        --venv kr8s=/tmp/ev-kr8s --venv lightkube=/tmp/ev-lightkube --venv kubernetes_asyncio=/tmp/ev-ka

The namespace must hold ConfigMaps cm-1 .. cm-300 of about 400 bytes each.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

IMPORTS = {
    "floor": "import kopf, aiohttp",
    "floor+pydantic": "import kopf, aiohttp; from pydantic import BaseModel",
    "before": "import kopf, aiohttp, pydantic, oldkube",
    "nightshift": "import kopf, aiohttp, pydantic, nightshift.infra.kube",
    "kr8s": "import kopf, kr8s.asyncio, kr8s.asyncio.objects",
    "lightkube": "import kopf, lightkube; from lightkube.resources.core_v1 import ConfigMap",
    "kubernetes_asyncio": "import kopf, kubernetes_asyncio.client, kubernetes_asyncio.config",
}

RSS = """
{code}
print([int(l.split()[1]) for l in open('/proc/self/status') if l.startswith('VmRSS')][0] / 1024)
"""

REQUESTS = """
import asyncio, os, sys, time
N, M, NS, KC = 400, 20, {ns!r}, {kc!r}

async def measure(get, lst):
    await get(); await lst()
    c0 = time.process_time()
    for _ in range(N):
        await get()
    c1 = time.process_time()
    for _ in range(M):
        n = await lst()
    c2 = time.process_time()
    assert n == 300, n
    print((c1 - c0) / N * 1e6, (c2 - c1) / M * 1e3)

async def main(which):
    if which == "before":
        from oldkube import Kube, CONFIGMAPS, connection_info
        os.environ["KUBECONFIG"] = KC
        async with Kube(connection_info()) as k:
            async def lst(): return len(await k.list(CONFIGMAPS, NS))
            await measure(lambda: k.get(CONFIGMAPS, "cm-1", NS), lst)
    elif which == "nightshift":
        from nightshift.infra.kube import Kube, CONFIGMAPS
        from nightshift.infra.credentials import for_cli
        async with Kube(for_cli(kubeconfig_path=KC)) as k:
            async def lst(): return len(await k.list(CONFIGMAPS, NS))
            await measure(lambda: k.get(CONFIGMAPS, "cm-1", NS), lst)
    elif which == "kr8s":
        import kr8s.asyncio
        from kr8s.asyncio.objects import ConfigMap
        api = await kr8s.asyncio.api(kubeconfig=KC)
        async def lst(): return len([x async for x in api.get("configmaps", namespace=NS)])
        await measure(lambda: ConfigMap.get("cm-1", namespace=NS, api=api), lst)
    elif which == "lightkube":
        from lightkube import AsyncClient, KubeConfig
        from lightkube.resources.core_v1 import ConfigMap
        c = AsyncClient(config=KubeConfig.from_file(KC))
        async def lst(): return len([x async for x in c.list(ConfigMap, namespace=NS)])
        await measure(lambda: c.get(ConfigMap, "cm-1", namespace=NS), lst)
    elif which == "kubernetes_asyncio":
        from kubernetes_asyncio import client, config
        await config.load_kube_config(KC)
        async with client.ApiClient() as ac:
            v1 = client.CoreV1Api(ac)
            async def lst(): return len((await v1.list_namespaced_config_map(NS)).items)
            await measure(lambda: v1.read_namespaced_config_map("cm-1", NS), lst)

asyncio.run(main({which!r}))
"""


def run(python: str, code: str, before: str = "") -> str:
    env = {"PYTHONPATH": os.pathsep.join(p for p in (str(REPO / "operator"), before) if p), "PATH": "/usr/bin:/bin"}
    out = subprocess.run([python, "-c", code], capture_output=True, text=True, env=env, cwd=REPO, check=False)
    if out.returncode:
        raise RuntimeError(out.stderr[-2000:])
    return out.stdout.strip().splitlines()[-1]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--kubeconfig", required=True)
    p.add_argument("--namespace", default="bench")
    p.add_argument("--venv", action="append", default=[], metavar="NAME=DIR", help="a library's virtualenv")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument(
        "--before",
        metavar="DIR",
        help="a folder with oldkube.py, the client before the credential layer: "
        "git show e764760:operator/nightshift/infra/kube.py > DIR/oldkube.py",
    )
    args = p.parse_args(argv)
    pythons = {"floor": sys.executable, "floor+pydantic": sys.executable}
    if args.before:
        pythons["before"] = sys.executable
    pythons["nightshift"] = sys.executable
    pythons |= {n: f"{d}/bin/python" for n, d in (v.split("=", 1) for v in args.venv)}
    print("| client | RSS after import, MiB | CPU per GET, µs | CPU per LIST of 300, ms |")
    print("|---|---|---|---|")
    for name, python in pythons.items():
        before = args.before or ""
        rss = min(float(run(python, RSS.format(code=IMPORTS[name]), before)) for _ in range(args.rounds))
        if name.startswith("floor"):
            print(f"| {IMPORTS[name]} | {rss:.1f} | | |")
            continue
        code = REQUESTS.format(ns=args.namespace, kc=args.kubeconfig, which=name)
        samples = [tuple(float(x) for x in run(python, code, before).split()) for _ in range(args.rounds)]
        get, lst = min(s[0] for s in samples), min(s[1] for s in samples)
        print(f"| {name} | {rss:.1f} | {get:.0f} | {lst:.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
