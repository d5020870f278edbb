"""
### adroi continuous training

Retrains the marketing-ROI model on the spend and revenue files in the data bucket, once a day:

`validate_data` → `train_and_evaluate` → `quality_gate` → `publish_model` → `record_metrics`,
then `fail_run_if_a_task_failed`

- **validate_data** checks the input files; invalid data fails the run at once (no retry: the data will not
  fix itself) after writing the validation report under the run's staging folder.
- **quality_gate** compares the challenger with the thresholds and the current champion. On rejection it
  skips `publish_model` and the run still succeeds (the rejected version is archived, `LATEST` untouched).
  A run whose input data, settings and code equal those of the newest version is `unchanged`:
  `train_and_evaluate` fits nothing, `quality_gate` skips `publish_model`, and the run succeeds.
- **record_metrics** runs whatever happened before it (trigger rule `all_done`), so the metrics table holds
  one row for every run: `promoted`, `rejected`, `unchanged`, `data_invalid` or `failed`.
- **fail_run_if_a_task_failed** marks the run failed when any task failed (`record_metrics` succeeding
  would otherwise make the run look successful).

Each task calls one stage of `training.pipeline` with settings built from the run's params and the
worker's `ADROI_*` environment; stages talk through the model store under `runs/<run_id>/`, so a retried
task overwrites its own staging. The pipeline's run date is the end of the run's data interval (its
logical date when there is none), never the wall clock, so a backfill behaves as it did on that day.

Params left empty use the environment's configuration (`ADROI_DATA`, `ADROI_STORE`, `ADROI_METRICS`,
`ADROI_GATE__EVALUATION_THRESHOLD`, `ADROI_CONFIG`, ...). Parse-time settings, from the environment:
`ADROI_DAG_SCHEDULE` (cron, default `0 4 * * *` UTC), `ADROI_DAG_ALERT_EMAILS` (comma-separated recipients
of failure emails), `ADROI_DAG_RETRIES` (default 3).
"""

from __future__ import annotations

import logging
import os
import re
from datetime import UTC, datetime, timedelta
from typing import Any

import airflow

try:  # Airflow 3
    from airflow.sdk import Param, dag, task
    from airflow.sdk.exceptions import AirflowFailException
except ImportError:  # Airflow 2.10 / 2.11
    from airflow.decorators import dag, task
    from airflow.exceptions import AirflowFailException
    from airflow.models.param import Param

logger = logging.getLogger(__name__)

DAG_ID = "adroi_continuous_training"
# The DAG's own parse-time settings (load_settings leaves ADROI_DAG_* out of the pipeline settings).
SCHEDULE = os.environ.get("ADROI_DAG_SCHEDULE", "0 4 * * *")
ALERT_EMAILS = [a.strip() for a in os.environ.get("ADROI_DAG_ALERT_EMAILS", "").split(",") if a.strip()]
RETRIES = int(os.environ.get("ADROI_DAG_RETRIES", "3"))
# Airflow >= 3.1 takes a backoff multiplier (True would mean 1.0, a constant delay); older ones a bool (x2).
_AIRFLOW_MAJOR_MINOR = tuple(int(part) for part in airflow.__version__.split(".")[:2])
EXPONENTIAL_BACKOFF: float | bool = 2.0 if _AIRFLOW_MAJOR_MINOR >= (3, 1) else True

# JSON-schema patterns of the URIs training.core.store.open_store and training.metrics.open_metrics accept.
STORE_URI_PATTERN = r"^(gs://[a-z0-9][a-z0-9._-]*[a-z0-9](/.*)?|file://.+|(?![A-Za-z][A-Za-z0-9+.-]*://).+)$"
METRICS_URI_PATTERN = r"^(sqlite:///.+|bq://([a-z0-9.-]+:)?[a-z][a-z0-9-]*[a-z0-9]\.\w+\.[\w-]+)$"
# Input data: a store URI, or a BigQuery dataset (training.config.BQ_DATA_URI, training/sources/bigquery.py).
DATA_URI_PATTERN = r"^(gs://[a-z0-9][a-z0-9._-]*[a-z0-9](/.*)?|file://.+|bq://([a-z0-9.-]+:)?[a-z][a-z0-9-]*[a-z0-9]\.[A-Za-z0-9_]{1,1024}|(?![A-Za-z][A-Za-z0-9+.-]*://).+)$"

