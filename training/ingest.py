"""Ingest: stream `spend/`, `revenue/` and `controls/` CSV files from the store into daily and monthly totals.

The spend files can hold tens of millions of daily rows, so they are never materialised: pyarrow's
streaming CSV reader yields record batches of the needed columns only (CHANNEL and CAMPAIGN as
dictionary-encoded strings, DATE as date32, TOTAL_COST as float; a file where a date or number does not
parse is read again with DATE and TOTAL_COST as text, to locate the bad values), and each batch is reduced
at once to (day, channel) and (month, channel) sums with numpy. Dates read as text are parsed once per distinct value.
While streaming, everything validation needs is collected: counts and a few examples (file, line,
values) of unparseable, null and negative values, unknown channels, and one 64-bit key per row
(campaign, channel, day) to find duplicate rows over the whole data set at the end. Files are read in
name order; several files are read concurrently, each by its own streaming reader.

Files named `.csv.gz` are decompressed while streaming; any other file under those folders, and any file that
cannot be read as comma-separated UTF-8 text (empty, gzip or ZIP bytes under a `.csv` name, another delimiter),
becomes a named finding: no input is ever dropped silently. Dates, years and values are bounded
(`ReadOptions`), so a typo such as `1925-03-05`, YEAR `-5` or a cost of `1e309` fails validation by file and
line instead of being counted somewhere else.

Revenue is either monthly (`YEAR, MONTH, REVENUE`) or daily (`DATE, REVENUE`), one form per data set;
controls (`controls/*.csv`, optional) are `DATE` or `YEAR, MONTH` plus one numeric column per control.
`period_data` turns what was read into the `PeriodData` a media-mix model is fitted on, at month or ISO-week
grain.

`CsvReader` is one reader of the input; another source (BigQuery) implements `DataReader.read(options)` and
returns the same `RawData` (built with `RawData.build`, which derives the monthly table from daily spend).

Line numbers count the header as line 1 and assume one record per line (no line breaks inside quotes).
"""

from __future__ import annotations

import contextlib
import csv
import gzip
import hashlib
import json
import logging
import math
import re
import threading
import zlib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import date
from typing import IO, TYPE_CHECKING, Any, Protocol

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from training.core.errors import ConfigError
from training.core.store import ObjectInfo, Store
from training.periods import PeriodData, check_grain, period_days, period_end, period_keys, period_start

if TYPE_CHECKING:
    from training.config import Settings

log = logging.getLogger(__name__)

SPEND_PREFIX = "spend"
REVENUE_PREFIX = "revenue"
CONTROLS_PREFIX = "controls"
DATA_SUFFIXES = (".csv", ".csv.gz")  # matched case-insensitively
# The input column contract (header names are matched case-insensitively).
SPEND_COLUMNS = ("campaign", "channel", "date", "total_clicks", "total_cost", "ads_served")
SPEND_REQUIRED = ("channel", "date", "total_cost")
REVENUE_REQUIRED = ("year", "month", "revenue")  # monthly revenue
REVENUE_DAILY_REQUIRED = ("date", "revenue")  # daily revenue
CONTROL_KEYS = (("date",), ("year", "month"))  # a controls file is daily or monthly, plus numeric columns
CONTROL_AGGREGATES = ("mean", "sum")
NULL_VALUES = ["", "NULL", "null", "NA", "N/A", "NaN", "nan", "None"]
MONTHLY, DAILY = "month", "day"  # the two forms of revenue and control files

# Bounds no real export violates; a value outside them is a typo or a broken export (ValidationConfig).
DEFAULT_EARLIEST_DATE = date(1970, 1, 1)
DEFAULT_LATEST_DATE = date(2099, 12, 31)
DEFAULT_MAX_VALUE = 1e15  # largest cost, revenue or |control| of one row
MAX_VALUE_LIMIT = 1e200  # max_value may not exceed this, so sums of any realistic row count stay finite

# Names of what ingest counts; validate.py turns each into a rule with the same name.
UNREADABLE_FILES = "unreadable_files"
IGNORED_FILES = "ignored_files"
MISSING_COLUMNS = "missing_columns"
UNPARSEABLE_VALUES = "unparseable_values"
NULL_VALUES_RULE = "null_values"
NEGATIVE_VALUES = "negative_values"
OUT_OF_RANGE_VALUES = "out_of_range_values"
UNKNOWN_CHANNELS = "unknown_channels"
DUPLICATE_ROWS = "duplicate_rows"
DUPLICATE_REVENUE_MONTHS = "duplicate_revenue_months"
MIXED_FORMS = "mixed_forms"
DUPLICATE_CONTROL_PERIODS = "duplicate_control_periods"
MIXED_CURRENCIES = "mixed_currencies"  # ad accounts of a table source reporting in different currencies
FINDINGS = (UNREADABLE_FILES, IGNORED_FILES, MISSING_COLUMNS, UNPARSEABLE_VALUES, NULL_VALUES_RULE,
            NEGATIVE_VALUES, OUT_OF_RANGE_VALUES, UNKNOWN_CHANNELS, DUPLICATE_ROWS, DUPLICATE_REVENUE_MONTHS,
            MIXED_FORMS, DUPLICATE_CONTROL_PERIODS, MIXED_CURRENCIES)

MAX_EXAMPLES = 20  # examples kept per finding; the report shows at most ValidationConfig.max_examples
BLOCK_SIZE = 4 << 20  # bytes of CSV per record batch
READ_THREADS = 2  # files read concurrently (pyarrow releases the GIL while parsing)
_ISO_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
_NUMBER = r"^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$"
_DICT = pa.dictionary(pa.int32(), pa.string())
# Row key bit layout: campaign id (30 bits) | channel id (10 bits) | day + 2**22 (23 bits).
_DAY_BITS, _CHANNEL_BITS, _DAY_OFFSET = 23, 10, 1 << 22
_BAD_DAY = np.iinfo(np.int64).min  # day lookup value of a null or unparseable date
_EPOCH = date(1970, 1, 1)


@dataclass(frozen=True)
class ReadOptions:
    """What every reader needs to know: channels, aliases, bounds and how controls aggregate."""

    channels: tuple[str, ...] | None = None  # the configured channel list (lower-case), if any
    channel_aliases: dict[str, str] = field(default_factory=dict)  # lower-case name in the data -> channel
    earliest_date: date = DEFAULT_EARLIEST_DATE
    latest_date: date = DEFAULT_LATEST_DATE
    max_value: float = DEFAULT_MAX_VALUE
    controls_aggregate: dict[str, str] = field(default_factory=dict)  # control -> "mean" | "sum"

    @classmethod
    def from_settings(cls, settings: Settings) -> ReadOptions:
        """Build the options from pipeline `Settings`."""
        v = settings.validation
        return cls(channels=tuple(c.lower() for c in settings.channels) if settings.channels else None,
                   channel_aliases=normalise_aliases(settings.channel_aliases),
                   earliest_date=v.earliest_date, latest_date=v.latest_date, max_value=v.max_value,
                   controls_aggregate={k.strip().lower(): a for k, a in settings.controls.aggregate.items()})

    def channel_name(self, value: str) -> str:
        """Return the channel a CHANNEL value stands for: trimmed, lower-cased, then through the aliases."""
        name = value.strip().lower()
        return self.channel_aliases.get(name, name)


