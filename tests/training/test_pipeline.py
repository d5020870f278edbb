"""End-to-end tests of training/pipeline.py on a local folder and on fake-gcs-server, with SQLite metrics."""

from __future__ import annotations

import gzip
import io
import json
import logging
import re
import shutil
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from training import pipeline, plots
from training.config import load_settings
from training.core.errors import ConfigError, DataInvalidError, StorageError, StorageUnavailable
from training.core.registry import LATEST_KEY, ModelRegistry
from training.core.store import open_store
from training.metrics import open_metrics
from training.sample import TRUE_ROI, write_sample

# The default algorithm (mmm) with small transform grids and few bootstrap replicates: the pipeline's
# mechanics are the same, a run takes 3 s instead of 10.
FAST_MMM = {"model.mmm_decays": [0.0, 0.7], "model.mmm_half_saturations": [0.6, 2.5], "model.mmm_shapes": [1.0],
            "model.mmm_alphas": [0.0], "model.mmm_sweeps": 1, "model.bootstrap_replicates": 20}


def make_settings(data: str, store: str, tmp_path: Path, run_date: str = "2026-11-15", **more: Any):
    """Settings for one test (the default algorithm, fast grids), ignoring the caller's ADROI_* environment."""
    overrides = {"data": data, "store": store, "metrics": f"sqlite:///{tmp_path / 'metrics.db'}",
                 "run_date": run_date, "code_version": "test-sha", **FAST_MMM, **more}
    return load_settings(overrides=overrides, environ={})


def latest_version(store_uri: str) -> str | None:
    pointer = ModelRegistry(open_store(store_uri)).latest()
    return pointer.version if pointer else None


def test_run_promotes_first_model_publishes_manifest_and_records_it(good_data, store_uri, tmp_path):
    settings = make_settings(good_data, store_uri, tmp_path, **{"model.algorithm": "ols"})  # the linear truth

    result = pipeline.run(settings, "run-1")

    assert (result.status, result.exit_code) == ("promoted", 0), result.reason
    registry = ModelRegistry(open_store(store_uri))
    assert latest_version(store_uri) == result.version
    manifest, spec = registry.load(result.version)
    assert manifest["status"] == "promoted" and manifest["run_id"] == "run-1"
    assert spec["format"] == "adroi-model/2" and spec["algorithm"] == manifest["algorithm"] == "ols"
    assert manifest["channels"] == spec["channels"]
    assert spec["coefficients"].tolist() == [manifest["coefficients"][c] for c in spec["channels"]]
    for channel, roi in TRUE_ROI.items():
        assert manifest["coefficients"][channel] == pytest.approx(roi, rel=0.15)
    assert manifest["training"]["refit_on_all_months"] is True
    assert len(manifest["training"]["months"]) == 36 and manifest["training"]["holdout_months"][-1] == "2026-10"
    assert manifest["gate"]["decision"] == "promoted" and manifest["gate"]["champion"] is None
    assert manifest["metrics"]["holdout"]["r2"] >= 0.8 and manifest["code_version"] == "test-sha"
    assert set(manifest["libraries"]) >= {"python", "scikit-learn", "numpy", "joblib"}
    assert manifest["data"]["fingerprint"] and manifest["data"]["spend_rows"] > 0
    assert {"validation.json", *plots.PLOT_FILES} <= set(manifest["files"])
    assert result.coefficients == manifest["coefficients"]
    assert manifest["grain"] == "month" and manifest["n_parameters"] == 5
    for channel, entry in manifest["roi"]["channels"].items():  # linear: roi = mroi = the coefficient
        assert entry["roi"] == entry["mroi"] == manifest["coefficients"][channel]
        assert entry["roi_interval"][0] < entry["roi"] < entry["roi_interval"][1]
        assert manifest["response_curves"]["channels"][channel]["form"] == "linear"
    assert manifest["roi"]["window"] == [manifest["training"]["months"][0], "2026-10"]
    assert manifest["decomposition"]["periods"] == manifest["training"]["months"]
    assert manifest["intervals"]["method"].startswith("moving-block bootstrap")
    assert result.roi == manifest["roi"] and result.algorithm == "ols"
    # bootstrapped once: the published refit has intervals, the candidate evaluated before it none
    staged = json.loads(open_store(store_uri).read(pipeline.staging_key("run-1", pipeline.EVALUATION_FILE)))
    assert staged["intervals"]["method"] is None
    row = open_metrics(settings.metrics).get("run-1")
    assert row["status"] == "promoted" and row["model_version"] == result.version
    assert row["holdout_r2"] == pytest.approx(result.metrics["holdout"]["r2"])
    assert row["months_used"] == 36 and row["code_version"] == "test-sha"


def test_linear_models_keep_their_coefficients_on_the_staged_periods(good_data, tmp_path):
    from training import ingest, model
    from training.core.store import open_store as open_data

    settings = make_settings(good_data, str(tmp_path / "store"), tmp_path, **{"model.algorithm": "ridge"})
    pipeline.validate_data(settings, "ridge")
    pipeline.train_and_evaluate(settings, "ridge")
    staged = json.loads(open_store(settings.store).read("runs/ridge/evaluation.json"))
    table = ingest.training_data(ingest.ingest(open_data(good_data)))  # the monthly table of before
    train = staged["split"]["train_months"]
    _, direct = model.fit(table.features.loc[train], table.revenue.loc[train], settings.model)

    # the same coefficients (up to the order the daily costs were summed in: 1e-16 relative)
    assert staged["model"]["coefficients"] == pytest.approx(direct.coefficients, rel=1e-12)
    assert staged["model"]["hyperparameters"]["alpha"] == direct.hyperparameters["alpha"]


@pytest.fixture(scope="module")
def mmm_data(tmp_path_factory) -> tuple[str, dict[str, Any]]:
    """A media-mix sample (4 years, monthly revenue, controls) and its TRUTH.json."""
    from training.sample import write_mmm_sample

    root = tmp_path_factory.mktemp("mmm-sample")
    truth = write_mmm_sample(root, seed=5, channels=["tv", "search", "social"])
    return str(root), truth


