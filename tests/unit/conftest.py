"""Unit tests: pure functions only, no cluster, no network, no wall clock."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from nightshift.core.render import Owner
from nightshift.settings import Settings


@pytest.fixture(autouse=True)
def _no_operator_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Settings read NIGHTSHIFT_* from the environment; unit tests use the defaults only."""
    for key in list(os.environ):
        if key.startswith("NIGHTSHIFT_"):
            monkeypatch.delenv(key)
    yield


@pytest.fixture
def settings() -> Settings:
    return Settings(jobs_image="registry.example/nightshift:test")


@pytest.fixture
def owner() -> Owner:
    return Owner(name="nightly", namespace="team", uid="0000-uid")
