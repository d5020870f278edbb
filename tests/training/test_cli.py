"""Tests of `python -m training` (training/cli.py): exit codes, summary, --json, rollback, settings precedence."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import date
from pathlib import Path

import pytest

from training import cli
from training.config import REPO_ROOT, SAMPLE_DATA
from training.core.registry import ModelRegistry
from training.core.store import open_store
from training.metrics import open_metrics
from training.sample import CHANNELS, write_sample


def clean_env(**extra: str) -> dict[str, str]:
    """The test process's environment without ADROI_* settings, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ADROI_")}
    return {**env, "ADROI_CODE_VERSION": "cli-test", **extra}


# The default algorithm (mmm) with small grids and few bootstrap replicates, for the tests of the CLI's
# mechanics on generated data (the bundled-sample test runs the full defaults).
FAST_MMM_ENV = {"ADROI_MODEL__MMM_DECAYS": "0.0,0.7", "ADROI_MODEL__MMM_HALF_SATURATIONS": "0.6,2.5",
                "ADROI_MODEL__MMM_SHAPES": "1.0", "ADROI_MODEL__MMM_ALPHAS": "0.0", "ADROI_MODEL__MMM_SWEEPS": "1",
                "ADROI_MODEL__BOOTSTRAP_REPLICATES": "20"}


@pytest.fixture
def fast_mmm(no_adroi_env, monkeypatch):
    """No ADROI_* setting from the caller, but the fast media-mix grids."""
    for name, value in FAST_MMM_ENV.items():
        monkeypatch.setenv(name, value)


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "training", *args], cwd=REPO_ROOT, capture_output=True,
                          text=True, timeout=180, env=env or clean_env())


@pytest.mark.slow
def test_run_on_the_bundled_sample_prints_summary_then_json(tmp_path):
    store, metrics = str(tmp_path / "store"), f"sqlite:///{tmp_path / 'metrics.db'}"

    human = run_cli("run", "--data", str(SAMPLE_DATA), "--store", store, "--metrics", metrics)
    machine = run_cli("run", "--data", str(SAMPLE_DATA), "--store", str(tmp_path / "store-2"), "--metrics", metrics,
                      "--json", "--log-format", "json")
    again = run_cli("run", "--data", str(SAMPLE_DATA), "--store", store, "--metrics", metrics)

    assert human.returncode == 0, human.stdout + human.stderr
    assert "PROMOTED (exit 0)" in human.stdout and "mmm, month grain" in human.stdout
    assert "ROI           revenue per unit of spend over 2022-11..2026-10 (90% intervals)" in human.stdout
    roi_rows = {line.split()[0]: line.split() for line in human.stdout.splitlines() if line.startswith("    ")}
    for channel in CHANNELS:  # channel, ROI, [lo, hi], mROI, [lo, hi], spend
        row = roi_rows[channel]
        assert row[2].startswith("[") and row[3].endswith("]") and row[5].startswith("[") and row[6].endswith("]")
        assert float(row[2][1:-1]) <= float(row[1]) <= float(row[3][:-1])
    assert "[training_started]" in human.stderr and "[model_promoted]" in human.stderr
    assert machine.returncode == 0, machine.stderr
    result = json.loads(machine.stdout)  # stdout holds the result alone; the JSON logs went to stderr
    assert {json.loads(line)["severity"] for line in machine.stderr.splitlines()} <= {"INFO", "WARNING"}
    assert result["status"] == "promoted" and result["exit_code"] == 0
    assert set(result["coefficients"]) == set(CHANNELS) == set(result["roi"]["channels"])
    assert result["algorithm"] == "mmm" and result["grain"] == "month"
    assert Path(result["files"]["model"], "manifest.json").is_file()
    assert again.returncode == 0 and "UNCHANGED (exit 0)" in again.stdout, again.stdout + again.stderr
    assert [r["status"] for r in open_metrics(metrics).history()] == ["unchanged", "promoted", "promoted"]


