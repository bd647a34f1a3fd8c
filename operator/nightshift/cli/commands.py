"""`nightshift` (also `kubectl nightshift`): status, history and run controls for BackgroundJobs.

Everything goes through the API server as a user would with kubectl: triggers are annotations the
operator turns into runs, stops are ConfigMaps the gate reads, so the CLI holds no state of its own.
Exit codes: 0 ok, 1 a run failed or the API refused, 2 bad usage, 3 not found.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import sys
import uuid
from collections.abc import Sequence
from typing import Any

import yaml

from nightshift.api import names
from nightshift.api.models import BackgroundJobSpec
from nightshift.core import graph, schedule
from nightshift.core.runs import attempt_view, group, parse_time, with_pod
from nightshift.infra.kube import BACKGROUNDJOBS, CONFIGMAPS, CRONJOBS, EVENTS, JOBS, PODS, ApiError, Kube, event_body

STOP_CONFIGMAP = "nightshift-stop"
CLUSTER_STOP_NAMESPACE = "default"


class CliError(Exception):
    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


def _age(value: str | None, now: dt.datetime) -> str:
    t = parse_time(value)
    if t is None:
        return "-"
    secs = int((now - t).total_seconds())
    future = secs < 0
    secs = abs(secs)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if secs >= size:
            text = f"{secs // size}{unit}"
            break
    else:
        text = f"{secs}s"
    return f"in {text}" if future else f"{text} ago"


def table(rows: Sequence[Sequence[Any]], header: Sequence[str]) -> str:
    cells = [[str(c) for c in header]] + [["-" if c is None else str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    return "\n".join("   ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in cells)


def emit(data: Any, output: str | None, text: str) -> None:
    if output == "json":
        print(json.dumps(data, indent=2, default=str))
    elif output == "yaml":
        print(yaml.safe_dump(data, sort_keys=False, default_flow_style=False), end="")
    else:
        print(text)


def condition(obj: dict[str, Any], type_: str) -> dict[str, Any]:
    return next((c for c in obj.get("status", {}).get("conditions", []) if c.get("type") == type_), {})


def failing(obj: dict[str, Any]) -> bool:
    st = obj.get("status", {})
    return (
        condition(obj, "Ready").get("status") == "False"
        or st.get("lastRun", {}).get("result") == "Failed"
        or int(st.get("consecutiveFailures") or 0) > 0
    )


def health(objs: Sequence[dict[str, Any]]) -> str:
    """The seeds' overall health: healthy, degraded when some jobs fail, critical when most do."""
    bad = sum(1 for o in objs if failing(o))
    if bad == 0:
        return "healthy"
    return "critical" if bad * 2 > len(objs) else "degraded"


