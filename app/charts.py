"""Geometry of the page's charts: scales, ticks, SVG paths and money labels, computed server-side.

The templates (`app/templates/page/charts.html`) draw what these functions return; nothing here knows HTML.
Plain Python (no numpy needed at this size): the page renders once per model version.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

# Tableau 10 (distinct in hue and lightness); the base of the decomposition is the neutral grey after it.
PALETTE = ("#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#ff9da7", "#9c755f",
           "#17becf")
BASE_COLOUR = "#c7ccd1"
CHAR_WIDTH_PX = 6.6  # mean advance of a 11-12 px sans-serif digit or letter: enough to keep labels apart


def colour(index: int) -> str:
    """Return the colour of the `index`-th channel (cycling past ten)."""
    return PALETTE[index % len(PALETTE)]


def channel_label(name: str) -> str:
    """Return a channel name as a person reads it (`search_engine` → `search engine`)."""
    return name.replace("_", " ")


def format_money(value: float, symbol: str = "$") -> str:
    """Return a compact money label: $0, $950, $12k, $1.5M, $2B (the minus sign first)."""
    if not math.isfinite(value):
        return "–"
    sign = "−" if value < 0 else ""
    size = abs(value)
    for threshold, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if size >= threshold:
            scaled = size / threshold
            text = f"{scaled:.1f}".removesuffix(".0") if scaled < 10 else f"{scaled:.0f}"
            if text == "1000" and suffix != "B":  # 999,999 rounds up into the next unit
                text, suffix = "1", {"k": "M", "M": "B"}[suffix]
            return f"{sign}{symbol}{text}{suffix}"
    return f"{sign}{symbol}{size:.0f}"


def format_amount(value: float, symbol: str = "$") -> str:
    """Return a money amount in full, grouped by thousands: $1,234,567."""
    if not math.isfinite(value):
        return "–"
    return f"{'−' if value < 0 else ''}{symbol}{abs(value):,.0f}"


def format_ratio(value: float | None) -> str:
    """Return a ratio such as an ROI with two decimals (– when unknown)."""
    if value is None or not math.isfinite(value):
        return "–"
    return f"{value:.2f}".replace("-", "−")


def nice_ticks(low: float, high: float, count: int = 5) -> list[float]:
    """Return round tick values (1, 2, 2.5 or 5 × 10^k apart) from at or below `low` to at or above `high`."""
    if not (math.isfinite(low) and math.isfinite(high)):
        raise ValueError(f"axis range [{low}, {high}]: expected finite numbers")
    if high < low:
        low, high = high, low
    if high - low <= abs(low) * 1e-9:  # one value (or a width lost in rounding): show a range around it
        high = low + (abs(low) or 1.0)
    raw = (high - low) / max(count - 1, 1)
    magnitude = 10 ** math.floor(math.log10(raw / 2))
    # The smallest round step that needs at most count + 1 ticks: the axis ends close to the data.
    for step in (m * magnitude * 10**k for k in (0, 1, 2) for m in (1, 2, 2.5, 5)):
        first, last = math.floor(low / step + 1e-9), math.ceil(high / step - 1e-9)
        if last - first + 1 <= count + 1:
            digits = max(0, 3 - math.floor(math.log10(step)))  # drop float noise such as 0.30000000000000004
            return [round(i * step, digits) + 0.0 for i in range(first, last + 1)]  # + 0.0: no -0.0
    raise AssertionError("unreachable: a step of 100 × raw always fits")


@dataclass(frozen=True)
class Scale:
    """A linear map from data values [low, high] to pixels [start, end] (end < start for a y axis)."""

    low: float
    high: float
    start: float
    end: float

    def __call__(self, value: float) -> float:
        """Return the pixel position of `value` (rounded to 0.1 px)."""
        span = self.high - self.low
        return round(self.start + (value - self.low) / span * (self.end - self.start), 1) if span else self.start


@dataclass(frozen=True)
class Tick:
    """One labelled tick: its pixel position and its text."""

    at: float
    label: str


def axis_ticks(scale: Scale, values: Sequence[float], label: Callable[[float], str]) -> list[Tick]:
    """Return the ticks of `values` that fall inside `scale`, labelled by `label`."""
    return [Tick(scale(v), label(v)) for v in values if scale.low - 1e-9 <= v <= scale.high + 1e-9]


def line_path(xs: Sequence[float], ys: Sequence[float], x: Scale, y: Scale) -> str:
    """Return the SVG path data of a polyline through the points (xs, ys)."""
    return "M" + "L".join(f"{x(a)},{y(b)}" for a, b in zip(xs, ys, strict=True))


def band_path(xs: Sequence[float], lower: Sequence[float], upper: Sequence[float], x: Scale, y: Scale) -> str:
    """Return the SVG path data of the closed band between two lines (a stacked area's layer)."""
    top = [f"{x(a)},{y(b)}" for a, b in zip(xs, upper, strict=True)]
    bottom = [f"{x(a)},{y(b)}" for a, b in zip(reversed(xs), reversed(lower), strict=True)]
    return "M" + "L".join(top + bottom) + "Z"


def label_step(count: int, available_px: float, longest_label: int, gap_px: float = 10.0) -> int:
    """Return n such that labelling every n-th of `count` evenly spaced positions never overlaps."""
    if count <= 1:
        return 1
    spacing = available_px / (count - 1)
    needed = longest_label * CHAR_WIDTH_PX + gap_px
    return max(1, math.ceil(needed / spacing))


def stack_diverging(layers: Sequence[Sequence[float]]) -> list[tuple[list[float], list[float]]]:
    """Stack layers per position, positive parts upward from 0 and negative parts downward (each layer's band)."""
    if not layers:
        return []
    width = len(layers[0])
    up, down = [0.0] * width, [0.0] * width
    bands = []
    for layer in layers:
        lower, upper = [], []
        for i, value in enumerate(layer):
            if value >= 0:
                lower.append(up[i])
                up[i] += value
                upper.append(up[i])
            else:
                upper.append(down[i])
                down[i] += value
                lower.append(down[i])
        bands.append((lower, upper))
    return bands


def interpolate(x: float, xs: Sequence[float], ys: Sequence[float]) -> float:
    """Return ys linearly interpolated at x (clamped to the ends), xs increasing."""
    if x <= xs[0]:
        return ys[0]
    for i in range(1, len(xs)):
        if x <= xs[i]:
            left, right = xs[i - 1], xs[i]
            weight = (x - left) / (right - left) if right > left else 1.0
            return ys[i - 1] + weight * (ys[i] - ys[i - 1])
    return ys[-1]
