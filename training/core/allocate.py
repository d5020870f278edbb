"""Budget allocation across channels from per-channel response curves (numpy only: runs in the serving image).

The API (`POST /allocate`), the CLI (`python -m training allocate`) and the page all call `allocate`.

Scenarios, with r_c(s) the revenue per period of channel c at spend s per period and lo_c <= s_c <= hi_c:
  max_revenue   maximise sum r_c(s_c) subject to sum s_c == budget.
  target_mroi   maximise sum (r_c(s_c) - target * s_c) subject to sum s_c <= budget: spend on each channel
                until one more unit returns less than the target, the budget as a cap.

Method. Response curves are S-shaped (Hill with shape > 1) or concave, so the problem is not concave and an
equal-marginal-return or gradient method can stop on the wrong set of channels (or on the starting point,
or on an equal split where every gradient is flat). Instead:
  1. dynamic programming over a budget grid (`COARSE_STEPS` units of the budget above the minimums): the
     exact global optimum on the grid, whatever the curves' shape; a maximum is always on the grid.
  2. `REFINE_LEVELS` refinements: each re-runs the DP on a grid `REFINE_FACTOR` times finer, in a window of
     +-`REFINE_HALF_WIDTH` fine steps around the previous solution (which lies on the new grid, so a level
     never loses revenue). The solution converges to the continuous optimum of the basin the coarse DP chose.
  3. spend within rounding of a bound is put exactly on it, and the budget is matched exactly.
Channels are solved in sorted name order, so the answer does not depend on the order they are given in.
"""

from __future__ import annotations

import logging
import math
import numbers
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from numpy.lib.stride_tricks import as_strided

from training.core.errors import AllocationError

log = logging.getLogger(__name__)

SCENARIOS = ("max_revenue", "target_mroi")
LINEAR_ALGORITHMS = ("ols", "ridge")
COARSE_STEPS = 256
REFINE_FACTOR = 8
REFINE_HALF_WIDTH = 16
REFINE_LEVELS = 6
BOUND_TOLERANCE = 1e-9  # relative to the budget: spend this close to a bound is on it
EXTRAPOLATION_TOLERANCE = 1e-6  # relative: spend above max_spend_seen * (1 + this) is extrapolated

Curve = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class ResponseCurve:
    """Revenue per period as a function of spend per period for one channel, vectorised over an ndarray."""

    revenue: Curve
    derivative: Curve | None = None


@dataclass(frozen=True)
class ChannelAllocation:
    """One channel's recommended spend, what it returns, and which bound (if any) holds it."""

    spend: float
    revenue: float
    mroi: float | None  # None where the slope is not finite (a concave Hill curve at zero spend)
    bound: str  # "min", "max" or "none"
    lower: float
    upper: float | None
    current_spend: float | None
    max_spend_seen: float | None


