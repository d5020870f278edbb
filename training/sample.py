"""Synthetic input data in the users' file layout, with a known truth to recover.

`write_sample(store, months, campaigns, seed)` writes `spend/<year>.csv` (daily rows per campaign and
channel) and `revenue/<year>.csv` (one row per month), plus `TRUTH.json`, and returns the truth:
revenue = intercept + Σ roi_c × monthly spend_c + mild seasonality + noise. Monthly budgets vary a lot
and independently per channel, so ordinary least squares on the monthly table recovers the ROI.
Everything is vectorised (numpy + pyarrow), so the same code writes the benchmark's 10M-row files.
"""

from __future__ import annotations

import io
import json
import logging
import os
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv

from training.core.store import Store, open_store

log = logging.getLogger(__name__)

CHANNELS = ["search_engine", "social_media", "video", "email"]
TRUE_INTERCEPT = 50_000.0
TRUE_ROI = {"search_engine": 2.4, "social_media": 1.6, "video": 1.2, "email": 3.1}
# Typical monthly budget per channel; each month draws a multiple of it, uniform in BUDGET_RANGE (wide,
# so ROI is identifiable, but bounded, so the sample has no outliers).
BASE_MONTHLY_BUDGET = {"search_engine": 40_000.0, "social_media": 30_000.0, "video": 25_000.0, "email": 20_000.0}
BUDGET_RANGE = (0.2, 2.0)
SEASONALITY_SHARE = 0.02  # amplitude of the yearly cycle, as a share of the intercept
NOISE_SHARE = 0.007  # noise standard deviation, as a share of mean revenue
CAMPAIGN_NAMES = ["brand", "spring_sale", "retargeting", "newsletter", "black_friday", "loyalty"]


def month_range(end_month: str, months: int) -> np.ndarray:
    """Return `months` consecutive months ending at `end_month` ("YYYY-MM") as numpy datetime64[M]."""
    end = np.datetime64(end_month, "M")
    return np.arange(end - (months - 1), end + 1)


def campaign_names(campaigns: int) -> list[str]:
    """Return readable campaign names for the sample, numbered ones beyond the few named."""
    if campaigns <= len(CAMPAIGN_NAMES):
        return CAMPAIGN_NAMES[:campaigns]
    return [f"campaign_{i:05d}" for i in range(campaigns)]


def campaign_channels(campaigns: int) -> np.ndarray:
    """Return a (campaigns, channels) mask of which campaign runs which channel.

    With two or more campaigns, campaign i skips channel i mod 4, so every channel is still run by someone
    and the sample stays small.
    """
    mask = np.ones((campaigns, len(CHANNELS)), dtype=bool)
    if campaigns >= 2:
        mask[np.arange(campaigns), np.arange(campaigns) % len(CHANNELS)] = False
    return mask


def per_channel(values: np.ndarray, chan_idx: np.ndarray) -> np.ndarray:
    """Sum the columns of `values` (one per campaign-channel pair) into one column per channel."""
    return np.stack([values[:, chan_idx == c].sum(axis=1) for c in range(len(CHANNELS))], axis=1)


