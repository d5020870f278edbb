"""README.md's examples are real: the `/predict` answer it shows is what the API answers after `make train`."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
README = (REPO_ROOT / "README.md").read_text()
USAGE = README[README.index("## Usage: the prediction API"):README.index("## Configuration")]


@pytest.mark.slow
def test_the_predict_example_is_what_the_api_answers_after_make_train(tmp_path, make_app, no_adroi_env):
    from training import cli

    # `make train` is `python -m training run` on the bundled sample (its run date pinned for freshness).
    assert cli.main(["run", "--store", str(tmp_path / "store"), "--metrics", f"sqlite:///{tmp_path}/m.db"]) == 0
    request = json.loads(re.search(r"-d '(\{.*?\})'", USAGE).group(1))
    shown = json.loads(re.search(r"```json\n(\{\"predictions\".*?\})\n```", USAGE, re.DOTALL).group(1))
    client = make_app({"MODEL_STORE": str(tmp_path / "store"), "MODEL_POLL_SECONDS": 3600}).test_client()

    answer = client.post("/predict", json=request).get_json()

    assert set(answer) == set(shown)
    assert answer["predictions"] == pytest.approx(shown["predictions"], rel=1e-9)
    assert answer["roi"] == pytest.approx(shown["roi"], rel=1e-9)
    assert answer["contributions"][0] == pytest.approx(shown["contributions"][0], rel=1e-9)
    assert re.fullmatch(r"\d{8}T\d{6}Z-[0-9a-f]{8}", shown["model_version"])
