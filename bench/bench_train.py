"""Benchmark: our ingest-to-model pipeline against a naive pandas baseline and a plain read of the bytes.

    .venv/bin/python bench/bench_train.py [--rows 10000000] [--repeat 3]

Generates N daily spend rows with `training.sample.write_sample` (cached under `.bench/`), then measures,
each in its own subprocess and in the same run:
  pipeline  ingest → validate → training_data → LinearRegression fit (what `python -m training run` does)
  baseline  pandas.read_csv of every spend file whole, groupby month + channel, pivot, join revenue, fit
  raw read  reading the same bytes through the store in 8 MiB chunks, doing nothing with them
and prints bytes, rows, work time (after imports; best of --repeat), process wall and CPU time, and peak RSS,
then the ratios against the targets (pipeline ≤ 0.5× baseline time and memory, ≤ 3× the raw read).
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

MONTHS = 60
CHANNELS_PER_CAMPAIGN = 3  # see training.sample.campaign_channels
MODES = ("pipeline", "baseline", "raw")


def data_dir(rows: int, cache: Path) -> Path:
    """Return the cached data set of about `rows` spend rows, generating it the first time."""
    from training.sample import month_range, write_sample

    root = cache / f"train-{rows}"
    if not (root / "TRUTH.json").exists():  # written last: its presence means the set is complete
        months = month_range("2026-10", MONTHS)
        days = ((months[-1] + 1).astype("datetime64[D]") - months[0].astype("datetime64[D]")).astype(int)
        campaigns = max(1, math.ceil(rows / (days * CHANNELS_PER_CAMPAIGN)))
        print(f"generating {rows:,} rows ({campaigns} campaigns × {MONTHS} months) in {root} ...", flush=True)
        write_sample(root, months=MONTHS, campaigns=campaigns, seed=2026)
    return root


def run_pipeline(root: Path) -> dict:
    """Ingest, validate, build the monthly table and fit, the way the pipeline does."""
    from sklearn.linear_model import LinearRegression

    from training.config import SAMPLE_RUN_DATE, ValidationConfig
    from training.core.store import open_store
    from training.ingest import ingest, training_data
    from training.validate import validate

    start = time.perf_counter()
    raw = ingest(open_store(root))
    report = validate(raw, ValidationConfig(), SAMPLE_RUN_DATE)
    data = training_data(raw)
    model = LinearRegression().fit(data.features, data.revenue)
    return {"work_s": time.perf_counter() - start, "rows": raw.spend_rows, "passed": report.passed,
            "coef": dict(zip(data.channels, model.coef_.round(3).tolist(), strict=True))}


def run_baseline(root: Path) -> dict:
    """The naive way: read every file whole into pandas, group, pivot, join, fit."""
    import pandas as pd
    from sklearn.linear_model import LinearRegression

    start = time.perf_counter()
    spend = pd.concat([pd.read_csv(f) for f in sorted((root / "spend").glob("*.csv"))], ignore_index=True)
    spend["month"] = spend["DATE"].str[:7]
    features = spend.groupby(["month", "CHANNEL"])["TOTAL_COST"].sum().unstack(fill_value=0.0)
    revenue = pd.concat([pd.read_csv(f) for f in sorted((root / "revenue").glob("*.csv"))])
    revenue.index = [f"{y:04d}-{m:02d}" for y, m in zip(revenue["YEAR"], revenue["MONTH"], strict=True)]
    months = features.index.intersection(revenue.index)
    model = LinearRegression().fit(features.loc[months], revenue.loc[months, "REVENUE"])
    return {"work_s": time.perf_counter() - start, "rows": len(spend),
            "coef": dict(zip(features.columns, model.coef_.round(3).tolist(), strict=True))}


def run_raw(root: Path) -> dict:
    """Read every input byte through the store and do nothing with it."""
    from training.core.store import open_store

    start = time.perf_counter()
    store = open_store(root)
    total = 0
    for key in store.list("spend") + store.list("revenue"):
        with store.open_read(key) as fh:
            while chunk := fh.read(8 << 20):
                total += len(chunk)
    return {"work_s": time.perf_counter() - start, "bytes_read": total}


def peak_rss_mb() -> float:
    """Return this process's peak resident memory (VmHWM: unlike ru_maxrss, not inherited over fork)."""
    status = Path("/proc/self/status").read_text()
    return int(next(line for line in status.splitlines() if line.startswith("VmHWM:")).split()[1]) / 1024


def measure(mode: str, root: Path) -> dict:
    """Run one mode in a fresh interpreter; return its figures with wall, CPU and peak RSS."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    out = subprocess.run([sys.executable, __file__, "--measure", mode, str(root)], check=True,
                         capture_output=True, text=True).stdout
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    result = json.loads(out.strip().splitlines()[-1])
    result.update(process_s=wall, cpu_s=(after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime))
    return result


def main() -> None:
    """Generate (or reuse) the data, measure the three modes and print the table and ratios."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--repeat", type=int, default=3, help="runs per mode; the best work time is shown")
    parser.add_argument("--cache", type=Path, default=REPO / ".bench")
    parser.add_argument("--measure", choices=MODES, help=argparse.SUPPRESS)
    parser.add_argument("root", nargs="?", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.measure:  # child process: one measurement, one JSON line
        result = {"pipeline": run_pipeline, "baseline": run_baseline, "raw": run_raw}[args.measure](args.root)
        result["peak_rss_mb"] = peak_rss_mb()
        print(json.dumps(result))
        return

    root = data_dir(args.rows, args.cache)
    size = sum(p.stat().st_size for p in root.rglob("*.csv"))
    runs: dict[str, list[dict]] = {mode: [] for mode in MODES}
    for _ in range(args.repeat):  # interleaved, so a busy moment of the machine hits every mode alike
        for mode in MODES:
            runs[mode].append(measure(mode, root))
    figures = {}
    for mode, results in runs.items():
        figures[mode] = min(results, key=lambda r: r["work_s"])
        figures[mode]["peak_rss_mb"] = max(r["peak_rss_mb"] for r in results)

    rows = figures["pipeline"]["rows"]
    print(f"\ninput: {size:,} bytes of CSV, {rows:,} spend rows, {root}")
    print(f"{'':10} {'work s':>8} {'process s':>10} {'cpu s':>8} {'peak RSS MB':>12} {'rows/s':>12}")
    for mode, r in figures.items():
        speed = f"{rows / r['work_s']:,.0f}" if mode != "raw" else "-"
        print(f"{mode:10} {r['work_s']:8.2f} {r['process_s']:10.2f} {r['cpu_s']:8.2f} {r['peak_rss_mb']:12.0f} "
              f"{speed:>12}")
    p, b, raw = figures["pipeline"], figures["baseline"], figures["raw"]
    print(f"\npipeline / baseline time    {p['work_s'] / b['work_s']:.2f}×  (target ≤ 0.5)")
    print(f"pipeline / baseline memory  {p['peak_rss_mb'] / b['peak_rss_mb']:.2f}×  (target ≤ 0.5)")
    print(f"pipeline / raw read time    {p['work_s'] / raw['work_s']:.2f}×  (target ≤ 3)")
    print(f"same model: pipeline {p['coef']}\n            baseline {b['coef']}")
    if b["rows"] != rows or not p["passed"]:
        sys.exit(f"mismatch: baseline read {b['rows']} rows, pipeline {rows}; validation passed: {p['passed']}")


if __name__ == "__main__":
    main()
