"""Validate: turn what ingest saw into rule results (pass, warn or fail), each saying what it found.

Every rule has a default action (`fail`, `warn` or `off`) that `ValidationConfig.actions` can override by
rule name, and thresholds from `ValidationConfig`. A result names the rule, the count, the threshold and
up to `max_examples` offending rows (file and line), and its message says the value found and what was
expected. Rules that count rows use what ingest collected while streaming; the month rules work on the
small monthly tables.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from datetime import date
from typing import Any

import numpy as np
import pandas as pd

from training import ingest
from training.config import ValidationConfig
from training.core.errors import ConfigError
from training.ingest import RawData
from training.periods import period_keys

log = logging.getLogger(__name__)

NO_INPUT_FILES = "no_input_files"
STALE_REVENUE = "stale_revenue"
TOO_FEW_MONTHS = "too_few_months"
EXTREME_VALUES = "extreme_values"
REVENUE_GAPS = "revenue_gaps"
MONTHS_WITHOUT_REVENUE = "months_without_revenue"
REVENUE_WITHOUT_SPEND = "revenue_without_spend"
GRAIN_MISMATCH = "grain_mismatch"
CONTROL_GAPS = "control_gaps"
PARTIAL_PERIODS = "partial_periods"
IDENTIFIABILITY = "identifiability"
DRIFT = "drift"
CHANNEL_CHANGES = "channel_changes"

# Rule name -> default action, in the order the report lists them.
RULES: dict[str, str] = {
    NO_INPUT_FILES: "fail",
    ingest.UNREADABLE_FILES: "fail",
    ingest.IGNORED_FILES: "fail",
    ingest.MISSING_COLUMNS: "fail",
    ingest.UNPARSEABLE_VALUES: "fail",
    ingest.NULL_VALUES_RULE: "fail",
    ingest.NEGATIVE_VALUES: "fail",
    ingest.OUT_OF_RANGE_VALUES: "fail",
    ingest.UNKNOWN_CHANNELS: "fail",
    ingest.DUPLICATE_ROWS: "fail",  # above duplicate_fail_rate; at or below it only warns
    ingest.DUPLICATE_REVENUE_MONTHS: "fail",
    ingest.MIXED_FORMS: "fail",
    ingest.DUPLICATE_CONTROL_PERIODS: "fail",
    ingest.MIXED_CURRENCIES: "fail",
    GRAIN_MISMATCH: "fail",
    CONTROL_GAPS: "fail",
    STALE_REVENUE: "fail",
    TOO_FEW_MONTHS: "fail",
    EXTREME_VALUES: "warn",
    REVENUE_GAPS: "warn",
    MONTHS_WITHOUT_REVENUE: "warn",
    REVENUE_WITHOUT_SPEND: "warn",
    PARTIAL_PERIODS: "warn",
    IDENTIFIABILITY: "warn",
    DRIFT: "warn",
    CHANNEL_CHANGES: "warn",
}
ACTIONS = ("fail", "warn", "off")
MAD_SCALE = 0.6745  # makes the median absolute deviation comparable to a standard deviation
MEAN_AD_SCALE = 1.253314  # the same for the mean absolute deviation (used when the MAD is 0)


@dataclass
class RuleResult:
    """The outcome of one validation rule."""

    rule: str
    action: str  # "fail" | "warn" | "off"
    status: str  # "pass" | "warn" | "fail"
    count: int
    threshold: Any
    message: str
    examples: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class ValidationReport:
    """All rule results for one data set."""

    results: list[RuleResult]
    rows: int = 0
    run_date: str = ""

    @property
    def passed(self) -> bool:
        """True when no rule failed."""
        return not any(r.status == "fail" for r in self.results)

    def failed(self) -> list[RuleResult]:
        """Return the failed rules."""
        return [r for r in self.results if r.status == "fail"]

    def to_dict(self) -> dict[str, Any]:
        """Return the whole report as JSON-able data."""
        return {"passed": self.passed, "run_date": self.run_date, "rows": self.rows,
                "results": [asdict(r) for r in self.results]}

    def summary(self) -> dict[str, Any]:
        """Return a small summary: passed, failed and warned rule names, spend rows."""
        return {"passed": self.passed, "failed": [r.rule for r in self.failed()],
                "warned": [r.rule for r in self.results if r.status == "warn"], "rows": self.rows}


def _month_index(month: str) -> int:
    year, mon = month.split("-")
    return int(year) * 12 + int(mon) - 1


def _month_name(index: int) -> str:
    return f"{index // 12:04d}-{index % 12 + 1:02d}"


def _month_examples(months: list[str], limit: int) -> list[dict[str, Any]]:
    return [{"file": None, "line": None, "values": {"month": m}} for m in months[:limit]]


def check_actions(config: ValidationConfig) -> None:
    """Raise ConfigError if `validation.actions` names an unknown rule or an unknown action."""
    unknown = sorted(set(config.actions) - set(RULES))
    if unknown:
        raise ConfigError(f"validation.actions.{unknown[0]}", config.actions[unknown[0]],
                          "a rule name: " + ", ".join(RULES))
    for rule, action in config.actions.items():
        if action not in ACTIONS:
            raise ConfigError(f"validation.actions.{rule}", action, "'fail', 'warn' or 'off'")


class _Rules:
    """Builds results with the configured actions and example limit."""

    def __init__(self, config: ValidationConfig):
        check_actions(config)
        self.config = config
        self.results: list[RuleResult] = []

    def add(self, rule: str, violated: bool, count: int, threshold: Any, message: str,
            examples: list[dict[str, Any]] | None = None, warn_only: bool = False) -> None:
        """Record one rule's outcome; `warn_only` turns a violated `fail` rule into a warning."""
        action = self.config.actions.get(rule, RULES[rule])
        if not violated or action == "off":
            status = "pass"
        elif action == "fail" and warn_only:
            status = "warn"
        else:
            status = action
        self.results.append(RuleResult(rule, action, status, int(count), threshold,
                                       f"{rule}: {message}" if violated else f"{rule}: ok",
                                       (examples or [])[: self.config.max_examples] if violated else []))


