"""The Grafana dashboard (charts/nightshift/files/dashboard.json): structure, variables, and every
panel query is valid PromQL (checked by promtool after substituting Grafana's variables)."""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from tests.support import tools

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "charts" / "nightshift" / "files" / "dashboard.json"

GRAFANA_VARS = {
    "$__rate_interval": "5m",
    "$__interval": "1m",
    "$__range": "1d",
    "$namespace": ".*",
    "$backgroundjob": ".*",
}


def _dashboard() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return data


def _panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for panel in panels:
        yield panel
        yield from _panels(panel.get("panels", []))


def _queries() -> list[tuple[str, str]]:
    out = []
    for panel in _panels(_dashboard()["panels"]):
        for target in panel.get("targets", []):
            out.append((panel["title"], target["expr"]))
    return out


def test_datasource_is_a_variable_everywhere() -> None:
    dash = _dashboard()
    variables = {v["name"]: v for v in dash["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    for panel in _panels(dash["panels"]):
        if panel["type"] == "row":
            continue
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == "${datasource}", panel["title"]
    for name in ("namespace", "backgroundjob"):
        assert variables[name]["datasource"]["uid"] == "${datasource}"
        assert variables[name]["query"]["query"].startswith("label_values(")


def test_overview_and_drill_down() -> None:
    dash = _dashboard()
    assert dash["uid"] == "nightshift-overview"
    rows = [p["title"] for p in dash["panels"] if p["type"] == "row"]
    assert rows[0] == "Overview"
    assert any("$backgroundjob" in r for r in rows)
    exprs = " ".join(e for _, e in _queries())
    for needle in (
        "histogram_quantile(0.5,",
        "histogram_quantile(0.95,",
        "histogram_quantile(0.99,",
        "nightshift_runs_total",
        "nightshift_queue_waiting_runs",
        "nightshift_admission_wait_seconds_bucket",
        "time() - max by (namespace, backgroundjob) (nightshift_last_success_timestamp_seconds",
        "nightshift_schedule_interval_seconds",
        "nightshift_next_schedule_timestamp_seconds",
    ):
        assert needle in exprs, needle
    ids = [p["id"] for p in _panels(dash["panels"])]
    assert len(ids) == len(set(ids))


def test_no_query_uses_a_job_label_on_nightshift_metrics() -> None:
    for title, expr in _queries():
        if "up{" not in expr:
            assert not re.search(r"[{,]\s*job\s*[=!~]", expr), title


@pytest.mark.tools
def test_every_query_is_valid_promql(tmp_path: Path) -> None:
    promtool = tools.promtool()
    rules = []
    for i, (title, expr) in enumerate(_queries()):
        for var, value in GRAFANA_VARS.items():
            expr = expr.replace(var, value)
        assert "$" not in expr, f"{title}: unknown variable in {expr}"
        rules.append({"record": f"dashboard:query_{i}", "expr": expr})
    path = tmp_path / "dashboard-queries.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    result = subprocess.run([promtool, "check", "rules", str(path)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
