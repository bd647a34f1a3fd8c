"""nightshift.infra.metrics: names, labels and helpers, read back from its own REGISTRY (no cluster)."""

from __future__ import annotations

import datetime as dt
import urllib.request
from collections.abc import Iterator
from importlib import metadata

import pytest
from prometheus_client import generate_latest
from prometheus_client.openmetrics.parser import text_string_to_metric_families as openmetrics_families
from prometheus_client.parser import text_string_to_metric_families

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
        "nightshift_last_run_duration_seconds",
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


def test_known_job_initialises_the_common_counters_at_zero_and_no_gauge() -> None:
    metrics.known_job(NS, NAME)
    for result in ("succeeded", "failed"):
        assert value("nightshift_runs_total", namespace=NS, backgroundjob=NAME, result=result) == 0
    # rare events appear with the first one
    for result in ("skipped", "cancelled"):
        assert value("nightshift_runs_total", namespace=NS, backgroundjob=NAME, result=result) is None
    assert value("nightshift_retries_total", namespace=NS, backgroundjob=NAME) is None
    assert value("nightshift_missed_runs_total", namespace=NS, backgroundjob=NAME) is None
    # timestamps exist once they have a value (kube-state-metrics' convention), not as 0
    assert value("nightshift_last_success_timestamp_seconds", namespace=NS, backgroundjob=NAME) is None


def test_known_job_is_idempotent_and_keeps_values() -> None:
    metrics.observe_run(NS, NAME, "succeeded", 12.0)
    metrics.known_job(NS, NAME)
    assert value("nightshift_runs_total", namespace=NS, backgroundjob=NAME, result="succeeded") == 1


def test_observe_run_counts_and_observes_duration_per_namespace() -> None:
    metrics.observe_run(NS, NAME, "succeeded", 42.0)
    metrics.observe_run(NS, "other", "failed", 7200.0)
    metrics.observe_run(NS, NAME, "cancelled", None)
    labels = {"namespace": NS, "backgroundjob": NAME}
    assert value("nightshift_runs_total", **labels, result="succeeded") == 1
    assert value("nightshift_runs_total", namespace=NS, backgroundjob="other", result="failed") == 1
    assert value("nightshift_runs_total", **labels, result="cancelled") == 1
    assert value("nightshift_run_duration_seconds_count", **labels) is None  # not per job by default
    assert value("nightshift_run_duration_seconds_count", namespace=NS) == 2
    assert value("nightshift_run_duration_seconds_sum", namespace=NS) == 7242.0
    assert value("nightshift_run_duration_seconds_bucket", namespace=NS, le="60.0") == 1
    assert value("nightshift_run_duration_seconds_bucket", namespace=NS, le="7200.0") == 2
    assert value("nightshift_run_duration_seconds_bucket", namespace=NS, le="+Inf") == 2


def test_per_job_histograms_on_request() -> None:
    metrics.configure(per_job_histograms=True)
    try:
        metrics.observe_run(NS, NAME, "succeeded", 42.0)
        labels = {"namespace": NS, "backgroundjob": NAME}
        assert value("nightshift_run_duration_seconds_count", **labels) == 1
        assert value("nightshift_run_duration_seconds_bucket", **labels, le="60.0") == 1
        assert value("nightshift_run_duration_seconds_count", namespace=NS) is None
        metrics.forget_job(NS, NAME)
        assert value("nightshift_run_duration_seconds_count", **labels) is None
    finally:
        metrics.configure(per_job_histograms=False)


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


STATUS = {
    "lastSuccessfulTime": "2026-11-23T11:00:00Z",
    "lastFailureTime": "2026-11-23T10:00:00Z",
    "nextScheduleTime": "2026-11-23T12:00:00Z",
    "consecutiveFailures": 2,
    "lastRun": {"startTime": "2026-11-23T10:59:00Z", "completionTime": "2026-11-23T11:00:00Z", "result": "Succeeded"},
}


def ts(text: str) -> float:
    return dt.datetime.fromisoformat(text).timestamp()


