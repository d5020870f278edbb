"""Periods of the model's grain (calendar months or ISO weeks) and the table a media-mix model is fitted on.

`PeriodData` is the contract between the data side (ingest, the sample generator, BigQuery) and the model:
daily spend per channel (carryover is computed on days, before they are summed into periods), revenue per
period, and control variables per period. Period keys are `"YYYY-MM"` (month) and `"YYYY-Www"` (ISO week,
Monday start), so they sort chronologically as strings.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from training.core.calendar import (  # noqa: F401 (re-exported: the period helpers live in the core)
    GRAINS,
    check_grain,
    next_period,
    period_days,
    period_end,
    period_key,
    period_range,
    period_start,
)


def period_keys(days: pd.DatetimeIndex | np.ndarray, grain: str) -> np.ndarray:
    """Vectorised `period_key` for an array of dates (datetime64 or DatetimeIndex)."""
    index = pd.DatetimeIndex(days)
    if check_grain(grain) == "month":
        return np.asarray(index.strftime("%Y-%m"), dtype=object)
    iso = index.isocalendar()
    return np.asarray([f"{y:04d}-W{w:02d}" for y, w in zip(iso["year"], iso["week"], strict=True)], dtype=object)


@dataclass
class PeriodData:
    """What a media-mix model is fitted on: daily spend, revenue and controls per period of one grain.

    - `daily_spend`: index = every calendar day (DatetimeIndex, no gaps) from the first spend day up to the
      last day of the last period; one float column per channel, 0 on days without spend. Days before
      `periods[0]` are carryover warm-up only.
    - `periods`: the periods with complete revenue, consecutive, sorted; `revenue` and `controls` follow
      their order.
    - `controls`: one column per control variable (empty frame, same index, when there are none).
    - `daily_revenue` (daily revenue only, else None): revenue per day of the periods, in order (`window_days`).
    - `daily_controls` (with `daily_revenue`): per day of the periods, each control's daily term, such that
      its sum over a period's days is the period's control × the period's days (the base design's control
      column): the day's value for a mean control, the day's value × the period's days for a summed one.
    - `controls_daily`: every control was given per day (False when one was monthly: its daily term is then
      the month's value on each day, with no variation inside a period).
    """

    grain: str
    periods: list[str]
    daily_spend: pd.DataFrame
    revenue: np.ndarray
    controls: pd.DataFrame = field(default_factory=pd.DataFrame)
    daily_revenue: np.ndarray | None = None
    daily_controls: pd.DataFrame | None = None
    controls_daily: bool = True

    def __post_init__(self) -> None:
        check_grain(self.grain)
        if len(self.revenue) != len(self.periods):
            raise ValueError(f"revenue: expected {len(self.periods)} values (one per period), got {len(self.revenue)}")
        if self.controls is None or self.controls.empty and not len(self.controls.columns):
            self.controls = pd.DataFrame(index=pd.Index(self.periods, name="period"))
        if list(self.controls.index) != list(self.periods):
            raise ValueError("controls: index must list the same periods in the same order as `periods`")
        if self.daily_revenue is None:
            self.daily_controls = None
            return
        days = self.window_days
        self.daily_revenue = np.asarray(self.daily_revenue, dtype=float)
        if self.daily_revenue.shape != (len(days),):
            raise ValueError(f"daily_revenue: expected {len(days)} values (one per day of the periods), got "
                             f"{self.daily_revenue.shape}")
        if self.daily_controls is None:
            self.daily_controls = pd.DataFrame(index=days)
        if len(self.daily_controls) != len(days) or list(self.daily_controls.columns) != list(self.controls.columns):
            raise ValueError(f"daily_controls: expected {len(days)} rows (one per day of the periods) and the "
                             f"columns {list(self.controls.columns)}, got {len(self.daily_controls)} rows and "
                             f"{list(self.daily_controls.columns)}")

    @property
    def channels(self) -> list[str]:
        """Return the channel names (columns of `daily_spend`)."""
        return [str(c) for c in self.daily_spend.columns]

    @property
    def days(self) -> np.ndarray:
        """Return the number of days in each period."""
        return np.array([period_days(p, self.grain) for p in self.periods], dtype=float)

    @property
    def window_days(self) -> pd.DatetimeIndex:
        """Return every day of the periods, in order (they are consecutive)."""
        if not self.periods:
            return pd.DatetimeIndex([], name="date")
        return pd.date_range(period_start(self.periods[0], self.grain), period_end(self.periods[-1], self.grain),
                             freq="D", name="date")

    def period_spend(self) -> pd.DataFrame:
        """Return spend summed per period and channel (index = `periods`)."""
        keys = period_keys(self.daily_spend.index, self.grain)
        summed = self.daily_spend.groupby(keys).sum()
        return summed.reindex(self.periods, fill_value=0.0)

    def subset(self, periods: list[str]) -> PeriodData:
        """Return the data restricted to `periods` (a consecutive run); daily spend keeps its warm-up days."""
        pos = [self.periods.index(p) for p in periods]
        last_day = pd.Timestamp(period_end(periods[-1], self.grain))
        daily_revenue = daily_controls = None
        if self.daily_revenue is not None:
            days = self.window_days
            keep = (days >= pd.Timestamp(period_start(periods[0], self.grain))) & (days <= last_day)
            daily_revenue, daily_controls = self.daily_revenue[keep], self.daily_controls.iloc[keep]
        return PeriodData(self.grain, list(periods), self.daily_spend.loc[:last_day],
                          self.revenue[pos], self.controls.iloc[pos], daily_revenue, daily_controls,
                          self.controls_daily)

    def with_channels(self, channels: list[str]) -> PeriodData:
        """Return the same data with daily spend for `channels` (0 for a channel it does not hold)."""
        return PeriodData(self.grain, list(self.periods), self.daily_spend.reindex(columns=channels, fill_value=0.0),
                          np.asarray(self.revenue, dtype=float), self.controls, self.daily_revenue,
                          self.daily_controls, self.controls_daily)
