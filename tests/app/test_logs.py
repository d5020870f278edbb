"""Tests of app/logs.py: one JSON object per line, with the request's Cloud trace and model version."""

from __future__ import annotations

from app.logs import SPAN_KEY, TRACE_KEY

SPEND = {"email": 1.0, "search_engine": 2.0, "social_media": 3.0, "video": 4.0}


def test_request_line_carries_trace_span_version_and_latency(json_log, store, make_app):
    app = make_app({"MODEL_STORE": store, "LOG_REQUESTS": True})

    app.test_client().post("/predict", json=SPEND, headers={"X-Cloud-Trace-Context": "4bf92f3577b34da6/17;o=1"})

    line = next(e for e in json_log() if e.get("status") == 200)
    assert line["severity"] == "INFO"
    assert line[TRACE_KEY] == "projects/adroi-prod/traces/4bf92f3577b34da6"
    assert line[SPAN_KEY] == "17"
    assert line["model_version"] == app.extensions["adroi_follower"].current.version
    assert line["latency_ms"] > 0


def test_no_line_per_request_by_default(json_log, store, make_app):
    app = make_app({"MODEL_STORE": store})
    before = len(json_log())

    for _ in range(3):
        assert app.test_client().post("/predict", json=SPEND).status_code == 200

    assert len(json_log()) == before


def test_model_events_are_json_with_severity(json_log, tmp_path, make_app):
    make_app({"MODEL_STORE": str(tmp_path / "broken")})  # nothing promoted: not an error, just not ready
    (tmp_path / "broken" / "models").mkdir(parents=True)
    (tmp_path / "broken" / "models" / "LATEST").write_text("{not json")

    make_app({"MODEL_STORE": str(tmp_path / "broken")})

    failure = next(e for e in json_log() if e.get("event") == "model_load_failed")
    assert failure["severity"] == "ERROR"
    assert "unreadable pointer" in failure["reason"]
    assert TRACE_KEY not in failure  # outside a request there is no trace