@dataclass(frozen=True)
class Allocation:
    """The answer of `allocate`: recommended split, its revenue, the current mix and the lift over it."""

    scenario: str
    budget: float
    target_mroi: float | None
    allocation: dict[str, float]
    media_revenue: float
    unspent: float
    channels: dict[str, ChannelAllocation]
    current_allocation: dict[str, float] | None
    current_media_revenue: float | None
    lift_absolute: float | None
    lift_relative: float | None
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict (floats, str, None, lists, dicts)."""
        out = asdict(self)
        out["channels"] = {name: asdict(channel) for name, channel in self.channels.items()}
        return out


def allocate(
    curves: Mapping[str, ResponseCurve | Curve],
    budget: float,
    *,
    bounds: Mapping[str, Sequence[float | None]] | None = None,
    scenario: str = "max_revenue",
    target_mroi: float | None = None,
    current_spend: Mapping[str, float] | None = None,
    max_spend_seen: Mapping[str, float] | None = None,
    algorithm: str | None = None,
) -> Allocation:
    """Split `budget` (spend for one period) across the channels of `curves` as `scenario` asks."""
    if not curves:
        raise AllocationError("curves", {}, "at least one channel")
    names = sorted(curves)
    budget = _check_budget(budget)
    scenario, target = _check_scenario(scenario, target_mroi)
    lower, upper, upper_given = _check_bounds(bounds, names, budget, scenario)
    seen = _check_channel_values(max_spend_seen, names, "max_spend_seen")
    current = _check_channel_values(current_spend, names, "current_spend")
    revenue = [_as_curve(curves[name]).revenue for name in names]
    derivative = [_as_curve(curves[name]).derivative for name in names]

    if scenario == "max_revenue":
        value_functions = [_finite_curve(name, fn) for name, fn in zip(names, revenue, strict=True)]
        spend = _solve(value_functions, lower, upper, budget)
    else:
        value_functions = [
            _net_of_target(_finite_curve(name, fn), target) for name, fn in zip(names, revenue, strict=True)
        ]
        value_functions.append(_zero)  # the unspent budget: a channel that returns nothing
        lower_slack = np.append(lower, 0.0)
        upper_slack = np.append(upper, np.inf)
        spend = _solve(value_functions, lower_slack, upper_slack, budget)[:-1]

    revenue_at = np.array([float(fn(np.array([s]))[0]) for fn, s in zip(revenue, spend, strict=True)])
    mroi = np.array(
        [
            _marginal(fn, dfn, s, lo, budget)
            for fn, dfn, s, lo in zip(revenue, derivative, spend, lower, strict=True)
        ]
    )
    warnings: list[str] = []

    spent = float(spend.sum())
    current_alloc, current_rev, lift_abs, lift_rel = None, None, None, None
    if current is not None:
        current_total = float(sum(current.values()))
        if current_total > 0:
            # Same total as the recommendation: the budget (max_revenue) or what target_mroi chose to spend.
            scale = spent / current_total
            current_alloc = {name: current[name] * scale for name in names}
            current_rev = float(
                sum(
                    float(fn(np.array([current_alloc[name]]))[0])
                    for name, fn in zip(names, revenue, strict=True)
                )
            )
            lift_abs = float(revenue_at.sum()) - current_rev
            lift_rel = lift_abs / current_rev if current_rev > 0 else None
        else:
            warnings.append("the current mix has no spend: no comparison with it")

    channels: dict[str, ChannelAllocation] = {}
    tolerance = BOUND_TOLERANCE * budget * 10
    for i, name in enumerate(names):
        s = float(spend[i])
        if s <= lower[i] + tolerance:
            bound = "min"
        elif s >= upper_given[i] - tolerance:
            bound = "max"
        else:
            bound = "none"
        max_seen = None if seen is None else float(seen[name])
        if max_seen is not None and s > max_seen * (1 + EXTRAPOLATION_TOLERANCE):
            if max_seen <= 0:
                beyond = "above"
            elif s < 2 * max_seen:
                beyond = f"{s / max_seen - 1:.1%} above"  # "1x" would hide a 0.5% excess
            else:
                beyond = f"{s / max_seen:.1f}x"
            warnings.append(
                f"{name}: recommended spend {s:,.0f} per period is {beyond} the largest spend in training "
                f"({max_seen:,.0f}); its response curve is extrapolated there"
            )
        channels[name] = ChannelAllocation(
            spend=s,
            revenue=float(revenue_at[i]),
            mroi=float(mroi[i]) if math.isfinite(mroi[i]) else None,
            bound=bound,
            lower=float(lower[i]),
            upper=None if math.isinf(upper_given[i]) else float(upper_given[i]),
            current_spend=None if current_alloc is None else float(current_alloc[name]),
            max_spend_seen=max_seen,
        )
    if algorithm in LINEAR_ALGORITHMS:
        warnings.append(
            f"the model is linear ({algorithm}): every unit of spend returns the same on a channel, so the optimum "
            "is a corner (all it can go to the channels with the highest coefficients, up to their bounds); "
            "use the mmm model for diminishing returns"
        )
    return Allocation(
        scenario=scenario,
        budget=budget,
        target_mroi=target,
        allocation={name: float(spend[i]) for i, name in enumerate(names)},
        media_revenue=float(revenue_at.sum()),
        unspent=max(0.0, budget - spent),
        channels=channels,
        current_allocation=current_alloc,
        current_media_revenue=current_rev,
        lift_absolute=lift_abs,
        lift_relative=lift_rel,
        warnings=warnings,
    )


# --- validation ----------------------------------------------------------------------------------------


def _is_number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _check_budget(budget: Any) -> float:
    if not _is_number(budget) or not math.isfinite(float(budget)) or float(budget) <= 0:
        raise AllocationError("budget", budget, "a positive finite number (spend for one period)")
    return float(budget)


def _check_scenario(scenario: Any, target_mroi: Any) -> tuple[str, float | None]:
    if scenario not in SCENARIOS:
        raise AllocationError("scenario", scenario, f"one of {', '.join(SCENARIOS)}")
    if scenario == "max_revenue":
        if target_mroi is not None:
            raise AllocationError("target_mroi", target_mroi, "no target_mroi unless scenario is target_mroi")
        return scenario, None
    if not _is_number(target_mroi) or not math.isfinite(float(target_mroi)) or float(target_mroi) <= 0:
        raise AllocationError(
            "target_mroi", target_mroi, "a positive finite number with scenario target_mroi"
        )
    return scenario, float(target_mroi)


def _check_bounds(
    bounds: Mapping[str, Sequence[float | None]] | None, names: list[str], budget: float, scenario: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Lower and upper spend per channel for the solver, and the upper bounds as given (inf where none)."""
    lower = np.zeros(len(names))
    upper = np.full(len(names), np.inf)
    if bounds is None:
        bounds = {}
    if not isinstance(bounds, Mapping):
        raise AllocationError("bounds", bounds, "a mapping of channel to [min, max]")
    for name, pair in bounds.items():
        if name not in names:
            raise AllocationError(f"bounds.{name}", name, f"a channel of the model: {', '.join(names)}")
        if isinstance(pair, str | bytes) or not isinstance(pair, Sequence) or len(pair) != 2:
            raise AllocationError(f"bounds.{name}", pair, "[min, max] (either may be null)")
        lo, hi = pair
        if lo is not None and (not _is_number(lo) or not math.isfinite(float(lo)) or float(lo) < 0):
            raise AllocationError(f"bounds.{name}.min", lo, "a finite number >= 0, or null")
        if hi is not None and (not _is_number(hi) or math.isnan(float(hi)) or float(hi) < 0):
            raise AllocationError(f"bounds.{name}.max", hi, "a number >= 0, or null")
        lo_f = 0.0 if lo is None else float(lo)
        hi_f = math.inf if hi is None else float(hi)
        if lo_f > hi_f:
            raise AllocationError(f"bounds.{name}", [lo, hi], "min <= max")
        i = names.index(name)
        lower[i], upper[i] = lo_f, hi_f
    minimums = float(lower.sum())
    if minimums > budget:
        raise AllocationError(
            "bounds",
            {"sum_of_minimums": minimums, "budget": budget},
            f"the sum of minimums ({minimums:,.2f}) at most the budget ({budget:,.2f})",
        )
    maximums = float(upper.sum())
    if scenario == "max_revenue" and maximums < budget:
        raise AllocationError(
            "bounds",
            {"sum_of_maximums": maximums, "budget": budget},
            f"the sum of maximums ({maximums:,.2f}) at least the budget ({budget:,.2f}) with scenario max_revenue",
        )
    # No channel can take more than what the other channels' minimums leave.
    effective = np.minimum(upper, budget - (minimums - lower))
    return lower, np.maximum(effective, lower), upper


