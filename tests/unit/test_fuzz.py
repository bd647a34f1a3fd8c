"""Generated BackgroundJobs, queues, cron strings and time zones against the models and the pure core.

What users send is not what the examples show: typos in keys, numbers out of range, cron strings
with stray fields, zones that do not exist. Each generated spec must come out of the core one of
two ways, never as an exception:

- rejected with a Problem whose every line starts with a path the user wrote (or the missing
  field's parent) and carries no pydantic or API-server noise; or
- accepted, and then `check`, the CronJob render, the schedule maths and a whole `plan` all run,
  ending in a status with a Ready condition (True, or False with a reason).

`make test` runs about 3,500 cases (hypothesis' own generation is most of the cost); `make fuzz`
(run by .ci/run) sets NIGHTSHIFT_FUZZ_SCALE=4 for 14,000. Runs are derandomized, so a given scale
always tries the same cases; hypothesis shrinks a failure to a minimal spec, which belongs in
test_validate.py as a named case once fixed.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import zoneinfo
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nightshift.api.models import BackgroundJobQueueSpec
from nightshift.core import render, schedule, validate
from nightshift.core.plan import Observed, plan, plan_cronjob
from nightshift.core.runs import group
from nightshift.settings import Settings
from nightshift_jobs.contract import BUILTIN_NAMES

NOW = dt.datetime(2027, 3, 14, 6, 59, 30, tzinfo=dt.UTC)  # a DST day in America/*
SETTINGS = Settings(jobs_image="img:1")
OWNER = render.Owner("fuzzed", "team", "uid-f")
NOISE = ("Value error", "<nil>", "pydantic", "Input should be a valid", "[type=", "errors.pydantic.dev")


def _strings(raw: Any) -> list[str]:
    """Every string the user wrote (keys and values), longest first."""
    out: list[str] = []
    if isinstance(raw, str):
        out.append(raw)
    elif isinstance(raw, dict):
        for k, v in raw.items():
            out += _strings(k) + _strings(v)
    elif isinstance(raw, list):
        for v in raw:
            out += _strings(v)
    return sorted((s for s in out if s), key=len, reverse=True)


def noisy(message: str, raw: Any = None, noise: tuple[str, ...] = NOISE) -> list[str]:
    """The machinery noise in a message, not counting text the user wrote and the message quotes.

    hypothesis draws strings from this module's own constants, so a generated schedule may be the
    literal "Value error"; a message that echoes it is right, not noisy.
    """
    for s in _strings(raw):
        message = message.replace(s, "")
    return [n for n in noise if n in message]


REASONS = {
    validate.INVALID_SCHEDULE,
    validate.UNKNOWN_BUILTIN,
    validate.INVALID_PARAMS,
    validate.DEPENDENCY_CYCLE,
    validate.DEPENDENCY_NOT_FOUND,
}


SCALE = float(os.environ.get("NIGHTSHIFT_FUZZ_SCALE", "1"))


def fuzz(n: int) -> settings:
    """n cases times the scale, reproducible (derandomized: the suite must not pass or fail by luck)."""
    return settings(
        max_examples=max(1, int(n * SCALE)),
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow],
        derandomize=True,
        database=None,
    )


ZONES = sorted(zoneinfo.available_timezones())
zones = st.one_of(
    st.sampled_from(ZONES), st.sampled_from(["Mars/Olympus", "utc ", "", "Europe/"]), st.text(max_size=12)
)
CRON_PARTS = ["*", "*/5", "0", "30", "1-5", "MON-FRI", "JAN", "L", "?", "0,30", "61", "-1", "*/0", "2/3", "31", "7"]
cron_strings = st.one_of(
    st.lists(st.sampled_from(CRON_PARTS), min_size=3, max_size=7).map(" ".join),
    st.sampled_from(["@hourly", "@daily", "@weekly", "@monthly", "@yearly", "@reboot", "@every 5m", "@midnight"]),
    st.sampled_from(["30 2 * * *", "0 0 31 2 *", "0 0 29 2 *", "*/15 * * * *", "0 9 * * 1-5", "CRON_TZ=UTC 0 * * * *"]),
    st.text(max_size=20),
)
durations = st.one_of(
    st.sampled_from(["1m", "5m", "2h", "1d", "7d", "90s", "1h30m", "0s", "-1m", "1y", "m", "10x", "3d"]),
    st.text(max_size=6),
)
names_ = st.one_of(st.sampled_from(["up", "down", "fuzzed", "a", "b"]), st.text(max_size=10))
scalars = st.one_of(st.none(), st.booleans(), st.integers(-10, 10_000), st.text(max_size=8))
params = st.dictionaries(
    st.sampled_from(["table", "tabel", "olderThan", "column", "dsn", "url", "timeout", "batchSize", "directory", "x"]),
    scalars,
    max_size=4,
)
job_source = st.one_of(
    st.fixed_dictionaries(
        {"builtin": st.sampled_from([*BUILTIN_NAMES, "nope", "Bad Name"])}, optional={"params": params}
    ),
    st.fixed_dictionaries(
        {"image": st.sampled_from(["busybox", "ghcr.io/acme/app:1.2", ""])},
        optional={
            "command": st.lists(st.text(max_size=8), max_size=3),
            "args": st.one_of(st.lists(st.text(max_size=8), max_size=3), st.text(max_size=4)),
            "params": params,
            "volumeMounts": st.lists(
                st.fixed_dictionaries(
                    {
                        "name": st.sampled_from(["tmp", "data", "Bad"]),
                        "mountPath": st.sampled_from(["/tmp", "/data", "rel"]),
                    }
                ),
                max_size=2,
            ),
            "volumes": st.lists(st.fixed_dictionaries({"name": st.sampled_from(["tmp", "data", "x"])}), max_size=2),
        },
    ),
    st.fixed_dictionaries(
        {}, optional={"builtin": st.just("ttl-cleanup"), "image": st.just("busybox"), "bogus": scalars}
    ),
)
OPTIONAL: dict[str, Any] = {
    "schedule": cron_strings,
    "every": durations,
    "at": st.sampled_from(["2027-03-14T07:00:00Z", "2020-01-01T00:00:00Z", "tomorrow", "2027-13-01T00:00:00Z"]),
    "timeZone": zones,
    "suspend": st.one_of(st.booleans(), st.just("yes")),
    "priority": st.sampled_from(["critical", "high", "medium", "low", "urgent"]),
    "queue": names_,
    "dependsOn": st.lists(st.fixed_dictionaries({"name": names_}, optional={"within": durations}), max_size=3),
    "runAfter": st.lists(names_, max_size=3),
    "runOnCreate": st.booleans(),
    "timeout": durations,
    "retry": st.fixed_dictionaries(
        {},
        optional={
            "limit": st.integers(-2, 25),
            "backoff": st.fixed_dictionaries({}, optional={"initial": durations, "factor": st.floats(0, 12)}),
            "nonRetryableExitCodes": st.lists(st.integers(-1, 300), max_size=3),
            "retryOnTimout": st.booleans(),  # a typo, as users make them
        },
    ),
    "quarantineAfter": st.integers(-1, 2000),
    "concurrencyPolicy": st.sampled_from(["Allow", "Forbid", "Replace", "allow"]),
    "missedRuns": st.sampled_from(["Skip", "RunLatest", "RunAll", "All"]),
    "maxCatchUp": st.integers(0, 2000),
    "startingDeadline": durations,
    "history": st.fixed_dictionaries({}, optional={"successful": st.integers(-1, 120), "failed": st.integers(-1, 120)}),
    "onDependencyFailure": st.sampled_from(["Skip", "Run", "Fail"]),
    "dependencyTimeout": durations,
    "shedule": cron_strings,  # the typo a user makes most
}
chaotic = st.fixed_dictionaries({"job": job_source}, optional=OPTIONAL)

# Valid specs, and valid specs with exactly one thing wrong: most of what users send, and a
# rejection of one mistake must name that field.
DNS = st.from_regex(r"\A[a-z][a-z0-9-]{0,10}[a-z0-9]\Z")
GOOD_DURATIONS = st.sampled_from(["30s", "1m", "5m", "15m", "2h", "1d", "7d", "1h30m"])
GOOD_CRON = st.one_of(
    st.sampled_from(["30 2 * * *", "*/15 * * * *", "0 9 * * 1-5", "@hourly", "@daily", "@weekly", "0 0 1 * *"]),
    st.tuples(st.integers(0, 59), st.integers(0, 23), st.sampled_from(["*", "1", "15", "1-7"])).map(
        lambda t: f"{t[0]} {t[1]} {t[2]} * *"
    ),
)
GOOD_PARAMS = {
    "archive": {"table": "events", "timestampColumn": "created_at", "olderThan": "30d"},
    "backup": {"directory": "/backups"},
    "db-maintenance": {},
    "http": {"url": "http://app.team.svc/tasks/nightly"},
    "refresh-views": {},
    "sql": {"statement": "select 1"},
    "ttl-cleanup": {"table": "sessions", "timestampColumn": "created_at", "olderThan": "7d"},
}
good_job = st.one_of(
    st.sampled_from(sorted(GOOD_PARAMS)).map(lambda b: {"builtin": b, "params": GOOD_PARAMS[b]}),
    st.fixed_dictionaries(
        {"image": st.sampled_from(["busybox", "ghcr.io/acme/app:1.2"])},
        optional={"command": st.lists(st.sampled_from(["python", "-m", "app", "run"]), min_size=1, max_size=3)},
    ),
)
trigger: st.SearchStrategy[dict[str, str]] = st.one_of(
    st.just({}),
    GOOD_CRON.map(lambda c: {"schedule": c}),
    GOOD_DURATIONS.map(lambda d: {"every": d}),
    st.sampled_from(["2027-03-14T07:00:00Z", "2020-01-01T00:00:00Z"]).map(lambda a: {"at": a}),
)
GOOD: dict[str, Any] = {
    "timeZone": st.sampled_from(ZONES),
    "priority": st.sampled_from(["critical", "high", "medium", "low"]),
    "queue": DNS,
    "dependsOn": st.lists(st.fixed_dictionaries({"name": DNS}, optional={"within": GOOD_DURATIONS}), max_size=2),
    "runAfter": st.lists(DNS, max_size=2),
    "timeout": GOOD_DURATIONS,
    "retry": st.fixed_dictionaries({}, optional={"limit": st.integers(0, 20), "retryOnTimeout": st.booleans()}),
    "quarantineAfter": st.integers(1, 1000),
    "concurrencyPolicy": st.sampled_from(["Allow", "Forbid", "Replace"]),
    "missedRuns": st.sampled_from(["Skip", "RunLatest", "RunAll"]),
    "maxCatchUp": st.integers(1, 1000),
    "startingDeadline": GOOD_DURATIONS,
    "history": st.fixed_dictionaries({}, optional={"successful": st.integers(0, 100), "failed": st.integers(0, 100)}),
    "onDependencyFailure": st.sampled_from(["Skip", "Run"]),
    "dependencyTimeout": GOOD_DURATIONS,
}
valid = st.tuples(trigger, st.fixed_dictionaries({"job": good_job}, optional=GOOD)).map(lambda t: {**t[0], **t[1]})
MISTAKES: dict[str, Any] = {
    "schedule": st.sampled_from(["61 * * * *", "* * *", "every day", "0 0 * * 8", "*/0 * * * *"]),
    "every": st.sampled_from(["0s", "-1m", "10x", "1y", "7"]),
    "timeZone": st.sampled_from(["Mars/Olympus", "", "Europe/", "utc "]),
    "priority": st.sampled_from(["urgent", "HIGH", ""]),
    "queue": st.sampled_from(["Bad Name", "-x", "a" * 70]),
    "dependsOn": st.sampled_from([[{"name": "Bad_Name"}], [{"nme": "x"}], ["up"], [{"name": "up", "within": "x"}]]),
    "maxCatchUp": st.sampled_from([0, 2000, -1]),
    "history": st.sampled_from([{"successful": -1}, {"failed": 101}, {"kept": 3}]),
    "retry": st.sampled_from([{"limit": 25}, {"retryOnTimout": True}, {"backoff": {"factor": 0.5}}]),
    "shedule": GOOD_CRON,
    "concurrencyPolicy": st.sampled_from(["allow", "Queue"]),
    "quarantineAfter": st.sampled_from([0, 1001]),
    "job": st.sampled_from(
        [
            {"builtin": "nope"},
            {"image": "busybox", "params": {"x": 1}},
            {},
            {"builtin": "ttl-cleanup", "image": "busybox"},
            {"image": "busybox", "args": "run"},
            {"builtin": "backup", "params": {"directory": "/b", "compres": True}},
            {"builtin": "ttl-cleanup", "params": {"tabel": "t", "timestampColumn": "c", "olderThan": "1d"}},
        ]
    ),
}
one_mistake = st.tuples(valid, st.sampled_from(sorted(MISTAKES))).flatmap(
    lambda t: MISTAKES[t[1]].map(lambda bad: {**t[0], t[1]: bad})
)
specs = st.one_of(valid, one_mistake, chaotic)
PATH = re.compile(r"^(spec(?:\.[A-Za-z0-9_-]+|\[\d+\])*): ")


def _resolves(raw: dict[str, Any], path: str) -> bool:
    """Whether a Problem's path names what the user wrote: every step exists, or only the last is missing."""
    node: Any = {"spec": raw}
    steps = re.findall(r"[A-Za-z0-9_-]+|\[\d+\]", path)
    for i, step in enumerate(steps):
        last = i == len(steps) - 1
        if step.startswith("["):
            idx = int(step[1:-1])
            if not isinstance(node, list) or idx >= len(node):
                return False
            node = node[idx]
        elif isinstance(node, dict) and step in node:
            node = node[step]
        else:
            return last and isinstance(node, dict)  # a required field that is missing
    return True