def normalise_aliases(aliases: dict[str, str] | None) -> dict[str, str]:
    """Return `channel_aliases` with trimmed, lower-cased names on both sides."""
    return {str(k).strip().lower(): str(v).strip().lower() for k, v in (aliases or {}).items()}


@dataclass
class Finding:
    """How often one kind of problem occurred, with the first few occurrences."""

    count: int = 0
    examples: list[dict[str, Any]] = field(default_factory=list)

    def add(self, example: dict[str, Any], count: int = 1) -> None:
        """Count `count` occurrences and keep `example` if there is room."""
        self.count += count
        if len(self.examples) < MAX_EXAMPLES:
            self.examples.append(example)

    def merge(self, other: Finding) -> None:
        """Add another part's count and examples (in order) to this one."""
        self.count += other.count
        self.examples.extend(other.examples[: max(0, MAX_EXAMPLES - len(self.examples))])


def new_findings() -> dict[str, Finding]:
    """Return one empty Finding per name in FINDINGS."""
    return {name: Finding() for name in FINDINGS}


def _empty_revenue() -> pd.DataFrame:
    return _revenue_frame([], [], "", [])


def _empty_controls() -> pd.DataFrame:
    return pd.DataFrame({"control": pd.Series([], dtype=str), "form": pd.Series([], dtype=str),
                         "period": pd.Series([], dtype=str), "value": pd.Series([], dtype=float),
                         "file": pd.Series([], dtype=str), "line": pd.Series([], dtype=np.int64)})


@dataclass
class RawData:
    """Everything a reader read: daily and monthly spend, revenue, controls, input objects and the problems seen.

    For a file source, `spend_files`/`revenue_files`/`control_files` are object keys and `objects` their
    (key, generation, checksum, size); a table source names its tables there, with a checksum that changes
    when the table does (last-modified time, row count), so `fingerprint` means the same for both.
    """

    store_uri: str
    channels: list[str] | None  # the configured channel list, if any
    spend_files: list[str]
    revenue_files: list[str]
    objects: list[dict[str, Any]]
    spend_rows: int
    revenue_rows: int
    bytes_read: int
    monthly_spend: pd.DataFrame  # index "YYYY-MM" sorted, one column per channel seen, summed TOTAL_COST
    revenue: pd.DataFrame  # parseable revenue rows: month, revenue, file, line (read order); daily: + date
    findings: dict[str, Finding]
    daily_spend: pd.DataFrame = field(default_factory=pd.DataFrame)  # index = days with spend rows (sorted)
    revenue_form: str = MONTHLY  # MONTHLY (YEAR, MONTH) or DAILY (DATE)
    controls: pd.DataFrame = field(default_factory=_empty_controls)  # control, form, period, value, file, line
    control_files: list[str] = field(default_factory=list)
    controls_aggregate: dict[str, str] = field(default_factory=dict)

    @classmethod
    def build(cls, *, daily_spend: pd.DataFrame, monthly_spend: pd.DataFrame | None = None,
              **fields: Any) -> RawData:
        """Build RawData from what a reader read; the monthly table is summed from daily spend when not given."""
        if monthly_spend is None:
            monthly_spend = monthly_from_daily(daily_spend)
        return cls(daily_spend=daily_spend, monthly_spend=monthly_spend, **fields)

    @property
    def fingerprint(self) -> str:
        """Return the sha256 hex over the sorted (key, generation, checksum) of the input objects."""
        triples = sorted((o["key"], o["generation"], o["checksum"]) for o in self.objects)
        return hashlib.sha256(json.dumps(triples).encode()).hexdigest()

    def daily_revenue(self) -> pd.Series:
        """Return revenue per day (first row of a repeated date), sorted; empty for monthly revenue."""
        if self.revenue_form != DAILY or not len(self.revenue):
            return pd.Series([], index=pd.DatetimeIndex([], name="date"), dtype=float, name="revenue")
        first = self.revenue.drop_duplicates("date", keep="first")
        return pd.Series(first["revenue"].to_numpy(dtype=float), index=pd.DatetimeIndex(first["date"], name="date"),
                         name="revenue").sort_index()

    def revenue_by_month(self) -> pd.Series:
        """Return revenue per month (first row of a repeated month), sorted by month.

        Daily revenue counts a month only when every one of its days has revenue (summed).
        """
        if self.revenue_form == DAILY:
            return complete_sums(self.daily_revenue(), "month").rename_axis("month")
        first = self.revenue.drop_duplicates("month", keep="first")
        return pd.Series(first["revenue"].to_numpy(), index=pd.Index(first["month"], name="month"),
                         name="revenue").sort_index()


def monthly_from_daily(daily: pd.DataFrame) -> pd.DataFrame:
    """Sum a day × channel table into the month × channel table (index "YYYY-MM")."""
    if daily.empty:
        return pd.DataFrame(index=pd.Index([], name="month", dtype=str), dtype=float)
    monthly = daily.groupby(np.asarray(pd.DatetimeIndex(daily.index).strftime("%Y-%m"))).sum()
    return monthly.rename_axis("month").sort_index()[sorted(daily.columns)].astype(float)


def complete_sums(daily: pd.Series, grain: str) -> pd.Series:
    """Sum a per-day series into periods of `grain`, keeping only periods with every day present."""
    if daily.empty:
        return pd.Series([], index=pd.Index([], dtype=str), dtype=float, name=daily.name)
    keys = period_keys(daily.index, grain)
    grouped = daily.groupby(keys)
    sums, counts = grouped.sum(), grouped.size()
    full = [k for k in sums.index if counts[k] == period_days(k, grain)]
    return sums.loc[full].sort_index()


@dataclass
class TrainingData:
    """The monthly table the model is fitted on, and where it came from."""

    features: pd.DataFrame
    revenue: pd.Series
    channels: list[str]
    months_without_revenue: list[str]
    spend_rows: int
    revenue_rows: int
    fingerprint: str
    objects: list[dict[str, Any]]


def _plain(value: Any) -> Any:
    """Return `value` as JSON-able plain data (None for missing, text for an infinite number)."""
    if isinstance(value, np.generic):
        value = value.item()
    if value is None or value is pd.NA or (isinstance(value, float) and np.isnan(value)):
        return None
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)  # "inf": JSON has no infinity, and the report must still be written
    return value if isinstance(value, str | int | float | bool | list) else str(value)


def _example(key: str, line: int | None, values: dict[str, Any]) -> dict[str, Any]:
    return {"file": key, "line": line, "values": {k: _plain(v) for k, v in values.items()}}


def _invalid_row(key: str, row: pacsv.InvalidRow) -> dict[str, Any]:
    """Return the example of a row with the wrong number of fields (the header was read apart: line + 1)."""
    return _example(key, None if row.number is None else row.number + 1, {
        "text": row.text, "fields": row.actual_columns, "expected_fields": row.expected_columns})


