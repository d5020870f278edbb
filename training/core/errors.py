"""Typed exceptions, one per failure kind, each carrying what a person needs to act on it."""

from __future__ import annotations

from typing import Any


class AdroiError(Exception):
    """Base class of every error this project raises on purpose."""


class ConfigError(AdroiError, ValueError):
    """A setting is missing or has a value outside what it accepts."""

    def __init__(self, field: str, value: Any, expected: str):
        self.field, self.value, self.expected = field, value, expected
        super().__init__(f"{field}={value!r}: expected {expected}")


class AllocationError(AdroiError, ValueError):
    """A budget-allocation request cannot be solved as asked: names the field, the value and what was expected."""

    def __init__(self, field: str, value: Any, expected: str):
        self.field, self.value, self.expected = field, value, expected
        super().__init__(f"{field}={value!r}: expected {expected}")


class StorageError(AdroiError):
    """The store (local folder or bucket) could not be read or written."""


class StorageUnavailable(StorageError):
    """The store did not answer (network, credentials, emulator down)."""


class ObjectNotFound(StorageError, KeyError):
    """The named object does not exist in the store."""

    def __init__(self, uri: str):
        self.uri = uri
        super().__init__(f"no object at {uri}")

    def __str__(self) -> str:  # KeyError would quote the message
        return f"no object at {self.uri}"


class ObjectChanged(StorageError):
    """An object was rewritten after the run listed it, so the data read would not match its fingerprint."""

    def __init__(self, uri: str, listed: int, current: int | None):
        self.uri, self.listed, self.current = uri, listed, current
        now = "is gone" if current is None else f"is now at generation {current}"
        super().__init__(f"{uri} changed while the run read it: listed at generation {listed}, {now}; run again")


class PreconditionFailed(StorageError):
    """A conditional write lost the race: the object's generation was not the expected one."""

    def __init__(self, uri: str, expected: int | None, actual: int | None = None):
        self.uri, self.expected, self.actual = uri, expected, actual
        want = "absent" if expected in (None, 0) else f"generation {expected}"
        got = "" if actual is None else f", found generation {actual}"
        super().__init__(f"conditional write to {uri} refused: expected {want}{got}")


class MetricsError(AdroiError):
    """The metrics table (SQLite file or BigQuery table) could not be read or written."""


class DataSourceError(AdroiError):
    """A table data source (BigQuery) could not be read, or a query would cost more than allowed."""


class DataInvalidError(AdroiError):
    """The input data broke at least one validation rule whose action is `fail`."""

    def __init__(self, report: Any):
        self.report = report
        failed = [r for r in getattr(report, "results", []) if getattr(r, "status", "") == "fail"]
        lines = "; ".join(getattr(r, "message", str(r)) for r in failed) or "validation failed"
        super().__init__(lines)


class GateRejected(AdroiError):
    """The quality gate refused to promote the challenger model."""

    def __init__(self, reason: str):
        self.reason = reason
        super().__init__(reason)


class ModelIntegrityError(AdroiError):
    """A model version's files are missing, altered, or incompatible with this code."""

    def __init__(self, version: str, reason: str):
        self.version, self.reason = version, reason
        super().__init__(f"model {version}: {reason}")
