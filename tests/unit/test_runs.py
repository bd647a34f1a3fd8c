from __future__ import annotations

import datetime as dt

import pytest

from nightshift.api import names
from nightshift.core.runs import (
    RetryRule,
    attempt_view,
    failure_retryable,
    group,
    output_of,
    parse_time,
    state,
    with_pod,
)
from tests.unit.factories import failed, job, pod, run, running, succeeded, t, view, waiting

RULE = RetryRule(limit=2, non_retryable=frozenset({64, 65, 78}), retry_on_timeout=True)
T0 = t(2026, 3, 1, 9)


def test_parse_time() -> None:
    assert parse_time("2026-03-01T09:00:00Z") == T0
    assert parse_time("2026-03-01T04:00:00-05:00") == T0
    assert parse_time(None) is None and parse_time("") is None and parse_time("yesterday") is None


def test_jobs_without_the_backgroundjob_label_are_not_runs() -> None:
    j = job("x")
    del j["metadata"]["labels"][names.LABEL_BGJ]
    assert attempt_view(j) is None
    assert attempt_view({"metadata": {"name": "y"}}) is None


def test_cronjob_created_job() -> None:
    # The CronJob controller writes the scheduled time in the CronJob's time zone.
    j = job("nightly-29540000", cron_scheduled="2026-03-01T04:00:00-05:00", priority="high", queue="q")
    v = attempt_view(j)
    assert v is not None
    assert v.name == v.run == "nightly-29540000"
    assert v.namespace == "team" and v.bgj == "nightly"
    assert v.attempt == 1 and v.trigger == "schedule"
    assert v.scheduled == T0 and v.time == T0
    assert v.priority == "high" and v.queue == "q"
    assert v.suspended and v.waiting and not v.active
    assert not v.succeeded and not v.failed and v.finished is None
    assert v.params is None and v.outcome is None and v.gate is None


def test_operator_created_job() -> None:
    v = view(
        "nightly-mabc-12345678-a2",
        run="nightly-mabc",
        attempt=2,
        trigger="manual",
        scheduled=T0,
        cron_scheduled="2020-01-01T00:00:00Z",  # nightshift's own annotation wins
        not_before=T0 + dt.timedelta(minutes=2),
        params={"olderThan": "7d"},
        gate="Waiting: QueueFull",
    )
    assert v.run == "nightly-mabc" and v.attempt == 2 and v.trigger == "manual"
    assert v.scheduled == T0
    assert v.not_before == T0 + dt.timedelta(minutes=2)
    assert v.params == {"olderThan": "7d"}
    assert v.gate == "Waiting: QueueFull"
    assert v.priority == "medium" and v.queue is None


def test_bad_params_annotation_is_ignored() -> None:
    assert view("x", params="{not json").params is None


def test_time_falls_back_to_creation() -> None:
    v = view("x", created=T0)
    assert v.scheduled is None and v.time == T0


def test_complete_condition() -> None:
    v = view("x", scheduled=T0, suspend=False, started=T0, complete=T0 + dt.timedelta(minutes=3))
    assert v.succeeded and not v.failed
    assert v.started == T0 and v.finished == T0 + dt.timedelta(minutes=3)
    assert not v.active and not v.waiting


@pytest.mark.parametrize("reason", ["PodFailurePolicy", "DeadlineExceeded", "BackoffLimitExceeded"])
def test_failed_condition(reason: str) -> None:
    v = view(
        "x", scheduled=T0, suspend=False, started=T0, failed=T0 + dt.timedelta(minutes=1), reason=reason, message="m"
    )
    assert v.failed and not v.succeeded
    assert v.failure_reason == reason and v.failure_message == "m"
    assert v.finished == T0 + dt.timedelta(minutes=1)


def test_conditions_that_are_not_true_do_not_count() -> None:
    j = job("x", suspend=False, started=T0, complete=T0)
    j["status"]["conditions"][0]["status"] = "False"
    v = attempt_view(j)
    assert v is not None and not v.succeeded and v.finished is None and v.active


def test_with_pod() -> None:
    v = view("x", suspend=False, started=T0, failed=T0, reason="PodFailurePolicy")
    assert with_pod(v, None) is v
    assert with_pod(v, pod(None)) == v  # still running: nothing to copy
    w = with_pod(v, pod(64, '{"message": "bad table"}'))
    assert w.exit_code == 64 and w.message == '{"message": "bad table"}'
    assert with_pod(v, {"status": {}}) == v


def test_group_orders_runs_by_time_and_attempts_by_number() -> None:
    a1 = failed("r1", T0, run="r1", attempt=1)
    a3 = waiting("r1-x-a3", T0, run="r1", attempt=3)
    a2 = failed("r1-x-a2", T0, run="r1", attempt=2)
    later = waiting("r2", T0 + dt.timedelta(hours=1))
    earlier = succeeded("r0", T0 - dt.timedelta(hours=1))
    runs = group([later, a3, a1, earlier, a2])
    assert [r.id for r in runs] == ["r0", "r1", "r2"]
    r1 = runs[1]
    assert [a.attempt for a in r1.attempts] == [1, 2, 3]
    assert r1.first is a1 and r1.last is a3
    assert r1.time == T0 and r1.trigger == "schedule" and r1.priority == "medium"
    assert r1.bgj == "nightly" and r1.namespace == "team"
    assert group([]) == []


def test_group_breaks_time_ties_by_id() -> None:
    assert [r.id for r in group([waiting("b", T0), waiting("a", T0)])] == ["a", "b"]


