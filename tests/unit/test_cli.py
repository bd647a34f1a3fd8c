"""The CLI's pure parts: request names and bodies, the wait loop's decisions, backfill times, output."""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import re
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from nightshift.api.models import BackgroundJobRun
from nightshift.cli import requests
from nightshift.cli.commands import Cli, CliError, _param, parser
from nightshift.cli.output import age, health, table
from nightshift.cli.requests import RequestError
from nightshift.infra.kube import ApiError, Resource
from tests.unit.factories import spec, t

BGJ: dict[str, Any] = {
    "apiVersion": "nightshift.dev/v1alpha1",
    "kind": "BackgroundJob",
    "metadata": {"name": "nightly", "namespace": "team", "uid": "0000-uid"},
    "spec": {"job": {"builtin": "ttl-cleanup"}},
}


def finished(phase: str, succeeded: str | None, **status: Any) -> dict[str, Any]:
    conditions = [{"type": "Finished", "status": "True", "reason": phase}]
    if succeeded is not None:
        conditions.append({"type": "Succeeded", "status": succeeded, "reason": phase})
    return {"metadata": {"name": "r1"}, "status": {"phase": phase, "conditions": conditions, **status}}


# -- names ------------------------------------------------------------------------------------------
def test_random_name_is_job_utc_time_and_four_chars() -> None:
    now = dt.datetime(2026, 11, 1, 4, 5, 6, tzinfo=dt.timezone(dt.timedelta(hours=2)))
    assert requests.random_name("nightly", now, suffix="ab12") == "nightly-20261101020506-ab12"
    names = {requests.random_name("nightly", now) for _ in range(20)}
    assert len(names) > 1 and all(re.fullmatch(r"nightly-20261101020506-[a-z0-9]{4}", n) for n in names)


@pytest.mark.parametrize(
    "make",
    [
        lambda: requests.random_name("x" * 52, t(2026, 1, 1)),
        lambda: requests.id_name("x" * 52, "key"),
        lambda: requests.backfill_name("x" * 52, t(2026, 1, 1)),
        lambda: requests.retry_name("x" * 52, "x-m123", None),
    ],
    ids=["random", "id", "backfill", "retry"],  # a random name as an id differs between xdist workers
)
def test_names_fit_a_label_value_and_a_dns_subdomain(make: Callable[[], str]) -> None:
    name = make()
    assert len(name) <= requests.MAX_LABEL_NAME <= requests.MAX_NAME
    assert re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", name)


def test_id_name_is_deterministic_per_job_and_key() -> None:
    name = requests.id_name("nightly", "deploy-42")
    assert name == requests.id_name("nightly", "deploy-42")
    assert re.fullmatch(r"nightly-i[0-9a-f]{10}", name)
    assert name != requests.id_name("nightly", "deploy-43")
    assert requests.id_name("other", "deploy-42").startswith("other-i")


def test_backfill_name_comes_from_the_scheduled_instant() -> None:
    utc = requests.backfill_name("nightly", t(2026, 1, 1, 3))
    berlin = requests.backfill_name("nightly", dt.datetime(2026, 1, 1, 4, tzinfo=dt.timezone(dt.timedelta(hours=1))))
    assert utc == berlin and re.fullmatch(r"nightly-b[0-9a-f]{10}", utc)
    assert utc != requests.backfill_name("nightly", t(2026, 1, 2, 3))
    assert utc != requests.id_name("nightly", "2026-01-01T03:00:00Z")


def test_retry_name_depends_on_the_run_and_the_params_not_their_order() -> None:
    a = requests.retry_name("nightly", "nightly-m1", {"a": 1, "b": 2})
    assert a == requests.retry_name("nightly", "nightly-m1", {"b": 2, "a": 1})
    assert a != requests.retry_name("nightly", "nightly-m2", {"a": 1, "b": 2})
    assert a != requests.retry_name("nightly", "nightly-m1", {"a": 2, "b": 2})
    assert requests.retry_name("nightly", "r", None) == requests.retry_name("nightly", "r", {})


def test_default_reason_names_the_command_user_and_host() -> None:
    assert re.fullmatch(r"nightshift trigger by .+@.+", requests.default_reason("trigger"))


