"""Tests of app/__init__.py: the factory, and that serving never imports the training stack."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]


def test_factory_reads_overrides_and_exposes_the_follower(tmp_path, publish_model, make_app):
    published = publish_model(str(tmp_path / "store"))

    app = make_app({"MODEL_STORE": published.store_uri, "MAX_BODY_BYTES": 2048, "MODEL_POLL_SECONDS": 60})

    follower = app.extensions["adroi_follower"]
    assert app.config["MAX_CONTENT_LENGTH"] == 2048
    assert follower.poll_seconds == 60
    assert follower.current.version == published.version  # loaded at start-up, before any request


def test_serving_imports_no_pandas_matplotlib_or_scikit_learn(tmp_path, publish_model):
    published = publish_model(str(tmp_path / "store"))
    script = (
        "import sys, json\n"
        "import app\n"
        "after_import = sorted(m for m in ('pandas', 'matplotlib', 'sklearn', 'scipy') if m in sys.modules)\n"
        f"client = app.create_app({{'MODEL_STORE': {published.store_uri!r}}}).test_client()\n"
        "status = client.post('/predict', json={'email': 1, 'search_engine': 2, 'social_media': 3, 'video': 4})"
        ".status_code\n"
        "after_predict = sorted(m for m in ('pandas', 'matplotlib', 'sklearn', 'scipy') if m in sys.modules)\n"
        "print(json.dumps([after_import, status, after_predict]))\n"
    )

    out = subprocess.run([sys.executable, "-c", script], cwd=REPO_ROOT, capture_output=True, text=True, check=True)

    assert json.loads(out.stdout.splitlines()[-1]) == [[], 200, []]
