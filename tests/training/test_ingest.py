"""Ingest against a local folder and fake-gcs-server: monthly totals, findings, fingerprint, training data."""

from __future__ import annotations

import glob
import gzip
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from training import ingest as ing
from training.config import SAMPLE_RUN_DATE, ValidationConfig
from training.core.errors import ConfigError, ObjectChanged
from training.core.store import open_store
from training.sample import CHANNELS
from training.validate import validate


def upload(source: Path, store_uri: str):
    """Copy every file of a data folder into the store at `store_uri` and return the store."""
    store = open_store(store_uri)
    for path in sorted(source.rglob("*.csv")):
        store.write(path.relative_to(source).as_posix(), path.read_bytes())
    return store


def expected_monthly(root: Path) -> pd.DataFrame:
    """The naive way: read every spend file with pandas, sum per month and channel."""
    spend = pd.concat(pd.read_csv(f) for f in sorted(glob.glob(str(root / "spend" / "*.csv"))))
    spend["month"] = spend["DATE"].str[:7]
    return spend.pivot_table(index="month", columns="CHANNEL", values="TOTAL_COST", aggfunc="sum",
                             fill_value=0.0).rename_axis(index="month", columns=None)


def test_ingest_sums_each_month_and_channel_on_each_backend(sample_dir, store_uri):
    store = upload(sample_dir, store_uri)

    raw = ing.ingest(store, CHANNELS)

    assert raw.spend_files == ["spend/2024.csv", "spend/2025.csv", "spend/2026.csv"]
    assert raw.revenue_files == ["revenue/2024.csv", "revenue/2025.csv", "revenue/2026.csv"]
    pd.testing.assert_frame_equal(raw.monthly_spend, expected_monthly(sample_dir), check_exact=False, rtol=1e-12)
    assert raw.spend_rows == 730 * 6 and raw.revenue_rows == 24
    assert {f.count for f in raw.findings.values()} == {0}
    assert [o["key"] for o in raw.objects] == raw.spend_files + raw.revenue_files
    assert all(o["generation"] and o["checksum"] and o["size"] for o in raw.objects)
    assert raw.bytes_read == sum(p.stat().st_size for p in sample_dir.rglob("*.csv"))


@pytest.mark.parametrize("rewritten", ["spend/2025.csv", "revenue/2024.csv"])
def test_a_file_rewritten_after_listing_fails_ingest_naming_it(sample_dir, store_uri, monkeypatch, rewritten):
    store = upload(sample_dir, store_uri)
    listed = ing.InputSnapshot.__init__

    def listed_then_rewritten(self, store, infos):
        listed(self, store, infos)
        store.write(rewritten, store.read(rewritten))  # same bytes, new generation: another writer's upload

    monkeypatch.setattr(ing.InputSnapshot, "__init__", listed_then_rewritten)

    with pytest.raises(ObjectChanged, match=f"{rewritten} changed while the run read it"):
        ing.ingest(store)


