"""Pure prediction: channel maps in, revenue, ROI and contributions out. Knows nothing of HTTP.

A prediction is one dot product with the served model's coefficients (scikit-learn's `predict` would add
about 50 µs of input checking per call, more than the rest of a request).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from app.model import ServedModel

IGNORED_KEYS = frozenset({"index"})  # the old clients send their row index; it carries no spend
MAX_CACHED_KEY_ORDERS = 256


class PredictionInputError(ValueError):
    """An instance does not match the model's channels; names the field and what was expected."""

    def __init__(self, code: str, message: str, field: str | None):
        self.code, self.message, self.field = code, message, field
        super().__init__(message)


@dataclass(frozen=True)
class Prediction:
    """Predictions for a batch, in input order."""

    model_version: str
    revenue: list[float]
    roi: list[float | None]
    contributions: list[dict[str, float]]

    def to_dict(self) -> dict[str, Any]:
        """Return the JSON body of `/predict`."""
        return {"predictions": self.revenue, "roi": self.roi, "contributions": self.contributions,
                "model_version": self.model_version}


def _field(prefix: str, position: int | None, key: str) -> str:
    base = prefix if position is None else f"{prefix}[{position}]"
    return f"{base}.{key}" if base else key


def _column_order(model: ServedModel, keys: tuple[str, ...], prefix: str, position: int | None) -> list[int]:
    """Map one instance's keys to model columns (None for ignored keys), or raise naming the bad key."""
    columns: list[int] = []
    seen: dict[int, str] = {}
    for key in keys:
        lowered = key.lower()
        if lowered in IGNORED_KEYS:
            columns.append(-1)
            continue
        column = model.column_of.get(lowered)
        if column is None:
            raise PredictionInputError(
                "unknown_channel", f"unknown channel {key!r}: expected one of {', '.join(model.channels)} "
                                   f"(case-insensitive) for model {model.version}", _field(prefix, position, key))
        if column in seen:
            raise PredictionInputError(
                "duplicate_channel", f"channel {model.channels[column]!r} given twice ({seen[column]!r} and "
                                     f"{key!r}): expected each channel once", _field(prefix, position, key))
        seen[column] = key
        columns.append(column)
    if len(seen) != len(model.channels):
        missing = [c for i, c in enumerate(model.channels) if i not in seen]
        raise PredictionInputError(
            "missing_channel", f"missing spend for {', '.join(missing)}: every instance needs all of "
                               f"{', '.join(model.channels)} (no silent zero)", _field(prefix, position, missing[0]))
    return columns


def spend_matrix(model: ServedModel, rows: list[Mapping[str, float]], prefix: str = "") -> np.ndarray:
    """Return an (instances × channels) spend matrix in model column order."""
    matrix = np.empty((len(rows), len(model.channels)), dtype=np.float64)
    orders = model.key_orders  # clients repeat one key order: map it to columns once per model
    batch = prefix == "instances"
    for position, row in enumerate(rows):
        keys = tuple(row)
        columns = orders.get(keys)
        if columns is None:
            columns = _column_order(model, keys, prefix, position if batch else None)
            if len(orders) < MAX_CACHED_KEY_ORDERS:
                orders[keys] = columns
        out = matrix[position]
        for column, value in zip(columns, row.values(), strict=True):
            if column >= 0:
                out[column] = value
    return matrix


def predict(model: ServedModel, spend: np.ndarray) -> Prediction:
    """Predict revenue, ROI (revenue ÷ total spend, None when it is 0) and contributions per channel."""
    with np.errstate(over="ignore", invalid="ignore"):  # overflow is detected and reported just below
        revenue = (spend @ model.coefficients + model.intercept).tolist()
    overflow = next((i for i, value in enumerate(revenue) if not math.isfinite(value)), None)
    if overflow is not None:  # spend is finite and >= 0: only a product beyond float range gets here
        raise PredictionInputError(
            "out_of_range", f"spend {spend[overflow].tolist()} makes the predicted revenue overflow: expected "
                            "amounts below about 1e300", f"instances[{overflow}]" if len(revenue) > 1 else None)
    totals = spend.sum(axis=1).tolist()
    roi = [r / t if t > 0 else None for r, t in zip(revenue, totals, strict=True)]
    names = model.channels
    return Prediction(model.version, revenue, roi,
                      [dict(zip(names, row, strict=True)) for row in (spend * model.coefficients).tolist()])
