"""Request and response models of the API, and the OpenAPI document generated from them.

The request models are what `/predict` validates with (pydantic v2, parsing the JSON body directly), so
the document at `/openapi.json` cannot drift from the code.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

# Models that only describe answers (and the /allocate body) are built when first used, not at import: the
# worker's import is on the cold-start path, /openapi.json and the first /allocate are not.
DEFERRED = ConfigDict(defer_build=True)

Spend = Annotated[float, Field(strict=True, ge=0, allow_inf_nan=False,
                               description="Spend on one channel: a finite number >= 0 (not a string or boolean)")]
SpendByChannel = Annotated[dict[str, Spend], Field(
    description="Spend per channel, keyed by channel name (case-insensitive); every channel of the model is "
                "required and no other key is allowed, except `index`, which is ignored.",
    examples=[{"search_engine": 80000, "social_media": 230000, "video": 130000, "email": 95000}])]


class PredictRequest(BaseModel):
    """Body of `POST /predict`: one instance (flat or under `spend`) or a batch under `instances`."""

    model_config = ConfigDict(
        extra="allow",
        json_schema_extra={"examples": [
            {"SEARCH_ENGINE": 80000, "SOCIAL_MEDIA": 230000, "VIDEO": 130000, "EMAIL": 95000},
            {"spend": {"search_engine": 80000, "social_media": 230000, "video": 130000, "email": 95000}},
            {"instances": [{"search_engine": 80000, "social_media": 230000, "video": 130000, "email": 95000}]},
        ]},
    )
    # Flat form: the old clients' shape, channel -> spend at the top level.
    __pydantic_extra__: dict[str, Spend] = Field(init=False)

    instances: list[SpendByChannel] | None = Field(
        None, min_length=1, description="A batch (Vertex AI / KServe convention), answered in input order.")
    spend: SpendByChannel | None = Field(None, description="One instance.")
    index: Any = Field(None, description="Sent by the old clients (their row index); accepted and ignored, whatever its value.")
    period: str | None = Field(
        None, description="The period predicted, of the model's grain: 'YYYY-MM' (month) or 'YYYY-Www' (ISO week). "
                          "Sets a media-mix model's season, trend and number of days; controls take their value "
                          "in the same period a year earlier. Default: the period after the training window.",
        examples=["2026-12", "2026-W50"])

    @model_validator(mode="after")
    def _one_form(self) -> PredictRequest:
        if (self.instances is not None) + (self.spend is not None) + bool(self.__pydantic_extra__) == 1:
            return self
        forms = [name for name, present in (("instances", self.instances is not None),
                                            ("spend", self.spend is not None),
                                            ("channel keys", bool(self.__pydantic_extra__))) if present]
        raise ValueError(
            f"expected exactly one of `instances` (a batch), `spend` (one instance) or channel keys at the "
            f"top level, got {' and '.join(forms) if forms else 'none of them'}")

    def rows(self) -> tuple[list[dict[str, float]], str]:
        """Return the instances as channel maps, and the field path prefix for error messages."""
        if self.instances is not None:
            return self.instances, "instances"
        if self.spend is not None:
            return [self.spend], "spend"
        return [self.__pydantic_extra__], ""


class PredictResponse(BaseModel):
    """Body of a successful `POST /predict`, one entry per instance in input order."""

    model_config = DEFERRED

    predictions: list[float] = Field(description="Predicted revenue per instance.")
    roi: list[float | None] = Field(description="Predicted revenue ÷ total spend; null when total spend is 0.")
    contributions: list[dict[str, float]] = Field(
        description="Revenue from each channel's spend, per instance (linear: coefficient × spend; mmm: the "
                    "channel's steady-state response to its spend per period held through the period).")
    media_contribution: list[float] = Field(description="Sum of the channels' contributions, per instance.")
    media_roi: list[float | None] = Field(
        description="Media contribution ÷ total spend, per instance; null when total spend is 0.")
    warnings: list[list[str]] = Field(
        description="Per instance, one message per channel whose spend lies above the largest spend per period "
                    "the model saw in training (its response is extrapolated there); empty when none.")
    period: str | None = Field(description="The period predicted (null for a linear model without a grain).")
    model_version: str


class ErrorDetail(BaseModel):
    """What went wrong, on which field, and what was expected."""

    model_config = DEFERRED

    code: str = Field(examples=["invalid_value", "unknown_channel", "missing_channel", "model_unavailable"])
    message: str
    field: str | None = Field(None, description="Path of the offending field, e.g. `instances[3].video`.")


class ErrorResponse(BaseModel):
    """Body of every 4xx and 5xx answer."""

    model_config = DEFERRED

    error: ErrorDetail


class ModelMetrics(BaseModel):
    """Evaluation metrics recorded by the pipeline (free-form beyond these keys)."""

    model_config = ConfigDict(extra="allow", defer_build=True)
    holdout: dict[str, Any] | None = None


class ModelInfo(BaseModel):
    """Body of `GET /model`: the served version and what it says about each channel."""

    model_config = DEFERRED

    version: str
    sha256: str
    trained_at: str | None
    promoted_at: str | None
    run_id: str | None
    algorithm: str | None
    channels: list[str]
    intercept: float | None = Field(description="Linear models' intercept; null for mmm (its base depends on the period).")
    marginal_roi: dict[str, float] = Field(
        description="Revenue per extra unit of spend, per channel (mmm: at the training window's spend).")
    grain: str | None = Field(description="Period of the model: `month` or `week`; spend is per period.")
    default_period: str | None = Field(description="The period /predict and /allocate use when none is given.")
    spend_unit: str
    roi: dict[str, Any] | None = Field(description="The manifest's `roi` block: ROI and mROI with intervals.")
    response_curves: dict[str, Any] | None = Field(
        description="The manifest's `response_curves` block: steady-state revenue per period against spend.")
    controls: dict[str, Any] | None = Field(
        description="mmm: the control variables, how /predict and /allocate set them (`default`), and their "
                    "values in `default_period`.")
    metrics: ModelMetrics
    libraries: dict[str, str]
    code_version: str | None


Bound = Annotated[float | None, Field(strict=True, ge=0, allow_inf_nan=False)]


class AllocateRequest(BaseModel):
    """Body of `POST /allocate`: a budget for one period of the model's grain, optional bounds and scenario."""

    model_config = ConfigDict(extra="forbid", defer_build=True, json_schema_extra={"examples": [
        {"budget": 120000},
        {"budget": 120000, "period": "2026-12", "bounds": {"tv": [10000, 50000], "search": [20000, None]}},
        {"budget": 120000, "scenario": "target_mroi", "target_mroi": 1.2},
    ]})

    budget: float = Field(strict=True, gt=0, allow_inf_nan=False,
                          description="Total spend for one period of the model's grain: a positive finite number.")
    period: str | None = Field(None, description="As in /predict; default: the period after the training window.",
                               examples=["2026-12", "2026-W50"])
    bounds: dict[str, Annotated[list[Bound], Field(min_length=2, max_length=2,
                                                    description="[min, max]; either may be null")]] | None = Field(
        None, description="Absolute spend per period per channel (case-insensitive), `[min, max]`; a channel "
                          "without bounds may get anything from 0 to the budget.")
    scenario: Literal["max_revenue", "target_mroi"] = Field(
        "max_revenue", description="`max_revenue`: spend the whole budget for the most revenue; `target_mroi`: "
                                   "spend on each channel while one more unit returns at least `target_mroi`, "
                                   "the budget as a cap.")
    target_mroi: float | None = Field(None, strict=True, gt=0, allow_inf_nan=False,
                                      description="Required with scenario `target_mroi`, else absent.")