def _check_channel_values(
    values: Mapping[str, float] | None, names: list[str], field_name: str
) -> dict[str, float] | None:
    if values is None:
        return None
    out = {name: 0.0 for name in names}
    for name, value in values.items():
        if name not in names:
            raise AllocationError(f"{field_name}.{name}", name, f"a channel of the model: {', '.join(names)}")
        if not _is_number(value) or not math.isfinite(float(value)) or float(value) < 0:
            raise AllocationError(f"{field_name}.{name}", value, "a finite number >= 0")
        out[name] = float(value)
    return out


def _as_curve(curve: ResponseCurve | Curve) -> ResponseCurve:
    return curve if isinstance(curve, ResponseCurve) else ResponseCurve(revenue=curve)


def _finite_curve(name: str, fn: Curve) -> Curve:
    def evaluate(spend: np.ndarray) -> np.ndarray:
        values = np.asarray(fn(spend), dtype=float)
        if values.shape != spend.shape or not np.isfinite(values).all():
            bad = spend[~np.isfinite(values)] if values.shape == spend.shape else spend
            raise AllocationError(
                f"curves.{name}", float(bad[0]), "finite revenue for every spend within the bounds"
            )
        return values

    return evaluate


def _net_of_target(fn: Curve, target: float) -> Curve:
    return lambda spend: fn(spend) - target * spend


def _zero(spend: np.ndarray) -> np.ndarray:
    return np.zeros_like(spend)


def _marginal(fn: Curve, derivative: Curve | None, spend: float, lower: float, budget: float) -> float:
    """Revenue of one more unit of spend at `spend` (the derivative, or a central difference)."""
    if derivative is not None:
        return float(np.asarray(derivative(np.array([spend])), dtype=float)[0])
    step = max(spend, budget * 1e-3) * 1e-6
    left = max(spend - step, min(lower, spend), 0.0)
    right = spend + step
    values = np.asarray(fn(np.array([left, right])), dtype=float)
    return float((values[1] - values[0]) / (right - left))


# --- solver --------------------------------------------------------------------------------------------


