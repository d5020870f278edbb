"""Charts a marketer reads, saved beside each model version as PNG bytes.

- `predicted_vs_actual.png`: revenue per period, fitted and actual, the holdout shaded;
- `decomposition.png`: revenue per period split into the base and each channel's contribution (stacked);
- `response_curves.png`: one panel per channel, steady-state revenue per period against spend per period, the
  current spend marked and the spend beyond anything seen in training shaded;
- `roi.png`: ROI and marginal ROI per channel with their 90% intervals;
- `residuals.png`: actual minus predicted per period.

Every chart's title names the version and its holdout R²; money axes are currency-formatted ($1.2M); channel
labels sit on their own rows or panels, so 10 channels never overlap. matplotlib is imported inside the
functions and drawn through the Agg canvas directly (no pyplot, no global backend state), so importing this
module is cheap and drawing is safe from worker threads.
"""

from __future__ import annotations

import io
import math
from typing import Any

import pandas as pd

PLOT_FILES = ("predicted_vs_actual.png", "decomposition.png", "response_curves.png", "roi.png", "residuals.png")
MAX_TICKS = 12
PANEL_COLUMNS = 4
REALISED_FILE = "realised_performance.png"  # stored only when the champion could be scored


def money(value: float, _position: Any = None) -> str:
    """Format an amount for an axis: $950, $12.5K, $1.2M, -$3B."""
    sign = "-" if value < 0 else ""
    value = abs(value)
    for limit, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "K")):
        if value >= limit:
            return f"{sign}${value / limit:.3g}{suffix}"
    return f"{sign}${value:.3g}" if value else "$0"


def per_unit(value: float, _position: Any = None) -> str:
    """Format a return per unit of spend for an axis: $2.40."""
    return f"-${abs(value):.2f}" if value < 0 else f"${value:.2f}"


def _figure(width: float = 9.0, height: float = 4.5) -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _png(fig: Any) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return buffer.getvalue()


def _formatter(func: Any) -> Any:
    from matplotlib.ticker import FuncFormatter

    return FuncFormatter(func)


def _title(fig: Any, what: str, version: str | None, holdout_r2: float | None) -> None:
    r2 = "n/a" if holdout_r2 is None else f"{holdout_r2:.3f}"
    fig.suptitle(f"{what}\nmodel {version or '(candidate)'} · holdout R² {r2}", fontsize=11)


def _holdout_span(ax: Any, predictions: pd.DataFrame) -> None:
    positions = [i for i, s in enumerate(predictions["split"]) if s == "holdout"]
    if positions:
        ax.axvspan(positions[0] - 0.5, positions[-1] + 0.5, color="0.9", label="holdout")


def _period_ticks(ax: Any, periods: list[str]) -> None:
    step = max(1, math.ceil(len(periods) / MAX_TICKS))
    ax.set_xticks(range(0, len(periods), step), periods[::step], rotation=45, ha="right")


def predicted_vs_actual(predictions: pd.DataFrame, version: str | None = None,
                        holdout_r2: float | None = None) -> bytes:
    """Plot actual and predicted revenue per period, shading the holdout periods."""
    fig = _figure()
    ax = fig.add_subplot()
    periods = [str(m) for m in predictions.index]
    _holdout_span(ax, predictions)
    ax.plot(range(len(periods)), predictions["actual"], marker="o", markersize=3, label="actual")
    ax.plot(range(len(periods)), predictions["predicted"], marker="x", markersize=3, linestyle="--",
            label="predicted")
    _period_ticks(ax, periods)
    ax.yaxis.set_major_formatter(_formatter(money))
    ax.set(ylabel="revenue per period")
    ax.legend(loc="upper left")
    _title(fig, "Revenue: predicted vs actual", version, holdout_r2)
    return _png(fig)


def decomposition(block: dict[str, Any], version: str | None = None, holdout_r2: float | None = None) -> bytes:
    """Stacked revenue per period: the base, then each channel's contribution; the actual revenue as a line."""
    import numpy as np

    fig = _figure(11.0, 5.0)
    ax = fig.add_subplot()
    periods = [str(p) for p in block["periods"]]
    x = np.arange(len(periods))
    channels = list(block["channels"])
    layers = [np.asarray(block["base"], float)] + [np.asarray(block["channels"][c], float) for c in channels]
    colors = ["0.75", *(_palette(len(channels)))]
    ax.stackplot(x, *layers, labels=["base", *channels], colors=colors, alpha=0.9)
    ax.plot(x, block["actual"], color="black", linewidth=1.2, label="actual revenue")
    _period_ticks(ax, periods)
    ax.yaxis.set_major_formatter(_formatter(money))
    ax.set(ylabel="revenue per period", xlim=(0, max(len(periods) - 1, 1)))
    handles, labels = ax.get_legend_handles_labels()
    ax.legend(handles[::-1], labels[::-1], loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=9, frameon=False)
    _title(fig, "Where revenue comes from: base and each channel's contribution", version, holdout_r2)
    return _png(fig)


def _palette(n: int) -> list[Any]:
    from matplotlib import colormaps

    cmap = colormaps["tab10" if n <= 10 else "tab20"]
    return [cmap(i % cmap.N) for i in range(n)]


