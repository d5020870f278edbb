"""Fit a model on periods, whatever the algorithm (`fit_periods`, `predict_periods`), and the linear models.

The linear revenue model: revenue = intercept + Σ coefficient_c × spend_c.

Coefficients stay in original units (no scaling, no polynomial features), so each one is the marginal ROI
of its channel: the revenue one more unit of spend on that channel brings. `ModelConfig.algorithm` picks
ordinary least squares (`LinearRegression`) or ridge with its alpha chosen by time-series cross-validation.
What is stored (`model.joblib`) is not the estimator but its plain linear spec (`training.core.artifact`):
intercept, coefficient array and channels, which every reader loads without running code.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from sklearn.linear_model import LinearRegression, Ridge
from sklearn.model_selection import GridSearchCV, TimeSeriesSplit

from training.config import ModelConfig
from training.core import artifact
from training.periods import PeriodData

LinearModel = LinearRegression | Ridge


@dataclass
class ModelSummary:
    """What a person needs to read a fitted model: intercept, marginal ROI per channel, settings."""

    algorithm: str
    positive: bool
    intercept: float | None  # None for the media-mix model (its base is in the spec)
    coefficients: dict[str, float]
    hyperparameters: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Return the summary as plain JSON-able data."""
        return asdict(self)


def check_training_frame(features: pd.DataFrame, revenue: pd.Series) -> None:
    """Raise ValueError naming the problem when `features`/`revenue` cannot be fitted."""
    if not isinstance(features, pd.DataFrame):
        raise ValueError(f"features: expected a pandas DataFrame with one column per channel, got {type(features).__name__}")
    if features.shape[1] == 0:
        raise ValueError("features: expected at least one channel column, got none")
    if len(features) < 2:
        raise ValueError(f"features: expected at least 2 months of data, got {len(features)}")
    if len(features) != len(revenue):
        raise ValueError(f"revenue: expected {len(features)} values (one per month of features), got {len(revenue)}")
    if isinstance(revenue, pd.Series) and not features.index.equals(revenue.index):
        raise ValueError("revenue: index must list the same months in the same order as the features index")
    non_numeric = [str(c) for c in features.columns if not pd.api.types.is_numeric_dtype(features[c])]
    if non_numeric:
        raise ValueError(f"features: columns {non_numeric} are not numeric; expected spend amounts")
    if not pd.api.types.is_numeric_dtype(pd.Series(revenue)):
        raise ValueError("revenue: expected numeric values")
    bad = features.columns[~np.isfinite(features.to_numpy(dtype=float)).all(axis=0)].tolist()
    if bad:
        raise ValueError(f"features: columns {bad} contain missing or infinite values; expected finite spend")
    if not np.isfinite(np.asarray(revenue, dtype=float)).all():
        raise ValueError("revenue: contains missing or infinite values; expected finite amounts")


def build_estimator(config: ModelConfig, n_samples: int) -> LinearRegression | GridSearchCV:
    """Return the unfitted estimator `config` asks for (ridge: a time-series grid search over alpha)."""
    if config.algorithm == "ols":
        return LinearRegression(positive=config.positive)
    if config.algorithm != "ridge":
        raise ValueError(f"model.algorithm={config.algorithm!r}: expected 'ols' or 'ridge'")
    if not config.ridge_alphas or any(a <= 0 for a in config.ridge_alphas):
        raise ValueError(f"model.ridge_alphas={config.ridge_alphas!r}: expected one or more numbers > 0")
    if config.cv_splits < 2 or n_samples <= config.cv_splits:
        raise ValueError(f"model.cv_splits={config.cv_splits}: expected at least 2 and fewer than the "
                         f"{n_samples} months available for fitting")
    # Ridge with positive=True needs the lbfgs solver; "auto" picks a closed form otherwise.
    ridge = Ridge(positive=config.positive, solver="lbfgs" if config.positive else "auto")
    return GridSearchCV(ridge, {"alpha": list(config.ridge_alphas)}, cv=TimeSeriesSplit(n_splits=config.cv_splits),
                        scoring="neg_root_mean_squared_error")