_FINDING_TEXT = {
    ingest.MISSING_COLUMNS: ("required column(s) missing", "spend: CHANNEL, DATE, TOTAL_COST; "
                             "revenue: YEAR, MONTH, REVENUE or DATE, REVENUE; controls: DATE or YEAR, MONTH "
                             "and at least one control column"),
    ingest.UNPARSEABLE_VALUES: ("value(s) that could not be parsed",
                                "DATE as YYYY-MM-DD, finite numbers in TOTAL_COST/YEAR/MONTH/REVENUE and "
                                "controls, MONTH 1-12, the header's number of fields"),
    ingest.NULL_VALUES_RULE: ("row(s) with an empty required value", "CHANNEL, DATE, TOTAL_COST, YEAR, MONTH "
                              "and REVENUE on every row"),
    ingest.NEGATIVE_VALUES: ("negative TOTAL_COST or REVENUE value(s)", "values >= 0"),
    ingest.DUPLICATE_REVENUE_MONTHS: ("revenue row(s) repeating a month (or a day, for daily revenue)",
                                      "one revenue row per month (or day)"),
    ingest.DUPLICATE_CONTROL_PERIODS: ("control value(s) repeating a day or month of the same control",
                                       "one value per control and day (or month)"),
}
# File-level findings: each example says what the file showed and what was expected.
_FILE_TEXT = {
    ingest.UNREADABLE_FILES: "file(s) that cannot be read as CSV",
    ingest.IGNORED_FILES: "file(s) under spend/, revenue/ or controls/ that are not data files and were not read",
    ingest.MIXED_FORMS: "file(s) in another form than the rest (daily DATE vs monthly YEAR, MONTH)",
    ingest.MIXED_CURRENCIES: "ad account(s) reporting spend in another currency than the run's",
}


def _file_message(finding: ingest.Finding, found: str, limit: int) -> str:
    listed = "; ".join(f"{e['file']}: {e['values'].get('found')}, expected {e['values'].get('expected')}"
                       for e in finding.examples[:limit])
    return f"found {finding.count} {found}: {listed}"