class Cli:
    def __init__(self, kube: Kube, args: argparse.Namespace) -> None:
        self.kube = kube
        self.args = args
        self.ns: str | None = (
            None if getattr(args, "all_namespaces", False) else (args.namespace or kube.default_namespace)
        )
        self.now = dt.datetime.now(dt.UTC)

    async def get_bgj(self, name: str) -> dict[str, Any]:
        try:
            return await self.kube.get(BACKGROUNDJOBS, name, self.ns)
        except ApiError as e:
            if e.not_found:
                raise CliError(f"BackgroundJob {name} not found in namespace {self.ns}", 3) from e
            raise

    async def list_bgjs(self) -> list[dict[str, Any]]:
        return sorted(
            await self.kube.list(BACKGROUNDJOBS, self.ns),
            key=lambda o: (o["metadata"]["namespace"], o["metadata"]["name"]),
        )

    async def runs_of(self, ns: str, name: str) -> list[Any]:
        jobs = await self.kube.list(JOBS, ns, label_selector=f"{names.LABEL_BGJ}={name}")
        pods = await self.kube.list(PODS, ns, label_selector=f"{names.LABEL_BGJ}={name}")
        by_job = {p["metadata"].get("labels", {}).get("job-name"): p for p in pods}
        views = [with_pod(v, by_job.get(v.name)) for j in jobs if (v := attempt_view(j))]
        return group(views)

    # -- commands ------------------------------------------------------------------------------------
    async def status(self) -> int:
        objs = [await self.get_bgj(self.args.name)] if self.args.name else await self.list_bgjs()
        rows, data = [], []
        for o in objs:
            st, md = o.get("status", {}), o["metadata"]
            ready = condition(o, "Ready")
            rows.append(
                [
                    md["namespace"],
                    md["name"],
                    st.get("schedule"),
                    ready.get("status", "Unknown"),
                    st.get("lastRun", {}).get("result"),
                    _age(st.get("lastSuccessfulTime"), self.now),
                    _age(st.get("nextScheduleTime"), self.now),
                    st.get("consecutiveFailures", 0),
                    ready.get("reason"),
                ]
            )
            data.append({"namespace": md["namespace"], "name": md["name"], "failing": failing(o), "status": st})
        overall = health(objs)
        text = table(
            rows,
            ["NAMESPACE", "NAME", "SCHEDULE", "READY", "LAST RESULT", "LAST SUCCESS", "NEXT RUN", "FAILURES", "REASON"],
        )
        emit(
            {"health": overall, "jobs": data},
            self.args.output,
            f"{text}\n\nhealth: {overall} ({sum(1 for o in objs if failing(o))} of {len(objs)} jobs failing)",
        )
        return 0

    async def describe(self) -> int:
        o = await self.get_bgj(self.args.name)
        md, st = o["metadata"], o.get("status", {})
        runs = (await self.runs_of(md["namespace"], md["name"]))[-10:]
        spec = BackgroundJobSpec.model_validate(o["spec"])
        upcoming = []
        cron = schedule.cron_of(spec.schedule, spec.every) if spec.scheduled else None
        if cron and not spec.suspend:
            upcoming = [
                t.isoformat()
                for t in schedule.times_between(
                    cron, spec.time_zone, self.now, self.now + dt.timedelta(days=400), limit=5
                )
            ]
        run_rows = [
            [
                r.id,
                r.trigger,
                r.first.scheduled and r.first.scheduled.isoformat(),
                len(r.attempts),
                _result(r, spec),
                r.last.exit_code,
            ]
            for r in runs
        ]
        data = {
            "name": md["name"],
            "namespace": md["namespace"],
            "spec": o["spec"],
            "status": st,
            "recentRuns": [
                dict(zip(["id", "trigger", "scheduled", "attempts", "result", "exitCode"], r, strict=True))
                for r in run_rows
            ],
            "nextRuns": upcoming,
        }
        lines = [
            f"Name:        {md['name']}",
            f"Namespace:   {md['namespace']}",
            f"Schedule:    {st.get('schedule', '-')} ({spec.time_zone})",
            f"Priority:    {spec.priority}",
            f"Queue:       {spec.queue or '-'}",
            f"Suspended:   {spec.suspend}",
            f"Depends on:  {', '.join(d.name for d in spec.depends_on) or '-'}",
            f"Run after:   {', '.join(spec.run_after) or '-'}",
            "",
            "Conditions:",
        ]
        lines += [
            "  "
            + table(
                [[c["type"], c["status"], c["reason"], c.get("message", "")] for c in st.get("conditions", [])],
                ["TYPE", "STATUS", "REASON", "MESSAGE"],
            ).replace("\n", "\n  ")
        ]
        lines += [
            "",
            "Recent runs:",
            "  " + table(run_rows, ["RUN", "TRIGGER", "SCHEDULED", "ATTEMPTS", "RESULT", "EXIT"]).replace("\n", "\n  "),
        ]
        lines += ["", "Next runs:"] + [f"  {t}" for t in upcoming or ["-"]]
        emit(data, self.args.output, "\n".join(lines))
        return 0

    async def history(self) -> int:
        o = await self.get_bgj(self.args.name)
        md = o["metadata"]
        if self.args.dsn:
            from nightshift.infra.history import read_history

            rows = await read_history(self.args.dsn, md["namespace"], md["name"], self.args.limit)
        else:
            spec = BackgroundJobSpec.model_validate(o["spec"])
            rows = []
            for r in (await self.runs_of(md["namespace"], md["name"]))[-self.args.limit :]:
                for a in r.attempts:
                    rows.append(
                        {
                            "run": r.id,
                            "attempt": a.attempt,
                            "trigger": r.trigger,
                            "scheduled": a.scheduled and a.scheduled.isoformat(),
                            "started": a.started and a.started.isoformat(),
                            "finished": a.finished and a.finished.isoformat(),
                            "result": _result(r, spec) if a is r.last else ("Failed" if a.failed else "-"),
                            "exitCode": a.exit_code,
                        }
                    )
        text = table(
            [
                [
                    r.get(k)
                    for k in ("run", "attempt", "trigger", "scheduled", "started", "finished", "result", "exitCode")
                ]
                for r in rows
            ],
            ["RUN", "ATTEMPT", "TRIGGER", "SCHEDULED", "STARTED", "FINISHED", "RESULT", "EXIT"],
        )
        emit(rows, self.args.output, text)
        return 0

    async def logs(self) -> int:
        o = await self.get_bgj(self.args.name)
        md = o["metadata"]
        pods = await self.kube.list(PODS, md["namespace"], label_selector=f"{names.LABEL_BGJ}={md['name']}")
        if not pods:
            raise CliError(f"{md['name']} has no run with a pod yet", 3)
        pod = max(pods, key=lambda p: p["metadata"]["creationTimestamp"])
        text = await self.kube.request("GET", PODS.path(md["namespace"], pod["metadata"]["name"], "log"))
        print(f"# {pod['metadata']['name']}", file=sys.stderr)
        print(text if isinstance(text, str) else json.dumps(text), end="")
        return 0

    async def graph(self) -> int:
        objs = await self.list_bgjs()
        edges: dict[str, list[str]] = {}
        kinds: dict[tuple[str, str], str] = {}
        for o in objs:
            name = o["metadata"]["name"] if self.ns else f"{o['metadata']['namespace']}/{o['metadata']['name']}"
            prefix = "" if self.ns else o["metadata"]["namespace"] + "/"
            spec = o["spec"]
            deps = [prefix + d["name"] for d in spec.get("dependsOn") or []]
            after = [prefix + a for a in spec.get("runAfter") or []]
            edges[name] = deps + after
            kinds.update({(name, a): "runAfter" for a in after})
        if self.args.output == "dot":
            print(graph.dot(edges, kinds))
            return 0
        lines = []
        for node in graph.topological(edges):
            ups = edges.get(node, [])
            lines.append(f"{node}" + (f"  <- {', '.join(ups)}" if ups else ""))
        for cycle in graph.find_cycles(edges):
            lines.append("cycle: " + " -> ".join(cycle))
        emit({"edges": edges}, self.args.output, "\n".join(lines))
        return 0

    async def trigger(self, nonce: str | None = None) -> int:
        o = await self.get_bgj(self.args.name)
        params = dict(_param(p) for p in self.args.param or [])
        nonce = nonce or f"cli-{uuid.uuid4().hex[:12]}"
        ann = {names.ANN_RUN_NOW: nonce, names.ANN_RUN_NOW + "-params": json.dumps(params) if params else None}
        await self.kube.patch(BACKGROUNDJOBS, o["metadata"]["name"], {"metadata": {"annotations": ann}}, self.ns)
        run = names.run_id(o["metadata"]["name"], "manual", nonce)
        print(f"run {run} requested (nonce {nonce})")
        if not self.args.wait:
            return 0
        return await self.wait_run(o["metadata"]["namespace"], o["metadata"]["name"], run, o["spec"])

    async def wait_run(self, ns: str, name: str, run: str, raw_spec: dict[str, Any]) -> int:
        spec = BackgroundJobSpec.model_validate(raw_spec)
        deadline = self.now + dt.timedelta(seconds=self.args.timeout)
        last = None
        while dt.datetime.now(dt.UTC) < deadline:
            for r in await self.runs_of(ns, name):
                if r.id == run:
                    result = _result(r, spec)
                    if result != last:
                        print(f"run {run}: {result}", file=sys.stderr)
                        last = result
                    if result in ("Succeeded", "Failed", "Skipped", "Cancelled"):
                        return 0 if result == "Succeeded" else 1
            await asyncio.sleep(1)
        raise CliError(f"run {run} did not finish within {self.args.timeout}s")

    async def retry(self) -> int:
        o = await self.get_bgj(self.args.name)
        last = o.get("status", {}).get("lastRun", {})
        if last.get("result") not in ("Failed", "Cancelled", "Skipped"):
            raise CliError(f"the last run of {self.args.name} did not fail (result {last.get('result', 'none')})", 1)
        return await self.trigger(nonce=f"retry-{last['id']}"[:63])

    async def backfill(self) -> int:
        o = await self.get_bgj(self.args.name)
        md = o["metadata"]
        spec = BackgroundJobSpec.model_validate(o["spec"])
        cron = schedule.cron_of(spec.schedule, spec.every)
        if cron is None:
            raise CliError(f"{md['name']} has no schedule to backfill", 2)
        start, end = _when(self.args.from_), _when(self.args.to)
        times = list(
            schedule.times_between(cron, spec.time_zone, start - dt.timedelta(seconds=1), end, limit=self.args.max + 1)
        )
        if len(times) > self.args.max:
            raise CliError(f"{md['name']} has more than {self.args.max} scheduled times in that range; raise --max", 2)
        cronjob = await self.kube.get(CRONJOBS, md["name"], md["namespace"])
        sem = asyncio.Semaphore(self.args.parallel)
        created = 0

        async def one(t: dt.datetime) -> None:
            nonlocal created
            async with sem:
                run = names.run_id(md["name"], "backfill", t.isoformat())
                job = _job_from_cronjob(cronjob, o, run, t)
                try:
                    await self.kube.create(JOBS, job)
                    created += 1
                except ApiError as e:
                    if not e.conflict:
                        raise
                if self.args.wait:
                    await self.wait_run(md["namespace"], md["name"], run, o["spec"])

        await asyncio.gather(*(one(t) for t in times))
        print(
            f"backfill of {md['name']}: {len(times)} scheduled times, {created} runs created, "
            f"{len(times) - created} existed already"
        )
        return 0

    async def set_suspend(self, value: bool) -> int:
        targets = await self.list_bgjs() if self.args.all else [await self.get_bgj(self.args.name)]
        for o in targets:
            patch: dict[str, Any] = {"spec": {"suspend": value}}
            if not value:  # resuming also lifts a quarantine: failures before now no longer count
                patch["metadata"] = {
                    "annotations": {names.PREFIX + "/resumed-at": self.now.strftime("%Y-%m-%dT%H:%M:%SZ")}
                }
            await self.kube.patch(BACKGROUNDJOBS, o["metadata"]["name"], patch, o["metadata"]["namespace"])
            print(f"{o['metadata']['namespace']}/{o['metadata']['name']} {'suspended' if value else 'resumed'}")
        return 0

    async def stop(self) -> int:
        cluster = self.ns is None
        ns = CLUSTER_STOP_NAMESPACE if cluster else self.ns
        cm = {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {
                "name": STOP_CONFIGMAP + ("-cluster" if cluster else ""),
                "namespace": ns,
                "labels": {names.ANN_STOP: "cluster" if cluster else "namespace"},
            },
            "data": {"reason": self.args.reason, "since": self.now.isoformat()},
        }
        try:
            await self.kube.create(CONFIGMAPS, cm)
        except ApiError as e:
            if not e.conflict:
                raise
        scope = "the cluster" if cluster else f"namespace {ns}"
        print(f"emergency stop in {scope}: no run will be admitted ({self.args.reason})")
        if self.args.kill:
            killed = 0
            for job in await self.kube.list(JOBS, self.ns, label_selector=names.LABEL_BGJ):
                v = attempt_view(job)
                if v and v.active:
                    await self.kube.patch(
                        JOBS,
                        v.name,
                        {
                            "spec": {"suspend": True},
                            "metadata": {
                                "annotations": {
                                    names.ANN_GATE: f"Waiting: EmergencyStop: attempt cancelled by stop --kill ({self.args.reason})",
                                    names.PREFIX + "/cancelled-at": self.now.strftime("%Y-%m-%dT%H:%M:%SZ"),
                                }
                            },
                        },
                        v.namespace,
                    )
                    await _event(
                        self.kube,
                        job,
                        "Cancelled",
                        f"attempt cancelled by emergency stop: {self.args.reason}; "
                        "it runs again when the stop is lifted",
                    )
                    killed += 1
            print(f"{killed} running attempts cancelled; they wait and run again after `nightshift start`")
        return 0

    async def start(self) -> int:
        cluster = self.ns is None
        name = STOP_CONFIGMAP + ("-cluster" if cluster else "")
        await self.kube.delete(CONFIGMAPS, name, CLUSTER_STOP_NAMESPACE if cluster else self.ns)
        print(f"emergency stop lifted in {'the cluster' if cluster else 'namespace ' + str(self.ns)}")
        return 0


