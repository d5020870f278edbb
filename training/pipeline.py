"""The training pipeline as stages: validate → train and evaluate → gate → publish → record.

Each stage takes `(settings, run_id)`, returns a small JSON-able dict, and passes its results to the next
stage through the model store under `runs/<run_id>/` (never in memory), so the CLI (`run`) and the Airflow
DAG (one task per stage) behave the same, a retried stage overwrites its own files, and `record_metrics`
can describe a run whatever point it reached:

    runs/<run_id>/run.json             when and how the run started (settings, code version)
    runs/<run_id>/validation.json      validation report, summary and input description
    runs/<run_id>/training_data.json   the periods every later stage uses (grain, daily spend, revenue and
                                       controls per period: `PeriodData`)
    runs/<run_id>/performance.json     the champion scored on the periods after its training window
    runs/<run_id>/candidate.joblib     the challenger fitted on the training periods (its plain model spec)
    runs/<run_id>/evaluation.json      its holdout/train/CV scores, predictions and manifest blocks, or
                                       `unchanged` (nothing fitted)
    runs/<run_id>/gate.json            the gate's decision and the LATEST generation it saw
    runs/<run_id>/publish.json         the published version and whether LATEST moved
    runs/<run_id>/error.json           the stage that failed and why (unexpected failures only)
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import platform
import re
import subprocess
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from typing import Any

import numpy as np
import pandas as pd

from training import evaluate, gate, ingest, model, monitor, plots, validate
from training.config import REPO_ROOT, GateConfig, ModelConfig, Settings
from training.core import artifact, events
from training.core.errors import (
    AdroiError,
    ConfigError,
    DataInvalidError,
    ModelIntegrityError,
    ObjectNotFound,
    PreconditionFailed,
    StorageError,
)
from training.core.registry import LATEST_KEY, MODELS_PREFIX, ModelRegistry, Pointer, version_name
from training.core.store import Store, open_store
from training.metrics import RunRecord, open_metrics
from training.periods import PeriodData
from training.sources import open_reader

log = logging.getLogger(__name__)

RUNS_PREFIX = "runs"
RUN_FILE = "run.json"
VALIDATION_FILE = "validation.json"
TRAINING_DATA_FILE = "training_data.json"
CANDIDATE_FILE = "candidate.joblib"
PERFORMANCE_FILE = "performance.json"
EVALUATION_FILE = "evaluation.json"
GATE_FILE = "gate.json"
PUBLISH_FILE = "publish.json"
ERROR_FILE = "error.json"
# What each stage writes, in stage order; a stage that (re)starts removes what later stages wrote.
STAGE_FILES = {
    "validate_data": (RUN_FILE, VALIDATION_FILE, TRAINING_DATA_FILE),
    "train_and_evaluate": (PERFORMANCE_FILE, CANDIDATE_FILE, EVALUATION_FILE),
    "quality_gate": (GATE_FILE,),
    "publish_model": (PUBLISH_FILE,),
}
MAX_PROMOTE_ATTEMPTS = 3
EXIT_CODES = {"promoted": 0, "unchanged": 0, "failed": 1, "data_invalid": 2, "rejected": 3}
LIBRARIES = ("scikit-learn", "numpy", "pandas", "joblib")
_RUN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:+-]{0,199}")


@dataclass
class RunResult:
    """What one pipeline run did, for the CLI summary and `--json`."""

    status: str  # promoted | rejected | unchanged | data_invalid | failed
    run_id: str
    version: str | None
    reason: str
    metrics: dict[str, Any] = field(default_factory=dict)
    validation: dict[str, Any] = field(default_factory=dict)
    exit_code: int = 1
    intercept: float | None = None
    coefficients: dict[str, float] = field(default_factory=dict)
    holdout_months: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    files: dict[str, str] = field(default_factory=dict)
    algorithm: str | None = None
    grain: str | None = None
    roi: dict[str, Any] = field(default_factory=dict)  # the manifest's roi block (ROI, mROI, intervals)

    def to_dict(self) -> dict[str, Any]:
        """Return the result as plain JSON-able data."""
        return asdict(self)


# ---- staging --------------------------------------------------------------------------------------

def new_run_id() -> str:
    """Return a fresh run id that sorts by time (`manual__20261122T040000Z-1a2b3c`)."""
    return f"manual__{datetime.now(UTC):%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:6]}"


def check_run_id(run_id: str) -> str:
    """Return `run_id` if it is safe as a folder name, else raise ConfigError."""
    if not isinstance(run_id, str) or not _RUN_ID.fullmatch(run_id) or ".." in run_id:
        raise ConfigError("run_id", run_id, "1-200 letters, digits or _ . : + - (no '/', no '..')")
    return run_id


def staging_key(run_id: str, name: str) -> str:
    """Return the store key of a staged file of `run_id`."""
    return f"{RUNS_PREFIX}/{run_id}/{name}"


def _dumps(doc: Any) -> bytes:
    return (json.dumps(doc, indent=2, sort_keys=True, default=str, allow_nan=False) + "\n").encode()


def _write_json(store: Store, run_id: str, name: str, doc: dict[str, Any]) -> str:
    key = staging_key(run_id, name)
    store.write(key, _dumps(doc), content_type="application/json")
    return store.uri_for(key)


def _read_json(store: Store, run_id: str, name: str) -> dict[str, Any] | None:
    try:
        return json.loads(store.read(staging_key(run_id, name)))
    except ObjectNotFound:
        return None


def _require_json(store: Store, run_id: str, name: str, stage: str) -> dict[str, Any]:
    doc = _read_json(store, run_id, name)
    if doc is None:
        raise StorageError(f"{store.uri_for(staging_key(run_id, name))} is missing: run {stage} for run "
                           f"{run_id} first")
    return doc


def _clear_later_stages(store: Store, run_id: str, stage: str) -> None:
    names = list(STAGE_FILES)
    for later in names[names.index(stage) + 1:]:
        for name in STAGE_FILES[later]:
            store.delete(staging_key(run_id, name))
    store.delete(staging_key(run_id, ERROR_FILE))


def _stage(func: Callable[[Settings, str, Store], dict[str, Any]]) -> Callable[[Settings, str], dict[str, Any]]:
    """Make a stage idempotent per run_id and leave `error.json` + a `training_failed` log when it breaks."""

    @functools.wraps(func)
    def stage(settings: Settings, run_id: str) -> dict[str, Any]:
        check_run_id(run_id)
        store = open_store(settings.store)
        try:
            _clear_later_stages(store, run_id, func.__name__)
            return func(settings, run_id, store)
        except DataInvalidError:
            raise
        except Exception as exc:
            message = f"{type(exc).__name__}: {exc}"
            with contextlib.suppress(Exception):  # the store itself may be what failed
                _write_json(store, run_id, ERROR_FILE, {"stage": func.__name__, "error": message,
                                                        "at": datetime.now(UTC).isoformat()})
            log.error("%s failed for run %s: %s", func.__name__, run_id, message, exc_info=True,
                      extra={"event": events.TRAINING_FAILED, "run_id": run_id, "stage": func.__name__})
            raise

    return stage


def period_data_doc(data: PeriodData) -> dict[str, Any]:
    """Return `training_data.json`: the PeriodData as plain JSON (floats round-trip exactly)."""
    return {
        "grain": data.grain, "periods": list(data.periods), "channels": data.channels,
        "first_day": data.daily_spend.index[0].date().isoformat() if len(data.daily_spend) else None,
        "daily_spend": data.daily_spend.to_numpy(dtype=float).tolist(),
        "revenue": np.asarray(data.revenue, dtype=float).tolist(),
        "controls": {"names": [str(c) for c in data.controls.columns],
                     "values": data.controls.to_numpy(dtype=float).tolist()},
        # the spend per period (what ols and ridge are fitted on), for people and tools reading the file
        "period_spend": data.period_spend().to_numpy(dtype=float).tolist(),
        # daily revenue only: revenue and the controls' daily terms per day of the periods (a fit on days)
        "daily": None if data.daily_revenue is None else {
            "revenue": data.daily_revenue.tolist(), "controls": data.daily_controls.to_numpy(dtype=float).tolist(),
            "controls_daily": data.controls_daily},
    }


def period_data_from_doc(doc: dict[str, Any]) -> PeriodData:
    """Rebuild the PeriodData staged by `period_data_doc`."""
    days = pd.date_range(doc["first_day"], periods=len(doc["daily_spend"]), freq="D", name="date")
    spend = pd.DataFrame(doc["daily_spend"], index=days, columns=doc["channels"], dtype=float)
    names = doc["controls"]["names"]
    controls = pd.DataFrame(doc["controls"]["values"] if names else None, columns=names, dtype=float,
                            index=pd.Index(doc["periods"], name="period"))
    data = PeriodData(doc["grain"], list(doc["periods"]), spend, np.asarray(doc["revenue"], dtype=float), controls)
    daily = doc.get("daily")
    if not daily:
        return data
    daily_controls = pd.DataFrame(daily["controls"] if names else None, columns=names, dtype=float,
                                  index=data.window_days)
    return PeriodData(data.grain, data.periods, spend, data.revenue, controls, np.asarray(daily["revenue"], float),
                      daily_controls, bool(daily["controls_daily"]))


def _load_training_data(store: Store, run_id: str) -> PeriodData:
    return period_data_from_doc(_require_json(store, run_id, TRAINING_DATA_FILE, "validate_data"))


# ---- provenance -----------------------------------------------------------------------------------

def code_version(settings: Settings) -> str:
    """Return the code's git commit: setting, `ADROI_CODE_VERSION`/`SHORT_SHA`, `git rev-parse`, or unknown."""
    for value in (settings.code_version, os.environ.get("ADROI_CODE_VERSION"), os.environ.get("SHORT_SHA")):
        if value:
            return value
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        done = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True,
                              timeout=5, check=True)
        return done.stdout.strip() or "unknown"
    return "unknown"


