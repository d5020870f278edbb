"""Periods of the model's grain without pandas: calendar months ("YYYY-MM") and ISO weeks ("YYYY-Www").

The one definition of a period, shared by training (`training.periods`), the media-mix math
(`training.core.response`) and serving (`training.core.planner`). Keys sort chronologically as strings.
"""

from __future__ import annotations

from datetime import date, timedelta

GRAINS = ("month", "week")


def check_grain(grain: str) -> str:
    """Return `grain` if it is one of GRAINS, else raise ValueError naming the expected values."""
    if grain not in GRAINS:
        raise ValueError(f"model.grain={grain!r}: expected one of {', '.join(GRAINS)}")
    return grain


def period_key(day: date, grain: str) -> str:
    """Return the key of the period of `grain` that contains `day`."""
    if check_grain(grain) == "month":
        return f"{day.year:04d}-{day.month:02d}"
    year, week, _ = day.isocalendar()
    return f"{year:04d}-W{week:02d}"


def period_bounds(key: str, grain: str) -> tuple[date, date]:
    """Return the first and last day of period `key` ("YYYY-MM" or "YYYY-Www"), or raise ValueError."""
    check_grain(grain)
    try:
        if grain == "month":
            year, month = (int(p) for p in key.split("-"))
            start = date(year, month, 1)
            nxt = date(year + (month == 12), month % 12 + 1, 1)
            return start, nxt - timedelta(days=1)
        year, week = key.split("-W")
        start = date.fromisocalendar(int(year), int(week), 1)
        return start, start + timedelta(days=6)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"period={key!r}: expected {'YYYY-MM' if grain == 'month' else 'YYYY-Www'}") from exc


def period_start(key: str, grain: str) -> date:
    """Return the first day of period `key`."""
    return period_bounds(key, grain)[0]


def period_end(key: str, grain: str) -> date:
    """Return the last day of period `key`."""
    return period_bounds(key, grain)[1]


def period_days(key: str, grain: str) -> int:
    """Return the number of days in period `key` (28 to 31 for months, 7 for weeks)."""
    start, end = period_bounds(key, grain)
    return (end - start).days + 1


def next_period(key: str, grain: str) -> str:
    """Return the key of the period after `key`."""
    return period_key(period_end(key, grain) + timedelta(days=1), grain)


def period_range(first: str, last: str, grain: str) -> list[str]:
    """Return every period key from `first` to `last` inclusive."""
    keys, key = [], first
    while key <= last:
        keys.append(key)
        key = next_period(key, grain)
    return keys
