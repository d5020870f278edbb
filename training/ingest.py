"""Ingest: stream `spend/*.csv` and `revenue/*.csv` from the store into monthly totals, noting problems.

The spend files can hold tens of millions of daily rows, so they are never materialised: pyarrow's
streaming CSV reader yields record batches of the needed columns only (CHANNEL and CAMPAIGN as
dictionary-encoded strings, DATE as date32, TOTAL_COST as float; a file where a date or number does not
parse is read again with DATE and TOTAL_COST as text, to locate the bad values), and each batch is reduced
at once to (month, channel) sums with numpy. Dates read as text are parsed once per distinct value.
While streaming, everything validation needs is collected: counts and a few examples (file, line,
values) of unparseable, null and negative values, unknown channels, and one 64-bit key per row
(campaign, channel, day) to find duplicate rows over the whole data set at the end. Files are read in
name order; several files are read concurrently, each by its own streaming reader.

Line numbers count the header as line 1 and assume one record per line (no line breaks inside quotes).
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import re
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import date
from typing import IO, Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from training.core.store import ObjectInfo, Store

log = logging.getLogger(__name__)

SPEND_PREFIX = "spend"
REVENUE_PREFIX = "revenue"
# The input column contract (header names are matched case-insensitively).
SPEND_COLUMNS = ("campaign", "channel", "date", "total_clicks", "total_cost", "ads_served")
SPEND_REQUIRED = ("channel", "date", "total_cost")
REVENUE_REQUIRED = ("year", "month", "revenue")
NULL_VALUES = ["", "NULL", "null", "NA", "N/A", "NaN", "nan", "None"]

# Names of what ingest counts; validate.py turns each into a rule with the same name.
MISSING_COLUMNS = "missing_columns"
UNPARSEABLE_VALUES = "unparseable_values"
NULL_VALUES_RULE = "null_values"
NEGATIVE_VALUES = "negative_values"
UNKNOWN_CHANNELS = "unknown_channels"
DUPLICATE_ROWS = "duplicate_rows"
DUPLICATE_REVENUE_MONTHS = "duplicate_revenue_months"
FINDINGS = (MISSING_COLUMNS, UNPARSEABLE_VALUES, NULL_VALUES_RULE, NEGATIVE_VALUES, UNKNOWN_CHANNELS,
            DUPLICATE_ROWS, DUPLICATE_REVENUE_MONTHS)

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


@dataclass
class RawData:
    """Everything ingest read: monthly totals, revenue rows, input objects and the problems seen."""

    store_uri: str
    channels: list[str] | None  # the configured channel list, if any
    spend_files: list[str]
    revenue_files: list[str]
    objects: list[dict[str, Any]]
    spend_rows: int
    revenue_rows: int
    bytes_read: int
    monthly_spend: pd.DataFrame  # index "YYYY-MM" sorted, one column per channel seen, summed TOTAL_COST
    revenue: pd.DataFrame  # parseable revenue rows: month, revenue, file, line (read order)
    findings: dict[str, Finding]

    @property
    def fingerprint(self) -> str:
        """Return the sha256 hex over the sorted (key, generation, checksum) of the input objects."""
        triples = sorted((o["key"], o["generation"], o["checksum"]) for o in self.objects)
        return hashlib.sha256(json.dumps(triples).encode()).hexdigest()

    def revenue_by_month(self) -> pd.Series:
        """Return revenue per month (first row of a repeated month), sorted by month."""
        first = self.revenue.drop_duplicates("month", keep="first")
        return pd.Series(first["revenue"].to_numpy(), index=pd.Index(first["month"], name="month"),
                         name="revenue").sort_index()


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
    """Return `value` as JSON-able plain data (None for missing)."""
    if isinstance(value, np.generic):
        value = value.item()
    if value is None or value is pd.NA or (isinstance(value, float) and np.isnan(value)):
        return None
    return value if isinstance(value, str | int | float | bool | list) else str(value)


def _example(key: str, line: int | None, values: dict[str, Any]) -> dict[str, Any]:
    return {"file": key, "line": line, "values": {k: _plain(v) for k, v in values.items()}}


def _invalid_row(key: str, row: pacsv.InvalidRow) -> dict[str, Any]:
    """Return the example of a row with the wrong number of fields (the header was read apart: line + 1)."""
    return _example(key, None if row.number is None else row.number + 1, {
        "text": row.text, "fields": row.actual_columns, "expected_fields": row.expected_columns})


def _read_header(fh: IO[bytes]) -> list[str]:
    """Read the header line from `fh` (leaving it at the first data line); return normalised names."""
    line = fh.readline().decode("utf-8-sig").strip("\r\n")
    return [name.strip().lower() for name in next(csv.reader([line]), [])]


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


@dataclass
class _FilePart:
    """What one spend file contributed; merged into the whole only once the file was read to its end."""

    key: str
    number: int
    rows: int = 0
    sums: dict[tuple[int, int], float] = field(default_factory=dict)  # (month index, channel id) -> cost
    row_keys: list[np.ndarray] = field(default_factory=list)  # one per batch, in row order
    sorted_keys: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=np.int64))
    findings: dict[str, Finding] = field(default_factory=lambda: {name: Finding() for name in FINDINGS})

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

    def __init__(self, channels: list[str] | None):
        self.configured = set(channels) if channels else None
        self.lock = threading.Lock()
        self.channel_ids: dict[str, int] = {}
        self.campaign_ids: dict[str | None, int] = {None: 0}
        self.dates: dict[str, tuple[int, int]] = {}  # date text -> (days since epoch, month index)

    def _lookup(self, table: dict, dictionary: pa.Array, lower: bool, null_id: int) -> np.ndarray:
        """Map a batch's dictionary values to global ids (adding new ones); the last slot is for null."""
        values = dictionary.to_pylist()
        with self.lock:
            ids = [table.setdefault(v.strip().lower() if lower else v, len(table)) for v in values]
        return np.array(ids + [null_id], dtype=np.int64)

    def _dates(self, column: pa.Array) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Return per-row indices into day and month lookups (the last slot is for null, day _BAD_DAY).

        A date32 column (fast path) indexes a range of days; a dictionary column (text) its distinct
        values, each parsed once.
        """
        if pa.types.is_date32(column.type):
            days = column.cast(pa.int32())
            bounds = pc.min_max(days)
            low, high = bounds["min"].as_py() or 0, bounds["max"].as_py()
            span = np.arange(low, low if high is None else high + 1, dtype=np.int64)
            if column.null_count:
                days = pc.fill_null(days, low + len(span))
            month = span.astype("datetime64[D]").astype("datetime64[M]").astype(np.int64)
            return days.to_numpy() - low, np.append(span, _BAD_DAY), np.append(month, -1)
        parsed = []
        for text in column.dictionary.to_pylist():
            known = self.dates.get(text)
            if known is None:
                try:
                    if not _ISO_DATE.fullmatch(text):
                        raise ValueError(text)
                    d = date.fromisoformat(text)
                    known = ((d - _EPOCH).days, (d.year - 1970) * 12 + d.month - 1)
                except ValueError:
                    known = (_BAD_DAY, -1)
                self.dates[text] = known
            parsed.append(known)
        day = np.array([p[0] for p in parsed] + [_BAD_DAY], dtype=np.int64)
        month = np.array([p[1] for p in parsed] + [-1], dtype=np.int64)
        return _indices(column), day, month

    def _scan_batch(self, part: _FilePart, batch: pa.RecordBatch) -> None:
        """Reduce one record batch to monthly sums and row keys, noting bad values."""
        channel_col, date_col, cost_col = (batch.column(n) for n in ("channel", "date", "total_cost"))
        chan = self._lookup(self.channel_ids, channel_col.dictionary, True, -1)[_indices(channel_col)]
        date_idx, day_lut, month_lut = self._dates(date_col)
        no_day, null_slot = day_lut == _BAD_DAY, len(day_lut) - 1
        if pa.types.is_floating(cost_col.type):
            cost = cost_col.to_numpy(zero_copy_only=False)
            bad_cost = np.isinf(cost) if np.isinf(cost).any() else None  # "inf" parses, but is no cost
        else:
            cost, bad_cost = _costs_from_text(cost_col)

        # Each check is one cheap test on a clean batch; masks are only built when something is wrong.
        null = bad = None
        if channel_col.null_count or date_col.null_count or cost_col.null_count:
            null = (chan < 0) | (date_idx == null_slot) | cost_col.is_null().to_numpy(
                zero_copy_only=False)
            part.report(NULL_VALUES_RULE, null, batch)
        if no_day[:-1].any() or (bad_cost is not None and bad_cost.any()):
            bad = np.logical_or(no_day[date_idx] & (date_idx < null_slot),
                                False if bad_cost is None else bad_cost)
            part.report(UNPARSEABLE_VALUES, bad, batch)
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
            day_lut + _DAY_OFFSET)[date_idx]
        usable = None
        if null is not None or bad is not None:
            # A row without channel or date gets a unique negative key (file number, row number): keys
            # stay aligned with row numbers and never collide.
            unkeyed = np.flatnonzero((chan < 0) | no_day[date_idx])
            row_key[unkeyed] = -1 - ((part.number << 40) | (part.rows + unkeyed))
            usable = ~np.logical_or(False if null is None else null, False if bad is None else bad)
        part.row_keys.append(row_key)

        if not (month_lut >= 0).any():
            part.rows += batch.num_rows
            return
        low = int(month_lut[month_lut >= 0].min())
        width = len(self.channel_ids)
        cell = np.maximum(month_lut - low, 0)[date_idx] * width + chan
        weights = cost
        if usable is not None:
            cell, weights = cell[usable], cost[usable]
        sums, rows = np.bincount(cell, weights=weights), np.bincount(cell)
        for c in np.flatnonzero(rows):
            month, channel = divmod(int(c), width)
            part.sums[(low + month, channel)] = part.sums.get((low + month, channel), 0.0) + float(sums[c])
        part.rows += batch.num_rows

    def _read_file(self, store: InputSnapshot, key: str, number: int, as_text: bool) -> _FilePart:
        part = _FilePart(key, number)
        with store.open_read(key) as fh:
            header = _read_header(fh)
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
        return part

    def _read(self, store: InputSnapshot, key: str, number: int) -> _FilePart:
        """Read one spend file: fast path with typed DATE and TOTAL_COST, again as text if a value is bad."""
        try:
            return self._read_file(store, key, number, as_text=False)
        except pa.ArrowInvalid as exc:
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


def _revenue_frame(months: list[str], revenue: Any, key: str, lines: Any) -> pd.DataFrame:
    return pd.DataFrame({"month": pd.Series(months, dtype=str), "revenue": np.asarray(revenue, dtype=float),
                         "file": key, "line": np.asarray(lines, dtype=np.int64)})


def _read_revenue(store: InputSnapshot, key: str, findings: dict[str, Finding]) -> pd.DataFrame:
    """Read one (small) revenue file whole; return its parseable rows with file and line."""
    empty = _revenue_frame([], [], key, [])
    with store.open_read(key) as fh:
        header = _read_header(fh)
        if _missing(key, header, REVENUE_REQUIRED, findings):
            return empty
        body = fh.read()
    if not body.strip():
        return empty

    def bad_row(row: pacsv.InvalidRow) -> str:
        findings[UNPARSEABLE_VALUES].add(_invalid_row(key, row))
        return "skip"

    try:
        table = pacsv.read_csv(
            pa.py_buffer(body), read_options=pacsv.ReadOptions(column_names=header, use_threads=False),
            parse_options=pacsv.ParseOptions(invalid_row_handler=bad_row),
            convert_options=pacsv.ConvertOptions(include_columns=list(REVENUE_REQUIRED), null_values=NULL_VALUES,
                                                 strings_can_be_null=True,
                                                 column_types={c: pa.string() for c in REVENUE_REQUIRED}))
    except pa.ArrowInvalid as exc:  # e.g. bytes that are not UTF-8
        findings[UNPARSEABLE_VALUES].add(_example(key, None, {"error": str(exc)}))
        return empty
    text = table.to_pandas()
    number = text.apply(pd.to_numeric, errors="coerce")
    null = text.isna().any(axis=1)
    bad = ((number.isna() & text.notna()).any(axis=1) | ~number["month"].isin(range(1, 13))
           | (number["year"] % 1 != 0) | ~np.isfinite(number["revenue"])) & ~null
    for name, mask in ((NULL_VALUES_RULE, null), (UNPARSEABLE_VALUES, bad), (NEGATIVE_VALUES, number["revenue"] < 0)):
        for i in np.flatnonzero(mask.to_numpy()):
            findings[name].add(_example(key, int(i) + 2, text.iloc[i].to_dict()))
    good = number[~null & ~bad]
    return _revenue_frame([f"{int(y):04d}-{int(m):02d}" for y, m in zip(good["year"], good["month"], strict=True)],
                          good["revenue"], key, good.index.to_numpy() + 2)


class InputSnapshot:
    """The input objects as listed when ingest started: each is read at the generation the fingerprint names,
    so a file rewritten mid-run fails the run (`ObjectChanged`) instead of mixing old and new data."""

    def __init__(self, store: Store, infos: list[ObjectInfo]):
        self.store = store
        self.generations = {info.key: info.generation for info in infos}

    def open_read(self, key: str) -> IO[bytes]:
        """Open `key` at its listed generation."""
        return self.store.open_read(key, generation=self.generations[key])


def _csv_keys(store: Store, prefix: str) -> list[str]:
    return [k for k in store.list(prefix) if k.lower().endswith(".csv")]


def ingest(store: Store, channels: list[str] | None = None) -> RawData:
    """Read every spend and revenue file under the store, in name order, into monthly totals and findings."""
    findings = {name: Finding() for name in FINDINGS}
    spend_keys, revenue_keys = _csv_keys(store, SPEND_PREFIX), _csv_keys(store, REVENUE_PREFIX)
    infos = [store.info(k) for k in spend_keys + revenue_keys]
    objects = [{"key": i.key, "generation": i.generation, "checksum": i.checksum, "size": i.size} for i in infos]

    snapshot = InputSnapshot(store, infos)

    scan = _SpendScan([c.lower() for c in channels] if channels else None)
    with ThreadPoolExecutor(max_workers=READ_THREADS) as pool:
        parts = list(pool.map(scan.scan_file, [snapshot] * len(spend_keys), spend_keys, range(len(spend_keys))))
    for part in parts:
        for name, finding in part.findings.items():
            findings[name].merge(finding)
    findings[DUPLICATE_ROWS] = scan.duplicates(snapshot, parts)

    revenue_parts = [_read_revenue(snapshot, k, findings) for k in revenue_keys]
    revenue = pd.concat([p for p in revenue_parts if len(p)] or [_revenue_frame([], [], "", [])],
                        ignore_index=True)
    for month, rows in revenue[revenue["month"].duplicated(keep=False)].groupby("month", sort=True):
        first = f"{rows['file'].iloc[0]}:{rows['line'].iloc[0]}"
        for row in rows.iloc[1:].itertuples():
            findings[DUPLICATE_REVENUE_MONTHS].add(_example(row.file, int(row.line), {
                "month": month, "revenue": row.revenue, "first_seen": first}))

    raw = RawData(
        store_uri=store.uri, channels=[c.lower() for c in channels] if channels else None,
        spend_files=spend_keys, revenue_files=revenue_keys, objects=objects,
        spend_rows=sum(p.rows for p in parts), revenue_rows=sum(len(p) for p in revenue_parts),
        bytes_read=sum(i.size for i in infos), monthly_spend=scan.monthly(parts), revenue=revenue, findings=findings,
    )
    log.info("ingested %d spend rows from %d files and %d revenue rows from %d files (%d bytes) in %s",
             raw.spend_rows, len(spend_keys), raw.revenue_rows, len(revenue_keys), raw.bytes_read, store.uri)
    return raw


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