def _header_problem(first: bytes) -> tuple[str, str] | None:
    """Return (what the first line shows, what was expected) when it is no comma-separated UTF-8 header."""
    if first.startswith(b"\x1f\x8b"):
        return "gzip-compressed bytes (1f 8b) under a .csv name", "CSV text, or the name ending in .csv.gz"
    if first.startswith(b"PK\x03\x04"):
        return "a ZIP archive (an .xlsx workbook or a .zip)", "CSV text (export the sheet as CSV)"
    if not first.strip(b"\r\n\t ,"):
        what = "an empty file (0 bytes)" if not first else f"an empty first line {first[:20]!r}"
        return what, "a header line, e.g. CAMPAIGN,CHANNEL,DATE,... or YEAR,MONTH,REVENUE"
    try:
        line = first.decode("utf-8-sig").strip("\r\n")
    except UnicodeDecodeError as exc:
        return f"bytes that are not UTF-8 text ({exc.reason} at byte {exc.start})", "UTF-8 CSV text"
    for delimiter, name in ((";", "semicolon"), ("\t", "tab"), ("|", "pipe")):
        if delimiter in line and "," not in line:
            return f"a {name}-delimited header {line[:80]!r}", "comma-separated values"
    return None


def _header(first: bytes) -> list[str]:
    line = first.decode("utf-8-sig").strip("\r\n")
    return [name.strip().lower() for name in next(csv.reader([line]), [])]


@contextlib.contextmanager
def _open_csv(store: InputSnapshot, key: str, findings: dict[str, Finding]
              ) -> Iterator[tuple[IO[bytes], list[str]] | None]:
    """Open `key` (decompressing `.gz`), read its header line; yield (file, header), or None after noting why not."""
    with contextlib.ExitStack() as stack:
        fh: IO[bytes] = stack.enter_context(store.open_read(key))
        if key.lower().endswith(".gz"):
            magic = fh.read(2)
            fh.seek(0)
            if magic == b"\x1f\x8b":
                fh = stack.enter_context(gzip.GzipFile(fileobj=fh, mode="rb"))  # type: ignore[arg-type]
            else:  # served decompressed already (GCS decompressive transcoding of a gzip-encoded object)
                log.info("%s is named .gz but holds no gzip data: read as plain CSV", key)
        try:
            first = fh.readline()
        except (OSError, EOFError, zlib.error) as exc:  # gzip.BadGzipFile is an OSError
            problem: tuple[str, str] | None = (f"a damaged gzip stream ({exc})",
                                               "a complete gzip-compressed CSV file (.csv.gz)")
        else:
            problem = _header_problem(first)
        if problem is not None:
            findings[UNREADABLE_FILES].add(_example(key, 1, {"found": problem[0], "expected": problem[1]}))
            yield None
        else:
            yield fh, _header(first)


def _missing(key: str, header: list[str], required: tuple[str, ...], findings: dict[str, Finding]) -> bool:
    missing = [c for c in required if c not in header]
    if missing:
        findings[MISSING_COLUMNS].add(_example(key, 1, {"missing": missing, "header": header}), len(missing))
    return bool(missing)


def _month_name(month_index: int) -> str:
    return f"{1970 + month_index // 12:04d}-{month_index % 12 + 1:02d}"


def _indices(column: pa.DictionaryArray) -> np.ndarray:
    """Return a dictionary column's indices, with nulls pointing at one past the last value."""
    if column.null_count:
        return pc.fill_null(column.indices, len(column.dictionary)).to_numpy()
    return column.indices.to_numpy()


def _costs_from_text(column: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """Convert TOTAL_COST text to float (NaN where null or not a number) and say which were not numbers."""
    null = column.is_null().to_numpy(zero_copy_only=False)
    column = pc.utf8_trim_whitespace(column)  # as the CSV reader's own number conversion does
    try:
        cost = pc.cast(column, pa.float64()).to_numpy(zero_copy_only=False)
    except pa.ArrowInvalid:  # some text is not a number: find which, convert the rest
        number = pc.fill_null(pc.match_substring_regex(column, _NUMBER), True)
        cost = pc.cast(pc.if_else(number, column, None), pa.float64()).to_numpy(zero_copy_only=False)
    bad = ~null & ~np.isfinite(cost)
    return np.where(bad, np.nan, cost), bad


class _ReadAsText(Exception):
    """A typed read found a value to report as written (e.g. `1e309` read as inf): read the file as text."""


@dataclass
class _FilePart:
    """What one spend file contributed; merged into the whole only once the file was read to its end."""

    key: str
    number: int
    rows: int = 0
    sums: dict[tuple[int, int], float] = field(default_factory=dict)  # (month index, channel id) -> cost
    day_first: int = 0  # days since epoch of day_cost's first row
    day_cost: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))  # day × channel id -> cost
    day_rows: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), dtype=np.int64))  # rows per cell
    row_keys: list[np.ndarray] = field(default_factory=list)  # one per batch, in row order
    sorted_keys: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=np.int64))
    findings: dict[str, Finding] = field(default_factory=new_findings)

    def add_days(self, first: int, cost: np.ndarray, rows: np.ndarray) -> None:
        """Add a batch's day × channel sums (starting at day `first`), growing the part's table as needed."""
        if not self.day_cost.size:
            self.day_first, self.day_cost, self.day_rows = first, cost, rows
            return
        start = min(self.day_first, first)
        end = max(self.day_first + len(self.day_cost), first + len(cost))
        width = max(self.day_cost.shape[1], cost.shape[1])
        if (start, end, width) != (self.day_first, self.day_first + len(self.day_cost), self.day_cost.shape[1]):
            grown_cost, grown_rows = np.zeros((end - start, width)), np.zeros((end - start, width), dtype=np.int64)
            at = self.day_first - start
            grown_cost[at:at + len(self.day_cost), :self.day_cost.shape[1]] = self.day_cost
            grown_rows[at:at + len(self.day_rows), :self.day_rows.shape[1]] = self.day_rows
            self.day_first, self.day_cost, self.day_rows = start, grown_cost, grown_rows
        at = first - self.day_first
        self.day_cost[at:at + len(cost), :cost.shape[1]] += cost
        self.day_rows[at:at + len(rows), :rows.shape[1]] += rows

    def report(self, name: str, mask: np.ndarray, batch: pa.RecordBatch) -> None:
        """Count the rows of `batch` flagged in `mask` under finding `name`, keeping a few as examples."""
        count = int(np.count_nonzero(mask))
        if not count:
            return
        finding = self.findings[name]
        for i in np.flatnonzero(mask)[: max(0, MAX_EXAMPLES - len(finding.examples))]:
            row = {n: batch.column(n)[int(i)].as_py() for n in batch.schema.names}
            finding.examples.append(_example(self.key, self.rows + 2 + int(i), row))
        finding.count += count


