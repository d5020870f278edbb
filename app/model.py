"""The served model: a verified version of the registry reduced to an intercept and a coefficient vector.

Loading never imports scikit-learn (its import alone takes about 1.5 s, three times the cold-start budget):
`model.joblib` is unpickled with joblib's own unpickler restricted to the globals a fitted `LinearRegression`
or `Ridge` needs, and the estimator class itself is replaced by a holder of its learned state. The sha256 of
the file is checked against the manifest and the `LATEST` pointer before any unpickling.
"""

from __future__ import annotations

import io
import math
import pickle
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any

import numpy as np
from joblib.numpy_pickle import NumpyUnpickler, _validate_fileobject_and_memmap

from training.core.errors import ModelIntegrityError
from training.core.registry import ModelRegistry, Pointer

SUPPORTED_ESTIMATORS = {
    ("sklearn.linear_model._base", "LinearRegression"),
    ("sklearn.linear_model._ridge", "Ridge"),
}
_ARRAY_GLOBALS = {
    ("joblib.numpy_pickle", "NumpyArrayWrapper"),
    ("numpy", "dtype"),
    ("numpy", "ndarray"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "scalar"),
}
COEFFICIENT_RTOL = 1e-9


class PickledEstimator:
    """The learned state of a pickled scikit-learn estimator, read without scikit-learn."""

    class_path = ""

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.state = dict(state)


class _EstimatorUnpickler(NumpyUnpickler):
    """joblib's unpickler, refusing every global outside a fitted linear estimator's needs."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in SUPPORTED_ESTIMATORS:
            return type(name, (PickledEstimator,), {"class_path": f"{module}.{name}"})
        if (module, name) in _ARRAY_GLOBALS:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(
            f"model.joblib refers to {module}.{name}; serving loads only "
            f"{', '.join(sorted(n for _, n in SUPPORTED_ESTIMATORS))} fitted with numpy arrays")


def read_estimator_state(version: str, model_bytes: bytes) -> PickledEstimator:
    """Unpickle `model.joblib` (plain or compressed by joblib) into a `PickledEstimator`."""
    try:
        with _validate_fileobject_and_memmap(io.BytesIO(model_bytes), "model.joblib", None) as (fobj, _):
            estimator = _EstimatorUnpickler("model.joblib", fobj, ensure_native_byte_order=True).load()
    except Exception as exc:  # any unpickling failure means this version cannot be served
        raise ModelIntegrityError(version, f"model.joblib does not load: {exc}") from exc
    if not isinstance(estimator, PickledEstimator):
        raise ModelIntegrityError(version, f"model.joblib holds a {type(estimator).__name__}, expected one of "
                                           f"{', '.join(sorted(n for _, n in SUPPORTED_ESTIMATORS))}")
    return estimator


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


def _close(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=COEFFICIENT_RTOL, abs_tol=1e-12)


def _check_libraries(version: str, manifest: Mapping[str, Any], estimator: PickledEstimator) -> None:
    """Refuse a model whose arrays this numpy cannot read or whose manifest does not describe the file."""
    libraries = manifest.get("libraries")
    if not isinstance(libraries, Mapping) or "numpy" not in libraries:
        raise ModelIntegrityError(version, "manifest.json has no libraries.numpy: cannot check compatibility")
    ours = metadata.version("numpy")
    if str(libraries["numpy"]).split(".")[0] != ours.split(".")[0]:
        raise ModelIntegrityError(version, f"trained with numpy {libraries['numpy']}, serving has numpy {ours}: "
                                           "expected the same major version")
    pickled_sklearn = estimator.state.get("_sklearn_version")
    if pickled_sklearn and libraries.get("scikit-learn") not in (None, pickled_sklearn):
        raise ModelIntegrityError(version, f"model.joblib was pickled by scikit-learn {pickled_sklearn}, "
                                           f"manifest says {libraries.get('scikit-learn')}")


def _manifest_channels(version: str, manifest: Mapping[str, Any]) -> tuple[str, ...]:
    channels = manifest.get("channels")
    if (not isinstance(channels, list) or not channels or len(set(channels)) != len(channels)
            or not all(isinstance(c, str) and c == c.lower() and c for c in channels)):
        raise ModelIntegrityError(version, f"manifest channels {channels!r}: expected distinct lower-case names")
    return tuple(channels)


def build_served_model(pointer: Pointer, manifest: Mapping[str, Any], estimator: PickledEstimator) -> ServedModel:
    """Check the estimator against its manifest and reduce it to what a prediction needs."""
    version = pointer.version
    channels = _manifest_channels(version, manifest)
    _check_libraries(version, manifest, estimator)
    state = estimator.state
    names = [str(n) for n in np.asarray(state.get("feature_names_in_", []), dtype=object).tolist()]
    if names != list(channels):
        raise ModelIntegrityError(version, f"estimator was fitted on columns {names}, manifest channels are "
                                           f"{list(channels)}")
    coef = np.asarray(state.get("coef_"), dtype=np.float64)
    intercept = np.asarray(state.get("intercept_", 0.0), dtype=np.float64)
    if coef.shape != (len(channels),) or intercept.shape != ():
        raise ModelIntegrityError(version, f"estimator has coef_ of shape {coef.shape} and intercept_ of shape "
                                           f"{intercept.shape}, expected ({len(channels)},) and a scalar")
    if not (np.isfinite(coef).all() and np.isfinite(intercept)):
        raise ModelIntegrityError(version, "estimator coefficients are not all finite")
    listed = manifest.get("coefficients", {})
    for channel, value in zip(channels, coef.tolist(), strict=True):
        if not isinstance(listed.get(channel), int | float) or not _close(float(listed[channel]), value):
            raise ModelIntegrityError(version, f"manifest coefficient of {channel} is {listed.get(channel)!r}, "
                                               f"model.joblib says {value!r}")
    if not isinstance(manifest.get("intercept"), int | float) or not _close(float(manifest["intercept"]),
                                                                            float(intercept)):
        raise ModelIntegrityError(version, f"manifest intercept is {manifest.get('intercept')!r}, model.joblib "
                                           f"says {float(intercept)!r}")
    return ServedModel(version, str(manifest["sha256"]), channels, float(intercept), coef.copy(), dict(manifest),
                       pointer)


def load_served_model(registry: ModelRegistry, pointer: Pointer) -> ServedModel:
    """Download, verify (sha256 before unpickling), check and reduce the version `pointer` names."""
    manifest, model_bytes = registry.verify(pointer.version, expected_sha256=pointer.sha256)
    return build_served_model(pointer, manifest, read_estimator_state(pointer.version, model_bytes))
