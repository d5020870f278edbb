"""Watch the served model between runs: realised performance on periods it never saw, and input drift.

- `predict(spec, data)`: the one dispatch from a plain model spec to predicted revenue per period. On
  `PeriodData` it is `model.predict_periods` (linear: spend per period; media-mix: daily spend with its
  carryover); on a period × channel spend table, a linear spec's dot product (`artifact.predict_linear`) or
  a predictor registered in `PREDICTORS`.
- `realised_performance`: score the champion on every period newer than its training window (manifest
  `training.months`) and compare the error with what its own cross-validation promised (`degradation_limit`).
- `drift`: per channel, for revenue and for controls, how the periods newer than the champion's training
  window compare with that window: the share of new periods outside the trained range, and the shift of
  their mean in training standard deviations.

Monthly data has 24-60 rows: realised performance is the primary signal; drift is supporting evidence.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from training.config import MonitoringConfig
from training.core import artifact
from training.periods import PeriodData

log = logging.getLogger(__name__)

PredictData = PeriodData | pd.DataFrame
# algorithm -> predictor(spec, data) returning revenue per period; linear specs need no entry.
PREDICTORS: dict[str, Callable[[Mapping[str, Any], PredictData], np.ndarray]] = {}


def predict(spec: Mapping[str, Any], data: PredictData) -> np.ndarray:
    """Return the revenue `spec` predicts for each period of `data` (period spend table or PeriodData)."""
    algorithm = spec.get("algorithm")
    if isinstance(data, PeriodData):
        from training import model  # scikit-learn: only when scoring on periods

        return np.asarray(model.predict_periods(dict(spec), data), dtype=float)
    if algorithm in artifact.LINEAR_ALGORITHMS:
        spend = data
        matrix = spend.reindex(columns=list(spec["channels"]), fill_value=0.0).to_numpy(dtype=float)
        return artifact.predict_linear(spec, matrix)
    predictor = PREDICTORS.get(str(algorithm))
    if predictor is None:
        known = sorted({*artifact.LINEAR_ALGORITHMS, *PREDICTORS})
        raise ValueError(f"algorithm={algorithm!r}: no predictor; expected one of {', '.join(known)}")
    return np.asarray(predictor(spec, data), dtype=float)


# ---- realised performance -------------------------------------------------------------------------

def unseen_periods(training_periods: list[str], periods: list[str]) -> list[str]:
    """Return the periods of `periods` newer than the last training period (all of them without one)."""
    if not training_periods:
        return list(periods)
    last = max(str(p) for p in training_periods)
    return [str(p) for p in periods if str(p) > last]


@dataclass
class Band:
    """What the champion's own validation promised: RMSE above `limit` means it degraded."""

    basis: str  # "cv" (its time-series CV folds) | "holdout" (no CV folds: its holdout RMSE)
    rmse: float  # the promised RMSE (mean of the CV folds, or the holdout RMSE)
    std: float  # standard deviation of the CV folds (0 for holdout)
    folds: int
    limit: float  # max(factor × rmse, rmse + sigmas × std)


def degradation_limit(metrics: Mapping[str, Any], config: MonitoringConfig) -> Band | None:
    """Return the band from a manifest's `metrics` block (CV RMSE folds, else holdout RMSE), or None."""
    folds = [float(v) for v in (metrics.get("cv") or {}).get("rmse") or [] if v is not None and math.isfinite(v)]
    if folds:
        mean = float(np.mean(folds))
        std = float(np.std(folds, ddof=1)) if len(folds) >= 2 else 0.0
        basis = "cv"
    else:
        holdout = (metrics.get("holdout") or {}).get("rmse")
        if holdout is None or not math.isfinite(holdout):
            return None
        mean, std, basis = float(holdout), 0.0, "holdout"
    limit = max(config.degraded_rmse_factor * mean, mean + config.degraded_rmse_sigmas * std)
    return Band(basis, mean, std, len(folds), limit)