def libraries() -> dict[str, str]:
    """Return the Python and library versions a model was trained with."""
    return {"python": platform.python_version(), **{name: metadata.version(name) for name in LIBRARIES}}


# ---- monitoring -----------------------------------------------------------------------------------

def _champion_manifest(registry: ModelRegistry) -> tuple[str | None, dict[str, Any] | None, str]:
    """Return (version, manifest, problem) of the version LATEST points at (manifest only, no model load)."""
    try:
        pointer = registry.latest()
        if pointer is None:
            return None, None, "no champion yet"
        return pointer.version, registry.manifest(pointer.version), ""
    except ModelIntegrityError as exc:
        return None, None, f"the champion cannot be read ({exc.reason})"


def _drift(store: Store, data: PeriodData) -> monitor.Drift:
    """Compare the periods after the champion's training window with that window (spend, revenue, controls)."""
    version, manifest, problem = _champion_manifest(ModelRegistry(store))
    if manifest is None:
        return monitor.Drift(version, note=problem)
    if manifest.get("grain", "month") != data.grain:
        return monitor.Drift(version, note=f"the champion was fitted on {manifest.get('grain', 'month')}s, this run "
                                           f"reads {data.grain}s")
    months = [str(m) for m in (manifest.get("training") or {}).get("months") or []]
    revenue = pd.Series(np.asarray(data.revenue, dtype=float), index=list(data.periods))
    return monitor.drift(version, months, data.period_spend(), revenue, data.controls,
                         [str(c) for c in manifest.get("channels") or []])