# -- bodies -----------------------------------------------------------------------------------------
def test_body_is_a_valid_run_request_owned_but_not_controlled_by_the_job() -> None:
    b = requests.body(BGJ, "nightly-i0123456789", params={"limit": 5}, reason="ci", annotations={"k": "v"})
    assert b["apiVersion"] == "nightshift.dev/v1alpha1" and b["kind"] == "BackgroundJobRun"
    assert b["metadata"]["namespace"] == "team"
    assert b["metadata"]["labels"] == {"nightshift.dev/backgroundjob": "nightly"}
    assert b["metadata"]["annotations"] == {"k": "v"}
    assert b["metadata"]["ownerReferences"] == [
        {
            "apiVersion": "nightshift.dev/v1alpha1",
            "kind": "BackgroundJob",
            "name": "nightly",
            "uid": "0000-uid",
            "controller": False,
            "blockOwnerDeletion": False,
        }
    ]
    assert b["spec"] == {"backgroundJob": "nightly", "params": {"limit": 5}, "reason": "ci"}
    BackgroundJobRun.model_validate(b)  # what the CRD's schema is generated from


def test_body_leaves_out_empty_params_and_writes_the_scheduled_time_in_utc() -> None:
    when = dt.datetime(2026, 1, 1, 4, tzinfo=dt.timezone(dt.timedelta(hours=1)))
    b = requests.body(BGJ, "n", params={}, scheduled_time=when, reason="r" * 2000)
    assert b["spec"]["scheduledTime"] == "2026-01-01T03:00:00Z" and "params" not in b["spec"]
    assert len(b["spec"]["reason"]) == 1024 and "annotations" not in b["metadata"]
    BackgroundJobRun.model_validate(b)


def test_same_request_compares_what_was_asked_for() -> None:
    wanted = requests.body(BGJ, "n", params={"a": 1}, reason="by me", scheduled_time=t(2026, 1, 1))
    existing = {
        **wanted,
        "spec": {**wanted["spec"], "reason": "by someone else", "scheduledTime": "2026-01-01T00:00:00+00:00"},
    }
    assert requests.same_request(existing, wanted, compare_reason=False)
    assert not requests.same_request(existing, wanted, compare_reason=True)
    assert requests.differences(existing, wanted, compare_reason=True) == ["reason"]
    other = {**wanted, "spec": {**wanted["spec"], "params": {"a": 2}}}
    assert not requests.same_request(other, wanted, compare_reason=False)
    assert requests.differences(other, wanted, compare_reason=False) == ["params"]
    no_params = requests.body(BGJ, "n")
    assert requests.same_request({"spec": {"backgroundJob": "nightly", "params": {}}}, no_params, compare_reason=False)


# -- the wait loop's decisions ----------------------------------------------------------------------
@pytest.mark.parametrize(
    "status",
    [
        {},
        {"phase": "Running", "attempts": 1},
        {"phase": "Retrying", "conditions": [{"type": "Finished", "status": "False", "reason": "Retrying"}]},
        {"phase": "Succeeded", "conditions": [{"type": "Succeeded", "status": "True", "reason": "Succeeded"}]},
    ],
)
def test_not_finished_until_the_finished_condition_is_true(status: dict[str, Any]) -> None:
    assert requests.outcome({"metadata": {"name": "r1"}, "status": status}) is None


def test_succeeded_exits_0() -> None:
    got = requests.outcome(finished("Succeeded", "True", exitCode=0, attempts=1, runId="nightly-r1"))
    assert got is not None and got.code == 0 and got.phase == "Succeeded"
    assert got.summary == "bgjr/r1: Succeeded (exit code 0, 1 attempts, run nightly-r1)"


@pytest.mark.parametrize("phase", ["Failed", "Skipped", "Cancelled"])
def test_every_other_end_exits_1_with_phase_reason_and_exit_code(phase: str) -> None:
    got = requests.outcome(finished(phase, "False", reason="BackoffLimitExceeded", exitCode=65, message="boom"))
    assert got is not None and got.code == 1 and got.phase == phase and got.message == "boom"
    assert got.summary.startswith(f"bgjr/r1: {phase} (reason BackoffLimitExceeded, exit code 65")


def test_the_succeeded_condition_decides_and_the_phase_is_the_fallback() -> None:
    contradicting = requests.outcome(finished("Succeeded", "False"))
    assert contradicting is not None and (contradicting.code, contradicting.phase) == (1, "Failed")
    by_phase = requests.outcome(finished("Succeeded", None))
    assert by_phase is not None and by_phase.code == 0
    unknown = requests.outcome(finished("Running", None))
    assert unknown is not None and (unknown.code, unknown.phase) == (1, "Failed")


def test_progress_lines() -> None:
    assert requests.progress({"metadata": {"name": "r1"}}) == "bgjr/r1: Pending"
    line = requests.progress(
        {"metadata": {"name": "r1"}, "status": {"phase": "Retrying", "attempts": 2, "reason": "Backoff"}}
    )
    assert line == "bgjr/r1: Retrying (attempt 2, Backoff)"


