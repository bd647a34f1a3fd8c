"""Job registry: name -> (function, params model).

Importing this module is cheap on purpose (no pydantic, no psycopg): the operator imports
BUILTIN_NAMES to validate `builtin:` names. Built-in modules are imported only when a job is run.
Extra jobs come from modules named in NIGHTSHIFT_JOB_MODULES (comma separated) or from the
`nightshift.jobs` entry-point group; importing them runs their @job decorators.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, TypeVar

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
BUILTIN_NAMES: Final[tuple[str, ...]] = tuple(sorted(_BUILTIN_MODULES))
"""Names valid after `builtin:` in a BackgroundJob's `job`; sorted."""

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


def _load_plugins() -> None:
    global _plugins_loaded
    if _plugins_loaded:
        return
    _plugins_loaded = True
    for module in filter(None, (m.strip() for m in os.environ.get("NIGHTSHIFT_JOB_MODULES", "").split(","))):
        importlib.import_module(module)
    from importlib.metadata import entry_points

    for ep in entry_points(group=ENTRY_POINT_GROUP):
        ep.load()
