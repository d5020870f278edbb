"""Logging set-up shared by the CLI, the DAG tasks and the API.

`JsonFormatter` writes one JSON object per line in the shape Cloud Logging indexes (`severity`, `message`,
`time`, plus any `extra=` fields such as `event`, `run_id`, `model_version`). Text logs are for people at a
terminal. Stdlib only: the API image imports this module.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from datetime import UTC, datetime
from typing import Any

_RESERVED = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime", "taskName"}


def on_gcp() -> bool:
    """Say whether this process runs on Google Cloud (Cloud Run, Composer, Cloud Build)."""
    return any(os.environ.get(k) for k in ("K_SERVICE", "COMPOSER_ENVIRONMENT", "BUILD_ID", "CLOUD_RUN_JOB"))


class JsonFormatter(logging.Formatter):
    """One JSON object per record, with Cloud Logging's `severity` and any extra fields."""

    def format(self, record: logging.LogRecord) -> str:
        """Render `record` as a single JSON line."""
        entry: dict[str, Any] = {
            "severity": record.levelname if record.levelname != "WARNING" else "WARNING",
            "message": record.getMessage(),
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "logger": record.name,
        }
        entry.update({k: v for k, v in vars(record).items() if k not in _RESERVED and not k.startswith("_")})
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


def configure_logging(fmt: str | None = None, level: int | str = logging.INFO, stream: Any = None) -> None:
    """Install one handler on the root logger: JSON on GCP or when asked, text otherwise."""
    use_json = fmt == "json" or (fmt is None and on_gcp())
    handler = logging.StreamHandler(stream or (sys.stdout if use_json else sys.stderr))
    handler.setFormatter(JsonFormatter() if use_json else TextFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        if getattr(old, "_adroi", False):
            root.removeHandler(old)
    handler._adroi = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(level)
