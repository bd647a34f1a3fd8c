"""Whether a BackgroundJob spec can be served: the one place that decides it.

The admission webhook and every reconcile ask the same two questions, in this order:

1. parse_spec: does the spec fit the API (the pydantic models; what the CRD schema and CEL rules also
   check, plus what they cannot, such as time zone names)?
2. check: can the operator run it (cron syntax, built-in names, the built-in's own params, the
   dependency graph)?

Both answer with a Problem whose message names every field in the user's spelling
("spec.job.params.tabel: unknown parameter (did you mean table?)"), because the message is what
`kubectl apply` prints and what Ready=False shows; a path in pydantic's snake_case, a "Value error,"
prefix or a bare `<nil>` sends people guessing. Keeping the decision here, pure and without kopf,
is what lets the webhook (which can be down: it fails open) and the reconcile (which always runs)
never disagree.
"""

from __future__ import annotations

import difflib
import re
import types
import typing
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from pydantic import BaseModel, ValidationError

from nightshift.api import durations
from nightshift.api.models import BackgroundJobSpec
from nightshift.core import graph, schedule
from nightshift_jobs.contract import BUILTIN_NAMES

INVALID_SPEC: Final = "InvalidSpec"
INVALID_SCHEDULE: Final = "InvalidSchedule"
UNKNOWN_BUILTIN: Final = "UnknownBuiltin"
INVALID_PARAMS: Final = "InvalidParams"
DEPENDENCY_CYCLE: Final = "DependencyCycle"
DEPENDENCY_NOT_FOUND: Final = "DependencyNotFound"

MESSAGE_LIMIT: Final = 1000
"""Bound on a message: it goes into an admission response, a condition and an Event."""


@dataclass(frozen=True)
class Problem:
    """Why a spec cannot be served (yet).

    `reason` is the Ready condition's reason (one CamelCase word); `message` names each field.
    `blocking` is False only for DependencyNotFound: `kubectl apply -f dir/` creates objects in name
    order, so a job may arrive before the job it depends on. Admission lets it in with a warning,
    and Ready stays False until the dependency exists.
    """

    reason: str
    message: str
    blocking: bool = True

    def __str__(self) -> str:
        return f"{self.reason}: {self.message}"


Lookup = Callable[[str], BackgroundJobSpec | None]
"""Another BackgroundJob's spec in the same namespace by name; None when there is none (or it does not parse)."""


def parse_spec(raw: Mapping[str, Any]) -> BackgroundJobSpec | Problem:
    """The spec as the API models read it, or an InvalidSpec Problem naming every bad field."""
    try:
        return BackgroundJobSpec.model_validate(dict(raw))
    except ValidationError as e:
        return Problem(INVALID_SPEC, field_errors(e, "spec", model=BackgroundJobSpec))


def check(
    name: str,
    namespace: str,
    spec: BackgroundJobSpec,
    lookup: Lookup,
    *,
    exists: Callable[[str], bool] | None = None,
) -> Problem | None:
    """What stops the operator from serving a parsed spec, or None.

    Blocking problems come first (schedule, built-in, params, self-dependency, cycle), so a
    non-blocking DependencyNotFound never hides one. `lookup` gives other jobs' specs for the cycle
    search; `exists` (default: lookup(n) is not None) says whether a dependency exists at all, for a
    caller that knows of jobs whose spec does not parse.
    """
    return (
        _schedule_problem(spec)
        or _builtin_problem(spec)
        or _self_dependency(name, spec)
        or _cycle(name, spec, lookup)
        or _missing(namespace, spec, exists or (lambda n: lookup(n) is not None))
    )


def self_triggered(spec: BackgroundJobSpec) -> bool:
    """Whether the operator starts runs of this job by itself, with no caller to supply params.

    Scheduled (schedule, every, at), runOnCreate and runAfter (chained) runs get the job's own
    job.params only. A job with none of these runs only when asked (run-now, a BackgroundJobRun),
    and the request's params are merged over job.params, so a required param may come from there.
    """
    return bool(spec.schedule or spec.every or spec.at or spec.run_on_create or spec.run_after)