class _SpendScan:
    """Reads spend files into per-file parts, sharing the channel, campaign and date tables."""

    def __init__(self, options: ReadOptions):
        self.options = options
        self.configured = set(options.channels) if options.channels else None
        self.earliest = (options.earliest_date - _EPOCH).days
        self.latest = (options.latest_date - _EPOCH).days
        self.lock = threading.Lock()
        self.channel_ids: dict[str, int] = {}
        self.campaign_ids: dict[str | None, int] = {None: 0}
        self.dates: dict[str, int] = {}  # date text -> days since epoch (_BAD_DAY if it does not parse)

    def _lookup(self, table: dict, dictionary: pa.Array, channel: bool, null_id: int) -> np.ndarray:
        """Map a batch's dictionary values to global ids (adding new ones); the last slot is for null."""
        values = dictionary.to_pylist()
        with self.lock:
            ids = [table.setdefault(self.options.channel_name(v) if channel else v, len(table)) for v in values]
        return np.array(ids + [null_id], dtype=np.int64)

    def _dates(self, column: pa.Array) -> tuple[np.ndarray, np.ndarray]:
        """Return per-row indices into a day lookup (days since epoch; the last slot, for null, is _BAD_DAY).

        A date32 column (fast path) indexes a range of days; a dictionary column (text) its distinct
        values, each parsed once.
        """
        if pa.types.is_date32(column.type):
            days = column.cast(pa.int32())
            bounds = pc.min_max(days)
            low, high = bounds["min"].as_py(), bounds["max"].as_py()
            low = 0 if low is None else low
            span = np.arange(low, low if high is None else high + 1, dtype=np.int64)
            if column.null_count:
                days = pc.fill_null(days, low + len(span))
            return days.to_numpy().astype(np.int64) - low, np.append(span, _BAD_DAY)
        parsed = []
        for text in column.dictionary.to_pylist():
            known = self.dates.get(text)
            if known is None:
                try:
                    if not _ISO_DATE.fullmatch(text):
                        raise ValueError(text)
                    known = (date.fromisoformat(text) - _EPOCH).days
                except ValueError:
                    known = _BAD_DAY
                self.dates[text] = known
            parsed.append(known)
        return _indices(column), np.array(parsed + [_BAD_DAY], dtype=np.int64)

    def _scan_batch(self, part: _FilePart, batch: pa.RecordBatch) -> None:
        """Reduce one record batch to daily and monthly sums and row keys, noting bad values."""
        channel_col, date_col, cost_col = (batch.column(n) for n in ("channel", "date", "total_cost"))
        chan = self._lookup(self.channel_ids, channel_col.dictionary, True, -1)[_indices(channel_col)]
        date_idx, day_lut = self._dates(date_col)
        no_day, null_slot = day_lut == _BAD_DAY, len(day_lut) - 1
        if pa.types.is_floating(cost_col.type):
            cost = cost_col.to_numpy(zero_copy_only=False)
            bad_cost = None
            if np.isinf(cost).any():  # "inf" or "1e309" parse as infinity: report the text as written
                raise _ReadAsText("a TOTAL_COST is infinite")
        else:
            cost, bad_cost = _costs_from_text(cost_col)

        # Each check is one cheap test on a clean batch; masks are only built when something is wrong.
        null = bad = out = None
        if channel_col.null_count or date_col.null_count or cost_col.null_count:
            null = (chan < 0) | (date_idx == null_slot) | cost_col.is_null().to_numpy(
                zero_copy_only=False)
            part.report(NULL_VALUES_RULE, null, batch)
        if no_day[:-1].any() or (bad_cost is not None and bad_cost.any()):
            bad = np.logical_or(no_day[date_idx] & (date_idx < null_slot),
                                False if bad_cost is None else bad_cost)
            part.report(UNPARSEABLE_VALUES, bad, batch)
        early_late = ~no_day & ((day_lut < self.earliest) | (day_lut > self.latest))
        too_big = cost > self.options.max_value
        if early_late.any() or too_big.any():
            out = early_late[date_idx] | too_big
            part.report(OUT_OF_RANGE_VALUES, out, batch)
        negative = cost < 0
        if negative.any():
            part.report(NEGATIVE_VALUES, negative, batch)
        if self.configured is not None:
            with self.lock:
                known = np.array([name in self.configured for name in self.channel_ids] + [True])
            if not known.all():
                part.report(UNKNOWN_CHANNELS, ~known[chan], batch)

        if "campaign" in batch.schema.names:
            campaign_col = batch.column("campaign")
            camp = self._lookup(self.campaign_ids, campaign_col.dictionary, False, 0)[_indices(campaign_col)]
        else:
            camp = 0
        row_key = (camp << (_CHANNEL_BITS + _DAY_BITS)) | (np.maximum(chan, 0) << _DAY_BITS) | (
            np.where(no_day, 0, day_lut) + _DAY_OFFSET)[date_idx]
        usable = None
        if null is not None or bad is not None or out is not None:
            # A row without channel or date gets a unique negative key (file number, row number): keys
            # stay aligned with row numbers and never collide.
            unkeyed = np.flatnonzero((chan < 0) | no_day[date_idx])
            row_key[unkeyed] = -1 - ((part.number << 40) | (part.rows + unkeyed))
            usable = ~(np.logical_or(False if null is None else null, False if bad is None else bad)
                       | (False if out is None else out))
        part.row_keys.append(row_key)

        valid_day = ~no_day & ~early_late
        if not valid_day.any():
            part.rows += batch.num_rows
            return
        width = len(self.channel_ids)
        low_day, high_day = int(day_lut[valid_day].min()), int(day_lut[valid_day].max())
        day = np.clip(day_lut, low_day, high_day) - low_day  # invalid days are masked out by `usable`
        month_lut = (day_lut.clip(low_day, high_day).astype("datetime64[D]").astype("datetime64[M]")
                     .astype(np.int64))
        low = int(month_lut[valid_day].min())
        cell = (month_lut - low)[date_idx] * width + chan
        day_cell = day[date_idx] * width + chan
        weights = cost
        if usable is not None:
            cell, day_cell, weights = cell[usable], day_cell[usable], cost[usable]
        sums, rows = np.bincount(cell, weights=weights), np.bincount(cell)
        for c in np.flatnonzero(rows):
            month, channel = divmod(int(c), width)
            part.sums[(low + month, channel)] = part.sums.get((low + month, channel), 0.0) + float(sums[c])
        size = (high_day - low_day + 1) * width
        part.add_days(low_day, np.bincount(day_cell, weights=weights, minlength=size).reshape(-1, width),
                      np.bincount(day_cell, minlength=size).reshape(-1, width))
        part.rows += batch.num_rows

    def _read_file(self, store: InputSnapshot, key: str, number: int, as_text: bool) -> _FilePart:
        part = _FilePart(key, number)
        with _open_csv(store, key, part.findings) as opened:
            if opened is None:
                return part
            fh, header = opened
            if _missing(key, header, SPEND_REQUIRED, part.findings):
                return part

            def bad_row(row: pacsv.InvalidRow) -> str:
                part.findings[UNPARSEABLE_VALUES].add(_invalid_row(key, row))
                return "skip"

            try:
                reader = pacsv.open_csv(
                    fh,
                    # Serial within a file (files are read concurrently) so bad rows keep their line numbers.
                    read_options=pacsv.ReadOptions(column_names=header, block_size=BLOCK_SIZE, use_threads=False),
                    parse_options=pacsv.ParseOptions(invalid_row_handler=bad_row),
                    convert_options=pacsv.ConvertOptions(
                        include_columns=[c for c in ("campaign", "channel", "date", "total_cost") if c in header],
                        null_values=NULL_VALUES, strings_can_be_null=True,
                        column_types={"campaign": _DICT, "channel": _DICT,
                                      "date": _DICT if as_text else pa.date32(),
                                      "total_cost": pa.string() if as_text else pa.float64()}),
                )
                for batch in reader:
                    self._scan_batch(part, batch)
            except pa.ArrowInvalid as exc:
                if "Empty CSV file" in str(exc):
                    return part
                if not as_text:
                    raise
                part.findings[UNPARSEABLE_VALUES].add(_example(key, None, {"error": str(exc)}))
            except (OSError, EOFError, zlib.error) as exc:  # a .csv.gz cut short or corrupt after its header
                part.findings[UNREADABLE_FILES].add(_example(key, None, {
                    "found": f"a damaged gzip stream ({exc})", "expected": "a complete gzip-compressed CSV file"}))
        return part

    def _read(self, store: InputSnapshot, key: str, number: int) -> _FilePart:
        """Read one spend file: fast path with typed DATE and TOTAL_COST, again as text if a value is bad."""
        try:
            return self._read_file(store, key, number, as_text=False)
        except (pa.ArrowInvalid, _ReadAsText) as exc:
            log.info("reading %s again with DATE and TOTAL_COST as text to locate bad values: %s", key, exc)
            return self._read_file(store, key, number, as_text=True)

    def scan_file(self, store: InputSnapshot, key: str, number: int) -> _FilePart:
        """Read one spend file and sort its row keys (in the reading thread, so files sort in parallel)."""
        part = self._read(store, key, number)
        if part.row_keys:
            part.sorted_keys = np.concatenate(part.row_keys)
            part.sorted_keys.sort()
            part.row_keys = []
        return part

    def duplicates(self, store: InputSnapshot, parts: list[_FilePart]) -> Finding:
        """Count rows repeating an earlier (campaign, channel, date) over all files and locate a few.

        Only the sorted keys are kept while reading; in the rare case of duplicates, the files holding
        the first few are read again to find their line numbers.
        """
        finding = Finding()
        merged = np.concatenate([p.sorted_keys for p in parts] or [np.empty(0, dtype=np.int64)])
        merged.sort()  # runs that are already sorted: cheap
        repeat = merged[1:] == merged[:-1]
        finding.count = int(np.count_nonzero(repeat))
        if not finding.count:
            return finding
        wanted = np.unique(merged[1:][repeat])[:MAX_EXAMPLES]
        del merged, repeat
        seen: dict[int, list[tuple[str, int]]] = {}
        for part in parts:
            at = np.minimum(np.searchsorted(part.sorted_keys, wanted), max(len(part.sorted_keys) - 1, 0))
            if not len(part.sorted_keys) or not (part.sorted_keys[at] == wanted).any():
                continue
            start = 0
            for chunk in self._read(store, part.key, part.number).row_keys:
                for i in np.flatnonzero(np.isin(chunk, wanted)):
                    seen.setdefault(int(chunk[i]), []).append((part.key, start + int(i) + 2))
                start += len(chunk)
        campaigns = {v: k for k, v in self.campaign_ids.items()}
        channels = {v: k for k, v in self.channel_ids.items()}
        for code in wanted.tolist():
            places = seen[code]
            day = (code & ((1 << _DAY_BITS) - 1)) - _DAY_OFFSET
            values = {"campaign": campaigns[code >> (_DAY_BITS + _CHANNEL_BITS)],
                      "channel": channels[(code >> _DAY_BITS) & ((1 << _CHANNEL_BITS) - 1)],
                      "date": str(np.datetime64(day, "D")), "first_seen": f"{places[0][0]}:{places[0][1]}"}
            for key, line in places[1:]:
                if len(finding.examples) < MAX_EXAMPLES:
                    finding.examples.append(_example(key, line, values))
        return finding

    def monthly(self, parts: list[_FilePart]) -> pd.DataFrame:
        """Return the summed cost as a month × channel table (0 where a channel had no rows)."""
        sums: dict[tuple[int, int], float] = {}
        for part in parts:
            for cell, value in part.sums.items():
                sums[cell] = sums.get(cell, 0.0) + value
        if not sums:
            return pd.DataFrame(index=pd.Index([], name="month", dtype=str), dtype=float)
        frame = pd.Series(sums).rename_axis(["month", "channel"]).unstack(fill_value=0.0)
        names = {v: k for k, v in self.channel_ids.items()}
        frame.index = pd.Index([_month_name(m) for m in frame.index], name="month")
        frame.columns = [names[c] for c in frame.columns]
        return frame.sort_index()[sorted(frame.columns)].astype(float)

    def daily(self, parts: list[_FilePart]) -> pd.DataFrame:
        """Return the summed cost as a day × channel table over the days that have spend rows."""
        total = _FilePart("", -1)
        for part in parts:
            if part.day_cost.size:
                total.add_days(part.day_first, part.day_cost, part.day_rows)
        names = {v: k for k, v in self.channel_ids.items()}
        if not total.day_cost.size:
            return pd.DataFrame(index=pd.DatetimeIndex([], name="date"), dtype=float)
        filled = total.day_rows.sum(axis=1) > 0
        seen = np.flatnonzero(total.day_rows.sum(axis=0) > 0)
        days = (np.flatnonzero(filled) + total.day_first).astype("datetime64[D]")
        frame = pd.DataFrame(total.day_cost[filled][:, seen], columns=[names[int(c)] for c in seen],
                             index=pd.DatetimeIndex(days, name="date"))
        return frame[sorted(frame.columns)].astype(float)


