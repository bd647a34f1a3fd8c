"""The example catalogues: every seed system has its folder, and every built-in job's params validate."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from nightshift_jobs import registry
from nightshift_jobs.params import validate_params

EXAMPLES = Path(__file__).resolve().parents[2] / "manifests" / "examples"
SYSTEMS = ("blockwise", "context7", "content-studio", "both-sides", "attendance")
FILES = sorted(p for system in SYSTEMS for p in (EXAMPLES / system).glob("*.yaml"))


def test_every_system_has_examples_and_readme() -> None:
    for system in SYSTEMS:
        assert (EXAMPLES / system / "README.md").is_file()
        assert list((EXAMPLES / system).glob("*.yaml")), system


@pytest.mark.parametrize("path", FILES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_example_is_valid(path: Path) -> None:
    doc: dict[str, Any] = yaml.safe_load(path.read_text())
    assert doc["apiVersion"] == "nightshift.dev/v1alpha1"
    assert doc["kind"] in ("BackgroundJob", "BackgroundJobQueue")
    assert doc["metadata"]["namespace"] == path.parent.name
    assert len(doc["metadata"]["name"]) <= 40
    if doc["kind"] == "BackgroundJobQueue":
        return
    job = doc["spec"]["job"]
    assert bool(job.get("builtin")) != bool(job.get("image"))
    if job.get("builtin"):
        assert job["builtin"] in registry.BUILTIN_NAMES
        validate_params(registry.get(job["builtin"]).params, job.get("params") or {})
