"""adroi prediction API: serves the latest promoted model of the registry the training pipeline writes.

Endpoints:
    POST /predict       one instance (flat channel keys or `{"spend": {...}}`) or `{"instances": [...]}`, and an
                        optional `period`; answers predictions, roi, contributions, media_contribution,
                        media_roi, warnings, period and model_version
    POST /allocate      `{"budget": ..., "period"?, "bounds"?, "scenario"?, "target_mroi"?}`: the recommended
                        split of the budget, its predicted revenue, the current mix and the lift (app/planner.py)
    GET  /healthz       the process is alive
    GET  /readyz        200 only when a verified model is loaded, else 503
    GET  /model         the served version: channels, grain, ROI block, response curves, control defaults, metrics
    GET  /openapi.json  OpenAPI description generated from the request and response models
    GET  /              the marketing team's page: the served model's report and a budget planner (app/page.py)

Run it with `gunicorn -c gunicorn.conf.py 'app:create_app()'` (the config installs the JSON logging in each
worker; `create_app` itself leaves logging alone). Imports only the light part of `training`
(store, registry, errors, events, logs): no pandas, no matplotlib, no scikit-learn.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from flask import Flask

from app.follower import ModelFollower
from app.page import register_page
from app.planner import register_planner
from app.routes import register
from app.settings import load_settings
from training.core.registry import ModelRegistry
from training.core.store import open_store


def _registry(uri: str, timeout: float) -> ModelRegistry:
    """Open the model store with short timeouts: a poll must give up quickly when the store is down."""
    if uri.startswith("gs://"):
        return ModelRegistry(open_store(uri, timeout=timeout, retry_deadline=timeout))
    return ModelRegistry(open_store(uri))


def create_app(config: Mapping[str, Any] | None = None) -> Flask:
    """Build the app: settings from the environment then `config`, load the latest model, start following."""
    settings = load_settings(overrides=config)
    app = Flask(__name__)
    app.config.update(settings.__dict__, MAX_CONTENT_LENGTH=settings.MAX_BODY_BYTES)
    follower = ModelFollower(_registry(settings.MODEL_STORE, settings.STORE_TIMEOUT_SECONDS),
                             settings.MODEL_POLL_SECONDS)
    follower.poll_once()  # once per worker, at start-up: ready on the first request when a model exists
    follower.start()
    app.extensions["adroi_follower"] = follower
    register(app, settings.LOG_REQUESTS)
    register_planner(app)
    register_page(app)
    return app