def test_gauges_derived_from_the_view_match_the_pushed_ones_they_replace() -> None:
    """Before the collector, a pass called set_job_status(last_success, last_failure, next, failures,
    schedule_interval_s=), set_running_since(started) and known_job(created_ts); these are the values
    those calls set, now read from the planned status when scraped (zeros now absent)."""
    view = metrics.JobView(STATUS, created_ts=1_700_000_000, running_since_ts=1234.5, schedule_interval_s=3600)
    metrics.set_job(NS, NAME, view)
    labels = {"namespace": NS, "backgroundjob": NAME}
    pushed_before = {
        "nightshift_last_success_timestamp_seconds": ts("2026-11-23T11:00:00+00:00"),
        "nightshift_last_failure_timestamp_seconds": ts("2026-11-23T10:00:00+00:00"),
        "nightshift_next_schedule_timestamp_seconds": ts("2026-11-23T12:00:00+00:00"),
        "nightshift_consecutive_failures": 2,
        "nightshift_schedule_interval_seconds": 3600,
        "nightshift_run_started_timestamp_seconds": 1234.5,
        "nightshift_job_created_timestamp_seconds": 1.7e9,
    }
    for name, want in pushed_before.items():
        assert value(name, **labels) == want, name
    assert value("nightshift_last_run_duration_seconds", **labels) == 60  # new: replaces the per-job histogram


def test_a_gauge_without_value_has_no_series() -> None:
    """Where the pushed gauge said 0 (never, none), the collector leaves the series out; the
    failure count stays (0 is a value)."""
    metrics.set_job(NS, NAME, metrics.JobView({"consecutiveFailures": 0}))
    labels = {"namespace": NS, "backgroundjob": NAME}
    for name in (
        "nightshift_last_success_timestamp_seconds",
        "nightshift_last_failure_timestamp_seconds",
        "nightshift_next_schedule_timestamp_seconds",
        "nightshift_schedule_interval_seconds",
        "nightshift_run_started_timestamp_seconds",
        "nightshift_job_created_timestamp_seconds",
        "nightshift_last_run_duration_seconds",
    ):
        assert value(name, **labels) is None, name
    assert value("nightshift_consecutive_failures", **labels) == 0
    assert value("nightshift_runs_total", **labels, result="failed") == 0  # set_job knows the job


def test_a_new_view_replaces_the_last() -> None:
    metrics.set_job(NS, NAME, metrics.JobView(STATUS, running_since_ts=1234.5))
    metrics.set_job(NS, NAME, metrics.JobView({**STATUS, "consecutiveFailures": 0}))
    labels = {"namespace": NS, "backgroundjob": NAME}
    assert value("nightshift_consecutive_failures", **labels) == 0
    assert value("nightshift_run_started_timestamp_seconds", **labels) is None


def test_forget_job_removes_every_series() -> None:
    metrics.known_job(NS, NAME)
    metrics.known_job(NS, "other")
    metrics.observe_run(NS, NAME, "skipped", None, reason="ConcurrencyForbid")
    metrics.set_job(NS, NAME, metrics.JobView(STATUS))
    metrics.forget_job(NS, NAME)
    metrics.forget_job(NS, NAME)  # idempotent
    for family in REGISTRY.collect():
        for sample in family.samples:
            assert sample.labels.get("backgroundjob") != NAME, sample
    assert value("nightshift_runs_total", namespace=NS, backgroundjob="other", result="failed") == 0


def test_the_namespace_histogram_goes_with_its_last_job() -> None:
    metrics.observe_run(NS, NAME, "succeeded", 3.0)
    metrics.observe_run(NS, "other", "succeeded", 3.0)
    metrics.forget_job(NS, NAME)
    assert value("nightshift_run_duration_seconds_count", namespace=NS) == 2
    metrics.forget_job(NS, "other")
    assert value("nightshift_run_duration_seconds_count", namespace=NS) is None


def _parsed(text: str) -> set[tuple[str, tuple[tuple[str, str], ...], float]]:
    return {
        (s.name, tuple(sorted(s.labels.items())), s.value)
        for f in text_string_to_metric_families(text)
        for s in f.samples
        if s.labels.get("backgroundjob") or s.name.startswith("nightshift_run_duration")
    }


