"""The BigQuery data source against bqemulator, under the real google-cloud-bigquery client."""

from __future__ import annotations

import json
import sqlite3
from datetime import UTC, date, datetime
from pathlib import Path

import pandas as pd
import pytest

from training import pipeline, validate
from training.config import BigQueryConfig, ValidationConfig, load_settings
from training.core.errors import ConfigError
from training.core.store import open_store
from training.ingest import CsvReader, ReadOptions
from training.sources import open_reader
from training.sources.bigquery import BigQueryReader, TableRef, parse_sources

TYPED = {"DATE": "DATE", "TOTAL_COST": "FLOAT64", "TOTAL_CLICKS": "INT64", "ADS_SERVED": "INT64",
         "YEAR": "INT64", "MONTH": "INT64", "REVENUE": "FLOAT64"}


def run(data: str, tmp_path: Path, name: str, **overrides) -> tuple[pipeline.RunResult, dict]:
    """Run the whole pipeline on `data` with a SQLite metrics table; return the result and validation.json."""
    settings = load_settings(overrides={"data": data, "store": str(tmp_path / name / "store"),
                                        "metrics": f"sqlite:///{tmp_path / name}/metrics.db",
                                        "run_date": "2026-11-15", **overrides}, environ={})
    result = pipeline.run(settings)
    report = json.loads(open_store(settings.store).read(pipeline.staging_key(result.run_id, "validation.json")))
    return result, report


@pytest.mark.parametrize("types", [None, TYPED], ids=["string_columns", "typed_columns"])
def test_contract_tables_train_the_same_model_as_the_same_rows_in_csv_files(good_data, bq_dataset, tmp_path, types):
    bq_dataset.load_csv_folder(good_data, types)

    from_csv, csv_report = run(good_data, tmp_path, "csv")
    from_bq, bq_report = run(bq_dataset.uri, tmp_path, "bq")

    assert from_bq.status == from_csv.status == "promoted"
    assert list(from_bq.coefficients) == list(from_csv.coefficients)
    for channel, value in from_csv.coefficients.items():
        assert from_bq.coefficients[channel] == pytest.approx(value, rel=1e-9)
    if from_csv.intercept is None:  # the media-mix model (the default) has no intercept: compare its ROI
        assert from_bq.intercept is None
        for channel, entry in from_csv.roi["channels"].items():
            assert from_bq.roi["channels"][channel]["roi"] == pytest.approx(entry["roi"], rel=1e-9)
    else:
        assert from_bq.intercept == pytest.approx(from_csv.intercept, rel=1e-9)
    assert from_bq.metrics["holdout"]["r2"] == pytest.approx(from_csv.metrics["holdout"]["r2"], rel=1e-9)
    assert bq_report["summary"]["rows"] == csv_report["summary"]["rows"]
    assert [r["status"] for r in bq_report["report"]["results"]] == [r["status"] for r in csv_report["report"]["results"]]
    with sqlite3.connect(tmp_path / "bq" / "metrics.db") as db:
        (fingerprint,) = db.execute("SELECT data_fingerprint FROM runs").fetchone()
    assert fingerprint == bq_report["data"]["fingerprint"]
    assert [o["key"] for o in bq_report["data"]["objects"]] == [f"bq://{bq_dataset.project}.{bq_dataset.dataset}.{t}"
                                                              for t in ("spend", "revenue")]
    # Only day × channel rows, one row of counts per table and the revenue rows left BigQuery.
    queries = {q["query"]: q for q in bq_report["source"]["queries"]}
    assert set(queries) == {"spend_checks", "spend_daily", "revenue"}  # no examples: nothing was wrong
    cells = pd.read_csv(Path(good_data) / "spend" / "2024.csv").groupby(["DATE", "CHANNEL"]).ngroups
    assert queries["spend_daily"]["rows_returned"] > cells  # 2024 and the other years' days
    assert queries["spend_daily"]["rows_returned"] < bq_report["summary"]["rows"]
    assert queries["spend_checks"]["rows_returned"] <= 2
    assert bq_report["summary"]["source"]["rows_returned"] == sum(q["rows_returned"] for q in queries.values())


