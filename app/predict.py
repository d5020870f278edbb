"""Pure prediction: channel maps in, revenue, ROI and contributions out. Knows nothing of HTTP.

A linear prediction is one dot product with the served model's coefficients (scikit-learn's `predict` would
add about 50 µs of input checking per call, more than the rest of a request): numpy for batches, plain floats
for a few instances, where numpy's own per-call overhead would be most of the cost. A media-mix prediction
is the period's base plus each channel's steady-state response to its spend per period, both computed
once per version and period (`PeriodFacts.media`, a `training.core.response.SteadyState`: the same math as
training and the planner, five numpy calls per batch; one instance in plain floats through the same
expression, `training.core.planner.media_contributions_of_one`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from itertools import repeat
from math import isfinite
from operator import gt, itemgetter, le
from typing import Any

import numpy as np

from app.model import ServedModel
from training.core.planner import (
    ModelFacts,
    PeriodFacts,
    media_contributions,
    media_contributions_of_one,
    spend_warnings,
)

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


def _by_channel(names: tuple[str, ...], rows: list[list[float]]) -> list[dict[str, float]]:
    """Each row as a channel -> value map (zip called without `strict`: the keyword doubles its cost)."""
    return list(map(dict, map(zip, repeat(names), rows)))


def _ratio(value: float, total: float) -> float | None:
    """`value` per unit of `total` spend; None without spend (ROI is undefined there)."""
    return value / total if total > 0 else None


def _overflow(spend: list[tuple[float, ...]], position: int) -> PredictionInputError:
    """The error for an instance whose predicted revenue is beyond float range."""
    return PredictionInputError(
        "out_of_range", f"spend {list(spend[position])} makes the predicted revenue overflow: expected amounts "
                        "below about 1e300", f"instances[{position}]" if len(spend) > 1 else None)


def _out_of_range(facts: ModelFacts, spend: list[tuple[float, ...]], matrix: np.ndarray | None) -> list[int]:
    """Positions of the instances with a spend above the largest the model saw in training."""
    limits = facts.spend_limits
    if limits is None:
        return []
    if matrix is not None:
        return np.flatnonzero((matrix > limits).any(axis=1)).tolist()
    if len(spend) == 1:  # the usual request: no comprehension to set up
        return [0] if any(map(gt, spend[0], limits)) else []
    return [i for i, row in enumerate(spend) if any(map(gt, row, limits))]


def _media_parts(facts: ModelFacts, period: PeriodFacts, spend: list[tuple[float, ...]], matrix: np.ndarray,
                 in_range: bool) -> np.ndarray:
    """The period's steady-state response (`media_contributions`) to `matrix`, the few instances of `spend`.

    `in_range`: every spend is within what the model saw in training.
    """
    if (in_range and period.in_range_is_safe) or all(all(map(le, row, period.media.safe_spend)) for row in spend):
        return media_contributions(facts, period, matrix)  # the usual case: nothing can overflow, no np.errstate
    with np.errstate(over="ignore", invalid="ignore"):  # overflow is detected and reported by the caller
        return media_contributions(facts, period, matrix)


Answer = tuple[list[float], list[float | None], list[dict[str, float]], list[float], list[float | None]]


def _one(model: ServedModel, period: PeriodFacts, row: tuple[float, ...]) -> Answer:
    """Revenue, ROI, contributions, media contribution and media ROI of one instance (the usual request).

    In plain floats (`media_contributions_of_one`): for one instance numpy's per-call overhead, and the set-up
    of `_few`'s comprehensions and maps, cost more than the work.
    """
    try:
        parts = media_contributions_of_one(model.facts, period, row)
    except OverflowError as exc:  # spend is finite and >= 0: only a power beyond float range
        raise _overflow([row], 0) from exc
    media = sum(parts)
    revenue = period.base + media
    if not isfinite(revenue):  # a product beyond float range
        raise _overflow([row], 0)
    total = sum(row)
    by_channel = [dict(zip(model.channels, parts, strict=False))]
    if total > 0:
        return [revenue], [revenue / total], by_channel, [media], [media / total]
    return [revenue], [None], by_channel, [media], [None]  # `_ratio`'s None


def _few(model: ServedModel, period: PeriodFacts, spend: list[tuple[float, ...]], in_range: bool) -> Answer:
    """Revenue, ROI, contributions, media contribution and media ROI of a few instances, in plain floats."""
    facts = model.facts
    if facts.linear:  # the period's base of a linear model is its intercept
        contributions = [media_contributions_of_one(facts, period, row) for row in spend]
    else:
        contributions = _media_parts(facts, period, spend, np.array(spend, dtype=np.float64), in_range).tolist()
    media = [sum(row) for row in contributions]
    revenue = [period.base + m for m in media]
    if not all(map(isfinite, revenue)):  # spend is finite and >= 0: only a product beyond float range
        raise _overflow(spend, next(i for i, value in enumerate(revenue) if not isfinite(value)))
    totals = [sum(row) for row in spend]
    return (revenue, list(map(_ratio, revenue, totals)), _by_channel(model.channels, contributions), media,
            list(map(_ratio, media, totals)))


def _batch(model: ServedModel, period: PeriodFacts, matrix: np.ndarray, spend: list[tuple[float, ...]]) -> Answer:
    """The same as `_few` for a batch (instances × channels `matrix`), with numpy."""
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):  # overflow is reported below
        parts = media_contributions(model.facts, period, matrix)
        media = parts.sum(axis=1)
        revenue = media + period.base  # a linear model's base is its intercept
        totals = matrix.sum(axis=1)
        roi, media_roi = revenue / totals, media / totals
    overflow = np.flatnonzero(~np.isfinite(revenue))
    if overflow.size:  # spend is finite and >= 0: only a product beyond float range
        raise _overflow(spend, int(overflow[0]))
    roi_list, media_roi_list = roi.tolist(), media_roi.tolist()
    for i in np.flatnonzero(~(totals > 0)).tolist():  # ROI is undefined without spend
        roi_list[i] = media_roi_list[i] = None
    return revenue.tolist(), roi_list, _by_channel(model.channels, parts.tolist()), media.tolist(), media_roi_list


def predict(model: ServedModel, spend: list[tuple[float, ...]], period_key: str | None = None) -> Prediction:
    """Predict revenue, ROI (revenue ÷ total spend, None when it is 0), contributions, media ROI and warnings.

    `period_key` (already checked, None: the default) sets a media-mix model's season, trend, days and
    controls; a linear model has none of them.
    """
    facts = model.facts
    period = facts.period(period_key or facts.default_period)
    if len(spend) == 1:  # the usual request
        flagged = _out_of_range(facts, spend, None)
        revenue, roi, by_channel, media, media_roi = _one(model, period, spend[0])
        warnings: list[list[str]] = [[]]
    else:
        matrix = np.array(spend, dtype=np.float64) if len(spend) >= VECTORISE_FROM else None
        flagged = _out_of_range(facts, spend, matrix)
        if matrix is None:
            revenue, roi, by_channel, media, media_roi = _few(model, period, spend, not flagged)
        else:
            revenue, roi, by_channel, media, media_roi = _batch(model, period, matrix, spend)
        warnings = [[] for _ in spend]
    out_of_range: list[str] = []
    if flagged:
        limits = facts.spend_limits
        for i in flagged:
            warnings[i] = spend_warnings(facts, spend[i])
        above = {c for i in flagged for c, s, m in zip(facts.channels, spend[i], limits, strict=True) if s > m}
        out_of_range = [c for c in facts.channels if c in above]
    return Prediction(model.version, revenue, roi, by_channel, media, media_roi, warnings, period.key, out_of_range)
