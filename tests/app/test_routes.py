"""Tests of app/routes.py through the Flask test client: answers, error format, and fuzzed bodies."""

from __future__ import annotations

import io
import json

import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.schemas import ModelInfo, PredictResponse

OLD_CLIENT_BODY = {"SEARCH_ENGINE": 522807, "SOCIAL_MEDIA": 518987, "VIDEO": 519625, "EMAIL": 520742, "index": 0}
SPEND = {"email": 1.0, "search_engine": 2.0, "social_media": 3.0, "video": 4.0}


def test_old_client_body_gets_predictions_from_each_backend(client, published_store):
    response = client.post("/predict", json=OLD_CLIENT_BODY)

    assert response.status_code == 200
    body = PredictResponse.model_validate(response.json)
    channels = list(published_store.estimator.feature_names_in_)
    expected = published_store.estimator.predict(pd.DataFrame([[OLD_CLIENT_BODY[c.upper()] for c in channels]],
                                                              columns=channels))
    assert body.predictions == [pytest.approx(expected[0], rel=1e-9)]
    assert body.model_version == published_store.version
    assert body.roi[0] == pytest.approx(expected[0] / (522807 + 518987 + 519625 + 520742))


@pytest.mark.parametrize("index", [0, "row-7", None, 3.5, [1, 2]])
def test_old_clients_index_is_ignored_whatever_its_value(local_client, index):
    response = local_client.post("/predict", json={**SPEND, "index": index})

    assert response.status_code == 200
    assert response.json["predictions"] == local_client.post("/predict", json=SPEND).json["predictions"]


def test_batch_answers_in_input_order(local_client):
    instances = [{**SPEND, "video": float(i)} for i in range(5)]

    response = local_client.post("/predict", json={"instances": instances})

    predictions = response.json["predictions"]
    assert response.status_code == 200
    assert len(predictions) == 5 and predictions == sorted(predictions)  # video has a positive coefficient
    assert [c["video"] for c in response.json["contributions"]] == pytest.approx([0.9 * i for i in range(5)])


def test_health_ready_model_and_openapi(local_client):
    assert local_client.get("/healthz").json["status"] == "ok"
    ready = local_client.get("/readyz")
    assert ready.status_code == 200 and ready.json["model_version"]
    info = ModelInfo.model_validate(local_client.get("/model").json)
    assert info.channels == ["email", "search_engine", "social_media", "video"]
    assert info.marginal_roi["search_engine"] == pytest.approx(2.4)
    document = local_client.get("/openapi.json").json
    assert "PredictRequest" in document["components"]["schemas"]


@pytest.mark.parametrize(("kwargs", "status", "code", "field"), [
    ({"json": {"instances": []}}, 400, "empty_instances", "instances"),
    ({"json": {**SPEND, "tv": 1}}, 400, "unknown_channel", "tv"),
    ({"json": {"email": 1, "video": 2}}, 400, "missing_channel", "search_engine"),
    ({"json": {**SPEND, "video": True}}, 400, "invalid_value", "video"),
    ({"json": {**SPEND, "video": -3}}, 400, "invalid_value", "video"),
    ({"json": {**SPEND, "video": "3"}}, 400, "invalid_value", "video"),
    ({"json": {"instances": [SPEND, {**SPEND, "email": {"a": [1]}}]}}, 400, "invalid_value", "instances[1].email"),
    ({"json": {"spend": {**SPEND, "video": None}}}, 400, "invalid_value", "spend.video"),
    ({"json": [SPEND]}, 400, "invalid_body", None),
    ({"json": {}}, 400, "invalid_value", None),
    ({"data": b"", "content_type": "application/json"}, 400, "empty_body", None),
    ({"data": b'{"video": NaN}', "content_type": "application/json"}, 400, "invalid_value", "video"),
    ({"data": b'{"email": 1,', "content_type": "application/json"}, 400, "invalid_json", None),
    ({"data": b"\xff\xfe", "content_type": "application/json"}, 400, "invalid_json", None),
    ({"data": json.dumps(SPEND), "content_type": "text/plain"}, 415, "unsupported_media_type", None),
    ({"data": json.dumps(SPEND)}, 415, "unsupported_media_type", None),
    ({"json": {"instances": [SPEND] * 51}}, 413, "too_many_instances", "instances"),
    ({"json": {"instances": [SPEND] * 49, "pad": "x" * 5000}}, 413, "payload_too_large", None),
    ({"json": {"email": 1e308, "search_engine": 1e308, "social_media": 0, "video": 0}}, 400, "out_of_range", None),
])
def test_bad_input_gets_a_named_4xx(local_client, kwargs, status, code, field):
    response = local_client.post("/predict", **kwargs)

    assert response.status_code == status
    assert response.json["error"]["code"] == code
    assert response.json["error"]["field"] == field
    assert response.json["error"]["message"]


