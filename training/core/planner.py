"""Budget planning and prediction from a verified model version (numpy and the standard library only).

The one request → answer computation behind `POST /allocate`, `python -m training allocate` and the media
part of `POST /predict`:

- `model_facts(version, spec, manifest)`: what a version needs for planning and prediction, computed once
  at load (channels, grain, the default period, current mix, largest spend seen, transform arrays).
- `ModelFacts.period(key)`: one period's days, base revenue and controls (cached per period). For the
  media-mix model the season, trend and days come from the period; controls default to their value in the
  same period a year earlier (`training.core.response.default_controls`). A linear model has no season:
  its base is its intercept.
- `ModelFacts.curves(period)`: per channel, steady-state revenue per period as a function of spend per
  period (spend held steady through the period: β·D·hill(S/D); a linear model: coefficient × S).
- `plan_budget(facts, budget, ...)`: the allocation (`training.core.allocate.allocate`) on those curves, the
  current mix (mean split of the last 12 training periods, scaled to the budget) and the period's base.
- `media_contributions(facts, period, spend)`: per instance and channel, what `/predict` answers
  (`media_contributions_of_one`: the same for one instance, in plain floats).
"""

from __future__ import annotations

import math
import operator
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from training.core import response
from training.core.allocate import EXTRAPOLATION_TOLERANCE, LINEAR_ALGORITHMS, ResponseCurve, allocate
from training.core.errors import AllocationError

GRAINS = ("month", "week")
# Years 1900-2199: a period centuries away would only extrapolate the trend into nonsense.
PERIOD_PATTERNS = {"month": re.compile(r"(19|20|21)[0-9]{2}-(0[1-9]|1[0-2])"),
                   "week": re.compile(r"(19|20|21)[0-9]{2}-W[0-9]{2}")}
PERIOD_FORMS = {"month": "'YYYY-MM', e.g. '2026-12'", "week": "'YYYY-Www' (ISO week), e.g. '2026-W50'"}
OUT_OF_RANGE_FACTOR = 1 + EXTRAPOLATION_TOLERANCE  # spend up to the largest seen times this is in range
MAX_CACHED_PERIODS = 1024  # per version; a period's facts are a few floats
CONTROL_DEFAULT = ("each control's value in the same period a year earlier (further back if that period was "
                   "not in training; the training mean if none was)")


@dataclass(frozen=True)
class PeriodFacts:
    """One period of the model's grain: its days, base revenue and the controls behind it."""

    key: str | None
    days: float | None
    base: float
    controls: dict[str, float]
    controls_from: str | None
    media: response.SteadyState | None = None  # mmm: each channel's steady-state revenue in this period
    # mmm: True when no spend within what the model saw in training (`ModelFacts.spend_limits`) can overflow
    # `media` (below its `safe_spend`), so such spend needs no overflow guard.
    in_range_is_safe: bool = False


@dataclass(frozen=True)
class ModelFacts:
    """Per-version constants for planning and prediction; built once when the version is loaded."""

    version: str
    algorithm: str
    channels: tuple[str, ...]
    grain: str | None
    default_period: str | None
    current_spend: dict[str, float] | None  # mean spend per period over the last 12 training periods
    max_spend_seen: dict[str, float] | None  # largest spend in one training period
    spec: Mapping[str, Any] = field(repr=False)
    # Spend above which a channel is out of range, in channel order: the largest seen plus a tolerance.
    spend_limits: tuple[float, ...] | None = field(default=None, repr=False)
    coefficients: tuple[float, ...] | None = field(default=None, repr=False)  # ols/ridge, as plain floats
    _periods: dict[str | None, PeriodFacts] = field(init=False, default_factory=dict, repr=False, compare=False)

    @property
    def linear(self) -> bool:
        """True for ols/ridge: revenue linear in spend, no season."""
        return self.algorithm in LINEAR_ALGORITHMS

    def check_period(self, value: Any, field_name: str = "period") -> str | None:
        """Return the period key to use (`value`, or the default when None); raise AllocationError naming it."""
        if value is None:
            return self.default_period
        grains = (self.grain,) if self.grain else GRAINS
        if isinstance(value, str):
            for grain in grains:
                if PERIOD_PATTERNS[grain].fullmatch(value):
                    try:
                        response.period_bounds(value, grain)
                    except ValueError:
                        break
                    return value
        expected = " or ".join(PERIOD_FORMS[g] for g in grains)
        raise AllocationError(field_name, value, f"a period of the model's grain: {expected}, years 1900 to 2199")

    def period(self, key: str | None) -> PeriodFacts:
        """Return the facts of period `key` (already checked), computed once per version and period."""
        facts = self._periods.get(key)
        if facts is None:
            facts = self._period_facts(key)
            if len(self._periods) < MAX_CACHED_PERIODS:
                self._periods[key] = facts
        return facts

    def _period_facts(self, key: str | None) -> PeriodFacts:
        if self.linear:
            return PeriodFacts(key, None, float(self.spec["intercept"]), {}, None)
        spec = dict(self.spec)
        zero = response.predict_from_period_spend(spec, np.zeros(len(self.channels)), key)
        media = response.spec_steady_state(spec, zero["days"])
        in_range_is_safe = self.spend_limits is not None and all(
            limit <= safe for limit, safe in zip(self.spend_limits, media.safe_spend, strict=True))
        return PeriodFacts(zero["period"], zero["days"], float(zero["base"]), zero["controls"],
                           zero["controls_from"], media, in_range_is_safe)

    def curves(self, period: PeriodFacts) -> dict[str, ResponseCurve]:
        """Per channel, revenue per period (and its slope) as a function of spend per period in `period`."""
        if self.linear:
            return {c: _linear_curve(float(b)) for c, b in zip(self.channels, self.spec["coefficients"], strict=True)}
        spec = dict(self.spec)

        def curve(index: int, channel: str) -> ResponseCurve:
            # `response.steady_state_revenue` of the channel, with the period's constants computed once.
            return ResponseCurve(
                revenue=period.media.channel(index).curve,
                derivative=lambda s: response.steady_state_marginal(spec, channel, s, period.days))

        return {c: curve(i, c) for i, c in enumerate(self.channels)}


