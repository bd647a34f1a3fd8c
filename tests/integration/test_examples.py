"""Every example manifest is accepted by the real API server (server-side dry-run) and by the models."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from nightshift.api.models import BackgroundJob, BackgroundJobQueue
from tests.conftest import REPO, Kubectl, Operator

pytestmark = pytest.mark.cluster
FOLDERS = [*sorted(p for p in (REPO / "manifests" / "examples").iterdir() if p.is_dir()), REPO / "manifests" / "demo"]


def documents(folder: Path) -> list[dict[str, object]]:
    return [d for f in sorted(folder.glob("*.yaml")) for d in yaml.safe_load_all(f.read_text()) if d]


@pytest.mark.parametrize("folder", FOLDERS, ids=lambda p: p.name)
def test_examples_pass_server_side_dry_run(kubectl: Kubectl, operator: Operator, folder: Path) -> None:
    docs = documents(folder)
    assert docs, f"no manifests in {folder}"
    for ns in {d["metadata"]["namespace"] for d in docs}:  # type: ignore[index]
        kubectl("create", "namespace", str(ns), check=False)
    result = kubectl.run("apply", "--dry-run=server", "-f", str(folder))
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("(server dry run)") == len(docs)
    for d in docs:
        model = BackgroundJob if d["kind"] == "BackgroundJob" else BackgroundJobQueue
        model.model_validate(d)
