"""Tests of gunicorn.conf.py: its settings, and a real gunicorn swapping models under load."""

from __future__ import annotations

import os
import runpy
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import requests

REPO_ROOT = Path(__file__).resolve().parents[2]
CONF = REPO_ROOT / "gunicorn.conf.py"
GUNICORN = str(Path(sys.executable).parent / "gunicorn")
SPEND = {"email": 1.0, "search_engine": 2.0, "social_media": 3.0, "video": 4.0}
OTHER_COEFFICIENTS = {"email": 1.0, "search_engine": 1.0, "social_media": 1.0, "video": 1.0}


def test_binds_bind_host_on_port_with_the_api_worker(monkeypatch):
    monkeypatch.setenv("PORT", "9191")
    monkeypatch.setenv("BIND_HOST", "0.0.0.0")
    monkeypatch.setenv("WEB_CONCURRENCY", "3")

    conf = runpy.run_path(str(CONF))

    assert conf["bind"] == "0.0.0.0:9191"
    assert conf["workers"] == 3
    assert conf["worker_class"] == "app.worker.ApiWorker" and conf["worker_connections"] >= 100
    assert 0 < conf["timeout"] and 0 < conf["keepalive"] <= 10
    assert conf["accesslog"] is None
    assert conf["control_socket_disable"] is True
    assert callable(conf["post_fork"])


def test_each_worker_leaves_what_it_loaded_out_of_garbage_collection():
    # In a process of its own: freezing this test process's objects would outlive the test.
    code = ("import gc, runpy; conf = runpy.run_path('gunicorn.conf.py'); before = gc.get_freeze_count(); "
            "conf['post_worker_init'](None); print(before, gc.get_freeze_count())")

    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO_ROOT)

    before, after = map(int, out.stdout.split())
    assert before == 0 and after > 1000


def test_binds_loopback_port_8080_by_default(monkeypatch):
    # `make serve` sets neither: the local, unauthenticated API is not open on other interfaces.
    monkeypatch.delenv("PORT", raising=False)
    monkeypatch.delenv("BIND_HOST", raising=False)

    assert runpy.run_path(str(CONF))["bind"] == "127.0.0.1:8080"


@pytest.mark.parametrize(("cpu_max", "expected"), [
    ("max 100000", None),  # no quota: every CPU of the affinity mask
    ("100000 100000", 1),
    ("150000 100000", 2),
    ("50000 100000", 1),
    ("garbage", None),
])
def test_cpu_limit_follows_the_cgroup_quota(tmp_path, cpu_max, expected):
    path = tmp_path / "cpu.max"
    path.write_text(cpu_max + "\n")
    cpu_limit = runpy.run_path(str(CONF))["cpu_limit"]
    available = len(os.sched_getaffinity(0))

    assert cpu_limit(path) == (min(expected, available) if expected else available)
    assert cpu_limit(tmp_path / "absent") == available


def test_hot_swap_under_load_drops_no_request(tmp_path, publish_model, run_gunicorn):
    store = str(tmp_path / "store")
    first = publish_model(store)
    poll_seconds = 0.2
    base = run_gunicorn([GUNICORN, "-c", str(CONF), "app:create_app()"], REPO_ROOT,
                        {"MODEL_STORE": store, "MODEL_POLL_SECONDS": str(poll_seconds), "WEB_CONCURRENCY": "2"})
    results: list[tuple[float, int, str | None]] = []
    stop, first_served = threading.Event(), threading.Event()

    def client() -> None:
        with requests.Session() as session:
            while not stop.is_set():
                try:
                    response = session.post(f"{base}/predict", json=SPEND, timeout=5)
                    version = response.json().get("model_version")
                    results.append((time.monotonic(), response.status_code, version))
                    if version == first.version:
                        first_served.set()
                except requests.RequestException as exc:
                    results.append((time.monotonic(), 0, repr(exc)))

    clients = [threading.Thread(target=client) for _ in range(4)]
    for thread in clients:
        thread.start()
    try:
        assert first_served.wait(timeout=30), f"no 200 from {first.version} within 30 s: {results[-3:]}"
        promoted_at = time.monotonic()
        second = publish_model(store, OTHER_COEFFICIENTS)
        deadline = promoted_at + 5
        while time.monotonic() < deadline and sum(v == second.version for _, _, v in results) < 200:
            time.sleep(0.05)
    finally:
        stop.set()
        for thread in clients:
            thread.join()

    failed = [r for r in results if r[1] != 200]
    first_new = min(t for t, _, v in results if v == second.version) - promoted_at
    last_old = max(t for t, _, v in results if v == first.version) - promoted_at
    assert failed == []
    assert len(results) > 200
    assert first_new < poll_seconds + 0.5  # publish itself is part of this window
    assert last_old < poll_seconds + 1.0  # every worker swapped within about one poll interval