@pytest.mark.slow
def test_exit_codes_for_rejected_invalid_and_bad_usage(good_data, tmp_path):
    store, metrics = str(tmp_path / "store"), f"sqlite:///{tmp_path / 'metrics.db'}"
    short = tmp_path / "short"
    write_sample(short, months=5, campaigns=1, seed=2)

    rejected = run_cli("run", "--data", good_data, "--store", store, "--metrics", metrics,
                       "--run-date", "2026-11-01", "--evaluation-threshold", "1.0", env=clean_env(**FAST_MMM_ENV))
    invalid = run_cli("run", "--data", str(short), "--store", store, "--metrics", metrics, "--run-date", "2026-11-01")
    bad_threshold = run_cli("run", "--data", good_data, "--store", store, "--evaluation-threshold", "2")

    assert rejected.returncode == 3 and "REJECTED (exit 3)" in rejected.stdout
    assert "< threshold 1" in rejected.stdout
    assert invalid.returncode == 2 and "DATA_INVALID" in invalid.stdout
    assert bad_threshold.returncode == 2 and "gate.evaluation_threshold=2.0" in bad_threshold.stderr
    assert ModelRegistry(open_store(store)).latest() is None


def test_cli_overrides_environment_which_overrides_defaults(good_data, tmp_path, monkeypatch, fast_mmm, capsys):
    monkeypatch.setenv("ADROI_STORE", str(tmp_path / "store"))
    monkeypatch.setenv("ADROI_METRICS", f"sqlite:///{tmp_path / 'metrics.db'}")
    monkeypatch.setenv("ADROI_RUN_DATE", "2026-11-01")
    monkeypatch.setenv("ADROI_GATE__EVALUATION_THRESHOLD", "1.0")

    from_env = cli.main(["run", "--data", good_data, "--run-id", "env"])
    from_cli = cli.main(["run", "--data", good_data, "--run-id", "cli", "--evaluation-threshold", "0.5", "--json"])

    assert from_env == 3
    assert from_cli == 0
    assert json.loads(capsys.readouterr().out.splitlines()[-1])["run_id"] == "cli"


def test_versions_promote_rollback_and_refusal(good_data, tmp_path, fast_mmm, capsys):
    store, metrics = str(tmp_path / "store"), f"sqlite:///{tmp_path / 'metrics.db'}"
    common = ["--data", good_data, "--store", store, "--metrics", metrics, "--run-date", "2026-11-01"]
    assert cli.main(["run", *common, "--run-id", "first"]) == 0
    assert cli.main(["run", *common, "--run-id", "second", "--algorithm", "ridge"]) == 0
    registry = ModelRegistry(open_store(store))
    first, second = registry.versions()
    capsys.readouterr()

    assert cli.main(["versions", "--store", store]) == 0
    listing = capsys.readouterr().out
    assert cli.main(["promote", first, "--store", store]) == 0
    rolled_back = registry.latest()
    open_store(store).write(f"models/{second}/model.joblib", b"tampered")
    refused = cli.main(["promote", second, "--store", store])
    missing = cli.main(["promote", "20990101T000000Z-deadbeef", "--store", store])

    assert any(line.startswith("*") and second in line for line in listing.splitlines()) and first in listing
    assert rolled_back.version == first and rolled_back.previous == second
    assert refused == 2 and missing == 2
    err = capsys.readouterr().err
    assert "sha256" in err and "no manifest.json" in err
    assert registry.latest().version == first


def test_a_bad_metrics_uri_is_a_usage_error_before_any_work(tmp_path, no_adroi_env, capsys):
    store = tmp_path / "store"

    code = cli.main(["run", "--data", str(tmp_path / "no-such-data"), "--store", str(store),
                     "--metrics", "mysql://x"])

    assert code == 2
    assert "metrics='mysql://x': expected 'sqlite:///path/to/metrics.db' or" in capsys.readouterr().err
    assert not store.exists()  # nothing staged, nothing published


