"""Tests of app/follower.py: following LATEST cheaply, swapping atomically, and surviving every fault."""

from __future__ import annotations

import json
import logging
import os

import pytest

from app.follower import ModelFollower
from training.core import events
from training.core.registry import LATEST_KEY, ModelRegistry
from training.core.store import LocalStore, open_store

OTHER_COEFFICIENTS = {"email": 1.0, "search_engine": 1.0, "social_media": 1.0, "video": 1.0}


def _load_failures(caplog) -> list[logging.LogRecord]:
    return [r for r in caplog.records if getattr(r, "event", None) == events.MODEL_LOAD_FAILED]


def _follower(store_uri: str, poll_seconds: float = 3600) -> ModelFollower:
    store = open_store(store_uri, timeout=1.0, retry_deadline=1.0) if store_uri.startswith("gs://") else \
        open_store(store_uri)
    return ModelFollower(ModelRegistry(store), poll_seconds)


def test_follows_each_promotion_on_each_backend(store_uri, publish_model):
    follower = _follower(store_uri)
    assert follower.poll_once() is False and follower.current is None
    assert "no model promoted yet" in follower.last_error

    first = publish_model(store_uri)
    assert follower.poll_once() is True
    served_first = follower.current
    second = publish_model(store_uri, OTHER_COEFFICIENTS)
    assert follower.poll_once() is True

    assert served_first.version == first.version
    assert follower.current.version == second.version
    assert follower.current.coefficients.tolist() == pytest.approx([1.0] * 4)
    assert served_first.coefficients.tolist() == pytest.approx([3.1, 2.4, 1.7, 0.9])  # untouched by the swap


class CountingStore(LocalStore):
    """A local store that records which methods were called."""

    def __init__(self, root):
        super().__init__(root)
        self.calls: list[str] = []

    def __getattribute__(self, name):
        if name in {"read", "read_with_generation", "generation", "info", "list", "open_read"}:
            object.__getattribute__(self, "calls").append(name)
        return object.__getattribute__(self, name)


def test_unchanged_pointer_costs_one_metadata_call(tmp_path, publish_model):
    publish_model(str(tmp_path / "store"))
    store = CountingStore(tmp_path / "store")
    follower = ModelFollower(ModelRegistry(store), 3600)
    follower.poll_once()
    store.calls.clear()

    assert follower.poll_once() is False
    assert store.calls == ["generation"]


def test_tampered_model_is_refused_and_the_old_one_keeps_serving(tmp_path, publish_model, caplog):
    uri = str(tmp_path / "store")
    first = publish_model(uri)
    follower = _follower(uri)
    follower.poll_once()
    second = publish_model(uri, OTHER_COEFFICIENTS)  # promoted while intact, then altered in the bucket
    store = open_store(uri)
    key = f"models/{second.version}/model.joblib"
    store.write(key, store.read(key)[:-1] + b"\x00")

    assert follower.poll_once() is False
    assert follower.poll_once() is False  # retried on the next poll, still refused

    assert follower.current.version == first.version
    failures = _load_failures(caplog)
    assert len(failures) == 2 and failures[0].levelno == logging.ERROR
    assert "sha256" in failures[0].reason and failures[0].model_version == first.version


def test_pointer_to_a_missing_version_keeps_serving_then_recovers(tmp_path, publish_model, caplog):
    uri = str(tmp_path / "store")
    first = publish_model(uri)
    follower = _follower(uri)
    follower.poll_once()
    store = open_store(uri)
    store.write(LATEST_KEY, json.dumps({"version": "20990101T000000Z-deadbeef", "sha256": "0" * 64}).encode())

    assert follower.poll_once() is False
    assert follower.current.version == first.version
    assert "20990101T000000Z-deadbeef" in _load_failures(caplog)[0].reason

    third = publish_model(uri, OTHER_COEFFICIENTS)
    assert follower.poll_once() is True
    assert follower.current.version == third.version


def test_latest_rewritten_by_hand_is_followed(tmp_path, publish_model):
    uri = str(tmp_path / "store")
    first = publish_model(uri, promote=False)
    second = publish_model(uri, OTHER_COEFFICIENTS)
    follower = _follower(uri)
    follower.poll_once()
    assert follower.current.version == second.version
    latest = tmp_path / "store" / "models" / "LATEST"
    stamp = latest.stat()
    pointer = json.loads(latest.read_text())
    sha = json.loads((tmp_path / "store" / "models" / first.version / "manifest.json").read_text())["sha256"]

    # An operator's editor: the same file rewritten in place, even with its old timestamp put back.
    latest.write_text(json.dumps(pointer | {"version": first.version, "sha256": sha}))
    os.utime(latest, ns=(stamp.st_atime_ns, stamp.st_mtime_ns))

    assert follower.poll_once() is True
    assert follower.current.version == first.version


def test_store_stopped_mid_run_keeps_serving(fake_gcs, gcs_bucket, publish_model, caplog):
    uri = f"{gcs_bucket}/adroi"
    first = publish_model(uri)
    follower = _follower(uri)
    follower.poll_once()

    fake_gcs.stop()
    try:
        assert follower.poll_once() is False
        assert follower.current.version == first.version
        assert _load_failures(caplog) and "127.0.0.1" in _load_failures(caplog)[0].reason
    finally:
        fake_gcs.start()
    # The emulator's memory backend came back empty: the bucket and pointer are gone, still serving.
    assert follower.poll_once() is False
    assert follower.current.version == first.version


def test_background_thread_swaps_within_the_poll_interval(tmp_path, publish_model):
    uri = str(tmp_path / "store")
    publish_model(uri)
    follower = _follower(uri, poll_seconds=0.05)
    follower.poll_once()
    follower.start()
    try:
        second = publish_model(uri, OTHER_COEFFICIENTS)
        assert follower.wait_for_version(second.version, timeout=5)
    finally:
        follower.stop()