class ChannelPlan(BaseModel):
    """One channel of an allocation."""

    model_config = DEFERRED

    spend: float
    revenue: float = Field(description="Revenue per period from this spend (steady state).")
    mroi: float | None = Field(description="Revenue of one more unit of spend at the recommendation.")
    binding: Literal["min", "max"] | None = Field(description="The bound the recommendation sits on, if any.")
    min: float
    max: float | None
    max_spend_seen: float | None = Field(description="Largest spend on the channel in one training period.")


class CurrentMix(BaseModel):
    """The average split of the last 12 training periods, scaled to the same total as the recommendation."""

    model_config = DEFERRED

    allocation: dict[str, float]
    media_revenue: float
    predicted_revenue: float


class Lift(BaseModel):
    """How much more the recommendation is predicted to bring than the current mix."""

    model_config = DEFERRED

    revenue: float
    relative: float | None = Field(description="Over the current mix's predicted revenue (base included).")
    media_relative: float | None = Field(description="Over the current mix's media revenue.")


class AllocateResponse(BaseModel):
    """Body of a successful `POST /allocate`; channels in the model's order."""

    model_config = DEFERRED

    model_version: str
    algorithm: str
    grain: str | None
    period: str | None
    scenario: str
    budget: float
    target_mroi: float | None
    allocation: dict[str, float] = Field(description="Recommended spend per channel for the period.")
    unspent: float = Field(description="Budget left unspent (scenario target_mroi only).")
    predicted_revenue: float = Field(description="Base revenue of the period + media revenue.")
    base_revenue: float
    media_revenue: float
    channels: dict[str, ChannelPlan]
    current_mix: CurrentMix | None
    lift: Lift | None
    out_of_range: list[str] = Field(description="Channels recommended above the largest spend seen in training.")
    warnings: list[str]


class Health(BaseModel):
    """Body of `GET /healthz` and `GET /readyz`."""

    model_config = DEFERRED

    status: str = Field(examples=["ok", "ready", "unavailable"])
    model_version: str | None = None


def _response(model: type[BaseModel], description: str) -> dict[str, Any]:
    return {"description": description,
            "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{model.__name__}"}}}}


def openapi_document(max_instances: int, max_body_bytes: int) -> dict[str, Any]:
    """Return the OpenAPI 3.1 description of every endpoint, built from the models above."""
    schemas: dict[str, Any] = {}
    for model in (PredictRequest, PredictResponse, AllocateRequest, AllocateResponse, ErrorResponse, ModelInfo,
                  Health):
        schema = model.model_json_schema(ref_template="#/components/schemas/{model}", mode="validation")
        schemas.update(schema.pop("$defs", {}))
        schemas[model.__name__] = schema
    error = _response(ErrorResponse, "error")
    return {
        "openapi": "3.1.0",
        "info": {"title": "adroi prediction API", "version": "1",
                 "description": "Predicted revenue, ROI, per-channel contributions and budget allocation from "
                                "the latest promoted marketing model (media-mix or linear)."},
        "paths": {
            "/predict": {"post": {
                "summary": "Predict revenue for one instance or a batch",
                "requestBody": {"required": True, "content": {"application/json": {
                    "schema": {"$ref": "#/components/schemas/PredictRequest"}}},
                    "description": f"At most {max_body_bytes} bytes and {max_instances} instances."},
                "responses": {"200": _response(PredictResponse, "predictions in input order"),
                              "400": error, "408": error, "413": error, "415": error, "503": error},
            }},
            "/allocate": {"post": {
                "summary": "Split a budget for one period across channels",
                "requestBody": {"required": True, "content": {"application/json": {
                    "schema": {"$ref": "#/components/schemas/AllocateRequest"}}}},
                "responses": {"200": _response(AllocateResponse, "the recommended split, its revenue and the lift "
                                                                 "over the current mix"),
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
