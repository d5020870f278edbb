"""Tests of the Dockerfile (no Docker engine here): hadolint, its rules, and its exact CMD on a copy of
what its COPY instructions put in the image, answering /readyz from a local model store."""

from __future__ import annotations

import fnmatch
import json
import shutil
import subprocess
import sys
from pathlib import Path

import requests

REPO_ROOT = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent


def instructions() -> list[tuple[str, str]]:
    """Return the Dockerfile's (INSTRUCTION, arguments) pairs, continuation lines joined."""
    text = (REPO_ROOT / "Dockerfile").read_text()
    lines = [line for line in text.splitlines() if not line.lstrip().startswith("#")]
    joined = "\n".join(lines).replace("\\\n", " ")
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1].strip()) for line in joined.splitlines()
            if line.strip()]


def test_hadolint_passes():
    result = subprocess.run([str(VENV_BIN / "hadolint"), "Dockerfile"], cwd=REPO_ROOT, capture_output=True,
                            text=True)

    assert result.returncode == 0, result.stdout + result.stderr


def test_slim_base_requirements_before_code_non_root_unbuffered():
    steps = instructions()
    kinds = [kind for kind, _ in steps]
    copies = [args for kind, args in steps if kind == "COPY"]

    assert steps[0][0] == "FROM" and steps[0][1].startswith("python:3.11-slim")
    assert copies[0] == "requirements.txt ."
    assert kinds.index("RUN") < kinds.index("COPY", kinds.index("COPY") + 1)  # pip install before code
    assert any(kind == "ENV" and "PYTHONUNBUFFERED=1" in args for kind, args in steps)
    # gunicorn.conf.py binds loopback unless told otherwise; in the container every interface is needed.
    assert any(kind == "ENV" and "BIND_HOST=0.0.0.0" in args.split() for kind, args in steps)
    user = [args for kind, args in steps if kind == "USER"]
    assert user and user[-1] not in ("root", "0")
    assert kinds[-1] == "CMD" and json.loads(steps[-1][1])[0] == "gunicorn"


def _copy_image_files(image_root: Path) -> None:
    """Copy into `image_root` what the Dockerfile's COPY instructions copy (WORKDIR = image_root)."""
    ignore = [p for p in (REPO_ROOT / ".dockerignore").read_text().splitlines() if p and not p.startswith("#")]
    allowed = [p[1:].rstrip("/") for p in ignore if p.startswith("!")]
    for kind, args in instructions():
        if kind != "COPY":
            continue
        *sources, dest = args.split()
        assert dest == "." or dest.endswith("/"), f"COPY destination {dest!r}: expected a folder"
        for source in sources:
            assert any(fnmatch.fnmatch(source.rstrip("/"), a) for a in allowed), f"{source} is in .dockerignore"
            if source.endswith("/"):
                shutil.copytree(REPO_ROOT / source, image_root / dest, dirs_exist_ok=True,
                                ignore=shutil.ignore_patterns("__pycache__"))
            else:
                (image_root / dest).mkdir(parents=True, exist_ok=True)
                shutil.copy(REPO_ROOT / source, image_root / dest / Path(source).name)


def test_image_holds_only_serving_files(tmp_path):
    _copy_image_files(tmp_path)

    training = sorted(p.name for p in (tmp_path / "training").iterdir())
    assert training == ["__init__.py", "core"]
    core = sorted(p.name for p in (tmp_path / "training" / "core").iterdir())
    assert core == sorted(p.name for p in (REPO_ROOT / "training" / "core").glob("*.py"))
    lines = (REPO_ROOT / "requirements.txt").read_text().lower().splitlines()
    packages = {line.split("==")[0].strip() for line in lines if line.strip() and not line.startswith("#")}
    assert {"flask", "gunicorn", "pydantic", "numpy", "joblib", "google-cloud-storage"} <= packages
    assert not packages & {"pandas", "matplotlib", "apache-airflow", "pytest", "hypothesis", "pyarrow"}


def test_exact_cmd_serves_readyz_from_the_image_files(tmp_path, publish_model, run_gunicorn):
    image_root = tmp_path / "srv"
    _copy_image_files(image_root)
    published = publish_model(str(tmp_path / "store"))
    cmd = json.loads(instructions()[-1][1])

    # One worker: a worker still booting when the test ends would hold gunicorn's shutdown for 10 s.
    base = run_gunicorn([str(VENV_BIN / cmd[0]), *cmd[1:]], image_root,
                        {"MODEL_STORE": published.store_uri, "WEB_CONCURRENCY": "1"})

    response = requests.get(f"{base}/readyz", timeout=10)
    assert response.status_code == 200
    assert response.json()["model_version"] == published.version
    page = requests.get(f"{base}/", timeout=10)  # the page's templates and static files are in the image
    assert page.status_code == 200 and published.version in page.text
    assert requests.get(f"{base}/static/page/planner.js", timeout=10).status_code == 200