def _result(run: Any, spec: BackgroundJobSpec) -> str:
    from nightshift.core.gate import retry_rule
    from nightshift.core.runs import state

    return state(run, retry_rule(spec))[0]


def _param(text: str) -> tuple[str, Any]:
    if "=" not in text:
        raise CliError(f"--param {text!r}: use key=value", 2)
    key, value = text.split("=", 1)
    try:
        return key, json.loads(value)
    except ValueError:
        return key, value


def _when(text: str) -> dt.datetime:
    try:
        t = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as e:
        raise CliError(f"{text!r} is not a time: use ISO 8601, e.g. 2026-11-01T00:00:00Z", 2) from e
    return t if t.tzinfo else t.replace(tzinfo=dt.UTC)


def _job_from_cronjob(cronjob: dict[str, Any], bgj: dict[str, Any], run: str, t: dt.datetime) -> dict[str, Any]:
    """A backfill run: the CronJob's own template, named and stamped like every operator-created run."""
    template = cronjob["spec"]["jobTemplate"]
    md = bgj["metadata"]
    spec = json.loads(json.dumps(template["spec"]))
    spec["suspend"] = True
    spec["template"]["metadata"].setdefault("labels", {})[names.LABEL_RUN] = run
    for c in spec["template"]["spec"]["containers"]:
        for e in c.get("env", []):
            if e["name"] == "NIGHTSHIFT_RUN_ID":
                e.pop("valueFrom", None)
                e["value"] = run
        c.setdefault("env", []).append({"name": "NIGHTSHIFT_SCHEDULED_TIME", "value": t.strftime("%Y-%m-%dT%H:%M:%SZ")})
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": run,
            "namespace": md["namespace"],
            "labels": {**template["metadata"].get("labels", {}), names.LABEL_RUN: run},
            "annotations": {
                **template["metadata"].get("annotations", {}),
                names.ANN_TRIGGER: "backfill",
                names.ANN_SCHEDULED: t.strftime("%Y-%m-%dT%H:%M:%SZ"),
                names.ANN_ATTEMPT: "1",
            },
            "ownerReferences": [
                {
                    "apiVersion": bgj["apiVersion"],
                    "kind": "BackgroundJob",
                    "name": md["name"],
                    "uid": md["uid"],
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
        },
        "spec": spec,
    }


