"""HTTP routes: map requests to the pure functions and their typed exceptions to status codes.

Every error answers `{"error": {"code", "message", "field"}}`; bad input is a 400, 408, 413 or 415, never a
5xx. A 503 tells the client what is wrong in its terms; the store's details (paths, causes) go to the log.
"""

from __future__ import annotations

import json
import logging
import time
from collections import Counter
from dataclasses import dataclass
from functools import partial
from typing import Any

import gevent.local
import orjson
import pydantic_core
from flask import Blueprint, Flask, Response, current_app, g, request
from gevent import monkey  # gevent is the server's worker (app/worker.py)
from gunicorn.http.errors import NoMoreData, ParseException
from pydantic import ValidationError
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from app.follower import ModelFollower
from app.logs import MODEL_VERSION_KEY
from app.model import ServedModel
from app.predict import PredictionInputError, predict, spend_rows
from app.schemas import PredictRequest, openapi_document
from training.core import events
from training.core.errors import AllocationError

log = logging.getLogger(__name__)
bp = Blueprint("api", __name__)

_HTTP_CODES = {400: "bad_request", 404: "not_found", 405: "method_not_allowed", 408: "request_timeout",
               413: "payload_too_large", 415: "unsupported_media_type"}
_JSON_TYPES = {list: "array", str: "string", int: "number", float: "number", bool: "boolean", type(None): "null"}


class ApiError(Exception):
    """An answer other than 200, already in the API's error format."""

    def __init__(self, status: int, code: str, message: str, field: str | None = None):
        self.status, self.code, self.message, self.field = status, code, message, field
        super().__init__(message)


def bytes_response(body: bytes, status: int = 200) -> Response:
    """A response of JSON `body`, handed to the server as it is.

    `mimetype` rather than `content_type`: the same header (werkzeug adds no charset to application/json),
    0.4 µs less. `direct_passthrough`: werkzeug returns the body's one-item list to the server instead of
    wrapping it in a generator that encodes each item and in a closing iterator (4 µs a request, a quarter of
    what a prediction costs). Safe for bytes: there is nothing to encode, nothing to close, and werkzeug still
    sends no body for HEAD.
    """
    return Response(body, status=status, mimetype="application/json", direct_passthrough=True)


def json_response(body: Any, status: int = 200) -> Response:
    """A JSON response (pydantic-core's serializer: faster than json.dumps)."""
    return bytes_response(pydantic_core.to_json(body), status)


def prediction_response(body: dict[str, Any]) -> Response:
    """`/predict`'s answer, written by orjson: pydantic-core's bytes in a third of the time (0.45 µs against 1.15).

    For an answer's plain floats, strings, lists and None; anything else falls back to pydantic-core's
    conversion. The other answers keep `json_response`: orjson writes null where pydantic-core writes
    Infinity, and refuses numpy scalars but for that fallback.
    """
    return bytes_response(orjson.dumps(body, default=pydantic_core.to_jsonable_python))


@dataclass(frozen=True, slots=True)
class ApiState:
    """What a request needs of its app, read once at registration: each `current_app.config[...]` costs ~1 µs."""

    follower: ModelFollower
    max_instances: int
    max_body_bytes: int
    body_timeout_seconds: float


def api_state() -> ApiState:
    """The current app's `ApiState` (one context lookup)."""
    return current_app.extensions["adroi_api"]


def served_model(follower: ModelFollower | None = None) -> ServedModel:
    """The model the follower holds now, or a 503 when none is loaded."""
    if follower is None:
        follower = api_state().follower
    model = follower.current
    if model is None:
        reason = follower.last_error
        if reason != current_app.extensions.get("adroi_unavailable_logged"):  # once per reason, not per request
            current_app.extensions["adroi_unavailable_logged"] = reason
            log.warning("answering 503 model_unavailable: %s", reason, extra={"event": "model_unavailable"})
        raise ApiError(503, "model_unavailable", "no verified model is loaded yet: none has been promoted, or the "
                                                 "latest could not be read or verified (the server log says which); "
                                                 "retry after the pipeline promotes one")
    return model


