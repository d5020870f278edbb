"""Pipeline settings: defaults, then a config file (TOML or YAML), then `ADROI_*` environment, then CLI.

Every setting has a dotted name (`gate.evaluation_threshold`). It can be set
- in a config file: `[gate]\\nevaluation_threshold = 0.7` (TOML) or the same nesting in YAML;
- in the environment: `ADROI_GATE__EVALUATION_THRESHOLD=0.7` (double underscore between levels); the
  common top-level ones are `ADROI_DATA`, `ADROI_STORE`, `ADROI_METRICS`, `ADROI_RUN_DATE`, `ADROI_CHANNELS`;
- on the command line, which wins over everything.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any, get_type_hints

from training.core.errors import ConfigError

REPO_ROOT = Path(__file__).resolve().parent.parent
SAMPLE_DATA = REPO_ROOT / "data" / "sample"
# The bundled sample ends in 2026-10; runs on it use this date so the freshness rule never ages it out.
SAMPLE_RUN_DATE = date(2026, 11, 15)

ENV_PREFIX = "ADROI_"
# `--data bq://project.dataset`: tables `spend`, `revenue`, `controls` there (training/sources/bigquery.py). A
# project id may be domain-scoped ("example.com:project"); dataset ids are letters, digits and underscores.
BQ_DATA_URI = re.compile(r"bq://(?P<project>(?:[a-z0-9.-]+:)?[a-z][a-z0-9-]*[a-z0-9])\.(?P<dataset>[A-Za-z0-9_]{1,1024})")
ACCEPTED_DATA_URIS = "a local folder, gs://bucket[/prefix] or bq://project.dataset"
GRAINS = ("month", "week")  # as training.periods.GRAINS (not imported: it loads pandas)
# The settings that shape the fitted model: a run whose input data and these settings equal those of the newest
# version would fit the same model again (see `Settings.settings_fingerprint`). Add new model-shaping settings here.
MODEL_SETTINGS = ("channels", "channel_aliases", "controls", "bigquery", "model", "evaluation")


@dataclass
class ValidationConfig:
    """Thresholds and actions of the data validation rules."""

    min_months: int = 12
    min_months_per_parameter: int = 3  # at least this × (channels + 1) months
    duplicate_fail_rate: float = 0.01  # above: fail; (0, rate]: warn
    max_revenue_age_months: int = 3  # newest revenue month must be at most this old at the run date
    extreme_z: float = 5.0  # robust z-score above which a month's channel spend is flagged
    max_examples: int = 5
    # Bounds of dates (spend DATE, revenue DATE or YEAR/MONTH, controls) and of one row's cost, revenue or
    # |control|: outside them a value fails `out_of_range_values` by file and line.
    earliest_date: date = date(1970, 1, 1)
    latest_date: date = date(2099, 12, 31)
    max_value: float = 1e15
    # identifiability: warn when a channel's ROI cannot be told apart from the base or from another channel
    min_spend_cv: float = 0.05  # a channel's period spend varies less (std / mean): it looks like the intercept
    max_spend_correlation: float = 0.95  # two channels' period spend move together above this |correlation|
    min_active_periods: int = 6  # a channel with spend in fewer periods than this
    periods_per_parameter: float = 5.0  # the model's parameter count exceeds periods / this
    # drift: new periods (after the champion's training window) vs that window, per channel, revenue, control
    drift_max_outside_share: float = 0.5  # warn above this share of new periods outside the trained range
    drift_max_shift: float = 3.0  # warn when the new periods' mean moved more training std deviations
    # rule name -> "fail" | "warn" | "off", overriding each rule's default action
    actions: dict[str, str] = field(default_factory=dict)


@dataclass
class ModelConfig:
    """Which model to fit, and its settings."""

    # "mmm" (media-mix: adstock, saturation, base; see training/mmm.py), "ols" (LinearRegression on spend per
    # period) or "ridge" (alpha by time-series CV)
    algorithm: str = "mmm"
    positive: bool = False  # constrain marginal ROI to be >= 0
    ridge_alphas: list[float] = field(default_factory=lambda: [0.01, 0.1, 1.0, 10.0, 100.0, 1000.0])
    cv_splits: int = 3
    grain: str = "month"  # periods the model is fitted on: "month" or "week" (ISO weeks, Monday start)
    # Media-mix model ("mmm"): per-channel grids searched by rolling-origin CV, then a block bootstrap.
    fourier_order: int = 2  # yearly seasonality: sin/cos pairs
    mmm_decays: list[float] = field(default_factory=lambda: [0.0, 0.3, 0.5, 0.7, 0.8, 0.9, 0.95])  # daily adstock
    # half-saturation as a multiple of the channel's mean daily spend
    mmm_half_saturations: list[float] = field(default_factory=lambda: [0.3, 0.6, 1.2, 2.5, 5.0])
    mmm_shapes: list[float] = field(default_factory=lambda: [1.0, 2.0])  # Hill exponent
    mmm_alphas: list[float] = field(default_factory=lambda: [0.0, 0.01, 0.1])  # ridge penalty per channel
    mmm_cv_folds: int = 4
    mmm_sweeps: int = 2  # coordinate-descent passes over the channels
    # what the transforms are fitted on: "day" (daily revenue: every day, AR(1) noise whitened), "period", or
    # "auto": days when revenue and every control are daily, periods otherwise (training/mmm.py)
    mmm_fit_rows: str = "auto"
    bootstrap_replicates: int = 200  # 0: no intervals (every algorithm: moving-block bootstrap over periods)
    bootstrap_block_length: int = 0  # periods per block; 0: about n^(1/3)
    seed: int = 0


@dataclass
class ControlsConfig:
    """How control variables (`controls/*.csv`) are aggregated into periods."""

    aggregate: dict[str, str] = field(default_factory=dict)  # control -> "mean" (default) | "sum"


@dataclass
class BigQueryConfig:
    """How a `bq://project.dataset` data source is read; `sources` declares ad platforms' tables beyond ours."""

    # Cap on the bytes one query may scan: a dry run's estimate above it fails the run before the query runs,
    # and BigQuery enforces it too (QueryJobConfig.maximum_bytes_billed). Default 100 GiB.
    max_bytes_billed: int = 100 * 2**30
    time_travel: bool = True  # read every table FOR SYSTEM_TIME AS OF the run's start (tables, not views)
    timeout: float = 600.0  # seconds per API call and per query
    location: str | None = None  # the datasets' location, when the client cannot infer it
    billing_project: str | None = None  # the project that runs (and pays for) the queries; None: the data's
    currency: str | None = None  # the one currency ad accounts must report in; None: whichever they agree on
    # One table per entry: {kind = "google_ads" | "meta_ads", dataset, customer_id, table, channel | rules, ...}
    sources: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class EvaluationConfig:
    """Chronological holdout."""

    holdout_fraction: float = 0.2
    min_holdout_months: int = 3


