"""Structured logs for the API: training's JSON formatter plus the request's Cloud trace and model version.

Records logged while a request is handled carry `logging.googleapis.com/trace` (from the
`X-Cloud-Trace-Context` header and `GOOGLE_CLOUD_PROJECT`), so Cloud Logging groups them under the request.
"""

from __future__ import annotations

import logging

from flask import has_request_context, request

from training.core.logs import configure_logging

TRACE_KEY = "logging.googleapis.com/trace"
SPAN_KEY = "logging.googleapis.com/spanId"
MODEL_VERSION_KEY = "adroi.model_version"  # WSGI environ key: the model version a request is answered with


class CloudTraceFilter(logging.Filter):
    """Adds the request's trace, span and served model version to each record logged during it."""

    def __init__(self, project: str):
        super().__init__()
        self.project = project

    def filter(self, record: logging.LogRecord) -> bool:
        """Attach request fields (never drops a record)."""
        if has_request_context():
            header = request.headers.get("X-Cloud-Trace-Context", "")
            trace_id, _, rest = header.partition("/")
            if trace_id and self.project:
                record.__dict__[TRACE_KEY] = f"projects/{self.project}/traces/{trace_id}"
                span = rest.partition(";")[0]
                if span:
                    record.__dict__[SPAN_KEY] = span
            version = request.environ.get(MODEL_VERSION_KEY)
            if version and not hasattr(record, "model_version"):
                record.model_version = version
        return True


def configure_api_logging(fmt: str | None, level: str, project: str) -> None:
    """Install the shared JSON/text handler on the root logger, with the trace filter on it."""
    configure_logging(fmt, level=level)
    for handler in logging.getLogger().handlers:
        if getattr(handler, "_adroi", False):
            handler.addFilter(CloudTraceFilter(project))
