"""Model registry: immutable versions, verified loads, and the compare-and-swap LATEST pointer."""

from __future__ import annotations

import io
import json
import os
import threading
from datetime import UTC, datetime
from importlib import metadata

import joblib
import numpy as np
import pytest
from sklearn.linear_model import LinearRegression

from training.core.artifact import dump_spec, linear_spec
from training.core.errors import ModelIntegrityError, PreconditionFailed
from training.core.registry import LATEST_KEY, VersionExists, version_name

CHANNELS = ["email", "video"]


def _version(i: int) -> str:
    return f"2026010{i % 10}T000000Z-{i:08x}"


V1, V2 = _version(1), _version(2)


def _model_bytes(seed: int = 0) -> bytes:
    return dump_spec(linear_spec("ols", CHANNELS, 1.0 + seed, [2.0, 3.0]))


def _manifest(seed: int = 0, **extra: object) -> dict:
    """The manifest fields the verification checks, consistent with `_model_bytes(seed)`."""
    return {"status": "promoted", "channels": CHANNELS, "algorithm": "ols", "intercept": 1.0 + seed,
            "coefficients": {"email": 2.0, "video": 3.0}, "libraries": {"numpy": metadata.version("numpy")},
            **extra}


def _publish(registry, version: str, seed: int = 0, **extra: object) -> dict:
    return registry.publish(version, _model_bytes(seed), _manifest(seed, **extra))


def test_version_name_sorts_by_time_and_names_content():
    early = version_name(datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC), b"a")
    late = version_name(datetime(2026, 1, 2, 3, 4, 6, tzinfo=UTC), b"a")

    assert early.startswith("20260102T030405Z-") and len(early.split("-")[1]) == 8
    assert early < late


def test_publish_writes_files_and_manifest_last(registry):
    data = _model_bytes()

    manifest = registry.publish(V1, data, _manifest(), {"validation.json": b"{}"})

    assert manifest["sha256"] and manifest["size"] == len(data)
    assert set(registry.store.list(f"models/{V1}")) == {
        f"models/{V1}/model.joblib", f"models/{V1}/manifest.json", f"models/{V1}/validation.json"}
    assert registry.manifest(V1) == manifest
    assert registry.versions() == [V1]


def test_republishing_same_bytes_is_a_noop_but_different_bytes_are_refused(registry):
    _publish(registry, V1, 0)

    again = _publish(registry, V1, 0)
    with pytest.raises(VersionExists):
        _publish(registry, V1, 1)

    assert again["sha256"] == registry.manifest(V1)["sha256"]


def test_promote_moves_latest_and_keeps_previous(registry):
    _publish(registry, V1, 0)
    _publish(registry, V2, 1)

    registry.promote(V1)
    pointer = registry.promote(V2, reason="better")

    latest = registry.latest()
    assert latest.version == V2 and latest.previous == V1 and latest.reason == "better"
    assert latest.generation == pointer.generation == registry.pointer_generation()


def test_promote_with_stale_generation_is_refused(registry):
    _publish(registry, V1, 0)
    _publish(registry, V2, 1)
    stale = registry.promote(V1).generation
    registry.promote(V1)

    with pytest.raises(PreconditionFailed):
        registry.promote(V2, expected_generation=stale)

    assert registry.latest().version == V1


