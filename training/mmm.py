"""Fit the media-mix model: revenue per period = base + Σ_c β_c · Σ_days hill_c(adstock_c(daily spend_c)).

The model is linear in β and in the base's coefficients; the math lives in `training.core.response` (shared
with serving). Fitting:

- Given the transforms, the base (level and trend scaled by days, yearly Fourier seasonality, controls) is
  free and unpenalised and the media coefficients are non-negative. By Frisch–Waugh the media coefficients
  are those of a non-negative least-squares fit of the base-residualised revenue on the base-residualised
  media features: scikit-learn `LinearRegression(positive=True)` for the final fit (scipy's NNLS, exact and
  deterministic); the base coefficients then come from ordinary least squares on what the media leave.
- The transforms (daily decay, half-saturation, Hill shape per channel) are continuous parameters: their
  posterior mode under weak priors (`training.transform_fit`: variable projection, L-BFGS-B with the exact
  gradient), started from the better of two points: the neutral prior mean, and the grid point chosen by
  rolling-origin cross-validation (`TimeSeriesSplit`, expanding window; coordinate descent over per-channel
  grids of transforms and ridge penalties, ties keep the first grid point). Deterministic: the same data and
  settings give the same model, byte for byte.
- The rows fitted (`training.fit_rows`, `model.mmm_fit_rows`): with daily revenue and daily controls, the
  days of the periods, whitened for AR(1) noise (the base coefficients are per day; the period design sums
  them, so the model served is the same); otherwise the periods.
- 90% intervals for ROI and mROI: a moving-block bootstrap over the rows (blocks of consecutive rows drawn
  with replacement, seeded) refits the whole model on each replicate, transforms included (warm-started at
  the full-data mode, at most BOOTSTRAP_ITERATIONS L-BFGS-B iterations), so the interval carries the
  uncertainty of the transforms as well as of the coefficients. The published model is the full-data fit,
  with or without intervals (one Hill curve per channel).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from datetime import date
from typing import Any

import numpy as np
from scipy.optimize import nnls
from sklearn.linear_model import LinearRegression
from sklearn.model_selection import TimeSeriesSplit
from threadpoolctl import threadpool_limits

from training.config import ModelConfig, check_mmm_config
from training.core import response
from training.core.errors import ConfigError
from training.fit_rows import FitRows, day_rows, lag_one_correlation, period_rows
from training.periods import PeriodData, period_keys
from training.transform_fit import PRIOR_MEAN, PRIOR_SD, TransformProblem, projector, theta_of

log = logging.getLogger(__name__)

INTERVAL_LEVEL = 0.9
EPOCH_ORDINAL = date(1970, 1, 1).toordinal()
CURVE_POINTS = 41
BOOTSTRAP_ITERATIONS = 15  # L-BFGS-B iterations per bootstrap replicate, from the full-data transforms


@dataclass
class FittedMMM:
    """A fitted media-mix model: its plain spec and the manifest blocks (names per CONTRACTS.md)."""

    spec: dict[str, Any]
    roi: dict[str, Any]
    response_curves: dict[str, Any]
    decomposition: dict[str, Any]
    hyperparameters: dict[str, Any]
    n_parameters: int  # linear coefficients (base terms + one per channel)
    n_transform_parameters: int  # fitted transform parameters: decay, half-saturation, shape per channel
    fit_seconds: float = 0.0
    interval_seconds: float = 0.0
    bootstrap: dict[str, np.ndarray] = field(default_factory=dict, repr=False)  # replicate ROI/mROI (R, C)


@dataclass
class _Design:
    """The data of one fit in arrays: calendar, daily spend, base design, revenue."""

    channels: list[str]
    periods: list[str]
    day_ordinals: np.ndarray
    day_period: np.ndarray
    spend: np.ndarray  # (days, C)
    window: np.ndarray  # (days,) bool: the day lies in a training period
    base: np.ndarray  # (P, terms)
    y: np.ndarray
    controls: np.ndarray  # (P, k)
    trend_origin: int

    @property
    def n_periods(self) -> int:
        return len(self.periods)


def day_calendar(data: PeriodData) -> tuple[np.ndarray, np.ndarray]:
    """Return the day ordinals (`date.toordinal`) and each day's period index (−1 outside the periods)."""
    days = data.daily_spend.index.to_numpy().astype("datetime64[D]").astype(np.int64) + EPOCH_ORDINAL
    position = {p: i for i, p in enumerate(data.periods)}
    day_period = np.array([position.get(k, -1) for k in period_keys(data.daily_spend.index, data.grain)],
                          dtype=np.int64)
    return days, day_period