# Param name -> dotted setting of training.config.Settings. Params left empty (None) use the workers'
# configuration (ADROI_* environment, ADROI_CONFIG file), the single source of the defaults.
PARAM_SETTINGS = {
    "data_uri": "data",
    "store_uri": "store",
    "metrics_table": "metrics",
    "evaluation_threshold": "gate.evaluation_threshold",
    "allow_channel_change": "gate.allow_channel_change",
}


def _numbers(minimum: float | None = None, maximum: float | None = None, exclusive_max: float | None = None,
             exclusive_min: float | None = None) -> dict[str, Any]:
    """JSON schema of a non-empty list of numbers within bounds."""
    item: dict[str, Any] = {"type": "number"}
    for key, value in (("minimum", minimum), ("maximum", maximum), ("exclusiveMaximum", exclusive_max),
                       ("exclusiveMinimum", exclusive_min)):
        if value is not None:
            item[key] = value
    return {"type": "array", "minItems": 1, "items": item}


# model.* settings a run may override (training.config.ModelConfig), with the ranges it accepts.
MODEL_PARAM_SCHEMA: dict[str, Any] = {
    "algorithm": {"type": "string", "enum": ["mmm", "ols", "ridge"]},
    "grain": {"type": "string", "enum": ["month", "week"]},
    "positive": {"type": "boolean"},
    "ridge_alphas": _numbers(exclusive_min=0),
    "cv_splits": {"type": "integer", "minimum": 2, "maximum": 12},
    "fourier_order": {"type": "integer", "minimum": 0, "maximum": 6},
    "mmm_decays": _numbers(minimum=0, exclusive_max=1),
    "mmm_half_saturations": _numbers(exclusive_min=0),
    "mmm_shapes": _numbers(minimum=0.5, maximum=5),
    "mmm_alphas": _numbers(minimum=0),
    "mmm_cv_folds": {"type": "integer", "minimum": 2, "maximum": 12},
    "mmm_fit_rows": {"type": "string", "enum": ["auto", "day", "period"]},
    "mmm_sweeps": {"type": "integer", "minimum": 1, "maximum": 10},
    # 0: no intervals; otherwise at least 20 replicates
    "bootstrap_replicates": {"type": "integer", "anyOf": [{"const": 0}, {"minimum": 20, "maximum": 10000}]},
    "bootstrap_block_length": {"type": "integer", "minimum": 0},
    "seed": {"type": "integer", "minimum": 0},
}

PARAMS = {
    "data_uri": Param(
        None, type=["null", "string"], pattern=DATA_URI_PATTERN,
        title="Input data", description="gs://bucket/prefix (or a local folder) holding spend/*.csv and "
        "revenue/*.csv, or bq://project.dataset holding spend and revenue tables (ad platforms' tables: "
        "bigquery.sources in the config). Empty: ADROI_DATA.",
    ),
    "store_uri": Param(
        None, type=["null", "string"], pattern=STORE_URI_PATTERN,
        title="Model store", description="gs://bucket/prefix (or a local folder) of the model registry the "
        "API serves from. Empty: ADROI_STORE.",
    ),
    "metrics_table": Param(
        None, type=["null", "string"], pattern=METRICS_URI_PATTERN,
        title="Metrics table",
        description="bq://project.dataset.table or sqlite:///path. Empty: ADROI_METRICS.",
    ),
    "evaluation_threshold": Param(
        None, type=["null", "number"], minimum=0, maximum=1,
        title="Minimum holdout R²", description="The quality gate rejects a challenger below it (0 to 1). "
        "Empty: the configured gate.evaluation_threshold (0.8 by default).",
    ),
    "allow_channel_change": Param(
        None, type=["null", "boolean"],
        title="Allow a channel change", description="true: the gate may promote a challenger whose channels "
        "differ from the champion's (API clients must then send the new channel set). Set it for one run after "
        "a rejection that names the channels added and removed. Empty: gate.allow_channel_change (false).",
    ),
    "hyperparameters": Param(
        {}, type="object", additionalProperties=False,
        properties=MODEL_PARAM_SCHEMA,
        title="Model settings", description="Overrides of model.* settings (the same ranges as "
        "training.config refuses), e.g. {\"algorithm\": \"mmm\", \"grain\": \"week\", \"fourier_order\": 3, "
        "\"bootstrap_replicates\": 500} or {\"algorithm\": \"ridge\", \"positive\": true}.",
    ),
}

