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
