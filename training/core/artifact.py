"""The model artifact (`model.joblib`): the one loader and the one verification training, `promote` and the API use.

A model file holds a *plain model spec*: a dict of dict / list / tuple / str / int / float / bool / None and
numpy float64 or int64 arrays, written by `dump_spec` (joblib, optionally compressed). Keys common to every
algorithm: `format` ("adroi-model/2"), `algorithm` ("ols" | "ridge" | "mmm"), `channels`; a linear model adds
`intercept` and `coefficients` (one per channel, in channel order).

Loading never runs code from the file: joblib's unpickler is restricted to the numpy globals an array needs
(and, for versions written before the spec existed, a pickled scikit-learn `LinearRegression` or `Ridge`,
whose learned state is read without scikit-learn and converted to the linear spec). A load may decompress
and allocate at most `MAX_MODEL_BYTES`; a larger stream or array is refused before it is read.

`verify_model` is the whole check a version passes before anything uses it: size and sha256 against the
manifest (and the `LATEST` pointer), the restricted load, then the spec against its manifest (channels,
numpy major version, and the algorithm's own checks from `CONSISTENCY_CHECKS`).
"""

from __future__ import annotations

import functools
import io
import math
import pickle
from collections.abc import Callable, Mapping
from importlib import metadata
from typing import Any

import numpy as np

from training.core.errors import ModelIntegrityError
from training.core.store import sha256_hex

SPEC_FORMAT = "adroi-model/2"
LINEAR_ALGORITHMS = ("ols", "ridge")
# A linear model is a few kilobytes and a media-mix spec a few hundred: this bounds what one load may
# decompress and allocate (a crafted 1.5 MB zlib stream once expanded to 3 GB in the loader).
MAX_MODEL_BYTES = 16 * 1024 * 1024
COEFFICIENT_RTOL = 1e-9
# Arrays a spec may hold; object arrays only occur in legacy pickles (an estimator's feature names).
SPEC_DTYPES = (np.dtype(np.float64), np.dtype(np.int64))
_ARRAY_KINDS = "biufO"

