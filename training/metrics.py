"""The metrics table: one row per training run (promoted, rejected, unchanged, invalid data or failed).

The columns are declared once, on the fields of `RunRecord` (BigQuery type and description in each field's
metadata; a field without a default is REQUIRED). `METRICS_SCHEMA` is read from them, and everything else is
built from `METRICS_SCHEMA`: the SQLite table, the BigQuery table, its MERGE statement and
`infra/metrics_schema.json` for Terraform (`python -m training.metrics export-schema [PATH]`).

Backends, both behind `MetricsSink` and chosen by `open_metrics(uri)`:
- `sqlite:///path/to/metrics.db` -> `SqliteMetrics`, the embedded default (file and table created on open);
- `bq://project.dataset.table` -> `BigQueryMetrics`, the real client; `BIGQUERY_EMULATOR_HOST` points it at
  an emulator.
Writes are idempotent per `run_id` (upsert / MERGE): a retried run leaves one row with its latest values.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import math
import os
import re
import sqlite3
from collections.abc import Iterator
from dataclasses import MISSING, dataclass, field, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from training.config import REPO_ROOT
from training.core.errors import ConfigError, MetricsError

if TYPE_CHECKING:
    from google.cloud import bigquery

logger = logging.getLogger(__name__)

SCHEMA_FILE = REPO_ROOT / "infra" / "metrics_schema.json"
ACCEPTED_URIS = "'sqlite:///path/to/metrics.db' or 'bq://project.dataset.table'"

STATUS_PROMOTED = "promoted"
STATUS_REJECTED = "rejected"
STATUS_UNCHANGED = "unchanged"
STATUS_DATA_INVALID = "data_invalid"
STATUS_FAILED = "failed"
RUN_STATUSES = (STATUS_PROMOTED, STATUS_REJECTED, STATUS_UNCHANGED, STATUS_DATA_INVALID, STATUS_FAILED)


def _column(bq_type: str, description: str, *, required: bool = False) -> Any:
    """A RunRecord field carrying its BigQuery column type and description (optional fields default None)."""
    metadata = {"bq_type": bq_type, "description": description}
    return field(metadata=metadata) if required else field(default=None, metadata=metadata)


@dataclass
class RunRecord:
    """One training run as stored in the metrics table; JSON columns hold plain dicts and lists."""

    run_id: str = _column("STRING", "Pipeline run id (the DAG run id or one made by the CLI).", required=True)
    started_at: datetime = _column("TIMESTAMP", "When the run started (UTC); the table's day partition.",
                                   required=True)
    status: str = _column("STRING", "Outcome: promoted, rejected, unchanged (input data and settings equal "
                          "those of the newest version: nothing published), data_invalid or failed.", required=True)
    finished_at: datetime | None = _column("TIMESTAMP", "When the run finished (UTC).")
    model_version: str | None = _column("STRING", "Registry version written by the run, if any.")
    algorithm: str | None = _column("STRING", "Estimator: ols or ridge.")
    hyperparameters: Any = _column("JSON", "Estimator hyperparameters (alpha, positive, ...).")
    holdout_r2: float | None = _column("FLOAT", "R² on the chronological holdout months.")
    holdout_rmse: float | None = _column("FLOAT", "RMSE on the holdout months, in revenue units.")
    holdout_mae: float | None = _column("FLOAT", "MAE on the holdout months, in revenue units.")
    holdout_mape: float | None = _column("FLOAT", "MAPE on the holdout months, as a fraction.")
    train_r2: float | None = _column("FLOAT", "R² on the training months.")
    train_rmse: float | None = _column("FLOAT", "RMSE on the training months.")
    train_mae: float | None = _column("FLOAT", "MAE on the training months.")
    train_mape: float | None = _column("FLOAT", "MAPE on the training months, as a fraction.")
    cv_scores: Any = _column("JSON", "Time-series cross-validation scores per metric, e.g. {\"r2\": [...]}.")
    champion_version: str | None = _column("STRING", "Version of the model LATEST pointed to before the run.")
    champion_rmse: float | None = _column("FLOAT", "Champion RMSE on the same holdout months.")
    gate_reason: str | None = _column("STRING", "Why the quality gate promoted or rejected the challenger.")
    channels: Any = _column("JSON", "Channel names, in the model's feature order.")
    coefficients: Any = _column("JSON", "Marginal ROI per channel: {channel: coefficient}.")
    intercept: float | None = _column("FLOAT", "Model intercept (baseline monthly revenue).")
    months_used: int | None = _column("INTEGER", "Number of months the model was fitted on.")
    first_month: str | None = _column("STRING", "First month used (YYYY-MM).")
    last_month: str | None = _column("STRING", "Last month used (YYYY-MM).")
    rows_used: int | None = _column("INTEGER", "Input spend rows read.")
    validation_summary: Any = _column("JSON", "Data validation summary: passed, failed and warned rules, rows.")
    data_fingerprint: str | None = _column("STRING", "sha256 over the input objects' keys, generations, checksums.")
    code_version: str | None = _column("STRING", "Git commit of the training code, or unknown.")
    error: str | None = _column("STRING", "Error message of a failed or data_invalid run.")

    def __post_init__(self) -> None:
        if not self.run_id:
            raise ValueError(f"run_id={self.run_id!r}: expected a non-empty string")
        if self.status not in RUN_STATUSES:
            raise ValueError(f"status={self.status!r}: expected one of {', '.join(RUN_STATUSES)}")
        self.started_at = _as_utc(self.started_at)
        self.finished_at = None if self.finished_at is None else _as_utc(self.finished_at)


@dataclass(frozen=True)
class Column:
    """One column of the metrics table, in BigQuery's JSON schema terms."""

    name: str
    type: str  # canonical API names (FLOAT, INTEGER): what BigQuery returns, so Terraform shows no diff
    mode: str  # REQUIRED | NULLABLE
    description: str

    def to_json(self) -> dict[str, str]:
        """The `bq` / Terraform JSON schema entry of this column."""
        return {"name": self.name, "type": self.type, "mode": self.mode, "description": self.description}