@dataclass
class RealisedPerformance:
    """How the champion did on the periods that arrived after its training window."""

    version: str | None
    periods: list[str] = field(default_factory=list)
    actual: list[float] = field(default_factory=list)
    predicted: list[float] = field(default_factory=list)
    rmse: float | None = None
    mape: float | None = None
    bias: float | None = None  # mean(predicted − actual), revenue units: > 0 the model over-predicts
    band: Band | None = None
    degraded: bool = False
    note: str = ""  # why nothing was scored, when nothing was

    def to_dict(self) -> dict[str, Any]:
        """Return plain JSON-able data (staged as `performance.json`, kept in the manifest)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any]) -> RealisedPerformance:
        """Rebuild from `to_dict` output."""
        band = doc.get("band")
        return cls(**{**doc, "band": Band(**band) if band else None})

    def summary(self) -> str:
        """Return one line naming the numbers (for logs and the gate)."""
        if not self.periods:
            return f"champion {self.version or '-'} not scored: {self.note}"
        where = f"{len(self.periods)} unseen period(s) {self.periods[0]}..{self.periods[-1]}"
        mape = "n/a (revenue 0)" if self.mape is None else f"{self.mape:.2%}"
        text = f"champion {self.version} on {where}: RMSE {self.rmse:.4g}, MAPE {mape}, bias {self.bias:+.4g}"
        if self.band is None:
            return f"{text}; no CV or holdout RMSE in its manifest to compare with"
        state = "DEGRADED: above" if self.degraded else "within"
        return (f"{text}; {state} the limit {self.band.limit:.4g} its {self.band.basis} promised "
                f"(RMSE {self.band.rmse:.4g} ± {self.band.std:.4g} over {self.band.folds} fold(s))")


def realised_performance(version: str, manifest: Mapping[str, Any], spec: Mapping[str, Any], data: PeriodData,
                         config: MonitoringConfig) -> RealisedPerformance:
    """Score the champion on the periods of `data` newer than its training window (manifest)."""
    grain = manifest.get("grain", "month")
    if grain != data.grain:
        return RealisedPerformance(version, note=f"it was fitted on {grain}s, the data holds {data.grain}s")
    training = [str(p) for p in (manifest.get("training") or {}).get("months") or []]
    periods = unseen_periods(training, [str(p) for p in data.periods])
    if not periods:
        return RealisedPerformance(version, note=f"no period after its training window (last {max(training)})"
                                   if training else "no period with revenue")
    where = np.isin(np.asarray(data.periods), periods)
    actual = np.asarray(data.revenue, dtype=float)[where]
    predicted = predict(spec, data)[where]  # on every period: a media-mix model needs the days before
    errors = predicted - actual
    rmse = float(np.sqrt(np.mean(errors ** 2)))
    nonzero = actual != 0
    mape = float(np.mean(np.abs(errors[nonzero] / actual[nonzero]))) if nonzero.any() else None
    band = degradation_limit(manifest.get("metrics") or {}, config)
    degraded = band is not None and len(periods) >= config.min_realised_periods and rmse > band.limit
    return RealisedPerformance(version, periods, actual.tolist(), predicted.tolist(), rmse, mape,
                               float(errors.mean()), band, degraded)


# ---- drift ----------------------------------------------------------------------------------------

@dataclass
class SeriesDrift:
    """One input series (a channel's spend, revenue or a control) in the new periods vs the training window."""

    name: str
    kind: str  # "spend" | "revenue" | "control"
    train_min: float
    train_max: float
    train_mean: float
    train_std: float
    new_mean: float
    outside: int  # new periods outside [train_min, train_max]
    outside_share: float
    shift: float | None  # (new mean − train mean) / train std; None when the training values are constant

    def exceeds(self, max_outside_share: float, max_shift: float) -> bool:
        """Say whether this series passes either threshold."""
        return self.outside_share > max_outside_share or (self.shift is not None and abs(self.shift) > max_shift)

    def text(self) -> str:
        """Describe the drift in one phrase."""
        shift = "n/a (constant in training)" if self.shift is None else f"{self.shift:+.2f} sd"
        return (f"{self.kind} {self.name}: {self.outside_share:.0%} of new periods outside the trained range "
                f"[{_amount(self.train_min)}, {_amount(self.train_max)}], mean shift {shift}")


def _amount(value: float) -> str:
    return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.4g}"