LEGACY_ESTIMATORS = {
    ("sklearn.linear_model._base", "LinearRegression"): "ols",
    ("sklearn.linear_model._ridge", "Ridge"): "ridge",
}
_ARRAY_GLOBALS = {
    ("numpy", "dtype"),
    ("numpy", "ndarray"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
}


class _LegacyEstimator:
    """The learned state of a pickled scikit-learn estimator, read without scikit-learn."""

    class_path = ""
    algorithm = ""

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.state = dict(state)


class _BudgetExceeded(Exception):
    """A load asked for more than the allocation limit."""


class _BoundedReader:
    """A read-only file that refuses to hand out more than `limit` bytes in total."""

    def __init__(self, raw: Any, limit: int):
        self.raw, self.limit, self.used = raw, limit, 0

    def _take(self, n: int) -> None:
        if n < 0 or self.used + n > self.limit:
            raise _BudgetExceeded(f"reading {n if n >= 0 else 'everything'} more bytes after {self.used}")
        self.used += n

    def read(self, n: int = -1) -> bytes:
        """Read at most `n` bytes, refusing before the read if `n` would pass the limit."""
        self._take(self.limit - self.used + 1 if n is None or n < 0 else n)
        data = self.raw.read(n)
        self.used -= n - len(data)
        return data

    def readinto(self, buffer: Any) -> int:
        """Fill `buffer` (counted like a read of its size)."""
        view = memoryview(buffer).cast("B")
        data = self.read(len(view))
        view[: len(data)] = data
        return len(data)

    def readline(self, size: int = -1) -> bytes:
        """Read one line, counting what it returns."""
        line = self.raw.readline(self.limit - self.used + 1 if size is None or size < 0 else size)
        self._take(len(line))
        return line

    def ensure_room(self, n: int) -> None:
        """Refuse now if `n` more bytes (an array about to be allocated) would pass the limit."""
        if n < 0 or self.used + n > self.limit:
            raise _BudgetExceeded(f"allocating an array of {n} bytes after {self.used}")


@functools.cache
def _unpickler_class() -> type:
    """Build the restricted unpickler (joblib is imported only when a model is loaded)."""
    from joblib.numpy_pickle import NumpyArrayWrapper, NumpyUnpickler

    class BoundedArrayWrapper(NumpyArrayWrapper):
        """joblib's array placeholder, refusing a dtype or size beyond the limit before allocating."""

        def read(self, unpickler: Any, ensure_native_byte_order: bool) -> np.ndarray:
            dtype = np.dtype(self.dtype)
            if dtype.kind not in _ARRAY_KINDS or dtype.fields is not None or dtype.subdtype is not None:
                raise pickle.UnpicklingError(f"array of dtype {dtype}: expected numbers")
            count = math.prod(int(n) for n in self.shape)
            if count < 0:
                raise pickle.UnpicklingError(f"array of shape {self.shape}: expected non-negative sizes")
            # Refused before `np.empty` allocates it; the array's bytes are then counted as they are read.
            # Object arrays are a nested pickle read through the same bounded file; count their slots.
            size = count * (8 if dtype.hasobject else dtype.itemsize)
            unpickler.file_handle.ensure_room(size)
            return super().read(unpickler, ensure_native_byte_order)

    class SpecUnpickler(NumpyUnpickler):
        """joblib's unpickler, refusing every global outside plain data, numpy arrays and legacy estimators."""

        def find_class(self, module: str, name: str) -> Any:
            if (module, name) in LEGACY_ESTIMATORS:
                return type(name, (_LegacyEstimator,), {"class_path": f"{module}.{name}",
                                                        "algorithm": LEGACY_ESTIMATORS[(module, name)]})
            if (module, name) == ("joblib.numpy_pickle", "NumpyArrayWrapper"):
                return BoundedArrayWrapper
            if (module, name) in _ARRAY_GLOBALS:
                return super().find_class(module, name)
            raise pickle.UnpicklingError(
                f"model.joblib refers to {module}.{name}; a model file may hold only plain data and numpy arrays "
                f"(or a legacy {', '.join(sorted(n for _, n in LEGACY_ESTIMATORS))})")

    return SpecUnpickler


def _unpickle(version: str, model_bytes: bytes, limit: int) -> Any:
    from joblib.numpy_pickle_utils import _validate_fileobject_and_memmap

    if len(model_bytes) > limit:
        raise ModelIntegrityError(version, f"model.joblib is {len(model_bytes)} bytes, more than the "
                                           f"{limit}-byte limit a model may have (MAX_MODEL_BYTES)")
    try:
        with _validate_fileobject_and_memmap(io.BytesIO(model_bytes), "model.joblib", None) as (fobj, _):
            if isinstance(fobj, str):  # joblib < 0.10 layout: arrays in side files, never written here
                raise pickle.UnpicklingError("written by joblib < 0.10: expected a single-file model")
            bounded = _BoundedReader(fobj, limit)
            return _unpickler_class()("model.joblib", bounded, ensure_native_byte_order=True).load()
    except _BudgetExceeded as exc:
        raise ModelIntegrityError(version, f"model.joblib expands beyond the {limit}-byte limit a model may "
                                           f"decompress and allocate (MAX_MODEL_BYTES): refused when {exc}") from exc
    except MemoryError as exc:
        raise ModelIntegrityError(version, "model.joblib does not load: out of memory") from exc
    except Exception as exc:  # any unpickling failure means the version cannot be used
        raise ModelIntegrityError(version, f"model.joblib does not load: {exc}") from exc


def _check_plain(version: str, value: Any, where: str) -> None:
    """Refuse anything in a spec that is not plain data or a float64/int64 array."""
    if value is None or isinstance(value, bool | int | float | str):
        return
    if isinstance(value, np.ndarray):
        if value.dtype not in SPEC_DTYPES:
            raise ModelIntegrityError(version, f"{where} is an array of {value.dtype}: expected float64 or int64")
        return
    if isinstance(value, np.floating | np.integer):
        return
    if isinstance(value, Mapping):
        for key, item in value.items():
            if not isinstance(key, str):
                raise ModelIntegrityError(version, f"{where} has key {key!r}: expected strings")
            _check_plain(version, item, f"{where}.{key}")
        return
    if isinstance(value, list | tuple):
        for i, item in enumerate(value):
            _check_plain(version, item, f"{where}[{i}]")
        return
    raise ModelIntegrityError(version, f"{where} is a {type(value).__name__}: expected plain data")


def _legacy_spec(version: str, estimator: _LegacyEstimator) -> dict[str, Any]:
    """Convert a pickled LinearRegression/Ridge to the linear spec."""
    state = estimator.state
    names = state.get("feature_names_in_")
    channels = [str(n) for n in np.asarray(names if names is not None else [], dtype=object).tolist()]
    coef = np.asarray(state.get("coef_"), dtype=np.float64)
    intercept = np.asarray(state.get("intercept_", 0.0), dtype=np.float64)
    if coef.ndim != 1 or intercept.shape != ():
        raise ModelIntegrityError(version, f"{estimator.class_path} has coef_ of shape {coef.shape} and intercept_ "
                                           f"of shape {intercept.shape}: expected one output")
    spec: dict[str, Any] = {"format": SPEC_FORMAT, "algorithm": estimator.algorithm, "channels": channels,
                            "intercept": float(intercept), "coefficients": coef.copy(),
                            "legacy": {"class": estimator.class_path}}
    if state.get("_sklearn_version"):
        spec["legacy"]["scikit-learn"] = str(state["_sklearn_version"])
    return spec


def load_spec(version: str, model_bytes: bytes, limit: int = MAX_MODEL_BYTES) -> dict[str, Any]:
    """Load `model.joblib` into a plain model spec (legacy estimators converted), never running its code."""
    loaded = _unpickle(version, model_bytes, limit)
    if isinstance(loaded, _LegacyEstimator):
        return _legacy_spec(version, loaded)
    if not isinstance(loaded, dict):
        raise ModelIntegrityError(version, f"model.joblib holds a {type(loaded).__name__}: expected a model spec "
                                           f"(dict with format {SPEC_FORMAT!r}) or a legacy "
                                           f"{', '.join(sorted(n for _, n in LEGACY_ESTIMATORS))}")
    _check_plain(version, loaded, "model")
    if loaded.get("format") != SPEC_FORMAT:
        raise ModelIntegrityError(version, f"model format is {loaded.get('format')!r}: expected {SPEC_FORMAT!r}")
    return loaded


def dump_spec(spec: Mapping[str, Any], compress: int = 0) -> bytes:
    """Serialise a plain model spec with joblib (what `model.joblib` holds), refusing anything not plain."""
    import joblib

    _check_plain("(new)", spec, "model")
    if spec.get("format") != SPEC_FORMAT:
        raise ModelIntegrityError("(new)", f"model format is {spec.get('format')!r}: expected {SPEC_FORMAT!r}")
    buffer = io.BytesIO()
    joblib.dump(dict(spec), buffer, compress=compress)
    return buffer.getvalue()


def linear_spec(algorithm: str, channels: list[str], intercept: float, coefficients: Any) -> dict[str, Any]:
    """Return the spec of a linear model (revenue = intercept + coefficients · spend)."""
    return {"format": SPEC_FORMAT, "algorithm": algorithm, "channels": [str(c) for c in channels],
            "intercept": float(intercept), "coefficients": np.asarray(coefficients, dtype=np.float64).reshape(-1)}


def predict_linear(spec: Mapping[str, Any], spend: Any) -> np.ndarray:
    """Predict revenue for rows of spend (columns in the spec's channel order): intercept + spend · coefficients."""
    matrix = np.asarray(spend, dtype=np.float64)
    return float(spec["intercept"]) + matrix @ np.asarray(spec["coefficients"], dtype=np.float64)


# ---- verification ---------------------------------------------------------------------------------

def _close(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=COEFFICIENT_RTOL, abs_tol=1e-12)


def manifest_channels(version: str, manifest: Mapping[str, Any]) -> list[str]:
    """Return the manifest's channels, refusing anything but distinct non-empty lower-case names."""
    channels = manifest.get("channels")
    if (not isinstance(channels, list) or not channels or len(set(channels)) != len(channels)
            or not all(isinstance(c, str) and c and c == c.lower() for c in channels)):
        raise ModelIntegrityError(version, f"manifest channels {channels!r}: expected distinct lower-case names")
    return list(channels)


def check_linear(version: str, manifest: Mapping[str, Any], spec: Mapping[str, Any]) -> None:
    """Refuse a linear spec whose intercept or coefficients are malformed or differ from its manifest."""
    channels = spec["channels"]
    coef = spec.get("coefficients")
    intercept = spec.get("intercept")
    if not isinstance(coef, np.ndarray) or coef.shape != (len(channels),):
        raise ModelIntegrityError(version, f"model coefficients have shape {getattr(coef, 'shape', None)}: expected "
                                           f"({len(channels)},), one per channel")
    if not isinstance(intercept, int | float) or isinstance(intercept, bool):
        raise ModelIntegrityError(version, f"model intercept is {intercept!r}: expected a number")
    if not (np.isfinite(coef).all() and math.isfinite(intercept)):
        raise ModelIntegrityError(version, "model coefficients are not all finite")
    listed = manifest.get("coefficients")
    listed = listed if isinstance(listed, Mapping) else {}
    for channel, value in zip(channels, coef.tolist(), strict=True):
        if not isinstance(listed.get(channel), int | float) or not _close(float(listed[channel]), value):
            raise ModelIntegrityError(version, f"manifest coefficient of {channel} is {listed.get(channel)!r}, "
                                               f"model.joblib says {value!r}")
    if not isinstance(manifest.get("intercept"), int | float) or not _close(float(manifest["intercept"]),
                                                                            float(intercept)):
        raise ModelIntegrityError(version, f"manifest intercept is {manifest.get('intercept')!r}, model.joblib "
                                           f"says {float(intercept)!r}")
    legacy_sklearn = (spec.get("legacy") or {}).get("scikit-learn")
    libraries = manifest.get("libraries") or {}
    if legacy_sklearn and libraries.get("scikit-learn") not in (None, legacy_sklearn):
        raise ModelIntegrityError(version, f"model.joblib was pickled by scikit-learn {legacy_sklearn}, "
                                           f"manifest says {libraries.get('scikit-learn')}")


# The per-channel transform arrays of a media-mix spec ((C,) for one Hill curve per channel, (C, M) for a
# mixture of M), each named as in the manifest's response_curves parameters.
MMM_CURVE_ARRAYS = ("coefficient", "decay", "half_saturation", "shape")
MMM_GRAINS = ("month", "week")


def _finite_array(version: str, spec: Mapping[str, Any], key: str, shape_ok: Callable[[tuple[int, ...]], bool],
                  expected: str) -> np.ndarray:
    value = spec.get(key)
    if not isinstance(value, np.ndarray) or value.dtype != np.float64 or not shape_ok(value.shape):
        raise ModelIntegrityError(version, f"model {key} has shape {getattr(value, 'shape', None)}: expected "
                                           f"{expected} float64")
    if not np.isfinite(value).all():
        raise ModelIntegrityError(version, f"model {key} is not all finite")
    return value


def _curve_values(parameters: Mapping[str, Any], name: str) -> tuple[list[float], bool] | None:
    """A response-curve parameter as (numbers, listed per component), or None if it is not numbers."""
    value = parameters.get(name)
    values = value if isinstance(value, list) else [value]
    if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in values):
        return None
    return [float(v) for v in values], isinstance(value, list)


