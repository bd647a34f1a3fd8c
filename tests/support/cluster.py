"""A real Kubernetes control plane as local processes, for tests and `make run` (test and demo tooling).

No Docker engine runs on these machines, so kind cannot help; instead this starts what envtest and
kwokctl start: etcd, kube-apiserver, kube-controller-manager (the real Job, CronJob and garbage
collector controllers), kube-scheduler, KWOK for fake nodes at scale, and the local node of
`tests.support.localnode` that runs pods as local processes. Every child gets PDEATHSIG, so a
killed test run cannot leave them behind.

With `real_pods=True` (the real lane, `make e2e`) it is a control plane for a real kubelet instead:
ServiceAccount admission (pods get projected tokens), every controller (Deployments, ReplicaSets,
the kube-root-ca.crt publisher, endpoints...), the API server on the node's address (so the
`kubernetes` Service has a real endpoint pods reach through kube-proxy) and no local node or KWOK.
PodSecurity admission is on in both modes (a default plugin); namespaces opt in with labels.

Every start is a new cluster: the PKI is new, so etcd's data from a previous start is wiped (old
objects signed with old keys, a namespace still terminating, would otherwise come back).

    python -m tests.support.cluster up --dir .cluster     # foreground; Ctrl-C stops it
    python -m tests.support.cluster down --dir .cluster
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import datetime as dt
import ipaddress
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from tests.support.procs import die_with_parent, free_port, stop_on_signals, wait_http_ok

REPO_ROOT = Path(__file__).resolve().parents[2]
LOCAL_NODE = "nightshift-local"
KWOK_NODE = "kwok-node-0"
KWOK_TAINT_KEY = "kwok.x-k8s.io/node"
CONTROLLERS = ",".join(
    [
        "job-controller",
        "cronjob-controller",
        "garbage-collector-controller",
        "ttl-after-finished-controller",
        "namespace-controller",
        "pod-garbage-collector-controller",
        "serviceaccount-controller",
    ]
)


def binaries_dir() -> Path:
    """NIGHTSHIFT_BIN_DIR, else whatever hack/build-binaries.sh builds (it only builds what is missing)."""
    env = os.environ.get("NIGHTSHIFT_BIN_DIR")
    if env:
        return Path(env)
    out = subprocess.run(
        ["bash", str(REPO_ROOT / "hack" / "build-binaries.sh")], check=True, stdout=subprocess.PIPE, text=True
    )
    return Path(out.stdout.strip().splitlines()[-1])


def _pem_cert(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _pem_key(key: rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )


def _issue(
    subject: x509.Name,
    key: rsa.RSAPrivateKey,
    issuer: x509.Name,
    issuer_key: rsa.RSAPrivateKey,
    *,
    ca: bool = False,
    sans: list[x509.GeneralName] | None = None,
) -> x509.Certificate:
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def node_address() -> str:
    """The address of the interface the default route leaves by: what a real kubelet's node reports.

    A UDP connect sends nothing; it only makes the kernel pick the route and its source address."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.connect(("1.1.1.1", 9))  # any address off the host
        addr: str = s.getsockname()[0]
        return addr


def write_certs(pki: Path, extra_ips: Sequence[str] = ()) -> None:
    """One CA; a serving cert for loopback (and `extra_ips`); an admin client cert in system:masters;
    an SA key pair."""
    pki.mkdir(parents=True, exist_ok=True)

    def key() -> rsa.RSAPrivateKey:
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)

    ca_key = key()
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "nightshift-test-ca")])
    ca = _issue(ca_name, ca_key, ca_name, ca_key, ca=True)
    srv_key = key()
    sans: list[x509.GeneralName] = [
        x509.DNSName("localhost"),
        x509.DNSName("kubernetes.default.svc"),
        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
        x509.IPAddress(ipaddress.ip_address("10.0.0.1")),
        *(x509.IPAddress(ipaddress.ip_address(ip)) for ip in extra_ips),
    ]
    srv = _issue(
        x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kube-apiserver")]),
        srv_key,
        ca_name,
        ca_key,
        sans=sans,
    )
    adm_key = key()
    adm_name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "system:masters"),
            x509.NameAttribute(NameOID.COMMON_NAME, "admin"),
        ]
    )
    adm = _issue(adm_name, adm_key, ca_name, ca_key, sans=[x509.DNSName("admin")])
    sa_key = key()
    files = {
        "ca.crt": _pem_cert(ca),
        "ca.key": _pem_key(ca_key),
        "server.crt": _pem_cert(srv),
        "server.key": _pem_key(srv_key),
        "admin.crt": _pem_cert(adm),
        "admin.key": _pem_key(adm_key),
        "sa.key": _pem_key(sa_key),
        "sa.pub": sa_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ),
    }
    for name, data in files.items():
        (pki / name).write_bytes(data)
        (pki / name).chmod(0o600)


