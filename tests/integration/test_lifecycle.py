"""Run lifecycle on the real control plane: dependencies, chains, retries, queues, triggers, stop, restarts."""

from __future__ import annotations

import datetime as dt
import time
from typing import Any

import pytest

from nightshift.core.runs import parse_time
from tests.conftest import Kubectl, Operator, accounted, bgj, script_job, wait_for

pytestmark = pytest.mark.cluster

OK = "print('ok')"
SLOW = "import time; time.sleep({s}); print('done')"
EXIT = "import sys; sys.exit({code})"


def jobs(kubectl: Kubectl, ns: str, owner: str | None = None) -> list[dict[str, Any]]:
    sel = ["-l", f"nightshift.dev/backgroundjob={owner}"] if owner else []
    return kubectl.json("get", "jobs", "-n", ns, *sel)["items"]  # type: ignore[no-any-return]


def status(kubectl: Kubectl, name: str, ns: str) -> dict[str, Any]:
    return kubectl.json("get", "bgj", name, "-n", ns).get("status", {})  # type: ignore[no-any-return]


def last_result(kubectl: Kubectl, name: str, ns: str, want: str) -> dict[str, Any] | None:
    st = status(kubectl, name, ns)
    return st if st.get("lastRun", {}).get("result") == want else None


def done(job: dict[str, Any]) -> str | None:
    for c in job.get("status", {}).get("conditions", []):
        if c["type"] in ("Complete", "Failed") and c["status"] == "True":
            return str(c["type"])
    return None


def ann(job: dict[str, Any], key: str) -> str | None:
    return job["metadata"].get("annotations", {}).get(f"nightshift.dev/{key}")


def trigger(kubectl: Kubectl, name: str, ns: str, nonce: str) -> None:
    kubectl("annotate", "--overwrite", "bgj", name, "-n", ns, f"nightshift.dev/run-now={nonce}")


def test_dependency_chain_of_seed_000(kubectl: Kubectl, running_operator: Operator, namespace: str) -> None:
    """usage-analysis -> automated-backup -> profile-refresh, all due at the same minute: each waits for its upstream."""
    every = "* * * * *"
    kubectl.apply(bgj("usage-analysis", namespace, {"schedule": every, "job": script_job(SLOW.format(s=4))}))
    kubectl.apply(
        bgj(
            "automated-backup",
            namespace,
            {"schedule": every, "dependsOn": [{"name": "usage-analysis"}], "job": script_job(SLOW.format(s=2))},
        )
    )
    kubectl.apply(
        bgj(
            "profile-refresh",
            namespace,
            {"schedule": every, "dependsOn": [{"name": "automated-backup"}], "job": script_job(OK)},
        )
    )

    def chain_done() -> dict[str, dict[str, Any]] | None:
        by_owner: dict[str, dict[str, Any]] = {}
        for j in jobs(kubectl, namespace):
            if done(j) == "Complete":
                by_owner.setdefault(j["metadata"]["labels"]["nightshift.dev/backgroundjob"], j)
        return by_owner if len(by_owner) == 3 else None

    finished = wait_for(chain_done, timeout=150, interval=1, what="one run of each job in the chain")
    for up, down in (("usage-analysis", "automated-backup"), ("automated-backup", "profile-refresh")):
        u, d = finished[up], finished[down]
        assert (
            u["metadata"]["annotations"]["batch.kubernetes.io/cronjob-scheduled-timestamp"]
            == d["metadata"]["annotations"]["batch.kubernetes.io/cronjob-scheduled-timestamp"]
        )
        assert parse_time(d["status"]["startTime"]) >= parse_time(u["status"]["completionTime"])  # type: ignore[operator]
    events = kubectl.json("get", "events", "-n", namespace, "--field-selector", "reason=RunWaiting")["items"]
    assert any("WaitingForDependency" in e["message"] for e in events)
    accounted(running_operator, namespace)


