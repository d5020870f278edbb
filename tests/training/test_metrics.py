"""The metrics table on both backends: SQLite in a temporary folder and BigQuery in bqemulator."""

from __future__ import annotations

import dataclasses
import json
import sqlite3
from datetime import UTC, datetime, timedelta, timezone
from typing import Any, get_type_hints

import numpy as np
import pytest

from training.core.errors import ConfigError, MetricsError
from training.metrics import (
    METRICS_SCHEMA,
    RUN_STATUSES,
    SCHEMA_FILE,
    BigQueryMetrics,
    RunRecord,
    SqliteMetrics,
    bigquery_client,
    bigquery_schema,
    main,
    open_metrics,
    schema_json,
)

STARTED = datetime(2026, 11, 22, 4, 0, 0, 123456, tzinfo=UTC)


def promoted_run(run_id: str = "scheduled__2026-11-22", started_at: datetime = STARTED) -> RunRecord:
    """A run with every column set, JSON columns included."""
    return RunRecord(
        run_id=run_id, started_at=started_at, status="promoted", finished_at=started_at + timedelta(minutes=3),
        model_version="20261122T040000Z-3f2a9c1d", algorithm="ridge",
        hyperparameters={"alpha": 10.0, "alphas": [0.1, 1.0, 10.0], "positive": False},
        holdout_r2=0.91, holdout_rmse=1234.5, holdout_mae=1000.25, holdout_mape=0.031,
        train_r2=0.95, train_rmse=1100.0, train_mae=900.0, train_mape=0.025,
        cv_scores={"r2": [0.8, 0.85, 0.9], "rmse": [1500.0, 1400.0, 1300.0]},
        champion_version="20261115T040000Z-0b1c2d3e", champion_rmse=1300.0,
        gate_reason="promoted: holdout R² 0.910 >= 0.8",
        channels=["email", "search_engine", "social_media", "video"],
        coefficients={"email": 3.1, "search_engine": 2.4, "social_media": 1.7, "video": 0.9},
        intercept=52000.0, months_used=36, first_month="2023-11", last_month="2026-10", rows_used=43800,
        validation_summary={"passed": True, "failed": [], "warned": ["extreme_spend"], "rows": 43800},
        data_fingerprint="a" * 64, code_version="0123abc", error=None,
    )


def failed_run(run_id: str, started_at: datetime) -> RunRecord:
    """A run that failed before training: only the required columns and the error."""
    return RunRecord(run_id=run_id, started_at=started_at, status="failed", error="StorageUnavailable: timeout")


def as_row(run: RunRecord) -> dict[str, Any]:
    return dataclasses.asdict(run)


# -- the schema, defined once ---------------------------------------------------------------------------

PYTHON_TYPES = {"STRING": str, "TIMESTAMP": datetime, "FLOAT": float, "INTEGER": int, "JSON": Any}


def test_schema_columns_are_the_run_record_fields_with_matching_types():
    hints = get_type_hints(RunRecord)

    assert [c.name for c in METRICS_SCHEMA] == [f.name for f in dataclasses.fields(RunRecord)]
    for column in METRICS_SCHEMA:
        expected = PYTHON_TYPES[column.type]
        assert hints[column.name] == (expected if column.mode == "REQUIRED" or expected is Any
                                      else expected | None), column.name
        assert column.description, column.name
    assert {c.name for c in METRICS_SCHEMA if c.mode == "REQUIRED"} == {"run_id", "started_at", "status"}
    assert {c.name for c in METRICS_SCHEMA if c.type == "JSON"} == {
        "hyperparameters", "cv_scores", "channels", "coefficients", "validation_summary"}


def test_committed_schema_file_is_what_the_code_generates(tmp_path):
    out = tmp_path / "schema.json"

    assert main(["export-schema", str(out)]) == 0

    assert out.read_text() == schema_json()
    assert SCHEMA_FILE.read_text() == schema_json(), "run: python -m training.metrics export-schema"
    entries = json.loads(schema_json())
    assert entries[0] == {"name": "run_id", "type": "STRING", "mode": "REQUIRED",
                          "description": METRICS_SCHEMA[0].description}
    assert {e["type"] for e in entries} <= {"STRING", "TIMESTAMP", "FLOAT", "INTEGER", "JSON"}


@pytest.mark.parametrize(
    ("run_id", "status", "message"),
    [("r", "done", "status='done': expected one of promoted, rejected, unchanged, data_invalid, failed"),
     ("", "failed", "run_id='': expected a non-empty string")],
)
def test_run_record_rejects_an_empty_run_id_or_unknown_status(run_id, status, message):
    with pytest.raises(ValueError, match=message):
        RunRecord(run_id=run_id, started_at=STARTED, status=status)


def test_run_record_stores_timestamps_in_utc():
    naive = RunRecord(run_id="r", started_at=datetime(2026, 11, 22, 4), status="failed")
    offset = RunRecord(run_id="r", started_at=datetime(2026, 11, 22, 5, tzinfo=timezone(timedelta(hours=1))),
                       status="failed", finished_at=datetime(2026, 11, 22, 4, 30))

    assert naive.started_at == offset.started_at == datetime(2026, 11, 22, 4, tzinfo=UTC)
    assert offset.started_at.tzinfo is UTC and offset.finished_at.tzinfo is UTC


# -- both backends -------------------------------------------------------------------------------------


def test_record_then_history_round_trips_every_column_newest_first(metrics_uri):
    sink = open_metrics(metrics_uri)
    older = failed_run("manual__2026-11-21", STARTED - timedelta(days=1))
    newer = promoted_run()

    sink.record(older)
    sink.record(newer)
    history = sink.history()

    assert history == [as_row(newer), as_row(older)]
    assert isinstance(history[0]["coefficients"], dict) and isinstance(history[0]["channels"], list)
    assert sink.get(older.run_id) == as_row(older)
    assert sink.get("no-such-run") is None


