"""What the real lane may change on the host, as a snapshot to compare with and to restore (test tooling).

The lane (hack/e2e/lane.sh) keeps its files, sockets and roots under a directory of its own, but a
kubelet, containerd, CNI plugins and kube-proxy also change host-wide state: iptables rules and
chains, a bridge and veth links, mounts, cgroups, a few sysctls (the kubelet's kernel tunables,
ip_forward from the CNI bridge plugin), CNI's result cache and /var/log/containers. A snapshot taken
before the lane says what the host was; `restore` undoes what the lane added (nothing it did not
add is touched) and `diff` lists what still differs, which the e2e test asserts is nothing.

    python -m tests.support.hoststate snapshot FILE
    python -m tests.support.hoststate restore FILE     # then prints what still differs
    python -m tests.support.hoststate diff FILE        # exit 1 if the host differs
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

# Paths a kubelet, containerd, CNI or dockerd write by default; the lane points them elsewhere where
# it can, these are the defaults it cannot change (CNI's cache, the kubelet's container log links).
WATCHED_PATHS = [
    "/etc/cni",
    "/etc/containerd",
    "/etc/docker",
    "/etc/hosts",
    "/etc/kubernetes",
    "/etc/resolv.conf",
    "/opt/cni",
    "/run/containerd",
    "/run/docker",
    "/run/netns",
    "/var/lib/cni",
    "/var/lib/containerd",
    "/var/lib/kubelet",
    "/var/log/containers",
    "/var/log/pods",
]
# The host's own files among them: restored, never removed. The rest `restore` removes when the lane
# created them.
HOST_FILES = {"/etc/containerd", "/etc/docker", "/etc/hosts", "/etc/resolv.conf"}
REMOVABLE = set(WATCHED_PATHS) - HOST_FILES
SYSCTL_ROOTS = ["net/ipv4", "net/ipv6", "net/bridge", "net/netfilter", "kernel", "vm"]
# Counters and values the kernel changes by itself.
VOLATILE = re.compile(
    r"^(kernel\.random\.|kernel\.ns_last_pid$|kernel\.pty\.nr$|kernel\.perf_event_max_sample_rate$"
    r"|kernel\.tainted$|net\.netfilter\.nf_conntrack_count$|net\.ipv6\.route\.|net\.ipv4\.route\."
    r"|.*\.neigh\.|.*\.stable_secret$|vm\.stat_refresh$|kernel\.seccomp\.actions_logged$)"
)
IPTABLES = {"ipv4": "iptables", "ipv6": "ip6tables"}
# A table iptables-nft creates on first use has these chains, ACCEPT: the same as no table at all.
BUILTIN_CHAINS = {"PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING"}
NO_TABLE: dict[str, Any] = {"policies": {}, "chains": sorted(BUILTIN_CHAINS), "rules": []}
CGROUP_ROOT = Path("/sys/fs/cgroup")


def _sysctls() -> dict[str, str]:
    out: dict[str, str] = {}
    for root in SYSCTL_ROOTS:
        base = Path("/proc/sys") / root
        if not base.exists():
            continue
        for dirpath, _dirs, files in os.walk(base):
            for f in files:
                p = Path(dirpath) / f
                key = str(p.relative_to("/proc/sys")).replace("/", ".")
                if VOLATILE.match(key):
                    continue
                try:
                    if not os.access(p, os.R_OK) or not (p.stat().st_mode & 0o200):
                        continue  # read-only keys cannot have been changed by anyone
                    out[key] = " ".join(p.read_text().split())
                except OSError:
                    continue
    return out


def _iptables() -> dict[str, dict[str, dict[str, Any]]]:
    """family -> table -> {"policies": {chain: policy}, "chains": [...], "rules": [...]}"""
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for family, cmd in IPTABLES.items():
        if shutil.which(f"{cmd}-save") is None:
            continue
        text = subprocess.run([f"{cmd}-save"], capture_output=True, text=True, check=False).stdout
        tables: dict[str, dict[str, Any]] = {}
        table: dict[str, Any] | None = None
        for line in text.splitlines():
            if line.startswith("*"):
                table = tables.setdefault(line[1:], {"policies": {}, "chains": [], "rules": []})
            elif table is None or line.startswith("#") or line == "COMMIT":
                continue
            elif line.startswith(":"):
                name, policy = line[1:].split()[:2]
                table["chains"].append(name)
                if policy != "-":
                    table["policies"][name] = policy
            elif line.startswith("-A "):
                table["rules"].append(line)
        out[family] = tables
    return out


def _links() -> dict[str, str]:
    """name -> kind (bridge, veth, ...; "" for a plain device)."""
    text = subprocess.run(["ip", "-d", "-o", "link", "show"], capture_output=True, text=True, check=False).stdout
    out: dict[str, str] = {}
    for line in text.splitlines():
        parts = line.split(": ", 2)
        if len(parts) < 3:
            continue
        name = parts[1].split("@")[0]
        kind = re.search(r"\n?\s(bridge|veth|vxlan|dummy|macvlan|ipvlan|tun|tap)\s", line)
        out[name] = kind.group(1) if kind else ""
    return out


def _mounts() -> list[str]:
    return sorted({line.split()[4] for line in Path("/proc/self/mountinfo").read_text().splitlines()})


def _cgroups() -> list[str]:
    """First-level groups of every cgroup hierarchy (kubepods, the lane's containers...)."""
    out: list[str] = []
    if not CGROUP_ROOT.is_dir():
        return out
    hierarchies = [CGROUP_ROOT] if (CGROUP_ROOT / "cgroup.controllers").exists() else list(CGROUP_ROOT.iterdir())
    for h in hierarchies:
        try:
            out += [str(p) for p in h.iterdir() if p.is_dir()]
        except OSError:
            continue
    return sorted(out)


def _paths() -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for path in WATCHED_PATHS:
        p = Path(path)
        if p.is_symlink():
            out[path] = f"link:{os.readlink(p)}"
        elif p.is_dir():
            out[path] = "dir"
        elif p.is_file():
            out[path] = hashlib.sha256(p.read_bytes()).hexdigest()
        else:
            out[path] = None
    return out


def snapshot() -> dict[str, Any]:
    return {
        "sysctls": _sysctls(),
        "iptables": _iptables(),
        "links": _links(),
        "mounts": _mounts(),
        "cgroups": _cgroups(),
        "paths": _paths(),
    }


def diff(before: dict[str, Any], after: dict[str, Any]) -> list[str]:
    """Every difference, in words; empty when the host is as it was."""
    out: list[str] = []
    for key, value in after["sysctls"].items():
        if key in before["sysctls"] and before["sysctls"][key] != value:
            out.append(f"sysctl {key} = {value} (was {before['sysctls'][key]})")
    for family, tables in after["iptables"].items():
        old_tables = before["iptables"].get(family, {})
        for name, table in tables.items():
            old = old_tables.get(name, NO_TABLE)
            out += [f"{family} {name}: new chain {c}" for c in table["chains"] if c not in old["chains"]]
            out += [f"{family} {name}: new rule {r}" for r in table["rules"] if r not in old["rules"]]
            out += [f"{family} {name}: rule gone {r}" for r in old["rules"] if r not in table["rules"]]
            for chain, policy in table["policies"].items():
                if old["policies"].get(chain, "ACCEPT") != policy:
                    out.append(f"{family} {name}: {chain} policy {policy} (was {old['policies'].get(chain, 'ACCEPT')})")
    out += [f"new link {n} ({k or 'device'})" for n, k in after["links"].items() if n not in before["links"]]
    out += [f"link gone {n}" for n in before["links"] if n not in after["links"]]
    out += [f"new mount {m}" for m in after["mounts"] if m not in before["mounts"]]
    out += [f"new cgroup {c}" for c in after["cgroups"] if c not in before["cgroups"]]
    for path, state in after["paths"].items():
        if before["paths"].get(path) != state:
            out.append(f"path {path}: {state or 'absent'} (was {before['paths'].get(path) or 'absent'})")
    return out


def _run(*argv: str) -> None:
    subprocess.run(list(argv), capture_output=True, check=False)


def _rmdir_tree(path: Path) -> None:
    """A cgroup is removed with rmdir, children first (its files cannot be unlinked)."""
    for child in [p for p in path.iterdir() if p.is_dir()]:
        _rmdir_tree(child)
    try:
        path.rmdir()
    except OSError:
        pass


def restore(before: dict[str, Any]) -> None:
    """Undo what was added since `before`: mounts, links, iptables rules and chains, cgroups, the
    paths in REMOVABLE, changed sysctls. What existed before is never removed."""
    now = snapshot()
    for m in sorted(set(now["mounts"]) - set(before["mounts"]), key=len, reverse=True):
        _run("umount", "-l", m)
    for name, kind in now["links"].items():
        if name not in before["links"] and kind in ("bridge", "veth"):
            _run("ip", "link", "del", name)
    for family, tables in now["iptables"].items():
        cmd = IPTABLES[family]
        old_tables = before["iptables"].get(family, {})
        for table_name, table in tables.items():
            old = old_tables.get(table_name, NO_TABLE)
            new_chains = [c for c in table["chains"] if c not in old["chains"] and c not in BUILTIN_CHAINS]
            for chain in new_chains:  # their rules first, so that no jump into them is left
                _run(cmd, "-t", table_name, "-F", chain)
            for rule in reversed(table["rules"]):
                if rule not in old["rules"] and rule.split()[1] not in new_chains:
                    _run(cmd, "-t", table_name, *_split_rule("-D" + rule[2:]))
            for chain in new_chains:
                _run(cmd, "-t", table_name, "-X", chain)
            for chain, policy in table["policies"].items():
                if old["policies"].get(chain, "ACCEPT") != policy:
                    _run(cmd, "-t", table_name, "-P", chain, old["policies"].get(chain, "ACCEPT"))
    for group in sorted(set(now["cgroups"]) - set(before["cgroups"])):
        _rmdir_tree(Path(group))
    for path in REMOVABLE:
        if before["paths"].get(path) is None and now["paths"].get(path) is not None:
            shutil.rmtree(path, ignore_errors=True)
    # ip_forward first: writing it resets every interface's forwarding key.
    keys = sorted(before["sysctls"], key=lambda k: k != "net.ipv4.ip_forward")
    for key in keys:
        if now["sysctls"].get(key, before["sysctls"][key]) != before["sysctls"][key]:
            try:
                Path("/proc/sys", key.replace(".", "/")).write_text(before["sysctls"][key])
            except OSError:
                pass


def _split_rule(rule: str) -> list[str]:
    return shlex.split(rule)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tests.support.hoststate", description=__doc__)
    p.add_argument("command", choices=["snapshot", "restore", "diff"])
    p.add_argument("file", type=Path)
    args = p.parse_args(argv)
    if args.command == "snapshot":
        args.file.write_text(json.dumps(snapshot()))
        return 0
    before = json.loads(args.file.read_text())
    if args.command == "restore":
        restore(before)
    left = diff(before, snapshot())
    for line in left:
        print(line)
    return 1 if left and args.command == "diff" else 0


if __name__ == "__main__":
    sys.exit(main())