def _revenue_frame(months: list[str], revenue: Any, key: str, lines: Any, days: Any = None) -> pd.DataFrame:
    frame = pd.DataFrame({"month": pd.Series(months, dtype=str), "revenue": np.asarray(revenue, dtype=float),
                          "file": key, "line": np.asarray(lines, dtype=np.int64)})
    if days is not None:
        frame.insert(0, "date", pd.to_datetime(pd.Series(days, dtype=str), format="%Y-%m-%d"))
    return frame


def _read_table(store: InputSnapshot, key: str, findings: dict[str, Finding], required: Any
                ) -> tuple[list[str], pd.DataFrame] | None:
    """Read one small file (revenue, controls) whole as text; `required(header)` returns the missing columns.

    Returns (header, text table with a 0-based row number per line - 2), or None if it cannot be used.
    """
    with _open_csv(store, key, findings) as opened:
        if opened is None:
            return None
        fh, header = opened
        missing = required(header)
        if missing:
            findings[MISSING_COLUMNS].add(_example(key, 1, {"missing": missing, "header": header}), len(missing))
            return None
        try:
            body = fh.read()
        except (OSError, EOFError, zlib.error) as exc:
            findings[UNREADABLE_FILES].add(_example(key, None, {
                "found": f"a damaged gzip stream ({exc})", "expected": "a complete gzip-compressed CSV file"}))
            return None
    if not body.strip():
        return header, pd.DataFrame(columns=header, dtype=object)

    def bad_row(row: pacsv.InvalidRow) -> str:
        findings[UNPARSEABLE_VALUES].add(_invalid_row(key, row))
        return "skip"

    try:
        table = pacsv.read_csv(
            pa.py_buffer(body), read_options=pacsv.ReadOptions(column_names=header, use_threads=False),
            parse_options=pacsv.ParseOptions(invalid_row_handler=bad_row),
            convert_options=pacsv.ConvertOptions(null_values=NULL_VALUES, strings_can_be_null=True,
                                                 column_types={c: pa.string() for c in header}))
    except pa.ArrowInvalid as exc:  # e.g. bytes that are not UTF-8
        findings[UNPARSEABLE_VALUES].add(_example(key, None, {"error": str(exc)}))
        return None
    return header, table.to_pandas()


