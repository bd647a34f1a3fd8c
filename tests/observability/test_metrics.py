"""nightshift.infra.metrics: names, labels and helpers, read back from its own REGISTRY (no cluster)."""

from __future__ import annotations

import urllib.request
from collections.abc import Iterator
from importlib import metadata

import pytest
from prometheus_client import generate_latest

from nightshift.infra import metrics
from nightshift.infra.metrics import REGISTRY

NS, NAME = "blockwise", "weekly-summary"


def value(name: str, **labels: str) -> float | None:
    return REGISTRY.get_sample_value(name, labels)


@pytest.fixture(autouse=True)
def _clean() -> Iterator[None]:
    metrics.clear_job_metrics()
    yield
    metrics.clear_job_metrics()


def test_every_metric_has_the_prefix_and_no_job_label() -> None:
    families = list(REGISTRY.collect())
    assert families
    for family in families:
        assert family.name.startswith("nightshift_"), family.name
    metrics.known_job(NS, NAME)
    metrics.set_queue(NS, None, 1, 1)
    metrics.observe_reconcile("BackgroundJob", 0.1, error=True)
    for family in REGISTRY.collect():
        for sample in family.samples:
            assert "job" not in sample.labels, sample
            assert not sample.name.endswith("_created"), sample.name


def test_expected_metric_names_exist() -> None:
    metrics.known_job(NS, NAME)
    metrics.known_queue(NS, "maintenance")
    text = generate_latest(REGISTRY).decode()
    for name in (
        "nightshift_runs_total",
        "nightshift_run_duration_seconds_bucket",
        "nightshift_retries_total",
        "nightshift_missed_runs_total",
        "nightshift_last_success_timestamp_seconds",
        "nightshift_last_failure_timestamp_seconds",
        "nightshift_next_schedule_timestamp_seconds",
        "nightshift_schedule_interval_seconds",
        "nightshift_consecutive_failures",
        "nightshift_run_started_timestamp_seconds",
        "nightshift_job_created_timestamp_seconds",
        "nightshift_queue_waiting_runs",
        "nightshift_queue_running_runs",
        "nightshift_admission_wait_seconds_bucket",
        "nightshift_reconcile_errors_total",
        "nightshift_reconcile_duration_seconds",
        "nightshift_history_dropped_total",
        "nightshift_build_info",
        "nightshift_is_leader",
    ):
        assert f"# TYPE {name.removesuffix('_bucket').removesuffix('_total')}" in text, name


def test_known_job_initialises_every_series_at_zero() -> None:
    metrics.known_job(NS, NAME, created_ts=1_700_000_000)
    for result in ("succeeded", "failed", "skipped", "cancelled"):
        assert value("nightshift_runs_total", namespace=NS, backgroundjob=NAME, result=result) == 0
    for name in (
        "nightshift_retries_total",
        "nightshift_missed_runs_total",
        "nightshift_last_success_timestamp_seconds",
        "nightshift_last_failure_timestamp_seconds",
        "nightshift_next_schedule_timestamp_seconds",
        "nightshift_schedule_interval_seconds",
        "nightshift_consecutive_failures",
        "nightshift_run_started_timestamp_seconds",
        "nightshift_run_duration_seconds_count",
    ):
        assert value(name, namespace=NS, backgroundjob=NAME) == 0, name
    assert value("nightshift_job_created_timestamp_seconds", namespace=NS, backgroundjob=NAME) == 1.7e9
    assert value("nightshift_run_duration_seconds_bucket", namespace=NS, backgroundjob=NAME, le="21600.0") == 0


def test_known_job_is_idempotent_and_keeps_values() -> None:
    metrics.observe_run(NS, NAME, "succeeded", 12.0)
    metrics.known_job(NS, NAME)
    assert value("nightshift_runs_total", namespace=NS, backgroundjob=NAME, result="succeeded") == 1


def test_observe_run_counts_and_observes_duration() -> None:
    metrics.observe_run(NS, NAME, "succeeded", 42.0)
    metrics.observe_run(NS, NAME, "failed", 7200.0)
    metrics.observe_run(NS, NAME, "cancelled", None)
    labels = {"namespace": NS, "backgroundjob": NAME}
    assert value("nightshift_runs_total", **labels, result="succeeded") == 1
    assert value("nightshift_runs_total", **labels, result="failed") == 1
    assert value("nightshift_runs_total", **labels, result="cancelled") == 1
    assert value("nightshift_run_duration_seconds_count", **labels) == 2
    assert value("nightshift_run_duration_seconds_sum", **labels) == 7242.0
    assert value("nightshift_run_duration_seconds_bucket", **labels, le="60.0") == 1
    assert value("nightshift_run_duration_seconds_bucket", **labels, le="7200.0") == 2


def test_duration_buckets_span_one_second_to_six_hours() -> None:
    assert metrics.RUN_DURATION_BUCKETS[0] == 1
    assert metrics.RUN_DURATION_BUCKETS[-1] == 6 * 3600
    assert metrics.ADMISSION_WAIT_BUCKETS[0] == 0.1
    assert metrics.ADMISSION_WAIT_BUCKETS[-1] == 3600