def fit(features: pd.DataFrame, revenue: pd.Series, config: ModelConfig) -> tuple[LinearModel, ModelSummary]:
    """Fit the model on monthly spend per channel and return the estimator and its summary."""
    check_training_frame(features, revenue)
    X = features.astype(float)
    y = pd.Series(np.asarray(revenue, dtype=float), index=features.index, name="revenue")
    estimator = build_estimator(config, len(X)).fit(X, y)
    hyperparameters: dict[str, Any] = {}
    if isinstance(estimator, GridSearchCV):
        hyperparameters = {"alpha": float(estimator.best_params_["alpha"]), "alphas": list(config.ridge_alphas),
                           "cv_splits": config.cv_splits, "cv_rmse": float(-estimator.best_score_)}
        estimator = estimator.best_estimator_
    return estimator, summarize(estimator, config.algorithm, hyperparameters)


def summarize(estimator: LinearModel, algorithm: str, hyperparameters: dict[str, Any] | None = None) -> ModelSummary:
    """Return intercept and coefficients of a fitted estimator, keyed by its channel names."""
    channels = [str(c) for c in estimator.feature_names_in_]
    hyperparameters = dict(hyperparameters or {})
    if isinstance(estimator, Ridge):
        hyperparameters.setdefault("alpha", float(estimator.alpha))
    return ModelSummary(
        algorithm=algorithm,
        positive=bool(estimator.positive),
        intercept=float(estimator.intercept_),
        coefficients={c: float(v) for c, v in zip(channels, np.ravel(estimator.coef_), strict=True)},
        hyperparameters=hyperparameters,
    )


def predict(fitted: LinearModel | dict[str, Any], features: pd.DataFrame) -> pd.Series:
    """Predict revenue for each month of `features` with an estimator or a linear spec; channels the model
    knows but `features` lacks spent 0."""
    if isinstance(fitted, dict):
        X = features.reindex(columns=list(fitted["channels"]), fill_value=0.0).astype(float)
        return pd.Series(artifact.predict_linear(fitted, X.to_numpy()), index=features.index, name="predicted")
    channels = list(fitted.feature_names_in_)
    X = features.reindex(columns=channels, fill_value=0.0).astype(float)
    return pd.Series(fitted.predict(X), index=features.index, name="predicted")


def to_spec(estimator: LinearModel, algorithm: str) -> dict[str, Any]:
    """Return the plain linear spec of a fitted estimator (what `model.joblib` holds)."""
    return artifact.linear_spec(algorithm, [str(c) for c in estimator.feature_names_in_],
                                float(estimator.intercept_), np.ravel(estimator.coef_))


def to_bytes(estimator: LinearModel | dict[str, Any], algorithm: str | None = None) -> bytes:
    """Serialise a fitted estimator's linear spec (or a spec) as `model.joblib`."""
    if isinstance(estimator, dict):
        return artifact.dump_spec(estimator)
    if algorithm is None:
        algorithm = "ridge" if isinstance(estimator, Ridge) else "ols"
    return artifact.dump_spec(to_spec(estimator, algorithm))


def from_bytes(data: bytes) -> dict[str, Any]:
    """Load a spec written by `to_bytes` through the restricted loader (never plain unpickling)."""
    return artifact.load_spec("candidate", data)


# ---- one dispatch for every algorithm: fit on periods → plain spec + manifest blocks ------------------

INTERVAL_LEVEL = 0.9
CURVE_POINTS = 41
CURRENT_PERIODS = 12  # `current_spend`: mean spend per period over this many newest training periods


@dataclass
class FittedModel:
    """A model fitted on periods, whatever its algorithm: its plain spec, its summary and the manifest blocks."""

    spec: dict[str, Any]
    summary: ModelSummary
    roi: dict[str, Any]
    response_curves: dict[str, Any]
    decomposition: dict[str, Any]
    intervals: dict[str, Any]  # how the ROI/mROI intervals were made (or why there are none)
    n_parameters: int  # coefficients fitted (what the identifiability rule compares with the periods)
    fit_seconds: float = 0.0

    def blocks(self) -> dict[str, Any]:
        """Return the manifest blocks (names per CONTRACTS.md)."""
        return {"roi": self.roi, "response_curves": self.response_curves, "decomposition": self.decomposition}


