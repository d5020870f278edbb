"""Model registry: immutable versions, verified loads, and the compare-and-swap LATEST pointer."""

from __future__ import annotations

import io
import threading
from datetime import UTC, datetime

import joblib
import numpy as np
import pytest
from sklearn.linear_model import LinearRegression

from training.core.errors import ModelIntegrityError, PreconditionFailed
from training.core.registry import LATEST_KEY, VersionExists, version_name


def _model_bytes(seed: int = 0) -> bytes:
    rng = np.random.default_rng(seed)
    x = rng.uniform(0, 100, size=(20, 2))
    model = LinearRegression().fit(x, x @ [2.0, 3.0] + seed)
    buf = io.BytesIO()
    joblib.dump(model, buf)
    return buf.getvalue()


def test_version_name_sorts_by_time_and_names_content():
    early = version_name(datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC), b"a")
    late = version_name(datetime(2026, 1, 2, 3, 4, 6, tzinfo=UTC), b"a")

    assert early.startswith("20260102T030405Z-") and len(early.split("-")[1]) == 8
    assert early < late


def test_publish_writes_files_and_manifest_last(registry):
    data = _model_bytes()

    manifest = registry.publish("v1", data, {"status": "promoted"}, {"validation.json": b"{}"})

    assert manifest["sha256"] and manifest["size"] == len(data)
    assert set(registry.store.list("models/v1")) == {
        "models/v1/model.joblib", "models/v1/manifest.json", "models/v1/validation.json"}
    assert registry.manifest("v1") == manifest
    assert registry.versions() == ["v1"]


def test_republishing_same_bytes_is_a_noop_but_different_bytes_are_refused(registry):
    registry.publish("v1", _model_bytes(0), {"status": "promoted"})

    again = registry.publish("v1", _model_bytes(0), {"status": "promoted"})
    with pytest.raises(VersionExists):
        registry.publish("v1", _model_bytes(1), {"status": "promoted"})

    assert again["sha256"] == registry.manifest("v1")["sha256"]


def test_promote_moves_latest_and_keeps_previous(registry):
    registry.publish("v1", _model_bytes(0), {"status": "promoted"})
    registry.publish("v2", _model_bytes(1), {"status": "promoted"})

    registry.promote("v1")
    pointer = registry.promote("v2", reason="better")

    latest = registry.latest()
    assert latest.version == "v2" and latest.previous == "v1" and latest.reason == "better"
    assert latest.generation == pointer.generation == registry.pointer_generation()


def test_promote_with_stale_generation_is_refused(registry):
    registry.publish("v1", _model_bytes(0), {"status": "promoted"})
    registry.publish("v2", _model_bytes(1), {"status": "promoted"})
    stale = registry.promote("v1").generation
    registry.promote("v1")

    with pytest.raises(PreconditionFailed):
        registry.promote("v2", expected_generation=stale)

    assert registry.latest().version == "v1"


def test_two_concurrent_publishers_never_lose_an_update(registry):
    for i in range(6):
        registry.publish(f"v{i}", _model_bytes(i), {"status": "promoted"})
    start = registry.promote("v0").generation
    results: dict[str, str] = {}

    def publisher(version: str) -> None:
        try:
            registry.promote(version, expected_generation=start)
            results[version] = "won"
        except PreconditionFailed:
            results[version] = "lost"

    threads = [threading.Thread(target=publisher, args=(f"v{i}",)) for i in range(1, 6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    winners = [v for v, r in results.items() if r == "won"]
    assert len(winners) == 1
    assert registry.latest().version == winners[0] and registry.latest().previous == "v0"


def test_tampered_model_is_refused_before_unpickling(registry):
    registry.publish("v1", _model_bytes(0), {"status": "promoted"})
    registry.store.write("models/v1/model.joblib", b"not the model")

    with pytest.raises(ModelIntegrityError, match="sha256"):
        registry.load("v1")
    with pytest.raises(ModelIntegrityError, match="sha256"):
        registry.promote("v1")
    assert registry.latest() is None


def test_load_returns_the_estimator(registry):
    registry.publish("v1", _model_bytes(0), {"status": "promoted"})

    manifest, model = registry.load("v1", expected_sha256=registry.manifest("v1")["sha256"])

    assert manifest["version"] == "v1"
    assert model.predict([[1.0, 1.0]])[0] == pytest.approx(5.0)


def test_load_refuses_pointer_hash_mismatch(registry):
    registry.publish("v1", _model_bytes(0), {"status": "promoted"})

    with pytest.raises(ModelIntegrityError, match="LATEST says"):
        registry.load("v1", expected_sha256="0" * 64)


def test_incomplete_version_without_manifest_is_ignored_and_cannot_be_promoted(registry):
    registry.store.write("models/half/model.joblib", _model_bytes(0))

    assert registry.versions() == []
    with pytest.raises(ModelIntegrityError, match="manifest"):
        registry.promote("half")
    assert registry.store.generation(LATEST_KEY) is None


def test_unpicklable_model_with_matching_hash_is_refused(registry):
    registry.publish("v1", b"garbage that hashes fine", {"status": "promoted"})

    with pytest.raises(ModelIntegrityError, match="does not load"):
        registry.load("v1")


def test_list_versions_marks_latest_newest_first(registry):
    registry.publish("20260101T000000Z-aaaaaaaa", _model_bytes(0),
                     {"status": "promoted", "metrics": {"holdout": {"r2": 0.9}}})
    registry.publish("20260201T000000Z-bbbbbbbb", _model_bytes(1),
                     {"status": "rejected", "gate": {"reason": "R² too low"}})
    registry.promote("20260101T000000Z-aaaaaaaa")

    rows = registry.list_versions()

    assert [r["version"] for r in rows] == ["20260201T000000Z-bbbbbbbb", "20260101T000000Z-aaaaaaaa"]
    assert [r["latest"] for r in rows] == [False, True]
    assert rows[0]["gate_reason"] == "R² too low" and rows[1]["metrics"] == {"r2": 0.9}


@pytest.mark.parametrize("bad", ["", "a/b", ".hidden"])
def test_invalid_version_names_are_refused(registry, bad):
    with pytest.raises(ModelIntegrityError, match="invalid version name"):
        registry.publish(bad, b"x", {})


def test_unreadable_pointer_is_an_integrity_error(registry):
    registry.store.write(LATEST_KEY, b"{not json")

    with pytest.raises(ModelIntegrityError, match="unreadable pointer"):
        registry.latest()


def test_failed_publish_removes_what_it_wrote(registry, monkeypatch):
    write = registry.store.write

    def manifest_write_fails(key, data, content_type="application/octet-stream"):
        if key.endswith("/manifest.json"):
            raise OSError("injected failure")
        return write(key, data, content_type)

    monkeypatch.setattr(registry.store, "write", manifest_write_fails)

    with pytest.raises(OSError, match="injected"):
        registry.publish("v1", _model_bytes(0), {"status": "promoted"}, {"validation.json": b"{}"})

    assert registry.store.list("models") == []
    assert not registry.has_version("v1")
