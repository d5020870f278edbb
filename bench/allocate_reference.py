"""An independent budget-allocation solver on scipy, and random curve sets, to check `training.core.allocate`.

Development only (scipy is not in the serving image). Shared by tests/training/core/test_allocate.py and
bench/bench_allocate.py. The reference never sees the engine's answer: it searches from its own starts.
  2 channels   brute force over 200,001 splits of the budget.
  3 channels   brute force over a 601 x 601 grid, the best 5 points polished with SLSQP.
  any          SLSQP from many starts (equal split, each channel's bounds corners, random splits),
               plus differential_evolution over a map from [0, 1]^C onto the feasible set, polished by SLSQP.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import differential_evolution, minimize

from training.core.allocate import ResponseCurve


@dataclass(frozen=True)
class CurveSet:
    """A random allocation problem: curves, budget, bounds and the current mix."""

    kind: str
    curves: dict[str, ResponseCurve]
    budget: float
    bounds: dict[str, list[float | None]]
    current: dict[str, float]


def hill_curve(beta: float, kappa: float, shape: float) -> ResponseCurve:
    """Hill saturation beta * s^shape / (s^shape + kappa^shape): S-shaped when shape > 1, concave when <= 1."""

    def revenue(spend: np.ndarray) -> np.ndarray:
        ratio = np.power(np.maximum(spend, 0.0) / kappa, shape)
        return beta * ratio / (1.0 + ratio)

    def derivative(spend: np.ndarray) -> np.ndarray:
        x = np.maximum(spend, 1e-300) / kappa
        ratio = np.power(x, shape)
        return beta * shape * ratio / (x * kappa * (1.0 + ratio) ** 2)

    return ResponseCurve(revenue=revenue, derivative=derivative)


def exponential_curve(beta: float, kappa: float) -> ResponseCurve:
    """Concave saturation beta * (1 - exp(-s / kappa))."""
    return ResponseCurve(
        revenue=lambda s: beta * -np.expm1(-np.maximum(s, 0.0) / kappa),
        derivative=lambda s: beta / kappa * np.exp(-np.maximum(s, 0.0) / kappa),
    )


def random_curve_set(rng: np.random.Generator, kind: str, channels: int, bounds: str) -> CurveSet:
    """A random problem: kind s_shaped|concave|mixed, bounds none|loose|tight (tight: +-20% of current)."""
    budget = float(rng.uniform(5e4, 5e5))
    names = [f"ch{i:02d}" for i in rng.permutation(channels)]
    curves: dict[str, ResponseCurve] = {}
    for name in names:
        beta = budget * rng.uniform(0.3, 2.0)
        kappa = budget / channels * rng.uniform(0.3, 2.5)
        shaped = kind == "s_shaped" or (kind == "mixed" and rng.random() < 0.5)
        if shaped:
            curves[name] = hill_curve(beta, kappa, rng.uniform(1.3, 4.0))
        elif rng.random() < 0.5:
            curves[name] = hill_curve(beta, kappa, rng.uniform(0.5, 1.0))
        else:
            curves[name] = exponential_curve(beta, kappa)
    weights = rng.dirichlet(np.ones(channels))
    current = {
        name: float(budget * w * rng.uniform(0.7, 1.3)) for name, w in zip(names, weights, strict=True)
    }
    total = sum(current.values())
    scaled = {name: value * budget / total for name, value in current.items()}
    chosen: dict[str, list[float | None]] = {}
    if bounds == "tight":
        chosen = {name: [0.8 * value, 1.2 * value] for name, value in scaled.items()}
    elif bounds == "loose":
        for name, value in scaled.items():
            if rng.random() < 0.6:
                chosen[name] = [float(value * rng.uniform(0.0, 0.5)), float(value * rng.uniform(1.5, 4.0))]
        lows = sum(pair[0] for pair in chosen.values())
        highs = sum(pair[1] for pair in chosen.values()) + budget * (channels - len(chosen))
        if lows > budget or highs < budget:
            chosen = {}
    return CurveSet(kind=kind, curves=curves, budget=budget, bounds=chosen, current=current)


def _limits(problem: CurveSet) -> tuple[list[str], np.ndarray, np.ndarray]:
    names = sorted(problem.curves)
    lower = np.array([float(problem.bounds.get(n, [0.0, None])[0] or 0.0) for n in names])
    upper = np.array(
        [
            problem.budget if problem.bounds.get(n, [0, None])[1] is None else float(problem.bounds[n][1])
            for n in names
        ]
    )
    return names, lower, np.minimum(upper, problem.budget)


def total_revenue(problem: CurveSet, spend: dict[str, float] | np.ndarray) -> float:
    """Sum of the curves at `spend` (a dict by channel, or an array in sorted channel order)."""
    names = sorted(problem.curves)
    values = [spend[n] for n in names] if isinstance(spend, dict) else list(spend)
    return float(
        sum(problem.curves[n].revenue(np.array([float(v)]))[0] for n, v in zip(names, values, strict=True))
    )


def _project(point: np.ndarray, lower: np.ndarray, upper: np.ndarray, budget: float) -> np.ndarray:
    """Nearest point of {sum == budget, lower <= s <= upper}: clip(point + mu) with mu by bisection."""
    lo_mu = (lower - point).min(axis=-1, keepdims=True)
    hi_mu = (upper - point).max(axis=-1, keepdims=True)
    for _ in range(100):
        mu = 0.5 * (lo_mu + hi_mu)
        short = np.clip(point + mu, lower, upper).sum(axis=-1, keepdims=True) < budget
        lo_mu = np.where(short, mu, lo_mu)
        hi_mu = np.where(short, hi_mu, mu)
    return np.clip(point + 0.5 * (lo_mu + hi_mu), lower, upper)


def reference_optimum(
    problem: CurveSet, rng: np.random.Generator, starts: int = 24
) -> tuple[float, np.ndarray]:
    """Best total revenue (and spend, sorted channel order) scipy finds with sum == budget within bounds."""
    names, lower, upper = _limits(problem)
    budget = problem.budget
    fns = [problem.curves[n].revenue for n in names]
    derivatives = [problem.curves[n].derivative for n in names]

    def negative(x: np.ndarray) -> float:
        return -float(sum(fn(x[i : i + 1])[0] for i, fn in enumerate(fns)))

    def gradient(x: np.ndarray) -> np.ndarray:
        return -np.array([float(d(x[i : i + 1])[0]) for i, d in enumerate(derivatives)])

    def polish(x0: np.ndarray) -> np.ndarray:
        result = minimize(
            negative,
            x0,
            jac=gradient,
            method="SLSQP",
            bounds=list(zip(lower, upper, strict=True)),
            constraints=[{"type": "eq", "fun": lambda x: x.sum() - budget, "jac": lambda x: np.ones_like(x)}],
            options={"maxiter": 500, "ftol": 1e-12},
        )
        return _project(result.x, lower, upper, budget)

    candidates: list[np.ndarray] = []
    count = len(names)
    if count == 2:
        first = np.linspace(lower[0], upper[0], 200_001)
        second = budget - first
        ok = (second >= lower[1]) & (second <= upper[1])
        value = fns[0](first) + fns[1](second)
        value[~ok] = -np.inf
        i = int(np.argmax(value))
        candidates.append(np.array([first[i], second[i]]))
    elif count == 3:
        a = np.linspace(lower[0], upper[0], 601)[:, None]
        b = np.linspace(lower[1], upper[1], 601)[None, :]
        c = budget - a - b
        ok = (c >= lower[2]) & (c <= upper[2])
        value = fns[0](a) + fns[1](b) + fns[2](np.clip(c, lower[2], upper[2]))
        value = np.where(ok, value, -np.inf)
        for flat in np.argsort(value, axis=None)[::-1][:5]:
            i, j = np.unravel_index(flat, value.shape)
            if np.isfinite(value[i, j]):
                candidates.append(polish(np.array([a[i, 0], b[0, j], c[i, j]])))
    starts_list = [_project(np.full(count, budget / count), lower, upper, budget)]
    for c in range(count):
        corner = lower.copy()
        corner[c] = upper[c]
        starts_list.append(_project(corner, lower, upper, budget))
    for _ in range(starts):
        starts_list.append(_project(rng.dirichlet(np.ones(count) * 0.7) * budget, lower, upper, budget))
    candidates.extend(polish(x0) for x0 in starts_list)

    span = upper.max()

    def mapped(u: np.ndarray) -> np.ndarray:  # u: (count, population)
        spend = _project(u.T * span, lower[None, :], upper[None, :], budget)
        return -sum(fn(spend[:, i]) for i, fn in enumerate(fns))

    evolved = differential_evolution(
        mapped,
        [(0.0, 1.0)] * count,
        seed=int(rng.integers(2**31)),
        maxiter=100,
        popsize=10,
        tol=1e-8,
        polish=False,
        vectorized=True,
        updating="deferred",
    )
    candidates.append(polish(_project(evolved.x * span, lower, upper, budget)))
    values = [-negative(x) for x in candidates]
    best = int(np.argmax(values))
    return float(values[best]), candidates[best]