@pytest.mark.parametrize(("body", "json_type"), [
    (b"null", "null"), (b"[1]", "array"), (b'"x"', "string"), (b"3.5", "number"), (b"true", "boolean"),
])
def test_a_body_that_is_not_an_object_is_named_by_its_json_type(local_client, body, json_type):
    response = local_client.post("/predict", data=body, content_type="application/json")

    assert response.status_code == 400
    assert response.json["error"]["code"] == "invalid_body"
    assert response.json["error"]["message"].startswith(f"body is a JSON {json_type}: expected an object")


@pytest.mark.parametrize(("body", "status"), [
    (json.dumps({"spend": SPEND}).encode(), 200),
    (b'{"instances": [' + b"1," * 3000 + b"1]}", 413),
])
def test_chunked_body_without_length_is_read_within_the_limit(local_client, body, status):
    # What gunicorn hands over for `Transfer-Encoding: chunked`: no CONTENT_LENGTH, a terminated stream.
    response = local_client.post("/predict", input_stream=io.BytesIO(body), content_type="application/json",
                                 environ_overrides={"wsgi.input_terminated": True})

    assert response.status_code == status


def test_unknown_path_and_wrong_method_use_the_error_format(local_client):
    assert local_client.get("/nope").json["error"]["code"] == "not_found"
    assert local_client.get("/predict").json["error"]["code"] == "method_not_allowed"


def test_no_model_answers_503_until_one_is_promoted(tmp_path, publish_model, make_app):
    store = str(tmp_path / "empty")
    app = make_app({"MODEL_STORE": store, "MODEL_POLL_SECONDS": 3600})
    client = app.test_client()

    assert client.get("/healthz").status_code == 200
    for response in (client.get("/readyz"), client.post("/predict", json=SPEND), client.get("/model")):
        assert response.status_code == 503
        assert response.json["error"]["code"] == "model_unavailable"
        assert "no model promoted yet" in response.json["error"]["message"]

    published = publish_model(store)
    app.extensions["adroi_follower"].poll_once()

    assert client.get("/readyz").json["model_version"] == published.version
    assert client.post("/predict", json=SPEND).status_code == 200


# ---- fuzzing: thousands of generated bodies, never a 5xx, every 4xx in the error format ----------------
CHANNEL_KEYS = st.sampled_from(["email", "EMAIL", "Search_Engine", "social_media", "video", "index", "tv", "",
                                "spend", "instances"])
SCALARS = (st.none() | st.booleans() | st.integers(-10**30, 10**30) | st.text(max_size=5)
           | st.floats(allow_nan=False, allow_infinity=False))
JSON_VALUES = st.recursive(SCALARS, lambda children: st.lists(children, max_size=4)
                           | st.dictionaries(CHANNEL_KEYS | st.text(max_size=4), children, max_size=5), max_leaves=8)
VALID_INSTANCE = st.fixed_dictionaries({c: st.floats(min_value=0, max_value=1e12) for c in SPEND}).map(
    lambda row: {k.upper() if int(v) % 2 else k: v for k, v in row.items()})  # the success path, in mixed case
INSTANCE = VALID_INSTANCE | st.dictionaries(CHANNEL_KEYS, st.floats(min_value=0, max_value=1e12) | JSON_VALUES,
                                            max_size=6)
BODIES = (JSON_VALUES | INSTANCE | st.fixed_dictionaries({"spend": INSTANCE})
          | st.fixed_dictionaries({"instances": st.lists(INSTANCE, max_size=4)})).map(json.dumps).map(str.encode)
RAW = st.binary(max_size=64) | st.text(max_size=64).map(str.encode)


def _assert_client_error_or_success(response) -> None:
    assert response.status_code < 500, response.data
    if response.status_code == 200:
        assert len(response.json["predictions"]) == len(response.json["roi"])
    else:
        assert set(response.json) == {"error"}
        assert set(response.json["error"]) == {"code", "message", "field"}
        assert response.json["error"]["message"]


@pytest.mark.slow
@settings(max_examples=2000, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=BODIES)
def test_fuzzed_json_bodies_never_get_a_5xx(local_client, body):
    _assert_client_error_or_success(local_client.post("/predict", data=body, content_type="application/json"))


@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=RAW, content_type=st.sampled_from(["application/json", "application/json; charset=utf-8",
                                               "text/plain", "", "application/x-www-form-urlencoded"]))
def test_fuzzed_raw_bodies_never_get_a_5xx(local_client, body, content_type):
    _assert_client_error_or_success(local_client.post("/predict", data=body, content_type=content_type))