def _realised_performance(settings: Settings, store: Store, run_id: str,
                          data: PeriodData) -> monitor.RealisedPerformance:
    """Score the champion (verified load) on the periods it never saw; log `model_performance` / `model_degraded`."""
    registry = ModelRegistry(store)
    try:
        pointer = registry.latest()
        if pointer is None:
            return monitor.RealisedPerformance(None, note="no champion yet")
        manifest, spec = registry.load(pointer.version, pointer.sha256)
        found = monitor.realised_performance(pointer.version, manifest, spec, data, settings.monitoring)
    except ModelIntegrityError as exc:
        return monitor.RealisedPerformance(exc.version, note=f"it cannot be loaded ({exc.reason})")
    except ValueError as exc:  # an algorithm this code cannot predict with
        return monitor.RealisedPerformance(pointer.version, note=f"it cannot be scored ({exc})")
    if found.periods:
        fields = {"run_id": run_id, "model_version": found.version, "realised_periods": len(found.periods),
                  "realised_rmse": found.rmse, "realised_mape": found.mape, "realised_bias": found.bias,
                  "rmse_limit": found.band.limit if found.band else None}
        log.info("run %s: %s", run_id, found.summary(), extra={"event": events.MODEL_PERFORMANCE, **fields})
        if found.degraded:
            log.warning("run %s: served model degraded: %s", run_id, found.summary(),
                        extra={"event": events.MODEL_DEGRADED, **fields})
    return found


# ---- stages ---------------------------------------------------------------------------------------

@_stage
def validate_data(settings: Settings, run_id: str, store: Store) -> dict[str, Any]:
    """Ingest and validate the input; stage the report and the periods (PeriodData). Raises DataInvalidError."""
    validate.check_actions(settings.validation)  # a typo in a rule name fails before a long ingest
    run_date = settings.effective_run_date()
    log.info("training run %s started: data %s, run date %s", run_id, settings.data, run_date,
             extra={"event": events.TRAINING_STARTED, "run_id": run_id})
    now = datetime.now(UTC)
    # A table source reads as of the first attempt's start, so a retried stage reads the same rows.
    data_as_of = (_read_json(store, run_id, RUN_FILE) or {}).get("data_as_of") or now.isoformat()
    _write_json(store, run_id, RUN_FILE, {"run_id": run_id, "started_at": now.isoformat(), "data_as_of": data_as_of,
                                          "run_date": run_date.isoformat(), "code_version": code_version(settings),
                                          "settings": settings.to_dict(),
                                          "settings_fingerprint": settings.settings_fingerprint()})
    reader = open_reader(settings, as_of=datetime.fromisoformat(data_as_of))
    raw = reader.read(ingest.ReadOptions.from_settings(settings))
    channels = len(raw.channels) if raw.channels else len(raw.monthly_spend.columns)
    controls = int(raw.controls["control"].nunique()) if len(raw.controls) else 0
    parameters = model.parameter_count(settings.model, channels, controls)  # for the identifiability rule
    report = validate.validate(raw, settings.validation, run_date, settings.model.grain, parameters)
    data = ingest.training_data(raw) if report.passed else None  # the monthly view: what the input holds
    periods = ingest.period_data(raw, settings.model.grain, data.channels) if data is not None else None
    drift = None
    if periods is not None:  # drift needs the periods; it is a rule like the others (warn by default)
        drift = _drift(store, periods)
        validate.add_drift_rule(report, drift, settings.validation)
    doc: dict[str, Any] = {
        "run_id": run_id, "data_uri": settings.data, "passed": report.passed, "summary": report.summary(),
        "warnings": [r.message for r in report.results if r.status == "warn"],
        "errors": [r.message for r in report.results if r.status == "fail"], "report": report.to_dict(),
    }
    if drift is not None:
        doc["drift"] = drift.to_dict()
    cost = getattr(reader, "cost", None)  # a table source: bytes scanned and returned per query, and the price
    if cost:
        doc["source"] = cost
        doc["summary"]["source"] = {k: cost[k] for k in ("bytes_estimated", "bytes_processed", "rows_returned",
                                                         "bytes_returned", "on_demand_usd", "time_travel")}
    if report.passed and data is not None and periods is not None:
        _write_json(store, run_id, TRAINING_DATA_FILE, period_data_doc(periods))
        doc["data"] = {"fingerprint": data.fingerprint, "objects": data.objects, "spend_rows": data.spend_rows,
                       "revenue_rows": data.revenue_rows, "months_without_revenue": data.months_without_revenue,
                       "grain": periods.grain, "periods": len(periods.periods),
                       "controls": [str(c) for c in periods.controls.columns]}
    else:
        store.delete(staging_key(run_id, TRAINING_DATA_FILE))  # never train on an earlier attempt's table
    report_uri = _write_json(store, run_id, VALIDATION_FILE, doc)
    if not report.passed:
        log.warning("run %s: input data failed validation (%s); report at %s", run_id,
                    ", ".join(doc["summary"].get("failed", [])), report_uri,
                    extra={"event": events.DATA_INVALID, "run_id": run_id})
        raise DataInvalidError(report)
    return {"run_id": run_id, "passed": True, "report_uri": report_uri, "summary": doc["summary"]}


