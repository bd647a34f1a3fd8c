"""Admission rejections log at INFO: checked on kopf's real admission path, without a server or cluster."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from typing import Any, cast

import kopf
import pytest
from kopf._cogs.structs import references
from kopf._core.engines import admission
from kopf._core.intents import registries
from kopf._core.reactor import inventory

from nightshift.controller.admission_log import KOPF_OBJECTS_LOGGER, AdmissionRejectionFilter, log_rejections_at_info

RESOURCE = references.Resource(
    group="nightshift.dev",
    version="v1alpha1",
    plural="backgroundjobs",
    kind="BackgroundJob",
    namespaced=True,
    verbs=frozenset({"list", "watch", "patch"}),
)


@pytest.fixture(autouse=True)
def clean_filters() -> Iterator[None]:
    logger = logging.getLogger(KOPF_OBJECTS_LOGGER)
    before = list(logger.filters)
    yield
    logger.filters[:] = before


def review(fn: Any) -> dict[str, Any]:
    """Run one AdmissionReview through kopf's own serve_admission_request with `fn` as the only handler."""
    registry = registries.OperatorRegistry()
    kopf.on.validate("nightshift.dev", "v1alpha1", "backgroundjobs", id="validate", registry=registry)(fn)
    insights = references.Insights()
    insights.webhook_resources.add(RESOURCE)
    request: Any = {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "u1",
            "operation": "CREATE",
            "userInfo": {"username": "someone"},
            "resource": {"group": "nightshift.dev", "version": "v1alpha1", "resource": "backgroundjobs"},
            "object": {
                "apiVersion": "nightshift.dev/v1alpha1",
                "kind": "BackgroundJob",
                "metadata": {"name": "x", "namespace": "ns"},
                "spec": {},
            },
        },
    }
    response = asyncio.run(
        admission.serve_admission_request(
            request,
            settings=kopf.OperatorSettings(),
            memories=inventory.ResourceMemories(),
            memobase=cast(Any, kopf.Memo()),
            registry=registry,
            insights=insights,
            indices={},
        )
    )
    return dict(response)


async def reject(**_: Any) -> None:
    raise kopf.AdmissionError("InvalidSchedule: spec.schedule: bad", code=422)


async def crash(**_: Any) -> None:
    raise RuntimeError("a bug")


def kopf_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == KOPF_OBJECTS_LOGGER and "is invoked" not in r.getMessage()]


def test_without_the_filter_kopf_logs_a_rejection_as_error(caplog: pytest.LogCaptureFixture) -> None:
    """The finding this module exists for; if kopf changes the wording, this test says so."""
    caplog.set_level(logging.INFO)
    response = review(reject)
    assert response["response"]["allowed"] is False
    assert response["response"]["status"] == {"message": "InvalidSchedule: spec.schedule: bad", "code": 422}
    (record,) = kopf_records(caplog)
    assert record.levelno == logging.ERROR
    assert record.getMessage() == "Webhook 'validate' failed permanently: InvalidSchedule: spec.schedule: bad"
    assert record.exc_info is None


def test_with_the_filter_a_rejection_is_info(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    log_rejections_at_info()
    response = review(reject)
    assert response["response"]["allowed"] is False  # the answer itself is unchanged
    (record,) = kopf_records(caplog)
    assert record.levelno == logging.INFO and record.levelname == "INFO"
    assert record.getMessage() == "Webhook 'validate' rejected: InvalidSchedule: spec.schedule: bad"


def test_a_bug_in_the_handler_stays_an_error(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    log_rejections_at_info()
    response = review(crash)
    assert response["response"]["allowed"] is False
    (record,) = kopf_records(caplog)
    assert record.levelno == logging.ERROR and record.exc_info is not None
    assert "a bug" in record.getMessage()


def test_only_the_named_handlers(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    log_rejections_at_info(handler_ids=["something-else"])
    review(reject)
    (record,) = kopf_records(caplog)
    assert record.levelno == logging.ERROR


def test_installing_twice_keeps_one_filter() -> None:
    log_rejections_at_info()
    log_rejections_at_info(handler_ids=["validate"])
    filters = [f for f in logging.getLogger(KOPF_OBJECTS_LOGGER).filters if isinstance(f, AdmissionRejectionFilter)]
    assert len(filters) == 1 and filters[0].handler_ids == frozenset({"validate"})


def test_a_quiet_logger_drops_the_info_record() -> None:
    logger = logging.getLogger("nightshift.test.quiet")
    logger.setLevel(logging.WARNING)
    record = logger.makeRecord(logger.name, logging.ERROR, __file__, 1, "Webhook 'v' failed permanently: no", (), None)
    assert AdmissionRejectionFilter().filter(record) is False
    other = logger.makeRecord(logger.name, logging.ERROR, __file__, 1, "Handler 'h' failed permanently: x", (), None)
    assert AdmissionRejectionFilter().filter(other) is True and other.levelno == logging.ERROR
