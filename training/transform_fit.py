"""The media transforms of the media-mix model as continuous parameters: their posterior mode (MAP).

Per channel three parameters: daily decay λ, half-saturation K and Hill shape s, in unconstrained form
θ = (logit(λ / DECAY_MAX), log(K / mean daily spend), log s), bounded by THETA_BOUNDS. Given θ the model is
linear: base coefficients free, media coefficients β ≥ 0. Variable projection: the objective is

    f(θ) = min_b,β≥0 ‖y − base·b − media(θ)·β‖² / σ²  +  Σ_c z_c(θ)²

(−2 · log posterior up to a constant, Gaussian noise of variance σ², independent normal priors z on the three
unconstrained parameters: PRIOR_MEAN, PRIOR_SD), minimised over θ by L-BFGS-B with its exact gradient. The
inner problem is a non-negative least-squares fit of the base-residualised revenue on the base-residualised
media features (scipy's NNLS); by the envelope theorem its gradient in θ is −2/σ² · β_c · rᵀ ∂media_c/∂θ_c
with r the residual, and the derivatives of the daily features come from the same transforms
(`training.core.response.adstock` and `hill`, shared with serving): ∂a/∂λ is itself a geometric filter of
a[t−1] − x[t], ∂h/∂log K = −s·h(1 − h), ∂h/∂log s = s·h(1 − h)·log(a/K).

The rows of y and base, and the sparse map from daily features to rows, are a `training.fit_rows.FitRows`:
the periods, or the days of daily revenue whitened for AR(1) noise.

Why: a grid of transforms approximates the truth coarsely, and the ROI is sensitive to the transform (on the
simulator, the grid point nearest the true transform gave a 18% spend-weighted ROI error where the true
transform gave 7%); the cross-validated grid choice is used as a starting point only (`training.mmm`).
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import minimize, nnls

from training.core import response
from training.fit_rows import FitRows

DECAY_MAX = 0.98  # daily decay stays below this (a half-life of 34 days)
# Weak priors on the unconstrained parameters (mean, standard deviation): decay centred on 0.49 (two
# standard deviations span 0.05 to 0.93); half-saturation on the channel's mean daily spend (two standard
# deviations: a quarter to 4 times it); Hill shape on 1.5 (two standard deviations: 0.7 to 3.3).
PRIOR_MEAN = np.array([0.0, 0.0, float(np.log(1.5))])
PRIOR_SD = np.array([1.5, float(np.log(2.0)), 0.4])
THETA_BOUNDS = ((-6.0, 6.0), (float(np.log(0.05)), float(np.log(20.0))), (float(np.log(0.5)), float(np.log(4.0))))


def projector(base: np.ndarray) -> np.ndarray:
    """Orthonormal basis of the base design's column space (rank-revealing, via SVD)."""
    u, s, _ = np.linalg.svd(base, full_matrices=False)
    return u[:, s > s[0] * 1e-10] if s.size and s[0] > 0 else u[:, :0]


def theta_of(decay: np.ndarray, half_multiple: np.ndarray, shape: np.ndarray) -> np.ndarray:
    """Return θ (C·3,) for transforms given as decay, half-saturation ÷ mean daily spend and shape per channel."""
    lam = np.clip(np.asarray(decay, float), 0.05, 0.95) / DECAY_MAX
    return np.column_stack([np.log(lam / (1.0 - lam)), np.log(np.asarray(half_multiple, float)),
                            np.log(np.asarray(shape, float))]).ravel()


