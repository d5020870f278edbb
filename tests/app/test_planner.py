"""Tests of app/planner.py (`POST /allocate`) through the Flask client and under gunicorn."""

from __future__ import annotations

import json
import logging

import pytest
import requests

from tests.conftest import fitted_mmm, open_registry, publish_fitted_mmm
from training.core import events
from training.core.planner import model_facts, plan_budget


def _core_answer(store_uri: str, budget: float, **kwargs):
    """What the core computes for the promoted version (the CLI's path)."""
    registry = open_registry(store_uri)
    pointer = registry.latest()
    manifest, spec = registry.load(pointer.version)
    return plan_budget(model_facts(pointer.version, spec, manifest), budget, **kwargs)


def test_allocate_answers_what_the_core_computes_for_the_served_version(mmm_client, mmm_store):
    body = {"budget": 400000, "period": "2026-12", "bounds": {"tv": [50000, 150000], "Search": [None, 60000]}}

    response = mmm_client.post("/allocate", json=body)

    assert response.status_code == 200
    answer = response.get_json()
    expected = _core_answer(mmm_store.store_uri, 400000, period="2026-12",
                            bounds={"tv": [50000, 150000], "Search": [None, 60000]})
    assert answer == json.loads(json.dumps(expected))
    assert answer["model_version"] == mmm_store.version
    assert list(answer["allocation"]) == ["tv", "search", "social", "display"]
    assert sum(answer["allocation"].values()) == pytest.approx(400000)
    assert 50000 <= answer["allocation"]["tv"] <= 150000 and answer["allocation"]["search"] <= 60000
    assert answer["predicted_revenue"] == pytest.approx(answer["base_revenue"] + answer["media_revenue"])
    assert answer["lift"]["revenue"] == pytest.approx(answer["predicted_revenue"]
                                                      - answer["current_mix"]["predicted_revenue"])


def test_allocate_is_deterministic_byte_for_byte(mmm_client):
    body = {"budget": 333333.33, "bounds": {"display": [0, 90000]}}

    answers = {mmm_client.post("/allocate", json=body).get_data() for _ in range(3)}

    assert len(answers) == 1


def test_default_period_is_the_one_after_training_and_agrees_with_predict(mmm_client):
    answer = mmm_client.post("/allocate", json={"budget": 300000}).get_json()
    predicted = mmm_client.post("/predict", json={"spend": answer["allocation"]}).get_json()

    assert answer["period"] == predicted["period"] == "2026-11"
    assert predicted["predictions"][0] == pytest.approx(answer["predicted_revenue"], rel=1e-12)
    assert predicted["media_contribution"][0] == pytest.approx(answer["media_revenue"], rel=1e-12)


def test_target_mroi_scenario_leaves_budget_unspent(mmm_client):
    answer = mmm_client.post("/allocate", json={"budget": 5e6, "scenario": "target_mroi",
                                                "target_mroi": 2.5}).get_json()

    assert answer["scenario"] == "target_mroi" and answer["target_mroi"] == 2.5
    assert answer["unspent"] > 0
    assert sum(answer["allocation"].values()) + answer["unspent"] == pytest.approx(5e6)


@pytest.mark.parametrize(("body", "code", "field", "words"), [
    ({"budget": 0}, "invalid_value", "budget", "greater than 0"),
    ({"budget": -5}, "invalid_value", "budget", "greater than 0"),
    ({"budget": "120000"}, "invalid_value", "budget", "valid number"),
    ({"budget": True}, "invalid_value", "budget", "valid number"),
    ({}, "invalid_value", "budget", "required"),
    ({"budget": 1e5, "bounds": {"radio": [0, 5]}}, "unknown_channel", "bounds.radio", "tv, search, social, display"),
    ({"budget": 1e5, "bounds": {"tv": [500, 100]}}, "invalid_value", "bounds.tv", "min <= max"),
    ({"budget": 1e5, "bounds": {"tv": [-1, 100]}}, "invalid_value", "bounds.tv[0]", "greater than or equal to 0"),
    ({"budget": 1e5, "bounds": {"tv": [1]}}, "invalid_value", "bounds.tv", "2 items"),
    ({"budget": 1e5, "bounds": {"tv": [6e4, None], "search": [6e4, None]}}, "infeasible_bounds", "bounds",
     "minimums add up to 120,000.00, above the budget 100,000.00"),
    ({"budget": 1e5, "bounds": {c: [0, 1e4] for c in ("tv", "search", "social", "display")}},
     "infeasible_bounds", "bounds", "maximums add up to 40,000.00, below the budget 100,000.00"),
    ({"budget": 1e5, "scenario": "cheapest"}, "invalid_value", "scenario", "max_revenue"),
    ({"budget": 1e5, "scenario": "target_mroi"}, "invalid_value", "target_mroi", "positive finite"),
    ({"budget": 1e5, "target_mroi": 2}, "invalid_value", "target_mroi", "unless scenario is target_mroi"),
    ({"budget": 1e5, "period": "2026-13"}, "invalid_value", "period", "YYYY-MM"),
    ({"budget": 1e5, "period": "2026-W50"}, "invalid_value", "period", "YYYY-MM"),
    ({"budget": 1e5, "tv": 5}, "unknown_field", "tv", "budget, period, bounds"),
    ([120000], "invalid_body", None, "not a JSON object"),
])
def test_bad_requests_are_json_400s_naming_the_field(mmm_client, body, code, field, words):
    response = mmm_client.post("/allocate", json=body)

    assert response.status_code == 400
    error = response.get_json()["error"]
    assert (error["code"], error["field"]) == (code, field)
    assert words in error["message"]