async def _event(kube: Kube, obj: dict[str, Any], reason: str, message: str) -> None:
    md = obj["metadata"]
    involved = {
        "apiVersion": obj.get("apiVersion", "batch/v1"),
        "kind": obj.get("kind", "Job"),
        "name": md["name"],
        "namespace": md["namespace"],
        "uid": md["uid"],
    }
    await kube.create(EVENTS, event_body(involved, "Warning", reason, message, component="nightshift-cli"))


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="nightshift", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("-n", "--namespace", help="namespace (default: the kubeconfig's)")
    p.add_argument("-A", "--all-namespaces", action="store_true")
    p.add_argument("-o", "--output", choices=["table", "json", "yaml", "dot"], default="table")
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("status", help="jobs, their last and next runs, and the overall health")
    s.add_argument("name", nargs="?")
    sub.add_parser("describe", help="conditions, recent runs and next runs").add_argument("name")
    h = sub.add_parser("history", help="runs and attempts (PostgreSQL with --dsn, else the Jobs that exist)")
    h.add_argument("name")
    h.add_argument("--dsn", help="history database (default: $NIGHTSHIFT_HISTORY_DSN)")
    h.add_argument("--limit", type=int, default=20)
    sub.add_parser("logs", help="output of the last run's pod").add_argument("name")
    sub.add_parser("graph", help="dependencies as text, or DOT with -o dot")
    for cmd, helptext in (("trigger", "run now, once per call"), ("retry", "run a failed job again")):
        t = sub.add_parser(cmd, help=helptext)
        t.add_argument("name")
        t.add_argument("--param", action="append", metavar="KEY=VALUE", help="override a param for this run only")
        t.add_argument("--wait", action="store_true", help="wait for the result; exit 1 if the run fails")
        t.add_argument("--timeout", type=float, default=600)
    b = sub.add_parser("backfill", help="runs for each scheduled time in a range")
    b.add_argument("name")
    b.add_argument("--from", dest="from_", required=True)
    b.add_argument("--to", required=True)
    b.add_argument("--parallel", type=int, default=2, help="runs created (and, with --wait, awaited) at a time")
    b.add_argument("--max", type=int, default=100)
    b.add_argument("--wait", action="store_true")
    b.add_argument("--timeout", type=float, default=3600)
    for cmd in ("suspend", "resume"):
        c = sub.add_parser(cmd, help=f"{cmd} one job, or --all in the namespace (-A: every namespace)")
        c.add_argument("name", nargs="?")
        c.add_argument("--all", action="store_true")
    st = sub.add_parser("stop", help="emergency stop: admit no run (namespace, or -A for the cluster)")
    st.add_argument("--kill", action="store_true", help="also cancel running attempts (they run again after start)")
    st.add_argument("--reason", default="emergency stop")
    sub.add_parser("start", help="lift the emergency stop")
    return p


async def amain(args: argparse.Namespace) -> int:
    async with Kube.from_env() as kube:
        cli = Cli(kube, args)
        command = args.command
        if command in ("suspend", "resume"):
            if bool(args.name) == bool(args.all):
                raise CliError(f"{command}: give a NAME or --all", 2)
            return await cli.set_suspend(command == "suspend")
        if command == "history" and not args.dsn:
            import os

            args.dsn = os.environ.get("NIGHTSHIFT_HISTORY_DSN")
        handler = {
            "status": cli.status,
            "describe": cli.describe,
            "history": cli.history,
            "logs": cli.logs,
            "graph": cli.graph,
            "trigger": cli.trigger,
            "retry": cli.retry,
            "backfill": cli.backfill,
            "stop": cli.stop,
            "start": cli.start,
        }[command]
        return await handler()


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.output == "table":
        args.output = None
    try:
        return asyncio.run(amain(args))
    except CliError as e:
        print(f"nightshift: {e}", file=sys.stderr)
        return e.code
    except ApiError as e:
        print(f"nightshift: the API server refused: {e.message}", file=sys.stderr)
        return 3 if e.not_found else 1
    except Exception as e:
        print(f"nightshift: {type(e).__name__}: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