def _parse_days(text: pd.Series) -> pd.Series:
    """Parse ISO dates (YYYY-MM-DD, exactly); NaT where the text is not one."""
    iso = text.str.strip().str.fullmatch(_ISO_DATE.pattern).fillna(False).astype(bool)
    return pd.to_datetime(text.str.strip().where(iso), format="%Y-%m-%d", errors="coerce")


def _period_columns(text: pd.DataFrame, form: str, options: ReadOptions
                    ) -> tuple[pd.Series, pd.Series, pd.Series]:
    """Return (period key text, unparseable mask, out-of-range mask) of the DATE or YEAR/MONTH columns."""
    if form == DAILY:
        days = _parse_days(text["date"])
        bad = days.isna() & text["date"].notna()
        early, late = pd.Timestamp(options.earliest_date), pd.Timestamp(options.latest_date)
        out = ~bad & days.notna() & ((days < early) | (days > late))
        return days.dt.strftime("%Y-%m-%d"), bad, out
    number = text[["year", "month"]].apply(pd.to_numeric, errors="coerce")
    year, month = number["year"], number["month"]
    bad = ((number.isna() & text[["year", "month"]].notna()).any(axis=1) | ~month.isin(range(1, 13))
           | (year % 1 != 0)) & text[["year", "month"]].notna().all(axis=1)
    index = year * 12 + month - 1
    first = options.earliest_date.year * 12 + options.earliest_date.month - 1
    last = options.latest_date.year * 12 + options.latest_date.month - 1
    out = ~bad & year.notna() & ((index < first) | (index > last))
    ok = ~bad & ~out & year.notna() & month.notna()
    keys = pd.Series([f"{int(y):04d}-{int(m):02d}" if k else None for y, m, k in zip(year, month, ok, strict=True)],
                     index=text.index, dtype=object)
    return keys, bad, out


def _note_rows(findings: dict[str, Finding], name: str, mask: pd.Series, text: pd.DataFrame, key: str) -> None:
    for i in np.flatnonzero(mask.to_numpy()):
        findings[name].add(_example(key, int(i) + 2, text.iloc[i].to_dict()))


def _revenue_form(header: list[str]) -> str | None:
    if all(c in header for c in REVENUE_REQUIRED):
        return MONTHLY
    if all(c in header for c in REVENUE_DAILY_REQUIRED):
        return DAILY
    return None


def _read_revenue(store: InputSnapshot, key: str, findings: dict[str, Finding], options: ReadOptions
                  ) -> tuple[str | None, pd.DataFrame]:
    """Read one (small) revenue file whole; return its form and its parseable rows with file and line."""

    def missing(header: list[str]) -> list[str]:
        if _revenue_form(header):
            return []
        daily = "date" in header and "year" not in header
        return [c for c in (REVENUE_DAILY_REQUIRED if daily else REVENUE_REQUIRED) if c not in header]

    read = _read_table(store, key, findings, missing)
    if read is None:
        return None, _empty_revenue()
    header, text = read
    form = _revenue_form(header)
    columns = ["date", "revenue"] if form == DAILY else list(REVENUE_REQUIRED)
    text = text[columns] if len(text) else pd.DataFrame(columns=columns, dtype=object)
    if not len(text):
        return form, _revenue_frame([], [], key, [], [] if form == DAILY else None)
    periods, bad, out = _period_columns(text, form, options)
    revenue = pd.to_numeric(text["revenue"], errors="coerce")
    null = text.isna().any(axis=1)
    bad = (bad | (revenue.isna() & text["revenue"].notna()) | (revenue.notna() & ~np.isfinite(revenue))) & ~null
    out = (out | (revenue > options.max_value)) & ~null & ~bad
    for name, mask in ((NULL_VALUES_RULE, null), (UNPARSEABLE_VALUES, bad), (OUT_OF_RANGE_VALUES, out),
                       (NEGATIVE_VALUES, (revenue < 0) & ~bad)):
        _note_rows(findings, name, mask, text, key)
    good = ~null & ~bad & ~out
    lines = np.flatnonzero(good.to_numpy()) + 2
    if form == DAILY:
        days = periods[good]
        return form, _revenue_frame(list(days.str[:7]), revenue[good], key, lines, list(days))
    return form, _revenue_frame(list(periods[good]), revenue[good], key, lines)


def _read_controls(store: InputSnapshot, key: str, findings: dict[str, Finding], options: ReadOptions
                   ) -> pd.DataFrame:
    """Read one controls file: DATE or YEAR, MONTH plus numeric columns; return long rows with file and line."""

    def missing(header: list[str]) -> list[str]:
        keys = next((k for k in CONTROL_KEYS if all(c in header for c in k)), None)
        if keys is None:
            return ["date (or year, month)"]
        return [] if [c for c in header if c not in keys and c] else ["a control column"]

    read = _read_table(store, key, findings, missing)
    if read is None or not len(read[1]):
        return _empty_controls()
    header, text = read
    form = DAILY if "date" in header and not ("year" in header and "month" in header) else MONTHLY
    keys = ("date",) if form == DAILY else ("year", "month")
    names = [c for c in header if c not in keys and c]
    periods, bad_key, out_key = _period_columns(text, form, options)
    values = text[names].apply(pd.to_numeric, errors="coerce")
    null = text[list(keys) + names].isna().any(axis=1)
    bad = (bad_key | ((values.isna() & text[names].notna()) | (values.notna() & ~np.isfinite(values))).any(axis=1)
           ) & ~null
    out = (out_key | (values.abs() > options.max_value).any(axis=1)) & ~null & ~bad
    for name, mask in ((NULL_VALUES_RULE, null), (UNPARSEABLE_VALUES, bad), (OUT_OF_RANGE_VALUES, out)):
        _note_rows(findings, name, mask, text, key)
    good = (~null & ~bad & ~out).to_numpy()
    lines = np.flatnonzero(good) + 2
    parts = [pd.DataFrame({"control": name, "form": form, "period": periods[good].to_numpy(),
                           "value": values.loc[good, name].to_numpy(dtype=float), "file": key, "line": lines})
             for name in names]
    return pd.concat(parts, ignore_index=True) if parts else _empty_controls()


class InputSnapshot:
    """The input objects as listed when ingest started: each is read at the generation the fingerprint names,
    so a file rewritten mid-run fails the run (`ObjectChanged`) instead of mixing old and new data."""

    def __init__(self, store: Store, infos: list[ObjectInfo]):
        self.store = store
        self.generations = {info.key: info.generation for info in infos}

    def open_read(self, key: str) -> IO[bytes]:
        """Open `key` at its listed generation."""
        return self.store.open_read(key, generation=self.generations[key])


def _data_keys(store: Store, prefix: str, findings: dict[str, Finding]) -> list[str]:
    """Return the `.csv`/`.csv.gz` keys under `prefix`; every other file there is an `ignored_files` finding."""
    keys = []
    for key in store.list(prefix):
        if key.lower().endswith(DATA_SUFFIXES):
            keys.append(key)
        else:
            findings[IGNORED_FILES].add(_example(key, None, {
                "found": key.rsplit("/", 1)[-1], "expected": "a name ending in .csv or .csv.gz"}))
    return keys


