"""API configuration, read in one place: defaults, then the environment, then test overrides.

Every setting is named by its environment variable (`MODEL_STORE`, `MODEL_POLL_SECONDS`, ...); the same
names are the keys `create_app(config)` accepts, so a test override reads like the deployment it stands for.
"""

from __future__ import annotations

import dataclasses
import os
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from training.core.errors import ConfigError

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


@dataclass(frozen=True)
class ApiSettings:
    """What one API process needs to know."""

    MODEL_STORE: str = ".local/store"  # gs://bucket/prefix or a local folder: where the pipeline publishes
    MODEL_POLL_SECONDS: float = 30.0  # how often each worker checks the LATEST pointer
    STORE_TIMEOUT_SECONDS: float = 5.0  # per store request, and the retry budget of one poll
    MAX_BODY_BYTES: int = 1024 * 1024  # larger request bodies answer 413
    MAX_INSTANCES: int = 10_000  # larger batches answer 413
    BODY_TIMEOUT_SECONDS: float = 10.0  # a request body not received within this answers 408 (under gunicorn)
    LOG_FORMAT: str | None = None  # "json" | "text"; None: json on Google Cloud, text elsewhere
    LOG_LEVEL: str = "INFO"
    LOG_REQUESTS: bool = False  # one INFO line per request (Cloud Run already logs requests)
    GOOGLE_CLOUD_PROJECT: str = ""  # names the trace in `logging.googleapis.com/trace`
    CURRENCY_SYMBOL: str = "$"  # printed before money amounts on the page at `/`

    def __post_init__(self) -> None:
        # nan would make the follower poll in a busy loop, inf end its thread: both are refused.
        if not 0 < self.MODEL_POLL_SECONDS <= threading.TIMEOUT_MAX:
            raise ConfigError("MODEL_POLL_SECONDS", self.MODEL_POLL_SECONDS, "a finite number of seconds > 0")
        if not 0 < self.STORE_TIMEOUT_SECONDS <= threading.TIMEOUT_MAX:
            raise ConfigError("STORE_TIMEOUT_SECONDS", self.STORE_TIMEOUT_SECONDS, "a finite number of seconds > 0")
        if not 0 < self.BODY_TIMEOUT_SECONDS <= threading.TIMEOUT_MAX:
            raise ConfigError("BODY_TIMEOUT_SECONDS", self.BODY_TIMEOUT_SECONDS, "a finite number of seconds > 0")
        if self.MAX_BODY_BYTES < 1:
            raise ConfigError("MAX_BODY_BYTES", self.MAX_BODY_BYTES, "a number of bytes >= 1")
        if self.MAX_INSTANCES < 1:
            raise ConfigError("MAX_INSTANCES", self.MAX_INSTANCES, "an integer >= 1")
        if self.LOG_FORMAT not in (None, "json", "text"):
            raise ConfigError("LOG_FORMAT", self.LOG_FORMAT, "json or text")
        if not self.MODEL_STORE:
            raise ConfigError("MODEL_STORE", self.MODEL_STORE, "gs://bucket/prefix or a local folder")


def _convert(name: str, raw: Any, kind: str) -> Any:
    """Turn an environment string (or an override of any type) into the field's type."""
    if not isinstance(raw, str):
        return raw
    text = raw.strip()
    try:
        if kind == "float":
            return float(text)
        if kind == "int":
            return int(text)
    except ValueError as exc:
        raise ConfigError(name, raw, f"a{'n integer' if kind == 'int' else ' number'}") from exc
    if kind == "bool":
        if text.lower() in _TRUE | _FALSE:
            return text.lower() in _TRUE
        raise ConfigError(name, raw, "true or false")
    if kind == "str | None":
        return text or None
    return text


def load_settings(environ: Mapping[str, str] | None = None, overrides: Mapping[str, Any] | None = None) -> ApiSettings:
    """Build the settings from the environment (default `os.environ`), then apply `overrides`."""
    environ = os.environ if environ is None else environ
    fields = {f.name: f.type for f in dataclasses.fields(ApiSettings)}
    unknown = sorted(set(overrides or {}) - set(fields))
    if unknown:
        raise ConfigError(unknown[0], (overrides or {})[unknown[0]], f"one of {', '.join(fields)}")
    values = {name: environ[name] for name in fields if name in environ}
    values.update(overrides or {})
    return ApiSettings(**{name: _convert(name, raw, str(fields[name])) for name, raw in values.items()})
