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
    """

    grain: str
    periods: list[str]
    daily_spend: pd.DataFrame
    revenue: np.ndarray
    controls: pd.DataFrame = field(default_factory=pd.DataFrame)

    def __post_init__(self) -> None:
        check_grain(self.grain)
        if len(self.revenue) != len(self.periods):
            raise ValueError(f"revenue: expected {len(self.periods)} values (one per period), got {len(self.revenue)}")
        if self.controls is None or self.controls.empty and not len(self.controls.columns):
            self.controls = pd.DataFrame(index=pd.Index(self.periods, name="period"))
        if list(self.controls.index) != list(self.periods):
            raise ValueError("controls: index must list the same periods in the same order as `periods`")

    @property
    def channels(self) -> list[str]:
        """Return the channel names (columns of `daily_spend`)."""
        return [str(c) for c in self.daily_spend.columns]

    @property
    def days(self) -> np.ndarray:
        """Return the number of days in each period."""
        return np.array([period_days(p, self.grain) for p in self.periods], dtype=float)

    def period_spend(self) -> pd.DataFrame:
        """Return spend summed per period and channel (index = `periods`)."""
        keys = period_keys(self.daily_spend.index, self.grain)
        summed = self.daily_spend.groupby(keys).sum()
        return summed.reindex(self.periods, fill_value=0.0)

    def subset(self, periods: list[str]) -> PeriodData:
        """Return the data restricted to `periods` (a consecutive run); daily spend keeps its warm-up days."""
        pos = [self.periods.index(p) for p in periods]
        last_day = pd.Timestamp(period_end(periods[-1], self.grain))
        return PeriodData(self.grain, list(periods), self.daily_spend.loc[:last_day],
                          self.revenue[pos], self.controls.iloc[pos])
