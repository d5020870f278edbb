"""training/monitor.py: the prediction dispatch, realised performance against the promised band, drift."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from training import monitor
from training.config import MonitoringConfig
from training.core import artifact
from training.periods import PeriodData

MONTHS = [f"2025-{m:02d}" for m in range(1, 13)] + [f"2026-{m:02d}" for m in range(1, 5)]
SPEC = artifact.linear_spec("ols", ["email", "video"], 100.0, [2.0, 3.0])


def spend_table() -> pd.DataFrame:
    rng = np.random.default_rng(3)
    return pd.DataFrame(rng.uniform(10, 50, (len(MONTHS), 2)), index=MONTHS, columns=["email", "video"])


def manifest(months: list[str], cv_rmse: list[float] | None = None, holdout_rmse: float | None = 5.0) -> dict:
    return {"training": {"months": months},
            "metrics": {"cv": {"r2": [], "rmse": cv_rmse or []}, "holdout": {"rmse": holdout_rmse}}}


# -- predict --------------------------------------------------------------------------------------------

def test_linear_spec_predicts_intercept_plus_dot_product_in_its_channel_order():
    spend = spend_table()[["video", "email"]]  # column order differs from the spec's

    predicted = monitor.predict(SPEC, spend)

    assert predicted == pytest.approx(100 + 2 * spend["email"].to_numpy() + 3 * spend["video"].to_numpy())


def test_a_channel_the_data_lacks_spent_zero():
    spend = spend_table()[["email"]]
    assert monitor.predict(SPEC, spend) == pytest.approx(100 + 2 * spend["email"].to_numpy())


def as_periods(spend: pd.DataFrame, revenue: pd.Series) -> PeriodData:
    """Monthly spend booked on each month's first day, as the pipeline stages a month × channel table."""
    from tests.conftest import monthly_period_data

    return monthly_period_data(spend, revenue)


def test_period_data_is_summed_into_periods_before_a_linear_prediction():
    days = pd.date_range("2026-01-01", "2026-02-28", freq="D")
    daily = pd.DataFrame({"email": 1.0, "video": 2.0}, index=days)
    data = PeriodData("month", ["2026-01", "2026-02"], daily, np.array([0.0, 0.0]))

    assert monitor.predict(SPEC, data) == pytest.approx([100 + 31 * 2 + 62 * 3, 100 + 28 * 2 + 56 * 3])


def test_other_algorithms_go_through_their_registered_predictor(monkeypatch):
    spec = {"format": artifact.SPEC_FORMAT, "algorithm": "mmm", "channels": ["email"]}
    with pytest.raises(ValueError, match="algorithm='mmm': no predictor; expected one of ols, ridge"):
        monitor.predict(spec, spend_table())

    monkeypatch.setitem(monitor.PREDICTORS, "mmm", lambda s, data: np.full(len(data), 7.0))

    assert monitor.predict(spec, spend_table()).tolist() == [7.0] * len(MONTHS)


# -- realised performance -------------------------------------------------------------------------------

def test_unseen_periods_are_those_after_the_training_window():
    assert monitor.unseen_periods(MONTHS[:12], MONTHS) == MONTHS[12:]
    assert monitor.unseen_periods(MONTHS, MONTHS) == []
    assert monitor.unseen_periods([], MONTHS[:2]) == MONTHS[:2]


@pytest.mark.parametrize(("folds", "expected_limit", "basis"), [
    ([100.0, 100.0, 100.0], 150.0, "cv"),  # no spread: 1.5 × mean
    ([60.0, 100.0, 140.0], 100.0 + 2 * 40.0, "cv"),  # spread: mean + 2 sd (180 > 150)
    ([], 1.5 * 5.0, "holdout"),  # no CV folds: the holdout RMSE
])
def test_degradation_limit_is_the_larger_of_factor_and_sigma_bands(folds, expected_limit, basis):
    band = monitor.degradation_limit(manifest([], folds)["metrics"], MonitoringConfig())

    assert band.limit == pytest.approx(expected_limit) and band.basis == basis
    assert band.folds == len(folds)


def test_no_cv_and_no_holdout_means_no_band():
    assert monitor.degradation_limit({"cv": {"rmse": []}, "holdout": {"rmse": None}}, MonitoringConfig()) is None