def bad_folder(root: Path) -> Path:
    """A data set that breaks every rule a row can break, in spend, revenue and controls."""
    (root / "spend").mkdir(parents=True)
    (root / "revenue").mkdir()
    (root / "controls").mkdir()
    (root / "spend" / "a.csv").write_text(
        "CAMPAIGN,CHANNEL,DATE,TOTAL_CLICKS,TOTAL_COST,ADS_SERVED\n"
        "brand,video,2024-01-01,1,10.5,1\n"
        "brand,Video ,2024-01-02,1,11,1\n"
        "brand,,2024-01-03,1,5,1\n"  # null channel
        "brand,video,2024-13-01,1,5,1\n"  # unparseable date
        "brand,video,2024-01-04,1,abc,1\n"  # unparseable cost
        "brand,video,1925-03-05,1,5,1\n"  # date out of range
        "brand,video,2024-01-05,1,1e16,1\n"  # cost out of range
        "brand,video,2024-01-06,1,-4,1\n"  # negative
        "brand,radio,2024-01-07,1,3,1\n"  # unknown channel
        "brand,video,2024-01-01,1,2,1\n"  # duplicate of the first row
        "promo,paid email,2024-01-08,1,7,1\n"  # an alias of email
        "promo,email,NULL,1,7,1\n")  # null date
    (root / "revenue" / "r.csv").write_text(
        "YEAR,MONTH,REVENUE\n2024,1,100\n2024,1,120\n2024,2,-5\n2024,x,5\n2024,3,\n1925,4,7\n")
    (root / "controls" / "c.csv").write_text("DATE,TEMP\n2024-01-01,3.5\n2024-01-01,4\n2024-01-02,abc\n")
    return root


OPTIONS = ReadOptions(channels=("video", "email"), channel_aliases={"paid email": "email"})


def test_every_validation_rule_counts_the_same_from_a_table_as_from_files(bq_dataset, tmp_path):
    folder = bad_folder(tmp_path / "bad")
    bq_dataset.load_csv_folder(folder)
    config = ValidationConfig()

    from_csv = CsvReader(open_store(folder)).read(OPTIONS)
    reader = BigQueryReader(bq_dataset.uri)
    from_bq = reader.read(OPTIONS)

    csv_report = validate.validate(from_csv, config, date(2024, 6, 1))
    bq_report = validate.validate(from_bq, config, date(2024, 6, 1))
    for csv_rule, bq_rule in zip(csv_report.results, bq_report.results, strict=True):
        assert (bq_rule.rule, bq_rule.status, bq_rule.count) == (csv_rule.rule, csv_rule.status, csv_rule.count)
    failed = {r.rule for r in bq_report.failed()}
    assert {"null_values", "unparseable_values", "out_of_range_values", "negative_values", "unknown_channels",
            "duplicate_rows", "duplicate_revenue_months", "duplicate_control_periods"} <= failed
    pd.testing.assert_frame_equal(from_bq.daily_spend, from_csv.daily_spend)
    assert from_bq.spend_rows == from_csv.spend_rows == 12
    assert from_bq.revenue_by_month().to_dict() == from_csv.revenue_by_month().to_dict()

    # A row is named by its table and key, not by file and line.
    spend_table = f"{bq_dataset.project}.{bq_dataset.dataset}.spend"
    by_rule = {r.rule: r for r in bq_report.results}
    (unknown,) = by_rule["unknown_channels"].examples
    assert unknown == {"file": spend_table, "line": None,
                       "key": {"campaign": "brand", "channel": "radio", "date": "2024-01-07"},
                       "values": {"campaign": "brand", "channel": "radio", "date": "2024-01-07", "total_cost": "3"}}
    (duplicate,) = by_rule["duplicate_rows"].examples
    assert duplicate["key"] == {"campaign": "brand", "channel": "video", "date": "2024-01-01"}
    assert duplicate["values"]["rows"] == 2
    assert {e["values"]["total_cost"] for e in by_rule["unparseable_values"].examples
            if e["file"] == spend_table} == {"5", "abc"}  # 2024-13-01, abc
    assert {e["file"].rsplit(".", 1)[1] for e in by_rule["unparseable_values"].examples} == {
        "spend", "revenue", "controls"}
    (month,) = by_rule["duplicate_revenue_months"].examples
    assert month["file"] == f"{bq_dataset.project}.{bq_dataset.dataset}.revenue" and month["line"] is None
    assert month["values"]["first_seen"] == month["file"]
    assert all(e["line"] is None for r in bq_report.results for e in r.examples)
    # Examples leave BigQuery only because something was wrong: one query, at most 5 rows per rule.
    (examples,) = [q for q in reader.cost["queries"] if q["query"] == "spend_examples"]
    assert examples["rows_returned"] <= 5 * 6


