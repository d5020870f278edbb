"""The served model: a verified version of the registry reduced to an intercept and a coefficient vector.

Loading never imports scikit-learn (its import alone takes about 1.5 s, three times the cold-start budget)
and never runs code from the bucket: `ModelRegistry.load` (the one verification training and `promote` use
too, in `training.core.artifact`) checks the file's sha256 against the manifest and the `LATEST` pointer,
loads the plain model spec with a restricted, size-capped unpickler, and checks it against the manifest.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from training.core.artifact import LINEAR_ALGORITHMS
from training.core.errors import ModelIntegrityError
from training.core.registry import ModelRegistry, Pointer


@dataclass(frozen=True)
class ServedModel:
    """One immutable, verified model version; swapped as a whole, never modified."""

    version: str
    sha256: str
    channels: tuple[str, ...]
    intercept: float
    coefficients: np.ndarray  # read-only, in channel order
    manifest: Mapping[str, Any]
    pointer: Pointer
    column_of: Mapping[str, int] = field(init=False)  # lower-case channel -> column
    coefficient_values: tuple[float, ...] = field(init=False)  # the same, as plain floats
    # Memo of request key orders already mapped to channels (valid ones only); filled by app.predict.
    key_orders: dict[tuple[str, ...], Callable[[Mapping[str, float]], tuple[float, ...]]] = field(
        init=False, default_factory=dict, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "column_of", {c: i for i, c in enumerate(self.channels)})
        object.__setattr__(self, "coefficient_values", tuple(self.coefficients.tolist()))
        self.coefficients.flags.writeable = False

    def describe(self) -> dict[str, Any]:
        """Return what `/model` shows: version, training time, channels, intercept, marginal ROI, metrics."""
        m = self.manifest
        return {
            "version": self.version,
            "sha256": self.sha256,
            "trained_at": m.get("created_at"),
            "promoted_at": self.pointer.promoted_at or None,
            "run_id": m.get("run_id"),
            "algorithm": m.get("algorithm"),
            "channels": list(self.channels),
            "intercept": self.intercept,
            "marginal_roi": dict(zip(self.channels, self.coefficients.tolist(), strict=True)),
            "metrics": m.get("metrics", {}),
            "libraries": m.get("libraries", {}),
            "code_version": m.get("code_version"),
        }


def build_served_model(pointer: Pointer, manifest: Mapping[str, Any], spec: Mapping[str, Any]) -> ServedModel:
    """Reduce a verified linear spec to what a prediction needs."""
    if spec.get("algorithm") not in LINEAR_ALGORITHMS:
        raise ModelIntegrityError(pointer.version, f"model algorithm {spec.get('algorithm')!r}: this API serves "
                                                   f"{', '.join(LINEAR_ALGORITHMS)}")
    coefficients = np.array(spec["coefficients"], dtype=np.float64)
    return ServedModel(pointer.version, str(manifest["sha256"]), tuple(spec["channels"]), float(spec["intercept"]),
                       coefficients, dict(manifest), pointer)


def load_served_model(registry: ModelRegistry, pointer: Pointer) -> ServedModel:
    """Download and verify the version `pointer` names (`ModelRegistry.load`), then reduce it."""
    manifest, spec = registry.load(pointer.version, expected_sha256=pointer.sha256)
    return build_served_model(pointer, manifest, spec)