def issue_serving_cert(pki: Path, out: Path, host: str = "127.0.0.1") -> tuple[Path, Path]:
    """A serving certificate signed by the cluster's CA, e.g. for the operator's admission webhook."""
    ca = x509.load_pem_x509_certificate((pki / "ca.crt").read_bytes())
    ca_key = serialization.load_pem_private_key((pki / "ca.key").read_bytes(), password=None)
    assert isinstance(ca_key, rsa.RSAPrivateKey)
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    cert = _issue(
        x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)]),
        key,
        ca.subject,
        ca_key,
        sans=[x509.IPAddress(ipaddress.ip_address(host))],
    )
    out.mkdir(parents=True, exist_ok=True)
    (out / "webhook.crt").write_bytes(_pem_cert(cert))
    (out / "webhook.key").write_bytes(_pem_key(key))
    return out / "webhook.crt", out / "webhook.key"


def kubeconfig_text(server: str, pki: Path, user: str = "admin") -> str:
    """A kubeconfig for `user`, whose client cert and key are <user>.crt and <user>.key in `pki`."""

    def b64(name: str) -> str:
        return base64.b64encode((pki / name).read_bytes()).decode()

    return yaml.safe_dump(
        {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "nightshift",
                    "cluster": {"server": server, "certificate-authority-data": b64("ca.crt")},
                }
            ],
            "users": [
                {
                    "name": "admin",
                    "user": {
                        "client-certificate-data": b64(f"{user}.crt"),
                        "client-key-data": b64(f"{user}.key"),
                    },
                }
            ],
            "contexts": [{"name": "nightshift", "context": {"cluster": "nightshift", "user": "admin"}}],
            "current-context": "nightshift",
        }
    )


APISERVER_STARTS = "apiserver-starts"  # one Unix time per kube-apiserver start, in the control plane's folder