def test_a_missing_spend_column_and_a_missing_table_are_findings(bq_dataset):
    bq_dataset.create_table("spend", {"CHANNEL": "STRING", "DATE": "DATE"}, [{"CHANNEL": "video", "DATE": "2024-01-01"}])

    raw = BigQueryReader(bq_dataset.uri).read(ReadOptions())
    report = validate.validate(raw, ValidationConfig(), date(2024, 6, 1))

    (missing,) = raw.findings["missing_columns"].examples
    assert missing["values"] == {"missing": ["total_cost"], "header": ["channel", "date"]}
    assert raw.revenue_files == []
    assert "no_input_files" in report.summary()["failed"]


GOOGLE_ADS_STATS = {"segments_date": "DATE", "campaign_id": "INT64", "metrics_cost_micros": "INT64",
                    "segments_ad_network_type": "STRING"}


def test_a_google_ads_transfer_table_maps_campaign_names_to_channels_and_costs_from_micros(bq_dataset):
    names = {1: "Brand search", 2: "YouTube launch", 3: "Display prospecting"}
    stats = [{"segments_date": f"2024-01-0{day}", "campaign_id": cid, "segments_ad_network_type": network,
              "metrics_cost_micros": cid * 1_250_000 + day * 10_000}
             for day in (1, 2, 3) for cid in names for network in ("SEARCH", "YOUTUBE")]
    bq_dataset.create_table("p_ads_CampaignBasicStats_1234567890", GOOGLE_ADS_STATS, stats)
    bq_dataset.create_table("p_ads_Campaign_1234567890", {"campaign_id": "INT64", "campaign_name": "STRING"},
                            [{"campaign_id": cid, "campaign_name": name} for cid, name in names.items()])
    config = BigQueryConfig(sources=[{"kind": "google_ads", "customer_id": "123-456-7890", "rules": [
        {"pattern": "(?i)^brand", "channel": "search_engine"}, {"pattern": "(?i)youtube|video", "channel": "video"}]}])

    raw = BigQueryReader(bq_dataset.uri, config).read(ReadOptions())

    expected = pd.DataFrame(stats).assign(cost=lambda f: f["metrics_cost_micros"] / 1e6)
    expected = expected[expected["campaign_id"] != 3].assign(
        channel=lambda f: f["campaign_id"].map({1: "search_engine", 2: "video"}))
    table = expected.pivot_table(index="segments_date", columns="channel", values="cost", aggfunc="sum")
    assert list(raw.daily_spend.columns) == ["search_engine", "video"]
    assert raw.daily_spend.to_numpy().ravel().tolist() == pytest.approx(table.to_numpy().ravel().tolist(), rel=1e-12)
    assert raw.spend_rows == len(stats)
    unknown = raw.findings["unknown_channels"]
    assert unknown.count == 6  # the display campaign's rows: no rule matches its name
    assert unknown.examples[0]["key"] == {"campaign_id": "3", "date": "2024-01-01"}
    assert unknown.examples[0]["values"]["campaign_name"] == "Display prospecting"
    assert raw.findings["duplicate_rows"].count == 0  # rows per network are segments, not duplicates
    assert raw.spend_files == [f"bq://{bq_dataset.project}.{bq_dataset.dataset}.p_ads_CampaignBasicStats_1234567890"]


META = {"DateStart": "STRING", "CampaignId": "STRING", "CampaignName": "STRING", "Spend": "FLOAT64",
        "AccountCurrency": "STRING", "AccountId": "STRING"}


def meta_rows() -> list[dict]:
    accounts = {"act_1": "EUR", "act_2": "EUR", "act_3": "USD"}
    return [{"DateStart": f"2024-02-0{day}", "CampaignId": f"{cid}", "CampaignName": f"campaign {cid}",
             "Spend": 10.0 * day + cid, "AccountCurrency": accounts[account], "AccountId": account}
            for day in (1, 2) for account in accounts for cid in (120 + int(account[-1]), 990 + int(account[-1]))]


