"""Tests of training/model.py: coefficients in original units, OLS/ridge/positive, input errors."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LinearRegression, Ridge

from tests.conftest import monthly_period_data
from training import model
from training.config import ModelConfig

CHANNELS = ["email", "search_engine", "video"]
TRUE_ROI = np.array([3.0, 2.0, 1.5])


def monthly(n: int = 36, noise: float = 50.0, seed: int = 0) -> tuple[pd.DataFrame, pd.Series]:
    """Spend per channel per month and revenue = 500 + Σ ROI × spend + noise."""
    rng = np.random.default_rng(seed)
    months = [f"{2020 + i // 12}-{i % 12 + 1:02d}" for i in range(n)]
    features = pd.DataFrame(rng.uniform(1_000, 5_000, (n, len(CHANNELS))), index=months, columns=CHANNELS)
    revenue = pd.Series(500 + features.to_numpy() @ TRUE_ROI + rng.normal(0, noise, n), index=months)
    return features, revenue


def test_ols_recovers_marginal_roi_in_original_units():
    features, revenue = monthly()
    estimator, summary = model.fit(features, revenue, ModelConfig(algorithm="ols"))
    assert isinstance(estimator, LinearRegression)
    assert list(estimator.feature_names_in_) == CHANNELS
    assert summary.algorithm == "ols" and summary.hyperparameters == {}
    for channel, roi in zip(CHANNELS, TRUE_ROI, strict=True):
        assert summary.coefficients[channel] == pytest.approx(roi, abs=0.05)
    assert summary.intercept == pytest.approx(500, abs=200)


def test_ridge_picks_alpha_by_time_series_cv_and_keeps_units():
    features, revenue = monthly()
    config = ModelConfig(algorithm="ridge", ridge_alphas=[0.1, 1.0, 1e9], cv_splits=3)
    estimator, summary = model.fit(features, revenue, config)
    assert isinstance(estimator, Ridge)
    assert summary.hyperparameters["alpha"] in (0.1, 1.0)  # the absurd alpha loses the CV
    assert summary.hyperparameters["cv_splits"] == 3
    assert summary.coefficients["email"] == pytest.approx(3.0, abs=0.05)


@pytest.mark.parametrize("algorithm", ["ols", "ridge"])
def test_positive_gives_non_negative_roi(algorithm):
    features, revenue = monthly()
    revenue = revenue - 2.5 * features["video"]  # video now destroys revenue: unconstrained ROI -1
    _, free = model.fit(features, revenue, ModelConfig(algorithm=algorithm))
    _, constrained = model.fit(features, revenue, ModelConfig(algorithm=algorithm, positive=True))
    assert free.coefficients["video"] < -0.5
    assert all(v >= 0 for v in constrained.coefficients.values())
    assert constrained.positive is True


def test_predict_treats_missing_channel_as_zero_spend_and_round_trips():
    features, revenue = monthly()
    estimator, summary = model.fit(features, revenue, ModelConfig(algorithm="ols"))
    loaded = model.from_bytes(model.to_bytes(estimator))
    without_video = features.drop(columns=["video"])
    expected = summary.intercept + without_video.to_numpy() @ TRUE_ROI[:2]
    assert np.allclose(model.predict(loaded, without_video), expected, rtol=0.01)


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda f, r: (f.iloc[:, :0], r), "at least one channel"),
        (lambda f, r: (f.iloc[:1], r.iloc[:1]), "at least 2 months"),
        (lambda f, r: (f, r.iloc[:-1]), "expected 36 values"),
        (lambda f, r: (f.assign(email=f["email"].where(f.index != "2020-03")), r), "['email'] contain missing"),
        (lambda f, r: (f.assign(video="x"), r), "['video'] are not numeric"),
        (lambda f, r: (f, r.where(r.index != "2020-05")), "revenue: contains missing"),
        (lambda f, r: (f, r.iloc[::-1]), "same months in the same order"),
    ],
)
def test_bad_input_raises_actionable_value_error(mutate, message):
    features, revenue = monthly()
    bad_features, bad_revenue = mutate(features, revenue)
    with pytest.raises(ValueError) as info:
        model.fit(bad_features, bad_revenue, ModelConfig(algorithm="ols"))
    assert message in str(info.value)


def test_ridge_with_too_few_months_for_its_cv_names_the_setting():
    features, revenue = monthly(n=3)
    with pytest.raises(ValueError, match="model.cv_splits=3"):
        model.fit(features, revenue, ModelConfig(algorithm="ridge"))


# ---- fit_periods: one dispatch for ols, ridge and mmm ---------------------------------------------------

@pytest.mark.parametrize("algorithm", ["ols", "ridge"])
def test_linear_fit_on_periods_is_the_monthly_fit_and_fills_every_block(algorithm):
    features, revenue = monthly()
    config = ModelConfig(algorithm=algorithm, bootstrap_replicates=200)
    fitted = model.fit_periods(monthly_period_data(features, revenue), config)
    _, direct = model.fit(features, revenue, config)

    assert fitted.summary.coefficients == direct.coefficients and fitted.summary.intercept == direct.intercept
    assert set(fitted.blocks()) == {"roi", "response_curves", "decomposition"}
    roi = fitted.roi["channels"]
    for channel in CHANNELS:
        entry = roi[channel]
        assert entry["roi"] == entry["mroi"] == direct.coefficients[channel]
        assert entry["spend"] == pytest.approx(features[channel].sum())
        assert entry["contribution"] == pytest.approx(direct.coefficients[channel] * features[channel].sum())
        lo, hi = entry["roi_interval"]
        assert lo < entry["roi"] < hi and hi - lo < 0.2  # tight: the data is nearly noise-free
        curve = fitted.response_curves["channels"][channel]
        assert curve["form"] == "linear" and curve["parameters"]["coefficient"] == direct.coefficients[channel]
        assert curve["current_spend"] == pytest.approx(features[channel].iloc[-12:].mean())
        assert curve["points"]["revenue"] == pytest.approx(
            [direct.coefficients[channel] * s for s in curve["points"]["spend"]])
    dec = fitted.decomposition
    total = np.array(dec["base"]) + sum(np.array(v) for v in dec["channels"].values())
    assert total == pytest.approx(np.array(dec["fitted"]))
    assert dec["fitted"] == pytest.approx(list(model.predict_periods(fitted.spec, monthly_period_data(features, revenue))))
    assert fitted.intervals["method"].startswith("moving-block bootstrap") and fitted.n_parameters == 4


def test_intervals_are_reproducible_and_optional():
    data = monthly_period_data(*monthly())
    config = ModelConfig(algorithm="ols", bootstrap_replicates=50, seed=3)
    first, second = model.fit_periods(data, config), model.fit_periods(data, config)
    without = model.fit_periods(data, config, intervals=False)
    assert first.roi == second.roi
    assert without.roi["channels"]["email"]["roi_interval"] is None and without.intervals["method"] is None


def test_media_mix_fit_on_periods_describes_itself_like_the_linear_ones():
    from training.sample import mmm_period_data, simulate_mmm

    data, _ = mmm_period_data(simulate_mmm(2, 3, ["tv", "search"]), "month", "monthly")
    config = ModelConfig(algorithm="mmm", mmm_decays=[0.0, 0.7], mmm_half_saturations=[0.6, 2.5], mmm_shapes=[1.0],
                         mmm_alphas=[0.0], mmm_sweeps=1, bootstrap_replicates=20)
    fitted = model.fit_periods(data, config)
    assert fitted.summary.algorithm == "mmm" and fitted.summary.intercept is None
    # its summary's coefficients are the marginal ROI (what the metrics table's column means)
    assert fitted.summary.coefficients == {c: e["mroi"] for c, e in fitted.roi["channels"].items()}
    assert fitted.roi["channels"]["tv"]["roi_interval"] is not None
    assert fitted.intervals["replicates"] == 20 and fitted.intervals["transforms_reselected_per_replicate"]
    assert model.predict_periods(fitted.spec, data) == pytest.approx(np.array(fitted.decomposition["fitted"]))


@pytest.mark.parametrize(("algorithm", "fourier_order", "expected"), [("ols", 2, 5), ("ridge", 2, 5), ("mmm", 2, 13),
                                                                      ("mmm", 0, 9)])
def test_parameter_count_is_what_each_algorithm_fits(algorithm, fourier_order, expected):
    assert model.parameter_count(ModelConfig(algorithm=algorithm, fourier_order=fourier_order), 4, 3) == expected