def _assert_names_fields(raw: dict[str, Any], problem: validate.Problem) -> None:
    assert problem.message, problem
    assert len(problem.message) <= validate.MESSAGE_LIMIT
    assert not noisy(problem.message, raw), problem.message
    for line in problem.message.splitlines():
        if line.startswith("(") and line.endswith(")"):  # "(and 3 more)"
            continue
        m = PATH.match(line)
        assert m, f"no field path in {line!r}"
        assert _resolves(raw, m.group(1)), f"{m.group(1)} is not in what the user wrote: {raw}"


@fuzz(1500)
@given(raw=specs)
def test_every_generated_spec_is_rejected_naming_a_field_or_served(raw: dict[str, Any]) -> None:
    parsed = validate.parse_spec(raw)
    if isinstance(parsed, validate.Problem):
        assert parsed.reason == validate.INVALID_SPEC
        _assert_names_fields(raw, parsed)
        return
    problem = validate.check(OWNER.name, OWNER.namespace, parsed, lambda _: None)
    if problem is not None:
        assert problem.reason in REASONS, problem
        assert problem.message and not noisy(problem.message, raw), problem.message
    observed = Observed(
        owner=OWNER,
        generation=1,
        created=NOW - dt.timedelta(hours=1),
        annotations={},
        spec=parsed,
        invalid=None,
        written={},
        runs=group([]),
        requests=[],
        upstream={},
        cronjob=None,
        problem=None if problem is None else _plan_problem(problem),
        now=NOW,
        settings=SETTINGS,
    )
    cron_plan = plan_cronjob(observed)
    result = plan(observed, cron_plan, None)
    ready = next(c for c in result.status["conditions"] if c["type"] == "Ready")
    assert ready["status"] in ("True", "False") and ready["reason"]
    if problem is None and ready["status"] == "True":
        cron = schedule.cron_of(parsed.schedule, parsed.every)
        body = render.cronjob(OWNER, parsed, SETTINGS)
        assert (body is None) == (cron is None)
        if cron is not None and body is not None:
            assert body["spec"]["schedule"] == cron
            nxt = schedule.next_after(cron, parsed.time_zone, NOW)
            assert nxt > NOW