def _field_path(loc: tuple[int | str, ...]) -> str | None:
    path = ""
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    return path or None


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def validation_error(exc: ValidationError) -> ApiError:
    """Turn the first pydantic error into a 400 naming the field, the value and what was expected."""
    first = exc.errors(include_url=False)[0]
    kind, loc = first["type"], first["loc"]
    if kind == "json_invalid":
        return ApiError(400, "invalid_json", f"body is not valid JSON: {first['ctx']['error']}")
    if kind == "model_type":
        json_type = _JSON_TYPES.get(type(first["input"]), "value")
        return ApiError(400, "invalid_body", f"body is a JSON {json_type}: expected an object with `instances`, "
                                             "`spend` or channel keys")
    if loc == ("instances",) and kind == "too_short":
        return ApiError(400, "empty_instances", "`instances` is empty: expected at least one instance", "instances")
    message = first["msg"].removeprefix("Value error, ")
    if kind != "value_error":
        message = f"{message}, got {_short(first['input'])}"
    return ApiError(400, "invalid_value", message, _field_path(loc))


class _BodyTimeout(Exception):
    """The client did not send its whole body within BODY_TIMEOUT_SECONDS."""


# Per greenlet (one per connection): (seconds, the event loop's timer of its body deadline, the greenlet's
# `throw`), the timer restarted for each request on the connection. What gevent.Timeout does, without building
# one per request (1.6 µs against 0.15 µs for a restart of the timer).
_deadlines = gevent.local.local()


def _read_body_within(environ: dict[str, Any], limit: int, seconds: float) -> bytes:
    """`_read_body`, interrupted after `seconds` under gevent (the server's worker) with `_BodyTimeout`."""
    if not monkey.is_module_patched("socket"):
        return _read_body(environ, limit)  # not under gevent (Flask's test client): the body is in memory
    deadline = getattr(_deadlines, "deadline", None)
    if deadline is None or deadline[0] != seconds:
        # The greenlet's `throw`, bound once: the timer fires in the event loop and raises in this greenlet.
        deadline = _deadlines.deadline = (seconds, gevent.get_hub().loop.timer(seconds), gevent.getcurrent().throw)
    _, timer, throw = deadline
    timer.start(throw, _BodyTimeout)
    try:
        return _read_body(environ, limit)
    finally:
        timer.stop()


def _read_body(environ: dict[str, Any], limit: int) -> bytes:
    """Read the body from the server's stream: the declared length, or a chunked body up to `limit` + 1."""
    declared = environ.get("CONTENT_LENGTH", "")
    stream = environ["wsgi.input"]
    if declared.isascii() and declared.isdigit():
        length = int(declared)
        if length > limit:
            raise RequestEntityTooLarge()
        # Read the declared length straight from the server's stream (werkzeug's header parsing and
        # limited-stream wrapper cost more than the rest of a prediction).
        return stream.read(length)
    if not environ.get("wsgi.input_terminated"):  # no length and no chunked framing: no body
        return b""
    body = stream.read(limit + 1)  # chunked: one byte more than allowed tells a body that is too large
    if len(body) > limit:
        raise RequestEntityTooLarge()
    return body


def json_body(environ: dict[str, Any] | None = None, api: ApiState | None = None) -> bytes:
    """Return the request body after checking its content type, framing, size and timing (415, 400, 413, 408)."""
    if environ is None:
        environ = request.environ
    content_type = environ.get("CONTENT_TYPE", "")
    if content_type != "application/json" and content_type.partition(";")[0].strip().lower() != "application/json":
        raise ApiError(415, "unsupported_media_type",
                       f"Content-Type is {content_type or 'missing'!r}: expected 'application/json'")
    if api is None:
        api = api_state()
    seconds = api.body_timeout_seconds
    try:
        return _read_body_within(environ, api.max_body_bytes, seconds)
    except ParseException as exc:  # gunicorn's chunked decoder: malformed input, not a server error
        raise ApiError(400, "invalid_chunked_body",
                       f"malformed chunked transfer encoding ({type(exc).__name__}: {exc}): expected "
                       "`<hex size>\\r\\n<data>\\r\\n` chunks ending with `0\\r\\n\\r\\n`") from exc
    except (NoMoreData, OSError) as exc:  # the client went away mid-body: its problem, not a 5xx (nor a trace)
        raise ApiError(400, "incomplete_body", f"the connection ended before the whole body arrived "
                                               f"({type(exc).__name__}): expected "
                                               f"{environ.get('CONTENT_LENGTH') or 'a chunked body to its end'}"
                                               f"{' bytes' if environ.get('CONTENT_LENGTH') else ''}") from exc
    except _BodyTimeout as exc:
        raise ApiError(408, "request_timeout", f"the request body did not arrive within {seconds:g} s: "
                                               "expected the whole body promptly") from exc


