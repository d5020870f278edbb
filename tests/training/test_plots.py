"""Tests of training/plots.py: each chart is a PNG a marketer can read; matplotlib stays out of import time."""

from __future__ import annotations

import io
import subprocess
import sys

import pandas as pd
import pytest

from tests.conftest import PAGE_CHANNELS, media_mix_blocks
from training import plots

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def predictions(n: int = 36) -> pd.DataFrame:
    months = [f"{2023 + i // 12}-{i % 12 + 1:02d}" for i in range(n)]
    actual = [100_000.0 + 1_000 * i for i in range(n)]
    return pd.DataFrame({"actual": actual, "predicted": [a + (-1) ** i * 5_000 for i, a in enumerate(actual)],
                         "split": ["train"] * (n - 6) + ["holdout"] * 6}, index=months)


def test_render_all_returns_one_png_per_file():
    charts = plots.render_all(predictions(), media_mix_blocks(["email", "video"]), "20261115T040000Z-1a2b3c4d", 0.91)
    assert set(charts) == set(plots.PLOT_FILES)
    for data in charts.values():
        assert data.startswith(PNG_MAGIC) and len(data) > 1000


@pytest.mark.parametrize(("value", "text"), [(0, "$0"), (950, "$950"), (12_500, "$12.5K"), (1_234_567, "$1.23M"),
                                             (-3e9, "-$3B")])
def test_money_axis_labels(value, text):
    assert plots.money(value) == text


def _text_boxes(draw, blocks):
    """Draw one chart and return the renderer's bounding boxes of every visible text (tick labels, titles)."""
    from matplotlib.figure import Figure
    from matplotlib.text import Text

    captured = {}
    original = plots._png

    def keep(fig):
        captured["fig"] = fig
        return original(fig)

    plots._png = keep
    try:
        draw(blocks, "v1", 0.9)
    finally:
        plots._png = original
    fig: Figure = captured["fig"]
    renderer = fig.canvas.get_renderer()
    texts: list[Text] = [fig._suptitle] if fig._suptitle else []
    for ax in fig.axes:
        texts += [ax.title, ax.xaxis.label, ax.yaxis.label]
        for axis in (ax.xaxis, ax.yaxis):
            lo, hi = sorted(axis.get_view_interval())
            span = (hi - lo) * 1e-6
            texts += [tick.label1 for tick in axis.get_major_ticks() if lo - span <= tick.get_loc() <= hi + span]
        legend = ax.get_legend()
        if legend is not None:
            texts += list(legend.get_texts())
    boxes = [(text.get_text(), text.get_window_extent(renderer)) for text in texts
             if text.get_visible() and text.get_text().strip()]
    return fig, boxes


@pytest.mark.parametrize("chart", ["roi", "response_curves", "decomposition"])
def test_ten_channels_labels_do_not_overlap(chart):
    blocks = media_mix_blocks(PAGE_CHANNELS)
    block = blocks[chart]
    fig, boxes = _text_boxes(getattr(plots, chart), block)
    width, height = fig.bbox.width, fig.bbox.height
    for name, box in boxes:  # nothing drawn off the figure
        assert box.x0 >= -1 and box.y0 >= -1 and box.x1 <= width + 1 and box.y1 <= height + 1, name
    for i, (a, box_a) in enumerate(boxes):
        for b, box_b in boxes[i + 1:]:
            overlap_w = min(box_a.x1, box_b.x1) - max(box_a.x0, box_b.x0)
            overlap_h = min(box_a.y1, box_b.y1) - max(box_a.y0, box_b.y0)
            assert overlap_w <= 1 or overlap_h <= 1, f"{a!r} overlaps {b!r}"
    labels = {name for name, _ in boxes}
    assert all(channel in " ".join(labels) for channel in PAGE_CHANNELS)
    assert any("v1" in name and "holdout R² 0.900" in name for name in labels)


def test_charts_name_the_version_and_holdout_r2_and_format_money():
    _, boxes = _text_boxes(lambda block, version, r2: plots.predicted_vs_actual(predictions(), version, r2), None)
    labels = [name for name, _ in boxes]
    assert any("model v1 · holdout R² 0.900" in name for name in labels)
    assert any(name.startswith("$") and name.endswith("K") for name in labels)


def test_importing_plots_does_not_import_matplotlib():
    code = "import sys, training.plots; print('matplotlib' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_a_chart_is_a_readable_image():
    from matplotlib.image import imread

    image = imread(io.BytesIO(plots.roi(media_mix_blocks(PAGE_CHANNELS)["roi"], "v1", 0.9)), format="png")
    assert image.shape[0] > 300 and image.shape[1] > 600


def test_realised_performance_chart_with_and_without_a_band():
    from matplotlib.image import imread

    from training.monitor import Band, RealisedPerformance

    performance = RealisedPerformance("v1", ["2026-05", "2026-06", "2026-07"], [100.0, 120.0, 90.0],
                                      [110.0, 100.0, 95.0], rmse=13.2, mape=0.1, bias=-1.7,
                                      band=Band("cv", 8.0, 2.0, 3, 12.0), degraded=True)
    with_band = plots.realised_performance(performance)
    performance.band = None
    without = plots.realised_performance(performance)

    for data in (with_band, without):
        assert data.startswith(PNG_MAGIC)
        assert imread(io.BytesIO(data)).shape[:2] == (600, 800)  # 8 × 6 inches at 100 dpi
    assert with_band != without  # the band's two lines are drawn