# -- the checks ---------------------------------------------------------------------------------
def _schedule_problem(spec: BackgroundJobSpec) -> Problem | None:
    try:
        schedule.cron_of(spec.schedule, spec.every)
    except schedule.ScheduleError as e:
        where = "spec.schedule" if spec.schedule is not None else "spec.every"
        text = str(e).removeprefix("every: ")
        return Problem(INVALID_SCHEDULE, _bounded(f"{where}: {text}"))
    return None


def _builtin_problem(spec: BackgroundJobSpec) -> Problem | None:
    builtin = spec.job.builtin
    if builtin is None:
        return None
    if builtin not in BUILTIN_NAMES:
        hint = _suggest(builtin, BUILTIN_NAMES)
        return Problem(
            UNKNOWN_BUILTIN,
            f"spec.job.builtin: unknown built-in job {builtin!r}{hint}; built-ins: {', '.join(BUILTIN_NAMES)}",
        )
    return params_problem(builtin, spec.job.params or {}, complete=self_triggered(spec))


def params_problem(builtin: str, params: Mapping[str, Any], *, complete: bool = True) -> Problem | None:
    """A built-in's params checked by that built-in's own model, as the job will check them at run time.

    Unknown keys and wrong types are always errors. Missing required params are errors only when
    `complete` (the job runs by itself, see self_triggered); otherwise a run request may supply them.
    The same function can check a run request's merged params (job.params with the request's over them).
    """
    from nightshift_jobs import registry  # imports the built-in's module (pydantic, psycopg) on first use

    model = registry.params_model(builtin)
    try:
        model.model_validate(dict(params))
    except ValidationError as e:
        errors = [err for err in e.errors(include_url=False) if complete or err["type"] != "missing"]
        if errors:
            return Problem(INVALID_PARAMS, _render(errors, "spec.job.params", model, "parameter", MESSAGE_LIMIT))
    return None


def _edges(spec: BackgroundJobSpec) -> list[tuple[str, str]]:
    """(field path, name) of every job this one waits for or follows."""
    deps = [(f"spec.dependsOn[{i}].name", d.name) for i, d in enumerate(spec.depends_on)]
    return deps + [(f"spec.runAfter[{i}]", n) for i, n in enumerate(spec.run_after)]


def _self_dependency(name: str, spec: BackgroundJobSpec) -> Problem | None:
    for where, dep in _edges(spec):
        if dep == name:
            return Problem(DEPENDENCY_CYCLE, f"{where}: {name} depends on itself")
    return None


def _cycle(name: str, spec: BackgroundJobSpec, lookup: Lookup) -> Problem | None:
    def edges(n: str) -> list[str]:
        s = spec if n == name else lookup(n)
        return [dep for _, dep in _edges(s)] if s else []

    cycle = graph.cycle_from(name, edges)
    if not cycle:
        return None
    where = next(w for w, dep in _edges(spec) if dep == cycle[1])
    return Problem(DEPENDENCY_CYCLE, _bounded(f"{where}: dependency cycle: {' -> '.join(cycle)}"))


def _missing(namespace: str, spec: BackgroundJobSpec, exists: Callable[[str], bool]) -> Problem | None:
    missing = [
        f"{where}: BackgroundJob {dep} does not exist in namespace {namespace}"
        for where, dep in _edges(spec)
        if not exists(dep)
    ]
    if not missing:
        return None
    return Problem(DEPENDENCY_NOT_FOUND, _bounded("; ".join(missing)), blocking=False)


