from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from nightshift.api.models import (
    DEFAULT_RETRY_LIMIT,
    BackgroundJob,
    BackgroundJobQueue,
    BackgroundJobSpec,
    Backoff,
    JobSource,
    RetryPolicy,
)
from tests.unit.factories import spec


def invalid(match: str, **fields: Any) -> None:
    with pytest.raises(ValidationError, match=match):
        spec(**fields)


def test_defaults() -> None:
    s = spec()
    assert s.schedule is None and s.every is None and s.at is None
    assert s.time_zone == "UTC"
    assert s.suspend is False
    assert s.priority == "medium"
    assert s.queue is None
    assert s.depends_on == [] and s.run_after == []
    assert s.on_dependency_failure == "Skip"
    assert s.dependency_timeout is None and s.timeout is None and s.starting_deadline is None
    assert s.run_on_create is False
    assert s.concurrency_policy == "Forbid"
    assert s.missed_runs == "RunLatest"
    assert s.max_catch_up == 10
    assert s.quarantine_after is None
    assert s.history.successful == 3 and s.history.failed == 5
    assert s.retry.limit is None
    assert s.retry.backoff == Backoff(initial="1m", factor=2.0, max="1h", jitter=0.1)
    assert s.retry.non_retryable_exit_codes == [64, 65, 78]
    assert s.retry.retry_on_timeout is True
    assert s.job.automount_service_account_token is False
    assert s.scheduled is False


@pytest.mark.parametrize(("priority", "limit"), [("critical", 3), ("high", 2), ("medium", 2), ("low", 1)])
def test_retry_limit_defaults_by_priority(priority: str, limit: int) -> None:
    assert DEFAULT_RETRY_LIMIT[priority] == limit
    assert spec(priority=priority).retry_limit == limit


@pytest.mark.parametrize("limit", [0, 1, 20])
def test_explicit_retry_limit_wins(limit: int) -> None:
    assert spec(priority="critical", retry={"limit": limit}).retry_limit == limit


@pytest.mark.parametrize("limit", [-1, 21])
def test_retry_limit_bounds(limit: int) -> None:
    invalid("limit", retry={"limit": limit})


