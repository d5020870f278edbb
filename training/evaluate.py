"""Score a model on a chronological holdout: the newest months, never a random sample.

The candidate is fitted on the older months, scored on the holdout (R², RMSE, MAE, MAPE) and on its own
training months, and cross-validated with `TimeSeriesSplit` over the training months alone.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from sklearn.metrics import (
    mean_absolute_error,
    mean_absolute_percentage_error,
    r2_score,
    root_mean_squared_error,
)
from sklearn.model_selection import TimeSeriesSplit

from training import model
from training.config import EvaluationConfig, ModelConfig


@dataclass
class Split:
    """Months the candidate is fitted on and the newer months it is scored on."""

    train_months: list[str]
    holdout_months: list[str]


@dataclass
class Evaluation:
    """Scores of a candidate fitted on the training months."""

    split: Split
    summary: model.ModelSummary
    holdout: dict[str, float | None]
    train: dict[str, float | None]
    cv: dict[str, list[float | None]]
    predictions: pd.DataFrame  # index: month; columns: actual, predicted, split ("train" | "holdout")

    def metrics(self) -> dict[str, Any]:
        """Return the `metrics` block of the manifest."""
        return {"holdout": self.holdout, "train": self.train, "cv": self.cv}


def chronological_split(months: list[str], config: EvaluationConfig) -> Split:
    """Hold out the newest `holdout_fraction` of the months (at least `min_holdout_months`)."""
    ordered = sorted(months)
    if ordered != list(months):
        raise ValueError("months: expected ascending YYYY-MM order (the holdout must be the newest months)")
    n_holdout = max(config.min_holdout_months, math.ceil(config.holdout_fraction * len(ordered)))
    if n_holdout >= len(ordered) - 1:
        raise ValueError(f"evaluation: a holdout of {n_holdout} months leaves {len(ordered) - n_holdout} of "
                         f"{len(ordered)} months to fit on; expected at least 2 (add months or lower "
                         "evaluation.min_holdout_months / evaluation.holdout_fraction)")
    return Split(ordered[:-n_holdout], ordered[-n_holdout:])


def _number(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None


def regression_scores(actual: Any, predicted: Any) -> dict[str, float | None]:
    """Return R², RMSE, MAE and MAPE (a fraction); a score that is undefined (R² of one month) is None."""
    y, p = np.asarray(actual, dtype=float), np.asarray(predicted, dtype=float)
    r2 = r2_score(y, p) if len(y) >= 2 and np.ptp(y) > 0 else float("nan")
    return {
        "r2": _number(r2),
        "rmse": _number(root_mean_squared_error(y, p)),
        "mae": _number(mean_absolute_error(y, p)),
        "mape": _number(mean_absolute_percentage_error(y, p)),
    }


def cross_validate(features: pd.DataFrame, revenue: pd.Series, config: ModelConfig) -> dict[str, list[float | None]]:
    """Time-series CV over `features`: fit on each expanding window, score on the months right after it."""
    # Each test fold needs 2+ months for R² to mean anything.
    n_splits = min(config.cv_splits, len(features) // 2 - 1)
    scores: dict[str, list[float | None]] = {"r2": [], "rmse": []}
    if n_splits < 2:
        return scores
    for train_idx, test_idx in TimeSeriesSplit(n_splits=n_splits).split(features):
        if config.algorithm == "ridge" and len(train_idx) <= config.cv_splits:
            continue  # too few months for ridge's own inner time-series CV
        estimator, _ = model.fit(features.iloc[train_idx], revenue.iloc[train_idx], config)
        fold = regression_scores(revenue.iloc[test_idx], model.predict(estimator, features.iloc[test_idx]))
        scores["r2"].append(fold["r2"])
        scores["rmse"].append(fold["rmse"])
    return scores


def evaluate(
    features: pd.DataFrame, revenue: pd.Series, model_config: ModelConfig, config: EvaluationConfig
) -> tuple[model.LinearModel, Evaluation]:
    """Fit a candidate on all but the newest months and score it on them; return it and its scores."""
    model.check_training_frame(features, revenue)
    split = chronological_split([str(m) for m in features.index], config)
    train_X, train_y = features.loc[split.train_months], revenue.loc[split.train_months]
    estimator, summary = model.fit(train_X, train_y, model_config)
    predicted = model.predict(estimator, features)
    predictions = pd.DataFrame({
        "actual": revenue.astype(float),
        "predicted": predicted,
        "split": np.where(features.index.isin(split.holdout_months), "holdout", "train"),
    })
    holdout = predictions.loc[split.holdout_months]
    trained = predictions.loc[split.train_months]
    return estimator, Evaluation(
        split=split,
        summary=summary,
        holdout=regression_scores(holdout["actual"], holdout["predicted"]),
        train=regression_scores(trained["actual"], trained["predicted"]),
        cv=cross_validate(train_X, train_y, model_config),
        predictions=predictions,
    )
