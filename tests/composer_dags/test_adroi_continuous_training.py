"""The Composer DAG in real Airflow 2.11 and 3.x, each in its own virtualenv (.venv-airflow2, .venv-airflow3).

The Airflow virtualenvs are driven through `airflow_runner.py` subprocesses with a temporary AIRFLOW_HOME (SQLite
metadata database made by `airflow db migrate`). The end-to-end runs use `dag.test()` against the session's
fake-gcs-server and bqemulator (started from this virtualenv; the Airflow ones only hold the clients).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ALERT_EMAILS, Airflow, Scenario, open_registry

REPO_ROOT = Path(__file__).resolve().parents[2]
DAG_ID = "adroi_continuous_training"
STAGES = ["validate_data", "train_and_evaluate", "quality_gate", "publish_model", "record_metrics"]
WATCHER = "fail_run_if_a_task_failed"


def test_dagbag_loads_the_dag_without_import_errors_in_under_two_seconds(parsed):
    print(f"\n{parsed['airflow_version']}: DagBag parsed composer_dags/ in {parsed['parse_seconds']:.3f} s")
    assert parsed["import_errors"] == {}
    assert parsed["dag_ids"] == [DAG_ID]
    assert parsed["parse_seconds"] < 2.0


def test_dag_runs_daily_from_a_static_start_one_run_at_a_time(parsed):
    dag = parsed["dag"]
    assert dag["schedule"] == "0 4 * * *"
    assert dag["start_date"] == "2026-01-01T00:00:00+00:00"
    assert dag["catchup"] is False
    assert dag["max_active_runs"] == 1
    assert {"adroi", "training"} <= set(dag["tags"])
    assert all(task_id in dag["doc_md"] for task_id in [*STAGES, WATCHER])


def test_stages_run_in_order_and_a_watcher_fails_the_run_on_any_failure(parsed):
    upstream = {task_id: task["upstream"] for task_id, task in parsed["tasks"].items()}
    assert upstream == {
        "validate_data": [],
        "train_and_evaluate": ["validate_data"],
        "quality_gate": ["train_and_evaluate"],
        "publish_model": ["quality_gate"],
        "record_metrics": ["publish_model"],
        WATCHER: ["publish_model", "record_metrics", "train_and_evaluate", "validate_data"],
    }


def test_trigger_rules_let_the_gate_skip_publishing_and_metrics_run_after_failures(parsed):
    tasks = parsed["tasks"]
    assert {t: tasks[t]["trigger_rule"] for t in tasks} == {
        "validate_data": "all_success", "train_and_evaluate": "all_success", "quality_gate": "all_success",
        "publish_model": "all_success", "record_metrics": "all_done", WATCHER: "one_failed",
    }
    assert tasks["quality_gate"]["operator"] == "_ShortCircuitDecoratedOperator"
    assert tasks["quality_gate"]["ignore_downstream_trigger_rules"] is False


@pytest.mark.parametrize("task_id", STAGES)
def test_stages_retry_with_exponential_backoff_and_email_on_failure(parsed, task_id):
    task = parsed["tasks"][task_id]
    assert task["retries"] == 3
    first, second, third = task["retry_delays"]  # as computed by this Airflow's own TaskInstance
    assert 120 <= first < second < third <= task["max_retry_delay"] == 1800
    assert second >= 240 and third >= 480, task["retry_delays"]  # base delay x 2^(try - 1), plus jitter
    assert task["email"] == ALERT_EMAILS
    assert task["email_on_failure"] is True
    assert task["email_on_retry"] is False


def test_watcher_neither_retries_nor_sends_a_second_email(parsed):
    watcher = parsed["tasks"][WATCHER]
    assert watcher["retries"] == 0
    assert watcher["email_on_failure"] is False


def test_params_are_json_schema_validated_and_default_to_the_environment(parsed):
    params = parsed["dag"]["params"]
    assert set(params) == {"data_uri", "store_uri", "metrics_table", "evaluation_threshold", "allow_channel_change",
                           "hyperparameters"}
    assert params["allow_channel_change"]["type"] == ["null", "boolean"]
    assert params["evaluation_threshold"]["minimum"] == 0
    assert params["evaluation_threshold"]["maximum"] == 1
    assert params["hyperparameters"]["additionalProperties"] is False
    assert parsed["dag"]["param_defaults"] == {"data_uri": None, "store_uri": None, "metrics_table": None,
                                              "evaluation_threshold": None, "allow_channel_change": None,
                                              "hyperparameters": {}}


def test_data_uri_takes_a_bigquery_dataset_and_the_store_does_not(parsed):
    from training.config import BQ_DATA_URI

    params = parsed["dag"]["params"]
    for uri in ("bq://my-project.google_ads_transfer", "bq://example.com:my-project.ads", "gs://data/adroi", "/data"):
        assert re.fullmatch(params["data_uri"]["pattern"], uri), uri
    assert BQ_DATA_URI.fullmatch("bq://example.com:my-project.ads")  # the CLI accepts what the DAG accepts
    for uri in ("bq://my-project", "bq://my-project.ads.spend", "bq://my-project.a`b", "s3://data"):
        assert not re.fullmatch(params["data_uri"]["pattern"], uri), uri
    assert not re.fullmatch(params["store_uri"]["pattern"], "bq://my-project.google_ads_transfer")


BAD_TRIGGERS = {
    "threshold_above_one": ({"evaluation_threshold": 1.5}, "evaluation_threshold"),
    "threshold_below_zero": ({"evaluation_threshold": -0.1}, "evaluation_threshold"),
    "threshold_not_a_number": ({"evaluation_threshold": "high"}, "evaluation_threshold"),
    "metrics_not_a_known_uri": ({"metrics_table": "mysql://db/runs"}, "metrics_table"),
    "store_not_a_bucket_or_path": ({"store_uri": "s3://bucket/models"}, "store_uri"),
    "data_not_a_dataset": ({"data_uri": "bq://project.dataset.table;DROP"}, "data_uri"),
    "store_not_a_dataset": ({"store_uri": "bq://project.dataset"}, "store_uri"),
    "unknown_algorithm": ({"hyperparameters": {"algorithm": "xgboost"}}, "hyperparameters"),
    "channel_change_not_a_boolean": ({"allow_channel_change": "yes"}, "allow_channel_change"),
    "unknown_hyperparameter": ({"hyperparameters": {"depth": 3}}, "hyperparameters"),
    "unknown_grain": ({"hyperparameters": {"grain": "day"}}, "hyperparameters"),
    "too_few_replicates": ({"hyperparameters": {"bootstrap_replicates": 5}}, "hyperparameters"),
    "decay_of_one": ({"hyperparameters": {"mmm_decays": [0.5, 1.0]}}, "hyperparameters"),
    "fourier_order_too_high": ({"hyperparameters": {"fourier_order": 9}}, "hyperparameters"),
}


def test_a_trigger_with_a_bad_param_is_refused_before_any_task_runs(airflow, tmp_path):
    data, store = tmp_path / "data", tmp_path / "store"
    data.mkdir()
    good = {"data_uri": str(data), "store_uri": str(store), "metrics_table": f"sqlite:///{tmp_path}/m.db"}
    runs = [{"name": name, "logical_date": f"2026-10-{day:02d}T04:00:00+00:00", "conf": {**good, **conf}}
            for day, (name, (conf, _)) in enumerate(BAD_TRIGGERS.items(), start=1)]
    (tmp_path / "runs.json").write_text(json.dumps(runs))

    results = airflow.run("test", str(tmp_path / "runs.json"))

    for name, (_, param) in BAD_TRIGGERS.items():
        assert results[name].get("error") == "ParamValidationError", (name, results[name])
        assert param in results[name]["message"], (name, results[name]["message"])
    assert not store.exists()  # no task ran: nothing was staged
    assert not (tmp_path / "m.db").exists()


# ---- end to end: dag.test() against fake-gcs-server and bqemulator ------------------------------------

def _metrics_rows(scenario: Scenario) -> list[dict[str, Any]]:
    from training.metrics import open_metrics

    return open_metrics(scenario.metrics).history()


def _emails(airflow: Airflow) -> list[dict[str, Any]]:
    path = airflow.home / "emails.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_good_data_promotes_a_new_version_and_records_it(end_to_end):
    scenario, result = end_to_end["good"]
    assert result["state"] == "success", result
    assert result["tasks"] == {**dict.fromkeys(STAGES, "success"), WATCHER: "skipped"}
    registry = open_registry(scenario.store)
    latest = registry.latest()
    assert latest is not None and registry.versions() == [latest.version]
    manifest = registry.manifest(latest.version)
    assert manifest["status"] == "promoted"
    # the model settings param reached the model: the media-mix model, its grids (the fit's start) and replicates
    assert (manifest["algorithm"], manifest["grain"]) == ("mmm", "month")
    assert manifest["hyperparameters"]["fourier_order"] == 1 and manifest["intervals"]["replicates"] == 30
    assert {c["start"]["decay"] for c in manifest["hyperparameters"]["channels"].values()} <= {0.0, 0.5, 0.9}
    [row] = _metrics_rows(scenario)
    assert (row["status"], row["model_version"]) == ("promoted", latest.version)
    # no champion: nothing to score, compare or measure drift against
    assert (row["realised_version"], row["realised_periods"], row["gate_comparison"]) == (None, None, None)
    assert row["drift"]["note"] == "no champion yet"
    assert row["run_id"] == result["run_id"]  # the Airflow run's id: every retry of a task reuses its staging
    # The pipeline ran on the run's logical date, not on the day the test runs.
    run_doc = json.loads(registry.store.read(f"runs/{row['run_id']}/run.json"))
    assert run_doc["run_date"] == "2026-11-20"


def test_broken_data_fails_the_run_and_records_it_without_touching_the_model(end_to_end, airflow):
    scenario, result = end_to_end["broken"]
    assert result["state"] == "failed", result
    assert result["tasks"] == {
        "validate_data": "failed", "train_and_evaluate": "upstream_failed", "quality_gate": "upstream_failed",
        "publish_model": "upstream_failed", "record_metrics": "success", WATCHER: "failed",
    }
    registry = open_registry(scenario.store)
    assert tuple(registry.versions()) == scenario.versions_before
    assert registry.latest() == scenario.latest_before  # same version and same generation: no pointer move
    [row] = _metrics_rows(scenario)
    assert row["status"] == "data_invalid"
    assert "unparseable_values" in row["error"]
    [email] = _emails(airflow)  # validate_data's; the watcher and the other scenarios sent none
    assert "validate_data" in email["subject"]
    to = email["to"]
    recipients = [r.strip() for r in to.split(",")] if isinstance(to, str) else to  # Airflow 2 joins them
    assert sorted(recipients) == sorted(ALERT_EMAILS)


# Task states of a run that succeeds without publishing (a gate rejection, or input unchanged since the newest version).
PUBLISH_SKIPPED = {"validate_data": "success", "train_and_evaluate": "success", "quality_gate": "success",
                   "publish_model": "skipped", "record_metrics": "success", WATCHER: "skipped"}


def test_a_gate_rejection_skips_publishing_without_failing_the_run(end_to_end):
    scenario, result = end_to_end["rejected"]
    assert result["state"] == "success", result
    assert result["tasks"] == PUBLISH_SKIPPED
    registry = open_registry(scenario.store)
    assert registry.latest() == scenario.latest_before
    [archived] = set(registry.versions()) - set(scenario.versions_before)
    assert registry.manifest(archived)["status"] == "rejected"
    [row] = _metrics_rows(scenario)
    assert (row["status"], row["model_version"]) == ("rejected", archived)
    # the champion was fitted on every month: no realised performance yet, so the gate compared by backtest
    champion = scenario.latest_before.version
    assert (row["realised_version"], row["realised_periods"], row["model_degraded"]) == (champion, 0, None)
    assert row["gate_comparison"] == "backtest" and registry.manifest(archived)["gate"]["comparison"] == "backtest"
    assert row["drift"]["reference"] == champion and row["drift"]["new_periods"] == []


def test_a_run_on_unchanged_input_succeeds_skips_publishing_and_records_unchanged(end_to_end):
    scenario, result = end_to_end["unchanged"]
    assert result["state"] == "success", result
    assert result["tasks"] == PUBLISH_SKIPPED
    registry = open_registry(scenario.store)
    [row] = _metrics_rows(scenario)
    assert registry.latest() == scenario.latest_before  # same version and generation
    assert tuple(registry.versions()) == scenario.versions_before, row["gate_reason"]
    assert (row["status"], row["model_version"], row["error"]) == ("unchanged", None, None)
    assert f"newest version {scenario.latest_before.version} (promoted)" in row["gate_reason"]
    assert not registry.store.exists(f"runs/{row['run_id']}/candidate.joblib")


# ---- the Airflow 2 environment cannot include requirements.txt (Flask 3): its copied pins must stay equal -----

def _pins(path: Path) -> dict[str, str]:
    """Package name -> pinned version in a requirements file, following its `-r` includes."""
    pins: dict[str, str] = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line.startswith("-r "):
            pins |= _pins(path.parent / line[3:].strip())
        elif "==" in line:
            name, version = line.split("==", 1)
            pins[name.strip().lower()] = version.strip()
    return pins


def test_airflow2_requirements_pin_the_training_stack_like_requirements_train():
    training = {k: v for k, v in _pins(REPO_ROOT / "requirements-train.txt").items()
                if k not in ("flask", "gunicorn", "gevent", "orjson")}  # the API's; Airflow 2 needs Flask < 3
    airflow2 = _pins(REPO_ROOT / "requirements-airflow2.txt")
    assert airflow2.pop("apache-airflow").startswith("2.")
    assert airflow2 == training
