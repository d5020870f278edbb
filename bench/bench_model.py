"""Benchmark: does the media-mix model recover the true ROI and mROI of a known media-mix process?

    .venv/bin/python bench/bench_model.py [--seeds 0 1 2 3 4 5 6 7] [--years 4] [--replicates 200]

For each seed, `training.sample.simulate_mmm` draws its own process (3 to 6 channels by seed, each with its own
daily decay, Hill saturation, ROI, seasonality, trend, price and promotion effects, spend that follows
demand), and the model is fitted twice: daily revenue (and daily controls) at weekly grain, which the model
fits on days (`model.mmm_fit_rows` auto), and monthly revenue at monthly grain, fitted on months.
Plain OLS (`training.model`, monthly spend → revenue, coefficient = ROI) is fitted on the monthly table in the
same run, as the baseline. Prints per channel true vs estimated ROI and mROI with the 90% intervals, then per
grain the spend-weighted mean |ROI error|, interval coverage and fit time with and without intervals, and
whether the targets are met. Fit times are wall-clock on a shared machine: read them as indicative.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from training.config import ModelConfig  # noqa: E402
from training.mmm import fit_mmm  # noqa: E402
from training.model import fit as fit_ols  # noqa: E402
from training.sample import MMM_CHANNELS, mmm_period_data, simulate_mmm  # noqa: E402

CASES = (("week", "daily"), ("month", "monthly"))
TARGET_ERROR = {"week": 0.10, "month": 0.20}
TARGET_COVERAGE = 0.80
TARGET_SECONDS = 30.0


def channels_for(seed: int) -> list[str]:
    """3 to 6 channels, varying with the seed."""
    return MMM_CHANNELS[: 3 + seed % 4]


def run(seeds: list[int], years: int, replicates: int) -> list[dict]:
    """Fit every seed and grain; return one row per channel and case."""
    rows = []
    for seed in seeds:
        sim = simulate_mmm(seed, years, channels_for(seed))
        monthly, _ = mmm_period_data(sim, "month", "monthly")
        started = time.perf_counter()
        ols, summary = fit_ols(monthly.period_spend(), pd.Series(monthly.revenue, index=monthly.periods),
                               ModelConfig(algorithm="ols"))
        ols_seconds = time.perf_counter() - started
        for grain, revenue_grain in CASES:
            data, truth = mmm_period_data(sim, grain, revenue_grain)
            model = fit_mmm(data, ModelConfig(bootstrap_replicates=replicates, seed=seed))
            for c in data.channels:
                est = model.roi["channels"][c]
                rows.append({
                    "seed": seed, "grain": grain, "channel": c, "spend": truth["spend"][c],
                    "roi_true": truth["roi"][c], "roi": est["roi"], "roi_lo": est["roi_interval"][0],
                    "roi_hi": est["roi_interval"][1], "mroi_true": truth["mroi"][c], "mroi": est["mroi"],
                    "mroi_lo": est["mroi_interval"][0], "mroi_hi": est["mroi_interval"][1],
                    "ols_roi": summary.coefficients[c], "fit_s": model.fit_seconds,
                    "total_s": model.fit_seconds + model.interval_seconds, "ols_s": ols_seconds,
                    "periods": len(data.periods), "channels": len(data.channels),
                })
            print(f"seed {seed} {grain}: {len(data.periods)} periods, {len(data.channels)} channels, "
                  f"fit {model.fit_seconds:.1f}s + intervals {model.interval_seconds:.1f}s", flush=True)
    return rows


def report(rows: list[dict]) -> None:
    """Print the per-channel table and the summary against the targets."""
    frame = pd.DataFrame(rows)
    frame["roi_err"] = (frame["roi"] / frame["roi_true"] - 1).abs()
    frame["ols_err"] = (frame["ols_roi"] / frame["roi_true"] - 1).abs()
    frame["roi_cov"] = (frame["roi_lo"] <= frame["roi_true"]) & (frame["roi_true"] <= frame["roi_hi"])
    frame["mroi_cov"] = (frame["mroi_lo"] <= frame["mroi_true"]) & (frame["mroi_true"] <= frame["mroi_hi"])
    print()
    print(f"{'seed':>4} {'grain':5} {'channel':8} {'ROI true':>8} {'ROI est':>7} {'90% interval':>15} "
          f"{'in':>3} {'mROI true':>9} {'mROI est':>8} {'90% interval':>15} {'in':>3} {'OLS ROI':>8}")
    for r in frame.itertuples():
        print(f"{r.seed:>4} {r.grain:5} {r.channel:8} {r.roi_true:8.2f} {r.roi:7.2f} "
              f"[{r.roi_lo:6.2f},{r.roi_hi:6.2f}] {'y' if r.roi_cov else 'n':>3} {r.mroi_true:9.2f} {r.mroi:8.2f} "
              f"[{r.mroi_lo:6.2f},{r.mroi_hi:6.2f}] {'y' if r.mroi_cov else 'n':>3} {r.ols_roi:8.2f}")
    print()
    print(f"{'grain':5} {'cases':>5} {'|ROI err| (spend-wt)':>20} {'OLS |ROI err|':>13} {'ROI cover':>9} "
          f"{'mROI cover':>10} {'fit s (mean/max)':>16} {'+intervals s':>16} {'OLS s':>6}")
    verdicts = []
    for grain, g in frame.groupby("grain", sort=False):
        per_seed = g.groupby("seed").apply(lambda s: np.average(s["roi_err"], weights=s["spend"]), include_groups=False)
        ols_seed = g.groupby("seed").apply(lambda s: np.average(s["ols_err"], weights=s["spend"]), include_groups=False)
        fits = g.groupby("seed")[["fit_s", "total_s", "ols_s"]].first()
        err, cover = per_seed.mean(), g["roi_cov"].mean()
        print(f"{grain:5} {len(g):5d} {err:19.1%} {ols_seed.mean():13.1%} {cover:9.0%} {g['mroi_cov'].mean():10.0%} "
              f"{fits['fit_s'].mean():7.1f}/{fits['fit_s'].max():<7.1f} {fits['total_s'].mean():7.1f}/"
              f"{fits['total_s'].max():<7.1f} {fits['ols_s'].mean():6.3f}")
        print("      per seed |ROI err|: " + ", ".join(f"{s}: {v:.1%}" for s, v in per_seed.items()))
        verdicts.append(f"{grain}: spend-weighted |ROI err| {err:.1%} (target ≤ {TARGET_ERROR[grain]:.0%}: "
                        f"{'met' if err <= TARGET_ERROR[grain] else 'NOT met'}); ratio to OLS "
                        f"{err / ols_seed.mean():.2f}×")
        if grain == "week":
            total = fits["total_s"].max()
            verdicts.append(f"week: slowest fit with intervals {total:.1f}s (target ≤ {TARGET_SECONDS:.0f}s: "
                            f"{'met' if total <= TARGET_SECONDS else 'NOT met'}; shared machine, indicative); "
                            f"{total / fits['ols_s'].mean():.0f}× the OLS fit")
    cover = frame["roi_cov"].mean()
    verdicts.append(f"90% ROI intervals cover the truth in {cover:.0%} of {len(frame)} channel×seed×grain cases "
                    f"(target ≥ {TARGET_COVERAGE:.0%}: {'met' if cover >= TARGET_COVERAGE else 'NOT met'})")
    print()
    for line in verdicts:
        print(line)


def main() -> None:
    """Parse arguments, run the fits, print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=list(range(8)))
    parser.add_argument("--years", type=int, default=4)
    parser.add_argument("--replicates", type=int, default=ModelConfig().bootstrap_replicates)
    args = parser.parse_args()
    report(run(args.seeds, args.years, args.replicates))


if __name__ == "__main__":
    main()
