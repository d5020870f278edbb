"""Logging: JSON lines for Cloud Logging, readable text for people."""

from __future__ import annotations

import io
import json
import logging

from training.core import events
from training.core.logs import configure_logging, on_gcp


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


def test_cloud_handler_puts_event_fields_into_json_payload():
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import logging as cloud_logging
    from google.cloud.logging_v2.handlers.transports.base import Transport

    from training.core.logs import cloud_logging_handler

    sent = []

    class CapturingTransport(Transport):  # stands in for the Cloud Logging API, which cannot run here
        def send(self, record, message, **kwargs):
            sent.append(message)

    client = cloud_logging.Client(project="p", credentials=AnonymousCredentials(), _use_grpc=False)
    handler = cloud_logging_handler(client, transport=CapturingTransport)
    logger = logging.getLogger("adroi.cloudtest")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        logger.error("run r9 failed", extra={"event": events.TRAINING_FAILED, "run_id": "r9"})
    finally:
        logger.removeHandler(handler)
        logger.propagate = True

    assert len(sent) == 1
    assert {k: sent[0][k] for k in ("message", "event", "run_id")} == {
        "message": "run r9 failed", "event": "training_failed", "run_id": "r9"}