def check_mmm(version: str, manifest: Mapping[str, Any], spec: Mapping[str, Any]) -> None:
    """Refuse a media-mix spec that is incomplete, out of range or differs from its manifest's response curves."""
    from training.core import response  # the numpy-only model math (serving has it too)

    missing = [k for k in response.SPEC_KEYS if k not in spec]
    if missing:
        raise ModelIntegrityError(version, f"model is missing {missing}: expected every key of a media-mix spec")
    channels = list(spec["channels"])
    n = len(channels)
    expected = f"({n},) or ({n}, components)"
    def curve_shape(shape: tuple[int, ...]) -> bool:
        return shape == (n,) or (len(shape) == 2 and shape[0] == n and shape[1] >= 1)

    arrays = {key: _finite_array(version, spec, key, curve_shape, expected) for key in MMM_CURVE_ARRAYS}
    if len({a.shape for a in arrays.values()}) != 1:
        raise ModelIntegrityError(version, f"model coefficient, decay, half_saturation and shape have shapes "
                                           f"{[a.shape for a in arrays.values()]}: expected one shape")
    _finite_array(version, spec, "max_spend_seen", lambda shape: shape == (n,), f"({n},)")
    terms = len(spec["base_terms"])
    _finite_array(version, spec, "base_coefficients", lambda shape: shape == (terms,), f"({terms},)")
    rows = {key: a.reshape(n, -1) for key, a in arrays.items()}
    checks = (("decay", lambda v: (v >= 0) & (v < 1), "in [0, 1)"), ("half_saturation", lambda v: v > 0, "> 0"),
              ("shape", lambda v: v > 0, "> 0"), ("coefficient", lambda v: v >= 0, ">= 0"))
    for key, ok, wanted in checks:
        bad = [c for c, row in zip(channels, rows[key], strict=True) if not ok(row).all()]
        if bad:
            raise ModelIntegrityError(version, f"model {key} of {bad} is out of range: expected {wanted}")
    try:
        response.check_spec(dict(spec))  # what the shared prediction code itself requires
    except ValueError as exc:
        raise ModelIntegrityError(version, f"model.joblib: {exc}") from exc
    grain = spec.get("grain")
    if grain not in MMM_GRAINS or manifest.get("grain", grain) != grain:
        raise ModelIntegrityError(version, f"model grain is {grain!r}, manifest says {manifest.get('grain')!r}: "
                                           f"expected the same, one of {', '.join(MMM_GRAINS)}")
    curves = (manifest.get("response_curves") or {}).get("channels")
    if not isinstance(curves, Mapping):
        raise ModelIntegrityError(version, "manifest has no response_curves.channels: expected the media-mix "
                                           "model's curve parameters per channel")
    for i, channel in enumerate(channels):
        parameters = (curves.get(channel) or {}).get("parameters") or {}
        live = rows["coefficient"][i] != 0  # a mixture lists its live components only (padding has β = 0)
        for key in MMM_CURVE_ARRAYS:
            listed = _curve_values(parameters, key)
            if listed is None:
                model_values = rows[key][i].tolist()
            else:  # one Hill curve: scalars; a mixture: one number per live component
                model_values = rows[key][i][live].tolist() if listed[1] else rows[key][i].tolist()
            if listed is None or len(listed[0]) != len(model_values) or not all(
                    _close(a, b) for a, b in zip(listed[0], model_values, strict=True)):
                raise ModelIntegrityError(version, f"manifest response_curves {channel}.{key} is "
                                                   f"{parameters.get(key)!r}, model.joblib says {model_values!r}")


