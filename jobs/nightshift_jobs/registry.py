"""Job registry: name -> (function, params model).

Importing this module is cheap on purpose (no pydantic, no psycopg). The names valid after `builtin:`
are part of the run contract (nightshift_jobs.contract.BUILTIN_NAMES); this module maps each to the
module that registers it. Built-in modules are imported only when a job is run, or when the operator
asks for a built-in's params model (params_model) to validate a BackgroundJob's `job.params`.
Extra jobs come from modules named in NIGHTSHIFT_JOB_MODULES (comma separated) or from the
`nightshift.jobs` entry-point group; importing them runs their @job decorators.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, TypeVar

from nightshift_jobs.contract import BUILTIN_NAMES as BUILTIN_NAMES
from nightshift_jobs.contract import ENV_JOB_MODULES

if TYPE_CHECKING:
    from nightshift_jobs.params import JobParams
    from nightshift_jobs.runtime import Counts, JobContext

_BUILTIN_MODULES: Final[dict[str, str]] = {
    "archive": "archive",
    "backup": "backup",
    "db-maintenance": "db_maintenance",
    "health-check": "health_check",
    "http": "http",
    "refresh-views": "refresh_views",
    "sql": "sql",
    "ttl-cleanup": "ttl_cleanup",
}
if tuple(sorted(_BUILTIN_MODULES)) != BUILTIN_NAMES:  # pragma: no cover - caught by the unit tests on import
    raise RuntimeError("nightshift_jobs.contract.BUILTIN_NAMES and the registry's built-in modules differ")

ENTRY_POINT_GROUP: Final = "nightshift.jobs"
P = TypeVar("P", bound="JobParams")
JobFunc = Callable[["JobContext", P], "Counts | None"]


@dataclass(frozen=True)
class JobSpec:
    name: str
    params: type[JobParams]
    func: Callable[[JobContext, Any], Counts | None]


_REGISTRY: dict[str, JobSpec] = {}
_plugins_loaded = False


def builtin_names() -> list[str]:
    """Sorted names of the built-in jobs (same as BUILTIN_NAMES, as a list)."""
    return list(BUILTIN_NAMES)


def job(name: str, *, params: type[P]) -> Callable[[JobFunc[P]], JobFunc[P]]:
    """Register `func` as job `name`; `params` is the pydantic model its parameters validate into."""

    def register(func: JobFunc[P]) -> JobFunc[P]:
        existing = _REGISTRY.get(name)
        if existing is not None and existing.func is not func:
            raise ValueError(f"job {name!r} is already registered by {existing.func.__module__}")
        _REGISTRY[name] = JobSpec(name=name, params=params, func=func)
        return func

    return register


def get(name: str) -> JobSpec:
    """Look a job up by name, importing its module on first use; unknown names are usage errors."""
    if name not in _REGISTRY and name in _BUILTIN_MODULES:
        importlib.import_module(f"nightshift_jobs.builtins.{_BUILTIN_MODULES[name]}")
    if name not in _REGISTRY:
        _load_plugins()
    spec = _REGISTRY.get(name)
    if spec is None:
        from nightshift_jobs.runtime import UsageError

        known = ", ".join(sorted(set(BUILTIN_NAMES) | set(_REGISTRY)))
        raise UsageError(f"unknown job {name!r} (known: {known})")
    return spec


def params_model(name: str) -> type[JobParams]:
    """The params model of built-in `name` (imports its module); KeyError for names that are not built-ins.

    Only built-ins: the operator validates `job.params` at apply time with it, and plugin jobs
    (NIGHTSHIFT_JOB_MODULES, entry points) live in job images the operator does not have.
    """
    if name not in _BUILTIN_MODULES:
        raise KeyError(name)
    return get(name).params


def _load_plugins() -> None:
    global _plugins_loaded
    if _plugins_loaded:
        return
    _plugins_loaded = True
    for module in filter(None, (m.strip() for m in os.environ.get(ENV_JOB_MODULES, "").split(","))):
        importlib.import_module(module)
    from importlib.metadata import entry_points

    for ep in entry_points(group=ENTRY_POINT_GROUP):
        ep.load()
