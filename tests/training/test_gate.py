"""Tests of training/gate.py: threshold, champion comparison on unseen months, reasons with numbers."""

from __future__ import annotations

import numpy as np
import pytest

from tests.conftest import MONTHS, monthly_period_data
from training import gate, model
from training.config import GateConfig, ModelConfig
from training.sample import mmm_period_data, simulate_mmm

OLS = ModelConfig(algorithm="ols")


def linear(features, revenue):
    """The linear spec fitted on the monthly table."""
    estimator, _ = model.fit(features, revenue, OLS)
    return model.to_spec(estimator, "ols")


def test_rejects_below_threshold_with_numbers_in_reason():
    decision = gate.decide({"r2": 0.62, "rmse": 10.0}, GateConfig(evaluation_threshold=0.8), None)
    assert not decision.promote and decision.decision == "reject"
    assert "holdout R² 0.62 < threshold 0.8" in decision.reason
    assert decision.to_dict()["decision"] == "rejected"


def test_promotes_first_model_above_threshold():
    decision = gate.decide({"r2": 0.91, "rmse": 10.0}, GateConfig(), None)
    assert decision.promote
    assert "holdout R² 0.91 ≥ threshold 0.8" in decision.reason and "no champion yet" in decision.reason
    assert decision.to_dict()["champion"] is None


def test_missing_r2_is_rejected():
    assert not gate.decide({"r2": None, "rmse": 1.0}, GateConfig(), None).promote


@pytest.mark.parametrize(
    ("challenger_rmse", "tolerance", "promote"),
    [(100.0, 0.05, True), (104.9, 0.05, True), (105.1, 0.05, False), (120.0, 0.25, True)],
)
def test_rmse_tolerance_is_relative_to_champion(challenger_rmse, tolerance, promote):
    comparison = gate.ChampionComparison("v1", ["2023-11", "2023-12"], 100.0, challenger_rmse)
    decision = gate.decide({"r2": 0.9, "rmse": 1.0}, GateConfig(rmse_tolerance=tolerance), comparison)
    assert decision.promote is promote
    assert "champion v1 RMSE 100" in decision.reason and "2023-11..2023-12" in decision.reason
    assert decision.to_dict()["compared_on_months"] == ["2023-11", "2023-12"]


def test_comparison_uses_only_months_the_champion_never_saw(data):
    features, revenue = data
    champion = linear(features.iloc[:20], revenue.iloc[:20])
    challenger = linear(features.iloc[:18], revenue.iloc[:18])
    periods = monthly_period_data(features, revenue)
    comparison = gate.compare_with_champion("v1", champion, MONTHS[:20], challenger, periods, MONTHS[18:])
    assert comparison.months == MONTHS[20:]
    assert comparison.champion_rmse is not None and comparison.challenger_rmse is not None


def test_no_unseen_months_means_threshold_alone_and_says_so(data):
    features, revenue = data
    champion = linear(features, revenue)
    periods = monthly_period_data(features, revenue)
    comparison = gate.compare_with_champion("v1", champion, MONTHS, champion, periods, MONTHS[-4:])
    decision = gate.decide({"r2": 0.85, "rmse": 1.0}, GateConfig(), comparison)
    assert comparison.months == []
    assert decision.promote
    assert "not compared with champion v1" in decision.reason and "threshold alone decides" in decision.reason


def test_much_worse_challenger_is_rejected(data):
    features, revenue = data
    champion = linear(features.iloc[:18], revenue.iloc[:18])
    challenger = linear(features.iloc[:18], revenue.iloc[:18] * 0 + revenue.mean())
    periods = monthly_period_data(features, revenue)
    comparison = gate.compare_with_champion("v1", champion, MONTHS[:18], challenger, periods, MONTHS[18:])
    decision = gate.decide({"r2": 0.9, "rmse": 1.0}, GateConfig(), comparison)
    assert not decision.promote
    assert decision.reason.startswith("rejected: challenger RMSE")