# algorithm -> check of the spec against its manifest (after the common checks).
CONSISTENCY_CHECKS: dict[str, Callable[[str, Mapping[str, Any], Mapping[str, Any]], None]] = {
    "ols": check_linear,
    "ridge": check_linear,
    "mmm": check_mmm,
}


def _check_libraries(version: str, manifest: Mapping[str, Any]) -> None:
    """Refuse a model whose arrays this numpy may not read (another major version)."""
    libraries = manifest.get("libraries")
    if not isinstance(libraries, Mapping) or "numpy" not in libraries:
        raise ModelIntegrityError(version, "manifest.json has no libraries.numpy: cannot check compatibility")
    ours = metadata.version("numpy")
    if str(libraries["numpy"]).split(".")[0] != ours.split(".")[0]:
        raise ModelIntegrityError(version, f"trained with numpy {libraries['numpy']}, this process has numpy {ours}: "
                                           "expected the same major version")


def check_spec(version: str, manifest: Mapping[str, Any], spec: Mapping[str, Any]) -> None:
    """Refuse a spec that does not match its manifest (channels, numpy, algorithm and its own checks)."""
    channels = manifest_channels(version, manifest)
    _check_libraries(version, manifest)
    if spec.get("channels") != channels:
        raise ModelIntegrityError(version, f"model.joblib has channels {spec.get('channels')!r}, manifest channels "
                                           f"are {channels}")
    algorithm = spec.get("algorithm")
    if manifest.get("algorithm", algorithm) != algorithm:
        raise ModelIntegrityError(version, f"model.joblib holds a {algorithm!r} model, manifest says "
                                           f"{manifest.get('algorithm')!r}")
    check = CONSISTENCY_CHECKS.get(str(algorithm))
    if check is None:
        raise ModelIntegrityError(version, f"model algorithm {algorithm!r}: expected one of "
                                           f"{', '.join(sorted(CONSISTENCY_CHECKS))}")
    check(version, manifest, spec)


def verify_model(version: str, manifest: Mapping[str, Any], model_bytes: bytes,
                 expected_sha256: str | None = None) -> dict[str, Any]:
    """Check size and sha256, load the spec without running code, check it against the manifest; return it."""
    digest = sha256_hex(model_bytes)
    if digest != manifest.get("sha256"):
        raise ModelIntegrityError(version, f"sha256 of model.joblib is {digest}, manifest says "
                                           f"{manifest.get('sha256')}")
    if expected_sha256 and digest != expected_sha256:
        raise ModelIntegrityError(version, f"sha256 of model.joblib is {digest}, LATEST says {expected_sha256}")
    if manifest.get("size") not in (None, len(model_bytes)):
        raise ModelIntegrityError(version, f"model.joblib is {len(model_bytes)} bytes, manifest says "
                                           f"{manifest.get('size')}")
    spec = load_spec(version, model_bytes)
    check_spec(version, manifest, spec)
    return spec