# -- pydantic errors in the user's words --------------------------------------------------------
def field_errors(
    e: ValidationError,
    prefix: str = "spec",
    *,
    model: type[BaseModel] | None = None,
    noun: str = "field",
    limit: int = MESSAGE_LIMIT,
) -> str:
    """Every error as "<path>: <what is wrong>", joined with "; " and at most `limit` characters.

    Paths are the user's (camelCase, as the aliases spell them, with list indices: spec.job.volumeMounts[0]
    .mountPath), without pydantic's union and validator tags. Messages lose pydantic's "Value error, "
    prefix and "Input should be" phrasing. With `model` (the model `e` came from), an unknown key gets a
    did-you-mean suggestion; `noun` is what an unknown key is called ("field", "parameter").
    """
    return _render(e.errors(include_url=False), prefix, model, noun, limit)


_BRACKET_TAG = re.compile(r"^[a-z][a-z-]*\[.*\]$")  # function-after[...], list[int], nullable[...]
_TYPE_TAG = re.compile(r"^(int|float|str|bool|bytes|none|list|dict|tuple|set|[A-Z][A-Za-z0-9]*)$")
_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_PREFIXES = ("Value error, ", "Assertion failed, ")
_UNKNOWN: Final = object()


def _clean_loc(loc: Sequence[str | int], model: type[BaseModel] | None, keep_last: bool) -> list[str | int]:
    """`loc` without the parts pydantic adds for union members and validators ("int", "function-after[...]").

    A bare type name ("int", "EndpointCheck") is dropped only where the model says a union is being
    validated, so a user's dict key that happens to be "int" keeps its place in the path.
    """
    out: list[str | int] = []
    t: Any = model if model is not None else _UNKNOWN
    for i, part in enumerate(loc):
        if keep_last and i == len(loc) - 1:
            out.append(part)
            break
        if isinstance(part, str) and _BRACKET_TAG.match(part):
            t = _UNKNOWN
            continue
        if isinstance(part, str) and _TYPE_TAG.match(part) and (t is _UNKNOWN or _is_union(t)):
            t = _UNKNOWN
            continue
        out.append(part)
        t = _step(t, part)
    return out


def _path(prefix: str, loc: Sequence[str | int]) -> str:
    text = prefix
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
        elif _IDENT.match(part):
            text += f".{part}" if text else part
        else:
            text += f"[{part}]"
    return text


def _render(
    errors: Iterable[Mapping[str, Any]], prefix: str, model: type[BaseModel] | None, noun: str, limit: int
) -> str:
    cleaned = [
        (err, _clean_loc(list(err.get("loc") or ()), model, keep_last=err.get("type") == "extra_forbidden"))
        for err in errors
    ]
    # "tabel: unknown (did you mean table?)" already says that table is missing: say it once.
    meant = {
        (tuple(loc[:-1]), hint)
        for err, loc in cleaned
        if err.get("type") == "extra_forbidden" and loc
        for hint in [_closest(str(loc[-1]), _keys_at(model, loc[:-1]) or ())]
        if hint
    }
    by_path: dict[str, list[str]] = {}
    for err, loc in cleaned:
        if err.get("type") == "missing" and loc and (tuple(loc[:-1]), str(loc[-1])) in meant:
            continue
        path = _path(prefix, loc) or prefix
        text = _message(err, loc, model, noun)
        texts = by_path.setdefault(path, [])
        if text not in texts:
            texts.append(text)
    lines = [f"{path}: {' or '.join(texts)}" for path, texts in by_path.items()]
    return _join_bounded(lines, limit)


