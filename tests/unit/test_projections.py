"""What the indexes keep of a BackgroundJob and a pod: only what the core reads (no cluster)."""

from __future__ import annotations

import datetime as dt
import random
from typing import Any

from nightshift.api import names
from nightshift.controller.handlers import PodEnd, _ours, _shared, cronjob_seen, pod_end
from nightshift.controller.indexes import BgjSeen, canonical
from nightshift.core.runs import JobSeen, attempt_view, group, job_seen, latest_run, termination, with_end, with_pod
from tests.unit.factories import job, t, view


def pod(*states: dict[str, object], phase: str = "Failed") -> dict[str, Any]:
    return {
        "metadata": {"namespace": "team", "name": "p", "labels": {names.LABEL_BGJ: "nightly", "job-name": "j1"}},
        "status": {"phase": phase, "containerStatuses": [{"state": s} for s in states]},
    }


def test_a_pod_is_its_first_termination() -> None:
    term = {"exitCode": 65, "message": '{"error": "bad input"}', "reason": "Error", "containerID": "c" * 70}
    assert termination(pod({"running": {}}, {"terminated": term})) == (65, '{"error": "bad input"}')
    assert termination(pod({"running": {}})) is None
    assert termination({"status": {}}) is None


def test_only_a_finished_pod_is_projected() -> None:
    term = {"exitCode": 0, "message": None}
    assert pod_end(pod({"running": {}}, phase="Running")) is None
    assert pod_end(pod({"terminated": term}, phase="Pending")) is None
    assert pod_end(pod({"terminated": term}, phase="Succeeded")) == PodEnd("nightly", "j1", "Succeeded", (0, None))
    assert pod_end(pod(phase="Failed")) == PodEnd("nightly", "j1", "Failed", None)  # evicted before it ran


def test_the_slim_pod_gives_the_view_what_the_full_one_did() -> None:
    """runs.with_end reads the same exit code and message from the projection as with_pod from the pod."""
    term = {"exitCode": 75, "message": "later", "reason": "Error", "startedAt": "2026-11-23T11:00:00Z"}
    full = {"status": {"containerStatuses": [{"name": "job", "image": "x", "state": {"terminated": term}}]}}
    v = view("nightly-1")
    assert with_end(v, termination(full)) == with_pod(v, full)
    assert with_end(v, termination(full)).exit_code == 75
    assert with_end(v, None) is v


def test_a_cronjob_is_its_controller_and_rendered_hash() -> None:
    cj = {
        "metadata": {
            "name": "nightly",
            "namespace": "team",
            "creationTimestamp": "2026-11-23T11:00:00Z",
            "ownerReferences": [{"uid": "other"}, {"uid": "u1", "controller": True}],
            "annotations": {"nightshift.dev/rendered-hash": "h1"},
            "managedFields": [{"manager": "x"}],
        },
        "spec": {"schedule": "* * * * *"},
        "status": {"lastScheduleTime": "2026-11-23T11:01:00Z"},
    }
    seen = cronjob_seen(cj)
    assert (seen.controller_uid, seen.rendered_hash) == ("u1", "h1")
    assert cronjob_seen({**cj, "status": {}}) == seen  # the controller's status writes change nothing


def test_only_nightshift_annotations_are_kept() -> None:
    ann = {
        "kubectl.kubernetes.io/last-applied-configuration": "{" + "x" * 5000 + "}",
        "nightshift.dev/run-now": "n1",
        "nightshift.dev/last-handled-configuration": "{}",
        "other.io/x": "y",
    }
    assert _ours(ann) == {"nightshift.dev/run-now": "n1"}


def test_the_watched_status_shares_the_written_one_when_equal() -> None:
    written = canonical({"consecutiveFailures": 0, "conditions": [{"type": "Ready", "status": "True"}]})
    same = canonical({"conditions": [{"status": "True", "type": "Ready"}], "consecutiveFailures": 0})  # key order
    assert same == written and same is not written
    assert _shared(same, ("uid", written)) is written
    other = canonical({"consecutiveFailures": 1})
    assert _shared(other, ("uid", written)) is other
    assert _shared(same, None) is same