METRICS_SCHEMA: tuple[Column, ...] = tuple(
    Column(f.name, f.metadata["bq_type"], "REQUIRED" if f.default is MISSING else "NULLABLE",
           f.metadata["description"])
    for f in fields(RunRecord)
)
COLUMN_NAMES = tuple(c.name for c in METRICS_SCHEMA)


def _as_utc(moment: datetime) -> datetime:
    # BigQuery reads a naive timestamp as UTC; do the same so both backends store the same instant.
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _plain(value: Any) -> Any:
    """Turn numpy scalars/arrays and tuples into plain Python; non-finite floats become None."""
    if hasattr(value, "tolist"):  # numpy array or scalar
        value = value.tolist()
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def _column_value(column: Column, value: Any) -> Any:
    """The value of `column` ready for a backend: plain Python, JSON columns as JSON text."""
    value = _plain(value)
    if value is None:
        return None
    if column.type == "JSON":
        return json.dumps(value, sort_keys=True)
    if column.type == "FLOAT":
        return float(value)
    if column.type == "INTEGER":
        return int(value)
    return value


class MetricsSink(Protocol):
    """What the pipeline writes run records to."""

    uri: str

    def record(self, run: RunRecord) -> None: ...
    def history(self, limit: int = 50) -> list[dict[str, Any]]: ...
    def get(self, run_id: str) -> dict[str, Any] | None: ...


def _check_limit(limit: int) -> None:
    if not isinstance(limit, int) or limit < 1:
        raise ValueError(f"limit={limit!r}: expected a positive integer")


_SQLITE_TYPES = {"STRING": "TEXT", "TIMESTAMP": "TEXT", "FLOAT": "REAL", "INTEGER": "INTEGER", "JSON": "TEXT"}


