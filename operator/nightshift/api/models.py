"""The nightshift API (nightshift.dev/v1alpha1) as pydantic models: the one source of truth.

The CRDs in crds/ are generated from these models (nightshift.api.crd), so a bound, default or enum
written here is enforced by the API server too. What the schema cannot say (cron syntax, time zone
names, built-in names, interval maths) is checked by validators here, which the operator and the
CLI share, and reported as Ready=False with a reason.
"""

from __future__ import annotations

import datetime as dt
import zoneinfo
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator
from pydantic.alias_generators import to_camel

from nightshift.api import durations

GROUP = "nightshift.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
# CronJob names are limited to 52 characters (the controller appends an 11-character suffix to Jobs).
MAX_NAME = 52

Priority = Literal["critical", "high", "medium", "low"]
PRIORITIES: tuple[Priority, ...] = ("critical", "high", "medium", "low")
DEFAULT_RETRY_LIMIT: dict[str, int] = {"critical": 3, "high": 2, "medium": 2, "low": 1}


def _duration(value: str) -> str:
    durations.parse(value)
    return value


def _time_zone(value: str) -> str:
    try:
        zoneinfo.ZoneInfo(value)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError) as e:
        raise ValueError(f"unknown time zone {value!r}") from e
    return value


Duration = Annotated[
    str,
    Field(max_length=32, pattern=durations.PATTERN, examples=["90s", "5m", "1h30m", "7d"]),
    AfterValidator(_duration),
]
Name = Annotated[str, Field(min_length=1, max_length=MAX_NAME, pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")]
Opaque = Annotated[dict[str, Any], Field(json_schema_extra={"x-kubernetes-preserve-unknown-fields": True})]
StringMap = Annotated[dict[str, Annotated[str, Field(max_length=4096)]], Field(max_length=64)]


def _rule(rule: str, message: str) -> Any:
    return {"rule": rule, "message": message}


class Model(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True)


class Dependency(Model):
    name: Name
    within: Duration | None = Field(
        default=None, description="For a dependency without a schedule: a success this recent counts."
    )


class Backoff(Model):
    initial: Duration = "1m"
    factor: float = Field(default=2.0, ge=1.0, le=10.0)
    max: Duration = "1h"
    jitter: float = Field(default=0.1, ge=0.0, le=1.0, description="Fraction of the delay added at random.")


class RetryPolicy(Model):
    limit: int | None = Field(
        default=None, ge=0, le=20, description="Retries after the first attempt; default by priority."
    )
    backoff: Backoff = Backoff()
    non_retryable_exit_codes: list[Annotated[int, Field(ge=1, le=255)]] = Field(default=[64, 65, 78], max_length=32)
    retry_on_timeout: bool = True


class HistoryLimits(Model):
    successful: int = Field(default=3, ge=0, le=100)
    failed: int = Field(default=5, ge=0, le=100)


class Volume(Model):
    """A pod volume (persistentVolumeClaim, secret, configMap, ...); the API server checks the rest."""

    model_config = ConfigDict(extra="allow", json_schema_extra={"x-kubernetes-preserve-unknown-fields": True})

    name: str = Field(max_length=63, pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


class VolumeMount(Model):
    name: str = Field(max_length=63, pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    mount_path: str = Field(max_length=1024, pattern=r"^/")
    read_only: bool = False
    sub_path: str | None = Field(default=None, max_length=1024)


RESERVED_VOLUME = "tmp"  # the emptyDir at /tmp that a read-only root filesystem needs


class JobSource(Model):
    """A built-in job with params, or any image with command and args."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                _rule("has(self.builtin) != has(self.image)", "set exactly one of job.builtin or job.image"),
                _rule(
                    "!has(self.params) || has(self.builtin)",
                    "job.params is for built-in jobs; use env or args",
                ),
                _rule("!has(self.command) || has(self.image)", "job.command needs job.image"),
                _rule(
                    "!has(self.volumeMounts) || self.volumeMounts.all(m, m.name == 'tmp'"
                    " || (has(self.volumes) && self.volumes.exists(v, v.name == m.name)))",
                    "every job.volumeMounts name must be one of job.volumes",
                ),
                _rule(
                    "!has(self.volumes) || self.volumes.all(v, v.name != 'tmp')",
                    "the volume name tmp is reserved (nightshift mounts an emptyDir at /tmp)",
                ),
                _rule(
                    "!has(self.volumeMounts) || self.volumeMounts.all(m, m.mountPath != '/tmp')",
                    "/tmp is reserved (nightshift mounts an emptyDir there)",
                ),
            ]
        }
    )

    builtin: str | None = Field(default=None, max_length=63, pattern=r"^[a-z0-9][-a-z0-9]*$")
    params: Opaque | None = None
    image: str | None = Field(default=None, max_length=512)
    command: list[Annotated[str, Field(max_length=4096)]] | None = Field(default=None, max_length=64)
    args: list[Annotated[str, Field(max_length=4096)]] | None = Field(default=None, max_length=256)
    env: list[Opaque] | None = Field(default=None, max_length=128)
    env_from: list[Opaque] | None = Field(default=None, max_length=32)
    resources: Opaque | None = None
    service_account_name: str | None = Field(default=None, max_length=253)
    automount_service_account_token: bool = False
    node_selector: StringMap | None = None
    tolerations: list[Opaque] | None = Field(default=None, max_length=32)
    volumes: list[Volume] | None = Field(
        default=None,
        max_length=16,
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]},
    )
    volume_mounts: list[VolumeMount] | None = Field(
        default=None,
        max_length=16,
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["mountPath"]},
    )
    fs_group: int | None = Field(
        default=None, ge=1, le=2147483647, description="Pod fsGroup, so a non-root job can write its volumes."
    )
    labels: StringMap | None = None
    annotations: StringMap | None = None

    @model_validator(mode="after")
    def _one_source(self) -> JobSource:
        if (self.builtin is None) == (self.image is None):
            raise ValueError("set exactly one of job.builtin or job.image")
        return self

    @model_validator(mode="after")
    def _volumes(self) -> JobSource:
        declared = [v.name for v in self.volumes or []]
        if RESERVED_VOLUME in declared:
            raise ValueError("the volume name tmp is reserved (nightshift mounts an emptyDir at /tmp)")
        if len(set(declared)) != len(declared):
            raise ValueError("job.volumes names must be unique")
        paths = [m.mount_path for m in self.volume_mounts or []]
        if "/tmp" in paths:
            raise ValueError("/tmp is reserved (nightshift mounts an emptyDir there)")
        if len(set(paths)) != len(paths):
            raise ValueError("job.volumeMounts mount paths must be unique")
        for m in self.volume_mounts or []:
            if m.name != RESERVED_VOLUME and m.name not in declared:
                raise ValueError(f"job.volumeMounts {m.name!r} is not one of job.volumes")
        return self


class BackgroundJobSpec(Model):
    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                _rule(
                    "[has(self.schedule), has(self.every), has(self.at)].filter(x, x).size() <= 1",
                    "set at most one of schedule, every and at",
                ),
            ]
        }
    )

    schedule: str | None = Field(
        default=None,
        min_length=1,
        max_length=128,
        description="5-field cron or a macro (@hourly, @daily, @weekly, @monthly, @yearly).",
    )
    every: Duration | None = Field(default=None, description="An interval that maps to cron: 5m, 2h, 1d.")
    at: dt.datetime | None = Field(default=None, description="One run at this time (RFC 3339).")
    time_zone: Annotated[str, Field(max_length=64), AfterValidator(_time_zone)] = "UTC"
    suspend: bool = False
    priority: Priority = "medium"
    queue: Name | None = None
    depends_on: list[Dependency] = Field(default=[], max_length=32)
    on_dependency_failure: Literal["Skip", "Run"] = "Skip"
    dependency_timeout: Duration | None = None
    run_after: list[Name] = Field(default=[], max_length=32)
    run_on_create: bool = False
    timeout: Duration | None = None
    retry: RetryPolicy = RetryPolicy()
    quarantine_after: int | None = Field(default=None, ge=1, le=1000)
    concurrency_policy: Literal["Allow", "Forbid", "Replace"] = "Forbid"
    missed_runs: Literal["Skip", "RunLatest", "RunAll"] = "RunLatest"
    max_catch_up: int = Field(default=10, ge=1, le=1000, description="Bound on runs created by RunAll.")
    starting_deadline: Duration | None = None
    history: HistoryLimits = HistoryLimits()
    job: JobSource

    @model_validator(mode="after")
    def _checks(self) -> BackgroundJobSpec:
        if sum(x is not None for x in (self.schedule, self.every, self.at)) > 1:
            raise ValueError("set at most one of schedule, every and at")
        return self

    @property
    def retry_limit(self) -> int:
        return self.retry.limit if self.retry.limit is not None else DEFAULT_RETRY_LIMIT[self.priority]

    @property
    def scheduled(self) -> bool:
        return self.schedule is not None or self.every is not None


class Condition(Model):
    """metav1.Condition."""

    type: str = Field(max_length=316)
    status: Literal["True", "False", "Unknown"]
    reason: str = Field(max_length=1024)
    message: str = Field(default="", max_length=32768)
    last_transition_time: dt.datetime
    observed_generation: int | None = None


RunResult = Literal["Waiting", "Running", "Succeeded", "Failed", "Skipped", "Cancelled", "Retrying"]


class RunSummary(Model):
    id: str = Field(max_length=128)
    trigger: str = Field(default="schedule", max_length=64)
    scheduled_time: dt.datetime | None = None
    start_time: dt.datetime | None = None
    completion_time: dt.datetime | None = None
    attempts: int = 0
    result: RunResult
    exit_code: int | None = None
    reason: str | None = Field(default=None, max_length=256)
    message: str | None = Field(default=None, max_length=4096)
    output: Opaque | None = None


class BackgroundJobStatus(Model):
    observed_generation: int | None = None
    conditions: list[Condition] = Field(
        default=[],
        max_length=16,
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]},
    )
    schedule: str | None = Field(default=None, max_length=256, description="The effective schedule, for people.")
    cron_job: str | None = Field(default=None, max_length=253)
    last_schedule_time: dt.datetime | None = None
    next_schedule_time: dt.datetime | None = None
    last_successful_time: dt.datetime | None = None
    last_failure_time: dt.datetime | None = None
    consecutive_failures: int = 0
    missed_runs: int = 0
    skipped_runs: int = 0
    waiting: int = 0
    active: int = 0
    last_run: RunSummary | None = None
    handled_triggers: list[Annotated[str, Field(max_length=128)]] = Field(default=[], max_length=32)


class BackgroundJob(Model):
    """Only the parts of the object the operator reads; metadata stays a dict."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                _rule(
                    "self.metadata.name.size() <= 52",
                    "metadata.name must be at most 52 characters: it names the CronJob",
                ),
            ]
        }
    )

    api_version: Literal["nightshift.dev/v1alpha1"] = "nightshift.dev/v1alpha1"
    kind: Literal["BackgroundJob"] = "BackgroundJob"
    metadata: Opaque = {}
    spec: BackgroundJobSpec
    status: BackgroundJobStatus | None = None


