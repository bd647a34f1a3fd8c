"""Admission rejections are answers, not operator errors: log them at INFO.

A validating handler rejects a request by raising kopf.AdmissionError, a kopf.PermanentError. kopf
(1.45, kopf/_core/actions/execution.py, execute_handler_once) catches it and logs, on the handler's
cause logger, which for webhooks is a LocalObjectLogger over the `kopf.objects` logger
(kopf/_core/engines/admission.py, serve_admission_request):

    logger.error(f"{handler} failed permanently: {str(e) or repr(e)}")

with the handler rendered as "Webhook '<id>'", the message already formatted (no args, no exc_info)
and extra k8s_skip=True (so it never becomes a Kubernetes Event). A user's typo in `kubectl apply`
thus shows as an ERROR in the operator's log and trips alerts on error lines.

The record carries no exception, so the one dependable mark is that message shape on that logger. For
a webhook handler "failed permanently" always means a deliberate rejection (AdmissionError or
PermanentError); a bug (any other exception) is logged by kopf as "failed with an exception" through
logger.exception, and keeps its ERROR. A filter on `kopf.objects` runs before any handler sees the
record, including the root handlers it propagates to, so rewriting the level there is enough.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from typing import Final

KOPF_OBJECTS_LOGGER: Final = "kopf.objects"
_REJECTED = re.compile(r"^Webhook '(?P<id>[^']*)' failed permanently: (?P<reason>.*)\Z", re.DOTALL)


class AdmissionRejectionFilter(logging.Filter):
    """Turn kopf's ERROR "Webhook 'x' failed permanently: ..." records into INFO "Webhook 'x' rejected: ...".

    `handler_ids` limits it to those webhook handlers (kopf's handler id, by default the function's
    name); None means every webhook handler. Other records pass untouched.
    """

    def __init__(self, handler_ids: Iterable[str] | None = None) -> None:
        super().__init__()
        self.handler_ids = frozenset(handler_ids) if handler_ids is not None else None

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno != logging.ERROR or record.exc_info:
            return True
        match = _REJECTED.match(record.getMessage())
        if match is None or (self.handler_ids is not None and match["id"] not in self.handler_ids):
            return True
        record.msg = f"Webhook {match['id']!r} rejected: {match['reason']}"
        record.args = None
        record.levelno = logging.INFO
        record.levelname = logging.getLevelName(logging.INFO)
        # The logger let the record through at ERROR; at INFO it must still pass the logger's own level.
        return logging.getLogger(record.name).isEnabledFor(logging.INFO)


def log_rejections_at_info(
    handler_ids: Iterable[str] | None = None, logger_name: str = KOPF_OBJECTS_LOGGER
) -> AdmissionRejectionFilter:
    """Install the filter on kopf's object logger (once; calling again replaces it) and return it.

    Call it once at start-up, before kopf serves webhooks; kopf's own logging set-up replaces root
    handlers only, so the filter stays.
    """
    logger = logging.getLogger(logger_name)
    for old in [f for f in logger.filters if isinstance(f, AdmissionRejectionFilter)]:
        logger.removeFilter(old)
    new = AdmissionRejectionFilter(handler_ids)
    logger.addFilter(new)
    return new
