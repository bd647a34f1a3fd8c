"""BackgroundJobRun requests as the CLI makes them: names, bodies, and what a request's status means.

A request is one asked-for run (`nightshift trigger`, `backfill`, `retry`); the operator creates the
run for it and writes the result back into its status. Everything here is pure, so the names and
the wait loop's decisions are unit-tested without a cluster.
"""

from __future__ import annotations

import datetime as dt
import getpass
import json
import secrets
import socket
import string
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from nightshift.api import names
from nightshift.api.models import API_VERSION, BackgroundJobSpec
from nightshift.core import schedule
from nightshift.core.runs import parse_time

KIND = "BackgroundJobRun"
MAX_NAME = 253  # a BackgroundJobRun is named like any object: a DNS subdomain, at most 253 characters
# ... but the names here stay within 63, so a request's name also fits a label value (a run's Jobs
# can point back at their request): the job's part is shortened, the digest or time stays whole.
MAX_LABEL_NAME = 63
ANN_REQUEST_ID = f"{names.PREFIX}/request-id"  # the --id a request was named from
_RANDOM = string.ascii_lowercase + string.digits


class RequestError(Exception):
    """A request that cannot be made as asked; `code` is the CLI's exit code."""

    def __init__(self, message: str, code: int = 2) -> None:
        super().__init__(message)
        self.code = code


def utc(t: dt.datetime) -> str:
    return t.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# -- names ------------------------------------------------------------------------------------------
def random_name(job: str, now: dt.datetime, suffix: str | None = None) -> str:
    """`<job>-<UTC yyyymmddhhmmss>-<4 random chars>`: a new request on every call."""
    suffix = suffix if suffix is not None else "".join(secrets.choice(_RANDOM) for _ in range(4))
    tail = f"-{now.astimezone(dt.UTC).strftime('%Y%m%d%H%M%S')}-{suffix}"
    return _fit(job, tail)


def _fit(job: str, tail: str) -> str:
    return job[: MAX_LABEL_NAME - len(tail)] + tail


def id_name(job: str, key: str) -> str:
    """`<job>-i<digest>` from `--id KEY`: the same command run again names the same request."""
    return _fit(job, f"-i{names.digest(job, 'id', key)}")


def backfill_name(job: str, scheduled: dt.datetime) -> str:
    """`<job>-b<digest>` from the scheduled time: re-running a backfill asks for nothing new."""
    return _fit(job, f"-b{names.digest(job, 'backfill', utc(scheduled))}")


def retry_name(job: str, run: str, params: Mapping[str, Any] | None) -> str:
    """`<job>-r<digest>` from the failed run (and the params): retrying twice makes one retry."""
    return _fit(job, f"-r{names.digest(job, 'retry', run, json.dumps(params or {}, sort_keys=True))}")


def default_reason(verb: str) -> str:
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no passwd entry (containers) and no $USER
        user = "unknown"
    return f"nightshift {verb} by {user}@{socket.gethostname()}"[:1024]


