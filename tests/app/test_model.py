"""Tests of app/model.py: verified loading into a ServedModel without scikit-learn, and every refusal."""

from __future__ import annotations

import io
import json
import pickle

import joblib
import numpy as np
import pytest
from sklearn.linear_model import Lasso, Ridge

from app.model import PickledEstimator, build_served_model, load_served_model, read_estimator_state
from training.core.errors import ModelIntegrityError
from training.core.registry import ModelRegistry
from training.core.store import open_store


def test_loads_the_promoted_version_from_each_backend(published_store):
    registry = ModelRegistry(open_store(published_store.store_uri))

    model = load_served_model(registry, registry.latest())

    assert model.version == published_store.version
    assert model.channels == tuple(published_store.estimator.feature_names_in_)
    np.testing.assert_allclose(model.coefficients, published_store.estimator.coef_, rtol=1e-12)
    assert model.intercept == pytest.approx(published_store.estimator.intercept_, rel=1e-12)
    assert not model.coefficients.flags.writeable
    assert model.describe()["marginal_roi"]["email"] == pytest.approx(3.1)


def test_ridge_and_compressed_files_load():
    estimator = Ridge(alpha=0.5).fit(np.arange(12.0).reshape(6, 2) ** 1.5, np.arange(6.0))
    buffer = io.BytesIO()
    joblib.dump(estimator, buffer, compress=3)

    state = read_estimator_state("v1", buffer.getvalue())

    assert isinstance(state, PickledEstimator)
    assert state.class_path == "sklearn.linear_model._ridge.Ridge"
    np.testing.assert_array_equal(state.state["coef_"], estimator.coef_)


@pytest.mark.parametrize("obj", [Lasso().fit([[1.0], [2.0]], [1.0, 2.0]), {"coef_": [1.0]}, [1, 2]])
def test_other_objects_are_refused(obj):
    buffer = io.BytesIO()
    joblib.dump(obj, buffer)

    with pytest.raises(ModelIntegrityError, match="v1"):
        read_estimator_state("v1", buffer.getvalue())


def test_a_pickle_calling_arbitrary_code_is_refused():
    class Exploit:
        def __reduce__(self):
            return (print, ("owned",))

    with pytest.raises(ModelIntegrityError, match="builtins.print"):
        read_estimator_state("v1", pickle.dumps(Exploit()))


def test_garbage_bytes_are_refused():
    with pytest.raises(ModelIntegrityError, match="does not load"):
        read_estimator_state("v1", b"not a pickle at all")


def _state_and_manifest(published_store):
    registry = ModelRegistry(open_store(published_store.store_uri))
    pointer = registry.latest()
    manifest, model_bytes = registry.verify(pointer.version)
    return registry, pointer, manifest, read_estimator_state(pointer.version, model_bytes)


@pytest.mark.parametrize(("change", "message"), [
    (lambda m: m["coefficients"].update(email=3.2), "coefficient of email"),
    (lambda m: m.update(intercept=1.0), "intercept"),
    (lambda m: m.update(channels=["email", "video", "search_engine", "social_media"]), "fitted on columns"),
    (lambda m: m.update(channels=["Email", "search_engine", "social_media", "video"]), "lower-case"),
    (lambda m: m["libraries"].update(numpy="1.26.4"), "numpy"),
    (lambda m: m["libraries"].update({"scikit-learn": "0.24.2"}), "scikit-learn"),
    (lambda m: m.pop("libraries"), "libraries"),
])
def test_manifest_that_disagrees_with_the_file_is_refused(tmp_path, publish_model, change, message):
    published = publish_model(str(tmp_path / "store"))
    _, pointer, manifest, state = _state_and_manifest(published)
    manifest = json.loads(json.dumps(manifest))
    change(manifest)

    with pytest.raises(ModelIntegrityError, match=message):
        build_served_model(pointer, manifest, state)


def test_tampered_model_file_is_refused_before_unpickling(tmp_path, publish_model):
    published = publish_model(str(tmp_path / "store"))
    store = open_store(published.store_uri)
    key = f"models/{published.version}/model.joblib"
    store.write(key, store.read(key) + b"\0")
    registry = ModelRegistry(store)

    with pytest.raises(ModelIntegrityError, match="sha256"):
        load_served_model(registry, registry.latest())
