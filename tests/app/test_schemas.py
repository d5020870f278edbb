"""Tests of app/schemas.py: the request forms, value rules, and the OpenAPI document built from them."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from app.schemas import (
    AllocateRequest,
    AllocateResponse,
    ErrorResponse,
    ModelInfo,
    PredictRequest,
    PredictResponse,
    openapi_document,
)

SPEND = {"email": 1.0, "search_engine": 2, "social_media": 3.5, "video": 0}


@pytest.mark.parametrize(("body", "rows", "prefix"), [
    ({"EMAIL": 1, "index": 4}, [{"EMAIL": 1.0}], ""),
    ({"spend": SPEND}, [SPEND], "spend"),
    ({"instances": [SPEND, SPEND]}, [SPEND, SPEND], "instances"),
    ({"index": "2024-01", "video": 2}, [{"video": 2.0}], ""),
])
def test_each_request_form_gives_its_rows(body, rows, prefix):
    assert PredictRequest.model_validate(body).rows() == (rows, prefix)


@pytest.mark.parametrize(("body", "where"), [
    ({"video": True}, ("video",)),
    ({"video": -1}, ("video",)),
    ({"video": "12"}, ("video",)),
    ({"video": float("nan")}, ("video",)),
    ({"video": float("inf")}, ("video",)),
    ({"video": {"nested": 1}}, ("video",)),
    ({"spend": {"video": [1]}}, ("spend", "video")),
    ({"instances": []}, ("instances",)),
    ({"instances": [SPEND, {"video": None}]}, ("instances", 1, "video")),
    ({}, ()),
    ({"spend": SPEND, "video": 1}, ()),
    ({"instances": [SPEND], "spend": SPEND}, ()),
])
def test_bad_values_are_rejected_at_their_location(body, where):
    with pytest.raises(ValidationError) as info:
        PredictRequest.model_validate(body)

    assert info.value.errors()[0]["loc"] == where


def test_openapi_document_is_built_from_the_models():
    document = openapi_document(max_instances=10_000, max_body_bytes=1 << 20)

    schemas = document["components"]["schemas"]
    assert document["openapi"].startswith("3.")
    assert set(document["paths"]) == {"/predict", "/allocate", "/model", "/healthz", "/readyz", "/openapi.json"}
    assert schemas["PredictRequest"] == PredictRequest.model_json_schema(
        ref_template="#/components/schemas/{model}")
    for model in (PredictResponse, AllocateRequest, AllocateResponse, ErrorResponse, ModelInfo):
        assert model.__name__ in schemas
    assert "10000 instances" in document["paths"]["/predict"]["post"]["requestBody"]["description"]
    refs = _refs(document)
    assert refs and all(ref.removeprefix("#/components/schemas/") in schemas for ref in refs)


def _refs(node: object) -> list[str]:
    if isinstance(node, dict):
        return [v for k, v in node.items() if k == "$ref"] + [r for v in node.values() for r in _refs(v)]
    if isinstance(node, list):
        return [r for v in node for r in _refs(v)]
    return []