class RateLimit(Model):
    runs: int = Field(ge=1, le=100000)
    per: Duration


class BackgroundJobQueueSpec(Model):
    concurrency: int = Field(default=1, ge=1, le=10000)
    rate_limit: RateLimit | None = None
    paused: bool = False


class BackgroundJobQueueStatus(Model):
    waiting: int = 0
    running: int = 0
    conditions: list[Condition] = Field(
        default=[],
        max_length=8,
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]},
    )


class BackgroundJobQueue(Model):
    api_version: Literal["nightshift.dev/v1alpha1"] = "nightshift.dev/v1alpha1"
    kind: Literal["BackgroundJobQueue"] = "BackgroundJobQueue"
    metadata: Opaque = {}
    spec: BackgroundJobQueueSpec = BackgroundJobQueueSpec()
    status: BackgroundJobQueueStatus | None = None


RunPhase = Literal["Pending", "Waiting", "Running", "Retrying", "Succeeded", "Failed", "Skipped", "Cancelled"]
TERMINAL_PHASES: tuple[str, ...] = ("Succeeded", "Failed", "Skipped", "Cancelled")


class BackgroundJobRunSpec(Model):
    """One requested run of a BackgroundJob. Immutable: a request is a fact, so ask again with a new one."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                _rule("self == oldSelf", "a BackgroundJobRun's spec cannot change; create another run"),
            ]
        }
    )

    background_job: Name = Field(description="The BackgroundJob to run, in this namespace.")
    params: Opaque | None = Field(
        default=None, description="Parameters for this run only, merged over the job's own job.params."
    )
    scheduled_time: dt.datetime | None = Field(
        default=None,
        description="The scheduled time this run stands for (a backfill); unset: the time the request was made.",
    )
    reason: str | None = Field(default=None, max_length=1024, description="Who asked for this run and why.")


class BackgroundJobRunStatus(Model):
    """The run's result, written back by the operator so `kubectl wait` works on the request."""

    phase: RunPhase = Field(default="Pending", description="Pending until the operator creates the run's Job.")
    run_id: str | None = Field(default=None, max_length=128, description="The run (its first attempt's Job name).")
    attempts: int = Field(default=0, description="Attempts that started or finished.")
    scheduled_time: dt.datetime | None = None
    start_time: dt.datetime | None = None
    completion_time: dt.datetime | None = None
    exit_code: int | None = None
    reason: str | None = Field(default=None, max_length=256)
    message: str | None = Field(default=None, max_length=4096)
    output: Opaque | None = None
    conditions: list[Condition] = Field(
        default=[],
        max_length=8,
        description="Finished (True once the run ended in any way) and Succeeded (True or False once it ended).",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]},
    )


class BackgroundJobRun(Model):
    api_version: Literal["nightshift.dev/v1alpha1"] = "nightshift.dev/v1alpha1"
    kind: Literal["BackgroundJobRun"] = "BackgroundJobRun"
    metadata: Opaque = {}
    spec: BackgroundJobRunSpec
    status: BackgroundJobRunStatus | None = None
