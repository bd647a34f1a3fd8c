from __future__ import annotations

import re

import pytest

from nightshift.api import names

DNS = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


def test_run_id_is_deterministic_and_depends_on_every_part() -> None:
    a = names.run_id("nightly", "manual", "nonce-1")
    assert a == names.run_id("nightly", "manual", "nonce-1")
    assert a.startswith("nightly-m") and len(a) == len("nightly-m") + 10
    assert a != names.run_id("nightly", "manual", "nonce-2")
    assert a != names.run_id("nightly", "chain", "nonce-1")
    assert a != names.run_id("nightlz", "manual", "nonce-1")
    assert names.run_id("x", "manual", "a", "b") != names.run_id("x", "manual", "ab")


@pytest.mark.parametrize("length", [1, 40, 41, 52])
@pytest.mark.parametrize("kind", ["manual", "chain", "create", "at", "backfill"])
def test_run_id_fits_a_job_name_and_a_label_value(length: int, kind: str) -> None:
    rid = names.run_id("a" * length, kind, "2026-01-01T00:00:00Z")
    assert len(rid) <= 52
    assert DNS.match(rid)


def test_long_job_names_still_get_distinct_run_ids() -> None:
    base = "x" * 40
    assert names.run_id(base + "-one", "manual", "n") != names.run_id(base + "-two", "manual", "n")


def test_attempt_job_name() -> None:
    run = names.run_id("nightly", "manual", "n")
    assert names.attempt_job_name(run, 1) == run
    assert names.attempt_job_name(run, 0) == run
    second = names.attempt_job_name(run, 2)
    assert second == names.attempt_job_name(run, 2)
    assert second != names.attempt_job_name(run, 3)
    assert second.endswith("-a2")


@pytest.mark.parametrize("attempt", [2, 9, 21, 999])
def test_attempt_job_names_fit_63_characters(attempt: int) -> None:
    for run in ("a" * 52, "b" * 63, names.run_id("c" * 52, "backfill", "t"), "cron-job-name-28481040"):
        name = names.attempt_job_name(run, attempt)
        assert len(name) <= names.MAX_JOB_NAME
        assert DNS.match(name)


def test_digest() -> None:
    assert names.digest("a", "b") == names.digest("a", "b")
    assert names.digest("a", "b") != names.digest("ab")
    assert len(names.digest("x", size=6)) == 6
