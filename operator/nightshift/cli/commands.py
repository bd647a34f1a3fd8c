"""`nightshift` (also `kubectl nightshift`): status, history and run controls for BackgroundJobs.

Everything goes through the API server as a user would with kubectl: a trigger, a backfill or a
retry creates BackgroundJobRuns (one per asked-for run) that the operator turns into runs and whose
status carries the result (`kubectl wait --for=condition=Finished bgjr/NAME`); stops are ConfigMaps
the gate reads. The CLI holds no state of its own.
Exit codes: 0 ok, 1 a run failed or the API refused, 2 bad usage, 3 not found.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import sys
import time
from collections.abc import Coroutine, Iterable
from typing import Any

import aiohttp

from nightshift.api import names
from nightshift.api.models import BackgroundJobSpec
from nightshift.cli import requests
from nightshift.cli.output import age, condition, emit, failing, health, table
from nightshift.cli.requests import RequestError
from nightshift.core import graph, schedule
from nightshift.core.runs import attempt_view, group, with_pod
from nightshift.infra.credentials import CredentialsError, for_cli
from nightshift.infra.kube import (
    BACKGROUNDJOBRUNS,
    BACKGROUNDJOBS,
    CONFIGMAPS,
    EVENTS,
    JOBS,
    PODS,
    ApiError,
    Kube,
    event_body,
)

STOP_CONFIGMAP = "nightshift-stop"
CLUSTER_STOP_NAMESPACE = "default"


class CliError(Exception):
    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


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
                    age(st.get("lastSuccessfulTime"), self.now),
                    age(st.get("nextScheduleTime"), self.now),
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

    # -- run requests (BackgroundJobRuns) -------------------------------------------------------------
    def _crd_missing(self) -> CliError:
        return CliError(
            f"the API server does not serve {BACKGROUNDJOBRUNS.plural}.{BACKGROUNDJOBRUNS.group}: the BackgroundJobRun "
            "CRD is not installed (kubectl apply -f crds/, or upgrade the chart)",
            3,
        )

    async def create_request(self, wanted: dict[str, Any], *, compare_reason: bool) -> tuple[dict[str, Any], bool]:
        """Create `wanted`; an existing request with the same spec is success. Returns (object, created)."""
        md = wanted["metadata"]
        try:
            return await self.kube.create(BACKGROUNDJOBRUNS, wanted, md["namespace"]), True
        except ApiError as e:
            if e.not_found:
                raise self._crd_missing() from e
            if not e.conflict:
                raise
        try:
            existing = await self.kube.get(BACKGROUNDJOBRUNS, md["name"], md["namespace"])
        except ApiError as e:
            if e.not_found:  # created and already pruned, or deleted in between: ask the user to look
                raise CliError(f"bgjr/{md['name']} existed a moment ago and is gone now; run the command again") from e
            raise
        if not requests.same_request(existing, wanted, compare_reason=compare_reason):
            fields = ", ".join(requests.differences(existing, wanted, compare_reason=compare_reason))
            raise CliError(
                f"bgjr/{md['name']} already exists in namespace {md['namespace']} and asks for something else "
                f"(differs in: {fields}); use another --id, or delete it first",
                1,
            )
        return existing, False

    def _announce(self, obj: dict[str, Any], created: bool) -> None:
        md = obj["metadata"]
        if self.args.output:
            return
        print(
            f"bgjr/{md['name']} " + ("created" if created else f"exists already (same request, {requests.phase(obj)})")
        )
        print(
            f"wait for it: kubectl wait --for=condition=Finished bgjr/{md['name']} -n {md['namespace']}",
            file=sys.stderr,
        )

    async def _request_run(
        self,
        o: dict[str, Any],
        name: str,
        params: dict[str, Any],
        reason: str,
        *,
        compare_reason: bool,
        annotations: dict[str, str] | None = None,
    ) -> int:
        wanted = requests.body(o, name, params=params, reason=reason, annotations=annotations)
        obj, created = await self.create_request(wanted, compare_reason=compare_reason)
        self._announce(obj, created)
        if not self.args.wait:
            if self.args.output:
                emit(obj, self.args.output, "")
            return 0
        result, final = await self.wait_request(obj, self.args.timeout)
        emit(final, self.args.output, result.summary + (f"\n  {result.message}" if result.message else ""))
        return result.code

    async def trigger(self) -> int:
        o = await self.get_bgj(self.args.name)
        params = dict(_param(p) for p in self.args.param or [])
        job = o["metadata"]["name"]
        if self.args.id is not None:
            if not self.args.id:
                raise CliError("--id needs a non-empty key", 2)
            name = requests.id_name(job, self.args.id)
            annotations = {requests.ANN_REQUEST_ID: self.args.id}
        else:
            name, annotations = requests.random_name(job, self.now), None
        reason = self.args.reason or requests.default_reason("trigger")
        return await self._request_run(
            o, name, params, reason, compare_reason=self.args.reason is not None, annotations=annotations
        )

    async def retry(self) -> int:
        o = await self.get_bgj(self.args.name)
        md = o["metadata"]
        last = o.get("status", {}).get("lastRun") or {}
        runs = await self.runs_of(md["namespace"], md["name"])
        if last.get("result") in ("Failed", "Cancelled", "Skipped"):
            run_id = str(last["id"])
        else:
            # the newest run that failed for good, even while a newer run (such as its retry) is going
            spec = BackgroundJobSpec.model_validate(o["spec"])
            bad = [r for r in runs if _result(r, spec) == "Failed"]
            if not bad:
                raise CliError(f"the last run of {md['name']} did not fail (result {last.get('result', 'none')})", 1)
            run_id = bad[-1].id
        run = next((r for r in runs if r.id == run_id), None)
        if run is None:
            print(
                f"nightshift: the Jobs of run {run_id} are gone, so its params are unknown; "
                "retrying with the job's own params (and any --param)",
                file=sys.stderr,
            )
        before = dict(run.first.params or {}) if run else {}
        params = {**before, **dict(_param(p) for p in self.args.param or [])}
        name = requests.retry_name(md["name"], run_id, params)
        return await self._request_run(o, name, params, self.args.reason or f"retry of {run_id}", compare_reason=False)

    async def wait_request(self, obj: dict[str, Any], timeout: float) -> tuple[requests.Outcome, dict[str, Any]]:
        """Watch one request until its Finished condition is True (re-reading it when a watch ends)."""
        md = obj["metadata"]
        name, ns = md["name"], md["namespace"]
        deadline = time.monotonic() + timeout
        shown: str | None = None

        def seen(current: dict[str, Any]) -> requests.Outcome | None:
            nonlocal shown
            line = requests.progress(current)
            if line != shown:
                print(line, file=sys.stderr)
                shown = line
            return requests.outcome(current)

        while True:
            try:
                current = await self.kube.get(BACKGROUNDJOBRUNS, name, ns)
            except ApiError as e:
                if e.not_found:
                    raise CliError(f"bgjr/{name} was deleted before its run finished", 1) from e
                raise
            if result := seen(current):
                return result, current
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise CliError(f"bgjr/{name} did not finish within {timeout:g}s (phase {requests.phase(current)})", 1)
            try:
                async with asyncio.timeout(remaining):
                    async for kind, event in self.kube.watch(
                        BACKGROUNDJOBRUNS,
                        ns,
                        field_selector=f"metadata.name={name}",
                        resource_version=current["metadata"].get("resourceVersion"),
                        timeout_seconds=max(1, min(int(remaining), 120)),
                    ):
                        if kind == "DELETED":
                            raise CliError(f"bgjr/{name} was deleted before its run finished", 1)
                        if kind in ("ADDED", "MODIFIED") and (result := seen(event)):
                            return result, event
            except TimeoutError:
                continue  # the deadline: the next read reports the timeout with the latest phase
            except (ApiError, aiohttp.ClientError):  # 410 Gone, a dropped connection: read again, then watch
                await asyncio.sleep(1)

    async def backfill(self) -> int:
        o = await self.get_bgj(self.args.name)
        md = o["metadata"]
        spec = BackgroundJobSpec.model_validate(o["spec"])
        start, end = _when(self.args.from_), _when(self.args.to)
        try:
            times = requests.backfill_times(spec, start, end, self.args.max)
        except RequestError as e:
            raise CliError(f"backfill of {md['name']}: {e}", e.code) from e
        reason = self.args.reason or requests.default_reason("backfill")
        wanted = [
            requests.body(o, requests.backfill_name(md["name"], t), scheduled_time=t, reason=reason) for t in times
        ]
        if self.args.dry_run:
            existing = {r["metadata"]["name"] for r in await self.list_requests(md["namespace"], md["name"])}
            rows = [
                [
                    w["spec"]["scheduledTime"],
                    w["metadata"]["name"],
                    "exists" if w["metadata"]["name"] in existing else "new",
                ]
                for w in wanted
            ]
            text = table(rows, ["SCHEDULED", "REQUEST", "STATE"])
            new = sum(1 for r in rows if r[2] == "new")
            emit(
                [dict(zip(["scheduledTime", "name", "state"], r, strict=True)) for r in rows],
                self.args.output,
                f"{text}\n\nbackfill of {md['name']} (dry run): {len(times)} scheduled times, "
                f"{new} requests would be created, {len(times) - new} exist already",
            )
            return 0
        sem = asyncio.Semaphore(max(1, self.args.parallel))
        made: list[tuple[dict[str, Any], bool]] = []

        async def one(w: dict[str, Any]) -> None:
            async with sem:
                made.append(await self.create_request(w, compare_reason=False))

        await _all(one(w) for w in wanted)
        created = sum(1 for _, c in made if c)
        summary = (
            f"backfill of {md['name']}: {len(times)} scheduled times, {created} requests created, "
            f"{len(times) - created} existed already"
        )
        if not self.args.wait:
            emit([obj for obj, _ in made], self.args.output, summary)
            return 0
        print(summary, file=sys.stderr)
        deadline = time.monotonic() + self.args.timeout
        results: list[tuple[requests.Outcome, dict[str, Any]]] = []

        async def wait(obj: dict[str, Any]) -> None:
            async with sem:
                results.append(await self.wait_request(obj, max(0.0, deadline - time.monotonic())))

        await _all(wait(obj) for obj, _ in made)
        results.sort(key=lambda r: str(r[1]["spec"].get("scheduledTime")))
        failed = [r for r, _ in results if r.code]
        emit(
            [obj for _, obj in results],
            self.args.output,
            "\n".join(r.summary for r, _ in results)
            + f"\n\n{len(results) - len(failed)} succeeded, {len(failed)} did not",
        )
        return 1 if failed else 0

    async def list_requests(self, ns: str, job: str) -> list[dict[str, Any]]:
        try:
            items = await self.kube.list(BACKGROUNDJOBRUNS, ns)
        except ApiError as e:
            if e.not_found:
                raise self._crd_missing() from e
            raise
        # by spec, not by label: a request written by hand with kubectl may carry no labels
        mine = [r for r in items if (r.get("spec") or {}).get("backgroundJob") == job]
        return sorted(mine, key=lambda r: (r["metadata"].get("creationTimestamp") or "", r["metadata"]["name"]))

    async def runs(self) -> int:
        o = await self.get_bgj(self.args.name)
        md = o["metadata"]
        items = await self.list_requests(md["namespace"], md["name"])
        rows = []
        for r in items:
            st = r.get("status") or {}
            rows.append(
                [
                    r["metadata"]["name"],
                    requests.phase(r),
                    st.get("attempts", 0),
                    age(st.get("startTime"), self.now),
                    age(st.get("completionTime"), self.now),
                    st.get("reason"),
                    (r.get("spec") or {}).get("reason"),
                ]
            )
        text = table(rows, ["NAME", "PHASE", "ATTEMPTS", "STARTED", "FINISHED", "REASON", "REQUESTED"])
        emit(items, self.args.output, text if items else f"no BackgroundJobRuns for {md['name']} in {md['namespace']}")
        return 0

    async def set_suspend(self, value: bool) -> int:
        targets = await self.list_bgjs() if self.args.all else [await self.get_bgj(self.args.name)]
        for o in targets:
            patch: dict[str, Any] = {"spec": {"suspend": value}}
            if not value:  # resuming also lifts a quarantine: failures before now no longer count
                patch["metadata"] = {"annotations": {names.ANN_RESUMED: self.now.strftime("%Y-%m-%dT%H:%M:%SZ")}}
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


async def _all(aws: Iterable[Coroutine[Any, Any, None]]) -> None:
    """Await all; the first failure cancels the rest and is raised as itself (for main's messages)."""
    try:
        async with asyncio.TaskGroup() as tg:
            for aw in aws:
                tg.create_task(aw)
    except ExceptionGroup as group:
        raise group.exceptions[0] from None


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
    p.add_argument(
        "--kubeconfig", metavar="FILE", help="this kubeconfig only (default: $KUBECONFIG, else ~/.kube/config)"
    )
    p.add_argument("--context", help="the kubeconfig context to use (default: its current-context)")
    p.add_argument("-n", "--namespace", help="namespace (default: the context's)")
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
    for cmd, helptext in (
        ("trigger", "ask for one run now: creates a BackgroundJobRun"),
        ("retry", "run the last failed run again, with its params: creates a BackgroundJobRun"),
    ):
        t = sub.add_parser(cmd, help=helptext)
        t.add_argument("name")
        t.add_argument("--param", action="append", metavar="KEY=VALUE", help="override a param for this run only")
        t.add_argument("--reason", help="who asks and why (default: the command, user and host)")
        if cmd == "trigger":
            t.add_argument(
                "--id",
                metavar="KEY",
                help="name the request from KEY, so running the same command again asks for no second run",
            )
        t.add_argument("--wait", action="store_true", help="wait for the result; exit 1 unless the run succeeds")
        t.add_argument("--timeout", type=float, default=600, help="seconds --wait waits (default 600)")
    b = sub.add_parser("backfill", help="one BackgroundJobRun per scheduled time in a range (each time once)")
    b.add_argument("name")
    b.add_argument(
        "--from", dest="from_", required=True, metavar="TIME", help="ISO 8601; a time equal to it is included"
    )
    b.add_argument("--to", required=True, metavar="TIME", help="ISO 8601, included")
    b.add_argument("--dry-run", action="store_true", help="list the times and requests, create nothing")
    b.add_argument("--max", type=int, default=100, help="refuse a range with more scheduled times (default 100)")
    b.add_argument("--reason", help="who asks and why (default: the command, user and host)")
    b.add_argument("--parallel", type=int, default=2, help="requests created (and, with --wait, awaited) at a time")
    b.add_argument("--wait", action="store_true", help="wait for every run; exit 1 unless all succeed")
    b.add_argument("--timeout", type=float, default=3600)
    sub.add_parser("runs", help="the job's BackgroundJobRuns: phase, attempts, times, reasons").add_argument("name")
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
    creds = for_cli(kubeconfig_path=args.kubeconfig, context=args.context, namespace=args.namespace)
    async with Kube(creds) as kube:
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
            "runs": cli.runs,
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
    except CredentialsError as e:
        print(f"nightshift: {e}", file=sys.stderr)
        return 1
    except ApiError as e:
        print(f"nightshift: the API server refused: {e.message}", file=sys.stderr)
        return 3 if e.not_found else 1
    except Exception as e:
        print(f"nightshift: {type(e).__name__}: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