DEFAULT_ARGS = {
    "owner": "adroi",
    "retries": RETRIES,
    "retry_delay": timedelta(minutes=2),
    "retry_exponential_backoff": EXPONENTIAL_BACKOFF,
    "max_retry_delay": timedelta(minutes=30),
    "execution_timeout": timedelta(hours=1),
    "email": ALERT_EMAILS,
    "email_on_failure": bool(ALERT_EMAILS),
    "email_on_retry": False,
}


def pipeline_run_id(airflow_run_id: str) -> str:
    """The pipeline run id of an Airflow run id: the same, with characters unsafe in object names replaced."""
    return re.sub(r"[^A-Za-z0-9_.:+-]+", "-", airflow_run_id).strip("-.")


def _run_date(context: dict[str, Any]) -> str:
    """The run's date: end of its data interval, else its logical date, else when it was due (Airflow 3)."""
    dag_run = context["dag_run"]
    moment = (context.get("data_interval_end") or context.get("logical_date")
              or getattr(dag_run, "run_after", None))
    return moment.date().isoformat()


def _settings_overrides(params: dict[str, Any], run_date: str) -> dict[str, Any]:
    """Dotted settings for `training.config.load_settings` from the run's params (empty ones left out)."""
    overrides = {setting: params.get(name) for name, setting in PARAM_SETTINGS.items()}
    hyperparameters = params.get("hyperparameters") or {}
    overrides.update({f"model.{name}": value for name, value in hyperparameters.items()})
    overrides["run_date"] = run_date
    return overrides


def run_stage(stage: str, context: dict[str, Any]) -> dict[str, Any]:
    """Call `training.pipeline.<stage>(settings, run_id)` for this run; bad input fails it without retry."""
    from training import config, pipeline
    from training.core.errors import ConfigError, DataInvalidError

    run_id = pipeline_run_id(context["dag_run"].run_id)
    try:
        # load_settings leaves the ADROI_DAG_* parse-time variables above out of the pipeline settings.
        settings = config.load_settings(overrides=_settings_overrides(context["params"], _run_date(context)))
        result = getattr(pipeline, stage)(settings, run_id)
    except (ConfigError, DataInvalidError) as exc:
        raise AirflowFailException(f"{stage} ({run_id}): {exc}") from exc
    logger.info("%s (%s): %s", stage, run_id, result)
    return result


@dag(
    dag_id=DAG_ID,
    schedule=SCHEDULE,
    start_date=datetime(2026, 1, 1, tzinfo=UTC),
    catchup=False,
    max_active_runs=1,
    dagrun_timeout=timedelta(hours=6),
    default_args=DEFAULT_ARGS,
    params=PARAMS,
    tags=["adroi", "training", "ml"],
    doc_md=__doc__,
)
def adroi_continuous_training() -> None:
    """Validate, train, gate, publish and record one model per data interval."""

    @task
    def validate_data(**context: Any) -> dict[str, Any]:
        """Check the input files; fail the run (no retry) when a rule with action `fail` breaks."""
        return run_stage("validate_data", context)

    @task
    def train_and_evaluate(**context: Any) -> dict[str, Any]:
        """Fit the challenger on the training periods and score it on the holdout periods."""
        return run_stage("train_and_evaluate", context)

    @task.short_circuit(ignore_downstream_trigger_rules=False)
    def quality_gate(**context: Any) -> bool:
        """Decide promote, reject or unchanged; only promote runs publish_model, none fails the run."""
        return run_stage("quality_gate", context)["decision"] == "promote"

    @task
    def publish_model(**context: Any) -> dict[str, Any]:
        """Refit on all periods (with intervals), publish the version and move LATEST to it (compare-and-swap)."""
        return run_stage("publish_model", context)

    @task(trigger_rule="all_done")
    def record_metrics(**context: Any) -> dict[str, Any]:
        """Write the run's row to the metrics table, whatever happened before (trigger rule all_done)."""
        return run_stage("record_metrics", context)

    # No email of its own: the task that failed has sent one.
    @task(trigger_rule="one_failed", retries=0, email_on_failure=False)
    def fail_run_if_a_task_failed() -> None:
        """Fail the run when a task failed: record_metrics succeeding must not make the run look green."""
        raise AirflowFailException("a task of this run failed; see its log (the metrics row is written)")

    validated, trained, gate, published, recorded = (
        validate_data(), train_and_evaluate(), quality_gate(), publish_model(), record_metrics())
    validated >> trained >> gate >> published >> recorded
    # Not downstream of quality_gate, whose short-circuit must skip publish_model only.
    [validated, trained, published, recorded] >> fail_run_if_a_task_failed()


adroi_continuous_training()