def test_a_meta_table_maps_campaign_ids_with_rules_and_fails_naming_the_account_in_another_currency(bq_dataset):
    bq_dataset.create_table("AdInsights", META, meta_rows())
    config = BigQueryConfig(sources=[{"kind": "meta_ads", "match": "id", "rules": [
        {"pattern": "^12", "channel": "social_media"}, {"pattern": "^(99|o'brien`)", "channel": "video"}]}])

    raw = BigQueryReader(bq_dataset.uri, config).read(ReadOptions())
    report = validate.validate(raw, ValidationConfig(), date(2024, 6, 1))

    rows = pd.DataFrame(meta_rows())
    social = rows[rows["CampaignId"].str.startswith("12")].groupby("DateStart")["Spend"].sum()
    assert raw.daily_spend["social_media"].tolist() == social.tolist()
    assert raw.findings["unknown_channels"].count == 0
    (currency,) = [r for r in report.results if r.rule == "mixed_currencies"]
    assert currency.status == "fail" and currency.count == 1
    assert "USD on account act_3 (4 rows)" in currency.message
    assert "expected EUR, the currency of account act_1" in currency.message
    assert currency.examples[0]["key"] == {"account": "act_3"}


def test_the_configured_currency_is_the_one_every_account_must_use_and_a_fixed_channel_takes_every_campaign(
        bq_dataset):
    bq_dataset.create_table("AdInsights", META, meta_rows())
    config = BigQueryConfig(currency="USD", sources=[{"kind": "meta_ads", "channel": "social_media"}])

    raw = BigQueryReader(bq_dataset.uri, config).read(ReadOptions())

    assert raw.findings["mixed_currencies"].count == 2
    assert {e["key"]["account"] for e in raw.findings["mixed_currencies"].examples} == {"act_1", "act_2"}
    assert list(raw.daily_spend.columns) == ["social_media"]
    assert raw.daily_spend["social_media"].sum() == pytest.approx(pd.DataFrame(meta_rows())["Spend"].sum())


def test_reads_are_as_of_the_runs_start_and_the_fingerprint_names_each_table(bq_dataset):
    row = {"CAMPAIGN": "brand", "CHANNEL": "video", "DATE": "2024-01-01", "TOTAL_COST": "1.5"}
    table_id = bq_dataset.create_table("spend", dict.fromkeys(row, "STRING"), [row, {**row, "DATE": "2024-01-02"}])
    as_of = datetime.now(UTC)
    bq_dataset.client.insert_rows_json(table_id, [{**row, "DATE": "2024-01-03"}], timeout=20)

    before = BigQueryReader(bq_dataset.uri, as_of=as_of).read(ReadOptions())
    now = BigQueryReader(bq_dataset.uri, BigQueryConfig(time_travel=False)).read(ReadOptions())

    assert before.spend_rows == 2 and len(before.daily_spend) == 2
    assert now.spend_rows == 3
    (table,) = before.objects
    assert table["key"] == f"bq://{table_id}" and table["as_of"] == as_of.isoformat()
    assert table["checksum"].startswith("rows=3;modified=")
    assert before.fingerprint == now.fingerprint  # the same table, unchanged since
    bq_dataset.client.insert_rows_json(table_id, [{**row, "DATE": "2024-01-04"}], timeout=20)
    assert BigQueryReader(bq_dataset.uri).read(ReadOptions()).fingerprint != now.fingerprint


def test_every_query_is_dry_run_first_and_capped(bq_dataset):
    bq_dataset.create_table("spend", {"CHANNEL": "STRING", "DATE": "DATE", "TOTAL_COST": "FLOAT64"},
                            [{"CHANNEL": "video", "DATE": "2024-01-01", "TOTAL_COST": 2.0}])
    reader = BigQueryReader(bq_dataset.uri, BigQueryConfig(max_bytes_billed=10 * 2**20))

    reader.read(ReadOptions())

    assert reader.cost["max_bytes_billed"] == 10 * 2**20
    assert [q["query"] for q in reader.cost["queries"]] == ["spend_checks", "spend_daily"]
    assert all(q["bytes_estimated"] <= 10 * 2**20 for q in reader.cost["queries"])  # the emulator estimates 0
    jobs = [bq_dataset.client.get_job(q["job_id"], timeout=20) for q in reader.cost["queries"]]
    assert all(job.state == "DONE" for job in jobs)


