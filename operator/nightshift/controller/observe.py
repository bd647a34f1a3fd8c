"""observe(key): one BackgroundJob's world as the indexes hold it, for the pure plan.

Reads memory only (the indexes and the status this operator last wrote; it notes what it read, for
the echo check): no API call, so a pass costs the same however many objects the cluster holds.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pydantic import ValidationError

from nightshift.api.models import BackgroundJobSpec
from nightshift.controller.runtime import Key, Runtime
from nightshift.core import render, validate
from nightshift.core.plan import Observed, Problem
from nightshift.core.runs import Run, parse_time


def observe(rt: Runtime, key: Key) -> Observed | None:
    ns, name = key
    ix = rt.indexes
    entry = ix.bgj(ns, name)
    if entry is None:
        return None
    rt.status.read(key, entry)
    owner = render.Owner(name, ns, entry.uid)
    written = rt.status.last(key, entry)
    spec: BackgroundJobSpec | None = None
    invalid: str | None = None
    try:
        spec = BackgroundJobSpec.model_validate(entry.spec)
    except ValidationError as e:
        invalid = validate.field_errors(e)
    problem: Problem | None = None
    upstream: dict[str, Any] = {}
    if spec is not None:
        found = validate.check(name, ns, spec, lambda dep: ix.spec(ns, dep))
        if found is not None:
            problem = Problem(found.reason, found.message)
        for up in spec.run_after:
            upstream[up] = (ix.spec(ns, up), ix.runs(ns, up))
    runs = ix.runs(ns, name)
    counting = marks_in_flight(rt, ns, runs)
    return Observed(
        owner=owner,
        generation=entry.generation,
        created=parse_time(entry.created),
        annotations=dict(entry.annotations),
        spec=spec,
        invalid=invalid,
        written=written,
        runs=runs,
        requests=ix.requests_of(ns, name),
        upstream=upstream,
        cronjob=ix.cronjob(ns, name),
        problem=problem,
        now=rt.clock(),
        settings=rt.settings,
        counting=counting,
    )


def marks_in_flight(rt: Runtime, ns: str, runs: Sequence[Run]) -> frozenset[str]:
    """Final Jobs whose ledger mark this process wrote and the watch has not shown yet: their runs
    are counted, so a pass in that gap writes their event and mark no second time. A mark that
    failed is not here: the next pass writes it again (and `rt.counted` keeps the metric once)."""
    return frozenset(r.last.name for r in runs if not r.last.counted and rt.counted.get((ns, r.last.name)))