def validate(raw: RawData, config: ValidationConfig, run_date: date, grain: str = "month",
             parameters: int | None = None) -> ValidationReport:
    """Apply every rule to the ingested data (periods of `grain`: month | week) and return the report.

    `parameters` is the model's parameter count for the identifiability rule (default: channels + 1, the
    intercept and one coefficient per channel of `ols` and `ridge`).
    """
    rules = _Rules(config)
    missing = [p for p, files in (("spend/", raw.spend_files), ("revenue/", raw.revenue_files)) if not files]
    rules.add(NO_INPUT_FILES, bool(missing), len(missing), 0,
              f"no .csv or .csv.gz files under {', '.join(missing)} in {raw.store_uri}; expected at least one under each")

    for rule, found in _FILE_TEXT.items():
        finding = raw.findings[rule]
        rules.add(rule, finding.count > 0, finding.count, 0, _file_message(finding, found, config.max_examples),
                  finding.examples)

    out = raw.findings[ingest.OUT_OF_RANGE_VALUES]
    rules.add(ingest.OUT_OF_RANGE_VALUES, out.count > 0, out.count,
              [config.earliest_date.isoformat(), config.latest_date.isoformat(), config.max_value],
              f"found {out.count} row(s) with a date, year or value out of range; expected dates from "
              f"{config.earliest_date} to {config.latest_date} (validation.earliest_date, latest_date) and costs, "
              f"revenue and |controls| at most {config.max_value:g} (validation.max_value)", out.examples)

    for rule, (found, expected) in _FINDING_TEXT.items():
        finding = raw.findings[rule]
        rules.add(rule, finding.count > 0, finding.count, 0,
                  f"found {finding.count} {found}; expected {expected}", finding.examples)

    unknown = raw.findings[ingest.UNKNOWN_CHANNELS]
    rules.add(ingest.UNKNOWN_CHANNELS, unknown.count > 0, unknown.count, raw.channels,
              f"found {unknown.count} row(s) with a CHANNEL outside the configured list; expected one of "
              f"{', '.join(raw.channels or [])}", unknown.examples)

    dup = raw.findings[ingest.DUPLICATE_ROWS]
    rate = dup.count / raw.spend_rows if raw.spend_rows else 0.0
    rules.add(ingest.DUPLICATE_ROWS, dup.count > 0, dup.count, config.duplicate_fail_rate,
              f"found {dup.count} spend row(s) repeating an earlier (CAMPAIGN, CHANNEL, DATE), {rate:.4%} of "
              f"{raw.spend_rows} rows; expected none (fails above {config.duplicate_fail_rate:.2%})",
              dup.examples, warn_only=rate <= config.duplicate_fail_rate)

    _month_rules(rules, raw, config, run_date)
    _period_rules(rules, raw, config, grain)
    _identifiability_rule(rules, raw, config, parameters, grain)
    order = list(RULES)
    report = ValidationReport(sorted(rules.results, key=lambda r: order.index(r.rule)), rows=raw.spend_rows,
                              run_date=run_date.isoformat())
    summary = report.summary()
    log.info("validation %s: failed %s, warned %s", "passed" if report.passed else "failed",
             summary["failed"] or "none", summary["warned"] or "none")
    return report