def test_a_query_whose_dry_run_exceeds_the_cap_is_refused_before_it_runs(bq_dataset, monkeypatch):
    from google.cloud.bigquery import Client
    from google.cloud.bigquery.job import QueryJob

    from training.core.errors import DataSourceError

    bq_dataset.create_table("spend", {"CHANNEL": "STRING", "DATE": "DATE", "TOTAL_COST": "FLOAT64"},
                            [{"CHANNEL": "video", "DATE": "2024-01-01", "TOTAL_COST": 2.0}])
    # The emulator's dry run always estimates 0 bytes: make it report what a large table would (the only part
    # of BigQuery's answer replaced here), and record which queries really ran.
    monkeypatch.setattr(QueryJob, "total_bytes_processed",
                        property(lambda job: 5 * 2**30 if job.dry_run else 0))
    ran: list[bool] = []
    original = Client.query

    def query(self, sql, job_config=None, **kwargs):
        ran.append(bool(job_config and job_config.dry_run))
        return original(self, sql, job_config=job_config, **kwargs)

    monkeypatch.setattr(Client, "query", query)
    reader = BigQueryReader(bq_dataset.uri, BigQueryConfig(max_bytes_billed=10 * 2**20))

    with pytest.raises(DataSourceError) as exc:
        reader.read(ReadOptions())

    assert "would scan 5,368,709,120 bytes" in str(exc.value) and "max_bytes_billed=10,485,760" in str(exc.value)
    assert ran == [True]  # the dry run only: nothing was billed


@pytest.mark.parametrize(("entry", "field"), [
    ({"kind": "tiktok", "channel": "video"}, "bigquery.sources[0].kind"),
    ({"kind": "meta_ads"}, "bigquery.sources[0].channel"),
    ({"kind": "meta_ads", "channel": "video", "rules": [{"pattern": ".", "channel": "video"}]},
     "bigquery.sources[0].channel"),
    ({"kind": "meta_ads", "rules": [{"pattern": "(", "channel": "video"}]}, "bigquery.sources[0].rules[0].pattern"),
    ({"kind": "meta_ads", "channel": "radio"}, "bigquery.sources[0].channel"),
    ({"kind": "google_ads", "channel": "video"}, "bigquery.sources[0].customer_id"),
    ({"kind": "meta_ads", "channel": "video", "table": "AdInsights`; DROP TABLE x"}, "bigquery.sources[0].table"),
    ({"kind": "meta_ads", "channel": "video", "dataset": "p.d`x"}, "bigquery.sources[0].dataset"),
    ({"kind": "meta_ads", "channel": "video", "currency": "euro"}, "bigquery.sources[0].currency"),
    ({"kind": "meta_ads", "channel": "video", "acount": "x"}, "bigquery.sources[0].acount"),
])
def test_a_declared_source_is_checked_before_any_query(entry, field):
    with pytest.raises(ConfigError) as error:
        parse_sources([entry], "bq://adroi-test.ads", ["video", "email"])
    assert error.value.field == field


def test_table_names_are_checked_and_quoted():
    assert TableRef("my-project", "ads_data", "p_ads_Campaign_1").sql == "`my-project.ads_data.p_ads_Campaign_1`"
    with pytest.raises(ConfigError):
        TableRef("my-project", "ads`data", "spend")


def test_bq_data_uris_are_accepted_by_the_settings_and_open_a_bigquery_reader(tmp_path):
    config = tmp_path / "adroi.toml"
    config.write_text('data = "bq://my-project.google_ads"\n[bigquery]\nmax_bytes_billed = 1000000\n'
                      '[[bigquery.sources]]\nkind = "google_ads"\ncustomer_id = "1234567890"\nchannel = "search"\n')

    settings = load_settings(config, environ={})

    assert settings.bigquery.sources == [{"kind": "google_ads", "customer_id": "1234567890", "channel": "search"}]
    reader = open_reader(settings)
    assert isinstance(reader, BigQueryReader) and reader.sources[0].table.table == "p_ads_CampaignBasicStats_1234567890"
    assert isinstance(open_reader(load_settings(overrides={"data": str(tmp_path)}, environ={})), CsvReader)
    for bad in ("bq://my-project", "bq://my-project.data.set", "s3://bucket/data"):
        with pytest.raises(ConfigError) as error:
            load_settings(overrides={"data": bad}, environ={})
        assert error.value.field == "data"
    with pytest.raises(ConfigError) as error:
        load_settings(overrides={"bigquery.sources": '[{"kind": "meta_ads", "channel": "x"}]'}, environ={})
    assert error.value.field == "bigquery.sources"  # ad tables need a bq:// data source


