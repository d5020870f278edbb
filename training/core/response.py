"""The media-mix model's math, shared by training and serving (numpy and the standard library only).

revenue per period = base + Σ_c Σ_m β_cm · Σ_{days d in period} hill_cm(adstock_cm(spend_c))[d]

Each channel's response is a mixture of M Hill curves: component m has its own daily decay, half-saturation,
shape and coefficient β_cm ≥ 0. The model `training.mmm` fits is one Hill curve per channel (M = 1, "hill");
versions published before it hold the mean of bootstrap replicate models ("hill_mixture", M up to the size
of the transform grid), which this module still predicts from.

- `adstock`: geometric carryover on DAILY spend, normalised so a constant daily spend x adstocks to x.
- `hill`: diminishing returns of the adstocked daily spend (0 at 0, 1/2 at the half-saturation, → 1); its
  core, `saturation`, is written with operators only and serves numpy arrays and Python floats alike.
- `media_features`: adstock daily, saturate daily, sum into periods, so carryover crosses period edges.
- `base_design`: level, trend and yearly Fourier seasonality per day, summed over the period's days (a
  28-day February has less base than a 31-day March), plus the controls scaled by the period's days.
- `predict_periods` / `decompose`: prediction from a plain model spec (`"format": "adroi-model/2"`,
  `"algorithm": "mmm"`), and the split of the fitted revenue into base and one contribution per channel.
- `steady_state_revenue` / `steady_state_marginal`: spend per period held steady through a period of D days:
  the daily spend S/D adstocks to itself, so the channel brings β·D·hill(S/D) per period.
- `SteadyState`: that revenue for every channel at once, with the per-period constants computed once
  (`steady_state`); what `steady_state_revenue`, the planner and `/predict` evaluate (a batch in numpy, one
  instance in plain floats: `SteadyState.revenue_of_one`).
- `predict_from_period_spend`: what `/predict` answers for one request (spend per period of the model's grain).

The spec (plain dict, see `SPEC_KEYS`): channel transforms and coefficients as float64 arrays in channel
order, base coefficients in `base_terms` order, and the calendar facts the base needs. `decay`,
`half_saturation`, `shape` and `coefficient` are (C, M) arrays: row c holds channel c's M mixture components
(channels with fewer components are padded with coefficient 0, decay 0, half-saturation 1, shape 1). Specs
written before the mixture hold (C,) arrays; they are read as M = 1. The optional key `"curve_form"` says
"hill_mixture" or "hill".
"""

from __future__ import annotations

import math
import operator
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from training.core import calendar

FORMAT = "adroi-model/2"
ALGORITHM = "mmm"
DAYS_PER_YEAR = 365.25
SPEC_KEYS = (
    "format", "algorithm", "channels", "grain", "window", "periods", "trend_origin", "fourier_order",
    "base_terms", "base_coefficients", "decay", "half_saturation", "shape", "coefficient", "controls",
    "control_by_period", "control_mean", "max_spend_seen", "period_days",
)


ADSTOCK_BLOCK = 64  # days per block of `adstock`


# --- transforms ---------------------------------------------------------------------------------------

