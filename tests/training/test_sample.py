"""The sample generator: file layout, determinism, and a truth that plain OLS recovers."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LinearRegression
from sklearn.metrics import r2_score

from training.cli import main
from training.config import SAMPLE_DATA, SAMPLE_RUN_DATE, ValidationConfig
from training.core.store import open_store
from training.ingest import ingest, training_data
from training.sample import CHANNELS, mmm_period_data, simulate_mmm, write_mmm_sample, write_sample
from training.validate import validate


def fit_and_score(root, holdout: int = 7) -> tuple[dict[str, float], float, float]:
    """Fit OLS on all but the last `holdout` months; return ROI per channel, intercept and holdout R²."""
    data = training_data(ingest(open_store(root), CHANNELS))
    x, y = data.features, data.revenue
    model = LinearRegression().fit(x.iloc[:-holdout], y.iloc[:-holdout])
    r2 = r2_score(y.iloc[-holdout:], model.predict(x.iloc[-holdout:]))
    return dict(zip(model.feature_names_in_, model.coef_, strict=True)), model.intercept_, r2


def test_write_sample_lays_out_spend_and_revenue_by_year(tmp_path):
    truth = write_sample(tmp_path, months=14, campaigns=1, seed=1, end_month="2026-02")

    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*.csv")) == [
        "revenue/2025.csv", "revenue/2026.csv", "spend/2025.csv", "spend/2026.csv"]
    assert (tmp_path / "spend/2025.csv").read_text().splitlines()[0] == \
        "CAMPAIGN,CHANNEL,DATE,TOTAL_CLICKS,TOTAL_COST,ADS_SERVED"
    revenue = (tmp_path / "revenue/2026.csv").read_text().splitlines()
    assert revenue[0] == "YEAR,MONTH,REVENUE"
    assert [line.split(",")[:2] for line in revenue[1:]] == [["2026", "1"], ["2026", "2"]]
    assert float(revenue[1].split(",")[2]) > truth["intercept"]
    assert truth["months"][0] == "2025-01" and truth["months"][-1] == "2026-02"
    assert truth["spend_rows"] == (365 + 59) * len(CHANNELS)  # one campaign runs every channel
    assert json.loads((tmp_path / "TRUTH.json").read_text()) == truth


def test_same_seed_same_bytes_other_seed_other_data(tmp_path):
    for name, seed in (("a", 5), ("b", 5), ("c", 6)):
        write_sample(tmp_path / name, months=3, campaigns=2, seed=seed)

    assert (tmp_path / "a/spend/2026.csv").read_bytes() == (tmp_path / "b/spend/2026.csv").read_bytes()
    assert (tmp_path / "a/spend/2026.csv").read_bytes() != (tmp_path / "c/spend/2026.csv").read_bytes()


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_plain_ols_recovers_the_truth(tmp_path, seed):
    truth = write_sample(tmp_path, months=36, campaigns=3, seed=seed)

    roi, intercept, r2 = fit_and_score(tmp_path)

    assert r2 > 0.9
    for channel in CHANNELS:
        assert roi[channel] == pytest.approx(truth["roi"][channel], rel=0.1)
    assert intercept == pytest.approx(truth["intercept"], rel=0.25)


def test_bundled_sample_is_small_fresh_valid_and_recoverable():
    """data/sample is `sample-data data/sample --process mmm` (monthly revenue, controls): the model recovers it."""
    from training import ingest as ingest_module
    from training.config import ModelConfig
    from training.mmm import fit_mmm

    truth = json.loads((SAMPLE_DATA / "TRUTH.json").read_text())
    raw = ingest(open_store(SAMPLE_DATA), CHANNELS)

    report = validate(raw, ValidationConfig(), SAMPLE_RUN_DATE)
    data = ingest_module.period_data(raw, "month", CHANNELS)
    fitted = fit_mmm(data, ModelConfig(), intervals=False)

    assert sum(p.stat().st_size for p in SAMPLE_DATA.rglob("*") if p.is_file()) < 1_000_000
    assert (truth["process"], truth["revenue_grain"], truth["channels"]) == ("mmm", "monthly", CHANNELS)
    # the only warning: the spend months before the first revenue month (the model's carryover warm-up)
    assert report.passed and report.summary()["warned"] == ["months_without_revenue"]
    assert data.periods[-1] == "2026-10" == truth["window_days"][1][:7] and len(data.periods) == 48
    assert list(data.controls.columns) == truth["controls"]
    for channel in CHANNELS:
        estimate = fitted.roi["channels"][channel]["roi"]
        assert 0.6 * truth["roi"][channel] < estimate < 1.6 * truth["roi"][channel], channel


@pytest.mark.parametrize(("kwargs", "field"), [({"months": 0}, "months=0"), ({"campaigns": 0}, "campaigns=0")])
def test_bad_arguments_are_rejected(tmp_path, kwargs, field):
    with pytest.raises(ValueError, match=field):
        write_sample(tmp_path, **{"months": 12, "campaigns": 1, "seed": 0, **kwargs})


# --- the media-mix process (`--process mmm`) ---------------------------------------------------------------

def test_mmm_sample_writes_spend_monthly_revenue_controls_and_truth(tmp_path):
    truth = write_mmm_sample(tmp_path, seed=3, years=2, channels=["TV", "search"])

    files = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*.csv"))
    assert files == ["controls/2024.csv", "controls/2025.csv", "controls/2026.csv", "revenue/2024.csv",
                     "revenue/2025.csv", "revenue/2026.csv", "spend/2024.csv", "spend/2025.csv", "spend/2026.csv"]
    spend = (tmp_path / "spend/2025.csv").read_text().splitlines()
    assert spend[0] == "CAMPAIGN,CHANNEL,DATE,TOTAL_CLICKS,TOTAL_COST,ADS_SERVED"
    assert {line.split(",")[1] for line in spend[1:]} == {"tv", "search"}
    revenue = (tmp_path / "revenue/2024.csv").read_text().splitlines()
    assert revenue[0] == "YEAR,MONTH,REVENUE" and revenue[1].startswith("2024,11,") and len(revenue) == 3
    assert (tmp_path / "controls/2025.csv").read_text().splitlines()[0] == "YEAR,MONTH,PRICE_INDEX,PROMO,HOLIDAY"
    assert truth["window"] == ["2024-11", "2026-10"] and truth["grain"] == "month"
    assert set(truth["roi"]) == set(truth["mroi"]) == {"tv", "search"}
    assert json.loads((tmp_path / "TRUTH.json").read_text()) == truth


def test_mmm_sample_with_daily_revenue_adds_up_to_the_simulated_days(tmp_path):
    write_mmm_sample(tmp_path, seed=4, years=1, revenue_grain="daily")
    sim = simulate_mmm(4, 1)

    rows = [line.split(",") for line in (tmp_path / "revenue/2026.csv").read_text().splitlines()]
    controls = (tmp_path / "controls/2026.csv").read_text().splitlines()

    assert rows[0] == ["DATE", "REVENUE"] and rows[1][0] == "2026-01-01" and rows[-1][0] == "2026-10-31"
    revenue_2026 = sim.revenue[sim.days >= np.datetime64("2026-01-01")]
    assert sum(float(r[1]) for r in rows[1:]) == pytest.approx(revenue_2026.sum(), rel=1e-9)
    assert controls[0] == "DATE,PRICE_INDEX,PROMO,HOLIDAY" and len(controls) == len(rows)


def test_mmm_truth_roi_is_contribution_over_spend_and_mroi_is_a_one_percent_resimulation():
    sim = simulate_mmm(5, 2, ["tv", "search", "email"])
    data, truth = mmm_period_data(sim, "week")
    effect = sim.media_effect()
    window = (sim.days >= np.datetime64(truth["window_days"][0])) & (sim.days <= np.datetime64(truth["window_days"][1]))

    for c, name in enumerate(sim.channels):
        assert truth["roi"][name] == pytest.approx(effect[window, c].sum() / sim.spend[window, c].sum())
        # diminishing returns: one more unit brings less than the average unit
        assert 0 < truth["mroi"][name] < truth["roi"][name]
    assert data.periods[0] == "2024-W45" and data.days.min() == 7
    assert truth["window_days"][0] == "2024-11-04"  # the first Monday of the revenue window


def test_mmm_period_data_follows_the_contract_for_both_grains():
    sim = simulate_mmm(6, 2, ["tv", "search"])

    monthly, _ = mmm_period_data(sim, "month", "monthly")
    weekly, _ = mmm_period_data(sim, "week", "daily")

    assert monthly.periods[0] == "2024-11" and len(monthly.periods) == 24
    assert list(monthly.controls.columns) == ["price_index", "promo", "holiday"]
    assert monthly.daily_spend.index[0] < pd.Timestamp("2024-11-01")  # carryover warm-up
    assert monthly.daily_spend.index[-1] == pd.Timestamp("2026-10-31")
    assert monthly.revenue.sum() == pytest.approx(np.nansum(sim.revenue), rel=1e-9)
    assert weekly.daily_spend.index[-1] == pd.Timestamp("2026-10-25")  # last complete ISO week ends on a Sunday
    assert monthly.period_spend().to_numpy().sum() == pytest.approx(sim.spend[sim.first_revenue_day:].sum())
    assert monthly.daily_revenue is None
    assert weekly.daily_revenue.reshape(-1, 7).sum(axis=1) == pytest.approx(weekly.revenue, rel=1e-12)
    assert weekly.daily_controls.groupby(np.arange(len(weekly.daily_revenue)) // 7).mean().to_numpy() == \
        pytest.approx(weekly.controls.to_numpy())
    with pytest.raises(ValueError, match="monthly revenue supports only grain 'month'"):
        mmm_period_data(sim, "week", "monthly")


def test_mmm_simulations_vary_with_the_seed_and_repeat_with_it():
    a, b, c = simulate_mmm(1, 1), simulate_mmm(1, 1), simulate_mmm(2, 1)

    assert np.array_equal(a.revenue, b.revenue, equal_nan=True) and np.array_equal(a.spend, b.spend)
    assert not np.allclose(a.decay, c.decay)
    assert np.corrcoef(a.spend[a.first_revenue_day:].sum(axis=1),
                       np.nan_to_num(a.revenue[a.first_revenue_day:]))[0, 1] > 0.3  # spend follows demand


def test_cli_writes_an_mmm_sample(tmp_path, capsys):
    code = main(["sample-data", str(tmp_path), "--process", "mmm", "--grain-revenue", "daily", "--years", "1",
                 "--channels", "tv,email", "--seed", "9"])

    assert code == 0
    assert "true ROI: tv" in capsys.readouterr().out
    assert json.loads((tmp_path / "TRUTH.json").read_text())["channels"] == ["tv", "email"]
    assert (tmp_path / "revenue/2026.csv").read_text().startswith("DATE,REVENUE\n")
