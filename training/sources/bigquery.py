"""BigQuery as a data source, with the aggregation pushed down: `--data bq://PROJECT.DATASET`.

Tables read (column names are matched case-insensitively, as CSV headers are):
- `spend` (our contract): CAMPAIGN, CHANNEL, DATE, TOTAL_CLICKS, TOTAL_COST, ADS_SERVED; only CHANNEL, DATE and
  TOTAL_COST are required. Columns may be STRING (as exported from CSV) or typed (DATE, FLOAT64, INT64, NUMERIC).
- ad platforms' tables declared in `[[bigquery.sources]]`: a Google Ads transfer table
  (`p_ads_CampaignBasicStats_<customer_id>`: segments_date, campaign_id, metrics_cost_micros; campaign names from
  `p_ads_Campaign_<customer_id>`) and a Meta Ads table (`AdInsights`: DateStart, CampaignId, Spend,
  AccountCurrency; CampaignName, AccountId if present). Each maps campaigns to channels with a fixed `channel`
  or `rules` (regular expressions on the campaign name or id, first match wins); Google Ads cost is converted
  from micros; every ad account must report in one currency (`bigquery.currency`, or the one they agree on).
- `revenue`: YEAR, MONTH, REVENUE or DATE, REVENUE; optional `controls`: DATE or YEAR, MONTH plus numeric columns.

Pushdown: spend tables can hold billions of rows, so they never leave BigQuery. Three parameterised queries
over the same normalised rows compute (1) one row of counts per table for every validation rule (null,
unparseable, out-of-range and negative values, unknown channels, duplicate (CAMPAIGN, CHANNEL, DATE) rows:
one scan, grouped by that key),
(2) the daily per-channel sums of the usable rows, and, only when a count is above 0, (3) up to
`EXAMPLES_PER_RULE` example rows per rule; a fourth groups rows per ad account and currency for ad sources.
Revenue and controls tables hold one row per period (at most one per day), so they are read whole and go
through the CSV reader's own parsing: their rules are the same code. A finding names a row by its table and
key (`{"file": "project.dataset.spend", "line": None, "key": {...}}`) instead of file and line.

Every query is first dry-run: its estimated bytes are recorded and checked against `bigquery.max_bytes_billed`,
which is also set on the query job, so BigQuery itself refuses to bill more. User data never becomes SQL text:
values travel as query parameters, and table and column names are checked against strict patterns and quoted
with backticks. Tables (not views) are read `FOR SYSTEM_TIME AS OF` the run's start, so a retried stage reads
the same rows; an endpoint that rejects time travel is detected on the first dry run and read without it
(`cost["time_travel"]` says which). `BigQueryReader.cost` describes every query for the run's validation report.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import IO, TYPE_CHECKING, Any

import pandas as pd

from training import ingest
from training.config import BQ_DATA_URI, BigQueryConfig
from training.core.errors import ConfigError, DataSourceError
from training.ingest import CsvReader, Finding, RawData, ReadOptions

if TYPE_CHECKING:
    from google.cloud import bigquery

log = logging.getLogger(__name__)

SPEND_TABLE, REVENUE_TABLE, CONTROLS_TABLE = "spend", "revenue", "controls"
GOOGLE_ADS, META_ADS = "google_ads", "meta_ads"
EXAMPLES_PER_RULE = 5  # example rows per rule that leave BigQuery
MICROS = 1_000_000
# On-demand analysis price per TiB scanned (US multi-region, list price since July 2023; it may change):
# https://cloud.google.com/bigquery/pricing#on_demand_pricing
ON_DEMAND_USD_PER_TIB = 6.25
TIB = 2**40

_PROJECT = re.compile(r"(?:[a-z0-9.-]+:)?[a-z][a-z0-9-]*[a-z0-9]")
_DATASET = re.compile(r"[A-Za-z0-9_]{1,1024}")
_TABLE = re.compile(r"[A-Za-z0-9_-]{1,1024}")
_COLUMN = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,299}")
_CURRENCY = re.compile(r"[A-Z]{3}")
_ISO_DATE_SQL = r"r'^\d{4}-\d{2}-\d{2}$'"
_TEXT_TYPES = ("STRING",)
_FLOAT_TYPES = ("FLOAT", "FLOAT64")
_NUMBER_TYPES = ("INTEGER", "INT64", "NUMERIC", "BIGNUMERIC", "DECIMAL", "BIGDECIMAL")
_DATE_TYPES = ("DATE", "DATETIME", "TIMESTAMP")

# The columns of each kind of ads table (lower-case), and the default table names.
ADS_COLUMNS = {
    GOOGLE_ADS: {"date": "segments_date", "campaign": "campaign_id", "cost": "metrics_cost_micros"},
    META_ADS: {"date": "datestart", "campaign": "campaignid", "cost": "spend", "currency": "accountcurrency"},
}
META_OPTIONAL = {"name": "campaignname", "account": "accountid"}
SOURCE_KEYS = ("kind", "dataset", "table", "customer_id", "channel", "rules", "match", "currency")
RULES_CHECKED = (ingest.NULL_VALUES_RULE, ingest.UNPARSEABLE_VALUES, ingest.OUT_OF_RANGE_VALUES,
                 ingest.NEGATIVE_VALUES, ingest.UNKNOWN_CHANNELS, ingest.DUPLICATE_ROWS)
_FLAGS = {ingest.NULL_VALUES_RULE: "is_null", ingest.UNPARSEABLE_VALUES: "is_bad",
          ingest.OUT_OF_RANGE_VALUES: "is_out", ingest.NEGATIVE_VALUES: "is_negative",
          ingest.UNKNOWN_CHANNELS: "is_unknown"}


@dataclass(frozen=True)
class TableRef:
    """A table's project, dataset and name, each checked against BigQuery's (strict) identifier patterns."""

    project: str
    dataset: str
    table: str

    def __post_init__(self) -> None:
        for part, pattern in (("project", _PROJECT), ("dataset", _DATASET), ("table", _TABLE)):
            if not pattern.fullmatch(getattr(self, part)):
                raise ConfigError(f"bigquery {part}", getattr(self, part), f"a name matching {pattern.pattern}")

    @property
    def id(self) -> str:
        """Return `project.dataset.table`."""
        return f"{self.project}.{self.dataset}.{self.table}"

    @property
    def sql(self) -> str:
        """Return the table's name quoted for SQL (safe: every part matched a strict pattern)."""
        return f"`{self.id}`"


