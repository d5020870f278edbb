"""Tests of training/plots.py: each chart is a PNG; matplotlib stays out of import time."""

from __future__ import annotations

import subprocess
import sys

import pandas as pd

from training import plots

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def predictions() -> pd.DataFrame:
    months = [f"2024-{m:02d}" for m in range(1, 13)]
    actual = [100.0 + 10 * i for i in range(12)]
    return pd.DataFrame({"actual": actual, "predicted": [a + (-1) ** i * 5 for i, a in enumerate(actual)],
                         "split": ["train"] * 9 + ["holdout"] * 3}, index=months)


def test_render_all_returns_one_png_per_file():
    charts = plots.render_all(predictions(), {"email": 3.1, "video": -0.4})
    assert set(charts) == set(plots.PLOT_FILES)
    for data in charts.values():
        assert data.startswith(PNG_MAGIC) and len(data) > 1000


def test_importing_plots_does_not_import_matplotlib():
    code = "import sys, training.plots; print('matplotlib' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_realised_performance_chart_with_and_without_a_band():
    import io

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