def test_two_concurrent_publishers_never_lose_an_update(registry):
    for i in range(6):
        _publish(registry, _version(i), i)
    start = registry.promote(_version(0)).generation
    results: dict[str, str] = {}

    def publisher(version: str) -> None:
        try:
            registry.promote(version, expected_generation=start)
            results[version] = "won"
        except PreconditionFailed:
            results[version] = "lost"

    threads = [threading.Thread(target=publisher, args=(_version(i),)) for i in range(1, 6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    winners = [v for v, r in results.items() if r == "won"]
    assert len(winners) == 1
    assert registry.latest().version == winners[0] and registry.latest().previous == _version(0)


def test_tampered_model_is_refused_before_unpickling(registry):
    _publish(registry, V1, 0)
    registry.store.write(f"models/{V1}/model.joblib", b"not the model")

    with pytest.raises(ModelIntegrityError, match="sha256"):
        registry.load(V1)
    with pytest.raises(ModelIntegrityError, match="sha256"):
        registry.promote(V1)
    assert registry.latest() is None


def test_load_returns_the_verified_spec(registry):
    _publish(registry, V1, 0)

    manifest, spec = registry.load(V1, expected_sha256=registry.manifest(V1)["sha256"])

    assert manifest["version"] == V1
    assert spec["channels"] == CHANNELS and spec["intercept"] == 1.0
    np.testing.assert_array_equal(spec["coefficients"], [2.0, 3.0])


def _install(registry, version: str, model_bytes: bytes, manifest: dict) -> None:
    """Write a version and LATEST the way someone with write access to the bucket could, hashes updated."""
    from training.core.store import sha256_hex

    body = {**manifest, "version": version, "sha256": sha256_hex(model_bytes), "size": len(model_bytes)}
    registry.store.write(f"models/{version}/model.joblib", model_bytes)
    registry.store.write(f"models/{version}/manifest.json", json.dumps(body).encode())
    registry.store.write(LATEST_KEY, json.dumps({"version": version, "sha256": body["sha256"]}).encode())


class _Exploit:
    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


@pytest.mark.parametrize("compress", [0, 3])
def test_a_crafted_pickle_with_matching_hashes_runs_no_code_on_load_or_promote(registry, tmp_path, compress):
    marker = tmp_path / "owned"
    buffer = io.BytesIO()
    joblib.dump({"format": "adroi-model/2", "payload": _Exploit(str(marker))}, buffer, compress=compress)
    _install(registry, V1, buffer.getvalue(), _manifest())

    with pytest.raises(ModelIntegrityError, match="posix.mkdir"):
        registry.load(V1, expected_sha256=registry.latest().sha256)
    with pytest.raises(ModelIntegrityError, match="posix.mkdir"):
        registry.promote(V1)
    assert not marker.exists()


def test_manifest_coefficients_edited_are_refused_by_promote(registry):
    _publish(registry, V1, 0)
    manifest = registry.manifest(V1)
    manifest["coefficients"]["email"] = 2.5  # the model file is unchanged, so its sha256 still matches
    registry.store.write(f"models/{V1}/manifest.json", json.dumps(manifest).encode())

    with pytest.raises(ModelIntegrityError, match="manifest coefficient of email is 2.5"):
        registry.promote(V1)
    assert registry.latest() is None


def test_a_legacy_pickled_linear_regression_loads_as_its_linear_spec(registry):
    x = np.random.default_rng(0).uniform(0, 100, size=(20, 2))
    import pandas as pd

    estimator = LinearRegression().fit(pd.DataFrame(x, columns=CHANNELS), x @ [2.0, 3.0] + 1.0)
    buffer = io.BytesIO()
    joblib.dump(estimator, buffer)
    registry.publish(V1, buffer.getvalue(), _manifest(coefficients=dict(zip(CHANNELS, estimator.coef_.tolist(), strict=True)),
                                                      intercept=float(estimator.intercept_)))

    pointer = registry.promote(V1)
    _, spec = registry.load(V1, pointer.sha256)

    assert spec["algorithm"] == "ols" and spec["channels"] == CHANNELS
    np.testing.assert_allclose(spec["coefficients"], estimator.coef_, rtol=1e-12)


def test_load_refuses_pointer_hash_mismatch(registry):
    _publish(registry, V1, 0)

    with pytest.raises(ModelIntegrityError, match="LATEST says"):
        registry.load(V1, expected_sha256="0" * 64)


def test_incomplete_version_without_manifest_is_listed_as_such_and_cannot_be_promoted(registry):
    registry.store.write(f"models/{V2}/model.joblib", _model_bytes(0))

    assert registry.versions() == []
    assert [(r["version"], r["status"]) for r in registry.list_versions()] == [(V2, "incomplete")]
    with pytest.raises(ModelIntegrityError, match="manifest"):
        registry.promote(V2)
    assert registry.store.generation(LATEST_KEY) is None


def test_unpicklable_model_with_matching_hash_is_refused(registry):
    registry.publish(V1, b"garbage that hashes fine", _manifest())

    with pytest.raises(ModelIntegrityError, match="does not load"):
        registry.load(V1)


def test_list_versions_marks_latest_newest_first(registry):
    _publish(registry, "20260101T000000Z-aaaaaaaa", 0, metrics={"holdout": {"r2": 0.9}})
    _publish(registry, "20260201T000000Z-bbbbbbbb", 1, status="rejected", gate={"reason": "R² too low"})
    registry.promote("20260101T000000Z-aaaaaaaa")

    rows = registry.list_versions()

    assert [r["version"] for r in rows] == ["20260201T000000Z-bbbbbbbb", "20260101T000000Z-aaaaaaaa"]
    assert [r["latest"] for r in rows] == [False, True]
    assert rows[0]["gate_reason"] == "R² too low" and rows[1]["metrics"] == {"r2": 0.9}


@pytest.mark.parametrize("bad", ["", "a/b", ".hidden", "v1", "../20260101T000000Z-00000001", "x" * 300,
                                 "20260101T000000Z-0000000G"])
def test_invalid_version_names_are_refused(registry, bad):
    with pytest.raises(ModelIntegrityError, match="invalid version name: expected YYYYmmddTHHMMSSZ-"):
        registry.publish(bad, b"x", {})
    with pytest.raises(ModelIntegrityError, match="invalid version name"):
        registry.promote(bad)


def test_unreadable_pointer_is_an_integrity_error_that_promote_replaces(registry, caplog):
    _publish(registry, V1, 0)
    registry.store.write(LATEST_KEY, b"{not json")

    with pytest.raises(ModelIntegrityError, match="unreadable pointer"):
        registry.latest()
    assert [r["version"] for r in registry.list_versions()] == [V1]
    with pytest.raises(ModelIntegrityError, match="unreadable pointer"):  # a pipeline's CAS never overrides it
        registry.promote(V1, expected_generation=None)

    pointer = registry.promote(V1)

    assert registry.latest().version == V1 and pointer.previous is None
    assert any("replacing unreadable" in r.getMessage() for r in caplog.records)


def test_one_broken_manifest_is_marked_and_the_others_listed(registry):
    _publish(registry, V1, 0)
    _publish(registry, V2, 1)
    _publish(registry, _version(3), 3)
    registry.store.write(f"models/{V1}/manifest.json", b"{broken")
    registry.store.write(f"models/{_version(3)}/manifest.json", b"[1, 2]")

    rows = {r["version"]: r for r in registry.list_versions()}

    assert rows[V2]["status"] == "promoted" and rows[V2]["problem"] is None
    assert rows[V1]["status"] == "broken" and "not valid JSON" in rows[V1]["problem"]
    assert rows[_version(3)]["status"] == "broken" and "JSON list: expected an object" in rows[_version(3)]["problem"]
    with pytest.raises(ModelIntegrityError, match="JSON list"):
        registry.promote(_version(3))


def test_gc_removes_incomplete_versions_and_never_a_complete_one(registry):
    _publish(registry, V1, 0)
    registry.store.write(f"models/{V2}/model.joblib", _model_bytes(1))  # a publish killed before its manifest
    kept = registry.store.list(f"models/{V1}")

    planned = registry.gc(older_than_seconds=0, dry_run=True)
    assert registry.store.exists(f"models/{V2}/model.joblib")
    removed = registry.gc(older_than_seconds=0)

    assert removed == planned == [f"models/{V2}/model.joblib"]
    assert registry.store.list(f"models/{V2}") == [] and registry.store.list(f"models/{V1}") == kept
    assert [r["version"] for r in registry.list_versions()] == [V1]


def test_gc_keeps_recent_objects_and_removes_stale_partial_writes(tmp_path):
    from training.core.registry import ModelRegistry
    from training.core.store import LocalStore

    registry = ModelRegistry(LocalStore(tmp_path / "store"))
    _publish(registry, V1, 0)
    registry.store.write(f"models/{V2}/model.joblib", _model_bytes(1))
    fresh = _version(3)
    registry.store.write(f"models/{fresh}/model.joblib", _model_bytes(3))  # a publish that may still run
    root = registry.store.root
    for name in (f"models/{V1}/.model.joblib.x1.tmp", "models/.LATEST.x2.tmp", f"models/{_version(4)}/.m.x3.tmp"):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(b"partial")
    old = datetime(2020, 1, 1, tzinfo=UTC).timestamp()
    for path in [*root.glob("models/*/*"), *root.glob("models/.*.tmp")]:
        if fresh not in str(path):
            os.utime(path, (old, old))
    rows = {r["version"]: r["status"] for r in registry.list_versions()}
    assert rows == {V1: "promoted", V2: "incomplete", fresh: "incomplete", _version(4): "incomplete"}

    removed = registry.gc(older_than_seconds=24 * 3600)

    assert sorted(removed) == sorted([f"models/{V2}/model.joblib", f"models/{_version(4)}/.m.x3.tmp",
                                      f"models/{V1}/.model.joblib.x1.tmp", "models/.LATEST.x2.tmp"])
    assert registry.store.temporary() == [] and not (root / "models" / V2).exists()
    assert registry.store.exists(f"models/{fresh}/model.joblib")
    registry.load(V1)


def test_failed_publish_removes_what_it_wrote(registry, monkeypatch):
    write = registry.store.write

    def manifest_write_fails(key, data, content_type="application/octet-stream"):
        if key.endswith("/manifest.json"):
            raise OSError("injected failure")
        return write(key, data, content_type)

    monkeypatch.setattr(registry.store, "write", manifest_write_fails)

    with pytest.raises(OSError, match="injected"):
        registry.publish(V1, _model_bytes(0), _manifest(), {"validation.json": b"{}"})

    assert registry.store.list("models") == []
    assert not registry.has_version(V1)