def daily_folder(root: Path, good_data: str) -> Path:
    """The good data's spend with daily revenue (each month's revenue spread over its days) and daily controls."""
    import shutil

    shutil.copytree(Path(good_data) / "spend", root / "spend")
    monthly = pd.concat(pd.read_csv(f) for f in sorted((Path(good_data) / "revenue").glob("*.csv")))
    days = []
    for row in monthly.itertuples():
        month = pd.date_range(f"{row.YEAR}-{row.MONTH:02d}-01", periods=1, freq="MS")[0]
        for day in pd.date_range(month, month + pd.offsets.MonthEnd(0)):
            days.append({"DATE": day.strftime("%Y-%m-%d"), "REVENUE": round(row.REVENUE / month.days_in_month, 2)})
    (root / "revenue").mkdir()
    pd.DataFrame(days).to_csv(root / "revenue" / "daily.csv", index=False)
    (root / "controls").mkdir()
    pd.DataFrame({"DATE": [d["DATE"] for d in days], "PRICE_INDEX": [100 + i % 7 for i in range(len(days))],
                  "PROMO": [i % 11 == 0 for i in range(len(days))]}).astype({"PROMO": int}).to_csv(
        root / "controls" / "daily.csv", index=False)
    return root


def test_daily_revenue_and_controls_give_the_same_weekly_periods_as_files(good_data, bq_dataset, tmp_path):
    from training.ingest import period_data

    folder = daily_folder(tmp_path / "daily", good_data)
    bq_dataset.load_csv_folder(folder, {"DATE": "DATE", "TOTAL_COST": "FLOAT64", "REVENUE": "FLOAT64",
                                        "PRICE_INDEX": "FLOAT64", "PROMO": "INT64"})
    options = ReadOptions(controls_aggregate={"promo": "sum"})

    from_csv = period_data(CsvReader(open_store(folder)).read(options), "week")
    from_bq = period_data(BigQueryReader(bq_dataset.uri).read(options), "week")

    assert from_bq.periods == from_csv.periods and len(from_bq.periods) > 100
    pd.testing.assert_frame_equal(from_bq.daily_spend, from_csv.daily_spend, rtol=1e-12)
    assert from_bq.revenue.tolist() == pytest.approx(from_csv.revenue.tolist(), rel=1e-12)
    pd.testing.assert_frame_equal(from_bq.controls, from_csv.controls)


def test_an_unreachable_bigquery_fails_fast_with_a_typed_error(monkeypatch):
    import socket

    from training.core.errors import DataSourceError

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    monkeypatch.setenv("BIGQUERY_EMULATOR_HOST", f"http://127.0.0.1:{port}")
    reader = BigQueryReader("bq://adroi-test.nowhere", BigQueryConfig(timeout=2))

    with pytest.raises(DataSourceError, match="adroi-test.nowhere.spend"):
        reader.read(ReadOptions())


def test_queries_run_in_the_billing_project_and_read_tables_named_in_full(bq_dataset):
    bq_dataset.create_table("spend", {"CHANNEL": "STRING", "DATE": "DATE", "TOTAL_COST": "FLOAT64"},
                            [{"CHANNEL": "video", "DATE": "2024-01-01", "TOTAL_COST": 2.0}])
    reader = BigQueryReader(bq_dataset.uri, BigQueryConfig(billing_project="adroi-billing"))

    raw = reader.read(ReadOptions())

    assert reader.client.project == "adroi-billing"
    assert raw.daily_spend["video"].tolist() == [2.0]
    with pytest.raises(ConfigError) as error:
        load_settings(overrides={"bigquery.billing_project": "Not A Project"}, environ={})
    assert error.value.field == "bigquery.billing_project"
