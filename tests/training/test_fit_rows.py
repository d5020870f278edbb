"""The rows of a fit: period sums, and days whitened for AR(1) noise."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.signal import lfilter

from training.fit_rows import RHO_MAX, ar1_whitening, day_rows, lag_one_correlation, period_rows


def test_period_rows_sum_each_periods_days_and_skip_the_warm_up():
    day_period = np.array([-1, -1, 0, 0, 0, 1, 1])
    daily = np.arange(7.0)[:, None] * np.array([[1.0, 10.0]])

    rows = period_rows(day_period, 2, np.ones((2, 1)), np.array([5.0, 6.0]))

    assert rows.kind == "period" and rows.n_rows == 2 and rows.rho == 0.0
    assert (rows.matrix @ daily).tolist() == [[9.0, 90.0], [11.0, 110.0]]


def test_whitening_turns_ar1_noise_into_white_noise_of_the_innovations_scale():
    rng = np.random.default_rng(0)
    innovations = rng.normal(size=20_000)
    noise = lfilter([1.0], [1.0, -0.6], innovations)

    white = ar1_whitening(len(noise), 0.6) @ noise

    assert lag_one_correlation(noise) == pytest.approx(0.6, abs=0.02)
    assert abs(lag_one_correlation(white)) < 0.02
    assert white[1:] == pytest.approx(innovations[1:])  # y_t − ρ·y_{t−1}
    assert white[0] == pytest.approx(np.sqrt(1 - 0.36) * noise[0])  # Prais–Winsten's first row


def test_day_rows_whiten_features_base_and_revenue_alike():
    window = np.array([False, False, True, True, True, True])
    base = np.column_stack([np.ones(4), np.arange(4.0)])
    y = np.array([10.0, 12.0, 11.0, 15.0])
    daily = np.arange(6.0)[:, None]

    rows = day_rows(window, base, y, rho=0.5)
    whiten = ar1_whitening(4, 0.5)

    assert rows.kind == "day" and rows.rho == 0.5 and rows.n_rows == 4
    assert rows.y == pytest.approx(whiten @ y)
    assert rows.base == pytest.approx(whiten @ base)
    assert (rows.matrix @ daily)[:, 0] == pytest.approx(whiten @ daily[2:, 0])
    assert day_rows(window, base, y).matrix.toarray()[:, 2:] == pytest.approx(np.eye(4))  # ρ = 0: the days


def test_day_rows_refuse_gaps_and_mismatched_lengths_and_clip_rho():
    base, y = np.ones((3, 1)), np.ones(3)
    with pytest.raises(ValueError, match="consecutive"):
        day_rows(np.array([True, False, True, True]), base, y)
    with pytest.raises(ValueError, match="one of each per day"):
        day_rows(np.array([True, True]), base, y)
    assert day_rows(np.ones(3, bool), base, y, rho=0.99).rho == RHO_MAX


def test_lag_one_correlation_of_degenerate_residuals_is_zero():
    assert lag_one_correlation(np.zeros(10)) == 0.0
    assert lag_one_correlation(np.array([1.0, 2.0])) == 0.0
    assert lag_one_correlation(np.tile([1.0, -1.0], 50)) == -RHO_MAX