def test_a_linear_champion_and_a_media_mix_challenger_are_scored_on_the_same_periods_each_with_its_own_spec():
    data, _ = mmm_period_data(simulate_mmm(5, 4, ["tv", "search"]), "month", "monthly")
    train = data.subset(data.periods[:-8])
    champion = model.fit_periods(train, OLS, intervals=False).spec
    config = ModelConfig(algorithm="mmm", mmm_decays=[0.0, 0.7, 0.9], mmm_half_saturations=[0.6, 2.5],
                         mmm_shapes=[1.0], mmm_alphas=[0.0], mmm_sweeps=1, bootstrap_replicates=0)
    challenger = model.fit_periods(train, config, intervals=False).spec

    comparison = gate.compare_with_champion("v1", champion, train.periods, challenger, data, data.periods[-8:])

    assert comparison.months == data.periods[-8:]
    actual, held = data.revenue[-8:], slice(-8, None)
    champion_rmse = float(np.sqrt(np.mean((model.predict_periods(champion, data)[held] - actual) ** 2)))
    challenger_rmse = float(np.sqrt(np.mean((model.predict_periods(challenger, data)[held] - actual) ** 2)))
    assert comparison.champion_rmse == pytest.approx(champion_rmse)
    assert comparison.challenger_rmse == pytest.approx(challenger_rmse)


def test_models_of_different_grains_are_not_compared(data):
    features, revenue = data
    spec = linear(features, revenue)
    comparison = gate.compare_with_champion("v1", spec, MONTHS[:12], spec, monthly_period_data(features, revenue),
                                            MONTHS[-4:], champion_grain="week")
    assert comparison.months == [] and "fitted on weeks" in comparison.note


def _changed_channels(data, champion_channels):
    features, revenue = data
    fitted = [c for c in champion_channels if c in features.columns]
    champion = linear(features[fitted].iloc[:20], revenue.iloc[:20])
    challenger = linear(features.iloc[:18], revenue.iloc[:18])
    return gate.compare_with_champion("v1", champion, MONTHS[:20], challenger,
                                      monthly_period_data(features, revenue), MONTHS[18:],
                                      champion_channels=champion_channels)


def test_a_challenger_with_another_channel_set_is_rejected_naming_the_channels_and_the_remedy(data):
    comparison = _changed_channels(data, ["email", "search_engine"])

    decision = gate.decide({"r2": 0.95, "rmse": 1.0}, GateConfig(rmse_tolerance=10.0), comparison)

    assert not decision.promote
    assert decision.reason.startswith("rejected: channel set differs from champion v1's: added video; "
                                      "removed search_engine")
    assert "gate.allow_channel_change = true" in decision.reason and "channels = email,search_engine" in decision.reason
    assert decision.to_dict()["channel_change"] == {"added": ["video"], "removed": ["search_engine"]}


def test_allow_channel_change_promotes_and_still_names_the_change(data):
    comparison = _changed_channels(data, ["email"])

    decision = gate.decide({"r2": 0.95, "rmse": 1.0}, GateConfig(rmse_tolerance=10.0, allow_channel_change=True),
                           comparison)

    assert decision.promote, decision.reason
    assert "added video; removed none (allowed by gate.allow_channel_change)" in decision.reason
    assert decision.to_dict()["allow_channel_change"] is True


def test_the_same_channel_set_in_another_order_is_no_change(data):
    comparison = _changed_channels(data, ["video", "email"])

    decision = gate.decide({"r2": 0.95, "rmse": 1.0}, GateConfig(rmse_tolerance=10.0), comparison)

    assert not comparison.channels_changed and "channel set" not in decision.reason
    assert decision.to_dict()["channel_change"] is None
# -- backtest: the champion saw too few of the holdout months ---------------------------------------------

