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

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator
from pydantic.alias_generators import to_camel

from nightshift.api import durations
from nightshift_jobs.contract import BUILTIN_NAMES, NON_RETRYABLE_EXIT_CODES

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


def _rule(rule: str, message: str, field_path: str | None = None, reason: str | None = None) -> Any:
    """A CEL rule (x-kubernetes-validations).

    `field_path` (relative to the rule's object, e.g. ".volumeMounts") makes the API server name that
    field in its error instead of the object the rule sits on, which at a CRD's root prints as `<nil>`.
    `reason` picks the error's wording: FieldValueInvalid ("Invalid value"), FieldValueForbidden, ...
    """
    out: dict[str, str] = {"rule": rule, "message": message}
    if field_path is not None:
        out["fieldPath"] = field_path
    if reason is not None:
        out["reason"] = reason
    return out


class Model(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True)


class Dependency(Model):
    """A BackgroundJob in this namespace that must have succeeded before a run of this one starts."""

    name: Name = Field(description="The BackgroundJob depended on, in this namespace.")
    within: Duration | None = Field(
        default=None, description="For a dependency without a schedule: a success this recent counts (default 1d)."
    )


class Backoff(Model):
    """The delay before retry n: initial * factor^(n-1), capped at max, plus jitter."""

    initial: Duration = Field(default="1m", description="Delay before the first retry.")
    factor: float = Field(default=2.0, ge=1.0, le=10.0, description="Multiplier applied to the delay per retry.")
    max: Duration = Field(default="1h", description="Upper bound on the delay.")
    jitter: float = Field(default=0.1, ge=0.0, le=1.0, description="Fraction of the delay added at random.")


class RetryPolicy(Model):
    """When and how a failed attempt is retried."""

    limit: int | None = Field(
        default=None,
        ge=0,
        le=20,
        description="Retries after the first attempt; default by priority (critical 3, high 2, medium 2, low 1).",
    )
    backoff: Backoff = Field(default=Backoff(), description="Delay between attempts.")
    non_retryable_exit_codes: list[Annotated[int, Field(ge=1, le=255)]] = Field(
        default=list(NON_RETRYABLE_EXIT_CODES),
        max_length=32,
        description="Exit codes that fail the run at once; default: usage (64), data (65) and config (78) errors.",
    )
    retry_on_timeout: bool = Field(default=True, description="Retry an attempt stopped by spec.timeout.")


class HistoryLimits(Model):
    """How many finished runs (their Jobs and pods) are kept."""

    successful: int = Field(default=3, ge=0, le=100, description="Succeeded runs to keep.")
    failed: int = Field(default=5, ge=0, le=100, description="Failed runs to keep.")


_DNS_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"


class Volume(Model):
    """A pod volume (persistentVolumeClaim, secret, configMap, ...); the API server checks the rest."""

    model_config = ConfigDict(extra="allow", json_schema_extra={"x-kubernetes-preserve-unknown-fields": True})

    name: str = Field(max_length=63, pattern=_DNS_LABEL, description="The volume's name, used by volumeMounts.")


class VolumeMount(Model):
    """Where a volume appears in the job's container."""

    name: str = Field(max_length=63, pattern=_DNS_LABEL, description="One of job.volumes (or tmp).")
    mount_path: str = Field(max_length=1024, pattern=r"^/", description="Absolute path in the container.")
    read_only: bool = Field(default=False, description="Mount read-only.")
    sub_path: str | None = Field(default=None, max_length=1024, description="A path inside the volume to mount.")


RESERVED_VOLUME = "tmp"  # the emptyDir at /tmp that a read-only root filesystem needs


