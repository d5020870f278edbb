"""Champion/challenger quality gate: decide whether a candidate model may replace the one being served.

The challenger must reach `gate.evaluation_threshold` holdout R². When a champion is promoted, the
challenger's RMSE must also be no worse than the champion's by more than `gate.rmse_tolerance` (relative),
both scored on periods neither model was fitted on, each model predicting them with its own spec from the same
daily spend (so a linear champion and a media-mix challenger are compared on the same periods and revenue):
- `unseen_periods`: the challenger's holdout periods that are not in the champion's training periods, when
  there are at least `gate.min_compare_periods` of them;
- `backtest` otherwise (a champion refitted yesterday has seen all but the newest period): the champion's
  settings (algorithm, positive, hyperparameters from its manifest) are refitted on the challenger's training
  periods and both are scored on its holdout periods, so both face the same periods.
When the champion cannot be loaded or refitted, or the grains differ, the reason says so and the threshold
alone decides.

A challenger whose channel set differs from the champion's is never promoted unless
`gate.allow_channel_change` is set: every API client sends the champion's channels, and a model with another
set answers them `400 missing_channel` (or ignores a channel they pay for). The reason names the channels
added and removed and what to do.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import numpy as np

from training import model
from training.config import GateConfig, ModelConfig
from training.evaluate import regression_scores
from training.periods import PeriodData


@dataclass
class ChampionComparison:
    """Both models scored on the months neither was fitted on (no months: not comparable)."""

    version: str
    months: list[str]
    champion_rmse: float | None = None
    challenger_rmse: float | None = None
    note: str = ""  # why there is no comparison, when there is none
    champion_channels: list[str] | None = None  # None: unknown (the champion could not be read)
    challenger_channels: list[str] | None = None

    @property
    def channels_added(self) -> list[str]:
        """Return the challenger's channels the champion does not have."""
        if self.champion_channels is None or self.challenger_channels is None:
            return []
        return sorted(set(self.challenger_channels) - set(self.champion_channels))

    @property
    def channels_removed(self) -> list[str]:
        """Return the champion's channels the challenger does not have."""
        if self.champion_channels is None or self.challenger_channels is None:
            return []
        return sorted(set(self.champion_channels) - set(self.challenger_channels))

    @property
    def channels_changed(self) -> bool:
        """Say whether the challenger's channel set differs from the champion's."""
        return bool(self.channels_added or self.channels_removed)
    method: str = "unseen_periods"  # "unseen_periods" | "backtest": which comparison decided
    fitted_on: list[str] | None = None  # backtest: the months both models were refitted on


@dataclass
class GateDecision:
    """The gate's verdict and the numbers behind it."""

    promote: bool
    reason: str
    evaluation_threshold: float
    rmse_tolerance: float
    holdout_r2: float | None
    holdout_rmse: float | None
    comparison: ChampionComparison | None = None
    allow_channel_change: bool = False
    min_compare_periods: int = 3

    @property
    def decision(self) -> str:
        """Return "promote" or "reject" (what the quality_gate stage reports)."""
        return "promote" if self.promote else "reject"

    def to_dict(self) -> dict[str, Any]:
        """Return the `gate` block of the manifest."""
        c = self.comparison
        return {
            "decision": "promoted" if self.promote else "rejected",
            "reason": self.reason,
            "evaluation_threshold": self.evaluation_threshold,
            "rmse_tolerance": self.rmse_tolerance,
            "holdout_r2": self.holdout_r2,
            "holdout_rmse": self.holdout_rmse,
            "champion": None if c is None else {"version": c.version, "rmse": c.champion_rmse,
                                                "challenger_rmse": c.challenger_rmse},
            "compared_on_months": [] if c is None else list(c.months),
            "allow_channel_change": self.allow_channel_change,
            "min_compare_periods": self.min_compare_periods,
            "channel_change": None if c is None or not c.channels_changed else {
                "added": c.channels_added, "removed": c.channels_removed},
            "comparison": None if c is None or not c.months else c.method,
        }


def compare_with_champion(
    version: str,
    champion: dict[str, Any],
    champion_training_months: list[str],
    challenger: dict[str, Any],
    data: PeriodData,
    holdout_months: list[str],
    champion_grain: str = "month",
    champion_channels: list[str] | None = None,
) -> ChampionComparison:
    """Score champion and challenger on the holdout periods the champion was not fitted on.

    Each model predicts with its own spec from the same data: a linear one from the spend per period, a
    media-mix one from the daily spend up to each period (its carryover and saturation), so both are scored on
    the same periods and the same revenue. Models of different grains are not compared.
    """
    channels = {"champion_channels": None if champion_channels is None else list(champion_channels),
                "challenger_channels": [str(c) for c in data.channels]}
    if champion_grain != data.grain:
        return ChampionComparison(version, [], note=f"it was fitted on {champion_grain}s, the challenger on "
                                                    f"{data.grain}s", **channels)
    seen = set(champion_training_months)
    months = [m for m in holdout_months if m not in seen]
    if not months:
        return ChampionComparison(version, [], note="it was fitted on every holdout month", **channels)
    where = np.isin(np.asarray(data.periods), months)
    y = np.asarray(data.revenue, dtype=float)[where]
    return ChampionComparison(
        version,
        months,
        champion_rmse=regression_scores(y, model.predict_periods(champion, data)[where])["rmse"],
        challenger_rmse=regression_scores(y, model.predict_periods(challenger, data)[where])["rmse"],
        **channels,
    )