def _message(err: Mapping[str, Any], loc: Sequence[str | int], model: type[BaseModel] | None, noun: str) -> str:
    kind = str(err.get("type", ""))
    ctx: Mapping[str, Any] = err.get("ctx") or {}
    value = err.get("input")
    if kind == "extra_forbidden":
        known = _keys_at(model, loc[:-1])
        key = str(loc[-1]) if loc else ""
        return f"unknown {noun}{_suggest(key, known or ())}"
    if kind == "missing":
        return f"required {noun} is missing"
    if kind == "string_pattern_mismatch":
        pattern = str(ctx.get("pattern", ""))
        if pattern == durations.PATTERN:
            return f"invalid duration {value!r}: use a number with a unit, e.g. 90s, 5m, 1h30m, 7d, 2w"
        if pattern.startswith("^[a-z0-9]"):
            return (
                f"{value!r} is not a valid name: use lowercase letters, digits and '-', starting with a letter or digit"
            )
    if kind in ("model_type", "model_attributes_type", "dict_type"):
        return "must be an object"
    text = str(err.get("msg", ""))
    for p in _PREFIXES:
        text = text.removeprefix(p)
    text = re.sub(r"^(Input|String|Value|List|Dictionary) should be ", "must be ", text)
    text = re.sub(r"^(Input|String|Value|List|Dictionary) should ", "must ", text)
    if kind in ("literal_error", "enum") and isinstance(value, str | int | float):
        text += f" (got {_short(value)})"
    return text


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _closest(key: str, known: Iterable[str]) -> str | None:
    """The known key `key` was most likely meant to be (case and underscores ignored), or None."""
    lowered = {k.lower().replace("_", ""): k for k in known}
    if not key or not lowered:
        return None
    match = difflib.get_close_matches(key.lower().replace("_", ""), list(lowered), n=1, cutoff=0.6)
    return lowered[match[0]] if match else None


def _suggest(key: str, known: Iterable[str]) -> str:
    hint = _closest(key, known)
    return f" (did you mean {hint}?)" if hint else ""


def _join_bounded(lines: list[str], limit: int) -> str:
    out: list[str] = []
    used = 0
    for i, line in enumerate(lines):
        rest = len(lines) - i - 1
        tail = f"; and {rest} more" if rest else ""
        if used + len(line) + len(tail) + 2 > limit and out:
            return "; ".join(out) + f"; and {len(lines) - i} more"
        out.append(line)
        used += len(line) + 2
    return _bounded("; ".join(out), limit)


def _bounded(text: str, limit: int = MESSAGE_LIMIT) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


# -- walking the models along a loc -------------------------------------------------------------
def _unwrap(t: Any) -> Any:
    """Strip Annotated and Optional; a union of several types is left alone."""
    while True:
        origin = typing.get_origin(t)
        if origin is typing.Annotated:
            t = typing.get_args(t)[0]
        elif origin in (typing.Union, types.UnionType):
            args = [a for a in typing.get_args(t) if a is not type(None)]
            if len(args) != 1:
                return t
            t = args[0]
        else:
            return t


def _is_union(t: Any) -> bool:
    return typing.get_origin(_unwrap(t)) in (typing.Union, types.UnionType)


def _step(t: Any, part: str | int) -> Any:
    """The type one loc part below `t`, or _UNKNOWN."""
    if t is _UNKNOWN:
        return _UNKNOWN
    t = _unwrap(t)
    origin = typing.get_origin(t)
    if isinstance(part, int) and origin in (list, tuple, set, frozenset):
        return typing.get_args(t)[0]
    if isinstance(part, str) and isinstance(t, type) and issubclass(t, BaseModel):
        for name, info in t.model_fields.items():
            if part in (name, info.alias):
                return info.annotation
        return _UNKNOWN
    if isinstance(part, str) and origin is dict:
        return typing.get_args(t)[1]
    return _UNKNOWN


def _keys_at(model: type[BaseModel] | None, loc: Sequence[str | int]) -> list[str] | None:
    """The keys (aliases) the model at `loc` accepts, for a did-you-mean; None when it is not a model."""
    t: Any = model if model is not None else _UNKNOWN
    for part in loc:
        t = _step(t, part)
    t = _unwrap(t) if t is not _UNKNOWN else t
    if not (isinstance(t, type) and issubclass(t, BaseModel)):
        return None
    return [info.alias or name for name, info in t.model_fields.items()]
