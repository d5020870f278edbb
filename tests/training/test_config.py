"""Settings precedence: defaults < config file < ADROI_* environment < overrides (the CLI)."""

from __future__ import annotations

from datetime import date

import pytest

from training.config import SAMPLE_DATA, SAMPLE_RUN_DATE, Settings, load_settings
from training.core.errors import ConfigError


def test_defaults_run_on_the_bundled_sample_into_local_folder():
    settings = load_settings(environ={})

    assert settings.data == str(SAMPLE_DATA)
    assert settings.store == ".local/store"
    assert settings.metrics == "sqlite:///.local/metrics.db"
    assert settings.gate.evaluation_threshold == 0.8
    assert settings.effective_run_date() == SAMPLE_RUN_DATE


def test_precedence_file_then_env_then_overrides(tmp_path):
    cfg = tmp_path / "adroi.toml"
    cfg.write_text('store = "from-file"\nmetrics = "sqlite:///file.db"\n[gate]\nevaluation_threshold = 0.5\n'
                   'rmse_tolerance = 0.2\n')
    env = {"ADROI_METRICS": "sqlite:///env.db", "ADROI_GATE__EVALUATION_THRESHOLD": "0.6"}

    settings = load_settings(cfg, overrides={"gate.evaluation_threshold": 0.7, "store": None}, environ=env)

    assert settings.store == "from-file"
    assert settings.metrics == "sqlite:///env.db"
    assert settings.gate.evaluation_threshold == 0.7
    assert settings.gate.rmse_tolerance == 0.2


def test_yaml_config_file_and_config_from_environment(tmp_path):
    cfg = tmp_path / "adroi.yaml"
    cfg.write_text("channels: [Search_Engine, video]\nmodel:\n  algorithm: ridge\n  positive: true\n")

    settings = load_settings(environ={"ADROI_CONFIG": str(cfg)})

    assert settings.channels == ["search_engine", "video"]
    assert (settings.model.algorithm, settings.model.positive) == ("ridge", True)


def test_environment_values_are_coerced_to_declared_types():
    env = {"ADROI_RUN_DATE": "2025-03-01", "ADROI_CHANNELS": "email, video", "ADROI_MODEL__POSITIVE": "yes",
           "ADROI_VALIDATION__ACTIONS": "extreme_values=fail,revenue_gaps=off",
           "ADROI_GATE__ALLOW_CHANNEL_CHANGE": "true"}

    settings = load_settings(environ=env)

    assert settings.run_date == date(2025, 3, 1)
    assert settings.effective_run_date() == date(2025, 3, 1)
    assert settings.channels == ["email", "video"]
    assert settings.model.positive is True
    assert settings.validation.actions == {"extreme_values": "fail", "revenue_gaps": "off"}
    assert settings.gate.allow_channel_change is True


