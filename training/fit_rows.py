"""The rows a media-mix model is fitted on: its periods, or the days of daily revenue with AR(1) noise whitened.

Every row is a linear map of the daily media features (hill(adstock(spend)) per day and channel), so one
sparse matrix (rows × days of daily spend) turns the daily features, and their derivatives, into rows:

- periods: the sum over each period's days; the base design and revenue per period (`training.mmm`);
- days (daily revenue): each day of the periods, after a Prais–Winsten transform for first-order
  autocorrelated noise, the same transform applied to revenue and to the daily base design. The model is
  the same (its base coefficients are per day, the period design sums them), it just sees the within-period
  variation of spend and revenue, which carries most of what there is to know about carryover.

Daily noise is rarely independent (revenue booked late, weather, paydays); fitted as if it were, a day fit
would weigh the data too heavily against the priors and draw too narrow intervals. The correlation ρ is that
of consecutive residuals of an unwhitened fit at the starting transforms, clipped to ±RHO_MAX.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import sparse

RHO_MAX = 0.9


@dataclass
class FitRows:
    """How daily media features become the rows of a fit, and the base design and revenue on those rows."""

    kind: str  # "period" or "day"
    matrix: sparse.csr_matrix  # (rows, days of daily spend)
    base: np.ndarray  # (rows, base terms)
    y: np.ndarray  # (rows,)
    rho: float = 0.0  # AR(1) correlation whitened out of the rows (0: none)

    @property
    def n_rows(self) -> int:
        return len(self.y)


def period_rows(day_period: np.ndarray, n_periods: int, base: np.ndarray, y: np.ndarray) -> FitRows:
    """Rows = periods: each period's row sums its days (`day_period` −1: a day outside every period)."""
    used = day_period >= 0
    matrix = sparse.csr_matrix((np.ones(int(used.sum())), (day_period[used], np.flatnonzero(used))),
                               shape=(n_periods, len(day_period)))
    return FitRows("period", matrix, base, y)


def ar1_whitening(n: int, rho: float) -> sparse.csr_matrix:
    """The Prais–Winsten transform for AR(1) noise of correlation `rho` on n consecutive rows."""
    diagonal = np.ones(n)
    diagonal[0] = np.sqrt(1.0 - rho * rho)
    return sparse.diags([diagonal, np.full(n - 1, -rho)], [0, -1], shape=(n, n), format="csr")


def day_rows(window: np.ndarray, base: np.ndarray, y: np.ndarray, rho: float = 0.0) -> FitRows:
    """Rows = the days where `window` is True (consecutive), whitened for AR(1) noise of correlation `rho`."""
    days = np.flatnonzero(window)
    if len(days) != len(y) or len(base) != len(y):
        raise ValueError(f"day rows: {len(days)} days in the window, {len(y)} revenue values and {len(base)} "
                         "base rows; expected one of each per day")
    if len(days) and days[-1] - days[0] + 1 != len(days):
        raise ValueError("day rows: the window's days must be consecutive")
    rho = float(np.clip(rho, -RHO_MAX, RHO_MAX))
    whiten = ar1_whitening(len(days), rho)
    select = sparse.csr_matrix((np.ones(len(days)), (np.arange(len(days)), days)), shape=(len(days), len(window)))
    return FitRows("day", (whiten @ select).tocsr(), np.asarray(whiten @ base), np.asarray(whiten @ y), rho)


def lag_one_correlation(residual: np.ndarray) -> float:
    """Correlation of consecutive residuals, clipped to ±RHO_MAX (0 for fewer than 3 or all-zero residuals)."""
    r = np.asarray(residual, float)
    denominator = float(r @ r)
    if len(r) < 3 or denominator == 0.0:
        return 0.0
    return float(np.clip(r[1:] @ r[:-1] / denominator, -RHO_MAX, RHO_MAX))