def response_curves(block: dict[str, Any], version: str | None = None, holdout_r2: float | None = None) -> bytes:
    """One panel per channel: revenue per period against spend per period, current spend marked."""
    import numpy as np

    channels = list(block["channels"])
    columns = min(PANEL_COLUMNS, max(1, len(channels)))
    rows = max(1, math.ceil(len(channels) / columns))
    fig = _figure(3.3 * columns, 2.7 * rows + 0.8)
    grain = block.get("grain", "month")
    for i, (channel, color) in enumerate(zip(channels, _palette(len(channels)), strict=True)):
        curve = block["channels"][channel]
        ax = fig.add_subplot(rows, columns, i + 1)
        spend = np.asarray(curve["points"]["spend"], float)
        revenue = np.asarray(curve["points"]["revenue"], float)
        ax.plot(spend, revenue, color=color)
        if curve["max_spend_seen"] < spend[-1]:
            ax.axvspan(curve["max_spend_seen"], spend[-1], color="0.92", label="beyond the data")
        current = float(curve["current_spend"])
        at_current = float(np.interp(current, spend, revenue))
        ax.axvline(current, color="0.3", linestyle="--", linewidth=0.8)
        ax.plot([current], [at_current], marker="o", color="black", label="current spend")
        ax.set_title(channel if str(curve["form"]).startswith("hill") else f"{channel} ({curve['form']})",
                     fontsize=10)
        ax.xaxis.set_major_formatter(_formatter(money))
        ax.yaxis.set_major_formatter(_formatter(money))
        ax.tick_params(labelsize=8)
        ax.locator_params(axis="x", nbins=4)
        ax.set_xlim(0, spend[-1])
        ax.set_ylim(bottom=min(0.0, float(revenue.min())))
        if i % columns == 0:
            ax.set_ylabel(f"revenue per {grain}", fontsize=9)
        if i >= len(channels) - columns:
            ax.set_xlabel(f"spend per {grain}", fontsize=9)
        if i == 0:
            ax.legend(fontsize=7, loc="lower right")
    _title(fig, f"Response curves: steady-state revenue per {grain} from each channel", version, holdout_r2)
    return _png(fig)


def roi(block: dict[str, Any], version: str | None = None, holdout_r2: float | None = None) -> bytes:
    """ROI and marginal ROI per channel (horizontal bars, one row per channel) with their intervals."""
    import numpy as np

    channels = list(block["channels"])
    level = block.get("interval_level", 0.9)
    fig = _figure(10.0, 1.6 + 0.42 * max(len(channels), 3))
    y = np.arange(len(channels))[::-1]
    for k, (key, label) in enumerate((("roi", "ROI: revenue per unit of spend over the window"),
                                      ("mroi", "marginal ROI: revenue of one more unit of spend"))):
        ax = fig.add_subplot(1, 2, k + 1)
        values = np.array([block["channels"][c][key] for c in channels], float)
        intervals = [block["channels"][c].get(f"{key}_interval") for c in channels]
        colors = ["tab:green" if v >= 1 else ("tab:orange" if v >= 0 else "tab:red") for v in values]
        ax.barh(y, values, color=colors, height=0.6)
        if all(iv is not None for iv in intervals):
            lo = np.array([iv[0] for iv in intervals])
            hi = np.array([iv[1] for iv in intervals])
            ax.errorbar(values, y, xerr=[np.maximum(values - lo, 0), np.maximum(hi - values, 0)], fmt="none",
                        ecolor="black", capsize=3, linewidth=1, label=f"{level:.0%} interval")
            ax.legend(fontsize=8, loc="lower right")
        ax.axvline(1.0, color="0.4", linestyle=":", linewidth=1)  # break-even
        ax.axvline(0.0, color="black", linewidth=0.8)
        ax.set_yticks(y, channels if k == 0 else [""] * len(channels))
        ax.xaxis.set_major_formatter(_formatter(per_unit))
        ax.set_title(label, fontsize=10)
    _title(fig, "Return on ad spend per channel (dotted line: break-even)", version, holdout_r2)
    return _png(fig)


def residuals(predictions: pd.DataFrame, version: str | None = None, holdout_r2: float | None = None) -> bytes:
    """Plot actual minus predicted revenue per period, shading the holdout periods."""
    fig = _figure()
    ax = fig.add_subplot()
    periods = [str(m) for m in predictions.index]
    _holdout_span(ax, predictions)
    ax.bar(range(len(periods)), predictions["actual"] - predictions["predicted"])
    ax.axhline(0, color="black", linewidth=0.8)
    _period_ticks(ax, periods)
    ax.yaxis.set_major_formatter(_formatter(money))
    ax.set(ylabel="actual − predicted")
    _title(fig, "Residuals", version, holdout_r2)
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
    _period_ticks(bottom, periods)
    return _png(fig)


def render_all(predictions: pd.DataFrame, blocks: dict[str, Any], version: str | None = None,
               holdout_r2: float | None = None) -> dict[str, bytes]:
    """Return every chart keyed by its file name in the version folder (`blocks`: the manifest's blocks)."""
    return {
        "predicted_vs_actual.png": predicted_vs_actual(predictions, version, holdout_r2),
        "decomposition.png": decomposition(blocks["decomposition"], version, holdout_r2),
        "response_curves.png": response_curves(blocks["response_curves"], version, holdout_r2),
        "roi.png": roi(blocks["roi"], version, holdout_r2),
        "residuals.png": residuals(predictions, version, holdout_r2),
    }