@dataclass(frozen=True)
class AdsSource:
    """One ad platform's table and how its campaigns map to channels."""

    kind: str  # GOOGLE_ADS | META_ADS
    table: TableRef
    names: TableRef | None  # Google Ads campaign table (names), when rules match on names
    channel: str | None  # every campaign's channel, or None when `rules` decide
    rules: tuple[tuple[str, str], ...]  # (regular expression, channel), first match wins
    match: str  # "name" | "id": what the rules' expressions are matched against
    currency: str | None  # declared currency (Google Ads tables carry none)
    account: str | None  # Google Ads customer id


def _dataset(value: Any, default_project: str, default_dataset: str, name: str) -> tuple[str, str]:
    if value is None:
        return default_project, default_dataset
    text = str(value)
    project, _, dataset = text.rpartition(".")
    project = project or default_project
    if not _PROJECT.fullmatch(project) or not _DATASET.fullmatch(dataset):
        raise ConfigError(name, value, "project.dataset or dataset (letters, digits and underscores)")
    return project, dataset


def parse_sources(entries: list[dict[str, Any]], data_uri: str, channels: list[str] | None) -> list[AdsSource]:
    """Check `bigquery.sources` and return them as AdsSource; raise ConfigError naming the setting."""
    match = BQ_DATA_URI.fullmatch(data_uri)
    if match is None:
        raise ConfigError("data", data_uri, "bq://project.dataset")
    known = {c.lower() for c in channels} if channels else None
    sources = []
    for i, entry in enumerate(entries):
        name = f"bigquery.sources[{i}]"
        entry = {str(k).lower(): v for k, v in entry.items()}
        unknown = sorted(set(entry) - set(SOURCE_KEYS))
        if unknown:
            raise ConfigError(f"{name}.{unknown[0]}", entry[unknown[0]], "one of " + ", ".join(SOURCE_KEYS))
        kind = entry.get("kind")
        if kind not in ADS_COLUMNS:
            raise ConfigError(f"{name}.kind", kind, f"'{GOOGLE_ADS}' or '{META_ADS}'")
        project, dataset = _dataset(entry.get("dataset"), match["project"], match["dataset"], f"{name}.dataset")
        customer = str(entry["customer_id"]).replace("-", "") if entry.get("customer_id") is not None else None
        if customer is not None and not re.fullmatch(r"\d{1,20}", customer):
            raise ConfigError(f"{name}.customer_id", entry["customer_id"], "the Google Ads customer id (digits)")
        table = entry.get("table")
        if table is None:
            if kind == GOOGLE_ADS and customer is None:
                raise ConfigError(f"{name}.customer_id", None, "the customer id of p_ads_CampaignBasicStats_<id>")
            table = f"p_ads_CampaignBasicStats_{customer}" if kind == GOOGLE_ADS else "AdInsights"
        try:
            ref = TableRef(project, dataset, str(table))
        except ConfigError as exc:
            raise ConfigError(f"{name}.table", table, exc.expected) from exc
        channel, rules = entry.get("channel"), entry.get("rules")
        if (channel is None) == (rules is None):
            raise ConfigError(f"{name}.channel", channel, "either `channel` (one for every campaign) or `rules` "
                              "([{pattern, channel}, ...]), not both")
        parsed_rules: list[tuple[str, str]] = []
        for j, rule in enumerate(rules or []):
            if not isinstance(rule, dict) or set(rule) != {"pattern", "channel"}:
                raise ConfigError(f"{name}.rules[{j}]", rule, "a table {pattern = \"regex\", channel = \"name\"}")
            try:
                re.compile(str(rule["pattern"]))
            except re.error as exc:
                raise ConfigError(f"{name}.rules[{j}].pattern", rule["pattern"], f"a regular expression ({exc})"
                                  ) from exc
            parsed_rules.append((str(rule["pattern"]), str(rule["channel"]).strip().lower()))
        if rules is not None and not parsed_rules:
            raise ConfigError(f"{name}.rules", rules, "at least one {pattern, channel} rule")
        channel = None if channel is None else str(channel).strip().lower()
        for target in [channel] if channel is not None else [c for _, c in parsed_rules]:
            if not target or (known is not None and target not in known):
                raise ConfigError(f"{name}.channel", target, "a channel of the `channels` list: "
                                  + ", ".join(sorted(known or [])) if known else "a non-empty channel name")
        how = str(entry.get("match", "name")).lower()
        if how not in ("name", "id"):
            raise ConfigError(f"{name}.match", entry.get("match"), "'name' (campaign name) or 'id' (campaign id)")
        names = None
        if parsed_rules and how == "name" and kind == GOOGLE_ADS:
            if customer is None:
                raise ConfigError(f"{name}.customer_id", None, "the customer id: rules on names read "
                                  "p_ads_Campaign_<customer_id>")
            names = TableRef(project, dataset, f"p_ads_Campaign_{customer}")
        currency = entry.get("currency")
        if currency is not None and not _CURRENCY.fullmatch(str(currency)):
            raise ConfigError(f"{name}.currency", currency, "an ISO 4217 code such as EUR")
        sources.append(AdsSource(kind, ref, names, channel, tuple(parsed_rules), how,
                                 None if currency is None else str(currency), customer))
    return sources


