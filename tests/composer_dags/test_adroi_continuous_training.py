"""The Composer DAG in real Airflow 2.11 and 3.x, each in its own virtualenv (.venv-airflow2, .venv-airflow3).

The Airflow virtualenvs are driven through `airflow_runner.py` subprocesses with a temporary AIRFLOW_HOME (SQLite
metadata database made by `airflow db migrate`). The end-to-end runs use `dag.test()` against the session's
fake-gcs-server and bqemulator (started from this virtualenv; the Airflow ones only hold the clients).
"""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
DAGS_FOLDER = REPO_ROOT / "composer_dags"
RUNNER = Path(__file__).with_name("airflow_runner.py")
DAG_ID = "adroi_continuous_training"
ALERT_EMAILS = ["oncall@example.com", "ml-team@example.com"]
STAGES = ["validate_data", "train_and_evaluate", "quality_gate", "publish_model", "record_metrics"]
WATCHER = "fail_run_if_a_task_failed"
BQ_PROJECT = "adroi-test"  # the bigquery_emulator fixture's default project
# The sample data ends in 2026-10; the end-to-end runs are dated 2026-11-20, not the day the test runs.
LOGICAL_DATE = "2026-11-20T04:00:00+00:00"
BROKEN_SPEND_CSV = b"CAMPAIGN,CHANNEL,DATE,TOTAL_CLICKS,TOTAL_COST,ADS_SERVED\nbrand,email,2026-10-03,10,lots,5\n"

@dataclass
class Airflow:
    """One Airflow virtualenv with its own AIRFLOW_HOME."""

    name: str
    venv: Path
    home: Path
    env: dict[str, str]

    def run(self, *args: str, timeout: float = 240, **extra_env: str) -> dict[str, Any]:
        """Run airflow_runner.py with `args` (output file added) and return its JSON result."""
        out = self.home / f"result-{uuid.uuid4().hex[:8]}.json"
        command, *rest = args
        proc = subprocess.run([str(self.venv / "bin" / "python"), str(RUNNER), command, str(out), *rest],
                              env={**self.env, **extra_env}, capture_output=True, text=True, timeout=timeout)
        log = out.with_suffix(".log")
        log.write_text(proc.stdout + proc.stderr)  # Airflow's and the tasks' logs, named in failures
        assert proc.returncode == 0, f"{self.name} {command} failed (log: {log}):\n{proc.stderr[-4000:]}"
        return {"log": str(log), **json.loads(out.read_text())}


@pytest.fixture(scope="module", params=[pytest.param(name, marks=[pytest.mark.airflow, pytest.mark.slow])
                                        for name in ("airflow2", "airflow3")])
def airflow(request, tmp_path_factory) -> Airflow:
    """A migrated Airflow home for each Airflow virtualenv; skips when the virtualenv is missing."""
    venv = REPO_ROOT / f".venv-{request.param}"
    if not (venv / "bin" / "airflow").exists():
        pytest.skip(f"{venv} is missing: run `make airflow-venvs` "
                    f"(python3.11 -m venv {venv.name} && pip install -r requirements-{request.param}.txt)")
    home = tmp_path_factory.mktemp(request.param)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ADROI_", "AIRFLOW"))}
    env.update(
        AIRFLOW_HOME=str(home),
        AIRFLOW__CORE__DAGS_FOLDER=str(DAGS_FOLDER),
        AIRFLOW__CORE__LOAD_EXAMPLES="False",
        AIRFLOW__EMAIL__EMAIL_BACKEND="airflow_runner.record_email",
        DAG_TEST_EMAIL_LOG=str(home / "emails.jsonl"),
        ADROI_DAG_ALERT_EMAILS=",".join(ALERT_EMAILS),
        PYTHONPATH=os.pathsep.join([str(REPO_ROOT), str(RUNNER.parent)]),
    )
    subprocess.run([str(venv / "bin" / "airflow"), "db", "migrate"], env=env, check=True, capture_output=True,
                   timeout=180)
    return Airflow(request.param, venv, home, env)


@pytest.fixture(scope="module")
def parsed(airflow) -> dict[str, Any]:
    """The DagBag parse and the DAG's description, from inside Airflow."""
    return airflow.run("inspect")


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
    assert set(params) == {"data_uri", "store_uri", "metrics_table", "evaluation_threshold", "hyperparameters"}
    assert params["evaluation_threshold"]["minimum"] == 0
    assert params["evaluation_threshold"]["maximum"] == 1
    assert params["hyperparameters"]["additionalProperties"] is False
    assert parsed["dag"]["param_defaults"] == {"data_uri": None, "store_uri": None, "metrics_table": None,
                                              "evaluation_threshold": None, "hyperparameters": {}}