def _plan_problem(p: validate.Problem) -> Any:
    from nightshift.core.plan import Problem

    return Problem(p.reason, p.message)


@fuzz(500)
@given(
    raw=st.fixed_dictionaries(
        {},
        optional={
            "concurrency": st.one_of(st.integers(-5, 20_000), st.text(max_size=3)),
            "rateLimit": st.fixed_dictionaries({}, optional={"runs": st.integers(-1, 200_000), "per": durations}),
            "paused": st.one_of(st.booleans(), st.just("no")),
            "concurency": st.integers(1, 3),
        },
    )
)
def test_every_generated_queue_parses_or_names_its_field(raw: dict[str, Any]) -> None:
    from pydantic import ValidationError

    try:
        BackgroundJobQueueSpec.model_validate(raw)
    except ValidationError as e:
        message = validate.field_errors(e, "spec", model=BackgroundJobQueueSpec)
        for line in message.splitlines():
            m = PATH.match(line)
            assert m and _resolves(raw, m.group(1)), line
            assert not noisy(line, raw), line


@fuzz(1500)
@given(
    expr=cron_strings,
    tz=st.sampled_from(ZONES),
    after=st.datetimes(min_value=dt.datetime(2026, 1, 1), max_value=dt.datetime(2029, 1, 1), timezones=st.just(dt.UTC)),
)
def test_generated_cron_strings_parse_or_fail_clearly_and_next_moves_forward(
    expr: str, tz: str, after: dt.datetime
) -> None:
    try:
        cron = schedule.normalise(expr)
        schedule.parse(cron, tz)
    except schedule.ScheduleError as e:
        assert str(e) and not noisy(str(e), expr), str(e)
        return
    try:
        nxt = schedule.next_after(cron, tz, after)
    except schedule.ScheduleError as e:  # a schedule with no time in robfig's five-year look-ahead
        assert "no time" in str(e)
        return
    assert nxt > after and nxt.tzinfo is not None
    if not cron.startswith("@every"):  # robfig's @every is a constant delay from any instant, not minute-aligned
        assert nxt.second == 0 and nxt.microsecond == 0
        again = schedule.parse(cron, tz).next(nxt - dt.timedelta(seconds=1))
        assert again is not None and again.astimezone(dt.UTC) == nxt  # no time between: Next is the first
