"""The store contract, run against both backends: a local folder and a bucket in fake-gcs-server."""

from __future__ import annotations

import os
import shutil
import stat
import sys
import threading

import pytest

from training.core.errors import (
    ObjectChanged,
    ObjectNotFound,
    PreconditionFailed,
    StorageError,
    StorageUnavailable,
)
from training.core.store import GCSStore, LocalStore, open_store


def test_write_read_roundtrip_and_generation_changes(store_uri):
    store = open_store(store_uri)

    first = store.write("a/b.txt", b"one")
    second = store.write("a/b.txt", b"two")

    assert store.read("a/b.txt") == b"two"
    assert second != first
    assert store.generation("a/b.txt") == second
    assert store.read_with_generation("a/b.txt") == (b"two", second)


def test_missing_object_raises_not_found_naming_it(store_uri):
    store = open_store(store_uri)

    with pytest.raises(ObjectNotFound) as exc:
        store.read("nope/missing.json")

    assert "nope/missing.json" in str(exc.value)
    assert store.generation("nope/missing.json") is None
    assert not store.exists("nope/missing.json")


def test_list_is_sorted_and_scoped_to_prefix(store_uri):
    store = open_store(store_uri)
    for key in ["spend/b.csv", "spend/a.csv", "revenue/r.csv", "spendx/c.csv"]:
        store.write(key, b"x")

    assert store.list("spend") == ["spend/a.csv", "spend/b.csv"]
    assert store.list("empty") == []


def test_write_if_generation_is_a_compare_and_swap(store_uri):
    store = open_store(store_uri)

    gen = store.write_if_generation("models/LATEST", b"v1", None)
    with pytest.raises(PreconditionFailed):
        store.write_if_generation("models/LATEST", b"v2", None)
    newer = store.write_if_generation("models/LATEST", b"v2", gen)
    with pytest.raises(PreconditionFailed) as exc:
        store.write_if_generation("models/LATEST", b"v3", gen)

    assert store.read("models/LATEST") == b"v2"
    assert newer != gen
    assert "models/LATEST" in str(exc.value)


def test_concurrent_compare_and_swap_has_exactly_one_winner(store_uri):
    store = open_store(store_uri)
    gen = store.write("models/LATEST", b"start")
    winners, losers = [], []

    def contend(i: int) -> None:
        try:
            store.write_if_generation("models/LATEST", f"w{i}".encode(), gen)
            winners.append(i)
        except PreconditionFailed:
            losers.append(i)

    threads = [threading.Thread(target=contend, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    assert len(winners) == 1 and len(losers) == 7
    assert store.read("models/LATEST") == f"w{winners[0]}".encode()


def test_info_reports_size_and_generation_without_reading(store_uri):
    store = open_store(store_uri)
    gen = store.write("data/x.csv", b"12345")

    info = store.info("data/x.csv")

    assert (info.key, info.size, info.generation) == ("data/x.csv", 5, gen)
    assert info.checksum


def test_open_read_streams_the_object(store_uri):
    store = open_store(store_uri)
    store.write("big.bin", b"a" * 100_000)

    with store.open_read("big.bin") as fh:
        assert fh.read() == b"a" * 100_000


def test_open_read_at_a_generation_refuses_a_rewritten_object(store_uri):
    store = open_store(store_uri)
    old = store.write("spend/a.csv", b"old")
    new = store.write("spend/a.csv", b"new")

    with pytest.raises(ObjectChanged) as exc:
        store.open_read("spend/a.csv", generation=old)
    with store.open_read("spend/a.csv", generation=new) as fh:
        assert fh.read() == b"new"

    assert (exc.value.listed, exc.value.current) == (old, new)
    assert "spend/a.csv" in str(exc.value)


def test_delete_is_idempotent(store_uri):
    store = open_store(store_uri)
    store.write("gone.txt", b"x")

    store.delete("gone.txt")
    store.delete("gone.txt")

    assert not store.exists("gone.txt")


@pytest.mark.parametrize("key", ["../escape", "a/../../b", "", "/"])
def test_keys_that_escape_the_root_are_refused(tmp_path, key):
    store = LocalStore(tmp_path)

    with pytest.raises(StorageError, match="invalid object key"):
        store.write(key, b"x")


def test_local_write_leaves_no_temp_files(tmp_path):
    store = LocalStore(tmp_path)
    store.write("models/v/model.joblib", b"x" * 10)

    assert store.list() == ["models/v/model.joblib"]


@pytest.mark.parametrize("size", [3, 200_000])
def test_a_local_file_rewritten_by_hand_gets_a_new_generation(tmp_path, size):
    store = LocalStore(tmp_path)
    store.write("spend/a.csv", b"x" * size)
    before = store.info("spend/a.csv").generation
    path = tmp_path / "spend" / "a.csv"
    stat = path.stat()

    with open(path, "r+b") as fh:  # in place, same length, and the old timestamp put back
        fh.write(b"y")
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    if size > 100_000:  # a large file's generation follows its timestamp, not its bytes
        os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1))

    assert store.info("spend/a.csv").generation != before
    assert store.generation("spend/a.csv") == store.info("spend/a.csv").generation
    with pytest.raises(ObjectChanged):
        store.open_read("spend/a.csv", generation=before)


