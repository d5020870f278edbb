"""Tests of training/evaluate.py: chronological holdout, scores, time-series CV."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from tests.conftest import monthly_period_data
from training import evaluate, model
from training.config import EvaluationConfig, ModelConfig
from training.sample import mmm_period_data, simulate_mmm

CHANNELS = ["email", "video"]


def monthly(n: int = 30, seed: int = 1) -> tuple[pd.DataFrame, pd.Series]:
    rng = np.random.default_rng(seed)
    months = [f"{2021 + i // 12}-{i % 12 + 1:02d}" for i in range(n)]
    features = pd.DataFrame(rng.uniform(100, 900, (n, 2)), index=months, columns=CHANNELS)
    revenue = pd.Series(200 + 4 * features["email"] + 1.5 * features["video"] + rng.normal(0, 30, n), index=months)
    return features, revenue


@pytest.mark.parametrize(
    ("n", "fraction", "minimum", "expected_holdout"),
    [(30, 0.2, 3, 6), (12, 0.2, 3, 3), (10, 0.25, 1, 3), (24, 0.1, 4, 4)],
)
def test_holdout_is_the_newest_months(n, fraction, minimum, expected_holdout):
    months = [f"{2020 + i // 12}-{i % 12 + 1:02d}" for i in range(n)]
    split = evaluate.chronological_split(months, EvaluationConfig(holdout_fraction=fraction, min_holdout_months=minimum))
    assert split.holdout_months == months[-expected_holdout:]
    assert split.train_months == months[:-expected_holdout]


def test_split_refuses_unsorted_months_and_too_small_data():
    with pytest.raises(ValueError, match="ascending"):
        evaluate.chronological_split(["2024-02", "2024-01", "2024-03"], EvaluationConfig())
    with pytest.raises(ValueError, match="evaluation.min_holdout_months"):
        evaluate.chronological_split(["2024-01", "2024-02", "2024-03", "2024-04"], EvaluationConfig())


def test_regression_scores_match_hand_computation():
    scores = evaluate.regression_scores([100.0, 200.0, 300.0], [110.0, 190.0, 330.0])
    assert scores["rmse"] == pytest.approx(math.sqrt((100 + 100 + 900) / 3))
    assert scores["mae"] == pytest.approx(50 / 3)
    assert scores["mape"] == pytest.approx((0.1 + 0.05 + 0.1) / 3)
    assert scores["r2"] == pytest.approx(1 - 1100 / 20000)


def test_r2_of_a_single_month_is_none_not_nan():
    assert evaluate.regression_scores([5.0], [4.0])["r2"] is None


OLS = ModelConfig(algorithm="ols")


def test_evaluate_fits_on_old_months_only_and_scores_holdout():
    features, revenue = monthly()
    revenue_with_broken_holdout = revenue.copy()
    revenue_with_broken_holdout.iloc[-6:] += 5_000  # only the holdout changes
    fitted, clean = evaluate.evaluate(monthly_period_data(features, revenue), OLS, EvaluationConfig())
    _, broken = evaluate.evaluate(monthly_period_data(features, revenue_with_broken_holdout), OLS,
                                  EvaluationConfig())
    assert clean.split.holdout_months == list(features.index[-6:])
    assert clean.holdout["r2"] > 0.95
    assert broken.train == clean.train  # the holdout months never reached the fit
    assert broken.holdout["r2"] < 0
    assert list(clean.predictions["split"]).count("holdout") == 6
    assert fitted.spec["channels"] == CHANNELS
    assert set(clean.metrics()) == {"holdout", "train", "cv"}


def test_linear_evaluation_on_periods_is_the_monthly_fit_of_the_training_months():
    features, revenue = monthly()
    fitted, result = evaluate.evaluate(monthly_period_data(features, revenue), OLS, EvaluationConfig())
    _, direct = model.fit(features.iloc[:-6], revenue.iloc[:-6], OLS)
    assert result.summary.coefficients == direct.coefficients  # same data, same coefficients, bit for bit
    assert result.summary.intercept == direct.intercept
    assert fitted.roi["window"] == [features.index[0], features.index[-7]]


def test_cross_validation_runs_on_training_months_in_time_order():
    features, revenue = monthly()
    _, result = evaluate.evaluate(monthly_period_data(features, revenue), ModelConfig(algorithm="ols", cv_splits=3),
                                  EvaluationConfig())
    assert len(result.cv["r2"]) == 3 and len(result.cv["rmse"]) == 3
    assert all(r2 > 0.8 for r2 in result.cv["r2"])


def test_cross_validation_is_skipped_when_too_few_months():
    features, revenue = monthly(n=5)
    assert evaluate.cross_validate(monthly_period_data(features, revenue), OLS) == {"r2": [], "rmse": []}


def test_media_mix_holdout_is_predicted_with_carryover_from_the_training_days():
    data, _ = mmm_period_data(simulate_mmm(3, 4, ["tv", "search"]), "month", "monthly")
    config = ModelConfig(algorithm="mmm", mmm_decays=[0.0, 0.7, 0.9], mmm_half_saturations=[0.6, 2.5],
                         mmm_shapes=[1.0], mmm_alphas=[0.0], mmm_sweeps=1, bootstrap_replicates=0)
    fitted, result = evaluate.evaluate(data, config, EvaluationConfig())
    assert fitted.spec["algorithm"] == "mmm" and fitted.spec["periods"] == result.split.train_months
    assert result.holdout["r2"] > 0.5
    assert result.cv["r2"] and len(result.cv["r2"]) == len(result.cv["rmse"])  # folds too short are skipped
    expected = model.predict_periods(fitted.spec, data)
    assert result.predictions["predicted"].tolist() == pytest.approx(list(expected))