def _duplicate_periods(rows: pd.DataFrame, columns: list[str], finding: Finding) -> None:
    """Note every row repeating an earlier row's `columns` (read order), naming where the first one was."""
    repeated = rows[rows.duplicated(columns, keep=False)]
    value = "revenue" if "revenue" in rows else "value"
    for _, group in repeated.groupby(columns, sort=True):
        first = f"{group['file'].iloc[0]}:{group['line'].iloc[0]}"
        for row in group.iloc[1:].to_dict("records"):
            values = {c: row[c].strftime("%Y-%m-%d") if c == "date" else row[c] for c in columns}
            finding.add(_example(row["file"], int(row["line"]), {**values, value: row[value], "first_seen": first}))


class DataReader(Protocol):
    """A source of training input: reads everything once and returns it as RawData."""

    uri: str

    def read(self, options: ReadOptions) -> RawData: ...


class CsvReader:
    """Reads `spend/`, `revenue/` and optional `controls/` CSV files (plain or `.csv.gz`) from a store."""

    def __init__(self, store: Store):
        self.store = store
        self.uri = store.uri

    def read(self, options: ReadOptions) -> RawData:
        """Read every file under the store, in name order, into daily and monthly totals and findings."""
        store = self.store
        findings = new_findings()
        spend_keys = _data_keys(store, SPEND_PREFIX, findings)
        revenue_keys = _data_keys(store, REVENUE_PREFIX, findings)
        control_keys = _data_keys(store, CONTROLS_PREFIX, findings)
        infos = [store.info(k) for k in spend_keys + revenue_keys + control_keys]
        objects = [{"key": i.key, "generation": i.generation, "checksum": i.checksum, "size": i.size}
                   for i in infos]
        snapshot = InputSnapshot(store, infos)

        scan = _SpendScan(options)
        with ThreadPoolExecutor(max_workers=READ_THREADS) as pool:
            parts = list(pool.map(scan.scan_file, [snapshot] * len(spend_keys), spend_keys,
                                  range(len(spend_keys))))
        for part in parts:
            for name, finding in part.findings.items():
                findings[name].merge(finding)
        findings[DUPLICATE_ROWS] = scan.duplicates(snapshot, parts)

        revenue, form = self._revenue(snapshot, revenue_keys, findings, options)
        controls = self._controls(snapshot, control_keys, findings, options)
        raw = RawData(
            store_uri=store.uri, channels=list(options.channels) if options.channels else None,
            spend_files=spend_keys, revenue_files=revenue_keys, objects=objects,
            spend_rows=sum(p.rows for p in parts), revenue_rows=len(revenue),
            bytes_read=sum(i.size for i in infos), monthly_spend=scan.monthly(parts), revenue=revenue,
            findings=findings, daily_spend=scan.daily(parts), revenue_form=form, controls=controls,
            control_files=control_keys, controls_aggregate=dict(options.controls_aggregate),
        )
        log.info("ingested %d spend rows from %d files, %d %s revenue rows from %d files and %d control values "
                 "from %d files (%d bytes) in %s", raw.spend_rows, len(spend_keys), raw.revenue_rows,
                 "daily" if form == DAILY else "monthly", len(revenue_keys), len(controls), len(control_keys),
                 raw.bytes_read, store.uri)
        return raw

    @staticmethod
    def _revenue(snapshot: InputSnapshot, keys: list[str], findings: dict[str, Finding], options: ReadOptions
                 ) -> tuple[pd.DataFrame, str]:
        """Read the revenue files; one form (monthly or daily) for all, else a `mixed_forms` finding."""
        read = [(key, *_read_revenue(snapshot, key, findings, options)) for key in keys]
        forms = [(key, form) for key, form, _ in read if form is not None]
        form = forms[0][1] if forms else MONTHLY
        for key, other in forms:
            if other != form:
                findings[MIXED_FORMS].add(_example(key, 1, {
                    "found": "DATE, REVENUE (daily)" if other == DAILY else "YEAR, MONTH, REVENUE (monthly)",
                    "expected": f"the form of {forms[0][0]}: "
                                + ("DATE, REVENUE (daily)" if form == DAILY else "YEAR, MONTH, REVENUE (monthly)")}))
        frames = [frame for _, f, frame in read if f == form and len(frame)]
        revenue = pd.concat(frames, ignore_index=True) if frames else _revenue_frame(
            [], [], "", [], [] if form == DAILY else None)
        column = "date" if form == DAILY else "month"
        _duplicate_periods(revenue, [column], findings[DUPLICATE_REVENUE_MONTHS])
        return revenue, form

    @staticmethod
    def _controls(snapshot: InputSnapshot, keys: list[str], findings: dict[str, Finding], options: ReadOptions
                  ) -> pd.DataFrame:
        """Read the controls files; a control given both daily and monthly is a `mixed_forms` finding."""
        frames = [f for f in (_read_controls(snapshot, key, findings, options) for key in keys) if len(f)]
        if not frames:
            return _empty_controls()
        controls = pd.concat(frames, ignore_index=True)
        for name, rows in controls.groupby("control", sort=True):
            if rows["form"].nunique() > 1:
                first = rows.iloc[0]
                other = rows[rows["form"] != first["form"]].iloc[0]
                findings[MIXED_FORMS].add(_example(other["file"], 1, {
                    "control": name, "found": f"{other['form']}ly values",
                    "expected": f"{first['form']}ly values, as in {first['file']}"}))
        _duplicate_periods(controls, ["control", "period"], findings[DUPLICATE_CONTROL_PERIODS])
        first_form = controls.groupby("control")["form"].transform("first")
        return controls[controls["form"] == first_form].reset_index(drop=True)


def ingest(store: Store, channels: list[str] | None = None, options: ReadOptions | None = None) -> RawData:
    """Read every spend, revenue and controls file under the store (see `CsvReader`)."""
    if options is None:
        options = ReadOptions(channels=tuple(c.lower() for c in channels) if channels else None)
    return CsvReader(store).read(options)


def training_data(raw: RawData) -> TrainingData:
    """Build the month × channel feature table joined with revenue (months without revenue left out)."""
    channels = list(raw.channels) if raw.channels else list(raw.monthly_spend.columns)
    spend = raw.monthly_spend.reindex(columns=channels, fill_value=0.0).astype(float)
    revenue = raw.revenue_by_month()
    months = spend.index.intersection(revenue.index).sort_values()
    without = sorted(set(spend.index) - set(revenue.index))
    if without:
        log.warning("left out %d months with spend but no revenue: %s", len(without), ", ".join(without))
    return TrainingData(
        features=spend.loc[months], revenue=revenue.loc[months].astype(float), channels=channels,
        months_without_revenue=without, spend_rows=raw.spend_rows, revenue_rows=raw.revenue_rows,
        fingerprint=raw.fingerprint, objects=raw.objects,
    )


# ---- periods: what a media-mix model is fitted on ------------------------------------------------------

@dataclass
class PeriodPlan:
    """Which periods of one grain have complete revenue and spend, and which were dropped and why."""

    grain: str
    periods: list[str]  # used: complete revenue, within the spend, consecutive (the newest run)
    partial: dict[str, str]  # period at an edge -> "12 of 31 days of revenue" (dropped)
    dropped: dict[str, str]  # other complete periods left out -> why


