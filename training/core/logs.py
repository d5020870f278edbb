"""Logging set-up shared by the CLI, the DAG tasks and the API.

`JsonFormatter` writes one JSON object per line in the shape Cloud Logging indexes (`severity`, `message`,
`time`, plus any `extra=` fields such as `event`, `run_id`, `model_version`): right where stdout is collected
as structured logs (Cloud Run, Cloud Build). On Composer a task's stdout reaches Cloud Logging as plain text
inside the Airflow task log, so there the `cloud` format sends each record through google-cloud-logging's
`CloudLoggingHandler`, with the same fields in `jsonPayload` for the alert policies to match. Text logs are
for people at a terminal. Only stdlib at import: the API image imports this module.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from datetime import UTC, datetime
from typing import Any

_RESERVED = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime", "taskName"}


def on_composer() -> bool:
    """Say whether this process is an Airflow task on Cloud Composer."""
    return bool(os.environ.get("COMPOSER_ENVIRONMENT"))


def on_gcp() -> bool:
    """Say whether this process runs on Google Cloud (Cloud Run, Composer, Cloud Build)."""
    return any(os.environ.get(k) for k in ("K_SERVICE", "COMPOSER_ENVIRONMENT", "BUILD_ID", "CLOUD_RUN_JOB"))


class JsonFormatter(logging.Formatter):
    """One JSON object per record, with Cloud Logging's `severity` and any extra fields."""

    def format(self, record: logging.LogRecord) -> str:
        """Render `record` as a single JSON line."""
        entry: dict[str, Any] = {
            "severity": record.levelname,
            "message": record.getMessage(),
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "logger": record.name,
        }
        entry.update(_extra_fields(record))
        if record.exc_info:
            entry["stack_trace"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


class TextFormatter(logging.Formatter):
    """Readable one-line records; the event name, when there is one, goes in brackets."""

    def format(self, record: logging.LogRecord) -> str:
        """Render `record` as `time level [event] message`."""
        event = getattr(record, "event", None)
        base = f"{self.formatTime(record, '%H:%M:%S')} {record.levelname:<7} "
        text = base + (f"[{event}] " if event else "") + record.getMessage()
        if record.exc_info:
            text += "\n" + self.formatException(record.exc_info)
        return text


def _extra_fields(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in vars(record).items() if k not in _RESERVED and not k.startswith("_")
            and k != "json_fields"}


class _JsonFieldsFilter(logging.Filter):
    """Hand our `extra=` fields to CloudLoggingHandler, which puts `json_fields` into `jsonPayload`."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.json_fields = json.loads(json.dumps(_extra_fields(record), default=str))
        return True


def cloud_logging_handler(client: Any = None, name: str = "adroi-training", **kwargs: Any) -> logging.Handler:
    """Return a handler that writes structured entries through the Cloud Logging API."""
    from google.cloud.logging_v2.handlers import CloudLoggingHandler

    if client is None:
        from google.cloud import logging as cloud_logging

        client = cloud_logging.Client()
    handler = CloudLoggingHandler(client, name=name, **kwargs)
    handler.addFilter(_JsonFieldsFilter())
    return handler


def configure_logging(fmt: str | None = None, level: int | str = logging.INFO, stream: Any = None) -> None:
    """Install one handler on the root logger: Cloud Logging API on Composer, JSON on GCP, text elsewhere."""
    if fmt is None:
        fmt = "cloud" if on_composer() else "json" if on_gcp() else "text"
    if fmt == "cloud":
        handler = cloud_logging_handler()
    else:
        handler = logging.StreamHandler(stream or (sys.stdout if fmt == "json" else sys.stderr))
        handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        if getattr(old, "_adroi", False):
            root.removeHandler(old)
    handler._adroi = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(level)