def test_run_after_chain_of_seed_002(kubectl: Kubectl, running_operator: Operator, namespace: str) -> None:
    """language-evaluation (also at start-up) -> cleanup runs once per evaluation success, never twice."""
    kubectl.apply(bgj("language-evaluation", namespace, {"runOnCreate": True, "job": script_job(OK)}))
    kubectl.apply(bgj("evaluation-cleanup", namespace, {"runAfter": ["language-evaluation"], "job": script_job(OK)}))
    wait_for(lambda: last_result(kubectl, "evaluation-cleanup", namespace, "Succeeded"), timeout=90, what="chained run")
    assert status(kubectl, "evaluation-cleanup", namespace)["lastRun"]["trigger"] == "chain"
    trigger(kubectl, "language-evaluation", namespace, "second")
    wait_for(
        lambda: (
            len(jobs(kubectl, namespace, "evaluation-cleanup")) == 2
            and all(done(j) for j in jobs(kubectl, namespace, "evaluation-cleanup"))
        ),
        timeout=90,
        what="second chained run",
    )
    time.sleep(3)
    assert len(jobs(kubectl, namespace, "evaluation-cleanup")) == 2
    assert len(jobs(kubectl, namespace, "language-evaluation")) == 2
    accounted(running_operator, namespace)


def test_retry_on_75_with_backoff_and_no_retry_on_65(
    kubectl: Kubectl, running_operator: Operator, namespace: str
) -> None:
    retry = {"limit": 2, "backoff": {"initial": "3s", "factor": 2, "max": "1m", "jitter": 0}}
    kubectl.apply(
        bgj(
            "flaky",
            namespace,
            {"retry": retry, "job": script_job(EXIT.format(code=75))},
            annotations={"nightshift.dev/run-now": "go"},
        )
    )
    kubectl.apply(
        bgj(
            "bad-input",
            namespace,
            {"retry": retry, "job": script_job(EXIT.format(code=65))},
            annotations={"nightshift.dev/run-now": "go"},
        )
    )
    st = wait_for(lambda: last_result(kubectl, "flaky", namespace, "Failed"), timeout=120, what="flaky failed for good")
    assert st["lastRun"]["attempts"] == 3 and st["lastRun"]["reason"].startswith("RetriesExhausted")
    attempts = sorted(jobs(kubectl, namespace, "flaky"), key=lambda j: int(ann(j, "attempt") or 1))
    assert [int(ann(j, "attempt") or 1) for j in attempts] == [1, 2, 3]
    for prev, nxt, delay in ((attempts[0], attempts[1], 3), (attempts[1], attempts[2], 6)):
        failed_at = parse_time(
            next(c for c in prev["status"]["conditions"] if c["type"] == "Failed")["lastTransitionTime"]
        )
        not_before = parse_time(ann(nxt, "not-before"))
        assert not_before == failed_at + dt.timedelta(seconds=delay)  # type: ignore[operator]
        assert parse_time(nxt["status"]["startTime"]) >= not_before  # type: ignore[operator]

    st = wait_for(lambda: last_result(kubectl, "bad-input", namespace, "Failed"), timeout=60, what="bad-input failed")
    assert st["lastRun"]["exitCode"] == 65 and st["lastRun"]["reason"].startswith("NonRetryableExitCode")
    time.sleep(3)
    assert len(jobs(kubectl, namespace, "bad-input")) == 1
    reasons = [e["reason"] for e in kubectl.json("get", "events", "-n", namespace)["items"]]
    assert reasons.count("Retrying") == 2 and reasons.count("RunFailed") == 2
    accounted(running_operator, namespace)