class _RepeatedKeys(dict):
    """A parsed JSON object in which `repeated` occurred more than once."""

    repeated: str


def _mark_repeated_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """`object_pairs_hook` for json.loads: the object as a dict, marked when a key occurs twice."""
    built = dict(pairs)
    if len(built) == len(pairs):
        return built
    marked = _RepeatedKeys(built)
    seen: set[str] = set()
    for key, _ in pairs:
        if key in seen:
            marked.repeated = key
            break
        seen.add(key)
    return marked


def _count_keys(value: Any) -> int:
    """Number of object keys in a parsed JSON value, nested ones included."""
    if isinstance(value, dict):
        return len(value) + sum(_count_keys(v) for v in value.values() if isinstance(v, dict | list))
    if isinstance(value, list):
        return sum(_count_keys(v) for v in value if isinstance(v, dict | list))
    return 0


def _parsed_key_count(parsed: PredictRequest) -> int:
    """Number of object keys left after parsing (a repeated key counts once)."""
    count = len(parsed.model_fields_set)  # the top-level keys, channel keys included
    if parsed.spend is not None:
        count += len(parsed.spend)
    if parsed.instances is not None:
        count += sum(map(len, parsed.instances))
    return count if parsed.index is None else count + _count_keys(parsed.index)


def _refuse_duplicate_keys(body: bytes, parsed: PredictRequest) -> None:
    """Refuse a JSON object that repeats a key exactly (JSON parsers keep the last silently): 400.

    Every key is followed by one `:` and a colon elsewhere can only be inside a string, so the colons of the
    body bound the keys sent from above; when they equal the keys parsed, nothing was repeated. Only
    otherwise (a repeated key, or a string holding a colon) is the body parsed again key by key.
    """
    if body.count(b":") == _parsed_key_count(parsed):
        return
    document = json.loads(body, object_pairs_hook=_mark_repeated_keys)
    objects: list[tuple[str, Any]] = [("", document)]
    if isinstance(document.get("spend"), dict):
        objects.append(("spend", document["spend"]))
    if isinstance(document.get("instances"), list):
        objects += [(f"instances[{i}]", row) for i, row in enumerate(document["instances"])]
    for prefix, value in objects:
        if isinstance(value, _RepeatedKeys):
            key = value.repeated
            code = "duplicate_key" if not prefix and key in PredictRequest.model_fields else "duplicate_channel"
            raise ApiError(400, code, f"key {key!r} given twice in one object: expected each key once",
                           f"{prefix}.{key}" if prefix else key)
    # Otherwise a colon inside a string, or a key repeated inside `index`, which is ignored whatever it holds.


def predict_route(api: ApiState) -> Response:
    """Predict revenue, ROI and contributions for one instance or a batch (`POST /predict`, bound to `api`)."""
    # Each access to `request`, `g` or `current_app` costs ~1 µs: once per request, and through the proxy's
    # documented `_get_current_object` (werkzeug.local.LocalProxy), 0.1 µs against 0.7 for `request.environ`.
    environ = request._get_current_object().environ
    body = json_body(environ, api)
    if not body or body.isspace():  # the same ASCII whitespace as strip(), without copying the body
        raise ApiError(400, "empty_body", "request body is empty: expected a JSON object")
    try:
        # What `model_validate_json` calls, without its keyword plumbing (0.3 µs): the model's validator.
        parsed = PredictRequest.__pydantic_validator__.validate_json(body)
    except ValidationError as exc:
        raise validation_error(exc) from exc
    _refuse_duplicate_keys(body, parsed)
    rows, prefix = parsed.rows()
    limit = api.max_instances
    if len(rows) > limit:
        raise ApiError(413, "too_many_instances", f"{len(rows)} instances: expected at most {limit} per request",
                       "instances")
    model = api.follower.current or served_model(api.follower)  # read once: a swap now does not change it
    environ[MODEL_VERSION_KEY] = model.version  # for the log lines of this request (app/logs.py)
    try:
        period = model.facts.check_period(parsed.period) if parsed.period is not None else None
        answer = predict(model, spend_rows(model, rows, prefix), period)
    except PredictionInputError as exc:
        raise ApiError(400, exc.code, exc.message, exc.field) from exc
    except AllocationError as exc:
        raise allocation_error(exc) from exc
    if answer.out_of_range:
        record_out_of_range(model, answer.out_of_range, len(rows))
    return prediction_response(answer.to_dict())


