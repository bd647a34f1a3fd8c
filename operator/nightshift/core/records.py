"""One attempt as the execution history stores it: shared by the pure ledger and the PostgreSQL writer."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class AttemptRecord:
    namespace: str
    job_name: str
    backgroundjob: str
    run_id: str
    attempt: int
    trigger: str
    scheduled_time: dt.datetime | None
    started_at: dt.datetime | None
    finished_at: dt.datetime | None
    result: str
    exit_code: int | None
    reason: str | None
    message: str | None
    output: dict[str, Any] | None