def test_realised_performance_scores_the_champion_on_the_periods_it_never_saw():
    spend = spend_table()
    truth = 100 + 2 * spend["email"] + 3 * spend["video"]
    revenue = truth + pd.Series([0.0] * 12 + [4.0, -2.0, 6.0, 0.0], index=MONTHS)

    found = monitor.realised_performance("v1", manifest(MONTHS[:12], [10.0, 10.0]), SPEC, as_periods(spend, revenue),
                                         MonitoringConfig())

    errors = np.array([-4.0, 2.0, -6.0, 0.0])  # predicted − actual
    assert found.periods == MONTHS[12:]
    assert found.rmse == pytest.approx(np.sqrt(np.mean(errors ** 2)))
    assert found.bias == pytest.approx(errors.mean())
    actual = revenue.iloc[12:].to_numpy()
    assert found.mape == pytest.approx(np.mean(np.abs(errors / actual)))
    assert found.band.limit == pytest.approx(15.0) and not found.degraded
    assert "within the limit 15" in found.summary()
    assert monitor.RealisedPerformance.from_dict(found.to_dict()) == found


def test_realised_error_above_the_band_over_two_periods_is_degraded_but_one_period_is_not():
    spend = spend_table()
    revenue = 100 + 2 * spend["email"] + 3 * spend["video"] + 100.0  # the model is now 100 too low
    config = MonitoringConfig()

    two = monitor.realised_performance("v1", manifest(MONTHS[:14], [10.0]), SPEC, as_periods(spend, revenue), config)
    one = monitor.realised_performance("v1", manifest(MONTHS[:15], [10.0]), SPEC, as_periods(spend, revenue), config)

    assert two.degraded and two.rmse == pytest.approx(100.0) and two.bias == pytest.approx(-100.0)
    assert "DEGRADED: above the limit 15" in two.summary()
    assert one.rmse == pytest.approx(100.0) and not one.degraded  # min_realised_periods = 2


def test_a_champion_trained_on_every_period_is_not_scored():
    found = monitor.realised_performance("v1", manifest(MONTHS), SPEC, as_periods(spend_table(), pd.Series(1.0, index=MONTHS)),
                                         MonitoringConfig())
    assert found.periods == [] and found.rmse is None
    assert found.note == "no period after its training window (last 2026-04)"


# -- drift ----------------------------------------------------------------------------------------------

def test_drift_measures_share_outside_the_trained_range_and_shift_per_series():
    spend = pd.DataFrame({"email": [10.0, 20.0, 30.0, 25.0, 40.0], "video": [5.0] * 5},
                         index=["2026-01", "2026-02", "2026-03", "2026-04", "2026-05"])
    revenue = pd.Series([100.0, 110.0, 120.0, 115.0, 118.0], index=spend.index)
    controls = pd.DataFrame({"price": [1.0, 1.0, 2.0, 9.0, 9.0]}, index=spend.index)

    found = monitor.drift("v1", list(spend.index[:3]), spend, revenue, controls)

    assert found.new_periods == ["2026-04", "2026-05"] and found.train_periods == ["2026-01", "2026-02", "2026-03"]
    by_name = {s.name: s for s in found.series}
    assert [s.kind for s in found.series] == ["spend", "spend", "revenue", "control"]
    email = by_name["email"]
    assert (email.outside, email.outside_share) == (1, 0.5)  # 40 > 30
    assert email.shift == pytest.approx((32.5 - 20.0) / 10.0)  # training sd (ddof 1) of 10, 20, 30 is 10
    assert by_name["video"].shift is None and by_name["video"].outside_share == 0.0  # constant in training
    assert by_name["revenue"].outside_share == 0.0
    assert by_name["price"].outside_share == 1.0
    assert [s.name for s in found.flagged(0.5, 3.0)] == ["price"]  # 50% is not above 50%
    assert set(found.to_dict()["series"]) == {"email", "video", "revenue", "control:price"}


def test_months_without_revenue_have_no_mape_but_still_an_rmse():
    spend = spend_table()
    found = monitor.realised_performance("v1", manifest(MONTHS[:14]), SPEC, as_periods(spend, pd.Series(0.0, index=MONTHS)),
                                         MonitoringConfig())
    assert found.mape is None and found.rmse > 0 and "MAPE n/a (revenue 0)" in found.summary()
