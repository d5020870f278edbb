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
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv
from scipy.signal import lfilter

from training.core.store import Store, open_store
from training.periods import PeriodData, check_grain, period_days, period_keys

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


# --- the media-mix process (`--process mmm`) ---------------------------------------------------------------
# Daily: revenue = base · (1 + season) − price effect + promotion lift + Σ_c β_c·hill_c(adstock_c(spend_c)) + noise
# where spend follows the same seasonal demand (the realistic confounding). Each seed draws its own channel
# decays, saturations, ROIs, seasonality, trend and control effects, so a model cannot be tuned to one setting.

MMM_CHANNELS = ["tv", "search", "social", "display", "radio", "email"]
MMM_BASE_PER_DAY = 80_000.0
MMM_WARMUP_DAYS = 182  # spend days before the first revenue day (carryover warm-up)


@dataclass
class MMMSimulation:
    """One simulated media-mix data set, on days (truth derived per window by `mmm_truth`)."""

    channels: list[str]
    days: np.ndarray  # datetime64[D], warm-up included
    first_revenue_day: int  # index into `days`
    spend: np.ndarray  # (days, C) per channel
    revenue: np.ndarray  # (days,) daily revenue (NaN during warm-up)
    controls: dict[str, np.ndarray]  # name -> (days,)
    decay: np.ndarray
    half_saturation: np.ndarray
    shape: np.ndarray
    beta: np.ndarray
    seed: int
    campaign_split: np.ndarray = field(default_factory=lambda: np.zeros(0))  # (days, C) share of campaign 1

    def media_effect(self, spend: np.ndarray | None = None) -> np.ndarray:
        """Daily revenue from each channel (days, C): β·hill(adstock(spend)), adstock by a linear filter."""
        x = self.spend if spend is None else spend
        adstocked = np.column_stack([lfilter([1.0 - lam], [1.0, -lam], x[:, c]) for c, lam in enumerate(self.decay)])
        ratio = (np.maximum(adstocked, 0.0) / self.half_saturation) ** self.shape
        return self.beta * ratio / (1.0 + ratio)


def _smooth_noise(rng: np.random.Generator, n: int, rho: float, scale: float) -> np.ndarray:
    """AR(1) noise with lag-one correlation `rho` and stationary standard deviation `scale`."""
    return lfilter([np.sqrt(1.0 - rho * rho) * scale], [1.0, -rho], rng.normal(size=n))


def _flights(rng: np.random.Generator, n: int, spread: float, off_share: float) -> np.ndarray:
    """Piecewise-constant campaign levels: blocks of 1-6 weeks at lognormal levels, some blocks off."""
    level = np.empty(n)
    t = 0
    while t < n:
        length = int(rng.integers(7, 43))
        on = rng.uniform() >= off_share
        level[t:t + length] = rng.lognormal(0.0, spread) if on else 0.0
        t += length
    return level