def test_a_backgroundjob_is_kept_as_canonical_json_and_read_back_whole() -> None:
    spec = {"schedule": "0 0 1 1 *", "job": {"image": "x", "command": ["true"]}, "runAfter": ["a"]}
    status = {"conditions": [{"type": "Ready", "status": "True"}], "nextScheduleTime": "2027-01-01T00:00:00Z"}
    seen = BgjSeen("u1", 2, "2026-11-23T11:00:00Z", {}, canonical(spec), canonical(status))
    assert seen.spec == spec and seen.status == status
    assert seen == BgjSeen(
        "u1", 2, "2026-11-23T11:00:00Z", {}, canonical(dict(reversed(spec.items()))), canonical(status)
    )
    assert seen != BgjSeen("u1", 3, "2026-11-23T11:00:00Z", {}, canonical(spec), canonical(status))
    assert len(seen.spec_json) + len(seen.status_json) < 250


def jobs_of_every_kind() -> list[dict[str, Any]]:
    """Jobs with every field attempt_view reads set, and left out."""
    when = t(2026, 3, 1, 10)
    odd = job("odd", scheduled=when, suspend=False, started=when)
    odd["metadata"]["annotations"][names.ANN_SCHEDULED] = "2026-03-01T12:00:00.250000+02:00"  # an offset, microseconds
    odd["metadata"]["creationTimestamp"] = "2026-03-01T09:59:59.999999Z"
    return [
        job("plain"),
        job("waits", scheduled=when, gate="Waiting: QueueFull", queue="reports", priority="high", params={"a": 1}),
        job("cron", cron_scheduled="2026-03-01T10:00:00Z", trigger="schedule"),
        job("retry-a2", run="retry", attempt=2, not_before=when + dt.timedelta(minutes=1), request="ask-1"),
        job("runs", scheduled=when, suspend=False, started=when),
        job("done", scheduled=when, suspend=False, started=when, complete=when, counted="Succeeded"),
        job("bad", suspend=False, started=when, failed=when, reason="DeadlineExceeded", message="too long"),
        job("skipped", outcome="Skipped: ConcurrencyForbid: run x is still running", counted="Skipped"),
        job("pending", suspend=False, complete=when, counted="Succeeded", history_pending=True),
        job("broken", params="{not json"),
        odd,
    ]


def test_a_job_is_kept_packed_and_read_back_as_its_attempt_view() -> None:
    """The index keeps a JobSeen; the core reads the AttemptView it gives back, equal to the one
    attempt_view makes, and what the index files by reads the same from either."""
    for body in jobs_of_every_kind():
        v, seen = attempt_view(body), job_seen(body)
        assert v is not None and seen is not None
        assert seen.view() == v, body["metadata"]["name"]
        assert seen.view((3, "out")) == with_end(v, (3, "out"))
        for field in ("name", "namespace", "bgj", "run", "attempt", "counted", "started", "time", "succeeded"):
            assert getattr(seen, field) == getattr(v, field), field
        for field in ("history_pending", "outcome", "queue", "request", "active", "waiting"):
            assert getattr(seen, field) == getattr(v, field), field
        assert seen == job_seen(body)  # the informer compares projections: an unchanged Job is no change
    assert job_seen({"metadata": {"name": "x", "labels": {}}}) is None  # not ours


def test_the_latest_run_is_the_last_of_group() -> None:
    rng = random.Random(7)
    for _ in range(200):
        views = []
        for i in range(rng.randint(1, 8)):
            run_id = f"r{rng.randint(0, 4)}"
            when = t(2026, 3, 1 + rng.randint(0, 3))
            views.append(view(f"{run_id}-a{i}", run=run_id, attempt=rng.randint(1, 3), scheduled=when))
        want = group(views)[-1].id
        assert latest_run(views) == want
        assert latest_run([JobSeen.of(v) for v in views]) == want
    assert latest_run([]) is None