def grain_problem(raw: RawData, grain: str) -> str | None:
    """Return why `grain` cannot be used with this data (monthly revenue at weekly grain), or None."""
    check_grain(grain)
    if grain == "week" and raw.revenue_form == MONTHLY and len(raw.revenue):
        return ("model.grain=week needs daily revenue (DATE, REVENUE); revenue/ holds monthly rows "
                "(YEAR, MONTH, REVENUE), which cannot be split into weeks")
    return None


def _period_revenue(raw: RawData, grain: str) -> tuple[pd.Series, dict[str, str]]:
    """Return revenue per complete period and the incomplete periods (daily revenue only) with their day counts."""
    if raw.revenue_form != DAILY:
        return raw.revenue_by_month(), {}
    daily = raw.daily_revenue()
    if daily.empty:
        return pd.Series([], dtype=float, name="revenue"), {}
    complete = complete_sums(daily, grain)
    counts = pd.Series(1, index=period_keys(daily.index, grain)).groupby(level=0).sum()
    partial = {k: f"{int(n)} of {period_days(k, grain)} days of revenue" for k, n in counts.items()
               if k not in complete.index}
    return complete, partial


def plan_periods(raw: RawData, grain: str) -> PeriodPlan:
    """Decide the periods of `grain` a model uses: complete revenue, inside the spend, consecutive."""
    problem = grain_problem(raw, grain)
    if problem:
        raise ConfigError("model.grain", grain, problem.split("; ", 1)[1] + ": use month")
    revenue, incomplete = _period_revenue(raw, grain)
    complete = list(revenue.index)
    partial = {k: why for k, why in incomplete.items()
               if not complete or k < complete[0] or k > complete[-1]}
    dropped = {k: why.replace("days of revenue", "days of revenue (a gap)") for k, why in incomplete.items()
               if k not in partial}
    if raw.daily_spend.empty or not complete:
        return PeriodPlan(grain, [], partial, dropped)
    first_spend, last_spend = raw.daily_spend.index[0].date(), raw.daily_spend.index[-1].date()
    inside = []
    for key in complete:
        if period_end(key, grain) < first_spend or period_start(key, grain) > last_spend:
            dropped[key] = "no spend rows in or before it" if period_end(key, grain) < first_spend else \
                "after the last spend day"
        else:
            inside.append(key)
    run: list[str] = []
    for key in inside:  # the newest consecutive run: the model's carryover needs unbroken time
        if run and period_start(key, grain) != _after(run[-1], grain):
            for earlier in run:
                dropped[earlier] = f"before a gap in revenue at {key}"
            run = []
        run.append(key)
    return PeriodPlan(grain, run, partial, dict(sorted(dropped.items())))


def _after(key: str, grain: str) -> date:
    return date.fromordinal(period_end(key, grain).toordinal() + 1)


def _control_tables(raw: RawData, grain: str, periods: list[str]) -> tuple[pd.DataFrame, pd.DataFrame, bool]:
    """Return the controls per period, their daily terms, and whether every control was given per day.

    Per period: one column per control, the mean of its days (or the sum, when configured). A monthly control
    at weekly grain gives each day its month's value (mean) or its month's value spread evenly over the
    month's days (sum). The daily term of a day is what sums, over a period's days, to the period's value ×
    its days (the base design's control column): the day's value (mean) or the day's value × the days of its
    period (sum).
    """
    table = pd.DataFrame(index=pd.Index(periods, name="period"))
    days = pd.date_range(period_start(periods[0], grain), period_end(periods[-1], grain), freq="D",
                         name="date") if periods else pd.DatetimeIndex([], name="date")
    terms = pd.DataFrame(index=days)
    if not periods or raw.controls.empty:
        return table, terms, True
    day_period = period_keys(days, grain)
    days_of_period = np.array([period_days(k, grain) for k in day_period], dtype=float)
    all_daily = True
    for name, rows in raw.controls.groupby("control", sort=False):
        how = raw.controls_aggregate.get(str(name), "mean")
        rows = rows.drop_duplicates("period", keep="first")
        if rows["form"].iloc[0] == DAILY:
            per_day = pd.Series(rows["value"].to_numpy(), index=pd.DatetimeIndex(rows["period"])).reindex(days)
        else:
            all_daily = False
            month_value = pd.Series(rows["value"].to_numpy(), index=rows["period"].to_numpy())
            per_day = pd.Series(month_value.reindex(days.strftime("%Y-%m")).to_numpy(), index=days)
            if how == "sum":
                per_day = per_day / days.days_in_month
        missing = sorted(set(day_period[per_day.isna().to_numpy()]))
        if missing:
            raise ValueError(f"control {name!r} has no value for period(s) {', '.join(missing[:5])}; expected a "
                             "value for every day (or month) of every period used")
        grouped = per_day.groupby(day_period)
        table[str(name)] = (grouped.sum() if how == "sum" else grouped.mean()).reindex(periods).to_numpy()
        terms[str(name)] = per_day.to_numpy() * (days_of_period if how == "sum" else 1.0)
    return table, terms, all_daily


def period_data(raw: RawData, grain: str, channels: list[str] | None = None) -> PeriodData:
    """Build the PeriodData of `grain` (month | week): daily spend, revenue and controls of the usable periods."""
    plan = plan_periods(raw, grain)
    for key, why in {**plan.partial, **plan.dropped}.items():
        log.info("period %s left out: %s", key, why)
    channels = list(channels or raw.channels or raw.daily_spend.columns)
    revenue, _ = _period_revenue(raw, grain)
    controls, daily_controls, controls_daily = _control_tables(raw, grain, plan.periods)
    if not plan.periods:
        empty = pd.DataFrame(columns=channels, index=pd.DatetimeIndex([], name="date"), dtype=float)
        return PeriodData(grain, [], empty, np.empty(0), controls)
    start = min(raw.daily_spend.index[0].date(), period_start(plan.periods[0], grain))
    days = pd.date_range(start, period_end(plan.periods[-1], grain), freq="D", name="date")
    spend = raw.daily_spend.reindex(index=days, columns=channels, fill_value=0.0).fillna(0.0).astype(float)
    daily_revenue = None
    if raw.revenue_form == DAILY:  # every day of a complete period has revenue
        daily_revenue = raw.daily_revenue().reindex(daily_controls.index).to_numpy(dtype=float)
    return PeriodData(grain, plan.periods, spend, revenue.loc[plan.periods].to_numpy(dtype=float), controls,
                      daily_revenue, daily_controls, controls_daily)  # without daily revenue: no daily rows


def control_gaps(raw: RawData, grain: str = "month") -> dict[str, list[str]]:
    """Return, per control, the days (daily) or months (monthly) without a value in the periods a model uses."""
    if raw.controls.empty or grain_problem(raw, grain):
        return {}
    periods = plan_periods(raw, grain).periods
    if not periods:
        return {}
    days = pd.date_range(period_start(periods[0], grain), period_end(periods[-1], grain), freq="D")
    gaps = {}
    for name, rows in raw.controls.groupby("control", sort=True):
        wanted = days.strftime("%Y-%m-%d") if rows["form"].iloc[0] == DAILY else days.strftime("%Y-%m").unique()
        missing = sorted(set(wanted) - set(rows["period"]))
        if missing:
            gaps[str(name)] = missing
    return gaps