# -- bodies -----------------------------------------------------------------------------------------
def body(
    bgj: Mapping[str, Any],
    name: str,
    *,
    params: Mapping[str, Any] | None = None,
    reason: str | None = None,
    scheduled_time: dt.datetime | None = None,
    annotations: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """A BackgroundJobRun for `bgj` (a BackgroundJob as the API returned it), in its namespace.

    The BackgroundJob owns it without being its controller, so deleting the job deletes its
    requests (and, through them, nothing else: the operator owns the runs).
    """
    md = bgj["metadata"]
    spec: dict[str, Any] = {"backgroundJob": md["name"]}
    if params:
        spec["params"] = dict(params)
    if scheduled_time is not None:
        spec["scheduledTime"] = utc(scheduled_time)
    if reason:
        spec["reason"] = reason[:1024]
    metadata: dict[str, Any] = {
        "name": name,
        "namespace": md["namespace"],
        "labels": {names.LABEL_BGJ: md["name"]},
        "ownerReferences": [
            {
                "apiVersion": bgj.get("apiVersion", API_VERSION),
                "kind": "BackgroundJob",
                "name": md["name"],
                "uid": md["uid"],
                "controller": False,
                "blockOwnerDeletion": False,
            }
        ],
    }
    if annotations:
        metadata["annotations"] = dict(annotations)
    return {"apiVersion": API_VERSION, "kind": KIND, "metadata": metadata, "spec": spec}


def same_request(existing: Mapping[str, Any], wanted: Mapping[str, Any], *, compare_reason: bool) -> bool:
    """Whether an existing request asks for what `wanted` asks for (so AlreadyExists is success).

    A defaulted reason names the user and host, so it is compared only when given explicitly.
    """
    a, b = existing.get("spec") or {}, wanted.get("spec") or {}
    return (
        a.get("backgroundJob") == b.get("backgroundJob")
        and (a.get("params") or {}) == (b.get("params") or {})
        and parse_time(a.get("scheduledTime")) == parse_time(b.get("scheduledTime"))
        and (not compare_reason or a.get("reason") == b.get("reason"))
    )


def differences(existing: Mapping[str, Any], wanted: Mapping[str, Any], *, compare_reason: bool) -> list[str]:
    """The spec fields `same_request` found different, for the error message."""
    a, b = existing.get("spec") or {}, wanted.get("spec") or {}
    differ = {
        "backgroundJob": a.get("backgroundJob") != b.get("backgroundJob"),
        "params": (a.get("params") or {}) != (b.get("params") or {}),
        "scheduledTime": parse_time(a.get("scheduledTime")) != parse_time(b.get("scheduledTime")),
        "reason": compare_reason and a.get("reason") != b.get("reason"),
    }
    return [k for k, v in differ.items() if v]


# -- backfill ---------------------------------------------------------------------------------------
def backfill_times(spec: BackgroundJobSpec, start: dt.datetime, end: dt.datetime, most: int) -> list[dt.datetime]:
    """The job's scheduled times from `start` to `end`, both included, in UTC; at most `most`."""
    cron = schedule.cron_of(spec.schedule, spec.every)
    if cron is None:
        raise RequestError("the job has no schedule (schedule or every) to backfill")
    if end < start:
        raise RequestError(f"--to {utc(end)} is before --from {utc(start)}")
    if most < 1:
        raise RequestError("--max must be at least 1")
    times = list(schedule.times_between(cron, spec.time_zone, start - dt.timedelta(seconds=1), end, limit=most + 1))
    if len(times) > most:
        raise RequestError(f"more than {most} scheduled times in that range; raise --max or narrow the range")
    return times


# -- status -----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Outcome:
    """A finished request: its phase and the CLI's exit code (0 only for Succeeded)."""

    phase: str
    code: int
    summary: str
    message: str | None = None


def _condition(obj: Mapping[str, Any], type_: str) -> Mapping[str, Any]:
    conditions: Iterable[Mapping[str, Any]] = (obj.get("status") or {}).get("conditions") or []
    return next((c for c in conditions if c.get("type") == type_), {})


def phase(obj: Mapping[str, Any]) -> str:
    return str((obj.get("status") or {}).get("phase") or "Pending")


def progress(obj: Mapping[str, Any]) -> str:
    """One line for a request's current state, printed when it changes while waiting."""
    st = obj.get("status") or {}
    parts = [phase(obj)]
    if st.get("attempts"):
        parts.append(f"attempt {st['attempts']}")
    if st.get("reason"):
        parts.append(str(st["reason"]))
    head, *rest = parts
    return f"bgjr/{obj['metadata']['name']}: {head}" + (f" ({', '.join(rest)})" if rest else "")


def outcome(obj: Mapping[str, Any]) -> Outcome | None:
    """None while the request's run has not ended (condition Finished not True), else its outcome.

    Succeeded is read from the Succeeded condition, with the phase as a fallback; anything that
    finished without succeeding (Failed, Skipped, Cancelled) exits 1.
    """
    if _condition(obj, "Finished").get("status") != "True":
        return None
    st = obj.get("status") or {}
    succeeded = _condition(obj, "Succeeded").get("status")
    ph = phase(obj)
    ok = succeeded == "True" if succeeded in ("True", "False") else ph == "Succeeded"
    if ok:
        ph = "Succeeded"
    elif ph == "Succeeded" or ph not in ("Failed", "Skipped", "Cancelled"):
        ph = "Failed"
    details = [f"reason {st['reason']}" if st.get("reason") else None]
    details.append(f"exit code {st['exitCode']}" if st.get("exitCode") is not None else None)
    details.append(f"{st['attempts']} attempts" if st.get("attempts") else None)
    details.append(f"run {st['runId']}" if st.get("runId") else None)
    shown = [d for d in details if d]
    summary = f"bgjr/{obj['metadata']['name']}: {ph}" + (f" ({', '.join(shown)})" if shown else "")
    return Outcome(phase=ph, code=0 if ok else 1, summary=summary, message=st.get("message") or None)
