"""Benchmark: training from BigQuery (aggregation pushed down) against training from the same rows as CSV files.

    .venv/bin/python bench/bench_bigquery.py [--rows 10000000] [--sizes 1000000,10000000]

Starts a bqemulator, then for each size N (default N/10 and N, so memory can be compared as N grows):
  1. writes N daily spend rows into a `spend` table in the emulator (one `CREATE TABLE AS SELECT` over
     `GENERATE_ARRAY`: every value is integer arithmetic on the row number) and the very same rows, computed
     with numpy, as `spend/<year>.csv` files; monthly revenue (60 months) goes to a `revenue` table by
     `insert_rows_json` and to `revenue/<year>.csv`;
  2. runs `pipeline.run` (validate → fit → evaluate → gate → publish, SQLite metrics) once on
     `bq://adroi-bench.<dataset>` and once on the CSV folder, each in a fresh interpreter,
and prints, per source and size: rows and bytes that left the engine (BigQuery: query results; CSV: every
file byte and row), wall time of the training process and its work (after imports), its peak RSS, and
whether both trained the same model. It also measures the rate of `insert_rows_json` (the streaming path
the tests use) on a sample, and prints BigQuery's bytes per row for the spend queries by BigQuery's data size
rules (the emulator's dry run reports 0 bytes) with the on-demand price of 1 billion rows.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

PROJECT = "adroi-bench"
CHANNELS = ["search_engine", "social_media", "video", "email"]
ROI = [2.4, 1.6, 1.2, 3.1]
FIRST_MONTH = (2021, 11)  # 60 months ending 2026-10, as the bundled sample
MONTHS = 60
RUN_DATE = "2026-11-15"
INSERT_SAMPLE = 20_000  # rows streamed with insert_rows_json to measure its rate
LAUNCHER = """
import sys
from bqemulator.storage.engine import DuckDBEngine
DuckDBEngine._load_spatial = lambda self: None
from bqemulator.config import Settings
from bqemulator.server import run_forever
run_forever(Settings(rest_port=int(sys.argv[1]), grpc_port=0, enable_format_extensions=False,
                     default_project_id=sys.argv[2], log_level="warning", metrics_enabled=False))
"""


def days_in_range() -> int:
    """Return the number of days of the 60 months."""
    import numpy as np

    first = np.datetime64(f"{FIRST_MONTH[0]}-{FIRST_MONTH[1]:02d}", "M")
    return int(((first + MONTHS).astype("datetime64[D]") - first.astype("datetime64[D]")).astype(int))


def layout(rows: int) -> tuple[int, int]:
    """Return (pairs per day, days): row i is day i // pairs, campaign-channel pair i % pairs."""
    days = days_in_range()
    return math.ceil(rows / days), days


# Row i: pair p = i mod P, channel p mod 4, campaign p div 4, day i div P; cost in cents = a month-and-channel
# multiplier (20..200) × (100 + (i × 7919) mod 97). All integers: DuckDB and numpy compute the same doubles.
SPEND_SQL = """
CREATE OR REPLACE TABLE `{table}` AS
SELECT CONCAT('campaign_', LPAD(CAST(DIV(MOD(i, {pairs}), 4) AS STRING), 5, '0')) AS CAMPAIGN,
       CASE MOD(MOD(i, {pairs}), 4) WHEN 0 THEN 'search_engine' WHEN 1 THEN 'social_media' WHEN 2 THEN 'video'
            ELSE 'email' END AS CHANNEL,
       DATE_ADD(DATE '{start}', INTERVAL DIV(i, {pairs}) DAY) AS DATE,
       MOD(i * 13, 50) AS TOTAL_CLICKS,
       CAST(MOD(((EXTRACT(YEAR FROM DATE_ADD(DATE '{start}', INTERVAL DIV(i, {pairs}) DAY)) * 12
                  + EXTRACT(MONTH FROM DATE_ADD(DATE '{start}', INTERVAL DIV(i, {pairs}) DAY)) - {first}) * 37
                 + MOD(MOD(i, {pairs}), 4) * 101) * 7919, 181) + 20 AS INT64)
         * (100 + MOD(i * 7919, 97)) / 100 AS TOTAL_COST,
       MOD(i * 31, 900) AS ADS_SERVED
FROM UNNEST(GENERATE_ARRAY(0, {last})) AS i
"""