# -- backfill ---------------------------------------------------------------------------------------
def test_backfill_times_include_both_ends() -> None:
    times = requests.backfill_times(spec(schedule="*/15 * * * *"), t(2026, 1, 1), t(2026, 1, 1, 1), 100)
    assert times == [t(2026, 1, 1, 0, m) for m in (0, 15, 30, 45)] + [t(2026, 1, 1, 1)]


def test_backfill_times_follow_the_time_zone_and_every() -> None:
    berlin = requests.backfill_times(
        spec(schedule="0 3 * * *", timeZone="Europe/Berlin"), t(2026, 3, 28), t(2026, 3, 30), 10
    )
    assert berlin == [t(2026, 3, 28, 2), t(2026, 3, 29, 1)]  # CET, then CEST
    assert len(requests.backfill_times(spec(every="2h"), t(2026, 1, 1), t(2026, 1, 1, 23, 59), 100)) == 12


@pytest.mark.parametrize(
    ("fields", "start", "end", "most", "message"),
    [
        ({}, t(2026, 1, 1), t(2026, 1, 2), 10, "no schedule"),
        ({"schedule": "@hourly"}, t(2026, 1, 2), t(2026, 1, 1), 10, "before --from"),
        ({"schedule": "@hourly"}, t(2026, 1, 1), t(2026, 1, 2), 10, "raise --max"),
        ({"schedule": "@hourly"}, t(2026, 1, 1), t(2026, 1, 2), 0, "--max must be"),
    ],
)
def test_backfill_refuses(
    fields: dict[str, Any], start: dt.datetime, end: dt.datetime, most: int, message: str
) -> None:
    with pytest.raises(RequestError, match=message) as e:
        requests.backfill_times(spec(**fields), start, end, most)
    assert e.value.code == 2


def test_backfill_of_exactly_max_times_is_allowed() -> None:
    assert len(requests.backfill_times(spec(schedule="@hourly"), t(2026, 1, 1, 1), t(2026, 1, 1, 10), 10)) == 10


# -- the commands against a fake API ----------------------------------------------------------------
class FakeKube:
    """The few Kube calls the request commands make, on dicts in memory."""

    default_namespace = "team"

    def __init__(self, served: bool = True) -> None:
        self.served = served
        self.objects: dict[tuple[str, str], dict[str, Any]] = {("backgroundjobs", "nightly"): BGJ}
        self.reads: list[dict[str, Any]] = []  # what successive GETs of a request return
        self.created: list[dict[str, Any]] = []

    async def get(self, res: Resource, name: str, namespace: str | None = None) -> dict[str, Any]:
        if res.plural == "backgroundjobruns" and self.reads:
            return self.reads.pop(0)
        if (res.plural, name) not in self.objects:
            raise ApiError(404, "NotFound", f"{name} not found")
        return self.objects[(res.plural, name)]

    async def create(self, res: Resource, body: dict[str, Any], namespace: str | None = None) -> dict[str, Any]:
        if not self.served:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        key = (res.plural, body["metadata"]["name"])
        if key in self.objects:
            raise ApiError(409, "AlreadyExists", "exists")
        self.objects[key] = body
        self.created.append(body)
        return body

    async def list(self, res: Resource, namespace: str | None = None, **_: Any) -> list[dict[str, Any]]:
        return [o for (plural, _n), o in self.objects.items() if plural == res.plural]

    async def watch(self, res: Resource, namespace: str | None = None, **_: Any) -> AsyncIterator[tuple[str, Any]]:
        for obj in list(self.reads):
            self.reads.pop(0)
            yield "MODIFIED", obj


def run_cli(kube: FakeKube, *argv: str) -> int:
    args = parser().parse_args(["-n", "team", *argv])
    args.output = None if args.output == "table" else args.output
    cli = Cli(kube, args)  # type: ignore[arg-type]
    handler = {"trigger": cli.trigger, "backfill": cli.backfill, "runs": cli.runs}[args.command]
    return asyncio.run(handler())


def test_trigger_with_id_twice_makes_one_request(capsys: pytest.CaptureFixture[str]) -> None:
    kube = FakeKube()
    assert run_cli(kube, "trigger", "nightly", "--id", "k1", "--param", "limit=5") == 0
    assert run_cli(kube, "trigger", "nightly", "--id", "k1", "--param", "limit=5") == 0
    assert len(kube.created) == 1
    (req,) = kube.created
    assert req["metadata"]["name"] == requests.id_name("nightly", "k1")
    assert req["metadata"]["annotations"] == {requests.ANN_REQUEST_ID: "k1"}
    assert req["spec"]["params"] == {"limit": 5} and req["spec"]["reason"].startswith("nightshift trigger by ")
    out = capsys.readouterr()
    assert out.out.splitlines() == [
        f"bgjr/{req['metadata']['name']} created",
        f"bgjr/{req['metadata']['name']} exists already (same request, Pending)",
    ]
    assert f"kubectl wait --for=condition=Finished bgjr/{req['metadata']['name']}" in out.err
    with pytest.raises(CliError, match=r"already exists .*differs in: params"):
        run_cli(kube, "trigger", "nightly", "--id", "k1", "--param", "limit=6")


