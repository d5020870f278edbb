"""The gunicorn worker of the API: gevent (one greenlet per connection), answering gunicorn's own errors in JSON.

Why gevent: a client that sends its headers and then its body one byte at a time holds whatever serves its
connection until the body is complete. With threads, a handful of such clients held every thread and other
clients were no longer answered; a greenlet per connection costs a few kilobytes, so slow clients only hold
connections (at most `worker_connections` per worker), and the deadlines bound how long: the request line and
headers within `keepalive` seconds (gunicorn's gevent worker), the body within `BODY_TIMEOUT_SECONDS`
(app/routes.py, 408).

Errors gunicorn answers before the app sees the request (malformed request line or header, bad
Content-Length, request line over `limit_request_line` (414), headers over `limit_request_fields` or
`limit_request_field_size` (431), unsupported transfer coding (501)) are written by `gunicorn.util.write_error`
as HTML; gunicorn has no setting for their format, so each worker process replaces that one function with
`write_json_error` (same signature), which answers the API's error format.
"""

from __future__ import annotations

import json
import socket
from typing import Any

from gunicorn import util
from gunicorn.workers.ggevent import GeventWorker

_CODES = {400: "bad_request", 403: "forbidden", 414: "request_line_too_long", 417: "expectation_failed",
          431: "header_fields_too_large", 500: "internal", 501: "unsupported_transfer_coding"}


def json_error_bytes(status: int, reason: str, message: str) -> bytes:
    """Return a whole HTTP/1.1 answer (Connection: close) carrying the API's JSON error body."""
    text = message or ("unexpected server error; it has been logged" if status >= 500 else reason)
    body = json.dumps({"error": {"code": _CODES.get(status, "http_error"), "message": text, "field": None}}).encode()
    head = (f"HTTP/1.1 {status} {reason}\r\nConnection: close\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n")
    return head.encode("latin-1") + body


def write_json_error(sock: socket.socket, status_int: int, reason: str, mesg: str) -> None:
    """Drop-in for `gunicorn.util.write_error`: the same answer, as JSON instead of HTML."""
    util.write_nonblock(sock, json_error_bytes(int(status_int), reason, mesg))


class ApiWorker(GeventWorker):
    """gunicorn's gevent worker whose own error answers are JSON."""

    def init_process(self, *args: Any, **kwargs: Any) -> None:
        """Install the JSON error writer in this worker process, then run gunicorn's gevent worker."""
        util.write_error = write_json_error
        super().init_process(*args, **kwargs)
