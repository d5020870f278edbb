"""Tests of app/worker.py: gunicorn's own errors in JSON, and slow uploads that cannot starve other clients."""

from __future__ import annotations

import json
import socket

import pytest

from app.worker import json_error_bytes
from bench.slow_clients import slow_upload_attack

SPEND = {"email": 1.0, "search_engine": 2.0, "social_media": 3.0, "video": 4.0}


def test_json_error_bytes_is_a_complete_closing_answer():
    answer = json_error_bytes(431, "Request Header Fields Too Large", "Error parsing headers: 'x'")

    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 431 Request Header Fields Too Large\r\n")
    assert b"Connection: close" in head and b"Content-Type: application/json" in head
    assert f"Content-Length: {len(body)}".encode() in head
    assert json.loads(body) == {"error": {"code": "header_fields_too_large", "message": "Error parsing headers: 'x'",
                                          "field": None}}


def test_json_error_bytes_without_message_says_it_was_logged():
    error = json.loads(json_error_bytes(500, "Internal Server Error", "").partition(b"\r\n\r\n")[2])["error"]

    assert error["code"] == "internal" and "logged" in error["message"]


def _raw(port: int, request: bytes) -> bytes:
    """Send `request` on a new connection; return everything the server sent until it closed."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(request)
        received = b""
        try:
            while chunk := sock.recv(65536):
                received += chunk
        except ConnectionResetError:  # closed with unread request bytes: the answer was already received
            pass
    return received


def test_errors_gunicorn_answers_itself_are_json(api_server):
    _, port, _ = api_server()
    cases = [
        (b"GARBAGE\r\n\r\n", 400, "bad_request", "Invalid Request Line"),
        (b"POST /predict HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nContent-Length: abc\r\n\r\n",
         400, "bad_request", "CONTENT-LENGTH"),
        (b"GET /" + b"a" * 5000 + b" HTTP/1.1\r\nHost: t\r\n\r\n", 414, "request_line_too_long", "4094"),
        (b"GET /healthz HTTP/1.1\r\nHost: t\r\nX-Big: " + b"a" * 9000 + b"\r\n\r\n", 431,
         "header_fields_too_large", "limit request headers fields size"),
    ]
    for request, status, code, words in cases:
        answer = _raw(port, request)

        head, _, body = answer.partition(b"\r\n\r\n")
        assert head.split(b"\r\n")[0].split()[1] == str(status).encode(), answer[:200]
        assert b"Content-Type: application/json" in head
        error = json.loads(body)["error"]
        assert error["code"] == code
        assert words in error["message"]


@pytest.mark.parametrize("slow_clients", [8, 64])
def test_slow_uploads_do_not_stop_normal_clients(api_server, slow_clients):
    # Two workers as on a 2-CPU Cloud Run instance; every slow client holds a connection before normal
    # clients start, and normal answers count only when they are a 200 within 1 s.
    _, port, _ = api_server(WEB_CONCURRENCY="2")

    result = slow_upload_attack(port, json.dumps(SPEND).encode(), slow_clients, normal_clients=4, seconds=2.0,
                                timeout=1.0)

    assert result.sent >= 20
    assert result.answered_share >= 0.99, result
