"""The image's build context. The image itself (built from the Dockerfile by a real engine: small,
final stage only, numeric non-root user, the operator as default command, a read-only root) is
checked by the real lane, tests/e2e (`make e2e`)."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_dockerignore_is_an_allowlist() -> None:
    lines = [ln.strip() for ln in (ROOT / ".dockerignore").read_text().splitlines() if ln.strip()]
    lines = [ln for ln in lines if not ln.startswith("#")]
    assert lines[0] == "*"
    assert {"!pyproject.toml", "!operator/", "!jobs/"} <= set(lines)
