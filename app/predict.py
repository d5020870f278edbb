"""Pure prediction: channel maps in, revenue, ROI and contributions out. Knows nothing of HTTP.

A linear prediction is one dot product with the served model's coefficients (scikit-learn's `predict` would
add about 50 µs of input checking per call, more than the rest of a request): numpy for batches, plain floats
for a few instances, where numpy's own per-call overhead would be most of the cost. A media-mix prediction
is the period's base (computed once per version and period) plus each channel's steady-state response to
its spend per period (`training.core.planner.media_contributions`, the same math as training).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from operator import itemgetter, mul
from typing import Any

import numpy as np

from app.model import ServedModel
from training.core.planner import PeriodFacts, media_contributions, spend_warnings

IGNORED_KEYS = frozenset({"index"})  # the old clients send their row index; it carries no spend
MAX_CACHED_KEY_ORDERS = 256
VECTORISE_FROM = 32  # instances from which numpy beats plain floats


class PredictionInputError(ValueError):
    """An instance does not match the model's channels; names the field and what was expected."""

    def __init__(self, code: str, message: str, field: str | None):
        self.code, self.message, self.field = code, message, field
        super().__init__(message)


@dataclass(slots=True)
class Prediction:
    """Predictions for a batch, in input order."""

    model_version: str
    revenue: list[float]
    roi: list[float | None]
    contributions: list[dict[str, float]]
    media_contribution: list[float]
    media_roi: list[float | None]
    warnings: list[list[str]]
    period: str | None
    out_of_range: list[str]  # channels above the largest spend in training, in any instance

    def to_dict(self) -> dict[str, Any]:
        """Return the JSON body of `/predict`."""
        return {"predictions": self.revenue, "roi": self.roi, "contributions": self.contributions,
                "media_contribution": self.media_contribution, "media_roi": self.media_roi,
                "warnings": self.warnings, "period": self.period, "model_version": self.model_version}


def _field(prefix: str, position: int | None, key: str) -> str:
    base = prefix if position is None else f"{prefix}[{position}]"
    return f"{base}.{key}" if base else key


def _spend_getter(model: ServedModel, keys: tuple[str, ...], prefix: str,
                  position: int | None) -> Callable[[Mapping[str, float]], tuple[float, ...]]:
    """Return a function picking one instance's spends in model channel order, or raise naming the bad key."""
    key_of: dict[int, str] = {}
    for key in keys:
        lowered = key.lower()
        if lowered in IGNORED_KEYS:
            continue
        column = model.column_of.get(lowered)
        if column is None:
            raise PredictionInputError(
                "unknown_channel", f"unknown channel {key!r}: expected one of {', '.join(model.channels)} "
                                   f"(case-insensitive) for model {model.version}", _field(prefix, position, key))
        if column in key_of:
            raise PredictionInputError(
                "duplicate_channel", f"channel {model.channels[column]!r} given twice ({key_of[column]!r} and "
                                     f"{key!r}): expected each channel once", _field(prefix, position, key))
        key_of[column] = key
    if len(key_of) != len(model.channels):
        missing = [c for i, c in enumerate(model.channels) if i not in key_of]
        raise PredictionInputError(
            "missing_channel", f"missing spend for {', '.join(missing)}: every instance needs all of "
                               f"{', '.join(model.channels)} (no silent zero)", _field(prefix, position, missing[0]))
    ordered = [key_of[i] for i in range(len(model.channels))]
    if len(ordered) == 1:
        return lambda row: (row[ordered[0]],)
    return itemgetter(*ordered)


def spend_rows(model: ServedModel, rows: list[Mapping[str, float]], prefix: str = "") -> list[tuple[float, ...]]:
    """Return each instance's spends in model channel order."""
    getters = model.key_orders  # clients repeat one key order: map it to channels once per model
    batch = prefix == "instances"
    spend = []
    for position, row in enumerate(rows):
        keys = tuple(row)
        getter = getters.get(keys)
        if getter is None:
            getter = _spend_getter(model, keys, prefix, position if batch else None)
            if len(getters) < MAX_CACHED_KEY_ORDERS:
                getters[keys] = getter
        spend.append(getter(row))
    return spend


def _linear(model: ServedModel, spend: list[tuple[float, ...]]) -> tuple[list[float], list[list[float]], list[float]]:
    """Revenue, contributions and total spend per instance of a linear model."""
    if len(spend) >= VECTORISE_FROM:
        matrix = np.array(spend, dtype=np.float64)
        with np.errstate(over="ignore", invalid="ignore"):  # overflow is detected and reported below
            revenue = (matrix @ model.coefficients + model.intercept).tolist()
            contributions = (matrix * model.coefficients).tolist()
            totals = matrix.sum(axis=1).tolist()
    else:  # a few instances: plain floats, numpy's per-call overhead would dominate
        coefficients = model.coefficient_values
        contributions = [list(map(mul, row, coefficients)) for row in spend]
        revenue = [model.intercept + sum(row) for row in contributions]
        totals = [sum(row) for row in spend]
    return revenue, contributions, totals


def _media_mix(model: ServedModel, period: PeriodFacts,
               spend: list[tuple[float, ...]]) -> tuple[list[float], list[list[float]], list[float], list[float]]:
    """Revenue, contributions, total spend and media contribution per instance of a media-mix model in `period`."""
    matrix = np.array(spend, dtype=np.float64)
    with np.errstate(over="ignore", invalid="ignore"):
        parts = media_contributions(model.facts, period, matrix)
    media = parts.sum(axis=1)
    return (media + period.base).tolist(), parts.tolist(), matrix.sum(axis=1).tolist(), media.tolist()


def predict(model: ServedModel, spend: list[tuple[float, ...]], period_key: str | None = None) -> Prediction:
    """Predict revenue, ROI (revenue ÷ total spend, None when it is 0), contributions, media ROI and warnings.

    `period_key` (already checked, None: the default) sets a media-mix model's season, trend, days and
    controls; a linear model has none of them.
    """
    facts = model.facts
    period = facts.period(period_key or facts.default_period)
    if facts.linear:
        revenue, contributions, totals = _linear(model, spend)
        media = [sum(row) for row in contributions]
    else:
        revenue, contributions, totals, media = _media_mix(model, period, spend)
    if not all(map(math.isfinite, revenue)):  # spend is finite and >= 0: only a product beyond float range
        overflow = next(i for i, value in enumerate(revenue) if not math.isfinite(value))
        raise PredictionInputError(
            "out_of_range", f"spend {list(spend[overflow])} makes the predicted revenue overflow: expected "
                            "amounts below about 1e300", f"instances[{overflow}]" if len(revenue) > 1 else None)
    roi = [r / t if t > 0 else None for r, t in zip(revenue, totals, strict=False)]  # lengths equal by construction
    media_roi = [m / t if t > 0 else None for m, t in zip(media, totals, strict=False)]
    warnings: list[list[str]] = [[] for _ in spend]
    flagged: list[str] = []
    seen = facts.max_spend_array
    if seen is not None:
        above = (np.array(spend, dtype=np.float64) > seen * (1 + 1e-6)) if len(spend) >= VECTORISE_FROM else None
        for i, row in enumerate(spend):
            if above is not None and not above[i].any():
                continue
            found = spend_warnings(facts, row)
            if found:
                warnings[i] = found
                flagged += [c for c, s, m in zip(facts.channels, row, seen, strict=True) if s > m * (1 + 1e-6)]
    names = model.channels
    return Prediction(model.version, revenue, roi, [dict(zip(names, row, strict=False)) for row in contributions],
                      media, media_roi, warnings, period.key, sorted(set(flagged), key=names.index))