@pytest.mark.parametrize("overrides, field, expected", [
    ({"gate.evaluation_threshold": 1.5}, "gate.evaluation_threshold", "from 0 to 1"),
    ({"gate.evaluation_threshold": "high"}, "gate.evaluation_threshold", "float"),
    ({"model.algorithm": "xgboost"}, "model.algorithm", "'ols', 'ridge' or 'mmm'"),
    ({"run_date": "yesterday"}, "run_date", "date"),
    ({"bogus": 1}, "bogus", "one of"),
    ({"validation.actions": {"nulls": "ignore"}}, "validation.actions.nulls", "'fail', 'warn' or 'off'"),
    ({"log_format": "xml"}, "log_format", "'text', 'json' or 'cloud'"),
    ({"metrics": "mysql://x"}, "metrics", "'sqlite:///path/to/metrics.db' or 'bq://project.dataset.table'"),
    ({"metrics": "bq://project"}, "metrics", "bq://project.dataset.table"),
    ({"store": "s3://bucket/models"}, "store", "a local folder or gs://bucket[/prefix]"),
    ({"data": "gs://"}, "data", "gs://bucket[/prefix] with a valid bucket name"),
    ({"model.ridge_alphas": "0,1"}, "model.ridge_alphas", "numbers > 0"),
    ({"model.cv_splits": 1}, "model.cv_splits", ">= 2"),
    ({"validation.min_months": 0}, "validation.min_months", ">= 1"),
    ({"validation.duplicate_fail_rate": 2}, "validation.duplicate_fail_rate", "from 0 to 1"),
    ({"channels": "email,EMAIL"}, "channels", "distinct"),
    ({"model.grain": "day"}, "model.grain", "'month' or 'week'"),
    ({"validation.earliest_date": "2100-01-01"}, "validation.latest_date", "after validation.earliest_date"),
    ({"validation.max_value": "1e300"}, "validation.max_value", "at most 1e200"),
    ({"channels": "email", "channel_aliases": {"mail": "newsletter"}}, "channel_aliases.mail",
     "a channel of the `channels` list"),
    ({"controls.aggregate": {"promo": "max"}}, "controls.aggregate.promo", "'mean' or 'sum'"),
    ({"gate.min_compare_periods": 0}, "gate.min_compare_periods", ">= 1"),
    ({"validation.drift_max_outside_share": 1.5}, "validation.drift_max_outside_share", "from 0 to 1"),
    ({"validation.drift_max_shift": 0}, "validation.drift_max_shift", "> 0"),
    ({"monitoring.degraded_rmse_factor": 0.5}, "monitoring.degraded_rmse_factor", ">= 1"),
    ({"monitoring.degraded_rmse_sigmas": -1}, "monitoring.degraded_rmse_sigmas", ">= 0"),
    ({"monitoring.min_realised_periods": 0}, "monitoring.min_realised_periods", ">= 1"),
    ({"validation.max_spend_correlation": 1.5}, "validation.max_spend_correlation", "at most 1"),
    ({"validation.periods_per_parameter": 0}, "validation.periods_per_parameter", "> 0"),
])
def test_bad_values_name_the_setting_value_and_expectation(overrides, field, expected):
    with pytest.raises(ConfigError) as exc:
        load_settings(overrides=overrides, environ={})

    assert exc.value.field == field
    assert field in str(exc.value) and expected in str(exc.value)


def test_unreadable_config_file_is_a_config_error(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("this is = = not toml")

    with pytest.raises(ConfigError, match="valid .toml"):
        load_settings(bad, environ={})


def test_run_date_is_today_for_other_data(monkeypatch):
    assert Settings(data="gs://bucket/data").effective_run_date() == date.today()


def test_deployment_variables_are_not_mistaken_for_settings_but_typos_fail():
    env = {"ADROI_DAG_ALERT_EMAILS": "a@example.com", "ADROI_DAG_SCHEDULE": "@daily", "ADROI_STORE": "s"}

    assert load_settings(environ=env).store == "s"
    with pytest.raises(ConfigError, match="stor"):
        load_settings(environ={"ADROI_STOR": "s"})


def test_input_settings_from_file_and_environment(tmp_path):
    from training.ingest import ReadOptions

    path = tmp_path / "adroi.toml"
    path.write_text('[channel_aliases]\n"Paid Social" = "social_media"\n[controls.aggregate]\npromo = "sum"\n'
                    '[validation]\nearliest_date = 2015-01-01\n')
    settings = load_settings(path, environ={"ADROI_MODEL__GRAIN": "week", "ADROI_VALIDATION__MAX_VALUE": "1e9"})

    options = ReadOptions.from_settings(settings)

    assert settings.model.grain == "week"
    assert options.channel_aliases == {"paid social": "social_media"}
    assert options.channel_name(" PAID social ") == "social_media"
    assert (options.earliest_date, options.latest_date, options.max_value) == (date(2015, 1, 1),
                                                                             date(2099, 12, 31), 1e9)
    assert options.controls_aggregate == {"promo": "sum"}


def test_monitoring_and_comparison_settings_from_the_environment():
    settings = load_settings(environ={"ADROI_GATE__MIN_COMPARE_PERIODS": "5",
                                      "ADROI_MONITORING__DEGRADED_RMSE_FACTOR": "2",
                                      "ADROI_VALIDATION__DRIFT_MAX_SHIFT": "4.5"})
    assert settings.gate.min_compare_periods == 5 and settings.monitoring.degraded_rmse_factor == 2.0
    assert settings.validation.drift_max_shift == 4.5
    assert (settings.monitoring.degraded_rmse_sigmas, settings.monitoring.min_realised_periods) == (2.0, 2)