@pytest.mark.parametrize(
    "backoff",
    [{"factor": 0.5}, {"factor": 10.5}, {"jitter": -0.1}, {"jitter": 1.5}, {"initial": "soon"}, {"max": "1 h"}],
)
def test_backoff_bounds(backoff: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        RetryPolicy.model_validate({"backoff": backoff})


@pytest.mark.parametrize("codes", [[0], [256], list(range(1, 34))])
def test_non_retryable_exit_code_bounds(codes: list[int]) -> None:
    invalid("nonRetryableExitCodes|non_retryable_exit_codes", retry={"nonRetryableExitCodes": codes})


def test_priority_enum() -> None:
    invalid("priority", priority="urgent")


@pytest.mark.parametrize("value", ["1 hour", "5", "-5m", "5M", "", "1h 30m", "1.5h", "1y", "m"])
def test_bad_durations_rejected(value: str) -> None:
    invalid("timeout", timeout=value)


@pytest.mark.parametrize("field", ["timeout", "every", "dependency_timeout", "starting_deadline"])
def test_bad_duration_in_every_duration_field(field: str) -> None:
    with pytest.raises(ValidationError):
        spec(**{field: "ten minutes"})


@pytest.mark.parametrize("value", ["90s", "5m", "1h30m", "7d", "2w", "250ms", "1d2h3m4s"])
def test_good_durations(value: str) -> None:
    assert spec(timeout=value).timeout == value


@pytest.mark.parametrize("value", ["90s", "5m", "1h30m", "7d", "2w", "250ms", "1w1d", "0s"])
def test_api_and_job_parameters_read_durations_alike(value: str) -> None:
    """One grammar (nightshift_jobs.contract): the spec's parser and the params' parser agree on it."""
    from nightshift.api import durations
    from nightshift_jobs import contract
    from nightshift_jobs.durations import format_duration, parse_duration

    assert durations.parse(value) == parse_duration(value) == contract.duration_from_text(value)
    assert durations.parse(durations.format(durations.parse(value))) == durations.parse(value)
    assert parse_duration(format_duration(parse_duration(value))) == parse_duration(value)
    assert durations.PATTERN == contract.DURATION_PATTERN


@pytest.mark.parametrize("value", ["1 hour", "5M", "1.5h", "-5m", "", "1h 30m"])
def test_api_and_job_parameters_reject_durations_alike(value: str) -> None:
    from nightshift.api import durations
    from nightshift_jobs.durations import parse_duration

    with pytest.raises(ValueError):
        durations.parse(value)
    with pytest.raises(ValueError):
        parse_duration(value)


def test_defaults_follow_the_run_contract() -> None:
    """The exit codes jobs use for "a retry cannot fix this" are the API's default nonRetryableExitCodes."""
    from nightshift_jobs.contract import NON_RETRYABLE_EXIT_CODES, ExitCode
    from nightshift_jobs.runtime import NON_RETRYABLE_EXIT_CODES as RUNTIME_CODES

    assert spec().retry.non_retryable_exit_codes == list(NON_RETRYABLE_EXIT_CODES) == [64, 65, 78]
    assert set(RUNTIME_CODES) == set(NON_RETRYABLE_EXIT_CODES) == {ExitCode.USAGE, ExitCode.DATA, ExitCode.CONFIG}
    assert RetryPolicy().non_retryable_exit_codes is not RetryPolicy().non_retryable_exit_codes  # no shared list


def test_dependency_within_duration() -> None:
    assert spec(dependsOn=[{"name": "a", "within": "24h"}]).depends_on[0].within == "24h"
    invalid("within", dependsOn=[{"name": "a", "within": "a day"}])


@pytest.mark.parametrize("tz", ["UTC", "Europe/Berlin", "America/New_York", "Asia/Kolkata"])
def test_good_time_zones(tz: str) -> None:
    assert spec(timeZone=tz).time_zone == tz


@pytest.mark.parametrize("tz", ["Mars/Olympus_Mons", "Europe/Berlinn", "../../etc/passwd", "", "CEST+2"])
def test_bad_time_zones(tz: str) -> None:
    invalid("unknown time zone", timeZone=tz)


@pytest.mark.parametrize(
    "fields",
    [
        {"schedule": "0 0 * * *", "every": "5m"},
        {"schedule": "0 0 * * *", "at": "2026-01-01T00:00:00Z"},
        {"every": "5m", "at": "2026-01-01T00:00:00Z"},
        {"schedule": "@daily", "every": "1d", "at": "2026-01-01T00:00:00Z"},
    ],
)
def test_at_most_one_of_schedule_every_at(fields: dict[str, Any]) -> None:
    invalid("set at most one of schedule, every and at", **fields)
    with pytest.raises(ValidationError) as info:
        spec(**fields)
    # the error is on the second trigger, not on the spec as a whole
    assert {e["loc"] for e in info.value.errors()} <= {("every",), ("at",)}


@pytest.mark.parametrize("fields", [{}, {"schedule": "@hourly"}, {"every": "15m"}, {"at": "2026-01-01T00:00:00Z"}])
def test_zero_or_one_of_schedule_every_at(fields: dict[str, Any]) -> None:
    s = spec(**fields)
    assert s.scheduled == ("schedule" in fields or "every" in fields)


def test_at_is_parsed_as_aware_datetime() -> None:
    s = spec(at="2026-01-01T10:00:00+01:00")
    assert s.at is not None and s.at.utcoffset() is not None
    assert s.at.isoformat() == "2026-01-01T10:00:00+01:00"


@pytest.mark.parametrize(
    "job", [{"builtin": "ttl-cleanup", "image": "busybox"}, {}, {"params": {"a": 1}}, {"command": ["true"]}]
)
def test_job_builtin_xor_image(job: dict[str, Any]) -> None:
    with pytest.raises(ValidationError, match=r"set exactly one of job\.builtin or job\.image"):
        JobSource.model_validate(job)


def test_job_image_with_command() -> None:
    j = JobSource.model_validate({"image": "busybox:1", "command": ["sh", "-c"], "args": ["echo hi"]})
    assert j.builtin is None and j.command == ["sh", "-c"] and j.args == ["echo hi"]


@pytest.mark.parametrize("builtin", ["TTL", "-x", "a_b", "x" * 64])
def test_builtin_name_pattern(builtin: str) -> None:
    with pytest.raises(ValidationError):
        JobSource.model_validate({"builtin": builtin})


@pytest.mark.parametrize("name", ["", "Upper", "-lead", "trail-", "under_score", "a" * 53])
def test_dns_names_for_dependencies_queue_and_run_after(name: str) -> None:
    invalid("depends_on|dependsOn", dependsOn=[{"name": name}])
    invalid("queue", queue=name)
    invalid("run_after|runAfter", runAfter=[name])


def test_name_of_exactly_52_characters_is_fine() -> None:
    assert spec(queue="a" * 52).queue == "a" * 52


def test_camel_case_aliases_round_trip() -> None:
    raw: dict[str, Any] = {
        "schedule": "0 0 * * 0",
        "timeZone": "Europe/Berlin",
        "priority": "high",
        "queue": "maintenance",
        "dependsOn": [{"name": "daily-memory-cleanup", "within": "24h"}],
        "onDependencyFailure": "Run",
        "dependencyTimeout": "6h",
        "runAfter": ["evaluation"],
        "runOnCreate": True,
        "timeout": "1h",
        "retry": {
            "limit": 4,
            "backoff": {"initial": "30s", "factor": 3, "max": "2h", "jitter": 0.5},
            "nonRetryableExitCodes": [2],
            "retryOnTimeout": False,
        },
        "quarantineAfter": 5,
        "concurrencyPolicy": "Replace",
        "missedRuns": "RunAll",
        "maxCatchUp": 3,
        "startingDeadline": "10m",
        "history": {"successful": 1, "failed": 2},
        "job": {
            "builtin": "ttl-cleanup",
            "params": {"table": "t", "olderThan": "240d"},
            "envFrom": [{"secretRef": {"name": "app-db"}}],
            "serviceAccountName": "sa",
            "automountServiceAccountToken": True,
            "nodeSelector": {"disk": "ssd"},
        },
    }
    s = BackgroundJobSpec.model_validate(raw)
    assert s.time_zone == "Europe/Berlin"
    assert s.on_dependency_failure == "Run"
    assert s.retry.non_retryable_exit_codes == [2]
    assert s.retry.retry_on_timeout is False
    assert s.job.env_from == [{"secretRef": {"name": "app-db"}}]
    assert s.job.service_account_name == "sa"
    assert s.retry_limit == 4
    dumped = s.model_dump(by_alias=True, exclude_none=True, exclude_defaults=True)
    assert dumped["timeZone"] == "Europe/Berlin"
    assert dumped["retry"]["nonRetryableExitCodes"] == [2]
    assert dumped["job"]["envFrom"] == [{"secretRef": {"name": "app-db"}}]
    assert BackgroundJobSpec.model_validate(s.model_dump(by_alias=True)) == s


def test_snake_case_names_are_accepted_too() -> None:
    assert spec(time_zone="Europe/Berlin", concurrency_policy="Allow").concurrency_policy == "Allow"


def test_unknown_fields_are_rejected() -> None:
    invalid("schedul", schedul="0 0 * * *")
    with pytest.raises(ValidationError):
        JobSource.model_validate({"builtin": "x", "imagePullPolicy": "Always"})


def test_models_are_frozen() -> None:
    s = spec()
    with pytest.raises(ValidationError):
        s.suspend = True  # type: ignore[misc]


@pytest.mark.parametrize(
    ("fields", "match"),
    [
        ({"quarantineAfter": 0}, "quarantine"),
        ({"maxCatchUp": 0}, "max_catch_up|maxCatchUp"),
        ({"history": {"failed": 101}}, "failed"),
        ({"concurrencyPolicy": "Sometimes"}, "concurrency"),
        ({"missedRuns": "All"}, "missed"),
        ({"onDependencyFailure": "Retry"}, "Dependency|dependency"),
        ({"schedule": ""}, "schedule"),
        ({"schedule": "x" * 129}, "schedule"),
    ],
)
def test_other_bounds(fields: dict[str, Any], match: str) -> None:
    invalid(match, **fields)


def test_background_job_object() -> None:
    obj = BackgroundJob.model_validate(
        {
            "apiVersion": "nightshift.dev/v1alpha1",
            "kind": "BackgroundJob",
            "metadata": {"name": "weekly-summary", "namespace": "blockwise"},
            "spec": {"schedule": "0 0 * * 0", "job": {"builtin": "ttl-cleanup"}},
            "status": {"consecutiveFailures": 2, "lastRun": {"id": "r", "result": "Failed"}},
        }
    )
    assert obj.metadata["name"] == "weekly-summary"
    assert obj.status is not None and obj.status.consecutive_failures == 2
    assert obj.status.last_run is not None and obj.status.last_run.trigger == "schedule"
    with pytest.raises(ValidationError):
        BackgroundJob.model_validate({"kind": "CronJob", "spec": {"job": {"builtin": "x"}}})


def test_queue_defaults_and_rate_limit() -> None:
    q = BackgroundJobQueue.model_validate({"metadata": {"name": "q"}})
    assert q.spec.concurrency == 1 and q.spec.paused is False and q.spec.rate_limit is None
    q = BackgroundJobQueue.model_validate({"spec": {"concurrency": 4, "rateLimit": {"runs": 10, "per": "1h"}}})
    assert q.spec.rate_limit is not None and q.spec.rate_limit.per == "1h"
    for bad in (
        {"concurrency": 0},
        {"rateLimit": {"runs": 0, "per": "1h"}},
        {"rateLimit": {"runs": 1, "per": "hourly"}},
    ):
        with pytest.raises(ValidationError):
            BackgroundJobQueue.model_validate({"spec": bad})


PVC = {"name": "data", "persistentVolumeClaim": {"claimName": "c"}}


@pytest.mark.parametrize(
    ("job", "match"),
    [
        ({"volumeMounts": [{"name": "data", "mountPath": "/data"}]}, "'data' is not one of job.volumes"),
        ({"volumes": [{"name": "tmp", "emptyDir": {}}]}, "volume name tmp is reserved"),
        ({"volumes": [PVC], "volumeMounts": [{"name": "data", "mountPath": "/tmp"}]}, "/tmp is reserved"),
        ({"volumes": [PVC, PVC]}, "names must be unique"),
        ({"volumes": [{"persistentVolumeClaim": {"claimName": "c"}}]}, "name"),
        ({"volumes": [PVC], "volumeMounts": [{"name": "data", "mountPath": "data"}]}, "mount_path|mountPath"),
        ({"fsGroup": 0}, "fs_group|fsGroup"),
    ],
)
def test_bad_volumes_rejected(job: dict[str, Any], match: str) -> None:
    with pytest.raises(ValidationError, match=match):
        spec(job={"builtin": "backup", **job})


def test_volumes_keep_their_source_as_written() -> None:
    s = spec(job={"builtin": "backup", "volumes": [PVC], "volumeMounts": [{"name": "data", "mountPath": "/data"}]})
    assert s.job.volumes and s.job.volumes[0].model_dump(by_alias=True) == PVC