def add_drift_rule(report: ValidationReport, drift: Any, config: ValidationConfig) -> RuleResult:
    """Append the `drift` rule's result for a `monitor.Drift` to `report` (and return it).

    It fires when a channel's spend, the revenue or a control has more than `drift_max_outside_share` of the
    new periods (after the champion's training window) outside the trained range, or a mean shifted by more
    than `drift_max_shift` training standard deviations.
    """
    rules = _Rules(config)
    flagged = drift.flagged(config.drift_max_outside_share, config.drift_max_shift)
    thresholds = {"drift_max_outside_share": config.drift_max_outside_share,
                  "drift_max_shift": config.drift_max_shift}
    examples = [{"file": None, "line": None, "values": {
        "series": s.name, "kind": s.kind, "outside_share": round(s.outside_share, 4),
        "shift": None if s.shift is None else round(s.shift, 3), "train_range": [s.train_min, s.train_max],
        "new_mean": s.new_mean}} for s in flagged]
    where = (f"{len(drift.new_periods)} new period(s) {drift.new_periods[0]}..{drift.new_periods[-1]} vs the "
             f"{len(drift.train_periods)} training periods of champion {drift.reference}") if drift.new_periods else ""
    rules.add(DRIFT, bool(flagged), len(flagged), thresholds,
              f"{len(flagged)} series drifted in {where}: " + "; ".join(s.text() for s in flagged)
              + f"; expected at most {config.drift_max_outside_share:.0%} of new periods outside the trained "
              f"range and a mean shift of at most {config.drift_max_shift:g} sd", examples)
    changed = bool(drift.channels_added or drift.channels_removed)
    rules.add(CHANNEL_CHANGES, changed, len(drift.channels_added) + len(drift.channels_removed), None,
              f"channels changed since champion {drift.reference}: added {drift.channels_added or 'none'}, "
              f"removed or without spend since its training window {drift.channels_removed or 'none'}; the quality "
              "gate will not promote a model with another channel set unless gate.allow_channel_change is set "
              "for the run, and a channel that stopped keeps its coefficient in the served model",
              [{"file": None, "line": None, "values": {"channel": c, "change": change}}
               for change, names in (("added", drift.channels_added), ("removed", drift.channels_removed))
               for c in names])
    report.results.extend(rules.results)
    return rules.results[0]


def _month_rules(rules: _Rules, raw: RawData, config: ValidationConfig, run_date: date) -> None:
    """Freshness, coverage, gaps and extreme monthly totals."""
    revenue_months = list(raw.revenue_by_month().index)  # daily revenue: the months with every day
    spend_months = list(raw.monthly_spend.index)
    limit = config.max_examples

    if revenue_months:
        newest = revenue_months[-1]
        age = run_date.year * 12 + run_date.month - 1 - _month_index(newest)
        rules.add(STALE_REVENUE, age > config.max_revenue_age_months, age, config.max_revenue_age_months,
                  f"newest revenue month {newest} is {age} months before the run date {run_date}; expected at "
                  f"most {config.max_revenue_age_months}", _month_examples([newest], limit))
    else:
        rules.add(STALE_REVENUE, True, 0, config.max_revenue_age_months,
                  f"no parseable revenue month; expected one at most {config.max_revenue_age_months} months "
                  f"before the run date {run_date}")

    usable = sorted(set(spend_months) & set(revenue_months))
    channels = len(raw.channels) if raw.channels else len(raw.monthly_spend.columns)
    needed = max(config.min_months, config.min_months_per_parameter * (channels + 1))
    rules.add(TOO_FEW_MONTHS, len(usable) < needed, len(usable), needed,
              f"found {len(usable)} months with both spend and revenue; expected at least {needed} "
              f"(min_months {config.min_months}, and {config.min_months_per_parameter} per parameter for "
              f"{channels} channels + intercept)")

    if revenue_months:
        first, last = _month_index(revenue_months[0]), _month_index(revenue_months[-1])
        gaps = sorted({_month_name(i) for i in range(first, last + 1)} - set(revenue_months))
    else:
        gaps = []
    rules.add(REVENUE_GAPS, bool(gaps), len(gaps), 0,
              f"{len(gaps)} month(s) missing between {revenue_months[0] if revenue_months else '-'} and "
              f"{revenue_months[-1] if revenue_months else '-'} (first: {', '.join(gaps[:limit])}); expected "
              "consecutive revenue months", _month_examples(gaps, limit))

    no_revenue = sorted(set(spend_months) - set(revenue_months))
    rules.add(MONTHS_WITHOUT_REVENUE, bool(no_revenue), len(no_revenue), 0,
              f"{len(no_revenue)} month(s) with spend but no revenue ({', '.join(no_revenue[:limit])}), left out "
              "of the fitted periods (spend before the first revenue month still feeds the media-mix model's "
              "carryover); expected revenue for every month with spend", _month_examples(no_revenue, limit))
    no_spend = sorted(set(revenue_months) - set(spend_months))
    rules.add(REVENUE_WITHOUT_SPEND, bool(no_spend), len(no_spend), 0,
              f"{len(no_spend)} month(s) with revenue but no spend rows ({', '.join(no_spend[:limit])}), left "
              "out of training; expected spend rows for every month with revenue", _month_examples(no_spend, limit))

    extreme = _extreme_values(raw.monthly_spend, config.extreme_z)
    rules.add(EXTREME_VALUES, bool(extreme), len(extreme), config.extreme_z,
              f"{len(extreme)} monthly channel total(s) with a robust z-score above {config.extreme_z} (largest "
              f"{max((e['values']['z'] for e in extreme), default=0):.1f}); expected at most {config.extreme_z}",
              sorted(extreme, key=lambda e: -e["values"]["z"]))


