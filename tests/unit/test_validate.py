"""nightshift.core.validate: every Problem branch, and error messages in the user's words."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from nightshift.api.models import BackgroundJobSpec
from nightshift.core import validate
from nightshift.core.validate import Problem, check, field_errors, params_problem, parse_spec

TTL = {"table": "sessions", "timestampColumn": "created_at", "olderThan": "30d"}


def spec_of(**fields: Any) -> BackgroundJobSpec:
    fields.setdefault("job", {"builtin": "ttl-cleanup", "params": TTL})
    parsed = parse_spec(fields)
    assert isinstance(parsed, BackgroundJobSpec), parsed
    return parsed


def problem(name: str = "me", specs: dict[str, BackgroundJobSpec] | None = None, **fields: Any) -> Problem | None:
    return check(name, "ns", spec_of(**fields), (specs or {}).get)


def test_a_good_spec_has_no_problem() -> None:
    assert problem(schedule="@daily") is None
    assert problem(every="15m", job={"image": "busybox", "command": ["true"]}) is None


@pytest.mark.parametrize(
    ("fields", "text"),
    [
        ({"schedule": "61 * * * *"}, "spec.schedule: schedule '61 * * * *' is not a valid cron expression"),
        ({"schedule": "0 0 * *"}, "spec.schedule: schedule '0 0 * *' has 4 fields"),
        ({"every": "7m"}, "spec.every: 7m has no cron equivalent"),
    ],
)
def test_bad_schedule(fields: dict[str, Any], text: str) -> None:
    p = problem(**fields)
    assert p is not None and p.reason == "InvalidSchedule" and p.blocking
    assert p.message.startswith(text)


def test_unknown_builtin_with_suggestion() -> None:
    p = problem(schedule="@daily", job={"builtin": "ttl-clean"})
    assert p is not None and p.reason == "UnknownBuiltin" and p.blocking
    assert p.message.startswith("spec.job.builtin: unknown built-in job 'ttl-clean' (did you mean ttl-cleanup?)")
    assert "sql" in p.message


def test_param_typo_names_the_key_and_suggests_the_right_one() -> None:
    params = {k: v for k, v in TTL.items() if k != "table"} | {"tabel": "sessions"}
    p = problem(schedule="@daily", job={"builtin": "ttl-cleanup", "params": params})
    assert p is not None and p.reason == "InvalidParams" and p.blocking
    # the typo says it all: no second line about the missing `table`
    assert p.message == "spec.job.params.tabel: unknown parameter (did you mean table?)"


def test_param_typo_is_an_error_on_demand_too() -> None:
    p = problem(job={"builtin": "ttl-cleanup", "params": {**TTL, "olderThen": "1d"}})
    assert p is not None and p.message == "spec.job.params.olderThen: unknown parameter (did you mean olderThan?)"


def test_wrong_param_type() -> None:
    p = problem(schedule="@daily", job={"builtin": "ttl-cleanup", "params": {**TTL, "batchSize": "many"}})
    assert p is not None and p.reason == "InvalidParams"
    assert p.message.startswith("spec.job.params.batchSize: must be a valid integer")
    p = problem(schedule="@daily", job={"builtin": "ttl-cleanup", "params": {**TTL, "olderThan": "soon"}})
    assert p is not None and p.message.startswith("spec.job.params.olderThan: invalid duration 'soon'")


def test_nested_params_have_list_indices() -> None:
    params = {"endpoints": [{"url": "http://x"}, {"url": "http://y", "timout": "5s"}]}
    p = problem(schedule="@daily", job={"builtin": "health-check", "params": params})
    assert p is not None
    assert p.message == "spec.job.params.endpoints[1].timout: unknown parameter (did you mean timeout?)"


def test_union_params_say_it_once_without_pydantic_tags() -> None:
    p = problem(schedule="@daily", job={"builtin": "http", "params": {"url": "http://x", "expectStatus": "ok"}})
    assert p is not None
    assert p.message.count("spec.job.params.expectStatus:") == 1
    assert "int" not in p.message.split(":")[0] and "list[" not in p.message


@pytest.mark.parametrize(
    "fields",
    [
        {"schedule": "@daily"},
        {"every": "1h"},
        {"at": "2030-01-01T00:00:00Z"},
        {"runOnCreate": True},
        {"runAfter": ["up"]},
    ],
)
def test_missing_required_param_when_the_job_runs_by_itself(fields: dict[str, Any]) -> None:
    specs = {"up": spec_of()}
    p = problem(specs=specs, job={"builtin": "ttl-cleanup", "params": {"olderThan": "30d"}}, **fields)
    assert p is not None and p.reason == "InvalidParams" and p.blocking
    assert p.message == (
        "spec.job.params.table: required parameter is missing; "
        "spec.job.params.timestampColumn: required parameter is missing"
    )


def test_missing_required_param_is_fine_on_demand() -> None:
    """A run request (run-now, BackgroundJobRun) merges its params over job.params, so it may supply them."""
    assert problem(job={"builtin": "ttl-cleanup", "params": {"olderThan": "30d"}}) is None
    assert problem(job={"builtin": "sql"}) is None
    # ...and the request's merged params are checked completely
    p = params_problem("ttl-cleanup", {"olderThan": "30d"})
    assert p is not None and "table: required parameter is missing" in p.message
    assert params_problem("ttl-cleanup", TTL) is None


def test_self_dependency() -> None:
    p = problem(dependsOn=[{"name": "me"}])
    assert p is not None and p.reason == "DependencyCycle" and p.blocking
    assert p.message == "spec.dependsOn[0].name: me depends on itself"
    p = problem(runAfter=["other", "me"], specs={"other": spec_of()})
    assert p is not None and p.message == "spec.runAfter[1]: me depends on itself"


def test_missing_dependency_is_not_blocking() -> None:
    p = problem(dependsOn=[{"name": "ghost"}], runAfter=["there", "phantom"], specs={"there": spec_of()})
    assert p is not None and p.reason == "DependencyNotFound" and not p.blocking
    assert p.message == (
        "spec.dependsOn[0].name: BackgroundJob ghost does not exist in namespace ns; "
        "spec.runAfter[1]: BackgroundJob phantom does not exist in namespace ns"
    )


def test_exists_overrides_lookup_for_jobs_that_do_not_parse() -> None:
    s = spec_of(dependsOn=[{"name": "broken"}])
    assert check("me", "ns", s, lambda n: None, exists=lambda n: n == "broken") is None


def test_cycle() -> None:
    specs = {"b": spec_of(runAfter=["c"]), "c": spec_of(dependsOn=[{"name": "me"}])}
    p = problem(specs=specs, dependsOn=[{"name": "a"}, {"name": "b"}])
    assert p is not None and p.reason == "DependencyCycle" and p.blocking
    assert p.message == "spec.dependsOn[1].name: dependency cycle: me -> b -> c -> me"


def test_blocking_problems_come_before_a_missing_dependency() -> None:
    p = problem(schedule="61 * * * *", dependsOn=[{"name": "ghost"}])
    assert p is not None and p.reason == "InvalidSchedule"
    specs = {"b": spec_of(dependsOn=[{"name": "me"}])}
    p = problem(specs=specs, dependsOn=[{"name": "ghost"}, {"name": "b"}])
    assert p is not None and p.reason == "DependencyCycle"


def test_problem_str() -> None:
    assert str(Problem("InvalidSpec", "spec.x: y")) == "InvalidSpec: spec.x: y"


# -- parse_spec and field_errors ----------------------------------------------------------------
def invalid(raw: dict[str, Any]) -> str:
    p = parse_spec(raw)
    assert isinstance(p, Problem) and p.reason == "InvalidSpec" and p.blocking
    assert "Value error" not in p.message and "Input should" not in p.message
    return p.message


def test_paths_are_camel_case_with_list_indices() -> None:
    message = invalid({"job": {"image": "x", "volumeMounts": [{"name": "a", "mountPath": "data"}]}})
    assert message.startswith("spec.job.volumeMounts[0].mountPath: must match pattern")
    message = invalid({"retry": {"nonRetryableExitCodes": [1, 0]}, "job": {"image": "x"}})
    assert message == "spec.retry.nonRetryableExitCodes[1]: must be greater than or equal to 1"
    message = invalid({"dependsOn": [{"name": "a", "within": "a day"}], "job": {"image": "x"}})
    assert message.startswith("spec.dependsOn[0].within: invalid duration 'a day'")


def test_model_validator_messages_have_no_value_error_prefix() -> None:
    assert invalid({"job": {"builtin": "sql", "image": "x"}}) == "spec.job: set exactly one of job.builtin or job.image"
    assert invalid({"schedule": "@daily", "every": "1h", "job": {"image": "x"}}) == (
        "spec.every: set at most one of schedule, every and at"
    )
    assert (
        invalid({"timeZone": "Mars/Olympus", "job": {"image": "x"}})
        == "spec.timeZone: unknown time zone 'Mars/Olympus'"
    )
    assert invalid({"job": {"image": "x", "volumes": [{"name": "tmp", "emptyDir": {}}]}}).startswith(
        "spec.job.volumes: the volume name tmp is reserved"
    )


def test_unknown_spec_field_with_suggestion() -> None:
    assert invalid({"schedul": "@daily", "job": {"image": "x"}}) == (
        "spec.schedul: unknown field (did you mean schedule?)"
    )
    assert invalid({"job": {"image": "x", "volume_mount": []}}) == (
        "spec.job.volume_mount: unknown field (did you mean volumeMounts?)"
    )
    assert invalid({"job": {"image": "x", "imagePullPolicy": "Always"}}) == "spec.job.imagePullPolicy: unknown field"


def test_missing_and_enum_and_map_keys() -> None:
    assert invalid({}) == "spec.job: required field is missing"
    assert invalid({"priority": "urgent", "job": {"image": "x"}}) == (
        "spec.priority: must be 'critical', 'high', 'medium' or 'low' (got 'urgent')"
    )
    assert invalid({"job": {"image": "x", "labels": {"app.kubernetes.io/name": 1}}}) == (
        "spec.job.labels[app.kubernetes.io/name]: must be a valid string"
    )
    assert invalid({"queue": "Maintenance", "job": {"image": "x"}}).startswith(
        "spec.queue: 'Maintenance' is not a valid name"
    )


def test_every_error_is_reported_and_the_message_is_bounded() -> None:
    raw = {f"bogus{i}": 1 for i in range(200)} | {"job": {"image": "x"}}
    with pytest.raises(ValidationError) as info:
        BackgroundJobSpec.model_validate(raw)
    text = field_errors(info.value, model=BackgroundJobSpec)
    assert len(text) <= validate.MESSAGE_LIMIT
    assert text.startswith("spec.bogus0: unknown field; spec.bogus1: unknown field")
    assert text.endswith("more")
    short = field_errors(info.value, "x", limit=80)
    assert len(short) <= 80 + len("; and 200 more") and short.startswith("x.bogus0")


def test_field_errors_without_a_model() -> None:
    with pytest.raises(ValidationError) as info:
        BackgroundJobSpec.model_validate({"job": {"image": "x", "fsGroup": "x"}, "tabel": 1})
    text = field_errors(info.value)
    assert "spec.job.fsGroup: must be a valid integer" in text and "spec.tabel: unknown field" in text


def test_every_example_can_be_served() -> None:
    """The shipped examples pass what the webhook and the reconcile will ask, dependencies included."""
    from pathlib import Path

    import yaml

    root = Path(__file__).resolve().parents[2] / "manifests"
    docs = [
        d
        for path in sorted(root.rglob("*.yaml"))
        for d in yaml.safe_load_all(path.read_text())
        if isinstance(d, dict) and d.get("kind") == "BackgroundJob"
    ]
    assert docs
    specs: dict[tuple[str, str], BackgroundJobSpec] = {}
    for d in docs:
        parsed = parse_spec(d["spec"])
        assert isinstance(parsed, BackgroundJobSpec), (d["metadata"]["name"], parsed)
        specs[(d["metadata"].get("namespace", "default"), d["metadata"]["name"])] = parsed
    for (ns, name), s in specs.items():

        def lookup(n: str, ns: str = ns) -> BackgroundJobSpec | None:
            return specs.get((ns, n))

        assert check(name, ns, s, lookup) is None, name