@pytest.mark.parametrize("when", ["after listing", "while reading"])
def test_a_local_file_rewritten_in_place_by_hand_fails_ingest(sample_dir, when, monkeypatch):
    store = open_store(str(sample_dir))
    path = sample_dir / "spend" / "2025.csv"
    text = path.read_bytes()
    snapshot_init, snapshot_open = ing.InputSnapshot.__init__, ing.InputSnapshot.open_read

    def rewrite() -> None:
        with open(path, "r+b") as fh:  # in place: same file, same inode, only the first half of the rows
            fh.truncate(0)
            fh.write(text[: len(text) // 2])

    def listed_then_rewritten(self, store, infos):
        snapshot_init(self, store, infos)
        rewrite()

    def opened_then_rewritten(self, key):
        fh = snapshot_open(self, key)
        if key == "spend/2025.csv":
            rewrite()
        return fh

    if when == "after listing":
        monkeypatch.setattr(ing.InputSnapshot, "__init__", listed_then_rewritten)
    else:
        monkeypatch.setattr(ing.InputSnapshot, "open_read", opened_then_rewritten)

    with pytest.raises(ObjectChanged, match="spend/2025.csv changed while the run read it"):
        ing.ingest(store)


def test_fingerprint_is_stable_and_follows_content(sample_dir, store_uri):
    store = upload(sample_dir, store_uri)
    first = ing.ingest(store).fingerprint

    assert ing.ingest(store).fingerprint == first
    store.write("revenue/2026.csv", store.read("revenue/2026.csv") + b"2026,11,1.0\n")
    assert ing.ingest(store).fingerprint != first


def test_training_data_joins_revenue_and_leaves_out_months_without_it(sample_dir):
    lines = (sample_dir / "revenue/2026.csv").read_text().splitlines()
    (sample_dir / "revenue/2026.csv").write_text("\n".join(lines[:-1]) + "\n")  # drop 2026-10
    raw = ing.ingest(open_store(sample_dir), CHANNELS)

    data = ing.training_data(raw)

    assert data.channels == CHANNELS and list(data.features.columns) == CHANNELS
    assert list(data.features.index) == sorted(data.features.index)
    assert data.features.index[0] == "2024-11" and data.features.index[-1] == "2026-09"
    assert data.months_without_revenue == ["2026-10"]
    assert list(data.revenue.index) == list(data.features.index)
    assert data.revenue["2025-01"] == pd.read_csv(sample_dir / "revenue/2025.csv")["REVENUE"].iloc[0]
    assert data.fingerprint == raw.fingerprint and data.objects == raw.objects
    assert (data.spend_rows, data.revenue_rows) == (730 * 6, 23)
    assert data.features.dtypes.map(str).unique().tolist() == ["float64"]


def test_headers_are_case_insensitive_in_any_order_with_extra_columns(tmp_path):
    (tmp_path / "spend").mkdir()
    (tmp_path / "revenue").mkdir()
    (tmp_path / "spend/a.csv").write_text(
        "\ufeffdate,Total_Cost,note,Channel\n2026-01-03,10.5,x,Email\n2026-01-09,4.5,y, email\n2026-02-01,2,,VIDEO\n")
    (tmp_path / "revenue/r.csv").write_text("month,Year,REVENUE,extra\n1,2026,100,a\n2,2026,50,b\n")

    raw = ing.ingest(open_store(tmp_path))
    data = ing.training_data(raw)

    assert data.features.to_dict() == {"email": {"2026-01": 15.0, "2026-02": 0.0},
                                       "video": {"2026-01": 0.0, "2026-02": 2.0}}
    assert data.revenue.to_dict() == {"2026-01": 100.0, "2026-02": 50.0}


def test_configured_channels_fix_the_column_order_and_fill_zeros(sample_dir):
    data = ing.training_data(ing.ingest(open_store(sample_dir), ["video", "email", "search_engine",
                                                                 "social_media", "tv"]))

    assert list(data.features.columns) == ["video", "email", "search_engine", "social_media", "tv"]
    assert (data.features["tv"] == 0.0).all()


def test_many_small_batches_and_threads_give_the_same_totals_and_lines(sample_dir, monkeypatch):
    path = sample_dir / "spend/2026.csv"
    lines = path.read_text().splitlines()
    lines[1000] = lines[1000].rsplit(",", 2)[0] + ",-1.0," + lines[1000].rsplit(",", 1)[1]
    path.write_text("\n".join(lines) + "\n")
    whole = ing.ingest(open_store(sample_dir))
    monkeypatch.setattr(ing, "BLOCK_SIZE", 4096)
    monkeypatch.setattr(ing, "READ_THREADS", 1)

    batched = ing.ingest(open_store(sample_dir))

    pd.testing.assert_frame_equal(batched.monthly_spend, whole.monthly_spend, check_exact=False, rtol=1e-12)
    for raw in (whole, batched):
        negative = raw.findings[ing.NEGATIVE_VALUES]
        assert (negative.count, negative.examples[0]["file"], negative.examples[0]["line"]) == (
            1, "spend/2026.csv", 1001)


def test_a_bad_number_is_located_and_the_rest_of_the_file_still_counts(sample_dir, sample_template, store_uri):
    path = sample_dir / "spend/2025.csv"
    lines = path.read_text().splitlines()
    campaign, channel, day, clicks, cost, ads = lines[99].split(",")
    lines[99] = ",".join([campaign, channel, day, clicks, "12x", ads])
    path.write_text("\n".join(lines) + "\n")

    raw = ing.ingest(upload(sample_dir, store_uri))

    bad = raw.findings[ing.UNPARSEABLE_VALUES]
    assert (bad.count, bad.examples[0]["file"], bad.examples[0]["line"]) == (1, "spend/2025.csv", 100)
    assert bad.examples[0]["values"]["total_cost"] == "12x"
    clean = ing.ingest(open_store(sample_template)).monthly_spend
    assert raw.monthly_spend.loc[day[:7], channel] == pytest.approx(clean.loc[day[:7], channel] - float(cost))
    assert raw.spend_rows == 730 * 6


def test_header_only_and_empty_files_are_read_as_no_rows(tmp_path):
    (tmp_path / "spend").mkdir()
    (tmp_path / "revenue").mkdir()
    (tmp_path / "spend/empty.csv").write_text("CAMPAIGN,CHANNEL,DATE,TOTAL_CLICKS,TOTAL_COST,ADS_SERVED\n")
    (tmp_path / "revenue/empty.csv").write_text("")

    raw = ing.ingest(open_store(tmp_path))

    assert (raw.spend_rows, raw.revenue_rows, len(raw.monthly_spend)) == (0, 0, 0)
    assert raw.findings[ing.MISSING_COLUMNS].count == 0
    empty = raw.findings[ing.UNREADABLE_FILES]  # the empty revenue file has no header at all: said so
    assert (empty.count, empty.examples[0]["file"], empty.examples[0]["line"]) == (1, "revenue/empty.csv", 1)
    assert empty.examples[0]["values"]["found"] == "an empty file (0 bytes)"
    assert ing.training_data(raw).features.empty


def test_duplicates_across_files_and_without_campaign_column(tmp_path):
    (tmp_path / "spend").mkdir()
    (tmp_path / "spend/a.csv").write_text("CHANNEL,DATE,TOTAL_COST\nemail,2026-01-01,1\nvideo,2026-01-01,2\n")
    (tmp_path / "spend/b.csv").write_text("CHANNEL,DATE,TOTAL_COST\nvideo,2026-01-02,2\nvideo,2026-01-01,3\n"
                                          ",2026-01-01,3\n,2026-01-01,3\n")

    raw = ing.ingest(open_store(tmp_path))

    dup = raw.findings[ing.DUPLICATE_ROWS]
    assert dup.count == 1  # rows without a channel are never duplicates of each other
    assert dup.examples == [{"file": "spend/b.csv", "line": 3, "values": {
        "campaign": None, "channel": "video", "date": "2026-01-01", "first_seen": "spend/a.csv:3"}}]
    assert raw.findings[ing.NULL_VALUES_RULE].count == 2


@pytest.mark.parametrize("other_bad", ["", "oops"])  # "" keeps the fast numeric path, "oops" forces text
def test_costs_with_spaces_count_and_infinite_costs_are_unparseable(tmp_path, other_bad):
    (tmp_path / "spend").mkdir()
    rows = ["email,2026-01-01, 2.5 ", "email,2026-01-02,inf", "email,2026-01-03,1"]
    rows += [f"video,2026-01-04,{other_bad}"] if other_bad else []
    (tmp_path / "spend/a.csv").write_text("CHANNEL,DATE,TOTAL_COST\n" + "\n".join(rows) + "\n")

    raw = ing.ingest(open_store(tmp_path))

    bad = raw.findings[ing.UNPARSEABLE_VALUES]
    assert [e["line"] for e in bad.examples] == [3, 5][: 1 + bool(other_bad)]
    assert raw.monthly_spend.loc["2026-01", "email"] == 3.5


def test_csv_gz_files_are_read_like_their_plain_text(sample_dir, sample_template, store_uri):
    for name in ("spend/2025.csv", "revenue/2025.csv"):
        path = sample_dir / name
        (sample_dir / f"{name}.gz").write_bytes(gzip.compress(path.read_bytes()))
        path.unlink()
    store = open_store(store_uri)
    for path in sorted(p for p in sample_dir.rglob("*") if p.is_file()):
        store.write(path.relative_to(sample_dir).as_posix(), path.read_bytes())

    raw = ing.ingest(store, CHANNELS)
    plain = ing.ingest(open_store(sample_template), CHANNELS)

    assert raw.spend_files == ["spend/2024.csv", "spend/2025.csv.gz", "spend/2026.csv"]
    assert raw.revenue_files == ["revenue/2024.csv", "revenue/2025.csv.gz", "revenue/2026.csv"]
    assert {f.count for f in raw.findings.values()} == {0}
    pd.testing.assert_frame_equal(raw.monthly_spend, plain.monthly_spend)
    pd.testing.assert_series_equal(raw.revenue_by_month(), plain.revenue_by_month())
    assert raw.spend_rows == plain.spend_rows and "spend/2025.csv.gz" in [o["key"] for o in raw.objects]


def test_a_damaged_csv_gz_is_named_not_dropped(sample_dir):
    data = gzip.compress((sample_dir / "spend/2025.csv").read_bytes())
    (sample_dir / "spend/2025.csv").unlink()
    (sample_dir / "spend/2025.csv.gz").write_bytes(data[: len(data) // 2])  # cut short in transfer
    (sample_dir / "revenue/2026.csv.gz").write_bytes(gzip.compress(b"YEAR,MONTH,REVENUE\n2026,1,5\n")[:-12])

    raw = ing.ingest(open_store(sample_dir))

    found = {e["file"]: e["values"]["found"] for e in raw.findings[ing.UNREADABLE_FILES].examples}
    assert set(found) == {"spend/2025.csv.gz", "revenue/2026.csv.gz"}
    assert all("damaged gzip" in text for text in found.values())


def test_a_csv_gz_served_decompressed_is_read_as_text(sample_dir, sample_template):
    """GCS serves an object uploaded with Content-Encoding: gzip decompressed (decompressive transcoding)."""
    (sample_dir / "revenue/2025.csv").rename(sample_dir / "revenue/2025.csv.gz")

    raw = ing.ingest(open_store(sample_dir))

    assert {f.count for f in raw.findings.values()} == {0}
    pd.testing.assert_series_equal(raw.revenue_by_month(), ing.ingest(open_store(sample_template)).revenue_by_month())


def test_the_store_files_of_a_local_data_folder_are_not_findings(sample_dir):
    open_store(sample_dir).write("spend/2027.csv", b"CHANNEL,DATE,TOTAL_COST\n")  # keeps a .generations/ file

    raw = ing.ingest(open_store(sample_dir))

    assert raw.findings[ing.IGNORED_FILES].count == 0


# ---- daily spend, daily revenue, controls and periods (issue 8) ------------------------------------------

def daily_revenue_from_monthly(root: Path, first_day: str | None = None, last_day: str | None = None) -> None:
    """Replace revenue/*.csv by one daily file spreading each month's revenue evenly over its days."""
    monthly = pd.concat(pd.read_csv(f) for f in sorted((root / "revenue").glob("*.csv")))
    rows = []
    for year, month, revenue in monthly[["YEAR", "MONTH", "REVENUE"]].itertuples(index=False):
        days = pd.date_range(f"{int(year):04d}-{int(month):02d}-01", periods=1, freq="MS")[0]
        for day in pd.date_range(days, days + pd.offsets.MonthEnd(0), freq="D"):
            rows.append((day.strftime("%Y-%m-%d"), revenue / days.days_in_month))
    for path in (root / "revenue").glob("*.csv"):
        path.unlink()
    frame = pd.DataFrame(rows, columns=["DATE", "REVENUE"])
    frame = frame[(frame["DATE"] >= (first_day or "")) & (frame["DATE"] <= (last_day or "9999"))]
    frame.to_csv(root / "revenue" / "daily.csv", index=False)


def test_daily_spend_is_the_sum_per_day_and_channel_and_adds_up_to_the_months(sample_dir, monkeypatch):
    raw = ing.ingest(open_store(sample_dir), CHANNELS)
    spend = pd.concat(pd.read_csv(f) for f in sorted((sample_dir / "spend").glob("*.csv")))
    expected = spend.pivot_table(index="DATE", columns="CHANNEL", values="TOTAL_COST", aggfunc="sum", fill_value=0.0)
    monkeypatch.setattr(ing, "BLOCK_SIZE", 4096)
    batched = ing.ingest(open_store(sample_dir), CHANNELS)

    assert list(raw.daily_spend.index.strftime("%Y-%m-%d")) == list(expected.index)
    assert list(raw.daily_spend.columns) == sorted(CHANNELS)
    assert abs(raw.daily_spend.to_numpy() - expected[sorted(CHANNELS)].to_numpy()).max() < 1e-6
    pd.testing.assert_frame_equal(ing.monthly_from_daily(raw.daily_spend), raw.monthly_spend, rtol=1e-12)
    pd.testing.assert_frame_equal(batched.daily_spend, raw.daily_spend, rtol=1e-12)


def test_daily_revenue_gives_the_same_monthly_table_as_monthly_revenue(sample_dir, sample_template):
    daily_revenue_from_monthly(sample_dir, first_day="2024-11-11")  # the first month is incomplete

    raw = ing.ingest(open_store(sample_dir), CHANNELS)
    monthly = ing.training_data(ing.ingest(open_store(sample_template), CHANNELS))
    data = ing.training_data(raw)

    assert raw.revenue_form == ing.DAILY and raw.revenue_rows == len(raw.daily_revenue())
    assert {f.count for f in raw.findings.values()} == {0}
    assert list(data.features.index) == list(monthly.features.index[1:])  # 2024-11 has 20 of 30 days
    pd.testing.assert_series_equal(data.revenue, monthly.revenue.iloc[1:], rtol=1e-9)


def test_mixing_daily_and_monthly_revenue_is_a_named_failure(sample_dir):
    lines = (sample_dir / "revenue/2026.csv").read_text().splitlines()
    (sample_dir / "revenue/2026.csv").write_text("DATE,REVENUE\n2026-01-01,100\n")

    raw = ing.ingest(open_store(sample_dir))

    mixed = raw.findings[ing.MIXED_FORMS]
    assert (mixed.count, mixed.examples[0]["file"], mixed.examples[0]["line"]) == (1, "revenue/2026.csv", 1)
    assert "DATE, REVENUE (daily)" in mixed.examples[0]["values"]["found"]
    assert "revenue/2024.csv" in mixed.examples[0]["values"]["expected"] and len(lines) > 1


def test_period_data_at_month_grain_matches_the_monthly_table(sample_dir):
    raw = ing.ingest(open_store(sample_dir), CHANNELS)

    periods = ing.period_data(raw, "month", CHANNELS)
    table = ing.training_data(raw)

    assert periods.grain == "month" and periods.channels == CHANNELS
    assert periods.periods == list(table.features.index)
    assert periods.revenue.tolist() == table.revenue.tolist()
    pd.testing.assert_frame_equal(periods.period_spend(), table.features, rtol=1e-12, check_names=False)
    days = periods.daily_spend.index
    assert days[0] == raw.daily_spend.index[0] and (days[1:] - days[:-1]).days.max() == 1
    assert periods.controls.empty and list(periods.controls.index) == periods.periods


def test_period_data_at_week_grain_drops_and_reports_partial_edge_weeks(sample_dir):
    daily_revenue_from_monthly(sample_dir, first_day="2024-11-06")  # a Wednesday: week 2024-W45 is partial
    raw = ing.ingest(open_store(sample_dir), CHANNELS)

    plan = ing.plan_periods(raw, "week")
    data = ing.period_data(raw, "week", CHANNELS)
    report = validate(raw, ValidationConfig(), SAMPLE_RUN_DATE, "week")

    assert plan.partial == {"2024-W45": "5 of 7 days of revenue", "2026-W44": "6 of 7 days of revenue"}
    assert data.periods[0] == "2024-W46" and data.periods[-1] == "2026-W43" and len(data.periods) == 102
    assert (data.days == 7).all()
    daily = raw.daily_revenue()
    assert data.revenue[0] == pytest.approx(daily["2024-11-11":"2024-11-17"].sum(), rel=1e-12)
    partial = next(r for r in report.results if r.rule == "partial_periods")
    assert partial.status == "warn" and "2024-W45: 5 of 7 days of revenue" in partial.message
    assert report.passed


def test_week_grain_with_monthly_revenue_fails_validation_and_period_data(sample_dir):
    raw = ing.ingest(open_store(sample_dir), CHANNELS)

    report = validate(raw, ValidationConfig(), SAMPLE_RUN_DATE, "week")

    found = next(r for r in report.results if r.rule == "grain_mismatch")
    assert found.status == "fail" and "needs daily revenue (DATE, REVENUE)" in found.message
    with pytest.raises(ConfigError, match="model.grain"):
        ing.period_data(raw, "week")


def write_controls(root: Path, name: str, text: str) -> None:
    (root / "controls").mkdir(exist_ok=True)
    (root / "controls" / name).write_text(text)


def daily_controls(first: str, last: str, price: Any = None, promo: Any = None) -> str:
    days = pd.date_range(first, last, freq="D")
    price = price or (lambda d: 100 + d.month)
    promo = promo or (lambda d: int(d.day == 1))
    return "DATE,Price_Index,PROMO\n" + "".join(f"{d:%Y-%m-%d},{price(d)},{promo(d)}\n" for d in days)


def test_controls_are_averaged_into_periods_unless_summed(sample_dir):
    write_controls(sample_dir, "daily.csv", daily_controls("2024-10-01", "2026-10-31"))
    months = pd.period_range("2024-10", "2026-10", freq="M")
    write_controls(sample_dir, "monthly.csv", "YEAR,MONTH,competitor\n" + "".join(
        f"{p.year},{p.month},{p.month * 10}\n" for p in months))

    raw = ing.ingest(open_store(sample_dir), CHANNELS, ing.ReadOptions(controls_aggregate={"promo": "sum"}))
    data = ing.period_data(raw, "month", CHANNELS)

    assert {f.count for f in raw.findings.values()} == {0} and raw.control_files == [
        "controls/daily.csv", "controls/monthly.csv"]
    assert list(data.controls.columns) == ["price_index", "promo", "competitor"]
    assert data.controls.loc["2025-03"].tolist() == [103.0, 1.0, 30.0]
    assert ing.control_gaps(raw) == {}
    weekly = ing.period_data(raw, "month", CHANNELS)
    assert list(weekly.controls.index) == weekly.periods


def test_daily_revenue_and_daily_controls_give_the_days_of_a_fit_on_days(sample_dir):
    daily_revenue_from_monthly(sample_dir)
    write_controls(sample_dir, "daily.csv", daily_controls("2024-10-01", "2026-10-31"))
    raw = ing.ingest(open_store(sample_dir), CHANNELS, ing.ReadOptions(controls_aggregate={"promo": "sum"}))

    data = ing.period_data(raw, "week", CHANNELS)

    days = data.window_days
    assert data.controls_daily and len(data.daily_revenue) == len(days) == 7 * len(data.periods)
    assert data.daily_revenue.sum() == pytest.approx(data.revenue.sum())
    # each control's daily terms sum, per period, to the period's value × its days (the base design's column)
    sums = data.daily_controls.groupby(np.repeat(np.arange(len(data.periods)), 7)).sum()
    assert sums.to_numpy() == pytest.approx(data.controls.to_numpy() * 7)
    assert data.daily_controls.loc["2025-03-01", "promo"] == 7  # the 1st of the month, summed, × 7 days


def test_monthly_revenue_has_no_days_to_fit_on(sample_dir):
    data = ing.period_data(ing.ingest(open_store(sample_dir), CHANNELS), "month", CHANNELS)

    assert data.daily_revenue is None and data.daily_controls is None


def test_a_monthly_control_at_week_grain_gives_each_day_its_month_and_is_not_daily(sample_dir):
    daily_revenue_from_monthly(sample_dir)
    months = pd.period_range("2024-11", "2026-10", freq="M")
    write_controls(sample_dir, "monthly.csv", "YEAR,MONTH,competitor\n" + "".join(
        f"{p.year},{p.month},{70 if p.month == 2 else 0}\n" for p in months))

    data = ing.period_data(ing.ingest(open_store(sample_dir), CHANNELS), "week", CHANNELS)

    assert data.controls.loc["2025-W09", "competitor"] == pytest.approx(70 * 5 / 7)  # Feb 24 - Mar 2, 2025
    # a control given per month holds its month's value on every day: the controls are not daily
    assert not data.controls_daily and data.daily_controls.loc["2025-02-27", "competitor"] == 70


def test_control_problems_fail_with_file_and_line(sample_dir):
    text = daily_controls("2024-11-01", "2026-10-31").splitlines()
    text[5] = text[5].rsplit(",", 1)[0] + ",lots"
    del text[40]  # 2024-12-10 has no value
    write_controls(sample_dir, "daily.csv", "\n".join(text + [text[7]]) + "\n")

    raw = ing.ingest(open_store(sample_dir), CHANNELS)
    report = validate(raw, ValidationConfig(), SAMPLE_RUN_DATE)

    failed = {r.rule: r for r in report.failed()}
    assert set(failed) == {"unparseable_values", "duplicate_control_periods", "control_gaps"}
    assert (failed["unparseable_values"].examples[0]["file"], failed["unparseable_values"].examples[0]["line"]) == (
        "controls/daily.csv", 6)
    assert failed["unparseable_values"].examples[0]["values"]["promo"] == "lots"
    assert failed["duplicate_control_periods"].examples[0]["values"]["first_seen"] == "controls/daily.csv:8"
    assert "price_index: 2024-11-05, 2024-12-10" in failed["control_gaps"].message


def test_channel_aliases_map_renamed_channels_after_lower_casing(tmp_path):
    (tmp_path / "spend").mkdir()
    (tmp_path / "spend/a.csv").write_text("CHANNEL,DATE,TOTAL_COST\nsocial_media,2026-01-01,1\n"
                                          "Paid Social,2026-01-02,2\n PAID SOCIAL ,2026-01-03,4\nTikTok,2026-01-03,8\n")
    options = ing.ReadOptions(channels=("social_media", "email"),
                              channel_aliases=ing.normalise_aliases({"Paid Social": "Social_Media"}))

    raw = ing.ingest(open_store(tmp_path), options=options)

    assert raw.monthly_spend.loc["2026-01", "social_media"] == 7.0
    assert raw.daily_spend["social_media"].tolist() == [1.0, 2.0, 4.0]
    unknown = raw.findings[ing.UNKNOWN_CHANNELS]
    assert (unknown.count, unknown.examples[0]["values"]["channel"], unknown.examples[0]["line"]) == (1, "TikTok", 5)


def test_another_reader_builds_the_same_raw_data_from_daily_sums(sample_dir):
    """What a BigQuery reader would return: day × channel sums, revenue rows, findings, its tables as objects."""
    csv = ing.ingest(open_store(sample_dir), CHANNELS)

    raw = ing.RawData.build(
        store_uri="bq://project.dataset", channels=list(CHANNELS), spend_files=["spend"], revenue_files=["revenue"],
        objects=[{"key": "spend", "generation": 1, "checksum": "2026-11-01T00:00:00Z:4380", "size": 0}],
        spend_rows=csv.spend_rows, revenue_rows=csv.revenue_rows, bytes_read=0, revenue=csv.revenue,
        findings=ing.new_findings(), daily_spend=csv.daily_spend)

    pd.testing.assert_frame_equal(raw.monthly_spend, csv.monthly_spend, rtol=1e-12)
    assert validate(raw, ValidationConfig(), SAMPLE_RUN_DATE).passed
    assert ing.period_data(raw, "month", CHANNELS).periods == ing.period_data(csv, "month", CHANNELS).periods
    assert len(raw.fingerprint) == 64 and raw.fingerprint != csv.fingerprint