def test_a_media_mix_run_publishes_a_verified_model_with_every_block(mmm_data, tmp_path):
    data, truth = mmm_data
    settings = make_settings(data, str(tmp_path / "store"), tmp_path, **{"model.bootstrap_replicates": 40})

    result = pipeline.run(settings, "mmm")

    assert result.status == "promoted", result.reason
    manifest, spec = ModelRegistry(open_store(settings.store)).load(result.version)  # CONSISTENCY_CHECKS["mmm"]
    assert spec["algorithm"] == manifest["algorithm"] == "mmm" and manifest["grain"] == "month"
    assert manifest["coefficients"] == {c: e["mroi"] for c, e in manifest["roi"]["channels"].items()}
    assert manifest["intercept"] is None
    for channel, entry in manifest["roi"]["channels"].items():
        lo, hi = entry["roi_interval"]
        assert lo <= entry["roi"] <= hi
        assert 0.4 * truth["roi"][channel] < entry["roi"] < 2.5 * truth["roi"][channel]  # right magnitude
        curve = manifest["response_curves"]["channels"][channel]
        assert curve["form"] == "hill"  # the published model is the full-data fit: one Hill curve per channel
        i = spec["channels"].index(channel)
        assert curve["parameters"]["decay"] == float(spec["decay"][i][0])
    assert manifest["intervals"]["replicates"] == 40 and manifest["intervals"]["transforms_reselected_per_replicate"]
    assert manifest["decomposition"]["periods"] == manifest["training"]["months"]
    assert manifest["training"]["months"][-1] == "2026-10" and len(manifest["training"]["months"]) == 48
    assert manifest["n_parameters"] == len(spec["base_terms"]) + 3
    assert spec["controls"] == truth["controls"]
    row = open_metrics(settings.metrics).get("mmm")
    assert row["algorithm"] == "mmm" and row["intercept"] is None and row["coefficients"] == manifest["coefficients"]


def test_validation_judges_identifiability_with_the_media_mix_models_parameter_count(mmm_data, tmp_path):
    data, _ = mmm_data  # 48 months, 3 channels, 3 controls
    settings = make_settings(data, str(tmp_path / "store"), tmp_path, **{"model.fourier_order": 1})

    pipeline.validate_data(settings, "identifiable")

    report = json.loads(open_store(settings.store).read("runs/identifiable/validation.json"))
    # level, trend, 1 sin/cos pair, 3 controls and 3 media coefficients: 10 > 48 / 5
    [warning] = [w for w in report["warnings"] if w.startswith("identifiability")]
    assert "the model has 10 parameters for 48 periods" in warning


def test_gate_compares_media_mix_champion_and_challenger_on_the_same_periods(mmm_data, tmp_path):
    from training.sample import write_mmm_sample

    data, _ = mmm_data
    older = tmp_path / "older"
    write_mmm_sample(older, seed=5, channels=["tv", "search", "social"], end_month="2026-04")
    store = str(tmp_path / "store")
    champion = pipeline.run(make_settings(str(older), store, tmp_path, run_date="2026-05-15"), "champion")
    assert champion.status == "promoted", champion.reason
    settings = make_settings(data, store, tmp_path, **{"model.mmm_decays": [0.0], "gate.evaluation_threshold": 0.0,
                                                        "gate.rmse_tolerance": 100.0})

    challenger = pipeline.run(settings, "challenger")  # no carryover at all: other transforms than the champion's

    staged = open_store(store)
    gated = json.loads(staged.read("runs/challenger/gate.json"))
    evaluation = json.loads(staged.read("runs/challenger/evaluation.json"))
    unseen = [m for m in evaluation["split"]["holdout_months"] if m > "2026-04"]
    assert gated["compared_on_months"] == unseen and len(unseen) == 6
    # the champion predicted those months with its own spec from the challenger's daily spend
    from training import model
    from training.core.registry import ModelRegistry as Registry

    _, champion_spec = Registry(staged).load(champion.version)
    periods = pipeline.period_data_from_doc(json.loads(staged.read("runs/challenger/training_data.json")))
    where = [periods.periods.index(m) for m in unseen]
    predicted = model.predict_periods(champion_spec, periods)[where]
    rmse = float(np.sqrt(np.mean((predicted - periods.revenue[where]) ** 2)))
    assert gated["champion"]["rmse"] == pytest.approx(rmse)
    assert f"champion {champion.version} RMSE" in challenger.reason and challenger.status == "promoted"


def test_staged_period_data_round_trips_daily_revenue_and_controls():
    from training.sample import mmm_period_data, simulate_mmm
    data, _ = mmm_period_data(simulate_mmm(1, 1, ["tv", "search"]), "week")

    back = pipeline.period_data_from_doc(json.loads(json.dumps(pipeline.period_data_doc(data))))
    monthly, _ = mmm_period_data(simulate_mmm(1, 1, ["tv", "search"]), "month", "monthly")
    monthly_back = pipeline.period_data_from_doc(json.loads(json.dumps(pipeline.period_data_doc(monthly))))

    assert back.daily_revenue.tolist() == data.daily_revenue.tolist() and back.controls_daily
    assert back.daily_controls.equals(data.daily_controls.rename_axis("date"))
    assert monthly_back.daily_revenue is None and monthly_back.revenue.tolist() == monthly.revenue.tolist()


def test_much_worse_challenger_is_rejected_and_latest_stays(older_data, noisy_data, store_uri, tmp_path):
    champion = pipeline.run(make_settings(older_data, store_uri, tmp_path, run_date="2026-05-15"), "champion")
    assert champion.status == "promoted", champion.reason
    generation = open_store(store_uri).generation(LATEST_KEY)
    settings = make_settings(noisy_data, store_uri, tmp_path, **{"gate.evaluation_threshold": 0.0})

    challenger = pipeline.run(settings, "challenger")

    assert (challenger.status, challenger.exit_code) == ("rejected", 3)
    assert "challenger RMSE" in challenger.reason and f"champion {champion.version} RMSE" in challenger.reason
    assert "2026-05..2026-10" in challenger.reason  # only months the champion never saw
    assert latest_version(store_uri) == champion.version
    assert open_store(store_uri).generation(LATEST_KEY) == generation
    archived = ModelRegistry(open_store(store_uri)).manifest(challenger.version)
    assert archived["status"] == "rejected" and archived["training"]["refit_on_all_months"] is False
    # archived with the candidate's intervals, which the gate computes for a rejected run only
    assert archived["intervals"]["method"].startswith("moving-block bootstrap")
    for entry in archived["roi"]["channels"].values():
        assert entry["roi_interval"][0] <= entry["roi"] <= entry["roi_interval"][1] and entry["roi_interval"][1] > 0
    assert challenger.roi == archived["roi"]
    row = open_metrics(settings.metrics).get("challenger")
    assert row["status"] == "rejected" and row["champion_version"] == champion.version
    assert row["champion_rmse"] < row["holdout_rmse"]


