"""The served model: a verified version of the registry reduced to what prediction and planning need.

A linear version (ols/ridge) is an intercept and a coefficient vector; a media-mix version (mmm) keeps its
spec, and both carry `facts` (`training.core.planner.ModelFacts`): grain, default period, current mix,
largest spend seen and, per period, days, base revenue and controls, computed once per version and period.

Loading never imports scikit-learn (its import alone takes about 1.5 s, three times the cold-start budget)
and never runs code from the bucket: `ModelRegistry.load` (the one verification training and `promote` use
too, in `training.core.artifact`) checks the file's sha256 against the manifest and the `LATEST` pointer,
loads the plain model spec with a restricted, size-capped unpickler, and checks it against the manifest.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from training.core.artifact import LINEAR_ALGORITHMS
from training.core.errors import ModelIntegrityError
from training.core.planner import CONTROL_DEFAULT, ModelFacts, mixture_array, model_facts
from training.core.registry import ModelRegistry, Pointer

SERVED_ALGORITHMS = (*LINEAR_ALGORITHMS, "mmm")


@dataclass(frozen=True)
class ServedModel:
    """One immutable, verified model version; swapped as a whole, never modified."""

    version: str
    sha256: str
    channels: tuple[str, ...]
    intercept: float  # linear models; nan for mmm (its base depends on the period)
    coefficients: np.ndarray  # read-only, in channel order (mmm: Σ over the channel's mixture components of β)
    manifest: Mapping[str, Any]
    pointer: Pointer
    facts: ModelFacts = field(repr=False)
    column_of: Mapping[str, int] = field(init=False)  # lower-case channel -> column
    # Memo of request key orders already mapped to channels (valid ones only); filled by app.predict.
    key_orders: dict[tuple[str, ...], Callable[[Mapping[str, float]], tuple[float, ...]]] = field(
        init=False, default_factory=dict, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "column_of", {c: i for i, c in enumerate(self.channels)})
        self.coefficients.flags.writeable = False

    @property
    def algorithm(self) -> str:
        """ols, ridge or mmm."""
        return self.facts.algorithm

    def _marginal_roi(self) -> dict[str, float]:
        if self.facts.linear:
            return dict(zip(self.channels, self.coefficients.tolist(), strict=True))
        roi = (self.manifest.get("roi") or {}).get("channels") or {}
        return {c: float(roi[c]["mroi"]) for c in self.channels if isinstance(roi.get(c), Mapping)
                and isinstance(roi[c].get("mroi"), int | float)}

    def _controls(self) -> dict[str, Any] | None:
        spec = self.facts.spec
        if self.facts.linear:
            return None
        period = self.facts.period(self.facts.default_period)
        return {"names": list(spec["controls"]), "default": CONTROL_DEFAULT,
                "default_period": period.key, "values": period.controls, "from": period.controls_from}

    def describe(self) -> dict[str, Any]:
        """Return what `/model` shows: version, channels, grain, ROI, response curves, controls, metrics."""
        m = self.manifest
        linear = self.facts.linear
        return {
            "version": self.version,
            "sha256": self.sha256,
            "trained_at": m.get("created_at"),
            "promoted_at": self.pointer.promoted_at or None,
            "run_id": m.get("run_id"),
            "algorithm": m.get("algorithm"),
            "channels": list(self.channels),
            "intercept": self.intercept if linear else None,
            "marginal_roi": self._marginal_roi(),
            "grain": self.facts.grain,
            "default_period": self.facts.default_period,
            "spend_unit": f"spend per {self.facts.grain or 'period'} on each channel, held steady through it",
            "roi": m.get("roi"),
            "response_curves": m.get("response_curves"),
            "controls": self._controls(),
            "metrics": m.get("metrics", {}),
            "libraries": m.get("libraries", {}),
            "code_version": m.get("code_version"),
        }


def build_served_model(pointer: Pointer, manifest: Mapping[str, Any], spec: Mapping[str, Any]) -> ServedModel:
    """Reduce a verified spec to what prediction and planning need (per-version constants computed here)."""
    algorithm = spec.get("algorithm")
    if algorithm not in SERVED_ALGORITHMS:
        raise ModelIntegrityError(pointer.version, f"model algorithm {algorithm!r}: this API serves "
                                                   f"{', '.join(SERVED_ALGORITHMS)}")
    try:
        facts = model_facts(pointer.version, spec, manifest)
        if algorithm in LINEAR_ALGORITHMS:
            intercept, coefficients = float(spec["intercept"]), np.array(spec["coefficients"], dtype=np.float64)
        else:
            intercept, coefficients = math.nan, mixture_array(spec, "coefficient").sum(axis=1)
            facts.period(facts.default_period)  # the default period's base and controls, before any request
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelIntegrityError(pointer.version, f"cannot serve model.joblib: {type(exc).__name__}: {exc}") from exc
    return ServedModel(pointer.version, str(manifest["sha256"]), tuple(spec["channels"]), intercept,
                       coefficients, dict(manifest), pointer, facts)


def load_served_model(registry: ModelRegistry, pointer: Pointer) -> ServedModel:
    """Download and verify the version `pointer` names (`ModelRegistry.load`), then reduce it."""
    manifest, spec = registry.load(pointer.version, expected_sha256=pointer.sha256)
    return build_served_model(pointer, manifest, spec)