def test_skipped_run_counts_reason() -> None:
    metrics.observe_run(NS, NAME, "skipped", None, reason="DependencyFailed")
    metrics.observe_run(NS, NAME, "skipped", None)
    labels = {"namespace": NS, "backgroundjob": NAME}
    assert value("nightshift_runs_total", **labels, result="skipped") == 2
    assert value("nightshift_skipped_runs_total", **labels, reason="DependencyFailed") == 1
    assert value("nightshift_skipped_runs_total", **labels, reason="Unknown") == 1


def test_unknown_result_is_rejected() -> None:
    with pytest.raises(ValueError):
        metrics.observe_run(NS, NAME, "exploded", 1.0)  # type: ignore[arg-type]


def test_retries_and_missed_runs() -> None:
    metrics.observe_retry(NS, NAME)
    metrics.observe_retry(NS, NAME)
    metrics.observe_missed_runs(NS, NAME, 3)
    metrics.observe_missed_runs(NS, NAME, 0)
    assert value("nightshift_retries_total", namespace=NS, backgroundjob=NAME) == 2
    assert value("nightshift_missed_runs_total", namespace=NS, backgroundjob=NAME) == 3


def test_set_job_status_and_none_is_zero() -> None:
    metrics.set_job_status(NS, NAME, 1000.0, None, 5000.0, 2, schedule_interval_s=3600)
    labels = {"namespace": NS, "backgroundjob": NAME}
    assert value("nightshift_last_success_timestamp_seconds", **labels) == 1000
    assert value("nightshift_last_failure_timestamp_seconds", **labels) == 0
    assert value("nightshift_next_schedule_timestamp_seconds", **labels) == 5000
    assert value("nightshift_consecutive_failures", **labels) == 2
    assert value("nightshift_schedule_interval_seconds", **labels) == 3600
    metrics.set_job_status(NS, NAME, 1000.0, 2000.0, None, 0)
    assert value("nightshift_next_schedule_timestamp_seconds", **labels) == 0
    assert value("nightshift_schedule_interval_seconds", **labels) == 0


def test_running_since() -> None:
    labels = {"namespace": NS, "backgroundjob": NAME}
    metrics.set_running_since(NS, NAME, 1234.5)
    assert value("nightshift_run_started_timestamp_seconds", **labels) == 1234.5
    metrics.set_running_since(NS, NAME, None)
    assert value("nightshift_run_started_timestamp_seconds", **labels) == 0


def test_forget_job_removes_every_series() -> None:
    metrics.known_job(NS, NAME)
    metrics.known_job(NS, "other")
    metrics.observe_run(NS, NAME, "skipped", None, reason="ConcurrencyForbid")
    metrics.set_job_status(NS, NAME, 1.0, 2.0, 3.0, 1)
    metrics.forget_job(NS, NAME)
    metrics.forget_job(NS, NAME)  # idempotent
    for family in REGISTRY.collect():
        for sample in family.samples:
            assert sample.labels.get("backgroundjob") != NAME, sample
    assert value("nightshift_runs_total", namespace=NS, backgroundjob="other", result="failed") == 0


def test_queue_default_name_and_wait() -> None:
    metrics.set_queue(NS, "", 4, 2)
    metrics.set_queue(NS, "maintenance", 1, 0)
    metrics.observe_admission_wait(NS, None, 0.05)
    metrics.observe_admission_wait(NS, None, 90.0)
    assert value("nightshift_queue_waiting_runs", namespace=NS, queue="default") == 4
    assert value("nightshift_queue_running_runs", namespace=NS, queue="default") == 2
    assert value("nightshift_queue_waiting_runs", namespace=NS, queue="maintenance") == 1
    assert value("nightshift_admission_wait_seconds_count", namespace=NS, queue="default") == 2
    assert value("nightshift_admission_wait_seconds_bucket", namespace=NS, queue="default", le="0.1") == 1
    metrics.forget_queue(NS, "maintenance")
    assert value("nightshift_queue_waiting_runs", namespace=NS, queue="maintenance") is None


def test_reconcile_timer_counts_errors() -> None:
    kind = "TestKind"
    before = value("nightshift_reconcile_duration_seconds_count", kind=kind) or 0
    with metrics.reconcile_timer(kind):
        pass
    with pytest.raises(RuntimeError), metrics.reconcile_timer(kind):
        raise RuntimeError("boom")
    assert value("nightshift_reconcile_duration_seconds_count", kind=kind) == before + 2
    assert value("nightshift_reconcile_errors_total", kind=kind) == 1


def test_history_dropped() -> None:
    before = value("nightshift_history_dropped_total") or 0
    metrics.history_dropped()
    metrics.history_dropped(4)
    assert value("nightshift_history_dropped_total") == before + 5


def test_build_info_and_leader() -> None:
    assert value("nightshift_build_info", version=metadata.version("nightshift")) == 1
    metrics.known_job(NS, NAME)
    metrics.set_queue(NS, None, 1, 0)
    metrics.set_leader(True)
    assert value("nightshift_is_leader") == 1
    assert value("nightshift_runs_total", namespace=NS, backgroundjob=NAME, result="failed") == 0
    metrics.set_leader(False)
    assert value("nightshift_is_leader") == 0
    assert value("nightshift_runs_total", namespace=NS, backgroundjob=NAME, result="failed") is None
    assert value("nightshift_queue_waiting_runs", namespace=NS, queue="default") is None


def test_start_server_serves_registry() -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    metrics.start_server(port, addr="127.0.0.1")
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        body = resp.read().decode()
    assert "nightshift_build_info" in body