def test_queue_concurrency_two_admits_by_priority(kubectl: Kubectl, running_operator: Operator, namespace: str) -> None:
    kubectl.apply(
        {
            "apiVersion": "nightshift.dev/v1alpha1",
            "kind": "BackgroundJobQueue",
            "metadata": {"name": "analysis", "namespace": namespace},
            "spec": {"concurrency": 2, "paused": True},
        }
    )
    priorities = ["low", "critical", "medium", "high", "low", "critical", "medium", "high", "low", "medium"]
    for i, prio in enumerate(priorities):
        kubectl.apply(
            bgj(
                f"job-{i}",
                namespace,
                {"queue": "analysis", "priority": prio, "job": script_job(SLOW.format(s=2))},
                annotations={"nightshift.dev/run-now": "x"},
            )
        )
    wait_for(lambda: len(jobs(kubectl, namespace)) == 10, what="10 waiting runs")
    wait_for(
        lambda: all(ann(j, "gate") and "QueuePaused" in (ann(j, "gate") or "") for j in jobs(kubectl, namespace)),
        what="all waiting on the paused queue",
    )
    wait_for(
        lambda: kubectl.json("get", "bgjq", "analysis", "-n", namespace).get("status", {}).get("waiting") == 10,
        what="queue status counts 10 waiting",
    )
    kubectl("patch", "bgjq", "analysis", "-n", namespace, "--type=merge", "-p", '{"spec": {"paused": false}}')
    max_seen = 0

    def all_done() -> bool:
        nonlocal max_seen
        items = jobs(kubectl, namespace)
        running = [j for j in items if not j["spec"].get("suspend") and not done(j)]
        max_seen = max(max_seen, len(running))
        return all(done(j) == "Complete" for j in items)

    wait_for(all_done, timeout=150, interval=0.3, what="all 10 runs")
    assert max_seen <= 2
    items = jobs(kubectl, namespace)
    spans = [(parse_time(j["status"]["startTime"]), parse_time(j["status"]["completionTime"])) for j in items]
    for start, _ in spans:  # at any start, at most 2 runs were in progress (itself included)
        assert sum(1 for s, e in spans if s <= start < e) <= 2  # type: ignore[operator]
    rank = {"critical": 0, "high": 1, "medium": 2, "low": 3}
    order = [
        rank[j["metadata"]["annotations"]["nightshift.dev/priority"]]
        for j in sorted(
            items,
            key=lambda j: (j["status"]["startTime"], rank[j["metadata"]["annotations"]["nightshift.dev/priority"]]),
        )
    ]
    assert order == sorted(order)
    accounted(running_operator, namespace)


def test_queue_rate_limit_spaces_admissions(kubectl: Kubectl, running_operator: Operator, namespace: str) -> None:
    kubectl.apply(
        {
            "apiVersion": "nightshift.dev/v1alpha1",
            "kind": "BackgroundJobQueue",
            "metadata": {"name": "mail", "namespace": namespace},
            "spec": {"concurrency": 10, "rateLimit": {"runs": 2, "per": "15s"}},
        }
    )
    for i in range(4):
        kubectl.apply(
            bgj(
                f"send-{i}",
                namespace,
                {"queue": "mail", "job": script_job(OK)},
                annotations={"nightshift.dev/run-now": "x"},
            )
        )
    wait_for(
        lambda: sum(1 for j in jobs(kubectl, namespace) if "RateLimited" in (ann(j, "gate") or "")) == 2,
        what="two runs held by the rate limit",
    )
    wait_for(lambda: all(done(j) == "Complete" for j in jobs(kubectl, namespace)), timeout=60, what="all 4 runs")
    starts = sorted(parse_time(j["status"]["startTime"]) for j in jobs(kubectl, namespace))
    assert len(starts) == 4
    for earlier, later in zip(starts, starts[2:], strict=False):  # no 15s window holds more than 2 starts
        assert (later - earlier).total_seconds() >= 14  # type: ignore[operator]  # startTime has 1s resolution
    accounted(running_operator, namespace)


def test_run_now_nonce_is_one_run_even_across_restart(
    kubectl: Kubectl, running_operator: Operator, namespace: str
) -> None:
    kubectl.apply(bgj("report", namespace, {"job": script_job(OK)}, annotations={"nightshift.dev/run-now": "n1"}))
    wait_for(lambda: last_result(kubectl, "report", namespace, "Succeeded"), timeout=60, what="first run")
    kubectl.apply(bgj("report", namespace, {"job": script_job(OK)}, annotations={"nightshift.dev/run-now": "n1"}))
    running_operator.restart(kill=True)
    time.sleep(4)
    assert len(jobs(kubectl, namespace, "report")) == 1
    trigger(kubectl, "report", namespace, "n2")
    wait_for(lambda: len(jobs(kubectl, namespace, "report")) == 2, what="second nonce, second run")
    assert status(kubectl, "report", namespace)["handledTriggers"] == ["n1", "n2"]
    accounted(running_operator, namespace)