class SqliteMetrics:
    """The metrics table in a local SQLite file (timestamps as ISO-8601 text, JSON columns as text)."""

    def __init__(self, uri: str):
        self.uri = uri
        path = uri.removeprefix("sqlite:///")
        if not uri.startswith("sqlite:///") or not path:
            raise ConfigError("metrics", uri, ACCEPTED_URIS)
        self.path = Path(path).expanduser()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self._connect() as conn:
                conn.execute(_sqlite_create_table())
                conn.execute("CREATE INDEX IF NOT EXISTS runs_by_started_at ON runs (started_at)")
        except (OSError, sqlite3.Error) as exc:
            raise MetricsError(f"cannot open metrics table {uri}: {exc}") from exc

    def __repr__(self) -> str:
        return f"SqliteMetrics({self.uri!r})"

    @contextlib.contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        conn = sqlite3.connect(self.path, timeout=30)
        try:
            with conn:  # commits, or rolls back on error
                yield conn
        finally:
            conn.close()

    def record(self, run: RunRecord) -> None:
        """Insert the run, or replace the row with the same run_id."""
        values = [_to_sqlite(c, getattr(run, c.name)) for c in METRICS_SCHEMA]
        try:
            with self._connect() as conn:
                conn.execute(_SQLITE_UPSERT, values)
        except sqlite3.Error as exc:
            raise MetricsError(f"cannot record run {run.run_id} in {self.uri}: {exc}") from exc
        logger.info("recorded run %s (%s) in %s", run.run_id, run.status, self.uri,
                    extra={"run_id": run.run_id})

    def history(self, limit: int = 50) -> list[dict[str, Any]]:
        """The newest `limit` runs, newest first."""
        _check_limit(limit)
        return self._select("ORDER BY started_at DESC, run_id DESC LIMIT ?", (limit,))

    def get(self, run_id: str) -> dict[str, Any] | None:
        """The row of `run_id`, or None."""
        rows = self._select("WHERE run_id = ?", (run_id,))
        return rows[0] if rows else None

    def _select(self, clause: str, params: tuple[Any, ...]) -> list[dict[str, Any]]:
        try:
            with self._connect() as conn:
                rows = conn.execute(f"SELECT {', '.join(COLUMN_NAMES)} FROM runs {clause}", params).fetchall()
        except sqlite3.Error as exc:
            raise MetricsError(f"cannot read metrics table {self.uri}: {exc}") from exc
        return [
            {c.name: _from_sqlite(c, value) for c, value in zip(METRICS_SCHEMA, row, strict=True)}
            for row in rows
        ]


def _sqlite_create_table() -> str:
    columns = ", ".join(
        f"{c.name} {_SQLITE_TYPES[c.type]}{' NOT NULL' if c.mode == 'REQUIRED' else ''}" for c in METRICS_SCHEMA
    )
    return f"CREATE TABLE IF NOT EXISTS runs ({columns}, PRIMARY KEY (run_id))"


_SQLITE_UPSERT = (
    f"INSERT INTO runs ({', '.join(COLUMN_NAMES)}) VALUES ({', '.join('?' for _ in COLUMN_NAMES)}) "
    f"ON CONFLICT (run_id) DO UPDATE SET {', '.join(f'{n} = excluded.{n}' for n in COLUMN_NAMES[1:])}"
)


def _to_sqlite(column: Column, value: Any) -> Any:
    if column.type == "TIMESTAMP" and value is not None:
        return value.isoformat(timespec="microseconds")  # fixed width, so text order is time order
    return _column_value(column, value)


def _from_sqlite(column: Column, value: Any) -> Any:
    if value is None:
        return None
    if column.type == "JSON":
        return json.loads(value)
    if column.type == "TIMESTAMP":
        return datetime.fromisoformat(value)
    return value


# Query parameters use Standard SQL names; JSON values travel as text through PARSE_JSON.
_PARAM_TYPES = {"FLOAT": "FLOAT64", "INTEGER": "INT64", "JSON": "STRING"}
# A project id may be domain-scoped ("example.com:project").
_BQ_URI = re.compile(r"bq://(?P<project>(?:[a-z0-9.-]+:)?[a-z][a-z0-9-]*[a-z0-9])\.(?P<dataset>\w+)\.(?P<table>[\w-]+)")


