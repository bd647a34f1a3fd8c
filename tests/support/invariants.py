"""The promise as a check: every run accounted for once, read back from what the cluster keeps.

After a scenario, `assert_accounted` reads one namespace (Jobs, BackgroundJobs, run requests,
events), the operator's /metrics and the PostgreSQL history, and asserts:

1. no attempt twice: one Job per (run, attempt), attempts numbered 1..n, and a further attempt only
   after a failed one (a retry), never after a success;
2. every run that ended is counted once: its final Job carries the ledger's mark with the run's
   result, one event with the ledger's deterministic name says so (count 1), no second end event
   names the run, and history has one row per attempt, the final one with the same result;
3. every scheduled slot of a scheduled job, from its CronJob's creation to its latest scheduled
   run, has exactly one run (scheduled or caught up), or lies inside a MissedRuns event's range;
4. every run request made exactly one run, and a request whose run ended shows the same result;
5. status converged: `status.lastRun` names the newest run and says what its Jobs say, and
   DeadLettered follows the newest completed run;
6. for jobs created after the operator process started (its counters began before their first
   run): `nightshift_runs_total` by job and result equals the counted runs.

It reads independently of the operator's own parsing (labels and annotations by name only), and
waits first for a positive signal: every finished run carries the mark, so the operator has looked.
Pruned runs are gone from the cluster but not from history, which is why slots and counts are
checked against Jobs and history together.
"""

from __future__ import annotations

import datetime as dt
import itertools
import json
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg.rows import dict_row

from nightshift.api import names
from nightshift.core import schedule
from tests.support.cluster import ControlPlane

Obj = dict[str, Any]
END_REASONS = {"RunSucceeded": "Succeeded", "RunFailed": "Failed", "RunSkipped": "Skipped", "RunCancelled": "Cancelled"}


def _time(text: str | None) -> dt.datetime | None:
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00")) if text else None


def _cond(obj: Obj, type_: str) -> Obj | None:
    return next((c for c in (obj.get("status") or {}).get("conditions") or [] if c.get("type") == type_), None)


@dataclass
class Attempt:
    job: str
    bgj: str
    run: str
    number: int
    trigger: str
    scheduled: dt.datetime | None
    request: str | None
    created: dt.datetime
    started: bool
    result: str | None  # Succeeded / Failed from the Job's conditions, Skipped / Cancelled from the outcome
    finished: dt.datetime | None
    counted: str | None
    history_pending: bool

    @classmethod
    def of(cls, job: Obj) -> Attempt:
        md = job["metadata"]
        ann, lab = md.get("annotations") or {}, md.get("labels") or {}
        st = job.get("status") or {}
        result, finished = None, None
        for c in st.get("conditions") or []:
            if c.get("status") == "True" and c.get("type") in ("Complete", "Failed"):
                result = "Succeeded" if c["type"] == "Complete" else "Failed"
                finished = _time(c.get("lastTransitionTime"))
        if result is None and ann.get(names.ANN_OUTCOME):
            result = ann[names.ANN_OUTCOME].split(":")[0].strip()
        return cls(
            job=md["name"],
            bgj=lab.get(names.LABEL_BGJ, ""),
            run=lab.get(names.LABEL_RUN, md["name"]),
            number=int(ann.get(names.ANN_ATTEMPT, "1")),
            trigger=ann.get(names.ANN_TRIGGER, "schedule"),
            scheduled=_time(ann.get(names.ANN_SCHEDULED) or ann.get(names.CRONJOB_SCHEDULED)),
            request=lab.get(names.LABEL_REQUEST),
            created=_time(md["creationTimestamp"]) or dt.datetime.min.replace(tzinfo=dt.UTC),
            started=bool(st.get("startTime")),
            result=result,
            finished=finished,
            counted=ann.get(names.ANN_COUNTED),
            history_pending=names.ANN_HISTORY_PENDING in ann,
        )