def test_emergency_stop_and_resume(kubectl: Kubectl, running_operator: Operator, namespace: str) -> None:
    stop = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "nightshift-stop", "namespace": namespace, "labels": {"nightshift.dev/stop": "namespace"}},
        "data": {"reason": "incident 42"},
    }
    kubectl.apply(stop)
    kubectl.apply(bgj("nightly", namespace, {"job": script_job(OK)}, annotations={"nightshift.dev/run-now": "a"}))
    job = wait_for(
        lambda: [j for j in jobs(kubectl, namespace) if "EmergencyStop" in (ann(j, "gate") or "")],
        what="run held by the stop",
    )[0]
    assert job["spec"]["suspend"] is True and "incident 42" in ann(job, "gate")  # type: ignore[operator]
    time.sleep(2)
    assert jobs(kubectl, namespace)[0]["spec"]["suspend"] is True
    kubectl("delete", "configmap", "nightshift-stop", "-n", namespace)
    wait_for(lambda: last_result(kubectl, "nightly", namespace, "Succeeded"), timeout=60, what="run after resume")
    accounted(running_operator, namespace)


def test_operator_killed_while_runs_wait_and_retry(
    kubectl: Kubectl, running_operator: Operator, namespace: str
) -> None:
    """Every run ends exactly once, with no attempt created twice, across SIGKILLs of the operator."""
    retry = {"limit": 1, "backoff": {"initial": "2s", "factor": 1, "max": "2s", "jitter": 0}}
    kubectl.apply(
        {
            "apiVersion": "nightshift.dev/v1alpha1",
            "kind": "BackgroundJobQueue",
            "metadata": {"name": "q", "namespace": namespace},
            "spec": {"concurrency": 1},
        }
    )
    plan = {
        "ok-1": OK,
        "ok-2": OK,
        "ok-3": SLOW.format(s=2),
        "flaky-1": EXIT.format(code=75),
        "flaky-2": EXIT.format(code=75),
        "bad": EXIT.format(code=65),
    }
    for name, code in plan.items():
        kubectl.apply(
            bgj(
                name,
                namespace,
                {"queue": "q", "retry": retry, "job": script_job(code)},
                annotations={"nightshift.dev/run-now": "r1"},
            )
        )
    for _ in range(3):
        time.sleep(3)
        running_operator.restart(kill=True)

    expected = {
        "ok-1": "Succeeded",
        "ok-2": "Succeeded",
        "ok-3": "Succeeded",
        "flaky-1": "Failed",
        "flaky-2": "Failed",
        "bad": "Failed",
    }

    def results() -> dict[str, str] | None:
        got = {n: status(kubectl, n, namespace).get("lastRun", {}).get("result") for n in plan}
        return got if got == expected else None

    wait_for(results, timeout=180, interval=1, what=f"results {expected}")
    for name in plan:
        items = jobs(kubectl, namespace, name)
        runs = {j["metadata"]["labels"]["nightshift.dev/run"] for j in items}
        attempts = sorted(int(ann(j, "attempt") or 1) for j in items)
        assert len(runs) == 1, name
        assert attempts == ([1, 2] if name.startswith("flaky") else [1]), name
        assert all(done(j) for j in items), name
    accounted(running_operator, namespace)  # each end counted once: one mark, one event, history rows