def test_trigger_refuses_a_missing_job_or_crd() -> None:
    with pytest.raises(CliError, match="BackgroundJob nope not found") as e:
        run_cli(FakeKube(), "trigger", "nope")
    assert e.value.code == 3
    with pytest.raises(CliError, match="BackgroundJobRun CRD is not installed") as e:
        run_cli(FakeKube(served=False), "trigger", "nightly")
    assert e.value.code == 3


def test_trigger_wait_follows_the_status_to_its_end(capsys: pytest.CaptureFixture[str]) -> None:
    kube = FakeKube()
    running = {"metadata": {"name": "x", "resourceVersion": "1"}, "status": {"phase": "Running", "attempts": 1}}
    kube.reads = [running, running, finished("Failed", "False", reason="BackoffLimitExceeded", exitCode=65)]
    assert run_cli(kube, "trigger", "nightly", "--wait", "--timeout", "5") == 1
    out = capsys.readouterr()
    assert "bgjr/x: Running (attempt 1)" in out.err
    assert "Failed (reason BackoffLimitExceeded, exit code 65)" in out.out


def test_backfill_creates_one_request_per_time_and_nothing_the_second_time(capsys: pytest.CaptureFixture[str]) -> None:
    kube = FakeKube()
    kube.objects[("backgroundjobs", "nightly")] = {**BGJ, "spec": {**BGJ["spec"], "schedule": "*/15 * * * *"}}
    args = ("backfill", "nightly", "--from", "2026-01-01T00:00:00Z", "--to", "2026-01-01T01:00:00Z")
    assert run_cli(kube, *args, "--dry-run") == 0 and not kube.created
    assert "5 requests would be created" in capsys.readouterr().out
    assert run_cli(kube, *args) == 0
    assert "5 scheduled times, 5 requests created, 0 existed already" in capsys.readouterr().out
    assert sorted(r["spec"]["scheduledTime"] for r in kube.created)[0] == "2026-01-01T00:00:00Z"
    assert {r["metadata"]["name"] for r in kube.created} == {
        requests.backfill_name("nightly", t(2026, 1, 1) + dt.timedelta(minutes=m)) for m in (0, 15, 30, 45, 60)
    }
    assert run_cli(kube, *args) == 0
    assert "0 requests created, 5 existed already" in capsys.readouterr().out
    assert len(kube.created) == 5
    assert run_cli(kube, "runs", "nightly") == 0
    listing = capsys.readouterr().out.splitlines()
    assert listing[0].split()[:5] == ["NAME", "PHASE", "ATTEMPTS", "STARTED", "FINISHED"] and len(listing) == 6


# -- parsing and output -----------------------------------------------------------------------------
def test_parser_knows_the_request_options() -> None:
    a = parser().parse_args(["trigger", "j", "--id", "k", "--reason", "why", "--wait", "--timeout", "5"])
    assert (a.id, a.reason, a.wait, a.timeout) == ("k", "why", True, 5)
    b = parser().parse_args(["backfill", "j", "--from", "2026-01-01", "--to", "2026-01-02", "--dry-run", "--max", "3"])
    assert (b.dry_run, b.max) == (True, 3)
    assert isinstance(parser().parse_args(["runs", "j"]), argparse.Namespace)


def test_param_values_are_json_when_they_parse() -> None:
    assert _param("limit=5") == ("limit", 5) and _param("age=240d") == ("age", "240d")
    assert _param("q=a=b") == ("q", "a=b")
    with pytest.raises(CliError):
        _param("novalue")


def test_output_helpers() -> None:
    now = t(2026, 1, 1, 12)
    assert age("2026-01-01T11:55:00Z", now) == "5m ago" and age("2026-01-01T14:00:00Z", now) == "in 2h"
    assert age(None, now) == "-"
    assert table([["a", None]], ["X", "Y"]) == "X   Y\na   -"
    bad = {"status": {"lastRun": {"result": "Failed"}}}
    assert health([]) == "healthy" and health([bad, {}, {}]) == "degraded" and health([bad, bad, {}]) == "critical"