def _period_rules(rules: _Rules, raw: RawData, config: ValidationConfig, grain: str) -> None:
    """Grain, control coverage and the partial periods at the edges that the model leaves out."""
    limit = config.max_examples
    problem = ingest.grain_problem(raw, grain)
    rules.add(GRAIN_MISMATCH, problem is not None, int(problem is not None), grain,
              f"{problem}; expected model.grain=month or daily revenue")
    gaps = ingest.control_gaps(raw, grain)
    missing = sum(len(v) for v in gaps.values())
    rules.add(CONTROL_GAPS, bool(gaps), missing, 0,
              f"{missing} day(s) or month(s) without a control value in the {grain}s used for training ("
              + "; ".join(f"{name}: {', '.join(keys[:limit])}" for name, keys in gaps.items())
              + "); expected a value for every day (daily controls) or month (monthly controls)",
              [{"file": None, "line": None, "values": {"control": name, "period": key}}
               for name, keys in gaps.items() for key in keys[:limit]])
    partial = {} if problem else ingest.plan_periods(raw, grain).partial
    rules.add(PARTIAL_PERIODS, bool(partial), len(partial), 0,
              f"{len(partial)} {grain}(s) at the edges with incomplete daily revenue, left out of training ("
              + ", ".join(f"{k}: {why}" for k, why in list(partial.items())[:limit])
              + f"); expected complete {grain}s", [{"file": None, "line": None, "values": {"period": k, "found": why}}
                                                   for k, why in partial.items()])


def _extreme_values(monthly: pd.DataFrame, z_limit: float) -> list[dict[str, Any]]:
    """Return the (month, channel) totals whose robust z-score (median/MAD) exceeds `z_limit`."""
    out = []
    for channel in monthly.columns:
        values = monthly[channel].to_numpy(dtype=float)
        if len(values) < 3:
            continue
        deviation = np.abs(values - np.median(values))
        mad = np.median(deviation)
        scale = mad / MAD_SCALE if mad > 0 else MEAN_AD_SCALE * deviation.mean()
        if scale <= 0:
            continue
        z = deviation / scale
        for i in np.flatnonzero(z > z_limit):
            out.append({"file": None, "line": None, "values": {
                "month": monthly.index[i], "channel": channel, "spend": round(float(values[i]), 2),
                "median": round(float(np.median(values)), 2), "z": round(float(z[i]), 2)}})
    return out


def _period_spend(raw: RawData, channels: list[str], grain: str) -> pd.DataFrame:
    """Spend per period of `grain` and channel over the periods with revenue (complete ones for daily revenue).

    Weeks need daily revenue; with monthly revenue (a grain mismatch, its own rule) the months are used.
    """
    if grain == "month" or raw.revenue_form != ingest.DAILY or raw.daily_spend.empty:
        usable = sorted(set(raw.monthly_spend.index) & set(raw.revenue["month"]))
        return raw.monthly_spend.reindex(index=usable, columns=channels, fill_value=0.0).astype(float)
    weeks = ingest.complete_sums(raw.daily_revenue(), grain).index
    daily = raw.daily_spend.reindex(columns=channels, fill_value=0.0)
    weekly = daily.groupby(period_keys(pd.DatetimeIndex(daily.index), grain)).sum()
    return weekly.reindex(index=sorted(weeks), fill_value=0.0).astype(float)