def _repeats_newest_version(registry: ModelRegistry, run_id: str, started: dict[str, Any],
                            validation: dict[str, Any], gate_settings: GateConfig) -> dict[str, Any] | None:
    """Return the newest version if this run would only repeat it, else None.

    A run repeats the newest version (promoted or rejected) when its input fingerprint, model settings
    (`settings_fingerprint`) and code version are that version's; for a rejected version the gate settings
    must be equal too (a looser gate, or allowing a channel change, may decide otherwise). A version this
    same run wrote (a retried stage) never counts, nor one whose manifest cannot be read.
    """
    versions = registry.versions()
    if not versions:
        return None
    newest = versions[-1]
    try:
        manifest = registry.manifest(newest)
    except ModelIntegrityError:
        return None
    fingerprint = validation.get("data", {}).get("fingerprint")
    if (manifest.get("run_id") == run_id or not fingerprint or not started.get("settings_fingerprint")
            or manifest.get("data", {}).get("fingerprint") != fingerprint
            or manifest.get("settings_fingerprint") != started.get("settings_fingerprint")
            or manifest.get("code_version") != started.get("code_version")):
        return None
    status = manifest.get("status")
    if status != "promoted":
        gated = manifest.get("gate") or {}
        if any(gated.get(name) != value for name, value in asdict(gate_settings).items()):
            return None
    reason = (f"unchanged: input data (fingerprint {fingerprint[:12]}), settings (fingerprint "
              f"{str(started.get('settings_fingerprint'))[:12]}) and code version {started.get('code_version')} "
              f"equal those of the newest version {newest} ({status}); nothing trained or published, LATEST "
              "untouched")
    return {"version": newest, "status": status, "reason": reason}


@_stage
def train_and_evaluate(settings: Settings, run_id: str, store: Store) -> dict[str, Any]:
    """Fit the challenger on the older periods, score it on the newest, stage model, scores and blocks.

    A run that would repeat the newest version (same input, settings and code) fits nothing: it stages
    `unchanged` instead, and the gate passes that on.
    """
    repeated = _repeats_newest_version(ModelRegistry(store), run_id,
                                       _require_json(store, run_id, RUN_FILE, "validate_data"),
                                       _require_json(store, run_id, VALIDATION_FILE, "validate_data"), settings.gate)
    if repeated:
        _write_json(store, run_id, EVALUATION_FILE, {"unchanged": repeated})
        log.info("run %s: %s", run_id, repeated["reason"], extra={"run_id": run_id})
        return {"run_id": run_id, "unchanged": repeated["version"]}
    data = _load_training_data(store, run_id)
    performance = _realised_performance(settings, store, run_id, data)  # before fitting
    _write_json(store, run_id, PERFORMANCE_FILE, performance.to_dict())
    fitted, result = evaluate.evaluate(data, settings.model, settings.evaluation)
    candidate_key = staging_key(run_id, CANDIDATE_FILE)
    store.write(candidate_key, artifact.dump_spec(fitted.spec))
    predictions = result.predictions.rename_axis("month").reset_index()
    _write_json(store, run_id, EVALUATION_FILE, {
        "model": result.summary.to_dict(), "metrics": result.metrics(), "split": asdict(result.split),
        "predictions": predictions.to_dict(orient="records"), "grain": data.grain,
        "blocks": fitted.blocks(), "intervals": fitted.intervals, "n_parameters": fitted.n_parameters,
        "fit_seconds": round(fitted.fit_seconds, 3),
    })
    log.info("run %s: holdout R² %s, RMSE %s on %s..%s", run_id, gate.fmt(result.holdout["r2"]),
             gate.fmt(result.holdout["rmse"]), result.split.holdout_months[0], result.split.holdout_months[-1],
             extra={"run_id": run_id})
    return {"run_id": run_id, "candidate_uri": store.uri_for(candidate_key), "metrics": {"holdout": result.holdout}}