def mixture_array(spec: Mapping[str, Any], key: str) -> np.ndarray:
    """A media-mix spec's per-channel transform array as (C, M): a (C,) spec (one Hill curve) is M = 1."""
    values = np.asarray(spec[key], dtype=float)
    return values.reshape(len(spec["channels"]), -1)


def _linear_curve(coefficient: float) -> ResponseCurve:
    return ResponseCurve(revenue=lambda s: coefficient * np.asarray(s, float),
                         derivative=lambda s: np.full(np.shape(s), coefficient))


def _channel_values(block: Any, key: str, channels: Sequence[str]) -> dict[str, float] | None:
    """`response_curves.channels.<c>.<key>` for every channel, or None when the manifest lacks any."""
    if not isinstance(block, Mapping) or not isinstance(block.get("channels"), Mapping):
        return None
    values = {}
    for c in channels:
        entry = block["channels"].get(c)
        value = entry.get(key) if isinstance(entry, Mapping) else None
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
            return None
        values[c] = float(value)
    return values


def model_facts(version: str, spec: Mapping[str, Any], manifest: Mapping[str, Any]) -> ModelFacts:
    """Build a version's planning and prediction constants from its verified spec and manifest."""
    algorithm = str(spec["algorithm"])
    channels = tuple(spec["channels"])
    curves = manifest.get("response_curves")
    current = _channel_values(curves, "current_spend", channels)
    if algorithm in LINEAR_ALGORITHMS:
        grain = curves.get("grain") if isinstance(curves, Mapping) and curves.get("grain") in GRAINS else None
        window = (manifest.get("roi") or {}).get("window") if isinstance(manifest.get("roi"), Mapping) else None
        default = None
        if grain and isinstance(window, list | tuple) and len(window) == 2:
            try:
                default = response.period_after(str(window[1]), grain)
            except ValueError:
                default = None
        max_seen = _channel_values(curves, "max_spend_seen", channels)
    else:
        grain = str(spec["grain"])
        default = response.period_after(str(spec["window"][1]), grain)
        max_seen = dict(zip(channels, np.asarray(spec["max_spend_seen"], float).tolist(), strict=True))
    limits = None if max_seen is None else tuple(max_seen[c] * OUT_OF_RANGE_FACTOR for c in channels)
    coefficients = tuple(np.asarray(spec["coefficients"], float).tolist()) if algorithm in LINEAR_ALGORITHMS else None
    return ModelFacts(version, algorithm, channels, grain, default, current, max_seen, spec, limits, coefficients)


def out_of_range(facts: ModelFacts, spend: Mapping[str, float]) -> list[str]:
    """Channels whose spend per period lies above the largest spend the model saw in one training period."""
    if facts.spend_limits is None:
        return []
    return [c for c, limit in zip(facts.channels, facts.spend_limits, strict=True) if spend.get(c, 0.0) > limit]


