"""Parameter loading and validation shared by all jobs.

Users write camelCase keys in YAML; models use snake_case fields with camelCase aliases and reject
unknown keys, so a typo like `olderThen` fails fast (exit 64) instead of running with a default.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import timedelta
from typing import Annotated, Any, TypeVar

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError
from pydantic.alias_generators import to_camel

from nightshift_jobs.durations import parse_duration
from nightshift_jobs.runtime import DataError, UsageError

Duration = Annotated[timedelta, BeforeValidator(parse_duration)]
"""A duration parameter: "90s", "30m", "1h", "240d"; see durations.parse_duration."""

Identifier = Annotated[str, Field(min_length=1, max_length=63)]
"""A PostgreSQL identifier, always quoted with psycopg.sql.Identifier (63 bytes is PostgreSQL's limit)."""

P = TypeVar("P", bound="JobParams")


class JobParams(BaseModel):
    """Base for every job's parameters: camelCase aliases, snake_case names accepted, no extras."""

    model_config = ConfigDict(extra="forbid", alias_generator=to_camel, populate_by_name=True, frozen=True)


class DbParams(JobParams):
    """Connection settings shared by the PostgreSQL jobs.

    Prefer DATABASE_URL from a Secret (envFrom) over `dsn`, which would put credentials in the spec.
    """

    dsn: str | None = None
    lock_timeout: Duration = timedelta(seconds=10)
    connect_timeout: Duration = timedelta(seconds=10)


def parse_override(text: str) -> tuple[str, Any]:
    """`k=v` from --param; v is JSON when it parses (numbers, lists, objects), else the raw string."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise UsageError(f"--param expects key=value, got {text!r}")
    try:
        parsed: Any = json.loads(value)
    except ValueError:
        parsed = value
    return key.strip(), parsed


def load_params(env_json: str | None, overrides: Mapping[str, Any]) -> dict[str, Any]:
    """NIGHTSHIFT_PARAMS (a JSON object) with --param overrides applied on top.

    The operator has already merged a run's own params (run-now, BackgroundJobRun.spec.params) over
    the job's `job.params` into NIGHTSHIFT_PARAMS; --param is for local runs and custom entrypoints.
    """
    params: dict[str, Any] = {}
    if env_json and env_json.strip():
        try:
            loaded = json.loads(env_json)
        except ValueError as exc:
            raise UsageError(f"NIGHTSHIFT_PARAMS is not valid JSON: {exc}") from None
        if not isinstance(loaded, dict):
            raise UsageError("NIGHTSHIFT_PARAMS must be a JSON object")
        params.update(loaded)
    params.update(overrides)
    return params


def validate_params(model: type[P], raw: Mapping[str, Any]) -> P:
    """Validate into the job's model; unknown/missing keys are usage errors (64), bad values data (65)."""
    try:
        return model.model_validate(dict(raw))
    except ValidationError as exc:
        usage = False
        problems: list[str] = []
        for err in exc.errors(include_url=False):
            where = ".".join(str(part) for part in err["loc"]) or "(params)"
            if err["type"] == "extra_forbidden":
                usage = True
                known = ", ".join(sorted(_aliases(model)))
                problems.append(f"unknown parameter {where!r} (known: {known})")
            elif err["type"] == "missing":
                usage = True
                problems.append(f"missing required parameter {where!r}")
            else:
                problems.append(f"invalid parameter {where!r}: {err['msg']}")
        text = "; ".join(problems)
        raise (UsageError(text) if usage else DataError(text)) from None


def _aliases(model: type[BaseModel]) -> list[str]:
    return [info.alias or name for name, info in model.model_fields.items()]