def test_gate_threshold_rejection_names_the_numbers(good_data, tmp_path):
    settings = make_settings(good_data, str(tmp_path / "store"), tmp_path, **{"gate.evaluation_threshold": 1.0})
    result = pipeline.run(settings, "strict")
    assert result.exit_code == 3
    assert f"holdout R² {result.metrics['holdout']['r2']:.4g} < threshold 1" in result.reason
    assert latest_version(settings.store) is None


def test_a_rejected_candidate_is_archived_only_if_refitting_it_gives_the_staged_model(good_data, tmp_path):
    """The gate refits a rejected candidate for its intervals: settings changed since evaluation must not pass."""
    settings = make_settings(good_data, str(tmp_path / "store"), tmp_path, **{"gate.evaluation_threshold": 1.0})
    pipeline.validate_data(settings, "changed")
    pipeline.train_and_evaluate(settings, "changed")
    changed = make_settings(good_data, settings.store, tmp_path, **{"gate.evaluation_threshold": 1.0,
                                                                  "model.fourier_order": 1})

    with pytest.raises(ConfigError, match="settings='fingerprint .*: expected the settings run changed started with"):
        pipeline.quality_gate(changed, "changed")

    assert ModelRegistry(open_store(settings.store)).versions() == []
    assert pipeline.quality_gate(settings, "changed")["decision"] == "reject"  # with the run's own settings
    assert len(ModelRegistry(open_store(settings.store)).versions()) == 1


