"""HTTP routes: map requests to the pure functions and their typed exceptions to status codes.

Every error answers `{"error": {"code", "message", "field"}}`; bad input is a 400, 413 or 415, never a 5xx.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import pydantic_core
from flask import Blueprint, Flask, Response, current_app, g, request
from pydantic import ValidationError
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from app.follower import ModelFollower
from app.model import ServedModel
from app.predict import PredictionInputError, predict, spend_rows
from app.schemas import PredictRequest, openapi_document

log = logging.getLogger(__name__)
bp = Blueprint("api", __name__)

_HTTP_CODES = {400: "bad_request", 404: "not_found", 405: "method_not_allowed", 413: "payload_too_large",
               415: "unsupported_media_type"}
_JSON_TYPES = {list: "array", str: "string", int: "number", float: "number", bool: "boolean", type(None): "null"}


class ApiError(Exception):
    """An answer other than 200, already in the API's error format."""

    def __init__(self, status: int, code: str, message: str, field: str | None = None):
        self.status, self.code, self.message, self.field = status, code, message, field
        super().__init__(message)


def _json(body: Any, status: int = 200) -> Response:
    return Response(pydantic_core.to_json(body), status=status, mimetype="application/json")


def _follower() -> ModelFollower:
    return current_app.extensions["adroi_follower"]


def _served_model() -> ServedModel:
    model = _follower().current
    if model is None:
        raise ApiError(503, "model_unavailable", f"no verified model is loaded yet ({_follower().last_error}); "
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


def _json_body() -> bytes:
    """Return the request body after checking its content type and size (415, 413)."""
    environ = request.environ
    content_type = environ.get("CONTENT_TYPE", "")
    if content_type.partition(";")[0].strip().lower() != "application/json":
        raise ApiError(415, "unsupported_media_type",
                       f"Content-Type is {content_type or 'missing'!r}: expected 'application/json'")
    declared = environ.get("CONTENT_LENGTH", "")
    if not (declared.isascii() and declared.isdigit()):  # chunked: werkzeug enforces the limit as it reads
        return request.get_data(cache=False)
    if int(declared) > current_app.config["MAX_CONTENT_LENGTH"]:
        raise RequestEntityTooLarge()
    # Within the limit: read the declared length straight from the server's stream (werkzeug's header
    # parsing and limited-stream wrapper cost more than the rest of a prediction).
    return environ["wsgi.input"].read(int(declared))


@bp.post("/predict")
def predict_route() -> Response:
    """Predict revenue, ROI and contributions for one instance or a batch."""
    body = _json_body()
    if not body.strip():
        raise ApiError(400, "empty_body", "request body is empty: expected a JSON object")
    try:
        parsed = PredictRequest.model_validate_json(body)
    except ValidationError as exc:
        raise validation_error(exc) from exc
    rows, prefix = parsed.rows()
    limit = current_app.config["MAX_INSTANCES"]
    if len(rows) > limit:
        raise ApiError(413, "too_many_instances", f"{len(rows)} instances: expected at most {limit} per request",
                       "instances")
    model = _served_model()  # read once: this request finishes on this model even if a swap happens now
    g.model_version = model.version
    try:
        return _json(predict(model, spend_rows(model, rows, prefix)).to_dict())
    except PredictionInputError as exc:
        raise ApiError(400, exc.code, exc.message, exc.field) from exc


@bp.get("/healthz")
def healthz() -> Response:
    """Say the process is alive (whether or not a model is loaded)."""
    model = _follower().current
    return _json({"status": "ok", "model_version": model.version if model else None})


@bp.get("/readyz")
def readyz() -> Response:
    """Answer 200 only when a verified model is loaded."""
    return _json({"status": "ready", "model_version": _served_model().version})


@bp.get("/model")
def model_info() -> Response:
    """Describe the served model version."""
    return _json(_served_model().describe())


@bp.get("/openapi.json")
def openapi() -> Response:
    """Return the OpenAPI document generated from the request and response models."""
    config = current_app.config
    return _json(openapi_document(config["MAX_INSTANCES"], config["MAX_CONTENT_LENGTH"]))


def _api_error(exc: ApiError) -> Response:
    return _json({"error": {"code": exc.code, "message": exc.message, "field": exc.field}}, exc.status)


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
    app.register_blueprint(bp)
    app.register_error_handler(ApiError, _api_error)
    app.register_error_handler(HTTPException, _http_error)
    app.register_error_handler(Exception, _unexpected_error)
    if log_requests:
        app.before_request(_start_timer)
        app.after_request(_log_request)