def _block_rows(rng: np.random.Generator, n: int, block: int) -> np.ndarray:
    """Rows of one moving-block bootstrap replicate: blocks of `block` consecutive periods drawn with replacement."""
    starts = rng.integers(0, n - block + 1, size=int(np.ceil(n / block)))
    return (starts[:, None] + np.arange(block)[None, :]).ravel()[:n]


def block_length(config: ModelConfig, n_periods: int) -> int:
    """Return the bootstrap block length: `bootstrap_block_length`, or about n^(1/3) periods (at least 2)."""
    return min(config.bootstrap_block_length or max(2, int(round(n_periods ** (1 / 3)))), n_periods)


def _linear_bootstrap(spend: np.ndarray, y: np.ndarray, config: ModelConfig, alpha: float | None) -> np.ndarray:
    """Coefficients (R, C) refitted on moving-block bootstrap replicates, hyperparameters held (alpha)."""
    n = len(y)
    block = block_length(config, n)
    rng = np.random.default_rng(config.seed)
    if alpha is None:
        estimator: LinearModel = LinearRegression(positive=config.positive)
    else:
        estimator = Ridge(alpha=alpha, positive=config.positive, solver="lbfgs" if config.positive else "auto")
    out = np.empty((config.bootstrap_replicates, spend.shape[1]))
    for r in range(config.bootstrap_replicates):
        rows = _block_rows(rng, n, block)
        out[r] = estimator.fit(spend[rows], y[rows]).coef_
    return out


def _interval(values: np.ndarray) -> list[float]:
    lo, hi = np.quantile(values, [(1 - INTERVAL_LEVEL) / 2, (1 + INTERVAL_LEVEL) / 2])
    return [float(lo), float(hi)]


def fit_linear_periods(data: PeriodData, config: ModelConfig, intervals: bool = True) -> FittedModel:
    """Fit ols/ridge on spend per period (at month grain: monthly spend → revenue, as always) with its blocks.

    Linear: roi = mroi = the coefficient; intervals from a moving-block bootstrap over periods refitting the
    coefficients with the chosen hyperparameters held (ridge's alpha is not re-selected per replicate).
    """
    started = time.perf_counter()
    features = data.period_spend()
    revenue = pd.Series(np.asarray(data.revenue, dtype=float), index=features.index, name="revenue")
    estimator, summary = fit(features, revenue, config)
    spec = to_spec(estimator, config.algorithm)
    fit_seconds = time.perf_counter() - started
    channels = list(spec["channels"])
    spend = features[channels].to_numpy(dtype=float)
    y = revenue.to_numpy()
    coef = np.asarray(spec["coefficients"], dtype=float)
    boot = None
    if intervals and config.bootstrap_replicates:
        boot = _linear_bootstrap(spend, y, config, summary.hyperparameters.get("alpha"))
    roi_channels, curves = {}, {}
    for c, name in enumerate(channels):
        total = float(spend[:, c].sum())
        interval = _interval(boot[:, c]) if boot is not None else None
        roi_channels[name] = {"spend": total, "contribution": float(coef[c] * total), "roi": float(coef[c]),
                              "roi_interval": interval, "mroi": float(coef[c]), "mroi_interval": interval}
        max_seen = float(spend[:, c].max())
        grid = np.linspace(0.0, 1.5 * max_seen if max_seen > 0 else 1.0, CURVE_POINTS)
        curves[name] = {"form": "linear", "parameters": {"coefficient": float(coef[c])},
                        "current_spend": float(spend[-CURRENT_PERIODS:, c].mean()), "max_spend_seen": max_seen,
                        "points": {"spend": [float(v) for v in grid], "revenue": [float(v) for v in coef[c] * grid]}}
    contributions = spend * coef
    fitted = float(spec["intercept"]) + contributions.sum(axis=1)
    method = (f"moving-block bootstrap over periods ({config.bootstrap_replicates} replicates, blocks of "
              f"{block_length(config, len(y))}), coefficients refitted per replicate with the hyperparameters held")
    return FittedModel(
        spec=spec, summary=summary,
        roi={"interval_level": INTERVAL_LEVEL, "window": [data.periods[0], data.periods[-1]],
             "channels": roi_channels},
        response_curves={"grain": data.grain, "period_days": float(data.days.mean()), "channels": curves},
        decomposition={"periods": list(data.periods), "base": [float(spec["intercept"])] * len(y),
                       "channels": {name: [float(v) for v in contributions[:, c]] for c, name in enumerate(channels)},
                       "fitted": [float(v) for v in fitted], "actual": [float(v) for v in y]},
        intervals={"level": INTERVAL_LEVEL, "method": method if boot is not None else None,
                   "replicates": config.bootstrap_replicates if boot is not None else 0,
                   "block_length": block_length(config, len(y)) if boot is not None else None,
                   "transforms_reselected_per_replicate": None},
        n_parameters=len(channels) + 1, fit_seconds=fit_seconds)