# ---- SQL expressions of one column, by its BigQuery type --------------------------------------------------

def _text(col: str, kind: str) -> str:
    return col if kind in _TEXT_TYPES else f"CAST({col} AS STRING)"


def _is_null(col: str, kind: str) -> str:
    """A null cell: NULL, a CSV null spelling in a STRING column (ingest.NULL_VALUES), NaN in a FLOAT64 one."""
    if kind in _TEXT_TYPES:
        return f"({col} IS NULL OR {col} IN UNNEST(@null_values))"
    if kind in _FLOAT_TYPES:
        return f"({col} IS NULL OR IS_NAN({col}))"
    return f"({col} IS NULL)"


def _day(col: str, kind: str) -> str | None:
    if kind in _TEXT_TYPES:
        return f"IF(REGEXP_CONTAINS({col}, {_ISO_DATE_SQL}), SAFE.PARSE_DATE('%Y-%m-%d', {col}), NULL)"
    if kind == "DATE":
        return col
    return f"DATE({col})" if kind in _DATE_TYPES else None


def _number(col: str, kind: str) -> str | None:
    if kind in _TEXT_TYPES:
        return f"SAFE_CAST(TRIM({col}) AS FLOAT64)"
    if kind in _FLOAT_TYPES:
        return col
    return f"CAST({col} AS FLOAT64)" if kind in _NUMBER_TYPES else None


@dataclass
class _Part:
    """One spend table as normalised rows (SQL) with its parameters."""

    ref: TableRef
    kind: str  # "contract" | GOOGLE_ADS | META_ADS
    select: str
    params: list[Any]
    has_currency: bool = False


def _csv_value(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, date | datetime):
        return value.isoformat()
    if isinstance(value, Decimal):
        return format(value, "f")
    return str(value)


class _MemorySnapshot:
    """Tables serialised as CSV text, opened like store objects, so the CSV reader parses them."""

    def __init__(self, data: dict[str, bytes]):
        self.data = data

    def open_read(self, key: str) -> IO[bytes]:
        """Open the CSV text of table `key`."""
        return io.BytesIO(self.data[key])


def _plain(value: Any) -> Any:
    if isinstance(value, date | datetime | Decimal):
        return _csv_value(value)
    return value


