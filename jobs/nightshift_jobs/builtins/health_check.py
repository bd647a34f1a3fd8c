"""health-check: database reachability and latency, HTTP endpoints, free disk space.

Each check is healthy, degraded (slow, or below the warning threshold) or unhealthy. Any unhealthy
check fails the run with exit 1 and the details in the message, so the BackgroundJob's Healthy
condition, metrics and alerts see it; degraded succeeds (exit 0) unless failOnDegraded is set.
An unreachable database is unhealthy.
"""

from __future__ import annotations

import shutil
import time
from datetime import timedelta

from pydantic import Field, model_validator

from nightshift_jobs.builtins import _http
from nightshift_jobs.params import DbParams, Duration, JobParams
from nightshift_jobs.registry import job
from nightshift_jobs.runtime import Counts, JobContext, JobError

_RANK = {"healthy": 0, "degraded": 1, "unhealthy": 2}


class EndpointCheck(JobParams):
    url: str
    name: str | None = None
    method: str = "GET"
    expect_status: int | list[int] = 200
    timeout: Duration = timedelta(seconds=5)
    max_latency: Duration | None = Field(default=None, description="slower than this: degraded")


class DiskCheck(JobParams):
    path: str
    min_free_percent: float = Field(default=5.0, ge=0, le=100, description="below: unhealthy")
    warn_free_percent: float | None = Field(default=10.0, ge=0, le=100, description="below: degraded")


class HealthCheckParams(DbParams):
    database: bool = False
    database_max_latency: Duration = Field(default=timedelta(seconds=1), description="slower: degraded")
    endpoints: list[EndpointCheck] = Field(default_factory=list)
    disks: list[DiskCheck] = Field(default_factory=list)
    fail_on_degraded: bool = False

    @model_validator(mode="after")
    def _something_to_check(self) -> HealthCheckParams:
        if not (self.database or self.endpoints or self.disks):
            raise ValueError("configure at least one check: database, endpoints or disks")
        return self


def _check_database(ctx: JobContext, p: HealthCheckParams) -> tuple[str, str, int]:
    from nightshift_jobs import db  # psycopg only when the database is checked

    started = time.monotonic()
    try:
        with db.connect(ctx, p, autocommit=True) as conn:
            conn.execute("SELECT 1").fetchone()
    except Exception as exc:
        return "unhealthy", f"database unreachable: {str(exc).strip()[:300]}", -1
    ms = int((time.monotonic() - started) * 1000)
    limit_ms = int(p.database_max_latency.total_seconds() * 1000)
    if ms > limit_ms:
        return "degraded", f"database slow: {ms}ms > {limit_ms}ms", ms
    return "healthy", f"database ok in {ms}ms", ms


def _check_endpoint(e: EndpointCheck) -> tuple[str, str]:
    label = e.name or e.url
    try:
        resp = _http.request(e.method.upper(), e.url, timeout=e.timeout.total_seconds())
    except (TimeoutError, OSError) as exc:
        return "unhealthy", f"{label}: {getattr(exc, 'reason', exc)}"
    if not _http.expected(resp.status, e.expect_status):
        return "unhealthy", f"{label}: status {resp.status}, expected {e.expect_status}"
    if e.max_latency is not None and resp.latency_ms > e.max_latency.total_seconds() * 1000:
        return "degraded", f"{label}: slow, {resp.latency_ms}ms"
    return "healthy", f"{label}: {resp.status} in {resp.latency_ms}ms"


def _check_disk(d: DiskCheck) -> tuple[str, str]:
    try:
        usage = shutil.disk_usage(d.path)
    except OSError as exc:
        return "unhealthy", f"disk {d.path}: {exc.strerror or exc}"
    free_pct = 100.0 * usage.free / usage.total if usage.total else 0.0
    text = f"disk {d.path}: {free_pct:.1f}% free"
    if free_pct < d.min_free_percent:
        return "unhealthy", f"{text} < {d.min_free_percent}%"
    if d.warn_free_percent is not None and free_pct < d.warn_free_percent:
        return "degraded", f"{text} < {d.warn_free_percent}%"
    return "healthy", text


@job("health-check", params=HealthCheckParams)
def run(ctx: JobContext, p: HealthCheckParams) -> Counts:
    results: list[tuple[str, str]] = []
    if p.database:
        with ctx.step("database"):
            state, detail, ms = _check_database(ctx, p)
        results.append((state, detail))
        if ms >= 0:
            ctx.counts["database_latency_ms"] = ms
    for endpoint in p.endpoints:
        with ctx.step("endpoint", url=endpoint.url):
            results.append(_check_endpoint(endpoint))
    for disk in p.disks:
        results.append(_check_disk(disk))
    for state, detail in results:
        ctx.add(state)
        ctx.log("check", step="check", state=state, detail=detail)
    ctx.counts.update(checks=len(results), **{k: ctx.counts.get(k, 0) for k in _RANK})
    overall = max((s for s, _ in results), key=_RANK.__getitem__)
    problems = [d for s, d in results if s != "healthy"]
    ctx.message = f"{overall}: " + ("; ".join(problems) if problems else f"{len(results)} checks passed")
    if overall == "unhealthy" or (overall == "degraded" and p.fail_on_degraded):
        raise JobError(ctx.message)
    return ctx.counts