def test_champion_settings_come_from_its_manifest():
    fallback = ModelConfig(ridge_alphas=[1.0, 10.0], cv_splits=4)
    ridge = gate.champion_model_config({"algorithm": "ridge", "positive": True,
                                        "hyperparameters": {"alpha": 100.0, "cv_splits": 3}}, fallback)
    legacy = gate.champion_model_config({}, fallback)

    assert (ridge.algorithm, ridge.positive, ridge.ridge_alphas, ridge.cv_splits) == ("ridge", True, [100.0], 3)
    assert (legacy.algorithm, legacy.positive) == ("ols", False)


def test_backtest_refits_the_champion_on_the_same_older_months_and_scores_both_on_the_holdout(data):
    features, revenue = data
    train, holdout = MONTHS[:18], MONTHS[18:]
    challenger = linear(features.loc[train], revenue.loc[train])
    manifest = {"algorithm": "ridge", "positive": False, "channels": ["email", "video"],
                "hyperparameters": {"alpha": 1000.0, "cv_splits": 3}}

    comparison = gate.backtest_with_champion("v1", manifest, challenger, monthly_period_data(features, revenue),
                                             train, holdout, ModelConfig())

    refitted, summary = model.fit(features.loc[train], revenue.loc[train],
                                  ModelConfig(algorithm="ridge", ridge_alphas=[1000.0], cv_splits=3))
    expected = gate.regression_scores(revenue.loc[holdout], model.predict(refitted, features.loc[holdout]))["rmse"]
    assert summary.hyperparameters["alpha"] == 1000.0  # its own alpha, not a new search
    assert comparison.method == "backtest" and comparison.months == holdout and comparison.fitted_on == train
    assert comparison.champion_rmse == pytest.approx(expected)
    challenger_rmse = gate.regression_scores(revenue.loc[holdout], model.predict(challenger, features.loc[holdout]))
    assert comparison.challenger_rmse == pytest.approx(challenger_rmse["rmse"])
    decision = gate.decide({"r2": 0.9, "rmse": 1.0}, GateConfig(), comparison)
    assert "by backtest (the champion's settings refitted on the same 18 months 2022-01..2023-06, both scored on " \
           "6 month(s) 2023-07..2023-12)" in decision.reason
    assert decision.to_dict()["comparison"] == "backtest"


def test_unseen_period_comparison_is_named_so(data):
    comparison = gate.ChampionComparison("v1", MONTHS[-3:], 100.0, 90.0)
    decision = gate.decide({"r2": 0.9, "rmse": 1.0}, GateConfig(), comparison)
    assert "on 3 month(s) 2023-10..2023-12 the champion never saw" in decision.reason
    assert decision.to_dict()["comparison"] == "unseen_periods"


def test_settings_that_cannot_be_refitted_leave_the_threshold_to_decide(data):
    features, revenue = data
    comparison = gate.backtest_with_champion("v1", {"algorithm": "ols"}, linear(features, revenue),
                                             monthly_period_data(features, revenue), MONTHS[:1], MONTHS[1:],
                                             ModelConfig())
    decision = gate.decide({"r2": 0.9, "rmse": 1.0}, GateConfig(), comparison)

    assert comparison.months == [] and decision.promote
    assert "its settings cannot be refitted" in decision.reason and "threshold alone decides" in decision.reason
    assert decision.to_dict()["comparison"] is None


def test_a_backtest_still_sees_a_channel_change(data):
    features, revenue = data
    challenger = linear(features.loc[MONTHS[:18]], revenue.loc[MONTHS[:18]])
    comparison = gate.backtest_with_champion("v1", {"algorithm": "ols", "channels": ["email"]}, challenger,
                                             monthly_period_data(features, revenue), MONTHS[:18], MONTHS[18:],
                                             ModelConfig())

    decision = gate.decide({"r2": 0.99, "rmse": 1.0}, GateConfig(), comparison)

    assert comparison.method == "backtest" and comparison.channels_added == ["video"]
    assert not decision.promote and "added video; removed none" in decision.reason
    assert decision.to_dict()["min_compare_periods"] == 3