def _identifiability_rule(rules: _Rules, raw: RawData, config: ValidationConfig, parameters: int | None,
                          grain: str) -> None:
    """Warn when the training periods cannot tell some channels' ROI apart (from the base or each other)."""
    channels = list(raw.channels) if raw.channels else list(raw.monthly_spend.columns)
    spend = _period_spend(raw, channels, grain)
    count = len(channels) + 1 if parameters is None else parameters
    findings = identifiability_findings(spend, count, config)
    thresholds = {"min_spend_cv": config.min_spend_cv, "max_spend_correlation": config.max_spend_correlation,
                  "min_active_periods": config.min_active_periods,
                  "periods_per_parameter": config.periods_per_parameter}
    shown = "; ".join(f["values"]["why"] for f in findings[: config.max_examples])
    more = f"; and {len(findings) - config.max_examples} more" if len(findings) > config.max_examples else ""
    rules.add(IDENTIFIABILITY, bool(findings), len(findings), thresholds,
              f"{len(findings)} finding(s) where the data cannot identify a channel's ROI: {shown}{more}; expected "
              f"spend that varies (coefficient of variation >= {config.min_spend_cv:g}), no two channels with "
              f"|correlation| > {config.max_spend_correlation:g}, spend in at least {config.min_active_periods} "
              f"periods per channel, and at most periods / {config.periods_per_parameter:g} model parameters",
              findings)


def _finding(issue: str, channels: list[str], value: float, threshold: float, why: str) -> dict[str, Any]:
    return {"file": None, "line": None, "values": {"issue": issue, "channels": channels,
                                                   "value": round(float(value), 4), "threshold": threshold,
                                                   "why": why}}


def identifiability_findings(spend: pd.DataFrame, parameters: int, config: ValidationConfig) -> list[dict[str, Any]]:
    """Return why some channels' ROI cannot be identified from `spend` (periods × channels) and `parameters`.

    A channel is flagged when its spend is constant or its coefficient of variation is below `min_spend_cv`
    (it cannot be told apart from the intercept), when it has spend in fewer than `min_active_periods` periods,
    and a pair when their spend correlates above `max_spend_correlation` in absolute value (only their joint
    effect is identified: the model may split it between them at will). The model is flagged when
    `parameters` exceeds periods / `periods_per_parameter`.
    """
    periods = len(spend)
    findings: list[dict[str, Any]] = []
    varying: list[str] = []
    for channel in spend.columns:
        values = spend[channel].to_numpy(dtype=float)
        if periods < 2:
            break
        mean, std = float(values.mean()), float(values.std())
        active = int(np.count_nonzero(values))
        if std == 0:
            level = "no spend" if mean == 0 else f"{mean:,.2f}"
            findings.append(_finding("constant_spend", [channel], 0.0, config.min_spend_cv,
                                     f"{channel} spend is constant ({level} in each of {periods} periods): "
                                     "its effect cannot be told apart from the intercept"))
            continue
        varying.append(channel)
        cv = std / abs(mean)
        if cv < config.min_spend_cv:
            findings.append(_finding("low_variation", [channel], cv, config.min_spend_cv,
                                     f"{channel} spend barely varies (coefficient of variation {cv:.3g} < "
                                     f"{config.min_spend_cv:g}): its effect is hard to tell apart from the intercept"))
        if active < config.min_active_periods:
            findings.append(_finding("few_active_periods", [channel], active, config.min_active_periods,
                                     f"{channel} has spend in only {active} of {periods} periods (< "
                                     f"{config.min_active_periods}): too few to estimate its ROI"))
    if len(varying) >= 2:
        corr = np.corrcoef(spend[varying].to_numpy(dtype=float), rowvar=False)
        for i, first in enumerate(varying):
            for j in range(i + 1, len(varying)):
                r = float(corr[i, j])
                if abs(r) > config.max_spend_correlation:
                    findings.append(_finding(
                        "correlated_spend", [first, varying[j]], r, config.max_spend_correlation,
                        f"{first} and {varying[j]} spend move together (correlation {r:.3f}, |r| > "
                        f"{config.max_spend_correlation:g}): only their joint ROI is identified"))
    limit = periods / config.periods_per_parameter
    if parameters > limit:
        findings.append(_finding("too_many_parameters", [str(c) for c in spend.columns], parameters,
                                 config.periods_per_parameter,
                                 f"the model has {parameters} parameters for {periods} periods (more than "
                                 f"{periods} / {config.periods_per_parameter:g} = {limit:.3g}): its ROI "
                                 "estimates are unstable"))
    return findings
