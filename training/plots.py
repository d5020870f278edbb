"""Diagnostic charts saved beside each model version, as PNG bytes.

matplotlib is imported inside the functions and drawn through the Agg canvas directly (no pyplot, no global
backend state), so importing this module is cheap and drawing is safe from worker threads.
"""

from __future__ import annotations

import io
from typing import Any

import pandas as pd

PLOT_FILES = ("predicted_vs_actual.png", "marginal_roi.png", "residuals.png")
REALISED_FILE = "realised_performance.png"  # stored only when the champion could be scored


def _figure(width: float = 8.0, height: float = 4.0) -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _png(fig: Any) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return buffer.getvalue()


def _holdout_span(ax: Any, predictions: pd.DataFrame) -> None:
    positions = [i for i, s in enumerate(predictions["split"]) if s == "holdout"]
    if positions:
        ax.axvspan(positions[0] - 0.5, positions[-1] + 0.5, color="0.9", label="holdout")


def _month_ticks(ax: Any, months: list[str]) -> None:
    step = max(1, len(months) // 12)
    ax.set_xticks(range(0, len(months), step), months[::step], rotation=45, ha="right")


def predicted_vs_actual(predictions: pd.DataFrame) -> bytes:
    """Plot actual and predicted revenue per month, shading the holdout months."""
    fig = _figure()
    ax = fig.add_subplot()
    months = [str(m) for m in predictions.index]
    _holdout_span(ax, predictions)
    ax.plot(range(len(months)), predictions["actual"], marker="o", label="actual")
    ax.plot(range(len(months)), predictions["predicted"], marker="x", linestyle="--", label="predicted")
    _month_ticks(ax, months)
    ax.set(title="Revenue: predicted vs actual", ylabel="revenue")
    ax.legend()
    return _png(fig)


def marginal_roi(coefficients: dict[str, float]) -> bytes:
    """Bar chart of each channel's coefficient: revenue per extra unit of spend."""
    fig = _figure(6.0, 4.0)
    ax = fig.add_subplot()
    names = list(coefficients)
    values = [coefficients[n] for n in names]
    ax.bar(names, values, color=["tab:green" if v >= 0 else "tab:red" for v in values])
    ax.axhline(0, color="black", linewidth=0.8)
    ax.set(title="Marginal ROI per channel", ylabel="revenue per unit of spend")
    return _png(fig)


def residuals(predictions: pd.DataFrame) -> bytes:
    """Plot actual minus predicted revenue per month, shading the holdout months."""
    fig = _figure()
    ax = fig.add_subplot()
    months = [str(m) for m in predictions.index]
    _holdout_span(ax, predictions)
    ax.bar(range(len(months)), predictions["actual"] - predictions["predicted"])
    ax.axhline(0, color="black", linewidth=0.8)
    _month_ticks(ax, months)
    ax.set(title="Residuals (actual − predicted)", ylabel="revenue")
    return _png(fig)


def realised_performance(performance: Any) -> bytes:
    """Plot the champion on periods it never saw: actual vs predicted, and each error against its promised band."""
    fig = _figure(8.0, 6.0)
    top, bottom = fig.subplots(2, 1, sharex=True)
    periods = list(performance.periods)
    x = range(len(periods))
    top.plot(x, performance.actual, marker="o", label="actual")
    top.plot(x, performance.predicted, marker="x", linestyle="--", label=f"predicted by {performance.version}")
    top.set(title="Served model on periods it never saw", ylabel="revenue")
    top.legend()
    errors = [p - a for p, a in zip(performance.predicted, performance.actual, strict=True)]
    bottom.bar(x, [abs(e) for e in errors], color=["tab:red" if e > 0 else "tab:blue" for e in errors])
    bottom.axhline(performance.rmse, color="black", linewidth=1, label=f"realised RMSE {performance.rmse:,.4g}")
    if performance.band is not None:
        bottom.axhline(performance.band.rmse, color="tab:green", linestyle=":",
                       label=f"promised ({performance.band.basis}) {performance.band.rmse:,.4g}")
        bottom.axhline(performance.band.limit, color="tab:red", linestyle="--",
                       label=f"degraded above {performance.band.limit:,.4g}")
    bottom.set(ylabel="|predicted − actual| (red: over)")
    bottom.legend(fontsize="small")
    _month_ticks(bottom, periods)
    return _png(fig)


def render_all(predictions: pd.DataFrame, coefficients: dict[str, float]) -> dict[str, bytes]:
    """Return every chart keyed by its file name in the version folder."""
    return dict(zip(PLOT_FILES, (predicted_vs_actual(predictions), marginal_roi(coefficients),
                                 residuals(predictions)), strict=True))
