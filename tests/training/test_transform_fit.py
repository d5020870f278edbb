"""The transforms' posterior mode: exact gradient, recovery of known transforms, the priors' pull, bounds."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.optimize import approx_fprime

from training import mmm, transform_fit
from training.core import response
from training.fit_rows import day_rows, period_rows
from training.sample import mmm_period_data, simulate_mmm
from training.transform_fit import PRIOR_MEAN, THETA_BOUNDS, TransformProblem, theta_of


def problem_for(seed: int, channels: list[str], years: int = 4, grain: str = "week",
                noise_share: float = 0.06) -> tuple[TransformProblem, mmm._Design, object]:
    """The fit's problem on simulated data, and the design and simulation behind it."""
    sim = simulate_mmm(seed, years, channels, noise_share=noise_share)
    data, _ = mmm_period_data(sim, grain, "daily" if grain == "week" else "monthly")
    d = mmm._design(data, 2)
    mean_daily = d.spend[d.window].mean(axis=0)
    return TransformProblem(d.spend, period_rows(d.day_period, d.n_periods, d.base, d.y), mean_daily), d, sim


@pytest.fixture(scope="module")
def weekly_problem():
    return problem_for(3, ["tv", "search", "social", "display"])


@pytest.mark.parametrize("theta", [
    theta_of([0.3, 0.6, 0.8, 0.1], [0.7, 1.2, 2.0, 0.5], [1.0, 1.5, 2.2, 0.8]),
    theta_of([0.9, 0.05, 0.5, 0.5], [3.0, 0.3, 1.0, 8.0], [0.6, 3.0, 1.0, 1.3]),
])
def test_the_gradient_is_the_objectives_derivative(weekly_problem, theta):
    problem, d, _ = weekly_problem
    rows = np.random.default_rng(0).integers(0, d.n_periods, d.n_periods)  # a replicate: repeats included
    objective = problem.on_rows(rows, 1e8)

    value, gradient = objective(theta)
    numeric = approx_fprime(theta, lambda t: objective(t)[0], 1e-6)

    assert np.isfinite(value)
    assert gradient == pytest.approx(numeric, rel=1e-4, abs=1e-3 * np.abs(numeric).max())


def test_the_gradient_on_whitened_days_is_the_objectives_derivative():
    sim = simulate_mmm(3, 2, ["tv", "search"])
    data, _ = mmm_period_data(sim, "week", "daily")
    d = mmm._design(data, 2)
    n = int(d.window.sum())
    day_index = np.where(d.window, np.cumsum(d.window) - 1, -1)
    base = response.base_design(d.day_ordinals, day_index, n, d.trend_origin, 2, data.daily_controls.to_numpy())
    problem = TransformProblem(d.spend, day_rows(d.window, base, data.daily_revenue, 0.5),
                               d.spend[d.window].mean(axis=0))
    theta = theta_of([0.7, 0.2], [1.5, 0.6], [1.2, 2.0])
    objective = problem.on_rows(np.random.default_rng(1).integers(0, n, n), 1e8)

    value, gradient = objective(theta)
    numeric = approx_fprime(theta, lambda t: objective(t)[0], 1e-6)

    assert np.isfinite(value)
    assert gradient == pytest.approx(numeric, rel=1e-4, abs=1e-3 * np.abs(numeric).max())


@pytest.mark.parametrize("seed", [0, 4])
def test_recovers_known_transforms_from_the_prior_mean_when_noise_is_low(seed):
    problem, d, sim = problem_for(seed, ["tv", "search", "social"], noise_share=0.01)
    start = np.tile(PRIOR_MEAN, 3)

    theta, beta = problem.fit([start], np.arange(d.n_periods), mmm._noise_variance(problem, start))
    decay, half, shape = problem.transforms(theta)

    assert decay == pytest.approx(sim.decay, abs=0.06)
    assert half == pytest.approx(sim.half_saturation, rel=0.1)
    assert shape == pytest.approx(sim.shape, abs=0.15)
    assert (beta > 0).all()


def test_the_priors_pull_a_short_series_towards_their_mean(monkeypatch):
    problem, d, _ = problem_for(6, ["tv", "search", "social"], years=2, grain="month")
    start = theta_of([0.9, 0.9, 0.9], [4.0, 4.0, 4.0], [2.5, 2.5, 2.5])
    rows, sigma2 = np.arange(d.n_periods), mmm._noise_variance(problem, start)

    with_prior = problem.fit([start], rows, sigma2)[0]
    monkeypatch.setattr(transform_fit, "PRIOR_SD", transform_fit.PRIOR_SD * 1e6)  # flat: least squares alone
    flat = problem.fit([start], rows, sigma2)[0]

    def distance(theta: np.ndarray) -> float:
        return float(np.abs((theta.reshape(-1, 3) - PRIOR_MEAN) / transform_fit.PRIOR_SD).sum())

    assert distance(with_prior) < distance(flat)


def test_the_fit_stays_within_its_bounds_and_takes_the_better_start(weekly_problem):
    problem, d, _ = weekly_problem
    rows = np.arange(d.n_periods)
    far = np.tile([bound[1] for bound in THETA_BOUNDS], 4)  # every parameter at its upper bound
    neutral = np.tile(PRIOR_MEAN, 4)
    sigma2 = mmm._noise_variance(problem, neutral)
    objective = problem.on_rows(rows, sigma2)

    from_far = problem.fit([far], rows, sigma2, max_iterations=2)[0]
    both = problem.fit([far, neutral], rows, sigma2)[0]

    lower, upper = np.array(THETA_BOUNDS).T
    for theta in (from_far, both):
        assert (np.tile(lower, 4) <= theta).all() and (theta <= np.tile(upper, 4)).all()
    assert objective(both)[0] <= objective(from_far)[0]
    decay, _, _ = problem.transforms(both)
    assert (decay < transform_fit.DECAY_MAX).all()