def _design(data: PeriodData, fourier_order: int, trend_origin: int | None = None) -> _Design:
    ordinals, day_period = day_calendar(data)
    spend = data.daily_spend.to_numpy(dtype=float)
    if not np.isfinite(spend).all() or (spend < 0).any():
        raise ValueError("daily_spend: expected finite amounts >= 0")
    y = np.asarray(data.revenue, dtype=float)
    if not np.isfinite(y).all():
        raise ValueError("revenue: contains missing or infinite values; expected finite amounts")
    controls = data.controls.to_numpy(dtype=float) if len(data.controls.columns) else np.zeros((len(y), 0))
    if not np.isfinite(controls).all():
        raise ValueError(f"controls: columns {list(data.controls.columns)} must hold finite numbers")
    window = day_period >= 0
    origin = int(ordinals[window][0]) if trend_origin is None else trend_origin
    base = response.base_design(ordinals, day_period, len(y), origin, fourier_order, controls)
    return _Design(data.channels, list(data.periods), ordinals, day_period, spend, window, base, y, controls, origin)


def fit_coefficients(base: np.ndarray, media: np.ndarray, y: np.ndarray, alphas: np.ndarray,
                     q: np.ndarray | None = None, final: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Return (base coefficients, media coefficients ≥ 0) minimising ‖y − base·b − media·β‖² + Σ αc·n·sc²·βc².

    sc is the spread of channel c's base-residualised feature, so α is unit-free. The final fit goes through
    scikit-learn's estimators; the thousands of fits of the search and the bootstrap call the same solvers
    directly (scipy's NNLS, LAPACK least squares), skipping the estimators' per-call input checks, which
    cost 50 times the solve on problems this small.
    """
    q = projector(base) if q is None else q
    x, target = _penalised_system(media - q @ (q.T @ media), y - q @ (q.T @ y), alphas)
    if final:
        beta = np.maximum(LinearRegression(positive=True, fit_intercept=False).fit(x, target).coef_, 0.0)
        return LinearRegression(fit_intercept=False).fit(base, y - media @ beta).coef_, beta
    beta = nnls(x, target)[0]
    return np.linalg.lstsq(base, y - media @ beta, rcond=None)[0], beta


def _penalised_system(residual_media: np.ndarray, residual_y: np.ndarray,
                      alphas: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Stack one ridge row per channel under the base-residualised media: NNLS of it is the penalised fit."""
    n = len(residual_y)
    scale = np.sqrt((residual_media ** 2).mean(axis=0))
    scale[scale == 0] = 1.0
    penalty = np.diag(np.sqrt(np.asarray(alphas, float) * n) * scale)
    return np.vstack([residual_media, penalty]), np.concatenate([residual_y, np.zeros(residual_media.shape[1])])


class _Search:
    """Candidate media features per channel and the rolling-origin CV error of a choice of them."""

    def __init__(self, d: _Design, config: ModelConfig):
        self.d, self.config = d, config
        self.mean_daily = np.where(d.spend[d.window].mean(axis=0) > 0, d.spend[d.window].mean(axis=0), 1.0)
        self.transforms = [(lam, k, s) for lam in config.mmm_decays for k in config.mmm_half_saturations
                           for s in config.mmm_shapes]
        self.alphas = [float(a) for a in config.mmm_alphas]
        n_cols = d.base.shape[1] + len(d.channels) + 2
        if d.n_periods < n_cols + 2:
            raise ValueError(f"periods: expected at least {n_cols + 2} for {len(d.channels)} channels and "
                             f"{d.base.shape[1]} base terms, got {d.n_periods}")
        self.features = [self._channel_features(c) for c in range(len(d.channels))]  # each (T, P)
        folds = config.mmm_cv_folds
        test = max(1, d.n_periods // (2 * folds))
        while folds > 2 and d.n_periods - folds * test < n_cols:
            folds -= 1
        self.folds = []
        for train, test_idx in TimeSeriesSplit(n_splits=folds, test_size=test).split(np.arange(d.n_periods)):
            self.folds.append((train, test_idx, projector(d.base[train])))

    def _channel_features(self, c: int) -> np.ndarray:
        d = self.d
        decays = np.asarray(self.config.mmm_decays, float)
        adstocked = response.adstock(np.repeat(d.spend[:, c:c + 1], len(decays), axis=1), decays)
        out = []
        for i, _ in enumerate(decays):
            for k in self.config.mmm_half_saturations:
                for s in self.config.mmm_shapes:
                    daily = response.hill(adstocked[:, i], k * self.mean_daily[c], s)
                    out.append(response.period_sum(daily, d.day_period, d.n_periods))
        return np.array(out)

    def cv_error(self, choice: list[int], alphas: list[float]) -> float:
        """Mean squared one-step-ahead error over the folds for the transforms `choice` and penalties `alphas`."""
        d = self.d
        media = np.column_stack([self.features[c][t] for c, t in enumerate(choice)])
        sse, count = 0.0, 0
        for train, test, q in self.folds:
            b, beta = fit_coefficients(d.base[train], media[train], d.y[train], np.asarray(alphas), q)
            resid = d.y[test] - d.base[test] @ b - media[test] @ beta
            sse += float(resid @ resid)
            count += len(test)
        return sse / count

    def channel_scores(self, c: int, choice: list[int], alphas: list[float]) -> np.ndarray:
        """CV error of every transform of channel `c`, the other channels held."""
        scores = np.empty(len(self.transforms))
        for t in range(len(self.transforms)):
            scores[t] = self.cv_error([t if i == c else x for i, x in enumerate(choice)], alphas)
        return scores

    def select(self) -> tuple[list[int], list[float], float]:
        """Coordinate descent over channels: transforms then penalty, until a pass changes nothing."""
        middle = self.transforms.index(min(self.transforms, key=lambda t: (abs(t[0] - 0.5), abs(t[1] - 1.0), t[2])))
        choice = [middle] * len(self.d.channels)
        alphas = [self.alphas[0]] * len(self.d.channels)
        best = self.cv_error(choice, alphas)
        for _ in range(self.config.mmm_sweeps):
            changed = False
            for c in range(len(self.d.channels)):
                scores = self.channel_scores(c, choice, alphas)
                t = int(np.argmin(scores))
                if scores[t] < best * (1 - 1e-12) and t != choice[c]:
                    choice[c], best, changed = t, float(scores[t]), True
                for a in self.alphas:
                    trial = [a if i == c else x for i, x in enumerate(alphas)]
                    err = self.cv_error(choice, trial)
                    if err < best * (1 - 1e-12):
                        alphas, best, changed = trial, err, True
            if not changed:
                break
        return choice, alphas, best


def _lift(d: _Design, c: int, decay: float, half: float, shape: float) -> tuple[float, float]:
    """Window sum of hill(adstock) for channel c, and its increase when the window's spend is scaled by 1.01."""
    spend = d.spend[:, c]
    a = response.adstock(spend, decay)
    a_window = response.adstock(np.where(d.window, spend, 0.0), decay)
    h = response.hill(a, half, shape)
    h_up = response.hill(a + 0.01 * a_window, half, shape)
    return float(h[d.window].sum()), float((h_up - h)[d.window].sum())


def _block_indices(rng: np.random.Generator, n: int, block: int) -> np.ndarray:
    starts = rng.integers(0, n - block + 1, size=int(np.ceil(n / block)))
    return (starts[:, None] + np.arange(block)[None, :]).ravel()[:n]


def _bootstrap(d: _Design, problem: TransformProblem, theta: np.ndarray, sigma2: float,
               config: ModelConfig) -> dict[str, np.ndarray]:
    """Moving-block bootstrap over the fit's rows: ROI and mROI per replicate (R, C), the model refitted on each.

    Each replicate draws blocks of consecutive rows (periods, or days spanning as long as the periods' blocks)
    with replacement (seeded), then fits the transforms' posterior mode on the drawn rows (warm-started at the
    full-data mode `theta`, at most BOOTSTRAP_ITERATIONS iterations, the noise variance `sigma2` of the
    full-data fit) and the coefficients.
    Re-fitting the transforms carries their uncertainty into the interval, which fixed transforms would hide.
    """
    n, n_ch = problem.rows.n_rows, len(d.channels)
    block = config.bootstrap_block_length or max(2, int(round(d.n_periods ** (1 / 3))))  # in periods
    if problem.rows.kind == "day":  # the same span of time in days
        block = int(round(block * float(np.mean(d.base[:, 0]))))
    block = min(block, n)
    rng = np.random.default_rng(config.seed)
    spend = d.spend[d.window].sum(axis=0)
    spend[spend == 0] = 1.0
    roi = np.empty((config.bootstrap_replicates, n_ch))
    mroi = np.empty_like(roi)
    thetas = np.empty((config.bootstrap_replicates, theta.size))
    betas = np.empty((config.bootstrap_replicates, n_ch))
    for r in range(config.bootstrap_replicates):
        rows = _block_indices(rng, n, block)
        thetas[r], betas[r] = problem.fit([theta], rows, sigma2, max_iterations=BOOTSTRAP_ITERATIONS)
        decay, half, shape = problem.transforms(thetas[r])
        lifts = np.array([_lift(d, c, decay[c], half[c], shape[c]) for c in range(n_ch)])
        roi[r] = betas[r] * lifts[:, 0] / spend
        mroi[r] = betas[r] * lifts[:, 1] / (0.01 * spend)
    return {"roi": roi, "mroi": mroi, "theta": thetas, "coefficient": betas, "block_length": np.int64(block)}


def _interval(values: np.ndarray) -> list[float]:
    lo, hi = np.quantile(values, [(1 - INTERVAL_LEVEL) / 2, (1 + INTERVAL_LEVEL) / 2])
    return [float(lo), float(hi)]


def build_spec(d: _Design, grain: str, fourier_order: int, control_names: list[str], decay: np.ndarray,
               half: np.ndarray, shape: np.ndarray, beta: np.ndarray, base_coef: np.ndarray) -> dict[str, Any]:
    """Return the plain model spec that `training.core.response` predicts from."""
    period_spend = response.period_sum(d.spend, d.day_period, d.n_periods)
    return {
        "format": response.FORMAT, "algorithm": response.ALGORITHM, "channels": list(d.channels),
        "grain": grain, "window": [d.periods[0], d.periods[-1]], "periods": list(d.periods),
        "trend_origin": int(d.trend_origin), "fourier_order": int(fourier_order),
        "base_terms": response.base_terms(fourier_order, control_names),
        "base_coefficients": np.asarray(base_coef, dtype=np.float64),
        "decay": np.asarray(decay, np.float64), "half_saturation": np.asarray(half, np.float64),
        "shape": np.asarray(shape, np.float64), "coefficient": np.asarray(beta, np.float64),
        "controls": list(control_names),
        "control_by_period": {p: np.asarray(d.controls[i], np.float64) for i, p in enumerate(d.periods)},
        "control_mean": np.asarray(d.controls.mean(axis=0) if d.controls.size else np.zeros(0), np.float64),
        "max_spend_seen": period_spend.max(axis=0).astype(np.float64),
        "period_days": float(np.mean(d.base[:, 0])),
    }


def _noise_variance(problem: TransformProblem, theta: np.ndarray) -> float:
    """Residual variance of the fit at transforms θ (degrees of freedom: rows − base rank − channels)."""
    n = problem.rows.n_rows
    objective = problem.on_rows(np.arange(n), 1.0)
    dof = max(n - objective.q.shape[1] - problem.n_channels, 1)
    return max(objective.sse(theta) / dof, float(np.finfo(float).tiny))


def fit_rows_kind(data: PeriodData, config: ModelConfig) -> str:
    """Whether the transforms are fitted on periods or on days (`model.mmm_fit_rows`), for this data.

    "auto" fits on days when revenue is daily and every control was given per day (a monthly control has no
    variation inside a period, and a promotion's daily lift it cannot explain would be credited to the spend
    that rose with it); on periods otherwise.
    """
    if config.mmm_fit_rows == "period" or data.daily_revenue is None:
        if config.mmm_fit_rows == "day":
            raise ConfigError("model.mmm_fit_rows", "day", "'auto' or 'period' with monthly revenue (YEAR, MONTH, "
                              "REVENUE): a fit on days needs daily revenue (DATE, REVENUE)")
        return "period"
    return "day" if config.mmm_fit_rows == "day" or data.controls_daily else "period"


def _fit_rows(d: _Design, data: PeriodData, config: ModelConfig, mean_daily: np.ndarray,
              start: np.ndarray) -> FitRows:
    """The rows of the transform fit: periods, or days whitened for the AR(1) noise seen at `start`."""
    if fit_rows_kind(data, config) == "period":
        return period_rows(d.day_period, d.n_periods, d.base, d.y)
    window = d.window
    n = int(window.sum())
    day_index = np.full(len(window), -1, dtype=np.int64)
    day_index[window] = np.arange(n)
    controls = data.daily_controls.to_numpy(dtype=float)
    base = response.base_design(d.day_ordinals, day_index, n, d.trend_origin, config.fourier_order, controls)
    plain = day_rows(window, base, data.daily_revenue)
    residual = TransformProblem(d.spend, plain, mean_daily).on_rows(np.arange(n), 1.0).residual(start)
    return day_rows(window, base, data.daily_revenue, lag_one_correlation(residual))


def fit_mmm(data: PeriodData, config: ModelConfig, intervals: bool = True) -> FittedMMM:
    """Fit the media-mix model on `data`: transforms at their posterior mode, intervals by bootstrap refits.

    The model is the full-data fit (one Hill curve per channel) whether or not intervals are asked for; with
    bootstrap replicates > 0 the intervals are the replicates' quantiles. The fit is thousands of small
    matrix problems, for which BLAS threads cost more than they give (measured: 5 times slower with
    OpenBLAS's default threads on a busy 2-core machine), so it runs on one BLAS thread.
    """
    with threadpool_limits(limits=1, user_api="blas"):
        return _fit_mmm(data, config, intervals)


def _fit_mmm(data: PeriodData, config: ModelConfig, intervals: bool) -> FittedMMM:
    check_mmm_config(config)
    started = time.perf_counter()
    d = _design(data, config.fourier_order)
    search = _Search(d, config)
    choice, alphas, cv_mse = search.select()
    chosen = np.array([search.transforms[t] for t in choice])  # (C, 3): decay, half-saturation multiple, shape
    start = theta_of(chosen[:, 0], chosen[:, 1], chosen[:, 2])
    rows = _fit_rows(d, data, config, search.mean_daily, start)
    problem = TransformProblem(d.spend, rows, search.mean_daily)
    sigma2 = _noise_variance(problem, start)
    theta, _ = problem.fit([start, np.tile(PRIOR_MEAN, len(d.channels))], np.arange(rows.n_rows), sigma2)
    decay, half, shape = problem.transforms(theta)
    media = problem.features(theta)[0]
    base_coef, beta = fit_coefficients(rows.base, media, rows.y, np.zeros(len(d.channels)), final=True)
    control_names = [str(c) for c in data.controls.columns]
    fit_seconds = time.perf_counter() - started

    boot: dict[str, np.ndarray] = {}
    started = time.perf_counter()
    if intervals and config.bootstrap_replicates:
        boot = _bootstrap(d, problem, theta, sigma2, config)
    interval_seconds = time.perf_counter() - started
    form = "hill"
    spec = build_spec(d, data.grain, config.fourier_order, control_names, decay[:, None], half[:, None],
                      shape[:, None], beta[:, None], base_coef)
    spec["curve_form"] = form

    parts = response.decompose(spec, d.spend, d.day_ordinals, d.day_period, d.n_periods, d.controls)
    spend_window = d.spend[d.window].sum(axis=0)
    period_spend = response.period_sum(d.spend, d.day_period, d.n_periods)
    roi_channels, curves = {}, {}
    for c, name in enumerate(d.channels):
        total, extra = beta[c] * np.array(_lift(d, c, decay[c], half[c], shape[c]))
        spend = float(spend_window[c])
        contribution = float(total)
        entry = {"spend": spend, "contribution": contribution,
                 "roi": contribution / spend if spend > 0 else 0.0, "roi_interval": None,
                 "mroi": float(extra / (0.01 * spend)) if spend > 0 else 0.0, "mroi_interval": None}
        if boot:
            entry["roi_interval"] = _interval(boot["roi"][:, c])
            entry["mroi_interval"] = _interval(boot["mroi"][:, c])
        roi_channels[name] = entry
        max_seen = float(period_spend[:, c].max())
        grid = np.linspace(0.0, 1.5 * max_seen if max_seen > 0 else 1.0, CURVE_POINTS)
        parameters = {"coefficient": float(beta[c]), "decay": float(decay[c]),
                      "half_saturation": float(half[c]), "shape": float(shape[c]),
                      "half_saturation_per_period": float(half[c] * spec["period_days"])}
        curves[name] = {
            "form": form, "parameters": parameters,
            "current_spend": float(period_spend[-12:, c].mean()),
            "max_spend_seen": max_seen,
            "points": {"spend": [float(v) for v in grid],
                       "revenue": [float(v) for v in response.steady_state_revenue(spec, name, grid)]},
        }
    roi_block = {"interval_level": INTERVAL_LEVEL, "window": [d.periods[0], d.periods[-1]], "channels": roi_channels}
    curves_block = {"grain": data.grain, "period_days": spec["period_days"], "channels": curves}
    decomposition = {"periods": list(d.periods), "base": [float(v) for v in parts["base"]],
                     "channels": {name: [float(v) for v in parts["contributions"][:, c]]
                                  for c, name in enumerate(d.channels)},
                     "fitted": [float(v) for v in parts["fitted"]], "actual": [float(v) for v in d.y]}
    hyper = {
        "channels": {name: {"decay": float(decay[c]), "half_saturation": float(half[c]),
                            "half_saturation_multiple": float(half[c] / search.mean_daily[c]),
                            "shape": float(shape[c]),
                            "start": {"decay": float(chosen[c, 0]), "half_saturation_multiple": float(chosen[c, 1]),
                                      "shape": float(chosen[c, 2]), "alpha": float(alphas[c])}}
                     for c, name in enumerate(d.channels)},
        "curve_form": form,
        "transforms": "posterior mode (weak priors, L-BFGS-B), started from the cross-validated grid point",
        "priors": {"decay_logit": [float(PRIOR_MEAN[0]), float(PRIOR_SD[0])],
                   "log_half_saturation_multiple": [float(PRIOR_MEAN[1]), float(PRIOR_SD[1])],
                   "log_shape": [float(PRIOR_MEAN[2]), float(PRIOR_SD[2])]},
        "fourier_order": config.fourier_order, "cv_folds": len(search.folds), "cv_rmse": float(np.sqrt(cv_mse)),
        "fit_rows": rows.kind, "noise_ar1": rows.rho,
        "noise_sd": float(np.sqrt(sigma2)),
        "bootstrap_replicates": config.bootstrap_replicates if boot else 0,
        "bootstrap_block_length": int(boot["block_length"]) if boot else None,
        "transforms_reselected_per_replicate": ("yes: each replicate refits the transforms' posterior mode "
                                                f"(at most {BOOTSTRAP_ITERATIONS} iterations from the full-data mode)"),
        "model": "the full-data fit (the bootstrap gives the intervals only)",
        "seed": config.seed,
    }
    log.info("fitted mmm on %d periods (%s), %d channels in %.2fs, intervals in %.2fs", d.n_periods, data.grain,
             len(d.channels), fit_seconds, interval_seconds)
    return FittedMMM(spec, roi_block, curves_block, decomposition, hyper,
                     n_parameters=d.base.shape[1] + len(d.channels),
                     n_transform_parameters=3 * len(d.channels),
                     fit_seconds=fit_seconds, interval_seconds=interval_seconds, bootstrap=boot)


def predict_mmm(spec: dict[str, Any], data: PeriodData) -> np.ndarray:
    """Predict revenue for the periods of `data` (e.g. a holdout), carryover from its daily spend."""
    ordinals, day_period = day_calendar(data)
    spend = data.daily_spend.reindex(columns=spec["channels"], fill_value=0.0).to_numpy(dtype=float)
    controls = data.controls.reindex(columns=spec["controls"]).to_numpy(dtype=float) if spec["controls"] else None
    return response.predict_periods(spec, spend, ordinals, day_period, len(data.periods), controls)