class BigQueryReader:
    """Reads `bq://project.dataset`: spend aggregated in BigQuery, revenue and controls read whole."""

    def __init__(self, uri: str, config: BigQueryConfig | None = None, as_of: datetime | None = None,
                 client: bigquery.Client | None = None):
        match = BQ_DATA_URI.fullmatch(uri)
        if match is None:
            raise ConfigError("data", uri, "bq://project.dataset")
        from google.cloud.bigquery.retry import DEFAULT_JOB_RETRY, DEFAULT_RETRY

        self.uri = uri
        self.project, self.dataset = match["project"], match["dataset"]
        self.config = config or BigQueryConfig()
        self.sources = parse_sources(self.config.sources, uri, None)
        self.as_of = (as_of or datetime.now(UTC)).astimezone(UTC)
        self._client = client
        self._retry = DEFAULT_RETRY.with_deadline(self.config.timeout)
        self._job_retry = DEFAULT_JOB_RETRY.with_deadline(self.config.timeout)
        self._time_travel = self.config.time_travel  # set to False when the endpoint rejects it
        self._queries: list[dict[str, Any]] = []
        self.cost: dict[str, Any] = {}

    def __repr__(self) -> str:
        return f"BigQueryReader({self.uri!r})"

    @property
    def client(self) -> bigquery.Client:
        """Return the BigQuery client (built on first use; `BIGQUERY_EMULATOR_HOST` points it at an emulator)."""
        if self._client is None:
            from training.metrics import bigquery_client

            # Jobs run in the billing project (roles/bigquery.jobUser there); tables are named in full.
            self._client = bigquery_client(self.config.billing_project or self.project)
        return self._client

    # ---- BigQuery calls -------------------------------------------------------------------------------

    def _table(self, ref: TableRef) -> bigquery.Table | None:
        from google.api_core.exceptions import GoogleAPIError, NotFound

        try:
            return self.client.get_table(ref.id, retry=self._retry, timeout=self.config.timeout)
        except NotFound:
            return None
        except (GoogleAPIError, OSError) as exc:
            raise DataSourceError(f"cannot read the metadata of table {ref.id} in {self.uri}: {exc}") from exc

    def _travels(self, table: bigquery.Table) -> bool:
        """Say whether `table` is read as of the run's start: a table (not a view) that existed then."""
        return self._time_travel and table.table_type == "TABLE" and (table.created or self.as_of) <= self.as_of

    def _from(self, ref: TableRef, table: bigquery.Table) -> str:
        """Return a FROM item of `table`: as of the run's start where BigQuery offers time travel (not views)."""
        if self._travels(table):
            # A timestamp we formatted ourselves, not user data (some endpoints refuse a parameter here).
            return (f"(SELECT * FROM {ref.sql} FOR SYSTEM_TIME AS OF "
                    f"TIMESTAMP '{self.as_of:%Y-%m-%d %H:%M:%S.%f}+00')")
        return ref.sql

    def _query(self, name: str, build: Callable[[], tuple[str, list[Any]]]) -> list[dict[str, Any]]:
        """Dry-run the query (estimate, cap), run it with the cap set, and record what it cost and returned."""
        from google.api_core.exceptions import BadRequest, GoogleAPIError
        from google.cloud import bigquery

        cap, timeout = int(self.config.max_bytes_billed), self.config.timeout
        sql, params = build()
        try:
            try:
                dry = self.client.query(sql, job_config=bigquery.QueryJobConfig(
                    query_parameters=params, dry_run=True, use_query_cache=False, maximum_bytes_billed=cap),
                    location=self.config.location, retry=self._retry, timeout=timeout, job_retry=self._job_retry)
            except BadRequest as exc:
                if "SYSTEM_TIME" not in str(exc) or "SYSTEM_TIME" not in sql:
                    raise
                log.warning("%s rejects FOR SYSTEM_TIME AS OF (%s): reading tables as they are now", self.uri, exc)
                self._time_travel = False
                sql, params = build()
                dry = self.client.query(sql, job_config=bigquery.QueryJobConfig(
                    query_parameters=params, dry_run=True, use_query_cache=False, maximum_bytes_billed=cap),
                    location=self.config.location, retry=self._retry, timeout=timeout, job_retry=self._job_retry)
            estimate = int(dry.total_bytes_processed or 0)
            if estimate > cap:
                raise DataSourceError(
                    f"query {name} on {self.uri} would scan {estimate:,} bytes: bigquery.max_bytes_billed="
                    f"{cap:,}; expected at most the cap (raise it, or read fewer or smaller tables)")
            job = self.client.query(sql, job_config=bigquery.QueryJobConfig(
                query_parameters=params, maximum_bytes_billed=cap), location=self.config.location,
                retry=self._retry, timeout=timeout, job_retry=self._job_retry)
            rows = [dict(row.items()) for row in job.result(timeout=timeout, retry=self._retry)]
        except GoogleAPIError as exc:
            raise DataSourceError(f"query {name} on {self.uri} failed: {exc}") from exc
        except OSError as exc:  # connection refused, timeouts
            raise DataSourceError(f"query {name} on {self.uri} failed: {exc}") from exc
        returned = len(json.dumps(rows, default=str).encode())
        self._queries.append({"query": name, "bytes_estimated": estimate,
                              "bytes_processed": int(job.total_bytes_processed or 0),
                              "bytes_billed": int(job.total_bytes_billed or 0),
                              "rows_returned": len(rows), "bytes_returned": returned, "job_id": job.job_id})
        log.info("query %s: %d bytes estimated by the dry run, %d rows (%d bytes) returned", name, estimate,
                 len(rows), returned)
        return rows

    # ---- spend: normalised rows, one SELECT per table ---------------------------------------------------

    def _contract_part(self, ref: TableRef, table: bigquery.Table, findings: dict[str, Finding],
                       options: ReadOptions, k: int) -> _Part | None:
        columns = {f.name.lower(): f for f in table.schema}
        missing = [c for c in ingest.SPEND_REQUIRED if c not in columns]
        if missing:
            findings[ingest.MISSING_COLUMNS].add(_table_example(ref, {"missing": missing, "header": list(columns)}),
                                                 len(missing))
            return None
        col = {name: f"s.`{f.name}`" for name, f in columns.items() if _COLUMN.fullmatch(f.name)}
        kinds = {name: f.field_type.upper() for name, f in columns.items()}
        day, cost = _day(col["date"], kinds["date"]), _number(col["total_cost"], kinds["total_cost"])
        if day is None or cost is None or kinds["channel"] not in _TEXT_TYPES:
            bad = {"date": day is None, "total_cost": cost is None, "channel": kinds["channel"] not in _TEXT_TYPES}
            findings[ingest.UNREADABLE_FILES].add(_table_example(ref, {
                "found": ", ".join(f"{n.upper()} of type {kinds[n]}" for n, wrong in bad.items() if wrong),
                "expected": "CHANNEL STRING, DATE STRING/DATE/DATETIME/TIMESTAMP, TOTAL_COST STRING/FLOAT64/"
                            "INT64/NUMERIC"}))
            return None
        campaign = "CAST(NULL AS STRING)"
        if "campaign" in col:
            text = _text(col["campaign"], kinds["campaign"])
            campaign = f"IF({_is_null(col['campaign'], kinds['campaign'])}, NULL, {text})"
        channel_null = _is_null(col["channel"], "STRING")
        lower = f"LOWER(TRIM({col['channel']}))"
        params: list[Any] = []
        aliases = sorted(options.channel_aliases.items())
        if aliases:
            whens = " ".join(f"WHEN @p{k}_alias{j} THEN @p{k}_channel{j}" for j in range(len(aliases)))
            normalised = f"CASE {lower} {whens} ELSE {lower} END"
            params += [_scalar(f"p{k}_alias{j}", "STRING", a) for j, (a, _) in enumerate(aliases)]
            params += [_scalar(f"p{k}_channel{j}", "STRING", c) for j, (_, c) in enumerate(aliases)]
        else:
            normalised = lower
        date_null, cost_null = _is_null(col["date"], kinds["date"]), _is_null(col["total_cost"], kinds["total_cost"])
        select = (
            f"SELECT {k} AS source, {campaign} AS campaign, CAST(NULL AS STRING) AS campaign_name, "
            f"{col['channel']} AS channel_text, IF({channel_null}, NULL, {normalised}) AS channel, "
            f"{channel_null} AS channel_null, FALSE AS unmatched, "
            f"{_text(col['date'], kinds['date'])} AS date_text, IF({date_null}, NULL, {day}) AS day, "
            f"{date_null} AS date_null, (NOT {date_null} AND {day} IS NULL) AS date_bad, "
            f"{_text(col['total_cost'], kinds['total_cost'])} AS cost_text, "
            f"IF({cost_null} OR NOT IFNULL(IS_INF({cost}) = FALSE AND IS_NAN({cost}) = FALSE, FALSE), NULL, {cost})"
            f" AS cost, {cost_null} AS cost_null, "
            f"(NOT {cost_null} AND NOT IFNULL(IS_INF({cost}) = FALSE AND IS_NAN({cost}) = FALSE, FALSE)) AS cost_bad,"
            f" TRUE AS keyed, CAST(NULL AS STRING) AS currency, CAST(NULL AS STRING) AS account "
            f"FROM {self._from(ref, table)} AS s")
        return _Part(ref, "contract", select, params)

    def _ads_part(self, source: AdsSource, table: bigquery.Table, findings: dict[str, Finding],
                  k: int) -> _Part | None:
        ref = source.table
        columns = {f.name.lower(): f for f in table.schema}
        needed = dict(ADS_COLUMNS[source.kind])
        if source.kind == META_ADS and source.rules and source.match == "name":
            needed["name"] = META_OPTIONAL["name"]
        missing = [c for c in needed.values() if c not in columns]
        if missing:
            findings[ingest.MISSING_COLUMNS].add(_table_example(ref, {"missing": missing, "header": list(columns)}),
                                                 len(missing))
            return None
        col = {role: f"s.`{columns[name].name}`" for role, name in needed.items()}
        kinds = {role: columns[name].field_type.upper() for role, name in needed.items()}
        if source.kind == META_ADS:
            for role, name in META_OPTIONAL.items():
                if name in columns and role not in col:
                    col[role], kinds[role] = f"s.`{columns[name].name}`", columns[name].field_type.upper()
        day, number = _day(col["date"], kinds["date"]), _number(col["cost"], kinds["cost"])
        if day is None or number is None:
            findings[ingest.UNREADABLE_FILES].add(_table_example(ref, {
                "found": f"{kinds['date']} dates or {kinds['cost']} costs",
                "expected": "dates as DATE or STRING, costs as INT64, FLOAT64, NUMERIC or STRING"}))
            return None
        cost = f"({number} / {MICROS})" if source.kind == GOOGLE_ADS else number
        params: list[Any] = []
        from_item = f"{self._from(ref, table)} AS s"
        campaign = _text(col["campaign"], kinds["campaign"])
        name = f"{_text(col['name'], kinds['name'])}" if "name" in col else "CAST(NULL AS STRING)"
        if source.names is not None:
            names_table = self._table(source.names)
            if names_table is None:
                findings[ingest.UNREADABLE_FILES].add(_table_example(source.names, {
                    "found": "no such table", "expected": "the Google Ads campaign table (campaign_id, "
                    "campaign_name) that rules on names read"}))
                return None
            from_item += (f" LEFT JOIN (SELECT campaign_id, MAX(campaign_name) AS campaign_name FROM "
                          f"{self._from(source.names, names_table)} GROUP BY campaign_id) AS n "
                          f"ON n.campaign_id = {col['campaign']}")
            name = "n.campaign_name"
        if source.channel is not None:
            channel = f"@p{k}_channel"
            params.append(_scalar(f"p{k}_channel", "STRING", source.channel))
        else:
            key = name if source.match == "name" else campaign
            channel = "CASE " + " ".join(f"WHEN REGEXP_CONTAINS(IFNULL({key}, ''), @p{k}_pattern{j}) "
                                         f"THEN @p{k}_channel{j}" for j in range(len(source.rules))) + " END"
            params += [_scalar(f"p{k}_pattern{j}", "STRING", p) for j, (p, _) in enumerate(source.rules)]
            params += [_scalar(f"p{k}_channel{j}", "STRING", c) for j, (_, c) in enumerate(source.rules)]
        if "currency" in col:
            currency = _text(col["currency"], kinds["currency"])
        else:
            currency = f"@p{k}_currency"
            params.append(_scalar(f"p{k}_currency", "STRING", source.currency))
        if "account" in col:
            account = _text(col["account"], kinds["account"])
        else:
            account = f"@p{k}_account"
            params.append(_scalar(f"p{k}_account", "STRING", source.account or ref.table))
        date_null, cost_null = _is_null(col["date"], kinds["date"]), _is_null(col["cost"], kinds["cost"])
        finite = f"IFNULL(IS_INF({number}) = FALSE AND IS_NAN({number}) = FALSE, FALSE)"
        select = (
            f"SELECT {k} AS source, {campaign} AS campaign, {name} AS campaign_name, "
            f"{name if source.match == 'name' and source.rules else campaign} AS channel_text, {channel} AS channel, "
            f"FALSE AS channel_null, ({channel}) IS NULL AS unmatched, "
            f"{_text(col['date'], kinds['date'])} AS date_text, IF({date_null}, NULL, {day}) AS day, "
            f"{date_null} AS date_null, (NOT {date_null} AND {day} IS NULL) AS date_bad, "
            f"{_text(col['cost'], kinds['cost'])} AS cost_text, IF({cost_null} OR NOT {finite}, NULL, {cost}) AS cost, "
            f"{cost_null} AS cost_null, (NOT {cost_null} AND NOT {finite}) AS cost_bad, FALSE AS keyed, "
            f"{currency} AS currency, {account} AS account FROM {from_item}")
        return _Part(ref, source.kind, select, params, has_currency=True)

    # ---- the pushed-down queries --------------------------------------------------------------------------

    def _with(self, parts: list[_Part], options: ReadOptions) -> tuple[str, list[Any]]:
        rows = " UNION ALL ".join(f"({p.select})" for p in parts)
        checked = (
            "SELECT *, (channel_null OR date_null OR cost_null) AS is_null, (date_bad OR cost_bad) AS is_bad, "
            "((day IS NOT NULL AND (day < @earliest OR day > @latest)) OR IFNULL(cost > @max_value, FALSE)) AS is_out, "
            "IFNULL(cost < 0, FALSE) AS is_negative, (unmatched OR (@check_channels AND channel IS NOT NULL "
            "AND channel NOT IN UNNEST(@channels))) AS is_unknown FROM normalised")
        params = [
            _array("null_values", "STRING", list(ingest.NULL_VALUES)),
            _scalar("earliest", "DATE", options.earliest_date), _scalar("latest", "DATE", options.latest_date),
            _scalar("max_value", "FLOAT64", float(options.max_value)),
            _scalar("check_channels", "BOOL", options.channels is not None),
            _array("channels", "STRING", list(options.channels or [])),
        ]
        for p in parts:
            params += p.params
        return f"WITH normalised AS ({rows}), checked AS ({checked}) ", params

    def _spend(self, refs: list[tuple[TableRef, bigquery.Table, AdsSource | None]], findings: dict[str, Finding],
               options: ReadOptions) -> tuple[pd.DataFrame, int]:
        """Return the daily spend table and the number of spend rows; note every finding."""

        def parts() -> list[_Part]:
            built = []
            for ref, table, source in refs:
                scratch = ingest.new_findings()  # findings of the columns are noted once, below
                part = (self._contract_part(ref, table, scratch, options, len(built)) if source is None
                        else self._ads_part(source, table, scratch, len(built)))
                if part is not None:
                    built.append(part)
            return built

        for ref, table, source in refs:  # column problems: noted once per table
            if source is None:
                self._contract_part(ref, table, findings, options, 0)
            else:
                self._ads_part(source, table, findings, 0)
        if not parts():
            return _empty_daily(), 0

        def checks() -> tuple[str, list[Any]]:
            # One scan: rows grouped by their duplicate key count every rule and, per keyed group, its repeats.
            head, params = self._with(parts(), options)
            per_key = ", ".join(f"COUNTIF({flag}) AS {rule}" for rule, flag in _FLAGS.items())
            totals = ", ".join(f"SUM({rule}) AS {rule}" for rule in _FLAGS)
            return (head + f"SELECT source, SUM(n) AS spend_rows, {totals}, SUM(IF(keyed_group, n - 1, 0)) AS "
                    f"{ingest.DUPLICATE_ROWS} FROM (SELECT source, COUNT(*) AS n, {per_key}, "
                    "(keyed AND channel IS NOT NULL AND day IS NOT NULL) AS keyed_group FROM checked "
                    "GROUP BY source, campaign, channel, day, keyed_group) GROUP BY source"), params

        built = parts()
        totals: dict[int, dict[str, int]] = {}
        for row in self._query("spend_checks", checks):
            into = totals.setdefault(int(row["source"]), {})
            for key, value in row.items():
                if key != "source":
                    into[key] = into.get(key, 0) + int(value or 0)
        rows = sum(t.get("spend_rows", 0) for t in totals.values())
        if any(p.has_currency for p in built):
            self._currencies(built, findings, options)

        def daily_sql() -> tuple[str, list[Any]]:
            head, params = self._with(parts(), options)
            return (head + "SELECT day, channel, SUM(cost) AS cost FROM checked WHERE NOT (is_null OR is_bad OR "
                    "is_out) AND channel IS NOT NULL GROUP BY day, channel ORDER BY day, channel"), params

        daily = _daily_frame(self._query("spend_daily", daily_sql))
        flagged = [rule for rule in RULES_CHECKED if any(t.get(rule, 0) for t in totals.values())]
        examples: dict[tuple[int, str], list[dict[str, Any]]] = {}
        if flagged:

            def examples_sql() -> tuple[str, list[Any]]:
                head, params = self._with(parts(), options)
                columns = "source, campaign, campaign_name, channel_text, date_text, cost_text, currency, account"
                selects = []
                for rule in flagged:
                    if rule == ingest.DUPLICATE_ROWS:
                        selects.append(
                            f"(SELECT '{rule}' AS rule, source, campaign, CAST(NULL AS STRING) AS campaign_name, "
                            "channel AS channel_text, CAST(day AS STRING) AS date_text, CAST(NULL AS STRING) AS "
                            "cost_text, CAST(NULL AS STRING) AS currency, CAST(NULL AS STRING) AS account, n FROM "
                            "(SELECT source, campaign, channel, day, COUNT(*) AS n FROM checked WHERE keyed AND "
                            "channel IS NOT NULL AND day IS NOT NULL GROUP BY source, campaign, channel, day) "
                            f"WHERE n > 1 ORDER BY source, day, campaign, channel LIMIT {EXAMPLES_PER_RULE})")
                    else:
                        selects.append(f"(SELECT '{rule}' AS rule, {columns}, 1 AS n FROM checked WHERE "
                                       f"{_FLAGS[rule]} ORDER BY source, date_text, campaign, channel_text, cost_text "
                                       f"LIMIT {EXAMPLES_PER_RULE})")
                return head + " UNION ALL ".join(selects), params

            for row in self._query("spend_examples", examples_sql):
                examples.setdefault((int(row["source"]), row["rule"]), []).append(row)
        for k, part in enumerate(built):
            for rule in RULES_CHECKED:
                count = totals.get(k, {}).get(rule, 0)
                if not count:
                    continue
                finding = Finding()
                finding.count = count
                finding.examples = [_row_example(part, row, rule) for row in examples.get((k, rule), [])]
                findings[rule].merge(finding)
        return daily, rows

    def _currencies(self, parts: list[_Part], findings: dict[str, Finding], options: ReadOptions) -> None:
        """Note every ad account whose spend is in another currency than the run's (one currency per run)."""

        def build() -> tuple[str, list[Any]]:
            head, params = self._with(parts, options)
            return (head + "SELECT source, account, currency, COUNT(*) AS n FROM checked WHERE currency IS NOT NULL "
                    "GROUP BY source, account, currency ORDER BY source, account, currency"), params

        accounts = self._query("spend_currencies", build)
        if not accounts:
            return
        by_currency: dict[str, int] = {}
        for row in accounts:
            by_currency[row["currency"]] = by_currency.get(row["currency"], 0) + int(row["n"])
        expected = self.config.currency or sorted(by_currency.items(), key=lambda kv: (-kv[1], kv[0]))[0][0]
        first = next((r for r in accounts if r["currency"] == expected), None)
        where = (f"bigquery.currency = {expected}" if self.config.currency else
                 f"{expected}, the currency of account {first['account']} in {parts[int(first['source'])].ref.id}"
                 if first else expected)
        for row in accounts:
            if row["currency"] != expected:
                findings[ingest.MIXED_CURRENCIES].add(_table_example(parts[int(row["source"])].ref, {
                    "found": f"{row['currency']} on account {row['account']} ({row['n']} rows)",
                    "expected": where}, key={"account": row["account"]}))

    # ---- revenue and controls: one row per period, read whole --------------------------------------------

    def _period_table(self, ref: TableRef, table: bigquery.Table, name: str) -> bytes:
        """Return the whole table as CSV text (header: its column names), ordered by its period columns."""
        names = [f.name for f in table.schema]
        order = [n for key in ("date", "year", "month") for n in names if n.lower() == key and _COLUMN.fullmatch(n)]

        def build() -> tuple[str, list[Any]]:
            by = f" ORDER BY {', '.join(f'`{n}`' for n in order)}" if order else ""
            return f"SELECT * FROM {self._from(ref, table)}{by}", []

        rows = self._query(name, build)
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(names)
        for row in rows:
            writer.writerow([_csv_value(row.get(n)) for n in names])
        return out.getvalue().encode()

    def read(self, options: ReadOptions) -> RawData:
        """Read the dataset's tables (and declared ad tables) into the RawData the CSV reader would return."""
        self._queries = []
        findings = ingest.new_findings()
        read: list[tuple[TableRef, bigquery.Table]] = []  # described once every query ran (time travel known)
        spend_refs: list[tuple[TableRef, bigquery.Table, AdsSource | None]] = []
        ref = TableRef(self.project, self.dataset, SPEND_TABLE)
        spend = self._table(ref)
        if spend is not None:
            spend_refs.append((ref, spend, None))
        for source in self.sources:
            table = self._table(source.table)
            if table is None:
                findings[ingest.UNREADABLE_FILES].add(_table_example(source.table, {
                    "found": "no such table", "expected": f"the {source.kind} table declared in bigquery.sources"}))
                continue
            spend_refs.append((source.table, table, source))
        read += [(ref_, table) for ref_, table, _ in spend_refs]
        daily, spend_rows = self._spend(spend_refs, findings, options)

        snapshot: dict[str, bytes] = {}
        revenue_keys, control_keys = [], []
        for name, keys in ((REVENUE_TABLE, revenue_keys), (CONTROLS_TABLE, control_keys)):
            ref = TableRef(self.project, self.dataset, name)
            table = self._table(ref)
            if table is None:
                continue
            read.append((ref, table))
            snapshot[ref.id] = self._period_table(ref, table, name)
            keys.append(ref.id)
        period_findings = ingest.new_findings()
        memory = _MemorySnapshot(snapshot)
        revenue, form = CsvReader._revenue(memory, revenue_keys, period_findings, options)  # type: ignore[arg-type]
        controls = CsvReader._controls(memory, control_keys, period_findings, options)  # type: ignore[arg-type]
        _name_rows(period_findings)
        for name, finding in period_findings.items():
            findings[name].merge(finding)
        revenue["line"] = 0  # no lines in a table: rows are named by their key
        controls["line"] = 0

        self.cost = self._cost()
        objects = [self._object(ref_, table) for ref_, table in read]
        raw = RawData.build(
            daily_spend=daily, store_uri=self.uri, channels=list(options.channels) if options.channels else None,
            spend_files=[f"bq://{r.id}" for r, _, _ in spend_refs], revenue_files=[f"bq://{k}" for k in revenue_keys],
            objects=objects, spend_rows=spend_rows, revenue_rows=len(revenue),
            bytes_read=self.cost["bytes_processed"], revenue=revenue, findings=findings, revenue_form=form,
            controls=controls, control_files=[f"bq://{k}" for k in control_keys],
            controls_aggregate=dict(options.controls_aggregate))
        log.info("read %d spend rows from %d table(s) as %d day × channel rows, %d %s revenue rows and %d control "
                 "values from %s (%d bytes scanned, %d bytes returned)", spend_rows, len(spend_refs), daily.size,
                 len(revenue), "daily" if form == ingest.DAILY else "monthly", len(controls), self.uri,
                 self.cost["bytes_processed"], self.cost["bytes_returned"])
        return raw

    def _object(self, ref: TableRef, table: bigquery.Table) -> dict[str, Any]:
        """Describe a table for the fingerprint: last-modified time and row count (a new write changes both)."""
        modified = table.modified or table.created
        return {"key": f"bq://{ref.id}", "generation": int(modified.timestamp() * 1000) if modified else 0,
                "checksum": f"rows={table.num_rows};modified={modified.isoformat() if modified else None}",
                "size": int(table.num_bytes or 0), "type": table.table_type,
                "as_of": self.as_of.isoformat() if self._travels(table) else None}

    def _cost(self) -> dict[str, Any]:
        """Return what the queries scanned, billed and returned (for the run's validation report)."""
        total = {key: sum(q[key] for q in self._queries) for key in
                 ("bytes_estimated", "bytes_processed", "bytes_billed", "rows_returned", "bytes_returned")}
        billed = max(total["bytes_billed"], total["bytes_estimated"])
        return {"engine": "bigquery", "uri": self.uri, "as_of": self.as_of.isoformat(),
                "time_travel": self._time_travel, "max_bytes_billed": int(self.config.max_bytes_billed),
                **total, "on_demand_usd": round(billed / TIB * ON_DEMAND_USD_PER_TIB, 6),
                "usd_per_tib": ON_DEMAND_USD_PER_TIB, "queries": list(self._queries)}