def _solve(value_functions: list[Curve], lower: np.ndarray, upper: np.ndarray, budget: float) -> np.ndarray:
    """Spend per channel maximising sum value_c(spend_c), sum == budget, lower <= spend <= upper."""
    free = budget - float(lower.sum())
    if free <= BOUND_TOLERANCE * budget:
        return lower.copy()
    step = free / COARSE_STEPS
    counts = np.where(np.isinf(upper), COARSE_STEPS, np.ceil((upper - lower) / step - 1e-9))
    counts = np.minimum(counts, COARSE_STEPS).astype(int)
    grids = [
        np.minimum(lo + step * np.arange(n + 1), hi) for lo, hi, n in zip(lower, upper, counts, strict=True)
    ]
    values = [fn(grid) for fn, grid in zip(value_functions, grids, strict=True)]
    units = _max_plus_assign(values, COARSE_STEPS)
    spend = np.array([grid[k] for grid, k in zip(grids, units, strict=True)])
    spend = _match_budget(spend, value_functions, lower, upper, budget)

    for _ in range(REFINE_LEVELS):
        step /= REFINE_FACTOR
        below = np.minimum(REFINE_HALF_WIDTH, np.floor((spend - lower) / step + 1e-9)).astype(int)
        below = np.maximum(below, 0)
        above = np.minimum(REFINE_HALF_WIDTH, np.ceil((upper - spend) / step - 1e-9)).astype(int)
        above = np.maximum(above, 0)
        total = int(below.sum())
        if total == 0:
            break
        starts = spend - below * step
        grids = [
            np.clip(start + step * np.arange(n + 1), lo, hi)
            for start, n, lo, hi in zip(starts, below + above, lower, upper, strict=True)
        ]
        values = [fn(grid) for fn, grid in zip(value_functions, grids, strict=True)]
        units = _max_plus_assign(values, total)
        spend = np.array([grid[k] for grid, k in zip(grids, units, strict=True)])
        spend = _match_budget(spend, value_functions, lower, upper, budget)

    return _snap_to_bounds(spend, lower, upper, budget)


def _max_plus_assign(values: list[np.ndarray], total: int) -> list[int]:
    """Units k_c per channel, sum k_c == total, maximising sum values[c][k_c] (values[c][k]: k units in c)."""
    best = np.asarray(
        values[0][: total + 1], dtype=float
    )  # best[t]: best value of t units in channels so far
    choices: list[np.ndarray] = []
    last = len(values) - 1
    for c in range(1, len(values)):
        v = values[c][: total + 1]
        n = v.size - 1
        reach = min(total + 1, best.size + n)  # sums of units the channels so far can make
        padded = np.full(n + reach, -np.inf)
        padded[n : n + best.size] = best
        # Row t of the view holds best[t - n .. t] without copying; reversed, column k is best[t - k].
        windows = as_strided(padded, shape=(reach, n + 1), strides=(padded.strides[0], padded.strides[0]))
        if c == last:
            windows = windows[total : total + 1]
        scores = windows[:, ::-1] + v  # scores[t, k] = best[t - k] + v[k]
        picked = np.argmax(scores, axis=1)
        best = scores[np.arange(scores.shape[0]), picked]
        choices.append(picked)
    if best.size <= (0 if last else total) or not np.isfinite(best[-1 if last else total]):
        raise AssertionError("allocation grid cannot reach the budget")  # bounds were checked: cannot happen
    units = [0] * len(values)
    remaining = total
    for c in range(last, 0, -1):
        k = int(choices[c - 1][0 if c == last else remaining])
        units[c] = k
        remaining -= k
    units[0] = remaining
    return units


def _match_budget(
    spend: np.ndarray, value_functions: list[Curve], lower: np.ndarray, upper: np.ndarray, budget: float
) -> np.ndarray:
    """Give the spend a bound clipped off back to the channels where it earns most, so the total is the budget."""
    spend = spend.copy()
    missing = budget - float(spend.sum())
    for _ in range(len(spend)):
        if missing <= 0:
            break
        room = upper - spend
        candidates = np.flatnonzero(room > 0)
        if candidates.size == 0:
            break
        gains = [
            float(
                value_functions[c](np.array([spend[c], spend[c] + min(room[c], missing)]))
                @ np.array([-1.0, 1.0])
            )
            for c in candidates
        ]
        c = int(candidates[int(np.argmax(gains))])
        added = min(float(room[c]), missing)
        spend[c] += added
        missing -= added
    if missing < 0:  # float rounding only
        c = int(np.argmax(spend - lower))
        spend[c] = max(lower[c], spend[c] + missing)
    return spend


def _snap_to_bounds(spend: np.ndarray, lower: np.ndarray, upper: np.ndarray, budget: float) -> np.ndarray:
    """Put spend within rounding of a bound on it, then make the total the budget to float rounding."""
    tolerance = BOUND_TOLERANCE * budget
    spend = np.clip(spend, lower, upper)
    spend = np.where(spend - lower <= tolerance, lower, spend)
    spend = np.where(upper - spend <= tolerance, upper, spend)
    residual = budget - float(spend.sum())
    if residual != 0:
        pool = np.flatnonzero((spend > lower) & (spend < upper))  # a channel no bound holds, if any
        if pool.size == 0:
            room = upper - spend if residual > 0 else spend - lower
            pool = np.flatnonzero(room >= abs(residual))
        if pool.size:
            c = int(pool[np.argmax(spend[pool])])
            spend[c] = min(max(spend[c] + residual, lower[c]), upper[c])
    return spend
