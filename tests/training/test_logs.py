"""Logging: JSON lines for Cloud Logging, readable text for people."""

from __future__ import annotations

import io
import json
import logging

from training import events
from training.logs import configure_logging, on_gcp


def test_json_lines_carry_severity_message_and_extra_fields():
    stream = io.StringIO()
    configure_logging("json", stream=stream)

    logging.getLogger("adroi.test").warning("model %s rejected", "v1",
                                            extra={"event": events.MODEL_REJECTED, "run_id": "r1"})

    entry = json.loads(stream.getvalue().splitlines()[-1])
    assert entry["severity"] == "WARNING"
    assert entry["message"] == "model v1 rejected"
    assert entry["event"] == "model_rejected" and entry["run_id"] == "r1"


def test_exceptions_are_kept_in_one_json_line():
    stream = io.StringIO()
    configure_logging("json", stream=stream)

    try:
        raise ValueError("boom")
    except ValueError:
        logging.getLogger("adroi.test").exception("failed", extra={"event": events.TRAINING_FAILED})

    lines = stream.getvalue().splitlines()
    entry = json.loads(lines[-1])
    assert entry["severity"] == "ERROR" and "ValueError: boom" in entry["stack_trace"]


def test_text_format_shows_the_event_in_brackets():
    stream = io.StringIO()
    configure_logging("text", stream=stream)

    logging.getLogger("adroi.test").info("hello", extra={"event": events.TRAINING_STARTED})

    assert "[training_started] hello" in stream.getvalue()


def test_configure_twice_keeps_one_handler():
    configure_logging("text", stream=io.StringIO())
    configure_logging("json", stream=io.StringIO())

    ours = [h for h in logging.getLogger().handlers if getattr(h, "_adroi", False)]
    assert len(ours) == 1


def test_json_is_the_default_on_gcp(monkeypatch):
    monkeypatch.setenv("K_SERVICE", "adroi-api")
    assert on_gcp()
    monkeypatch.delenv("K_SERVICE")
    for key in ("COMPOSER_ENVIRONMENT", "BUILD_ID", "CLOUD_RUN_JOB"):
        monkeypatch.delenv(key, raising=False)
    assert not on_gcp()
