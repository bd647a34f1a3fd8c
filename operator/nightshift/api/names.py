"""Label and annotation keys, and deterministic names for runs and attempts.

Names are pure functions of what caused a run (a scheduled time, a trigger nonce, upstream runs), so
a reconcile repeated after a crash gets AlreadyExists instead of a second run.
"""

from __future__ import annotations

import hashlib

PREFIX = "nightshift.dev"
LABEL_BGJ = f"{PREFIX}/backgroundjob"
LABEL_RUN = f"{PREFIX}/run"
LABEL_REQUEST = f"{PREFIX}/request"  # on a run made for a BackgroundJobRun: the request's name
LABEL_MANAGED = "app.kubernetes.io/managed-by"
MANAGER = "nightshift"

ANN_ATTEMPT = f"{PREFIX}/attempt"
ANN_TRIGGER = f"{PREFIX}/trigger"
ANN_SCHEDULED = f"{PREFIX}/scheduled-time"
ANN_NOT_BEFORE = f"{PREFIX}/not-before"
ANN_PARAMS = f"{PREFIX}/params"
ANN_PRIORITY = f"{PREFIX}/priority"
ANN_QUEUE = f"{PREFIX}/queue"
ANN_DEPENDS_ON = f"{PREFIX}/depends-on"
ANN_RETRY = f"{PREFIX}/retry"
ANN_CONCURRENCY = f"{PREFIX}/concurrency-policy"
ANN_HASH = f"{PREFIX}/rendered-hash"
ANN_GATE = f"{PREFIX}/gate"  # the gate's last word on a waiting run: "Waiting: <reason>"
ANN_OUTCOME = f"{PREFIX}/outcome"  # Skipped/Cancelled with a reason, set by the operator on the Job
ANN_RUN_NOW = f"{PREFIX}/run-now"
ANN_COUNTED = f"{PREFIX}/counted"  # the ledger's mark on a run's final Job: its end was counted once
# With the mark, when the history store had not taken the run's rows yet (it was down): the rows
# are offered again (after a restart too) and the Job is kept until they are in, then this goes.
ANN_HISTORY_PENDING = f"{PREFIX}/history-pending"
ANN_RESUMED = f"{PREFIX}/resumed-at"
ANN_STOP = f"{PREFIX}/stop"  # on a namespace (or the operator's own namespace for the cluster)
CRONJOB_SCHEDULED = "batch.kubernetes.io/cronjob-scheduled-timestamp"

MAX_JOB_NAME = 63


def digest(*parts: str, size: int = 10) -> str:
    return hashlib.sha256("\x00".join(parts).encode()).hexdigest()[:size]


def run_id(bgj: str, kind: str, *cause: str) -> str:
    """A run the operator creates (manual, chain, create, at, backfill): `<job>-<kind>-<hash of cause>`."""
    return f"{bgj[:40]}-{kind[:1]}{digest(bgj, kind, *cause)}"


def attempt_job_name(run: str, attempt: int) -> str:
    """Attempt 1 is the run's own Job; later attempts get a hashed name that fits in 63 characters."""
    if attempt <= 1:
        return run
    return f"{run[:40]}-{digest(run, size=8)}-a{attempt}"