def test_writing_the_same_bytes_twice_still_changes_the_local_generation(tmp_path):
    store = LocalStore(tmp_path)
    generations = [store.write("models/LATEST", b"same") for _ in range(20)]

    assert len(set(generations)) == 20


def test_reading_a_local_store_writes_nothing(tmp_path, publish_model):
    """What the API does (pointer, generation, manifest, model) must work on a read-only folder: as root,
    permissions are not enforced, so record every write attempt instead (and chmod the folder as well)."""
    from app.model import load_served_model
    from training.core.registry import ModelRegistry

    uri = str(tmp_path / "store")
    publish_model(uri)
    shutil.rmtree(tmp_path / "store" / ".generations")  # as a store copied without it would be
    writes: list[tuple] = []

    def audit(event: str, args: tuple) -> None:
        if event == "open" and isinstance(args[0], str | bytes | os.PathLike) and str(args[0]).startswith(uri):
            mode, flags = args[1], args[2]
            if (mode and any(c in mode for c in "wax+")) or (flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT)):
                writes.append((event, args))
        elif event in ("os.mkdir", "os.rename", "os.remove", "os.chmod") and str(args[0]).startswith(uri):
            writes.append((event, args))

    modes = _make_read_only(tmp_path / "store")
    _AUDIT["hook"] = audit
    try:
        registry = ModelRegistry(LocalStore(uri))
        model = load_served_model(registry, registry.latest())
        registry.pointer_generation()
        registry.list_versions()
    finally:
        _AUDIT["hook"] = None
        for path, mode in modes:
            path.chmod(mode)

    assert model.channels and writes == []


_AUDIT: dict = {"hook": None}
sys.addaudithook(lambda event, args: _AUDIT["hook"] and _AUDIT["hook"](event, args))


def _make_read_only(root) -> list:
    modes = [(p, p.stat().st_mode) for p in [root, *root.rglob("*")]]
    for path, mode in modes:
        path.chmod(mode & ~0o222)
    return modes


def test_local_files_are_written_with_the_umask(tmp_path):
    store = LocalStore(tmp_path)
    previous = os.umask(0o022)
    try:
        store.write("models/v/model.joblib", b"x")
        os.umask(0o027)
        store.write("models/v/manifest.json", b"{}")
    finally:
        os.umask(previous)

    assert stat.S_IMODE((tmp_path / "models/v/model.joblib").stat().st_mode) == 0o644
    assert stat.S_IMODE((tmp_path / "models/v/manifest.json").stat().st_mode) == 0o640


@pytest.mark.parametrize("uri, kind", [("gs://bucket/prefix", GCSStore), ("some/folder", LocalStore),
                                       ("file:///tmp/x", LocalStore)])
def test_open_store_picks_backend(uri, kind, fake_gcs):
    assert isinstance(open_store(uri), kind)


def test_open_store_rejects_unknown_scheme():
    with pytest.raises(StorageError, match="expected gs://bucket"):
        open_store("s3://bucket/x")


@pytest.fixture
def unreachable_gcs(fake_gcs, monkeypatch) -> GCSStore:
    """A GCSStore whose endpoint has nothing listening."""
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage

    from tests.conftest import free_port

    monkeypatch.setenv("STORAGE_EMULATOR_HOST", f"http://127.0.0.1:{free_port()}")
    client = storage.Client(project="p", credentials=AnonymousCredentials())
    return GCSStore("gs://bucket/x", client=client, timeout=1, retry_deadline=1)


def test_unreachable_gcs_raises_storage_unavailable(unreachable_gcs):
    with pytest.raises(StorageUnavailable):
        unreachable_gcs.generation("models/LATEST")


def test_unreachable_gcs_listing_the_root_names_the_store(unreachable_gcs):
    with pytest.raises(StorageUnavailable, match="gs://bucket/x"):
        unreachable_gcs.list()