def fit_mmm_periods(data: PeriodData, config: ModelConfig, intervals: bool = True) -> FittedModel:
    """Fit the media-mix model (`training.mmm`) and describe it like the linear ones.

    Its summary's `coefficients` are the marginal ROI per channel (from the roi block): what the metrics
    table's column means for every algorithm; the media coefficients themselves are in the spec and in the
    response curves' parameters.
    """
    from training import mmm  # scipy and the search load only when a media-mix model is fitted

    fitted = mmm.fit_mmm(data, config, intervals=intervals)
    summary = ModelSummary(algorithm="mmm", positive=True, intercept=None,
                           coefficients={c: float(e["mroi"]) for c, e in fitted.roi["channels"].items()},
                           hyperparameters=fitted.hyperparameters)
    hyper = fitted.hyperparameters
    done = bool(hyper.get("bootstrap_replicates"))
    rows = "days" if hyper.get("fit_rows") == "day" else "periods"
    method = (f"moving-block bootstrap over {rows} ({hyper.get('bootstrap_replicates')} replicates, blocks of "
              f"{hyper.get('bootstrap_block_length')} {rows}), the model refitted per replicate, transforms "
              "included; the published model is the full-data fit")
    return FittedModel(
        spec=fitted.spec, summary=summary, roi=fitted.roi, response_curves=fitted.response_curves,
        decomposition=fitted.decomposition,
        intervals={"level": INTERVAL_LEVEL, "method": method if done else None,
                   "replicates": hyper.get("bootstrap_replicates") or 0,
                   "block_length": hyper.get("bootstrap_block_length") if done else None,
                   "transforms_reselected_per_replicate": hyper.get("transforms_reselected_per_replicate")
                   if done else None},
        n_parameters=fitted.n_parameters, fit_seconds=fitted.fit_seconds + fitted.interval_seconds)


def parameter_count(config: ModelConfig, channels: int, controls: int = 0) -> int:
    """Return the coefficients `config.algorithm` fits for this many channels and controls (before fitting).

    ols/ridge: an intercept and one coefficient per channel. mmm: the base (level, trend, a sin/cos pair per
    Fourier order, one per control) and one media coefficient per channel; its transforms (decay,
    half-saturation, shape, penalty per channel) are chosen out of sample by cross-validation, not fitted, and
    are not counted. This is what the identifiability rule compares with the periods.
    """
    if config.algorithm == "mmm":
        return 2 + 2 * config.fourier_order + controls + channels
    return channels + 1


def fit_periods(data: PeriodData, config: ModelConfig, intervals: bool = True) -> FittedModel:
    """Fit `config.algorithm` (ols | ridge | mmm) on `data`; intervals only when asked (they refit many times)."""
    if config.algorithm == "mmm":
        return fit_mmm_periods(data, config, intervals)
    return fit_linear_periods(data, config, intervals)


def predict_periods(spec: dict[str, Any], data: PeriodData) -> np.ndarray:
    """Predict revenue for every period of `data` with any spec: linear on spend per period, mmm on daily spend."""
    if spec.get("algorithm") == "mmm":
        from training import mmm

        return mmm.predict_mmm(spec, data)
    features = data.period_spend().reindex(columns=list(spec["channels"]), fill_value=0.0).astype(float)
    return artifact.predict_linear(spec, features.to_numpy())
