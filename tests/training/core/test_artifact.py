"""The one model loader: plain specs and legacy estimators in, code and decompression bombs refused."""

from __future__ import annotations

import io
import pickle
import struct
import tracemalloc
import zlib
from importlib import metadata
from types import SimpleNamespace

import joblib
import numpy as np
import pytest
from sklearn.linear_model import Lasso, LinearRegression, Ridge

from training.core import artifact
from training.core.artifact import dump_spec, linear_spec, load_spec, predict_linear, verify_model
from training.core.errors import ModelIntegrityError
from training.core.store import sha256_hex


def _joblib_bytes(obj: object, compress: int = 0) -> bytes:
    buffer = io.BytesIO()
    joblib.dump(obj, buffer, compress=compress)
    return buffer.getvalue()


@pytest.mark.parametrize("compress", [0, 3])
def test_a_linear_spec_round_trips(compress):
    spec = linear_spec("ridge", ["email", "video"], 12.5, [3.1, 0.9])

    loaded = load_spec("v1", dump_spec(spec, compress=compress))

    assert loaded["algorithm"] == "ridge" and loaded["channels"] == ["email", "video"]
    assert loaded["coefficients"].dtype == np.float64
    np.testing.assert_array_equal(predict_linear(loaded, [[1.0, 2.0], [0.0, 0.0]]), [12.5 + 3.1 + 1.8, 12.5])


@pytest.mark.parametrize(("estimator", "algorithm"), [(LinearRegression(), "ols"), (Ridge(alpha=0.5), "ridge")])
@pytest.mark.parametrize("compress", [0, 3])
def test_legacy_estimators_convert_to_the_linear_spec(estimator, algorithm, compress):
    import pandas as pd

    x = pd.DataFrame(np.arange(12.0).reshape(6, 2) ** 1.5, columns=["email", "video"])
    estimator.fit(x, np.arange(6.0))

    spec = load_spec("v1", _joblib_bytes(estimator, compress))

    assert spec["algorithm"] == algorithm and spec["channels"] == ["email", "video"]
    np.testing.assert_array_equal(spec["coefficients"], estimator.coef_)
    assert spec["intercept"] == pytest.approx(estimator.intercept_)
    assert spec["legacy"]["class"].endswith(type(estimator).__name__)


@pytest.mark.parametrize(("obj", "found"), [
    (Lasso().fit([[1.0], [2.0]], [1.0, 2.0]), "sklearn.linear_model._coordinate_descent.Lasso"),
    ([1, 2], "holds a list"),
    ({"format": "adroi-model/1"}, "format is 'adroi-model/1'"),
    ({"format": "adroi-model/2", "x": np.array(["a"])}, "array of dtype <U1"),
    ({"format": "adroi-model/2", "x": np.array([1.0], dtype=np.float32)}, "array of float32"),
])
def test_anything_else_is_refused_naming_what_was_found(obj, found):
    with pytest.raises(ModelIntegrityError, match=found.replace(".", r"\.").replace("[", r"\[")):
        load_spec("v1", _joblib_bytes(obj))


def test_a_pickle_calling_arbitrary_code_is_refused():
    class Exploit:
        def __reduce__(self):
            return (print, ("owned",))

    with pytest.raises(ModelIntegrityError, match="builtins.print"):
        load_spec("v1", pickle.dumps(Exploit()))


def test_code_hidden_in_an_object_array_is_refused():
    class Exploit:
        def __reduce__(self):
            return (print, ("owned",))

    data = _joblib_bytes({"format": "adroi-model/2", "x": np.array([Exploit()], dtype=object)})

    with pytest.raises(ModelIntegrityError, match="builtins.print"):
        load_spec("v1", data)


def test_garbage_bytes_are_refused():
    with pytest.raises(ModelIntegrityError, match="does not load"):
        load_spec("v1", b"not a pickle at all")


def test_dump_refuses_what_is_not_plain_data():
    with pytest.raises(ModelIntegrityError, match=r"model\.estimator is a LinearRegression"):
        dump_spec({"format": "adroi-model/2", "estimator": LinearRegression()})


def _zlib_bomb(payload_bytes: int) -> bytes:
    """A joblib-zlib file whose pickle is one BINBYTES8 of `payload_bytes` zeros, compressed in a stream."""
    compressor = zlib.compressobj(9)
    parts = [compressor.compress(b"\x80\x04" + b"\x8e" + struct.pack("<Q", payload_bytes))]
    chunk = bytes(1 << 20)
    for _ in range(payload_bytes >> 20):
        parts.append(compressor.compress(chunk))
    parts.append(compressor.compress(b"."))
    parts.append(compressor.flush())
    return b"".join(parts)