def test_concurrent_publishers_leave_one_pointer_history(good_data, store_uri, tmp_path):
    # OLS and a ridge with a negligible alpha: whichever run loses the race gates again against the winner (by
    # backtest, since the winner was refitted on every month), scores within the tolerance of it and promotes.
    runs = {"ols-run": make_settings(good_data, store_uri, tmp_path, **{"model.algorithm": "ols"}),
            "ridge-run": make_settings(good_data, store_uri, tmp_path, **{"model.algorithm": "ridge",
                                                                          "model.ridge_alphas": "0.01"})}
    for run_id, settings in runs.items():  # both gate against the same (empty) LATEST
        pipeline.validate_data(settings, run_id)
        pipeline.train_and_evaluate(settings, run_id)
        assert pipeline.quality_gate(settings, run_id)["decision"] == "promote"
    barrier, outcomes = threading.Barrier(2), {}

    def publish(run_id: str) -> None:
        barrier.wait()
        outcomes[run_id] = pipeline.publish_model(runs[run_id], run_id)

    threads = [threading.Thread(target=publish, args=(r,)) for r in runs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    assert all(o["promoted"] for o in outcomes.values())
    store = open_store(store_uri)
    attempts = sorted(json.loads(store.read(f"runs/{r}/publish.json"))["attempts"] for r in runs)
    assert attempts == [1, 2]  # the loser saw PreconditionFailed, gated again, then promoted
    pointer = ModelRegistry(store).latest()
    first = next(o["version"] for o in outcomes.values() if o["version"] != pointer.version)
    assert pointer.previous == first  # the second promotion saw the first: no lost update


@pytest.mark.parametrize(("day", "warning"), [
    ("2026-10-12", "tiktok has spend in only 1 of 36 periods"),  # the newest month
    ("2026-11-03", "tiktok spend is constant (no spend in each of 36 periods)"),  # a month without revenue yet
])
def test_a_new_channel_is_not_promoted_until_the_change_is_allowed(day, warning, good_data, tmp_path, caplog):
    data = tmp_path / "data"
    shutil.copytree(good_data, data)
    champion = pipeline.run(make_settings(str(data), str(tmp_path / "store"), tmp_path), "champion")
    (data / "spend" / "tiktok.csv").write_text(
        f"CAMPAIGN,CHANNEL,DATE,TOTAL_CLICKS,TOTAL_COST,ADS_SERVED\nlaunch,tiktok,{day},3,150.0,90\n")
    settings = make_settings(str(data), str(tmp_path / "store"), tmp_path)

    with caplog.at_level("WARNING", logger="training.pipeline"):
        rejected = pipeline.run(settings, "new-channel")

    assert (rejected.status, rejected.exit_code) == ("rejected", 3), rejected.reason
    assert f"channel set differs from champion {champion.version}'s: added tiktok; removed none" in rejected.reason
    assert "gate.allow_channel_change = true" in rejected.reason and "channels = " in rejected.reason
    assert latest_version(settings.store) == champion.version
    assert any(warning in w for w in rejected.warnings), rejected.warnings
    [event] = [r for r in caplog.records if getattr(r, "event", None) == "model_rejected"]
    assert event.reason == rejected.reason
    archived = ModelRegistry(open_store(settings.store)).manifest(rejected.version)
    assert archived["gate"]["channel_change"] == {"added": ["tiktok"], "removed": []}

    allowed = pipeline.run(make_settings(str(data), settings.store, tmp_path,
                                         **{"gate.allow_channel_change": "true"}), "allowed")

    assert allowed.status == "promoted", allowed.reason
    assert "added tiktok; removed none (allowed by gate.allow_channel_change)" in allowed.reason
    assert latest_version(settings.store) == allowed.version


def test_a_run_on_unchanged_input_publishes_nothing_moves_nothing_and_is_recorded_unchanged(
        good_data, store_uri, tmp_path, caplog):
    settings = make_settings(good_data, store_uri, tmp_path)
    first = pipeline.run(settings, "first")
    generation = open_store(store_uri).generation(LATEST_KEY)

    with caplog.at_level("INFO", logger="training.pipeline"):
        again = pipeline.run(settings, "again")

    assert (again.status, again.exit_code, again.version) == ("unchanged", 0, None), again.reason
    assert f"equal those of the newest version {first.version} (promoted)" in again.reason
    store = open_store(store_uri)
    assert ModelRegistry(store).versions() == [first.version]
    assert store.generation(LATEST_KEY) == generation
    assert not store.exists("runs/again/candidate.joblib")  # nothing was fitted
    manifest = ModelRegistry(store).manifest(first.version)
    assert manifest["settings_fingerprint"] == settings.settings_fingerprint()
    row = open_metrics(settings.metrics).get("again")
    assert (row["status"], row["model_version"], row["error"]) == ("unchanged", None, None)
    assert row["data_fingerprint"] == manifest["data"]["fingerprint"] and first.version in row["gate_reason"]
    [finished] = [r for r in caplog.records if getattr(r, "event", None) == "training_finished"
                  and r.run_id == "again"]
    assert finished.status == "unchanged"


def test_a_rejected_newest_version_is_repeated_only_while_the_gate_settings_are_the_same(good_data, tmp_path):
    strict = make_settings(good_data, str(tmp_path / "store"), tmp_path, **{"gate.evaluation_threshold": 1.0})
    rejected = pipeline.run(strict, "strict")

    repeated = pipeline.run(strict, "strict-again")
    loosened = pipeline.run(make_settings(good_data, strict.store, tmp_path), "loosened")
    after = pipeline.run(make_settings(good_data, strict.store, tmp_path, **{"gate.evaluation_threshold": 1.0}),
                         "strict-after-promotion")

    assert rejected.status == "rejected"
    assert repeated.status == "unchanged" and f"{rejected.version} (rejected)" in repeated.reason
    assert loosened.status == "promoted", loosened.reason
    # The newest version is promoted now: a stricter gate would only reject the same model again.
    assert after.status == "unchanged" and f"{loosened.version} (promoted)" in after.reason
    assert ModelRegistry(open_store(strict.store)).versions() == sorted([rejected.version, loosened.version])


@pytest.mark.parametrize("change", [{"model.algorithm": "ridge"}, {"code_version": "next-sha"},
                                    {"evaluation.min_holdout_months": 5}, "new data file"])
def test_a_change_of_data_model_settings_or_code_trains_again(change, good_data, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(good_data, data)
    first = pipeline.run(make_settings(str(data), str(tmp_path / "store"), tmp_path), "first")
    if change == "new data file":
        shutil.copy(data / "spend" / "2024.csv", data / "spend" / "2024-copy.csv")
        (data / "spend" / "2024.csv").unlink()
        change = {}

    second = pipeline.run(make_settings(str(data), str(tmp_path / "store"), tmp_path, **change), "second")

    assert first.status == "promoted" and second.status in ("promoted", "rejected"), second.reason
    assert second.version and open_store(str(tmp_path / "store")).exists("runs/second/candidate.joblib")


def test_a_retried_stage_never_takes_its_own_version_for_an_unchanged_run(good_data, tmp_path):
    settings = make_settings(good_data, str(tmp_path / "store"), tmp_path, **{"gate.evaluation_threshold": 1.0})
    pipeline.validate_data(settings, "dag-run")
    pipeline.train_and_evaluate(settings, "dag-run")
    assert pipeline.quality_gate(settings, "dag-run")["decision"] == "reject"

    retried = pipeline.train_and_evaluate(settings, "dag-run")  # its own rejected version is now the newest

    assert "unchanged" not in retried and pipeline.quality_gate(settings, "dag-run")["decision"] == "reject"


class ManifestWriteFails:
    """A store that breaks exactly when a version's manifest is written."""

    def __init__(self, inner):
        self._inner = inner

    def __getattr__(self, name):
        return getattr(self._inner, name)

    def write(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> int:
        if key.startswith("models/") and key.endswith("/manifest.json"):
            raise StorageError(f"injected failure writing {key}")
        return self._inner.write(key, data, content_type)


def test_failure_mid_publish_leaves_no_version_and_latest_untouched(good_data, store_uri, tmp_path, monkeypatch):
    first = pipeline.run(make_settings(good_data, store_uri, tmp_path), "before")
    # A different model, so its version cannot coincide with the first one's.
    settings = make_settings(good_data, store_uri, tmp_path, **{"model.algorithm": "ridge"})
    monkeypatch.setattr(pipeline, "open_store", lambda uri: ManifestWriteFails(open_store(uri)))

    result = pipeline.run(settings, "broken")

    assert (result.status, result.exit_code) == ("failed", 1)
    assert "publish_model failed" in result.reason and "injected failure" in result.reason
    store = open_store(store_uri)
    assert ModelRegistry(store).versions() == [first.version]
    assert [k for k in store.list("models") if not k.startswith(f"models/{first.version}/")] == [LATEST_KEY]
    assert latest_version(store_uri) == first.version
    row = open_metrics(settings.metrics).get("broken")
    assert row["status"] == "failed" and "injected failure" in row["error"]


class _MakesFolder:
    """Pickled, this calls os.mkdir(path) when loaded by an unrestricted unpickler."""

    def __init__(self, path: str):
        self.path = path

    def __reduce__(self):
        import os

        return (os.mkdir, (self.path,))


def test_a_crafted_champion_runs_no_code_in_the_training_job(good_data, tmp_path):
    import joblib

    from training.core.store import sha256_hex

    store_uri = str(tmp_path / "store")
    first = pipeline.run(make_settings(good_data, store_uri, tmp_path), "first")
    marker = tmp_path / "owned"
    store = open_store(store_uri)
    buffer = io.BytesIO()
    joblib.dump(_MakesFolder(str(marker)), buffer)
    crafted = buffer.getvalue()
    # Anyone with write access to the bucket: replace the model, update manifest hash/size and the pointer.
    manifest = json.loads(store.read(f"models/{first.version}/manifest.json"))
    manifest |= {"sha256": sha256_hex(crafted), "size": len(crafted)}
    store.write(f"models/{first.version}/model.joblib", crafted)
    store.write(f"models/{first.version}/manifest.json", json.dumps(manifest).encode())
    pointer = json.loads(store.read(LATEST_KEY)) | {"sha256": manifest["sha256"]}
    store.write(LATEST_KEY, json.dumps(pointer).encode())

    result = pipeline.run(make_settings(good_data, store_uri, tmp_path, **{"model.algorithm": "ridge"}), "second")

    assert not marker.exists()
    assert result.status == "promoted", result.reason
    assert "cannot be loaded" in result.reason and "posix.mkdir" in result.reason


class ReadsFail:
    """A store that is unreachable for reads."""

    def __init__(self, inner):
        self._inner = inner

    def __getattr__(self, name):
        return getattr(self._inner, name)

    def read(self, key: str) -> bytes:
        raise StorageUnavailable(f"injected outage reading {key}")


def test_record_metrics_on_an_unreadable_store_raises_and_keeps_the_recorded_row(good_data, tmp_path, monkeypatch):
    settings = make_settings(good_data, str(tmp_path / "store"), tmp_path)
    assert pipeline.run(settings, "done").status == "promoted"
    monkeypatch.setattr(pipeline, "open_store", lambda uri: ReadsFail(open_store(uri)))

    with pytest.raises(StorageUnavailable, match="injected outage"):
        pipeline.record_metrics(settings, "done")  # a retry of the task records it once the store answers

    assert open_metrics(settings.metrics).get("done")["status"] == "promoted"


def test_invalid_data_is_reported_recorded_and_promotes_nothing(tmp_path):
    data = tmp_path / "short"
    write_sample(data, months=6, campaigns=1, seed=3)  # far below validation.min_months
    settings = make_settings(str(data), str(tmp_path / "store"), tmp_path)

    with pytest.raises(DataInvalidError):
        pipeline.validate_data(settings, "short-data")
    result = pipeline.run(settings, "short-data")

    assert (result.status, result.exit_code) == ("data_invalid", 2)
    assert result.validation["passed"] is False and result.validation["failed"]
    assert "report" in result.files and Path(result.files["report"]).is_file()
    assert latest_version(settings.store) is None
    assert open_metrics(settings.metrics).get("short-data")["status"] == "data_invalid"


def test_stages_return_small_json_and_are_idempotent_per_run_id(good_data, tmp_path):
    settings = make_settings(good_data, str(tmp_path / "store"), tmp_path)
    outputs = []
    for _ in range(2):  # a retried DAG run repeats each stage with the same run_id
        outputs.append([pipeline.validate_data(settings, "dag-run"), pipeline.train_and_evaluate(settings, "dag-run"),
                        pipeline.quality_gate(settings, "dag-run")])
    published = [pipeline.publish_model(settings, "dag-run") for _ in range(2)]
    recorded = pipeline.record_metrics(settings, "dag-run")

    assert outputs[0] == outputs[1]
    assert published[0] == published[1] and published[0]["promoted"] is True
    assert ModelRegistry(open_store(settings.store)).versions() == [published[0]["version"]]
    assert recorded == {"run_id": "dag-run", "status": "promoted"}
    assert all(len(json.dumps(o)) < 2_000 for o in [*outputs[0], *published, recorded])


def test_retried_rejecting_gate_archives_one_version(good_data, tmp_path):
    settings = make_settings(good_data, str(tmp_path / "store"), tmp_path, **{"gate.evaluation_threshold": 1.0})
    pipeline.validate_data(settings, "dag-run")
    pipeline.train_and_evaluate(settings, "dag-run")

    decisions = [pipeline.quality_gate(settings, "dag-run") for _ in range(2)]

    registry = ModelRegistry(open_store(settings.store))
    assert [d["decision"] for d in decisions] == ["reject", "reject"]
    assert len(registry.versions()) == 1
    assert registry.manifest(registry.versions()[0])["status"] == "rejected"
    assert registry.latest() is None


def test_record_metrics_describes_a_run_that_failed_mid_way(good_data, tmp_path):
    settings = make_settings(good_data, str(tmp_path / "store"), tmp_path, **{"evaluation.min_holdout_months": 40})
    pipeline.validate_data(settings, "too-long-holdout")
    with pytest.raises(ValueError, match="min_holdout_months"):
        pipeline.train_and_evaluate(settings, "too-long-holdout")

    assert pipeline.record_metrics(settings, "too-long-holdout")["status"] == "failed"
    row = open_metrics(settings.metrics).get("too-long-holdout")
    assert "train_and_evaluate failed" in row["error"] and row["validation_summary"]["passed"] is True


def test_a_stage_run_out_of_order_says_what_to_run_first(tmp_path):
    settings = make_settings(str(tmp_path / "none"), str(tmp_path / "store"), tmp_path)
    with pytest.raises(StorageError, match="run validate_data for run early first"):
        pipeline.train_and_evaluate(settings, "early")


@pytest.mark.parametrize("run_id", ["a/b", "..", "x" * 201])
def test_unsafe_run_ids_are_refused(run_id, tmp_path):
    with pytest.raises(ValueError, match="run_id"):
        pipeline.run(make_settings("unused", str(tmp_path / "store"), tmp_path), run_id)


def test_code_version_prefers_setting_then_environment(monkeypatch, tmp_path):
    settings = make_settings("unused", str(tmp_path), tmp_path, code_version=None)
    monkeypatch.setenv("SHORT_SHA", "abc1234")
    assert pipeline.code_version(settings) == "abc1234"
    settings.code_version = "from-settings"
    assert pipeline.code_version(settings) == "from-settings"


def test_published_plots_are_pngs(good_data, tmp_path):
    settings = make_settings(good_data, str(tmp_path / "store"), tmp_path)
    result = pipeline.run(settings, "plots")
    store = open_store(settings.store)
    for name in plots.PLOT_FILES:
        data = store.read(f"models/{result.version}/{name}")
        assert io.BytesIO(data).read(8) == b"\x89PNG\r\n\x1a\n"


def _edit_first_data_row(path: Path, column: str, value: str) -> int:
    """Set `column` of the first data row of a CSV to `value`; return that row's line number (header = 1)."""
    lines = path.read_text().splitlines()
    header = lines[0].split(",")
    cells = lines[1].split(",")
    cells[header.index(column)] = value
    lines[1] = ",".join(cells)
    path.write_text("\n".join(lines) + "\n")
    return 2


def _break(data: Path, rule: str) -> dict[str, Any]:
    """Corrupt the copy of the sample in `data` so that `rule` fails; return the settings it needs."""
    spend, revenue = sorted((data / "spend").glob("*.csv"))[0], sorted((data / "revenue").glob("*.csv"))[0]
    if rule == "missing_columns":
        spend.write_text(spend.read_text().replace("TOTAL_COST", "COST", 1))
    elif rule == "unparseable_values":
        _edit_first_data_row(spend, "DATE", "2024-13-45")
    elif rule == "null_values":
        _edit_first_data_row(spend, "CHANNEL", "")
    elif rule == "negative_values":
        _edit_first_data_row(spend, "TOTAL_COST", "-12.5")
    elif rule == "unknown_channels":
        return {"channels": "search_engine,social_media,video"}  # the data also holds email
    elif rule == "duplicate_rows":
        lines = spend.read_text().splitlines()
        spend.write_text("\n".join(lines + lines[1:len(lines) // 5]) + "\n")  # ~20% of one file repeated
    elif rule == "duplicate_revenue_months":
        lines = revenue.read_text().splitlines()
        revenue.write_text("\n".join([*lines, lines[1]]) + "\n")
    elif rule == "stale_revenue":
        return {"run_date": "2027-12-01"}
    elif rule == "too_few_months":
        return {"validation.min_months": 100}
    elif rule == "no_input_files":
        for path in (data / "revenue").glob("*.csv"):
            path.unlink()
    return {}


@pytest.mark.parametrize("rule", ["missing_columns", "unparseable_values", "null_values", "negative_values",
                                  "unknown_channels", "duplicate_rows", "duplicate_revenue_months",
                                  "stale_revenue", "too_few_months", "no_input_files"])
def test_each_failing_rule_stops_the_run_names_the_rule_and_moves_nothing(rule, sample_dir, tmp_path):
    store_dir = str(tmp_path / "store")
    ols = {"model.algorithm": "ols"}  # the small linear sample (24 months): validation is what is tested
    first = pipeline.run(make_settings(str(sample_dir), store_dir, tmp_path, **ols), "good")
    registry = ModelRegistry(open_store(store_dir))
    versions, pointer = registry.versions(), registry.latest()
    more = _break(sample_dir, rule)

    result = pipeline.run(make_settings(str(sample_dir), store_dir, tmp_path, **ols, **more), "bad")

    assert first.status == "promoted"
    assert (result.status, result.exit_code) == ("data_invalid", 2)
    assert rule in result.validation["failed"]
    report = json.loads(Path(result.files["report"]).read_text())
    failed = next(r for r in report["report"]["results"] if r["rule"] == rule)
    assert failed["status"] == "fail" and failed["message"]
    if rule in ("unparseable_values", "null_values", "negative_values", "duplicate_rows", "duplicate_revenue_months"):
        assert failed["examples"] and failed["examples"][0]["file"].endswith(".csv") and failed["examples"][0]["line"]
    assert registry.versions() == versions
    assert registry.latest() == pointer
    assert open_metrics(f"sqlite:///{tmp_path / 'metrics.db'}").get("bad")["status"] == "data_invalid"


def test_unknown_rule_in_actions_fails_before_reading_any_data(tmp_path, monkeypatch):
    settings = make_settings(str(tmp_path / "no-data-needed"), str(tmp_path / "store"), tmp_path,
                             **{"validation.actions": {"extreme_value": "fail"}})
    monkeypatch.setattr(pipeline.ingest, "ingest", lambda *a, **k: pytest.fail("ingest ran"))

    with pytest.raises(ConfigError, match="validation.actions.extreme_value") as run_error:
        pipeline.run(settings, "typo")
    with pytest.raises(ConfigError, match="validation.actions.extreme_value"):
        pipeline.validate_data(settings, "typo")  # the DAG's first task refuses it too

    assert "extreme_values" in run_error.value.expected


# ---- ingest: input a careless export produces (issue 7, items 15-18) -----------------------------------

def _first_spend_row(data: Path, column: str, value: str) -> tuple[str, int]:
    path = sorted((data / "spend").glob("*.csv"))[0]
    return f"spend/{path.name}", _edit_first_data_row(path, column, value)


def _first_revenue_row(data: Path, column: str, value: str) -> tuple[str, int]:
    path = sorted((data / "revenue").glob("*.csv"))[0]
    return f"revenue/{path.name}", _edit_first_data_row(path, column, value)


def _two_huge_costs(data: Path) -> tuple[str, int]:
    path = sorted((data / "spend").glob("*.csv"))[0]
    lines = path.read_text().splitlines()
    header = lines[0].split(",")
    for i in (1, 2):  # same month and channel: 1e308 + 1e308 overflows a float
        cells = lines[i].split(",")
        cells[header.index("TOTAL_COST")] = "1e308"
        cells[header.index("CHANNEL")], cells[header.index("DATE")] = "email", f"2024-01-0{i}"
        lines[i] = ",".join(cells)
    path.write_text("\n".join(lines) + "\n")
    return f"spend/{path.name}", 2


def _gzip_named_csv(data: Path) -> tuple[str, int]:
    path = sorted((data / "spend").glob("*.csv"))[0]
    path.write_bytes(gzip.compress(path.read_bytes()))
    return f"spend/{path.name}", 1


def _empty_file(data: Path) -> tuple[str, int]:
    path = sorted((data / "revenue").glob("*.csv"))[0]
    path.write_bytes(b"")
    return f"revenue/{path.name}", 1


def _semicolons(data: Path) -> tuple[str, int]:
    path = sorted((data / "revenue").glob("*.csv"))[0]
    path.write_text(path.read_text().replace(",", ";"))
    return f"revenue/{path.name}", 1


def _stray_file(data: Path) -> tuple[str, int | None]:
    path = sorted((data / "spend").glob("*.csv"))[0]
    path.rename(path.with_suffix(".csv.zip"))
    return f"spend/{path.name}.zip", None


# (case, break the data, rule that fails, text the example must show)
BAD_EXPORTS = [
    ("cost inf", lambda d: _first_spend_row(d, "TOTAL_COST", "inf"), "unparseable_values", "inf"),
    ("cost 1e309", lambda d: _first_spend_row(d, "TOTAL_COST", "1e309"), "unparseable_values", "1e309"),
    ("month sum overflows", _two_huge_costs, "out_of_range_values", "1e+308"),
    ("revenue year -5", lambda d: _first_revenue_row(d, "YEAR", "-5"), "out_of_range_values", "-5"),
    ("revenue year 1e20", lambda d: _first_revenue_row(d, "YEAR", "1e20"), "out_of_range_values", "1e20"),
    ("revenue 1e20", lambda d: _first_revenue_row(d, "REVENUE", "1e20"), "out_of_range_values", "1e20"),
    ("spend date 1925", lambda d: _first_spend_row(d, "DATE", "1925-03-05"), "out_of_range_values", "1925-03-05"),
    ("spend date 2125", lambda d: _first_spend_row(d, "DATE", "2125-03-05"), "out_of_range_values", "2125-03-05"),
    ("gzip named .csv", _gzip_named_csv, "unreadable_files", "gzip"),
    ("empty file", _empty_file, "unreadable_files", "empty file"),
    ("semicolon-delimited", _semicolons, "unreadable_files", "semicolon-delimited"),
    ("file that is not .csv", _stray_file, "ignored_files", ".csv.zip"),
]


@pytest.mark.parametrize(("case", "break_data", "rule", "shown"), BAD_EXPORTS, ids=[c[0] for c in BAD_EXPORTS])
def test_a_careless_export_ends_in_exit_2_naming_file_line_value_and_expectation(case, break_data, rule, shown,
                                                                                  sample_dir, tmp_path):
    where = break_data(sample_dir)
    settings = make_settings(str(sample_dir), str(tmp_path / "store"), tmp_path)

    result = pipeline.run(settings, "careless")

    assert (result.status, result.exit_code) == ("data_invalid", 2), result.reason
    assert rule in result.validation["failed"]
    report = json.loads(Path(result.files["report"]).read_text())
    failed = next(r for r in report["report"]["results"] if r["rule"] == rule)
    example = failed["examples"][0]
    assert (example["file"], example["line"]) == where
    assert shown in json.dumps(example["values"])
    assert "expected" in failed["message"]
    assert ModelRegistry(open_store(settings.store)).versions() == [] and latest_version(settings.store) is None


def test_week_grain_on_monthly_revenue_is_invalid_data_not_a_crash(sample_dir, tmp_path):
    settings = make_settings(str(sample_dir), str(tmp_path / "store"), tmp_path, **{"model.grain": "week"})

    result = pipeline.run(settings, "weekly")

    assert (result.status, result.exit_code) == ("data_invalid", 2)
    assert result.validation["failed"] == ["grain_mismatch"]
    assert latest_version(settings.store) is None


# -- realised performance of the served model, the fair comparison, drift (issue 10) ----------------------

OLS = {"model.algorithm": "ols"}  # the linear model: its realised error can be checked by hand


def monthly(store: str, run_id: str) -> tuple[pd.DataFrame, pd.Series]:
    """The staged periods of a run as a month × channel spend table and its revenue."""
    data = pipeline._load_training_data(open_store(store), run_id)
    return data.period_spend(), pd.Series(data.revenue, index=data.periods)


def copy_until(source: str, last_month: str, dest: Path, revenue_factor_after: float = 1.0,
               spend_factor_after: dict[str, float] | None = None, after: str = "2026-04") -> str:
    """Copy a data set keeping revenue up to `last_month`; scale revenue (and channels' spend) after `after`."""
    import pandas as pd

    shutil.copytree(source, dest)
    for path in sorted((dest / "revenue").glob("*.csv")):
        frame = pd.read_csv(path)
        month = frame["YEAR"].astype(str) + "-" + frame["MONTH"].map("{:02d}".format)
        frame.loc[month > after, "REVENUE"] = (frame.loc[month > after, "REVENUE"] * revenue_factor_after).round(2)
        frame[month <= last_month].to_csv(path, index=False)
    for path in sorted((dest / "spend").glob("*.csv")):
        frame = pd.read_csv(path)
        for channel, factor in (spend_factor_after or {}).items():
            rows = (frame["CHANNEL"] == channel) & (frame["DATE"].str[:7] > after)
            frame.loc[rows, "TOTAL_COST"] = (frame.loc[rows, "TOTAL_COST"] * factor).round(2)
        frame.to_csv(path, index=False)
    return str(dest)


def champion_on(source: str, last_month: str, store: str, tmp_path: Path) -> str:
    """Promote a model fitted on `source` up to `last_month` (run dated the month after); return its version."""
    year, month = map(int, last_month.split("-"))
    run_date = f"{year + month // 12}-{month % 12 + 1:02d}-15"
    data = copy_until(source, last_month, tmp_path / f"until-{last_month}")
    result = pipeline.run(make_settings(data, store, tmp_path, run_date=run_date, **OLS), f"champion-{last_month}")
    assert result.status == "promoted", result.reason
    return result.version


def test_realised_performance_of_a_champion_trained_on_fewer_periods(good_data, tmp_path, caplog):
    store = str(tmp_path / "store")
    champion = champion_on(good_data, "2026-04", store, tmp_path)
    settings = make_settings(good_data, store, tmp_path, **OLS)
    caplog.set_level(logging.INFO, logger="training.pipeline")

    result = pipeline.run(settings, "after-six-months")

    registry = ModelRegistry(open_store(store))
    champion_manifest = registry.manifest(champion)
    features, revenue = monthly(store, "after-six-months")
    new = [m for m in features.index if m > "2026-04"]
    coefficients = np.array([champion_manifest["coefficients"][c] for c in features.columns])
    errors = champion_manifest["intercept"] + features.loc[new].to_numpy() @ coefficients - revenue.loc[new].to_numpy()
    row = open_metrics(settings.metrics).get("after-six-months")
    assert row["realised_version"] == champion and row["realised_periods"] == 6
    assert row["realised_rmse"] == pytest.approx(np.sqrt(np.mean(errors ** 2)))
    assert row["realised_bias"] == pytest.approx(errors.mean())
    assert row["realised_mape"] == pytest.approx(np.mean(np.abs(errors) / revenue.loc[new].to_numpy()))
    cv = np.array(champion_manifest["metrics"]["cv"]["rmse"])
    assert row["realised_rmse_limit"] == pytest.approx(max(1.5 * cv.mean(), cv.mean() + 2 * cv.std(ddof=1)))
    assert row["model_degraded"] is False  # same process: within what its CV promised
    performance = [r for r in caplog.records if getattr(r, "event", None) == "model_performance"]
    assert len(performance) == 1 and performance[0].realised_periods == 6
    assert not [r for r in caplog.records if getattr(r, "event", None) == "model_degraded"]
    manifest = registry.manifest(result.version)
    assert manifest["realised_performance"]["version"] == champion
    assert manifest["realised_performance"]["periods"] == new
    assert "realised_performance.png" in manifest["files"]
    assert open_store(store).read(f"models/{result.version}/realised_performance.png")[:4] == b"\x89PNG"
    # six unseen holdout months (>= gate.min_compare_periods): compared on them, as before
    assert manifest["gate"]["comparison"] == "unseen_periods" and row["gate_comparison"] == "unseen_periods"
    assert manifest["gate"]["compared_on_months"] == new


def test_a_champion_whose_error_left_its_band_is_logged_degraded(good_data, tmp_path, caplog):
    store = str(tmp_path / "store")
    champion = champion_on(good_data, "2026-04", store, tmp_path)
    shifted = copy_until(good_data, "2026-10", tmp_path / "shifted", revenue_factor_after=1.4)
    settings = make_settings(shifted, store, tmp_path, **OLS, **{"gate.evaluation_threshold": 0.0})
    caplog.set_level(logging.INFO, logger="training.pipeline")

    pipeline.run(settings, "shifted")

    row = open_metrics(settings.metrics).get("shifted")
    assert row["model_degraded"] is True and row["realised_rmse"] > row["realised_rmse_limit"]
    assert row["realised_bias"] < 0  # revenue rose 40%: the served model under-predicts
    degraded = [r for r in caplog.records if getattr(r, "event", None) == "model_degraded"]
    assert len(degraded) == 1 and degraded[0].levelname == "WARNING"
    assert degraded[0].model_version == champion and "DEGRADED: above the limit" in degraded[0].getMessage()


def test_a_retrain_on_one_new_month_compares_by_backtest(good_data, tmp_path):
    from sklearn.linear_model import LinearRegression

    store = str(tmp_path / "store")
    champion = champion_on(good_data, "2026-09", store, tmp_path)
    settings = make_settings(good_data, store, tmp_path, **OLS, **{"gate.evaluation_threshold": 0.0})

    result = pipeline.run(settings, "one-new-month")

    manifest = ModelRegistry(open_store(store)).manifest(result.version)
    split = manifest["training"]
    holdout = split["holdout_months"]
    assert len(holdout) == 8 and manifest["gate"]["comparison"] == "backtest"
    assert manifest["gate"]["compared_on_months"] == holdout  # not just 2026-10, the one month it never saw
    assert "by backtest (the champion's settings refitted on the same 28 months 2023-11..2026-02" in result.reason
    features, revenue = monthly(store, "one-new-month")
    train = [m for m in features.index if m not in holdout]
    refitted = LinearRegression().fit(features.loc[train], revenue.loc[train])
    expected = np.sqrt(np.mean((refitted.predict(features.loc[holdout]) - revenue.loc[holdout]) ** 2))
    assert manifest["gate"]["champion"]["version"] == champion
    assert manifest["gate"]["champion"]["rmse"] == pytest.approx(expected)
    assert manifest["gate"]["champion"]["challenger_rmse"] == pytest.approx(manifest["metrics"]["holdout"]["rmse"])
    row = open_metrics(settings.metrics).get("one-new-month")
    assert row["gate_comparison"] == "backtest" and row["realised_periods"] == 1
    assert row["model_degraded"] is False  # never judged on one period


def test_spend_far_outside_the_trained_range_is_a_drift_warning(good_data, tmp_path):
    store = str(tmp_path / "store")
    champion = champion_on(good_data, "2026-04", store, tmp_path)
    drifted = copy_until(good_data, "2026-10", tmp_path / "drifted", spend_factor_after={"video": 5.0})
    months = [f"{2023 + (10 + i) // 12}-{(10 + i) % 12 + 1:02d}" for i in range(36)]  # 2023-11..2026-10
    (Path(drifted) / "controls").mkdir()
    (Path(drifted) / "controls" / "price.csv").write_text("YEAR,MONTH,PRICE\n" + "".join(
        f"{m[:4]},{int(m[5:])},{100 + i % 3 if m <= '2026-04' else 100 + i % 3 + 1}\n" for i, m in enumerate(months)))
    settings = make_settings(drifted, store, tmp_path, **OLS, **{"gate.evaluation_threshold": 0.0})

    result = pipeline.run(settings, "drifted")

    warning = next(w for w in result.warnings if w.startswith("drift: "))
    assert "1 series drifted in 6 new period(s) 2026-05..2026-10 vs the 30 training periods" in warning
    assert re.search(r"spend video: \d+% of new periods outside the trained range \[[\d,]+, [\d,]+\], mean shift "
                     r"\+\d+\.\d\d sd", warning), warning
    report = json.loads(open_store(store).read("runs/drifted/validation.json"))
    assert report["drift"]["reference"] == champion and len(report["drift"]["new_periods"]) == 6
    rule = next(r for r in report["report"]["results"] if r["rule"] == "drift")
    assert rule["status"] == "warn" and [e["values"]["series"] for e in rule["examples"]] == ["video"]
    row = open_metrics(settings.metrics).get("drifted")
    assert row["drift"]["series"]["video"]["outside_share"] > 0.5 and row["drift"]["series"]["video"]["shift"] > 3
    assert row["drift"]["series"]["email"]["outside_share"] < 1.0
    price = row["drift"]["series"]["control:price"]  # 100..102 in training, 101..103 after: within thresholds
    assert price["kind"] == "control" and price["train_min"] == 100 and price["train_max"] == 102
    assert price["outside_share"] == pytest.approx(2 / 6)  # the two new months at 103
    assert price["shift"] == pytest.approx(1.0 / np.sqrt(20 / 29))  # mean 101 -> 102, training sd sqrt(20/29)
    assert "drift" in row["validation_summary"]["warned"]
    assert ModelRegistry(open_store(store)).manifest(result.version)["drift"]["reference"] == champion


def test_drift_can_fail_the_run_like_any_rule(good_data, tmp_path):
    store = str(tmp_path / "store")
    champion_on(good_data, "2026-04", store, tmp_path)
    drifted = copy_until(good_data, "2026-10", tmp_path / "drifted", spend_factor_after={"video": 5.0})
    settings = make_settings(drifted, store, tmp_path, **OLS, **{"validation.actions": {"drift": "fail"}})

    result = pipeline.run(settings, "drift-fails")

    assert (result.status, result.exit_code) == ("data_invalid", 2)
    assert "drift: 1 series drifted" in result.reason


def test_a_media_mix_champion_is_scored_and_backtested_through_its_own_spec(good_data, tmp_path):
    from training import model

    store = str(tmp_path / "store")
    settings = make_settings(copy_until(good_data, "2026-09", tmp_path / "until-2026-09"), store, tmp_path,
                             run_date="2026-10-15")
    champion = pipeline.run(settings, "mmm-champion")
    assert champion.status == "promoted", champion.reason
    settings = make_settings(good_data, store, tmp_path, **{"gate.evaluation_threshold": 0.0})

    result = pipeline.run(settings, "mmm-one-new-month")

    registry = ModelRegistry(open_store(store))
    champion_manifest, spec = registry.load(champion.version)
    assert spec["algorithm"] == champion_manifest["algorithm"] == "mmm"
    data = pipeline._load_training_data(open_store(store), "mmm-one-new-month")
    predicted = model.predict_periods(spec, data)[data.periods.index("2026-10")]
    row = open_metrics(settings.metrics).get("mmm-one-new-month")
    assert row["realised_periods"] == 1 and row["realised_version"] == champion.version
    assert row["realised_rmse"] == pytest.approx(abs(predicted - data.revenue[-1]))
    manifest = registry.manifest(result.version)
    assert manifest["gate"]["comparison"] == "backtest" and manifest["gate"]["champion"]["rmse"] is not None