def test_state_waiting_and_running() -> None:
    assert state(run(waiting("r", T0)), RULE) == ("Waiting", None)
    assert state(run(waiting("r", T0, gate="Waiting: QueueFull")), RULE) == ("Waiting", "Waiting: QueueFull")
    assert state(run(running("r", T0)), RULE) == ("Running", None)


def test_state_succeeded() -> None:
    assert state(run(succeeded("r", T0)), RULE) == ("Succeeded", None)
    retried = run(failed("r", T0, run="r"), succeeded("r-a2", T0, run="r", attempt=2))
    assert state(retried, RULE) == ("Succeeded", None)


def test_state_retrying_while_attempts_are_left() -> None:
    result, why = state(run(failed("r", T0, code=75, run="r")), RULE)
    assert result == "Retrying" and why == "ExitCode: exit code 75"
    # the next attempt exists but is still suspended (in backoff)
    r = run(failed("r", T0, code=75, run="r"), waiting("r-a2", T0, run="r", attempt=2))
    assert state(r, RULE)[0] == "Retrying"
    # the last allowed attempt (limit 2: attempts 1..3) failing is final
    r = run(*(failed(f"r-a{i}", T0, code=75, run="r", attempt=i) for i in (1, 2, 3)))
    result, why = state(r, RULE)
    assert result == "Failed"
    assert why == "RetriesExhausted: 3 attempts; last: ExitCode: exit code 75"
    assert state(run(failed("r", T0, code=75, run="r", attempt=2)), RULE)[0] == "Retrying"


def test_state_limit_zero_means_no_retry() -> None:
    rule = RetryRule(limit=0, non_retryable=frozenset(), retry_on_timeout=True)
    assert state(run(failed("r", T0, code=1)), rule)[0] == "Failed"


@pytest.mark.parametrize("code", [64, 65, 78])
def test_state_non_retryable_exit_code(code: int) -> None:
    result, why = state(run(failed("r", T0, code=code)), RULE)
    assert (result, why) == ("Failed", f"NonRetryableExitCode: exit code {code}")


def test_state_pod_failure_policy_without_pod_is_not_retried() -> None:
    v = view("r", scheduled=T0, suspend=False, started=T0, failed=T0, reason="PodFailurePolicy")
    assert state(run(v), RULE)[0] == "Failed"


def test_state_non_retryable_code_from_the_rule_even_without_pod_failure_policy() -> None:
    v = failed("r", T0, code=3, reason="BackoffLimitExceeded")
    rule = RetryRule(limit=2, non_retryable=frozenset({3}), retry_on_timeout=True)
    assert state(run(v), rule) == ("Failed", "NonRetryableExitCode: exit code 3")


def test_state_timeout() -> None:
    v = view("r", scheduled=T0, suspend=False, started=T0, failed=T0, reason="DeadlineExceeded")
    assert state(run(v), RULE) == ("Retrying", "Timeout: the attempt ran past spec.timeout")
    no = RetryRule(limit=2, non_retryable=frozenset(), retry_on_timeout=False)
    assert state(run(v), no) == ("Failed", "Timeout: the attempt ran past spec.timeout")


def test_failure_without_exit_code_uses_the_condition() -> None:
    v = view("r", suspend=False, failed=T0, reason="BackoffLimitExceeded", message="pod evicted")
    assert failure_retryable(v, RULE) == (True, "BackoffLimitExceeded: pod evicted")


@pytest.mark.parametrize(
    ("outcome", "expected"),
    [
        ("Skipped: DependencyFailed: a failed", ("Skipped", "DependencyFailed: a failed")),
        ("Cancelled: Replaced: run r2 replaced it", ("Cancelled", "Replaced: run r2 replaced it")),
        ("Skipped", ("Skipped", None)),
    ],
)
def test_state_outcome_annotation_wins(outcome: str, expected: tuple[str, str | None]) -> None:
    v = waiting("r", T0, outcome=outcome)
    assert not v.waiting and not v.active
    assert state(run(v), RULE) == expected
    assert state(run(running("r", T0, outcome=outcome)), RULE) == expected


@pytest.mark.parametrize(
    ("message", "output"),
    [
        ('{"rows": 5, "message": "done"}', {"rows": 5, "message": "done"}),
        ('log line\n{"rows": 1}\n', {"rows": 1}),
        ('  {"ok": true}  ', {"ok": True}),
        ("plain text", None),
        ("[1, 2]", None),
        ('"a string"', None),
        ("", None),
        (None, None),
        ("   ", None),
        ('{"truncated": ', None),
    ],
)
def test_output_of(message: str | None, output: dict[str, object] | None) -> None:
    assert output_of(message) == output


def test_prunable_keeps_the_newest_within_limits_and_never_active_runs() -> None:
    from nightshift.core.runs import RetryRule, group, prunable
    from tests.unit.factories import t, view

    rule = RetryRule(0, frozenset({64, 65, 78}), True)
    views = [
        view(
            f"ok{i}",
            scheduled=t(2026, 1, i + 1),
            suspend=False,
            started=t(2026, 1, i + 1),
            complete=t(2026, 1, i + 1, 1),
        )
        for i in range(5)
    ]
    views += [view(f"skip{i}", scheduled=t(2026, 2, i + 1), outcome="Skipped: x") for i in range(3)]
    views += [view("active", scheduled=t(2026, 1, 1), suspend=False, started=t(2026, 1, 1))]
    pruned = {r.id for r in prunable(group(views), rule, keep_succeeded=2, keep_failed=1)}
    assert pruned == {"ok0", "ok1", "ok2", "skip0", "skip1"}