def bigquery_client(project: str) -> bigquery.Client:
    """A BigQuery client: default credentials, or anonymous ones at `BIGQUERY_EMULATOR_HOST` if set."""
    from google.cloud import bigquery

    emulator = os.environ.get("BIGQUERY_EMULATOR_HOST")
    if not emulator:
        return bigquery.Client(project=project)
    from google.auth.credentials import AnonymousCredentials

    endpoint = emulator if "://" in emulator else f"http://{emulator}"
    return bigquery.Client(project=project, credentials=AnonymousCredentials(),
                           client_options={"api_endpoint": endpoint})


def bigquery_schema() -> list[bigquery.SchemaField]:
    """METRICS_SCHEMA as BigQuery schema fields."""
    from google.cloud import bigquery

    return [bigquery.SchemaField(c.name, c.type, c.mode, description=c.description) for c in METRICS_SCHEMA]


def _merge_statement(table_id: str) -> str:
    source = ", ".join(
        f"PARSE_JSON(@{c.name}, wide_number_mode => 'round') AS {c.name}" if c.type == "JSON"
        else f"@{c.name} AS {c.name}"
        for c in METRICS_SCHEMA
    )
    return (
        f"MERGE `{table_id}` AS target USING (SELECT {source}) AS source ON target.run_id = source.run_id "
        f"WHEN MATCHED THEN UPDATE SET {', '.join(f'{n} = source.{n}' for n in COLUMN_NAMES[1:])} "
        f"WHEN NOT MATCHED THEN INSERT ({', '.join(COLUMN_NAMES)}) "
        f"VALUES ({', '.join(f'source.{n}' for n in COLUMN_NAMES)})"
    )