# ---- small helpers -------------------------------------------------------------------------------------

def _scalar(name: str, kind: str, value: Any) -> bigquery.ScalarQueryParameter:
    from google.cloud import bigquery

    return bigquery.ScalarQueryParameter(name, kind, value)


def _array(name: str, kind: str, values: list[Any]) -> bigquery.ArrayQueryParameter:
    from google.cloud import bigquery

    return bigquery.ArrayQueryParameter(name, kind, values)


def _empty_daily() -> pd.DataFrame:
    return pd.DataFrame(index=pd.DatetimeIndex([], name="date"), dtype=float)


def _daily_frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """Turn (day, channel, cost) rows into the day × channel table the CSV reader builds."""
    if not rows:
        return _empty_daily()
    frame = pd.DataFrame(rows).pivot(index="day", columns="channel", values="cost").fillna(0.0)
    frame.index = pd.DatetimeIndex(pd.to_datetime(frame.index), name="date")
    frame.columns = pd.Index([str(c) for c in frame.columns])
    return frame.sort_index()[sorted(frame.columns)].astype(float)


def _table_example(ref: TableRef, values: dict[str, Any], key: dict[str, Any] | None = None) -> dict[str, Any]:
    example: dict[str, Any] = {"file": ref.id, "line": None, "values": {k: _plain(v) for k, v in values.items()}}
    if key is not None:
        example["key"] = key
    return example


