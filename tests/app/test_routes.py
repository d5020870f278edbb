"""Tests of app/routes.py through the Flask test client: answers, error format, and fuzzed bodies."""

from __future__ import annotations

import io
import json
import socket
import time

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.schemas import ModelInfo, PredictResponse
from training.core import events
from training.core import response as mmm_response

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


def test_old_client_body_keeps_its_keys_and_gets_the_new_ones(local_client):
    body = local_client.post("/predict", json=OLD_CLIENT_BODY).json

    assert set(body) == {"predictions", "roi", "contributions", "media_contribution", "media_roi", "warnings",
                         "period", "model_version"}
    assert body["media_contribution"][0] == pytest.approx(sum(body["contributions"][0].values()))
    assert body["warnings"] == [[]]


MMM_SPEND = {"tv": 150000, "search": 100000, "social": 60000, "display": 80000}


@pytest.mark.parametrize("form", ["flat", "spend", "instances"])
def test_mmm_predict_takes_a_period_in_every_body_form(mmm_client, mmm_store, form):
    bodies = {"flat": {**MMM_SPEND, "period": "2026-12"}, "spend": {"spend": MMM_SPEND, "period": "2026-12"},
              "instances": {"instances": [MMM_SPEND], "period": "2026-12"}}

    body = PredictResponse.model_validate(mmm_client.post("/predict", json=bodies[form]).json)

    expected = mmm_response.predict_from_period_spend(mmm_store.estimator.spec, MMM_SPEND, "2026-12")
    assert body.period == "2026-12"
    assert body.predictions == [pytest.approx(expected["prediction"], rel=1e-12)]
    assert body.media_roi == [pytest.approx(expected["media_roi"], rel=1e-12)]


def test_mmm_predict_season_changes_with_the_period(mmm_client):
    december = mmm_client.post("/predict", json={"spend": MMM_SPEND, "period": "2026-12"}).json
    february = mmm_client.post("/predict", json={"spend": MMM_SPEND, "period": "2027-02"}).json

    assert december["predictions"] != february["predictions"]
    assert december["contributions"] != february["contributions"]  # 31 days against 28


@pytest.mark.parametrize("period", ["2026-13", "2026-W50", "26-12", 202612, ""])
def test_a_bad_period_is_a_400_naming_it(mmm_client, period):
    answered = mmm_client.post("/predict", json={"spend": MMM_SPEND, "period": period})

    assert answered.status_code == 400
    assert answered.json["error"]["field"] == "period"


def test_out_of_range_predictions_are_logged_once_per_request_with_channels_and_version(mmm_client, mmm_store,
                                                                                        json_log):
    seen = dict(zip(mmm_store.estimator.spec["channels"], mmm_store.estimator.spec["max_spend_seen"], strict=True))
    beyond = {**MMM_SPEND, "tv": seen["tv"] * 2, "social": seen["social"] * 2}

    mmm_client.post("/predict", json={"instances": [beyond, beyond, MMM_SPEND]})
    mmm_client.post("/predict", json=MMM_SPEND)

    lines = [line for line in json_log() if line.get("event") == events.PREDICTION_OUT_OF_RANGE]
    assert len(lines) == 1
    assert lines[0]["channels"] == ["tv", "social"] and lines[0]["model_version"] == mmm_store.version
    assert lines[0]["severity"] == "WARNING" and lines[0]["endpoint"] == "/predict"


def test_mmm_model_route_shows_the_blocks(mmm_client, mmm_store):
    info = ModelInfo.model_validate(mmm_client.get("/model").json)

    assert info.algorithm == "mmm" and info.grain == "month" and info.intercept is None
    assert set(info.roi["channels"]) == set(info.response_curves["channels"]) == set(MMM_SPEND)
    assert info.controls["names"] == ["price_index", "promo", "holiday"]


def test_predict_answers_the_bytes_pydantic_core_would_write(mmm_client, local_client):
    """`prediction_response` (orjson) against `json_response` (pydantic-core) on real answers of both model kinds."""
    from app.routes import json_response, prediction_response

    channels = ("tv", "search", "social", "display")  # the media-mix model's (MMM_TEST_CHANNELS)
    spend = dict(zip(channels, (12_000.5, 3_000.0, 7_777.25, 1.0), strict=True))
    answers = [mmm_client.post("/predict", json={"instances": [dict.fromkeys(channels, 0.0), spend]}).json,
               mmm_client.post("/predict", json={"spend": {**spend, "tv": 1e9}}).json,  # beyond training: warnings
               local_client.post("/predict", json=OLD_CLIENT_BODY).json]
    assert answers[1]["warnings"][0] and answers[0]["roi"][0] is None

    for answer in answers:
        assert prediction_response(answer).get_data() == json_response(answer).get_data()
    assert json.loads(prediction_response({"x": [np.float64(2.5)]}).get_data()) == {"x": [2.5]}  # the fallback


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