def simulate_mmm(seed: int, years: int = 4, channels: list[str] | None = None,
                 end_month: str = "2026-10", noise_share: float = 0.06) -> MMMSimulation:
    """Simulate daily spend, controls and revenue from a known media-mix process (see the comment above).

    `noise_share`: standard deviation of the daily revenue noise (AR(1), lag correlation 0.5) as a share of
    the base revenue per day.
    """
    if years < 1:
        raise ValueError(f"years={years!r}: expected at least 1")
    channels = [c.lower() for c in (channels or MMM_CHANNELS[:4])]
    if not channels or len(set(channels)) != len(channels):
        raise ValueError(f"channels={channels!r}: expected one or more distinct names")
    rng = np.random.default_rng(seed)
    n_ch = len(channels)
    first_month = np.datetime64(end_month, "M") - (12 * years - 1)
    first_day = first_month.astype("datetime64[D]")
    days = np.arange(first_day - MMM_WARMUP_DAYS, (np.datetime64(end_month, "M") + 1).astype("datetime64[D]"))
    n = len(days)
    ordinal = days.astype(np.int64)
    phase = 2.0 * np.pi * ordinal / 365.25
    years_in = (ordinal - ordinal[MMM_WARMUP_DAYS]) / 365.25
    season = (rng.uniform(0.08, 0.22) * np.sin(phase + rng.uniform(0, 2 * np.pi))
              + rng.uniform(0.0, 0.07) * np.sin(2 * phase + rng.uniform(0, 2 * np.pi)))
    # The holiday season (25 Nov to 24 Dec): a lift narrower than a low-order Fourier series can draw, known
    # to the business, so it is a 0/1 control; spend rises with it too.
    doy = (days - days.astype("datetime64[Y]")).astype(np.int64)
    holiday = ((doy >= 328) & (doy <= 357)).astype(float)
    weekday = ((ordinal + 3) % 7).astype(np.int64)  # 0 = Monday

    price = 1.0 + _smooth_noise(rng, n, 0.995, 0.04)
    promo = np.zeros(n)
    for start in rng.choice(n - 14, size=max(1, n // 60), replace=False):
        promo[start:start + int(rng.integers(3, 11))] = 1.0

    spend = np.empty((n, n_ch))
    for c in range(n_ch):
        budget = rng.uniform(1_500.0, 6_000.0)
        follows_demand = rng.uniform(0.5, 1.8)
        level = _flights(rng, n, rng.uniform(0.3, 0.7), rng.uniform(0.0, 0.25))
        week = np.array([1.1, 1.1, 1.05, 1.0, 0.95, 0.85, 0.8])[weekday] if rng.uniform() < 0.5 else 1.0
        jitter = rng.lognormal(0.0, 0.15, size=n)
        spend[:, c] = np.round(budget * np.maximum(1.0 + follows_demand * season, 0.05) * level * week * jitter
                               * (1.0 + 0.3 * promo) * (1.0 + rng.uniform(0.0, 0.5) * holiday), 2)

    decay = rng.uniform(0.2, 0.92, size=n_ch)
    mean_daily = spend[MMM_WARMUP_DAYS:].mean(axis=0)
    half_saturation = rng.uniform(0.5, 2.0, size=n_ch) * mean_daily
    shape = rng.uniform(1.0, 2.0, size=n_ch)
    target_roi = rng.uniform(0.8, 4.0, size=n_ch)
    sim = MMMSimulation(channels, days, MMM_WARMUP_DAYS, spend, np.empty(n), {"price_index": price, "promo": promo, "holiday": holiday},
                        decay, half_saturation, shape, np.ones(n_ch), seed,
                        rng.uniform(0.2, 0.8, size=(n, n_ch)))
    unit = sim.media_effect()[MMM_WARMUP_DAYS:].sum(axis=0)
    sim.beta = target_roi * spend[MMM_WARMUP_DAYS:].sum(axis=0) / unit

    growth = rng.uniform(-0.03, 0.08)
    elasticity = rng.uniform(1.0, 3.0)
    base = MMM_BASE_PER_DAY * (1.0 + growth * years_in + season)
    base += MMM_BASE_PER_DAY * (-elasticity * (price - 1.0) + rng.uniform(0.05, 0.2) * promo
                                + rng.uniform(0.05, 0.2) * holiday)
    noise = _smooth_noise(rng, n, 0.5, noise_share * MMM_BASE_PER_DAY)
    revenue = np.round(base + sim.media_effect().sum(axis=1) + noise, 2)
    revenue[:MMM_WARMUP_DAYS] = np.nan
    sim.revenue = revenue
    return sim


def mmm_truth(sim: MMMSimulation, first_day: np.datetime64, last_day: np.datetime64) -> dict[str, Any]:
    """True ROI and mROI per channel over the days [first_day, last_day].

    ROI = Σ window days of the channel's revenue ÷ its window spend; mROI = the extra window revenue when the
    channel's window spend is scaled by 1.01 (re-simulated, carryover included) ÷ the extra spend.
    """
    window = (sim.days >= first_day) & (sim.days <= last_day)
    effect = sim.media_effect()
    out: dict[str, Any] = {"window_days": [str(first_day), str(last_day)], "roi": {}, "mroi": {},
                           "spend": {}, "contribution": {}}
    for c, name in enumerate(sim.channels):
        spend = sim.spend[window, c].sum()
        bumped = sim.spend.copy()
        bumped[window, c] *= 1.01
        extra = sim.media_effect(bumped)[window, c].sum() - effect[window, c].sum()
        out["spend"][name] = float(spend)
        out["contribution"][name] = float(effect[window, c].sum())
        out["roi"][name] = float(effect[window, c].sum() / spend)
        out["mroi"][name] = float(extra / (0.01 * spend))
    out["parameters"] = {name: {"decay": float(sim.decay[c]), "half_saturation": float(sim.half_saturation[c]),
                                "shape": float(sim.shape[c]), "beta": float(sim.beta[c])}
                         for c, name in enumerate(sim.channels)}
    return out


def mmm_period_data(sim: MMMSimulation, grain: str, revenue_grain: str = "daily") -> tuple[PeriodData, dict[str, Any]]:
    """Return the simulation as the model's input for `grain` (monthly revenue: month grain only) and its truth.

    Periods are those whose every day has revenue; controls are averaged per period. Daily revenue also
    gives the data's daily revenue and controls (`PeriodData.daily_revenue`), for a fit on days.
    """
    check_grain(grain)
    if revenue_grain not in ("daily", "monthly"):
        raise ValueError(f"revenue_grain={revenue_grain!r}: expected 'daily' or 'monthly'")
    if revenue_grain == "monthly" and grain != "month":
        raise ValueError(f"grain={grain!r}: monthly revenue supports only grain 'month'")
    index = pd.DatetimeIndex(sim.days)
    keys = period_keys(index, grain)
    has_revenue = np.arange(len(sim.days)) >= sim.first_revenue_day
    complete = pd.Series(has_revenue).groupby(keys).agg(["all", "size"])
    periods = [k for k in sorted(set(keys[has_revenue])) if complete.loc[k, "all"]
               and complete.loc[k, "size"] == period_days(k, grain)]
    in_window = np.isin(keys, periods)
    last = np.flatnonzero(in_window)[-1]
    revenue = pd.Series(sim.revenue[in_window]).groupby(keys[in_window]).sum().reindex(periods).to_numpy()
    controls = pd.DataFrame({k: pd.Series(v[in_window]).groupby(keys[in_window]).mean().reindex(periods).to_numpy()
                             for k, v in sim.controls.items()}, index=pd.Index(periods, name="period"))
    daily = pd.DataFrame(sim.spend[:last + 1], index=index[:last + 1], columns=sim.channels)
    daily_revenue = daily_controls = None
    if revenue_grain == "daily":  # the controls are daily too: each day's value is its term (mean controls)
        daily_revenue = sim.revenue[in_window]
        daily_controls = pd.DataFrame({k: v[in_window] for k, v in sim.controls.items()}, index=index[in_window])
    data = PeriodData(grain, periods, daily, revenue, controls, daily_revenue, daily_controls)
    truth = mmm_truth(sim, sim.days[in_window][0], sim.days[last])
    truth.update(grain=grain, window=[periods[0], periods[-1]])
    return data, truth


def write_mmm_sample(store_or_dir: Store | str | os.PathLike[str], seed: int, years: int = 4,
                     channels: list[str] | None = None, revenue_grain: str = "monthly",
                     end_month: str = "2026-10") -> dict[str, Any]:
    """Write a media-mix data set (spend/, revenue/, controls/, TRUTH.json) and return the truth."""
    store = open_store(store_or_dir) if isinstance(store_or_dir, str | os.PathLike) else store_or_dir
    sim = simulate_mmm(seed, years, channels, end_month)
    _, truth = mmm_period_data(sim, "month", revenue_grain)
    n, n_ch = sim.spend.shape
    # Two campaigns per channel share its daily spend.
    first = np.round(sim.spend * sim.campaign_split, 2)
    cost = np.stack([first, sim.spend - first], axis=2).reshape(n, 2 * n_ch)
    chan_idx = np.repeat(np.arange(n_ch), 2)
    names = [f"{c}_{part}" for c in sim.channels for part in ("always_on", "flights")]
    rng = np.random.default_rng(seed + 1)
    clicks = np.round(cost / rng.uniform(0.4, 2.5, size=2 * n_ch)).astype(np.int64)
    ads = np.round(clicks / rng.uniform(0.005, 0.05, size=2 * n_ch)).astype(np.int64)
    spend = pa.table({
        "CAMPAIGN": pa.DictionaryArray.from_arrays(np.tile(np.arange(2 * n_ch), n).astype(np.int32), names),
        "CHANNEL": pa.DictionaryArray.from_arrays(np.tile(chan_idx, n).astype(np.int32),
                                                  list(sim.channels)),
        "DATE": pa.array(np.repeat(sim.days, 2 * n_ch)),
        "TOTAL_CLICKS": clicks.ravel(), "TOTAL_COST": np.round(cost.ravel(), 2), "ADS_SERVED": ads.ravel(),
    })
    day_years = sim.days.astype("datetime64[Y]").astype(np.int64) + 1970
    rev_days = sim.days[sim.first_revenue_day:]
    rev = sim.revenue[sim.first_revenue_day:]
    control_names = [c.upper() for c in sim.controls]
    for year in np.unique(day_years):
        store.write(f"spend/{year}.csv", _csv_bytes(spend.take(np.flatnonzero(np.repeat(day_years, 2 * n_ch) == year))),
                    content_type="text/csv")
        in_year = rev_days.astype("datetime64[Y]").astype(np.int64) + 1970 == year
        if not in_year.any():
            continue
        ctrl = {n_: np.round(v[sim.first_revenue_day:][in_year], 4) for n_, v in zip(control_names, sim.controls.values(), strict=True)}
        if revenue_grain == "daily":
            rows = {"DATE": pa.array(rev_days[in_year]), "REVENUE": rev[in_year]}
            ctrl_rows = {"DATE": pa.array(rev_days[in_year]), **ctrl}
        else:
            months = rev_days[in_year].astype("datetime64[M]")
            uniq, pos = np.unique(months, return_inverse=True)
            month_no = uniq.astype(np.int64) % 12 + 1
            rows = {"YEAR": np.full(len(uniq), year), "MONTH": month_no,
                    "REVENUE": np.round(np.bincount(pos, weights=rev[in_year]), 2)}
            counts = np.bincount(pos)
            ctrl_rows = {"YEAR": np.full(len(uniq), year), "MONTH": month_no,
                         **{k: np.round(np.bincount(pos, weights=v) / counts, 4) for k, v in ctrl.items()}}
        store.write(f"revenue/{year}.csv", _csv_bytes(pa.table(rows)), content_type="text/csv")
        store.write(f"controls/{year}.csv", _csv_bytes(pa.table(ctrl_rows)), content_type="text/csv")
    truth.update(process="mmm", seed=seed, years=years, revenue_grain=revenue_grain, channels=sim.channels,
                 controls=list(sim.controls), spend_rows=spend.num_rows)
    store.write("TRUTH.json", json.dumps(truth, indent=2).encode() + b"\n", content_type="application/json")
    log.info("wrote media-mix sample data to %s: %d years, %d channels, %s revenue", store.uri, years, n_ch,
             revenue_grain)
    return truth