@dataclass
class _Challenger:
    """The staged candidate and everything the gate and the manifest need about it."""

    spec: dict[str, Any]  # the candidate's plain model spec
    model_bytes: bytes
    evaluation: dict[str, Any]
    validation: dict[str, Any]
    data: PeriodData
    started: dict[str, Any]  # run.json
    performance: dict[str, Any]  # performance.json: the champion's realised performance

    @classmethod
    def load(cls, store: Store, run_id: str) -> _Challenger:
        model_bytes = store.read(staging_key(run_id, CANDIDATE_FILE))
        return cls(model.from_bytes(model_bytes), model_bytes,
                   _require_json(store, run_id, EVALUATION_FILE, "train_and_evaluate"),
                   _require_json(store, run_id, VALIDATION_FILE, "validate_data"),
                   _load_training_data(store, run_id), _require_json(store, run_id, RUN_FILE, "validate_data"),
                   _read_json(store, run_id, PERFORMANCE_FILE) or {})

    @property
    def created_at(self) -> datetime:
        """Return the run's start time: version names stamped with it are the same when a stage is retried."""
        return datetime.fromisoformat(self.started["started_at"])

    def judge(self, registry: ModelRegistry, champion: Pointer | None, config: GateConfig,
              model_config: ModelConfig) -> gate.GateDecision:
        """Run the gate against `champion` (LATEST, or None): on unseen holdout months, else by backtest."""
        comparison = None
        if champion is not None:
            split = self.evaluation["split"]
            try:
                manifest, champion_model = registry.load(champion.version, champion.sha256)
                comparison = gate.compare_with_champion(
                    champion.version, champion_model, manifest.get("training", {}).get("months", []),
                    self.spec, self.data, split["holdout_months"],
                    champion_grain=manifest.get("grain", "month"), champion_channels=manifest.get("channels"))
                if len(comparison.months) < config.min_compare_periods and manifest.get("grain", "month") == \
                        self.data.grain:
                    comparison = gate.backtest_with_champion(
                        champion.version, manifest, self.spec, self.data, split["train_months"],
                        split["holdout_months"], model_config)
            except ModelIntegrityError as exc:  # a broken champion must not block its replacement
                comparison = gate.ChampionComparison(champion.version, [], note=f"it cannot be loaded ({exc.reason})")
        return gate.decide(self.evaluation["metrics"]["holdout"], config, comparison)

    def with_intervals(self, settings: Settings) -> dict[str, Any]:
        """The candidate's manifest blocks, intervals and parameter count, intervals computed: `manifest`'s `fitted`.

        Evaluation fits the candidate without intervals (a promoted run publishes the refit on all periods, with
        its own); a rejected one is archived with them, so the candidate is fitted again on its training periods
        with them. The fit is deterministic: the model must be the staged one, byte for byte. Raises ConfigError
        when the settings changed since the run started (no retry can mend that), RuntimeError otherwise.
        """
        train = self.data.subset(self.evaluation["split"]["train_months"])
        fitted = model.fit_periods(train, settings.model, intervals=True)
        if artifact.dump_spec(fitted.spec) != self.model_bytes:
            now, then = settings.settings_fingerprint(), str(self.started.get("settings_fingerprint"))
            if now != then:
                raise ConfigError("settings", f"fingerprint {now[:12]}",
                                  f"the settings run {self.started.get('run_id', '?')} started with (fingerprint "
                                  f"{then[:12]}): the gate fits a rejected candidate again for its intervals")
            raise RuntimeError("the candidate fitted again with intervals differs from the staged one with the "
                               "same settings: expected the same model, byte for byte (a non-deterministic fit)")
        return {"blocks": fitted.blocks(), "intervals": fitted.intervals, "n_parameters": fitted.n_parameters}

    def manifest(self, run_id: str, status: str, summary: dict[str, Any], gate_block: dict[str, Any],
                 refit: bool, fitted: dict[str, Any]) -> dict[str, Any]:
        """Return the manifest of a version built from this run (the refit model when `refit`).

        `fitted` holds the model's blocks, intervals and parameter count (`with_intervals`, or the refit's).
        """
        split = self.evaluation["split"]
        return {
            "status": status, "created_at": self.created_at.isoformat(timespec="seconds"), "run_id": run_id,
            "channels": list(summary["coefficients"]), "intercept": summary["intercept"],
            "coefficients": summary["coefficients"], "algorithm": summary["algorithm"],
            "positive": summary["positive"], "hyperparameters": summary["hyperparameters"],
            "metrics": self.evaluation["metrics"],
            "gate": {k: gate_block.get(k) for k in ("decision", "reason", "evaluation_threshold", "rmse_tolerance",
                                                    "champion", "compared_on_months", "comparison",
                                                    "allow_channel_change", "channel_change",
                                                    "min_compare_periods")},
            "training": {"months": list(self.data.periods) if refit else split["train_months"],
                         "holdout_months": split["holdout_months"], "refit_on_all_months": refit},
            "grain": self.data.grain,
            **fitted["blocks"],
            "intervals": fitted["intervals"], "n_parameters": fitted["n_parameters"],
            "data": self.validation.get("data", {}),
            "realised_performance": self.performance or None,
            "drift": self.validation.get("drift"),
            "libraries": libraries(), "code_version": self.started.get("code_version", "unknown"),
            "settings_fingerprint": self.started.get("settings_fingerprint"),
        }

    def extra_files(self, version: str, blocks: dict[str, Any]) -> dict[str, bytes]:
        """Return the validation report and charts stored beside the model (titles name `version`)."""
        predictions = pd.DataFrame(self.evaluation["predictions"]).set_index("month")
        charts = plots.render_all(predictions, blocks, version, self.evaluation["metrics"]["holdout"].get("r2"))
        files = {VALIDATION_FILE: _dumps(self.validation["report"]), **charts}
        if self.performance.get("periods"):
            files[plots.REALISED_FILE] = plots.realised_performance(monitor.RealisedPerformance.from_dict(self.performance))
        return files