def test_store_repairs_broken_pointer_manifest_name_and_killed_publishes(tmp_path, publish_model, no_adroi_env,
                                                                          capsys):
    store = str(tmp_path / "store")
    first, second = publish_model(store), publish_model(store, {"email": 1.0, "video": 2.0})
    root = tmp_path / "store" / "models"
    (root / "LATEST").write_text("{not json")
    (root / first.version / "manifest.json").write_text("{broken")
    killed = "20260101T000000Z-0000abcd"
    (root / killed).mkdir()
    (root / killed / "model.joblib").write_bytes(b"half")
    (root / killed / ".manifest.json.x1.tmp").write_bytes(b"{")
    capsys.readouterr()

    assert cli.main(["versions", "--store", store]) == 0
    listed = capsys.readouterr()
    assert cli.main(["gc", "--store", store, "--dry-run"]) == 0  # default age limit: all of it is too new
    too_new = capsys.readouterr().out
    assert cli.main(["gc", "--store", store, "--older-than", "0", "--dry-run"]) == 0
    planned = capsys.readouterr().out
    assert cli.main(["gc", "--store", store, "--older-than", "0"]) == 0
    capsys.readouterr()
    long_name = cli.main(["promote", "x" * 300, "--store", store])
    long_err = capsys.readouterr().err
    repaired = cli.main(["promote", second.version, "--store", store])
    repair_out = capsys.readouterr().out

    rows = {line.split()[0]: line for line in listed.out.splitlines()[1:]}
    assert "unreadable" in listed.err and "promote VERSION" in listed.err
    assert "broken" in rows[first.version] and "not valid JSON" in rows[first.version]
    assert "incomplete" in rows[killed] and "promoted" in rows[second.version]
    assert "would remove 0 object(s)" in too_new
    assert f"would remove models/{killed}/model.joblib" in planned and "would remove 2 object(s)" in planned
    assert not (root / killed).exists() and (root / second.version / "manifest.json").exists()
    assert long_name == 2 and "invalid version name: expected YYYYmmddTHHMMSSZ-" in long_err
    assert "Traceback" not in long_err and "x" * 100 not in long_err
    assert repaired == 0 and "LATEST was unreadable" in repair_out and "replaced" in repair_out
    assert ModelRegistry(open_store(store)).latest().version == second.version