def spend_arrays(rows: int) -> dict:
    """Return the same rows as SPEND_SQL as numpy arrays (campaign index, channel, day, cost, month)."""
    import numpy as np

    pairs, _ = layout(rows)
    i = np.arange(rows, dtype=np.int64)
    pair = i % pairs
    start = np.datetime64(f"{FIRST_MONTH[0]}-{FIRST_MONTH[1]:02d}-01", "D")
    day = start + (i // pairs)
    month = day.astype("datetime64[M]").astype(np.int64) - (np.datetime64(f"{FIRST_MONTH[0]}-{FIRST_MONTH[1]:02d}", "M")
                                                              .astype(np.int64))
    channel = pair % 4
    multiplier = (month * 37 + channel * 101) * 7919 % 181 + 20
    cost = (multiplier * (100 + i * 7919 % 97)) / 100
    return {"campaign": pair // 4, "channel": channel, "day": day, "cost": cost, "month": month,
            "clicks": i * 13 % 50, "ads": i * 31 % 900}


def revenue_rows(arrays: dict) -> list[dict]:
    """Return 60 monthly revenue rows driven by the spend (known ROI) plus a deterministic wobble."""
    import numpy as np

    monthly = np.zeros((MONTHS, 4))
    np.add.at(monthly, (arrays["month"], arrays["channel"]), arrays["cost"])
    scale = 1_000_000 / max(monthly.mean(), 1.0)  # revenue of the order of a real shop's, whatever N
    revenue = 50_000 + scale * monthly @ np.array(ROI)
    wobble = 0.004 * revenue.mean() * np.sin(np.arange(MONTHS) * 2.1)
    out = []
    for m, value in enumerate(np.round(revenue + wobble, 2)):
        index = FIRST_MONTH[0] * 12 + FIRST_MONTH[1] - 1 + m
        out.append({"YEAR": index // 12, "MONTH": index % 12 + 1, "REVENUE": float(value)})
    return out


def write_csv(root: Path, arrays: dict, revenue: list[dict]) -> int:
    """Write the spend rows and revenue as CSV files by year; return the bytes written."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.csv as pacsv

    pairs = int(arrays["campaign"].max()) + 1 if len(arrays["campaign"]) else 1
    names = pa.array([f"campaign_{c:05d}" for c in range(pairs)])
    years = arrays["day"].astype("datetime64[Y]").astype(np.int64) + 1970
    (root / "spend").mkdir(parents=True)
    (root / "revenue").mkdir()
    for year in np.unique(years):
        rows = slice(int(np.searchsorted(years, year)), int(np.searchsorted(years, year, side="right")))
        table = pa.table({
            "CAMPAIGN": pa.DictionaryArray.from_arrays(arrays["campaign"][rows].astype(np.int32), names).cast(pa.string()),
            "CHANNEL": pa.DictionaryArray.from_arrays(arrays["channel"][rows].astype(np.int32), CHANNELS).cast(pa.string()),
            "DATE": pa.array(arrays["day"][rows]), "TOTAL_CLICKS": arrays["clicks"][rows],
            "TOTAL_COST": arrays["cost"][rows], "ADS_SERVED": arrays["ads"][rows]})
        pacsv.write_csv(table, root / "spend" / f"{year}.csv", pacsv.WriteOptions(quoting_style="none"))
        in_year = [r for r in revenue if r["YEAR"] == year]
        if in_year:
            pacsv.write_csv(pa.Table.from_pylist(in_year), root / "revenue" / f"{year}.csv",
                            pacsv.WriteOptions(quoting_style="none"))
    # pyarrow quotes header names; the CSV reader matches them case-insensitively without quotes
    for path in root.rglob("*.csv"):
        text = path.read_bytes()
        head, _, body = text.partition(b"\n")
        path.write_bytes(head.replace(b'"', b"") + b"\n" + body)
    return sum(p.stat().st_size for p in root.rglob("*.csv"))


def bigquery_data_size(arrays: dict) -> float:
    """Return the bytes per row the spend queries scan by BigQuery's data size rules.

    STRING: 2 bytes + its UTF-8 length; DATE, FLOAT64: 8 bytes. The queries read CAMPAIGN, CHANNEL, DATE and
    TOTAL_COST (TOTAL_CLICKS and ADS_SERVED are never read).
    """
    import numpy as np

    channel = np.array([len(c) for c in CHANNELS])[arrays["channel"]].mean() + 2
    campaign = len("campaign_00000") + 2
    return float(campaign + channel + 8 + 8)


# ---- the emulator ---------------------------------------------------------------------------------------

def start_emulator(log_path: Path) -> tuple[subprocess.Popen, str]:
    """Start bqemulator on a free port; return the process and its URL."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with open(log_path, "ab") as log:
        proc = subprocess.Popen([sys.executable, "-c", LAUNCHER, str(port), PROJECT], stdout=log, stderr=log)
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"bqemulator exited: {log_path.read_text()[-2000:]}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return proc, f"http://127.0.0.1:{port}"
        time.sleep(0.2)
    proc.kill()
    raise TimeoutError("bqemulator did not open its port in 90 s")


def rss_mb(pid: int) -> float:
    """Return a process's resident memory now (MB)."""
    status = Path(f"/proc/{pid}/status").read_text()
    return int(next(line for line in status.splitlines() if line.startswith("VmRSS:")).split()[1]) / 1024


def load_bigquery(client, dataset: str, rows: int, revenue: list[dict]) -> float:
    """Create the spend table (CTAS) and the revenue table (insert_rows_json); return the seconds taken."""
    from google.api_core.retry import Retry
    from google.cloud import bigquery

    pairs, days = layout(rows)
    start = time.perf_counter()
    client.create_dataset(dataset, retry=Retry(deadline=30), timeout=30)
    sql = SPEND_SQL.format(table=f"{PROJECT}.{dataset}.spend", pairs=pairs, last=rows - 1,
                           start=f"{FIRST_MONTH[0]}-{FIRST_MONTH[1]:02d}-01", first=FIRST_MONTH[0] * 12 + FIRST_MONTH[1])
    client.query(sql, timeout=3600).result(timeout=3600)
    table = client.create_table(bigquery.Table(f"{PROJECT}.{dataset}.revenue", schema=[
        bigquery.SchemaField("YEAR", "INT64"), bigquery.SchemaField("MONTH", "INT64"),
        bigquery.SchemaField("REVENUE", "FLOAT64")]), retry=Retry(deadline=30), timeout=30)
    errors = client.insert_rows_json(table, revenue, retry=Retry(deadline=60), timeout=60)
    if errors:
        raise RuntimeError(f"revenue rows refused: {errors[:3]}")
    loaded = client.get_table(f"{PROJECT}.{dataset}.spend", timeout=30).num_rows
    if loaded != rows:
        raise RuntimeError(f"the spend table holds {loaded} rows, expected {rows}")
    return time.perf_counter() - start


def insert_rate(client, dataset: str) -> float:
    """Return the rows per second `insert_rows_json` streams into the emulator (chunks of 10,000 rows)."""
    from google.api_core.retry import Retry
    from google.cloud import bigquery

    client.create_dataset(dataset, retry=Retry(deadline=30), timeout=30)
    table = client.create_table(bigquery.Table(f"{PROJECT}.{dataset}.insert_sample", schema=[
        bigquery.SchemaField(n, t) for n, t in (("CAMPAIGN", "STRING"), ("CHANNEL", "STRING"), ("DATE", "DATE"),
                                                ("TOTAL_COST", "FLOAT64"))]), retry=Retry(deadline=30), timeout=30)
    rows = [{"CAMPAIGN": f"campaign_{i % 500:05d}", "CHANNEL": CHANNELS[i % 4], "DATE": "2024-01-01",
             "TOTAL_COST": i / 100} for i in range(INSERT_SAMPLE)]
    start = time.perf_counter()
    for at in range(0, len(rows), 10_000):
        client.insert_rows_json(table, rows[at:at + 10_000], retry=Retry(deadline=120), timeout=120)
    rate = len(rows) / (time.perf_counter() - start)
    client.delete_dataset(dataset, delete_contents=True, timeout=60)
    return rate


# ---- one training run in a fresh interpreter ---------------------------------------------------------------

def train(data: str, work: Path) -> dict:
    """Run the pipeline on `data`; return its figures (child process)."""
    start = time.perf_counter()
    from training import pipeline
    from training.config import load_settings
    from training.core.store import open_store

    imported = time.perf_counter()
    settings = load_settings(overrides={"data": data, "store": str(work / "store"), "run_date": RUN_DATE,
                                        "metrics": f"sqlite:///{work}/metrics.db"}, environ=dict(os.environ))
    result = pipeline.run(settings)
    done = time.perf_counter()
    report = json.loads(open_store(settings.store).read(pipeline.staging_key(result.run_id, "validation.json")))
    status = Path("/proc/self/status").read_text()
    peak = int(next(line for line in status.splitlines() if line.startswith("VmHWM:")).split()[1]) / 1024
    source = report.get("source")
    return {"status": result.status, "reason": result.reason, "coefficients": result.coefficients,
            "intercept": result.intercept, "work_s": done - imported, "import_s": imported - start,
            "peak_rss_mb": peak, "spend_rows": report["summary"]["rows"],
            "rows_out": source["rows_returned"] if source else None,
            "bytes_out": source["bytes_returned"] if source else None,
            "queries": source["queries"] if source else None}


def measure(data: str, work: Path, env: dict) -> dict:
    """Train in a fresh interpreter; return its figures with the process's wall time."""
    work.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    done = subprocess.run([sys.executable, __file__, "--train", data, "--work", str(work)], env=env,
                          capture_output=True, text=True)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"training on {data} failed:\n{done.stderr[-3000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    result["process_s"] = wall
    return result


def main() -> None:
    """Start the emulator, load each size into it and into CSV files, train from both, print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000_000, help="the larger size (the smaller is rows/10)")
    parser.add_argument("--sizes", help="comma-separated sizes instead of rows/10,rows")
    parser.add_argument("--keep", action="store_true", help="keep the CSV files and stores (printed path)")
    parser.add_argument("--train", help=argparse.SUPPRESS)
    parser.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.train:  # child process: one training run, one JSON line
        print(json.dumps(train(args.train, args.work)))
        return

    sizes = [int(s) for s in args.sizes.split(",")] if args.sizes else [max(args.rows // 10, 1), args.rows]
    work = Path(tempfile.mkdtemp(prefix="adroi-bench-bq-"))
    proc, url = start_emulator(work / "bqemulator.log")
    env = {**os.environ, "BIGQUERY_EMULATOR_HOST": url, "ADROI_LOG_FORMAT": "text"}
    env = {k: v for k, v in env.items() if not (k.startswith("ADROI_") and k != "ADROI_LOG_FORMAT")}
    os.environ["BIGQUERY_EMULATOR_HOST"] = url
    from training.metrics import bigquery_client

    client = bigquery_client(PROJECT)
    figures = []
    try:
        rate = insert_rate(client, f"insert_{uuid.uuid4().hex[:8]}")
        print(f"insert_rows_json into the emulator: {rate:,.0f} rows/s (10M rows would take "
              f"{10_000_000 / rate / 60:,.0f} min); the spend tables below are written by one CTAS query", flush=True)
        for rows in sizes:
            arrays = spend_arrays(rows)
            revenue = revenue_rows(arrays)
            dataset = f"bench_{rows}_{uuid.uuid4().hex[:6]}"
            load_s = load_bigquery(client, dataset, rows, revenue)
            csv_bytes = write_csv(work / f"csv-{rows}", arrays, revenue)
            per_row = bigquery_data_size(arrays)
            del arrays
            print(f"N={rows:,}: loaded into the emulator in {load_s:.1f} s; {csv_bytes:,} bytes of CSV", flush=True)
            bq = measure(f"bq://{PROJECT}.{dataset}", work / f"run-bq-{rows}", env)
            print(f"  bigquery trained ({bq['status']}), emulator RSS now {rss_mb(proc.pid):,.0f} MB", flush=True)
            files = measure(str(work / f"csv-{rows}"), work / f"run-csv-{rows}", env)
            files["rows_out"], files["bytes_out"] = files["spend_rows"] + len(revenue), csv_bytes
            figures.append((rows, per_row, bq, files))
            client.delete_dataset(dataset, delete_contents=True, timeout=120)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)

    print(f"\n{'N rows':>12} {'source':9} {'rows out':>12} {'bytes out':>14} {'work s':>8} {'process s':>10} "
          f"{'peak RSS MB':>12}  status")
    for rows, _, bq, files in figures:
        for name, r in (("bigquery", bq), ("csv", files)):
            print(f"{rows:>12,} {name:9} {r['rows_out']:>12,} {r['bytes_out']:>14,} {r['work_s']:>8.2f} "
                  f"{r['process_s']:>10.2f} {r['peak_rss_mb']:>12.0f}  {r['status']}")
    for rows, _, bq, files in figures:
        same = all(math.isclose(bq["coefficients"][c], files["coefficients"][c], rel_tol=1e-9)
                   for c in files["coefficients"]) and bool(files["coefficients"])
        print(f"\nN={rows:,}: bigquery/csv work time {bq['work_s'] / files['work_s']:.2f}×, peak memory "
              f"{bq['peak_rss_mb'] / files['peak_rss_mb']:.2f}×; same model (rel 1e-9): {same}")
        print("  queries: " + "; ".join(f"{q['query']} {q['rows_returned']:,} rows, dry run {q['bytes_estimated']:,} B"
                                       for q in bq["queries"]))
    if len(figures) >= 2:
        (small, _, bq_small, csv_small), (large, _, bq_large, csv_large) = figures[0], figures[-1]
        print(f"\nN ×{large / small:.0f}: bigquery peak memory ×{bq_large['peak_rss_mb'] / bq_small['peak_rss_mb']:.2f}, "
              f"rows out ×{bq_large['rows_out'] / bq_small['rows_out']:.2f}; csv peak memory "
              f"×{csv_large['peak_rss_mb'] / csv_small['peak_rss_mb']:.2f}, rows out "
              f"×{csv_large['rows_out'] / csv_small['rows_out']:.0f}")
    per_row = figures[-1][1]
    scanned = 2 * per_row  # spend_checks and spend_daily each read the spend columns once
    print(f"\nBigQuery bytes per spend row (data size rules; the emulator's dry run reports 0): {per_row:.2f} B "
          f"per query, {scanned:.2f} B per run (2 queries)")
    from training.sources.bigquery import ON_DEMAND_USD_PER_TIB, TIB

    billion = scanned * 1e9
    print(f"1 billion rows: {billion / 1e9:,.1f} GB ({billion / TIB:.4f} TiB) scanned per run × "
          f"${ON_DEMAND_USD_PER_TIB}/TiB on demand = ${billion / TIB * ON_DEMAND_USD_PER_TIB:.2f} per run")
    if any(r["status"] != "promoted" for _, _, bq, files in figures for r in (bq, files)):
        sys.exit("a training run did not promote: see the status column")


if __name__ == "__main__":
    main()