@dataclass
class GateConfig:
    """Champion/challenger promotion rule."""

    evaluation_threshold: float = 0.8  # minimum holdout R²
    rmse_tolerance: float = 0.05  # challenger RMSE may be at most this much worse than the champion's
    allow_channel_change: bool = False  # promote a challenger whose channel set differs from the champion's
    min_compare_periods: int = 3  # fewer unseen periods to score the champion on: compare by backtest


@dataclass
class MonitoringConfig:
    """When the served model's realised error counts as degraded (`model_degraded`)."""

    degraded_rmse_factor: float = 1.5  # realised RMSE > factor × its CV RMSE ...
    degraded_rmse_sigmas: float = 2.0  # ... and > CV RMSE + sigmas × the CV folds' standard deviation
    min_realised_periods: int = 2  # never judged on fewer unseen periods


@dataclass
class Settings:
    """Everything one pipeline run needs."""

    data: str = str(SAMPLE_DATA)
    store: str = ".local/store"
    metrics: str = "sqlite:///.local/metrics.db"
    run_date: date | None = None
    channels: list[str] | None = None
    # a CHANNEL value as exported (lower-cased) -> the channel it is ("paid social" -> "social_media")
    channel_aliases: dict[str, str] = field(default_factory=dict)
    log_format: str | None = None  # "text" | "json" | "cloud"; None: cloud on Composer, json on GCP, else text
    code_version: str | None = None
    validation: ValidationConfig = field(default_factory=ValidationConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    controls: ControlsConfig = field(default_factory=ControlsConfig)
    bigquery: BigQueryConfig = field(default_factory=BigQueryConfig)
    evaluation: EvaluationConfig = field(default_factory=EvaluationConfig)
    gate: GateConfig = field(default_factory=GateConfig)
    monitoring: MonitoringConfig = field(default_factory=MonitoringConfig)

    def effective_run_date(self) -> date:
        """Return the run date: the one set, the pinned date of the bundled sample, or today."""
        if self.run_date is not None:
            return self.run_date
        if Path(self.data).expanduser().resolve() == SAMPLE_DATA:
            return SAMPLE_RUN_DATE
        return date.today()

    def to_dict(self) -> dict[str, Any]:
        """Return the settings as plain data (for logs and the manifest)."""
        return dataclasses.asdict(self)

    def settings_fingerprint(self) -> str:
        """Return the sha256 hex of the settings that shape the model (`MODEL_SETTINGS`), as canonical JSON."""
        shaping = {name: getattr(self, name) for name in MODEL_SETTINGS}
        doc = {name: dataclasses.asdict(v) if dataclasses.is_dataclass(v) else v for name, v in shaping.items()}
        return hashlib.sha256(json.dumps(doc, sort_keys=True, default=str).encode()).hexdigest()


def _coerce(name: str, value: Any, hint: Any) -> Any:
    """Convert a file/env/CLI value to the declared type, or raise ConfigError naming the setting."""
    text = str(hint)
    try:
        if value is None:
            return None
        if "date" in text:  # a TOML date arrives as a date already
            return value if isinstance(value, date) else date.fromisoformat(str(value))
        if text.startswith("list[str]"):
            return [s.strip().lower() for s in (value.split(",") if isinstance(value, str) else value) if str(s).strip()] or None
        if text.startswith("list[dict"):  # a TOML array of tables, or JSON text from the environment
            items = json.loads(value) if isinstance(value, str) else value
            if not isinstance(items, list) or not all(isinstance(i, Mapping) for i in items):
                raise ValueError
            return [dict(i) for i in items]
        if text.startswith("list[float]"):
            return [float(v) for v in (value.split(",") if isinstance(value, str) else value)]
        if text.startswith("dict"):
            if isinstance(value, str):
                value = dict(item.split("=", 1) for item in value.split(",") if item)
            return {str(k): str(v) for k, v in dict(value).items()}
        if hint is bool or text == "bool":
            if isinstance(value, str):
                if value.lower() not in {"1", "0", "true", "false", "yes", "no"}:
                    raise ValueError
                return value.lower() in {"1", "true", "yes"}
            return bool(value)
        if hint is int or text == "int":
            return int(value)
        if hint is float or text == "float":
            return float(value)
        return str(value)
    except (ValueError, TypeError) as exc:  # json.JSONDecodeError is a ValueError
        raise ConfigError(name, value, f"a value of type {text}") from exc


def _apply(obj: Any, values: Mapping[str, Any], prefix: str = "") -> None:
    hints = get_type_hints(type(obj))
    names = {f.name for f in dataclasses.fields(obj)}
    for key, value in values.items():
        name = key.replace("-", "_").lower()
        dotted = prefix + name
        if name not in names:
            raise ConfigError(dotted, value, "one of " + ", ".join(sorted(prefix + n for n in names)))
        current = getattr(obj, name)
        if dataclasses.is_dataclass(current):
            if not isinstance(value, Mapping):
                raise ConfigError(dotted, value, "a table of settings")
            _apply(current, value, dotted + ".")
        else:
            setattr(obj, name, _coerce(dotted, value, hints[name]))


def _nest(flat: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for dotted, value in flat.items():
        node = out
        *parents, leaf = dotted.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return out


def read_config_file(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a TOML (`.toml`) or YAML (`.yaml`/`.yml`) settings file."""
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as exc:
        raise ConfigError("config", str(path), "a readable TOML or YAML file") from exc
    try:
        if p.suffix in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text) or {}
        else:
            data = tomllib.loads(text)
    except Exception as exc:  # both parsers raise their own error types
        raise ConfigError("config", str(path), f"valid {p.suffix or 'TOML'} ({exc})") from exc
    if not isinstance(data, dict):
        raise ConfigError("config", str(path), "a mapping of settings at the top level")
    return data


# `ADROI_*` variables that are not pipeline settings: the config file path and the DAG's own parse-time
# settings (`ADROI_DAG_SCHEDULE`, `..._RETRIES`, `..._ALERT_EMAILS`). Any other `ADROI_*` name must be a
# setting, so a typo fails instead of being ignored.
NOT_SETTINGS = ("CONFIG", "DAG_")


def env_overrides(environ: Mapping[str, str]) -> dict[str, Any]:
    """Return the dotted settings named by `ADROI_*` variables (`ADROI_GATE__RMSE_TOLERANCE`)."""
    flat = {}
    for key, value in environ.items():
        name = key[len(ENV_PREFIX):]
        if key.startswith(ENV_PREFIX) and not name.startswith(NOT_SETTINGS):
            flat[name.lower().replace("__", ".")] = value
    return _nest(flat)


def load_settings(
    config_file: str | os.PathLike[str] | None = None,
    overrides: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
) -> Settings:
    """Build Settings: defaults < config file < environment < `overrides` (dotted keys, None ignored)."""
    environ = os.environ if environ is None else environ
    settings = Settings()
    config_file = config_file or environ.get(ENV_PREFIX + "CONFIG")
    if config_file:
        _apply(settings, read_config_file(config_file))
    _apply(settings, env_overrides(environ))
    if overrides:
        _apply(settings, _nest({k: v for k, v in overrides.items() if v is not None}))
    _check(settings)
    return settings


ALGORITHMS = ("ols", "ridge", "mmm")
FIT_ROWS = ("auto", "day", "period")


def check_mmm_config(m: ModelConfig) -> None:
    """Raise ConfigError naming the `model.*` setting when a media-mix setting is out of range."""
    if not 0 <= m.fourier_order <= 6:
        raise ConfigError("model.fourier_order", m.fourier_order, "an integer from 0 to 6")
    grids = {"mmm_decays": (m.mmm_decays, lambda v: 0.0 <= v < 1.0, "numbers in [0, 1)"),
             "mmm_half_saturations": (m.mmm_half_saturations, lambda v: v > 0, "numbers > 0"),
             "mmm_shapes": (m.mmm_shapes, lambda v: 0.5 <= v <= 5.0, "numbers from 0.5 to 5"),
             "mmm_alphas": (m.mmm_alphas, lambda v: v >= 0, "numbers >= 0")}
    for name, (values, ok, expected) in grids.items():
        if not values or not all(ok(float(v)) for v in values):
            raise ConfigError(f"model.{name}", values, f"a non-empty list of {expected}")
    if m.mmm_cv_folds < 2:
        raise ConfigError("model.mmm_cv_folds", m.mmm_cv_folds, "an integer >= 2")
    if m.mmm_sweeps < 1:
        raise ConfigError("model.mmm_sweeps", m.mmm_sweeps, "an integer >= 1")
    if m.mmm_fit_rows not in FIT_ROWS:
        raise ConfigError("model.mmm_fit_rows", m.mmm_fit_rows, "'auto', 'day' or 'period'")
    if m.bootstrap_replicates != 0 and m.bootstrap_replicates < 20:
        raise ConfigError("model.bootstrap_replicates", m.bootstrap_replicates, "0 (no intervals) or an integer >= 20")
    if m.bootstrap_block_length < 0:
        raise ConfigError("model.bootstrap_block_length", m.bootstrap_block_length, "0 (automatic) or an integer >= 1")
    if m.seed < 0:
        raise ConfigError("model.seed", m.seed, "an integer >= 0")


def _check(s: Settings) -> None:
    """Refuse every URI and setting that cannot work, before a run reads or writes anything."""
    from training.core.store import check_store_uri
    from training.metrics import check_metrics_uri  # imported here: training.metrics imports this module

    if not str(s.data).startswith("bq://"):  # a BigQuery dataset is checked with the other input settings
        check_store_uri(s.data, "data")
    check_store_uri(s.store, "store")
    check_metrics_uri(s.metrics)
    if s.channels is not None and len(set(s.channels)) != len(s.channels):
        raise ConfigError("channels", s.channels, "distinct channel names")
    v = s.validation
    for name, value, low in (("min_months", v.min_months, 1), ("min_months_per_parameter", v.min_months_per_parameter, 1),
                             ("max_revenue_age_months", v.max_revenue_age_months, 0),
                             ("max_examples", v.max_examples, 0)):
        if value < low:
            raise ConfigError(f"validation.{name}", value, f"an integer >= {low}")
    if not 0.0 <= v.duplicate_fail_rate <= 1.0:
        raise ConfigError("validation.duplicate_fail_rate", v.duplicate_fail_rate, "a number from 0 to 1")
    if not v.extreme_z > 0:
        raise ConfigError("validation.extreme_z", v.extreme_z, "a number > 0")
    if not s.model.ridge_alphas or any(not a > 0 for a in s.model.ridge_alphas):
        raise ConfigError("model.ridge_alphas", s.model.ridge_alphas, "one or more numbers > 0")
    if s.model.cv_splits < 2:
        raise ConfigError("model.cv_splits", s.model.cv_splits, "an integer >= 2")
    if s.evaluation.min_holdout_months < 1:
        raise ConfigError("evaluation.min_holdout_months", s.evaluation.min_holdout_months, "an integer >= 1")
    if not 0.0 <= s.gate.evaluation_threshold <= 1.0:
        raise ConfigError("gate.evaluation_threshold", s.gate.evaluation_threshold, "a number from 0 to 1")
    if s.gate.rmse_tolerance < 0:
        raise ConfigError("gate.rmse_tolerance", s.gate.rmse_tolerance, "a number >= 0")
    if s.model.algorithm not in ALGORITHMS:
        raise ConfigError("model.algorithm", s.model.algorithm, "'ols', 'ridge' or 'mmm'")
    check_mmm_config(s.model)
    if not 0.0 < s.evaluation.holdout_fraction < 1.0:
        raise ConfigError("evaluation.holdout_fraction", s.evaluation.holdout_fraction, "a number between 0 and 1")
    if s.log_format not in (None, "text", "json", "cloud"):
        raise ConfigError("log_format", s.log_format, "'text', 'json' or 'cloud'")
    if s.model.grain not in GRAINS:
        raise ConfigError("model.grain", s.model.grain, "'month' or 'week'")
    _check_input(s)
    if s.validation.min_spend_cv < 0:
        raise ConfigError("validation.min_spend_cv", s.validation.min_spend_cv, "a number >= 0")
    if not 0.0 < s.validation.max_spend_correlation <= 1.0:
        raise ConfigError("validation.max_spend_correlation", s.validation.max_spend_correlation,
                          "a number above 0, at most 1")
    if s.validation.periods_per_parameter <= 0:
        raise ConfigError("validation.periods_per_parameter", s.validation.periods_per_parameter, "a number > 0")
    if not 0.0 <= v.drift_max_outside_share <= 1.0:
        raise ConfigError("validation.drift_max_outside_share", v.drift_max_outside_share, "a number from 0 to 1")
    if not v.drift_max_shift > 0:
        raise ConfigError("validation.drift_max_shift", v.drift_max_shift, "a number > 0")
    if s.gate.min_compare_periods < 1:
        raise ConfigError("gate.min_compare_periods", s.gate.min_compare_periods, "an integer >= 1")
    m = s.monitoring
    if not m.degraded_rmse_factor >= 1.0:
        raise ConfigError("monitoring.degraded_rmse_factor", m.degraded_rmse_factor, "a number >= 1")
    if not m.degraded_rmse_sigmas >= 0.0:
        raise ConfigError("monitoring.degraded_rmse_sigmas", m.degraded_rmse_sigmas, "a number >= 0")
    if m.min_realised_periods < 1:
        raise ConfigError("monitoring.min_realised_periods", m.min_realised_periods, "an integer >= 1")
    for rule, action in s.validation.actions.items():
        if action not in ("fail", "warn", "off"):
            raise ConfigError(f"validation.actions.{rule}", action, "'fail', 'warn' or 'off'")


def _check_input(s: Settings) -> None:
    """Check the settings of how input is read: bounds, aliases, control aggregation."""
    v = s.validation
    if v.earliest_date >= v.latest_date:
        raise ConfigError("validation.latest_date", v.latest_date.isoformat(),
                          f"a date after validation.earliest_date ({v.earliest_date.isoformat()})")
    if not 0 < v.max_value <= 1e200:
        raise ConfigError("validation.max_value", v.max_value, "a number above 0 and at most 1e200 (so sums "
                          "of any number of rows stay finite)")
    channels = {c.lower() for c in s.channels} if s.channels else None
    for alias, channel in s.channel_aliases.items():
        target = channel.strip().lower()
        if not alias.strip() or not target:
            raise ConfigError(f"channel_aliases.{alias}", channel, "a non-empty name on both sides")
        if channels is not None and target not in channels:
            raise ConfigError(f"channel_aliases.{alias}", channel, "a channel of the `channels` list: "
                              + ", ".join(sorted(channels)))
    for control, how in s.controls.aggregate.items():
        if how not in ("mean", "sum"):
            raise ConfigError(f"controls.aggregate.{control}", how, "'mean' or 'sum'")
    _check_data_source(s)


def _check_data_source(s: Settings) -> None:
    """Check the data URI's scheme and, for BigQuery, its cap and declared ad-platform tables."""
    data = str(s.data)
    if data.startswith("bq://"):
        if not BQ_DATA_URI.fullmatch(data):
            raise ConfigError("data", data, "bq://project.dataset (letters, digits and underscores in the dataset)")
    elif "://" in data and not data.startswith(("gs://", "file://")):
        raise ConfigError("data", data, ACCEPTED_DATA_URIS)
    b = s.bigquery
    if b.max_bytes_billed <= 0:
        raise ConfigError("bigquery.max_bytes_billed", b.max_bytes_billed, "a number of bytes above 0")
    if b.timeout <= 0:
        raise ConfigError("bigquery.timeout", b.timeout, "a number of seconds above 0")
    if b.billing_project is not None and not re.fullmatch(r"(?:[a-z0-9.-]+:)?[a-z][a-z0-9-]*[a-z0-9]",
                                                          b.billing_project):
        raise ConfigError("bigquery.billing_project", b.billing_project, "a project id")
    if b.sources:
        if not data.startswith("bq://"):
            raise ConfigError("bigquery.sources", f"{len(b.sources)} table(s)", "--data bq://project.dataset "
                              "(ad platforms' tables are read with the BigQuery data source)")
        from training.sources.bigquery import parse_sources  # loads pandas: only when sources are declared

        parse_sources(b.sources, data, s.channels)
