"""Tests of app/charts.py: ticks, money labels, label spacing and stacking of the page's SVG charts."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from app import charts


@pytest.mark.parametrize(("value", "label"), [
    (0, "$0"), (950, "$950"), (1_000, "$1k"), (12_345, "$12k"), (1_500, "$1.5k"), (999_999, "$1M"),
    (1_500_000, "$1.5M"), (2e9, "$2B"), (-1_234_567, "−$1.2M"), (float("nan"), "–"),
])
def test_money_labels_are_compact(value, label):
    assert charts.format_money(value) == label


def test_money_amounts_are_grouped_and_take_the_symbol():
    assert charts.format_amount(1_234_567.4, "€") == "€1,234,567"
    assert charts.format_amount(-50.6) == "−$51"


@given(st.just(0.0) | st.floats(0.01, 1e9) | st.floats(-1e9, -0.01), st.just(0.0) | st.floats(0.01, 1e9),
       st.integers(3, 8))
def test_ticks_are_round_cover_the_range_and_stay_few(low, width, count):
    high = low + width
    ticks = charts.nice_ticks(low, high, count)

    step = ticks[1] - ticks[0]
    assert ticks[0] <= low + 1e-6 * step and ticks[-1] >= high - 1e-6 * step  # up to float noise
    assert 2 <= len(ticks) <= count + 1
    steps = {float(f"{b - a:.3e}") for a, b in zip(ticks, ticks[1:], strict=False)}
    assert len(steps) == 1
    mantissa = float(f"{step:.3e}".split("e")[0])  # 3 digits: ticks near 1e8 carry float noise
    assert mantissa in (1, 2, 2.5, 5)


def test_ticks_end_close_to_the_data():
    assert charts.nice_ticks(0, 2_050_000, 5) == [0, 500_000, 1_000_000, 1_500_000, 2_000_000, 2_500_000]
    assert charts.nice_ticks(0, 123_456, 5)[-1] == 125_000


def test_ticks_refuse_a_range_that_is_not_finite():
    with pytest.raises(ValueError, match=r"axis range \[0, inf\]: expected finite numbers"):
        charts.nice_ticks(0, float("inf"))


@pytest.mark.parametrize("periods", [12, 36, 52, 104, 208])
def test_period_labels_never_overlap(periods):
    labels = [f"2024-W{i:02d}" for i in range(periods)]
    width = 680
    step = charts.label_step(periods, width, max(map(len, labels)))

    shown = list(range(0, periods, step))
    spacing = width / (periods - 1) * step
    assert spacing >= len(labels[0]) * charts.CHAR_WIDTH_PX
    assert len(shown) >= min(periods, 4)


def test_stacking_puts_negative_parts_below_zero_and_positive_parts_above():
    bands = charts.stack_diverging([[10.0, -5.0], [3.0, 4.0], [-2.0, 1.0]])

    assert bands == [([0.0, -5.0], [10.0, 0.0]), ([10.0, 0.0], [13.0, 4.0]), ([-2.0, 4.0], [0.0, 5.0])]


def test_paths_map_data_to_pixels():
    x = charts.Scale(0, 10, 50, 250)
    y = charts.Scale(0, 100, 200, 0)

    assert charts.line_path([0, 5, 10], [0, 50, 100], x, y) == "M50.0,200.0L150.0,100.0L250.0,0.0"
    path = charts.band_path([0, 10], [0, 0], [100, 50], x, y)
    assert path == "M50.0,0.0L250.0,100.0L250.0,200.0L50.0,200.0Z"
    assert all(float(n) >= 0 for n in re.findall(r"[\d.]+", path))


def test_interpolation_clamps_to_the_ends():
    assert charts.interpolate(5, [0, 10], [0, 100]) == 50
    assert charts.interpolate(-1, [0, 10], [0, 100]) == 0
    assert charts.interpolate(99, [0, 10], [0, 100]) == 100


def test_channels_past_ten_reuse_the_palette():
    assert len(set(map(charts.colour, range(10)))) == 10
    assert charts.colour(10) == charts.colour(0)
    assert charts.channel_label("out_of_home") == "out of home"