@pytest.mark.parametrize("per_job", [False, True])
def test_fast_exposition_equals_prometheus_clients(per_job: bool) -> None:
    """/metrics renders per-job families with its own writer; it must say exactly what
    prometheus_client's writer says of the same collector, in both formats."""
    metrics.configure(per_job_histograms=per_job)
    try:
        for i in range(3):
            metrics.set_job(NS, f"job-{i}", metrics.JobView(STATUS if i else {}, created_ts=1.7e9 + i))
        metrics.observe_run(NS, "job-1", "skipped", None, reason="DependencyFailed")
        metrics.observe_run(NS, "job-2", "succeeded", 42.0)
        metrics.observe_retry(NS, "job-2")
        reference = generate_latest(metrics.JOBS).decode()  # type: ignore[arg-type]
        fast = metrics.JOBS.render()
        assert _parsed(fast) == _parsed(reference)
        assert len(_parsed(fast)) > 20
        body, ctype = metrics.render("application/openmetrics-text; version=1.0.0")
        assert ctype.startswith("application/openmetrics-text")
        om = {
            (s.name, tuple(sorted(s.labels.items())), s.value)
            for f in openmetrics_families(body.decode())
            for s in f.samples
            if s.labels.get("backgroundjob") or s.name.startswith("nightshift_run_duration")
        }
        assert om == _parsed(reference)
        plain, ctype = metrics.render("")
        assert ctype.startswith("text/plain") and "nightshift_build_info" in plain.decode()
        assert _parsed(plain.decode()) == _parsed(reference)
    finally:
        metrics.configure(per_job_histograms=False)


def test_series_per_job_and_bytes_at_scale() -> None:
    """The budget that keeps a scrape of 10,000 jobs under 10 MB: a job that ran on demand and
    succeeded has 6 series (succeeded, failed, failures, created, last success, last duration); a
    scheduled one 2 more (next run, interval); all well under 1 KB."""
    for i in range(100):
        st = {"consecutiveFailures": 0, "lastSuccessfulTime": "2026-11-23T11:00:00Z", "lastRun": STATUS["lastRun"]}
        metrics.set_job("bench", f"bench-{i:04d}", metrics.JobView(st, created_ts=1.7e9))
    text = metrics.JOBS.render()
    per_job = [line for line in text.splitlines() if 'backgroundjob="bench-0042"' in line]
    assert len(per_job) == 6, per_job
    assert sum(len(line) + 1 for line in per_job) < 1000


def test_sync_queues_drops_the_queues_that_went() -> None:
    metrics.known_job(NS, NAME)
    metrics.sync_queues({(NS, "maintenance"): (2, 1)}, [(NS, "maintenance"), (NS, "idle")])
    assert value("nightshift_queue_waiting_runs", namespace=NS, queue="maintenance") == 2
    assert value("nightshift_queue_running_runs", namespace=NS, queue="maintenance") == 1
    assert value("nightshift_queue_waiting_runs", namespace=NS, queue="idle") == 0
    assert value("nightshift_queue_waiting_runs", namespace=NS, queue="default") == 0  # the namespace has a job
    metrics.sync_queues({}, [])  # both queues deleted
    assert value("nightshift_queue_waiting_runs", namespace=NS, queue="maintenance") is None
    assert value("nightshift_queue_waiting_runs", namespace=NS, queue="idle") is None
    metrics.forget_job(NS, NAME)
    metrics.sync_queues({}, [])
    assert value("nightshift_queue_waiting_runs", namespace=NS, queue="default") is None


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
    import gzip
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    metrics.start_server(port, addr="127.0.0.1")
    metrics.known_job(NS, NAME)
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        body = resp.read().decode()
    assert "nightshift_build_info" in body
    assert f'nightshift_runs_total{{namespace="{NS}",backgroundjob="{NAME}",result="failed"}} 0.0' in body
    req = urllib.request.Request(f"http://127.0.0.1:{port}/metrics", headers={"Accept-Encoding": "gzip"})
    with urllib.request.urlopen(req, timeout=5) as resp:
        assert resp.headers["Content-Encoding"] == "gzip"
        assert gzip.decompress(resp.read()).decode() == body