def _row_example(part: _Part, row: dict[str, Any], rule: str) -> dict[str, Any]:
    """Name a spend row by its table and key (instead of file and line), with its values as stored."""
    if part.kind == "contract":
        key = {"campaign": row["campaign"], "channel": row["channel_text"], "date": row["date_text"]}
        values = dict(key) if rule == ingest.DUPLICATE_ROWS else {**key, "total_cost": row["cost_text"]}
    else:
        key = {"campaign_id": row["campaign"], "date": row["date_text"]}
        values = {**key, "campaign_name": row["campaign_name"], "channel": row["channel_text"],
                  "cost": row["cost_text"], "currency": row["currency"], "account": row["account"]}
    if rule == ingest.DUPLICATE_ROWS:
        values["rows"] = int(row["n"])
    return _table_example(part.ref, values, key=key)


def _name_rows(findings: dict[str, Finding]) -> None:
    """Rename the CSV reader's examples of revenue and controls tables: table and key instead of line numbers."""
    for finding in findings.values():
        for example in finding.examples:
            values = example.get("values", {})
            key = {k: values[k] for k in ("control", "date", "year", "month") if k in values}
            if key:
                example["key"] = key
            example["line"] = None
            if "first_seen" in values:
                values["first_seen"] = str(values["first_seen"]).rsplit(":", 1)[0]
