"""/metrics of the real operator after real runs on the test control plane.

One job succeeds, one fails with exit 65 (non-retryable), one fails with exit 75 twice (retry limit 1),
one never runs: the operator's /metrics, parsed by prometheus_client's own parser, carries the series
dashboards and alerts read, with the values these runs must produce, and no run id in any label.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample
from tests.conftest import Kubectl, Operator, bgj, script_job, wait_for

pytestmark = pytest.mark.cluster

OK = "print('ok')"
EXIT = "import sys; sys.exit({code})"
FLAKY_RETRY = {"limit": 1, "backoff": {"initial": "1s", "factor": 1, "max": "1s", "jitter": 0}}


def samples(text: str) -> list[Sample]:
    return [s for family in text_string_to_metric_families(text) for s in family.samples]


def families(text: str) -> dict[str, str]:
    """Family name -> type (counter, gauge, histogram)."""
    return {f.name: f.type for f in text_string_to_metric_families(text)}


def value(text: str, name: str, **labels: str) -> float | None:
    """The value of the one sample `name` with exactly these labels (plus `le` for buckets)."""
    found = [s.value for s in samples(text) if s.name == name and s.labels == labels]
    assert len(found) <= 1, (name, labels, found)
    return found[0] if found else None


def last_result(kubectl: Kubectl, name: str, ns: str) -> str | None:
    st: dict[str, Any] = kubectl.json("get", "bgj", name, "-n", ns).get("status", {})
    result = st.get("lastRun", {}).get("result")
    return result if result in ("Succeeded", "Failed") else None


def test_metrics_after_real_runs(kubectl: Kubectl, running_operator: Operator, namespace: str) -> None:
    ns = namespace
    now = {"nightshift.dev/run-now": "go"}
    kubectl.apply(bgj("ok", ns, {"job": script_job(OK)}, annotations=now))
    kubectl.apply(bgj("bad-input", ns, {"job": script_job(EXIT.format(code=65))}, annotations=now))
    kubectl.apply(bgj("flaky", ns, {"retry": FLAKY_RETRY, "job": script_job(EXIT.format(code=75))}, annotations=now))
    kubectl.apply(bgj("fresh", ns, {"job": script_job(OK)}))  # on demand, never triggered

    expected = {"ok": "Succeeded", "bad-input": "Failed", "flaky": "Failed"}
    for name, want in expected.items():
        got = wait_for(partial(last_result, kubectl, name, ns), timeout=120, what=f"{name} finished")
        assert got == want, f"{name}: lastRun.result {got}, expected {want}"
    flaky = kubectl.json("get", "bgj", "flaky", "-n", ns)["status"]["lastRun"]
    assert flaky["attempts"] == 2, flaky

    def job(name: str) -> dict[str, str]:
        return {"namespace": ns, "backgroundjob": name}

    def settled() -> str | None:
        text = running_operator.metrics()
        ready = (
            value(text, "nightshift_runs_total", **job("ok"), result="succeeded") == 1
            and value(text, "nightshift_runs_total", **job("bad-input"), result="failed") == 1
            and value(text, "nightshift_runs_total", **job("flaky"), result="failed") == 1
            and value(text, "nightshift_consecutive_failures", **job("flaky")) == 1
            and value(text, "nightshift_consecutive_failures", **job("bad-input")) == 1
            and (value(text, "nightshift_last_success_timestamp_seconds", **job("ok")) or 0) > 0
        )
        return text if ready else None

    text = wait_for(settled, timeout=30, what="/metrics reflecting the three finished runs")
    all_samples = samples(text)

    # Types: counters are counters (the parser strips _total from the family name), histograms histograms.
    types = families(text)
    assert types["nightshift_runs"] == "counter"
    assert types["nightshift_retries"] == "counter"
    assert types["nightshift_run_duration_seconds"] == "histogram"
    assert types["nightshift_consecutive_failures"] == "gauge"
    assert types["nightshift_build_info"] == "gauge"

    # Results: each run counted once with its final result, and nowhere else.
    runs = {
        (s.labels["backgroundjob"], s.labels["result"]): s.value
        for s in all_samples
        if s.name == "nightshift_runs_total" and s.labels["namespace"] == ns
    }
    assert runs == {
        **{(name, result): 0.0 for name in ("ok", "bad-input", "flaky", "fresh") for result in ("succeeded", "failed")},
        ("ok", "succeeded"): 1.0,
        ("bad-input", "failed"): 1.0,
        ("flaky", "failed"): 1.0,
    }  # skipped and cancelled appear with the first such run

    # Retries: only the exit-75 job retried, once (limit 1); exit 65 is not retryable (no series until one).
    assert value(text, "nightshift_retries_total", **job("flaky")) == 1
    assert value(text, "nightshift_retries_total", **job("bad-input")) is None
    assert value(text, "nightshift_retries_total", **job("ok")) is None

    # Success / failure timestamps and consecutive failures, from the recomputed status; a timestamp
    # that has no value has no series (kube-state-metrics' convention).
    ok_success = value(text, "nightshift_last_success_timestamp_seconds", **job("ok"))
    assert ok_success is not None and ok_success > 1.6e9
    assert value(text, "nightshift_last_failure_timestamp_seconds", **job("ok")) is None
    assert value(text, "nightshift_consecutive_failures", **job("ok")) == 0
    for name in ("bad-input", "flaky"):
        assert value(text, "nightshift_consecutive_failures", **job(name)) == 1, name
        assert value(text, "nightshift_last_success_timestamp_seconds", **job(name)) is None, name
        failed_at = value(text, "nightshift_last_failure_timestamp_seconds", **job(name))
        assert failed_at is not None and failed_at > 1.6e9, name
        assert value(text, "nightshift_run_started_timestamp_seconds", **job(name)) is None, name

    # Durations: one observation per finished run (a retried run counts once) in the namespace's
    # histogram; per job, the last run's duration.
    assert value(text, "nightshift_run_duration_seconds_count", namespace=ns) == 3
    assert value(text, "nightshift_run_duration_seconds_bucket", namespace=ns, le="+Inf") == 3
    assert value(text, "nightshift_run_duration_seconds_count", **job("ok")) is None  # per job only on request
    for name in ("ok", "bad-input", "flaky"):
        last = value(text, "nightshift_last_run_duration_seconds", **job(name))
        assert last is not None and 0 <= last < 120, (name, last)
    # The flaky run spans two attempts and the 1s backoff between them.
    flaky_last = value(text, "nightshift_last_run_duration_seconds", **job("flaky"))
    assert flaky_last is not None and flaky_last >= 1, flaky_last

    # A BackgroundJob that never ran: its counts at 0, its creation time, and no other gauge but failures.
    fresh = job("fresh")
    for result in ("succeeded", "failed"):
        assert value(text, "nightshift_runs_total", **fresh, result=result) == 0, result
    assert value(text, "nightshift_consecutive_failures", **fresh) == 0
    for name in (
        "nightshift_retries_total",
        "nightshift_missed_runs_total",
        "nightshift_last_success_timestamp_seconds",
        "nightshift_last_failure_timestamp_seconds",
        "nightshift_next_schedule_timestamp_seconds",
        "nightshift_schedule_interval_seconds",
        "nightshift_run_started_timestamp_seconds",
        "nightshift_last_run_duration_seconds",
    ):
        assert value(text, name, **fresh) is None, name
    created = value(text, "nightshift_job_created_timestamp_seconds", **fresh)
    assert created is not None and created > 1.6e9

    # The operator itself.
    build = [s for s in all_samples if s.name == "nightshift_build_info"]
    assert len(build) == 1 and build[0].value == 1 and build[0].labels["version"], build
    assert value(text, "nightshift_is_leader") == 1

    # Bounded labels: no run id (Job name) as a label value, no `job` label, no *_created series.
    job_names = {j["metadata"]["name"] for j in kubectl.json("get", "jobs", "-n", ns)["items"]}
    assert len(job_names) == 4, job_names  # ok, bad-input, 2 attempts of flaky
    label_values = {v for s in all_samples for v in s.labels.values()}
    assert not job_names & label_values, job_names & label_values
    assert not any("job" in s.labels for s in all_samples)
    assert not any(s.name.endswith("_created") for s in all_samples)
    allowed = {"namespace", "backgroundjob", "queue", "result", "reason", "kind", "version", "le"}
    nightshift_labels = {k for s in all_samples if s.name.startswith("nightshift_") for k in s.labels}
    assert nightshift_labels <= allowed, nightshift_labels - allowed