def allocation_error(exc: AllocationError) -> ApiError:
    """A 400 naming the field, the value and what was expected, from the planner core's rejection."""
    if exc.field == "bounds" and isinstance(exc.value, dict) and "budget" in exc.value:
        which = "minimums" if "sum_of_minimums" in exc.value else "maximums"
        total = exc.value[f"sum_of_{which}"]
        side = "above" if which == "minimums" else "below"
        return ApiError(400, "infeasible_bounds", f"bounds: the {which} add up to {total:,.2f}, {side} the budget "
                                                  f"{exc.value['budget']:,.2f}: expected {exc.expected}", exc.field)
    code = "invalid_value"
    if exc.field.startswith("bounds.") and exc.expected.startswith("a channel of the model"):
        code = "unknown_channel"
    return ApiError(400, code, f"{exc.field}={_short(exc.value)}: expected {exc.expected}", exc.field)


def record_out_of_range(model: ServedModel, channels: list[str], instances: int = 1) -> None:
    """Count a request with spend beyond what the model saw, per channel and version; log one line for it."""
    counts: Counter[tuple[str, str]] = current_app.extensions.setdefault("adroi_out_of_range", Counter())
    for channel in channels:
        counts[(model.version, channel)] += 1
    log.warning("%s %s: spend above the largest seen in training on %s (model %s)", request.method, request.path,
                ", ".join(channels), model.version, extra={
                    "event": events.PREDICTION_OUT_OF_RANGE, "model_version": model.version,
                    "channels": channels, "endpoint": request.path, "instances": instances,
                    "requests_so_far": {c: counts[(model.version, c)] for c in channels}})


@bp.get("/healthz")
def healthz() -> Response:
    """Say the process is alive (whether or not a model is loaded)."""
    model = api_state().follower.current
    return json_response({"status": "ok", "model_version": model.version if model else None})


@bp.get("/readyz")
def readyz() -> Response:
    """Answer 200 only when a verified model is loaded."""
    return json_response({"status": "ready", "model_version": served_model().version})


@bp.get("/model")
def model_info() -> Response:
    """Describe the served model version."""
    return json_response(served_model().describe())


@bp.get("/openapi.json")
def openapi() -> Response:
    """Return the OpenAPI document generated from the request and response models."""
    config = current_app.config
    return json_response(openapi_document(config["MAX_INSTANCES"], config["MAX_CONTENT_LENGTH"]))


def _api_error(exc: ApiError) -> Response:
    return json_response({"error": {"code": exc.code, "message": exc.message, "field": exc.field}}, exc.status)


def _http_error(exc: HTTPException) -> Response:
    status = exc.code or 500
    message = exc.description or exc.name
    if status == 413:
        message = f"request body is larger than {current_app.config['MAX_CONTENT_LENGTH']} bytes"
    return _api_error(ApiError(status, _HTTP_CODES.get(status, "http_error"), message))


def _unexpected_error(exc: Exception) -> Response:
    log.exception("unexpected error on %s %s", request.method, request.path)
    return _api_error(ApiError(500, "internal", "unexpected server error; it has been logged"))


def _start_timer() -> None:
    g.started = time.perf_counter()


def _log_request(response: Response) -> Response:
    log.info("%s %s %s", request.method, request.path, response.status_code, extra={
        "status": response.status_code, "latency_ms": round((time.perf_counter() - g.started) * 1000, 3)})
    return response


def register(app: Flask, log_requests: bool) -> None:
    """Attach the routes and error handlers (and the per-request log line if asked) to `app`."""
    config = app.config
    api = ApiState(app.extensions["adroi_follower"], config["MAX_INSTANCES"], config["MAX_CONTENT_LENGTH"],
                   config["BODY_TIMEOUT_SECONDS"])
    app.extensions["adroi_api"] = api
    # /predict, the hot path, is bound to this app's state (no context lookup for it per request) and sits
    # outside the blueprint (no blueprint hooks for Flask to look up per request).
    app.add_url_rule("/predict", "predict", partial(predict_route, api), methods=["POST"])
    app.register_blueprint(bp)
    app.register_error_handler(ApiError, _api_error)
    app.register_error_handler(HTTPException, _http_error)
    app.register_error_handler(Exception, _unexpected_error)
    if log_requests:
        app.before_request(_start_timer)
        app.after_request(_log_request)