def spend_warnings(facts: ModelFacts, spend: Sequence[float]) -> list[str]:
    """Warnings for one instance's spend (channel order) beyond what the model saw in training."""
    seen, limits = facts.max_spend_seen, facts.spend_limits
    if seen is None or limits is None:
        return []
    return [f"{c}: spend {s:,.2f} per period is above the most the model saw in one training period "
            f"({seen[c]:,.2f}); the response curve is extrapolated there"
            for c, s, limit in zip(facts.channels, spend, limits, strict=True) if s > limit]


def media_contributions(facts: ModelFacts, period: PeriodFacts, spend: np.ndarray) -> np.ndarray:
    """Per instance and channel (n, C), the revenue of spend per period held steady through `period`."""
    matrix = np.asarray(spend, dtype=float)
    if facts.linear:
        return matrix * np.asarray(facts.spec["coefficients"], float)
    # Σ_m β_cm·D·hill_cm(S_c/D): `response.steady_state_revenue` for every instance and channel at once.
    return period.media.revenue(matrix)


def media_contributions_of_one(facts: ModelFacts, period: PeriodFacts, spend: Sequence[float]) -> list[float]:
    """`media_contributions` of one instance (spend per period in channel order) as plain floats, without numpy.

    Raises OverflowError, or returns inf or nan, where `media_contributions` would give inf or nan.
    """
    if facts.linear:
        return list(map(operator.mul, spend, facts.coefficients))
    return period.media.revenue_of_one(spend)


def plan_budget(facts: ModelFacts, budget: Any, *, period: Any = None,
                bounds: Mapping[str, Sequence[Any]] | None = None, scenario: str = "max_revenue",
                target_mroi: Any = None) -> dict[str, Any]:
    """Answer a planning request: the allocation, its predicted revenue, the current mix and the lift.

    Raises AllocationError (field, value, expected) for a request that cannot be answered.
    """
    key = facts.check_period(period)
    if bounds is not None and not isinstance(bounds, Mapping):
        raise AllocationError("bounds", bounds, "an object of channel to [min, max]")
    lowered = {}
    for name, pair in (bounds or {}).items():
        channel = str(name).lower()
        if channel in lowered:
            raise AllocationError(f"bounds.{name}", name, "each channel once (names are case-insensitive)")
        lowered[channel] = pair
    unknown = [name for name in lowered if name not in facts.channels]
    if unknown:
        raise AllocationError(f"bounds.{unknown[0]}", unknown[0], f"a channel of the model: {', '.join(facts.channels)}")
    this = facts.period(key)
    try:
        with np.errstate(over="ignore", invalid="ignore"):  # a curve that overflows is refused just below
            result = allocate(facts.curves(this), budget, bounds=lowered, scenario=scenario,
                              target_mroi=target_mroi, current_spend=facts.current_spend,
                              max_spend_seen=facts.max_spend_seen, algorithm=facts.algorithm)
    except AllocationError as exc:
        if exc.field.startswith("curves."):  # the budget is beyond what the curves can evaluate in floats
            raise AllocationError("budget", budget, "an amount the model's response curves can evaluate "
                                                    f"(a budget this large overflows {exc.field[7:]}'s)") from exc
        raise
    order = facts.channels
    current = None
    if result.current_allocation is not None:
        current = {"allocation": {c: result.current_allocation[c] for c in order},
                   "media_revenue": result.current_media_revenue,
                   "predicted_revenue": this.base + result.current_media_revenue}
    lift = None
    if result.lift_absolute is not None:
        relative = None
        if current is not None and current["predicted_revenue"] > 0:
            relative = result.lift_absolute / current["predicted_revenue"]
        lift = {"revenue": result.lift_absolute, "relative": relative,
                "media_relative": result.lift_relative}
    return {
        "model_version": facts.version,
        "algorithm": facts.algorithm,
        "grain": facts.grain,
        "period": this.key,
        "scenario": result.scenario,
        "budget": result.budget,
        "target_mroi": result.target_mroi,
        "allocation": {c: result.allocation[c] for c in order},
        "unspent": result.unspent,
        "predicted_revenue": this.base + result.media_revenue,
        "base_revenue": this.base,
        "media_revenue": result.media_revenue,
        "channels": {c: {"spend": result.channels[c].spend, "revenue": result.channels[c].revenue,
                         "mroi": result.channels[c].mroi,
                         "binding": None if result.channels[c].bound == "none" else result.channels[c].bound,
                         "min": result.channels[c].lower, "max": result.channels[c].upper,
                         "max_spend_seen": result.channels[c].max_spend_seen} for c in order},
        "current_mix": current,
        "lift": lift,
        "out_of_range": out_of_range(facts, result.allocation),
        "warnings": result.warnings,
    }