def test_no_model_answers_503_until_one_is_promoted(tmp_path, publish_model, make_app, caplog):
    store = str(tmp_path / "empty")
    app = make_app({"MODEL_STORE": store, "MODEL_POLL_SECONDS": 3600})
    client = app.test_client()

    assert client.get("/healthz").status_code == 200
    for response in (client.get("/readyz"), client.post("/predict", json=SPEND), client.get("/model")):
        assert response.status_code == 503
        assert response.json["error"]["code"] == "model_unavailable"
        assert "none has been promoted" in response.json["error"]["message"]
        assert store not in response.json["error"]["message"]  # where the store is stays in the log
    assert [r.getMessage() for r in caplog.records if r.name == "app.routes"] == [
        f"answering 503 model_unavailable: no model promoted yet in {store}"]  # once, not per request

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


# ---- under the real server (gunicorn.conf.py): request framing -------------------------------------------

HEAD = b"POST /predict HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
GOOD_REQUEST = HEAD + b"Content-Length: %d\r\n\r\n%s" % (len(json.dumps(SPEND)), json.dumps(SPEND).encode())


def read_head(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """Read one HTTP/1.1 answer's status line and headers; return status, lower-cased headers, and what followed."""
    buffer = b""
    while b"\r\n\r\n" not in buffer:
        chunk = sock.recv(65536)
        assert chunk, f"connection closed before an answer's head: {buffer!r}"
        buffer += chunk
    head, _, rest = buffer.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {name.strip().lower(): value.strip() for name, _, value in (line.partition(":") for line in lines[1:])}
    return int(lines[0].split()[1]), headers, rest


def read_answer(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """Read one HTTP/1.1 answer (status, lower-cased headers, body) framed by Content-Length."""
    status, headers, body = read_head(sock)
    while len(body) < int(headers["content-length"]):
        chunk = sock.recv(65536)
        assert chunk, "connection closed inside an answer's body"
        body += chunk
    return status, headers, body


def exchange(port: int, request: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send `request` on a new connection and read one answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(request)
        return read_answer(sock)


def chunked(body: bytes, size: int = 1000) -> bytes:
    """Encode `body` as HTTP/1.1 chunks of `size` bytes."""
    parts = [body[i:i + size] for i in range(0, len(body), size)]
    return b"".join(b"%x\r\n%s\r\n" % (len(part), part) for part in parts) + b"0\r\n\r\n"


def test_malformed_chunked_body_is_a_json_400_not_a_logged_500(api_server):
    _, port, log_path = api_server()

    status, _, body = exchange(port, HEAD + b'Transfer-Encoding: chunked\r\n\r\n5\r\n{"ema\r\nZZ\r\n')

    assert status == 400
    error = json.loads(body)["error"]
    assert error["code"] == "invalid_chunked_body"
    assert "ZZ" in error["message"] and "expected" in error["message"]
    assert "Traceback" not in log_path.read_text()


@pytest.mark.parametrize("padding", [b" " * 5000, b'{"email": 1,' * 500])
def test_chunked_body_over_the_limit_is_413_whatever_it_holds(api_server, padding):
    _, port, _ = api_server(MAX_BODY_BYTES="4096")

    status, _, body = exchange(port, HEAD + b"Transfer-Encoding: chunked\r\n\r\n"
                                     + chunked(json.dumps(SPEND).encode() + padding))

    assert status == 413
    assert json.loads(body)["error"]["code"] == "payload_too_large"


@pytest.mark.parametrize(("first", "status"), [
    (b"PUT /predict HTTP/1.1\r\nHost: test\r\nContent-Length: 70000\r\n\r\n" + b"x" * 70_000, 405),
    (b"POST /predict HTTP/1.1\r\nHost: test\r\nContent-Type: text/plain\r\nContent-Length: 70000\r\n\r\n"
     + b"x" * 70_000, 415),
    (HEAD + b"Content-Length: 70000\r\n\r\n" + b" " * 70_000, 413),
])
def test_unread_body_leaves_the_connection_usable_for_the_next_request(api_server, first, status):
    _, port, _ = api_server(MAX_BODY_BYTES="4096")

    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(first)
        first_status, headers, _ = read_answer(sock)
        sock.sendall(GOOD_REQUEST)
        second_status, _, body = read_answer(sock)

    assert (first_status, headers["connection"]) == (status, "keep-alive")
    assert second_status == 200
    assert json.loads(body)["predictions"]


def test_json_answers_are_framed_by_their_length_and_head_gets_none(api_server):
    """JSON answers go to the server as their bytes (`direct_passthrough`): framing and HEAD still hold."""
    _, port, _ = api_server()

    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(GOOD_REQUEST)
        status, headers, body = read_answer(sock)
        sock.sendall(b"HEAD /model HTTP/1.1\r\nHost: test\r\n\r\n")
        head_status, head_headers, after_head = read_head(sock)
        sock.sendall(b"GET /model HTTP/1.1\r\nHost: test\r\n\r\n")
        model_status, model_headers, model_body = read_answer(sock)

    assert (status, headers["content-type"], int(headers["content-length"])) == (200, "application/json", len(body))
    assert json.loads(body)["predictions"]
    assert head_status == 200 and int(head_headers["content-length"]) == len(model_body)
    assert after_head == b""  # and the next answer's status line was read as one: no body came after HEAD
    assert (model_status, model_headers["content-type"]) == (200, "application/json")
    assert json.loads(model_body)["version"]


@pytest.mark.parametrize("reset", [False, True])
def test_client_leaving_mid_body_is_a_400_not_a_logged_500(api_server, reset):
    _, port, log_path = api_server(LOG_REQUESTS="true")

    for head in (HEAD + b"Content-Length: 1000\r\n\r\n{\"a", HEAD + b"Transfer-Encoding: chunked\r\n\r\n5\r\n{\"ema\r\n"):
        sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        sock.sendall(head)
        if reset:  # close with a TCP reset instead of a FIN
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        sock.close()
    deadline = time.monotonic() + 10
    while log_path.read_text().count("POST /predict ") < 2 and time.monotonic() < deadline:
        time.sleep(0.02)  # the answers to clients that are gone are only seen in the log

    log = log_path.read_text()
    assert log.count("POST /predict 400") == 2, log[-2000:]
    assert "Traceback" not in log and "unexpected error" not in log


def test_body_not_received_in_time_is_a_408(api_server):
    _, port, _ = api_server(BODY_TIMEOUT_SECONDS="0.5")

    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(HEAD + b"Content-Length: 1000\r\n\r\n{")  # and then nothing more
        status, _, body = read_answer(sock)

    assert status == 408
    error = json.loads(body)["error"]
    assert error["code"] == "request_timeout" and "0.5 s" in error["message"]


def test_the_body_deadline_restarts_with_each_request_on_a_connection(api_server):
    _, port, _ = api_server(BODY_TIMEOUT_SECONDS="0.5")

    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        for _ in range(2):  # the deadline of one connection is reused request after request
            sock.sendall(GOOD_REQUEST)
            assert read_answer(sock)[0] == 200
            time.sleep(0.7)  # idle past the deadline between requests: a deadline left running would fire here
        sock.sendall(HEAD + b"Content-Length: 1000\r\n\r\n{")  # and then nothing more
        status, _, body = read_answer(sock)

    assert status == 408 and json.loads(body)["error"]["code"] == "request_timeout"


@pytest.mark.parametrize(("body", "field"), [
    (b'{"email": 1, "email": 2, "search_engine": 1, "social_media": 1, "video": 1}', "email"),
    (b'{"spend": {"email": 1, "search_engine": 1, "social_media": 1, "video": 1, "video": 1}}', "spend.video"),
    (b'{"instances": [{"email": 1, "search_engine": 1, "social_media": 1, "video": 1}, '
     b'{"email": 1, "search_engine": 1, "social_media": 1, "video": 1, "email": 1}]}', "instances[1].email"),
])
def test_exactly_repeated_channel_keys_are_refused_like_case_variants(local_client, body, field):
    response = local_client.post("/predict", data=body, content_type="application/json")

    assert response.status_code == 400
    assert response.json["error"]["code"] == "duplicate_channel"
    assert response.json["error"]["field"] == field
    assert "given twice" in response.json["error"]["message"]


@pytest.mark.parametrize(("body", "status"), [
    (b'{"instances": [], "instances": [{"email": 1, "search_engine": 1, "social_media": 1, "video": 1}]}', 400),
    (b'{"index": {"a": 1, "a": 2}, "email": 1, "search_engine": 1, "social_media": 1, "video": 1}', 200),
    (b'{"index": "a:b::c", "email": 1, "search_engine": 1, "social_media": 1, "video": 1}', 200),
    (b'{"email" : 1, "search_engine"\n:\t1, "social_media": 1, "video": 1}', 200),
])
def test_repeated_top_level_key_is_refused_and_index_stays_ignored(local_client, body, status):
    response = local_client.post("/predict", data=body, content_type="application/json")

    assert response.status_code == status
    if status == 400:
        assert response.json["error"]["code"] == "duplicate_key"
        assert response.json["error"]["field"] == "instances"
