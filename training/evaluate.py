"""Score a model on a chronological holdout: the newest periods, never a random sample.

Periods are those of the model's grain (months or ISO weeks); the names say "months" (`holdout_months`,
`evaluation.min_holdout_months`) because that is what they were when only months existed, and mean periods.
The candidate is fitted on the older periods, scored on the holdout (R², RMSE, MAE, MAPE) and on its own
training periods, and cross-validated with `TimeSeriesSplit` over the training periods alone. A media-mix
candidate predicts each period from the daily spend up to it, so carryover from the training periods reaches
the holdout as it would in production.
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
from training.periods import PeriodData


@dataclass
class Split:
    """Periods the candidate is fitted on and the newer periods it is scored on (named months: see above)."""

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
    predictions: pd.DataFrame  # index: period (named "month"); columns: actual, predicted, split ("train" | "holdout")

    def metrics(self) -> dict[str, Any]:
        """Return the `metrics` block of the manifest."""
        return {"holdout": self.holdout, "train": self.train, "cv": self.cv}


def chronological_split(months: list[str], config: EvaluationConfig) -> Split:
    """Hold out the newest `holdout_fraction` of the periods (at least `min_holdout_months`)."""
    ordered = sorted(months)
    if ordered != list(months):
        raise ValueError("months: expected ascending YYYY-MM (or YYYY-Www) order (the holdout must be the newest "
                         "periods)")
    n_holdout = max(config.min_holdout_months, math.ceil(config.holdout_fraction * len(ordered)))
    if n_holdout >= len(ordered) - 1:
        raise ValueError(f"evaluation: a holdout of {n_holdout} periods leaves {len(ordered) - n_holdout} of "
                         f"{len(ordered)} periods to fit on; expected at least 2 (add months or lower "
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


def _fold_fit(data: PeriodData, config: ModelConfig) -> model.FittedModel | None:
    """Fit one CV fold; None when a media-mix fold is too short for its own parameters (the fold is skipped)."""
    try:
        return model.fit_periods(data, config, intervals=False)
    except ValueError as exc:
        if config.algorithm == "mmm" and str(exc).startswith("periods: expected at least"):
            return None
        raise


def cross_validate(data: PeriodData, config: ModelConfig) -> dict[str, list[float | None]]:
    """Time-series CV over the periods of `data`: fit on each expanding window, score on the periods right after it.

    A media-mix fold too short for the model's parameters is skipped, as are ridge folds too short for its own
    inner CV.
    """
    # Each test fold needs 2+ periods for R² to mean anything.
    n = len(data.periods)
    n_splits = min(config.cv_splits, n // 2 - 1)
    scores: dict[str, list[float | None]] = {"r2": [], "rmse": []}
    if n_splits < 2:
        return scores
    for train_idx, test_idx in TimeSeriesSplit(n_splits=n_splits).split(np.arange(n)):
        if config.algorithm == "ridge" and len(train_idx) <= config.cv_splits:
            continue  # too few periods for ridge's own inner time-series CV
        fitted = _fold_fit(data.subset([data.periods[i] for i in train_idx]), config)
        if fitted is None:
            continue
        upto = data.subset(data.periods[: test_idx[-1] + 1])  # carryover comes from the days before the fold
        predicted = model.predict_periods(fitted.spec, upto)[test_idx]
        fold = regression_scores(data.revenue[test_idx], predicted)
        scores["r2"].append(fold["r2"])
        scores["rmse"].append(fold["rmse"])
    return scores


def evaluate(data: PeriodData, model_config: ModelConfig,
             config: EvaluationConfig) -> tuple[model.FittedModel, Evaluation]:
    """Fit a candidate on all but the newest periods and score it on them; return it and its scores.

    The candidate and the CV folds are fitted without intervals (they refit the model many times, and the model
    itself does not depend on them): a promoted run publishes the refit on all periods, with its own, and a
    rejected run's record gets the candidate's from the gate (`pipeline.quality_gate`).
    """
    if len(data.periods) < 2:
        raise ValueError(f"periods: expected at least 2 periods with spend and revenue, got {len(data.periods)}")
    split = chronological_split(list(data.periods), config)
    train = data.subset(split.train_months)
    fitted = model.fit_periods(train, model_config, intervals=False)
    predicted = model.predict_periods(fitted.spec, data)
    holdout = np.isin(np.asarray(data.periods), split.holdout_months)
    predictions = pd.DataFrame({"actual": np.asarray(data.revenue, dtype=float), "predicted": predicted,
                                "split": np.where(holdout, "holdout", "train")},
                               index=pd.Index(list(data.periods), name="month"))
    held, trained = predictions[holdout], predictions[~holdout]
    return fitted, Evaluation(
        split=split,
        summary=fitted.summary,
        holdout=regression_scores(held["actual"], held["predicted"]),
        train=regression_scores(trained["actual"], trained["predicted"]),
        cv=cross_validate(train, model_config),
        predictions=predictions,
    )