def _names(channels: list[str]) -> str:
    return ", ".join(channels) if channels else "none"


def channel_change_text(comparison: ChampionComparison, allowed: bool) -> str:
    """Say which channels the challenger adds and removes, and (when not allowed) what to do about it."""
    text = (f"channel set differs from champion {comparison.version}'s: added {_names(comparison.channels_added)}; "
            f"removed {_names(comparison.channels_removed)}")
    if allowed:
        return f"{text} (allowed by gate.allow_channel_change)"
    kept = ",".join(comparison.champion_channels or [])
    return (f"{text}; API clients that send the champion's channels would be refused (400 missing_channel). "
            "To accept the new channel set, run once with gate.allow_channel_change = true "
            "(ADROI_GATE__ALLOW_CHANNEL_CHANGE=true, or the DAG param allow_channel_change); to keep the "
            f"champion's, fix the channel list (channels = {kept}, ADROI_CHANNELS or --channels)")
def champion_model_config(manifest: dict[str, Any], fallback: ModelConfig) -> ModelConfig:
    """Return the settings the champion was fitted with (its manifest), for a backtest refit."""
    algorithm = str(manifest.get("algorithm") or "ols")
    hyper = manifest.get("hyperparameters") or {}
    config = dataclasses.replace(fallback, algorithm=algorithm, positive=bool(manifest.get("positive", False)))
    if algorithm == "ridge" and hyper.get("alpha") is not None:
        config.ridge_alphas = [float(hyper["alpha"])]  # its chosen alpha, not a new search
        config.cv_splits = int(hyper.get("cv_splits") or fallback.cv_splits)
    return config


def backtest_with_champion(
    version: str,
    manifest: dict[str, Any],
    challenger: dict[str, Any],
    data: PeriodData,
    train_months: list[str],
    holdout_months: list[str],
    fallback: ModelConfig,
) -> ChampionComparison:
    """Refit the champion's settings on the challenger's training periods; score both on its holdout periods.

    `challenger` (a spec) is already fitted on `train_months` with the run's settings.
    """
    known = manifest.get("channels")
    sets = {"champion_channels": None if known is None else [str(c) for c in known],
            "challenger_channels": [str(c) for c in data.channels]}
    config = champion_model_config(manifest, fallback)
    channels = sets["champion_channels"] or sets["challenger_channels"]
    own = data.with_channels(channels)
    try:
        refitted = model.fit_periods(own.subset(list(train_months)), config, intervals=False)
    except ValueError as exc:
        return ChampionComparison(version, [], note=f"its settings cannot be refitted ({exc})", method="backtest",
                                  **sets)
    where = np.isin(np.asarray(data.periods), holdout_months)
    y = np.asarray(data.revenue, dtype=float)[where]
    return ChampionComparison(
        version,
        list(holdout_months),
        champion_rmse=regression_scores(y, model.predict_periods(refitted.spec, own)[where])["rmse"],
        challenger_rmse=regression_scores(y, model.predict_periods(challenger, data)[where])["rmse"],
        method="backtest",
        fitted_on=list(train_months),
        **sets,
    )


def fmt(value: float | None) -> str:
    """Format a score with 4 significant digits (n/a when missing)."""
    return "n/a" if value is None else f"{value:.4g}"


def decide(holdout: dict[str, float | None], config: GateConfig, comparison: ChampionComparison | None) -> GateDecision:
    """Apply the threshold and the champion comparison; the reason names every number used."""
    r2, rmse = holdout.get("r2"), holdout.get("rmse")
    checks: list[str] = []
    failures: list[str] = []
    if r2 is None or r2 < config.evaluation_threshold:
        failures.append(f"holdout R² {fmt(r2)} < threshold {config.evaluation_threshold:g}")
    else:
        checks.append(f"holdout R² {fmt(r2)} ≥ threshold {config.evaluation_threshold:g}")
    if comparison is not None and comparison.channels_changed:
        text = channel_change_text(comparison, config.allow_channel_change)
        (checks if config.allow_channel_change else failures).insert(0, text)
    if comparison is None:
        checks.append("no champion yet")
    elif not comparison.months or comparison.champion_rmse is None or comparison.challenger_rmse is None:
        checks.append(f"not compared with champion {comparison.version}: "
                      f"{comparison.note or 'no month neither model was fitted on'}; threshold alone decides")
    else:
        limit = comparison.champion_rmse * (1 + config.rmse_tolerance)
        where = f"on {len(comparison.months)} month(s) {comparison.months[0]}..{comparison.months[-1]}"
        if comparison.method == "backtest" and comparison.fitted_on:
            where = (f"by backtest (the champion's settings refitted on the same {len(comparison.fitted_on)} "
                     f"months {comparison.fitted_on[0]}..{comparison.fitted_on[-1]}, both scored {where})")
        else:
            where = f"{where} the champion never saw"
        text = (f"challenger RMSE {fmt(comparison.challenger_rmse)} vs champion {comparison.version} RMSE "
                f"{fmt(comparison.champion_rmse)} {where} (limit {fmt(limit)} with tolerance "
                f"{config.rmse_tolerance:.0%})")
        (checks if comparison.challenger_rmse <= limit else failures).append(text)
    promote = not failures
    reason = ("promoted: " if promote else "rejected: ") + "; ".join(failures + checks)
    return GateDecision(promote, reason, config.evaluation_threshold, config.rmse_tolerance, r2, rmse, comparison,
                        config.allow_channel_change, config.min_compare_periods)
