"""`POST /allocate`: split a budget for one period across channels, from the served model version.

The view parses and checks the body (the same framing, size, timing and duplicate-key rules as `/predict`),
then calls `training.core.planner.plan_budget`, the computation the CLI (`python -m training allocate`) uses
too, and maps its `AllocationError` to a 400 naming the field.
"""

from __future__ import annotations

import json
from typing import Any

from flask import Blueprint, Flask, Response
from flask import request as http_request
from pydantic import ValidationError

from app.logs import MODEL_VERSION_KEY
from app.routes import (
    ApiError,
    allocation_error,
    json_body,
    json_response,
    record_out_of_range,
    served_model,
    validation_error,
)
from app.schemas import AllocateRequest
from training.core.errors import AllocationError
from training.core.planner import plan_budget

bp = Blueprint("planner", __name__)


def _first_repeated_key(body: bytes) -> str | None:
    """The path of the first key a JSON object of `body` repeats (parsers keep the last silently), or None."""
    found: list[str] = []

    def pairs_hook(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen and not found:
                found.append(key)
            seen.add(key)
        return dict(pairs)

    document = json.loads(body, object_pairs_hook=pairs_hook)
    if not found:
        return None
    key = found[0]
    bounds = document.get("bounds") if isinstance(document, dict) else None
    return f"bounds.{key}" if isinstance(bounds, dict) and key in bounds and key not in AllocateRequest.model_fields \
        else key


def parse_allocate_request(body: bytes) -> AllocateRequest:
    """Validate the body of `POST /allocate`; raise ApiError (400) naming the field."""
    if not body.strip():
        raise ApiError(400, "empty_body", "request body is empty: expected a JSON object with `budget`")
    try:
        parsed = AllocateRequest.model_validate_json(body)
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        if first["type"] == "model_type":
            raise ApiError(400, "invalid_body", "body is not a JSON object: expected an object with `budget` and "
                                                "optionally `period`, `bounds`, `scenario`, `target_mroi`") from exc
        if first["type"] == "extra_forbidden":
            raise ApiError(400, "unknown_field", f"unknown field {first['loc'][-1]!r}: expected budget, period, "
                                                 "bounds, scenario or target_mroi", str(first["loc"][-1])) from exc
        raise validation_error(exc) from exc
    repeated = _first_repeated_key(body)
    if repeated is not None:
        raise ApiError(400, "duplicate_key", f"key {repeated.rsplit('.', 1)[-1]!r} given twice in one object: "
                                             "expected each key once", repeated)
    return parsed


@bp.post("/allocate")
def allocate_route() -> Response:
    """Recommend how to split a budget across channels, with the current mix and the lift over it."""
    request = parse_allocate_request(json_body())
    model = served_model()  # read once: this request finishes on this model even if a swap happens now
    http_request.environ[MODEL_VERSION_KEY] = model.version  # for the log lines of this request
    bounds = None if request.bounds is None else {name: list(pair) for name, pair in request.bounds.items()}
    try:
        answer = plan_budget(model.facts, request.budget, period=request.period, bounds=bounds,
                             scenario=request.scenario, target_mroi=request.target_mroi)
    except AllocationError as exc:
        raise allocation_error(exc) from exc
    if answer["out_of_range"]:
        record_out_of_range(model, answer["out_of_range"])
    return json_response(answer)


def register_planner(app: Flask) -> None:
    """Attach `POST /allocate` to `app`."""
    app.register_blueprint(bp)
