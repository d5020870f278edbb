"""Request and response models of the API, and the OpenAPI document generated from them.

The request models are what `/predict` validates with (pydantic v2, parsing the JSON body directly), so
the document at `/openapi.json` cannot drift from the code.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

Spend = Annotated[float, Field(strict=True, ge=0, allow_inf_nan=False,
                               description="Spend on one channel: a finite number >= 0 (not a string or boolean)")]
SpendByChannel = Annotated[dict[str, Spend], Field(
    description="Spend per channel, keyed by channel name (case-insensitive); every channel of the model is "
                "required and no other key is allowed, except `index`, which is ignored.",
    examples=[{"search_engine": 522807, "social_media": 518987, "video": 519625, "email": 520742}])]


class PredictRequest(BaseModel):
    """Body of `POST /predict`: one instance (flat or under `spend`) or a batch under `instances`."""

    model_config = ConfigDict(
        extra="allow",
        json_schema_extra={"examples": [
            {"SEARCH_ENGINE": 522807, "SOCIAL_MEDIA": 518987, "VIDEO": 519625, "EMAIL": 520742},
            {"spend": {"search_engine": 522807, "social_media": 518987, "video": 519625, "email": 520742}},
            {"instances": [{"search_engine": 522807, "social_media": 518987, "video": 519625, "email": 520742}]},
        ]},
    )
    # Flat form: the old clients' shape, channel -> spend at the top level.
    __pydantic_extra__: dict[str, Spend] = Field(init=False)

    instances: list[SpendByChannel] | None = Field(
        None, min_length=1, description="A batch (Vertex AI / KServe convention), answered in input order.")
    spend: SpendByChannel | None = Field(None, description="One instance.")
    index: Any = Field(None, description="Sent by the old clients (their row index); accepted and ignored, whatever its value.")

    @model_validator(mode="after")
    def _one_form(self) -> PredictRequest:
        forms = [name for name, present in (("instances", self.instances is not None),
                                            ("spend", self.spend is not None),
                                            ("channel keys", bool(self.__pydantic_extra__))) if present]
        if len(forms) != 1:
            raise ValueError(
                f"expected exactly one of `instances` (a batch), `spend` (one instance) or channel keys at the "
                f"top level, got {' and '.join(forms) if forms else 'none of them'}")
        return self

    def rows(self) -> tuple[list[dict[str, float]], str]:
        """Return the instances as channel maps, and the field path prefix for error messages."""
        if self.instances is not None:
            return self.instances, "instances"
        if self.spend is not None:
            return [self.spend], "spend"
        return [self.__pydantic_extra__], ""


class PredictResponse(BaseModel):
    """Body of a successful `POST /predict`, one entry per instance in input order."""

    predictions: list[float] = Field(description="Predicted revenue per instance.")
    roi: list[float | None] = Field(description="Predicted revenue ÷ total spend; null when total spend is 0.")
    contributions: list[dict[str, float]] = Field(description="coefficient × spend per channel, per instance.")
    model_version: str


class ErrorDetail(BaseModel):
    """What went wrong, on which field, and what was expected."""

    code: str = Field(examples=["invalid_value", "unknown_channel", "missing_channel", "model_unavailable"])
    message: str
    field: str | None = Field(None, description="Path of the offending field, e.g. `instances[3].video`.")


class ErrorResponse(BaseModel):
    """Body of every 4xx and 5xx answer."""

    error: ErrorDetail


class ModelMetrics(BaseModel):
    """Evaluation metrics recorded by the pipeline (free-form beyond these keys)."""

    model_config = ConfigDict(extra="allow")
    holdout: dict[str, Any] | None = None


class ModelInfo(BaseModel):
    """Body of `GET /model`: the served version and what it says about each channel."""

    version: str
    sha256: str
    trained_at: str | None
    promoted_at: str | None
    run_id: str | None
    algorithm: str | None
    channels: list[str]
    intercept: float
    marginal_roi: dict[str, float] = Field(description="Revenue per extra unit of spend, per channel.")
    metrics: ModelMetrics
    libraries: dict[str, str]
    code_version: str | None


class Health(BaseModel):
    """Body of `GET /healthz` and `GET /readyz`."""

    status: str = Field(examples=["ok", "ready", "unavailable"])
    model_version: str | None = None


def _response(model: type[BaseModel], description: str) -> dict[str, Any]:
    return {"description": description,
            "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{model.__name__}"}}}}


def openapi_document(max_instances: int, max_body_bytes: int) -> dict[str, Any]:
    """Return the OpenAPI 3.1 description of every endpoint, built from the models above."""
    schemas: dict[str, Any] = {}
    for model in (PredictRequest, PredictResponse, ErrorResponse, ModelInfo, Health):
        schema = model.model_json_schema(ref_template="#/components/schemas/{model}", mode="validation")
        schemas.update(schema.pop("$defs", {}))
        schemas[model.__name__] = schema
    error = _response(ErrorResponse, "error")
    return {
        "openapi": "3.1.0",
        "info": {"title": "adroi prediction API", "version": "1",
                 "description": "Predicted revenue, ROI and per-channel contributions from the latest promoted "
                                "linear marketing-ROI model."},
        "paths": {
            "/predict": {"post": {
                "summary": "Predict revenue for one instance or a batch",
                "requestBody": {"required": True, "content": {"application/json": {
                    "schema": {"$ref": "#/components/schemas/PredictRequest"}}},
                    "description": f"At most {max_body_bytes} bytes and {max_instances} instances."},
                "responses": {"200": _response(PredictResponse, "predictions in input order"),
                              "400": error, "408": error, "413": error, "415": error, "503": error},
            }},
            "/model": {"get": {"summary": "The served model version",
                               "responses": {"200": _response(ModelInfo, "served model"), "503": error}}},
            "/healthz": {"get": {"summary": "The process is alive",
                                 "responses": {"200": _response(Health, "alive")}}},
            "/readyz": {"get": {"summary": "A verified model is loaded",
                                "responses": {"200": _response(Health, "ready"), "503": error}}},
            "/openapi.json": {"get": {"summary": "This document", "responses": {"200": {"description": "OpenAPI"}}}},
        },
        "components": {"schemas": schemas},
    }