def test_a_zlib_bomb_is_refused_before_it_is_expanded():
    bomb = _zlib_bomb(1 << 30)  # 1 GiB of zeros in about 1 MB
    assert len(bomb) < 2 << 20

    tracemalloc.start()
    try:
        with pytest.raises(ModelIntegrityError, match=f"{artifact.MAX_MODEL_BYTES}-byte limit"):
            load_spec("v1", bomb)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    assert peak < 4 * artifact.MAX_MODEL_BYTES, f"peak {peak} bytes while refusing"


def test_an_array_larger_than_the_limit_is_refused_before_allocation():
    data = dump_spec({"format": "adroi-model/2", "big": np.zeros(1 << 22)}, compress=3)  # 32 MiB, in KB
    assert len(data) < 256 * 1024

    tracemalloc.start()
    try:
        with pytest.raises(ModelIntegrityError, match="1048576-byte limit"):
            load_spec("v1", data, limit=1 << 20)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    # What remains is zlib's own output for one 8 KiB input chunk (at most about 8 MiB), not the array.
    assert peak < 12 << 20, f"peak {peak} bytes while refusing"
    assert load_spec("v1", data, limit=40 << 20)["big"].shape == (1 << 22,)


def _manifest(spec: dict, model_bytes: bytes, **changes: object) -> dict:
    return {"channels": list(spec["channels"]), "algorithm": spec["algorithm"], "intercept": spec["intercept"],
            "coefficients": dict(zip(spec["channels"], spec["coefficients"].tolist(), strict=True)),
            "libraries": {"numpy": metadata.version("numpy")}, "sha256": sha256_hex(model_bytes),
            "size": len(model_bytes)} | changes


def test_verify_model_checks_hash_size_and_manifest():
    spec = linear_spec("ols", ["email", "video"], 10.0, [2.0, 3.0])
    data = dump_spec(spec)

    assert verify_model("v1", _manifest(spec, data), data)["intercept"] == 10.0
    with pytest.raises(ModelIntegrityError, match="sha256"):
        verify_model("v1", _manifest(spec, data), data + b"\0")
    with pytest.raises(ModelIntegrityError, match="LATEST says"):
        verify_model("v1", _manifest(spec, data), data, expected_sha256="0" * 64)
    with pytest.raises(ModelIntegrityError, match="manifest says 'ridge'"):
        verify_model("v1", _manifest(spec, data, algorithm="ridge"), data)


def test_an_algorithm_without_a_consistency_check_is_refused_and_one_can_be_added(monkeypatch):
    spec = {"format": "adroi-model/2", "algorithm": "bayes", "channels": ["email"], "curve": np.array([1.0])}
    data = dump_spec(spec)
    manifest = {"channels": ["email"], "algorithm": "bayes", "libraries": {"numpy": metadata.version("numpy")},
                "sha256": sha256_hex(data), "size": len(data)}
    with pytest.raises(ModelIntegrityError, match="model algorithm 'bayes': expected one of mmm, ols, ridge"):
        verify_model("v1", manifest, data)

    seen = []
    monkeypatch.setitem(artifact.CONSISTENCY_CHECKS, "bayes", lambda version, m, s: seen.append(s["curve"][0]))

    verify_model("v1", manifest, data)
    assert seen == [1.0]


# ---- the media-mix model's check ------------------------------------------------------------------------

@pytest.fixture(scope="module")
def mmm_fit():
    """A small media-mix model fitted on simulated data: its spec and the manifest blocks the pipeline writes."""
    from training import model
    from training.config import ModelConfig
    from training.sample import mmm_period_data, simulate_mmm

    data, _ = mmm_period_data(simulate_mmm(1, 3, ["tv", "search"]), "month", "monthly")
    config = ModelConfig(algorithm="mmm", mmm_decays=[0.0, 0.7], mmm_half_saturations=[0.6, 2.5],
                         mmm_shapes=[1.0], mmm_alphas=[0.0], mmm_sweeps=1, bootstrap_replicates=0)
    return model.fit_periods(data, config, intervals=False)


def _mmm_manifest(fitted, data: bytes, **changes: object) -> dict:
    return {"channels": list(fitted.spec["channels"]), "algorithm": "mmm", "grain": fitted.spec["grain"],
            "coefficients": fitted.summary.coefficients, **fitted.blocks(),
            "libraries": {"numpy": metadata.version("numpy")}, "sha256": sha256_hex(data), "size": len(data)} | changes


def test_a_media_mix_model_is_verified_against_its_response_curves(mmm_fit):
    data = dump_spec(mmm_fit.spec)

    spec = verify_model("v1", _mmm_manifest(mmm_fit, data), data)

    assert spec["algorithm"] == "mmm" and spec["decay"].tolist() == mmm_fit.spec["decay"].tolist()