def adstock(spend: np.ndarray, decay: float | np.ndarray) -> np.ndarray:
    """Geometric adstock on days: a[t] = decay·a[t-1] + (1 − decay)·x[t], a[-1] = 0.

    Equivalently a[t] = (1 − λ) Σ_k λ^k x[t−k]: the weights sum to 1, so a constant spend x adstocks to x in
    steady state. `spend` is (days,) or (days, ...); `decay` a scalar or one value per column (broadcast to
    the trailing shape), in [0, 1).

    Computed in blocks of ADSTOCK_BLOCK days: within a block the filter is one lower-triangular matrix
    product, and only the state at each block's end is carried to the next block, so Python loops over
    days / ADSTOCK_BLOCK blocks instead of every day (the fits evaluate it thousands of times).
    """
    x = np.asarray(spend, dtype=float)
    n = x.shape[0]
    columns = x.reshape(n, -1)
    lam = np.broadcast_to(np.asarray(decay, dtype=float), x.shape[1:]).reshape(-1)
    if n == 0:
        return x.copy()
    block = min(ADSTOCK_BLOCK, n)
    n_blocks = -(-n // block)
    padded = np.zeros((n_blocks * block, columns.shape[1]))
    padded[:n] = columns
    step = np.arange(block)
    lag = step[:, None] - step[None, :]
    powers = lam ** step[:, None].astype(float)  # (B, k): λ^0 … λ^(B−1)
    weights = np.where((lag >= 0)[..., None], (1.0 - lam) * powers[np.maximum(lag, 0)], 0.0)
    # (k, B, B) @ (k, B, blocks): every block filtered from a zero state, one matrix product per column
    local = np.matmul(weights.transpose(2, 0, 1), padded.reshape(n_blocks, block, -1).transpose(2, 1, 0))
    local = local.transpose(2, 1, 0)  # (blocks, B, k)
    carry = powers * lam  # λ^(i+1): weight of the previous block's last state on each day of a block
    for b in range(1, n_blocks):
        local[b] += carry * local[b - 1, -1]
    return local.reshape(n_blocks * block, -1)[:n].reshape(x.shape)


def saturation(scaled: Any, shape: Any) -> Any:
    """Hill's curve of a spend already divided by its half-saturation K: r/(1 + r), r = scaled^shape.

    Written with operators only, so the one expression serves numpy arrays (`hill`, `SteadyState.revenue`)
    and Python floats (`SteadyState.revenue_of_one`) alike.
    """
    ratio = scaled ** shape
    ratio /= ratio + 1.0  # in place for an array (the power made it); a new float otherwise
    return ratio


def hill(adstocked: np.ndarray, half_saturation: float | np.ndarray, shape: float | np.ndarray) -> np.ndarray:
    """Hill saturation: h(a) = a^s / (a^s + K^s), K = half-saturation (h(K) = 1/2), s = shape (s > 1: S-curve)."""
    a = np.maximum(np.asarray(adstocked, dtype=float), 0.0)
    k = np.asarray(half_saturation, dtype=float)
    s = np.asarray(shape, dtype=float)
    return saturation(a / k, s)


def hill_derivative(adstocked: np.ndarray, half_saturation: float | np.ndarray,
                    shape: float | np.ndarray) -> np.ndarray:
    """dh/da = s·(a/K)^s / (a·(1 + (a/K)^s)²); at a = 0 it is 1/K for s = 1, 0 for s > 1, infinite for s < 1."""
    a = np.maximum(np.asarray(adstocked, dtype=float), 0.0)
    k = np.asarray(half_saturation, dtype=float)
    s = np.asarray(shape, dtype=float)
    ratio = (a / k) ** s
    with np.errstate(divide="ignore", invalid="ignore"):
        d = s * ratio / (a * (1.0 + ratio) ** 2)
    at_zero = np.where(s == 1.0, 1.0 / k, np.where(s < 1.0, np.inf, 0.0)) * np.ones_like(a)
    return np.where(a > 0, d, at_zero)


def period_sum(daily: np.ndarray, day_period: np.ndarray, n_periods: int) -> np.ndarray:
    """Sum daily values (days,) or (days, k) into periods; days with `day_period` < 0 (warm-up) are dropped."""
    values = np.asarray(daily, dtype=float)
    idx = np.asarray(day_period)
    used = idx >= 0
    if values.ndim == 1:
        return np.bincount(idx[used], weights=values[used], minlength=n_periods)
    out = np.zeros((n_periods, values.shape[1]))
    np.add.at(out, idx[used], values[used])
    return out


def media_daily(daily_spend: np.ndarray, decay: np.ndarray, half_saturation: np.ndarray,
                shape: np.ndarray) -> np.ndarray:
    """Return hill(adstock(spend)) per day and channel (days, C): the daily effect before the coefficient."""
    return hill(adstock(daily_spend, decay), half_saturation, shape)


def media_features(daily_spend: np.ndarray, day_period: np.ndarray, n_periods: int, decay: np.ndarray,
                   half_saturation: np.ndarray, shape: np.ndarray) -> np.ndarray:
    """Return the (periods, C) media features: adstock daily, saturate daily, sum into periods."""
    return period_sum(media_daily(daily_spend, decay, half_saturation, shape), day_period, n_periods)


def base_terms(fourier_order: int, controls: list[str]) -> list[str]:
    """Return the names of the base design's columns, in order."""
    terms = ["level", "trend"]
    for k in range(1, fourier_order + 1):
        terms += [f"sin{k}", f"cos{k}"]
    return terms + [f"control:{c}" for c in controls]


def base_daily(day_ordinals: np.ndarray, trend_origin: int, fourier_order: int) -> np.ndarray:
    """Daily base basis (days, 2 + 2K): 1, years since `trend_origin`, sin/cos(2πk·day/365.25) for k ≤ K."""
    d = np.asarray(day_ordinals, dtype=float)
    cols = [np.ones_like(d), (d - float(trend_origin)) / DAYS_PER_YEAR]
    for k in range(1, fourier_order + 1):
        angle = 2.0 * np.pi * k * d / DAYS_PER_YEAR
        cols += [np.sin(angle), np.cos(angle)]
    return np.stack(cols, axis=1)


def base_design(day_ordinals: np.ndarray, day_period: np.ndarray, n_periods: int, trend_origin: int,
                fourier_order: int, controls: np.ndarray | None = None) -> np.ndarray:
    """Return the (periods, terms) base design: the daily basis summed over each period, then controls × days."""
    summed = period_sum(base_daily(day_ordinals, trend_origin, fourier_order), day_period, n_periods)
    days = summed[:, :1]  # the level column counts the period's days
    if controls is None or np.size(controls) == 0:
        return summed
    return np.hstack([summed, np.asarray(controls, dtype=float).reshape(n_periods, -1) * days])


# --- prediction from a spec ------------------------------------------------------------------------------

def check_spec(spec: dict[str, Any]) -> None:
    """Raise ValueError naming the key when `spec` is not an MMM spec this module can predict from."""
    if not isinstance(spec, dict):
        raise ValueError(f"spec: expected a dict, got {type(spec).__name__}")
    if spec.get("format") != FORMAT or spec.get("algorithm") != ALGORITHM:
        raise ValueError(f"spec format/algorithm={spec.get('format')!r}/{spec.get('algorithm')!r}: "
                         f"expected {FORMAT!r}/{ALGORITHM!r}")
    missing = [k for k in SPEC_KEYS if k not in spec]
    if missing:
        raise ValueError(f"spec: missing keys {missing}; expected all of {list(SPEC_KEYS)}")
    _transforms(spec)


def _transforms(spec: dict[str, Any]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Decay, half-saturation, shape and coefficient as (C, M) arrays (a (C,) spec is M = 1)."""
    n = len(spec["channels"])
    out = []
    for key in ("decay", "half_saturation", "shape", "coefficient"):
        given = np.asarray(spec[key], float)
        value = given[:, None] if given.ndim == 1 else given
        if value.ndim != 2 or value.shape[0] != n:
            raise ValueError(f"spec.{key}: shape {given.shape}; expected ({n},) or ({n}, components)")
        out.append(value)
    if len({v.shape for v in out}) != 1:
        raise ValueError(f"spec: decay/half_saturation/shape/coefficient shapes {[v.shape for v in out]} differ; "
                         "expected one shape")
    return out[0], out[1], out[2], out[3]


def mixture_media_daily(daily_spend: np.ndarray, decay: np.ndarray, half_saturation: np.ndarray,
                        shape: np.ndarray, coefficient: np.ndarray) -> np.ndarray:
    """Return each channel's daily contribution (days, C) = Σ_m β_cm·hill_cm(adstock_cm(spend_c)); (C, M) params."""
    spend = np.asarray(daily_spend, float)
    n_ch, n_comp = coefficient.shape
    live = coefficient != 0
    out = np.zeros((spend.shape[0], n_ch))
    rows, cols = np.nonzero(live)
    if rows.size == 0:
        return out
    daily = media_daily(spend[:, rows], decay[rows, cols], half_saturation[rows, cols], shape[rows, cols])
    weighted = daily * coefficient[rows, cols]
    for j, c in enumerate(rows):
        out[:, c] += weighted[:, j]
    return out


# Largest power of ten `SteadyState` lets (S/(D·K))^s reach: far from float overflow (about 1.8e308).
_SAFE_POWER_OF_TEN = 300.0


@dataclass(frozen=True, eq=False)
class SteadyState:
    """Steady-state revenue per period of each channel, Σ_m β_cm·D·hill_cm(S_c/D), for a period of D days.

    `hill` with the per-period constants folded in: r = (S·(1/(D·K)))^s, revenue = Σ_m (β·D)·r/(1 + r). The
    live components (β ≠ 0) of every channel are the L columns of two matrices, so an evaluation is one
    matrix product (spend into columns, times 1/(D·K)), `saturation` (one power, one add, one divide) and one
    matrix product (the β·D-weighted sum back into channels): five numpy calls, whatever the batch size.
    `revenue_of_one` evaluates one instance with the same `saturation` on Python floats.
    """

    spread: np.ndarray  # (C, L): 1/(D·K) where column l is a component of channel c, else 0
    shape: np.ndarray  # (L,): each column's Hill shape s
    gather: np.ndarray  # (L, C): β·D where column l is a component of channel c, else 0
    # Per channel, the spend per period up to which no power can overflow (inf: none can); above it,
    # `revenue` may return inf or nan, and numpy warns unless the caller set `np.errstate`.
    safe_spend: tuple[float, ...]
    # Derived, for `revenue_of_one`: per column its channel, 1/(D·K), s and β·D as plain floats; None when
    # some 1/(D·K) or s is not a positive finite number (where Python's power would not give numpy's nan).
    _columns: tuple[tuple[int, ...], tuple[float, ...], tuple[float, ...], tuple[float, ...]] | None = field(
        init=False, repr=False)
    _one_per_channel: bool = field(init=False, repr=False)  # column c is channel c's only component

    def __post_init__(self) -> None:
        channel_of = tuple((self.gather != 0).argmax(axis=1).tolist())  # a column's one non-zero: its channel
        scale, shape = tuple(self.spread.sum(axis=0).tolist()), tuple(self.shape.tolist())
        columns = channel_of, scale, shape, tuple(self.gather.sum(axis=1).tolist())
        if not all(0.0 < value < math.inf for value in (*scale, *shape)):
            columns = None
        object.__setattr__(self, "_columns", columns)
        object.__setattr__(self, "_one_per_channel", channel_of == tuple(range(self.spread.shape[0])))

    def revenue(self, spend: np.ndarray) -> np.ndarray:
        """Revenue per period (..., C) for spend per period (..., C) in channel order, every spend >= 0."""
        # ndarray.dot rather than @: for a few instances numpy's per-call overhead is most of the cost.
        return saturation(np.asarray(spend, dtype=float).dot(self.spread), self.shape).dot(self.gather)

    def revenue_of_one(self, spend: Sequence[float]) -> list[float]:
        """`revenue` of one instance (C floats in channel order, every one >= 0), in plain floats.

        The same `saturation`, on Python floats: for one instance numpy's per-call overhead is most of the
        cost. Equal to `revenue` within a unit or two in the last place (numpy's vectorised power may round
        differently from the C library's). Where `revenue` gives inf or nan this returns inf or nan, or raises
        OverflowError (Python's power of floats raises where numpy's returns inf).
        """
        columns = self._columns
        if columns is None:
            return self.revenue(np.asarray(spend, dtype=float)).tolist()
        channel_of, scale, shape, weight = columns
        if self._one_per_channel:
            return list(map(operator.mul, weight, map(saturation, map(operator.mul, spend, scale), shape)))
        out = [0.0] * len(spend)
        parts = map(operator.mul, weight, map(saturation, map(operator.mul, map(spend.__getitem__, channel_of),
                                                               scale), shape))
        for channel, part in zip(channel_of, parts, strict=True):
            out[channel] += part
        return out

    def channel(self, index: int) -> SteadyState:
        """Channel `index` alone: a one-channel form, for `curve`."""
        columns = self.spread[index] != 0
        return SteadyState(self.spread[index:index + 1, columns], self.shape[columns],
                           self.gather[columns, index:index + 1], (self.safe_spend[index],))

    def curve(self, spend_per_period: np.ndarray | float) -> np.ndarray:
        """A one-channel form's revenue per period for spend per period of any shape (a negative spend is 0)."""
        spend = np.maximum(np.asarray(spend_per_period, dtype=float), 0.0)[..., None]
        return self.revenue(spend).sum(axis=-1)


def steady_state(half_saturation: np.ndarray, shape: np.ndarray, coefficient: np.ndarray,
                 days: float) -> SteadyState:
    """Build the `SteadyState` of (C, M) transforms for a period of `days` days."""
    n_channels = coefficient.shape[0]
    channel, component = np.nonzero(np.asarray(coefficient) != 0)
    half = np.asarray(half_saturation, float)[channel, component]
    power = np.asarray(shape, float)[channel, component]
    columns = np.arange(channel.size)
    spread = np.zeros((n_channels, channel.size))
    spread[channel, columns] = 1.0 / (days * half)
    gather = np.zeros((channel.size, n_channels))
    gather[columns, channel] = np.asarray(coefficient, float)[channel, component] * days
    # r ≤ 10^300 and S/(D·K) ≤ 10^300 when log10(S) ≤ 300/max(s, 1) + log10(D·K), per component.
    with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
        exponent = _SAFE_POWER_OF_TEN / np.maximum(power, 1.0) + np.log10(days * half)
    safe = [math.inf] * n_channels
    for c, value in zip(channel.tolist(), exponent.tolist(), strict=True):
        safe[c] = min(safe[c], math.inf if value > 308.0 else 10.0 ** value)
    for value in (spread, power, gather):
        value.flags.writeable = False
    return SteadyState(spread, power, gather, tuple(safe))


def spec_steady_state(spec: dict[str, Any], days: float) -> SteadyState:
    """The `SteadyState` of a media-mix spec for a period of `days` days."""
    _, half, shape, beta = _transforms(spec)
    return steady_state(half, shape, beta, float(days))


def _steady(spec: dict[str, Any], channel: str, spend_per_period: np.ndarray | float,
            period_days: float | None, derivative: bool) -> np.ndarray:
    i = list(spec["channels"]).index(channel)
    _, half, shape, beta = _transforms(spec)
    days = float(spec["period_days"] if period_days is None else period_days)
    if not derivative:
        return steady_state(half[i:i + 1], shape[i:i + 1], beta[i:i + 1], days).curve(spend_per_period)
    daily = np.asarray(spend_per_period, float)[..., None] / days
    live = beta[i] != 0
    values = beta[i][live] * hill_derivative(daily, half[i][live], shape[i][live])
    return values.sum(axis=-1)


def decompose(spec: dict[str, Any], daily_spend: np.ndarray, day_ordinals: np.ndarray, day_period: np.ndarray,
              n_periods: int, controls: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Return base (P,), contributions (P, C) and fitted (P,) = base + Σ contributions for the given days.

    `daily_spend` (days, C) in the spec's channel order covers every day from the first carryover day;
    `day_period` maps each day to its period (−1 before the first); `controls` is (P, k) in spec order.
    """
    check_spec(spec)
    decay, half, shape, beta = _transforms(spec)
    contributions = period_sum(mixture_media_daily(np.asarray(daily_spend, float), decay, half, shape, beta),
                               day_period, n_periods).reshape(n_periods, len(spec["channels"]))
    design = base_design(day_ordinals, day_period, n_periods, int(spec["trend_origin"]),
                         int(spec["fourier_order"]), controls if spec["controls"] else None)
    base = design @ np.asarray(spec["base_coefficients"], float)
    return {"base": base, "contributions": contributions, "fitted": base + contributions.sum(axis=1)}


def predict_periods(spec: dict[str, Any], daily_spend: np.ndarray, day_ordinals: np.ndarray,
                    day_period: np.ndarray, n_periods: int, controls: np.ndarray | None = None) -> np.ndarray:
    """Return the predicted revenue per period (see `decompose` for the inputs)."""
    return decompose(spec, daily_spend, day_ordinals, day_period, n_periods, controls)["fitted"]


def steady_state_revenue(spec: dict[str, Any], channel: str, spend_per_period: np.ndarray | float,
                         period_days: float | None = None) -> np.ndarray:
    """Revenue per period from `channel` when spend per period S is held steady: Σ_m β_m·D·hill_m(S/D)."""
    return _steady(spec, channel, spend_per_period, period_days, derivative=False)


def steady_state_marginal(spec: dict[str, Any], channel: str, spend_per_period: np.ndarray | float,
                          period_days: float | None = None) -> np.ndarray:
    """Derivative of `steady_state_revenue` in spend per period: Σ_m β_m·hill_m'(S/D) (revenue per extra unit)."""
    return _steady(spec, channel, spend_per_period, period_days, derivative=True)


# --- periods without pandas (serving) ---------------------------------------------------------------------

period_bounds = calendar.period_bounds
period_after = calendar.next_period


def _year_earlier(key: str) -> str:
    year, rest = key.split("-", 1)
    return f"{int(year) - 1:04d}-{rest}"


def default_controls(spec: dict[str, Any], key: str) -> tuple[np.ndarray, str]:
    """Controls for period `key`: their value in the same period a year earlier (going back further if needed).

    Falls back to the training mean when no such period was seen. Returns the values and where they came from.
    """
    by_period = spec["control_by_period"]
    earlier = _year_earlier(key)
    for _ in range(50):
        if earlier in by_period:
            return np.asarray(by_period[earlier], float), earlier
        if earlier < min(by_period, default=earlier):
            break
        earlier = _year_earlier(earlier)
    return np.asarray(spec["control_mean"], float), "training mean"


def predict_from_period_spend(spec: dict[str, Any], spend_per_period: dict[str, float] | np.ndarray,
                              period_key: str | None = None,
                              controls: dict[str, float] | None = None) -> dict[str, Any]:
    """Predict one period's revenue for spend per period held steady through it (steady-state adstock).

    `period_key` sets the season, trend and days (default: the period after the training window); controls
    default to their value in the same period a year earlier. Returns prediction, base, contributions per
    channel, media contribution and media ROI (contribution ÷ spend), the period and warnings (spend outside
    what the model saw in training).
    """
    check_spec(spec)
    channels = list(spec["channels"])
    grain = str(spec["grain"])
    if isinstance(spend_per_period, dict):
        spend = np.array([float(spend_per_period.get(c, 0.0)) for c in channels])
    else:
        spend = np.asarray(spend_per_period, float).reshape(len(channels))
    key = period_key or period_after(str(spec["window"][1]), grain)
    start, end = period_bounds(key, grain)
    ordinals = np.arange(start.toordinal(), end.toordinal() + 1)
    days = float(len(ordinals))
    contributions = spec_steady_state(spec, days).revenue(np.maximum(spend, 0.0))
    control_names = list(spec["controls"])
    control_values, control_source = default_controls(spec, key) if control_names else (np.zeros(0), "none")
    if controls:
        control_values = control_values.copy()
        for name, value in controls.items():
            if name not in control_names:
                raise ValueError(f"controls.{name}={value!r}: expected one of the model's controls {control_names}")
            control_values[control_names.index(name)] = float(value)
    design = base_design(ordinals, np.zeros(len(ordinals), dtype=np.int64), 1, int(spec["trend_origin"]),
                         int(spec["fourier_order"]), control_values[None, :] if control_names else None)
    base = float((design @ np.asarray(spec["base_coefficients"], float))[0])
    media = float(contributions.sum())
    total_spend = float(spend.sum())
    max_seen = np.asarray(spec["max_spend_seen"], float)
    warnings = [f"{c}: spend {s:,.2f} per period is above the most the model saw in one training period "
                f"({m:,.2f}); the response curve is extrapolated" for c, s, m in zip(channels, spend, max_seen, strict=True)
                if s > m]
    warnings += [f"{c}: spend {s:,.2f} is negative; expected >= 0" for c, s in zip(channels, spend, strict=True) if s < 0]
    return {
        "period": key, "days": days, "prediction": base + media, "base": base,
        "contributions": {c: float(v) for c, v in zip(channels, contributions, strict=True)},
        "media_contribution": media, "media_roi": media / total_spend if total_spend > 0 else None,
        "controls": {c: float(v) for c, v in zip(control_names, control_values, strict=True)},
        "controls_from": control_source, "warnings": warnings,
    }