def _series_drift(name: str, kind: str, train: np.ndarray, new: np.ndarray) -> SeriesDrift:
    low, high = float(train.min()), float(train.max())
    std = float(train.std(ddof=1)) if len(train) >= 2 else 0.0
    mean = float(train.mean())
    outside = int(np.count_nonzero((new < low) | (new > high)))
    shift = (float(new.mean()) - mean) / std if std > 0 else None
    return SeriesDrift(name, kind, low, high, mean, std, float(new.mean()), outside, outside / len(new), shift)


@dataclass
class Drift:
    """Every series' drift between the champion's training window and the periods after it."""

    reference: str | None  # the champion version whose window is the reference
    train_periods: list[str] = field(default_factory=list)
    new_periods: list[str] = field(default_factory=list)
    series: list[SeriesDrift] = field(default_factory=list)
    note: str = ""
    channels_added: list[str] = field(default_factory=list)  # in the data, not among the champion's channels
    channels_removed: list[str] = field(default_factory=list)  # the champion's, absent or without spend since

    def flagged(self, max_outside_share: float, max_shift: float) -> list[SeriesDrift]:
        """Return the series above either threshold."""
        return [s for s in self.series if s.exceeds(max_outside_share, max_shift)]

    def to_dict(self) -> dict[str, Any]:
        """Return plain JSON-able data (validation report and metrics row)."""
        return {"reference": self.reference, "train_periods": len(self.train_periods),
                "new_periods": self.new_periods, "note": self.note, "channels_added": self.channels_added,
                "channels_removed": self.channels_removed,
                "series": {s.name if s.kind != "control" else f"control:{s.name}": asdict(s) for s in self.series}}


def channel_changes(champion_channels: list[str], spend: pd.DataFrame,
                    new_periods: list[str]) -> tuple[list[str], list[str]]:
    """Return the channels the data has that the champion lacks, and the champion's that are gone.

    A champion's channel is gone when the data has no column for it, or no spend in any period after the
    champion's training window (when there are such periods).
    """
    columns = [str(c) for c in spend.columns]
    added = sorted(set(columns) - set(champion_channels))
    removed = [c for c in champion_channels if c not in columns]
    if new_periods:
        recent = spend.reindex(new_periods).fillna(0.0)
        removed += [c for c in champion_channels if c in columns and not (recent[c] > 0).any()]
    return added, sorted(removed)


def drift(reference: str | None, training_periods: list[str], spend: pd.DataFrame, revenue: pd.Series,
          controls: pd.DataFrame | None = None, champion_channels: list[str] | None = None) -> Drift:
    """Compare each series' periods after the training window with the window (index: period keys)."""
    if reference is None:
        return Drift(None, note="no champion: nothing to compare with")
    periods = [str(p) for p in spend.index]
    window = [p for p in periods if p in set(map(str, training_periods))]
    new = unseen_periods(list(training_periods), periods)
    added, removed = channel_changes(list(champion_channels), spend, new) if champion_channels else ([], [])
    if added or removed:
        found = Drift(reference, window, new, [], "", added, removed)
        if not window or not new:
            found.note = ("none of the champion's training periods is in the data" if not window
                          else "no period after the champion's training window")
            return found
    if not window:
        return Drift(reference, [], new, note="none of the champion's training periods is in the data",
                     channels_added=added, channels_removed=removed)
    if not new:
        return Drift(reference, window, [], note="no period after the champion's training window",
                     channels_added=added, channels_removed=removed)
    tables = [(spend, "spend"), (revenue.to_frame("revenue"), "revenue")]
    if controls is not None and len(controls.columns):
        tables.append((controls, "control"))
    series = []
    for table, kind in tables:
        for column in table.columns:
            train = table[column].reindex(window).dropna().to_numpy(dtype=float)  # a control may lack periods
            fresh = table[column].reindex(new).dropna().to_numpy(dtype=float)
            if len(train) and len(fresh):
                series.append(_series_drift(str(column), kind, train, fresh))
    return Drift(reference, window, new, series, channels_added=added, channels_removed=removed)