def test_retried_run_leaves_one_row_with_the_latest_values(metrics_uri):
    sink = open_metrics(metrics_uri)
    first_attempt = failed_run("scheduled__2026-11-22", STARTED)
    retry = promoted_run("scheduled__2026-11-22", STARTED + timedelta(minutes=10))

    sink.record(first_attempt)
    sink.record(retry)

    assert sink.history() == [as_row(retry)]


def test_history_limit_keeps_the_newest_runs(metrics_uri):
    sink = open_metrics(metrics_uri)
    for day in range(4):
        sink.record(failed_run(f"run-{day}", STARTED + timedelta(days=day)))

    assert [row["run_id"] for row in sink.history(limit=2)] == ["run-3", "run-2"]
    with pytest.raises(ValueError, match="limit=0: expected a positive integer"):
        sink.history(limit=0)


def test_numpy_values_and_non_finite_floats_are_stored_as_plain_values(metrics_uri):
    sink = open_metrics(metrics_uri)
    run = RunRecord(
        run_id="r", started_at=STARTED, status="rejected", holdout_r2=np.float64(0.5), months_used=np.int64(24),
        intercept=float("nan"), coefficients={"email": np.float64(2.5)},
        cv_scores={"r2": np.array([0.5, np.nan])}, channels=("email",),
    )

    sink.record(run)
    row = sink.get("r")

    assert (row["holdout_r2"], row["months_used"], row["intercept"]) == (0.5, 24, None)
    assert type(row["months_used"]) is int
    assert row["coefficients"] == {"email": 2.5}
    assert row["cv_scores"] == {"r2": [0.5, None]}
    assert row["channels"] == ["email"]


def test_reopening_an_existing_table_keeps_its_rows(metrics_uri):
    open_metrics(metrics_uri).record(promoted_run())

    assert open_metrics(metrics_uri).history() == [as_row(promoted_run())]


# -- table creation ------------------------------------------------------------------------------------


def test_sqlite_creates_the_file_and_table(tmp_path):
    path = tmp_path / "nested" / "metrics.db"

    sink = open_metrics(f"sqlite:///{path}")

    assert isinstance(sink, SqliteMetrics)
    with sqlite3.connect(path) as conn:
        columns = [(row[1], row[2], row[3]) for row in conn.execute("PRAGMA table_info(runs)")]
    assert [name for name, _, _ in columns] == [c.name for c in METRICS_SCHEMA]
    assert ("hyperparameters", "TEXT", 0) in columns and ("run_id", "TEXT", 1) in columns
    assert sink.history() == []


def test_bigquery_creates_a_day_partitioned_table_from_the_schema(bq_table_uri):
    from google.api_core.exceptions import NotFound

    table_id = bq_table_uri.removeprefix("bq://")
    client = bigquery_client(table_id.split(".")[0])
    with pytest.raises(NotFound):
        client.get_table(table_id)

    sink = open_metrics(bq_table_uri)

    table = client.get_table(table_id)
    assert isinstance(sink, BigQueryMetrics)
    assert [(f.name, f.field_type, f.mode) for f in table.schema] == [
        (f.name, f.field_type, f.mode) for f in bigquery_schema()]
    assert table.time_partitioning.field == "started_at"
    assert table.time_partitioning.type_ == "DAY"
    assert table.clustering_fields == ["status"]


def test_bigquery_unreachable_raises_metrics_error(monkeypatch):
    from tests.conftest import free_port

    monkeypatch.setenv("BIGQUERY_EMULATOR_HOST", f"http://127.0.0.1:{free_port()}")

    with pytest.raises(MetricsError, match=r"cannot open metrics table bq://adroi-test\.d\.t"):
        BigQueryMetrics("bq://adroi-test.d.t", timeout=0.5)


# -- bad URIs ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "uri",
    ["postgres://db/metrics", "metrics.db", "sqlite://metrics.db", "sqlite:///", "bq://project.dataset",
     "bq://project.dataset.table.extra", "gs://bucket/metrics", ""],
)
def test_unsupported_uri_names_the_uri_and_the_accepted_forms(uri):
    with pytest.raises(ConfigError) as raised:
        open_metrics(uri)

    message = str(raised.value)
    assert f"metrics={uri!r}" in message
    assert "sqlite:///path/to/metrics.db" in message and "bq://project.dataset.table" in message


def test_every_status_is_accepted(tmp_path):
    sink = open_metrics(f"sqlite:///{tmp_path}/m.db")
    for n, status in enumerate(RUN_STATUSES):
        sink.record(RunRecord(run_id=status, started_at=STARTED + timedelta(hours=n), status=status))

    assert [row["status"] for row in sink.history()] == list(reversed(RUN_STATUSES))


def test_an_unchanged_run_is_recorded_and_merged_like_the_others(metrics_uri):
    sink = open_metrics(metrics_uri)
    unchanged = RunRecord(run_id="scheduled__2026-11-23", started_at=STARTED, status="unchanged",
                          finished_at=STARTED + timedelta(seconds=4), data_fingerprint="a" * 64,
                          gate_reason="unchanged: input data, settings and code equal those of the newest version",
                          validation_summary={"passed": True, "failed": [], "warned": [], "rows": 43800})

    sink.record(failed_run(unchanged.run_id, STARTED))  # a first attempt that failed, then the retry
    sink.record(unchanged)

    assert sink.history() == [as_row(unchanged)]
    assert "unchanged" in json.loads(schema_json())[2]["description"]