class BigQueryMetrics:
    """The metrics table in BigQuery, day-partitioned on started_at; each record is one parameterised MERGE.

    Every call has a retry deadline and timeouts of `timeout` seconds, so an unreachable or failing
    BigQuery surfaces as `MetricsError` quickly instead of after the client's default ten minutes.
    """

    def __init__(self, uri: str, timeout: float = 30.0):
        match = _BQ_URI.fullmatch(uri)
        if match is None:
            raise ConfigError("metrics", uri, ACCEPTED_URIS)
        from google.cloud.bigquery.retry import DEFAULT_JOB_RETRY, DEFAULT_RETRY

        self.uri = uri
        self.table_id = "{project}.{dataset}.{table}".format(**match.groupdict())
        self._timeout = timeout
        self._retry = DEFAULT_RETRY.with_deadline(timeout)
        self._job_retry = DEFAULT_JOB_RETRY.with_deadline(timeout)
        self._merge_sql = _merge_statement(self.table_id)
        self._client = bigquery_client(match["project"])
        with self._errors("open"):
            self._ensure_table()

    def __repr__(self) -> str:
        return f"BigQueryMetrics({self.uri!r})"

    @contextlib.contextmanager
    def _errors(self, action: str) -> Iterator[None]:
        from google.api_core.exceptions import GoogleAPIError

        try:
            yield
        except (GoogleAPIError, OSError) as exc:  # OSError: connection refused, timeouts
            raise MetricsError(f"cannot {action} metrics table {self.uri}: {exc}") from exc

    def _ensure_table(self) -> None:
        from google.api_core.exceptions import NotFound
        from google.cloud import bigquery

        try:
            self._client.get_table(self.table_id, retry=self._retry, timeout=self._timeout)
            return
        except NotFound:
            pass
        # Checked first so that a writer allowed only on an existing table (made by Terraform) never
        # needs the permission to create datasets.
        self._client.create_dataset(self.table_id.rsplit(".", 1)[0], exists_ok=True, retry=self._retry,
                                    timeout=self._timeout)
        table = bigquery.Table(self.table_id, schema=bigquery_schema())
        table.time_partitioning = bigquery.TimePartitioning(type_=bigquery.TimePartitioningType.DAY,
                                                            field="started_at")
        table.clustering_fields = ["status"]  # as infra/bigquery.tf
        table.description = "One row per adroi training run (training.metrics.RunRecord)."
        self._client.create_table(table, exists_ok=True, retry=self._retry, timeout=self._timeout)
        logger.info("created metrics table %s", self.table_id)

    def _query(self, sql: str, params: list[bigquery.ScalarQueryParameter]) -> list[dict[str, Any]]:
        from google.cloud import bigquery

        rows = self._client.query_and_wait(
            sql, job_config=bigquery.QueryJobConfig(query_parameters=params), api_timeout=self._timeout,
            wait_timeout=self._timeout, retry=self._retry, job_retry=self._job_retry,
        )
        return [dict(row.items()) for row in rows]

    def record(self, run: RunRecord) -> None:
        """MERGE the run on run_id: insert it, or overwrite the row a previous attempt wrote."""
        from google.cloud import bigquery

        params = [
            bigquery.ScalarQueryParameter(c.name, _PARAM_TYPES.get(c.type, c.type), _column_value(c, getattr(run, c.name)))
            for c in METRICS_SCHEMA
        ]
        with self._errors(f"record run {run.run_id} in"):
            self._query(self._merge_sql, params)
        logger.info("recorded run %s (%s) in %s", run.run_id, run.status, self.uri,
                    extra={"run_id": run.run_id})

    def history(self, limit: int = 50) -> list[dict[str, Any]]:
        """The newest `limit` runs, newest first."""
        from google.cloud import bigquery

        _check_limit(limit)
        with self._errors("read"):
            return self._query(
                f"SELECT {', '.join(COLUMN_NAMES)} FROM `{self.table_id}` "
                "ORDER BY started_at DESC, run_id DESC LIMIT @limit",
                [bigquery.ScalarQueryParameter("limit", "INT64", limit)],
            )

    def get(self, run_id: str) -> dict[str, Any] | None:
        """The row of `run_id`, or None."""
        from google.cloud import bigquery

        with self._errors("read"):
            rows = self._query(
                f"SELECT {', '.join(COLUMN_NAMES)} FROM `{self.table_id}` WHERE run_id = @run_id",
                [bigquery.ScalarQueryParameter("run_id", "STRING", run_id)],
            )
        return rows[0] if rows else None


def check_metrics_uri(uri: str) -> str:
    """Return `uri` if it names a metrics table this module can open (syntax only), else raise ConfigError."""
    text = str(uri)
    if (text.startswith("sqlite:///") and text.removeprefix("sqlite:///").strip()) or _BQ_URI.fullmatch(text):
        return text
    raise ConfigError("metrics", uri, ACCEPTED_URIS)


def open_metrics(uri: str) -> MetricsSink:
    """The metrics backend for `uri`: `sqlite:///path` or `bq://project.dataset.table`."""
    if uri.startswith("sqlite:///"):
        return SqliteMetrics(uri)
    if uri.startswith("bq://"):
        return BigQueryMetrics(uri)
    raise ConfigError("metrics", uri, ACCEPTED_URIS)


def schema_json() -> str:
    """METRICS_SCHEMA in the `bq` / Terraform JSON schema format."""
    return json.dumps([c.to_json() for c in METRICS_SCHEMA], indent=2, ensure_ascii=False) + "\n"


def export_schema(path: str | os.PathLike[str] = SCHEMA_FILE) -> Path:
    """Write the JSON schema to `path` (default infra/metrics_schema.json) and return the path."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(schema_json(), encoding="utf-8")
    return target


def main(argv: list[str] | None = None) -> int:
    """`python -m training.metrics export-schema [PATH]`."""
    parser = argparse.ArgumentParser(prog="python -m training.metrics", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    export = commands.add_parser("export-schema", help="write the metrics table schema as bq/Terraform JSON")
    export.add_argument("path", nargs="?", default=str(SCHEMA_FILE))
    args = parser.parse_args(argv)
    print(export_schema(args.path))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