class JobSource(Model):
    """What a run executes: a built-in job with params, or any image with command and args."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                _rule(
                    "has(self.builtin) != has(self.image)",
                    "set exactly one of job.builtin or job.image",
                    ".builtin",
                    "FieldValueInvalid",
                ),
                _rule(
                    "!has(self.params) || has(self.builtin)",
                    "job.params is for built-in jobs; use env or args",
                    ".params",
                    "FieldValueForbidden",
                ),
                _rule(
                    "!has(self.command) || has(self.image)",
                    "job.command needs job.image",
                    ".command",
                    "FieldValueForbidden",
                ),
                _rule(
                    "!has(self.volumeMounts) || self.volumeMounts.all(m, m.name == 'tmp'"
                    " || (has(self.volumes) && self.volumes.exists(v, v.name == m.name)))",
                    "every job.volumeMounts name must be one of job.volumes",
                    ".volumeMounts",
                    "FieldValueInvalid",
                ),
                _rule(
                    "!has(self.volumes) || self.volumes.all(v, v.name != 'tmp')",
                    "the volume name tmp is reserved (nightshift mounts an emptyDir at /tmp)",
                    ".volumes",
                    "FieldValueForbidden",
                ),
                _rule(
                    "!has(self.volumeMounts) || self.volumeMounts.all(m, m.mountPath != '/tmp')",
                    "/tmp is reserved (nightshift mounts an emptyDir there)",
                    ".volumeMounts",
                    "FieldValueForbidden",
                ),
            ]
        }
    )

    builtin: str | None = Field(
        default=None,
        max_length=63,
        pattern=r"^[a-z0-9][-a-z0-9]*$",
        description=f"A built-in job: {', '.join(BUILTIN_NAMES)}.",
    )
    params: Opaque | None = Field(
        default=None, description="The built-in's parameters (camelCase keys); checked against the built-in's own."
    )
    image: str | None = Field(
        default=None, max_length=512, description="A container image to run instead of a built-in."
    )
    command: list[Annotated[str, Field(max_length=4096)]] | None = Field(
        default=None, max_length=64, description="The image's entrypoint override."
    )
    args: list[Annotated[str, Field(max_length=4096)]] | None = Field(
        default=None, max_length=256, description="Arguments for the image's command."
    )
    env: list[Opaque] | None = Field(default=None, max_length=128, description="Container env (core/v1 EnvVar).")
    env_from: list[Opaque] | None = Field(
        default=None, max_length=32, description="Container envFrom (core/v1 EnvFromSource), e.g. a Secret's keys."
    )
    resources: Opaque | None = Field(default=None, description="Container resources (requests and limits).")
    service_account_name: str | None = Field(
        default=None, max_length=253, description="The pod's ServiceAccount; default: the namespace's default."
    )
    automount_service_account_token: bool = Field(
        default=False, description="Mount the ServiceAccount token (off: jobs rarely call the Kubernetes API)."
    )
    node_selector: StringMap | None = Field(default=None, description="Pod nodeSelector.")
    tolerations: list[Opaque] | None = Field(default=None, max_length=32, description="Pod tolerations.")
    volumes: list[Volume] | None = Field(
        default=None,
        max_length=16,
        description="Pod volumes; tmp is reserved (an emptyDir at /tmp is always there).",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]},
    )
    volume_mounts: list[VolumeMount] | None = Field(
        default=None,
        max_length=16,
        description="Mounts of job.volumes in the job's container.",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["mountPath"]},
    )
    fs_group: int | None = Field(
        default=None, ge=1, le=2147483647, description="Pod fsGroup, so a non-root job can write its volumes."
    )
    labels: StringMap | None = Field(default=None, description="Extra labels on the run's Jobs and pods.")
    annotations: StringMap | None = Field(default=None, description="Extra annotations on the run's pods.")

    # Field validators (not one model validator) so that an error names the field it is about.
    @field_validator("volumes")
    @classmethod
    def _volume_names(cls, value: list[Volume] | None) -> list[Volume] | None:
        declared = [v.name for v in value or []]
        if RESERVED_VOLUME in declared:
            raise ValueError("the volume name tmp is reserved (nightshift mounts an emptyDir at /tmp)")
        if len(set(declared)) != len(declared):
            raise ValueError("job.volumes names must be unique")
        return value

    @field_validator("volume_mounts")
    @classmethod
    def _mounts(cls, value: list[VolumeMount] | None, info: ValidationInfo) -> list[VolumeMount] | None:
        paths = [m.mount_path for m in value or []]
        if "/tmp" in paths:
            raise ValueError("/tmp is reserved (nightshift mounts an emptyDir there)")
        if len(set(paths)) != len(paths):
            raise ValueError("job.volumeMounts mount paths must be unique")
        if "volumes" not in info.data:  # job.volumes itself is invalid: that error says enough
            return value
        declared = {v.name for v in info.data["volumes"] or []}
        for m in value or []:
            if m.name != RESERVED_VOLUME and m.name not in declared:
                raise ValueError(f"volume {m.name!r} is not one of job.volumes")
        return value

    @model_validator(mode="after")
    def _one_source(self) -> JobSource:
        if (self.builtin is None) == (self.image is None):
            raise ValueError("set exactly one of job.builtin or job.image")
        return self


_ONE_TRIGGER = "set at most one of schedule, every and at"


class BackgroundJobSpec(Model):
    """A job to run on a schedule, at a time, after other jobs, or on demand."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                # Two rules, each naming the field that makes the spec invalid.
                _rule("!has(self.every) || !has(self.schedule)", _ONE_TRIGGER, ".every", "FieldValueForbidden"),
                _rule(
                    "!has(self.at) || (!has(self.schedule) && !has(self.every))",
                    _ONE_TRIGGER,
                    ".at",
                    "FieldValueForbidden",
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
    time_zone: Annotated[str, Field(max_length=64), AfterValidator(_time_zone)] = Field(
        default="UTC", description="IANA time zone the schedule is read in, e.g. Europe/Berlin."
    )
    suspend: bool = Field(default=False, description="Start no new runs; running ones finish.")
    priority: Priority = Field(default="medium", description="Order of admission in a queue, and the retry default.")
    queue: Name | None = Field(default=None, description="A BackgroundJobQueue bounding concurrent runs.")
    depends_on: list[Dependency] = Field(
        default=[], max_length=32, description="Jobs that must have succeeded before a run starts."
    )
    on_dependency_failure: Literal["Skip", "Run"] = Field(
        default="Skip", description="What a run does when a dependency failed: Skip it or Run anyway."
    )
    dependency_timeout: Duration | None = Field(
        default=None, description="How long a run waits for its dependencies before it is skipped."
    )
    run_after: list[Name] = Field(
        default=[], max_length=32, description="Jobs whose success triggers a run of this one (a chain)."
    )
    run_on_create: bool = Field(default=False, description="Run once as soon as the job is created.")
    timeout: Duration | None = Field(default=None, description="Stop an attempt that runs longer than this.")
    retry: RetryPolicy = Field(default=RetryPolicy(), description="Retries of failed attempts.")
    quarantine_after: int | None = Field(
        default=None, ge=1, le=1000, description="Suspend the job after this many consecutive failed runs."
    )
    concurrency_policy: Literal["Allow", "Forbid", "Replace"] = Field(
        default="Forbid", description="A run due while one is active: Allow both, Forbid the new, Replace the old."
    )
    missed_runs: Literal["Skip", "RunLatest", "RunAll"] = Field(
        default="RunLatest", description="Runs missed while the operator or the job was down: Skip, RunLatest, RunAll."
    )
    max_catch_up: int = Field(default=10, ge=1, le=1000, description="Bound on runs created by RunAll.")
    starting_deadline: Duration | None = Field(
        default=None, description="A scheduled run that cannot start within this is counted as missed."
    )
    history: HistoryLimits = Field(default=HistoryLimits(), description="Finished runs to keep.")
    job: JobSource = Field(description="What a run executes.")

    # Field validators so that the error names the second trigger (fields validate in this order).
    @field_validator("every")
    @classmethod
    def _every_alone(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is not None and info.data.get("schedule") is not None:
            raise ValueError(_ONE_TRIGGER)
        return value

    @field_validator("at")
    @classmethod
    def _at_alone(cls, value: dt.datetime | None, info: ValidationInfo) -> dt.datetime | None:
        if value is not None and (info.data.get("schedule") is not None or info.data.get("every") is not None):
            raise ValueError(_ONE_TRIGGER)
        return value

    @property
    def retry_limit(self) -> int:
        return self.retry.limit if self.retry.limit is not None else DEFAULT_RETRY_LIMIT[self.priority]

    @property
    def scheduled(self) -> bool:
        return self.schedule is not None or self.every is not None


class Condition(Model):
    """metav1.Condition."""

    type: str = Field(max_length=316, description="Ready, or for runs Finished and Succeeded.")
    status: Literal["True", "False", "Unknown"] = Field(description="True, False or Unknown.")
    reason: str = Field(max_length=1024, description="One CamelCase word for machines, e.g. InvalidSchedule.")
    message: str = Field(default="", max_length=32768, description="What happened, for people.")
    last_transition_time: dt.datetime = Field(description="When status last changed.")
    observed_generation: int | None = Field(default=None, description="The spec generation this condition is about.")


RunResult = Literal["Waiting", "Running", "Succeeded", "Failed", "Skipped", "Cancelled", "Retrying"]


class RunSummary(Model):
    """The latest run of a job."""

    id: str = Field(max_length=128, description="The run's id (its first attempt's Job name).")
    trigger: str = Field(
        default="schedule", max_length=64, description="What started it: schedule, manual, create, at, chain, ..."
    )
    scheduled_time: dt.datetime | None = Field(default=None, description="The time the run stands for.")
    start_time: dt.datetime | None = Field(default=None, description="When its first attempt started.")
    completion_time: dt.datetime | None = Field(default=None, description="When it finished.")
    attempts: int = Field(default=0, description="Attempts that started or finished.")
    result: RunResult = Field(description="Waiting, Running, Retrying, Succeeded, Failed, Skipped or Cancelled.")
    exit_code: int | None = Field(default=None, description="The last attempt's exit code.")
    reason: str | None = Field(
        default=None, max_length=256, description="Why it ended this way, e.g. NonRetryableExitCode."
    )
    message: str | None = Field(default=None, max_length=4096, description="The job's own message.")
    output: Opaque | None = Field(
        default=None, description="The job's result (counts, duration) from its termination log."
    )


class BackgroundJobStatus(Model):
    """What the operator last saw and did; written by the operator only."""

    observed_generation: int | None = Field(default=None, description="The spec generation last reconciled.")
    conditions: list[Condition] = Field(
        default=[],
        max_length=16,
        description="Ready (the spec can be served; False with a reason and message when not), and others.",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]},
    )
    schedule: str | None = Field(default=None, max_length=256, description="The effective schedule, for people.")
    cron_job: str | None = Field(default=None, max_length=253, description="The CronJob that starts scheduled runs.")
    last_schedule_time: dt.datetime | None = Field(default=None, description="The latest scheduled time that ran.")
    next_schedule_time: dt.datetime | None = Field(default=None, description="The next scheduled time.")
    last_successful_time: dt.datetime | None = Field(default=None, description="When a run last succeeded.")
    last_failure_time: dt.datetime | None = Field(default=None, description="When a run last failed.")
    consecutive_failures: int = Field(default=0, description="Failed runs since the last success.")
    missed_runs: int = Field(default=0, description="Scheduled times that never ran.")
    skipped_runs: int = Field(default=0, description="Runs skipped (dependencies, concurrency, suspension).")
    waiting: int = Field(default=0, description="Runs waiting for a queue, a dependency or a backoff.")
    active: int = Field(default=0, description="Runs with a running attempt.")
    last_run: RunSummary | None = Field(default=None, description="The latest run.")
    handled_triggers: list[Annotated[str, Field(max_length=128)]] = Field(
        default=[], max_length=32, description="Triggers (run-now nonces, at, runOnCreate) already turned into runs."
    )


