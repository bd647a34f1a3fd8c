"""What the indexes keep of a BackgroundJob and a pod: only what the core reads (no cluster)."""

from __future__ import annotations

import kopf

from nightshift.controller.handlers import _ours, _shared, _termination
from nightshift.core.runs import with_pod
from tests.unit.factories import view


def pod(*states: dict[str, object]) -> kopf.Body:
    return kopf.Body({"status": {"phase": "Failed", "containerStatuses": [{"state": s} for s in states]}})


def test_a_pod_is_its_first_termination() -> None:
    term = {"exitCode": 65, "message": '{"error": "bad input"}', "reason": "Error", "containerID": "c" * 70}
    assert _termination(pod({"running": {}}, {"terminated": term})) == (65, '{"error": "bad input"}')
    assert _termination(pod({"running": {}})) is None
    assert _termination(kopf.Body({"status": {}})) is None


def test_the_slim_pod_gives_the_view_what_the_full_one_did() -> None:
    """runs.with_pod reads the same exit code and message from the slim projection."""
    term = {"exitCode": 75, "message": "later", "reason": "Error", "startedAt": "2026-11-23T11:00:00Z"}
    full = {"status": {"containerStatuses": [{"name": "job", "image": "x", "state": {"terminated": term}}]}}
    exit_code, message = _termination(kopf.Body(full)) or (None, None)
    slim = {"status": {"containerStatuses": [{"state": {"terminated": {"exitCode": exit_code, "message": message}}}]}}
    v = view("nightly-1")
    assert with_pod(v, slim) == with_pod(v, full)
    assert with_pod(v, slim).exit_code == 75


def test_only_nightshift_annotations_are_kept() -> None:
    ann = {
        "kubectl.kubernetes.io/last-applied-configuration": "{" + "x" * 5000 + "}",
        "nightshift.dev/run-now": "n1",
        "nightshift.dev/last-handled-configuration": "{}",
        "other.io/x": "y",
    }
    assert _ours(ann) == {"nightshift.dev/run-now": "n1"}


def test_the_watched_status_shares_the_written_one_when_equal() -> None:
    written = {"consecutiveFailures": 0, "conditions": [{"type": "Ready", "status": "True"}]}
    same = {"consecutiveFailures": 0, "conditions": [{"type": "Ready", "status": "True"}]}
    assert _shared(same, ("uid", written)) is written
    other = {**same, "consecutiveFailures": 1}
    assert _shared(other, ("uid", written)) is other
    assert _shared(same, None) is same
