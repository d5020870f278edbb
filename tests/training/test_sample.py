"""The sample generator: file layout, determinism, and a truth that plain OLS recovers."""

from __future__ import annotations

import json

import pytest
from sklearn.linear_model import LinearRegression
from sklearn.metrics import r2_score

from training.config import SAMPLE_DATA, SAMPLE_RUN_DATE, ValidationConfig
from training.ingest import ingest, training_data
from training.sample import CHANNELS, write_sample
from training.core.store import open_store
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
    truth = json.loads((SAMPLE_DATA / "TRUTH.json").read_text())
    raw = ingest(open_store(SAMPLE_DATA), CHANNELS)

    report = validate(raw, ValidationConfig(), SAMPLE_RUN_DATE)
    roi, _, r2 = fit_and_score(SAMPLE_DATA)

    assert sum(p.stat().st_size for p in SAMPLE_DATA.rglob("*") if p.is_file()) < 1_000_000
    assert report.passed and not report.summary()["warned"]
    assert training_data(raw).features.index[-1] == truth["months"][-1] == "2026-10"
    assert len(truth["months"]) == 36
    assert r2 > 0.8
    for channel in CHANNELS:
        assert roi[channel] == pytest.approx(truth["roi"][channel], rel=0.1)


@pytest.mark.parametrize(("kwargs", "field"), [({"months": 0}, "months=0"), ({"campaigns": 0}, "campaigns=0")])
def test_bad_arguments_are_rejected(tmp_path, kwargs, field):
    with pytest.raises(ValueError, match=field):
        write_sample(tmp_path, **{"months": 12, "campaigns": 1, "seed": 0, **kwargs})