class TransformProblem:
    """Media features of θ, and the MAP objective with its gradient on a set of rows (`training.fit_rows`: periods or days)."""

    def __init__(self, spend: np.ndarray, rows: FitRows, mean_daily: np.ndarray):
        self.spend, self.rows = spend, rows
        self.base, self.y = rows.base, rows.y
        self.mean_daily = np.asarray(mean_daily, float)
        self.n_channels = spend.shape[1]
        self.aggregate = rows.matrix  # daily values into rows (periods or whitened days) as one sparse product

    def transforms(self, theta: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Decay, half-saturation (spend per day) and shape per channel for θ."""
        u, kappa, sigma = np.asarray(theta, float).reshape(self.n_channels, 3).T
        return DECAY_MAX / (1.0 + np.exp(-u)), self.mean_daily * np.exp(kappa), np.exp(sigma)

    def features(self, theta: np.ndarray, gradient: bool = False) -> tuple[np.ndarray, np.ndarray | None]:
        """Media features (rows, C) and, if asked, their derivatives in θ (rows, C, 3)."""
        lam, half, shape = self.transforms(theta)
        a = response.adstock(self.spend, lam)
        h = response.hill(a, half, shape)
        media = np.asarray(self.aggregate @ h)
        if not gradient:
            return media, None
        w = shape * h * (1.0 - h)
        positive = a > 1e-9 * self.mean_daily  # days with any adstock left (below it: no response, no slope)
        safe = np.where(positive, a, 1.0)
        d_half = -w
        d_shape = np.where(positive, w * (np.log(safe) - np.log(half)), 0.0)
        d_a = np.where(positive, w / safe, 0.0)
        lagged = np.vstack([np.zeros((1, self.n_channels)), a[:-1]])
        d_lam = response.adstock(lagged - self.spend, lam) / (1.0 - lam)  # ∂a/∂λ
        d_u = d_a * d_lam * (lam * (1.0 - lam / DECAY_MAX))
        stacked = np.asarray(self.aggregate @ np.hstack([d_u, d_half, d_shape]))
        return media, stacked.reshape(len(media), 3, self.n_channels).transpose(0, 2, 1)

    def prior(self, theta: np.ndarray) -> tuple[float, np.ndarray]:
        """Σ z² of the priors and its gradient."""
        z = (np.asarray(theta, float).reshape(self.n_channels, 3) - PRIOR_MEAN) / PRIOR_SD
        return float((z * z).sum()), (2.0 * z / PRIOR_SD).ravel()

    def on_rows(self, rows: np.ndarray, sigma2: float) -> RowObjective:
        """The objective on the rows `rows` (repeats allowed: a bootstrap replicate)."""
        return RowObjective(self, rows, sigma2)

    def fit(self, starts: list[np.ndarray], rows: np.ndarray, sigma2: float,
            max_iterations: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Minimise the objective on `rows` from each start; return the best θ and its β."""
        objective = self.on_rows(rows, sigma2)
        options = {"maxiter": max_iterations} if max_iterations else {}
        best = None
        for start in starts:
            found = minimize(objective, start, jac=True, method="L-BFGS-B", bounds=THETA_BOUNDS * self.n_channels,
                             options=options)
            if best is None or found.fun < best.fun:
                best = found
        return best.x, objective.beta(best.x)


class RowObjective:
    """f(θ) and ∇f(θ) on a fixed set of rows; the base is projected out once."""

    def __init__(self, problem: TransformProblem, rows: np.ndarray, sigma2: float):
        self.problem, self.rows, self.sigma2 = problem, rows, sigma2
        self.q = projector(problem.base[rows])
        y = problem.y[rows]
        self.y_residual = y - self.q @ (self.q.T @ y)

    def _solve(self, media: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
        rows_media = media[self.rows]
        residual_media = rows_media - self.q @ (self.q.T @ rows_media)
        beta, norm = nnls(residual_media, self.y_residual)
        return beta, self.y_residual - residual_media @ beta, float(norm) ** 2

    def __call__(self, theta: np.ndarray) -> tuple[float, np.ndarray]:
        """Return f(θ) and its gradient."""
        media, derivatives = self.problem.features(theta, gradient=True)
        beta, residual, sse = self._solve(media)
        penalty, penalty_gradient = self.problem.prior(theta)
        gradient = -2.0 / self.sigma2 * beta[:, None] * np.einsum("p,pck->ck", residual, derivatives[self.rows])
        return sse / self.sigma2 + penalty, gradient.ravel() + penalty_gradient

    def beta(self, theta: np.ndarray) -> np.ndarray:
        """The media coefficients at θ."""
        return self._solve(self.problem.features(theta)[0])[0]

    def sse(self, theta: np.ndarray) -> float:
        """The residual sum of squares at θ."""
        return self._solve(self.problem.features(theta)[0])[2]

    def residual(self, theta: np.ndarray) -> np.ndarray:
        """The residuals at θ, on the objective's rows in order."""
        return self._solve(self.problem.features(theta)[0])[1]
