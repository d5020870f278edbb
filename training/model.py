"""Fit the linear revenue model: revenue = intercept + Σ coefficient_c × spend_c.

Coefficients stay in original units (no scaling, no polynomial features), so each one is the marginal ROI
of its channel: the revenue one more unit of spend on that channel brings. `ModelConfig.algorithm` picks
ordinary least squares (`LinearRegression`) or ridge with its alpha chosen by time-series cross-validation.
What is stored (`model.joblib`) is not the estimator but its plain linear spec (`training.core.artifact`):
intercept, coefficient array and channels, which every reader loads without running code.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from sklearn.linear_model import LinearRegression, Ridge
from sklearn.model_selection import GridSearchCV, TimeSeriesSplit

from training.config import ModelConfig
from training.core import artifact

LinearModel = LinearRegression | Ridge


@dataclass
class ModelSummary:
    """What a person needs to read a fitted model: intercept, marginal ROI per channel, settings."""

    algorithm: str
    positive: bool
    intercept: float
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