def test_quarantine_after_consecutive_failures_and_resume(
    kubectl: Kubectl, running_operator: Operator, namespace: str
) -> None:
    from tests.integration.test_cli import cli

    spec = {"quarantineAfter": 2, "job": script_job(EXIT.format(code=65))}
    kubectl.apply(bgj("fragile", namespace, spec, annotations={"nightshift.dev/run-now": "1"}))
    wait_for(lambda: last_result(kubectl, "fragile", namespace, "Failed"), timeout=60, what="first failure")
    trigger(kubectl, "fragile", namespace, "2")
    obj = wait_for(
        lambda: (o := kubectl.json("get", "bgj", "fragile", "-n", namespace))["spec"].get("suspend") and o,
        timeout=60,
        what="quarantined",
    )
    assert obj["status"]["consecutiveFailures"] == 2
    assert next(c for c in obj["status"]["conditions"] if c["type"] == "Quarantined")["status"] == "True"
    reasons = [e["reason"] for e in kubectl.json("get", "events", "-n", namespace)["items"]]
    assert reasons.count("Quarantined") == 1
    assert cli(running_operator, "-n", namespace, "resume", "fragile").returncode == 0

    def healed() -> dict[str, Any] | None:
        o = kubectl.json("get", "bgj", "fragile", "-n", namespace)
        q = next(c for c in o["status"]["conditions"] if c["type"] == "Quarantined")
        return (
            o
            if not o["spec"]["suspend"] and q["status"] == "False" and o["status"]["consecutiveFailures"] == 0
            else None
        )

    wait_for(healed, timeout=30, what="quarantine lifted by resume")
    time.sleep(2)  # a late duplicate (a pass on a watch event older than our own status write) would show here
    reasons = [e["reason"] for e in kubectl.json("get", "events", "-n", namespace)["items"]]
    assert (reasons.count("Quarantined"), reasons.count("RunFailed")) == (1, 2)
    accounted(running_operator, namespace)


def test_concurrency_forbid_skips_and_replace_cancels(
    kubectl: Kubectl, running_operator: Operator, namespace: str
) -> None:
    long = script_job(SLOW.format(s=60))
    kubectl.apply(bgj("forbid", namespace, {"job": long}, annotations={"nightshift.dev/run-now": "1"}))
    kubectl.apply(
        bgj(
            "replace",
            namespace,
            {"concurrencyPolicy": "Replace", "job": long},
            annotations={"nightshift.dev/run-now": "1"},
        )
    )
    for name in ("forbid", "replace"):
        wait_for(
            lambda name=name: any(j.get("status", {}).get("active") for j in jobs(kubectl, namespace, name)),
            what=f"{name} running",
        )
        trigger(kubectl, name, namespace, "2")
    skipped = wait_for(
        lambda: [j for j in jobs(kubectl, namespace, "forbid") if (ann(j, "outcome") or "").startswith("Skipped")],
        what="second forbid run skipped",
    )
    assert "ConcurrencyForbid" in ann(skipped[0], "outcome")  # type: ignore[operator]
    cancelled = wait_for(
        lambda: [j for j in jobs(kubectl, namespace, "replace") if (ann(j, "outcome") or "").startswith("Cancelled")],
        what="first replace run cancelled",
    )
    assert cancelled[0]["spec"]["suspend"] is True and "Replaced" in ann(cancelled[0], "outcome")  # type: ignore[operator]
    wait_for(
        lambda: (
            not kubectl.json("get", "pods", "-n", namespace, "-l", f"job-name={cancelled[0]['metadata']['name']}")[
                "items"
            ]
        ),
        what="cancelled pod gone",
    )
    wait_for(
        lambda: [j for j in jobs(kubectl, namespace, "replace") if j.get("status", {}).get("active")],
        what="the replacing run runs",
    )
    accounted(running_operator, namespace)


def test_at_runs_once_at_its_time(kubectl: Kubectl, running_operator: Operator, namespace: str) -> None:
    at = (dt.datetime.now(dt.UTC) + dt.timedelta(seconds=8)).strftime("%Y-%m-%dT%H:%M:%SZ")
    kubectl.apply(bgj("one-time-reindex", namespace, {"at": at, "job": script_job(OK)}))
    job = wait_for(lambda: jobs(kubectl, namespace, "one-time-reindex"), what="the at run")[0]
    assert ann(job, "not-before") == at and ann(job, "trigger") == "at"
    st = wait_for(lambda: last_result(kubectl, "one-time-reindex", namespace, "Succeeded"), timeout=60, what="ran")
    assert parse_time(
        kubectl.json("get", "job", job["metadata"]["name"], "-n", namespace)["status"]["startTime"]
    ) >= parse_time(at)  # type: ignore[operator]
    assert st["lastRun"]["trigger"] == "at"
    running_operator.restart()
    time.sleep(3)
    assert len(jobs(kubectl, namespace, "one-time-reindex")) == 1
    accounted(running_operator, namespace)