BAD_TRIGGERS = {
    "threshold_above_one": ({"evaluation_threshold": 1.5}, "evaluation_threshold"),
    "threshold_below_zero": ({"evaluation_threshold": -0.1}, "evaluation_threshold"),
    "threshold_not_a_number": ({"evaluation_threshold": "high"}, "evaluation_threshold"),
    "metrics_not_a_known_uri": ({"metrics_table": "mysql://db/runs"}, "metrics_table"),
    "store_not_a_bucket_or_path": ({"store_uri": "s3://bucket/models"}, "store_uri"),
    "unknown_algorithm": ({"hyperparameters": {"algorithm": "xgboost"}}, "hyperparameters"),
    "unknown_hyperparameter": ({"hyperparameters": {"depth": 3}}, "hyperparameters"),
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

@dataclass
class Scenario:
    """The places one end-to-end run reads and writes, and what the store held before it."""

    data: str
    store: str
    metrics: str
    latest_before: Any = None
    versions_before: tuple[str, ...] = ()


def _registry(store_uri: str):
    from training.registry import ModelRegistry
    from training.store import open_store

    return ModelRegistry(open_store(store_uri))


def _new_scenario(fake_gcs, workdir: Path, name: str, *, champion: bool, broken: bool = False) -> Scenario:
    """A bucket with the sample data (optionally a broken file) and a store (optionally with a champion)."""
    from training import config, pipeline, sample
    from training.store import open_store

    bucket = f"adroi-dag-{name}-{uuid.uuid4().hex[:8]}"
    fake_gcs.client().create_bucket(bucket)
    table = f"bq://{BQ_PROJECT}.dag_{uuid.uuid4().hex[:10]}.runs"
    scenario = Scenario(f"gs://{bucket}/data", f"gs://{bucket}/store", table)
    sample.write_sample(scenario.data, months=36, campaigns=3, seed=11)
    if champion:
        seed_settings = config.load_settings(overrides={"data": scenario.data, "store": scenario.store,
                                                        "metrics": f"sqlite:///{workdir}/{name}-seed.db",
                                                        "run_date": "2026-11-15"}, environ={})
        assert pipeline.run(seed_settings, run_id=f"seed-{name}").status == "promoted"
        registry = _registry(scenario.store)
        scenario.latest_before, scenario.versions_before = registry.latest(), tuple(registry.versions())
    if broken:
        open_store(scenario.data).write("spend/2026_late.csv", BROKEN_SPEND_CSV, content_type="text/csv")
    return scenario


@pytest.fixture(scope="module")
def end_to_end(airflow, fake_gcs, bigquery_emulator, tmp_path_factory) -> dict[str, tuple[Scenario, dict]]:
    """Three dag.test() runs in one Airflow process: good data, broken data, and a gate rejection."""
    workdir = tmp_path_factory.mktemp(f"{airflow.name}-runs")
    scenarios = {  # name: (scenario, extra params)
        "good": (_new_scenario(fake_gcs, workdir, "good", champion=False),
                 {"hyperparameters": {"positive": True}}),
        "broken": (_new_scenario(fake_gcs, workdir, "broken", champion=True, broken=True), {}),
        "rejected": (_new_scenario(fake_gcs, workdir, "rejected", champion=True),
                     {"evaluation_threshold": 1.0}),
    }
    runs = [{"name": name, "logical_date": LOGICAL_DATE.replace("-20T", f"-{20 + i}T"),
             "conf": {"data_uri": s.data, "store_uri": s.store, "metrics_table": s.metrics, **conf}}
            for i, (name, (s, conf)) in enumerate(scenarios.items())]
    runs_file = workdir / "runs.json"
    runs_file.write_text(json.dumps(runs))
    # No retries: a regression fails at once instead of waiting out the backoff.
    results = airflow.run("test", str(runs_file), ADROI_DAG_RETRIES="0", STORAGE_EMULATOR_HOST=fake_gcs.host,
                          BIGQUERY_EMULATOR_HOST=bigquery_emulator, GOOGLE_CLOUD_PROJECT=BQ_PROJECT)
    return {name: (scenario, {**results[name], "log": results["log"]})
            for name, (scenario, _) in scenarios.items()}


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
    registry = _registry(scenario.store)
    latest = registry.latest()
    assert latest is not None and registry.versions() == [latest.version]
    manifest = registry.manifest(latest.version)
    assert manifest["status"] == "promoted"
    assert manifest["positive"] is True  # the hyperparameters param reached the model
    [row] = _metrics_rows(scenario)
    assert (row["status"], row["model_version"]) == ("promoted", latest.version)
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
    registry = _registry(scenario.store)
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


def test_a_gate_rejection_skips_publishing_without_failing_the_run(end_to_end):
    scenario, result = end_to_end["rejected"]
    assert result["state"] == "success", result
    assert result["tasks"] == {"validate_data": "success", "train_and_evaluate": "success",
                               "quality_gate": "success", "publish_model": "skipped",
                               "record_metrics": "success", WATCHER: "skipped"}
    registry = _registry(scenario.store)
    assert registry.latest() == scenario.latest_before
    [archived] = set(registry.versions()) - set(scenario.versions_before)
    assert registry.manifest(archived)["status"] == "rejected"
    [row] = _metrics_rows(scenario)
    assert (row["status"], row["model_version"]) == ("rejected", archived)


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
                if k not in ("flask", "gunicorn")}  # the API's; Airflow 2 needs Flask < 3
    airflow2 = _pins(REPO_ROOT / "requirements-airflow2.txt")
    assert airflow2.pop("apache-airflow").startswith("2.")
    assert airflow2 == training
