"""Tests of app/model.py: verified loading into a ServedModel without scikit-learn, and every refusal."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from app.model import load_served_model
from training.core.artifact import verify_model
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


def test_a_legacy_pickled_estimator_is_served_from_its_converted_spec(tmp_path, publish_model):
    published = publish_model(str(tmp_path / "store"), legacy=True)
    registry = ModelRegistry(open_store(published.store_uri))

    model = load_served_model(registry, registry.latest())

    assert model.channels == tuple(published.estimator.feature_names_in_)
    np.testing.assert_allclose(model.coefficients, published.estimator.coef_, rtol=1e-12)


def _spec_and_manifest(published_store):
    registry = ModelRegistry(open_store(published_store.store_uri))
    pointer = registry.latest()
    manifest = registry.manifest(pointer.version)
    model_bytes = registry.store.read(f"models/{pointer.version}/model.joblib")
    return pointer, manifest, model_bytes


@pytest.mark.parametrize(("change", "message"), [
    (lambda m: m["coefficients"].update(email=3.2), "coefficient of email"),
    (lambda m: m.update(intercept=1.0), "intercept"),
    (lambda m: m.update(channels=["email", "video", "search_engine", "social_media"]), "has channels"),
    (lambda m: m.update(channels=["Email", "search_engine", "social_media", "video"]), "lower-case"),
    (lambda m: m["libraries"].update(numpy="1.26.4"), "numpy"),
    (lambda m: m["libraries"].update({"scikit-learn": "0.24.2"}), "scikit-learn"),
    (lambda m: m.pop("libraries"), "libraries"),
])
def test_manifest_that_disagrees_with_the_file_is_refused(tmp_path, publish_model, change, message):
    published = publish_model(str(tmp_path / "store"), legacy=message == "scikit-learn")
    pointer, manifest, model_bytes = _spec_and_manifest(published)
    change(manifest)

    with pytest.raises(ModelIntegrityError, match=message):
        verify_model(pointer.version, manifest, model_bytes)


def test_tampered_model_file_is_refused_before_unpickling(tmp_path, publish_model):
    published = publish_model(str(tmp_path / "store"))
    store = open_store(published.store_uri)
    key = f"models/{published.version}/model.joblib"
    store.write(key, store.read(key) + b"\0")
    registry = ModelRegistry(store)

    with pytest.raises(ModelIntegrityError, match="sha256"):
        load_served_model(registry, registry.latest())


# ---- the media-mix model -----------------------------------------------------------------------------------

def test_a_media_mix_version_is_served_with_its_facts_computed_at_load(mmm_store):
    registry = ModelRegistry(open_store(mmm_store.store_uri))
    spec = mmm_store.estimator.spec

    model = load_served_model(registry, registry.latest())

    assert model.algorithm == "mmm" and model.channels == tuple(spec["channels"])
    np.testing.assert_allclose(model.coefficients, np.reshape(spec["coefficient"], (4, -1)).sum(axis=1))
    assert model.facts.default_period == "2026-11"
    assert "2026-11" in model.facts._periods  # the default period's base is ready before the first request


def test_describe_shows_grain_roi_curves_and_how_controls_default(mmm_store):
    registry = ModelRegistry(open_store(mmm_store.store_uri))
    manifest = registry.manifest(mmm_store.version)

    described = load_served_model(registry, registry.latest()).describe()

    assert described["grain"] == "month" and described["default_period"] == "2026-11"
    assert described["intercept"] is None
    assert described["roi"] == manifest["roi"] and described["response_curves"] == manifest["response_curves"]
    assert described["marginal_roi"] == {c: v["mroi"] for c, v in manifest["roi"]["channels"].items()}
    controls = described["controls"]
    assert controls["names"] == ["price_index", "promo", "holiday"]
    assert "same period a year earlier" in controls["default"]
    assert controls["from"] == "2025-11"
    spec = mmm_store.estimator.spec
    assert list(controls["values"].values()) == pytest.approx(spec["control_by_period"]["2025-11"].tolist())


def test_an_mmm_spec_missing_what_prediction_needs_is_refused(tmp_path):
    from tests.conftest import fitted_mmm, publish_fitted_mmm
    from training.core.artifact import dump_spec

    fitted = fitted_mmm()
    published = publish_fitted_mmm(str(tmp_path / "store"), fitted, promote=False)
    registry = ModelRegistry(open_store(published.store_uri))
    manifest = registry.manifest(published.version)
    broken = dump_spec({k: v for k, v in fitted.spec.items() if k != "half_saturation"})
    manifest = {**manifest, "sha256": hashlib.sha256(broken).hexdigest(), "size": len(broken)}

    with pytest.raises(ModelIntegrityError, match="half_saturation"):
        verify_model(published.version, manifest, broken)