def test_history_limits_prune_operator_runs(kubectl: Kubectl, running_operator: Operator, namespace: str) -> None:
    kubectl.apply(bgj("chatty", namespace, {"history": {"successful": 2, "failed": 1}, "job": script_job(OK)}))
    for i in range(4):
        trigger(kubectl, "chatty", namespace, f"n{i}")
        wait_for(
            lambda i=i: (
                len(status(kubectl, "chatty", namespace).get("handledTriggers", [])) == i + 1
                and last_result(kubectl, "chatty", namespace, "Succeeded")
            ),
            timeout=60,
            what=f"run {i}",
        )
    wait_for(lambda: len(jobs(kubectl, namespace, "chatty")) == 2, timeout=30, what="pruned to the 2 newest")
    st = status(kubectl, "chatty", namespace)
    assert st["lastRun"]["result"] == "Succeeded" and st["lastSuccessfulTime"]
    accounted(running_operator, namespace)


def test_missed_runs_are_counted_and_caught_up(kubectl: Kubectl, running_operator: Operator, namespace: str) -> None:
    """kube-controller-manager frozen across the first two scheduled minutes of a new job: the CronJob
    controller runs only the latest (kubernetes #42649); nightshift counts the miss from the CronJob's
    creation, as the controller does, and, with RunAll, runs it too."""
    cp = running_operator.cluster
    cp.pause("kube-controller-manager")
    try:
        kubectl.apply(
            bgj("every-minute", namespace, {"schedule": "* * * * *", "missedRuns": "RunAll", "job": script_job(OK)})
        )
        created = wait_for(
            lambda: kubectl.json("get", "cronjobs", "-n", namespace)["items"],
            timeout=30,
            what="the CronJob",
        )
        born = parse_time(created[0]["metadata"]["creationTimestamp"])
        next_minute = born.replace(second=0, microsecond=0) + dt.timedelta(minutes=1)
        time.sleep((next_minute + dt.timedelta(minutes=1, seconds=5) - dt.datetime.now(dt.UTC)).total_seconds())
    finally:
        cp.resume("kube-controller-manager")

    def caught_up() -> dict[str, Any] | None:
        st = status(kubectl, "every-minute", namespace)
        triggers = [ann(j, "trigger") for j in jobs(kubectl, namespace, "every-minute")]
        return st if st.get("missedRuns", 0) >= 1 and "catchup" in triggers else None

    st = wait_for(caught_up, timeout=90, what="missed run counted and caught up")
    catchups = [j for j in jobs(kubectl, namespace, "every-minute") if ann(j, "trigger") == "catchup"]
    assert len(catchups) == st["missedRuns"]
    assert parse_time(ann(catchups[0], "scheduled-time")) == next_minute  # the minute that never got a Job
    wait_for(
        lambda: all(done(j) == "Complete" for j in jobs(kubectl, namespace, "every-minute")),
        timeout=120,
        what="catch-up runs complete",
    )
    events = kubectl.json("get", "events", "-n", namespace, "--field-selector", "reason=MissedRuns")["items"]
    assert events and "caught up" in events[0]["message"]
    accounted(running_operator, namespace)


def test_bad_trigger_input_never_stops_a_run(kubectl: Kubectl, running_operator: Operator, namespace: str) -> None:
    long_nonce = "x" * 300
    kubectl.apply(
        bgj(
            "odd",
            namespace,
            {"job": script_job(OK)},
            annotations={"nightshift.dev/run-now": long_nonce, "nightshift.dev/run-now-params": "[1, 2]"},
        )
    )
    st = wait_for(lambda: last_result(kubectl, "odd", namespace, "Succeeded"), timeout=60, what="run despite odd input")
    assert len(st["handledTriggers"]) == 1 and st["handledTriggers"][0].startswith("@nonce:")
    reasons = [e["reason"] for e in kubectl.json("get", "events", "-n", namespace)["items"]]
    assert "InvalidRunParams" in reasons
    running_operator.restart()
    time.sleep(3)
    assert len(jobs(kubectl, namespace, "odd")) == 1
    accounted(running_operator, namespace)
