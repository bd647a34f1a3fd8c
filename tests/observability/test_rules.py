"""The alerting rules (charts/nightshift/files/alerts.yaml) pass `promtool check rules` and their
unit tests (observability/alerts_test.yaml). promtool: Debian's `prometheus` package."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from tests.support import tools

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "charts" / "nightshift" / "files" / "alerts.yaml"
RULE_TESTS = ROOT / "observability" / "alerts_test.yaml"
RULE_TESTS_LONG = ROOT / "observability" / "alerts_long_test.yaml"  # days of samples, 5m evaluation

EXPECTED_ALERTS = {
    "NightshiftJobConsecutiveFailures",
    "NightshiftJobLate",
    "NightshiftRunTooLong",
    "NightshiftQueueBacklog",
    "NightshiftOperatorDown",
    "NightshiftNoLeader",
}


def _alerts() -> list[dict[str, Any]]:
    doc = yaml.safe_load(RULES.read_text())
    return [rule for group in doc["groups"] for rule in group["rules"] if "alert" in rule]


def test_every_alert_exists_with_severity_summary_description_and_runbook() -> None:
    alerts = _alerts()
    assert {a["alert"] for a in alerts} == EXPECTED_ALERTS
    for alert in alerts:
        assert alert["labels"]["severity"] in {"critical", "warning", "info"}, alert["alert"]
        annotations = alert["annotations"]
        assert annotations["summary"] and annotations["description"], alert["alert"]
        assert annotations["runbook_url"].endswith("#" + alert["alert"].lower()), alert["alert"]


def test_every_alert_has_a_unit_test_and_a_runbook_section() -> None:
    files = [yaml.safe_load(f.read_text()) for f in (RULE_TESTS, RULE_TESTS_LONG)]
    assert all(t["rule_files"] == ["../charts/nightshift/files/alerts.yaml"] for t in files)
    firing: set[str] = set()
    quiet: set[str] = set()
    for case in (c for t in files for c in t["tests"]):
        for check in case.get("alert_rule_test", []):
            (firing if check.get("exp_alerts") else quiet).add(check["alertname"])
    assert firing == EXPECTED_ALERTS, "each alert needs a firing case"
    assert quiet == EXPECTED_ALERTS, "each alert needs a not-firing case"
    doc = (ROOT / "docs" / "observability.md").read_text()
    for name in EXPECTED_ALERTS:
        assert f"### {name}" in doc, name


def test_no_rule_uses_a_label_named_job_on_nightshift_metrics() -> None:
    # `job` is Prometheus' scrape label; only `up{job=...}` may use it.
    for alert in _alerts():
        expr = alert["expr"]
        if "nightshift_" in expr:
            assert "job=" not in expr.replace("backgroundjob", ""), alert["alert"]


@pytest.mark.tools
def test_promtool_check_rules() -> None:
    promtool = tools.promtool()
    result = subprocess.run([promtool, "check", "rules", str(RULES)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.tools
def test_promtool_test_rules() -> None:
    promtool = tools.promtool()
    result = subprocess.run(
        [promtool, "test", "rules", RULE_TESTS.name, RULE_TESTS_LONG.name],
        cwd=RULE_TESTS.parent,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
