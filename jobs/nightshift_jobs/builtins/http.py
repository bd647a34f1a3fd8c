"""http: call an endpoint of the team's own application to trigger its work.

The exit code follows the response so the operator's retry policy does the right thing: expected
status -> 0; 5xx, 408, 429, timeout or connection error -> 75 (retry); other 4xx -> 65 (the request
itself is wrong, retrying will not help); anything else -> 1.
"""

from __future__ import annotations

import os
from datetime import timedelta
from typing import Any

from pydantic import Field, field_validator

from nightshift_jobs.builtins import _http
from nightshift_jobs.params import Duration, JobParams
from nightshift_jobs.registry import job
from nightshift_jobs.runtime import (
    ConfigError,
    Counts,
    DataError,
    ExitCode,
    JobContext,
    JobError,
    TemporaryError,
)


class HttpParams(JobParams):
    url: str
    method: str = "POST"
    headers: dict[str, str] = Field(default_factory=dict)
    headers_from_env: dict[str, str] = Field(
        default_factory=dict, description="header -> environment variable (e.g. a token from a Secret)"
    )
    body: str | dict[str, Any] | list[Any] | None = None
    timeout: Duration = timedelta(seconds=30)
    expect_status: int | list[int] | None = Field(default=None, description="default: any 2xx")

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return value

    @field_validator("method")
    @classmethod
    def _method(cls, value: str) -> str:
        if not value.isalpha():
            raise ValueError("must be an HTTP method such as GET or POST")
        return value.upper()


@job("http", params=HttpParams)
def run(ctx: JobContext, p: HttpParams) -> Counts:
    headers = dict(p.headers)
    for header, var in p.headers_from_env.items():
        if var not in os.environ:
            raise ConfigError(f"environment variable {var} (for header {header}) is not set")
        headers[header] = os.environ[var]
    if ctx.dry_run:
        ctx.message = f"would send {p.method} {p.url}"
        return {}
    try:
        with ctx.step("request", method=p.method, url=p.url):
            resp = _http.request(p.method, p.url, headers=headers, body=p.body, timeout=p.timeout.total_seconds())
    except (TimeoutError, OSError) as exc:  # URLError is an OSError
        raise TemporaryError(f"{p.method} {p.url} failed: {getattr(exc, 'reason', exc)}") from None
    ctx.counts.update(status=resp.status, latency_ms=resp.latency_ms, response_bytes=len(resp.body))
    summary = f"{p.method} {p.url} -> {resp.status} in {resp.latency_ms}ms: {_http.snippet(resp.body)}"
    if _http.expected(resp.status, p.expect_status):
        ctx.message = summary
        return ctx.counts
    if resp.status >= 500 or resp.status in (408, 429):
        raise TemporaryError(summary)
    if 400 <= resp.status < 500:
        raise DataError(summary)
    raise JobError(summary, exit_code=ExitCode.FAILURE)