class ControlPlane:
    """Starts and stops the processes; all state lives under `workdir`."""

    def __init__(
        self,
        workdir: Path,
        *,
        bin_dir: Path | None = None,
        local_node: bool = True,
        kwok: bool = True,
        quiet: bool = False,
        apiserver_args: Sequence[str] = (),
        real_pods: bool = False,
        keep_data: bool = False,
    ) -> None:
        if real_pods and (local_node or kwok):
            raise ValueError("real_pods: a real kubelet runs the pods; pass local_node=False, kwok=False")
        self.workdir = workdir.resolve()
        self.apiserver_args = list(apiserver_args)  # e.g. --token-auth-file for the credential tests
        self.bin_dir = bin_dir
        self.with_local_node = local_node
        self.with_kwok = kwok
        self.real_pods = real_pods
        self.keep_data = keep_data  # start on the etcd data already in workdir (the memory bench reuses its seed)
        # The API server's address: loopback for the fast lane; the node's address for real pods,
        # the one endpoint of the `kubernetes` Service that kube-proxy sends pod traffic to.
        self.host = node_address() if real_pods else "127.0.0.1"
        self.quiet = quiet
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.argv: dict[str, list[str]] = {}  # how each was started, so a fault test can start it again
        self.kubeconfig = self.workdir / "kubeconfig"
        self.logs = self.workdir / "logs"
        self.server = ""

    # -- lifecycle -------------------------------------------------------------------------------
    def start(self) -> None:
        t0 = time.monotonic()
        if self.bin_dir is None:
            self.bin_dir = binaries_dir()
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.logs.mkdir(exist_ok=True)
        pki = self.workdir / "pki"
        write_certs(pki, extra_ips=[self.host] if self.real_pods else [])
        etcd_port, peer_port, api_port = free_port(), free_port(), free_port()
        self.server = f"https://{self.host}:{api_port}"
        data = self.workdir / "etcd"
        # A new PKI means a new cluster: the last start's objects must not come back with it.
        if not self.keep_data:
            shutil.rmtree(data, ignore_errors=True)
        self._spawn(
            "etcd",
            [
                "etcd",
                "--name=nightshift",
                f"--data-dir={data}",
                "--unsafe-no-fsync",
                f"--listen-client-urls=http://127.0.0.1:{etcd_port}",
                f"--advertise-client-urls=http://127.0.0.1:{etcd_port}",
                f"--listen-peer-urls=http://127.0.0.1:{peer_port}",
                f"--initial-advertise-peer-urls=http://127.0.0.1:{peer_port}",
                f"--initial-cluster=nightshift=http://127.0.0.1:{peer_port}",
                "--listen-metrics-urls=",
                "--log-level=warn",
            ],
        )
        self._spawn(
            "kube-apiserver",
            [
                *self._private_hosts_prefix(),
                str(self.bin_dir / "kube-apiserver"),
                f"--etcd-servers=http://127.0.0.1:{etcd_port}",
                f"--bind-address={self.host}",
                f"--advertise-address={self.host}",
                f"--secure-port={api_port}",
                f"--cert-dir={self.workdir / 'apiserver-certs'}",
                f"--tls-cert-file={pki / 'server.crt'}",
                f"--tls-private-key-file={pki / 'server.key'}",
                f"--client-ca-file={pki / 'ca.crt'}",
                f"--kubelet-client-certificate={pki / 'admin.crt'}",
                f"--kubelet-client-key={pki / 'admin.key'}",
                "--service-account-issuer=https://kubernetes.default.svc",
                f"--service-account-key-file={pki / 'sa.pub'}",
                f"--service-account-signing-key-file={pki / 'sa.key'}",
                "--service-cluster-ip-range=10.0.0.0/24",
                "--authorization-mode=Node,RBAC",
                "--allow-privileged=true",
                *self._mode_apiserver_args(),
                "--kubelet-preferred-address-types=InternalIP",
                "--v=0",
                *self.apiserver_args,
            ],
            absolute=True,
        )
        self._wait_ready(pki)
        self.kubeconfig.write_text(kubeconfig_text(self.server, pki))
        self.kubeconfig.chmod(0o600)
        common = [f"--kubeconfig={self.kubeconfig}", "--leader-elect=false", "--secure-port=0", "--v=0"]
        self._spawn(
            "kube-controller-manager",
            [
                "kube-controller-manager",
                *common,
                *(
                    ["--controllers=*", f"--root-ca-file={pki / 'ca.crt'}"]
                    if self.real_pods
                    else [f"--controllers={CONTROLLERS}"]
                ),
                "--use-service-account-credentials=false",
                "--concurrent-job-syncs=10",
                "--concurrent-cron-job-syncs=10",
            ],
        )
        self._spawn("kube-scheduler", ["kube-scheduler", *common])
        if self.with_kwok:
            self._start_kwok()
        if self.with_local_node:
            self._spawn(
                "localnode",
                [
                    sys.executable,
                    "-m",
                    "tests.support.localnode",
                    f"--kubeconfig={self.kubeconfig}",
                    f"--name={LOCAL_NODE}",
                    f"--workdir={self.workdir / 'localnode'}",
                    f"--ca-dir={pki}",
                ],
                absolute=True,
            )
        self._wait_nodes()
        (self.workdir / "ready").write_text(json.dumps({"server": self.server, "pid": os.getpid()}))
        self._say(f"control plane ready at {self.server} in {time.monotonic() - t0:.1f}s; KUBECONFIG={self.kubeconfig}")

    def stop(self) -> None:
        """Clients first, then the API server, then etcd, each group waited for: stopped together,
        the API server lost etcd under its open watches and hung in its shutdown for over 15 s."""
        core = ("kube-apiserver", "etcd")
        clients = [n for n in reversed(list(self.procs)) if n not in core]
        for group in [clients, *([n] for n in core if n in self.procs)]:
            for name in group:
                if self.procs[name].poll() is None:
                    self.procs[name].terminate()
            deadline = time.monotonic() + 10
            for name in group:
                proc = self.procs[name]
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout=max(0.1, deadline - time.monotonic()))
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
        self.procs.clear()
        with contextlib.suppress(FileNotFoundError):
            (self.workdir / "ready").unlink()

    def __enter__(self) -> ControlPlane:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def kill(self, name: str) -> None:
        """SIGKILL one component (a crash, for the fault tests); `start_again` brings it back."""
        proc = self.procs[name]
        proc.kill()
        proc.wait()

    def start_again(self, name: str) -> None:
        """Start a killed component with the arguments it had: same ports, same data directory."""
        assert self.procs[name].poll() is not None, f"{name} is still running"
        self._spawn(name, self.argv[name], absolute=True)

    def pause(self, name: str) -> None:
        """Freeze one component (SIGSTOP), e.g. kube-controller-manager to make the cluster miss runs."""
        os.kill(self.procs[name].pid, signal.SIGSTOP)

    def resume(self, name: str) -> None:
        os.kill(self.procs[name].pid, signal.SIGCONT)

    def check_alive(self) -> None:
        for name, proc in self.procs.items():
            if proc.poll() is not None:
                raise RuntimeError(f"{name} exited with {proc.returncode}; see {self.logs / name}.log")

    # -- helpers ---------------------------------------------------------------------------------
    def _mode_apiserver_args(self) -> list[str]:
        if not self.real_pods:
            # Pods of the local node need no SA token; its address is loopback, which an Endpoints
            # object may not hold, so the `kubernetes` Service gets none.
            return [
                "--disable-admission-plugins=ServiceAccount,TaintNodesByCondition",
                "--endpoint-reconciler-type=none",
            ]
        # Real pods: ServiceAccount admission mounts projected tokens; the lease reconciler writes
        # this server as the `kubernetes` Service's endpoint; anonymous requests are refused, as the
        # server listens on the node's address. TaintNodesByCondition stays off: the kubelet's
        # node is Ready within a second, and a not-ready taint from creation would only add a wait.
        return [
            "--disable-admission-plugins=TaintNodesByCondition",
            "--enable-admission-plugins=NodeRestriction",  # a kubelet changes only its node and pods
            "--endpoint-reconciler-type=lease",
            "--anonymous-auth=false",
        ]

    @property
    def hosts_file(self) -> Path:
        """With real pods, the API server's own /etc/hosts (see `add_host`)."""
        return self.workdir / "hosts"

    def _private_hosts_prefix(self) -> list[str]:
        """With real pods, run the API server in a mount namespace of its own whose /etc/hosts is
        `hosts_file`: admission webhooks are dialled by URL (kopf registers
        https://<service>.<namespace>.svc:<port>), which the API server resolves with the host's
        resolver, and no test may edit the host's /etc/hosts."""
        if not self.real_pods:
            return []
        shutil.copyfile("/etc/hosts", self.hosts_file)
        script = 'mount --bind "$0" /etc/hosts && exec "$@"'
        return ["unshare", "--mount", "--propagation=private", "--", "sh", "-c", script, str(self.hosts_file)]

    def client_kubeconfig(self, user: str, name: str, groups: Sequence[str] = ()) -> Path:
        """A kubeconfig whose client cert says `name` in `groups`, signed by the cluster's CA: a real
        kubelet is system:node:<node> in system:nodes (the Node authorizer then lets it read only
        what its own pods need), kube-proxy is system:kube-proxy (bound to system:node-proxier)."""
        pki = self.workdir / "pki"
        ca = x509.load_pem_x509_certificate((pki / "ca.crt").read_bytes())
        ca_key = serialization.load_pem_private_key((pki / "ca.key").read_bytes(), password=None)
        assert isinstance(ca_key, rsa.RSAPrivateKey)
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        subject = x509.Name(
            [
                *(x509.NameAttribute(NameOID.ORGANIZATION_NAME, g) for g in groups),
                x509.NameAttribute(NameOID.COMMON_NAME, name),
            ]
        )
        cert = _issue(subject, key, ca.subject, ca_key)
        (pki / f"{user}.crt").write_bytes(_pem_cert(cert))
        (pki / f"{user}.key").write_bytes(_pem_key(key))
        (pki / f"{user}.key").chmod(0o600)
        path = self.workdir / f"{user}.kubeconfig"
        path.write_text(kubeconfig_text(self.server, pki, user))
        path.chmod(0o600)
        return path

    def add_host(self, name: str, ip: str) -> None:
        """Resolve `name` to `ip` for the API server (real pods only): written in place, as the bind
        mount holds the file's inode; Go's resolver re-reads the file when it changes."""
        if not self.real_pods:
            raise RuntimeError("add_host needs real_pods=True")
        with self.hosts_file.open("a") as f:
            f.write(f"{ip} {name}\n")

    def _say(self, msg: str) -> None:
        if not self.quiet:
            print(f"[cluster] {msg}", file=sys.stderr, flush=True)

    def _spawn(self, name: str, argv: list[str], *, absolute: bool = False) -> None:
        assert self.bin_dir is not None
        if not absolute:
            argv = [str(self.bin_dir / argv[0]), *argv[1:]]
        log = open(self.logs / f"{name}.log", "ab")
        # test tooling lives in the repository's tests package, not in the wheel: children import it from here
        path = os.pathsep.join(p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH", "")) if p)
        env = {**os.environ, "KUBECONFIG": str(self.kubeconfig), "PYTHONPATH": path}
        self.argv[name] = argv
        self.procs[name] = subprocess.Popen(
            argv,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            preexec_fn=die_with_parent,
            cwd=self.workdir,
        )
        log.close()
        if name == "kube-apiserver":  # the least-privilege check forgives RBAC's warm-up after each start
            with open(self.workdir / APISERVER_STARTS, "a") as starts:
                starts.write(f"{time.time()}\n")
        self._say(f"started {name} (pid {self.procs[name].pid})")

    def _wait_ready(self, pki: Path, timeout: float = 90) -> None:
        ctx = ssl.create_default_context(cafile=str(pki / "ca.crt"))
        ctx.load_cert_chain(str(pki / "admin.crt"), str(pki / "admin.key"))
        wait_http_ok(
            f"{self.server}/readyz",
            alive=self.check_alive,
            timeout=timeout,
            what="kube-apiserver",
            log=self.logs,
            context=ctx,
        )

    def kubectl(self, *args: str, input: str | None = None, check: bool = True) -> str:
        assert self.bin_dir is not None
        out = subprocess.run(
            [str(self.bin_dir / "kubectl"), f"--kubeconfig={self.kubeconfig}", *args],
            input=input,
            capture_output=True,
            text=True,
            check=False,
        )
        if check and out.returncode != 0:
            raise RuntimeError(f"kubectl {' '.join(args)}: {out.stderr.strip()}")
        return out.stdout

    def _start_kwok(self) -> None:
        stages = Path(__file__).with_name("kwok-stages.yaml")
        self._spawn(
            "kwok",
            [
                "kwok",
                f"--kubeconfig={self.kubeconfig}",
                "--manage-all-nodes=false",
                "--manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake",
                f"--config={stages}",
                "--server-address=127.0.0.1:0",
                "--node-lease-duration-seconds=0",
            ],
        )
        node = {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": KWOK_NODE,
                "annotations": {"kwok.x-k8s.io/node": "fake", "node.alpha.kubernetes.io/ttl": "0"},
                "labels": {"type": "kwok", "kubernetes.io/hostname": KWOK_NODE},
            },
            "spec": {"taints": [{"key": KWOK_TAINT_KEY, "value": "fake", "effect": "NoSchedule"}]},
        }
        self.kubectl("apply", "-f", "-", input=json.dumps(node))

    def _wait_nodes(self, timeout: float = 60) -> None:
        want = ([LOCAL_NODE] if self.with_local_node else []) + ([KWOK_NODE] if self.with_kwok else [])
        deadline = time.monotonic() + timeout
        while want:
            self.check_alive()
            out = json.loads(self.kubectl("get", "nodes", "-o", "json"))
            ready = {
                n["metadata"]["name"]
                for n in out["items"]
                if any(
                    c["type"] == "Ready" and c["status"] == "True" for c in n.get("status", {}).get("conditions", [])
                )
            }
            if all(w in ready for w in want):
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"nodes {want} not ready (ready: {sorted(ready)}); see {self.logs}")
            time.sleep(0.5)


