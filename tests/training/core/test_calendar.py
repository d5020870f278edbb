from __future__ import annotations

from datetime import date

import pytest

from training.core import calendar


@pytest.mark.parametrize(("key", "grain", "bounds", "days"), [
    ("2024-02", "month", (date(2024, 2, 1), date(2024, 2, 29)), 29),
    ("2025-12", "month", (date(2025, 12, 1), date(2025, 12, 31)), 31),
    ("2026-W01", "week", (date(2025, 12, 29), date(2026, 1, 4)), 7),
    ("2026-W53", "week", (date(2026, 12, 28), date(2027, 1, 3)), 7),
])
def test_period_bounds_and_days(key, grain, bounds, days):
    assert calendar.period_bounds(key, grain) == bounds
    assert (calendar.period_start(key, grain), calendar.period_end(key, grain)) == bounds
    assert calendar.period_days(key, grain) == days


@pytest.mark.parametrize(("day", "grain", "key"), [
    (date(2026, 12, 31), "month", "2026-12"),
    (date(2026, 12, 31), "week", "2026-W53"),
    (date(2027, 1, 3), "week", "2026-W53"),
    (date(2027, 1, 4), "week", "2027-W01"),
])
def test_period_key_of_a_day(day, grain, key):
    assert calendar.period_key(day, grain) == key


def test_next_period_and_range_cross_year_ends():
    assert calendar.next_period("2025-12", "month") == "2026-01"
    assert calendar.next_period("2026-W53", "week") == "2027-W01"
    assert calendar.period_range("2025-11", "2026-02", "month") == ["2025-11", "2025-12", "2026-01", "2026-02"]
    assert calendar.period_range("2026-W52", "2027-W01", "week") == ["2026-W52", "2026-W53", "2027-W01"]


@pytest.mark.parametrize(("key", "grain", "message"), [
    ("2026-13", "month", "period='2026-13': expected YYYY-MM"),
    ("2026-12", "week", "period='2026-12': expected YYYY-Www"),
    ("2025-W53", "week", "period='2025-W53': expected YYYY-Www"),  # 2025 has 52 ISO weeks
    ("2026-12", "day", "model.grain='day': expected one of month, week"),
])
def test_bad_keys_and_grains_are_named(key, grain, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        calendar.period_bounds(key, grain)
