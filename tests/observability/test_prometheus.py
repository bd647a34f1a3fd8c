"""A real Prometheus scraping the real operator: every dashboard query and every alerting/recording rule
expression evaluates without error against live nightshift series, and the rules file loads.

Needs Debian's prometheus, which `make test` installs (hack/ensure-tools.sh); fails, saying so, without it.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from tests.conftest import Kubectl, Operator, bgj, script_job, wait_for
from tests.support.prometheus import PrometheusNotInstalled, PrometheusServer, find_binary

pytestmark = pytest.mark.cluster

ROOT = Path(__file__).resolve().parents[2]
FILES = ROOT / "charts" / "nightshift" / "files"
DASHBOARD = FILES / "dashboard.json"
ALERTS = FILES / "alerts.yaml"

# Grafana's built-in interval variables; ${datasource} only appears in datasource uids, never in a query.
INTERVALS = {"$__rate_interval": "1m", "$__interval": "1m", "$__range": "1h"}
LABEL_VALUES = re.compile(r"^\s*label_values\((?:(?P<selector>.*),\s*)?(?P<label>\w+)\)\s*$")


def _panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for panel in panels:
        yield panel
        yield from _panels(panel.get("panels", []))


def dashboard_queries() -> list[tuple[str, str]]:
    """(panel title, expr) of every panel target."""
    dash = json.loads(DASHBOARD.read_text())
    return [
        (panel.get("title", ""), target["expr"])
        for panel in _panels(dash["panels"])
        for target in panel.get("targets", [])
        if target.get("expr")
    ]


def variable_queries() -> list[tuple[str, str]]:
    """(variable name, query) of every templating variable backed by a Prometheus query."""
    dash = json.loads(DASHBOARD.read_text())
    out = []
    for var in dash["templating"]["list"]:
        if var.get("type") != "query":
            continue
        query = var["query"]["query"] if isinstance(var["query"], dict) else var["query"]
        out.append((var["name"], query))
    return out


def rule_exprs() -> list[tuple[str, str]]:
    """(alert or record name, expr) of every rule in alerts.yaml."""
    rules = yaml.safe_load(ALERTS.read_text())
    return [(r.get("alert") or r["record"], r["expr"]) for g in rules["groups"] for r in g["rules"]]


def substitute(expr: str, namespace: str, backgroundjob: str) -> str:
    for var, val in INTERVALS.items():
        expr = expr.replace(var, val)
    expr = expr.replace("${namespace}", namespace).replace("$namespace", namespace)
    expr = expr.replace("${backgroundjob}", backgroundjob).replace("$backgroundjob", backgroundjob)
    assert "$" not in expr.replace("$labels", "").replace("$value", ""), f"unsubstituted variable in {expr}"
    return expr


@pytest.fixture(scope="module")
def prometheus(operator: Operator) -> Iterator[PrometheusServer]:
    """Our own Prometheus (own port and storage) scraping the session's operator every second."""
    try:
        find_binary()
    except PrometheusNotInstalled as e:
        pytest.fail(f"prometheus is missing ({e}): `make test` installs it (hack/ensure-tools.sh)")
    if operator.proc is None or operator.proc.poll() is not None:
        operator.start()  # as `running_operator` does, for a module-scoped fixture
    with PrometheusServer([f"127.0.0.1:{operator.metrics_port}"], rule_files=[ALERTS]) as prom:
        prom.wait_for_target_up(timeout=60)
        prom.wait_until(lambda: prom.vector("nightshift_build_info"), timeout=30, what="nightshift_build_info")
        yield prom


@pytest.fixture(scope="module")
def prometheus_with_runs(prometheus: PrometheusServer, kubectl: Kubectl) -> Iterator[tuple[PrometheusServer, str]]:
    """One finished run in a fresh namespace, visible in Prometheus with its own namespace label."""
    namespace = f"t-{uuid.uuid4().hex[:8]}"
    kubectl("create", "namespace", namespace)
    kubectl.apply(
        bgj("nightly", namespace, {"job": script_job("print('ok')")}, annotations={"nightshift.dev/run-now": "x"})
    )
    wait_for(
        lambda: (
            kubectl.json("get", "bgj", "nightly", "-n", namespace).get("status", {}).get("lastRun", {}).get("result")
            == "Succeeded"
        ),
        timeout=120,
        what="nightly succeeded",
    )
    selector = f'nightshift_runs_total{{namespace="{namespace}", backgroundjob="nightly", result="succeeded"}}'
    prometheus.wait_until(
        lambda: [v for _, v in prometheus.vector(selector) if v == 1], timeout=30, what=f"{selector} == 1 in Prometheus"
    )
    yield prometheus, namespace
    kubectl("delete", "namespace", namespace, "--wait=false", check=False)