def test_history_lists_recorded_runs(good_data, tmp_path, fast_mmm, capsys):
    metrics = f"sqlite:///{tmp_path / 'metrics.db'}"
    cli.main(["run", "--data", good_data, "--store", str(tmp_path / "s"), "--metrics", metrics,
              "--run-date", "2026-11-01", "--run-id", "h1"])
    capsys.readouterr()
    assert cli.main(["history", "--metrics", metrics, "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert cli.main(["history", "--metrics", metrics]) == 0
    table = capsys.readouterr().out.splitlines()
    assert [(r["run_id"], r["status"]) for r in rows] == [("h1", "promoted")]
    assert table[0].split()[:3] == ["started_at", "run_id", "status"] and "h1" in table[1]


def test_history_shows_the_served_models_realised_performance(tmp_path, no_adroi_env, capsys):
    from datetime import UTC, datetime

    from training.metrics import RunRecord, open_metrics

    metrics = f"sqlite:///{tmp_path / 'metrics.db'}"
    sink = open_metrics(metrics)
    started = datetime(2026, 11, 20, 4, tzinfo=UTC)
    sink.record(RunRecord("first", started, "promoted"))  # no champion yet: nothing to show
    sink.record(RunRecord("quiet", started.replace(day=21), "rejected", realised_version="v1", realised_periods=0))
    sink.record(RunRecord("fine", started.replace(day=22), "promoted", realised_version="v1", realised_periods=3,
                          realised_rmse=1200.0, realised_mape=0.031, realised_rmse_limit=1500.0, model_degraded=False))
    sink.record(RunRecord("bad", started.replace(day=23), "rejected", realised_version="v2", realised_periods=2,
                          realised_rmse=2400.0, realised_mape=0.08, realised_rmse_limit=1500.0, model_degraded=True))

    assert cli.main(["history", "--metrics", metrics]) == 0

    lines = capsys.readouterr().out.splitlines()
    assert "realised" in lines[0].split()
    by_run = {line.split()[2]: line for line in lines[1:]}
    assert "RMSE 2,400/2 (MAPE 8.0%) > 1,500 DEGRADED" in by_run["bad"]
    assert "RMSE 1,200/3 (MAPE 3.1%) ≤ 1,500" in by_run["fine"] and "DEGRADED" not in by_run["fine"]
    assert "0 new" in by_run["quiet"] and "RMSE" not in by_run["first"]


def test_sample_data_and_export_schema(tmp_path, no_adroi_env, capsys):
    assert cli.main(["sample-data", str(tmp_path / "data"), "--months", "14", "--campaigns", "2", "--seed", "4"]) == 0
    assert cli.main(["export-schema", str(tmp_path / "schema.json")]) == 0
    assert sorted(p.name for p in (tmp_path / "data" / "revenue").iterdir()) == ["2025.csv", "2026.csv"]
    schema = json.loads((tmp_path / "schema.json").read_text())
    assert {"run_id", "status", "holdout_r2"} <= {c["name"] for c in schema}


def test_media_mix_sample_data_takes_channels_and_an_end_month(tmp_path, no_adroi_env, capsys):
    assert cli.main(["sample-data", str(tmp_path / "data"), "--process", "mmm", "--years", "2", "--channels",
                     "tv,email", "--end-month", "2025-06"]) == 0
    truth = json.loads((tmp_path / "data" / "TRUTH.json").read_text())
    assert truth["window_days"][1] == "2025-06-30" and truth["channels"] == ["tv", "email"]
    assert "true ROI: tv" in capsys.readouterr().out


@pytest.mark.parametrize(("today", "expected"), [(date(2027, 3, 9), "2027-02"), (date(2027, 1, 31), "2026-12")])
def test_sample_data_end_month_last_is_the_month_before_today(today, expected):
    assert cli.end_month("last", today=today) == expected
    assert cli.end_month("2025-07") == "2025-07"


def test_sample_data_end_month_last_writes_a_sample_fresh_today(tmp_path, no_adroi_env):
    assert cli.main(["sample-data", str(tmp_path / "data"), "--months", "14", "--campaigns", "2",
                     "--end-month", "last"]) == 0
    truth = json.loads((tmp_path / "data" / "TRUTH.json").read_text())
    assert truth["months"][-1] == cli.end_month("last")


def test_sample_data_rejects_a_malformed_end_month(tmp_path, capsys):
    with pytest.raises(SystemExit) as info:
        cli.main(["sample-data", str(tmp_path), "--end-month", "2026-13"])
    assert info.value.code == 2
    assert "'2026-13': expected YYYY-MM or 'last'" in capsys.readouterr().err


def test_usage_errors_exit_2(tmp_path):
    with pytest.raises(SystemExit) as info:
        cli.main(["frobnicate"])
    assert info.value.code == 2


@pytest.mark.slow
def test_gcs_data_to_bigquery_row_end_to_end(gcs_bucket, bq_table_uri):
    write_sample(f"{gcs_bucket}/data", months=36, campaigns=2, seed=31)

    done = run_cli("run", "--data", f"{gcs_bucket}/data", "--store", f"{gcs_bucket}/models",
                   "--metrics", bq_table_uri, "--run-date", "2026-11-01", "--run-id", "gcs-bq", "--json",
                   env=clean_env(**FAST_MMM_ENV))

    assert done.returncode == 0, done.stderr
    version = json.loads(done.stdout)["version"]
    registry = ModelRegistry(open_store(f"{gcs_bucket}/models"))
    manifest, _ = registry.verify(version)
    assert registry.latest().version == version and manifest["run_id"] == "gcs-bq"
    row = open_metrics(bq_table_uri).get("gcs-bq")
    assert row["status"] == "promoted" and row["model_version"] == version


def test_grain_option_reaches_validation(good_data, tmp_path, no_adroi_env, capsys):
    code = cli.main(["run", "--data", good_data, "--store", str(tmp_path / "store"), "--metrics",
                     f"sqlite:///{tmp_path / 'metrics.db'}", "--run-date", "2026-11-01", "--grain", "week", "--json"])

    assert code == 2
    assert json.loads(capsys.readouterr().out.splitlines()[-1])["validation"]["failed"] == ["grain_mismatch"]


# ---- allocate ------------------------------------------------------------------------------------------

def _allocate_json(store: str, *args: str, capsys) -> dict:
    assert cli.main(["allocate", "--store", store, *args, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_allocate_prints_a_table_a_person_reads(mmm_store, no_adroi_env, capsys):
    answer = _allocate_json(mmm_store.store_uri, "--budget", "400000", "--bounds", "tv=0:150000,search=70000:",
                            capsys=capsys)

    assert cli.main(["allocate", "--store", mmm_store.store_uri, "--budget", "400000",
                     "--bounds", "tv=0:150000,search=70000:"]) == 0
    table = capsys.readouterr().out.splitlines()

    assert table[0].startswith(f"model {mmm_store.version} (mmm), period 2026-11, budget 400,000 per month")
    assert table[2].split() == ["channel", "current", "spend", "recommended", "change", "mROI", "bound"]
    rows = {line.split()[0]: line.split() for line in table[3:8]}
    assert list(rows) == ["tv", "search", "social", "display", "total"]
    for channel, spend in answer["allocation"].items():
        current = answer["current_mix"]["allocation"][channel]
        assert rows[channel][1:4] == [f"{current:,.0f}", f"{spend:,.0f}", f"{spend - current:+,.0f}"]
        assert rows[channel][4] == f"{answer['channels'][channel]['mroi']:.2f}"
    assert rows["tv"][5] == "max" and rows["search"][5] == "min"  # tv at its 150,000 cap, search at its floor
    assert f"predicted revenue  {answer['predicted_revenue']:,.0f}" in "\n".join(table)
    assert f"lift               {answer['lift']['revenue']:+,.0f}  ({answer['lift']['relative']:+.1%})" in table


def test_allocate_json_is_the_apis_answer(mmm_store, make_app, no_adroi_env, capsys):
    from_cli = _allocate_json(mmm_store.store_uri, "--budget", "250000", "--period", "2027-01", "--scenario",
                              "target_mroi", "--target-mroi", "2", capsys=capsys)

    client = make_app({"MODEL_STORE": mmm_store.store_uri}).test_client()
    from_api = client.post("/allocate", json={"budget": 250000, "period": "2027-01", "scenario": "target_mroi",
                                              "target_mroi": 2}).get_json()

    assert from_cli == from_api


@pytest.mark.parametrize(("args", "message"), [
    (["--budget", "-5"], "budget=-5.0: expected a positive finite number"),
    (["--budget", "1e5", "--bounds", "tv=5"], "--bounds='tv=5': expected channel=min:max"),
    (["--budget", "1e5", "--bounds", "tv=a:b"], "expected numbers for min and max"),
    (["--budget", "1e5", "--bounds", "radio=0:5"], "bounds.radio='radio': expected a channel of the model"),
    (["--budget", "1e5", "--bounds", "tv=90000:,search=20000:"], "sum of minimums (110,000.00)"),
    (["--budget", "1e5", "--period", "2026-W50"], "period='2026-W50': expected a period of the model's grain"),
])
def test_allocate_refusals_are_usage_errors_naming_the_field(mmm_store, no_adroi_env, capsys, args, message):
    assert cli.main(["allocate", "--store", mmm_store.store_uri, *args]) == cli.EXIT_USAGE
    assert message in capsys.readouterr().err


def test_allocate_without_a_promoted_model_says_so(tmp_path, no_adroi_env, capsys):
    assert cli.main(["allocate", "--store", str(tmp_path / "empty"), "--budget", "1e5"]) == cli.EXIT_USAGE
    assert "no promoted model" in capsys.readouterr().err


def test_parse_bounds_reads_open_ends():
    assert cli.parse_bounds("tv=0:50000, search=10000:,email=:5") == {
        "tv": [0.0, 50000.0], "search": [10000.0, None], "email": [None, 5.0]}
    assert cli.parse_bounds(None) is None


def test_run_trains_from_a_bigquery_dataset_and_exits_2_on_a_bad_row_there(good_data, bq_dataset, tmp_path):
    bq_dataset.load_csv_folder(good_data)
    common = ["--store", str(tmp_path / "store"), "--metrics", f"sqlite:///{tmp_path / 'metrics.db'}",
              "--run-date", "2026-11-15", "--json"]

    good = run_cli("run", "--data", bq_dataset.uri, *common)
    bq_dataset.create_table("spend_extra", {"CHANNEL": "STRING"}, [])  # an unrelated table is not read
    bq_dataset.client.insert_rows_json(f"{bq_dataset.project}.{bq_dataset.dataset}.spend", [
        {"CAMPAIGN": "brand", "CHANNEL": "video", "DATE": "2026-10-31", "TOTAL_COST": "-12.5"}], timeout=20)
    bad = run_cli("run", "--data", bq_dataset.uri, *common)
    usage = run_cli("run", "--data", "bq://adroi-test.not.a.dataset", *common)

    assert good.returncode == 0, good.stderr[-2000:]
    result = json.loads(good.stdout)
    assert result["status"] == "promoted"
    source = result["validation"]["source"]  # the cost of the read is in the run's summary
    assert 0 < source["rows_returned"] < result["validation"]["rows"] and source["time_travel"] is True
    from training.pipeline import RunResult

    assert f"{source['rows_returned']:,} rows returned" in cli.format_summary(RunResult(**result))
    assert bad.returncode == 2, bad.stderr[-2000:]
    assert json.loads(bad.stdout)["status"] == "data_invalid"
    assert "negative_values: found 1 negative" in json.loads(bad.stdout)["reason"]
    assert usage.returncode == 2 and "bq://project.dataset" in usage.stderr