def _publish_version(registry: ModelRegistry, model_bytes: bytes, manifest: dict[str, Any],
                     challenger: _Challenger) -> str:
    """Publish a complete version named after the run's start and the model's hash; return its name."""
    version = version_name(challenger.created_at, model_bytes)
    blocks = {key: manifest[key] for key in ("roi", "response_curves", "decomposition")}
    registry.publish(version, model_bytes, manifest, challenger.extra_files(version, blocks))
    return version


@_stage
def quality_gate(settings: Settings, run_id: str, store: Store) -> dict[str, Any]:
    """Compare the challenger with the threshold and the champion; archive it as rejected if it loses."""
    repeated = _require_json(store, run_id, EVALUATION_FILE, "train_and_evaluate").get("unchanged")
    if repeated:  # nothing was fitted: nothing to judge or archive
        _write_json(store, run_id, GATE_FILE, {"decision": "unchanged", "reason": repeated["reason"],
                                               "version": None, "same_as": repeated["version"]})
        return {"run_id": run_id, "decision": "unchanged", "reason": repeated["reason"]}
    challenger = _Challenger.load(store, run_id)
    registry = ModelRegistry(store)
    champion = registry.latest()
    decision = challenger.judge(registry, champion, settings.gate, settings.model)
    doc = {**decision.to_dict(), "latest_generation": champion.generation if champion else None, "version": None}
    if not decision.promote:
        summary = challenger.evaluation["model"]
        fitted = challenger.with_intervals(settings)
        doc["roi"] = fitted["blocks"]["roi"]  # the run's summary shows the archived model's intervals
        manifest = challenger.manifest(run_id, "rejected", summary, doc, refit=False, fitted=fitted)
        doc["version"] = _publish_version(registry, challenger.model_bytes, manifest, challenger)
        log.warning("run %s: model %s rejected: %s", run_id, doc["version"], decision.reason,
                    extra={"event": events.MODEL_REJECTED, "run_id": run_id, "model_version": doc["version"],
                           "reason": decision.reason})
    _write_json(store, run_id, GATE_FILE, doc)
    return {"run_id": run_id, "decision": decision.decision, "reason": decision.reason}


@_stage
def publish_model(settings: Settings, run_id: str, store: Store) -> dict[str, Any]:
    """Refit on all periods (with intervals), publish the version, and compare-and-swap LATEST (re-gating if it
    moved)."""
    registry = ModelRegistry(store)
    done = _read_json(store, run_id, PUBLISH_FILE)
    if done and done.get("promoted") and registry.has_version(done["version"]):
        return {"run_id": run_id, "version": done["version"], "promoted": True}  # a retry after success
    gate_doc = _require_json(store, run_id, GATE_FILE, "quality_gate")
    if gate_doc["decision"] != "promoted":
        _write_json(store, run_id, PUBLISH_FILE, {"version": gate_doc["version"], "promoted": False,
                                                  "reason": gate_doc["reason"]})
        return {"run_id": run_id, "version": gate_doc["version"], "promoted": False}

    challenger = _Challenger.load(store, run_id)
    refit = model.fit_periods(challenger.data, settings.model, intervals=True)
    summary = refit.summary
    log.info("run %s: refitted %s on %d %ss in %.2fs (intervals: %s)", run_id, summary.algorithm,
             len(challenger.data.periods), challenger.data.grain, refit.fit_seconds,
             refit.intervals.get("method") or "none", extra={"run_id": run_id})
    model_bytes = artifact.dump_spec(refit.spec)
    manifest = challenger.manifest(run_id, "promoted", summary.to_dict(), gate_doc, refit=True,
                                   fitted={"blocks": refit.blocks(), "intervals": refit.intervals,
                                           "n_parameters": refit.n_parameters})
    version = _publish_version(registry, model_bytes, manifest, challenger)

    expected, reason = gate_doc["latest_generation"], gate_doc["reason"]
    for attempt in range(1, MAX_PROMOTE_ATTEMPTS + 1):
        try:
            pointer = registry.promote(version, expected_generation=expected, reason=f"run {run_id}: {reason}",
                                       run_id=run_id)
            break
        except PreconditionFailed:
            champion = registry.latest()
            decision = challenger.judge(registry, champion, settings.gate, settings.model)
            log.info("run %s: LATEST moved to %s while promoting (attempt %d); gate again: %s", run_id,
                     champion.version if champion else None, attempt, decision.reason, extra={"run_id": run_id})
            if not decision.promote:
                reason = f"a concurrent run promoted {champion.version if champion else 'nothing'} first; " \
                         f"{decision.reason}"
                log.warning("run %s: model %s not promoted: %s", run_id, version, reason,
                            extra={"event": events.MODEL_REJECTED, "run_id": run_id, "model_version": version,
                                   "reason": reason})
                _write_json(store, run_id, PUBLISH_FILE, {"version": version, "promoted": False, "reason": reason,
                                                          "model": summary.to_dict(), "gate": decision.to_dict(),
                                                          "roi": refit.roi})
                return {"run_id": run_id, "version": version, "promoted": False}
            expected, reason = (champion.generation if champion else None), decision.reason
    else:
        raise PreconditionFailed(registry.store.uri_for(LATEST_KEY), expected)
    _write_json(store, run_id, PUBLISH_FILE, {
        "version": version, "promoted": True, "reason": reason, "attempts": attempt, "model": summary.to_dict(),
        "months": list(challenger.data.periods), "pointer_generation": pointer.generation, "grain": challenger.data.grain,
        "roi": refit.roi,
        "previous": pointer.previous,
    })
    return {"run_id": run_id, "version": version, "promoted": True}