@pytest.mark.parametrize(("data", "content_type", "status", "code"), [
    (b'{"budget": 1e400}', "application/json", 400, "invalid_value"),
    (b'{"budget": NaN}', "application/json", 400, "invalid_value"),
    (b'{"budget": 1, "budget": 2}', "application/json", 400, "duplicate_key"),
    (b'{"budget": 1e5, "bounds": {"tv": [0, 1], "tv": [0, 2]}}', "application/json", 400, "duplicate_key"),
    (b"", "application/json", 400, "empty_body"),
    (b'{"budget": 1e5}', "text/plain", 415, "unsupported_media_type"),
    (b'{"budget": 1e5, "period": "' + b"9" * 5000 + b'"}', "application/json", 413, "payload_too_large"),
])
def test_malformed_bodies_get_the_apis_error_format(mmm_client, data, content_type, status, code):
    response = mmm_client.post("/allocate", data=data, content_type=content_type)

    assert response.status_code == status
    assert response.get_json()["error"]["code"] == code


def test_repeated_bound_is_named_by_its_path(mmm_client):
    response = mmm_client.post("/allocate", data=b'{"budget": 1e5, "bounds": {"tv": [0, 1], "tv": [0, 2]}}',
                               content_type="application/json")

    assert response.get_json()["error"]["field"] == "bounds.tv"


def test_linear_model_gets_a_corner_and_says_so(local_client):
    answer = local_client.post("/allocate", json={"budget": 1e6, "bounds": {"email": [0, 2e5]}}).get_json()

    assert answer["algorithm"] == "ols"
    assert answer["allocation"]["email"] == pytest.approx(2e5)
    assert answer["allocation"]["search_engine"] == pytest.approx(8e5)  # the next-highest coefficient, 2.4
    assert any("linear (ols)" in warning for warning in answer["warnings"])
    assert answer["current_mix"] is None  # a version without response curves has no current mix


def test_out_of_range_allocation_is_counted_and_logged_once_per_request(mmm_client, mmm_store, caplog):
    biggest = max(fitted_mmm().spec["max_spend_seen"])
    caplog.set_level(logging.INFO, logger="app.routes")

    first = mmm_client.post("/allocate", json={"budget": 10 * biggest}).get_json()
    mmm_client.post("/allocate", json={"budget": 10 * biggest})
    mmm_client.post("/allocate", json={"budget": 1000})  # within range: no line

    lines = [r for r in caplog.records if getattr(r, "event", None) == events.PREDICTION_OUT_OF_RANGE]
    assert len(lines) == 2
    assert lines[0].channels == first["out_of_range"] and lines[0].model_version == mmm_store.version
    assert lines[0].endpoint == "/allocate"
    assert lines[1].requests_so_far == {c: 2 for c in first["out_of_range"]}


def test_no_model_is_a_503(tmp_path, make_app):
    client = make_app({"MODEL_STORE": str(tmp_path / "empty")}).test_client()

    response = client.post("/allocate", json={"budget": 1e5})

    assert response.status_code == 503
    assert response.get_json()["error"]["code"] == "model_unavailable"


def test_openapi_describes_allocate(mmm_client):
    document = mmm_client.get("/openapi.json").get_json()

    operation = document["paths"]["/allocate"]["post"]
    assert operation["requestBody"]["content"]["application/json"]["schema"]["$ref"].endswith("/AllocateRequest")
    schemas = document["components"]["schemas"]
    assert {"budget", "period", "bounds", "scenario", "target_mroi"} == set(schemas["AllocateRequest"]["properties"])
    assert {"allocation", "predicted_revenue", "media_revenue", "current_mix", "lift", "warnings", "channels",
            "period", "model_version"} <= set(schemas["AllocateResponse"]["properties"])


@pytest.mark.slow
def test_allocate_under_gunicorn_with_gevent_workers(tmp_path, run_gunicorn):
    import sys
    from pathlib import Path

    from tests.conftest import REPO_ROOT

    published = publish_fitted_mmm(str(tmp_path / "store"), fitted_mmm())
    gunicorn = str(Path(sys.executable).parent / "gunicorn")
    base = run_gunicorn([gunicorn, "-c", str(REPO_ROOT / "gunicorn.conf.py"), "app:create_app()"], REPO_ROOT,
                        {"MODEL_STORE": published.store_uri, "WEB_CONCURRENCY": "1", "LOG_FORMAT": "json"})

    answer = requests.post(base + "/allocate", json={"budget": 400000}, timeout=30)
    refused = requests.post(base + "/allocate", json={"budget": 1e5, "bounds": {"tv": [2e5, None]}}, timeout=30)

    assert answer.status_code == 200
    assert answer.json() == json.loads(json.dumps(_core_answer(published.store_uri, 400000)))
    assert refused.status_code == 400 and refused.json()["error"]["code"] == "infeasible_bounds"