def test_target_scraped_with_job_label_and_operator_labels_kept(prometheus: PrometheusServer) -> None:
    targets = prometheus.active_targets()
    assert [t["labels"]["job"] for t in targets] == ["nightshift"]
    assert targets[0]["health"] == "up", targets[0].get("lastError")
    [(labels, up)] = prometheus.vector('up{job="nightshift"}')
    assert up == 1, labels
    [(build, one)] = prometheus.vector("nightshift_build_info")
    assert one == 1 and build["version"] and build["job"] == "nightshift"
    assert prometheus.vector("max(nightshift_is_leader)")[0][1] == 1


def test_every_dashboard_query_evaluates(prometheus_with_runs: tuple[PrometheusServer, str]) -> None:
    prom, namespace = prometheus_with_runs
    queries = dashboard_queries()
    assert len(queries) >= 20, "dashboard.json lost its panels?"
    failures = []
    # All namespaces/jobs (Grafana's "All" = .*), and one real namespace and job.
    for ns, job in ((".*", ".*"), (namespace, "nightly")):
        for title, expr in queries:
            query = substitute(expr, ns, job)
            answer = prom.query(query)
            if answer.get("status") != "success":
                failures.append(f"{title!r}: {query}\n    {answer.get('errorType')}: {answer.get('error')}")
            elif answer.get("warnings"):
                failures.append(f"{title!r}: {query}\n    warnings: {answer['warnings']}")
    assert not failures, "dashboard queries Prometheus rejects:\n" + "\n".join(failures)

    # Spot checks that the queries see the live data, not only that they parse.
    assert prom.vector(substitute('sum(up{job=~".*nightshift.*"})', ".*", ".*"))[0][1] == 1
    assert prom.vector("max by (version) (nightshift_build_info)")[0][1] == 1
    failed = prom.vector(
        substitute(
            'max by (namespace, backgroundjob) (nightshift_consecutive_failures{namespace=~"$namespace", backgroundjob=~"$backgroundjob"})',
            namespace,
            "nightly",
        )
    )
    assert [(m["namespace"], m["backgroundjob"], v) for m, v in failed] == [(namespace, "nightly", 0.0)]


def test_every_dashboard_variable_query_resolves(prometheus_with_runs: tuple[PrometheusServer, str]) -> None:
    """Grafana's label_values(selector, label) is /api/v1/label/<label>/values?match[]=selector."""
    prom, namespace = prometheus_with_runs
    values = {}
    for name, query in variable_queries():
        m = LABEL_VALUES.match(query)
        assert m, f"variable {name}: {query!r} is not label_values(...)"
        params: dict[str, str] = {}
        if m["selector"]:
            params["match[]"] = substitute(m["selector"], namespace, ".*")
        answer = prom.api(f"label/{m['label']}/values", **params)
        assert answer.get("status") == "success", (name, query, answer)
        values[name] = answer["data"]
    assert namespace in values["namespace"]
    assert "nightly" in values["backgroundjob"]


def test_every_rule_expression_evaluates(prometheus_with_runs: tuple[PrometheusServer, str]) -> None:
    prom, _ = prometheus_with_runs
    exprs = rule_exprs()
    assert len(exprs) >= 9
    failures = []
    for name, expr in exprs:
        answer = prom.query(expr)
        if answer.get("status") != "success":
            failures.append(f"{name}: {expr}\n    {answer.get('errorType')}: {answer.get('error')}")
    assert not failures, "rule expressions Prometheus rejects:\n" + "\n".join(failures)

    # With the operator up and leading, the operator alerts are quiet.
    by_name = dict(exprs)
    assert prom.vector(by_name["NightshiftOperatorDown"]) == []
    assert prom.vector(by_name["NightshiftNoLeader"]) == []


def test_rules_file_loads_and_every_rule_evaluates_healthy(prometheus_with_runs: tuple[PrometheusServer, str]) -> None:
    """alerts.yaml as Prometheus' own rule_files: loaded at start-up, and each rule evaluated without error."""
    prom, _ = prometheus_with_runs
    want = {name for name, _ in rule_exprs()}

    def evaluated() -> list[dict[str, Any]] | None:
        rules = [r for g in prom.api("rules")["data"]["groups"] for r in g["rules"]]
        return rules if rules and all(r.get("lastEvaluation", "").startswith("20") for r in rules) else None

    rules = prom.wait_until(evaluated, timeout=30, what="every rule evaluated once")
    assert {r["name"] for r in rules} == want
    unhealthy = {r["name"]: r.get("lastError") for r in rules if r["health"] != "ok"}
    assert not unhealthy, unhealthy
    firing = {r["name"] for r in rules if r.get("type") == "alerting" and r.get("state") == "firing"}
    assert not firing & {"NightshiftOperatorDown", "NightshiftNoLeader"}, firing