def kwok_pod_template() -> dict[str, object]:
    """Pod-spec fields that send a pod to the KWOK node instead of the local one."""
    return {
        "nodeSelector": {"type": "kwok"},
        "tolerations": [{"key": KWOK_TAINT_KEY, "operator": "Exists", "effect": "NoSchedule"}],
    }


def _up(workdir: Path, real_pods: bool = False) -> int:
    cp = ControlPlane(workdir, real_pods=real_pods, local_node=not real_pods, kwok=not real_pods)
    stopped = stop_on_signals()
    (workdir / "pid").parent.mkdir(parents=True, exist_ok=True)
    (workdir / "pid").write_text(str(os.getpid()))
    try:
        cp.start()
        while not stopped():
            cp.check_alive()
            time.sleep(1)
    finally:
        cp.stop()
        with contextlib.suppress(FileNotFoundError):
            (workdir / "pid").unlink()
    return 0


def _down(workdir: Path) -> int:
    pid_file = workdir / "pid"
    if not pid_file.exists():
        print("[cluster] not running", file=sys.stderr)
        return 0
    pid = int(pid_file.read_text())
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
        for _ in range(150):
            os.kill(pid, 0)
            time.sleep(0.1)
        os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(FileNotFoundError):
        pid_file.unlink()
    # The next `up` is a new cluster; nothing of this one's state should outlive it.
    shutil.rmtree(workdir / "etcd", ignore_errors=True)
    print("[cluster] stopped", file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m tests.support.cluster",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("command", choices=["up", "down"])
    p.add_argument("--dir", type=Path, default=REPO_ROOT / ".cluster")
    p.add_argument("--real-pods", action="store_true", help="for a real kubelet: no local node, no KWOK")
    args = p.parse_args(argv)
    return _up(args.dir, args.real_pods) if args.command == "up" else _down(args.dir)


if __name__ == "__main__":
    sys.exit(main())