@dataclass
class Evidence:
    bgjs: dict[str, Obj]
    cronjobs: dict[str, Obj]
    attempts: list[Attempt]
    requests: dict[str, Obj]
    events: list[Obj]
    history: list[Obj]
    metrics: str | None
    history_kept: bool = False  # a history store was read (pruned runs are there, not gone)
    slots_checked: int = 0  # scheduled slots the checker accounted for (set by `violations`)
    runs: dict[str, list[Attempt]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        by_run: dict[str, list[Attempt]] = defaultdict(list)
        for a in self.attempts:
            by_run[a.run].append(a)
        self.runs = {r: sorted(v, key=lambda a: a.number) for r, v in by_run.items()}

    def ended(self) -> dict[str, tuple[str, str]]:
        """run -> (bgj, result) for runs whose final attempt ended (Jobs), or that history has ended."""
        out: dict[str, tuple[str, str]] = {}
        for row in self.history:
            if row["result"] in END_REASONS.values():
                out.setdefault(row["run_id"], (row["backgroundjob"], row["result"]))
        for run, attempts in self.runs.items():
            last = attempts[-1]
            if last.counted:
                out[run] = (last.bgj, last.counted)
        return out


def gather(cp: ControlPlane, namespace: str, *, history_dsn: str | None, metrics: str | None) -> Evidence:
    """One kubectl call for the cluster's side, one query for history's."""
    kinds = "jobs,cronjobs,backgroundjobs,backgroundjobruns,events"
    items = json.loads(cp.kubectl("get", kinds, "-n", namespace, "-o", "json"))["items"]
    by_kind: dict[str, list[Obj]] = defaultdict(list)
    for o in items:
        by_kind[o["kind"]].append(o)
    jobs = [j for j in by_kind["Job"] if (j["metadata"].get("labels") or {}).get(names.LABEL_BGJ)]
    history: list[Obj] = []
    if history_dsn:
        with psycopg.connect(history_dsn, row_factory=dict_row) as conn:
            try:
                history = conn.execute(
                    "SELECT * FROM nightshift_attempts WHERE namespace = %s", (namespace,)
                ).fetchall()
            except psycopg.errors.UndefinedTable:
                history = []
    return Evidence(
        bgjs={o["metadata"]["name"]: o for o in by_kind["BackgroundJob"]},
        cronjobs={o["metadata"]["name"]: o for o in by_kind["CronJob"]},
        attempts=[Attempt.of(j) for j in jobs],
        requests={o["metadata"]["name"]: o for o in by_kind["BackgroundJobRun"]},
        events=by_kind["Event"],
        history=history,
        metrics=metrics,
        history_kept=bool(history_dsn),
    )


def violations(ev: Evidence, *, metrics_since: dt.datetime | None = None) -> list[str]:
    """Every broken promise, as a sentence; empty when the scenario kept them all."""
    out: list[str] = []
    out += _attempts_once(ev)
    out += _ends_counted_once(ev)
    out += _slots(ev)
    out += _requests(ev)
    out += _status(ev)
    if metrics_since is not None and ev.metrics is not None:
        out += _metrics(ev, metrics_since)
    return out


def _attempts_once(ev: Evidence) -> list[str]:
    out = []
    for run, attempts in ev.runs.items():
        numbers = [a.number for a in attempts]
        if len(set(numbers)) != len(numbers):
            out.append(f"run {run}: attempt numbers twice: {numbers}")
        for a, b in itertools.pairwise(attempts):
            if a.result == "Succeeded":
                out.append(f"run {run}: attempt {b.number} after a succeeded attempt {a.number}")
    rows = Counter((r["run_id"], r["attempt"]) for r in ev.history)
    out += [f"run {run}: attempt {n} has {c} history rows" for (run, n), c in rows.items() if c > 1]
    return out


def _ends_counted_once(ev: Evidence) -> list[str]:
    out = []
    end_events: dict[str, list[Obj]] = defaultdict(list)
    for e in ev.events:
        if e.get("reason") in END_REASONS:
            words = (e.get("message") or "").split()
            if len(words) >= 2 and words[0] == "run":
                end_events[words[1]].append(e)
    history_by_run: dict[str, list[Obj]] = defaultdict(list)
    for r in ev.history:
        history_by_run[r["run_id"]].append(r)
    for run, attempts in ev.runs.items():
        last = attempts[-1]
        if last.counted is None:
            continue
        bgj = ev.bgjs.get(last.bgj)
        posted = end_events.get(run, [])
        if len(posted) != 1:
            out.append(f"run {run} ({last.counted}): {len(posted)} end events")
        elif (posted[0].get("count") or 1) != 1:
            out.append(f"run {run}: its end event has count {posted[0].get('count')}")
        elif END_REASONS[posted[0]["reason"]] != last.counted:
            out.append(f"run {run}: event {posted[0]['reason']} but counted {last.counted}")
        if bgj is not None and posted:
            want = f"{last.bgj[:200]}.{names.digest(bgj['metadata']['uid'], f'end/{run}', size=16)}"
            if posted[0]["metadata"]["name"] != want:
                out.append(f"run {run}: end event {posted[0]['metadata']['name']} is not the ledger's {want}")
        if last.result is not None and last.result != last.counted:
            out.append(f"run {run}: counted {last.counted} but its Job says {last.result}")
        if ev.history_kept:
            rows = {r["attempt"]: r for r in history_by_run.get(run, [])}
            if last.number not in rows:
                out.append(f"run {run}: no history row for its final attempt {last.number}")
            elif rows[last.number]["result"] != last.counted:
                out.append(f"run {run}: history says {rows[last.number]['result']}, counted {last.counted}")
    return out


def _slots(ev: Evidence) -> list[str]:
    out = []
    for name, bgj in ev.bgjs.items():
        spec = bgj.get("spec") or {}
        cron = schedule.cron_of(spec.get("schedule"), spec.get("every"))
        cronjob = ev.cronjobs.get(name)
        # A job suspended since is checked too: the slots run up to its latest scheduled run only.
        if cron is None or cronjob is None or not ev.history_kept:
            continue  # without the history store, pruned runs would look like missing slots
        tz = spec.get("timeZone", "UTC")
        scheduled: Counter[dt.datetime] = Counter()
        runs_seen: set[str] = set()
        for run, attempts in ev.runs.items():
            first = attempts[0]
            if first.bgj == name and first.trigger in ("schedule", "catchup") and first.scheduled:
                scheduled[first.scheduled] += 1
                runs_seen.add(run)
        for r in ev.history:
            if (
                r["backgroundjob"] == name
                and r["trigger"] in ("schedule", "catchup")
                and r["attempt"] == 1
                and r["run_id"] not in runs_seen
                and r["scheduled_time"] is not None
            ):
                scheduled[r["scheduled_time"]] += 1
                runs_seen.add(r["run_id"])
        out += [f"{name}: slot {t.isoformat()} has {c} runs" for t, c in scheduled.items() if c > 1]
        if not scheduled:
            continue
        # Slots count from the CronJob's creation (where the CronJob controller starts) and, for a job
        # suspended and resumed since, from the resume: slots while suspended were refused, not missed.
        since = _time(cronjob["metadata"]["creationTimestamp"])
        resumed = _cond(bgj, "Suspended")
        if resumed is not None and resumed.get("status") == "False":
            since = max(filter(None, [since, _time(resumed.get("lastTransitionTime"))]))
        assert since is not None
        missed_ranges = []
        for e in ev.events:
            if e.get("reason") == "MissedRuns" and (e.get("involvedObject") or {}).get("name") == name:
                words = e["message"].split()
                if "between" in words:
                    i = words.index("between")
                    lo, hi = _time(words[i + 1]), _time(words[i + 3])
                    missed_ranges.append((lo, hi))
        for slot in schedule.times_between(cron, tz, since, max(scheduled), limit=10_000):
            ev.slots_checked += 1
            if slot in scheduled:
                continue
            if not any(lo and hi and lo < slot < hi for lo, hi in missed_ranges):
                out.append(f"{name}: scheduled slot {slot.isoformat()} has no run and no MissedRuns record")
    return out


def _requests(ev: Evidence) -> list[str]:
    out = []
    for name, req in ev.requests.items():
        runs = {a.run for a in ev.attempts if a.request == name}
        if len(runs) > 1:
            out.append(f"request {name}: {len(runs)} runs {sorted(runs)}")
        phase = (req.get("status") or {}).get("phase")
        for run in runs:
            counted = ev.runs[run][-1].counted
            if counted and phase not in (counted, None) and phase in END_REASONS.values():
                out.append(f"request {name}: phase {phase}, its run {run} ended {counted}")
    return out


def _status(ev: Evidence) -> list[str]:
    out = []
    for name, bgj in ev.bgjs.items():
        st = bgj.get("status") or {}
        last = st.get("lastRun")
        mine = {run: a for run, a in ev.runs.items() if a[0].bgj == name}
        if not mine:
            continue
        if not last:
            out.append(f"{name}: runs exist but status.lastRun is empty")
            continue
        if last["id"] not in mine:
            continue  # the named run was pruned since: history keeps it
        final = mine[last["id"]][-1]
        if final.counted and last.get("result") != final.counted:
            out.append(f"{name}: status.lastRun {last['id']} says {last.get('result')}, its Job {final.counted}")
        completed = [a[-1] for a in mine.values() if a[-1].counted in ("Succeeded", "Failed") and a[-1].finished]
        dead = _cond(bgj, "DeadLettered")
        quiet = all(a[-1].counted for a in mine.values())  # nothing still waiting, running or retrying
        if completed and dead is not None and quiet:
            newest = max(completed, key=lambda a: (a.finished, a.run))
            want = "True" if newest.counted == "Failed" else "False"
            if dead.get("status") != want:
                out.append(
                    f"{name}: DeadLettered {dead.get('status')}, newest completed run {newest.run} {newest.counted}"
                )
    return out


def _metrics(ev: Evidence, since: dt.datetime) -> list[str]:
    from prometheus_client.parser import text_string_to_metric_families

    assert ev.metrics is not None
    new = {n for n, b in ev.bgjs.items() if (_time(b["metadata"]["creationTimestamp"]) or since) > since}
    got: Counter[tuple[str, str]] = Counter()
    for family in text_string_to_metric_families(ev.metrics):
        for s in family.samples:
            if s.name == "nightshift_runs_total" and s.labels.get("namespace") in {
                b["metadata"]["namespace"] for b in ev.bgjs.values()
            }:
                if s.labels["backgroundjob"] in new:
                    got[(s.labels["backgroundjob"], s.labels["result"])] += int(s.value)
    want: Counter[tuple[str, str]] = Counter((b, r.lower()) for b, r in ev.ended().values() if b in new)
    return [
        f"nightshift_runs_total{{backgroundjob={k[0]},result={k[1]}}} is {got[k]}, {want[k]} runs ended"
        for k in set(got) | set(want)
        if got[k] != want[k]
    ]


def settled(ev: Evidence) -> bool:
    """The positive signal: every run whose final Job ended carries the ledger's mark, and no mark
    still says its history rows are pending."""
    return all(a[-1].counted and not a[-1].history_pending for a in ev.runs.values() if a[-1].result is not None)


def assert_accounted(
    cp: ControlPlane,
    namespace: str,
    *,
    history_dsn: str | None = None,
    metrics: Callable[[], str] | None = None,
    metrics_since: dt.datetime | None = None,
    timeout: float = 30,
) -> Evidence:
    """Wait until every ended run is counted, then assert every promise. `metrics` returns the
    operator's /metrics text; `metrics_since` is when that process started."""
    deadline = time.monotonic() + timeout
    while True:
        ev = gather(cp, namespace, history_dsn=history_dsn, metrics=metrics() if metrics else None)
        if settled(ev) or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    uncounted = [
        f"{a[-1].job} ended {a[-1].result}" + (" (history pending)" if a[-1].counted else "")
        for a in ev.runs.values()
        if a[-1].result and (not a[-1].counted or a[-1].history_pending)
    ]
    assert not uncounted, f"not counted after {timeout}s: {uncounted}"
    problems = violations(ev, metrics_since=metrics_since if metrics else None)
    assert not problems, "\n".join(problems)
    return ev