# ---- outcome --------------------------------------------------------------------------------------

def _read_run(store: Store, run_id: str) -> dict[str, dict[str, Any]]:
    """Return the staged files of a run by name; a store that cannot be read raises (never "nothing staged")."""
    names = (RUN_FILE, VALIDATION_FILE, PERFORMANCE_FILE, EVALUATION_FILE, GATE_FILE, PUBLISH_FILE, ERROR_FILE)
    docs: dict[str, dict[str, Any]] = {}
    for name in names:
        with contextlib.suppress(ValueError):  # not JSON: described as if it were missing
            doc = _read_json(store, run_id, name)
            if doc is not None:
                docs[name] = doc
    return docs


def _outcome(docs: dict[str, dict[str, Any]]) -> tuple[str, str | None, str]:
    """Return (status, version, reason) from the staged files of a run."""
    error, published, gated = docs.get(ERROR_FILE), docs.get(PUBLISH_FILE), docs.get(GATE_FILE)
    validation = docs.get(VALIDATION_FILE)
    if error:
        return "failed", None, f"{error['stage']} failed: {error['error']}"
    if gated and gated["decision"] == "unchanged":
        return "unchanged", None, gated["reason"]
    if published:
        return ("promoted" if published["promoted"] else "rejected"), published["version"], published["reason"]
    if gated and gated["decision"] == "rejected":
        return "rejected", gated["version"], gated["reason"]
    if validation and not validation["passed"]:
        errors = validation.get("errors") or validation["summary"].get("failed", [])
        return "data_invalid", None, "input data failed validation: " + "; ".join(errors)
    stage = next((s for s, files in STAGE_FILES.items() if not any(f in docs for f in files)), "record_metrics")
    return "failed", None, f"the run stopped before {stage} finished"