def _daily_spend(rng: np.random.Generator, months: np.ndarray, campaigns: int) -> tuple[pa.Table, np.ndarray]:
    """Build the daily spend rows and return them with the exact monthly totals (months × channels)."""
    days = np.arange(months[0].astype("datetime64[D]"), (months[-1] + 1).astype("datetime64[D]"))
    day_month = (days.astype("datetime64[M]") - months[0]).astype(np.int64)
    mask = campaign_channels(campaigns)
    camp_idx, chan_idx = np.nonzero(mask)  # one entry per (campaign, channel) pair that runs
    n_pairs, n_days, n_months = len(camp_idx), len(days), len(months)

    base = np.array([BASE_MONTHLY_BUDGET[c] for c in CHANNELS])
    budget = base * rng.uniform(*BUDGET_RANGE, size=(n_months, len(CHANNELS)))
    # Split each channel's monthly budget among the campaigns running it (random shares).
    share = rng.gamma(2.0, size=(n_months, n_pairs))
    share /= per_channel(share, chan_idx)[:, chan_idx]
    pair_budget = budget[:, chan_idx] * share  # months × pairs
    # Spread over days with a weekly pattern and daily jitter, keeping the monthly total.
    weekday = ((days.astype(np.int64) + 3) % 7).astype(np.int64)  # 0 = Monday
    weight = np.array([1.1, 1.1, 1.05, 1.0, 0.95, 0.85, 0.8])[weekday][:, None] * rng.uniform(
        0.7, 1.3, size=(n_days, n_pairs))
    month_starts = np.searchsorted(day_month, np.arange(n_months))
    month_weight = np.add.reduceat(weight, month_starts, axis=0)
    cost = np.round(pair_budget[day_month] * weight / month_weight[day_month], 2)  # days × pairs

    cpc = rng.uniform(0.4, 2.5, size=n_pairs)
    clicks = np.maximum(0, np.round(cost / cpc * rng.uniform(0.8, 1.2, size=cost.shape))).astype(np.int64)
    ads = np.round(clicks / rng.uniform(0.005, 0.05, size=n_pairs)).astype(np.int64)

    monthly = per_channel(np.add.reduceat(cost, month_starts, axis=0), chan_idx)

    # Rows ordered by date, then campaign and channel, as an export from an ad platform would be.
    names = np.array(campaign_names(campaigns))
    table = pa.table({
        "CAMPAIGN": pa.DictionaryArray.from_arrays(np.tile(camp_idx, n_days).astype(np.int32), names),
        "CHANNEL": pa.DictionaryArray.from_arrays(np.tile(chan_idx, n_days).astype(np.int32), CHANNELS),
        "DATE": pa.array(np.repeat(days, n_pairs)),
        "TOTAL_CLICKS": clicks.ravel(),
        "TOTAL_COST": cost.ravel(),
        "ADS_SERVED": ads.ravel(),
    })
    return table, monthly


def _csv_bytes(table: pa.Table) -> bytes:
    sink = io.BytesIO()
    table = table.cast(pa.schema([pa.field(f.name, pa.string() if pa.types.is_dictionary(f.type) else f.type)
                                  for f in table.schema]))
    sink.write((",".join(table.column_names) + "\n").encode())
    pacsv.write_csv(table, sink, pacsv.WriteOptions(include_header=False, quoting_style="none", batch_size=65536))
    return sink.getvalue()


def write_sample(
    store_or_dir: Store | str | os.PathLike[str],
    months: int,
    campaigns: int,
    seed: int,
    end_month: str = "2026-10",
) -> dict[str, Any]:
    """Write a synthetic data set (spend/, revenue/, TRUTH.json) and return its true coefficients."""
    if months < 1:
        raise ValueError(f"months={months!r}: expected at least 1")
    if campaigns < 1:
        raise ValueError(f"campaigns={campaigns!r}: expected at least 1")
    store = open_store(store_or_dir) if isinstance(store_or_dir, str | os.PathLike) else store_or_dir
    rng = np.random.default_rng(seed)
    month_list = month_range(end_month, months)
    spend, monthly = _daily_spend(rng, month_list, campaigns)

    roi = np.array([TRUE_ROI[c] for c in CHANNELS])
    calendar_month = month_list.astype(np.int64) % 12  # 0 = January
    signal = TRUE_INTERCEPT + monthly @ roi + SEASONALITY_SHARE * TRUE_INTERCEPT * np.sin(
        2 * np.pi * calendar_month / 12)
    revenue = np.round(signal + rng.normal(0.0, NOISE_SHARE * signal.mean(), size=months), 2)

    years = month_list.astype("datetime64[Y]").astype(np.int64) + 1970
    day_years = spend["DATE"].to_numpy().astype("datetime64[Y]").astype(np.int64) + 1970
    for year in np.unique(years):
        rows = np.flatnonzero(day_years == year)
        store.write(f"spend/{year}.csv", _csv_bytes(spend.take(rows)), content_type="text/csv")
        in_year = years == year
        store.write(f"revenue/{year}.csv", _csv_bytes(pa.table({
            "YEAR": years[in_year], "MONTH": calendar_month[in_year] + 1, "REVENUE": revenue[in_year]})),
            content_type="text/csv")

    truth = {
        "intercept": TRUE_INTERCEPT,
        "roi": dict(TRUE_ROI),
        "months": [str(m) for m in month_list],
        "campaigns": campaigns,
        "seed": seed,
        "spend_rows": spend.num_rows,
        "seasonality_amplitude": SEASONALITY_SHARE * TRUE_INTERCEPT,
        "noise_sd": round(float(NOISE_SHARE * signal.mean()), 2),
    }
    store.write("TRUTH.json", json.dumps(truth, indent=2).encode() + b"\n", content_type="application/json")
    log.info("wrote sample data to %s: %d months, %d campaigns, %d spend rows",
             store.uri, months, campaigns, spend.num_rows)
    return truth