class BackgroundJob(Model):
    """Only the parts of the object the operator reads; metadata stays a dict."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                _rule(
                    f"self.metadata.name.size() <= {MAX_NAME}",
                    f"metadata.name must be at most {MAX_NAME} characters: it names the CronJob",
                    ".metadata.name",
                    "FieldValueInvalid",
                ),
            ]
        }
    )

    api_version: Literal["nightshift.dev/v1alpha1"] = "nightshift.dev/v1alpha1"
    kind: Literal["BackgroundJob"] = "BackgroundJob"
    metadata: Opaque = {}
    spec: BackgroundJobSpec = Field(description="The job: when it runs, what it runs, and how.")
    status: BackgroundJobStatus | None = Field(default=None, description="Written by the operator.")


class RateLimit(Model):
    """At most `runs` admissions in any window of length `per`."""

    runs: int = Field(ge=1, le=100000, description="Runs admitted per window.")
    per: Duration = Field(description="The window, e.g. 1h.")


class BackgroundJobQueueSpec(Model):
    """Bounds on the runs of the jobs that name this queue."""

    concurrency: int = Field(default=1, ge=1, le=10000, description="Runs of this queue's jobs running at once.")
    rate_limit: RateLimit | None = Field(default=None, description="A bound on how often runs start.")
    paused: bool = Field(default=False, description="Admit no new runs; running ones finish.")


class BackgroundJobQueueStatus(Model):
    """The queue's load, written by the operator."""

    waiting: int = Field(default=0, description="Runs waiting for admission.")
    running: int = Field(default=0, description="Runs admitted and not finished.")
    conditions: list[Condition] = Field(
        default=[],
        max_length=8,
        description="The queue's conditions.",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]},
    )


