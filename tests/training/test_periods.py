from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from training.periods import PeriodData, period_keys


def _data() -> PeriodData:
    days = pd.date_range("2025-12-15", "2026-02-28", freq="D")
    spend = pd.DataFrame({"tv": 1.0, "search": 2.0}, index=days)
    controls = pd.DataFrame({"price": [1.0, 1.1]}, index=pd.Index(["2026-01", "2026-02"], name="period"))
    return PeriodData("month", ["2026-01", "2026-02"], spend, np.array([100.0, 90.0]), controls)


def test_period_keys_of_days_for_both_grains():
    days = pd.DatetimeIndex(["2026-12-31", "2027-01-04"])
    assert list(period_keys(days, "month")) == ["2026-12", "2027-01"]
    assert list(period_keys(days, "week")) == ["2026-W53", "2027-W01"]


def test_period_spend_sums_days_and_leaves_the_warm_up_out():
    data = _data()

    spend = data.period_spend()

    assert list(spend.index) == ["2026-01", "2026-02"]
    assert spend.loc["2026-01"].tolist() == [31.0, 62.0] and spend.loc["2026-02"].tolist() == [28.0, 56.0]
    assert data.days.tolist() == [31.0, 28.0] and data.channels == ["tv", "search"]


def test_subset_keeps_warm_up_days_and_cuts_after_the_last_period():
    part = _data().subset(["2026-01"])

    assert part.periods == ["2026-01"] and part.revenue.tolist() == [100.0]
    assert part.daily_spend.index[0] == pd.Timestamp("2025-12-15")
    assert part.daily_spend.index[-1] == pd.Timestamp("2026-01-31")
    assert part.controls["price"].tolist() == [1.0]


def test_mismatched_revenue_or_controls_are_refused():
    data = _data()
    with pytest.raises(ValueError, match="revenue: expected 2 values"):
        PeriodData("month", data.periods, data.daily_spend, np.array([1.0]))
    with pytest.raises(ValueError, match="controls: index must list the same periods"):
        PeriodData("month", data.periods, data.daily_spend, data.revenue, data.controls.iloc[::-1])
    with pytest.raises(ValueError, match="model.grain='day'"):
        PeriodData("day", data.periods, data.daily_spend, data.revenue)


def _daily_data() -> PeriodData:
    data = _data()
    days = data.window_days
    daily_controls = pd.DataFrame({"price": np.where(days.month == 1, 1.0, 1.1)}, index=days)
    return PeriodData("month", data.periods, data.daily_spend, data.revenue, data.controls,
                      np.arange(len(days), dtype=float), daily_controls)


def test_daily_revenue_covers_the_periods_days_and_follows_subset_and_channels():
    data = _daily_data()

    part = data.subset(["2026-02"])
    wider = data.with_channels(["tv", "search", "email"])

    assert len(data.window_days) == 59 and data.window_days[0] == pd.Timestamp("2026-01-01")
    assert part.daily_revenue.tolist() == list(np.arange(31.0, 59.0))
    assert part.daily_controls["price"].tolist() == [1.1] * 28 and part.controls_daily
    assert wider.daily_spend["email"].sum() == 0.0 and wider.daily_revenue is data.daily_revenue
    assert _data().daily_revenue is None and _data().daily_controls is None


def test_daily_revenue_or_controls_of_the_wrong_length_are_refused():
    data = _daily_data()
    with pytest.raises(ValueError, match="daily_revenue: expected 59 values"):
        PeriodData("month", data.periods, data.daily_spend, data.revenue, data.controls, np.ones(58))
    with pytest.raises(ValueError, match=r"daily_controls: expected 59 rows .* columns \['price'\]"):
        PeriodData("month", data.periods, data.daily_spend, data.revenue, data.controls, np.ones(59),
                   data.daily_controls.iloc[:10])