def _model_block(docs: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Return the summary of the model the run published (refit) or evaluated (candidate)."""
    return docs.get(PUBLISH_FILE, {}).get("model") or docs.get(EVALUATION_FILE, {}).get("model") or {}


def _run_record(run_id: str, docs: dict[str, dict[str, Any]], status: str, version: str | None,
                reason: str) -> RunRecord:
    started = docs.get(RUN_FILE, {})
    validation, evaluation = docs.get(VALIDATION_FILE, {}), docs.get(EVALUATION_FILE, {})
    gated, published = docs.get(GATE_FILE, {}), docs.get(PUBLISH_FILE, {})
    metrics = evaluation.get("metrics", {})
    holdout, train = metrics.get("holdout", {}), metrics.get("train", {})
    fitted = _model_block(docs)
    months = published.get("months") or evaluation.get("split", {}).get("train_months") or []
    champion = (published.get("gate") or gated).get("champion") or {}
    realised = docs.get(PERFORMANCE_FILE, {})
    band = realised.get("band") or {}
    now = datetime.now(UTC)
    return RunRecord(
        run_id=run_id,
        started_at=datetime.fromisoformat(started["started_at"]) if "started_at" in started else now,
        status=status, finished_at=now, model_version=version,
        algorithm=fitted.get("algorithm"), hyperparameters=fitted.get("hyperparameters"),
        holdout_r2=holdout.get("r2"), holdout_rmse=holdout.get("rmse"), holdout_mae=holdout.get("mae"),
        holdout_mape=holdout.get("mape"), train_r2=train.get("r2"), train_rmse=train.get("rmse"),
        train_mae=train.get("mae"), train_mape=train.get("mape"), cv_scores=metrics.get("cv"),
        champion_version=champion.get("version"), champion_rmse=champion.get("rmse"),
        gate_reason=(published or gated).get("reason"),
        channels=list(fitted["coefficients"]) if fitted else None, coefficients=fitted.get("coefficients"),
        intercept=fitted.get("intercept"), months_used=len(months) or None,
        first_month=months[0] if months else None, last_month=months[-1] if months else None,
        rows_used=validation.get("data", {}).get("spend_rows") or validation.get("summary", {}).get("rows"),
        validation_summary=validation.get("summary"), data_fingerprint=validation.get("data", {}).get("fingerprint"),
        code_version=started.get("code_version"),
        realised_version=realised.get("version"), realised_periods=len(realised.get("periods") or []) if realised.get("version") else None,
        realised_rmse=realised.get("rmse"), realised_mape=realised.get("mape"), realised_bias=realised.get("bias"),
        realised_rmse_limit=band.get("limit"), model_degraded=realised.get("degraded") if realised.get("periods") else None,
        gate_comparison=(published.get("gate") or gated).get("comparison"), drift=validation.get("drift"),
        error=reason if status in ("failed", "data_invalid") else None,
    )


def _record(settings: Settings, run_id: str, docs: dict[str, dict[str, Any]]) -> str:
    """Write the run's row built from its staged files; return its status."""
    status, version, reason = _outcome(docs)
    open_metrics(settings.metrics).record(_run_record(run_id, docs, status, version, reason))
    level = logging.ERROR if status == "failed" else logging.INFO
    log.log(level, "run %s finished: %s%s (%s)", run_id, status, f" {version}" if version else "", reason,
            extra={"event": events.TRAINING_FINISHED, "run_id": run_id, "status": status, "model_version": version})
    return status


def record_metrics(settings: Settings, run_id: str) -> dict[str, Any]:
    """Write the run's row to the metrics table from whatever `runs/<run_id>/` holds (also after a failure)."""
    check_run_id(run_id)
    docs = _read_run(open_store(settings.store), run_id)
    return {"run_id": run_id, "status": _record(settings, run_id, docs)}


def _result(settings: Settings, store: Store, run_id: str, docs: dict[str, dict[str, Any]]) -> RunResult:
    status, version, reason = _outcome(docs)
    validation = docs.get(VALIDATION_FILE, {})
    fitted = _model_block(docs)
    files = {"model": store.uri_for(f"{MODELS_PREFIX}/{version}")} if version else {}
    if VALIDATION_FILE in docs:
        files["report"] = store.uri_for(staging_key(run_id, VALIDATION_FILE))
    files |= {"staging": store.uri_for(f"{RUNS_PREFIX}/{run_id}"), "metrics": settings.metrics}
    return RunResult(
        status=status, run_id=run_id, version=version, reason=reason,
        metrics=docs.get(EVALUATION_FILE, {}).get("metrics", {}), validation=validation.get("summary", {}),
        exit_code=EXIT_CODES[status], intercept=fitted.get("intercept"),
        coefficients=fitted.get("coefficients", {}),
        holdout_months=docs.get(EVALUATION_FILE, {}).get("split", {}).get("holdout_months", []),
        warnings=validation.get("warnings", []), files=files, algorithm=fitted.get("algorithm"),
        grain=docs.get(EVALUATION_FILE, {}).get("grain"),
        roi=docs.get(PUBLISH_FILE, {}).get("roi") or docs.get(GATE_FILE, {}).get("roi")
        or docs.get(EVALUATION_FILE, {}).get("blocks", {}).get("roi", {}),
    )


def run(settings: Settings, run_id: str | None = None) -> RunResult:
    """Run every stage in order, record the run in the metrics table, and return what happened."""
    run_id = check_run_id(run_id or new_run_id())
    validate.check_actions(settings.validation)  # a usage error (exit 2), before any run starts
    failure: Exception | None = None
    try:
        validate_data(settings, run_id)
        train_and_evaluate(settings, run_id)
        if quality_gate(settings, run_id)["decision"] == "promote":
            publish_model(settings, run_id)
    except DataInvalidError:
        pass  # staged in validation.json; reported as data_invalid
    except Exception as exc:  # staged in error.json and logged by the stage; reported as failed
        failure = exc
    metrics_error = None
    try:
        store = open_store(settings.store)
        docs = _read_run(store, run_id)  # read once: for the metrics row and for the result
    except AdroiError as exc:  # the store itself failed: nothing to describe the run with
        metrics_error = f"the run was not recorded in {settings.metrics}"
        docs, result = {}, RunResult("failed", run_id, None, str(exc))
    else:
        result = _result(settings, store, run_id, docs)
        try:
            _record(settings, run_id, docs)
        except (AdroiError, OSError) as exc:
            metrics_error = f"could not record the run in {settings.metrics}: {exc}"
    if metrics_error:
        log.error(metrics_error, extra={"event": events.TRAINING_FAILED, "run_id": run_id})
    if result.status == "failed" and failure is not None and ERROR_FILE not in docs:
        result.reason = f"{type(failure).__name__}: {failure}"  # the stage could not stage its error.json
    if metrics_error:
        result.reason, result.exit_code = f"{result.reason}; {metrics_error}", EXIT_CODES["failed"]
    return result
