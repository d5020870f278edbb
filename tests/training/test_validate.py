"""Every validation rule against a small bad file, plus actions, thresholds and the report's shape."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from training import monitor
from training import validate as v
from training.config import SAMPLE_RUN_DATE, ValidationConfig
from training.core.errors import ConfigError
from training.core.store import open_store
from training.ingest import ingest
from training.sample import CHANNELS

SPEND = "spend/2025.csv"
REVENUE = "revenue/2025.csv"


def edit_line(root: Path, key: str, line: int, edit: Callable[[list[str]], list[str]]) -> None:
    """Replace the fields of line `line` (1 = header) of a CSV file in the data folder."""
    path = root / key
    lines = path.read_text().splitlines()
    lines[line - 1] = ",".join(edit(lines[line - 1].split(",")))
    path.write_text("\n".join(lines) + "\n")


def append_lines(root: Path, key: str, *lines: str) -> None:
    """Append raw lines to a CSV file in the data folder."""
    with open(root / key, "a") as fh:
        fh.write("".join(line + "\n" for line in lines))


def run(root: Path, config: ValidationConfig | None = None, channels: list[str] | None = None,
        run_date: date = SAMPLE_RUN_DATE, parameters: int | None = None) -> v.ValidationReport:
    return v.validate(ingest(open_store(root), channels), config or ValidationConfig(), run_date, parameters=parameters)


def result(report: v.ValidationReport, rule: str) -> v.RuleResult:
    return next(r for r in report.results if r.rule == rule)


def set_field(index: int, value: str) -> Callable[[list[str]], list[str]]:
    return lambda fields: fields[:index] + [value] + fields[index + 1:]


def test_clean_sample_passes_every_rule(sample_dir):
    report = run(sample_dir, channels=CHANNELS, parameters=4)  # 24 months carry at most 24 / 5 parameters

    assert report.passed
    assert [r.rule for r in report.results] == [r for r in v.RULES if r not in (v.DRIFT, v.CHANNEL_CHANGES)]  # the pipeline adds these
    assert {r.status for r in report.results} == {"pass"}
    assert report.summary() == {"passed": True, "failed": [], "warned": [], "rows": report.rows}
    assert report.rows == 730 * 6  # 2 campaigns × 3 channels each × 730 days
    json.dumps(report.to_dict())


# (rule, how to break the data, expected status, expected count, file and line of the first example)
BAD_FILES = [
    ("unparseable_values", lambda d: edit_line(d, SPEND, 10, set_field(2, "2025-02-30")), "fail", 1, (SPEND, 10)),
    ("unparseable_values", lambda d: edit_line(d, SPEND, 12, set_field(4, "12.5.1")), "fail", 1, (SPEND, 12)),
    ("unparseable_values", lambda d: edit_line(d, SPEND, 7, lambda f: f[:4]), "fail", 1, (SPEND, 7)),
    ("unparseable_values", lambda d: edit_line(d, REVENUE, 3, set_field(2, "lots")), "fail", 1, (REVENUE, 3)),
    ("unparseable_values", lambda d: edit_line(d, REVENUE, 4, set_field(1, "13")), "fail", 1, (REVENUE, 4)),
    ("unparseable_values", lambda d: append_lines(d, REVENUE, "2026,1,5,extra"), "fail", 1, (REVENUE, 14)),
    ("null_values", lambda d: edit_line(d, SPEND, 20, set_field(1, "")), "fail", 1, (SPEND, 20)),
    ("null_values", lambda d: edit_line(d, SPEND, 21, set_field(4, "")), "fail", 1, (SPEND, 21)),
    ("null_values", lambda d: edit_line(d, SPEND, 22, set_field(2, "")), "fail", 1, (SPEND, 22)),
    ("null_values", lambda d: edit_line(d, REVENUE, 5, set_field(2, "")), "fail", 1, (REVENUE, 5)),
    ("negative_values", lambda d: edit_line(d, SPEND, 30, set_field(4, "-12.50")), "fail", 1, (SPEND, 30)),
    ("negative_values", lambda d: edit_line(d, REVENUE, 6, set_field(2, "-1")), "fail", 1, (REVENUE, 6)),
    ("unknown_channels", lambda d: edit_line(d, SPEND, 40, set_field(1, "tv")), "fail", 1, (SPEND, 40)),
    ("duplicate_revenue_months", lambda d: append_lines(d, REVENUE, "2025,3,1000.0"), "fail", 1, (REVENUE, 14)),
    ("missing_columns", lambda d: edit_line(d, SPEND, 1, set_field(4, "COST")), "fail", 1, (SPEND, 1)),
    ("missing_columns", lambda d: edit_line(d, REVENUE, 1, set_field(2, "SALES")), "fail", 1, (REVENUE, 1)),
]


@pytest.mark.parametrize(("rule", "break_data", "status", "count", "where"), BAD_FILES)
def test_each_bad_file_breaks_its_rule(sample_dir, rule, break_data, status, count, where):
    break_data(sample_dir)

    report = run(sample_dir, channels=CHANNELS)

    found = result(report, rule)
    assert (found.status, found.count) == (status, count)
    assert (found.examples[0]["file"], found.examples[0]["line"]) == where
    assert found.message.startswith(f"{rule}: found {count}") and "expected" in found.message
    assert report.passed is (status != "fail")
    assert rule in report.summary()["failed"]


def test_unknown_channel_is_only_checked_when_channels_are_configured(sample_dir):
    edit_line(sample_dir, SPEND, 40, set_field(1, "tv"))

    assert result(run(sample_dir), "unknown_channels").status == "pass"
    failed = result(run(sample_dir, channels=CHANNELS), "unknown_channels")
    assert failed.examples[0]["values"]["channel"] == "tv"
    assert "expected one of search_engine, social_media, video, email" in failed.message


def test_no_input_files_fails(sample_dir):
    shutil.rmtree(sample_dir / "revenue")

    report = run(sample_dir)

    assert result(report, "no_input_files").status == "fail"
    assert "revenue/" in result(report, "no_input_files").message
    assert result(report, "stale_revenue").status == "fail"


def test_a_few_duplicate_rows_warn(sample_dir):
    lines = (sample_dir / SPEND).read_text().splitlines()
    append_lines(sample_dir, SPEND, lines[9], lines[10])

    found = result(run(sample_dir), "duplicate_rows")

    assert (found.status, found.count, found.threshold) == ("warn", 2, 0.01)
    assert found.examples[0]["file"] == SPEND
    assert found.examples[0]["line"] == len(lines) + 1
    assert found.examples[0]["values"]["first_seen"] == f"{SPEND}:10"


def test_a_file_copied_twice_fails_on_duplicates(sample_dir):
    shutil.copy(sample_dir / SPEND, sample_dir / "spend/2025_copy.csv")

    report = run(sample_dir)

    found = result(report, "duplicate_rows")
    assert found.status == "fail"
    assert found.count == len((sample_dir / SPEND).read_text().splitlines()) - 1
    assert found.examples[0]["file"] == "spend/2025_copy.csv"
    assert found.examples[0]["line"] == 2
    assert "above 1.00%" in found.message


def test_stale_revenue_fails_after_max_age(sample_dir):
    assert result(run(sample_dir, run_date=date(2027, 1, 31)), "stale_revenue").status == "pass"

    found = result(run(sample_dir, run_date=date(2027, 2, 1)), "stale_revenue")

    assert (found.status, found.count, found.threshold) == ("fail", 4, 3)
    assert "2026-10 is 4 months before the run date 2027-02-01; expected at most 3" in found.message


@pytest.mark.parametrize(("config", "needed"), [
    (ValidationConfig(min_months=25), 25),
    (ValidationConfig(min_months_per_parameter=5), 25),
])
def test_too_few_months_fails(sample_dir, config, needed):
    found = result(run(sample_dir, config), "too_few_months")

    assert (found.status, found.count, found.threshold) == ("fail", 24, needed)
    assert f"found 24 months with both spend and revenue; expected at least {needed}" in found.message


def test_extreme_monthly_spend_warns(sample_dir):
    edit_line(sample_dir, SPEND, 50, set_field(4, "9000000.00"))

    report = run(sample_dir)

    found = result(report, "extreme_values")
    assert (found.status, found.count) == ("warn", 1)
    assert found.examples[0]["values"]["z"] > 5.0
    assert report.passed


def _spend(**columns: Any) -> pd.DataFrame:
    """36 periods of varying, independent spend on email and video, plus `columns`."""
    rng = np.random.default_rng(4)
    frame = pd.DataFrame({"email": rng.uniform(1000, 3000, 36), "video": rng.uniform(500, 4000, 36)},
                         index=[f"{2023 + i // 12}-{i % 12 + 1:02d}" for i in range(36)])
    for name, make in columns.items():
        frame[name] = make(frame)
    return frame


IDENTIFIABILITY_CASES = {  # extra channel -> (issue, channels named, words of the reason)
    "constant": ({"tv": lambda f: 3000.0}, "constant_spend", ["tv"], "tv spend is constant (3,000.00 in each of 36"),
    "never_spent": ({"tv": lambda f: 0.0}, "constant_spend", ["tv"], "tv spend is constant (no spend in each"),
    "barely_varies": ({"tv": lambda f: 3000.0 + np.arange(36) % 2}, "low_variation", ["tv"],
                      "tv spend barely varies (coefficient of variation 0.000167 < 0.05)"),
    "identical": ({"email_2": lambda f: f["email"]}, "correlated_spend", ["email", "email_2"],
                  "email and email_2 spend move together (correlation 1.000"),
    "mirrored": ({"tv": lambda f: 10_000 - 2 * f["video"]}, "correlated_spend", ["video", "tv"],
                 "video and tv spend move together (correlation -1.000"),
    "few_periods": ({"tiktok": lambda f: np.r_[np.zeros(34), 150.0, 80.0]}, "few_active_periods", ["tiktok"],
                    "tiktok has spend in only 2 of 36 periods (< 6)"),
}


@pytest.mark.parametrize("case", IDENTIFIABILITY_CASES)
def test_identifiability_names_the_channels_and_why(case):
    extra, issue, channels, why = IDENTIFIABILITY_CASES[case]

    [finding] = v.identifiability_findings(_spend(**extra), 4, ValidationConfig())

    values = finding["values"]
    assert (values["issue"], values["channels"]) == (issue, channels)
    assert why in values["why"]


def test_identifiability_is_quiet_on_varying_independent_spend():
    assert v.identifiability_findings(_spend(), 3, ValidationConfig()) == []


@pytest.mark.parametrize(("parameters", "flagged"), [(7, False), (8, True)])
def test_identifiability_warns_when_parameters_exceed_periods_over_five(parameters, flagged):
    findings = v.identifiability_findings(_spend(), parameters, ValidationConfig())

    assert bool(findings) is flagged
    if flagged:
        assert findings[0]["values"]["issue"] == "too_many_parameters"
        assert "8 parameters for 36 periods (more than 36 / 5 = 7.2)" in findings[0]["values"]["why"]


def test_identifiability_counts_the_periods_of_the_models_grain(tmp_path):
    from training.sample import write_mmm_sample

    write_mmm_sample(tmp_path, seed=3, years=2, channels=["tv", "search"], revenue_grain="daily")  # ~104 weeks
    raw = ingest(open_store(tmp_path))
    parameters = 10  # more than 24 months / 5, fewer than 104 weeks / 5

    def too_many(grain: str) -> list[str]:
        report = v.validate(raw, ValidationConfig(), SAMPLE_RUN_DATE, grain=grain, parameters=parameters)
        return [f["values"]["why"] for f in result(report, v.IDENTIFIABILITY).examples
                if f["values"]["issue"] == "too_many_parameters"]

    [month] = too_many("month")
    assert "10 parameters for 24 periods (more than 24 / 5 = 4.8)" in month
    assert too_many("week") == []


def test_identifiability_thresholds_come_from_the_config():
    spend = _spend(tv=lambda f: 3000.0 + np.arange(36) % 2)

    assert v.identifiability_findings(spend, 4, ValidationConfig(min_spend_cv=0.0001)) == []
    assert v.identifiability_findings(_spend(), 3, ValidationConfig(max_spend_correlation=0.01))


def test_a_copied_channel_warns_as_a_rule_with_action_and_threshold(sample_dir):
    spend = pd.concat([pd.read_csv(path) for path in sorted((sample_dir / "spend").glob("*.csv"))])
    spend[spend["CHANNEL"] == "email"].assign(CHANNEL="email_copy").to_csv(sample_dir / "spend" / "copy.csv",
                                                                          index=False)

    report = run(sample_dir, parameters=4)

    found = result(report, v.IDENTIFIABILITY)
    assert (found.action, found.status, found.count) == ("warn", "warn", 1)
    assert found.threshold["max_spend_correlation"] == 0.95
    assert "email and email_copy spend move together" in found.message and "expected" in found.message
    assert report.passed and report.summary()["warned"] == [v.IDENTIFIABILITY]
    failing = run(sample_dir, ValidationConfig(actions={v.IDENTIFIABILITY: "fail"}), parameters=4)
    assert not failing.passed and result(failing, v.IDENTIFIABILITY).status == "fail"


def test_revenue_gap_warns_and_its_month_is_left_out(sample_dir):
    lines = (sample_dir / REVENUE).read_text().splitlines()
    (sample_dir / REVENUE).write_text("\n".join(lines[:4] + lines[5:]) + "\n")  # drop 2025-04

    report = run(sample_dir)

    gaps, no_revenue = result(report, "revenue_gaps"), result(report, "months_without_revenue")
    assert (gaps.status, gaps.count, gaps.examples[0]["values"]) == ("warn", 1, {"month": "2025-04"})
    assert (no_revenue.status, no_revenue.examples[0]["values"]) == ("warn", {"month": "2025-04"})
    assert report.passed


def test_revenue_without_spend_warns(sample_dir):
    append_lines(sample_dir, "revenue/2024.csv", "2024,1,123456.0")

    found = result(run(sample_dir), "revenue_without_spend")

    assert (found.status, found.count, found.examples[0]["values"]) == ("warn", 1, {"month": "2024-01"})


@pytest.mark.parametrize(("action", "status", "passed"), [("warn", "warn", True), ("off", "pass", True),
                                                           ("fail", "fail", False)])
def test_actions_override_the_default(sample_dir, action, status, passed):
    edit_line(sample_dir, SPEND, 30, set_field(4, "-12.50"))

    report = run(sample_dir, ValidationConfig(actions={"negative_values": action}))

    assert (result(report, "negative_values").status, report.passed) == (status, passed)


def test_duplicate_rows_with_warn_action_never_fail(sample_dir):
    shutil.copy(sample_dir / SPEND, sample_dir / "spend/2025_copy.csv")

    found = result(run(sample_dir, ValidationConfig(actions={"duplicate_rows": "warn"})), "duplicate_rows")

    assert found.status == "warn"


def test_examples_are_capped_by_max_examples(sample_dir):
    for line in range(10, 20):
        edit_line(sample_dir, SPEND, line, set_field(4, "-1"))

    found = result(run(sample_dir, ValidationConfig(max_examples=3)), "negative_values")

    assert found.count == 10
    assert [e["line"] for e in found.examples] == [10, 11, 12]


@pytest.mark.parametrize(("actions", "field"), [({"no_such_rule": "warn"}, "validation.actions.no_such_rule"),
                                                 ({"null_values": "ignore"}, "validation.actions.null_values")])
def test_bad_actions_are_rejected(sample_dir, actions, field):
    raw = ingest(open_store(sample_dir))

    with pytest.raises(ConfigError) as err:
        v.validate(raw, ValidationConfig(actions=actions), SAMPLE_RUN_DATE)

    assert err.value.field == field


# -- drift (the pipeline adds it once it knows the champion's training window) ---------------------------

def _drift_frames(new_email: list[float]) -> tuple[pd.DataFrame, pd.Series]:
    months = [f"2025-{m:02d}" for m in range(1, 13)] + [f"2026-{m:02d}" for m in range(1, len(new_email) + 1)]
    email = [100.0 + 10 * (i % 4) for i in range(12)] + new_email
    spend = pd.DataFrame({"email": email, "video": [50.0 + i % 3 for i in range(len(months))]}, index=months)
    revenue = pd.Series([1000.0 + 5 * (i % 5) for i in range(len(months))], index=months)
    return spend, revenue


def test_drift_rule_warns_naming_the_series_share_and_shift():
    spend, revenue = _drift_frames([400.0, 420.0])  # trained range of email: 100..130
    found = monitor.drift("v1", list(spend.index[:12]), spend, revenue)
    report = v.ValidationReport([])

    outcome = v.add_drift_rule(report, found, ValidationConfig())

    assert report.results[0] == outcome and report.passed
    assert (outcome.rule, outcome.status, outcome.count) == ("drift", "warn", 1)
    assert outcome.threshold == {"drift_max_outside_share": 0.5, "drift_max_shift": 3.0}
    assert "spend email: 100% of new periods outside the trained range [100, 130]" in outcome.message
    assert "2 new period(s) 2026-01..2026-02 vs the 12 training periods of champion v1" in outcome.message
    assert outcome.examples[0]["values"]["series"] == "email"
    assert outcome.examples[0]["values"]["shift"] > 3


def test_drift_within_the_thresholds_passes_and_fail_action_fails():
    spend, revenue = _drift_frames([110.0, 120.0])
    quiet = monitor.drift("v1", list(spend.index[:12]), spend, revenue)
    report = v.ValidationReport([])
    assert v.add_drift_rule(report, quiet, ValidationConfig()).status == "pass"

    loud = monitor.drift("v1", list(spend.index[:12]), *_drift_frames([400.0, 420.0]))
    strict = ValidationConfig(actions={"drift": "fail"})
    report = v.ValidationReport([])
    assert v.add_drift_rule(report, loud, strict).status == "fail" and not report.passed


def test_drift_without_new_periods_or_champion_passes():
    spend, revenue = _drift_frames([])
    for found in (monitor.drift("v1", list(spend.index), spend, revenue), monitor.drift(None, [], spend, revenue)):
        report = v.ValidationReport([])
        assert v.add_drift_rule(report, found, ValidationConfig()).status == "pass"
        assert found.note


def test_channels_that_appear_or_stop_since_the_champion_are_a_named_finding():
    spend, revenue = _drift_frames([110.0, 120.0])
    spend["tiktok"] = [0.0] * 12 + [5.0, 7.0]  # new since the champion's window
    spend["video"] = [50.0] * 12 + [0.0, 0.0]  # stopped after it
    found = monitor.drift("v1", list(spend.index[:12]), spend, revenue, champion_channels=["email", "video", "radio"])
    report = v.ValidationReport([])

    v.add_drift_rule(report, found, ValidationConfig())

    change = next(r for r in report.results if r.rule == v.CHANNEL_CHANGES)
    assert (change.status, change.count) == ("warn", 3)
    assert "added ['tiktok']" in change.message and "['radio', 'video']" in change.message
    assert {(e["values"]["channel"], e["values"]["change"]) for e in change.examples} == {
        ("tiktok", "added"), ("radio", "removed"), ("video", "removed")}
    assert found.to_dict()["channels_added"] == ["tiktok"]


def test_the_same_channels_as_the_champion_pass_the_channel_rule():
    spend, revenue = _drift_frames([110.0, 120.0])
    report = v.ValidationReport([])

    v.add_drift_rule(report, monitor.drift("v1", list(spend.index[:12]), spend, revenue,
                                           champion_channels=["email", "video"]), ValidationConfig())

    assert next(r for r in report.results if r.rule == v.CHANNEL_CHANGES).status == "pass"