class BackgroundJobQueue(Model):
    api_version: Literal["nightshift.dev/v1alpha1"] = "nightshift.dev/v1alpha1"
    kind: Literal["BackgroundJobQueue"] = "BackgroundJobQueue"
    metadata: Opaque = {}
    spec: BackgroundJobQueueSpec = Field(default=BackgroundJobQueueSpec(), description="The queue's bounds.")
    status: BackgroundJobQueueStatus | None = Field(default=None, description="Written by the operator.")


RunPhase = Literal["Pending", "Waiting", "Running", "Retrying", "Succeeded", "Failed", "Skipped", "Cancelled"]
TERMINAL_PHASES: tuple[str, ...] = ("Succeeded", "Failed", "Skipped", "Cancelled")


class BackgroundJobRunSpec(Model):
    """One requested run of a BackgroundJob. Immutable: a request is a fact, so ask again with a new one."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                # A transition rule on the whole spec (it also catches a field added or removed), so it has no
                # one field to name; it is not at the object root, so the API server says "spec: ...".
                _rule(
                    "self == oldSelf",
                    "a BackgroundJobRun's spec cannot change; create another run",
                    reason="FieldValueForbidden",
                ),
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
    scheduled_time: dt.datetime | None = Field(default=None, description="The time the run stands for.")
    start_time: dt.datetime | None = Field(default=None, description="When its first attempt started.")
    completion_time: dt.datetime | None = Field(default=None, description="When it finished.")
    exit_code: int | None = Field(default=None, description="The last attempt's exit code.")
    reason: str | None = Field(
        default=None, max_length=256, description="Why it ended this way, e.g. RetriesExhausted."
    )
    message: str | None = Field(default=None, max_length=4096, description="The job's own message.")
    output: Opaque | None = Field(
        default=None, description="The job's result (counts, duration) from its termination log."
    )
    conditions: list[Condition] = Field(
        default=[],
        max_length=8,
        description="Finished (True once the run ended in any way) and Succeeded (True or False once it ended).",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]},
    )


class BackgroundJobRun(Model):
    """A request for one run of a BackgroundJob, and its result."""

    api_version: Literal["nightshift.dev/v1alpha1"] = "nightshift.dev/v1alpha1"
    kind: Literal["BackgroundJobRun"] = "BackgroundJobRun"
    metadata: Opaque = {}
    spec: BackgroundJobRunSpec = Field(description="What to run; immutable.")
    status: BackgroundJobRunStatus | None = Field(default=None, description="Written by the operator.")