def _with_curve(fitted, channel: str, **parameters: float) -> dict:
    curves = {c: dict(v, parameters=dict(v["parameters"])) for c, v in fitted.response_curves["channels"].items()}
    curves[channel]["parameters"].update(parameters)
    return {**fitted.response_curves, "channels": curves}


@pytest.mark.parametrize(("change", "message"), [
    (lambda f: {"response_curves": _with_curve(f, "tv", decay=0.123)}, "response_curves tv.decay is 0.123"),
    (lambda f: {"response_curves": _with_curve(f, "search", coefficient=-1.0)}, "search.coefficient is -1.0"),
    (lambda f: {"response_curves": {}}, "no response_curves.channels"),
    (lambda f: {"grain": "week"}, "model grain is 'month', manifest says 'week'"),
])
def test_a_media_mix_manifest_that_differs_from_its_model_is_refused(mmm_fit, change, message):
    data = dump_spec(mmm_fit.spec)
    with pytest.raises(ModelIntegrityError, match=message.replace(".", r"\.").replace("(", r"\(")):
        verify_model("v1", _mmm_manifest(mmm_fit, data, **change(mmm_fit)), data)


@pytest.mark.parametrize(("key", "value", "message"), [
    ("coefficient", np.array([np.nan, 1.0]), "model coefficient is not all finite"),
    ("decay", np.array([[1.5], [0.1]]), r"model decay of \['tv'\] is out of range: expected in \[0, 1\)"),
    ("shape", np.array([1.0]), r"model shape has shape \(1,\)"),
    ("shape", np.array([1.0, 2.0]), r"have shapes \[\(2, 1\), \(2, 1\), \(2, 1\), \(2,\)\]: expected one shape"),
    ("base_coefficients", np.array([1.0]), "model base_coefficients has shape"),
])
def test_a_malformed_media_mix_spec_is_refused(mmm_fit, key, value, message):
    spec = {**mmm_fit.spec, key: value}
    data = dump_spec(spec)
    with pytest.raises(ModelIntegrityError, match=message):
        verify_model("v1", _mmm_manifest(mmm_fit, data), data)


def _as_mixture(fitted):
    """The fitted single-Hill model rewritten as a two-component Hill mixture (what earlier versions published)."""
    spec = dict(fitted.spec)
    for key, second in (("decay", lambda v: np.full_like(v, 0.5)), ("half_saturation", lambda v: 2 * v),
                        ("shape", lambda v: np.ones_like(v)), ("coefficient", lambda v: v / 2)):
        first = np.asarray(spec[key], float).reshape(-1)
        spec[key] = np.column_stack([first / 2 if key == "coefficient" else first, second(first)])
    spec["curve_form"] = "hill_mixture"
    curves = {}
    for c, name in enumerate(spec["channels"]):
        parameters = {k: [float(v) for v in spec[k][c]] for k in ("coefficient", "decay", "half_saturation", "shape")}
        curves[name] = {**fitted.response_curves["channels"][name], "form": "hill_mixture", "parameters": parameters}
    return SimpleNamespace(spec=spec, summary=fitted.summary, response_curves={**fitted.response_curves, "channels": curves},
                           blocks=lambda: {**fitted.blocks(), "response_curves": {**fitted.response_curves,
                                                                                 "channels": curves}})


def test_a_hill_mixture_published_by_earlier_versions_is_verified_component_by_component(mmm_fit):
    mixture = _as_mixture(mmm_fit)
    data_bytes = dump_spec(mixture.spec)

    assert verify_model("v1", _mmm_manifest(mixture, data_bytes), data_bytes)["coefficient"].ndim == 2
    decays = mixture.response_curves["channels"]["tv"]["parameters"]["decay"]
    with pytest.raises(ModelIntegrityError, match="manifest response_curves tv.decay is"):
        verify_model("v1", _mmm_manifest(mixture, data_bytes, response_curves=_with_curve(
            mixture, "tv", decay=[*decays[:-1], 0.999])), data_bytes)
    with pytest.raises(ModelIntegrityError, match="manifest response_curves tv.coefficient is"):
        verify_model("v1", _mmm_manifest(mixture, data_bytes, response_curves=_with_curve(
            mixture, "tv", coefficient=[1.0] * (len(decays) + 1))), data_bytes)


def test_a_media_mix_spec_missing_a_key_is_refused(mmm_fit):
    spec = {k: v for k, v in mmm_fit.spec.items() if k != "trend_origin"}
    data = dump_spec(spec)
    with pytest.raises(ModelIntegrityError, match=r"missing \['trend_origin'\]"):
        verify_model("v1", _mmm_manifest(mmm_fit, data), data)
